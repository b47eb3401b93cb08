//! Windowed counters: windows, rollover at UTC boundaries, retention, distinct counts.

use skywarden_rules::counter::{CounterSpec, CounterStore, Hll, MemoryCounters, Window, WindowSet};

/// 2024-01-01T00:00:00Z in microseconds.
const JAN1: i64 = 1_704_067_200_000_000;
const SEC: i64 = 1_000_000;
const MIN: i64 = 60 * SEC;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

fn spec(windows: &[Window], distinct: bool, retention: i64) -> CounterSpec {
    CounterSpec {
        windows: windows.iter().copied().collect::<WindowSet>(),
        distinct,
        retention_micros: retention,
    }
}

fn all_windows() -> MemoryCounters {
    MemoryCounters::new(vec![spec(&Window::ALL, false, 30 * DAY)])
}

#[test]
fn counts_in_every_window() {
    let mut c = all_windows();
    for i in 0..5 {
        c.add(0, 7, None, JAN1 + 10 * SEC + i);
    }
    let now = JAN1 + 20 * SEC;
    for w in Window::ALL {
        assert_eq!(c.get(0, 7, w, now), 5, "{w:?}");
    }
    assert_eq!(c.get(0, 8, Window::Hour, now), 0, "another key");
}

#[test]
fn windows_roll_over_at_utc_boundaries() {
    let mut c = all_windows();
    let before = JAN1 + 59 * MIN + 59 * SEC + 999_999; // 00:59:59.999999
    let after = JAN1 + HOUR; // 01:00:00
    c.add(0, 1, None, before);
    c.add(0, 1, None, before);
    assert_eq!(c.get(0, 1, Window::Hour, before), 2);
    // A read in the next hour sees a new, empty hour and minute, but the same day.
    assert_eq!(c.get(0, 1, Window::Hour, after), 0);
    assert_eq!(c.get(0, 1, Window::Minute, after), 0);
    assert_eq!(c.get(0, 1, Window::Day, after), 2);
    c.add(0, 1, None, after);
    assert_eq!(c.get(0, 1, Window::Hour, after), 1);
    assert_eq!(c.get(0, 1, Window::Day, after), 3);
    assert_eq!(c.get(0, 1, Window::Total, after), 3);
    // The next day.
    let tomorrow = JAN1 + DAY;
    assert_eq!(c.get(0, 1, Window::Day, tomorrow - 1), 3);
    assert_eq!(c.get(0, 1, Window::Day, tomorrow), 0);
    c.add(0, 1, None, tomorrow);
    assert_eq!(c.get(0, 1, Window::Day, tomorrow), 1);
    assert_eq!(c.get(0, 1, Window::Total, tomorrow), 4);
}

#[test]
fn undeclared_windows_read_zero() {
    let mut c = MemoryCounters::new(vec![spec(&[Window::Hour], false, DAY)]);
    c.add(0, 1, None, JAN1);
    assert_eq!(c.get(0, 1, Window::Hour, JAN1), 1);
    assert_eq!(c.get(0, 1, Window::Day, JAN1), 0);
    assert_eq!(c.get(0, 1, Window::Total, JAN1), 0);
}

#[test]
fn distinct_counts_are_exact_below_the_sparse_limit() {
    let mut c = MemoryCounters::new(vec![spec(&[Window::Day], true, DAY)]);
    for round in 0..3 {
        for v in 0..40u64 {
            c.add(
                0,
                1,
                Some(v.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                JAN1 + round,
            );
        }
    }
    assert_eq!(c.get(0, 1, Window::Day, JAN1), 40);
    // Adding without a distinct value changes nothing.
    c.add(0, 1, None, JAN1);
    assert_eq!(c.get(0, 1, Window::Day, JAN1), 40);
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[test]
fn hyperloglog_estimates_within_three_percent() {
    for n in [1_000u64, 10_000, 100_000] {
        let mut c = MemoryCounters::new(vec![spec(&[Window::Total], true, DAY)]);
        for v in 0..n {
            c.add(0, 9, Some(splitmix(v)), JAN1);
            c.add(0, 9, Some(splitmix(v)), JAN1); // repeats do not count
        }
        let got = c.get(0, 9, Window::Total, JAN1) as f64;
        let error = (got - n as f64).abs() / n as f64;
        assert!(
            error < 0.03,
            "{n} distinct: estimated {got} ({:.2} %)",
            error * 100.0
        );
    }
    let mut h = Hll::default();
    assert_eq!(h.estimate(), 0);
    h.insert(splitmix(1));
    assert_eq!(h.estimate(), 1);
}

#[test]
fn total_forgets_idle_keys_after_retention() {
    let mut c = MemoryCounters::new(vec![spec(&[Window::Total], false, 2 * DAY)]);
    c.add(0, 1, None, JAN1);
    c.add(0, 1, None, JAN1 + DAY);
    c.add(0, 2, None, JAN1);
    assert_eq!(c.get(0, 1, Window::Total, JAN1 + DAY), 2);
    // Key 2 idle for more than two days: reads zero, and a sweep frees it.
    let later = JAN1 + 2 * DAY + HOUR;
    assert_eq!(c.get(0, 2, Window::Total, later), 0);
    assert_eq!(
        c.get(0, 1, Window::Total, later),
        2,
        "key 1 was seen a day ago"
    );
    assert_eq!(c.len(), 2);
    assert_eq!(c.sweep(later), 1);
    assert_eq!(c.len(), 1);
    // A key that comes back after retention starts over.
    c.add(0, 1, None, JAN1 + 10 * DAY);
    assert_eq!(c.get(0, 1, Window::Total, JAN1 + 10 * DAY), 1);
}

#[test]
fn sweep_drops_keys_whose_windows_all_rolled_over() {
    let mut c = MemoryCounters::new(vec![
        spec(&[Window::Minute], false, DAY),
        spec(&[Window::Day], false, DAY),
    ]);
    for k in 0..100u128 {
        c.add(0, k, None, JAN1);
        c.add(1, k, None, JAN1);
    }
    assert_eq!(c.len(), 200);
    assert_eq!(c.sweep(JAN1 + 30 * SEC), 0);
    assert_eq!(c.sweep(JAN1 + 2 * MIN), 100, "minute keys expire");
    assert_eq!(c.sweep(JAN1 + DAY), 100, "day keys expire");
    assert!(c.is_empty());
}

#[test]
fn add_sweeps_by_itself_so_memory_stays_bounded() {
    let mut c = MemoryCounters::new(vec![spec(&[Window::Minute], false, DAY)]);
    // 200,000 distinct keys over 200 minutes: at most a few minutes' keys stay.
    for i in 0..200_000i64 {
        c.add(0, i as u128, None, JAN1 + i * 60_000); // 1,000 keys per minute
    }
    assert!(c.len() < 70_000, "{} keys kept", c.len());
}

#[test]
fn counters_and_keys_are_independent_and_memory_grows_with_keys() {
    let mut c = MemoryCounters::new(vec![
        spec(&[Window::Hour], false, DAY),
        spec(&[Window::Hour], false, DAY),
    ]);
    let empty = c.approx_bytes();
    c.add(0, 1, None, JAN1);
    c.add(0, 1, None, JAN1);
    c.add(1, 1, None, JAN1);
    c.add(0, 2, None, JAN1);
    assert_eq!(c.get(0, 1, Window::Hour, JAN1), 2);
    assert_eq!(c.get(1, 1, Window::Hour, JAN1), 1);
    assert_eq!(c.get(0, 2, Window::Hour, JAN1), 1);
    assert_eq!(c.get(1, 2, Window::Hour, JAN1), 0);
    for k in 0..10_000u128 {
        c.add(0, k, None, JAN1);
    }
    assert!(c.approx_bytes() > empty + 10_000 * 64);
}

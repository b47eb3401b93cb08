//! Counter snapshots: encoding and decoding a counter's state, rejecting malformed or
//! mismatched snapshots, and moving state across a ruleset reload.

use proptest::prelude::*;
use skywarden_rules::counter::{
    CounterSpec, CounterStore, MemoryCounters, SPARSE_LIMIT, SnapshotError, Window, WindowSet,
};

/// 2024-01-01T00:00:00Z in microseconds.
const JAN1: i64 = 1_704_067_200_000_000;
const SEC: i64 = 1_000_000;
const MIN: i64 = 60 * SEC;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

/// Offsets in an encoding: the header (magic, version, windows, distinct, retention, offset) is
/// 23 bytes, then the key count (one byte below 128 keys), then per key the key (16), the entry
/// kind (1) and `last_add` (8).
const HEADER: usize = 23;
const FIRST_KEY: usize = HEADER + 1;
const KIND: usize = FIRST_KEY + 16;
/// A distinct entry's `first`, then its sets.
const FIRST_VALUE: usize = KIND + 1 + 8;
const SETS: usize = FIRST_VALUE + 8;

fn spec(windows: &[Window], distinct: bool, retention: i64) -> CounterSpec {
    CounterSpec {
        windows: windows.iter().copied().collect::<WindowSet>(),
        distinct,
        retention_micros: retention,
        offset_micros: 0,
    }
}

/// The counters the property runs on: occurrence and distinct, with various windows and
/// retentions (one negative, which behaves as 0).
fn specs() -> Vec<CounterSpec> {
    vec![
        spec(&Window::ALL, false, 2 * DAY),
        spec(&[Window::Hour], false, HOUR),
        spec(&[Window::Total], false, 3 * HOUR),
        spec(&[Window::Minute, Window::Day], false, -5),
        spec(&[Window::Minute, Window::Day, Window::Total], true, 2 * DAY),
        spec(&[Window::Hour], true, DAY),
        spec(&Window::ALL, true, 5 * HOUR),
    ]
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A key's hash: small keys spread like real ones.
fn key(n: u64) -> u128 {
    (u128::from(splitmix(n)) << 64) | u128::from(splitmix(!n))
}

/// A distinct value's hash.
fn value(n: u64) -> u64 {
    splitmix(n.wrapping_mul(0x1_0000_0001))
}

const KEYS: u64 = 12;

#[derive(Debug, Clone)]
enum Op {
    /// One add to a key, at the clock after advancing it, or `late` earlier.
    Add {
        counter: usize,
        key: u64,
        value: u64,
        advance: i64,
        late: i64,
    },
    /// `n` distinct values (`base..base + n`) added to one key at the clock.
    Burst {
        counter: usize,
        key: u64,
        base: u64,
        n: u64,
    },
    /// One add to each of `n` keys beyond the usual ones.
    ManyKeys { counter: usize, base: u64, n: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    let counters = specs().len();
    let advance = prop_oneof![
        4 => Just(0i64),
        4 => 0..MIN,
        3 => 0..HOUR,
        1 => 0..DAY,
        1 => Just(DAY + HOUR),
    ];
    let late = prop_oneof![6 => Just(0i64), 1 => 0..2 * HOUR, 1 => 0..DAY];
    prop_oneof![
        12 => (0..counters, 0..KEYS, 0..60u64, advance, late).prop_map(
            |(counter, key, value, advance, late)| Op::Add {
                counter,
                key,
                value,
                advance,
                late
            }
        ),
        3 => (4..counters, 0..KEYS, 0..1_000_000u64, prop_oneof![
            // Exact sets, sketches in linear counting, and sketches past 2.5 × 4,096
            // where the harmonic sum decides.
            4 => 0..60u64,
            3 => 1_000..4_000u64,
            1 => 11_000..14_000u64,
        ])
            .prop_map(|(counter, key, base, n)| Op::Burst {
                counter,
                key,
                base,
                n
            }),
        1 => (0..counters, 0..1_000_000u64, 0..40u64)
            .prop_map(|(counter, base, n)| Op::ManyKeys { counter, base, n }),
    ]
}

/// Applies `ops` from `clock`; returns the clock after them.
fn apply(c: &mut MemoryCounters, ops: &[Op], mut clock: i64) -> i64 {
    for op in ops {
        match *op {
            Op::Add {
                counter,
                key: k,
                value: v,
                advance,
                late,
            } => {
                clock += advance;
                c.add(counter, key(k), Some(value(v)), clock - late);
            }
            Op::Burst {
                counter,
                key: k,
                base,
                n,
            } => {
                for v in base..base + n {
                    c.add(counter, key(k), Some(value(v)), clock);
                }
            }
            Op::ManyKeys { counter, base, n } => {
                for k in base..base + n {
                    c.add(counter, key(KEYS + k), Some(value(k)), clock);
                }
            }
        }
    }
    clock
}

/// Every key the ops may have touched.
fn touched_keys(ops: &[Op]) -> Vec<u128> {
    let mut keys: Vec<u128> = (0..KEYS).map(key).collect();
    for op in ops {
        if let Op::ManyKeys { base, n, .. } = *op {
            keys.extend((base..base + n).map(|k| key(KEYS + k)));
        }
    }
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Times around `clock`, before and after.
fn around(clock: i64) -> Vec<i64> {
    vec![
        clock - DAY,
        clock - HOUR,
        clock,
        clock + MIN,
        clock + HOUR,
        clock + 3 * HOUR,
        clock + DAY,
        clock + 3 * DAY,
    ]
}

/// Times from `clock` on. Automatic sweeps (which the original and a restored copy run at
/// different adds) may forget keys that were dead at the latest add, so reads before it can
/// differ; reads from the latest add on cannot.
fn from(clock: i64) -> Vec<i64> {
    around(clock).into_iter().filter(|&t| t >= clock).collect()
}

/// Every value `get` returns, for each counter, key, window and time.
fn readings(c: &MemoryCounters, keys: &[u128], nows: &[i64]) -> Vec<u64> {
    let mut out = Vec::new();
    for counter in 0..specs().len() {
        for &k in keys {
            for w in Window::ALL {
                for &now in nows {
                    out.push(c.get(counter, k, w, now));
                }
            }
        }
    }
    out
}

fn encode(c: &MemoryCounters, counter: usize) -> Vec<u8> {
    let mut out = Vec::new();
    c.encode_counter(counter, &mut out);
    out
}

/// Encodes every counter of `c` and decodes each into fresh counters.
fn round_trip(c: &MemoryCounters) -> MemoryCounters {
    let mut restored = MemoryCounters::new(specs());
    for counter in 0..specs().len() {
        let bytes = encode(c, counter);
        restored
            .decode_counter(counter, &bytes)
            .unwrap_or_else(|e| panic!("counter {counter}: {e}"));
        // Same state, same size (keys may come out in another order).
        assert_eq!(encode(&restored, counter).len(), bytes.len());
    }
    restored
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// A decoded counter reads like the original, and keeps behaving like it under the same
    /// further adds: sketches (registers, harmonic sum, reported value), exact sets, periods
    /// and retention clocks were all restored.
    #[test]
    fn decode_restores_what_encode_saw(
        before in prop::collection::vec(op(), 1..40),
        after in prop::collection::vec(op(), 0..40),
    ) {
        let mut original = MemoryCounters::new(specs());
        let clock = apply(&mut original, &before, JAN1 + 7 * HOUR);
        let mut restored = round_trip(&original);
        prop_assert_eq!(restored.len(), original.len());

        let mut keys = touched_keys(&before);
        let nows = around(clock);
        prop_assert_eq!(readings(&restored, &keys, &nows), readings(&original, &keys, &nows));

        let end = apply(&mut original, &after, clock);
        prop_assert_eq!(apply(&mut restored, &after, clock), end);
        keys.extend(touched_keys(&after));
        keys.sort_unstable();
        keys.dedup();
        let nows = from(end);
        prop_assert_eq!(readings(&restored, &keys, &nows), readings(&original, &keys, &nows));

        // A reload carries the state over in the same way.
        let mut reloaded = MemoryCounters::new(specs());
        for counter in 0..specs().len() {
            prop_assert!(reloaded.take_counter_from(counter, &mut restored, counter));
        }
        prop_assert!(restored.is_empty());
        prop_assert_eq!(readings(&reloaded, &keys, &nows), readings(&original, &keys, &nows));
    }

    /// Arbitrary bytes, bare or behind a valid header, never panic, and never decode into a
    /// counter whose spec they do not carry.
    #[test]
    fn random_bytes_never_panic(
        counter in 0..specs().len(),
        with_header in any::<bool>(),
        tail in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut c = MemoryCounters::new(specs());
        let mut bytes = Vec::new();
        if with_header {
            bytes = encode(&c, counter);
            bytes.truncate(HEADER);
        }
        bytes.extend_from_slice(&tail);
        if c.decode_counter(counter, &bytes).is_ok() {
            // Only a valid header can decode.
            prop_assert!(with_header);
        }
    }
}

/// Counters with something in every kind of entry: plain keys, distinct keys with a single
/// value, and exact sets; counter 5 (`hour`, distinct) holds exactly one key, with a sketch.
/// (The property test covers sketches in every window; a single one keeps the exhaustive
/// truncation and flip tests quick.)
fn populated() -> MemoryCounters {
    let mut c = MemoryCounters::new(specs());
    let t = JAN1 + 10 * HOUR;
    for counter in (0..specs().len()).filter(|&c| c != 5) {
        for k in 0..3 {
            c.add(counter, key(k), Some(value(k)), t + k as i64 * MIN);
            if k > 0 {
                c.add(
                    counter,
                    key(k),
                    Some(value(k + 1)),
                    t + DAY + k as i64 * MIN,
                );
            }
        }
        for v in 0..30 {
            c.add(counter, key(8), Some(value(v)), t + v as i64 * SEC);
        }
    }
    for v in 0..200 {
        c.add(5, key(9), Some(value(v)), t);
    }
    assert_eq!(c.spec(5), specs()[5]);
    c
}

#[test]
fn every_truncation_is_an_error() {
    let c = populated();
    let mut fresh = MemoryCounters::new(specs());
    for counter in 0..specs().len() {
        let bytes = encode(&c, counter);
        fresh.decode_counter(counter, &bytes).unwrap();
        for len in 0..bytes.len() {
            let Err(e) = fresh.decode_counter(counter, &bytes[..len]) else {
                panic!(
                    "counter {counter}: a {len}-byte prefix of {} decoded",
                    bytes.len()
                );
            };
            assert!(matches!(e, SnapshotError::Malformed(_)), "{e}");
        }
    }
    // The failures left the good states in place.
    let keys = touched_keys(&[]);
    let nows = [around(JAN1 + 10 * HOUR), around(JAN1 + DAY + 10 * HOUR)].concat();
    assert_eq!(readings(&fresh, &keys, &nows), readings(&c, &keys, &nows));
}

#[test]
fn flipped_bytes_never_panic() {
    let c = populated();
    let mut accepted = 0;
    let mut rejected = 0;
    for counter in 0..specs().len() {
        let bytes = encode(&c, counter);
        // Sketch registers are many and alike: sample them.
        let stride = if bytes.len() > 2_000 { 5 } else { 1 };
        for pos in (0..bytes.len()).step_by(stride) {
            for flip in [0x01u8, 0x80, 0xFF] {
                let mut bad = bytes.clone();
                bad[pos] ^= flip;
                let mut fresh = MemoryCounters::new(specs());
                match fresh.decode_counter(counter, &bad) {
                    Ok(()) => accepted += 1,
                    Err(_) => rejected += 1,
                }
            }
        }
    }
    // Flips in the header or structure are caught; flips in keys, times or values decode.
    assert!(accepted > 0 && rejected > 0, "{accepted} {rejected}");
}

fn malformed_message(counter: usize, bytes: &[u8]) -> String {
    let mut c = MemoryCounters::new(specs());
    match c.decode_counter(counter, bytes) {
        Err(SnapshotError::Malformed(m)) => m,
        other => panic!("expected a malformed snapshot, got {other:?}"),
    }
}

#[test]
fn invalid_values_are_rejected() {
    let c = populated();

    // Header: magic, version, window bits, distinct flag, retention, offset.
    let plain = encode(&c, 0);
    let mut b = plain.clone();
    b[0] = b'X';
    assert!(malformed_message(0, &b).contains("magic"));
    let mut b = plain.clone();
    b[4] = 3;
    assert!(malformed_message(0, &b).contains("version 3"));
    let mut b = plain.clone();
    b[5] |= 0x40;
    assert!(malformed_message(0, &b).contains("window set"));
    let mut b = plain.clone();
    b[6] = 7;
    assert!(malformed_message(0, &b).contains("distinct flag"));
    let mut b = plain.clone();
    b[7..15].copy_from_slice(&(-1i64).to_le_bytes());
    assert!(malformed_message(0, &b).contains("negative retention"));
    let mut b = plain.clone();
    b[15..23].copy_from_slice(&(86_400 * SEC).to_le_bytes());
    assert!(malformed_message(0, &b).contains("offset"));

    // Trailing bytes, and a key count the bytes cannot hold.
    let mut b = plain.clone();
    b.push(0);
    assert!(malformed_message(0, &b).contains("trailing"));
    let mut b = plain[..HEADER].to_vec();
    b.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0x0F]);
    assert!(malformed_message(0, &b).contains("cannot fit"));
    let mut b = plain[..HEADER].to_vec();
    b.extend_from_slice(&[0xFF; 11]);
    assert!(malformed_message(0, &b).contains("varint"));

    // An entry kind of the other kind of counter.
    let mut b = plain.clone();
    b[KIND] = 2;
    assert!(malformed_message(0, &b).contains("entry kind 2"));
    let distinct = encode(&c, 4);
    let mut b = distinct.clone();
    b[KIND] = 0;
    assert!(malformed_message(4, &b).contains("entry kind 0"));

    // A key twice.
    let mut b = plain.clone();
    // Four keys, every count below 128: entries of equal length.
    assert_eq!(plain[HEADER], 4);
    assert_eq!((plain.len() - FIRST_KEY) % 4, 0);
    let entry = (plain.len() - FIRST_KEY) / 4;
    b[FIRST_KEY + entry..FIRST_KEY + 2 * entry]
        .copy_from_slice(&plain[FIRST_KEY..FIRST_KEY + entry]);
    assert!(malformed_message(0, &b).contains("twice"));

    // Counter 5 holds one key with one sketch (`hour` only): set kind, register count,
    // register values, reported value.
    let sketch = encode(&c, 5);
    assert_eq!(sketch[HEADER], 1);
    assert_eq!(sketch[KIND], 2);
    assert_eq!(sketch[SETS], 1);
    assert_eq!(&sketch[SETS + 1..SETS + 3], &[0x80, 0x20]); // 4,096
    let registers = SETS + 3;
    let reported = registers + 4096;
    let mut b = sketch.clone();
    b[SETS] = 9;
    assert!(malformed_message(5, &b).contains("set kind 9"));
    let mut b = sketch.clone();
    b[SETS + 2] = 0x10; // 2,048
    assert!(malformed_message(5, &b).contains("2048 registers"));
    let mut b = sketch.clone();
    b[registers + 17] = 54;
    assert!(malformed_message(5, &b).contains("register 17"));
    let mut b = sketch.clone();
    b[registers + 17] = 53; // the largest rank is fine
    MemoryCounters::new(specs()).decode_counter(5, &b).unwrap();
    let mut b = sketch[..reported].to_vec();
    b.push(SPARSE_LIMIT as u8);
    assert!(malformed_message(5, &b).contains("reports 48"));

    // An exact set: too long, unsorted, or with a repeated value.
    let mut c = MemoryCounters::new(specs());
    for v in 0..4 {
        c.add(5, key(1), Some(value(v)), JAN1);
    }
    let exact = encode(&c, 5);
    assert_eq!(exact[SETS..SETS + 2], [0, 4]);
    let values: Vec<u64> = (0..4)
        .map(|i| {
            u64::from_le_bytes(
                exact[SETS + 2 + 8 * i..SETS + 10 + 8 * i]
                    .try_into()
                    .unwrap(),
            )
        })
        .collect();
    assert!(values.is_sorted());
    let mut b = exact.clone();
    b[SETS + 2..SETS + 10].copy_from_slice(&values[3].to_le_bytes());
    b[SETS + 26..SETS + 34].copy_from_slice(&values[0].to_le_bytes());
    assert!(malformed_message(5, &b).contains("not strictly increasing"));
    let mut b = exact.clone();
    b[SETS + 10..SETS + 18].copy_from_slice(&values[0].to_le_bytes());
    assert!(malformed_message(5, &b).contains("not strictly increasing"));
    let mut b = exact[..SETS + 1].to_vec();
    b.push(SPARSE_LIMIT as u8 + 1);
    for v in 0..=SPARSE_LIMIT as u64 {
        b.extend_from_slice(&v.to_le_bytes());
    }
    assert!(malformed_message(5, &b).contains("more than 48"));
    // Exactly the limit is a valid exact set.
    let mut b = exact[..SETS + 1].to_vec();
    b.push(SPARSE_LIMIT as u8);
    for v in 0..SPARSE_LIMIT as u64 {
        b.extend_from_slice(&v.to_le_bytes());
    }
    let mut fresh = MemoryCounters::new(specs());
    fresh.decode_counter(5, &b).unwrap();
    assert_eq!(
        fresh.get(5, key(1), Window::Hour, JAN1),
        SPARSE_LIMIT as u64
    );
    fresh.add(5, key(1), Some(u64::MAX), JAN1);
    assert!(fresh.get(5, key(1), Window::Hour, JAN1) > SPARSE_LIMIT as u64);

    // An error message carries the kind of failure.
    let e = MemoryCounters::new(specs())
        .decode_counter(0, &plain[..3])
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("malformed counter snapshot: truncated"),
        "{e}"
    );
}

#[test]
fn spec_mismatch_names_the_difference() {
    let mut c = MemoryCounters::new(vec![
        spec(&[Window::Minute, Window::Hour], false, DAY),
        spec(&[Window::Hour], false, DAY),
        spec(&[Window::Hour], true, DAY),
        spec(&[Window::Hour], false, HOUR),
        spec(&[], false, HOUR),
    ]);
    c.add(0, key(1), None, JAN1);
    c.add(1, key(1), None, JAN1);
    let bytes = encode(&c, 0);
    let before = c.get(1, key(1), Window::Hour, JAN1);
    assert_eq!(before, 1);

    let e = c.decode_counter(1, &bytes).unwrap_err();
    assert_eq!(
        e,
        SnapshotError::SpecMismatch(
            "windows differ: snapshot has minute,hour; counter has hour".into()
        )
    );
    assert_eq!(
        e.to_string(),
        "counter spec changed: windows differ: snapshot has minute,hour; counter has hour"
    );
    assert_eq!(c.get(1, key(1), Window::Hour, JAN1), before);

    let e = c.decode_counter(2, &encode(&c, 1)).unwrap_err().to_string();
    assert!(
        e.contains("distinct differs: snapshot counts occurrences; counter counts distinct values"),
        "{e}"
    );
    let e = c.decode_counter(3, &encode(&c, 1)).unwrap_err().to_string();
    assert!(
        e.contains("retention differs: snapshot has 86400000000 µs; counter has 3600000000 µs"),
        "{e}"
    );
    let e = c.decode_counter(4, &encode(&c, 2)).unwrap_err().to_string();
    assert!(
        e.contains("windows differ: snapshot has hour; counter has none"),
        "{e}"
    );
    assert!(e.contains("distinct differs"), "{e}");
    assert!(e.contains("retention differs"), "{e}");

    // A negative retention behaves as 0, and is the same spec as 0.
    let mut a = MemoryCounters::new(vec![spec(&[Window::Total], false, -7)]);
    let mut b = MemoryCounters::new(vec![spec(&[Window::Total], false, 0)]);
    assert_eq!(a.spec(0), spec(&[Window::Total], false, 0));
    a.add(0, key(1), None, JAN1);
    b.decode_counter(0, &encode(&a, 0)).unwrap();
    assert_eq!(b.get(0, key(1), Window::Total, JAN1), 1);
}

#[test]
fn take_counter_from_moves_only_between_equal_specs() {
    let hour_distinct = spec(&[Window::Hour, Window::Total], true, DAY);
    let mut old = MemoryCounters::new(vec![
        spec(&[Window::Hour], false, DAY),
        hour_distinct.clone(),
    ]);
    for v in 0..100 {
        old.add(0, key(1), None, JAN1 + v as i64);
        old.add(1, key(2), Some(value(v)), JAN1);
    }
    let distinct_count = old.get(1, key(2), Window::Total, JAN1);
    assert!(distinct_count > SPARSE_LIMIT as u64);

    // The new ruleset reorders the counters and changes the first one's retention.
    let mut new = MemoryCounters::new(vec![hour_distinct, spec(&[Window::Hour], false, HOUR)]);
    new.add(0, key(3), Some(1), JAN1);
    new.add(1, key(3), None, JAN1);

    assert!(!new.take_counter_from(1, &mut old, 0));
    assert_eq!(old.get(0, key(1), Window::Hour, JAN1 + 100), 100);
    assert_eq!(new.get(1, key(3), Window::Hour, JAN1), 1);
    assert!(!new.take_counter_from(0, &mut old, 0));
    assert!(!new.take_counter_from(1, &mut old, 1));

    assert!(new.take_counter_from(0, &mut old, 1));
    assert_eq!(new.get(0, key(2), Window::Total, JAN1), distinct_count);
    assert_eq!(
        new.get(0, key(3), Window::Hour, JAN1),
        0,
        "replaced, not merged"
    );
    assert_eq!(old.get(1, key(2), Window::Total, JAN1), 0);
    assert_eq!(
        old.len(),
        1,
        "the moved counter is left empty, the other kept"
    );
    // The moved sketch keeps counting where it was.
    new.add(0, key(2), Some(value(0)), JAN1);
    assert_eq!(new.get(0, key(2), Window::Total, JAN1), distinct_count);
    // And the emptied counter still works.
    old.add(1, key(2), Some(value(0)), JAN1);
    assert_eq!(old.get(1, key(2), Window::Total, JAN1), 1);
}

#[test]
fn empty_counter_round_trips() {
    let c = MemoryCounters::new(specs());
    for counter in 0..specs().len() {
        let bytes = encode(&c, counter);
        assert_eq!(bytes.len(), HEADER + 1);
        assert_eq!(&bytes[..5], b"SWCT\x02");
        let mut other = populated();
        other.decode_counter(counter, &bytes).unwrap();
        assert_eq!(
            encode(&other, counter),
            bytes,
            "decoding replaces the state"
        );
    }
}

/// Snapshots from before counters had an offset (version 1: no offset in the header) load as
/// offset 0, so an upgrade keeps the counters.
#[test]
fn version_1_snapshots_load_with_no_offset() {
    let c = populated();
    for counter in 0..specs().len() {
        let current = encode(&c, counter);
        let mut v1 = current[..15].to_vec();
        v1[4] = 1;
        v1.extend_from_slice(&current[HEADER..]);
        let mut other = MemoryCounters::new(specs());
        other.decode_counter(counter, &v1).unwrap();
        assert_eq!(encode(&other, counter), current);
    }
}

//! Windowed counters: "replies by this account in the last hour", "distinct accounts posting
//! this text today".
//!
//! The rule engine hashes a counter's key string to a `u128` and, for distinct counters, each
//! distinct value to a `u64`; this module never sees strings. Time is microseconds since the
//! Unix epoch (UTC): the evaluation time of the unit being counted.
//!
//! Semantics, which analysts rely on:
//!
//! - **Windows are fixed and UTC-aligned.** `Minute`, `Hour` and `Day` are the current calendar
//!   minute, hour and day. When time moves into a new period, the window restarts from zero:
//!   a read in a later period returns 0, and the next `add` starts the new period's count.
//!   A burst that straddles a boundary is split between two periods.
//! - **`Total` counts since the key was first seen**, but a key idle (no `add`) for longer than
//!   the counter's retention is forgotten: reads return 0 and [`MemoryCounters::sweep`] frees
//!   it. No counter grows without bound.
//! - Only declared windows are stored; reading an undeclared window returns 0 (the rule
//!   checker rejects such reads at load).
//! - **Distinct counters** keep the exact set of value hashes up to [`SPARSE_LIMIT`] values
//!   per key and window, then switch to a HyperLogLog sketch with 4,096 registers (standard
//!   error about 1.6 %). Counts below the limit are exact.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A counter window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    /// The current UTC minute.
    Minute,
    /// The current UTC hour.
    Hour,
    /// The current UTC day.
    Day,
    /// Since first seen, forgotten after the retention of idleness.
    Total,
}

impl Window {
    /// Every window, in order.
    pub const ALL: [Window; 4] = [Window::Minute, Window::Hour, Window::Day, Window::Total];

    /// The name used in rule files.
    pub fn name(&self) -> &'static str {
        match self {
            Window::Minute => "minute",
            Window::Hour => "hour",
            Window::Day => "day",
            Window::Total => "total",
        }
    }

    /// Parses a window name.
    pub fn parse(s: &str) -> Option<Window> {
        Window::ALL.into_iter().find(|w| w.name() == s)
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The period `now` falls in (the same for every time in one minute/hour/day; 0 for total).
    fn period(self, now: i64) -> i64 {
        match self {
            Window::Minute => now.div_euclid(60_000_000),
            Window::Hour => now.div_euclid(3_600_000_000),
            Window::Day => now.div_euclid(86_400_000_000),
            Window::Total => 0,
        }
    }
}

/// A set of windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowSet(u8);

impl WindowSet {
    /// No windows.
    pub fn empty() -> Self {
        WindowSet(0)
    }

    /// Adds a window.
    pub fn insert(&mut self, w: Window) {
        self.0 |= 1 << w.index();
    }

    /// Whether the set holds `w`.
    pub fn contains(&self, w: Window) -> bool {
        self.0 & (1 << w.index()) != 0
    }

    /// The windows in the set.
    pub fn iter(self) -> impl Iterator<Item = Window> {
        Window::ALL.into_iter().filter(move |w| self.contains(*w))
    }
}

impl FromIterator<Window> for WindowSet {
    fn from_iter<I: IntoIterator<Item = Window>>(iter: I) -> Self {
        let mut s = WindowSet::empty();
        for w in iter {
            s.insert(w);
        }
        s
    }
}

/// How one counter counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterSpec {
    /// Windows kept.
    pub windows: WindowSet,
    /// Count distinct values instead of occurrences.
    pub distinct: bool,
    /// Idle keys of the `Total` window are forgotten after this long (µs).
    pub retention_micros: i64,
}

/// Where counters live: in memory here; the engine provides persistent and shared stores.
pub trait CounterStore {
    /// Counts one occurrence for `key` (and, for distinct counters, the distinct value's hash)
    /// at `now`.
    fn add(&mut self, counter: usize, key: u128, distinct: Option<u64>, now: i64);
    /// The value for `key` in `window` at `now`: occurrences, or (estimated) distinct values.
    /// 0 if never seen, rolled over, forgotten, or the window is not declared.
    fn get(&self, counter: usize, key: u128, window: Window, now: i64) -> u64;
}

/// Distinct sets stay exact up to this many values.
pub const SPARSE_LIMIT: usize = 48;
const HLL_BITS: u32 = 12;
const HLL_REGISTERS: usize = 1 << HLL_BITS;

/// A HyperLogLog sketch with 4,096 one-byte registers, keeping its estimate up to date as
/// registers change (so reading it costs nothing).
#[derive(Debug, Clone)]
pub struct Hll {
    registers: Box<[u8; HLL_REGISTERS]>,
    /// Σ 2^-register.
    inverse_sum: f64,
    zeros: u32,
}

impl Default for Hll {
    fn default() -> Self {
        Hll {
            registers: Box::new([0; HLL_REGISTERS]),
            inverse_sum: HLL_REGISTERS as f64,
            zeros: HLL_REGISTERS as u32,
        }
    }
}

impl Hll {
    /// Adds a 64-bit hash.
    pub fn insert(&mut self, hash: u64) {
        let index = (hash >> (64 - HLL_BITS)) as usize;
        let rest = hash << HLL_BITS;
        let rank = (rest.leading_zeros() + 1).min(64 - HLL_BITS + 1) as u8;
        let old = self.registers[index];
        if rank > old {
            self.registers[index] = rank;
            self.inverse_sum += 2f64.powi(-i32::from(rank)) - 2f64.powi(-i32::from(old));
            if old == 0 {
                self.zeros -= 1;
            }
        }
    }

    /// The estimated number of distinct hashes inserted.
    pub fn estimate(&self) -> u64 {
        let m = HLL_REGISTERS as f64;
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let raw = alpha * m * m / self.inverse_sum;
        let e = if raw <= 2.5 * m && self.zeros > 0 {
            // Small range: linear counting is more accurate.
            m * (m / f64::from(self.zeros)).ln()
        } else {
            raw
        };
        e.round() as u64
    }
}

#[derive(Debug, Clone)]
enum Distinct {
    Sparse(Vec<u64>),
    Dense(Hll),
}

impl Distinct {
    /// Inserts and returns the new count.
    fn insert(&mut self, hash: u64) -> u64 {
        match self {
            Distinct::Sparse(v) => {
                if let Err(pos) = v.binary_search(&hash) {
                    if v.len() < SPARSE_LIMIT {
                        v.insert(pos, hash);
                    } else {
                        let mut hll = Hll::default();
                        for h in v.iter() {
                            hll.insert(*h);
                        }
                        hll.insert(hash);
                        let n = hll.estimate().max(SPARSE_LIMIT as u64 + 1);
                        *self = Distinct::Dense(hll);
                        return n;
                    }
                }
                v.len() as u64
            }
            // Never report fewer than the exact phase already counted.
            Distinct::Dense(hll) => {
                hll.insert(hash);
                hll.estimate().max(SPARSE_LIMIT as u64 + 1)
            }
        }
    }

    /// Empties the set, keeping a sparse set's memory for the next period.
    fn clear(&mut self) {
        match self {
            Distinct::Sparse(v) => v.clear(),
            Distinct::Dense(_) => *self = Distinct::Sparse(Vec::new()),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Distinct::Sparse(v) => v.capacity() * 8,
            Distinct::Dense(_) => HLL_REGISTERS + 16,
        }
    }
}

/// One key's windows.
#[derive(Debug, Clone)]
struct Entry {
    last_add: i64,
    periods: [i64; 4],
    values: [u64; 4],
    distinct: Option<Box<[Distinct; 4]>>,
}

/// Folds an already uniform 128-bit key to 64 bits: hashing it again would be wasted work.
#[derive(Default)]
pub struct FoldHasher(u64);

impl Hasher for FoldHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0 ^ u64::from_le_bytes(b)).rotate_left(29);
        }
    }
    fn write_u128(&mut self, k: u128) {
        self.0 = (k as u64) ^ ((k >> 64) as u64);
    }
}

type KeyMap = HashMap<u128, Entry, BuildHasherDefault<FoldHasher>>;

/// Counters in memory, one map per counter.
#[derive(Debug)]
pub struct MemoryCounters {
    specs: Vec<CounterSpec>,
    maps: Vec<KeyMap>,
    adds_since_sweep: u64,
    last_now: i64,
}

impl MemoryCounters {
    /// Counters for `specs`, indexed as given.
    pub fn new(specs: Vec<CounterSpec>) -> Self {
        let maps = specs.iter().map(|_| KeyMap::default()).collect();
        MemoryCounters {
            specs,
            maps,
            adds_since_sweep: 0,
            last_now: i64::MIN,
        }
    }

    /// Live keys across all counters.
    pub fn len(&self) -> usize {
        self.maps.iter().map(HashMap::len).sum()
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate memory held, in bytes.
    pub fn approx_bytes(&self) -> usize {
        self.maps
            .iter()
            .map(|m| {
                m.capacity() * (std::mem::size_of::<(u128, Entry)>() + 1)
                    + m.values()
                        .filter_map(|e| e.distinct.as_ref())
                        .map(|d| d.iter().map(Distinct::bytes).sum::<usize>() + 4 * 32)
                        .sum::<usize>()
            })
            .sum()
    }

    fn alive(spec: &CounterSpec, e: &Entry, now: i64) -> bool {
        spec.windows.iter().any(|w| match w {
            Window::Total => now - e.last_add <= spec.retention_micros,
            w => e.periods[w.index()] == w.period(now),
        })
    }

    /// Forgets every key whose windows have all rolled over or whose total is past retention.
    /// Returns how many keys were removed. `add` calls this itself, amortised: once the number
    /// of adds since the last sweep exceeds half the number of keys (and 65,536), so sweeping
    /// costs O(1) per add on average.
    pub fn sweep(&mut self, now: i64) -> usize {
        let mut removed = 0;
        for (spec, map) in self.specs.iter().zip(&mut self.maps) {
            let before = map.len();
            map.retain(|_, e| Self::alive(spec, e, now));
            removed += before - map.len();
        }
        self.adds_since_sweep = 0;
        removed
    }
}

impl CounterStore for MemoryCounters {
    fn add(&mut self, counter: usize, key: u128, distinct: Option<u64>, now: i64) {
        self.adds_since_sweep += 1;
        self.last_now = self.last_now.max(now);
        let spec = &self.specs[counter];
        let entry = self.maps[counter].entry(key).or_insert_with(|| Entry {
            last_add: now,
            periods: [i64::MIN; 4],
            values: [0; 4],
            distinct: spec
                .distinct
                .then(|| Box::new(std::array::from_fn(|_| Distinct::Sparse(Vec::new())))),
        });
        for w in spec.windows.iter() {
            let i = w.index();
            let period = w.period(now);
            let expired = match w {
                Window::Total => now - entry.last_add > spec.retention_micros,
                _ => entry.periods[i] != period,
            };
            if expired || entry.periods[i] == i64::MIN {
                entry.periods[i] = period;
                entry.values[i] = 0;
                if let Some(d) = &mut entry.distinct {
                    d[i].clear();
                }
            }
            entry.values[i] = match (&mut entry.distinct, distinct) {
                (Some(d), Some(hash)) => d[i].insert(hash),
                (Some(_), None) => entry.values[i],
                (None, _) => entry.values[i] + 1,
            };
        }
        entry.last_add = now;
        if self.adds_since_sweep > 65_536 && 2 * self.adds_since_sweep > self.len() as u64 {
            let now = self.last_now;
            self.sweep(now);
        }
    }

    fn get(&self, counter: usize, key: u128, window: Window, now: i64) -> u64 {
        let spec = &self.specs[counter];
        if !spec.windows.contains(window) {
            return 0;
        }
        let Some(e) = self.maps[counter].get(&key) else {
            return 0;
        };
        let i = window.index();
        let current = match window {
            Window::Total => now - e.last_add <= spec.retention_micros,
            w => e.periods[i] == w.period(now),
        };
        if current { e.values[i] } else { 0 }
    }
}

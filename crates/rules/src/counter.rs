//! Windowed counters: "replies by this account in the last hour", "distinct accounts posting
//! this text today".
//!
//! The rule engine hashes a counter's key string to a `u128` and, for distinct counters, each
//! distinct value to a `u64`; this module never sees strings. Time is microseconds since the
//! Unix epoch (UTC): the evaluation time of the unit being counted (the event's own time in
//! replays and rule tests, the receive time in the engine).
//!
//! # Semantics
//!
//! Analysts rely on these; they are tested in `tests/counters.rs`.
//!
//! - **Windows are fixed and UTC-aligned, not sliding.** `minute`, `hour` and `day` are the
//!   calendar minute, hour and day (UTC) that contain `now`: the hour window at 10:59:59 holds
//!   what was counted since 10:00:00.000000, and at 11:00:00.000000 it holds only what has been
//!   counted since then, so a read at 11:00:00 before any new add returns 0. A burst that
//!   straddles a boundary is split between two periods. Days start at 00:00:00Z; there are no
//!   leap seconds (the clock is Unix time).
//! - **Each key keeps only its latest period per window.** A read returns the value of the
//!   period containing `now` if that is the key's latest period, and 0 otherwise: for a period
//!   after the latest (the window has rolled over) and for an earlier one alike. Reads never
//!   change anything.
//! - **`total` counts since the key was first counted**, but a key idle (no add) for longer
//!   than the counter's retention is forgotten: once `now` is more than `retention_micros`
//!   after the key's latest add, reads return 0, [`MemoryCounters::sweep`] may free the key,
//!   and the next add starts again from 1. Idle for exactly the retention still counts. No
//!   counter grows without bound. A negative retention is treated as 0.
//! - **Late adds** (a `now` earlier than the key's latest add, as with out-of-order events in
//!   replays): counted in `total` and in every window whose period is still the key's latest,
//!   ignored by windows that have since rolled over to a later period. They never move a
//!   window back to an earlier period, and do not refresh the retention clock.
//! - **Only declared windows are stored.** Reading a window the counter does not declare
//!   returns 0; the rule checker rejects such reads when a ruleset loads, so rules never see
//!   that 0.
//! - **Occurrence counts** of `minute`, `hour` and `day` saturate at `u32::MAX` (4,294,967,295
//!   per key and period: about 50,000 adds a second to one key for a whole day); `total` is a
//!   `u64`. A non-distinct counter ignores the distinct value passed to `add`.
//! - **Distinct counters** count distinct 64-bit value hashes per key and window. They are
//!   exact while a window holds at most [`SPARSE_LIMIT`] (48) values: the set of hashes is
//!   kept sorted. The 49th distinct value switches that window, for the rest of its period, to
//!   a HyperLogLog sketch ([`Hll`]: 4,096 one-byte registers, standard error about 1.6 %;
//!   near 10,000 values, where the estimator switches from linear counting to the raw
//!   estimate, the error is larger, about 3 % root mean square with a +1.7 % bias),
//!   whose estimate is reported as at least 49 and never decreases within a period. Each
//!   window switches on its own: a `minute` with 3 values stays exact while the `day` is
//!   estimated. An add without a distinct value on a distinct counter does nothing (not even
//!   refreshing the retention clock). Two different values whose 64-bit hashes collide count
//!   once (probability about n² / 2⁶⁵).
//!
//! # Memory
//!
//! One hash map per counter, keyed by the `u128` key with [`FoldHasher`] (the key is already
//! a uniform hash). Every entry is 32 bytes, so a slot with its key is 48 bytes, plus one
//! control byte; with the map's load factor (between 7/16 and 7/8) a key costs 56 to 112
//! bytes (102 measured with a million keys). A distinct key that has only ever seen one value
//! keeps it inline, at no further cost; a second value adds a slice of per-window sets (24
//! bytes per declared window) and a sorted vector per window (8 bytes a value, at most 48),
//! or 4 KiB per window once that window is estimated (measured with `day` and `total`: 262
//! bytes a key with two values, 454 with ten). Adds to an existing key allocate only when a
//! distinct set grows (a key's second value, a vector's growth, the switch to a sketch, a new
//! sparse set after a sketched period); reads never allocate. [`MemoryCounters::approx_bytes`]
//! reports the total.
//!
//! # Sweeping
//!
//! [`MemoryCounters::sweep`] removes every key none of whose declared windows still holds a
//! value at `now` (every `minute`/`hour`/`day` period before the current one, `total` past
//! retention or not declared), then shrinks maps that have become mostly empty. `add` also
//! sweeps by itself, amortised: a full sweep, at the latest `now` seen so far, once the adds
//! since the last sweep reach both 65,536 and half the number of stored keys. Its cost is
//! proportional to the stored keys, so each add pays for at most about two key visits on
//! average; the price is an occasional pause (15 to 25 ms per million stored keys, measured)
//! on the add that triggers it. Engines that mind the pause call `sweep` themselves off the hot
//! path, which resets the countdown.
//!
//! # Snapshots
//!
//! [`MemoryCounters::encode_counter`] writes one counter's state so that a restarted engine
//! can [`decode`](MemoryCounters::decode_counter) it into a counter with the same spec, and
//! [`MemoryCounters::take_counter_from`] moves a counter's state into the counters of a
//! reloaded ruleset when its spec did not change. The encoding (version 1) is, with integers
//! little-endian and fixed width unless marked *varint* (unsigned LEB128):
//!
//! - header: the magic `SWCT`, the version byte `1`, the declared windows as a bit set (bit
//!   *i* for the *i*-th window of [`Window::ALL`]), `distinct` (0 or 1), the retention (`i64`
//!   µs, never negative), and the number of keys (varint);
//! - per key, in no particular order: the key (`u128`), an entry kind byte, and `last_add`
//!   (`i64`), then for an occurrence counter (kind 0) one varint per declared window in the
//!   order of [`Window::ALL`]; for a distinct counter `first` (`u64`), and, for kind 2 (a key
//!   that has seen a second value; kind 1 has not) one set per declared window: either `0`,
//!   a varint length of at most [`SPARSE_LIMIT`] and the strictly increasing hashes (`u64`),
//!   or `1`, the varint register count (4,096), the registers (one byte each, at most 53),
//!   and the value reported so far (varint). The sketch's harmonic sum is recomputed from the
//!   registers.
//!
//! An occurrence key takes about 30 bytes, a distinct key with one value 33, a sketch about
//! 4.1 KB. Decoding checks every length against the bytes left before allocating, rejects
//! a spec other than the counter's ([`SnapshotError::SpecMismatch`]) and whatever would break
//! an invariant of the counter (an exact set too long or not strictly increasing, a wrong
//! register count, a register above 53, an entry of the other kind of counter, a repeated
//! key, a reported value not above [`SPARSE_LIMIT`]), and changes nothing unless it succeeds.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::hash::{BuildHasherDefault, Hasher};

/// A counter window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    /// The current UTC calendar minute.
    Minute,
    /// The current UTC hour.
    Hour,
    /// The current UTC day.
    Day,
    /// Since the key was first counted; forgotten after the counter's retention of idleness.
    Total,
}

impl Window {
    /// Every window, in order.
    pub const ALL: [Window; 4] = [Window::Minute, Window::Hour, Window::Day, Window::Total];

    /// The name used in rule files: `minute`, `hour`, `day` or `total`.
    pub fn name(&self) -> &'static str {
        match self {
            Window::Minute => "minute",
            Window::Hour => "hour",
            Window::Day => "day",
            Window::Total => "total",
        }
    }

    /// Parses a window name (as written by [`Window::name`]).
    pub fn parse(s: &str) -> Option<Window> {
        Window::ALL.into_iter().find(|w| w.name() == s)
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The period `now` falls in: the same number for every time in one minute/hour/day, and
    /// larger for later periods. 0 for total.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
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

    /// The windows in the set, in the order of [`Window::ALL`].
    pub fn iter(self) -> impl Iterator<Item = Window> {
        Window::ALL.into_iter().filter(move |w| self.contains(*w))
    }

    /// How many windows the set holds.
    pub fn len(&self) -> usize {
        self.0.count_ones() as usize
    }

    /// Whether the set holds no window.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
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
    /// A key idle (no add) for longer than this (µs) is forgotten: its `total` reads 0 and
    /// sweeps free it.
    pub retention_micros: i64,
    /// The minute, hour and day windows start this long (µs) after the UTC minute, hour and
    /// day: a second counter offset by half a window sees whole the bursts that straddle the
    /// first one's boundary. From 0 to less than a day.
    pub offset_micros: i64,
}

/// The largest counter offset, exclusive: a day.
pub const MAX_OFFSET_MICROS: i64 = 86_400_000_000;

/// Where counters live: in memory here ([`MemoryCounters`]); the engine may provide persistent
/// or shared stores.
pub trait CounterStore {
    /// Counts one occurrence for `key` (and, for distinct counters, the distinct value's hash)
    /// at `now`.
    fn add(&mut self, counter: usize, key: u128, distinct: Option<u64>, now: i64);
    /// The value for `key` in `window` at `now`: occurrences, or (estimated) distinct values.
    /// 0 if never seen, rolled over, forgotten, or the window is not declared.
    fn get(&self, counter: usize, key: u128, window: Window, now: i64) -> u64;
}

/// Distinct sets stay exact up to this many values per key and window.
pub const SPARSE_LIMIT: usize = 48;

const HLL_BITS: u32 = 12;
const HLL_REGISTERS: usize = 1 << HLL_BITS;
/// The largest register value: the hash bits left after the index, plus one.
const HLL_MAX_RANK: u32 = 64 - HLL_BITS + 1;

/// A HyperLogLog sketch of 64-bit hashes with precision 12: 4,096 one-byte registers, standard
/// error 1.04 / √4096 ≈ 1.6 %. The top 12 bits of a hash pick the register, the rank of the
/// first set bit of the rest is its value. The estimate is the standard one (harmonic mean
/// with the bias constant α), with linear counting below 2.5 × 4,096 while some register is
/// still zero; no large-range correction is needed with 64-bit hashes. That switch is the
/// estimator's weak spot: around 10,000 values the raw estimate is biased upwards and the
/// error is about 3 % root mean square (measured over 100 input sets: +1.7 % bias), against
/// 1.2 to 1.6 % below 5,000 and above 15,000.
///
/// The harmonic sum is kept up to date, exactly, as registers change, so [`Hll::estimate`]
/// costs a division (and a logarithm in the small range), not a pass over the registers.
#[derive(Clone)]
pub struct Hll {
    registers: [u8; HLL_REGISTERS],
    /// Σ 2^(HLL_MAX_RANK − register): the harmonic sum scaled to an exact integer.
    sum: u128,
    zeros: u32,
}

impl Default for Hll {
    fn default() -> Self {
        Hll {
            registers: [0; HLL_REGISTERS],
            sum: (HLL_REGISTERS as u128) << HLL_MAX_RANK,
            zeros: HLL_REGISTERS as u32,
        }
    }
}

impl std::fmt::Debug for Hll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hll")
            .field("estimate", &self.estimate())
            .field("zero_registers", &self.zeros)
            .finish()
    }
}

impl Hll {
    /// An empty sketch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a 64-bit hash (it should be uniformly distributed). Returns whether a register
    /// changed, that is whether the estimate may have.
    pub fn insert(&mut self, hash: u64) -> bool {
        let index = (hash >> (64 - HLL_BITS)) as usize;
        let rank = ((hash << HLL_BITS).leading_zeros() + 1).min(HLL_MAX_RANK);
        let old = u32::from(self.registers[index]);
        if rank <= old {
            return false;
        }
        self.registers[index] = rank as u8;
        self.sum -= 1u128 << (HLL_MAX_RANK - old);
        self.sum += 1u128 << (HLL_MAX_RANK - rank);
        if old == 0 {
            self.zeros -= 1;
        }
        true
    }

    /// The estimated number of distinct hashes inserted (0 for an empty sketch).
    pub fn estimate(&self) -> u64 {
        let m = HLL_REGISTERS as f64;
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let harmonic = self.sum as f64 / (1u64 << HLL_MAX_RANK) as f64;
        let raw = alpha * m * m / harmonic;
        let e = if raw <= 2.5 * m && self.zeros > 0 {
            // Small range: linear counting is more accurate.
            m * (m / f64::from(self.zeros)).ln()
        } else {
            raw
        };
        e.round() as u64
    }

    /// A sketch with these registers, each at most `HLL_MAX_RANK`, with its harmonic sum and
    /// zero count computed from them.
    fn from_registers(registers: [u8; HLL_REGISTERS]) -> Self {
        let mut sum = 0u128;
        let mut zeros = 0u32;
        for &r in &registers {
            debug_assert!(u32::from(r) <= HLL_MAX_RANK);
            sum += 1u128 << (HLL_MAX_RANK - u32::from(r));
            zeros += u32::from(r == 0);
        }
        Hll {
            registers,
            sum,
            zeros,
        }
    }
}

/// A sketch with the value it reports: never below the exact phase, never decreasing.
#[derive(Debug, Clone)]
struct Dense {
    hll: Hll,
    reported: u64,
}

/// The distinct values of one key in one window.
#[derive(Debug, Clone)]
enum DistinctSet {
    /// Sorted hashes, at most `SPARSE_LIMIT`.
    Sparse(Vec<u64>),
    Dense(Box<Dense>),
}

impl DistinctSet {
    fn insert(&mut self, hash: u64) {
        match self {
            DistinctSet::Sparse(v) => {
                let Err(pos) = v.binary_search(&hash) else {
                    return;
                };
                if v.len() < SPARSE_LIMIT {
                    if v.len() == v.capacity() {
                        // Grow by doubling, but never past the limit.
                        let target = (v.len() * 2).clamp(4, SPARSE_LIMIT);
                        v.reserve_exact(target - v.len());
                    }
                    v.insert(pos, hash);
                    return;
                }
                let mut dense = Box::new(Dense {
                    hll: Hll::default(),
                    reported: 0,
                });
                for h in v.iter() {
                    dense.hll.insert(*h);
                }
                dense.hll.insert(hash);
                dense.reported = dense.hll.estimate().max(SPARSE_LIMIT as u64 + 1);
                *self = DistinctSet::Dense(dense);
            }
            DistinctSet::Dense(d) => {
                if d.hll.insert(hash) {
                    d.reported = d.reported.max(d.hll.estimate());
                }
            }
        }
    }

    fn count(&self) -> u64 {
        match self {
            DistinctSet::Sparse(v) => v.len() as u64,
            DistinctSet::Dense(d) => d.reported,
        }
    }

    /// Empties the set for a new period. A sparse set keeps its memory (the key is likely to
    /// see as many values again); a sketch is freed.
    fn clear(&mut self) {
        match self {
            DistinctSet::Sparse(v) => v.clear(),
            DistinctSet::Dense(_) => *self = DistinctSet::Sparse(Vec::new()),
        }
    }

    /// Heap bytes, with 16 bytes of allocator overhead per allocation.
    fn heap_bytes(&self) -> usize {
        match self {
            DistinctSet::Sparse(v) if v.capacity() == 0 => 0,
            DistinctSet::Sparse(v) => v.capacity() * 8 + 16,
            DistinctSet::Dense(_) => std::mem::size_of::<Dense>() + 16,
        }
    }
}

/// One key of an occurrence counter. The values are those of the periods containing
/// `last_add`.
#[derive(Debug, Clone)]
struct PlainEntry {
    /// The latest time the key was counted at.
    last_add: i64,
    total: u64,
    /// Minute, hour, day.
    periodic: [u32; 3],
}

/// One key of a distinct counter.
#[derive(Debug, Clone)]
struct DistinctEntry {
    /// The latest time the key was counted at.
    last_add: i64,
    /// The first value counted. While `sets` is `None`, it is the only value ever counted, so
    /// every declared window holds exactly `{first}` in the periods containing `last_add`.
    first: u64,
    /// One set per declared window, in the order of [`Window::ALL`], once a second value came.
    sets: Option<Box<[DistinctSet]>>,
}

/// Folds an already uniform 128-bit key to 64 bits (one xor and one multiply, so that keys
/// that are not uniform, such as small integers in tests, still spread over the table).
#[derive(Debug, Default, Clone, Copy)]
pub struct FoldHasher(u64);

impl Hasher for FoldHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0 ^ u64::from_le_bytes(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u128(&mut self, k: u128) {
        self.0 = ((k as u64) ^ ((k >> 64) as u64) ^ self.0).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

// A slot (key and entry) stays at 48 bytes (40 where `u128` is 8-byte aligned).
const _: () = assert!(std::mem::size_of::<(u128, PlainEntry)>() <= 48);
const _: () = assert!(std::mem::size_of::<(u128, DistinctEntry)>() <= 48);

type KeyMap<E> = HashMap<u128, E, BuildHasherDefault<FoldHasher>>;

#[derive(Debug)]
enum Keys {
    Plain(KeyMap<PlainEntry>),
    Distinct(KeyMap<DistinctEntry>),
}

/// What an add at `now` does to one window of a key last counted at `last_add`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Count in the key's current period.
    Count,
    /// A new period (or, for total, the key was forgotten): start again from this add.
    Restart,
    /// A late add for a period the window has left.
    Skip,
}

impl Step {
    /// The new occurrence count of a window that held `value`.
    fn apply(self, value: u64) -> u64 {
        match self {
            Step::Count => value.saturating_add(1),
            Step::Restart => 1,
            Step::Skip => value,
        }
    }
}

/// How a counter's windows behave: what a counter needs besides its keys.
#[derive(Debug, Clone, Copy)]
struct Policy {
    windows: WindowSet,
    /// Never negative.
    retention: i64,
    /// From 0 to less than [`MAX_OFFSET_MICROS`].
    offset: i64,
}

impl Policy {
    /// The period of window `w` that time `t` falls in, the counter's offset applied.
    fn period(self, w: Window, t: i64) -> i64 {
        w.period(t.saturating_sub(self.offset))
    }

    fn step(self, w: Window, last_add: i64, now: i64) -> Step {
        match w {
            Window::Total if now.saturating_sub(last_add) > self.retention => Step::Restart,
            Window::Total => Step::Count,
            w => match self.period(w, now).cmp(&self.period(w, last_add)) {
                std::cmp::Ordering::Greater => Step::Restart,
                std::cmp::Ordering::Equal => Step::Count,
                std::cmp::Ordering::Less => Step::Skip,
            },
        }
    }

    /// Whether a read of `w` at `now` sees the key's value (`w` declared).
    fn current(self, w: Window, last_add: i64, now: i64) -> bool {
        match w {
            Window::Total => now.saturating_sub(last_add) <= self.retention,
            w => self.period(w, now) == self.period(w, last_add),
        }
    }

    /// Whether some declared window still holds a value at `now` or later.
    fn alive(self, last_add: i64, now: i64) -> bool {
        self.windows.iter().any(|w| match w {
            Window::Total => now.saturating_sub(last_add) <= self.retention,
            w => self.period(w, last_add) >= self.period(w, now),
        })
    }

    /// Where the set of declared window `w` is in a key's slice of distinct sets.
    fn slot(self, w: Window) -> usize {
        (self.windows.0 & ((1u8 << w.index()) - 1)).count_ones() as usize
    }
}

#[derive(Debug)]
struct Counter {
    policy: Policy,
    keys: Keys,
}

impl Counter {
    /// The spec this counter behaves by (a negative retention was made 0).
    fn spec(&self) -> CounterSpec {
        CounterSpec {
            windows: self.policy.windows,
            distinct: matches!(self.keys, Keys::Distinct(_)),
            retention_micros: self.policy.retention,
            offset_micros: self.policy.offset,
        }
    }

    /// The same kind of map, empty.
    fn empty_keys(&self) -> Keys {
        match self.keys {
            Keys::Plain(_) => Keys::Plain(KeyMap::default()),
            Keys::Distinct(_) => Keys::Distinct(KeyMap::default()),
        }
    }

    fn len(&self) -> usize {
        match &self.keys {
            Keys::Plain(m) => m.len(),
            Keys::Distinct(m) => m.len(),
        }
    }

    fn add(&mut self, key: u128, distinct: Option<u64>, now: i64) {
        let p = self.policy;
        match &mut self.keys {
            Keys::Plain(map) => {
                let e = map.entry(key).or_insert(PlainEntry {
                    last_add: now,
                    total: 0,
                    periodic: [0; 3],
                });
                let last_add = e.last_add;
                for w in p.windows.iter() {
                    let step = p.step(w, last_add, now);
                    match w {
                        Window::Total => e.total = step.apply(e.total),
                        w => {
                            let v = &mut e.periodic[w.index()];
                            *v = u32::try_from(step.apply(u64::from(*v))).unwrap_or(u32::MAX);
                        }
                    }
                }
                e.last_add = last_add.max(now);
            }
            Keys::Distinct(map) => {
                let Some(hash) = distinct else {
                    return;
                };
                let e = match map.entry(key) {
                    MapEntry::Vacant(v) => {
                        v.insert(DistinctEntry {
                            last_add: now,
                            first: hash,
                            sets: None,
                        });
                        return;
                    }
                    MapEntry::Occupied(o) => o.into_mut(),
                };
                let last_add = e.last_add;
                let sets = match &mut e.sets {
                    // Still a single value: every window that counts or restarts holds just it.
                    None if hash == e.first => {
                        e.last_add = last_add.max(now);
                        return;
                    }
                    None => e.sets.insert(
                        (0..p.windows.len())
                            .map(|_| {
                                let mut v = Vec::with_capacity(4);
                                v.push(e.first);
                                DistinctSet::Sparse(v)
                            })
                            .collect(),
                    ),
                    Some(sets) => sets,
                };
                for (set, w) in sets.iter_mut().zip(p.windows.iter()) {
                    match p.step(w, last_add, now) {
                        Step::Count => set.insert(hash),
                        Step::Restart => {
                            set.clear();
                            set.insert(hash);
                        }
                        Step::Skip => {}
                    }
                }
                e.last_add = last_add.max(now);
            }
        }
    }

    fn get(&self, key: u128, w: Window, now: i64) -> u64 {
        let p = self.policy;
        if !p.windows.contains(w) {
            return 0;
        }
        match &self.keys {
            Keys::Plain(map) => match map.get(&key) {
                Some(e) if p.current(w, e.last_add, now) => match w {
                    Window::Total => e.total,
                    w => u64::from(e.periodic[w.index()]),
                },
                _ => 0,
            },
            Keys::Distinct(map) => match map.get(&key) {
                Some(e) if p.current(w, e.last_add, now) => match &e.sets {
                    None => 1,
                    Some(sets) => sets[p.slot(w)].count(),
                },
                _ => 0,
            },
        }
    }

    fn sweep(&mut self, now: i64) -> usize {
        fn sweep_map<E>(map: &mut KeyMap<E>, alive: impl Fn(&E) -> bool) -> usize {
            let before = map.len();
            map.retain(|_, e| alive(e));
            // Give memory back after a spike, with hysteresis so that a map which refills at
            // every period is not resized back and forth.
            if map.capacity() > 4096 && map.capacity() > 4 * map.len() {
                map.shrink_to(2 * map.len());
            }
            before - map.len()
        }
        let p = self.policy;
        match &mut self.keys {
            Keys::Plain(map) => sweep_map(map, |e| p.alive(e.last_add, now)),
            Keys::Distinct(map) => sweep_map(map, |e| p.alive(e.last_add, now)),
        }
    }

    fn approx_bytes(&self) -> usize {
        fn table_bytes<E>(map: &KeyMap<E>) -> usize {
            // The standard map keeps 1/8 of its buckets free (a small one, one bucket).
            let cap = map.capacity();
            let buckets = match cap {
                0 => return 0,
                1..=6 => (cap + 1).next_power_of_two(),
                _ => (cap * 8 / 7).next_power_of_two(),
            };
            buckets * (std::mem::size_of::<(u128, E)>() + 1) + 16
        }
        match &self.keys {
            Keys::Plain(map) => table_bytes(map),
            Keys::Distinct(map) => {
                table_bytes(map)
                    + map
                        .values()
                        .filter_map(|e| e.sets.as_deref())
                        .map(|sets| {
                            std::mem::size_of_val(sets)
                                + 16
                                + sets.iter().map(DistinctSet::heap_bytes).sum::<usize>()
                        })
                        .sum::<usize>()
            }
        }
    }
}

/// Counters in memory, one hash map per counter. See the [module documentation](self) for the
/// semantics, the memory layout and the sweeping strategy.
#[derive(Debug)]
pub struct MemoryCounters {
    counters: Vec<Counter>,
    adds_since_sweep: u64,
    /// The latest `now` passed to `add`: automatic sweeps run at this time.
    latest: i64,
}

/// Automatic sweeps wait for at least this many adds.
const SWEEP_EVERY: u64 = 65_536;

impl MemoryCounters {
    /// Counters for `specs`; `add` and `get` take the index of a spec in this vector (an index
    /// out of range panics).
    pub fn new(specs: Vec<CounterSpec>) -> Self {
        let counters = specs
            .into_iter()
            .map(|spec| Counter {
                policy: Policy {
                    windows: spec.windows,
                    retention: spec.retention_micros.max(0),
                    offset: spec.offset_micros.clamp(0, MAX_OFFSET_MICROS - 1),
                },
                keys: if spec.distinct {
                    Keys::Distinct(KeyMap::default())
                } else {
                    Keys::Plain(KeyMap::default())
                },
            })
            .collect();
        MemoryCounters {
            counters,
            adds_since_sweep: 0,
            latest: i64::MIN,
        }
    }

    /// Keys stored across all counters (including keys whose windows have all expired but
    /// that no sweep has removed yet).
    pub fn len(&self) -> usize {
        self.counters.iter().map(Counter::len).sum()
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate heap memory held, in bytes: hash tables at their allocated capacity, and
    /// distinct sets and sketches (with 16 bytes of allocator overhead per allocation).
    pub fn approx_bytes(&self) -> usize {
        self.counters
            .iter()
            .map(Counter::approx_bytes)
            .sum::<usize>()
            + self.counters.capacity() * std::mem::size_of::<Counter>()
    }

    /// Removes every key none of whose declared windows holds a value at `now` or later: all
    /// of its `minute`/`hour`/`day` periods are before the one containing `now`, and its
    /// `total` is past retention or not declared. Then shrinks maps left mostly empty. Returns
    /// how many keys were removed. Costs a pass over every stored key; `add` calls it by
    /// itself (see the [module documentation](self)).
    pub fn sweep(&mut self, now: i64) -> usize {
        self.adds_since_sweep = 0;
        self.counters.iter_mut().map(|c| c.sweep(now)).sum()
    }

    /// The spec counter `counter` behaves by: the one it was created with, except that a
    /// negative retention reads as 0 (which is how it behaves).
    pub fn spec(&self, counter: usize) -> CounterSpec {
        self.counters[counter].spec()
    }

    /// Appends the state of counter `counter` (its spec and every stored key) to `out`, in
    /// the format described in the [module documentation](self#snapshots). Keys that have
    /// expired but were not swept yet are included; [`MemoryCounters::sweep`] first to leave
    /// them out.
    pub fn encode_counter(&self, counter: usize, out: &mut Vec<u8>) {
        let c = &self.counters[counter];
        let p = c.policy;
        out.extend_from_slice(&SNAPSHOT_MAGIC);
        out.push(SNAPSHOT_VERSION);
        out.push(p.windows.0);
        out.push(u8::from(matches!(c.keys, Keys::Distinct(_))));
        out.extend_from_slice(&p.retention.to_le_bytes());
        out.extend_from_slice(&p.offset.to_le_bytes());
        put_varint(out, c.len() as u64);
        match &c.keys {
            Keys::Plain(map) => {
                out.reserve(map.len() * (MIN_KEY_BYTES + 2 * p.windows.len()));
                for (key, e) in map {
                    out.extend_from_slice(&key.to_le_bytes());
                    out.push(ENTRY_PLAIN);
                    out.extend_from_slice(&e.last_add.to_le_bytes());
                    for w in p.windows.iter() {
                        let v = match w {
                            Window::Total => e.total,
                            w => u64::from(e.periodic[w.index()]),
                        };
                        put_varint(out, v);
                    }
                }
            }
            Keys::Distinct(map) => {
                out.reserve(map.len() * (MIN_KEY_BYTES + 8));
                for (key, e) in map {
                    out.extend_from_slice(&key.to_le_bytes());
                    out.push(if e.sets.is_some() {
                        ENTRY_DISTINCT_SETS
                    } else {
                        ENTRY_DISTINCT_SINGLE
                    });
                    out.extend_from_slice(&e.last_add.to_le_bytes());
                    out.extend_from_slice(&e.first.to_le_bytes());
                    for set in e.sets.iter().flat_map(|sets| sets.iter()) {
                        match set {
                            DistinctSet::Sparse(v) => {
                                out.push(SET_SPARSE);
                                put_varint(out, v.len() as u64);
                                for h in v {
                                    out.extend_from_slice(&h.to_le_bytes());
                                }
                            }
                            DistinctSet::Dense(d) => {
                                out.push(SET_DENSE);
                                put_varint(out, HLL_REGISTERS as u64);
                                out.extend_from_slice(&d.hll.registers);
                                put_varint(out, d.reported);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Replaces the state of counter `counter` with `bytes`, an encoding by
    /// [`MemoryCounters::encode_counter`] of a counter with the same spec (windows, distinct,
    /// retention; compared as [`MemoryCounters::spec`] reports them). Afterwards `get` returns
    /// what it returned on the encoded counter, and further adds behave as they would have
    /// there. On error nothing changes: the bytes are malformed (not a snapshot, another
    /// version, truncated, trailing bytes, a value no encoding contains) or the spec differs.
    /// Never panics on any input (but, like `add`, on a `counter` out of range), and allocates
    /// at most in proportion to `bytes.len()`.
    pub fn decode_counter(&mut self, counter: usize, bytes: &[u8]) -> Result<(), SnapshotError> {
        let c = &mut self.counters[counter];
        let mut r = Reader { bytes, pos: 0 };
        if r.take(SNAPSHOT_MAGIC.len(), "the magic")? != SNAPSHOT_MAGIC {
            return Err(malformed("not a counter snapshot (bad magic)"));
        }
        let version = r.u8("the version")?;
        if !(1..=SNAPSHOT_VERSION).contains(&version) {
            return Err(malformed(format!(
                "unsupported version {version} (this build reads versions 1 to {SNAPSHOT_VERSION})"
            )));
        }
        let windows = r.u8("the windows")?;
        if windows >> Window::ALL.len() != 0 {
            return Err(malformed(format!("invalid window set {windows:#04x}")));
        }
        let distinct = match r.u8("the distinct flag")? {
            0 => false,
            1 => true,
            v => return Err(malformed(format!("invalid distinct flag {v}"))),
        };
        let retention_micros = r.i64("the retention")?;
        if retention_micros < 0 {
            return Err(malformed(format!("negative retention {retention_micros}")));
        }
        let offset_micros = if version >= 2 {
            r.i64("the offset")?
        } else {
            0
        };
        if !(0..MAX_OFFSET_MICROS).contains(&offset_micros) {
            return Err(malformed(format!("offset {offset_micros} out of range")));
        }
        let theirs = CounterSpec {
            windows: WindowSet(windows),
            distinct,
            retention_micros,
            offset_micros,
        };
        let ours = c.spec();
        if theirs != ours {
            return Err(SnapshotError::SpecMismatch(spec_difference(&theirs, &ours)));
        }

        let count = r.varint("the key count")?;
        let room = r.remaining() / MIN_KEY_BYTES;
        if count > room as u64 {
            return Err(malformed(format!(
                "{count} keys cannot fit in the {} bytes left",
                r.remaining()
            )));
        }
        let count = count as usize;
        let p = c.policy;
        let mut latest = i64::MIN;
        let keys = if distinct {
            let mut map = KeyMap::with_capacity_and_hasher(count, Default::default());
            for _ in 0..count {
                let key = r.u128("a key")?;
                let kind = r.u8("an entry kind")?;
                if kind != ENTRY_DISTINCT_SINGLE && kind != ENTRY_DISTINCT_SETS {
                    return Err(r.bad_kind(kind, true));
                }
                let last_add = r.i64("last_add")?;
                let first = r.u64("a first value")?;
                let sets = if kind == ENTRY_DISTINCT_SETS {
                    let sets = (0..p.windows.len())
                        .map(|_| r.distinct_set())
                        .collect::<Result<Box<[DistinctSet]>, _>>()?;
                    Some(sets)
                } else {
                    None
                };
                latest = latest.max(last_add);
                let e = DistinctEntry {
                    last_add,
                    first,
                    sets,
                };
                if map.insert(key, e).is_some() {
                    return Err(malformed(format!("key {key:#x} appears twice")));
                }
            }
            Keys::Distinct(map)
        } else {
            let mut map = KeyMap::with_capacity_and_hasher(count, Default::default());
            for _ in 0..count {
                let key = r.u128("a key")?;
                let kind = r.u8("an entry kind")?;
                if kind != ENTRY_PLAIN {
                    return Err(r.bad_kind(kind, false));
                }
                let last_add = r.i64("last_add")?;
                let mut e = PlainEntry {
                    last_add,
                    total: 0,
                    periodic: [0; 3],
                };
                for w in p.windows.iter() {
                    let v = r.varint(w.name())?;
                    match w {
                        Window::Total => e.total = v,
                        w => {
                            e.periodic[w.index()] = u32::try_from(v).map_err(|_| {
                                malformed(format!("{} count {v} exceeds u32::MAX", w.name()))
                            })?;
                        }
                    }
                }
                latest = latest.max(last_add);
                if map.insert(key, e).is_some() {
                    return Err(malformed(format!("key {key:#x} appears twice")));
                }
            }
            Keys::Plain(map)
        };
        if r.remaining() != 0 {
            return Err(malformed(format!(
                "{} trailing bytes after {count} keys",
                r.remaining()
            )));
        }
        c.keys = keys;
        // The restored adds happened: automatic sweeps may run at their time.
        self.latest = self.latest.max(latest);
        Ok(())
    }

    /// Moves the state of `other`'s counter `other_counter` into counter `counter`, replacing
    /// what it held, if both have the same spec (as [`MemoryCounters::spec`] reports it), and
    /// returns true; `other`'s counter is left empty. Otherwise changes nothing and returns
    /// false. For a ruleset reload: the counters of the new ruleset take over the state of
    /// unchanged counters of the old one. Panics if either index is out of range.
    pub fn take_counter_from(
        &mut self,
        counter: usize,
        other: &mut MemoryCounters,
        other_counter: usize,
    ) -> bool {
        let from = &mut other.counters[other_counter];
        let to = &mut self.counters[counter];
        if to.spec() != from.spec() {
            return false;
        }
        let empty = from.empty_keys();
        to.keys = std::mem::replace(&mut from.keys, empty);
        self.latest = self.latest.max(other.latest);
        true
    }
}

/// Why [`MemoryCounters::decode_counter`] refused a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotError {
    /// The bytes are not a valid counter encoding: bad magic, unsupported version, truncated,
    /// trailing bytes, or a value no encoding contains. The message says what and where.
    Malformed(String),
    /// The snapshot is of a counter with another spec (the ruleset changed it); the message
    /// says what differs, e.g. `windows differ: snapshot has minute,hour; counter has hour`.
    SpecMismatch(String),
}

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotError::Malformed(m) => write!(f, "malformed counter snapshot: {m}"),
            SnapshotError::SpecMismatch(m) => write!(f, "counter spec changed: {m}"),
        }
    }
}

impl std::error::Error for SnapshotError {}

fn malformed(message: impl Into<String>) -> SnapshotError {
    SnapshotError::Malformed(message.into())
}

/// What differs between a snapshot's spec and a counter's, for [`SnapshotError::SpecMismatch`].
fn spec_difference(snapshot: &CounterSpec, counter: &CounterSpec) -> String {
    fn names(w: WindowSet) -> String {
        if w.is_empty() {
            return "none".to_string();
        }
        w.iter().map(|w| w.name()).collect::<Vec<_>>().join(",")
    }
    fn kind(distinct: bool) -> &'static str {
        if distinct {
            "counts distinct values"
        } else {
            "counts occurrences"
        }
    }
    let mut diffs = Vec::new();
    if snapshot.windows != counter.windows {
        diffs.push(format!(
            "windows differ: snapshot has {}; counter has {}",
            names(snapshot.windows),
            names(counter.windows)
        ));
    }
    if snapshot.distinct != counter.distinct {
        diffs.push(format!(
            "distinct differs: snapshot {}; counter {}",
            kind(snapshot.distinct),
            kind(counter.distinct)
        ));
    }
    if snapshot.retention_micros != counter.retention_micros {
        diffs.push(format!(
            "retention differs: snapshot has {} µs; counter has {} µs",
            snapshot.retention_micros, counter.retention_micros
        ));
    }
    if snapshot.offset_micros != counter.offset_micros {
        diffs.push(format!(
            "offset differs: snapshot has {} µs; counter has {} µs",
            snapshot.offset_micros, counter.offset_micros
        ));
    }
    diffs.join("; and ")
}

/// `SWCT`: skywarden counter.
const SNAPSHOT_MAGIC: [u8; 4] = *b"SWCT";
/// Version 2 added the offset after the retention; version 1 snapshots (no offset) still load.
const SNAPSHOT_VERSION: u8 = 2;
const ENTRY_PLAIN: u8 = 0;
const ENTRY_DISTINCT_SINGLE: u8 = 1;
const ENTRY_DISTINCT_SETS: u8 = 2;
const SET_SPARSE: u8 = 0;
const SET_DENSE: u8 = 1;
/// The fewest bytes an encoded key takes: key, kind and `last_add`.
const MIN_KEY_BYTES: usize = 16 + 1 + 8;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a counter encoding, failing with the offset and what it was reading.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], SnapshotError> {
        if n > self.remaining() {
            return Err(malformed(format!(
                "truncated: {what} needs {n} bytes at offset {}, {} left",
                self.pos,
                self.remaining()
            )));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], SnapshotError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u8(&mut self, what: &str) -> Result<u8, SnapshotError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u64(&mut self, what: &str) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn i64(&mut self, what: &str) -> Result<i64, SnapshotError> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }

    fn u128(&mut self, what: &str) -> Result<u128, SnapshotError> {
        Ok(u128::from_le_bytes(self.array(what)?))
    }

    fn varint(&mut self, what: &str) -> Result<u64, SnapshotError> {
        let start = self.pos;
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8(what)?;
            if shift == 63 && b > 1 {
                break;
            }
            v |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(malformed(format!(
            "{what} at offset {start} is not a valid 64-bit varint"
        )))
    }

    fn bad_kind(&self, kind: u8, distinct: bool) -> SnapshotError {
        let counter = if distinct {
            "a distinct"
        } else {
            "an occurrence"
        };
        malformed(format!(
            "entry kind {kind} at offset {} does not belong in {counter} counter",
            self.pos - 1
        ))
    }

    fn distinct_set(&mut self) -> Result<DistinctSet, SnapshotError> {
        let at = self.pos;
        match self.u8("a set kind")? {
            SET_SPARSE => {
                let len = self.varint("a set length")?;
                if len > SPARSE_LIMIT as u64 {
                    return Err(malformed(format!(
                        "exact set of {len} values at offset {at}, more than {SPARSE_LIMIT}"
                    )));
                }
                let raw = self.take(len as usize * 8, "a set's values")?;
                let v: Vec<u64> = raw
                    .chunks_exact(8)
                    .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                    .collect();
                if v.windows(2).any(|p| p[0] >= p[1]) {
                    return Err(malformed(format!(
                        "exact set at offset {at} is not strictly increasing"
                    )));
                }
                Ok(DistinctSet::Sparse(v))
            }
            SET_DENSE => {
                let n = self.varint("a register count")?;
                if n != HLL_REGISTERS as u64 {
                    return Err(malformed(format!(
                        "sketch at offset {at} has {n} registers, not {HLL_REGISTERS}"
                    )));
                }
                let registers: [u8; HLL_REGISTERS] = self.array("a sketch's registers")?;
                if let Some(i) = registers.iter().position(|&r| u32::from(r) > HLL_MAX_RANK) {
                    return Err(malformed(format!(
                        "sketch register {i} at offset {at} is {}, more than {HLL_MAX_RANK}",
                        registers[i]
                    )));
                }
                let hll = Hll::from_registers(registers);
                let reported = self.varint("a reported estimate")?;
                if reported <= SPARSE_LIMIT as u64 {
                    return Err(malformed(format!(
                        "sketch at offset {at} reports {reported}, not more than {SPARSE_LIMIT}"
                    )));
                }
                // Never below the estimate, as when it was counted (a platform whose
                // logarithm rounds differently could otherwise see it decrease).
                let reported = reported.max(hll.estimate());
                Ok(DistinctSet::Dense(Box::new(Dense { hll, reported })))
            }
            k => Err(malformed(format!("invalid set kind {k} at offset {at}"))),
        }
    }
}

impl CounterStore for MemoryCounters {
    fn add(&mut self, counter: usize, key: u128, distinct: Option<u64>, now: i64) {
        self.counters[counter].add(key, distinct, now);
        self.latest = self.latest.max(now);
        self.adds_since_sweep += 1;
        if self.adds_since_sweep >= SWEEP_EVERY && 2 * self.adds_since_sweep >= self.len() as u64 {
            self.sweep(self.latest);
        }
    }

    fn get(&self, counter: usize, key: u128, window: Window, now: i64) -> u64 {
        self.counters[counter].get(key, window, now)
    }
}

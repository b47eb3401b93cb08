//! Evaluation of the default ruleset (`rules/`) on a realistic mix of decoded events: mostly
//! likes, follows and reposts, about 15 % posts (replies, mentions, links, hashtags), some
//! profile updates, deletes, blocks and identity events, from 5,000 accounts of mixed ages.
//! Decoding is excluded: events are built once, then evaluated with in-memory counters.
//!
//! Prints events/s on one core and heap allocations per event (a counting allocator wraps the
//! system one), then runs the criterion measurement.
//!
//! Run: `cargo bench -p skywarden-rules --bench eval`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use skywarden_atproto::data::json_to_ipld;
use skywarden_atproto::event::{Action, Event, EventBody};
use skywarden_atproto::syntax::Tid;
use skywarden_rules::counter::MemoryCounters;
use skywarden_rules::testing::record_event;
use skywarden_rules::{Account, Evaluator, Input, Ruleset};
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const ACCOUNTS: u64 = 5_000;
const EVENTS: usize = 20_000;
const T0: i64 = 1_717_243_200_000_000;
const CID: &str = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm";

/// A small deterministic generator (xorshift), so every run evaluates the same events.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const WORDS: &[&str] = &[
    "the",
    "morning",
    "light",
    "over",
    "harbour",
    "birds",
    "coffee",
    "great",
    "thread",
    "about",
    "tern",
    "migration",
    "photo",
    "café",
    "über",
    "really",
    "agree",
    "this",
    "new",
    "paper",
];

fn did(i: u64) -> String {
    format!("did:plc:bench{i:019}")
}

fn post_text(rng: &mut Rng) -> String {
    let n = 3 + rng.below(20);
    let mut words: Vec<&str> = (0..n)
        .map(|_| WORDS[rng.below(WORDS.len() as u64) as usize])
        .collect();
    if rng.below(5) == 0 {
        words.push("#birds");
    }
    if rng.below(6) == 0 {
        words.push("https://example.com/article");
    }
    words.join(" ")
}

fn mix() -> Vec<(Event, Account)> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let accounts: Vec<Account> = (0..ACCOUNTS)
        .map(|i| Account {
            handle: Some(format!("user{i}.bsky.social").into()),
            created_at: (i % 10 != 0).then(|| T0 - (i as i64 % 700) * 86_400_000_000),
            followers: Some((i % 500) as i64),
            ..Account::default()
        })
        .collect();
    let mut out = Vec::with_capacity(EVENTS);
    for n in 0..EVENTS {
        let a = rng.below(ACCOUNTS);
        let author = did(a);
        let target = did(rng.below(ACCOUNTS));
        let t = T0 + n as i64 * 10_000; // 100 events/s of event time
        // Real TIDs, as on the network (a key that is not a TID is a chosen name, which rules
        // inspect: bad-word-record-key).
        let rkey = Tid::from_parts((t + n as i64) as u64, 0).expect("TID fits");
        let rkey = rkey.as_str();
        let subject = serde_json::json!({"uri": format!("at://{target}/app.bsky.feed.post/3kfxt2dprhx22"), "cid": CID});
        let roll = rng.below(100);
        let (collection, action, record) = match roll {
            0..=34 => (
                "app.bsky.feed.like",
                Action::Create,
                Some(serde_json::json!({"subject": subject})),
            ),
            35..=54 => (
                "app.bsky.graph.follow",
                Action::Create,
                Some(serde_json::json!({"subject": target})),
            ),
            55..=69 => (
                "app.bsky.feed.repost",
                Action::Create,
                Some(serde_json::json!({"subject": subject})),
            ),
            70..=84 => {
                let mut post = serde_json::json!({"text": post_text(&mut rng), "langs": ["en"]});
                if rng.below(3) == 0 {
                    post["reply"] = serde_json::json!({"parent": subject, "root": subject});
                }
                if rng.below(8) == 0 {
                    post["facets"] = serde_json::json!([{"index": {"byteStart": 0, "byteEnd": 3},
                        "features": [{"$type": "app.bsky.richtext.facet#mention", "did": target}]}]);
                }
                ("app.bsky.feed.post", Action::Create, Some(post))
            }
            85..=88 => (
                "app.bsky.graph.block",
                Action::Create,
                Some(serde_json::json!({"subject": target})),
            ),
            89..=91 => (
                "app.bsky.actor.profile",
                Action::Update,
                Some(
                    serde_json::json!({"displayName": format!("User {a}"), "description": post_text(&mut rng)}),
                ),
            ),
            92..=94 => ("app.bsky.feed.like", Action::Delete, None),
            95..=97 => ("app.bsky.graph.follow", Action::Delete, None),
            _ => {
                let event = Event {
                    cursor: n as i64,
                    did: author.into(),
                    time: "2024-06-01T12:00:00Z".into(),
                    body: EventBody::Identity {
                        handle: Some(format!("user{a}.bsky.social").into()),
                    },
                };
                out.push((event, accounts[a as usize].clone()));
                continue;
            }
        };
        let record = record.map(|mut r| {
            r["$type"] = collection.into();
            r["createdAt"] = "2024-06-01T12:00:00Z".into();
            json_to_ipld(&r).expect("valid record")
        });
        let event = record_event(&author, t, action, collection, rkey, record);
        out.push((event, accounts[a as usize].clone()));
    }
    out
}

fn load() -> Ruleset {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules");
    Ruleset::load_dir(&dir).unwrap_or_else(|d| panic!("{d:?}"))
}

static PASS: AtomicU64 = AtomicU64::new(0);

/// The start of the next unused day of event time (µs offset from T0).
fn next_day() -> i64 {
    PASS.fetch_add(1, Ordering::Relaxed) as i64 * 86_400_000_000
}

/// One pass over the events. Each pass is a new day of event time, so counters see a realistic
/// stream rather than the same events counted again in the same windows.
fn run_once(
    rs: &Ruleset,
    events: &[(Event, Account)],
    eval: &mut Evaluator,
    counters: &mut MemoryCounters,
) -> usize {
    let day = next_day();
    let mut fired = 0;
    let mut out = Vec::new();
    for (i, (event, account)) in events.iter().enumerate() {
        let now = T0 + day + i as i64 * 10_000;
        for input in Input::units(event, account, now) {
            out.clear();
            eval.evaluate(rs, input, counters, &mut out);
            fired += out.len();
        }
    }
    fired
}

fn bench(c: &mut Criterion) {
    let rs = load();
    let events = mix();
    let posts = events
        .iter()
        .filter(|(e, _)| matches!(&e.body, EventBody::Commit(c) if c.ops[0].collection == "app.bsky.feed.post"))
        .count();
    let mut eval = Evaluator::new();
    let mut counters = MemoryCounters::new(rs.counters.iter().map(|c| c.spec.clone()).collect());
    // Warm up: arenas and counter maps reach their steady size.
    run_once(&rs, &events, &mut eval, &mut counters);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let started = Instant::now();
    let rounds = 5;
    let mut fired = 0;
    for _ in 0..rounds {
        fired += run_once(&rs, &events, &mut eval, &mut counters);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    let n = (EVENTS * rounds) as f64;
    println!(
        "default ruleset ({} rules, {} counters), {EVENTS} events ({:.1} % posts), {} accounts:",
        rs.rules.len(),
        rs.counters.len(),
        100.0 * posts as f64 / EVENTS as f64,
        ACCOUNTS
    );
    println!(
        "  {:.0} events/s on one core, {:.2} heap allocations per event, {:.3} firings per event",
        n / elapsed,
        allocations as f64 / n,
        fired as f64 / n
    );
    // Where allocations come from: events on which no rule fired, against firings (binding
    // actions and explanations allocates by design).
    let (mut quiet, mut quiet_allocs, mut firing_units, mut firing_allocs) =
        (0u64, 0u64, 0u64, 0u64);
    let mut per_rule = vec![0u64; rs.rules.len()];
    let mut out = Vec::new();
    let day = next_day();
    for (i, (event, account)) in events.iter().enumerate() {
        let now = T0 + day + i as i64 * 10_000;
        for input in Input::units(event, account, now) {
            out.clear();
            let before = ALLOCATIONS.load(Ordering::Relaxed);
            eval.evaluate(&rs, input, &mut counters, &mut out);
            let spent = ALLOCATIONS.load(Ordering::Relaxed) - before;
            if out.is_empty() {
                quiet += 1;
                quiet_allocs += spent;
            } else {
                firing_units += 1;
                firing_allocs += spent;
                for f in &out {
                    per_rule[f.rule] += 1;
                }
            }
        }
    }
    println!(
        "  heap allocations: {:.3} per unit where nothing fired ({quiet} units), {:.1} per unit that fired ({firing_units} units)",
        quiet_allocs as f64 / quiet.max(1) as f64,
        firing_allocs as f64 / firing_units.max(1) as f64
    );
    let mut fired: Vec<(u64, &str)> = per_rule
        .iter()
        .zip(&rs.rules)
        .filter(|(n, _)| **n > 0)
        .map(|(n, r)| (*n, r.name.as_str()))
        .collect();
    fired.sort_unstable_by(|a, b| b.cmp(a));
    println!("  firings per pass: {fired:?}");
    // Evaluation alone: a counter store that keeps nothing, so any allocation left is the
    // evaluator's own.
    struct Forgetful;
    impl skywarden_rules::counter::CounterStore for Forgetful {
        fn add(&mut self, _: usize, _: u128, _: Option<u64>, _: i64) {}
        fn get(&self, _: usize, _: u128, _: skywarden_rules::counter::Window, _: i64) -> u64 {
            0
        }
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let mut units = 0u64;
    for (i, (event, account)) in events.iter().enumerate() {
        for input in Input::units(event, account, T0 + i as i64 * 10_000) {
            out.clear();
            eval.evaluate(&rs, input, &mut Forgetful, &mut out);
            units += 1;
        }
    }
    println!(
        "  heap allocations by evaluation alone (a counter store that keeps nothing): {:.3} per unit",
        (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / units as f64
    );
    // Where the time goes: posts (text features) against everything else.
    let (post_events, other_events): (Vec<_>, Vec<_>) = events.iter().cloned().partition(|(e, _)| {
        matches!(&e.body, EventBody::Commit(c) if c.ops[0].collection == "app.bsky.feed.post")
    });
    for (label, subset) in [
        ("posts only", &post_events),
        ("everything but posts", &other_events),
    ] {
        let started = Instant::now();
        for _ in 0..rounds {
            run_once(&rs, subset, &mut eval, &mut counters);
        }
        let n = (subset.len() * rounds) as f64;
        println!(
            "  {label}: {:.0} events/s",
            n / started.elapsed().as_secs_f64()
        );
    }
    let mut group = c.benchmark_group("evaluate");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(20);
    group.bench_function("default ruleset, mixed events", |b| {
        b.iter(|| run_once(&rs, &events, &mut eval, &mut counters));
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

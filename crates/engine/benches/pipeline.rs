//! The whole pipeline on a recorded stream: archive → decode → route → evaluate (the default
//! ruleset) → effect log (SQLite) → checkpoint. Prints events/s, events per CPU-second, and
//! the p50/p99 of each event's time from dispatch to durable effects.
//!
//! ```sh
//! cargo bench -p skywarden-engine --bench pipeline            # 300,000 events
//! SKYWARDEN_BENCH_EVENTS=1000000 cargo bench -p skywarden-engine --bench pipeline
//! ```

/// As in the binary: many threads allocate and free each other's events.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use skywarden_engine::{Engine, EngineConfig, RulesOrigin, RulesSlot};
use skywarden_ingest::{Source, SourceConfig, synth};
use skywarden_rules::Ruleset;
use skywarden_store::Store;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// User plus system CPU time of this process, from /proc (Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// The `q` quantile of a Prometheus histogram in `text`, interpolated within its bucket.
fn quantile(text: &str, name: &str, q: f64) -> f64 {
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{name}_bucket{{le=\"")))
        .filter_map(|l| {
            let (le, count) = l.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map_or(0.0, |b| b.1);
    let target = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, count) in &buckets {
        if count >= target {
            if le.is_infinite() {
                return prev.0;
            }
            let within = if count > prev.1 {
                (target - prev.1) / (count - prev.1)
            } else {
                1.0
            };
            return prev.0 + (le - prev.0) * within;
        }
        prev = (le, count);
    }
    f64::NAN
}

fn main() {
    let events: u64 = std::env::var("SKYWARDEN_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let dir = std::env::temp_dir().join(format!("skywarden-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let archive = dir.join("stream.skwa");
    let mix = synth::write_archive(&archive, events, 20_000, 7).unwrap();
    let rules_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "recorded stream: {} Jetstream events from 20,000 accounts ({} MB); {cores} cores",
        mix.events,
        std::fs::metadata(&archive).unwrap().len() / 1_000_000
    );

    // Decoding alone, for the split.
    runtime.block_on(async {
        let mut source = Source::archive(&archive, SourceConfig::default()).unwrap();
        let (t, cpu) = (Instant::now(), cpu_seconds());
        let mut n = 0u64;
        while source.next_event().await.unwrap().is_some() {
            n += 1;
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "  source only (read + decode): {:>9.0} events/s, {:.0} events per CPU-second",
            n as f64 / secs,
            n as f64 / (cpu_seconds() - cpu).max(1e-9)
        );
    });

    // An empty ruleset measures the plumbing: routing, account state, batches, the writer.
    let empty_rules = dir.join("empty-rules");
    std::fs::create_dir_all(&empty_rules).unwrap();
    std::fs::write(empty_rules.join("none.toml"), "# no rules\n").unwrap();
    let runs = [
        ("no rules", empty_rules.as_path(), 1),
        ("no rules", empty_rules.as_path(), cores),
        ("default ruleset", rules_dir.as_path(), 1),
        ("default ruleset", rules_dir.as_path(), cores),
    ];
    for (run, (what, rules, partitions)) in runs.into_iter().enumerate() {
        let data = dir.join(format!("data-{run}"));
        std::fs::create_dir_all(&data).unwrap();
        runtime.block_on(async {
            let store = Store::open(&data).await.unwrap();
            let ruleset = Ruleset::load_dir(rules).expect("ruleset");
            let slot = Arc::new(RulesSlot::new(ruleset, RulesOrigin::Dir(rules.to_path_buf())));
            let config = EngineConfig {
                partitions,
                source_name: "bench".into(),
                checkpoint_interval: Duration::from_secs(5),
                ..EngineConfig::default()
            };
            let engine = Engine::start(config, store.clone(), slot, None).await.unwrap();
            let source = Source::archive(&archive, SourceConfig::default()).unwrap();
            let (_stop_tx, stop) = tokio::sync::watch::channel(false);
            let (t, cpu) = (Instant::now(), cpu_seconds());
            let summary = engine.run(source, stop).await.unwrap();
            let secs = t.elapsed().as_secs_f64();
            let cpu = cpu_seconds() - cpu;
            let text = engine.metrics().render();
            let p50 = quantile(&text, "skywarden_event_latency_seconds", 0.50);
            let p99 = quantile(&text, "skywarden_event_latency_seconds", 0.99);
            let effects = store.effect_count().await.unwrap();
            println!(
                "  pipeline, {what}, {partitions} partition(s): {:>9.0} events/s ({:.0} per core of {cores}), {:.0} events per CPU-second (CPU {:.1} s of {:.1} s wall); latency p50 {:.1} ms, p99 {:.1} ms; {effects} effects, {} checkpoints",
                summary.events as f64 / secs,
                summary.events as f64 / secs / cores as f64,
                summary.events as f64 / cpu.max(1e-9),
                cpu,
                secs,
                p50 * 1e3,
                p99 * 1e3,
                summary.checkpoints,
            );
            store.close().await;
        });
    }
    if std::env::var_os("SKYWARDEN_BENCH_KEEP").is_some() {
        println!("kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! Crash safety of `skywarden serve`: replaying a recorded stream of 120,000 events through
//! rules that act, killed with SIGKILL at random moments and restarted each time, ends with
//! exactly the effect log of an uninterrupted run: no effect missing, none twice.
//!
//! `SKYWARDEN_CRASH_RUNS` sets how many killed-and-restarted replays to compare (default 3);
//! `SKYWARDEN_CRASH_SEED` fixes the kill points (printed on every run, to reproduce one).

mod common;

use common::{ACTING_RULES, synth};
use skywarden_store::Store;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const EVENTS: u64 = 120_000;

fn serve(archive: &Path, rules: &Path, data: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_skywarden"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "text"])
        .arg("--archive")
        .arg(archive)
        .arg("--rules")
        .arg(rules)
        .arg("--data-dir")
        .arg(data)
        .args(["--checkpoint-interval-ms", "150", "--watch-rules", "false"])
        .env("SKYWARDEN_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start skywarden serve")
}

type Entry = (String, i64, String, String, String, String, String);

async fn effect_log(data: &Path) -> Vec<Entry> {
    let store = Store::open(data).await.expect("open store");
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let rows = store.effects_after(after, 10_000).await.expect("read log");
        let Some(last) = rows.last() else { break };
        after = last.id;
        out.extend(rows.into_iter().map(|r| {
            let e = r.effect;
            (
                e.idempotency_key,
                e.cursor,
                e.rule,
                e.verb,
                e.subject,
                e.outcome,
                e.mode,
            )
        }));
    }
    store.close().await;
    out.sort();
    out
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("skywarden-crash-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_moments_the_effect_log_equals_an_uninterrupted_run() {
    let root = temp("root");
    let archive = root.join("stream.skwa");
    let mix = synth::write_archive(&archive, EVENTS, 2_000, 42).unwrap();
    let rules = root.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(rules.join("acting.toml"), ACTING_RULES).unwrap();

    // The reference: one uninterrupted run.
    let reference_dir = root.join("reference");
    let started = Instant::now();
    let status = serve(&archive, &rules, &reference_dir).wait().unwrap();
    assert!(status.success(), "the uninterrupted run failed: {status}");
    let full_run = started.elapsed();
    let reference = effect_log(&reference_dir).await;
    println!(
        "uninterrupted: {} events in {:.1} s, {} effects",
        mix.events,
        full_run.as_secs_f64(),
        reference.len()
    );
    let rules_fired: BTreeSet<&str> = reference.iter().map(|e| e.2.as_str()).collect();
    assert_eq!(
        rules_fired,
        BTreeSet::from(["copies", "gtube", "like-burst", "mass-follow"]),
        "every acting rule fires in the reference run"
    );
    // Nothing for the ordinary accounts: every subject is one of the abusive accounts or a
    // record of one.
    let abusive: Vec<&String> = mix
        .gtube_accounts
        .iter()
        .chain(&mix.copy_accounts)
        .chain(&mix.follow_accounts)
        .chain(&mix.like_accounts)
        .collect();
    for e in &reference {
        let subject_did = e.4.trim_start_matches("at://").split('/').next().unwrap();
        assert!(
            abusive.iter().any(|d| d.as_str() == subject_did),
            "effect on an ordinary account: {e:?}"
        );
    }

    let runs: u64 = std::env::var("SKYWARDEN_CRASH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let seed: u64 = std::env::var("SKYWARDEN_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("kill points from SKYWARDEN_CRASH_SEED={seed}");
    let mut rng = synth::Rng::new(seed);
    let full_ms = full_run.as_millis().max(200) as u64;
    for run in 0..runs {
        let data = root.join(format!("crash-{run}"));
        let mut kills = 0;
        let mut unkilled = 0;
        loop {
            let mut child = serve(&archive, &rules, &data);
            // One kill in four lands early (2-20 % of a full run's time: start-up, restore,
            // skipping to the checkpoint); the others mid-stream (30-85 %), late enough for a
            // restart to make progress and early enough that a run a little faster than the
            // reference is still killed.
            let delay = if rng.below(4) == 0 {
                Duration::from_millis(full_ms / 50 + rng.below(full_ms * 18 / 100))
            } else {
                Duration::from_millis(full_ms * 3 / 10 + rng.below(full_ms * 55 / 100))
            };
            let deadline = Instant::now() + delay;
            let mut finished = None;
            while Instant::now() < deadline {
                if let Some(status) = child.try_wait().unwrap() {
                    finished = Some(status);
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            if let Some(status) = finished {
                assert!(status.success(), "run {run}: serve failed: {status}");
                if kills == 0 && unkilled < 5 {
                    // Faster than the reference before the first kill point (the machine's
                    // load changed): start this run again rather than count it untested.
                    unkilled += 1;
                    std::fs::remove_dir_all(&data).unwrap();
                    continue;
                }
                break;
            }
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            kills += 1;
            assert!(kills < 100, "run {run}: no progress after {kills} kills");
        }
        let log = effect_log(&data).await;
        println!("run {run}: {kills} kills, {} effects", log.len());
        assert!(kills > 0, "run {run} was never killed; lower the delays");
        assert_eq!(
            log.len(),
            reference.len(),
            "run {run}: effect count differs from the uninterrupted run"
        );
        assert_eq!(
            log, reference,
            "run {run}: effect log differs from the uninterrupted run"
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}

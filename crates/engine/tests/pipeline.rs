//! The pipeline in process: hot reload between events, backpressure when the store stalls,
//! de-duplication and quotas, and checkpoint/restore of counters and account state.

use skywarden_atproto::event::{Action, Commit, Event, EventBody, Op, SignatureCheck};
use skywarden_atproto::record::Record;
use skywarden_engine::{Engine, EngineConfig, EventSource, RulesOrigin, RulesSlot};
use skywarden_ingest::SourceError;
use skywarden_rules::Ruleset;
use skywarden_store::Store;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Events pushed by the test.
struct ChannelSource(mpsc::Receiver<Event>);

impl EventSource for ChannelSource {
    async fn next_event(&mut self) -> Result<Option<Event>, SourceError> {
        Ok(self.0.recv().await)
    }
}

/// An endless source of posts, counting how many were pulled.
struct Endless {
    pulled: Arc<AtomicU64>,
}

impl EventSource for Endless {
    async fn next_event(&mut self) -> Result<Option<Event>, SourceError> {
        let n = self.pulled.fetch_add(1, Ordering::SeqCst);
        Ok(Some(post(
            n as i64 + 1,
            &format!("did:plc:acct{}", n % 50),
            "alpha",
        )))
    }
}

fn tid(n: i64) -> String {
    const B32: &[u8] = b"234567abcdefghijklmnopqrstuvwxyz";
    let v = (1_767_225_600_000_000u64 + n as u64 * 1000) << 10;
    (0..13)
        .rev()
        .map(|i| B32[((v >> (i * 5)) & 31) as usize] as char)
        .collect()
}

fn post(cursor: i64, did: &str, text: &str) -> Event {
    let value = skywarden_atproto::data::json_to_ipld(&serde_json::json!({
        "$type": "app.bsky.feed.post",
        "text": text,
        "createdAt": "2026-01-01T00:00:00.000Z",
    }))
    .unwrap();
    Event {
        cursor,
        did: did.into(),
        time: format!(
            "2026-01-01T00:{:02}:{:02}.000Z",
            (cursor / 60) % 60,
            cursor % 60
        )
        .into(),
        body: EventBody::Commit(Commit {
            rev: tid(cursor).into(),
            since: None,
            too_big: false,
            signature: SignatureCheck::Unchecked,
            ops: vec![Op {
                action: Action::Create,
                collection: "app.bsky.feed.post".into(),
                rkey: tid(cursor).into(),
                cid: None,
                prev: None,
                record: Some(Record::from_value(value)),
                record_problem: None,
            }],
        }),
    }
}

fn temp(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("skywarden-pipeline-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rule(name: &str, word: &str, label: &str) -> String {
    format!(
        "[[rule]]\nname = \"{name}\"\ndescription = \"posts with {word}\"\non = [\"create:post\"]\nwhen = 'text.tokens.exists(t, t == \"{word}\")'\n\n[[rule.action]]\nlabel = \"{label}\"\n"
    )
}

fn config(partitions: usize) -> EngineConfig {
    EngineConfig {
        partitions,
        queue_capacity: 64,
        batch_size: 16,
        checkpoint_interval: Duration::from_millis(50),
        checkpoint_events: 10_000,
        source_name: "test".into(),
        ..EngineConfig::default()
    }
}

async fn wait_for_effects(store: &Store, n: i64) {
    for _ in 0..500 {
        if store.effect_count().await.unwrap() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "expected {n} effects, have {}",
        store.effect_count().await.unwrap()
    );
}

async fn all_effects(store: &Store) -> Vec<skywarden_store::EffectRow> {
    store.effects_after(0, 1_000_000).await.unwrap()
}

fn load(dir: &Path) -> Ruleset {
    Ruleset::load_dir(dir).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_ruleset_is_refused_and_a_good_one_takes_over_between_events() {
    let dir = temp("reload");
    let rules_dir = dir.join("rules");
    std::fs::create_dir_all(&rules_dir).unwrap();
    std::fs::write(rules_dir.join("r.toml"), rule("old", "alpha", "old")).unwrap();
    let store = Store::open(&dir).await.unwrap();
    let slot = Arc::new(RulesSlot::new(
        load(&rules_dir),
        RulesOrigin::Dir(rules_dir.clone()),
    ));
    let old_version = slot.status().version;
    let engine = Arc::new(
        Engine::start(config(2), store.clone(), slot.clone(), None)
            .await
            .unwrap(),
    );
    let (tx, rx) = mpsc::channel(16);
    let (_stop_tx, stop) = watch::channel(false);
    let run = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run(ChannelSource(rx), stop).await }
    });
    let mut cursor = 0;
    let mut send = async |n: usize, tx: &mpsc::Sender<Event>| {
        for _ in 0..n {
            cursor += 1;
            let did = format!("did:plc:user{}", cursor % 7);
            tx.send(post(cursor, &did, "alpha beta")).await.unwrap();
        }
        cursor
    };
    let sent = send(200, &tx).await;
    wait_for_effects(&store, sent).await;

    // A broken ruleset: refused, the old one keeps running.
    std::fs::write(
        rules_dir.join("r.toml"),
        "[[rule]]\nname = \"broken\"\nwhen = 'text.nope'\n",
    )
    .unwrap();
    slot.request_reload();
    let sent = send(200, &tx).await;
    wait_for_effects(&store, sent).await;
    let status = slot.status();
    assert_eq!(status.version, old_version, "the old ruleset still runs");
    assert!(
        status
            .last_reload_errors
            .iter()
            .any(|e| e.contains("r.toml:")),
        "the refusal says where: {:?}",
        status.last_reload_errors
    );
    let metrics = engine.metrics().render();
    assert!(
        metrics.contains("skywarden_ruleset_reload_failures_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("skywarden_ruleset_ok 0"), "{metrics}");

    // A good one: requested while events keep flowing (half of them sent before the
    // request, which the engine takes up between two events, half after).
    std::fs::write(rules_dir.join("r.toml"), rule("new", "beta", "new")).unwrap();
    let sender = tokio::spawn({
        let tx = tx.clone();
        let slot = slot.clone();
        async move {
            for c in 401..=1400i64 {
                if c == 901 {
                    slot.request_reload();
                }
                let did = format!("did:plc:user{}", c % 7);
                tx.send(post(c, &did, "alpha beta")).await.unwrap();
            }
        }
    });
    sender.await.unwrap();
    wait_for_effects(&store, 1400).await;
    drop(tx);
    run.await.unwrap().unwrap();

    let effects = all_effects(&store).await;
    assert_eq!(
        effects.len(),
        1400,
        "one effect per event: none skipped, none twice"
    );
    let mut by_cursor: Vec<_> = effects
        .iter()
        .map(|e| (e.effect.cursor, e.effect.rule.clone()))
        .collect();
    by_cursor.sort();
    let cursors: Vec<i64> = by_cursor.iter().map(|(c, _)| *c).collect();
    assert_eq!(cursors, (1..=1400).collect::<Vec<_>>());
    // Every event is evaluated by exactly one ruleset, the old one up to the swap and the new
    // one after it.
    let first_new = by_cursor
        .iter()
        .position(|(_, r)| r == "new")
        .expect("the new rule ran");
    assert!(
        first_new >= 400,
        "the new ruleset started after the refused reload"
    );
    assert!(by_cursor[..first_new].iter().all(|(_, r)| r == "old"));
    assert!(
        by_cursor[first_new..].iter().all(|(_, r)| r == "new"),
        "no event went back to the old ruleset"
    );
    let new_version = slot.status().version;
    assert_ne!(new_version, old_version);
    assert!(
        effects
            .iter()
            .filter(|e| e.effect.rule == "new")
            .all(|e| e.effect.ruleset_version == new_version)
    );
    assert!(
        effects
            .iter()
            .filter(|e| e.effect.rule == "old")
            .all(|e| e.effect.ruleset_version == old_version)
    );
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_store_stops_the_source_instead_of_buffering() {
    let dir = temp("backpressure");
    let rules_dir = dir.join("rules");
    std::fs::create_dir_all(&rules_dir).unwrap();
    std::fs::write(rules_dir.join("r.toml"), rule("r", "alpha", "x")).unwrap();
    let store = Store::open(&dir).await.unwrap();
    let slot = Arc::new(RulesSlot::new(
        load(&rules_dir),
        RulesOrigin::Dir(rules_dir),
    ));
    let cfg = config(2);
    let engine = Arc::new(
        Engine::start(cfg.clone(), store.clone(), slot, None)
            .await
            .unwrap(),
    );
    // Another writer holds the database: every effect commit waits.
    let mut blocker = store.begin().await.unwrap();
    blocker.add_quota(0, "hold", 1).await.unwrap();

    let pulled = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop) = watch::channel(false);
    let run = tokio::spawn({
        let engine = engine.clone();
        let source = Endless {
            pulled: pulled.clone(),
        };
        async move { engine.run(source, stop).await }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let early = pulled.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let late = pulled.load(Ordering::SeqCst);
    // Everything that can be in flight: partition queues, one batch per worker, the writer's
    // channel and the batches it holds, the source's read-ahead.
    let p = cfg.partitions as u64;
    let bound = p * cfg.queue_capacity as u64
        + p * cfg.batch_size as u64
        + (p * 4 + 64) * cfg.batch_size as u64
        + 64
        + 2;
    println!("pulled while stalled: {early} then {late} (bound {bound})");
    assert!(early > 0, "the source ran");
    assert_eq!(
        early, late,
        "the source stopped while the store was stalled"
    );
    assert!(late <= bound, "in flight {late} exceeds {bound}");

    // Released, the pipeline catches up.
    blocker.commit().await.unwrap();
    for _ in 0..500 {
        if pulled.load(Ordering::SeqCst) > late + 1000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        pulled.load(Ordering::SeqCst) > late + 1000,
        "the pipeline resumed"
    );
    stop_tx.send(true).unwrap();
    let summary = run.await.unwrap().unwrap();
    assert!(summary.checkpoints > 0);
    let last = summary.cursor.unwrap();
    // Every dispatched event up to the checkpoint has its effect.
    assert_eq!(store.effect_count().await.unwrap(), last);
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_are_deduplicated_quotas_cut_in_and_state_survives_a_restart() {
    let dir = temp("state");
    let rules_dir = dir.join("rules");
    std::fs::create_dir_all(&rules_dir).unwrap();
    std::fs::write(
        rules_dir.join("r.toml"),
        r#"
[[counter]]
name = "posts"
on = ["create:post"]
key = "account.did"
windows = ["day"]

[[rule]]
name = "third-post"
description = "an account's third post and later: label the account, take it down, tag it"
on = ["create:post"]
when = "counters.posts.day >= 3 && account.posts >= 2"

[[rule.action]]
label = "busy"
target = "account"

[[rule.action]]
takedown = true
target = "account"

[[rule.action]]
comment = "post {{ counters.posts.day }}"
target = "account"
"#,
    )
    .unwrap();
    let mut cfg = config(2);
    cfg.quotas.insert("takedown".into(), 2);
    let store = Store::open(&dir).await.unwrap();
    let run_once = async |events: Vec<Event>| {
        let slot = Arc::new(RulesSlot::new(
            load(&rules_dir),
            RulesOrigin::Dir(rules_dir.clone()),
        ));
        let engine = Engine::start(cfg.clone(), store.clone(), slot, None)
            .await
            .unwrap();
        let resume = engine.resume_cursor();
        let (tx, rx) = mpsc::channel(16);
        for e in events.into_iter().filter(|e| Some(e.cursor) > resume) {
            tx.send(e).await.unwrap();
        }
        drop(tx);
        let (_s, stop) = watch::channel(false);
        engine.run(ChannelSource(rx), stop).await.unwrap()
    };
    // Three accounts post twice each: nothing fires yet.
    let first: Vec<Event> = (1..=6)
        .map(|c| post(c, &format!("did:plc:p{}", c % 3), "hi"))
        .collect();
    let summary = run_once(first.clone()).await;
    assert_eq!(summary.cursor, Some(6));
    assert_eq!(store.effect_count().await.unwrap(), 0);
    // After a restart, counters and account post counts continue: each account's third post
    // fires, and the fourth again. Labels: one per account; takedowns: quota 2, so the third
    // account's are logged over quota; comments: one per firing.
    let mut second = first;
    second.extend((7..=12).map(|c| post(c, &format!("did:plc:p{}", c % 3), "hi")));
    run_once(second).await;
    let effects = all_effects(&store).await;
    let count = |verb: &str, outcome: &str| {
        effects
            .iter()
            .filter(|e| e.effect.verb == verb && e.effect.outcome == outcome)
            .count()
    };
    assert_eq!(
        count("label", "applied"),
        3,
        "one label per account, then deduplicated"
    );
    assert_eq!(count("takedown", "applied"), 2);
    // The account left without a takedown fires twice (posts 3 and 4): both over quota.
    assert_eq!(count("takedown", "over_quota"), 2);
    assert_eq!(
        count("comment", "applied"),
        6,
        "comments are events, not state: one per firing"
    );
    for e in &effects {
        let action: serde_json::Value = serde_json::from_str(&e.effect.action).unwrap();
        assert_eq!(action["rule"], "third-post");
        assert!(
            action["explanation"]["counters.posts.day"].is_string(),
            "{action}"
        );
    }
    assert_eq!(
        store
            .subject_values("live", "did:plc:p0", "label")
            .await
            .unwrap(),
        ["busy"]
    );
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

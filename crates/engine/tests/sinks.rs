//! Webhook sinks reading the effect log: `notify` actions reach their webhook signed, and a
//! receiver that never answers stalls only its own sink, never the engine.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use skywarden_atproto::data::json_to_ipld;
use skywarden_atproto::event::{Action, Commit, Event, EventBody, Op, SignatureCheck};
use skywarden_atproto::record::Record;
use skywarden_engine::sinks::{WebhookSinkConfig, run_webhook_sink};
use skywarden_engine::webhook::{SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookConfig, verify};
use skywarden_engine::{Engine, EngineConfig, EventSource, RulesOrigin, RulesSlot};
use skywarden_ingest::SourceError;
use skywarden_rules::Ruleset;
use skywarden_store::Store;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

struct Posts {
    next: i64,
    end: i64,
}

impl EventSource for Posts {
    async fn next_event(&mut self) -> Result<Option<Event>, SourceError> {
        if self.next > self.end {
            return Ok(None);
        }
        let n = self.next;
        self.next += 1;
        let text = if n % 10 == 0 {
            "alpha alert"
        } else {
            "just a post"
        };
        let record = json_to_ipld(&serde_json::json!({
            "$type": "app.bsky.feed.post", "text": text, "createdAt": "2026-01-01T00:00:00.000Z",
        }))
        .unwrap();
        let rkey = skywarden_ingest::synth::tid(1_767_225_600_000_000 + n * 1000, 0);
        Ok(Some(Event {
            cursor: n,
            did: format!("did:plc:user{}", n % 13).into(),
            time: "2026-01-01T00:00:00.000Z".into(),
            body: EventBody::Commit(Commit {
                rev: rkey.clone().into(),
                since: None,
                too_big: false,
                signature: SignatureCheck::Unchecked,
                ops: vec![Op {
                    action: Action::Create,
                    collection: "app.bsky.feed.post".into(),
                    rkey: rkey.into(),
                    cid: None,
                    prev: None,
                    record: Some(Record::from_value(record)),
                    record_problem: None,
                }],
            }),
        }))
    }
}

const RULES: &str = r#"
[[rule]]
name = "alert"
description = "posts saying alpha: notify the moderators' webhook and label the post"
on = ["create:post"]
when = 'text.tokens.exists(t, t == "alpha")'

[[rule.action]]
notify = "moderators"
message = "alpha from {{ account.did }}"

[[rule.action]]
label = "alpha"
"#;

type Received = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

async fn receiver() -> (Received, url::Url) {
    let received: Received = Arc::default();
    let app = Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |State(r): State<Received>, headers: HeaderMap, body: Bytes| async move {
                    r.lock().unwrap().push((headers, body.to_vec()));
                    "ok"
                },
            ),
        )
        .with_state(received.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (received, url.parse().unwrap())
}

/// Accepts connections and never answers; counts them.
async fn black_hole() -> (Arc<AtomicU64>, url::Url) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicU64::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    (accepted, url.parse().unwrap())
}

fn sink(name: &str, url: url::Url, all_actions: bool, timeout_ms: u64) -> WebhookSinkConfig {
    WebhookSinkConfig {
        name: name.into(),
        webhook: WebhookConfig {
            url,
            secret: Some("s3cret".into()),
            timeout: Duration::from_millis(timeout_ms),
            max_attempts: 2,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
        },
        all_actions,
        batch_size: 50,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_effects_reach_their_webhook_and_a_dead_receiver_stalls_only_its_sink() {
    let dir = std::env::temp_dir().join(format!("skywarden-sinks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let rules_dir = dir.join("rules");
    std::fs::create_dir_all(&rules_dir).unwrap();
    std::fs::write(rules_dir.join("r.toml"), RULES).unwrap();
    let store = Store::open(&dir).await.unwrap();
    let slot = Arc::new(RulesSlot::new(
        Ruleset::load_dir(&rules_dir).unwrap(),
        RulesOrigin::Dir(rules_dir),
    ));
    let config = EngineConfig {
        partitions: 2,
        source_name: "sinks".into(),
        ..EngineConfig::default()
    };
    let engine = Engine::start(config, store.clone(), slot, None)
        .await
        .unwrap();
    let (received, url) = receiver().await;
    let (accepted, dead) = black_hole().await;
    let (stop_tx, stop) = watch::channel(false);
    let live_sink = tokio::spawn(run_webhook_sink(
        store.clone(),
        sink("moderators", url, false, 5_000),
        engine.sinks_wake(),
        engine.metrics(),
        stop.clone(),
    ));
    let dead_sink = tokio::spawn(run_webhook_sink(
        store.clone(),
        sink("archive", dead, true, 200),
        engine.sinks_wake(),
        engine.metrics(),
        stop.clone(),
    ));

    // 20,000 events, 2,000 of which fire: the dead sink must not hold the engine back.
    let (_engine_stop, engine_stop) = watch::channel(false);
    let summary = tokio::time::timeout(
        Duration::from_secs(60),
        engine.run(
            Posts {
                next: 1,
                end: 20_000,
            },
            engine_stop,
        ),
    )
    .await
    .expect("the engine finishes while a sink is stalled")
    .unwrap();
    assert_eq!(summary.events, 20_000);
    assert_eq!(store.effect_count().await.unwrap(), 4_000);

    // The live sink catches up with the log.
    let mut delivered = 0;
    for _ in 0..500 {
        delivered = received
            .lock()
            .unwrap()
            .iter()
            .map(|(_, body)| {
                let v: serde_json::Value = serde_json::from_slice(body).unwrap();
                v["effects"].as_array().unwrap().len()
            })
            .sum::<usize>();
        if delivered >= 2_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(delivered, 2_000, "every notify effect delivered once");
    for (headers, body) in received.lock().unwrap().iter() {
        let ts: i64 = headers[TIMESTAMP_HEADER].to_str().unwrap().parse().unwrap();
        let sig = headers[SIGNATURE_HEADER].to_str().unwrap();
        assert!(verify("s3cret", ts, body, sig), "signature");
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["webhook"], "moderators");
        for e in v["effects"].as_array().unwrap() {
            assert_eq!(
                e["action"]["notify"], "moderators",
                "only notify actions: {e}"
            );
            assert!(
                e["action"]["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("alpha from did:plc:user")
            );
            assert!(e["idempotencyKey"].is_string());
        }
    }

    // The dead receiver: its sink is still at the start of the log, holding one batch at a
    // time, retrying.
    assert_eq!(store.sink_cursor("webhook:archive").await.unwrap(), 0);
    assert!(accepted.load(Ordering::SeqCst) >= 1, "the dead sink tried");
    assert_eq!(
        store.sink_cursor("webhook:moderators").await.unwrap(),
        store
            .effects_after(0, 10_000)
            .await
            .unwrap()
            .last()
            .unwrap()
            .id
    );
    // Its first failure takes a timeout and a retry (about 0.4 s): the engine and the live
    // sink may well be done before that.
    let mut metrics = String::new();
    for _ in 0..250 {
        metrics = engine.metrics().render();
        if metrics.contains("skywarden_sink_failures_total{sink=\"archive\"}") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        metrics.contains("skywarden_sink_failures_total{sink=\"archive\"}"),
        "{metrics}"
    );
    stop_tx.send(true).unwrap();
    live_sink.await.unwrap();
    dead_sink.await.unwrap();
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

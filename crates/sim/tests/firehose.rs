//! The simulator's frames, served over a real WebSocket by its `subscribeRepos` server, decode
//! with skywarden's firehose source with every commit's signature checked against the
//! simulated accounts' keys: no decode error, no dropped event, every commit verified, and
//! the mix and the ground truth are what the simulator promises. The same seed gives the
//! same bytes.

use skywarden_atproto::event::EventBody;
use skywarden_ingest::StaticKeys;
use skywarden_ingest::firehose::WsSettings;
use skywarden_ingest::{Source, SourceConfig};
use skywarden_sim::server::{ServeConfig, SimServer};
use skywarden_sim::{Network, SCENARIOS, SimConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

const EVENTS: u64 = 6000;

fn config() -> SimConfig {
    SimConfig {
        seed: 42,
        accounts: 300,
        // Ten acts a second in simulated time: what 300 people at a person's pace can make, so
        // activity keeps its Zipf shape instead of every account acting at its limit.
        step_micros: 100_000,
        ..SimConfig::default()
    }
}

#[test]
fn the_same_seed_gives_the_same_frames() {
    let mut a = Network::new(config());
    let mut b = Network::new(config());
    for _ in 0..500 {
        assert_eq!(a.next_frame().bytes, b.next_frame().bytes);
    }
    let mut c = Network::new(SimConfig {
        seed: 43,
        ..config()
    });
    let differs = (0..50).any(|_| a.next_frame().bytes != c.next_frame().bytes);
    assert!(differs);
}

/// Frames taken in batches, with commits signed on another thread, are the frames taken one
/// at a time: same bytes, same order, and the network goes on from the same point.
#[test]
fn batched_frames_are_the_frames_one_at_a_time() {
    use skywarden_sim::network::SIGNING_BATCH;
    let n = 2 * SIGNING_BATCH + 77;
    let mut batched = Network::new(config());
    let mut single = Network::new(config());
    let frames: Vec<_> = batched.frames(n).collect();
    assert_eq!(frames.len() as u64, n);
    for (i, f) in frames.iter().enumerate() {
        let g = single.next_frame();
        assert_eq!((f.seq, f.time_micros), (g.seq, g.time_micros), "frame {i}");
        assert!(f.bytes == g.bytes, "frame {i} differs");
    }
    assert_eq!(batched.next_frame().bytes, single.next_frame().bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_frames_decode_and_verify_in_the_firehose_source() {
    let network = Network::new(config());
    let keys: StaticKeys = StaticKeys(network.public_keys().into_iter().collect());
    let server = SimServer::new(
        network,
        ServeConfig {
            rate: 0,
            events: EVENTS,
            history: 1 << 20,
            pregenerate: false,
        },
    );
    let truth = server.truth();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = server.router();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut source = Source::firehose(
        &format!("ws://{addr}"),
        WsSettings::default(),
        SourceConfig {
            cursor: Some(0),
            keys: Some(Arc::new(keys)),
            require_signatures: true,
        },
    )
    .unwrap();
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut collections: BTreeMap<String, u64> = BTreeMap::new();
    let mut last = 0;
    let mut authors: BTreeMap<String, u64> = BTreeMap::new();
    while last < server.head() {
        let event = tokio::time::timeout(std::time::Duration::from_secs(20), source.next_event())
            .await
            .expect("an event within 20 s")
            .unwrap()
            .expect("the stream goes on");
        assert!(event.cursor > last, "seq increases");
        last = event.cursor;
        *kinds.entry(event.body.kind().to_string()).or_default() += 1;
        *authors.entry(event.did.to_string()).or_default() += 1;
        if let EventBody::Commit(c) = &event.body {
            assert_eq!(
                c.signature,
                skywarden_atproto::event::SignatureCheck::Verified
            );
            for op in &c.ops {
                *collections.entry(op.collection.to_string()).or_default() += 1;
                if op.cid.is_some() {
                    assert!(
                        op.record.is_some(),
                        "every new record is in the CAR: {op:?}"
                    );
                }
            }
        }
    }
    let m = source.metrics().snapshot();
    assert_eq!(m.decode_errors, 0);
    assert!(m.dropped.iter().all(|(_, n)| *n == 0), "{:?}", m.dropped);
    assert_eq!(m.events, server.head() as u64);
    assert!(m.signatures_verified > 0);
    println!("kinds {kinds:?}\ncollections {collections:?}");

    // The mix: mostly likes, follows and reposts; posts around 15 %; identity and account
    // events for new accounts.
    let ops: u64 = collections.values().sum();
    let share = |c: &str| *collections.get(c).unwrap_or(&0) as f64 / ops as f64;
    assert!(share("app.bsky.feed.like") > 0.25, "{collections:?}");
    assert!(share("app.bsky.graph.follow") > 0.1);
    assert!(share("app.bsky.feed.repost") > 0.05);
    assert!((0.08..0.3).contains(&share("app.bsky.feed.post")));
    assert!(kinds["identity"] > 0 && kinds["account"] > 0);
    // Zipf: the busiest account does far more than the median one.
    let mut counts: Vec<u64> = authors.values().copied().collect();
    counts.sort_unstable();
    assert!(
        counts[counts.len() - 1] > 10 * counts[counts.len() / 2],
        "{counts:?}"
    );

    // Ground truth: every scenario has accounts, each with the frame where its abuse began.
    let scenarios: BTreeSet<&str> = truth.iter().map(|t| t.scenario).collect();
    assert_eq!(scenarios, SCENARIOS.iter().copied().collect());
    for t in &truth {
        assert!(t.first_seq >= 1 && t.first_seq <= server.head(), "{t:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pregenerated_frames_are_released_at_the_rate() {
    // 1,500 frames at 3,000 events/s (an event with a new account brings several frames, all
    // at one instant): releases spread over the simulated span, whatever the generator's
    // speed, from the first subscriber on.
    let rate = 3_000;
    let network = Network::new(SimConfig {
        step_micros: 1_000_000 / rate as i64,
        ..config()
    });
    let server = SimServer::new(
        network,
        ServeConfig {
            rate,
            events: 1_500,
            history: 1 << 20,
            pregenerate: true,
        },
    );
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(server.clone().run(stop_rx));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(
        server.head(),
        0,
        "nothing is released before a subscriber comes"
    );
    assert_eq!(server.release_offset_micros(), None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = server.router();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut source = Source::firehose(
        &format!("ws://{addr}"),
        WsSettings::default(),
        SourceConfig {
            cursor: Some(0),
            ..SourceConfig::default()
        },
    )
    .unwrap();
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), source.next_event())
        .await
        .expect("a frame once subscribed")
        .unwrap();
    let started = std::time::Instant::now();
    assert!(first.is_some());
    assert!(server.release_offset_micros().is_some());
    let early = server.head();
    task.await.unwrap();
    let took = started.elapsed();
    assert!(
        early > 0 && early < 1_500,
        "released gradually: {early} at the start"
    );
    assert!(server.head() >= 1_500, "all released: {}", server.head());
    assert!(
        took >= std::time::Duration::from_millis(150),
        "released too fast: {took:?}"
    );
}

//! subscribeLabels throughput over real WebSockets on loopback, with the SQLite label store:
//!
//! - replay to one subscriber (cursor 0, `REPLAY_LABELS` labels);
//! - replay to 1,000 concurrent subscribers (`FANOUT_LABELS` labels each), aggregate;
//! - live fan-out: 1,000 subscribers connected, `FANOUT_LABELS` labels written, time until
//!   every subscriber has every label.
//!
//! Clients run in the same process as the server, so on a 2-core machine they share its
//! cores: the figures are a floor for the server alone.
//!
//! `cargo bench -p skywarden-server --bench labels`
//! (`SKYWARDEN_BENCH_REPLAY`, `SKYWARDEN_BENCH_FANOUT`, `SKYWARDEN_BENCH_SUBSCRIBERS` change the
//! sizes.)

use futures_util::StreamExt;
use skywarden_atproto::crypto::{Curve, SigningKey};
use skywarden_atproto::label::Label;
use skywarden_engine::metrics::Metrics;
use skywarden_engine::{RulesOrigin, RulesSlot};
use skywarden_labeler::hub::{HubConfig, LabelHub};
use skywarden_labeler::key::LabelerKey;
use skywarden_labeler::metrics::LabelerMetrics;
use skywarden_labeler::sink::signed;
use skywarden_server::{AppState, LabelerApi, Readiness};
use skywarden_store::Store;
use skywarden_store::labels::{LabelStore, NewLabel, SqliteLabelStore};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn labels(key: &LabelerKey, from: usize, n: usize) -> Vec<NewLabel> {
    (from..from + n)
        .map(|i| {
            let label = Label {
                ver: Some(1),
                src: "did:plc:ar7c4by46qjdydhdevvrndac".into(),
                uri: format!("at://did:plc:ewvi7nxzyoun6zhxrhs64oiz/app.bsky.feed.post/3l{i:011}"),
                cid: Some("bafyreifepiu23okq5zuyvyhsoiazv2ayrqp2l4idi4cr2yhlpuclelg7l4".into()),
                val: "spam".into(),
                neg: false,
                cts: "2026-12-01T12:00:00.000Z".into(),
                exp: None,
                sig: None,
            };
            signed(key, label, None).unwrap()
        })
        .collect()
}

async fn write(hub: &LabelHub, key: &LabelerKey, from: usize, n: usize) {
    for start in (from..from + n).step_by(5000) {
        let batch = labels(key, start, 5000.min(from + n - start));
        hub.store().append(&batch).await.unwrap();
    }
    hub.wake();
}

/// Reads frames until `n` labels arrived; returns bytes read.
async fn read(url: String, n: usize) -> usize {
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let mut got = 0;
    let mut bytes = 0;
    while got < n {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => {
                bytes += b.len();
                got += 1;
            }
            Some(Ok(_)) => {}
            other => panic!("stream ended after {got} labels: {other:?}"),
        }
    }
    bytes
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let replay_n = env("SKYWARDEN_BENCH_REPLAY", 200_000);
    let fanout_n = env("SKYWARDEN_BENCH_FANOUT", 2_000);
    let subscribers = env("SKYWARDEN_BENCH_SUBSCRIBERS", 1_000);
    let dir = std::env::temp_dir().join(format!("skywarden-bench-labels-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let rules_dir = dir.join("rules");
    std::fs::create_dir_all(&rules_dir).unwrap();
    std::fs::write(
        rules_dir.join("r.toml"),
        "[[rule]]\nname = \"n\"\ndescription = \"d\"\non = [\"create:post\"]\nwhen = 'false'\n\n[[rule.action]]\nlabel = \"x\"\n",
    )
    .unwrap();
    let store = Store::open(&dir).await.unwrap();
    let label_store: Arc<dyn LabelStore> = Arc::new(SqliteLabelStore::new(&store).await.unwrap());
    let (stop, stop_rx) = watch::channel(false);
    // Two servers over the same store: replay pages cached (the default), and not.
    let mut servers = Vec::new();
    for cached_pages in [HubConfig::default().cached_pages, 0] {
        let hub = LabelHub::new(
            label_store.clone(),
            Arc::new(LabelerMetrics::default()),
            HubConfig {
                max_subscribers: subscribers + 10,
                cached_pages,
                ..HubConfig::default()
            },
        )
        .await
        .unwrap();
        tokio::spawn(hub.clone().run(stop_rx.clone()));
        let state = AppState {
            metrics: Arc::new(Metrics::new(1)),
            rules: Arc::new(RulesSlot::new(
                skywarden_rules::Ruleset::load_dir(&rules_dir).unwrap(),
                RulesOrigin::Fixed,
            )),
            readiness: Arc::new(Mutex::new(Readiness::Ready)),
            labeler: Some(LabelerApi {
                hub: hub.clone(),
                did_document: None,
            }),
            moderation: None,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut s = stop_rx.clone();
        tokio::spawn(skywarden_server::serve(listener, state, async move {
            let _ = s.wait_for(|v| *v).await;
        }));
        servers.push((addr, hub, cached_pages));
    }
    let key = LabelerKey::new(SigningKey::generate(Curve::K256));
    let (addr, hub, _) = servers[0].clone();
    let url = move |addr: std::net::SocketAddr, cursor: Option<usize>| match cursor {
        Some(c) => format!("ws://{addr}/xrpc/com.atproto.label.subscribeLabels?cursor={c}"),
        None => format!("ws://{addr}/xrpc/com.atproto.label.subscribeLabels"),
    };

    println!(
        "machine: {} cores; clients share the process",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    // Replay to one subscriber, and what its parts cost alone.
    write(&hub, &key, 0, replay_n).await;
    for (_, h, _) in &servers {
        h.publish_pending().await.unwrap();
    }
    let started = Instant::now();
    let (mut after, mut rows) = (0, Vec::new());
    loop {
        let page = hub.store().after(after, 1000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        rows.extend(page);
    }
    let read_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let encoded: usize = rows
        .iter()
        .filter_map(skywarden_labeler::hub::encode_row)
        .map(|f| f.bytes.len())
        .sum();
    let encode_secs = started.elapsed().as_secs_f64();
    println!(
        "  parts: store pages {:.0} labels/s, frame encoding {:.0} labels/s ({encoded} B)",
        rows.len() as f64 / read_secs,
        rows.len() as f64 / encode_secs
    );
    drop(rows);
    let started = Instant::now();
    let bytes = read(url(addr, Some(0)), replay_n).await;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "replay, 1 subscriber: {replay_n} labels in {secs:.2} s = {:.0} labels/s, {:.1} MB/s ({} B/frame)",
        replay_n as f64 / secs,
        bytes as f64 / secs / 1e6,
        bytes / replay_n.max(1)
    );

    // Replay to many subscribers: the last `fanout_n` labels each, with and without the
    // shared page cache.
    let cursor = replay_n - fanout_n.min(replay_n);
    let total = subscribers * fanout_n;
    for (addr, _, cached_pages) in &servers {
        let started = Instant::now();
        let tasks: Vec<_> = (0..subscribers)
            .map(|_| tokio::spawn(read(url(*addr, Some(cursor)), fanout_n)))
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "replay, {subscribers} subscribers x {fanout_n} labels, {cached_pages} cached pages: {total} frames in {secs:.2} s = {:.0} labels/s aggregate",
            total as f64 / secs
        );
    }

    // Live fan-out: subscribers connected first, then the labels are written.
    let tasks: Vec<_> = (0..subscribers)
        .map(|_| tokio::spawn(read(url(addr, None), fanout_n)))
        .collect();
    while hub.subscriber_count() < subscribers {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    write(&hub, &key, replay_n, fanout_n).await;
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "live, {subscribers} subscribers x {fanout_n} labels (including writing them): {total} frames in {secs:.2} s = {:.0} labels/s aggregate",
        total as f64 / secs
    );
    let _ = stop.send(true);
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

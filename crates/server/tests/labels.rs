//! The labeler's XRPC over real sockets: `subscribeLabels` (replay then live with no gap or
//! duplicate while labels are written during the switch, future cursors, outdated cursors, a
//! slow consumer dropped while a fast one continues, negations in replay) and `queryLabels`.

use futures_util::{SinkExt, StreamExt};
use skywarden_atproto::crypto::{Curve, SigningKey};
use skywarden_atproto::frame::{StreamFrame, decode_stream_frame};
use skywarden_atproto::label::{Label, LabelsMessage};
use skywarden_engine::metrics::Metrics;
use skywarden_engine::{RulesOrigin, RulesSlot};
use skywarden_labeler::hub::{HubConfig, LabelHub};
use skywarden_labeler::key::LabelerKey;
use skywarden_labeler::metrics::LabelerMetrics;
use skywarden_labeler::sink::signed;
use skywarden_server::{AppState, LabelerApi, Readiness};
use skywarden_store::Store;
use skywarden_store::labels::{LabelStore, NewLabel, SqliteLabelStore};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

const SRC: &str = "did:plc:ar7c4by46qjdydhdevvrndac";

struct Server {
    addr: std::net::SocketAddr,
    hub: Arc<LabelHub>,
    key: Arc<LabelerKey>,
    _stop: watch::Sender<bool>,
    dir: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static DIRS: AtomicUsize = AtomicUsize::new(0);

async fn server(config: HubConfig) -> Server {
    let dir = std::env::temp_dir().join(format!(
        "skywarden-labels-http-{}-{}",
        std::process::id(),
        DIRS.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let rules_dir = dir.join("rules");
    std::fs::create_dir_all(&rules_dir).unwrap();
    std::fs::write(
        rules_dir.join("r.toml"),
        "[[rule]]\nname = \"n\"\ndescription = \"d\"\non = [\"create:post\"]\nwhen = 'false'\n\n[[rule.action]]\nlabel = \"x\"\n",
    )
    .unwrap();
    let store = Store::open(&dir).await.unwrap();
    let labels: Arc<dyn LabelStore> = Arc::new(SqliteLabelStore::new(&store).await.unwrap());
    let hub = LabelHub::new(labels, Arc::new(LabelerMetrics::default()), config)
        .await
        .unwrap();
    let (stop, stop_rx) = watch::channel(false);
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
    let mut s = stop_rx;
    tokio::spawn(skywarden_server::serve(listener, state, async move {
        let _ = s.wait_for(|v| *v).await;
    }));
    let key = Arc::new(LabelerKey::new(SigningKey::generate(Curve::K256)));
    Server {
        addr,
        hub,
        key,
        _stop: stop,
        dir,
    }
}

fn unsigned(uri: &str, val: &str, neg: bool) -> Label {
    Label {
        ver: Some(1),
        src: SRC.into(),
        uri: uri.into(),
        cid: None,
        val: val.into(),
        neg,
        cts: "2026-12-01T00:00:00.000Z".into(),
        exp: None,
        sig: None,
    }
}

impl Server {
    async fn write(&self, labels: Vec<Label>) -> Vec<i64> {
        let new: Vec<NewLabel> = labels
            .into_iter()
            .map(|l| signed(&self.key, l, None).unwrap())
            .collect();
        let seqs = self.hub.store().append(&new).await.unwrap();
        self.hub.wake();
        seqs.into_iter().map(Option::unwrap).collect()
    }

    async fn write_many(&self, from: usize, n: usize) {
        let labels = (from..from + n)
            .map(|i| unsigned(&format!("did:plc:acct{i:06}"), "spam", false))
            .collect();
        self.write(labels).await;
    }

    /// Like `write_many`, with a placeholder signature (for volume where signatures are not
    /// checked: signing dominates a debug build's time).
    async fn write_many_unsigned(&self, from: usize, n: usize) {
        let new: Vec<NewLabel> = (from..from + n)
            .map(|i| {
                let mut l = unsigned(&format!("did:plc:acct{i:06}"), "spam", false);
                l.sig = Some(vec![0; 64]);
                NewLabel {
                    label: skywarden_labeler::label_to_stored(&l, "did:key:placeholder"),
                    idempotency_key: None,
                }
            })
            .collect();
        self.hub.store().append(&new).await.unwrap();
        self.hub.wake();
    }

    /// Waits until the hub counts `n` open subscriptions. A client's handshake completes
    /// before the server's upgrade task subscribes, so a test that depends on registration
    /// order (or on a live-only subscriber seeing the next write) waits for it.
    async fn wait_for_subscribers(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.hub.subscriber_count() != n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} subscribers after 20 s, expected {n}",
                self.hub.subscriber_count()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn ws_url(&self, cursor: Option<i64>) -> String {
        let mut url = format!("ws://{}/xrpc/com.atproto.label.subscribeLabels", self.addr);
        if let Some(c) = cursor {
            url.push_str(&format!("?cursor={c}"));
        }
        url
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

#[derive(Debug)]
enum Got {
    Labels(LabelsMessage),
    Info(String),
    Error(String),
    Closed,
}

async fn next<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Got
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("a frame within 20 s");
        match msg {
            Some(Ok(Message::Binary(b))) => {
                return match decode_stream_frame::<LabelsMessage>(&b, "#labels").unwrap() {
                    StreamFrame::Message { body: Ok(m), .. } => Got::Labels(m),
                    StreamFrame::Message { t, body: Err(ipld) } => {
                        assert_eq!(t, "#info");
                        let json = skywarden_atproto::data::ipld_to_json(&ipld);
                        Got::Info(json["name"].as_str().unwrap().to_string())
                    }
                    StreamFrame::Error(e) => Got::Error(e.error),
                };
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Got::Closed,
            Some(Ok(_)) => continue,
        }
    }
}

async fn take_labels(ws: &mut Ws, n: usize) -> Vec<LabelsMessage> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match next(ws).await {
            Got::Labels(m) => out.push(m),
            other => panic!("expected labels after {}, got {other:?}", out.len()),
        }
    }
    out
}

fn assert_strictly_increasing(msgs: &[LabelsMessage]) {
    for w in msgs.windows(2) {
        assert!(w[1].seq > w[0].seq, "seq {} then {}", w[0].seq, w[1].seq);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_then_live_has_no_gap_and_no_duplicate_while_labels_are_written() {
    // A small live ring, so that the replay falls behind it and must catch up from the store.
    let s = server(HubConfig {
        live_buffer: 32,
        replay_page: 100,
        ..HubConfig::default()
    })
    .await;
    s.write_many(0, 2000).await;
    let server = Arc::new(s);
    let writer = {
        let s = server.clone();
        tokio::spawn(async move {
            for batch in 0..40 {
                s.write_many(2000 + batch * 25, 25).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut ws = connect(&server.ws_url(Some(0))).await;
    let mut live_only = connect(&server.ws_url(None)).await;
    let got = take_labels(&mut ws, 3000).await;
    writer.await.unwrap();
    assert_strictly_increasing(&got);
    let stored: Vec<i64> = server
        .hub
        .store()
        .after(0, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(
        got.iter().map(|m| m.seq).collect::<Vec<_>>(),
        stored,
        "every stored label exactly once, in order"
    );
    let public = server.key.public();
    for m in &got {
        assert_eq!(m.labels.len(), 1);
        m.labels[0].verify(&public).unwrap();
    }
    // The live-only subscriber joined during the writes: it sees a suffix, in order.
    server.wait_for_subscribers(2).await;
    server.write_many(5000, 3).await;
    let mut live = Vec::new();
    loop {
        let Got::Labels(m) = next(&mut live_only).await else {
            panic!("live subscriber closed")
        };
        let last = m.seq == *stored.last().unwrap() + 3;
        live.push(m);
        if last {
            break;
        }
    }
    assert_strictly_increasing(&live);
    // A second replay of the same range comes from the shared page cache: the same frames.
    let mut again = connect(&server.ws_url(Some(0))).await;
    let second = take_labels(&mut again, stored.len()).await;
    assert_eq!(second.iter().map(|m| m.seq).collect::<Vec<_>>(), stored);
    assert_eq!(second, got[..stored.len()].to_vec());
    // And a cursor in the middle replays exactly what follows it.
    let mid = stored[1234];
    let mut ws = connect(&server.ws_url(Some(mid))).await;
    let got = take_labels(&mut ws, 10).await;
    assert_eq!(got[0].seq, stored[1235]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_cursor_is_an_error_frame_then_close() {
    let s = server(HubConfig::default()).await;
    s.write_many(0, 3).await;
    let mut ws = connect(&s.ws_url(Some(50))).await;
    match next(&mut ws).await {
        Got::Error(e) => assert_eq!(e, "FutureCursor"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(next(&mut ws).await, Got::Closed));
    // The head itself is not in the future: nothing to replay, then live.
    let head = s.hub.store().head().await.unwrap();
    let mut ws = connect(&s.ws_url(Some(head))).await;
    s.write_many(10, 1).await;
    let got = take_labels(&mut ws, 1).await;
    assert_eq!(got[0].seq, head + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negations_are_in_the_replay_and_compaction_makes_old_cursors_outdated() {
    let s = server(HubConfig::default()).await;
    s.write(vec![unsigned("did:plc:target", "spam", false)])
        .await;
    s.write(vec![unsigned("did:plc:target", "spam", true)])
        .await;
    s.write(vec![unsigned("did:plc:other", "rude", false)])
        .await;
    let mut ws = connect(&s.ws_url(Some(0))).await;
    let got = take_labels(&mut ws, 3).await;
    assert!(!got[0].labels[0].neg);
    assert!(got[1].labels[0].neg, "the negation is replayed");
    assert_eq!(got[1].labels[0].uri, "did:plc:target");
    got[1].labels[0].verify(&s.key.public()).unwrap();

    // Compacting drops the replaced label; a cursor before the mark is told so first.
    let head = s.hub.store().head().await.unwrap();
    s.hub.store().compact(head).await.unwrap();
    let mut ws = connect(&s.ws_url(Some(0))).await;
    match next(&mut ws).await {
        Got::Info(name) => assert_eq!(name, "OutdatedCursor"),
        other => panic!("{other:?}"),
    }
    let got = take_labels(&mut ws, 2).await;
    assert!(
        got[0].labels[0].neg,
        "the current state survives compaction"
    );
    assert_eq!(got[1].labels[0].val, "rude");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_dropped_while_a_fast_one_continues() {
    let s = server(HubConfig {
        live_buffer: 64,
        max_lag: 5000,
        send_timeout: Duration::from_secs(2),
        ..HubConfig::default()
    })
    .await;
    // The slow client reads nothing, with a small receive buffer so the server feels it soon.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(s.addr).await.unwrap();
    let (mut slow, _) = tokio_tungstenite::client_async(s.ws_url(None), stream)
        .await
        .unwrap();
    let mut fast = connect(&s.ws_url(None)).await;
    s.wait_for_subscribers(2).await;
    let total = 30_000;
    let server = Arc::new(s);
    let writer = {
        let s = server.clone();
        tokio::spawn(async move {
            for b in 0..(total / 1000) {
                s.write_many_unsigned(b * 1000, 1000).await;
            }
        })
    };
    let got = take_labels(&mut fast, total).await;
    writer.await.unwrap();
    assert_strictly_increasing(&got);
    assert_eq!(got.len(), total);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while server.hub.subscriber_count() > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        server.hub.subscriber_count(),
        1,
        "the slow subscriber was closed"
    );
    assert!(server.hub.metrics().slow_consumers.get() >= 1);
    // What the slow client finds in its buffers: some labels in order, then the error or
    // the close, never the whole stream.
    let mut slow_got = 0usize;
    let mut last = 0;
    loop {
        match next(&mut slow).await {
            Got::Labels(m) => {
                assert!(m.seq > last);
                last = m.seq;
                slow_got += 1;
            }
            Got::Error(e) => {
                assert_eq!(e, "ConsumerTooSlow");
                break;
            }
            Got::Closed => break,
            Got::Info(i) => panic!("{i}"),
        }
    }
    assert!(
        slow_got < total,
        "the slow consumer was cut off ({slow_got})"
    );
    // The fast one is still live.
    server.write_many(total, 1).await;
    let more = take_labels(&mut fast, 1).await;
    assert!(more[0].seq > got.last().unwrap().seq);
    let _ = fast.close(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_labels_filters_pages_and_refuses_bad_requests() {
    let s = server(HubConfig::default()).await;
    let mut labels = Vec::new();
    for i in 0..5 {
        labels.push(unsigned(
            &format!("at://did:plc:aaa/app.bsky.feed.post/{i}"),
            "spam",
            false,
        ));
    }
    labels.push(unsigned("did:plc:aaa", "spam", false));
    labels.push(unsigned("did:plc:bbb", "spam", false));
    s.write(labels).await;
    s.write(vec![unsigned("did:plc:bbb", "spam", true)]).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}/xrpc/com.atproto.label.queryLabels", s.addr);
    let get = |q: &str| {
        let http = http.clone();
        let url = format!("{base}?{q}");
        async move {
            let r = http.get(url).send().await.unwrap();
            let status = r.status().as_u16();
            (
                status,
                serde_json::from_str::<serde_json::Value>(&r.text().await.unwrap()).unwrap(),
            )
        }
    };
    let (status, body) = get("uriPatterns=at://did:plc:aaa/*&limit=2").await;
    assert_eq!(status, 200);
    assert_eq!(body["labels"].as_array().unwrap().len(), 2);
    let mut cursor = body["cursor"].as_str().unwrap().to_string();
    let mut seen = 2;
    loop {
        let (_, body) = get(&format!(
            "uriPatterns=at://did:plc:aaa/*&limit=2&cursor={}",
            url_escape(&cursor)
        ))
        .await;
        seen += body["labels"].as_array().unwrap().len();
        match body["cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    assert_eq!(seen, 5);
    let (_, body) = get("uriPatterns=did:plc:aaa&uriPatterns=did:plc:bbb").await;
    let got = body["labels"].as_array().unwrap();
    assert_eq!(got.len(), 1, "the negated label is not current: {body}");
    let label = Label::from_json(&got[0]).unwrap();
    label.verify(&s.key.public()).unwrap();
    let (_, body) = get(&format!("uriPatterns=did:plc:aaa&sources={SRC}")).await;
    assert_eq!(body["labels"].as_array().unwrap().len(), 1);
    let (_, body) = get("uriPatterns=did:plc:aaa&sources=did:plc:someoneelse").await;
    assert_eq!(body["labels"].as_array().unwrap().len(), 0);

    for (q, needle) in [
        ("", "uriPatterns is required"),
        ("uriPatterns=at://*/x", "only at the end"),
        ("uriPatterns=did:plc:aaa&limit=0", "limit"),
        ("uriPatterns=did:plc:aaa&limit=251", "limit"),
        ("uriPatterns=did:plc:aaa&cursor=nonsense", "cursor"),
        ("uriPatterns=did:plc:aaa&sources=notadid", "not a DID"),
    ] {
        let (status, body) = get(q).await;
        assert_eq!(status, 400, "{q}");
        assert_eq!(body["error"], "InvalidRequest", "{q}");
        assert!(
            body["message"].as_str().unwrap().contains(needle),
            "{q}: {body}"
        );
    }
    // subscribeLabels without a WebSocket upgrade is an XRPC error, not a hang.
    let r = http
        .get(format!(
            "http://{}/xrpc/com.atproto.label.subscribeLabels",
            s.addr
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["error"], "InvalidRequest");
    // The metrics include the labeler's.
    let text = http
        .get(format!("http://{}/metrics", s.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("skywarden_labeler_subscribers"), "{text}");
    assert!(text.contains("skywarden_labeler_published_seq"));
}

fn url_escape(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_past_the_limit_are_refused() {
    let s = server(HubConfig {
        max_subscribers: 2,
        ..HubConfig::default()
    })
    .await;
    let mut a = connect(&s.ws_url(None)).await;
    let _b = connect(&s.ws_url(None)).await;
    s.wait_for_subscribers(2).await;
    let mut c = connect(&s.ws_url(None)).await;
    match next(&mut c).await {
        Got::Error(e) => assert_eq!(e, "TooManySubscribers"),
        other => panic!("{other:?}"),
    }
    s.write_many(0, 1).await;
    assert_eq!(take_labels(&mut a, 1).await.len(), 1);
    a.send(Message::Close(None)).await.unwrap();
}

//! The simulator as a server: `com.atproto.sync.subscribeRepos` over WebSocket, exactly as a
//! relay or PDS serves it (cursor replay, then live), and a PLC directory for the simulated
//! accounts (`GET /{did}`, `GET /{did}/log/audit`), so `skywarden serve --relay … --plc …`
//! consumes it as it would the network.
//!
//! Frames are kept in a bounded history (the last `history` frames); each subscriber walks it at
//! its own pace, so a slow subscriber never holds back the generator or the others.

use crate::network::Network;
use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use skywarden_atproto::frame::{InfoFrame, encode_error, encode_message};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// How the server generates.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Frames per second; 0 generates `events` frames up front and serves them as fast as
    /// subscribers read.
    pub rate: u64,
    /// With `rate = 0`: how many frames to generate. With a rate: stop after this many
    /// (0: never).
    pub events: u64,
    /// Frames kept for replay.
    pub history: usize,
    /// With a rate: generate `events` frames up front, then, once the first subscriber
    /// connects, release them at the rate, each at its own timestamp's distance from the
    /// first (so a consumer can tell, from a record's
    /// TID, when its frame went out: see [`SimServer::release_offset_micros`]). Generation
    /// costs nothing while serving, so the rate is not bounded by the generator.
    pub pregenerate: bool,
}

struct History {
    /// `seq` of `frames[0]`.
    base: i64,
    frames: VecDeque<Bytes>,
}

/// Shared by the generator and every subscriber.
pub struct SimServer {
    network: Mutex<Network>,
    history: RwLock<History>,
    grew: Notify,
    config: ServeConfig,
    /// Pregenerated frames not released yet: `(seq, simulated time, bytes)`.
    pending: Mutex<VecDeque<(i64, i64, Bytes)>>,
    /// Wall clock minus simulated time of released frames (µs), once releasing started.
    offset: std::sync::atomic::AtomicI64,
    /// Signalled when a subscriber connects (pregenerated frames wait for the first).
    subscribed: watch::Sender<bool>,
}

impl SimServer {
    /// A server over `network`. With `rate = 0` the frames are generated here.
    pub fn new(mut network: Network, config: ServeConfig) -> Arc<SimServer> {
        let mut frames = VecDeque::new();
        let mut pending = VecDeque::new();
        let mut base = network.seq() + 1;
        if config.rate > 0 && config.pregenerate {
            for f in network.frames(config.events) {
                pending.push_back((f.seq, f.time_micros, Bytes::from(f.bytes)));
            }
        }
        if config.rate == 0 {
            for f in network.frames(config.events) {
                if frames.is_empty() {
                    base = f.seq;
                }
                frames.push_back(Bytes::from(f.bytes));
                if frames.len() > config.history.max(1) {
                    frames.pop_front();
                    base += 1;
                }
            }
        }
        Arc::new(SimServer {
            network: Mutex::new(network),
            history: RwLock::new(History { base, frames }),
            grew: Notify::new(),
            config,
            pending: Mutex::new(pending),
            offset: std::sync::atomic::AtomicI64::new(i64::MIN),
            subscribed: watch::channel(false).0,
        })
    }

    /// With `pregenerate`: wall-clock time minus simulated time of the frames released (µs);
    /// `None` before releasing starts. A frame with simulated time `t` went out at `t + offset`.
    pub fn release_offset_micros(&self) -> Option<i64> {
        let o = self.offset.load(std::sync::atomic::Ordering::Acquire);
        (o != i64::MIN).then_some(o)
    }

    fn push(&self, batch: Vec<(i64, Bytes)>) {
        {
            let mut h = self.history.write().expect("history lock");
            for (seq, bytes) in batch {
                if h.frames.is_empty() {
                    h.base = seq;
                }
                h.frames.push_back(bytes);
                if h.frames.len() > self.config.history.max(1) {
                    h.frames.pop_front();
                    h.base += 1;
                }
            }
        }
        self.grew.notify_waiters();
    }

    /// Releases pregenerated frames when their time comes, from the first subscriber's
    /// arrival until none are left.
    async fn release(&self, mut shutdown: watch::Receiver<bool>) {
        let mut subscribed = self.subscribed.subscribe();
        tokio::select! {
            _ = subscribed.wait_for(|s| *s) => {}
            _ = shutdown.changed() => return,
        }
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as i64)
        };
        let Some(first) = self
            .pending
            .lock()
            .expect("pending lock")
            .front()
            .map(|f| f.1)
        else {
            return;
        };
        let offset = now() - first;
        self.offset
            .store(offset, std::sync::atomic::Ordering::Release);
        let mut interval = tokio::time::interval(Duration::from_millis(2));
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = shutdown.changed() => return,
            }
            let due = now() - offset;
            let batch: Vec<(i64, Bytes)> = {
                let mut p = self.pending.lock().expect("pending lock");
                let mut out = Vec::new();
                while p.front().is_some_and(|f| f.1 <= due) {
                    let (seq, _, bytes) = p.pop_front().expect("front checked");
                    out.push((seq, bytes));
                }
                out
            };
            let done = self.pending.lock().expect("pending lock").is_empty();
            if !batch.is_empty() {
                self.push(batch);
            }
            if done {
                return;
            }
        }
    }

    /// The ground truth of what was generated so far.
    pub fn truth(&self) -> Vec<crate::Truth> {
        self.network.lock().expect("network lock").truth().to_vec()
    }

    /// The last `seq` available.
    pub fn head(&self) -> i64 {
        let h = self.history.read().expect("history lock");
        h.base + h.frames.len() as i64 - 1
    }

    /// Generates at the configured rate until `shutdown` (no-op with `rate = 0`).
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        if self.config.rate == 0 {
            return;
        }
        if self.config.pregenerate {
            return self.release(shutdown).await;
        }
        let tick = Duration::from_millis(10);
        let per_tick = (self.config.rate as f64 / 100.0).max(0.0);
        let mut owed = 0.0;
        let mut made = 0u64;
        let mut interval = tokio::time::interval(tick);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = shutdown.changed() => return,
            }
            owed += per_tick;
            let n = owed as u64;
            owed -= n as f64;
            if n == 0 {
                continue;
            }
            let batch: Vec<(i64, Bytes)> = {
                let mut net = self.network.lock().expect("network lock");
                net.frames(n)
                    .map(|f| (f.seq, Bytes::from(f.bytes)))
                    .collect()
            };
            self.push(batch);
            made += n;
            if self.config.events > 0 && made >= self.config.events {
                return;
            }
        }
    }

    /// Frames from `seq` on (at most `max`), and the `seq` after them.
    fn frames_from(&self, seq: i64, max: usize) -> (Vec<Bytes>, i64) {
        let h = self.history.read().expect("history lock");
        let start = (seq - h.base).max(0) as usize;
        let frames: Vec<Bytes> = h.frames.iter().skip(start).take(max).cloned().collect();
        let next = h.base + (start + frames.len()) as i64;
        (frames, next)
    }

    /// The router: subscribeRepos, the PLC directory, and a health check.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/xrpc/com.atproto.sync.subscribeRepos", get(subscribe))
            .route("/xrpc/_health", get(|| async { "ok" }))
            .route("/{did}", get(did_document))
            .route("/{did}/log/audit", get(audit_log))
            .with_state(self.clone())
    }
}

fn error(code: StatusCode, error: &str, message: &str) -> Response {
    (
        code,
        [("content-type", "application/json")],
        serde_json::json!({ "error": error, "message": message }).to_string(),
    )
        .into_response()
}

async fn did_document(State(s): State<Arc<SimServer>>, Path(did): Path<String>) -> Response {
    let doc = s.network.lock().expect("network lock").did_document(&did);
    match doc {
        Some(doc) => ([("content-type", "application/json")], doc.to_string()).into_response(),
        None => error(StatusCode::NOT_FOUND, "NotFound", "DID not registered"),
    }
}

async fn audit_log(State(s): State<Arc<SimServer>>, Path(did): Path<String>) -> Response {
    let log = s.network.lock().expect("network lock").audit_log(&did);
    match log {
        Some(log) => ([("content-type", "application/json")], log.to_string()).into_response(),
        None => error(StatusCode::NOT_FOUND, "NotFound", "DID not registered"),
    }
}

async fn subscribe(
    State(s): State<Arc<SimServer>>,
    RawQuery(query): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    let mut cursor = None;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if k == "cursor" {
            match v.parse::<i64>() {
                Ok(n) if n >= 0 => cursor = Some(n),
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "InvalidRequest",
                        "cursor must be a non-negative integer",
                    );
                }
            }
        }
    }
    ws.on_upgrade(move |socket| stream(socket, s, cursor))
}

async fn stream(socket: WebSocket, s: Arc<SimServer>, cursor: Option<i64>) {
    s.subscribed.send_replace(true);
    let (mut tx, mut rx) = socket.split();
    let head = s.head();
    let (base, _) = {
        let h = s.history.read().expect("history lock");
        (h.base, h.frames.len())
    };
    let mut next = match cursor {
        None => head + 1,
        Some(c) if c > head => {
            let _ = tx
                .send(Message::Binary(Bytes::from(encode_error(
                    "FutureCursor",
                    "cursor is ahead of the stream",
                ))))
                .await;
            return;
        }
        Some(c) => {
            if c + 1 < base {
                let info = InfoFrame {
                    name: "OutdatedCursor".into(),
                    message: Some("the simulator's history starts later".into()),
                };
                if let Ok(b) = encode_message("#info", &info) {
                    let _ = tx.send(Message::Binary(Bytes::from(b))).await;
                }
            }
            c + 1
        }
    };
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
    loop {
        let grew = s.grew.notified();
        let (frames, after) = s.frames_from(next, 1024);
        if frames.is_empty() {
            tokio::select! {
                _ = grew => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if reader.is_finished() {
                return;
            }
            continue;
        }
        // Queue the batch and flush once: one write per batch, not per frame.
        for f in frames {
            if tx.feed(Message::Binary(f)).await.is_err() {
                reader.abort();
                return;
            }
        }
        if tx.flush().await.is_err() {
            reader.abort();
            return;
        }
        next = after;
    }
}

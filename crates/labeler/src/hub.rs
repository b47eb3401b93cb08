//! The `subscribeLabels` fan-out: one publisher tails the label store and broadcasts each new
//! label as an encoded frame to every live subscriber; a subscriber with a cursor replays from
//! the store first and then joins the broadcast without a gap or a duplicate.
//!
//! How the switch is exact: a subscriber registers with the broadcast *before* reading the
//! store. Every label committed before that moment is in the store, every label published
//! after it is in the subscriber's broadcast buffer, and the store makes rows visible in `seq`
//! order (see `skywarden_store::labels`), so replaying to the store's end and then taking
//! broadcast frames with `seq` above the last one sent covers every label once.
//!
//! Memory is bounded: the broadcast is a ring of `live_buffer` frames shared by all
//! subscribers (one encoding per label, whatever the number of subscribers). A subscriber that
//! falls off the ring (a burst, or a long replay) goes back to the store and catches up from
//! there, holding one page at a time. One that has been live and then falls more than
//! `max_lag` labels behind the stream, or whose socket does not take a frame within
//! `send_timeout`, is closed with `ConsumerTooSlow`: it can reconnect with its last cursor.
//! (A subscriber replaying history is far behind by its own request; it is never cut off
//! for that.)

use crate::metrics::LabelerMetrics;
use crate::stored_to_label;
use bytes::Bytes;
use skywarden_atproto::frame::{encode_error, encode_message};
use skywarden_atproto::label::LabelsMessage;
use skywarden_store::StoreError;
use skywarden_store::labels::{LabelRow, LabelStore};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, broadcast, watch};

/// Tuning of the fan-out.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Frames the live ring holds; a subscriber this far behind is too slow.
    pub live_buffer: usize,
    /// Labels read from the store per replay page.
    pub replay_page: u32,
    /// Encoded replay pages kept for other subscribers replaying the same range (0: none).
    pub cached_pages: usize,
    /// How often the publisher polls the store for labels written by other processes.
    pub poll_interval: Duration,
    /// Open subscriptions at most; more are refused.
    pub max_subscribers: usize,
    /// A frame the socket does not accept within this time closes the subscriber.
    pub send_timeout: Duration,
    /// A subscriber that was live and is now this many labels behind the newest is too slow.
    pub max_lag: i64,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            live_buffer: 8192,
            replay_page: 1000,
            cached_pages: 64,
            poll_interval: Duration::from_millis(500),
            max_subscribers: 20_000,
            send_timeout: Duration::from_secs(15),
            max_lag: 100_000,
        }
    }
}

/// One encoded `#labels` frame and its position.
#[derive(Debug, Clone)]
pub struct LiveFrame {
    /// The label's `seq`.
    pub seq: i64,
    /// The whole frame (header and body).
    pub bytes: Bytes,
}

/// Encodes a stored label as a `#labels` frame. `None` only for a label the encoder refuses
/// (stored labels were validated before they were signed, so this is logged as a bug).
pub fn encode_row(row: &LabelRow) -> Option<LiveFrame> {
    let message = LabelsMessage {
        seq: row.seq,
        labels: vec![stored_to_label(&row.label)],
    };
    match encode_message("#labels", &message) {
        Ok(bytes) => Some(LiveFrame {
            seq: row.seq,
            bytes: Bytes::from(bytes),
        }),
        Err(e) => {
            tracing::error!(seq = row.seq, error = %e, "label frame did not encode; skipped");
            None
        }
    }
}

/// Why a subscription was refused before it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The cursor is ahead of the stream.
    FutureCursor {
        /// The requested cursor.
        cursor: i64,
        /// The stream's last `seq`.
        head: i64,
    },
    /// The process serves as many subscribers as configured.
    TooManySubscribers,
    /// The store could not be read.
    Store(String),
}

impl Refusal {
    /// The XRPC error name.
    pub fn name(&self) -> &'static str {
        match self {
            Refusal::FutureCursor { .. } => "FutureCursor",
            Refusal::TooManySubscribers => "TooManySubscribers",
            Refusal::Store(_) => "InternalServerError",
        }
    }

    /// The error frame to send before closing.
    pub fn frame(&self) -> Bytes {
        let message = match self {
            Refusal::FutureCursor { cursor, head } => {
                format!("cursor {cursor} is ahead of the stream, which ends at {head}")
            }
            Refusal::TooManySubscribers => {
                "this labeler serves its maximum of subscribers; retry later".into()
            }
            Refusal::Store(_) => "the label store could not be read".into(),
        };
        Bytes::from(encode_error(self.name(), &message))
    }
}

/// Encoded replay pages, shared by subscribers replaying the same range. Page `k` holds the
/// frames with `seq` in `(k·P, (k+1)·P]`; only pages wholly at or below the published `seq`
/// are kept, because rows become visible in `seq` order: nothing can join such a page later.
#[derive(Debug, Default)]
struct PageCache {
    pages: std::collections::HashMap<i64, Arc<Vec<LiveFrame>>>,
    order: VecDeque<i64>,
}

/// The fan-out; one per process, shared by every subscriber.
#[derive(Debug)]
pub struct LabelHub {
    store: Arc<dyn LabelStore>,
    pages: std::sync::Mutex<PageCache>,
    filling: tokio::sync::Mutex<()>,
    live: broadcast::Sender<LiveFrame>,
    published: AtomicI64,
    wake: Notify,
    subscribers: AtomicUsize,
    metrics: Arc<LabelerMetrics>,
    config: HubConfig,
}

impl LabelHub {
    /// A hub over `store`; live subscribers start at the store's current end.
    pub async fn new(
        store: Arc<dyn LabelStore>,
        metrics: Arc<LabelerMetrics>,
        config: HubConfig,
    ) -> Result<Arc<LabelHub>, StoreError> {
        let head = store.head().await?;
        let (live, _) = broadcast::channel(config.live_buffer.max(1));
        metrics.published_seq.set(head);
        Ok(Arc::new(LabelHub {
            store,
            pages: std::sync::Mutex::new(PageCache::default()),
            filling: tokio::sync::Mutex::new(()),
            live,
            published: AtomicI64::new(head),
            wake: Notify::new(),
            subscribers: AtomicUsize::new(0),
            metrics,
            config,
        }))
    }

    /// The label store.
    pub fn store(&self) -> &Arc<dyn LabelStore> {
        &self.store
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<LabelerMetrics> {
        &self.metrics
    }

    /// The configuration.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// Tells the publisher that labels were appended (it also polls).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The highest `seq` broadcast so far.
    pub fn published(&self) -> i64 {
        self.published.load(Ordering::Acquire)
    }

    /// Open subscriptions.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    /// Replay frames after `after`, and whether they reach the end of what is stored (the
    /// replay is then done). Complete pages come from (and go to) the page cache.
    async fn replay_from(&self, after: i64) -> Result<(Vec<LiveFrame>, bool), StoreError> {
        let size = i64::from(self.config.replay_page.max(1));
        let page = after.div_euclid(size);
        let hi = (page + 1) * size;
        if self.config.cached_pages == 0 || hi > self.published() {
            // The head of the stream (or no cache): one page of whatever follows `after`.
            let rows = self.store.after(after, size as u32).await?;
            let done = (rows.len() as i64) < size;
            return Ok((rows.iter().filter_map(encode_row).collect(), done));
        }
        let cached = || {
            self.pages
                .lock()
                .ok()
                .and_then(|c| c.pages.get(&page).cloned())
        };
        // One fill at a time: subscribers missing the same page (a reconnect storm) wait for
        // the first one's read instead of all reading the store.
        let mut cached_page = cached();
        let _fill = match cached_page {
            Some(_) => None,
            None => {
                let guard = self.filling.lock().await;
                cached_page = cached();
                Some(guard)
            }
        };
        let frames = match cached_page {
            Some(frames) => frames,
            None => {
                // At most `size` rows have a seq in (page·size, hi]; any more are past hi.
                let rows = self.store.after(page * size, size as u32).await?;
                let frames: Arc<Vec<LiveFrame>> = Arc::new(
                    rows.iter()
                        .filter(|r| r.seq <= hi)
                        .filter_map(encode_row)
                        .collect(),
                );
                if let Ok(mut cache) = self.pages.lock() {
                    if cache.pages.insert(page, frames.clone()).is_none() {
                        cache.order.push_back(page);
                    }
                    while cache.order.len() > self.config.cached_pages {
                        if let Some(old) = cache.order.pop_front() {
                            cache.pages.remove(&old);
                        }
                    }
                }
                frames
            }
        };
        let rest = frames.iter().filter(|f| f.seq > after).cloned().collect();
        // A complete page is never the end: the next page, or the head, follows.
        Ok((rest, false))
    }

    /// Broadcasts every label appended since the last call; returns how many.
    pub async fn publish_pending(&self) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let after = self.published();
            let rows = self.store.after(after, self.config.replay_page).await?;
            for row in &rows {
                if let Some(frame) = encode_row(row) {
                    // No receivers is fine: nobody is live.
                    let _ = self.live.send(frame);
                }
                self.published.store(row.seq, Ordering::Release);
            }
            if let Some(last) = rows.last() {
                self.metrics.published_seq.set(last.seq);
            }
            total += rows.len();
            if rows.len() < self.config.replay_page as usize {
                return Ok(total);
            }
        }
    }

    /// The publisher loop: publishes on every wake-up and poll until `shutdown`.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.publish_pending().await {
                tracing::warn!(error = %e, "label publisher could not read the store; retrying");
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.config.poll_interval) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }

    /// Opens a subscription: `cursor = None` is live only; `Some(n)` replays every label with
    /// `seq > n`, then goes live.
    pub async fn subscribe(self: &Arc<Self>, cursor: Option<i64>) -> Result<Subscription, Refusal> {
        let guard = SubscriberGuard::new(self.clone()).ok_or_else(|| {
            self.metrics.refused("TooManySubscribers");
            Refusal::TooManySubscribers
        })?;
        // Register for live frames before reading the store (see the module docs).
        let rx = self.live.subscribe();
        let live_from = self.published();
        let mut info = None;
        let replay_from = match cursor {
            None => None,
            Some(cursor) => {
                let head = self
                    .store
                    .head()
                    .await
                    .map_err(|e| Refusal::Store(e.to_string()))?;
                if cursor > head {
                    self.metrics.refused("FutureCursor");
                    return Err(Refusal::FutureCursor { cursor, head });
                }
                let compacted = self
                    .store
                    .compacted_through()
                    .await
                    .map_err(|e| Refusal::Store(e.to_string()))?;
                if cursor < compacted {
                    let body = skywarden_atproto::frame::InfoFrame {
                        name: "OutdatedCursor".into(),
                        message: Some(format!(
                            "labels replaced before seq {compacted} were compacted; replaying the current ones"
                        )),
                    };
                    info = encode_message("#info", &body).ok().map(Bytes::from);
                }
                Some(cursor.max(0))
            }
        };
        Ok(Subscription {
            hub: self.clone(),
            rx,
            // Live only: everything published after registering.
            last: replay_from.unwrap_or(live_from),
            replaying: replay_from.is_some(),
            was_live: replay_from.is_none(),
            queue: VecDeque::new(),
            info,
            replay_started: Instant::now(),
            _guard: guard,
        })
    }
}

/// Counts an open subscription for as long as it lives.
#[derive(Debug)]
struct SubscriberGuard(Arc<LabelHub>);

impl SubscriberGuard {
    fn new(hub: Arc<LabelHub>) -> Option<SubscriberGuard> {
        let max = hub.config.max_subscribers;
        hub.subscribers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        hub.metrics.subscribers.inc();
        Some(SubscriberGuard(hub))
    }
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.subscribers.dec();
    }
}

/// What to send next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// A frame; more follow.
    Frame(Bytes),
    /// A last frame (an error), then close.
    Close(Bytes),
    /// The hub shut down: close without a frame.
    End,
}

/// One subscriber's position in the stream.
#[derive(Debug)]
pub struct Subscription {
    hub: Arc<LabelHub>,
    rx: broadcast::Receiver<LiveFrame>,
    /// The last `seq` sent, or where the subscriber started.
    last: i64,
    replaying: bool,
    /// Reached the live stream at least once (the lag limit applies from then on).
    was_live: bool,
    queue: VecDeque<LiveFrame>,
    info: Option<Bytes>,
    replay_started: Instant,
    _guard: SubscriberGuard,
}

impl Subscription {
    /// Whether the subscriber is still replaying from the store.
    pub fn replaying(&self) -> bool {
        self.replaying
    }

    /// Whether a frame is ready without waiting (the rest of a replay page): the socket can
    /// then hold its flush until the batch is written.
    pub fn has_buffered(&self) -> bool {
        !self.queue.is_empty()
    }

    /// The last `seq` handed out (or the starting position).
    pub fn last_seq(&self) -> i64 {
        self.last
    }

    fn too_slow(&self) -> Next {
        self.hub.metrics.slow_consumers.inc();
        Next::Close(Bytes::from(encode_error(
            "ConsumerTooSlow",
            "the subscriber fell too far behind the label stream; reconnect with a cursor",
        )))
    }

    /// The next frame to send.
    pub async fn next(&mut self) -> Next {
        if let Some(info) = self.info.take() {
            return Next::Frame(info);
        }
        loop {
            if let Some(frame) = self.queue.pop_front() {
                return Next::Frame(frame.bytes);
            }
            if self.replaying {
                if self.was_live && self.hub.published() - self.last > self.hub.config.max_lag {
                    return self.too_slow();
                }
                let (frames, done) = match self.hub.replay_from(self.last).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, "label replay could not read the store");
                        return Next::Close(Refusal::Store(e.to_string()).frame());
                    }
                };
                if frames.is_empty() && !done {
                    // A complete page with nothing after `last` (compacted or gaps): skip it.
                    let size = i64::from(self.hub.config.replay_page.max(1));
                    self.last = (self.last.div_euclid(size) + 1) * size;
                }
                if done {
                    self.replaying = false;
                    self.was_live = true;
                    self.hub
                        .metrics
                        .replay_seconds
                        .observe(self.replay_started.elapsed().as_secs_f64());
                }
                for frame in frames {
                    self.last = frame.seq;
                    self.queue.push_back(frame);
                }
                continue;
            }
            match self.rx.recv().await {
                Ok(frame) => {
                    if frame.seq <= self.last {
                        continue;
                    }
                    self.last = frame.seq;
                    return Next::Frame(frame.bytes);
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Fell off the ring: the missed frames are in the store; catch up there
                    // (the lag check above closes a subscriber that is hopelessly behind).
                    self.rx = self.hub.live.subscribe();
                    self.replaying = true;
                    self.replay_started = Instant::now();
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return Next::End,
            }
        }
    }
}

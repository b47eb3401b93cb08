//! The labeler's Prometheus metrics (`skywarden_labeler_*`), registered next to the engine's.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Every labeler metric.
#[derive(Debug)]
pub struct LabelerMetrics {
    emitted: Family<Labels, Counter>,
    refused: Family<Labels, Counter>,
    sink_skipped: Family<Labels, Counter>,
    /// Open `subscribeLabels` connections.
    pub subscribers: Gauge,
    /// Frames written to subscribers.
    pub frames_sent: Counter,
    /// Subscribers closed with `ConsumerTooSlow`.
    pub slow_consumers: Counter,
    /// Time from subscribing with a cursor to the end of replay, seconds.
    pub replay_seconds: Histogram,
    /// Labels re-signed after a key rotation.
    pub resigned: Counter,
    /// Label sink passes that failed (they are retried).
    pub sink_failures: Counter,
    /// The highest label sequence number broadcast to live subscribers.
    pub published_seq: Gauge,
}

impl Default for LabelerMetrics {
    fn default() -> Self {
        LabelerMetrics {
            emitted: Family::default(),
            refused: Family::default(),
            sink_skipped: Family::default(),
            subscribers: Gauge::default(),
            frames_sent: Counter::default(),
            slow_consumers: Counter::default(),
            replay_seconds: Histogram::new(exponential_buckets(1e-3, 2.0, 16)),
            resigned: Counter::default(),
            sink_failures: Counter::default(),
            published_seq: Gauge::default(),
        }
    }
}

impl LabelerMetrics {
    /// Counts `n` labels emitted; `negation` tells labels from negations.
    pub fn emitted(&self, negation: bool, n: u64) {
        let kind = if negation { "negation" } else { "label" };
        self.emitted
            .get_or_create(&vec![("kind", kind.into())])
            .inc_by(n);
    }

    /// Counts a refused subscription (`FutureCursor`, `TooManySubscribers`, ...).
    pub fn refused(&self, reason: &str) {
        self.refused
            .get_or_create(&vec![("reason", reason.into())])
            .inc();
    }

    /// Counts an effect the label sink could not turn into a label.
    pub fn sink_skipped(&self, reason: &'static str) {
        self.sink_skipped
            .get_or_create(&vec![("reason", reason.into())])
            .inc();
    }

    /// Registers every metric under `labeler_` in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("labeler");
        r.register(
            "labels_emitted",
            "Signed labels appended to the label stream, by kind (label, negation)",
            self.emitted.clone(),
        );
        r.register(
            "subscribers",
            "Open subscribeLabels connections",
            self.subscribers.clone(),
        );
        r.register(
            "frames_sent",
            "subscribeLabels frames written to subscribers",
            self.frames_sent.clone(),
        );
        r.register(
            "slow_consumers_dropped",
            "Subscribers closed with ConsumerTooSlow",
            self.slow_consumers.clone(),
        );
        r.register(
            "subscriptions_refused",
            "subscribeLabels connections refused, by reason",
            self.refused.clone(),
        );
        r.register(
            "replay_seconds",
            "Time from subscribing with a cursor to the end of the replay",
            self.replay_seconds.clone(),
        );
        r.register(
            "resigned",
            "Labels re-signed with the current key after a key rotation",
            self.resigned.clone(),
        );
        r.register(
            "sink_failures",
            "Label sink passes that failed and will be retried",
            self.sink_failures.clone(),
        );
        r.register(
            "sink_skipped",
            "Effects the label sink could not turn into a label, by reason",
            self.sink_skipped.clone(),
        );
        r.register(
            "published_seq",
            "The highest label sequence number broadcast to live subscribers",
            self.published_seq.clone(),
        );
    }
}

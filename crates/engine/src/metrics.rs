//! The engine's Prometheus metrics. Counters updated on the hot path are `prometheus-client`
//! families; gauges read from elsewhere (source counters, queue depths, identity cache) are
//! collected at scrape time from their atomics. `docs/operations/metrics.md` lists them all.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use skywarden_ingest::metrics::SourceMetrics;
use std::sync::atomic::AtomicI64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

type Labels = Vec<(&'static str, String)>;

/// Every metric the engine exports.
#[derive(Debug)]
pub struct Metrics {
    events: Family<Labels, Counter>,
    rule_evaluations: Family<Labels, Counter>,
    rule_hits: Family<Labels, Counter>,
    actions: Family<Labels, Counter>,
    /// Time to evaluate one event (all its units), seconds.
    pub evaluation_seconds: Histogram,
    /// Time from an event's dispatch to its effects being durable, seconds.
    pub event_latency_seconds: BatchHistogram,
    /// Failed ruleset reloads.
    pub reload_failures: Counter,
    /// Successful ruleset reloads.
    pub reloads: Counter,
    /// Checkpoints written.
    pub checkpoints: Counter,
    /// How long each checkpoint kept the dispatcher stopped (waiting until every dispatched
    /// event was durable, then saving state and cursor), seconds.
    pub checkpoint_pause_seconds: Histogram,
    /// Units whose evaluation panicked (skipped).
    pub failed_units: Counter,
    /// Effects delivered by sinks, by sink.
    sink_delivered: Family<Labels, Counter>,
    /// Sink delivery failures (after retries), by sink.
    sink_failures: Family<Labels, Counter>,
    /// Whether a ruleset is loaded and the last reload succeeded (1) or failed (0).
    pub ruleset_ok: Gauge,
    /// Live gauges read at scrape time.
    pub live: Arc<LiveGauges>,
}

/// Values owned elsewhere, read at each scrape.
#[derive(Debug, Default)]
pub struct LiveGauges {
    /// Per partition: events dispatched.
    pub dispatched: Vec<std::sync::atomic::AtomicU64>,
    /// Per partition: events whose effects are durable.
    pub durable: Vec<std::sync::atomic::AtomicU64>,
    /// Event time (µs) of the latest event whose effects are durable.
    pub durable_event_time: AtomicI64,
    /// The last checkpointed cursor.
    pub checkpoint_cursor: AtomicI64,
    /// The source's counters.
    pub source: Mutex<Option<Arc<SourceMetrics>>>,
    /// Identity resolution counters, when enabled.
    pub identity: Mutex<Option<crate::identity::IdentityResolver>>,
    /// Counter keys stored.
    pub counter_keys: std::sync::atomic::AtomicU64,
    /// Accounts tracked.
    pub accounts: std::sync::atomic::AtomicU64,
}

/// Per-rule counters of one ruleset, by rule index (see [`Metrics::rule_counters`]).
#[derive(Debug, Default)]
pub struct RuleCounters {
    /// `rule_evaluations` of each rule.
    pub evaluations: Vec<Counter>,
    /// `rule_hits` of each rule.
    pub hits: Vec<Counter>,
}

impl LiveGauges {
    /// Gauges for `partitions` partitions.
    pub fn new(partitions: usize) -> Self {
        LiveGauges {
            dispatched: (0..partitions).map(|_| Default::default()).collect(),
            durable: (0..partitions).map(|_| Default::default()).collect(),
            ..Default::default()
        }
    }
}

impl Metrics {
    /// Metrics for `partitions` partitions.
    pub fn new(partitions: usize) -> Self {
        Metrics {
            events: Family::default(),
            rule_evaluations: Family::default(),
            rule_hits: Family::default(),
            actions: Family::default(),
            evaluation_seconds: Histogram::new(exponential_buckets(1e-6, 2.0, 20)),
            event_latency_seconds: BatchHistogram::new(exponential_buckets(1e-5, 1.25, 72)),
            reload_failures: Counter::default(),
            reloads: Counter::default(),
            checkpoints: Counter::default(),
            checkpoint_pause_seconds: Histogram::new(exponential_buckets(1e-3, 2.0, 16)),
            failed_units: Counter::default(),
            sink_delivered: Family::default(),
            sink_failures: Family::default(),
            ruleset_ok: Gauge::default(),
            live: Arc::new(LiveGauges::new(partitions)),
        }
    }

    /// Counts `n` events of `kind`.
    pub fn events(&self, kind: &'static str, n: u64) {
        self.events
            .get_or_create(&vec![("kind", kind.into())])
            .inc_by(n);
    }

    /// The evaluation and hit counters of `rules` (`(name, mode)`, in ruleset order), looked
    /// up once: a worker keeps them while the ruleset is active instead of looking each rule's
    /// series up (allocating and hashing its labels) after every batch.
    pub fn rule_counters<'a>(
        &self,
        rules: impl IntoIterator<Item = (&'a str, &'static str)>,
    ) -> RuleCounters {
        let mut counters = RuleCounters::default();
        for (rule, mode) in rules {
            let labels = vec![("rule", rule.into()), ("mode", mode.into())];
            counters
                .evaluations
                .push(self.rule_evaluations.get_or_create(&labels).clone());
            counters
                .hits
                .push(self.rule_hits.get_or_create(&labels).clone());
        }
        counters
    }

    /// Counts one action of `verb` with `outcome`.
    pub fn action(&self, verb: &'static str, outcome: &'static str) {
        self.actions
            .get_or_create(&vec![("verb", verb.into()), ("outcome", outcome.into())])
            .inc();
    }

    /// Counts effects delivered by `sink`.
    pub fn sink_delivered(&self, sink: &str, n: u64) {
        self.sink_delivered
            .get_or_create(&vec![("sink", sink.into())])
            .inc_by(n);
    }

    /// Counts a failed delivery by `sink`.
    pub fn sink_failed(&self, sink: &str) {
        self.sink_failures
            .get_or_create(&vec![("sink", sink.into())])
            .inc();
    }

    /// A registry with every metric, prefixed `skywarden_`.
    pub fn registry(self: &Arc<Self>) -> Registry {
        let mut r = Registry::with_prefix("skywarden");
        r.register(
            "events",
            "Events received from the source, by kind",
            self.events.clone(),
        );
        r.register(
            "rule_evaluations",
            "Rule condition evaluations, by rule and mode",
            self.rule_evaluations.clone(),
        );
        r.register(
            "rule_hits",
            "Rules that fired, by rule and mode",
            self.rule_hits.clone(),
        );
        r.register(
            "actions",
            "Actions by verb and outcome (applied, shadow, over_quota, deduplicated, replayed)",
            self.actions.clone(),
        );
        r.register(
            "evaluation_seconds",
            "Time to evaluate one event against the ruleset",
            self.evaluation_seconds.clone(),
        );
        r.register(
            "event_latency_seconds",
            "Time from an event's dispatch to its effects being durable",
            self.event_latency_seconds.clone(),
        );
        r.register("ruleset_reloads", "Rulesets reloaded", self.reloads.clone());
        r.register(
            "ruleset_reload_failures",
            "Ruleset reloads refused (the running ruleset stays)",
            self.reload_failures.clone(),
        );
        r.register(
            "ruleset_ok",
            "1 if the last ruleset load succeeded, 0 if the last reload was refused",
            self.ruleset_ok.clone(),
        );
        r.register(
            "checkpoints",
            "Checkpoints written",
            self.checkpoints.clone(),
        );
        r.register(
            "checkpoint_pause_seconds",
            "How long each checkpoint kept the dispatcher stopped: until every dispatched event was durable, then saving state and cursor",
            self.checkpoint_pause_seconds.clone(),
        );
        r.register(
            "failed_units",
            "Units whose evaluation failed with an internal error (skipped)",
            self.failed_units.clone(),
        );
        r.register(
            "sink_delivered",
            "Effects delivered by sinks, by sink",
            self.sink_delivered.clone(),
        );
        r.register(
            "sink_failures",
            "Sink deliveries that failed after retries, by sink",
            self.sink_failures.clone(),
        );
        r.register_collector(Box::new(LiveCollector(self.live.clone())));
        r
    }

    /// The metrics in the Prometheus text format.
    pub fn render(self: &Arc<Self>) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        prometheus_client::encoding::text::encode(&mut out, &self.registry())
            .expect("metrics encode");
        out
    }
}

#[derive(Debug)]
struct LiveCollector(Arc<LiveGauges>);

fn counter(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge<T>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: T,
) -> Result<(), std::fmt::Error>
where
    ConstGauge<T>: EncodeMetric,
{
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

impl Collector for LiveCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let live = &self.0;
        {
            let mut depth = e.encode_descriptor(
                "queue_depth",
                "Events dispatched to a partition whose effects are not yet durable",
                None,
                MetricType::Gauge,
            )?;
            for (p, (d, done)) in live.dispatched.iter().zip(&live.durable).enumerate() {
                let v = d.load(Relaxed).saturating_sub(done.load(Relaxed)) as i64;
                ConstGauge::new(v)
                    .encode(depth.encode_family(&vec![("partition", p.to_string())])?)?;
            }
        }
        let in_flight: u64 = live
            .dispatched
            .iter()
            .zip(&live.durable)
            .map(|(d, done)| d.load(Relaxed).saturating_sub(done.load(Relaxed)))
            .sum();
        gauge(
            &mut e,
            "lag_events",
            "Events received from the source whose effects are not yet durable",
            in_flight as i64,
        )?;
        let t = live.durable_event_time.load(Relaxed);
        let lag = if t > 0 {
            (skywarden_ingest::now_micros() - t) as f64 / 1e6
        } else {
            0.0
        };
        gauge(
            &mut e,
            "lag_seconds",
            "Wall clock minus the time of the latest event whose effects are durable",
            lag,
        )?;
        gauge(
            &mut e,
            "checkpoint_cursor",
            "The source cursor of the last checkpoint",
            live.checkpoint_cursor.load(Relaxed),
        )?;
        gauge(
            &mut e,
            "counter_keys",
            "Counter keys held in memory",
            live.counter_keys.load(Relaxed) as i64,
        )?;
        gauge(
            &mut e,
            "accounts",
            "Accounts whose state is tracked",
            live.accounts.load(Relaxed) as i64,
        )?;
        if let Some(source) = live.source.lock().ok().and_then(|s| s.clone()) {
            let s = source.snapshot();
            {
                let mut frames = e.encode_descriptor(
                    "source_frames",
                    "Frames received from the source, by type",
                    None,
                    MetricType::Counter,
                )?;
                for (kind, n) in &s.frames {
                    ConstCounter::new(*n)
                        .encode(frames.encode_family(&vec![("type", kind.to_string())])?)?;
                }
            }
            {
                let mut dropped = e.encode_descriptor(
                    "source_dropped",
                    "Events dropped by the consumer checks, by reason",
                    None,
                    MetricType::Counter,
                )?;
                for (reason, n) in &s.dropped {
                    ConstCounter::new(*n)
                        .encode(dropped.encode_family(&vec![("reason", reason.to_string())])?)?;
                }
            }
            counter(
                &mut e,
                "source_bytes",
                "Bytes received from the source",
                s.bytes,
            )?;
            counter(
                &mut e,
                "decode_errors",
                "Frames that failed to decode (skipped)",
                s.decode_errors,
            )?;
            counter(
                &mut e,
                "source_oversized",
                "Frames over the size limit (skipped)",
                s.oversized,
            )?;
            counter(
                &mut e,
                "source_reconnects",
                "Reconnections to the source",
                s.reconnects,
            )?;
            counter(
                &mut e,
                "source_signatures_verified",
                "Commits whose signature was verified",
                s.signatures_verified,
            )?;
            gauge(
                &mut e,
                "source_cursor",
                "The source's last cursor",
                s.last_cursor,
            )?;
            gauge(
                &mut e,
                "source_lag_seconds",
                "Receive time minus the source's event time, for the latest event",
                s.lag_seconds,
            )?;
        }
        if let Some(identity) = live.identity.lock().ok().and_then(|s| s.clone()) {
            let st = identity.stats();
            counter(
                &mut e,
                "identity_cache_hits",
                "Identity lookups answered from the cache",
                st.hits.load(Relaxed),
            )?;
            counter(
                &mut e,
                "identity_cache_misses",
                "Identity lookups not in the cache",
                st.misses.load(Relaxed),
            )?;
            counter(
                &mut e,
                "identity_negative_hits",
                "Identity lookups answered by the negative cache",
                st.negative_hits.load(Relaxed),
            )?;
            counter(
                &mut e,
                "identity_fetches",
                "Identity documents fetched",
                st.fetches.load(Relaxed),
            )?;
            counter(
                &mut e,
                "identity_fetch_errors",
                "Identity fetches that failed",
                st.fetch_errors.load(Relaxed),
            )?;
            counter(
                &mut e,
                "identity_rate_limited",
                "Identity fetches postponed by the rate limit",
                st.rate_limited.load(Relaxed),
            )?;
            gauge(
                &mut e,
                "identity_in_flight",
                "Identity fetches in flight",
                st.in_flight.load(Relaxed) as i64,
            )?;
        }
        Ok(())
    }
}

/// A histogram observed a batch at a time: one lock per batch and a binary search per value,
/// where `prometheus-client`'s [`Histogram`] takes a lock and scans its buckets per value (the
/// latency histogram sees every event and has 72 buckets). Exported as an OpenMetrics
/// histogram like any other.
#[derive(Debug, Clone)]
pub struct BatchHistogram {
    inner: Arc<Mutex<HistogramState>>,
}

#[derive(Debug)]
struct HistogramState {
    /// Upper bounds, ascending; the last one, `f64::MAX`, is exported as +Inf.
    bounds: Vec<f64>,
    /// Observations per bucket (not cumulative), parallel to `bounds`.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl HistogramState {
    fn observe_n(&mut self, value: f64, n: u64) {
        // The first bucket whose upper bound holds `value` (`le` is inclusive). The last
        // bucket, +Inf, holds everything else, infinity and NaN included, so that it always
        // equals the count.
        let last = self.bounds.len() - 1;
        let i = if value.is_nan() {
            last
        } else {
            self.bounds
                .partition_point(|&upper| upper < value)
                .min(last)
        };
        self.counts[i] += n;
        self.sum += value * n as f64;
        self.count += n;
    }
}

/// Observations made under one lock of a [`BatchHistogram`].
pub struct HistogramBatch<'a>(std::sync::MutexGuard<'a, HistogramState>);

impl HistogramBatch<'_> {
    /// Records `n` observations of `value`.
    pub fn observe_n(&mut self, value: f64, n: u64) {
        self.0.observe_n(value, n);
    }
}

impl BatchHistogram {
    /// A histogram with these upper bounds (ascending) and a final +Inf bucket.
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        let mut bounds: Vec<f64> = bounds.into_iter().collect();
        bounds.push(f64::MAX);
        BatchHistogram {
            inner: Arc::new(Mutex::new(HistogramState {
                counts: vec![0; bounds.len()],
                bounds,
                sum: 0.0,
                count: 0,
            })),
        }
    }

    /// Locks the histogram for a batch of observations.
    pub fn batch(&self) -> HistogramBatch<'_> {
        HistogramBatch(self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Records one observation.
    pub fn observe(&self, value: f64) {
        self.batch().observe_n(value, 1);
    }
}

impl prometheus_client::metrics::TypedMetric for BatchHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for BatchHistogram {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = {
            let state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let buckets: Vec<(f64, u64)> = state
                .bounds
                .iter()
                .copied()
                .zip(state.counts.iter().copied())
                .collect();
            (state.sum, state.count, buckets)
        };
        encoder
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The batch histogram exports exactly what `prometheus-client`'s own histogram exports
    /// for the same finite observations, bucket edges (`le` is inclusive) included; infinity
    /// and NaN, which that histogram counts but leaves out of every bucket, land in +Inf.
    #[test]
    fn batch_histogram_exports_like_the_library_histogram() {
        let values = [
            0.0,
            1e-5,
            1.0000001e-5,
            0.003,
            0.003,
            0.003,
            0.04,
            2.5,
            1e9,
            -1.0,
        ];
        let reference = Histogram::new(exponential_buckets(1e-5, 1.25, 72));
        let batched = BatchHistogram::new(exponential_buckets(1e-5, 1.25, 72));
        let mut batch = batched.batch();
        for run in values.chunk_by(|a, b| a == b) {
            batch.observe_n(run[0], run.len() as u64);
        }
        drop(batch);
        for v in values {
            reference.observe(v);
        }
        let encode = |metric: &dyn Fn(&mut Registry)| {
            let mut registry = Registry::default();
            metric(&mut registry);
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
            text
        };
        let expected = encode(&|r| r.register("latency", "help", reference.clone()));
        let got = encode(&|r| r.register("latency", "help", batched.clone()));
        assert!(expected.contains("latency_bucket{le=\"+Inf\"} 10\n"));
        assert!(expected.contains("latency_bucket{le=\"0.003"));
        assert_eq!(got, expected);

        batched.observe(f64::INFINITY);
        batched.observe(f64::NAN);
        let got = encode(&|r| r.register("latency", "help", batched.clone()));
        assert!(got.contains("latency_count 12\n"), "{got}");
        assert!(got.contains("latency_bucket{le=\"+Inf\"} 12\n"), "{got}");
    }
}

//! The moderation backend's Prometheus metrics (`skywarden_moderation_*`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Every moderation metric.
#[derive(Debug, Default)]
pub struct ModerationMetrics {
    requests: Family<Labels, Counter>,
    events: Family<Labels, Counter>,
    sink_delivered: Family<Labels, Counter>,
    sink_failures: Family<Labels, Counter>,
    sink_skipped: Family<Labels, Counter>,
}

impl ModerationMetrics {
    /// Counts one XRPC call of `method` that ended with `status`/`error` (`ok` on success).
    pub fn request(&self, method: &str, status: u16, error: &str) {
        self.requests
            .get_or_create(&vec![
                ("method", method.to_string()),
                ("status", status.to_string()),
                ("error", error.to_string()),
            ])
            .inc();
    }

    /// Counts an event appended, by type and origin (`api`, `report`, `engine`).
    pub fn event(&self, event_type: &str, origin: &'static str) {
        let short = event_type.rsplit('#').next().unwrap_or(event_type);
        self.events
            .get_or_create(&vec![
                ("type", short.to_string()),
                ("origin", origin.into()),
            ])
            .inc();
    }

    /// Counts what a sink delivered.
    pub fn sink_delivered(&self, sink: &str, n: u64) {
        self.sink_delivered
            .get_or_create(&vec![("sink", sink.to_string())])
            .inc_by(n);
    }

    /// Counts a failed sink pass (retried).
    pub fn sink_failure(&self, sink: &str) {
        self.sink_failures
            .get_or_create(&vec![("sink", sink.to_string())])
            .inc();
    }

    /// Counts an entry a sink skipped, by reason.
    pub fn sink_skipped(&self, sink: &str, reason: &'static str) {
        self.sink_skipped
            .get_or_create(&vec![("sink", sink.to_string()), ("reason", reason.into())])
            .inc();
    }

    /// Registers every metric under `moderation_` in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("moderation");
        r.register(
            "requests",
            "Moderation XRPC calls, by method, HTTP status and error name",
            self.requests.clone(),
        );
        r.register(
            "events",
            "Moderation events appended, by type and origin (api, report, engine)",
            self.events.clone(),
        );
        r.register(
            "sink_delivered",
            "Entries moderation sinks delivered (labels appended, PDS or Ozone calls made), by sink",
            self.sink_delivered.clone(),
        );
        r.register(
            "sink_failures",
            "Moderation sink passes that failed and will be retried, by sink",
            self.sink_failures.clone(),
        );
        r.register(
            "sink_skipped",
            "Entries a moderation sink skipped, by sink and reason",
            self.sink_skipped.clone(),
        );
    }
}

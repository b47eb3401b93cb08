//! Sinks consume the effect log, each at its own pace, from its own cursor in the store.
//!
//! The webhook sink POSTs applied effects to a URL, in batches: `notify` actions naming the
//! webhook, and, when `all_actions` is set, every applied effect. Delivery is at least once:
//! the sink's cursor advances only after the receiver answered 2xx, so a crash between the
//! two repeats a batch (receivers de-duplicate on `idempotencyKey`). A receiver that is down
//! stalls only its sink: the engine goes on logging, and the sink catches up later.

use crate::metrics::Metrics;
use crate::webhook::{Webhook, WebhookConfig};
use skywarden_store::{EffectRow, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// One webhook sink.
#[derive(Debug, Clone)]
pub struct WebhookSinkConfig {
    /// The name `notify` actions use, and the sink's cursor name.
    pub name: String,
    /// Where and how to deliver.
    pub webhook: WebhookConfig,
    /// Deliver every applied effect, not only `notify` actions naming this webhook.
    pub all_actions: bool,
    /// Effects per POST at most.
    pub batch_size: u32,
}

/// Whether `row` goes to the webhook `name`.
pub fn selects(row: &EffectRow, name: &str, all_actions: bool) -> bool {
    if row.effect.outcome != "applied" {
        return false;
    }
    if all_actions {
        return true;
    }
    row.effect.verb == "notify"
        && serde_json::from_str::<serde_json::Value>(&row.effect.action)
            .ok()
            .and_then(|a| a["action"]["notify"].as_str().map(|w| w == name))
            .unwrap_or(false)
}

/// The JSON body for a batch of effects.
pub fn body(name: &str, rows: &[&EffectRow]) -> Vec<u8> {
    let effects: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let mut action: serde_json::Value =
                serde_json::from_str(&r.effect.action).unwrap_or(serde_json::Value::Null);
            if let Some(o) = action.as_object_mut() {
                o.insert("id".into(), r.id.into());
                o.insert(
                    "idempotencyKey".into(),
                    r.effect.idempotency_key.clone().into(),
                );
                o.insert("outcome".into(), r.effect.outcome.clone().into());
            }
            action
        })
        .collect();
    serde_json::json!({ "webhook": name, "effects": effects })
        .to_string()
        .into_bytes()
}

/// Runs one webhook sink until `shutdown`.
pub async fn run_webhook_sink(
    store: Store,
    config: WebhookSinkConfig,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let webhook = match Webhook::new(config.webhook.clone()) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(sink = %config.name, error = %e, "webhook sink not started");
            return;
        }
    };
    let cursor_name = format!("webhook:{}", config.name);
    let mut failures = 0u32;
    loop {
        if *shutdown.borrow() {
            return;
        }
        // Registered before the pass: the engine's `notify_waiters` during it is not lost.
        let notified = wake.notified();
        let idle = match deliver_next(&store, &config, &webhook, &cursor_name, &metrics).await {
            Ok(more) => {
                failures = 0;
                !more
            }
            Err(e) => {
                failures += 1;
                metrics.sink_failed(&config.name);
                tracing::warn!(sink = %config.name, error = %e, failures, "webhook delivery failed; the sink will retry");
                let pause = Duration::from_secs(1 << failures.min(6));
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
        };
        if idle {
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

/// Delivers the next batch; returns whether a full batch was read (more may be waiting).
async fn deliver_next(
    store: &Store,
    config: &WebhookSinkConfig,
    webhook: &Webhook,
    cursor_name: &str,
    metrics: &Metrics,
) -> Result<bool, String> {
    let cursor = store
        .sink_cursor(cursor_name)
        .await
        .map_err(|e| e.to_string())?;
    // Without `all_actions` only `notify` effects can name this webhook.
    let verbs: &[&str] = if config.all_actions { &[] } else { &["notify"] };
    let page = store
        .applied_effects(cursor, config.batch_size.max(1), verbs)
        .await
        .map_err(|e| e.to_string())?;
    let selected: Vec<&EffectRow> = page
        .rows
        .iter()
        .filter(|r| selects(r, &config.name, config.all_actions))
        .collect();
    if !selected.is_empty() {
        webhook
            .deliver(&body(&config.name, &selected))
            .await
            .map_err(|e| e.to_string())?;
        metrics.sink_delivered(&config.name, selected.len() as u64);
    }
    if page.cursor > cursor {
        store
            .set_sink_cursor(cursor_name, page.cursor)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(page.full)
}

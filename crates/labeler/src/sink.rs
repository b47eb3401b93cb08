//! The label sink: applied `label`, `negate_label` and `takedown` effects of the engine's
//! effect log become signed labels in the label store.
//!
//! Like every sink it reads the effect log from its own cursor (`labels`). Each label is
//! appended under its effect's idempotency key, so a crash between appending and moving the
//! cursor appends nothing twice. A takedown becomes the `!takedown` label, as Ozone emits it.
//! The label's `cts` is the time the effect was logged, so re-running the sink produces the
//! same label; an expiring label's `exp` is `cts` plus the rule's duration. A negation
//! replaces every current version of the value on its subject: the engine negates a value on
//! a record whatever version carried it (a delete has no CID, an edit a new one), so the sink
//! emits one negation per CID that currently has the label, keyed by the effect and the CID,
//! and none when no version has it.

use crate::hub::LabelHub;
use crate::key::LabelerKey;
use crate::label_to_stored;
use crate::metrics::LabelerMetrics;
use skywarden_atproto::label::Label;
use skywarden_atproto::syntax::Datetime;
use skywarden_store::labels::NewLabel;
use skywarden_store::{EffectRow, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// The sink's cursor name in the effect store.
pub const CURSOR: &str = "labels";

/// What the sink needs besides stores.
#[derive(Debug, Clone)]
pub struct LabelSinkConfig {
    /// The labeler's DID (`src` of every label).
    pub labeler_did: String,
    /// Effects read per pass.
    pub batch_size: u32,
}

/// Why an effect did not become a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// The effect's action JSON is not what the engine writes.
    Malformed(String),
    /// The label would break the lexicon (e.g. a value over 128 bytes).
    Invalid(String),
}

impl Skip {
    fn reason(&self) -> &'static str {
        match self {
            Skip::Malformed(_) => "malformed_effect",
            Skip::Invalid(_) => "invalid_label",
        }
    }
}

/// The verbs whose applied effects become labels.
pub const LABEL_VERBS: &[&str] = &["label", "negate_label", "takedown"];

/// The unsigned label an effect asks for, if it asks for one.
pub fn label_for_effect(row: &EffectRow, labeler_did: &str) -> Result<Option<Label>, Skip> {
    let e = &row.effect;
    if e.outcome != "applied" || !LABEL_VERBS.contains(&e.verb.as_str()) {
        return Ok(None);
    }
    let action: serde_json::Value =
        serde_json::from_str(&e.action).map_err(|err| Skip::Malformed(err.to_string()))?;
    let cid = action["subject"]["cid"].as_str().map(str::to_string);
    let (val, neg, expires_in) = if e.verb == "takedown" {
        ("!takedown".to_string(), false, None)
    } else {
        let val = action["action"]["label"]
            .as_str()
            .ok_or_else(|| Skip::Malformed("label action without a value".into()))?;
        (
            val.to_string(),
            e.verb == "negate_label",
            action["action"]["expiresInSeconds"].as_i64(),
        )
    };
    let cts = Datetime::from_timestamp_micros(row.logged_at)
        .map_err(|err| Skip::Invalid(err.to_string()))?;
    let exp = match expires_in {
        Some(seconds) if !neg => Some(
            Datetime::from_timestamp_micros(
                row.logged_at
                    .saturating_add(seconds.saturating_mul(1_000_000)),
            )
            .map_err(|err| Skip::Invalid(err.to_string()))?
            .as_str()
            .to_string(),
        ),
        _ => None,
    };
    let label = Label {
        ver: Some(1),
        src: labeler_did.to_string(),
        uri: e.subject.clone(),
        // An account label has no CID; a record label pins the version the rule saw.
        cid: if e.subject.starts_with("at://") {
            cid
        } else {
            None
        },
        val,
        neg,
        cts: cts.as_str().to_string(),
        exp,
        sig: None,
    };
    label
        .validate()
        .map_err(|err| Skip::Invalid(err.to_string()))?;
    Ok(Some(label))
}

/// Signs `label` and prepares it for the store under `idempotency_key`.
pub fn signed(
    key: &LabelerKey,
    mut label: Label,
    idempotency_key: Option<String>,
) -> Result<NewLabel, String> {
    key.sign(&mut label).map_err(|e| e.to_string())?;
    Ok(NewLabel {
        label: label_to_stored(&label, key.did_key()),
        idempotency_key,
    })
}

/// Runs the sink until `shutdown`, waking on `wake` (the engine signals new effects) or every
/// second.
pub async fn run_label_sink(
    effects: Store,
    hub: Arc<LabelHub>,
    key: Arc<LabelerKey>,
    config: LabelSinkConfig,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    loop {
        if *shutdown.borrow() {
            return;
        }
        // Registered before the pass: the engine's `notify_waiters` during it is not lost
        // (which would leave new labels waiting for the one-second poll).
        let notified = wake.notified();
        match pass(&effects, &hub, &key, &config).await {
            Ok(true) => {
                failures = 0;
                continue;
            }
            Ok(false) => failures = 0,
            Err(e) => {
                failures += 1;
                hub.metrics().sink_failures.inc();
                tracing::warn!(error = %e, failures, "label sink failed; retrying");
                let pause = Duration::from_millis(100 << failures.min(8));
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// One pass: turns the next batch of effects into labels. Returns whether a full batch was
/// read (more may be waiting).
pub async fn pass(
    effects: &Store,
    hub: &LabelHub,
    key: &LabelerKey,
    config: &LabelSinkConfig,
) -> Result<bool, String> {
    let batch = config.batch_size.max(1);
    let cursor = effects
        .sink_cursor(CURSOR)
        .await
        .map_err(|e| e.to_string())?;
    let page = effects
        .applied_effects(cursor, batch, LABEL_VERBS)
        .await
        .map_err(|e| e.to_string())?;
    let rows = &page.rows;
    let metrics: &LabelerMetrics = hub.metrics();
    let mut labels = Vec::new();
    for row in rows {
        match label_for_effect(row, &config.labeler_did) {
            Ok(Some(label)) if label.neg => {
                // The engine negates a value on a subject, whatever record version carried it
                // (a delete has no CID; an edit a new one): negate each current version.
                let current = hub
                    .store()
                    .current(&label.src, &label.uri, &label.val)
                    .await
                    .map_err(|e| e.to_string())?;
                // Nothing current: nothing to negate (and a re-run of this pass emits nothing
                // again, keeping it idempotent).
                for cid in current.into_iter().map(|r| r.label.cid) {
                    let idempotency_key = match &cid {
                        Some(c) => format!("{}:{c}", row.effect.idempotency_key),
                        None => row.effect.idempotency_key.clone(),
                    };
                    let negation = Label {
                        cid,
                        ..label.clone()
                    };
                    labels.push(signed(key, negation, Some(idempotency_key))?);
                }
            }
            Ok(Some(label)) => labels.push(signed(
                key,
                label,
                Some(row.effect.idempotency_key.clone()),
            )?),
            Ok(None) => {}
            Err(skip) => {
                metrics.sink_skipped(skip.reason());
                tracing::warn!(effect = row.id, rule = %row.effect.rule, problem = ?skip, "effect not turned into a label");
            }
        }
    }
    if !labels.is_empty() {
        let seqs = hub
            .store()
            .append(&labels)
            .await
            .map_err(|e| e.to_string())?;
        for (label, seq) in labels.iter().zip(&seqs) {
            if seq.is_some() {
                metrics.emitted(label.label.neg, 1);
            }
        }
        hub.wake();
    }
    if page.cursor > cursor {
        effects
            .set_sink_cursor(CURSOR, page.cursor)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(page.full)
}

/// Re-signs every stored label not signed by `key` (after a key rotation), keeping each
/// label's `seq`. Returns how many were re-signed.
pub async fn resign_all(hub: &LabelHub, key: &LabelerKey) -> Result<u64, String> {
    let store = hub.store();
    let mut after = 0;
    let mut total = 0u64;
    loop {
        let rows = store
            .signed_by_other(key.did_key(), after, 500)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = rows.last().map(|r| r.seq) else {
            return Ok(total);
        };
        let mut updates = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut label = crate::stored_to_label(&row.label);
            key.sign(&mut label).map_err(|e| e.to_string())?;
            updates.push(skywarden_store::labels::Resign {
                seq: row.seq,
                sig: label.sig.unwrap_or_default(),
                signing_key: key.did_key().to_string(),
            });
        }
        store.resign(&updates).await.map_err(|e| e.to_string())?;
        hub.metrics().resigned.inc_by(updates.len() as u64);
        total += updates.len() as u64;
        after = last;
    }
}

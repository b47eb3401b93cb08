//! Effects: turning the actions rules fire into durable entries of the effect log.
//!
//! Each action becomes a [`PendingEffect`] with an idempotency key derived from the event, the
//! op, the rule and the action's position, so evaluating the same event again (a replay after
//! a crash) yields the same key. [`EffectWriter::commit`] then, in one store transaction per
//! batch and in order:
//!
//! 1. skips effects whose key is already logged (`replayed`);
//! 2. de-duplicates against the subject's current state in the effect's mode: a label the
//!    subject has, a tag set it has, an open report with the same reason, a takedown already
//!    made, a flag already set (`deduplicated`, not logged);
//! 3. checks live effects against the verb's daily quota (UTC day of the event time): over it,
//!    the effect is logged with outcome `over_quota` and not applied;
//! 4. logs the effect (`applied`, or `shadow` for shadow rules: logged, never applied) and
//!    updates subject state and quota usage.
//!
//! Sinks read the log, never the evaluation: a stalled sink cannot slow evaluation or grow
//! memory, only fall behind in the log.

use crate::metrics::Metrics;
use crate::state::Accounts;
use sha2::{Digest, Sha256};
use skywarden_atproto::event::{Event, EventBody};
use skywarden_rules::action::{Action, Subject, Verb};
use skywarden_rules::{Firing, Mode};
use skywarden_store::{NewEffect, Store, StoreError};
use std::collections::BTreeMap;

/// An action waiting to be logged.
#[derive(Debug, Clone)]
pub struct PendingEffect {
    /// The log entry, outcome still to be decided.
    pub effect: NewEffect,
    /// The action (for state updates).
    pub action: Action,
}

/// How one pending effect ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Logged and to be carried out by sinks.
    Applied,
    /// Logged for a shadow rule; never carried out.
    Shadow,
    /// Logged, not carried out: the verb's daily quota is used up.
    OverQuota,
    /// Not logged: the subject already is in the state the action asks for.
    Deduplicated,
    /// Not logged again: the same effect (same idempotency key) is already in the log.
    Replayed,
}

impl Outcome {
    /// The outcome's name in metrics and the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Shadow => "shadow",
            Outcome::OverQuota => "over_quota",
            Outcome::Deduplicated => "deduplicated",
            Outcome::Replayed => "replayed",
        }
    }
}

/// The identity of an event independent of the source's cursor numbering where possible: the
/// commit's rev for commits (unique per repo), kind and time otherwise.
fn event_id(event: &Event) -> String {
    match &event.body {
        EventBody::Commit(c) => format!("commit:{}", c.rev),
        EventBody::Sync { rev } => format!("sync:{rev}"),
        other => format!("{}:{}:{}", other.kind(), event.time, event.cursor),
    }
}

/// The subject's log form: a DID or an AT-URI.
pub fn subject_string(subject: &Subject) -> &str {
    match subject {
        Subject::Account { did } => did,
        Subject::Record { uri, .. } => uri,
    }
}

/// Pending effects for the firings of one unit (`unit` is the op index, 0 for non-commits).
pub fn pending(
    event: &Event,
    unit: usize,
    now: i64,
    firings: &[Firing],
    out: &mut Vec<PendingEffect>,
) {
    if firings.is_empty() {
        return;
    }
    let id = event_id(event);
    for firing in firings {
        for (i, action) in firing.actions.iter().enumerate() {
            let mut h = Sha256::new();
            for part in [
                event.did.as_str(),
                &id,
                &unit.to_string(),
                &firing.rule_name,
                &i.to_string(),
            ] {
                h.update(part.as_bytes());
                h.update([0]);
            }
            let key: String = h.finalize()[..16]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let mut json = action.to_json();
            if let Some(o) = json.as_object_mut() {
                o.insert("event".into(), event_ref(event, unit));
            }
            out.push(PendingEffect {
                effect: NewEffect {
                    idempotency_key: key,
                    event_time: now,
                    cursor: event.cursor,
                    did: event.did.clone(),
                    rule: action.rule.clone(),
                    ruleset_version: action.ruleset_version.clone(),
                    mode: action.mode.as_str().into(),
                    verb: action.verb.name().into(),
                    subject: subject_string(&action.subject).into(),
                    outcome: String::new(),
                    action: json.to_string(),
                },
                action: action.clone(),
            });
        }
    }
}

fn event_ref(event: &Event, unit: usize) -> serde_json::Value {
    let mut v = serde_json::json!({
        "did": event.did,
        "cursor": event.cursor,
        "time": event.time,
        "kind": event.body.kind(),
    });
    if let EventBody::Commit(c) = &event.body
        && let Some(op) = c.ops.get(unit)
    {
        v["uri"] = op.uri(&event.did).into();
        v["action"] = op.action.as_str().into();
        // The record as the rule saw it: evidence for moderators, even once it is deleted.
        if let (Some(cid), Some(record)) = (&op.cid, &op.record) {
            v["cid"] = cid.to_string().into();
            v["record"] = record.to_json();
        }
    }
    v
}

/// Daily quotas per verb (`label`, `takedown`, ...): live effects beyond them are logged as
/// `over_quota` and not applied.
pub type Quotas = BTreeMap<String, i64>;

/// Applies effects to the store.
pub struct EffectWriter {
    store: Store,
    quotas: Quotas,
}

const DAY_MICROS: i64 = 86_400_000_000;

impl EffectWriter {
    /// A writer over `store` with `quotas`.
    pub fn new(store: Store, quotas: Quotas) -> Self {
        EffectWriter { store, quotas }
    }

    /// Commits a batch of pending effects in one transaction, returning each one's outcome
    /// (in order). Applied live label and tag changes on accounts are mirrored into
    /// `accounts` after the commit, so later events' rules see them.
    pub async fn commit(
        &self,
        batch: &[PendingEffect],
        accounts: &Accounts,
        metrics: &Metrics,
        logged_at: i64,
    ) -> Result<Vec<Outcome>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.store.begin().await?;
        let mut outcomes = Vec::with_capacity(batch.len());
        for p in batch {
            let e = &p.effect;
            if tx.effect_logged(&e.idempotency_key).await? {
                outcomes.push(Outcome::Replayed);
                continue;
            }
            let mode = e.mode.as_str();
            let subject = e.subject.as_str();
            let changes = state_changes(&p.action.verb);
            let mut needed = false;
            for (kind, value, present) in &changes {
                if tx.has_state(mode, subject, kind, value).await? != *present {
                    needed = true;
                }
            }
            if !changes.is_empty() && !needed {
                outcomes.push(Outcome::Deduplicated);
                continue;
            }
            let outcome = if p.action.mode == Mode::Shadow {
                Outcome::Shadow
            } else if let Some(&limit) = self.quotas.get(&e.verb)
                && tx
                    .quota_used(e.event_time.div_euclid(DAY_MICROS), &e.verb)
                    .await?
                    >= limit
            {
                Outcome::OverQuota
            } else {
                Outcome::Applied
            };
            if outcome != Outcome::OverQuota {
                if outcome == Outcome::Applied && self.quotas.contains_key(&e.verb) {
                    tx.use_quota(e.event_time.div_euclid(DAY_MICROS), &e.verb)
                        .await?;
                }
                for (kind, value, present) in &changes {
                    if *present {
                        tx.set_state(mode, subject, kind, value, e.event_time)
                            .await?;
                    } else {
                        tx.clear_state(mode, subject, kind, value).await?;
                    }
                }
            }
            let mut logged = e.clone();
            logged.outcome = outcome.as_str().into();
            tx.insert_effect(&logged, logged_at).await?;
            outcomes.push(outcome);
        }
        tx.commit().await?;
        for (p, outcome) in batch.iter().zip(&outcomes) {
            metrics.action(p.action.verb.name(), outcome.as_str());
            if *outcome == Outcome::OverQuota {
                tracing::warn!(verb = p.action.verb.name(), rule = %p.action.rule, "daily quota reached: effect logged as over_quota, not applied");
            }
            if *outcome != Outcome::Applied {
                continue;
            }
            tracing::info!(
                target: "skywarden::action",
                rule = %p.action.rule,
                version = %p.action.ruleset_version,
                verb = p.action.verb.name(),
                subject = %p.effect.subject,
                did = %p.effect.did,
                cursor = p.effect.cursor,
                explanation = %explanation(&p.action),
                "action"
            );
            if let Subject::Account { did } = &p.action.subject {
                for (kind, value, present) in state_changes(&p.action.verb) {
                    accounts.set_value(did, kind, &value, present);
                }
            }
        }
        Ok(outcomes)
    }
}

fn explanation(action: &Action) -> String {
    let map: serde_json::Map<String, serde_json::Value> = action
        .explanation
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into()))
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// The subject-state changes an action makes: `(kind, value, present afterwards)`. Empty for
/// verbs that are events rather than states (escalate, acknowledge, comment, notify): those
/// are only de-duplicated by idempotency key.
fn state_changes(verb: &Verb) -> Vec<(&'static str, String, bool)> {
    match verb {
        Verb::Label { value, negate, .. } => vec![("label", value.clone(), !negate)],
        Verb::Tag { tags } => tags.iter().map(|t| ("tag", t.clone(), true)).collect(),
        Verb::Flag { value } => vec![("flag", value.clone(), true)],
        Verb::Report { reason, .. } => vec![("report", reason.clone(), true)],
        Verb::Takedown { .. } => vec![("takedown", String::new(), true)],
        Verb::Escalate { .. }
        | Verb::Acknowledge { .. }
        | Verb::Comment { .. }
        | Verb::Notify { .. } => Vec::new(),
    }
}

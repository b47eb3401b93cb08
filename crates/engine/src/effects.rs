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
//! The batch reads what it needs (logged keys, the subjects' state, quota usage) in a few
//! statements up front and writes with multi-row statements at the end; in between, each
//! effect is decided on that overlaid with what the effects before it in the batch changed,
//! so the outcomes are those of one effect at a time.
//!
//! Sinks read the log, never the evaluation: a stalled sink cannot slow evaluation or grow
//! memory, only fall behind in the log.

use crate::metrics::Metrics;
use crate::state::Accounts;
use sha2::{Digest, Sha256};
use skywarden_atproto::event::{Event, EventBody};
use skywarden_rules::action::{Action, Subject, Verb};
use skywarden_rules::{Firing, Mode};
use skywarden_store::{NewEffect, StateValue, Store, StoreError};
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

/// An action waiting to be logged.
#[derive(Debug, Clone)]
pub struct PendingEffect {
    /// The log entry, outcome still to be decided; its `action` JSON is rendered only if the
    /// effect is logged (most de-duplicated effects never need it).
    pub effect: NewEffect,
    /// The action (for state updates).
    pub action: Action,
    /// The event that fired it, and the unit (op index) within it.
    pub event: Arc<Event>,
    /// The op index, 0 for non-commits.
    pub unit: usize,
}

impl PendingEffect {
    /// The logged `action` JSON: the action with its explanation, and the event it came from
    /// (with the record as the rule saw it).
    pub fn action_json(&self) -> String {
        #[derive(serde::Serialize)]
        struct Logged<'a> {
            #[serde(flatten)]
            action: &'a Action,
            event: EventRef<'a>,
        }
        let logged = Logged {
            action: &self.action,
            event: event_ref(&self.event, self.unit),
        };
        serde_json::to_string(&logged).expect("an action always serializes")
    }
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

/// States a subject never leaves once in them: flags, tags, reports and takedowns (only
/// labels are ever cleared, by a negating label). The writer records here the states it
/// commits or finds in the store, and workers drop an action whose every state the subject is
/// already in before it becomes a pending effect: the writer would only de-duplicate it, after
/// a key, a log lookup and a state lookup. Entries are 128-bit hashes of `(mode, subject,
/// kind, value)`; at [`SettledStates::CAPACITY`] the set starts over, since it is only a
/// shortcut (the writer still de-duplicates whatever reaches it).
#[derive(Default)]
pub struct SettledStates {
    known: std::sync::RwLock<HashSet<u128>>,
}

impl SettledStates {
    /// Entries kept before the set starts over (about 16 bytes each, plus the table).
    pub const CAPACITY: usize = 1 << 20;

    /// Whether the subject of `action` is already in every state the action asks for (false
    /// for actions that change no state, and for labels).
    pub fn covers(&self, action: &Action) -> bool {
        let known = self.known.read().unwrap_or_else(|e| e.into_inner());
        let mut any = false;
        let all = settled_keys(action, |key| {
            any = true;
            known.contains(&key)
        });
        any && all
    }

    /// Records that the subject of `action` is in every state the action asks for.
    fn insert(&self, action: &Action) {
        let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
        if known.len() >= Self::CAPACITY {
            known.clear();
        }
        settled_keys(action, |key| {
            known.insert(key);
            true
        });
    }
}

/// Calls `f` with the key of each settled state `action` asks for, while `f` returns true;
/// returns whether every call did. Labels (which can be cleared) give no keys.
fn settled_keys(action: &Action, mut f: impl FnMut(u128) -> bool) -> bool {
    let mode = action.mode.as_str();
    let subject = subject_string(&action.subject);
    let mut key = |kind: &str, value: &str| {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for part in [mode, subject, kind, value] {
            h.update(part.as_bytes());
            h.update(&[0]);
        }
        f(h.digest128())
    };
    match &action.verb {
        Verb::Tag { tags } => tags.iter().all(|t| key("tag", t)),
        Verb::Flag { value } => key("flag", value),
        Verb::Report { reason, .. } => key("report", reason),
        Verb::Takedown { .. } => key("takedown", ""),
        Verb::Label { .. }
        | Verb::Escalate { .. }
        | Verb::Acknowledge { .. }
        | Verb::Comment { .. }
        | Verb::Notify { .. } => true,
    }
}

/// An event under evaluation, and the copy its pending effects share: made on the first
/// firing and reused by the event's later units, as most events fire nothing.
pub struct FiringEvent<'a> {
    event: &'a Event,
    shared: Option<Arc<Event>>,
}

impl<'a> FiringEvent<'a> {
    /// `event`, not yet copied.
    pub fn new(event: &'a Event) -> Self {
        FiringEvent {
            event,
            shared: None,
        }
    }

    fn shared(&mut self) -> Arc<Event> {
        let event = self.event;
        self.shared
            .get_or_insert_with(|| Arc::new(event.clone()))
            .clone()
    }
}

/// Pending effects for the firings of one unit (`unit` is the op index, 0 for non-commits).
/// The firings' actions move into the pending effects; `firings` is left empty. An action
/// whose states the subject is known to be in already ([`SettledStates::covers`]) is counted
/// as `deduplicated` here and goes no further.
pub fn pending(
    firing_event: &mut FiringEvent<'_>,
    unit: usize,
    now: i64,
    firings: &mut Vec<Firing>,
    settled: &SettledStates,
    metrics: &Metrics,
    out: &mut Vec<PendingEffect>,
) {
    if firings.is_empty() {
        return;
    }
    let event = firing_event.shared();
    let id = event_id(&event);
    let unit_digits = unit.to_string();
    let mut position = String::new();
    for firing in firings.drain(..) {
        for (i, action) in firing.actions.into_iter().enumerate() {
            if settled.covers(&action) {
                metrics.action(action.verb.name(), Outcome::Deduplicated.as_str());
                continue;
            }
            position.clear();
            // Infallible: writing to a String.
            let _ = write!(position, "{i}");
            let mut h = Sha256::new();
            for part in [
                event.did.as_str(),
                &id,
                &unit_digits,
                &firing.rule_name,
                &position,
            ] {
                h.update(part.as_bytes());
                h.update([0]);
            }
            let mut key = String::with_capacity(32);
            crate::push_hex(&mut key, &h.finalize()[..16]);
            out.push(PendingEffect {
                effect: NewEffect {
                    idempotency_key: key,
                    event_time: now,
                    cursor: event.cursor,
                    did: event.did.to_string(),
                    rule: action.rule.clone(),
                    ruleset_version: action.ruleset_version.clone(),
                    mode: action.mode.as_str().into(),
                    verb: action.verb.name().into(),
                    subject: subject_string(&action.subject).into(),
                    outcome: String::new(),
                    action: String::new(),
                },
                action,
                event: event.clone(),
                unit,
            });
        }
    }
}

/// The event an effect came from, as logged with it.
#[derive(serde::Serialize)]
struct EventRef<'a> {
    did: &'a str,
    cursor: i64,
    time: &'a str,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cid: Option<String>,
    /// The record as the rule saw it: evidence for moderators, even once it is deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<skywarden_atproto::tree::Value<'a>>,
}

fn event_ref(event: &Event, unit: usize) -> EventRef<'_> {
    let mut r = EventRef {
        did: &event.did,
        cursor: event.cursor,
        time: &event.time,
        kind: event.body.kind(),
        uri: None,
        action: None,
        cid: None,
        record: None,
    };
    if let EventBody::Commit(c) = &event.body
        && let Some(op) = c.ops.get(unit)
    {
        r.uri = Some(op.uri(&event.did));
        r.action = Some(op.action.as_str());
        if let (Some(cid), Some(record)) = (&op.cid, &op.record) {
            r.cid = Some(cid.to_string());
            r.record = Some(record.value());
        }
    }
    r
}

/// Daily quotas per verb (`label`, `takedown`, ...): live effects beyond them are logged as
/// `over_quota` and not applied.
pub type Quotas = BTreeMap<String, i64>;

/// Applies effects to the store.
pub struct EffectWriter {
    store: Store,
    quotas: Quotas,
    settled: Arc<SettledStates>,
}

const DAY_MICROS: i64 = 86_400_000_000;

impl EffectWriter {
    /// A writer over `store` with `quotas`.
    pub fn new(store: Store, quotas: Quotas) -> Self {
        EffectWriter {
            store,
            quotas,
            settled: Arc::default(),
        }
    }

    /// The states this writer has seen subjects settle into, for the workers' [`pending`].
    pub fn settled(&self) -> Arc<SettledStates> {
        self.settled.clone()
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
        // What the batch needs from the store, read up front in a few statements; the loop
        // then decides on that and on what the batch itself changed (effects earlier in a
        // batch de-duplicate later ones, as they would one transaction at a time).
        let keys: Vec<&str> = batch
            .iter()
            .map(|p| p.effect.idempotency_key.as_str())
            .collect();
        let mut logged = tx.logged_keys(&keys).await?;
        let mut state = BatchState::default();
        let mut subjects_by_mode: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for p in batch {
            subjects_by_mode
                .entry(&p.effect.mode)
                .or_default()
                .push(&p.effect.subject);
        }
        for (mode, mut subjects) in subjects_by_mode {
            subjects.sort_unstable();
            subjects.dedup();
            for (subject, kind, value) in tx.states_of(mode, &subjects).await? {
                state
                    .stored
                    .insert((mode.to_string(), subject, kind, value));
            }
        }
        let mut quota_used: BTreeMap<(i64, &str), (i64, i64)> = BTreeMap::new();
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut to_log = Vec::with_capacity(batch.len());
        for p in batch {
            let e = &p.effect;
            if logged.contains(&e.idempotency_key) {
                outcomes.push(Outcome::Replayed);
                continue;
            }
            let changes = state_changes(&p.action.verb);
            let needed = changes.iter().any(|(kind, value, present)| {
                state.has(&e.mode, &e.subject, kind, value) != *present
            });
            if !changes.is_empty() && !needed {
                outcomes.push(Outcome::Deduplicated);
                continue;
            }
            let day = e.event_time.div_euclid(DAY_MICROS);
            let limit = self.quotas.get(&e.verb).copied();
            let outcome = if p.action.mode == Mode::Shadow {
                Outcome::Shadow
            } else if let Some(limit) = limit {
                let used = match quota_used.get_mut(&(day, e.verb.as_str())) {
                    Some(used) => used,
                    None => {
                        let stored = tx.quota_used(day, &e.verb).await?;
                        quota_used
                            .entry((day, e.verb.as_str()))
                            .or_insert((stored, 0))
                    }
                };
                if used.0 + used.1 >= limit {
                    Outcome::OverQuota
                } else {
                    used.1 += 1;
                    Outcome::Applied
                }
            } else {
                Outcome::Applied
            };
            if outcome != Outcome::OverQuota {
                for (kind, value, present) in &changes {
                    state.set(&e.mode, &e.subject, kind, value, *present, e.event_time);
                }
            }
            logged.insert(e.idempotency_key.clone());
            let mut entry = e.clone();
            entry.outcome = outcome.as_str().into();
            entry.action = p.action_json();
            to_log.push(entry);
            outcomes.push(outcome);
        }
        for ((day, verb), (_, added)) in &quota_used {
            if *added > 0 {
                tx.add_quota(*day, verb, *added).await?;
            }
        }
        let mut puts = Vec::new();
        for ((mode, subject, kind, value), change) in &state.changed {
            match change {
                Some(since) => puts.push(StateValue {
                    mode,
                    subject,
                    kind,
                    value,
                    since: *since,
                }),
                None => {
                    tx.clear_state(mode, subject, kind, value).await?;
                }
            }
        }
        tx.put_states(&puts).await?;
        tx.insert_effects(&to_log.iter().collect::<Vec<_>>(), logged_at)
            .await?;
        tx.commit().await?;
        for (p, outcome) in batch.iter().zip(&outcomes) {
            metrics.action(p.action.verb.name(), outcome.as_str());
            if matches!(
                outcome,
                Outcome::Applied | Outcome::Shadow | Outcome::Deduplicated
            ) {
                self.settled.insert(&p.action);
            }
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

/// Subject state as a batch sees it: what the store had, overlaid with what the batch changed.
#[derive(Default)]
struct BatchState {
    /// `(mode, subject, kind, value)` rows in the store when the batch began.
    stored: HashSet<(String, String, String, String)>,
    /// What the batch changed: `Some(since)` given, `None` taken away.
    changed: BTreeMap<(String, String, String, String), Option<i64>>,
}

impl BatchState {
    fn has(&self, mode: &str, subject: &str, kind: &str, value: &str) -> bool {
        let key = (
            mode.to_string(),
            subject.to_string(),
            kind.to_string(),
            value.to_string(),
        );
        match self.changed.get(&key) {
            Some(change) => change.is_some(),
            None => self.stored.contains(&key),
        }
    }

    /// Gives or takes a value. Giving one the subject has keeps its `since`.
    fn set(&mut self, mode: &str, subject: &str, kind: &str, value: &str, present: bool, at: i64) {
        if present == self.has(mode, subject, kind, value) {
            return;
        }
        let key = (
            mode.to_string(),
            subject.to_string(),
            kind.to_string(),
            value.to_string(),
        );
        if present {
            self.changed.insert(key, Some(at));
        } else if self.stored.contains(&key) {
            self.changed.insert(key, None);
        } else {
            // Given and taken within the batch: nothing to write.
            self.changed.remove(&key);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn effect(key: &str, subject: &str, verb: Verb, mode: Mode) -> PendingEffect {
        let action = Action {
            verb,
            subject: Subject::Account {
                did: subject.into(),
            },
            rule: "r".into(),
            ruleset_version: "v".into(),
            mode,
            explanation: Default::default(),
        };
        PendingEffect {
            effect: NewEffect {
                idempotency_key: key.into(),
                event_time: 5 * DAY_MICROS + 1,
                cursor: 1,
                did: subject.into(),
                rule: "r".into(),
                ruleset_version: "v".into(),
                mode: mode.as_str().into(),
                verb: action.verb.name().into(),
                subject: subject.into(),
                outcome: String::new(),
                action: String::new(),
            },
            action,
            event: Arc::new(Event {
                cursor: 1,
                did: subject.into(),
                time: "2026-12-01T00:00:00Z".into(),
                body: EventBody::Identity { handle: None },
            }),
            unit: 0,
        }
    }

    fn label(value: &str, negate: bool) -> Verb {
        Verb::Label {
            value: value.into(),
            negate,
            expires_in: None,
        }
    }

    fn flag() -> Verb {
        Verb::Flag { value: "f".into() }
    }

    /// Idempotency keys must never change between releases: a restart replays events after
    /// the last checkpoint, and only equal keys keep their effects from being logged twice.
    /// The expected keys are SHA-256 (Python's `hashlib`) of the NUL-terminated parts.
    #[test]
    fn idempotency_keys_are_stable() {
        let event = Arc::new(Event {
            cursor: 1,
            did: "did:plc:a".into(),
            time: "2026-12-01T00:00:00Z".into(),
            body: EventBody::Identity { handle: None },
        });
        let firing = |actions: usize| Firing {
            rule: 0,
            rule_name: "spam-ring".into(),
            mode: Mode::Live,
            explanation: Default::default(),
            actions: (0..actions)
                .map(|_| effect("", "did:plc:a", flag(), Mode::Live).action)
                .collect(),
        };
        let (settled, metrics) = (SettledStates::default(), Metrics::new(1));
        let mut out = Vec::new();
        let mut firings = vec![firing(2)];
        let mut shared = FiringEvent::new(&event);
        pending(
            &mut shared,
            0,
            1,
            &mut firings,
            &settled,
            &metrics,
            &mut out,
        );
        assert!(firings.is_empty());
        let mut more = vec![firing(1)];
        pending(&mut shared, 12, 1, &mut more, &settled, &metrics, &mut out);
        // One copy of the event, shared by every effect of its units.
        assert!(out.iter().all(|p| Arc::ptr_eq(&p.event, &out[0].event)));
        let keys: Vec<&str> = out
            .iter()
            .map(|p| p.effect.idempotency_key.as_str())
            .collect();
        assert_eq!(
            keys,
            [
                "7881ed6f3a9626d53eb3cd2a054f88ac",
                "41650110a5d44f6ce8ab89dfbf8d60fa",
                "400f059f3216e3672ebe99c1c245bb11"
            ]
        );
    }

    /// One batch decides each effect on what the store had and what the effects before it in
    /// the batch did, exactly as one transaction per effect would.
    #[tokio::test]
    async fn effects_in_one_batch_see_each_other() {
        let store = Store::open_in_memory().await.unwrap();
        let writer = EffectWriter::new(store.clone(), Quotas::from([("flag".to_string(), 2)]));
        let (accounts, metrics) = (Accounts::new(1), Metrics::new(1));
        let first = [
            effect("k1", "did:a", label("spam", false), Mode::Live),
            // The same key again: a replay within the batch.
            effect("k1", "did:a", label("spam", false), Mode::Live),
            // The label was just given: de-duplicated.
            effect("k2", "did:a", label("spam", false), Mode::Live),
            // The same label in shadow mode is another state.
            effect("k3", "did:a", label("spam", false), Mode::Shadow),
            // Taken away, then given again: both apply.
            effect("k4", "did:a", label("spam", true), Mode::Live),
            effect("k5", "did:a", label("spam", false), Mode::Live),
            // Given and taken within the batch: applied, and nothing stays.
            effect("k6", "did:b", label("rude", false), Mode::Live),
            effect("k7", "did:b", label("rude", true), Mode::Live),
            // A quota of 2 flags a day, over three subjects.
            effect("k8", "did:a", flag(), Mode::Live),
            effect("k9", "did:b", flag(), Mode::Live),
            effect("k10", "did:c", flag(), Mode::Live),
        ];
        let outcomes = writer.commit(&first, &accounts, &metrics, 1).await.unwrap();
        use Outcome::*;
        assert_eq!(
            outcomes,
            [
                Applied,
                Replayed,
                Deduplicated,
                Shadow,
                Applied,
                Applied,
                Applied,
                Applied,
                Applied,
                Applied,
                OverQuota
            ]
        );
        let values = |mode: &'static str, subject: &'static str, kind: &'static str| {
            let store = store.clone();
            async move { store.subject_values(mode, subject, kind).await.unwrap() }
        };
        assert_eq!(values("live", "did:a", "label").await, ["spam"]);
        assert_eq!(values("shadow", "did:a", "label").await, ["spam"]);
        assert!(values("live", "did:b", "label").await.is_empty());
        assert!(values("live", "did:c", "flag").await.is_empty());
        // Everything but the replay and the duplicate is logged, in batch order.
        let logged: Vec<String> = store
            .effects_after(0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|r| format!("{}:{}", r.effect.idempotency_key, r.effect.outcome))
            .collect();
        assert_eq!(
            logged,
            [
                "k1:applied",
                "k3:shadow",
                "k4:applied",
                "k5:applied",
                "k6:applied",
                "k7:applied",
                "k8:applied",
                "k9:applied",
                "k10:over_quota"
            ]
        );
        // The next batch starts from what the first one stored: the key, the state, the quota.
        let second = [
            effect("k1", "did:a", label("spam", false), Mode::Live),
            effect("k11", "did:a", label("spam", false), Mode::Live),
            effect("k12", "did:d", flag(), Mode::Live),
        ];
        let outcomes = writer
            .commit(&second, &accounts, &metrics, 2)
            .await
            .unwrap();
        assert_eq!(outcomes, [Replayed, Deduplicated, OverQuota]);
    }

    /// What the writer commits or finds settles: later actions asking only for settled states
    /// stop in `pending`. Labels never settle (a negation clears them), nor do over-quota
    /// effects, shadow states cover only shadow actions, and a tag set is covered only whole.
    #[tokio::test]
    async fn settled_states_stop_actions_before_the_writer() {
        let store = Store::open_in_memory().await.unwrap();
        let writer = EffectWriter::new(store, Quotas::from([("report".to_string(), 1)]));
        let (accounts, metrics) = (Accounts::new(1), Metrics::new(1));
        let settled = writer.settled();
        let tag = |tags: &[&str]| Verb::Tag {
            tags: tags.iter().map(|t| t.to_string()).collect(),
        };
        let report = |reason: &str| Verb::Report {
            reason: reason.into(),
            comment: String::new(),
        };
        let batch = [
            effect("k1", "did:a", flag(), Mode::Live),
            effect("k2", "did:a", label("spam", false), Mode::Live),
            effect("k3", "did:a", tag(&["x"]), Mode::Shadow),
            effect("k4", "did:a", report("r1"), Mode::Live),
            // Over the daily quota of one report: not a state the subject is in.
            effect("k5", "did:b", report("r1"), Mode::Live),
        ];
        writer.commit(&batch, &accounts, &metrics, 1).await.unwrap();
        let covers = |verb: Verb, mode: Mode, subject: &str| {
            settled.covers(&effect("k", subject, verb, mode).action)
        };
        assert!(covers(flag(), Mode::Live, "did:a"));
        assert!(!covers(flag(), Mode::Shadow, "did:a"));
        assert!(!covers(flag(), Mode::Live, "did:b"));
        assert!(!covers(label("spam", false), Mode::Live, "did:a"));
        assert!(covers(tag(&["x"]), Mode::Shadow, "did:a"));
        assert!(!covers(tag(&["x", "y"]), Mode::Shadow, "did:a"));
        assert!(covers(report("r1"), Mode::Live, "did:a"));
        assert!(!covers(report("r1"), Mode::Live, "did:b"));
        assert!(!covers(report("r2"), Mode::Live, "did:a"));

        // In `pending`, the covered flag goes no further; the label does.
        let event = effect("k", "did:a", flag(), Mode::Live).event;
        let action = |verb: Verb| effect("k", "did:a", verb, Mode::Live).action;
        let mut firings = vec![Firing {
            rule: 0,
            rule_name: "r".into(),
            mode: Mode::Live,
            explanation: Default::default(),
            actions: vec![action(flag()), action(label("spam", false))],
        }];
        let mut out = Vec::new();
        let mut shared = FiringEvent::new(&event);
        pending(
            &mut shared,
            0,
            1,
            &mut firings,
            &settled,
            &metrics,
            &mut out,
        );
        let verbs: Vec<&str> = out.iter().map(|p| p.action.verb.name()).collect();
        assert_eq!(verbs, ["label"]);
    }
}

//! What follows from the logs.
//!
//! - [`run_engine_sink`]: the engine's applied `report`, `flag`, `tag`, `escalate`,
//!   `takedown`, `acknowledge`, `comment`, `label` and `negate_label` effects become
//!   moderation events created by the service's DID, with the rule's explanation in the
//!   comment and a `modTool` naming the rule, so moderators see why in the queue. Each event's
//!   `externalId` is the effect's idempotency key: re-running the sink files nothing twice.
//! - Event sinks ([`EventSink`], run by [`run_event_sink`]) read the moderation event log
//!   from their own cursor, at least once, retrying with backoff:
//!   [`LabelEvents`] signs the labels moderators apply (and `!takedown` for their takedowns;
//!   the engine's own labels already come from the label sink), [`PdsEnforcement`] applies
//!   takedowns on a PDS through `com.atproto.admin.updateSubjectStatus`, and
//!   [`OzoneForwarder`] files the engine's events on a remote Ozone (`emitEvent`).

use crate::event::Kind;
use crate::metrics::ModerationMetrics;
use crate::service::{AutomatedEvent, Moderation};
use base64::Engine;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use skywarden_atproto::label::Label;
use skywarden_labeler::hub::LabelHub;
use skywarden_labeler::key::LabelerKey;
use skywarden_store::moderation::{
    EventSelection, ModEventRow, ModStore, RecordSnapshot, SubjectRef, ToolSelection,
};
use skywarden_store::{EffectRow, Store};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// The `modTool.name` of events the engine files.
pub const ENGINE_TOOL: &str = "skywarden/rules";
/// The engine sink's cursor in the effect store.
pub const ENGINE_CURSOR: &str = "moderation";
/// The most effects one pass of the engine sink files (in one transaction).
pub const ENGINE_PASS: u32 = 1000;
/// How long the engine sink waits after a pass that drained the effect log. Filing costs
/// mostly index pages written per transaction (the queue's keys are random, so a few events
/// dirty as many pages as many events do): letting effects gather for a quarter of a second
/// files several writer commits' worth at once, at that much latency to the queue.
pub const ENGINE_LINGER: Duration = Duration::from_millis(250);

/// The parts of an effect's logged `action` JSON the engine sink reads, borrowed from it.
#[derive(serde::Deserialize)]
struct LoggedEffect<'a> {
    #[serde(default)]
    action: LoggedVerb<'a>,
    #[serde(borrow, default)]
    explanation: Option<&'a RawValue>,
    #[serde(borrow, default)]
    subject: LoggedSubject<'a>,
    /// The event, field by field: read for the record snapshot, and copied into
    /// `modTool.meta` (without the record when the snapshot keeps it).
    #[serde(borrow, default)]
    event: Option<BTreeMap<Cow<'a, str>, &'a RawValue>>,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct LoggedVerb<'a> {
    #[serde(borrow, default)]
    comment: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    report: Option<Cow<'a, str>>,
    #[serde(default)]
    tag: Option<Vec<Value>>,
    #[serde(borrow, default)]
    flag: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    label: Option<Cow<'a, str>>,
    #[serde(default)]
    expires_in_seconds: Option<i64>,
}

#[derive(serde::Deserialize, Default)]
struct LoggedSubject<'a> {
    #[serde(borrow, default)]
    did: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    uri: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    cid: Option<Cow<'a, str>>,
}

/// `modTool` of an engine event (fields in the order they have always been written).
#[derive(serde::Serialize)]
struct EngineTool<'a> {
    meta: EngineMeta<'a>,
    name: &'static str,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct EngineMeta<'a> {
    effect_id: i64,
    event: Option<BTreeMap<&'a str, &'a RawValue>>,
    explanation: Option<&'a RawValue>,
    idempotency_key: &'a str,
    rule: &'a str,
    ruleset_version: &'a str,
}

/// A string field of the logged event, if it is one.
fn event_str<'a>(event: &'a BTreeMap<Cow<'_, str>, &RawValue>, key: &str) -> Option<Cow<'a, str>> {
    serde_json::from_str(event.get(key)?.get()).ok()
}

/// The moderation event an applied effect asks for, if any (`Err`: why it cannot be one).
pub fn event_for_effect(row: &EffectRow) -> Result<Option<AutomatedEvent>, &'static str> {
    let e = &row.effect;
    if e.outcome != "applied" {
        return Ok(None);
    }
    let logged: LoggedEffect<'_> =
        serde_json::from_str(&e.action).map_err(|_| "malformed_effect")?;
    let a = &logged.action;
    let comment = a.comment.as_deref().unwrap_or("");
    let mut note = String::new();
    if !comment.is_empty() {
        note.push_str(comment);
        note.push_str("\n\n");
    }
    let _ = write!(
        note,
        "rule `{}` (ruleset {})",
        e.rule,
        short(&e.ruleset_version)
    );
    if let Some(raw) = logged.explanation {
        // Values the rule saw, rendered as strings; anything else reads as empty.
        let x: BTreeMap<Cow<'_, str>, Value> = serde_json::from_str(raw.get()).unwrap_or_default();
        for (k, v) in &x {
            let _ = write!(note, "\n{k}: {}", v.as_str().unwrap_or_default());
        }
    }
    let defs = |name: &str| format!("{}{name}", crate::event::DEFS);
    let event = match e.verb.as_str() {
        "report" => {
            let reason = a.report.as_deref().unwrap_or("");
            let reason = if crate::event::valid_reason_type(reason) {
                reason.to_string()
            } else {
                "com.atproto.moderation.defs#reasonOther".to_string()
            };
            json!({"$type": defs("modEventReport"), "reportType": reason, "comment": note, "isReporterMuted": false})
        }
        "takedown" => json!({"$type": defs("modEventTakedown"), "comment": note}),
        "escalate" => json!({"$type": defs("modEventEscalate"), "comment": note}),
        "acknowledge" => json!({"$type": defs("modEventAcknowledge"), "comment": note}),
        "comment" => json!({"$type": defs("modEventComment"), "comment": note}),
        "tag" => {
            let tags: Vec<Value> = a.tag.clone().unwrap_or_default();
            json!({"$type": defs("modEventTag"), "add": tags, "remove": [], "comment": note})
        }
        "flag" => {
            let flag = a.flag.as_deref().ok_or("malformed_effect")?;
            json!({"$type": defs("modEventTag"), "add": [format!("flag:{flag}")], "remove": [], "comment": note})
        }
        "label" | "negate_label" => {
            let value = a.label.as_deref().ok_or("malformed_effect")?;
            let (create, negate) = if e.verb == "label" {
                (vec![value], vec![])
            } else {
                (vec![], vec![value])
            };
            let mut ev = json!({"$type": defs("modEventLabel"), "createLabelVals": create, "negateLabelVals": negate, "comment": note});
            if let Some(secs) = a.expires_in_seconds {
                ev["durationInHours"] = ((secs + 3599) / 3600).into();
            }
            ev
        }
        _ => return Ok(None),
    };
    let subject = if let Some(uri) = &logged.subject.uri {
        let Some(cid) = &logged.subject.cid else {
            // A record subject without a version (a delete) cannot be a strongRef.
            return Err("record_without_cid");
        };
        SubjectRef {
            did: e.did.clone(),
            uri: Some(uri.to_string()),
            cid: Some(cid.to_string()),
        }
    } else {
        SubjectRef {
            did: logged.subject.did.as_deref().unwrap_or(&e.did).to_string(),
            uri: None,
            cid: None,
        }
    };
    let record = logged.event.as_ref().and_then(|ev| {
        let seen = event_str(ev, "uri")?;
        let cid = event_str(ev, "cid")?;
        let value = ev.get("record").filter(|r| r.get() != "null")?;
        (subject.uri.as_deref() == Some(&*seen)).then(|| RecordSnapshot {
            uri: seen.to_string(),
            cid: cid.to_string(),
            value: value.get().to_string(),
            indexed_at: event_str(ev, "time")
                .and_then(|t| crate::normalise_datetime("time", &t).ok())
                .unwrap_or_else(|| crate::datetime_ms(row.logged_at)),
        })
    });
    let tool = EngineTool {
        meta: EngineMeta {
            effect_id: row.id,
            event: logged.event.as_ref().map(|ev| {
                ev.iter()
                    .filter(|(k, _)| record.is_none() || *k != "record")
                    .map(|(k, v)| (k.as_ref(), *v))
                    .collect()
            }),
            explanation: logged.explanation,
            idempotency_key: &e.idempotency_key,
            rule: &e.rule,
            ruleset_version: &e.ruleset_version,
        },
        name: ENGINE_TOOL,
    };
    Ok(Some(AutomatedEvent {
        record,
        subject,
        event,
        mod_tool: serde_json::to_string(&tool).map_err(|_| "malformed_effect")?,
        external_id: format!("effect:{}", e.idempotency_key),
    }))
}

fn short(version: &str) -> &str {
    version.get(..12).unwrap_or(version)
}

/// One pass of the engine sink; returns whether a full batch was read.
pub async fn engine_pass(
    effects: &Store,
    moderation: &Moderation,
    batch: u32,
) -> Result<bool, String> {
    let cursor = effects
        .sink_cursor(ENGINE_CURSOR)
        .await
        .map_err(|e| e.to_string())?;
    let page = effects
        .applied_effects(cursor, batch, &[])
        .await
        .map_err(|e| e.to_string())?;
    let rows = &page.rows;
    // The whole pass is filed in one transaction: a commit per event would rewrite the
    // queue's index pages once per event.
    let mut filed = Vec::with_capacity(rows.len());
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        match event_for_effect(row) {
            Ok(Some(ev)) => {
                filed.push(row);
                events.push(ev);
            }
            Ok(None) => {}
            Err(reason) => {
                moderation.metrics().sink_skipped("engine", reason);
                tracing::warn!(effect = row.id, rule = %row.effect.rule, reason, "effect not filed as a moderation event");
            }
        }
    }
    if !events.is_empty() {
        let outcomes = moderation
            .emit_automated_batch(&events)
            .await
            .map_err(|e| e.to_string())?;
        for (row, outcome) in filed.iter().zip(outcomes) {
            if let Err(e) = outcome {
                moderation.metrics().sink_skipped("engine", "refused");
                tracing::warn!(effect = row.id, rule = %row.effect.rule, error = %e, "effect not filed as a moderation event");
            }
        }
    }
    if page.cursor > cursor {
        effects
            .set_sink_cursor(ENGINE_CURSOR, page.cursor)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(page.full)
}

/// Runs the engine sink until `shutdown`.
pub async fn run_engine_sink(
    effects: Store,
    moderation: Arc<Moderation>,
    wake: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
) {
    let metrics = moderation.metrics().clone();
    run_loop("engine", &metrics, wake, shutdown, ENGINE_LINGER, || {
        engine_pass(&effects, &moderation, ENGINE_PASS)
    })
    .await;
}

/// Runs `pass` until `shutdown`: again at once after a full page, after a pause (backoff) on
/// failure, and otherwise after `linger` once woken (or after a second).
async fn run_loop<F, Fut>(
    name: &str,
    metrics: &ModerationMetrics,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
    linger: Duration,
    mut pass: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, String>>,
{
    let mut failures = 0u32;
    loop {
        if *shutdown.borrow() {
            return;
        }
        // Registered before the pass, so a wake-up during it is not lost.
        let notified = wake.notified();
        match pass().await {
            Ok(true) => {
                failures = 0;
                continue;
            }
            Ok(false) if linger.is_zero() => failures = 0,
            Ok(false) => {
                failures = 0;
                tokio::select! {
                    _ = tokio::time::sleep(linger) => {}
                    _ = shutdown.changed() => return,
                }
            }
            Err(e) => {
                failures += 1;
                metrics.sink_failure(name);
                tracing::warn!(sink = name, error = %e, failures, "moderation sink failed; retrying");
                let pause = Duration::from_millis((100u64 << failures.min(9)).min(60_000));
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

/// The outcome of delivering one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Delivered, or nothing to do for this event.
    Done,
    /// Not deliverable (refused for good): counted and passed over.
    Skipped(&'static str),
    /// Failed for now: the sink stops and retries this event after a pause.
    Retry(String),
}

/// A boxed delivery future.
pub type DeliveryFuture<'a> = Pin<Box<dyn Future<Output = Delivery> + Send + 'a>>;

/// A consumer of the moderation event log.
pub trait EventSink: Send + Sync {
    /// The sink's name: its cursor and its metrics label.
    fn name(&self) -> &'static str;
    /// Delivers one event (must be idempotent: delivery is at least once).
    fn deliver<'a>(&'a self, event: &'a ModEventRow) -> DeliveryFuture<'a>;
    /// The events the sink is given (the store skips the rest); every event by default.
    fn selection(&self) -> EventSelection {
        EventSelection::default()
    }
}

/// One pass of an event sink; returns whether a full batch was read.
pub async fn event_pass(
    store: &dyn ModStore,
    sink: &dyn EventSink,
    metrics: &ModerationMetrics,
) -> Result<bool, String> {
    let name = sink.name();
    let cursor = store.cursor(name).await.map_err(|e| e.to_string())?;
    let selection = sink.selection();
    let page = store
        .events_for_sink(cursor, 100, &selection)
        .await
        .map_err(|e| e.to_string())?;
    let mut done = cursor;
    let mut result = Ok(page.full);
    for row in &page.rows {
        match sink.deliver(row).await {
            Delivery::Done => {}
            Delivery::Skipped(reason) => {
                metrics.sink_skipped(name, reason);
                tracing::warn!(
                    sink = name,
                    event = row.id,
                    reason,
                    "moderation event skipped"
                );
            }
            Delivery::Retry(e) => {
                result = Err(format!("event {}: {e}", row.id));
                break;
            }
        }
        done = row.id;
    }
    if result.is_ok() {
        // Everything up to the page's cursor was delivered or is not this sink's.
        done = done.max(page.cursor);
    }
    if done > cursor {
        store
            .set_cursor(name, done)
            .await
            .map_err(|e| e.to_string())?;
    }
    result
}

/// Runs an event sink until `shutdown`.
pub async fn run_event_sink(
    store: Arc<dyn ModStore>,
    sink: Arc<dyn EventSink>,
    metrics: Arc<ModerationMetrics>,
    wake: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
) {
    let name = sink.name();
    run_loop(
        name,
        &metrics.clone(),
        wake,
        shutdown,
        Duration::ZERO,
        || {
            let (store, sink, metrics) = (store.clone(), sink.clone(), metrics.clone());
            async move { event_pass(store.as_ref(), sink.as_ref(), &metrics).await }
        },
    )
    .await;
}

fn event_json(e: &ModEventRow) -> Value {
    serde_json::from_str(&e.event.event_json).unwrap_or(Value::Null)
}

/// Signs the labels of moderators' label, takedown and reverse-takedown events onto the
/// label stream. Each label is keyed by the event and value, so re-delivery appends nothing.
pub struct LabelEvents {
    /// The label stream.
    pub hub: Arc<LabelHub>,
    /// The signing key.
    pub key: Arc<LabelerKey>,
    /// The labeler's DID (`src`).
    pub labeler_did: String,
    /// Counts labels.
    pub metrics: Arc<ModerationMetrics>,
}

impl LabelEvents {
    fn labels(&self, e: &ModEventRow) -> Vec<(Label, String)> {
        let kind = Kind::from_type(&e.event.event_type);
        let ev = event_json(e);
        let subject = &e.event.subject;
        let cts = e.event.created_at.clone();
        let base = Label {
            ver: Some(1),
            src: self.labeler_did.clone(),
            uri: subject.key().to_string(),
            cid: subject.cid.clone(),
            val: String::new(),
            neg: false,
            cts: cts.clone(),
            exp: None,
            sig: None,
        };
        let exp = ev["durationInHours"].as_i64().filter(|h| *h > 0).map(|h| {
            let at = skywarden_atproto::syntax::Datetime::new(&cts)
                .map(|d| d.timestamp_micros())
                .unwrap_or(0);
            crate::datetime_ms(at + h * 3_600_000_000)
        });
        let mut out = Vec::new();
        let mut push = |val: &str, neg: bool, exp: Option<String>| {
            let label = Label {
                val: val.to_string(),
                neg,
                exp,
                ..base.clone()
            };
            out.push((
                label,
                format!("mod:{}:{val}:{}", e.id, if neg { "neg" } else { "add" }),
            ));
        };
        match kind {
            Some(Kind::Label) => {
                for v in &e.event.added_labels {
                    push(v, false, exp.clone());
                }
                for v in &e.event.removed_labels {
                    push(v, true, None);
                }
            }
            Some(Kind::Takedown) => push("!takedown", false, exp),
            Some(Kind::ReverseTakedown) => push("!takedown", true, None),
            _ => {}
        }
        out
    }
}

impl EventSink for LabelEvents {
    fn name(&self) -> &'static str {
        "labels"
    }

    fn selection(&self) -> EventSelection {
        EventSelection {
            types: [Kind::Label, Kind::Takedown, Kind::ReverseTakedown]
                .map(Kind::type_name)
                .to_vec(),
            // The engine's labels and takedowns are signed by the label sink from the effect log.
            tool: ToolSelection::Except(ENGINE_TOOL.to_string()),
        }
    }

    fn deliver<'a>(&'a self, e: &'a ModEventRow) -> DeliveryFuture<'a> {
        Box::pin(async move {
            // The engine's labels and takedowns are signed by the label sink from the effect log.
            if e.event.tool_name().as_deref() == Some(ENGINE_TOOL) {
                return Delivery::Done;
            }
            let mut new = Vec::new();
            for (label, key) in self.labels(e) {
                if label.validate().is_err() {
                    return Delivery::Skipped("invalid_label");
                }
                match skywarden_labeler::sink::signed(&self.key, label, Some(key)) {
                    Ok(l) => new.push(l),
                    Err(err) => return Delivery::Retry(err),
                }
            }
            if new.is_empty() {
                return Delivery::Done;
            }
            match self.hub.store().append(&new).await {
                Ok(seqs) => {
                    let n = seqs.iter().filter(|s| s.is_some()).count() as u64;
                    self.metrics.sink_delivered("labels", n);
                    self.hub.wake();
                    Delivery::Done
                }
                Err(err) => Delivery::Retry(err.to_string()),
            }
        })
    }
}

/// POSTs XRPC procedures to a service with its admin password (Basic `admin:<password>`),
/// without following redirects.
struct AdminClient {
    url: url::Url,
    password: String,
    client: reqwest::Client,
}

impl AdminClient {
    fn new(url: url::Url, password: String) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        AdminClient {
            url,
            password,
            client,
        }
    }

    /// `None` when the method's URL cannot be built from the base.
    async fn post(&self, method: &str, body: &Value) -> Option<reqwest::Result<reqwest::Response>> {
        let endpoint = self.url.join(&format!("/xrpc/{method}")).ok()?;
        Some(
            self.client
                .post(endpoint)
                .header("authorization", basic(&self.password))
                .json(body)
                .send()
                .await,
        )
    }
}

/// Classifies an HTTP outcome: 2xx done; 401, 403 (a wrong or missing admin password: fixed
/// by the operator, and no takedown may be lost meanwhile), 429 and 5xx retried; other 4xx
/// skipped (the PDS does not host the subject, or refuses it for good).
fn classify(result: reqwest::Result<reqwest::Response>, refused: &'static str) -> Delivery {
    match result {
        Ok(r) if r.status().is_success() => Delivery::Done,
        Ok(r) if matches!(r.status().as_u16(), 401 | 403 | 429) || r.status().is_server_error() => {
            Delivery::Retry(format!("HTTP {}", r.status()))
        }
        Ok(r) => {
            tracing::warn!(status = %r.status(), "enforcement refused");
            Delivery::Skipped(refused)
        }
        Err(e) => Delivery::Retry(e.to_string()),
    }
}

/// Applies takedowns and their reversals on a PDS the team administers, through
/// `com.atproto.admin.updateSubjectStatus` with the PDS admin password. The call sets a
/// state, so repeating it is harmless.
pub struct PdsEnforcement {
    pds: AdminClient,
    metrics: Arc<ModerationMetrics>,
}

impl PdsEnforcement {
    /// Enforcement on the PDS at `url` with its admin password (never logged).
    pub fn new(url: url::Url, admin_password: String, metrics: Arc<ModerationMetrics>) -> Self {
        PdsEnforcement {
            pds: AdminClient::new(url, admin_password),
            metrics,
        }
    }
}

fn basic(password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("admin:{password}"))
    )
}

impl EventSink for PdsEnforcement {
    fn name(&self) -> &'static str {
        "pds"
    }

    fn selection(&self) -> EventSelection {
        EventSelection {
            types: [Kind::Takedown, Kind::ReverseTakedown]
                .map(Kind::type_name)
                .to_vec(),
            tool: ToolSelection::Any,
        }
    }

    fn deliver<'a>(&'a self, e: &'a ModEventRow) -> DeliveryFuture<'a> {
        Box::pin(async move {
            let applied = match Kind::from_type(&e.event.event_type) {
                Some(Kind::Takedown) => true,
                Some(Kind::ReverseTakedown) => false,
                _ => return Delivery::Done,
            };
            let subject = &e.event.subject;
            let body = json!({
                "subject": crate::view::subject(subject),
                "takedown": {"applied": applied, "ref": format!("skywarden:{}", e.id)},
            });
            let Some(result) = self
                .pds
                .post("com.atproto.admin.updateSubjectStatus", &body)
                .await
            else {
                return Delivery::Skipped("bad_url");
            };
            let d = classify(result, "pds_refused");
            if d == Delivery::Done {
                self.metrics.sink_delivered("pds", 1);
                tracing::info!(
                    event = e.id,
                    subject = subject.key(),
                    applied,
                    "takedown enforced on the PDS"
                );
            }
            d
        })
    }
}

/// Files the engine's events on a remote Ozone (`tools.ozone.moderation.emitEvent`), for teams
/// that keep their Ozone: skywarden then does hepa's job. Uses the Ozone admin password;
/// each event carries `externalId` `skywarden:<id>`, so a repeat is refused by Ozone as a
/// duplicate and counted as delivered.
pub struct OzoneForwarder {
    ozone: AdminClient,
    created_by: String,
    metrics: Arc<ModerationMetrics>,
}

impl OzoneForwarder {
    /// A forwarder to the Ozone at `url` with its admin password (never logged); events are
    /// filed as `created_by` (skywarden's DID, a member of the Ozone team).
    pub fn new(
        url: url::Url,
        admin_password: String,
        created_by: String,
        metrics: Arc<ModerationMetrics>,
    ) -> Self {
        OzoneForwarder {
            ozone: AdminClient::new(url, admin_password),
            created_by,
            metrics,
        }
    }
}

impl EventSink for OzoneForwarder {
    fn name(&self) -> &'static str {
        "ozone"
    }

    fn selection(&self) -> EventSelection {
        EventSelection {
            types: Vec::new(),
            tool: ToolSelection::Only(ENGINE_TOOL.to_string()),
        }
    }

    fn deliver<'a>(&'a self, e: &'a ModEventRow) -> DeliveryFuture<'a> {
        Box::pin(async move {
            if e.event.tool_name().as_deref() != Some(ENGINE_TOOL) {
                return Delivery::Done;
            }
            let body = json!({
                "event": event_json(e),
                "subject": serde_json::from_str::<Value>(&e.event.subject_json).unwrap_or(Value::Null),
                "createdBy": self.created_by,
                "modTool": e.event.mod_tool.as_deref().and_then(|t| serde_json::from_str::<Value>(t).ok()),
                "externalId": format!("skywarden:{}", e.id),
            });
            let Some(result) = self
                .ozone
                .post("tools.ozone.moderation.emitEvent", &body)
                .await
            else {
                return Delivery::Skipped("bad_url");
            };
            match result {
                Ok(r) if r.status().as_u16() == 400 => {
                    let body: Value = r.json().await.unwrap_or(Value::Null);
                    if body["error"] == "DuplicateExternalId" {
                        Delivery::Done
                    } else {
                        tracing::warn!(event = e.id, error = %body["error"], "remote Ozone refused an event");
                        Delivery::Skipped("ozone_refused")
                    }
                }
                other => {
                    let d = classify(other, "ozone_refused");
                    if d == Delivery::Done {
                        self.metrics.sink_delivered("ozone", 1);
                    }
                    d
                }
            }
        })
    }
}

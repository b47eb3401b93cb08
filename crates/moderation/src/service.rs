//! The moderation service: one entry point per XRPC method, behind [`Moderation::call`].
//!
//! Every call is authenticated first ([`crate::auth`]), then checked against the caller's
//! role: reports need any authenticated caller; reading the queue, events, repos, records,
//! the team and sets needs a team member (triage and up); events need the role their type
//! requires ([`crate::event::Kind::required_role`]); set writes need a moderator; team writes
//! an admin. The operator's Basic credentials act as an admin whose DID is the service's.

use crate::auth::{self, Credentials, KeyResolver, Role};
use crate::event::{self, Context, Kind, Parsed};
use crate::metrics::ModerationMetrics;
use crate::sets::ListSets;
use crate::{XrpcError, datetime_ms, normalise_datetime, now_micros, view};
use serde_json::{Value, json};
use skywarden_atproto::syntax::{AtUri, Did, validate_cid_str};
use skywarden_store::labels::{LabelQuery, LabelStore, UriPattern};
use skywarden_store::moderation::{
    BatchEmit, Emitted, EventQuery, Member, ModEventRow, ModStore, NewModEvent, StatusCursor,
    StatusQuery, StatusSort, SubjectKind, SubjectRef, SubjectStatus, TransitionFn,
};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Looks up handles for views (`subjectRepoHandle`, `repoView.handle`).
pub trait Directory: Send + Sync {
    /// The handle of `did`, if known.
    fn handle<'a>(
        &'a self,
        did: &'a str,
    ) -> Pin<Box<dyn Future<Output = Option<String>> + Send + 'a>>;
}

/// Settings of the moderation service.
#[derive(Debug, Clone)]
pub struct ModerationConfig {
    /// This service's DID: the `aud` of service-auth tokens, and `createdBy` of the events the
    /// engine and the operator make.
    pub service_did: String,
    /// The operator's password for Basic `admin:<password>`; `None` disables it.
    pub admin_password: Option<String>,
    /// Reports one reporter may file per minute (a burst of as many is allowed).
    pub reports_per_minute: u32,
    /// Shown by `tools.ozone.server.getConfig`.
    pub pds_url: Option<String>,
    /// Shown by `tools.ozone.server.getConfig`.
    pub appview_url: Option<String>,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The caller's DID (the service's for the operator).
    pub did: String,
    /// The caller's team role (`None`: authenticated, not a member).
    pub role: Option<Role>,
    /// Authenticated with the operator's password.
    pub operator: bool,
}

/// A call's input: query parameters for queries, a JSON body for procedures.
#[derive(Debug, Clone)]
pub enum Input {
    /// Query parameters (repeated keys for arrays).
    Query(Vec<(String, String)>),
    /// A JSON body.
    Body(Value),
}

/// The methods served: whether each is a procedure (POST), and the least role that may call it
/// (`None`: any authenticated caller). `emitEvent` also checks the role its event type needs.
pub const METHODS: &[(&str, bool, Option<Role>)] = &[
    ("com.atproto.moderation.createReport", true, None),
    ("tools.ozone.moderation.emitEvent", true, Some(Role::Triage)),
    (
        "tools.ozone.moderation.queryStatuses",
        false,
        Some(Role::Triage),
    ),
    (
        "tools.ozone.moderation.queryEvents",
        false,
        Some(Role::Triage),
    ),
    ("tools.ozone.moderation.getEvent", false, Some(Role::Triage)),
    ("tools.ozone.moderation.getRepo", false, Some(Role::Triage)),
    (
        "tools.ozone.moderation.getRecord",
        false,
        Some(Role::Triage),
    ),
    ("tools.ozone.server.getConfig", false, Some(Role::Verifier)),
    ("tools.ozone.team.addMember", true, Some(Role::Admin)),
    ("tools.ozone.team.updateMember", true, Some(Role::Admin)),
    ("tools.ozone.team.deleteMember", true, Some(Role::Admin)),
    ("tools.ozone.team.listMembers", false, Some(Role::Triage)),
    ("tools.ozone.set.upsertSet", true, Some(Role::Moderator)),
    ("tools.ozone.set.addValues", true, Some(Role::Moderator)),
    ("tools.ozone.set.deleteValues", true, Some(Role::Moderator)),
    ("tools.ozone.set.deleteSet", true, Some(Role::Moderator)),
    ("tools.ozone.set.getValues", false, Some(Role::Triage)),
    ("tools.ozone.set.querySets", false, Some(Role::Triage)),
];

/// The moderation service.
pub struct Moderation {
    store: Arc<dyn ModStore>,
    keys: Arc<dyn KeyResolver>,
    directory: Arc<dyn Directory>,
    labels: Option<Arc<dyn LabelStore>>,
    sets: ListSets,
    config: ModerationConfig,
    limiter: Mutex<HashMap<String, (f64, i64)>>,
    metrics: Arc<ModerationMetrics>,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for Moderation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Moderation")
            .field("service_did", &self.config.service_did)
            .field("store", &self.store)
            .finish()
    }
}

/// What the engine (or any automated caller) files: an event with its origin.
#[derive(Debug, Clone)]
pub struct AutomatedEvent {
    /// The subject.
    pub subject: SubjectRef,
    /// The event object (`$type` included).
    pub event: Value,
    /// `modTool`, as JSON.
    pub mod_tool: String,
    /// De-duplicates re-runs (the effect's idempotency key).
    pub external_id: String,
    /// The record the event is about, as seen (kept for `getRecord`).
    pub record: Option<skywarden_store::moderation::RecordSnapshot>,
}

/// Parsed query parameters.
struct Params<'a>(&'a [(String, String)]);

impl Params<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name || k.strip_suffix("[]") == Some(name))
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn bool(&self, name: &str) -> Result<Option<bool>, XrpcError> {
        match self.get(name) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(v) => Err(XrpcError::invalid(format!(
                "{name}: `{v}` is not true or false"
            ))),
        }
    }

    fn int(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, XrpcError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => Err(XrpcError::invalid(format!(
                    "{name}: `{v}` is not an integer from {min} to {max}"
                ))),
            },
        }
    }

    fn datetime(&self, name: &str) -> Result<Option<String>, XrpcError> {
        self.get(name)
            .map(|v| normalise_datetime(name, v))
            .transpose()
    }

    fn refuse_unsupported(&self, names: &[&str]) -> Result<(), XrpcError> {
        for n in names {
            if self.get(n).is_some() {
                return Err(XrpcError::invalid(format!(
                    "parameter `{n}` is not supported by skywarden yet (see docs/moderation.md)"
                )));
            }
        }
        Ok(())
    }
}

fn str_field<'a>(body: &'a Value, name: &str) -> Result<&'a str, XrpcError> {
    body.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| XrpcError::invalid(format!("`{name}` (a string) is required")))
}

fn did_field(body: &Value, name: &str) -> Result<String, XrpcError> {
    let s = str_field(body, name)?;
    Did::new(s).map_err(|e| XrpcError::invalid(format!("`{name}`: {e}")))?;
    Ok(s.to_string())
}

/// Parses the subject union: a `repoRef` (account) or `strongRef` (record of a DID repo).
pub fn parse_subject(v: &Value) -> Result<(SubjectRef, Value), XrpcError> {
    let t = v.get("$type").and_then(Value::as_str).unwrap_or("");
    match t {
        "com.atproto.admin.defs#repoRef" => {
            let did = did_field(v, "did")
                .map_err(|e| XrpcError::invalid(format!("subject: {}", e.message)))?;
            let subject = SubjectRef {
                did,
                uri: None,
                cid: None,
            };
            Ok((subject.clone(), view::subject(&subject)))
        }
        "com.atproto.repo.strongRef" => {
            let uri = str_field(v, "uri")
                .map_err(|e| XrpcError::invalid(format!("subject: {}", e.message)))?;
            let cid = str_field(v, "cid")
                .map_err(|e| XrpcError::invalid(format!("subject: {}", e.message)))?;
            let at =
                AtUri::new(uri).map_err(|e| XrpcError::invalid(format!("subject uri: {e}")))?;
            validate_cid_str(cid).map_err(|e| XrpcError::invalid(format!("subject cid: {e}")))?;
            let did = at.authority().to_string();
            if Did::new(&did).is_err() || at.collection().is_none() || at.rkey().is_none() {
                return Err(XrpcError::invalid(
                    "subject uri: a record subject is at://<did>/<collection>/<rkey>",
                ));
            }
            let subject = SubjectRef {
                did,
                uri: Some(uri.to_string()),
                cid: Some(cid.to_string()),
            };
            Ok((subject.clone(), view::subject(&subject)))
        }
        "" => Err(XrpcError::invalid("subject: `$type` is required")),
        other => Err(XrpcError::invalid(format!(
            "subject: `{other}` is not served (com.atproto.admin.defs#repoRef or com.atproto.repo.strongRef)"
        ))),
    }
}

impl Moderation {
    /// A service over `store`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn ModStore>,
        keys: Arc<dyn KeyResolver>,
        directory: Arc<dyn Directory>,
        labels: Option<Arc<dyn LabelStore>>,
        sets: ListSets,
        config: ModerationConfig,
        metrics: Arc<ModerationMetrics>,
        wake: Arc<Notify>,
    ) -> Self {
        Moderation {
            store,
            keys,
            directory,
            labels,
            sets,
            config,
            limiter: Mutex::new(HashMap::new()),
            metrics,
            wake,
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn ModStore> {
        &self.store
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<ModerationMetrics> {
        &self.metrics
    }

    /// Signalled after every appended event (sinks wait on it).
    pub fn wake(&self) -> &Arc<Notify> {
        &self.wake
    }

    /// The service's DID.
    pub fn service_did(&self) -> &str {
        &self.config.service_did
    }

    /// Whether `method` is served, and whether it is a procedure.
    pub fn method(method: &str) -> Option<bool> {
        METHODS
            .iter()
            .find(|(m, ..)| *m == method)
            .map(|(_, p, _)| *p)
    }

    /// Runs one XRPC call: authenticates `authorization`, checks the role, runs the method.
    pub async fn call(
        &self,
        method: &str,
        authorization: Option<&str>,
        input: Input,
    ) -> Result<Value, XrpcError> {
        let result = self.dispatch(method, authorization, input).await;
        match &result {
            Ok(_) => self.metrics.request(method, 200, "ok"),
            Err(e) => self.metrics.request(method, e.status, &e.error),
        }
        result
    }

    async fn dispatch(
        &self,
        method: &str,
        authorization: Option<&str>,
        input: Input,
    ) -> Result<Value, XrpcError> {
        let (procedure, role) = METHODS
            .iter()
            .find(|(m, ..)| *m == method)
            .map(|(_, p, r)| (*p, *r))
            .ok_or_else(|| {
                XrpcError::new(
                    501,
                    "MethodNotImplemented",
                    format!("{method} is not served"),
                )
            })?;
        let caller = self.authenticate(authorization, method).await?;
        if let Some(role) = role {
            require(&caller, role)?;
        }
        let empty = Vec::new();
        let (params, body) = match (&input, procedure) {
            (Input::Query(q), false) => (Params(q), Value::Null),
            (Input::Body(b), true) => (Params(&empty), b.clone()),
            _ => {
                return Err(XrpcError::invalid(if procedure {
                    "this method is a procedure: POST a JSON body"
                } else {
                    "this method is a query: use GET with parameters"
                }));
            }
        };
        if procedure && !body.is_object() {
            return Err(XrpcError::invalid("the body must be a JSON object"));
        }
        match method {
            "com.atproto.moderation.createReport" => self.create_report(&caller, &body).await,
            "tools.ozone.moderation.emitEvent" => self.emit_event(&caller, &body).await,
            "tools.ozone.moderation.queryStatuses" => self.query_statuses(&params).await,
            "tools.ozone.moderation.queryEvents" => self.query_events(&params).await,
            "tools.ozone.moderation.getEvent" => self.get_event(&params).await,
            "tools.ozone.moderation.getRepo" => self.get_repo(&params).await,
            "tools.ozone.moderation.getRecord" => self.get_record(&params).await,
            "tools.ozone.server.getConfig" => Ok(self.get_config(&caller)),
            "tools.ozone.team.listMembers" => self.list_members(&params).await,
            "tools.ozone.team.addMember"
            | "tools.ozone.team.updateMember"
            | "tools.ozone.team.deleteMember" => {
                let out = self.team_write(&caller, method, &body).await?;
                self.audit(&caller, method, &body).await?;
                Ok(out)
            }
            "tools.ozone.set.getValues" | "tools.ozone.set.querySets" => {
                self.set_read(method, &params).await
            }
            _ => {
                let out = self.set_write(method, &body).await?;
                self.audit(&caller, method, &body).await?;
                Ok(out)
            }
        }
    }

    /// Records a change that is not a moderation event (team, sets) in the audit trail.
    async fn audit(&self, caller: &Caller, method: &str, input: &Value) -> Result<(), XrpcError> {
        self.store
            .audit(&skywarden_store::moderation::AuditEntry {
                id: 0,
                at: datetime_ms(now_micros()),
                actor: caller.did.clone(),
                method: method.to_string(),
                input: input.to_string(),
            })
            .await?;
        Ok(())
    }

    /// Authenticates a caller of `lxm`.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        lxm: &str,
    ) -> Result<Caller, XrpcError> {
        let creds = auth::authenticate(
            authorization,
            lxm,
            &self.config.service_did,
            self.config.admin_password.as_deref(),
            self.keys.as_ref(),
            now_micros() / 1_000_000,
        )
        .await?;
        Ok(match creds {
            Credentials::Admin => Caller {
                did: self.config.service_did.clone(),
                role: Some(Role::Admin),
                operator: true,
            },
            Credentials::Service { did } => {
                let role = self
                    .store
                    .member(&did)
                    .await?
                    .filter(|m| !m.disabled)
                    .and_then(|m| Role::from_token(&m.role));
                Caller {
                    did,
                    role,
                    operator: false,
                }
            }
        })
    }

    /// The stored form of a parsed event.
    #[allow(clippy::too_many_arguments)]
    fn new_event(
        subject: &SubjectRef,
        subject_json: &Value,
        parsed: &Parsed,
        created_by: &str,
        created_at: &str,
        mod_tool: Option<String>,
        external_id: Option<&str>,
        blob_cids: &[String],
    ) -> NewModEvent {
        NewModEvent {
            event_type: parsed.kind.type_name(),
            subject: subject.clone(),
            subject_json: subject_json.to_string(),
            event_json: parsed.json.to_string(),
            blob_cids: blob_cids.to_vec(),
            created_by: created_by.to_string(),
            created_at: created_at.to_string(),
            mod_tool,
            external_id: external_id.map(str::to_string),
            comment: parsed.comment.clone(),
            report_type: parsed.report_type.clone(),
            added_labels: parsed.create_labels.clone(),
            removed_labels: parsed.negate_labels.clone(),
            added_tags: parsed.add_tags.clone(),
            removed_tags: parsed.remove_tags.clone(),
        }
    }

    /// Appends an event and its status change; the shared path of reports and `emitEvent`.
    #[allow(clippy::too_many_arguments)]
    async fn append(
        &self,
        subject: &SubjectRef,
        subject_json: &Value,
        parsed: &Parsed,
        created_by: &str,
        mod_tool: Option<&Value>,
        external_id: Option<&str>,
        blob_cids: &[String],
        origin: &'static str,
    ) -> Result<(ModEventRow, Option<SubjectStatus>), XrpcError> {
        let now = now_micros();
        let created_at = datetime_ms(now);
        let new = Self::new_event(
            subject,
            subject_json,
            parsed,
            created_by,
            &created_at,
            mod_tool.map(Value::to_string),
            external_id,
            blob_cids,
        );
        let cx = Context {
            subject,
            created_by,
            created_at: &created_at,
            now_micros: now,
            blob_cids,
        };
        let transition = |current: Option<&SubjectStatus>| event::transition(parsed, current, &cx);
        match self.store.emit(&new, &transition).await? {
            Emitted::Appended { event, status } => {
                self.metrics.event(&new.event_type, origin);
                self.wake.notify_waiters();
                Ok((event, status))
            }
            Emitted::DuplicateExternalId => Err(XrpcError::new(
                400,
                "DuplicateExternalId",
                "an event of this type with this externalId already exists for the subject",
            )),
        }
    }

    /// Files an automated event (the engine's), as the service. A re-run with the same
    /// `external_id` is a no-op (`Ok(None)`).
    pub async fn emit_automated(
        &self,
        e: &AutomatedEvent,
    ) -> Result<Option<ModEventRow>, XrpcError> {
        let mut filed = self.emit_automated_batch(std::slice::from_ref(e)).await?;
        filed.pop().unwrap_or(Ok(None))
    }

    /// Files automated events in one store transaction (one commit for the whole batch, not
    /// one per event), in order. Returns one result per event: the event as stored, `None`
    /// for a re-run (same `external_id`), or why it was refused (a malformed event); a store
    /// failure fails the whole batch, and nothing of it is written.
    pub async fn emit_automated_batch(
        &self,
        events: &[AutomatedEvent],
    ) -> Result<Vec<Result<Option<ModEventRow>, XrpcError>>, XrpcError> {
        let now = now_micros();
        let created_at = datetime_ms(now);
        let created_by = self.config.service_did.as_str();
        let parsed: Vec<Result<(Parsed, NewModEvent), XrpcError>> = events
            .iter()
            .map(|e| {
                let parsed = event::parse(&e.event)?;
                let new = Self::new_event(
                    &e.subject,
                    &view::subject(&e.subject),
                    &parsed,
                    created_by,
                    &created_at,
                    Some(e.mod_tool.clone()),
                    Some(&e.external_id),
                    &[],
                );
                Ok((parsed, new))
            })
            .collect();
        let transitions: Vec<Box<TransitionFn<'_>>> = events
            .iter()
            .zip(&parsed)
            .filter_map(|(e, p)| {
                let (parsed, _) = p.as_ref().ok()?;
                let cx = Context {
                    subject: &e.subject,
                    created_by,
                    created_at: &created_at,
                    now_micros: now,
                    blob_cids: &[],
                };
                Some(Box::new(move |current: Option<&SubjectStatus>| {
                    event::transition(parsed, current, &cx)
                }) as Box<TransitionFn<'_>>)
            })
            .collect();
        let batch: Vec<BatchEmit<'_>> = events
            .iter()
            .zip(&parsed)
            .filter_map(|(e, p)| Some((e, &p.as_ref().ok()?.1)))
            .zip(&transitions)
            .map(|((e, new), transition)| BatchEmit {
                event: new,
                transition: transition.as_ref(),
                record: e.record.as_ref(),
            })
            .collect();
        let mut emitted = self.store.emit_batch(&batch).await?.into_iter();
        drop(batch);
        drop(transitions);
        let mut out = Vec::with_capacity(events.len());
        for p in parsed {
            out.push(match p {
                Err(refused) => Err(refused),
                Ok((_, new)) => match emitted.next() {
                    Some(Emitted::Appended { event, .. }) => {
                        self.metrics.event(&new.event_type, "engine");
                        Ok(Some(event))
                    }
                    _ => Ok(None),
                },
            });
        }
        if out.iter().any(|r| matches!(r, Ok(Some(_)))) {
            self.wake.notify_waiters();
        }
        Ok(out)
    }

    fn rate_limited(&self, reporter: &str) -> bool {
        let per_minute = f64::from(self.config.reports_per_minute.max(1));
        let now = now_micros();
        let mut buckets = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > 100_000 {
            // Full buckets carry no information: forget them.
            buckets.retain(|_, (tokens, at)| {
                *tokens + (now - *at) as f64 / 60e6 * per_minute < per_minute
            });
        }
        let (tokens, at) = buckets
            .entry(reporter.to_string())
            .or_insert((per_minute, now));
        *tokens = (*tokens + (now - *at) as f64 / 60e6 * per_minute).min(per_minute);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            false
        } else {
            true
        }
    }

    async fn create_report(&self, caller: &Caller, body: &Value) -> Result<Value, XrpcError> {
        let reason_type = str_field(body, "reasonType")?;
        if !event::valid_reason_type(reason_type) {
            return Err(XrpcError::invalid(format!(
                "reasonType `{reason_type}` is not a report reason (com.atproto.moderation.defs#reason* or tools.ozone.report.defs#reason*)"
            )));
        }
        let reason = match body.get("reason") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.len() <= 20_000 => Some(s.clone()),
            Some(Value::String(_)) => {
                return Err(XrpcError::invalid("reason: at most 20000 bytes"));
            }
            Some(_) => return Err(XrpcError::invalid("reason: must be a string")),
        };
        let subject_value = body
            .get("subject")
            .ok_or_else(|| XrpcError::invalid("`subject` is required"))?;
        let (subject, subject_json) = parse_subject(subject_value)?;
        if event::APPEAL_REASONS.contains(&reason_type) && subject.did != caller.did {
            return Err(XrpcError::forbidden(
                "appeals can only be made by the subject's own account",
            ));
        }
        if self.rate_limited(&caller.did) {
            return Err(XrpcError::new(
                429,
                "RateLimitExceeded",
                format!(
                    "at most {} reports per minute per reporter",
                    self.config.reports_per_minute
                ),
            ));
        }
        let now = datetime_ms(now_micros());
        let reporter_muted = self
            .store
            .status(&caller.did)
            .await?
            .and_then(|s| s.mute_reporting_until)
            .is_some_and(|until| until > now);
        let mut ev = json!({
            "$type": Kind::Report.type_name(),
            "reportType": reason_type,
            "isReporterMuted": reporter_muted,
        });
        if let Some(r) = &reason {
            ev["comment"] = r.clone().into();
        }
        let parsed = event::parse(&ev)?;
        let mod_tool = body
            .get("modTool")
            .filter(|t| t.get("name").is_some_and(Value::is_string));
        let (row, _) = self
            .append(
                &subject,
                &subject_json,
                &parsed,
                &caller.did,
                mod_tool,
                None,
                &[],
                "report",
            )
            .await?;
        let mut out = json!({
            "id": row.id,
            "reasonType": reason_type,
            "subject": subject_json,
            "reportedBy": caller.did,
            "createdAt": row.event.created_at,
        });
        if let Some(r) = reason {
            out["reason"] = r.into();
        }
        Ok(out)
    }

    async fn emit_event(&self, caller: &Caller, body: &Value) -> Result<Value, XrpcError> {
        let event_value = body
            .get("event")
            .ok_or_else(|| XrpcError::invalid("`event` is required"))?;
        let subject_value = body
            .get("subject")
            .ok_or_else(|| XrpcError::invalid("`subject` is required"))?;
        let created_by = did_field(body, "createdBy")?;
        if !caller.operator && created_by != caller.did {
            return Err(XrpcError::invalid("createdBy must be the caller's own DID"));
        }
        let parsed = event::parse(event_value)?;
        let needed = parsed.kind.required_role();
        if caller.role.is_none_or(|r| r < needed) {
            return Err(XrpcError::forbidden(format!(
                "{} needs the {} role",
                parsed.kind.type_name(),
                needed.token()
            )));
        }
        let (subject, subject_json) = parse_subject(subject_value)?;
        let blob_cids = match body.get("subjectBlobCids") {
            None => Vec::new(),
            Some(Value::Array(items)) if subject.uri.is_some() => items
                .iter()
                .map(|c| {
                    c.as_str()
                        .filter(|c| validate_cid_str(c).is_ok())
                        .map(str::to_string)
                        .ok_or_else(|| XrpcError::invalid("subjectBlobCids: CIDs"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(XrpcError::invalid(
                    "subjectBlobCids: an array of CIDs, for record subjects only",
                ));
            }
        };
        let external_id = match body.get("externalId") {
            None => None,
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 512 => Some(s.as_str()),
            Some(_) => return Err(XrpcError::invalid("externalId: a string of 1-512 bytes")),
        };
        let mod_tool = body.get("modTool");
        if let Some(t) = mod_tool
            && !t.get("name").is_some_and(Value::is_string)
        {
            return Err(XrpcError::invalid("modTool: an object with a `name`"));
        }
        let (row, _) = self
            .append(
                &subject,
                &subject_json,
                &parsed,
                &created_by,
                mod_tool,
                external_id,
                &blob_cids,
                "api",
            )
            .await?;
        Ok(view::event(&row))
    }

    async fn query_statuses(&self, p: &Params<'_>) -> Result<Value, XrpcError> {
        p.refuse_unsupported(&[
            "hostingDeletedAfter",
            "hostingDeletedBefore",
            "hostingUpdatedAfter",
            "hostingUpdatedBefore",
            "hostingStatuses",
            "minAccountSuspendCount",
            "minReportedRecordsCount",
            "minTakendownRecordsCount",
            "minStrikeCount",
            "ageAssuranceState",
        ])?;
        let sort = match p.get("sortField").unwrap_or("lastReportedAt") {
            "lastReportedAt" => StatusSort::LastReportedAt,
            "lastReviewedAt" => StatusSort::LastReviewedAt,
            "priorityScore" => StatusSort::PriorityScore,
            other => {
                return Err(XrpcError::invalid(format!(
                    "sortField `{other}`: one of lastReportedAt, lastReviewedAt, priorityScore"
                )));
            }
        };
        let descending = sort_direction(p)?;
        let subject_type = match p.get("subjectType") {
            None => None,
            Some("account") => Some(SubjectKind::Account),
            Some("record") => Some(SubjectKind::Record),
            Some(other) => {
                return Err(XrpcError::invalid(format!(
                    "subjectType `{other}`: account or record"
                )));
            }
        };
        let queue = match (p.int("queueCount", 1, 1000)?, p.int("queueIndex", 0, 999)?) {
            (Some(count), Some(index)) if index < count => Some((count, index)),
            (Some(_), Some(_)) => {
                return Err(XrpcError::invalid("queueIndex must be below queueCount"));
            }
            (Some(count), None) => Some((count, 0)),
            (None, _) => None,
        };
        let after = p
            .get("cursor")
            .map(|c| {
                StatusCursor::decode(c)
                    .ok_or_else(|| XrpcError::invalid("cursor: not one this service returned"))
            })
            .transpose()?;
        let tags: Vec<Vec<String>> = p
            .all("tags")
            .iter()
            .map(|t| {
                t.split("&&")
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .collect();
        if tags.len() > 25 {
            return Err(XrpcError::invalid("tags: at most 25"));
        }
        let collections = p.all("collections");
        if collections.len() > 20 {
            return Err(XrpcError::invalid("collections: at most 20"));
        }
        let review_state = p.get("reviewState").map(str::to_string);
        if let Some(s) = &review_state
            && !s.starts_with("tools.ozone.moderation.defs#review")
        {
            return Err(XrpcError::invalid(format!(
                "reviewState `{s}` is not a review state"
            )));
        }
        let query = StatusQuery {
            subject: p.get("subject").map(str::to_string),
            include_all_user_records: p.bool("includeAllUserRecords")?.unwrap_or(false),
            subject_type,
            collections,
            review_state,
            takendown: p.bool("takendown")?,
            appealed: p.bool("appealed")?,
            reported_after: p.datetime("reportedAfter")?,
            reported_before: p.datetime("reportedBefore")?,
            reviewed_after: p.datetime("reviewedAfter")?,
            reviewed_before: p.datetime("reviewedBefore")?,
            last_reviewed_by: p.get("lastReviewedBy").map(str::to_string),
            include_muted: p.bool("includeMuted")?.unwrap_or(false),
            only_muted: p.bool("onlyMuted")?.unwrap_or(false),
            now: datetime_ms(now_micros()),
            tags,
            exclude_tags: p.all("excludeTags"),
            ignore_subjects: p.all("ignoreSubjects"),
            comment: p.get("comment").map(str::to_string),
            min_priority_score: p.int("minPriorityScore", 0, 100)?,
            queue,
            sort,
            descending,
            after,
            limit: p.int("limit", 1, 100)?.unwrap_or(50) as u32,
        };
        let page = self.store.statuses(&query).await?;
        let mut statuses = Vec::with_capacity(page.statuses.len());
        for s in &page.statuses {
            let handle = self.directory.handle(&s.did).await;
            statuses.push(view::status(s, handle.as_deref()));
        }
        let mut out = json!({ "subjectStatuses": statuses });
        if let Some(c) = page.cursor {
            out["cursor"] = c.encode().into();
        }
        Ok(out)
    }

    async fn query_events(&self, p: &Params<'_>) -> Result<Value, XrpcError> {
        p.refuse_unsupported(&["policies", "batchId", "ageAssuranceState", "withStrike"])?;
        let subject_type = match p.get("subjectType") {
            None => None,
            Some("account") => Some(SubjectKind::Account),
            Some("record") => Some(SubjectKind::Record),
            Some(other) => {
                return Err(XrpcError::invalid(format!(
                    "subjectType `{other}`: account or record"
                )));
            }
        };
        let types = p
            .all("types")
            .into_iter()
            .map(|t| {
                if t.contains('#') {
                    t
                } else {
                    format!("{}{t}", event::DEFS)
                }
            })
            .collect();
        let after = p
            .get("cursor")
            .map(|c| {
                c.parse::<i64>()
                    .map_err(|_| XrpcError::invalid("cursor: not one this service returned"))
            })
            .transpose()?;
        let query = EventQuery {
            types,
            created_by: p.get("createdBy").map(str::to_string),
            subject: p.get("subject").map(str::to_string),
            include_all_user_records: p.bool("includeAllUserRecords")?.unwrap_or(false),
            subject_type,
            collections: p.all("collections"),
            created_after: p.datetime("createdAfter")?,
            created_before: p.datetime("createdBefore")?,
            has_comment: p.bool("hasComment")?,
            comment: p.get("comment").map(str::to_string),
            added_labels: p.all("addedLabels"),
            removed_labels: p.all("removedLabels"),
            added_tags: p.all("addedTags"),
            removed_tags: p.all("removedTags"),
            report_types: p.all("reportTypes"),
            mod_tools: p.all("modTool"),
            ascending: !sort_direction(p)?,
            after,
            limit: p.int("limit", 1, 100)?.unwrap_or(50) as u32,
        };
        let rows = self.store.events(&query).await?;
        let mut out = json!({ "events": rows.iter().map(view::event).collect::<Vec<_>>() });
        if rows.len() as u32 >= query.limit
            && let Some(last) = rows.last()
        {
            out["cursor"] = last.id.to_string().into();
        }
        Ok(out)
    }

    async fn get_event(&self, p: &Params<'_>) -> Result<Value, XrpcError> {
        let id = p
            .int("id", 1, i64::MAX)?
            .ok_or_else(|| XrpcError::invalid("`id` is required"))?;
        let row =
            self.store.event(id).await?.ok_or_else(|| {
                XrpcError::new(400, "NotFound", format!("no moderation event {id}"))
            })?;
        let mut v = view::event(&row);
        let subject = &row.event.subject;
        let subject_view = match &subject.uri {
            None => match self.repo_view(&subject.did).await? {
                Some(r) => with_type(r, "tools.ozone.moderation.defs#repoView"),
                None => {
                    json!({"$type": "tools.ozone.moderation.defs#repoViewNotFound", "did": subject.did})
                }
            },
            Some(uri) => match self.record_view(uri).await? {
                Some(r) => with_type(r, "tools.ozone.moderation.defs#recordView"),
                None => {
                    json!({"$type": "tools.ozone.moderation.defs#recordViewNotFound", "uri": uri})
                }
            },
        };
        if let Some(o) = v.as_object_mut() {
            o.remove("subjectBlobCids");
            o.insert("subject".into(), subject_view);
            o.insert("subjectBlobs".into(), json!([]));
        }
        Ok(v)
    }

    /// `repoView` of an account skywarden knows (it has a status, or its DID resolves).
    async fn repo_view(&self, did: &str) -> Result<Option<Value>, XrpcError> {
        let status = self.store.status(did).await?;
        let handle = self.directory.handle(did).await;
        if status.is_none() && handle.is_none() {
            return Ok(None);
        }
        let indexed_at = status
            .as_ref()
            .map(|s| s.created_at.clone())
            .unwrap_or_else(|| datetime_ms(now_micros()));
        let mut moderation = json!({});
        if let Some(s) = &status {
            moderation["subjectStatus"] = view::status(s, handle.as_deref());
        }
        Ok(Some(json!({
            "did": did,
            "handle": handle.unwrap_or_else(|| "handle.invalid".into()),
            "relatedRecords": [],
            "indexedAt": indexed_at,
            "moderation": moderation,
        })))
    }

    async fn record_view(&self, uri: &str) -> Result<Option<Value>, XrpcError> {
        let Some(snapshot) = self.store.record(uri).await? else {
            return Ok(None);
        };
        let did = AtUri::new(uri)
            .map(|u| u.authority().to_string())
            .unwrap_or_default();
        let status = self.store.status(uri).await?;
        let mut moderation = json!({});
        if let Some(s) = &status {
            moderation["subjectStatus"] = view::status(s, None);
        }
        let repo = match self.repo_view(&did).await? {
            Some(r) => r,
            None => {
                json!({"did": did, "handle": "handle.invalid", "relatedRecords": [], "indexedAt": snapshot.indexed_at, "moderation": {}})
            }
        };
        Ok(Some(json!({
            "uri": uri,
            "cid": snapshot.cid,
            "value": serde_json::from_str::<Value>(&snapshot.value).unwrap_or(Value::Null),
            "blobCids": [],
            "indexedAt": snapshot.indexed_at,
            "moderation": moderation,
            "repo": repo,
        })))
    }

    async fn current_labels(&self, uri: &str) -> Result<Vec<Value>, XrpcError> {
        let Some(labels) = &self.labels else {
            return Ok(Vec::new());
        };
        let page = labels
            .query(&LabelQuery {
                patterns: vec![UriPattern::Exact(uri.to_string())],
                sources: Vec::new(),
                after: None,
                limit: 100,
                now_micros: now_micros(),
            })
            .await?;
        Ok(page
            .labels
            .iter()
            .map(|row| {
                let l = &row.label;
                let mut v =
                    json!({"ver": l.ver, "src": l.src, "uri": l.uri, "val": l.val, "cts": l.cts});
                if let Some(cid) = &l.cid {
                    v["cid"] = cid.clone().into();
                }
                if let Some(exp) = &l.exp {
                    v["exp"] = exp.clone().into();
                }
                v
            })
            .collect())
    }

    async fn get_repo(&self, p: &Params<'_>) -> Result<Value, XrpcError> {
        let did = p
            .get("did")
            .ok_or_else(|| XrpcError::invalid("`did` is required"))?;
        Did::new(did).map_err(|e| XrpcError::invalid(format!("did: {e}")))?;
        let mut v = self.repo_view(did).await?.ok_or_else(|| {
            XrpcError::new(
                400,
                "RepoNotFound",
                format!("skywarden knows nothing of {did}"),
            )
        })?;
        v["labels"] = self.current_labels(did).await?.into();
        Ok(v)
    }

    async fn get_record(&self, p: &Params<'_>) -> Result<Value, XrpcError> {
        let uri = p
            .get("uri")
            .ok_or_else(|| XrpcError::invalid("`uri` is required"))?;
        AtUri::new(uri).map_err(|e| XrpcError::invalid(format!("uri: {e}")))?;
        let mut v = self.record_view(uri).await?.ok_or_else(|| {
            XrpcError::new(
                400,
                "RecordNotFound",
                format!("skywarden holds no copy of {uri} (records are kept when the engine acts on them)"),
            )
        })?;
        if let Some(cid) = p.get("cid")
            && v["cid"].as_str() != Some(cid)
        {
            return Err(XrpcError::new(
                400,
                "RecordNotFound",
                format!("skywarden holds no copy of {uri} at {cid}"),
            ));
        }
        if let Some(o) = v.as_object_mut() {
            o.remove("blobCids");
            o.insert("blobs".into(), json!([]));
        }
        v["labels"] = self.current_labels(uri).await?.into();
        Ok(v)
    }

    fn get_config(&self, caller: &Caller) -> Value {
        let mut v = json!({});
        if let Some(role) = caller.role {
            v["viewer"] = json!({ "role": role.token() });
        }
        if let Some(u) = &self.config.pds_url {
            v["pds"] = json!({ "url": u });
        }
        if let Some(u) = &self.config.appview_url {
            v["appview"] = json!({ "url": u });
        }
        v
    }

    async fn list_members(&self, p: &Params<'_>) -> Result<Value, XrpcError> {
        let roles = p.all("roles");
        let disabled = p.bool("disabled")?;
        let q = p.get("q");
        let limit = p.int("limit", 1, 100)?.unwrap_or(50) as usize;
        let start: usize = p
            .get("cursor")
            .map(|c| {
                c.parse()
                    .map_err(|_| XrpcError::invalid("cursor: not one this service returned"))
            })
            .transpose()?
            .unwrap_or(0);
        let members: Vec<Member> = self
            .store
            .members()
            .await?
            .into_iter()
            .filter(|m| roles.is_empty() || roles.contains(&m.role))
            .filter(|m| disabled.is_none_or(|d| m.disabled == d))
            .filter(|m| q.is_none_or(|q| m.did.contains(q)))
            .collect();
        let page: Vec<Value> = members
            .iter()
            .skip(start)
            .take(limit)
            .map(member_view)
            .collect();
        let mut out = json!({ "members": page });
        if start + limit < members.len() {
            out["cursor"] = (start + limit).to_string().into();
        }
        Ok(out)
    }

    async fn team_write(
        &self,
        caller: &Caller,
        method: &str,
        body: &Value,
    ) -> Result<Value, XrpcError> {
        let did = did_field(body, "did")?;
        let now = datetime_ms(now_micros());
        let role = match body.get("role") {
            None => None,
            Some(r) => Some(
                r.as_str()
                    .and_then(Role::from_token)
                    .ok_or_else(|| XrpcError::invalid("role: one of tools.ozone.team.defs#roleAdmin, #roleModerator, #roleTriage, #roleVerifier"))?,
            ),
        };
        let not_found = || {
            XrpcError::new(
                400,
                "MemberNotFound",
                format!("{did} is not a member of the team"),
            )
        };
        match method {
            "tools.ozone.team.addMember" => {
                let role = role.ok_or_else(|| XrpcError::invalid("`role` is required"))?;
                let member = Member {
                    did: did.clone(),
                    role: role.token().into(),
                    disabled: false,
                    created_at: now.clone(),
                    updated_at: now,
                    last_updated_by: caller.did.clone(),
                };
                if !self.store.add_member(&member).await? {
                    return Err(XrpcError::new(
                        400,
                        "MemberAlreadyExists",
                        format!("{did} is already a member"),
                    ));
                }
                Ok(member_view(&member))
            }
            "tools.ozone.team.updateMember" => {
                let mut member = self.store.member(&did).await?.ok_or_else(not_found)?;
                if let Some(r) = role {
                    member.role = r.token().into();
                }
                match body.get("disabled") {
                    None => {}
                    Some(Value::Bool(d)) => member.disabled = *d,
                    Some(_) => return Err(XrpcError::invalid("disabled: a boolean")),
                }
                member.updated_at = now;
                member.last_updated_by = caller.did.clone();
                if !self.store.update_member(&member).await? {
                    return Err(not_found());
                }
                Ok(member_view(&member))
            }
            _ => {
                if did == caller.did {
                    return Err(XrpcError::new(
                        400,
                        "CannotDeleteSelf",
                        "you can not delete yourself from the team",
                    ));
                }
                if !self.store.delete_member(&did).await? {
                    return Err(not_found());
                }
                Ok(json!({}))
            }
        }
    }

    async fn set_read(&self, method: &str, p: &Params<'_>) -> Result<Value, XrpcError> {
        if method == "tools.ozone.set.getValues" {
            let name = p
                .get("name")
                .ok_or_else(|| XrpcError::invalid("`name` is required"))?;
            let limit = p.int("limit", 1, 1000)?.unwrap_or(100) as usize;
            let (info, values, cursor) = self.sets.values(name, limit, p.get("cursor")).await?;
            let mut out = json!({ "set": info.view(), "values": values });
            if let Some(c) = cursor {
                out["cursor"] = c.into();
            }
            return Ok(out);
        }
        let limit = p.int("limit", 1, 100)?.unwrap_or(50) as usize;
        let descending = match p.get("sortDirection").unwrap_or("asc") {
            "asc" => false,
            "desc" => true,
            other => {
                return Err(XrpcError::invalid(format!(
                    "sortDirection `{other}`: asc or desc"
                )));
            }
        };
        let (sets, cursor) = self
            .sets
            .query(
                p.get("namePrefix"),
                p.get("sortBy").unwrap_or("name"),
                descending,
                limit,
                p.get("cursor"),
            )
            .await?;
        let mut out = json!({ "sets": sets.iter().map(|s| s.view()).collect::<Vec<_>>() });
        if let Some(c) = cursor {
            out["cursor"] = c.into();
        }
        Ok(out)
    }

    async fn set_write(&self, method: &str, body: &Value) -> Result<Value, XrpcError> {
        let name = str_field(body, "name")?;
        let values = || -> Result<Vec<String>, XrpcError> {
            body.get("values")
                .and_then(Value::as_array)
                .ok_or_else(|| XrpcError::invalid("`values` (an array of strings) is required"))?
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| XrpcError::invalid("values: strings"))
                })
                .collect()
        };
        match method {
            "tools.ozone.set.upsertSet" => {
                let description = match body.get("description") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => Some(s.as_str()),
                    Some(_) => return Err(XrpcError::invalid("description: a string")),
                };
                Ok(self.sets.upsert(name, description).await?.view())
            }
            "tools.ozone.set.addValues" => {
                self.sets.add_values(name, &values()?).await?;
                Ok(json!({}))
            }
            "tools.ozone.set.deleteValues" => {
                self.sets.delete_values(name, &values()?).await?;
                Ok(json!({}))
            }
            _ => {
                self.sets.delete(name).await?;
                Ok(json!({}))
            }
        }
    }
}

fn with_type(mut v: Value, t: &str) -> Value {
    v["$type"] = t.into();
    v
}

fn member_view(m: &Member) -> Value {
    json!({
        "did": m.did,
        "role": m.role,
        "disabled": m.disabled,
        "createdAt": m.created_at,
        "updatedAt": m.updated_at,
        "lastUpdatedBy": m.last_updated_by,
    })
}

fn sort_direction(p: &Params<'_>) -> Result<bool, XrpcError> {
    match p.get("sortDirection").unwrap_or("desc") {
        "desc" => Ok(true),
        "asc" => Ok(false),
        other => Err(XrpcError::invalid(format!(
            "sortDirection `{other}`: asc or desc"
        ))),
    }
}

/// Refuses a caller below `role` (403; a caller who is not on the team is refused too).
fn require(caller: &Caller, role: Role) -> Result<(), XrpcError> {
    match caller.role {
        Some(r) if r >= role => Ok(()),
        Some(_) => Err(XrpcError::forbidden(format!(
            "this method needs the {} role",
            role.token()
        ))),
        None => Err(XrpcError::forbidden(format!(
            "{} is not a member of this service's moderation team",
            caller.did
        ))),
    }
}

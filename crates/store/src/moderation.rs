//! The moderation store: the moderation event log, subject statuses (the queue), the team,
//! evidence snapshots of records, the cursors of moderation-event sinks, and the audit trail
//! of changes that are not events (the team, sets).
//!
//! The event log is append-only and is the audit trail: every mutation a moderator, an
//! operator or the engine makes is one row saying who and when. A subject's status is derived
//! from its events; [`ModStore::emit`] appends an event and writes the status the caller's
//! transition computes from the current one, in one transaction, so the two never disagree.
//! Event rows become visible in `id` order (SQLite's single writer; Postgres writers take an
//! advisory lock), so a sink reading the log by `id` never misses a row.
//!
//! Queue views are keyset-paginated range scans of `(sort column, id)` indexes; empty strings
//! stand for "never" in the date columns the queue sorts on, so no view needs `COALESCE` or a
//! full scan. Two backends pass the same test suite: [`SqliteModStore`] and [`PgModStore`].

use crate::labels::StoreFuture;
use crate::{BATCH_ROWS, Result, err, padded, padded_len, statement_chunks};
use sqlx::Row;

/// Review states (`tools.ozone.moderation.defs#subjectReviewState`).
pub mod review {
    /// Reported and waiting for a moderator.
    pub const OPEN: &str = "tools.ozone.moderation.defs#reviewOpen";
    /// Waiting for a senior moderator.
    pub const ESCALATED: &str = "tools.ozone.moderation.defs#reviewEscalated";
    /// Reviewed.
    pub const CLOSED: &str = "tools.ozone.moderation.defs#reviewClosed";
    /// Known but never needing review.
    pub const NONE: &str = "tools.ozone.moderation.defs#reviewNone";
}

/// What a moderation event is about: an account, or one record of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectRef {
    /// The account's DID (the record's repo for a record).
    pub did: String,
    /// The record's AT-URI (`None`: the account).
    pub uri: Option<String>,
    /// The record version (strongRef CID).
    pub cid: Option<String>,
}

impl SubjectRef {
    /// The key a status is stored under: the URI for a record, the DID for an account.
    pub fn key(&self) -> &str {
        self.uri.as_deref().unwrap_or(&self.did)
    }

    /// The record's collection NSID, for a record.
    pub fn collection(&self) -> Option<&str> {
        let rest = self.uri.as_deref()?.strip_prefix("at://")?;
        rest.split('/').nth(1)
    }
}

/// A moderation event to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewModEvent {
    /// The event's `$type` (`tools.ozone.moderation.defs#modEventTakedown`, ...).
    pub event_type: String,
    /// What it is about.
    pub subject: SubjectRef,
    /// The subject union as the API shows it (JSON).
    pub subject_json: String,
    /// The event union as the API shows it (JSON).
    pub event_json: String,
    /// Blob CIDs the event covers.
    pub blob_cids: Vec<String>,
    /// Who made it (a DID).
    pub created_by: String,
    /// When (atproto datetime, UTC, millisecond precision).
    pub created_at: String,
    /// `modTool` (JSON), if given.
    pub mod_tool: Option<String>,
    /// For `externalId` de-duplication: unique per (subject, type).
    pub external_id: Option<String>,
    /// The event's comment, for comment filters.
    pub comment: Option<String>,
    /// A report's reason type.
    pub report_type: Option<String>,
    /// Label values added and removed, tags added and removed (for event filters).
    pub added_labels: Vec<String>,
    /// Label values negated.
    pub removed_labels: Vec<String>,
    /// Tags added.
    pub added_tags: Vec<String>,
    /// Tags removed.
    pub removed_tags: Vec<String>,
}

impl NewModEvent {
    /// An event of one kind (`modEventReport`, ...) and nothing else: the event JSON is only its
    /// `$type`, with no comment, labels, tags, tool or external id. Callers set the rest.
    pub fn of_kind(kind: &str, subject: &SubjectRef, created_by: &str, created_at: &str) -> Self {
        let event_type = format!("tools.ozone.moderation.defs#{kind}");
        NewModEvent {
            event_json: serde_json::json!({ "$type": event_type }).to_string(),
            event_type,
            subject: subject.clone(),
            subject_json: "{}".into(),
            blob_cids: vec![],
            created_by: created_by.into(),
            created_at: created_at.into(),
            mod_tool: None,
            external_id: None,
            comment: None,
            report_type: None,
            added_labels: vec![],
            removed_labels: vec![],
            added_tags: vec![],
            removed_tags: vec![],
        }
    }

    /// The `name` of the event's `modTool` (also kept in its own column for filtering).
    /// Only that field is decoded: the rest of the tool's JSON (a rule's explanation and
    /// evidence) is skipped without building values.
    pub fn tool_name(&self) -> Option<String> {
        #[derive(serde::Deserialize)]
        struct Tool {
            name: Option<String>,
        }
        self.mod_tool
            .as_deref()
            .and_then(|t| serde_json::from_str::<Tool>(t).ok())
            .and_then(|t| t.name)
    }
}

/// An event read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModEventRow {
    /// Position in the log.
    pub id: i64,
    /// The event.
    pub event: NewModEvent,
}

/// A subject's moderation status (`tools.ozone.moderation.defs#subjectStatusView`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubjectStatus {
    /// Row id (0 before the first write).
    pub id: i64,
    /// The subject.
    pub did: String,
    /// The record URI, for a record.
    pub uri: Option<String>,
    /// The record CID last seen in an event.
    pub cid: Option<String>,
    /// One of [`review`]'s states.
    pub review_state: String,
    /// Taken down.
    pub takendown: bool,
    /// A takedown was appealed and the appeal is unresolved.
    pub appealed: bool,
    /// A temporary takedown ends then.
    pub suspend_until: Option<String>,
    /// Reports on the subject are muted until then.
    pub mute_until: Option<String>,
    /// Reports *by* the subject (an account) are muted until then.
    pub mute_reporting_until: Option<String>,
    /// The last moderator who reviewed it.
    pub last_reviewed_by: Option<String>,
    /// When.
    pub last_reviewed_at: Option<String>,
    /// The last report.
    pub last_reported_at: Option<String>,
    /// The last appeal.
    pub last_appealed_at: Option<String>,
    /// 0–100; higher first in priority views.
    pub priority_score: i64,
    /// The sticky comment.
    pub comment: Option<String>,
    /// Tags, in the order added.
    pub tags: Vec<String>,
    /// Blob CIDs of the subject.
    pub blob_cids: Vec<String>,
    /// First event.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
}

/// What an event does to statuses, decided by the caller from the current status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The subject's new status (`None`: leave it as it is, creating none).
    pub status: Option<SubjectStatus>,
    /// Also close the open and escalated record subjects of the account (an account takedown
    /// or acknowledgement with `acknowledgeAccountSubjects`).
    pub close_account_records: bool,
}

/// What [`ModStore::emit`] did.
// One value per emitted event, moved once: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Emitted {
    /// Appended; the subject's status after the event, if it has one.
    Appended {
        /// The event as stored.
        event: ModEventRow,
        /// The status after it.
        status: Option<SubjectStatus>,
    },
    /// An event of the same type with the same `externalId` exists on the subject.
    DuplicateExternalId,
}

/// A status transition: the next status from the current one (see [`ModStore::emit`]).
pub type TransitionFn<'a> = dyn Fn(Option<&SubjectStatus>) -> Transition + Send + Sync + 'a;

/// One entry of [`ModStore::emit_batch`].
pub struct BatchEmit<'a> {
    /// The event.
    pub event: &'a NewModEvent,
    /// Its status transition.
    pub transition: &'a TransitionFn<'a>,
    /// A record snapshot to keep with it.
    pub record: Option<&'a RecordSnapshot>,
}

impl std::fmt::Debug for BatchEmit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchEmit")
            .field("event", self.event)
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

/// The column a queue view sorts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusSort {
    /// `lastReportedAt` (the default).
    LastReportedAt,
    /// `lastReviewedAt`.
    LastReviewedAt,
    /// `priorityScore`.
    PriorityScore,
}

impl StatusSort {
    fn column(self) -> &'static str {
        match self {
            StatusSort::LastReportedAt => "last_reported_at",
            StatusSort::LastReviewedAt => "last_reviewed_at",
            StatusSort::PriorityScore => "priority_score",
        }
    }
}

/// Where a page of statuses ended: the sort value and id of its last row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCursor {
    /// The sort column's value (a datetime, `""` for never, or a score).
    pub value: String,
    /// The row id.
    pub id: i64,
}

impl StatusCursor {
    /// The API form: `value::id`.
    pub fn encode(&self) -> String {
        format!("{}::{}", self.value, self.id)
    }

    /// Parses [`StatusCursor::encode`]'s form.
    pub fn decode(s: &str) -> Option<StatusCursor> {
        let (value, id) = s.rsplit_once("::")?;
        Some(StatusCursor {
            value: value.to_string(),
            id: id.parse().ok()?,
        })
    }
}

/// A queue view (`tools.ozone.moderation.queryStatuses`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusQuery {
    /// Only this subject (a DID or AT-URI).
    pub subject: Option<String>,
    /// With a DID `subject`: the account and all its records.
    pub include_all_user_records: bool,
    /// Only `account` or `record` subjects.
    pub subject_type: Option<SubjectKind>,
    /// Only records of these collections.
    pub collections: Vec<String>,
    /// Only this review state.
    pub review_state: Option<String>,
    /// Only (not) taken down.
    pub takendown: Option<bool>,
    /// Only (not) appealed.
    pub appealed: Option<bool>,
    /// Reported after / before (datetimes).
    pub reported_after: Option<String>,
    /// Reported before.
    pub reported_before: Option<String>,
    /// Reviewed after.
    pub reviewed_after: Option<String>,
    /// Reviewed before.
    pub reviewed_before: Option<String>,
    /// Last reviewed by this DID.
    pub last_reviewed_by: Option<String>,
    /// Include subjects whose reports are muted (default: leave them out).
    pub include_muted: bool,
    /// Only muted subjects.
    pub only_muted: bool,
    /// Now, for mute comparisons (datetime).
    pub now: String,
    /// Tag filters: any entry matches (OR); within an entry, every tag (AND).
    pub tags: Vec<Vec<String>>,
    /// Subjects with none of these tags.
    pub exclude_tags: Vec<String>,
    /// Leave these subjects out.
    pub ignore_subjects: Vec<String>,
    /// Sticky comment contains this.
    pub comment: Option<String>,
    /// Priority score at least this.
    pub min_priority_score: Option<i64>,
    /// `(queueCount, queueIndex)`: only the subjects of one queue.
    pub queue: Option<(i64, i64)>,
    /// Sort column.
    pub sort: StatusSort,
    /// Descending (the default).
    pub descending: bool,
    /// Continue after.
    pub after: Option<StatusCursor>,
    /// Rows per page.
    pub limit: u32,
}

/// Account or record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKind {
    /// A DID.
    Account,
    /// An AT-URI.
    Record,
}

/// A page of statuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusPage {
    /// The statuses, in the view's order.
    pub statuses: Vec<SubjectStatus>,
    /// Present when the page is full.
    pub cursor: Option<StatusCursor>,
}

/// An event history view (`tools.ozone.moderation.queryEvents`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventQuery {
    /// Only these event types.
    pub types: Vec<String>,
    /// Only events by this DID.
    pub created_by: Option<String>,
    /// Only this subject.
    pub subject: Option<String>,
    /// With a DID `subject`: the account's records too.
    pub include_all_user_records: bool,
    /// Only `account` or `record` subjects.
    pub subject_type: Option<SubjectKind>,
    /// Only records of these collections.
    pub collections: Vec<String>,
    /// Created after (datetime).
    pub created_after: Option<String>,
    /// Created before (datetime).
    pub created_before: Option<String>,
    /// With (or without) a comment.
    pub has_comment: Option<bool>,
    /// Comment contains this.
    pub comment: Option<String>,
    /// Events that added any of these labels.
    pub added_labels: Vec<String>,
    /// Events that negated any of these labels.
    pub removed_labels: Vec<String>,
    /// Events that added any of these tags.
    pub added_tags: Vec<String>,
    /// Events that removed any of these tags.
    pub removed_tags: Vec<String>,
    /// Reports of these reason types.
    pub report_types: Vec<String>,
    /// Events made with these tools (`modTool.name`).
    pub mod_tools: Vec<String>,
    /// Oldest first (default: newest first).
    pub ascending: bool,
    /// Continue after this id.
    pub after: Option<i64>,
    /// Rows per page.
    pub limit: u32,
}

/// A team member (`tools.ozone.team.defs#member`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member's DID.
    pub did: String,
    /// `tools.ozone.team.defs#roleAdmin`, `#roleModerator`, `#roleTriage` or `#roleVerifier`.
    pub role: String,
    /// A disabled member is refused like a stranger.
    pub disabled: bool,
    /// Added then.
    pub created_at: String,
    /// Changed then.
    pub updated_at: String,
    /// Who changed it last.
    pub last_updated_by: String,
}

/// Which events of the log an event sink reads ([`ModStore::events_for_sink`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventSelection {
    /// Only events of these `$type`s; every type when empty.
    pub types: Vec<String>,
    /// Which tools' events (`modTool.name`).
    pub tool: ToolSelection,
}

/// Events by the tool that filed them (`modTool.name`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ToolSelection {
    /// Every event.
    #[default]
    Any,
    /// Only events this tool filed.
    Only(String),
    /// Every event but those this tool filed.
    Except(String),
}

/// A page of the event log for a sink ([`ModStore::events_for_sink`]).
pub type EventPage = crate::LogPage<ModEventRow>;

/// A copy of a record as skywarden saw it, kept as evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSnapshot {
    /// AT-URI.
    pub uri: String,
    /// CID.
    pub cid: String,
    /// The record as atproto JSON.
    pub value: String,
    /// When it was seen.
    pub indexed_at: String,
}

/// One entry of the audit trail of changes that are not moderation events (team and sets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Position (0 before appending).
    pub id: i64,
    /// When (stored datetime form).
    pub at: String,
    /// Who (a DID).
    pub actor: String,
    /// The method called (`tools.ozone.team.addMember`, ...).
    pub method: String,
    /// The request, as JSON.
    pub input: String,
}

/// Persistence of moderation. Implemented by [`SqliteModStore`] and [`PgModStore`].
pub trait ModStore: Send + Sync + std::fmt::Debug {
    /// Appends `event` and writes the status `transition` computes from the subject's current
    /// status, in one transaction (the status row is locked meanwhile).
    fn emit<'a>(
        &'a self,
        event: &'a NewModEvent,
        transition: &'a (dyn Fn(Option<&SubjectStatus>) -> Transition + Send + Sync),
    ) -> StoreFuture<'a, Emitted>;
    /// Appends several events in one transaction, in order: each transition sees the status
    /// the events before it left, and each entry's record snapshot is kept in the same
    /// transaction. All are written or none; one outcome per entry.
    fn emit_batch<'a>(&'a self, batch: &'a [BatchEmit<'a>]) -> StoreFuture<'a, Vec<Emitted>>;
    /// The status of a subject (a DID or AT-URI).
    fn status<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<SubjectStatus>>;
    /// A queue view.
    fn statuses<'a>(&'a self, query: &'a StatusQuery) -> StoreFuture<'a, StatusPage>;
    /// One event.
    fn event(&self, id: i64) -> StoreFuture<'_, Option<ModEventRow>>;
    /// An event history view; results are ordered by id.
    fn events<'a>(&'a self, query: &'a EventQuery) -> StoreFuture<'a, Vec<ModEventRow>>;
    /// Up to `limit` events with `id > after`, in id order.
    fn events_after(&self, after: i64, limit: u32) -> StoreFuture<'_, Vec<ModEventRow>>;
    /// What an event sink reads next: up to `limit` events with `id > after` that
    /// `selection` picks, in id order. The database skips the others; the page's cursor
    /// moves past them.
    fn events_for_sink<'a>(
        &'a self,
        after: i64,
        limit: u32,
        selection: &'a EventSelection,
    ) -> StoreFuture<'a, EventPage>;
    /// The team.
    fn members(&self) -> StoreFuture<'_, Vec<Member>>;
    /// One member.
    fn member<'a>(&'a self, did: &'a str) -> StoreFuture<'a, Option<Member>>;
    /// Adds a member; `false` when the DID is already one.
    fn add_member<'a>(&'a self, member: &'a Member) -> StoreFuture<'a, bool>;
    /// Replaces a member's role and disabled flag; `false` when the DID is not a member.
    fn update_member<'a>(&'a self, member: &'a Member) -> StoreFuture<'a, bool>;
    /// Removes a member; `false` when the DID is not a member.
    fn delete_member<'a>(&'a self, did: &'a str) -> StoreFuture<'a, bool>;
    /// Keeps a record snapshot (the latest per URI).
    fn put_record<'a>(&'a self, record: &'a RecordSnapshot) -> StoreFuture<'a, ()>;
    /// The snapshot of a record.
    fn record<'a>(&'a self, uri: &'a str) -> StoreFuture<'a, Option<RecordSnapshot>>;
    /// A sink's cursor (0 when new).
    fn cursor<'a>(&'a self, name: &'a str) -> StoreFuture<'a, i64>;
    /// Moves a sink's cursor.
    fn set_cursor<'a>(&'a self, name: &'a str, value: i64) -> StoreFuture<'a, ()>;
    /// Appends to the audit trail of team and set changes.
    fn audit<'a>(&'a self, entry: &'a AuditEntry) -> StoreFuture<'a, ()>;
    /// Up to `limit` audit entries with `id > after`, in order.
    fn audit_after(&self, after: i64, limit: u32) -> StoreFuture<'_, Vec<AuditEntry>>;
}

/// A value bound to a `$n` placeholder of a dynamically built query.
#[derive(Debug, Clone)]
enum Bind {
    Text(String),
    Int(i64),
}

/// A `WHERE` clause under construction; placeholders are numbered in the order added.
#[derive(Default)]
struct Filter {
    conditions: Vec<String>,
    binds: Vec<Bind>,
}

impl Filter {
    /// Adds a bind and returns its placeholder.
    fn bind(&mut self, value: Bind) -> String {
        self.binds.push(value);
        format!("${}", self.binds.len())
    }

    fn text(&mut self, value: &str) -> String {
        self.bind(Bind::Text(value.to_string()))
    }

    fn push(&mut self, condition: String) {
        self.conditions.push(condition);
    }

    fn any_of(&mut self, column: &str, values: &[String]) {
        if values.is_empty() {
            return;
        }
        let list: Vec<String> = values.iter().map(|v| self.text(v)).collect();
        self.push(format!("{column} IN ({})", list.join(", ")));
    }

    fn clause(&self) -> String {
        if self.conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.conditions.join(" AND "))
        }
    }
}

/// `%…%` for a LIKE that finds `s` anywhere, with LIKE's wildcards escaped.
fn contains_pattern(s: &str) -> String {
    let escaped = s
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// The subject filters queries of statuses (`did`/`uri` columns) and events share.
fn subject_filter(
    f: &mut Filter,
    (did_col, key_col, uri_col, collection_col): (&str, &str, &str, &str),
    subject: Option<&str>,
    include_all_user_records: bool,
    kind: Option<SubjectKind>,
    collections: &[String],
) {
    if let Some(subject) = subject {
        if include_all_user_records && !subject.starts_with("at://") {
            let p = f.text(subject);
            f.push(format!("{did_col} = {p}"));
        } else {
            let p = f.text(subject);
            f.push(format!("{key_col} = {p}"));
        }
    }
    match kind {
        Some(SubjectKind::Account) => f.push(format!("{uri_col} IS NULL")),
        Some(SubjectKind::Record) => f.push(format!("{uri_col} IS NOT NULL")),
        None => {}
    }
    f.any_of(collection_col, collections);
}

/// The terms an event is searchable by in `queryEvents` (` label+:spam tag-:ring `).
fn event_terms(e: &NewModEvent) -> String {
    let mut s = String::from(" ");
    for (prefix, values) in [
        ("label+:", &e.added_labels),
        ("label-:", &e.removed_labels),
        ("tag+:", &e.added_tags),
        ("tag-:", &e.removed_tags),
    ] {
        for v in values {
            s.push_str(prefix);
            s.push_str(v);
            s.push(' ');
        }
    }
    s
}

fn terms_of(terms: &str, prefix: &str) -> Vec<String> {
    terms
        .split(' ')
        .filter_map(|t| t.strip_prefix(prefix))
        .map(str::to_string)
        .collect()
}

fn status_filter(q: &StatusQuery) -> Filter {
    let mut f = Filter::default();
    subject_filter(
        &mut f,
        ("did", "subject_key", "uri", "collection"),
        q.subject.as_deref(),
        q.include_all_user_records,
        q.subject_type,
        &q.collections,
    );
    if let Some(state) = &q.review_state {
        let p = f.text(state);
        f.push(format!("review_state = {p}"));
    }
    if let Some(t) = q.takendown {
        f.push(if t { "takendown" } else { "NOT takendown" }.into());
    }
    if let Some(a) = q.appealed {
        f.push(if a { "appealed" } else { "NOT appealed" }.into());
    }
    for (value, column, op) in [
        (&q.reported_after, "last_reported_at", ">"),
        (&q.reported_before, "last_reported_at", "<"),
        (&q.reviewed_after, "last_reviewed_at", ">"),
        (&q.reviewed_before, "last_reviewed_at", "<"),
    ] {
        if let Some(v) = value {
            let p = f.text(v);
            // "" (never) is below every date: `before` must not match it.
            f.push(format!("{column} {op} {p} AND {column} <> ''"));
        }
    }
    if let Some(by) = &q.last_reviewed_by {
        let p = f.text(by);
        f.push(format!("last_reviewed_by = {p}"));
    }
    if q.only_muted {
        let p = f.text(&q.now);
        f.push(format!("mute_until > {p}"));
    } else if !q.include_muted {
        let p = f.text(&q.now);
        f.push(format!("mute_until <= {p}"));
    }
    if !q.tags.is_empty() {
        let mut any = Vec::new();
        for all in &q.tags {
            let each: Vec<String> = all
                .iter()
                .map(|tag| {
                    let p = f.text(tag);
                    format!(
                        "EXISTS (SELECT 1 FROM mod_subject_tags t WHERE t.tag = {p} \
                         AND t.subject_id = mod_subjects.id)"
                    )
                })
                .collect();
            if !each.is_empty() {
                any.push(format!("({})", each.join(" AND ")));
            }
        }
        if !any.is_empty() {
            f.push(format!("({})", any.join(" OR ")));
        }
    }
    for tag in &q.exclude_tags {
        let p = f.text(tag);
        f.push(format!(
            "NOT EXISTS (SELECT 1 FROM mod_subject_tags t WHERE t.tag = {p} \
             AND t.subject_id = mod_subjects.id)"
        ));
    }
    if !q.ignore_subjects.is_empty() {
        let list: Vec<String> = q.ignore_subjects.iter().map(|s| f.text(s)).collect();
        f.push(format!("subject_key NOT IN ({})", list.join(", ")));
    }
    if let Some(c) = &q.comment {
        let p = f.text(&contains_pattern(c));
        f.push(format!("comment LIKE {p} ESCAPE '\\'"));
    }
    if let Some(min) = q.min_priority_score {
        let p = f.bind(Bind::Int(min));
        f.push(format!("priority_score >= {p}"));
    }
    if let Some((count, index)) = q.queue {
        let c = f.bind(Bind::Int(count));
        let i = f.bind(Bind::Int(index));
        f.push(format!("queue_bucket % {c} = {i}"));
    }
    let column = q.sort.column();
    if let Some(after) = &q.after {
        let value = match q.sort {
            StatusSort::PriorityScore => Bind::Int(after.value.parse().unwrap_or(0)),
            _ => Bind::Text(after.value.clone()),
        };
        let v = f.bind(value);
        let id = f.bind(Bind::Int(after.id));
        let op = if q.descending { "<" } else { ">" };
        // A row comparison, not `col < v OR (col = v AND id < n)`: planners turn it into one
        // index range (Postgres would otherwise scan the whole state and filter).
        f.push(format!("({column}, id) {op} ({v}, {id})"));
    }
    f
}

fn status_sql(q: &StatusQuery, f: &mut Filter) -> String {
    let column = q.sort.column();
    let dir = if q.descending { "DESC" } else { "ASC" };
    let limit = f.bind(Bind::Int(i64::from(q.limit)));
    format!(
        "SELECT {STATUS_COLUMNS} FROM mod_subjects{} ORDER BY {column} {dir}, id {dir} LIMIT {limit}",
        f.clause()
    )
}

fn events_sql(q: &EventQuery) -> (String, Filter) {
    let mut f = Filter::default();
    subject_filter(
        &mut f,
        (
            "subject_did",
            "subject_key",
            "subject_uri",
            "subject_collection",
        ),
        q.subject.as_deref(),
        q.include_all_user_records,
        q.subject_type,
        &q.collections,
    );
    f.any_of("type", &q.types);
    if let Some(by) = &q.created_by {
        let p = f.text(by);
        f.push(format!("created_by = {p}"));
    }
    if let Some(v) = &q.created_after {
        let p = f.text(v);
        f.push(format!("created_at > {p}"));
    }
    if let Some(v) = &q.created_before {
        let p = f.text(v);
        f.push(format!("created_at < {p}"));
    }
    match q.has_comment {
        Some(true) => f.push("comment IS NOT NULL".into()),
        Some(false) => f.push("comment IS NULL".into()),
        None => {}
    }
    if let Some(c) = &q.comment {
        let p = f.text(&contains_pattern(c));
        f.push(format!("comment LIKE {p} ESCAPE '\\'"));
    }
    for (prefix, values) in [
        ("label+:", &q.added_labels),
        ("label-:", &q.removed_labels),
        ("tag+:", &q.added_tags),
        ("tag-:", &q.removed_tags),
    ] {
        if values.is_empty() {
            continue;
        }
        let any: Vec<String> = values
            .iter()
            .map(|v| {
                let p = f.text(&contains_pattern(&format!(" {prefix}{v} ")));
                format!("terms LIKE {p} ESCAPE '\\'")
            })
            .collect();
        f.push(format!("({})", any.join(" OR ")));
    }
    f.any_of("report_type", &q.report_types);
    f.any_of("mod_tool_name", &q.mod_tools);
    let dir = if q.ascending { "ASC" } else { "DESC" };
    if let Some(after) = q.after {
        let p = f.bind(Bind::Int(after));
        f.push(format!("id {} {p}", if q.ascending { ">" } else { "<" }));
    }
    let limit = f.bind(Bind::Int(i64::from(q.limit)));
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM mod_events{} ORDER BY id {dir} LIMIT {limit}",
        f.clause()
    );
    (sql, f)
}

/// The queue a subject belongs to when moderators split the queue (`queueCount`): a stable
/// hash of the account, so an account and its records land in the same queue.
pub fn queue_bucket(did: &str) -> i64 {
    // FNV-1a, 31 bits: the same on every platform and in both databases.
    let mut h: u32 = 0x811c_9dc5;
    for b in did.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    i64::from(h & 0x7fff_ffff)
}

const EVENT_COLUMNS: &str = "id, type, subject_did, subject_uri, subject_cid, subject, event, \
    blob_cids, created_by, created_at, mod_tool, external_id, comment, report_type, terms";

const STATUS_COLUMNS: &str = "id, did, uri, cid, review_state, takendown, appealed, \
    suspend_until, mute_until, mute_reporting_until, last_reviewed_by, last_reviewed_at, \
    last_reported_at, last_appealed_at, priority_score, comment, tags, blob_cids, created_at, \
    updated_at";

/// The status columns `mod_subjects`' secondary indexes hold (besides `did`, which never
/// changes for a subject).
const INDEXED_STATUS_COLUMNS: &[&str] = &[
    "review_state",
    "takendown",
    "appealed",
    "last_reviewed_at",
    "last_reported_at",
    "priority_score",
];

/// The status columns an upsert may change that no index holds.
const UNINDEXED_STATUS_COLUMNS: &[&str] = &[
    "cid",
    "suspend_until",
    "mute_until",
    "mute_reporting_until",
    "last_reviewed_by",
    "last_appealed_at",
    "comment",
    "tags",
    "blob_cids",
    "updated_at",
];

/// `a = excluded.a, b = excluded.b` for an upsert's `DO UPDATE SET`.
fn set_from_excluded<'a>(columns: impl Iterator<Item = &'a &'a str>) -> String {
    columns
        .map(|c| format!("{c} = excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The values of a status in [`INDEXED_STATUS_COLUMNS`]: when a change leaves them as
/// stored, the upsert sets only the other columns, so SQLite (which rewrites every index
/// on a column named in `SET`, whether its value changed or not) leaves those indexes be.
#[derive(PartialEq)]
struct IndexedValues {
    review_state: String,
    takendown: bool,
    appealed: bool,
    last_reviewed_at: Option<String>,
    last_reported_at: Option<String>,
    priority_score: i64,
}

impl IndexedValues {
    fn of(s: &SubjectStatus) -> Self {
        IndexedValues {
            review_state: s.review_state.clone(),
            takendown: s.takendown,
            appealed: s.appealed,
            last_reviewed_at: s.last_reviewed_at.clone(),
            last_reported_at: s.last_reported_at.clone(),
            priority_score: s.priority_score,
        }
    }
}

/// Entries per run of a batch: IN lists of keys and external ids stay far below both
/// backends' limits on bound parameters.
const RUN_ROWS: usize = BATCH_ROWS;

/// `n` placeholders from the `start`th: `$3, $4` (Postgres), or `?, ?` when `anonymous`
/// (SQLite: sqlx looks up every numbered parameter's name, which SQLite finds by a linear
/// scan, so a statement with thousands of them binds in quadratic time).
fn numbered(start: usize, n: usize, anonymous: bool) -> String {
    if anonymous {
        return vec!["?"; n].join(", ");
    }
    (start..start + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `($1, $2), ($3, $4)`: `rows` groups of `columns` placeholders (see [`numbered`]).
fn numbered_rows(rows: usize, columns: usize, anonymous: bool) -> String {
    let mut sql = String::new();
    if anonymous {
        crate::push_placeholders(&mut sql, rows, columns);
        return sql;
    }
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        sql.push_str(&numbered(1 + r * columns, columns, false));
        sql.push(')');
    }
    sql
}

/// The distinct values, in first-seen order.
fn unique<'a>(values: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

fn json_list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

fn parse_list(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

fn never(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// One schema for both backends: `$ID` is the id column type, `$INT` the integer type,
/// `$KEY` the text type of keys compared bytewise.
fn schema(id: &str, int: &str, key: &str) -> String {
    format!(
        r#"
CREATE TABLE IF NOT EXISTS mod_events (
    id {id},
    type TEXT NOT NULL,
    subject_key {key} NOT NULL,
    subject_did {key} NOT NULL,
    subject_uri {key},
    subject_cid TEXT,
    subject_collection TEXT,
    subject TEXT NOT NULL,
    event TEXT NOT NULL,
    blob_cids TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    mod_tool TEXT,
    mod_tool_name TEXT,
    external_id TEXT,
    comment TEXT,
    report_type TEXT,
    terms TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS mod_events_subject ON mod_events (subject_key, id);
CREATE INDEX IF NOT EXISTS mod_events_did ON mod_events (subject_did, id);
CREATE INDEX IF NOT EXISTS mod_events_creator ON mod_events (created_by, id);
CREATE INDEX IF NOT EXISTS mod_events_type ON mod_events (type, id);
CREATE UNIQUE INDEX IF NOT EXISTS mod_events_external
    ON mod_events (subject_key, type, external_id) WHERE external_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS mod_subjects (
    id {id},
    subject_key {key} NOT NULL UNIQUE,
    did {key} NOT NULL,
    uri {key},
    cid TEXT,
    collection TEXT,
    review_state TEXT NOT NULL,
    takendown BOOLEAN NOT NULL,
    appealed BOOLEAN NOT NULL,
    suspend_until TEXT,
    mute_until TEXT NOT NULL,
    mute_reporting_until TEXT,
    last_reviewed_by TEXT,
    last_reviewed_at TEXT NOT NULL,
    last_reported_at TEXT NOT NULL,
    last_appealed_at TEXT,
    priority_score {int} NOT NULL,
    comment TEXT,
    tags TEXT NOT NULL,
    blob_cids TEXT NOT NULL,
    queue_bucket {int} NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS mod_subjects_did ON mod_subjects (did);
CREATE INDEX IF NOT EXISTS mod_subjects_reported ON mod_subjects (last_reported_at, id);
CREATE INDEX IF NOT EXISTS mod_subjects_reviewed ON mod_subjects (last_reviewed_at, id);
CREATE INDEX IF NOT EXISTS mod_subjects_priority ON mod_subjects (priority_score, id);
CREATE INDEX IF NOT EXISTS mod_subjects_state_reported
    ON mod_subjects (review_state, last_reported_at, id);
CREATE INDEX IF NOT EXISTS mod_subjects_state_reviewed
    ON mod_subjects (review_state, last_reviewed_at, id);
CREATE INDEX IF NOT EXISTS mod_subjects_state_priority
    ON mod_subjects (review_state, priority_score, id);
CREATE INDEX IF NOT EXISTS mod_subjects_appealed
    ON mod_subjects (last_reported_at, id) WHERE appealed;
CREATE INDEX IF NOT EXISTS mod_subjects_takendown
    ON mod_subjects (last_reviewed_at, id) WHERE takendown;
CREATE TABLE IF NOT EXISTS mod_subject_tags (
    tag TEXT NOT NULL,
    subject_id {int} NOT NULL,
    PRIMARY KEY (tag, subject_id)
);
CREATE TABLE IF NOT EXISTS mod_members (
    did TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    disabled BOOLEAN NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    last_updated_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS mod_records (
    uri TEXT PRIMARY KEY,
    cid TEXT NOT NULL,
    value TEXT NOT NULL,
    indexed_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS mod_audit (
    id {id},
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    method TEXT NOT NULL,
    input TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS mod_cursors (
    name TEXT PRIMARY KEY,
    value {int} NOT NULL
);
"#
    )
}

/// Implements [`ModStore`] for a pool type; the backends differ in how a write transaction
/// starts and how writers are serialised.
macro_rules! mod_store {
    ($store:ident, $db:ty, $begin:expr, $serialise:expr, $lock_row:expr, $anonymous:expr) => {
        /// Whether the batch statements use `?` placeholders (see [`numbered`]).
        const ANONYMOUS: bool = $anonymous;

        fn bind_all<'q>(
            mut q: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>>,
            binds: &'q [Bind],
        ) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>> {
            for b in binds {
                q = match b {
                    Bind::Text(s) => q.bind(s.as_str()),
                    Bind::Int(i) => q.bind(*i),
                };
            }
            q
        }

        fn event_row(r: &<$db as sqlx::Database>::Row) -> ModEventRow {
            let did: String = r.get(2);
            let uri: Option<String> = r.get(3);
            let terms: String = r.get(14);
            let event_json: String = r.get(6);
            ModEventRow {
                id: r.get(0),
                event: NewModEvent {
                    event_type: r.get(1),
                    subject: SubjectRef {
                        did,
                        uri,
                        cid: r.get(4),
                    },
                    subject_json: r.get(5),
                    event_json,
                    blob_cids: parse_list(&r.get::<String, _>(7)),
                    created_by: r.get(8),
                    created_at: r.get(9),
                    mod_tool: r.get(10),
                    external_id: r.get(11),
                    comment: r.get(12),
                    report_type: r.get(13),
                    added_labels: terms_of(&terms, "label+:"),
                    removed_labels: terms_of(&terms, "label-:"),
                    added_tags: terms_of(&terms, "tag+:"),
                    removed_tags: terms_of(&terms, "tag-:"),
                },
            }
        }

        fn status_row(r: &<$db as sqlx::Database>::Row) -> SubjectStatus {
            SubjectStatus {
                id: r.get(0),
                did: r.get(1),
                uri: r.get(2),
                cid: r.get(3),
                review_state: r.get(4),
                takendown: r.get(5),
                appealed: r.get(6),
                suspend_until: r.get(7),
                mute_until: never(r.get(8)),
                mute_reporting_until: r.get(9),
                last_reviewed_by: r.get(10),
                last_reviewed_at: never(r.get(11)),
                last_reported_at: never(r.get(12)),
                last_appealed_at: r.get(13),
                priority_score: r.get(14),
                comment: r.get(15),
                tags: parse_list(&r.get::<String, _>(16)),
                blob_cids: parse_list(&r.get::<String, _>(17)),
                created_at: r.get(18),
                updated_at: r.get(19),
            }
        }

        fn member_row(r: &<$db as sqlx::Database>::Row) -> Member {
            Member {
                did: r.get(0),
                role: r.get(1),
                disabled: r.get(2),
                created_at: r.get(3),
                updated_at: r.get(4),
                last_updated_by: r.get(5),
            }
        }

        const MEMBER_COLUMNS: &str =
            "did, role, disabled, created_at, updated_at, last_updated_by";

        /// Files `batch` inside the caller's transaction, set-based: per run of entries one
        /// read of the external ids and of the statuses, one insert of the events, one upsert
        /// of the statuses they leave and one of the record snapshots, instead of five round
        /// trips per event. A run ends after an entry that closes an account's record
        /// subjects (that update touches statuses the run may hold), so the next run reads
        /// them again.
        async fn emit_batch_in(
            tx: &mut <$db as sqlx::Database>::Connection,
            batch: &[BatchEmit<'_>],
        ) -> Result<Vec<Emitted>> {
            let mut out = Vec::with_capacity(batch.len());
            let mut start = 0;
            while start < batch.len() {
                let end = (start + RUN_ROWS).min(batch.len());
                start += emit_run(tx, &batch[start..end], &mut out).await?;
            }
            Ok(out)
        }

        /// One run of [`emit_batch_in`]: files a prefix of `entries`, returns its length.
        async fn emit_run(
            tx: &mut <$db as sqlx::Database>::Connection,
            entries: &[BatchEmit<'_>],
            out: &mut Vec<Emitted>,
        ) -> Result<usize> {
            let keys: Vec<&str> = unique(entries.iter().map(|b| b.event.subject.key()));
            let externals: Vec<&str> =
                unique(entries.iter().filter_map(|b| b.event.external_id.as_deref()));
            let mut seen: std::collections::HashSet<(String, String, String)> =
                std::collections::HashSet::new();
            if !externals.is_empty() {
                // Both lists padded to one length: a few statement shapes, not one per pair
                // of lengths.
                let places = padded_len(keys.len().max(externals.len()));
                let sql = format!(
                    "SELECT subject_key, type, external_id FROM mod_events \
                     WHERE subject_key IN ({}) AND external_id IN ({})",
                    numbered(1, places, ANONYMOUS),
                    numbered(1 + places, places, ANONYMOUS)
                );
                let mut q = sqlx::query(&sql);
                for v in padded(&keys, places).chain(padded(&externals, places)) {
                    q = q.bind(*v);
                }
                for r in q.fetch_all(&mut *tx).await.map_err(err("checking external ids"))? {
                    seen.insert((r.get(0), r.get(1), r.get(2)));
                }
            }
            let places = padded_len(keys.len());
            let sql = format!(
                "SELECT {STATUS_COLUMNS}, subject_key FROM mod_subjects \
                 WHERE subject_key IN ({}){}",
                numbered(1, places, ANONYMOUS),
                $lock_row
            );
            let mut q = sqlx::query(&sql);
            for k in padded(&keys, places) {
                q = q.bind(*k);
            }
            let mut statuses: std::collections::HashMap<String, SubjectStatus> = q
                .fetch_all(&mut *tx)
                .await
                .map_err(err("reading subject statuses"))?
                .iter()
                .map(|r| (r.get::<String, _>(20), status_row(r)))
                .collect();
            let stored_tags: std::collections::HashMap<String, Vec<String>> = statuses
                .iter()
                .map(|(k, s)| (k.clone(), s.tags.clone()))
                .collect();
            let stored_indexed: std::collections::HashMap<String, IndexedValues> = statuses
                .iter()
                .map(|(k, s)| (k.clone(), IndexedValues::of(s)))
                .collect();
            // What the run writes: events in order, and per subject the last status and
            // record snapshot.
            let first_out = out.len();
            let mut appended: Vec<(usize, &NewModEvent)> = Vec::new();
            let mut changed: Vec<(&str, &SubjectRef)> = Vec::new();
            let mut records: std::collections::HashMap<&str, &RecordSnapshot> =
                std::collections::HashMap::new();
            let mut close_account: Option<&NewModEvent> = None;
            let mut taken = 0;
            for entry in entries {
                taken += 1;
                let e = entry.event;
                let key = e.subject.key();
                if let Some(external) = &e.external_id {
                    let id = (key.to_string(), e.event_type.clone(), external.clone());
                    if !seen.insert(id) {
                        out.push(Emitted::DuplicateExternalId);
                        continue;
                    }
                }
                if let Some(r) = entry.record {
                    records.insert(r.uri.as_str(), r);
                }
                let next = (entry.transition)(statuses.get(key));
                if let Some(s) = next.status {
                    if !changed.iter().any(|(k, _)| *k == key) {
                        changed.push((key, &e.subject));
                    }
                    statuses.insert(key.to_string(), s);
                }
                appended.push((out.len(), e));
                out.push(Emitted::Appended {
                    event: ModEventRow { id: 0, event: e.clone() },
                    status: statuses.get(key).cloned(),
                });
                if next.close_account_records {
                    close_account = Some(e);
                    break;
                }
            }
            let records: Vec<&RecordSnapshot> = records.into_values().collect();
            for chunk in statement_chunks(&records) {
                let sql = format!(
                    "INSERT INTO mod_records (uri, cid, value, indexed_at) VALUES {} \
                     ON CONFLICT (uri) DO UPDATE SET cid = excluded.cid, \
                     value = excluded.value, indexed_at = excluded.indexed_at",
                    numbered_rows(chunk.len(), 4, ANONYMOUS)
                );
                let mut q = sqlx::query(&sql);
                for r in chunk {
                    q = q.bind(&r.uri).bind(&r.cid).bind(&r.value).bind(&r.indexed_at);
                }
                q.execute(&mut *tx).await.map_err(err("keeping record snapshots"))?;
            }
            for chunk in statement_chunks(&appended) {
                let sql = format!(
                    "INSERT INTO mod_events (type, subject_key, subject_did, subject_uri, \
                     subject_cid, subject_collection, subject, event, blob_cids, \
                     created_by, created_at, mod_tool, mod_tool_name, external_id, comment, \
                     report_type, terms) VALUES {} RETURNING id",
                    numbered_rows(chunk.len(), 17, ANONYMOUS)
                );
                let mut q = sqlx::query(&sql);
                for (_, e) in chunk {
                    q = q
                        .bind(&e.event_type)
                        .bind(e.subject.key())
                        .bind(&e.subject.did)
                        .bind(&e.subject.uri)
                        .bind(&e.subject.cid)
                        .bind(e.subject.collection())
                        .bind(&e.subject_json)
                        .bind(&e.event_json)
                        .bind(json_list(&e.blob_cids))
                        .bind(&e.created_by)
                        .bind(&e.created_at)
                        .bind(&e.mod_tool)
                        .bind(e.tool_name())
                        .bind(&e.external_id)
                        .bind(&e.comment)
                        .bind(&e.report_type)
                        .bind(event_terms(e));
                }
                // Rows are inserted in the order of VALUES under the write lock, so their
                // ids increase in that order whatever order RETURNING lists them in.
                let mut ids: Vec<i64> = q
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(err("appending moderation events"))?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                ids.sort_unstable();
                for ((at, _), id) in chunk.iter().zip(ids) {
                    if let Emitted::Appended { event, .. } = &mut out[*at] {
                        event.id = id;
                    }
                }
            }
            let mut written: std::collections::HashMap<String, SubjectStatus> =
                std::collections::HashMap::new();
            // Subjects whose indexed columns keep their stored values (a tag, a comment, a
            // mute) are upserted by a statement that does not name those columns.
            let (unindexed, indexed): (Vec<_>, Vec<_>) =
                changed.iter().copied().partition(|(key, _)| {
                    stored_indexed
                        .get(*key)
                        .is_some_and(|stored| *stored == IndexedValues::of(&statuses[*key]))
                });
            let all_columns = set_from_excluded(
                UNINDEXED_STATUS_COLUMNS.iter().chain(INDEXED_STATUS_COLUMNS),
            );
            let unindexed_columns = set_from_excluded(UNINDEXED_STATUS_COLUMNS.iter());
            for (subjects, set) in [(&indexed, &all_columns), (&unindexed, &unindexed_columns)] {
                for chunk in statement_chunks(subjects) {
                    let sql = format!(
                        "INSERT INTO mod_subjects (subject_key, did, uri, cid, collection, \
                         review_state, takendown, appealed, suspend_until, mute_until, \
                         mute_reporting_until, last_reviewed_by, last_reviewed_at, \
                         last_reported_at, last_appealed_at, priority_score, comment, tags, \
                         blob_cids, queue_bucket, created_at, updated_at) VALUES {} \
                         ON CONFLICT (subject_key) DO UPDATE SET {set} \
                         RETURNING {STATUS_COLUMNS}, subject_key",
                        numbered_rows(chunk.len(), 22, ANONYMOUS)
                    );
                    let mut q = sqlx::query(&sql);
                    for (key, subject) in chunk {
                        let s = &statuses[*key];
                        q = q
                            .bind(*key)
                            .bind(&subject.did)
                            .bind(&subject.uri)
                            .bind(&s.cid)
                            .bind(subject.collection())
                            .bind(&s.review_state)
                            .bind(s.takendown)
                            .bind(s.appealed)
                            .bind(&s.suspend_until)
                            .bind(s.mute_until.clone().unwrap_or_default())
                            .bind(&s.mute_reporting_until)
                            .bind(&s.last_reviewed_by)
                            .bind(s.last_reviewed_at.clone().unwrap_or_default())
                            .bind(s.last_reported_at.clone().unwrap_or_default())
                            .bind(&s.last_appealed_at)
                            .bind(s.priority_score)
                            .bind(&s.comment)
                            .bind(json_list(&s.tags))
                            .bind(json_list(&s.blob_cids))
                            .bind(queue_bucket(&subject.did))
                            .bind(&s.created_at)
                            .bind(&s.updated_at);
                    }
                    let rows = q
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(err("writing subject statuses"))?;
                    for r in rows {
                        written.insert(r.get(20), status_row(&r));
                    }
                }
            }
            // The tag index follows each subject's tags by the difference: the tags it lost
            // are deleted and the ones it gained inserted, each by the index's own key
            // (tag, subject), a few statements per run whatever the number of subjects.
            let mut lost: Vec<(&str, i64)> = Vec::new();
            let mut gained: Vec<(&str, i64)> = Vec::new();
            for (key, status) in &written {
                let stored = stored_tags.get(key).map_or(&[][..], Vec::as_slice);
                lost.extend(
                    stored
                        .iter()
                        .filter(|t| !status.tags.contains(t))
                        .map(|t| (t.as_str(), status.id)),
                );
                gained.extend(
                    status
                        .tags
                        .iter()
                        .filter(|t| !stored.contains(t))
                        .map(|t| (t.as_str(), status.id)),
                );
            }
            for rows in statement_chunks(&lost) {
                let pairs: Vec<String> = (0..rows.len())
                    .map(|r| {
                        format!(
                            "(tag = {} AND subject_id = {})",
                            numbered(1 + 2 * r, 1, ANONYMOUS),
                            numbered(2 + 2 * r, 1, ANONYMOUS)
                        )
                    })
                    .collect();
                let sql = format!("DELETE FROM mod_subject_tags WHERE {}", pairs.join(" OR "));
                let mut q = sqlx::query(&sql);
                for (tag, id) in rows {
                    q = q.bind(*tag).bind(*id);
                }
                q.execute(&mut *tx).await.map_err(err("removing subject tags"))?;
            }
            for rows in statement_chunks(&gained) {
                let sql = format!(
                    "INSERT INTO mod_subject_tags (tag, subject_id) VALUES {} \
                     ON CONFLICT DO NOTHING",
                    numbered_rows(rows.len(), 2, ANONYMOUS)
                );
                let mut q = sqlx::query(&sql);
                for (tag, id) in rows {
                    q = q.bind(*tag).bind(*id);
                }
                q.execute(&mut *tx).await.map_err(err("writing subject tags"))?;
            }
            // Each event reports the status it left; the last one on a subject reports the
            // row as written.
            let mut last_on_subject = std::collections::HashSet::new();
            for emitted in out[first_out..].iter_mut().rev() {
                if let Emitted::Appended { event, status: Some(status) } = emitted {
                    let Some(row) = written.get(event.event.subject.key()) else {
                        continue;
                    };
                    if last_on_subject.insert(event.event.subject.key().to_string()) {
                        *status = row.clone();
                    } else {
                        status.id = row.id;
                    }
                }
            }
            if let Some(e) = close_account {
                sqlx::query(
                    "UPDATE mod_subjects SET review_state = $1, last_reviewed_by = $2, \
                     last_reviewed_at = $3, updated_at = $4 WHERE did = $5 \
                     AND uri IS NOT NULL AND review_state IN ($6, $7)",
                )
                .bind(review::CLOSED)
                .bind(&e.created_by)
                .bind(&e.created_at)
                .bind(&e.created_at)
                .bind(&e.subject.did)
                .bind(review::OPEN)
                .bind(review::ESCALATED)
                .execute(&mut *tx)
                .await
                .map_err(err("closing the account's record subjects"))?;
            }
            Ok(taken)
        }

        async fn put_record_in(
            conn: &mut <$db as sqlx::Database>::Connection,
            r: &RecordSnapshot,
        ) -> Result<()> {
            sqlx::query(
                "INSERT INTO mod_records (uri, cid, value, indexed_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (uri) DO UPDATE SET cid = excluded.cid, value = excluded.value, \
                 indexed_at = excluded.indexed_at",
            )
            .bind(&r.uri)
            .bind(&r.cid)
            .bind(&r.value)
            .bind(&r.indexed_at)
            .execute(conn)
            .await
            .map_err(err("keeping a record snapshot"))?;
            Ok(())
        }

        impl $store {
            /// A write transaction, serialised with the other moderation writers.
            async fn begin_write(&self) -> Result<sqlx::Transaction<'static, $db>> {
                let mut tx = match $begin {
                    Some(begin) => self.pool.begin_with(begin).await,
                    None => self.pool.begin().await,
                }
                .map_err(err("starting a transaction"))?;
                if let Some(sql) = $serialise {
                    sqlx::query(sql)
                        .execute(&mut *tx)
                        .await
                        .map_err(err("serialising moderation writers"))?;
                }
                Ok(tx)
            }
        }

        impl ModStore for $store {
            fn emit<'a>(
                &'a self,
                e: &'a NewModEvent,
                transition: &'a (dyn Fn(Option<&SubjectStatus>) -> Transition + Send + Sync),
            ) -> StoreFuture<'a, Emitted> {
                Box::pin(async move {
                    let entry = BatchEmit { event: e, transition, record: None };
                    let mut tx = self.begin_write().await?;
                    let emitted = emit_batch_in(&mut tx, std::slice::from_ref(&entry))
                        .await?
                        .pop()
                        .unwrap_or(Emitted::DuplicateExternalId);
                    if matches!(emitted, Emitted::Appended { .. }) {
                        tx.commit().await.map_err(err("committing a moderation event"))?;
                    }
                    Ok(emitted)
                })
            }

            fn emit_batch<'a>(
                &'a self,
                batch: &'a [BatchEmit<'a>],
            ) -> StoreFuture<'a, Vec<Emitted>> {
                Box::pin(async move {
                    let mut tx = self.begin_write().await?;
                    let out = emit_batch_in(&mut tx, batch).await?;
                    tx.commit().await.map_err(err("committing moderation events"))?;
                    Ok(out)
                })
            }

            fn status<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<SubjectStatus>> {
                Box::pin(async move {
                    let sql = format!("SELECT {STATUS_COLUMNS} FROM mod_subjects WHERE subject_key = $1");
                    Ok(sqlx::query(&sql)
                        .bind(key)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(err("reading a subject status"))?
                        .map(|r| status_row(&r)))
                })
            }

            fn statuses<'a>(&'a self, query: &'a StatusQuery) -> StoreFuture<'a, StatusPage> {
                Box::pin(async move {
                    let mut f = status_filter(query);
                    let sql = status_sql(query, &mut f);
                    let rows = bind_all(sqlx::query(&sql), &f.binds)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(err("querying subject statuses"))?;
                    let statuses: Vec<SubjectStatus> = rows.iter().map(status_row).collect();
                    let cursor = (statuses.len() as u32 >= query.limit)
                        .then(|| statuses.last())
                        .flatten()
                        .map(|s| StatusCursor {
                            value: match query.sort {
                                StatusSort::LastReportedAt => {
                                    s.last_reported_at.clone().unwrap_or_default()
                                }
                                StatusSort::LastReviewedAt => {
                                    s.last_reviewed_at.clone().unwrap_or_default()
                                }
                                StatusSort::PriorityScore => s.priority_score.to_string(),
                            },
                            id: s.id,
                        });
                    Ok(StatusPage { statuses, cursor })
                })
            }

            fn event(&self, id: i64) -> StoreFuture<'_, Option<ModEventRow>> {
                Box::pin(async move {
                    let sql = format!("SELECT {EVENT_COLUMNS} FROM mod_events WHERE id = $1");
                    Ok(sqlx::query(&sql)
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(err("reading a moderation event"))?
                        .map(|r| event_row(&r)))
                })
            }

            fn events<'a>(&'a self, query: &'a EventQuery) -> StoreFuture<'a, Vec<ModEventRow>> {
                Box::pin(async move {
                    let (sql, f) = events_sql(query);
                    let rows = bind_all(sqlx::query(&sql), &f.binds)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(err("querying moderation events"))?;
                    Ok(rows.iter().map(event_row).collect())
                })
            }

            fn events_after(&self, after: i64, limit: u32) -> StoreFuture<'_, Vec<ModEventRow>> {
                Box::pin(async move {
                    let sql = format!(
                        "SELECT {EVENT_COLUMNS} FROM mod_events WHERE id > $1 ORDER BY id LIMIT $2"
                    );
                    let rows = sqlx::query(&sql)
                        .bind(after)
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(err("reading the moderation event log"))?;
                    Ok(rows.iter().map(event_row).collect())
                })
            }

            fn events_for_sink<'a>(
                &'a self,
                after: i64,
                limit: u32,
                selection: &'a EventSelection,
            ) -> StoreFuture<'a, EventPage> {
                Box::pin(async move {
                    // Event rows become visible in id order (one writer at a time), so every
                    // id up to the largest visible now is committed: the sink may resume
                    // after it.
                    let end: i64 = sqlx::query("SELECT COALESCE(MAX(id), 0) FROM mod_events")
                        .fetch_one(&self.pool)
                        .await
                        .map_err(err("reading the moderation event log"))?
                        .get(0);
                    if end <= after {
                        return Ok(EventPage::empty(after));
                    }
                    let mut sql = format!(
                        "SELECT {EVENT_COLUMNS} FROM mod_events WHERE id > $1 AND id <= $2"
                    );
                    let mut next = 3;
                    if !selection.types.is_empty() {
                        sql.push_str(&format!(
                            " AND type IN ({})",
                            numbered(next, selection.types.len(), false)
                        ));
                        next += selection.types.len();
                    }
                    let tool = match &selection.tool {
                        ToolSelection::Any => None,
                        ToolSelection::Only(t) => {
                            sql.push_str(&format!(" AND mod_tool_name = ${next}"));
                            Some(t)
                        }
                        ToolSelection::Except(t) => {
                            sql.push_str(&format!(
                                " AND (mod_tool_name IS NULL OR mod_tool_name <> ${next})"
                            ));
                            Some(t)
                        }
                    };
                    if tool.is_some() {
                        next += 1;
                    }
                    sql.push_str(&format!(" ORDER BY id LIMIT ${next}"));
                    let mut q = sqlx::query(&sql).bind(after).bind(end);
                    for t in &selection.types {
                        q = q.bind(t.as_str());
                    }
                    if let Some(t) = tool {
                        q = q.bind(t.as_str());
                    }
                    let rows: Vec<ModEventRow> = q
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(err("reading the moderation event log"))?
                        .iter()
                        .map(event_row)
                        .collect();
                    Ok(EventPage::new(rows, limit, end, |r| r.id))
                })
            }

            fn members(&self) -> StoreFuture<'_, Vec<Member>> {
                Box::pin(async move {
                    let sql = format!("SELECT {MEMBER_COLUMNS} FROM mod_members ORDER BY created_at, did");
                    let rows = sqlx::query(&sql)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(err("listing team members"))?;
                    Ok(rows.iter().map(member_row).collect())
                })
            }

            fn member<'a>(&'a self, did: &'a str) -> StoreFuture<'a, Option<Member>> {
                Box::pin(async move {
                    let sql = format!("SELECT {MEMBER_COLUMNS} FROM mod_members WHERE did = $1");
                    Ok(sqlx::query(&sql)
                        .bind(did)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(err("reading a team member"))?
                        .map(|r| member_row(&r)))
                })
            }

            fn add_member<'a>(&'a self, m: &'a Member) -> StoreFuture<'a, bool> {
                Box::pin(async move {
                    let added = sqlx::query(
                        "INSERT INTO mod_members (did, role, disabled, created_at, updated_at, \
                         last_updated_by) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                    )
                    .bind(&m.did)
                    .bind(&m.role)
                    .bind(m.disabled)
                    .bind(&m.created_at)
                    .bind(&m.updated_at)
                    .bind(&m.last_updated_by)
                    .execute(&self.pool)
                    .await
                    .map_err(err("adding a team member"))?
                    .rows_affected();
                    Ok(added == 1)
                })
            }

            fn update_member<'a>(&'a self, m: &'a Member) -> StoreFuture<'a, bool> {
                Box::pin(async move {
                    let n = sqlx::query(
                        "UPDATE mod_members SET role = $1, disabled = $2, updated_at = $3, \
                         last_updated_by = $4 WHERE did = $5",
                    )
                    .bind(&m.role)
                    .bind(m.disabled)
                    .bind(&m.updated_at)
                    .bind(&m.last_updated_by)
                    .bind(&m.did)
                    .execute(&self.pool)
                    .await
                    .map_err(err("updating a team member"))?
                    .rows_affected();
                    Ok(n == 1)
                })
            }

            fn delete_member<'a>(&'a self, did: &'a str) -> StoreFuture<'a, bool> {
                Box::pin(async move {
                    let n = sqlx::query("DELETE FROM mod_members WHERE did = $1")
                        .bind(did)
                        .execute(&self.pool)
                        .await
                        .map_err(err("removing a team member"))?
                        .rows_affected();
                    Ok(n == 1)
                })
            }

            fn put_record<'a>(&'a self, r: &'a RecordSnapshot) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    let mut conn = self.pool.acquire().await.map_err(err("keeping a record snapshot"))?;
                    put_record_in(&mut conn, r).await
                })
            }

            fn record<'a>(&'a self, uri: &'a str) -> StoreFuture<'a, Option<RecordSnapshot>> {
                Box::pin(async move {
                    Ok(sqlx::query("SELECT uri, cid, value, indexed_at FROM mod_records WHERE uri = $1")
                        .bind(uri)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(err("reading a record snapshot"))?
                        .map(|r| RecordSnapshot {
                            uri: r.get(0),
                            cid: r.get(1),
                            value: r.get(2),
                            indexed_at: r.get(3),
                        }))
                })
            }

            fn cursor<'a>(&'a self, name: &'a str) -> StoreFuture<'a, i64> {
                Box::pin(async move {
                    Ok(sqlx::query("SELECT value FROM mod_cursors WHERE name = $1")
                        .bind(name)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(err("reading a moderation sink cursor"))?
                        .map_or(0, |r| r.get::<i64, _>(0)))
                })
            }

            fn audit<'a>(&'a self, entry: &'a AuditEntry) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    sqlx::query("INSERT INTO mod_audit (at, actor, method, input) VALUES ($1, $2, $3, $4)")
                        .bind(&entry.at)
                        .bind(&entry.actor)
                        .bind(&entry.method)
                        .bind(&entry.input)
                        .execute(&self.pool)
                        .await
                        .map_err(err("appending to the audit trail"))?;
                    Ok(())
                })
            }

            fn audit_after(&self, after: i64, limit: u32) -> StoreFuture<'_, Vec<AuditEntry>> {
                Box::pin(async move {
                    let rows = sqlx::query(
                        "SELECT id, at, actor, method, input FROM mod_audit WHERE id > $1 ORDER BY id LIMIT $2",
                    )
                    .bind(after)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(err("reading the audit trail"))?;
                    Ok(rows
                        .iter()
                        .map(|r| AuditEntry {
                            id: r.get(0),
                            at: r.get(1),
                            actor: r.get(2),
                            method: r.get(3),
                            input: r.get(4),
                        })
                        .collect())
                })
            }

            fn set_cursor<'a>(&'a self, name: &'a str, value: i64) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO mod_cursors (name, value) VALUES ($1, $2) \
                         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    )
                    .bind(name)
                    .bind(value)
                    .execute(&self.pool)
                    .await
                    .map_err(err("moving a moderation sink cursor"))?;
                    Ok(())
                })
            }
        }
    };
}

/// The moderation queue's own database in the data directory.
///
/// Its own file, not a table set in [`crate::ENGINE_DB`]: SQLite has one writer and one WAL per
/// file, and a connection drops its page cache whenever another connection has committed to
/// the file. Sharing the file, the engine's effect writer (a commit every 50 ms) and the queue's
/// filing passes emptied each other's caches and waited on each other's write lock.
pub const MODERATION_DB: &str = "moderation.db";

/// Moderation in SQLite (the embedded default), in [`MODERATION_DB`].
#[derive(Debug, Clone)]
pub struct SqliteModStore {
    pool: sqlx::SqlitePool,
}

impl SqliteModStore {
    /// The moderation store in `dir`, with connections of its own: [`MODERATION_DB`], or
    /// [`crate::ENGINE_DB`] for a data directory whose queue is already there (the layout
    /// before the queue had a file of its own), so that no queue is left behind.
    pub async fn open(dir: &std::path::Path, connections: u32) -> Result<SqliteModStore> {
        let file = Self::file_in(dir).await?;
        if file == crate::ENGINE_DB {
            tracing::info!(
                "the moderation queue is in {} (data directory {}), where earlier versions kept it",
                crate::ENGINE_DB,
                dir.display()
            );
        }
        Self::with_pool(crate::open_pool_file(dir, file, connections).await?).await
    }

    /// Which file of `dir` holds (or will hold) the moderation store.
    pub async fn file_in(dir: &std::path::Path) -> Result<&'static str> {
        let engine = dir.join(crate::ENGINE_DB);
        if dir.join(MODERATION_DB).exists() || !engine.exists() {
            return Ok(MODERATION_DB);
        }
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&engine)
            .read_only(true);
        let mut conn = sqlx::ConnectOptions::connect(&options)
            .await
            .map_err(err(format!("opening {}", engine.display())))?;
        let legacy: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'mod_events'",
        )
        .fetch_optional(&mut conn)
        .await
        .map_err(err(format!("reading {}", engine.display())))?;
        let _ = sqlx::Connection::close(conn).await;
        Ok(if legacy.is_some() {
            crate::ENGINE_DB
        } else {
            MODERATION_DB
        })
    }

    /// The moderation store in `store`'s database, sharing its connections.
    pub async fn new(store: &crate::Store) -> Result<SqliteModStore> {
        Self::with_pool(store.pool.clone()).await
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn with_pool(pool: sqlx::SqlitePool) -> Result<SqliteModStore> {
        sqlx::raw_sql(&schema(
            "INTEGER PRIMARY KEY AUTOINCREMENT",
            "INTEGER",
            "TEXT",
        ))
        .execute(&pool)
        .await
        .map_err(err("creating the moderation schema"))?;
        Ok(SqliteModStore { pool })
    }
}

mod sqlite_impl {
    use super::*;
    // SQLite: `BEGIN IMMEDIATE` takes the write lock first, so reading the status then
    // writing it cannot race another writer.
    mod_store!(
        SqliteModStore,
        sqlx::Sqlite,
        Some("BEGIN IMMEDIATE"),
        None::<&str>,
        "",
        true
    );
}

/// Moderation in Postgres.
#[derive(Debug, Clone)]
pub struct PgModStore {
    pool: sqlx::PgPool,
}

/// The advisory lock key moderation writers take (arbitrary, fixed: "skywmodr").
const MOD_WRITE_LOCK: &str = "SELECT pg_advisory_xact_lock(8319665371496424306)";

impl PgModStore {
    /// Connects to `url` and creates the schema if missing (in `schema`, when given).
    pub async fn connect(url: &str, schema_name: Option<&str>) -> Result<PgModStore> {
        let pool = crate::labels::pg_pool(url, schema_name, 8).await?;
        sqlx::raw_sql(&schema(
            "BIGSERIAL PRIMARY KEY",
            "BIGINT",
            "TEXT COLLATE \"C\"",
        ))
        .execute(&pool)
        .await
        .map_err(err("creating the moderation schema"))?;
        Ok(PgModStore { pool })
    }

    /// The pool (for benchmarks that load data in bulk).
    pub fn pool(&self) -> &sqlx::PgPool {
        &self.pool
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

mod pg_impl {
    use super::*;
    mod_store!(
        PgModStore,
        sqlx::Postgres,
        None::<&str>,
        Some(MOD_WRITE_LOCK),
        " FOR UPDATE",
        false
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let c = StatusCursor {
            value: "2026-01-01T00:00:00.000Z".into(),
            id: 42,
        };
        assert_eq!(StatusCursor::decode(&c.encode()), Some(c));
        assert_eq!(StatusCursor::decode("nonsense"), None);
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(contains_pattern("50%_a"), "%50\\%\\_a%");
    }

    #[test]
    fn queue_bucket_is_stable() {
        assert_eq!(queue_bucket("did:plc:a"), queue_bucket("did:plc:a"));
        assert!(queue_bucket("did:plc:a") >= 0);
    }

    #[test]
    fn terms_round_trip() {
        let e = NewModEvent {
            event_type: "t".into(),
            subject: SubjectRef {
                did: "did:plc:a".into(),
                uri: None,
                cid: None,
            },
            subject_json: "{}".into(),
            event_json: "{}".into(),
            blob_cids: vec![],
            created_by: "did:plc:m".into(),
            created_at: "2026-01-01T00:00:00.000Z".into(),
            mod_tool: None,
            external_id: None,
            comment: None,
            report_type: None,
            added_labels: vec!["spam".into()],
            removed_labels: vec!["porn".into()],
            added_tags: vec!["a".into(), "b".into()],
            removed_tags: vec![],
        };
        let t = event_terms(&e);
        assert_eq!(terms_of(&t, "label+:"), vec!["spam"]);
        assert_eq!(terms_of(&t, "tag+:"), vec!["a", "b"]);
        assert!(terms_of(&t, "tag-:").is_empty());
    }
}

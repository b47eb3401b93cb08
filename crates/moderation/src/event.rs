//! Moderation events: the types served, their validation, who may emit them, and what each
//! does to a subject's status.
//!
//! [`transition`] is the state machine of `tools.ozone.moderation.defs#subjectStatusView`, as
//! Ozone applies it:
//!
//! - a report opens the subject (`reviewOpen`, `lastReportedAt`); an appeal (a report with
//!   the appeal reason, by the subject's own account) sets `appealed`, `lastAppealedAt` and
//!   escalates; a report by a muted reporter changes nothing;
//! - acknowledge closes; escalate escalates; takedown closes, sets `takendown` (and
//!   `suspendUntil` for a temporary one) and clears `appealed`; reverse takedown closes and
//!   clears `takendown` and `suspendUntil`; resolve appeal clears `appealed`;
//! - once escalated, a subject only leaves `reviewEscalated` for `reviewClosed`; `reviewNone`
//!   exists only for subjects whose first event needs no review (a label, a comment);
//! - mute / unmute set or clear `muteUntil` (default 24 h), mute / unmute reporter
//!   `muteReportingUntil`; a sticky comment becomes the status comment; tags are added and
//!   removed as a set; a priority score replaces the score.
//!
//! Reviews (acknowledge, escalate, takedown, reverse takedown, comment, mutes) record
//! `lastReviewedBy` and `lastReviewedAt`.

use crate::auth::Role;
use crate::{XrpcError, datetime_ms};
use serde_json::Value;
use skywarden_store::moderation::{SubjectRef, SubjectStatus, Transition, review};

/// The prefix of every event type.
pub const DEFS: &str = "tools.ozone.moderation.defs#";

/// The event types skywarden serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `modEventTakedown`
    Takedown,
    /// `modEventReverseTakedown`
    ReverseTakedown,
    /// `modEventAcknowledge`
    Acknowledge,
    /// `modEventEscalate`
    Escalate,
    /// `modEventComment`
    Comment,
    /// `modEventLabel`
    Label,
    /// `modEventReport`
    Report,
    /// `modEventMute`
    Mute,
    /// `modEventUnmute`
    Unmute,
    /// `modEventMuteReporter`
    MuteReporter,
    /// `modEventUnmuteReporter`
    UnmuteReporter,
    /// `modEventResolveAppeal`
    ResolveAppeal,
    /// `modEventTag`
    Tag,
    /// `modEventPriorityScore`
    PriorityScore,
    /// `modEventDivert` (recorded; skywarden diverts no blobs)
    Divert,
    /// `modEventEmail` (recorded; skywarden sends no email)
    Email,
}

const KINDS: &[(Kind, &str)] = &[
    (Kind::Takedown, "modEventTakedown"),
    (Kind::ReverseTakedown, "modEventReverseTakedown"),
    (Kind::Acknowledge, "modEventAcknowledge"),
    (Kind::Escalate, "modEventEscalate"),
    (Kind::Comment, "modEventComment"),
    (Kind::Label, "modEventLabel"),
    (Kind::Report, "modEventReport"),
    (Kind::Mute, "modEventMute"),
    (Kind::Unmute, "modEventUnmute"),
    (Kind::MuteReporter, "modEventMuteReporter"),
    (Kind::UnmuteReporter, "modEventUnmuteReporter"),
    (Kind::ResolveAppeal, "modEventResolveAppeal"),
    (Kind::Tag, "modEventTag"),
    (Kind::PriorityScore, "modEventPriorityScore"),
    (Kind::Divert, "modEventDivert"),
    (Kind::Email, "modEventEmail"),
];

impl Kind {
    /// The full `$type`.
    pub fn type_name(self) -> String {
        let name = KINDS
            .iter()
            .find(|(k, _)| *k == self)
            .map_or("", |(_, n)| n);
        format!("{DEFS}{name}")
    }

    /// The kind of a `$type`.
    pub fn from_type(t: &str) -> Option<Kind> {
        let name = t.strip_prefix(DEFS)?;
        KINDS.iter().find(|(_, n)| *n == name).map(|(k, _)| *k)
    }

    /// The least role that may emit it. As in Ozone, triage may not take down, reverse a
    /// takedown, label, resolve appeals, mute reporters, divert or email.
    pub fn required_role(self) -> Role {
        match self {
            Kind::Takedown
            | Kind::ReverseTakedown
            | Kind::Label
            | Kind::ResolveAppeal
            | Kind::MuteReporter
            | Kind::UnmuteReporter
            | Kind::Divert
            | Kind::Email => Role::Moderator,
            Kind::Acknowledge
            | Kind::Escalate
            | Kind::Comment
            | Kind::Report
            | Kind::Mute
            | Kind::Unmute
            | Kind::Tag
            | Kind::PriorityScore => Role::Triage,
        }
    }
}

/// Report reason types that make a report an appeal.
pub const APPEAL_REASONS: [&str; 2] = [
    "com.atproto.moderation.defs#reasonAppeal",
    "tools.ozone.report.defs#reasonAppeal",
];

/// Whether `reason` is a report reason type skywarden accepts: the legacy
/// `com.atproto.moderation.defs#reason*` and the `tools.ozone.report.defs#reason*` families.
pub fn valid_reason_type(reason: &str) -> bool {
    [
        "com.atproto.moderation.defs#reason",
        "tools.ozone.report.defs#reason",
    ]
    .iter()
    .any(|prefix| {
        reason
            .strip_prefix(prefix)
            .is_some_and(|name| !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()))
    })
}

/// Longest comment accepted, in bytes.
pub const MAX_COMMENT_BYTES: usize = 20_000;
/// Most label values or tags in one event.
pub const MAX_VALUES: usize = 100;

/// A validated event: its kind and the fields the state machine and the filters read.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The kind.
    pub kind: Kind,
    /// The event object as given (`$type` included).
    pub json: Value,
    /// `comment`.
    pub comment: Option<String>,
    /// `durationInHours`.
    pub duration_hours: Option<i64>,
    /// Label values created.
    pub create_labels: Vec<String>,
    /// Label values negated.
    pub negate_labels: Vec<String>,
    /// Tags added.
    pub add_tags: Vec<String>,
    /// Tags removed.
    pub remove_tags: Vec<String>,
    /// A report's reason type.
    pub report_type: Option<String>,
    /// A report by a muted reporter.
    pub reporter_muted: bool,
    /// `sticky` on a comment.
    pub sticky: bool,
    /// A priority score.
    pub score: Option<i64>,
    /// `acknowledgeAccountSubjects`.
    pub acknowledge_account_subjects: bool,
}

fn string_list(v: &Value, field: &str, required: bool) -> Result<Vec<String>, XrpcError> {
    match v.get(field) {
        None if !required => Ok(Vec::new()),
        None => Err(XrpcError::invalid(format!("event: `{field}` is required"))),
        Some(Value::Array(items)) => {
            if items.len() > MAX_VALUES {
                return Err(XrpcError::invalid(format!(
                    "event: `{field}` holds at most {MAX_VALUES} values"
                )));
            }
            items
                .iter()
                .map(|i| match i.as_str() {
                    Some(s) if !s.is_empty() && s.len() <= 128 && !s.contains(char::is_whitespace) => {
                        Ok(s.to_string())
                    }
                    _ => Err(XrpcError::invalid(format!(
                        "event: `{field}` entries are non-empty strings of at most 128 bytes without spaces"
                    ))),
                })
                .collect()
        }
        Some(_) => Err(XrpcError::invalid(format!(
            "event: `{field}` must be an array of strings"
        ))),
    }
}

/// Validates an `event` union object.
pub fn parse(event: &Value) -> Result<Parsed, XrpcError> {
    let t = event
        .get("$type")
        .and_then(Value::as_str)
        .ok_or_else(|| XrpcError::invalid("event: `$type` is required"))?;
    let kind = Kind::from_type(t).ok_or_else(|| {
        XrpcError::invalid(format!(
            "event type `{t}` is not served by skywarden (see docs/moderation.md for the list)"
        ))
    })?;
    let comment = match event.get("comment") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() <= MAX_COMMENT_BYTES => Some(s.clone()),
        Some(Value::String(_)) => {
            return Err(XrpcError::invalid(format!(
                "event: `comment` is longer than {MAX_COMMENT_BYTES} bytes"
            )));
        }
        Some(_) => return Err(XrpcError::invalid("event: `comment` must be a string")),
    };
    let duration_hours = match event.get("durationInHours") {
        None => None,
        Some(v) => match v.as_i64() {
            Some(h) if (0..=24 * 365 * 10).contains(&h) => Some(h),
            _ => {
                return Err(XrpcError::invalid(
                    "event: `durationInHours` must be an integer from 0 to 87600",
                ));
            }
        },
    };
    if kind == Kind::Mute && duration_hours.is_none() {
        return Err(XrpcError::invalid(
            "event: `durationInHours` is required for modEventMute",
        ));
    }
    let bool_field = |name: &str| -> Result<bool, XrpcError> {
        match event.get(name) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(XrpcError::invalid(format!(
                "event: `{name}` must be a boolean"
            ))),
        }
    };
    let (create_labels, negate_labels) = if kind == Kind::Label {
        let c = string_list(event, "createLabelVals", true)?;
        let n = string_list(event, "negateLabelVals", true)?;
        if c.is_empty() && n.is_empty() {
            return Err(XrpcError::invalid(
                "event: a label event creates or negates at least one value",
            ));
        }
        (c, n)
    } else {
        (Vec::new(), Vec::new())
    };
    let (add_tags, remove_tags) = if kind == Kind::Tag {
        (
            string_list(event, "add", true)?,
            string_list(event, "remove", true)?,
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let report_type = if kind == Kind::Report {
        let r = event
            .get("reportType")
            .and_then(Value::as_str)
            .ok_or_else(|| XrpcError::invalid("event: `reportType` is required"))?;
        if !valid_reason_type(r) {
            return Err(XrpcError::invalid(format!(
                "event: `{r}` is not a report reason type"
            )));
        }
        Some(r.to_string())
    } else {
        None
    };
    let score = if kind == Kind::PriorityScore {
        match event.get("score").and_then(Value::as_i64) {
            Some(s) if (0..=100).contains(&s) => Some(s),
            _ => {
                return Err(XrpcError::invalid(
                    "event: `score` must be an integer from 0 to 100",
                ));
            }
        }
    } else {
        None
    };
    if kind == Kind::Email && event.get("subjectLine").and_then(Value::as_str).is_none() {
        return Err(XrpcError::invalid("event: `subjectLine` is required"));
    }
    Ok(Parsed {
        kind,
        json: event.clone(),
        comment,
        duration_hours,
        create_labels,
        negate_labels,
        add_tags,
        remove_tags,
        report_type,
        reporter_muted: bool_field("isReporterMuted")?,
        sticky: bool_field("sticky")?,
        score,
        acknowledge_account_subjects: bool_field("acknowledgeAccountSubjects")?,
    })
}

/// What a transition needs besides the event and the current status.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// The subject.
    pub subject: &'a SubjectRef,
    /// Who emits.
    pub created_by: &'a str,
    /// The event's time (stored form).
    pub created_at: &'a str,
    /// The event's time in µs (for durations).
    pub now_micros: i64,
    /// Blob CIDs the event covers.
    pub blob_cids: &'a [String],
}

const HOUR_MICROS: i64 = 3_600_000_000;

/// The status after `event`, from `current`.
pub fn transition(event: &Parsed, current: Option<&SubjectStatus>, cx: &Context<'_>) -> Transition {
    let close_records = cx.subject.uri.is_none()
        && event.acknowledge_account_subjects
        && matches!(event.kind, Kind::Takedown | Kind::Acknowledge);
    if event.kind == Kind::Report && event.reporter_muted {
        // A muted reporter is recorded, and changes nothing.
        return Transition {
            status: None,
            close_account_records: false,
        };
    }
    let mut s = current.cloned().unwrap_or_else(|| SubjectStatus {
        did: cx.subject.did.clone(),
        uri: cx.subject.uri.clone(),
        review_state: review::NONE.to_string(),
        created_at: cx.created_at.to_string(),
        ..SubjectStatus::default()
    });
    let until = |hours: i64| datetime_ms(cx.now_micros.saturating_add(hours * HOUR_MICROS));
    let reviewed = |s: &mut SubjectStatus| {
        s.last_reviewed_by = Some(cx.created_by.to_string());
        s.last_reviewed_at = Some(cx.created_at.to_string());
    };
    let mut state = None;
    match event.kind {
        Kind::Acknowledge => {
            reviewed(&mut s);
            state = Some(review::CLOSED);
        }
        Kind::Report => {
            s.last_reported_at = Some(cx.created_at.to_string());
            state = Some(review::OPEN);
            if event
                .report_type
                .as_deref()
                .is_some_and(|r| APPEAL_REASONS.contains(&r))
            {
                s.appealed = true;
                s.last_appealed_at = Some(cx.created_at.to_string());
                state = Some(review::ESCALATED);
            }
        }
        Kind::Escalate => {
            reviewed(&mut s);
            state = Some(review::ESCALATED);
        }
        Kind::Takedown => {
            reviewed(&mut s);
            s.takendown = true;
            s.appealed = false;
            s.suspend_until = event.duration_hours.filter(|h| *h > 0).map(until);
            state = Some(review::CLOSED);
        }
        Kind::ReverseTakedown => {
            reviewed(&mut s);
            s.takendown = false;
            s.suspend_until = None;
            state = Some(review::CLOSED);
        }
        Kind::ResolveAppeal => s.appealed = false,
        Kind::Mute => {
            reviewed(&mut s);
            s.mute_until = Some(until(event.duration_hours.filter(|h| *h > 0).unwrap_or(24)));
        }
        Kind::Unmute => {
            reviewed(&mut s);
            s.mute_until = None;
        }
        Kind::MuteReporter => {
            reviewed(&mut s);
            s.mute_reporting_until =
                Some(until(event.duration_hours.filter(|h| *h > 0).unwrap_or(24)));
        }
        Kind::UnmuteReporter => {
            reviewed(&mut s);
            s.mute_reporting_until = None;
        }
        Kind::Comment => {
            reviewed(&mut s);
            if event.sticky {
                s.comment = event.comment.clone();
            }
        }
        Kind::Tag => {
            for tag in &event.add_tags {
                if !s.tags.contains(tag) {
                    s.tags.push(tag.clone());
                }
            }
            s.tags.retain(|t| !event.remove_tags.contains(t));
        }
        Kind::PriorityScore => s.priority_score = event.score.unwrap_or(s.priority_score),
        Kind::Label | Kind::Divert | Kind::Email => {}
    }
    if let Some(next) = state {
        // Escalated subjects leave escalation only by being closed.
        s.review_state = if current.is_some_and(|c| c.review_state == review::ESCALATED)
            && next != review::CLOSED
        {
            review::ESCALATED.to_string()
        } else {
            next.to_string()
        };
    }
    if cx.subject.cid.is_some() {
        s.cid = cx.subject.cid.clone();
    }
    if !cx.blob_cids.is_empty() {
        s.blob_cids = cx.blob_cids.to_vec();
    }
    s.updated_at = cx.created_at.to_string();
    Transition {
        status: Some(s),
        close_account_records: close_records,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(current: Option<&SubjectStatus>, event: Value) -> SubjectStatus {
        let subject = SubjectRef {
            did: "did:plc:subject".into(),
            uri: None,
            cid: None,
        };
        let cx = Context {
            subject: &subject,
            created_by: "did:plc:mod",
            created_at: "2026-01-01T00:00:00.000Z",
            now_micros: 1_767_225_600_000_000,
            blob_cids: &[],
        };
        let parsed = parse(&event).unwrap();
        transition(&parsed, current, &cx).status.unwrap()
    }

    fn ev(name: &str, extra: Value) -> Value {
        let mut v = json!({"$type": format!("{DEFS}{name}")});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    #[test]
    fn the_review_state_machine_follows_ozone() {
        let report = ev(
            "modEventReport",
            json!({"reportType": "com.atproto.moderation.defs#reasonSpam"}),
        );
        let s = step(None, report.clone());
        assert_eq!(s.review_state, review::OPEN);
        assert!(s.last_reported_at.is_some());
        let s = step(Some(&s), ev("modEventEscalate", json!({})));
        assert_eq!(s.review_state, review::ESCALATED);
        // Escalated stays escalated on a new report or a comment...
        let s = step(Some(&s), report.clone());
        assert_eq!(s.review_state, review::ESCALATED);
        let s = step(
            Some(&s),
            ev("modEventComment", json!({"comment": "c", "sticky": true})),
        );
        assert_eq!(
            (s.review_state.as_str(), s.comment.as_deref()),
            (review::ESCALATED, Some("c"))
        );
        // ...and leaves it by being closed.
        let s = step(
            Some(&s),
            ev("modEventTakedown", json!({"durationInHours": 48})),
        );
        assert!(s.takendown && s.suspend_until.is_some());
        assert_eq!(s.review_state, review::CLOSED);
        let appeal = ev(
            "modEventReport",
            json!({"reportType": "com.atproto.moderation.defs#reasonAppeal"}),
        );
        let s = step(Some(&s), appeal);
        assert!(s.appealed && s.last_appealed_at.is_some());
        assert_eq!(s.review_state, review::ESCALATED);
        let s = step(Some(&s), ev("modEventResolveAppeal", json!({})));
        assert!(!s.appealed);
        let s = step(Some(&s), ev("modEventReverseTakedown", json!({})));
        assert!(!s.takendown && s.suspend_until.is_none());
        assert_eq!(s.review_state, review::CLOSED);
        // reviewNone only for a first event that needs no review.
        let labelled = step(
            None,
            ev(
                "modEventLabel",
                json!({"createLabelVals": ["spam"], "negateLabelVals": []}),
            ),
        );
        assert_eq!(labelled.review_state, review::NONE);
        let s = step(
            Some(&s),
            ev(
                "modEventLabel",
                json!({"createLabelVals": ["spam"], "negateLabelVals": []}),
            ),
        );
        assert_eq!(s.review_state, review::CLOSED);
    }

    #[test]
    fn tags_mutes_and_scores() {
        let s = step(
            None,
            ev("modEventTag", json!({"add": ["a", "b", "a"], "remove": []})),
        );
        assert_eq!(s.tags, ["a", "b"]);
        let s = step(
            Some(&s),
            ev("modEventTag", json!({"add": ["c"], "remove": ["a"]})),
        );
        assert_eq!(s.tags, ["b", "c"]);
        let s = step(Some(&s), ev("modEventMute", json!({"durationInHours": 2})));
        assert_eq!(s.mute_until.as_deref(), Some("2026-01-01T02:00:00.000Z"));
        let s = step(Some(&s), ev("modEventUnmute", json!({})));
        assert_eq!(s.mute_until, None);
        let s = step(Some(&s), ev("modEventMuteReporter", json!({})));
        assert_eq!(
            s.mute_reporting_until.as_deref(),
            Some("2026-01-02T00:00:00.000Z")
        );
        let s = step(Some(&s), ev("modEventPriorityScore", json!({"score": 90})));
        assert_eq!(s.priority_score, 90);
    }

    #[test]
    fn bad_events_are_refused_with_the_field_named() {
        for (event, needle) in [
            (json!({}), "$type"),
            (
                json!({"$type": "tools.ozone.moderation.defs#ageAssuranceEvent"}),
                "not served",
            ),
            (ev("modEventMute", json!({})), "durationInHours"),
            (
                ev("modEventLabel", json!({"createLabelVals": []})),
                "negateLabelVals",
            ),
            (
                ev(
                    "modEventLabel",
                    json!({"createLabelVals": [], "negateLabelVals": []}),
                ),
                "at least one",
            ),
            (
                ev("modEventTag", json!({"add": ["has space"], "remove": []})),
                "without spaces",
            ),
            (
                ev("modEventReport", json!({"reportType": "nonsense"})),
                "reason type",
            ),
            (ev("modEventPriorityScore", json!({"score": 101})), "score"),
            (ev("modEventComment", json!({"comment": 5})), "comment"),
        ] {
            let e = parse(&event).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.message.contains(needle), "{}: {}", event, e.message);
        }
        assert!(valid_reason_type(
            "tools.ozone.report.defs#reasonHarassmentTroll"
        ));
        assert!(!valid_reason_type("com.atproto.moderation.defs#"));
    }

    #[test]
    fn muted_reporters_change_nothing() {
        let subject = SubjectRef {
            did: "did:plc:s".into(),
            uri: None,
            cid: None,
        };
        let cx = Context {
            subject: &subject,
            created_by: "did:plc:r",
            created_at: "2026-01-01T00:00:00.000Z",
            now_micros: 0,
            blob_cids: &[],
        };
        let p = parse(&ev(
            "modEventReport",
            json!({"reportType": "com.atproto.moderation.defs#reasonSpam", "isReporterMuted": true}),
        ))
        .unwrap();
        assert_eq!(transition(&p, None, &cx).status, None);
    }
}

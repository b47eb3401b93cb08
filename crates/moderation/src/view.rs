//! The JSON views of `tools.ozone.moderation.defs`: subjects, statuses, events.

use serde_json::{Map, Value, json};
use skywarden_store::moderation::{ModEventRow, SubjectRef, SubjectStatus};

/// The subject union: `com.atproto.admin.defs#repoRef` for an account,
/// `com.atproto.repo.strongRef` for a record.
pub fn subject(s: &SubjectRef) -> Value {
    match &s.uri {
        None => json!({"$type": "com.atproto.admin.defs#repoRef", "did": s.did}),
        Some(uri) => json!({
            "$type": "com.atproto.repo.strongRef",
            "uri": uri,
            "cid": s.cid.clone().unwrap_or_default(),
        }),
    }
}

fn put(o: &mut Map<String, Value>, key: &str, v: Option<impl Into<Value>>) {
    if let Some(v) = v {
        o.insert(key.into(), v.into());
    }
}

/// `subjectStatusView`.
pub fn status(s: &SubjectStatus, handle: Option<&str>) -> Value {
    let subject_ref = SubjectRef {
        did: s.did.clone(),
        uri: s.uri.clone(),
        cid: s.cid.clone(),
    };
    let mut o = Map::new();
    o.insert("id".into(), s.id.into());
    o.insert("subject".into(), subject(&subject_ref));
    o.insert("createdAt".into(), s.created_at.clone().into());
    o.insert("updatedAt".into(), s.updated_at.clone().into());
    o.insert("reviewState".into(), s.review_state.clone().into());
    o.insert("takendown".into(), s.takendown.into());
    o.insert("appealed".into(), s.appealed.into());
    o.insert("priorityScore".into(), s.priority_score.into());
    o.insert("tags".into(), s.tags.clone().into());
    if !s.blob_cids.is_empty() {
        o.insert("subjectBlobCids".into(), s.blob_cids.clone().into());
    }
    put(&mut o, "subjectRepoHandle", handle);
    put(&mut o, "comment", s.comment.clone());
    put(&mut o, "muteUntil", s.mute_until.clone());
    put(&mut o, "muteReportingUntil", s.mute_reporting_until.clone());
    put(&mut o, "lastReviewedBy", s.last_reviewed_by.clone());
    put(&mut o, "lastReviewedAt", s.last_reviewed_at.clone());
    put(&mut o, "lastReportedAt", s.last_reported_at.clone());
    put(&mut o, "lastAppealedAt", s.last_appealed_at.clone());
    put(&mut o, "suspendUntil", s.suspend_until.clone());
    Value::Object(o)
}

/// `modEventView`.
pub fn event(e: &ModEventRow) -> Value {
    let ev = &e.event;
    let mut o = Map::new();
    o.insert("id".into(), e.id.into());
    o.insert(
        "event".into(),
        serde_json::from_str(&ev.event_json).unwrap_or(Value::Null),
    );
    o.insert(
        "subject".into(),
        serde_json::from_str(&ev.subject_json).unwrap_or_else(|_| subject(&ev.subject)),
    );
    o.insert("subjectBlobCids".into(), ev.blob_cids.clone().into());
    o.insert("createdBy".into(), ev.created_by.clone().into());
    o.insert("createdAt".into(), ev.created_at.clone().into());
    if let Some(tool) = ev
        .mod_tool
        .as_deref()
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
    {
        o.insert("modTool".into(), tool);
    }
    Value::Object(o)
}

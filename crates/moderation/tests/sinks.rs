//! The sinks around the moderation event log: engine effects filed as events (explained,
//! de-duplicated on re-runs), and PDS enforcement against a local HTTP server that fails, then
//! succeeds, then refuses for good.

use serde_json::{Value, json};
use skywarden_moderation::auth::{KeyFuture, KeyResolver};
use skywarden_moderation::metrics::ModerationMetrics;
use skywarden_moderation::service::{Directory, Input, Moderation, ModerationConfig};
use skywarden_moderation::sets::ListSets;
use skywarden_moderation::sinks::{ENGINE_CURSOR, PdsEnforcement, engine_pass, event_pass};
use skywarden_store::moderation::{EventQuery, ModStore, SqliteModStore};
use skywarden_store::{NewEffect, Store};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct NoKeys;
impl KeyResolver for NoKeys {
    fn signing_key<'a>(&'a self, _: &'a str) -> KeyFuture<'a> {
        Box::pin(async { Ok(None) })
    }
}
struct NoHandles;
impl Directory for NoHandles {
    fn handle<'a>(
        &'a self,
        _: &'a str,
    ) -> Pin<Box<dyn Future<Output = Option<String>> + Send + 'a>> {
        Box::pin(async { None })
    }
}

const PASSWORD: &str = "sink-test-admin-password";

async fn service(store: &Store) -> (Arc<Moderation>, Arc<dyn ModStore>) {
    let mod_store: Arc<dyn ModStore> = Arc::new(SqliteModStore::new(store).await.unwrap());
    let m = Moderation::new(
        mod_store.clone(),
        Arc::new(NoKeys),
        Arc::new(NoHandles),
        None,
        ListSets::new(None, Arc::new(|| {})),
        ModerationConfig {
            service_did: "did:plc:service".into(),
            admin_password: Some(PASSWORD.into()),
            reports_per_minute: 30,
            pds_url: None,
            appview_url: None,
        },
        Arc::new(ModerationMetrics::default()),
        Arc::new(tokio::sync::Notify::new()),
    );
    (Arc::new(m), mod_store)
}

fn effect(key: &str, verb: &str, outcome: &str, action: Value, subject: &str) -> NewEffect {
    NewEffect {
        idempotency_key: key.into(),
        event_time: 1_790_000_000_000_000,
        cursor: 1,
        did: "did:plc:spammer".into(),
        rule: "copy-paste".into(),
        ruleset_version: "0123456789abcdef0123".into(),
        mode: if outcome == "shadow" {
            "shadow"
        } else {
            "live"
        }
        .into(),
        verb: verb.into(),
        subject: subject.into(),
        outcome: outcome.into(),
        action: action.to_string(),
    }
}

#[tokio::test]
async fn engine_effects_become_explained_events_once() {
    let store = Store::open_in_memory().await.unwrap();
    let (service, mod_store) = service(&store).await;
    let post = "at://did:plc:spammer/app.bsky.feed.post/3kabc";
    let cid = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm";
    let explanation = json!({"counters.copies.day": "7"});
    let effects = [
        effect(
            "k1",
            "report",
            "applied",
            json!({"action": {"report": "com.atproto.moderation.defs#reasonSpam", "comment": "seven copies"}, "subject": {"did": "did:plc:spammer"}, "explanation": explanation,
            "event": {"uri": post, "cid": cid, "time": "2026-09-01T00:00:00Z", "record": {"$type": "app.bsky.feed.post", "text": "copy seven"}}}),
            "did:plc:spammer",
        ),
        effect(
            "k2",
            "flag",
            "applied",
            json!({"action": {"flag": "copy-paste"}, "subject": {"did": "did:plc:spammer"}}),
            "did:plc:spammer",
        ),
        effect(
            "k3",
            "label",
            "applied",
            json!({"action": {"label": "spam", "expiresInSeconds": 7200}, "subject": {"uri": post, "cid": cid},
            "event": {"uri": post, "cid": cid, "time": "2026-09-01T00:00:00Z", "record": {"$type": "app.bsky.feed.post", "text": "buy now", "createdAt": "2026-09-01T00:00:00Z"}}}),
            post,
        ),
        effect(
            "k4",
            "takedown",
            "shadow",
            json!({"action": {"takedown": true}, "subject": {"did": "did:plc:spammer"}}),
            "did:plc:spammer",
        ),
        effect(
            "k5",
            "escalate",
            "applied",
            json!({"action": {"escalate": true}, "subject": {"uri": post, "cid": null}}),
            post,
        ),
        effect(
            "k6",
            "notify",
            "applied",
            json!({"action": {"notify": "mods"}, "subject": {"did": "did:plc:spammer"}}),
            "did:plc:spammer",
        ),
    ];
    let mut tx = store.begin().await.unwrap();
    for e in &effects {
        tx.insert_effect(e, 1_790_000_000_000_000).await.unwrap();
    }
    tx.commit().await.unwrap();

    assert!(!engine_pass(&store, &service, 100).await.unwrap());
    // A re-run of the whole log (a lost cursor) files nothing twice.
    store.set_sink_cursor(ENGINE_CURSOR, 0).await.unwrap();
    engine_pass(&store, &service, 100).await.unwrap();
    let events = mod_store
        .events(&EventQuery {
            ascending: true,
            limit: 100,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    let types: Vec<&str> = events
        .iter()
        .map(|e| e.event.event_type.rsplit('#').next().unwrap())
        .collect();
    // The shadow takedown, the delete-shaped escalation (no CID) and the webhook are not filed.
    assert_eq!(types, ["modEventReport", "modEventTag", "modEventLabel"]);
    let report: Value = serde_json::from_str(&events[0].event.event_json).unwrap();
    let comment = report["comment"].as_str().unwrap();
    assert!(comment.starts_with("seven copies"), "{comment}");
    assert!(
        comment.contains("rule `copy-paste`") && comment.contains("counters.copies.day: 7"),
        "{comment}"
    );
    assert_eq!(events[0].event.created_by, "did:plc:service");
    let tool: Value = serde_json::from_str(events[0].event.mod_tool.as_deref().unwrap()).unwrap();
    assert_eq!(tool["name"], "skywarden/rules");
    assert_eq!(tool["meta"]["rule"], "copy-paste");
    // An account subject has no record snapshot: the record the rule saw stays in the meta.
    assert_eq!(tool["meta"]["event"]["record"]["text"], "copy seven");
    assert_eq!(events[1].event.added_tags, ["flag:copy-paste"]);
    let label: Value = serde_json::from_str(&events[2].event.event_json).unwrap();
    assert_eq!(label["durationInHours"], 2);
    // For a record subject, the record is the subject's snapshot, not repeated in the meta.
    let tool: Value = serde_json::from_str(events[2].event.mod_tool.as_deref().unwrap()).unwrap();
    assert_eq!(tool["meta"]["event"]["uri"], post);
    assert_eq!(tool["meta"]["event"]["time"], "2026-09-01T00:00:00Z");
    assert!(tool["meta"]["event"].get("record").is_none(), "{tool}");
    assert_eq!(tool["meta"]["idempotencyKey"], "k3");
    // The labelled record was kept as evidence.
    let snapshot = mod_store.record(post).await.unwrap().unwrap();
    assert_eq!(snapshot.cid, cid);
    assert!(snapshot.value.contains("buy now"));
    // The queue shows the account open, tagged.
    let status = mod_store.status("did:plc:spammer").await.unwrap().unwrap();
    assert_eq!(
        status.review_state,
        "tools.ozone.moderation.defs#reviewOpen"
    );
    assert_eq!(status.tags, ["flag:copy-paste"]);
    let _ = service;
}

/// A PDS stand-in: answers each request with the next status of `script` (the last one
/// repeats), and records what it was sent.
async fn pds(script: Vec<u16>) -> (url::Url, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = url::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0; 65536];
            let mut got = Vec::new();
            // Read headers and the body (Content-Length).
            loop {
                let k = s.read(&mut buf).await.unwrap();
                if k == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..k]);
                let text = String::from_utf8_lossy(&got).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break;
                    }
                }
            }
            log.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&got).to_string());
            let status = *script.get(n).or(script.last()).unwrap();
            n += 1;
            let body = if status == 200 {
                "{}"
            } else {
                r#"{"error":"X","message":"x"}"#
            };
            let _ = s
                .write_all(format!("HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).as_bytes())
                .await;
        }
    });
    (url, seen)
}

#[tokio::test]
async fn pds_enforcement_retries_until_applied_and_skips_what_is_refused() {
    let store = Store::open_in_memory().await.unwrap();
    let (service, mod_store) = service(&store).await;
    let auth = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("admin:{PASSWORD}")
        )
    );
    let takedown = |did: &str| {
        json!({
            "event": {"$type": "tools.ozone.moderation.defs#modEventTakedown", "comment": "spam"},
            "subject": {"$type": "com.atproto.admin.defs#repoRef", "did": did},
            "createdBy": "did:plc:moderator",
        })
    };
    service
        .call(
            "tools.ozone.moderation.emitEvent",
            Some(&auth),
            Input::Body(takedown("did:plc:target")),
        )
        .await
        .unwrap();
    // 503, then 401 (a wrong password is retried too), then applied; then a refusal for good.
    let (url, seen) = pds(vec![503, 401, 200, 400]).await;
    let metrics = ModerationMetrics::default();
    let sink = PdsEnforcement::new(
        url,
        "pds-admin-secret".into(),
        Arc::new(ModerationMetrics::default()),
    );
    assert!(
        event_pass(mod_store.as_ref(), &sink, &metrics)
            .await
            .is_err()
    );
    assert!(
        event_pass(mod_store.as_ref(), &sink, &metrics)
            .await
            .is_err()
    );
    assert_eq!(
        mod_store.cursor("pds").await.unwrap(),
        0,
        "the cursor waits for the PDS"
    );
    event_pass(mod_store.as_ref(), &sink, &metrics)
        .await
        .unwrap();
    let first = mod_store.cursor("pds").await.unwrap();
    assert!(first > 0);
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        let request = &seen[2];
        assert!(
            request.starts_with("POST /xrpc/com.atproto.admin.updateSubjectStatus "),
            "{request}"
        );
        let expected = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            "admin:pds-admin-secret",
        );
        assert!(request.to_ascii_lowercase().contains(&format!(
            "authorization: basic {}",
            expected.to_ascii_lowercase()
        )));
        let body: Value = serde_json::from_str(request.split_once("\r\n\r\n").unwrap().1).unwrap();
        assert_eq!(body["subject"]["did"], "did:plc:target");
        assert_eq!(body["takedown"]["applied"], true);
    }
    // A reverse takedown the PDS refuses (400): skipped, the cursor moves on.
    let mut reverse = takedown("did:plc:elsewhere");
    reverse["event"] = json!({"$type": "tools.ozone.moderation.defs#modEventReverseTakedown"});
    service
        .call(
            "tools.ozone.moderation.emitEvent",
            Some(&auth),
            Input::Body(reverse),
        )
        .await
        .unwrap();
    event_pass(mod_store.as_ref(), &sink, &metrics)
        .await
        .unwrap();
    assert!(mod_store.cursor("pds").await.unwrap() > first);
    assert_eq!(seen.lock().unwrap().len(), 4);
}

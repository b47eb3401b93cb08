//! The label sink: applied label, negation, expiring and takedown effects become signed labels
//! once each (a second pass over the same effects appends nothing); other verbs and outcomes
//! none; a malformed effect is skipped and counted while the ones around it go through; and a
//! key rotation re-signs history so it verifies with the new key, keeping every `seq`.

use skywarden_atproto::crypto::{Curve, SigningKey};
use skywarden_atproto::syntax::Datetime;
use skywarden_labeler::hub::{HubConfig, LabelHub};
use skywarden_labeler::key::LabelerKey;
use skywarden_labeler::metrics::LabelerMetrics;
use skywarden_labeler::sink::{CURSOR, LabelSinkConfig, pass, resign_all};
use skywarden_labeler::stored_to_label;
use skywarden_store::labels::{LabelStore, SqliteLabelStore};
use skywarden_store::{NewEffect, Store};
use std::sync::Arc;

const DID: &str = "did:web:labels.example.org";

fn effect(
    key: &str,
    verb: &str,
    subject: &str,
    outcome: &str,
    action: serde_json::Value,
) -> NewEffect {
    NewEffect {
        idempotency_key: key.into(),
        event_time: 1,
        cursor: 1,
        did: "did:plc:author".into(),
        rule: "r".into(),
        ruleset_version: "v".into(),
        mode: "live".into(),
        verb: verb.into(),
        subject: subject.into(),
        outcome: outcome.into(),
        action: action.to_string(),
    }
}

#[tokio::test]
async fn effects_become_signed_labels_once_and_rotation_resigns_history() {
    let dir = std::env::temp_dir().join(format!("skywarden-label-sink-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::open(&dir).await.unwrap();
    let labels: Arc<dyn LabelStore> = Arc::new(SqliteLabelStore::new(&store).await.unwrap());
    let hub = LabelHub::new(
        labels.clone(),
        Arc::new(LabelerMetrics::default()),
        HubConfig::default(),
    )
    .await
    .unwrap();
    let post = "at://did:plc:author/app.bsky.feed.post/3l2s5xxv2ze2c";
    let cid = "bafyreifepiu23okq5zuyvyhsoiazv2ayrqp2l4idi4cr2yhlpuclelg7l4";
    let logged_at = Datetime::new("2026-12-01T12:00:00.000Z")
        .unwrap()
        .timestamp_micros();
    let mut tx = store.begin().await.unwrap();
    for e in [
        effect(
            "e1",
            "label",
            post,
            "applied",
            serde_json::json!({
                "action": { "label": "spam", "negate": false, "expiresInSeconds": null },
                "subject": { "uri": post, "cid": cid },
            }),
        ),
        effect(
            "e2",
            "label",
            "did:plc:author",
            "shadow",
            serde_json::json!({
                "action": { "label": "spam" }, "subject": { "did": "did:plc:author" },
            }),
        ),
        effect(
            "e3",
            "tag",
            "did:plc:author",
            "applied",
            serde_json::json!({
                "action": { "tag": ["x"] }, "subject": { "did": "did:plc:author" },
            }),
        ),
        effect(
            "e4",
            "label",
            "did:plc:author",
            "applied",
            serde_json::json!({ "action": 7 }),
        ),
        effect(
            "e5",
            "label",
            "did:plc:author",
            "applied",
            serde_json::json!({
                "action": { "label": "hold", "negate": false, "expiresInSeconds": 86400 },
                "subject": { "did": "did:plc:author" },
            }),
        ),
        // Negated when the post was deleted: no CID, yet it must replace the label on `cid`.
        effect(
            "e6",
            "negate_label",
            post,
            "applied",
            serde_json::json!({
                "action": { "label": "spam", "negate": true },
                "subject": { "uri": post, "cid": null },
            }),
        ),
        effect(
            "e7",
            "takedown",
            "did:plc:author",
            "applied",
            serde_json::json!({
                "action": { "takedown": true, "comment": "c" }, "subject": { "did": "did:plc:author" },
            }),
        ),
        effect(
            "e8",
            "label",
            "did:plc:author",
            "applied",
            serde_json::json!({
                "action": { "label": "x".repeat(200) }, "subject": { "did": "did:plc:author" },
            }),
        ),
    ] {
        tx.insert_effect(&e, logged_at).await.unwrap();
    }
    tx.commit().await.unwrap();

    let key_a = LabelerKey::new(SigningKey::generate(Curve::K256));
    let config = LabelSinkConfig {
        labeler_did: DID.into(),
        batch_size: 3,
    };
    while pass(&store, &hub, &key_a, &config).await.unwrap() {}
    let rows = labels.after(0, 100).await.unwrap();
    let got: Vec<(String, String, bool, Option<String>)> = rows
        .iter()
        .map(|r| {
            (
                r.label.uri.clone(),
                r.label.val.clone(),
                r.label.neg,
                r.label.cid.clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (post.into(), "spam".into(), false, Some(cid.into())),
            ("did:plc:author".into(), "hold".into(), false, None),
            (post.into(), "spam".into(), true, Some(cid.into())),
            ("did:plc:author".into(), "!takedown".into(), false, None),
        ],
        "applied label effects only; the malformed and oversized ones skipped"
    );
    assert_eq!(
        rows[0].label.cts, "2026-12-01T12:00:00.000Z",
        "cts is when the effect was logged"
    );
    assert_eq!(
        rows[1].label.exp.as_deref(),
        Some("2026-12-02T12:00:00.000Z")
    );
    for r in &rows {
        assert_eq!(r.label.src, DID);
        assert_eq!(r.label.signing_key, key_a.did_key());
        stored_to_label(&r.label).verify(&key_a.public()).unwrap();
    }

    // Running the sink over the same effects again (a crash before its cursor moved) adds
    // nothing: each label is keyed by its effect.
    store.set_sink_cursor(CURSOR, 0).await.unwrap();
    while pass(&store, &hub, &key_a, &config).await.unwrap() {}
    assert_eq!(labels.after(0, 100).await.unwrap().len(), 4);

    // Rotation: labels signed by the old key are re-signed with the new one, same seq.
    let key_b = LabelerKey::new(SigningKey::generate(Curve::P256));
    assert_eq!(resign_all(&hub, &key_b).await.unwrap(), 4);
    assert_eq!(
        resign_all(&hub, &key_b).await.unwrap(),
        0,
        "nothing left to re-sign"
    );
    let after = labels.after(0, 100).await.unwrap();
    assert_eq!(
        after.iter().map(|r| r.seq).collect::<Vec<_>>(),
        rows.iter().map(|r| r.seq).collect::<Vec<_>>()
    );
    for r in &after {
        assert_eq!(r.label.signing_key, key_b.did_key());
        stored_to_label(&r.label).verify(&key_b.public()).unwrap();
        assert!(stored_to_label(&r.label).verify(&key_a.public()).is_err());
    }
    store.close().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

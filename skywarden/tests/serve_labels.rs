//! `serve` as a labeler, run as an operator would: on the bundled recording of a real PDS with
//! a rule that labels every post, with labels in Postgres (`--postgres-url`, a database of its
//! own) and a p256 key from `SKYWARDEN_SIGNING_KEY_HEX`. Every applied label effect becomes
//! exactly one label signed by that key, and `keys show` prints the key's did:key.

use skywarden_atproto::crypto::PublicKey;
use skywarden_labeler::stored_to_label;
use skywarden_store::Store;
use skywarden_store::labels::{LabelStore, PgLabelStore};
use std::path::PathBuf;
use std::process::Command;

const KEY_HEX: &str = "4a5b1dbb6d9b3cd4e5ef6b1e2f6e0c4f1c0c2b1a9a8f7e6d5c4b3a2918171615";

fn admin_url() -> String {
    std::env::var("SKYWARDEN_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_signs_every_label_effect_into_postgres_with_the_configured_key() {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/services/postgres.sh");
    if std::env::var("SKYWARDEN_TEST_POSTGRES").is_err() {
        let out = Command::new("bash").arg(&script).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let database = format!("skywarden_serve_labels_{}", std::process::id());
    let admin = sqlx::PgPool::connect(&admin_url()).await.unwrap();
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {database}"))
        .execute(&admin)
        .await
        .unwrap();
    sqlx::raw_sql(&format!("CREATE DATABASE {database}"))
        .execute(&admin)
        .await
        .unwrap();
    let mut url = url::Url::parse(&admin_url()).unwrap();
    url.set_path(&format!("/{database}"));

    let work = std::env::temp_dir().join(format!("skywarden-serve-labels-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let rules = work.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("all.toml"),
        r#"
[[rule]]
name = "label-posts"
description = "Every post gets a label, to check the labeler end to end."
on = ["create:post"]
when = "true"

[[rule.action]]
label = "checked"
"#,
    )
    .unwrap();
    let data = work.join("data");
    let archive =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/firehose/pds-recording.skwa");
    let out = Command::new(env!("CARGO_BIN_EXE_skywarden"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "text"])
        .arg("--archive")
        .arg(&archive)
        .arg("--rules")
        .arg(&rules)
        .arg("--data-dir")
        .arg(&data)
        .args(["--postgres-url", url.as_str(), "--signing-key-type", "p256"])
        .args(["--labeler-did", "did:web:labels.example.org"])
        .env("SKYWARDEN_SIGNING_KEY_HEX", KEY_HEX)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(!log.contains(KEY_HEX), "the key never reaches the log");

    let shown = Command::new(env!("CARGO_BIN_EXE_skywarden"))
        .args(["keys", "show", "--signing-key-type", "p256", "--data-dir"])
        .arg(&data)
        .env("SKYWARDEN_SIGNING_KEY_HEX", KEY_HEX)
        .output()
        .unwrap();
    assert!(shown.status.success());
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["curve"], "p256");
    let key = PublicKey::from_did_key(shown["didKey"].as_str().unwrap()).unwrap();
    assert!(
        !data.join("labeler.key").exists(),
        "a configured key is not written to disk"
    );

    let store = Store::open(&data).await.unwrap();
    let effects = store.effects_after(0, 100_000).await.unwrap();
    store.close().await;
    let labelled: Vec<_> = effects
        .iter()
        .filter(|e| e.effect.verb == "label" && e.effect.outcome == "applied")
        .collect();
    assert!(labelled.len() > 50, "{} label effects", labelled.len());

    let labels = PgLabelStore::connect(url.as_str(), None).await.unwrap();
    let rows = labels.after(0, 100_000).await.unwrap();
    assert_eq!(
        rows.len(),
        labelled.len(),
        "one label per applied label effect"
    );
    let mut subjects: Vec<&str> = rows.iter().map(|r| r.label.uri.as_str()).collect();
    subjects.sort();
    let mut expected: Vec<&str> = labelled.iter().map(|e| e.effect.subject.as_str()).collect();
    expected.sort();
    assert_eq!(subjects, expected);
    for r in &rows {
        assert_eq!(r.label.src, "did:web:labels.example.org");
        assert_eq!(r.label.val, "checked");
        assert!(
            r.label.cid.is_some(),
            "a record label pins the record's CID"
        );
        stored_to_label(&r.label).verify(&key).unwrap();
    }
    labels.close().await;
    sqlx::raw_sql(&format!("DROP DATABASE {database} WITH (FORCE)"))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let _ = std::fs::remove_dir_all(&work);
}

//! Enforcement on a real PDS: a rule takes down the account that posts the GTUBE string;
//! skywarden files the takedown in its moderation queue (with the rule's explanation), signs
//! `!takedown` on its label stream, and enforces it on the PDS through
//! `com.atproto.admin.updateSubjectStatus` with the PDS admin password. The PDS then emits
//! the account's `#account` frame with status `takendown`, read back here from its firehose.
//!
//! Needs Node.js with npm (see tests/pds/README.md).

use base64::Engine;
use serde_json::Value;
use skywarden_atproto::event::EventBody;
use skywarden_ingest::firehose::WsSettings;
use skywarden_ingest::{Source, SourceConfig};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

mod pds_harness;
use pds_harness::Harness;
use tokio::time::timeout;

async fn http(port: u16, path: &str, auth: Option<&str>) -> (u16, String) {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return (0, String::new());
    };
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n{auth}\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf).await;
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

const RULE: &str = r#"
[constants]
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

[[rule]]
name = "gtube-takedown"
description = "An account posting the GTUBE test string is taken down."
on = ["create:post"]
when = "text.raw.contains(GTUBE)"

[[rule.action]]
takedown = true
comment = "posted the GTUBE string"
target = "account"

[[rule.action]]
label = "spam"
"#;

const ADMIN: &str = "takedown-test-admin-password";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_takedown_reaches_the_pds_and_comes_back_on_its_firehose() {
    let work = std::env::temp_dir().join(format!("skywarden-pds-takedown-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("rules")).unwrap();
    std::fs::write(work.join("rules/takedown.toml"), RULE).unwrap();

    let mut harness = Harness::start(&work).await;
    let (pds, plc) = (harness.pds.clone(), harness.plc.clone());
    let done = harness.run("abuse").await;
    let last_seq = done["lastSeq"].as_i64().unwrap();
    let gtuber = pds_harness::did_of(&done, "gtuber.test");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_skywarden"))
        .args([
            "serve",
            "--relay",
            &pds,
            "--plc",
            &plc,
            "--cursor",
            "0",
            "--enforce-pds",
            &pds,
        ])
        .arg("--rules")
        .arg(work.join("rules"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(work.join("skywarden"))
        .env("SKYWARDEN_PDS_ADMIN_PASSWORD", "admin-pass")
        .env("SKYWARDEN_ADMIN_PASSWORD", ADMIN)
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(work.join("serve.log")).unwrap(),
        ))
        .kill_on_drop(true)
        .spawn()
        .expect("start skywarden serve");
    let log = || std::fs::read_to_string(work.join("serve.log")).unwrap_or_default();

    // The takedown is enforced on the PDS.
    let started = Instant::now();
    loop {
        let (_, metrics) = http(port, "/metrics", None).await;
        if metrics.contains("skywarden_moderation_sink_delivered_total{sink=\"pds\"} 1") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no takedown enforced; log:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The PDS announces it on its firehose.
    let mut source = Source::firehose(
        &pds,
        WsSettings::default(),
        SourceConfig {
            cursor: Some(last_seq),
            ..SourceConfig::default()
        },
    )
    .unwrap();
    let frame = timeout(Duration::from_secs(60), async {
        loop {
            let event = source
                .next_event()
                .await
                .unwrap()
                .expect("the firehose ended");
            if let EventBody::Account { active, status } = &event.body
                && event.did.as_str() == gtuber
            {
                return (*active, status.clone());
            }
        }
    })
    .await
    .expect("no #account frame for the taken-down account within 60 s");
    assert_eq!(frame, (false, Some("takendown".into())));

    // The queue shows it, with the rule that did it; the label stream carries !takedown.
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("admin:{ADMIN}"))
    );
    let (code, body) = http(
        port,
        &format!("/xrpc/tools.ozone.moderation.queryStatuses?subject={gtuber}"),
        Some(&basic),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let statuses: Value = serde_json::from_str(&body).unwrap();
    let status = &statuses["subjectStatuses"][0];
    assert_eq!(status["takendown"], true, "{body}");
    assert_eq!(
        status["reviewState"],
        "tools.ozone.moderation.defs#reviewClosed"
    );
    let (_, body) = http(
        port,
        &format!("/xrpc/tools.ozone.moderation.queryEvents?subject={gtuber}"),
        Some(&basic),
    )
    .await;
    let events: Value = serde_json::from_str(&body).unwrap();
    let takedown = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"]["$type"] == "tools.ozone.moderation.defs#modEventTakedown")
        .unwrap_or_else(|| panic!("no takedown event: {body}"));
    assert_eq!(takedown["modTool"]["name"], "skywarden/rules");
    assert_eq!(takedown["modTool"]["meta"]["rule"], "gtube-takedown");
    let comment = takedown["event"]["comment"].as_str().unwrap();
    assert!(
        comment.contains("posted the GTUBE string") && comment.contains("gtube-takedown"),
        "{comment}"
    );
    let (_, labels) = http(
        port,
        &format!("/xrpc/com.atproto.label.queryLabels?uriPatterns={gtuber}"),
        None,
    )
    .await;
    assert!(labels.contains("\"val\":\"!takedown\""), "{labels}");
    // The labelled post is kept as evidence: getRecord serves it as the rule saw it.
    let (_, body) = http(
        port,
        "/xrpc/tools.ozone.moderation.queryEvents?types=tools.ozone.moderation.defs%23modEventLabel",
        Some(&basic),
    )
    .await;
    let events: Value = serde_json::from_str(&body).unwrap();
    let uri = events["events"][0]["subject"]["uri"]
        .as_str()
        .unwrap_or_else(|| panic!("no label event on the post: {body}"))
        .to_string();
    let (code, body) = http(
        port,
        &format!("/xrpc/tools.ozone.moderation.getRecord?uri={uri}"),
        Some(&basic),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let record: Value = serde_json::from_str(&body).unwrap();
    assert!(
        record["value"]["text"].as_str().unwrap().contains("GTUBE"),
        "{body}"
    );
    assert_eq!(record["repo"]["did"], gtuber.as_str());
    assert!(
        !log().contains("admin-pass"),
        "the PDS admin password was logged"
    );

    let _ = serve.kill().await;
    harness.exit().await;
    let _ = std::fs::remove_dir_all(&work);
}

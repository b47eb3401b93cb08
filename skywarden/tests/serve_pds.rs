//! `skywarden serve` against a real PDS: `tests/pds/harness.mjs abuse` creates accounts that
//! post the GTUBE string, send one message into eight threads, and follow 3,100 accounts, next
//! to two ordinary accounts. skywarden, running the built-in default ruleset on the PDS's
//! firehose with identity resolution from the PDS's PLC, must log the expected effects with
//! their explanations, and no enforcement for the ordinary accounts. The labels the rules
//! produced must reach the network's own clients: `@atproto/api` calls `queryLabels` and
//! `@atproto/xrpc-server`'s `Subscription` consumes `subscribeLabels` on the running service
//! (`tests/pds/labels.mjs client`), checking each frame against the lexicons and each
//! signature with `@atproto/crypto` and the key in the labeler's `/.well-known/did.json`.
//!
//! Needs Node.js with npm (see tests/pds/README.md); `tests/pds/install.sh` installs the pinned
//! PDS when needed.
//!
//! ```sh
//! cargo test -p skywarden --test serve_pds -- --nocapture
//! ```

use serde_json::Value;
use skywarden_store::{EffectRow, Store};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

mod pds_harness;
use pds_harness::{Harness, pds_dir};
use tokio::time::timeout;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn http_get(port: u16, path: &str) -> (u16, String) {
    // Not listening yet (starting up): no answer.
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return (0, String::new());
    };
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_a_real_pds_logs_explained_effects_for_abuse_and_none_for_ordinary_use() {
    let work = std::env::temp_dir().join(format!("skywarden-serve-pds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();

    // The PDS, and the scenario.
    let mut harness = Harness::start(&work).await;
    let (pds, plc) = (harness.pds.clone(), harness.plc.clone());
    let done = harness.run("abuse").await;
    let last_seq = done["lastSeq"].as_i64().unwrap();
    let did_of = |handle: &str| pds_harness::did_of(&done, handle);
    let (gina, hank) = (did_of("gina.test"), did_of("hank.test"));
    let (gtuber, replier, follower) = (
        did_of("gtuber.test"),
        did_of("replier.test"),
        did_of("follower.test"),
    );

    // skywarden, on the default ruleset.
    let port = free_port();
    let data = work.join("skywarden");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_skywarden"))
        .args(["serve", "--relay", &pds, "--plc", &plc, "--cursor", "0"])
        .args(["--identity-budget-ms", "2000", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(&data)
        .args(["--checkpoint-interval-ms", "200"])
        .env("SKYWARDEN_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(work.join("serve.log")).unwrap(),
        ))
        .kill_on_drop(true)
        .spawn()
        .expect("start skywarden serve");

    // Wait until every event of the scenario is checkpointed.
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "skywarden did not reach seq {last_seq}; log: {}",
            std::fs::read_to_string(work.join("serve.log")).unwrap_or_default()
        );
        let (code, metrics) = timeout(Duration::from_secs(5), http_get(port, "/metrics"))
            .await
            .unwrap_or((0, String::new()));
        let checkpoint = metrics
            .lines()
            .find_map(|l| l.strip_prefix("skywarden_checkpoint_cursor "))
            .and_then(|v| v.trim().parse::<i64>().ok());
        if code == 200 && checkpoint.is_some_and(|c| c >= last_seq) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body) = http_get(port, "/ready").await;
    assert_eq!(status, 200, "ready: {body}");
    let (status, health) = http_get(port, "/xrpc/_health").await;
    assert_eq!(status, 200);
    assert!(health.contains("\"origin\":\"builtin\""), "{health}");
    let (_, metrics) = http_get(port, "/metrics").await;
    for needle in [
        "skywarden_events_total{kind=\"commit\"}",
        "skywarden_rule_hits_total{rule=\"gtube-post\",mode=\"live\"}",
        "skywarden_actions_total{verb=\"label\",outcome=\"applied\"}",
        "skywarden_identity_fetches_total",
        "skywarden_event_latency_seconds_bucket",
    ] {
        assert!(
            metrics.contains(needle),
            "metrics lack {needle}:\n{metrics}"
        );
    }
    // The checkpoint that reached the last seq was timed.
    let pauses = metrics
        .lines()
        .find_map(|l| l.strip_prefix("skywarden_checkpoint_pause_seconds_count "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(
        pauses.is_some_and(|n| n >= 1.0),
        "checkpoint pauses: {pauses:?}"
    );
    // Every rule's series exists from the start; this one must have counted the hit.
    let hits = metrics
        .lines()
        .find(|l| l.starts_with("skywarden_rule_hits_total{rule=\"gtube-post\",mode=\"live\"} "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert!(hits.is_some_and(|n| n >= 1.0), "gtube-post hits: {hits:?}");

    // The labels reach the network's own clients, signed.
    let labeler_did = format!("did:web:127.0.0.1%3A{port}");
    let started = Instant::now();
    let published = loop {
        // The label sink runs after the effect log; wait for the GTUBE label to be served.
        let (_, metrics) = http_get(port, "/metrics").await;
        let published = metrics
            .lines()
            .find_map(|l| l.strip_prefix("skywarden_labeler_published_seq "))
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(0);
        let labelled = metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix("skywarden_actions_total{verb=\"label\",outcome=\"applied\"} ")
            })
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(0);
        if labelled > 0 && published >= labelled {
            break published;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "labels not published ({published} of {labelled}):\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let dir = pds_dir();
    let client = Command::new("node")
        .arg(dir.join("labels.mjs"))
        .args(["client", "--service"])
        .arg(format!("http://127.0.0.1:{port}"))
        .args(["--expect", &published.to_string()])
        .current_dir(&dir)
        .output()
        .await
        .expect("run tests/pds/labels.mjs client");
    assert!(
        client.status.success(),
        "labels.mjs client: {}\n{}",
        String::from_utf8_lossy(&client.stdout),
        String::from_utf8_lossy(&client.stderr)
    );
    let report: Value = serde_json::from_slice(&client.stdout).unwrap();
    println!("labels seen by @atproto clients: {report}");
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    let gtube_label = |list: &Value| {
        list.as_array().unwrap().iter().any(|l| {
            l["val"] == "spam"
                && l["src"] == labeler_did.as_str()
                && l["uri"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("at://{gtuber}/app.bsky.feed.post/"))
        })
    };
    assert!(
        gtube_label(&report["streamed"]),
        "subscribeLabels: {report}"
    );
    assert!(gtube_label(&report["queried"]), "queryLabels: {report}");
    assert_eq!(
        report["streamed"].as_array().unwrap().len() as i64,
        published,
        "{report}"
    );

    // Graceful stop: SIGTERM drains and checkpoints.
    let pid = serve.id().unwrap().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    let status = timeout(Duration::from_secs(30), serve.wait())
        .await
        .expect("serve exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "serve exit status {status}");

    // `labeler declare` publishes the service record to the labeler account's PDS, which
    // checks it against its lexicon.
    let config = work.join("labeler.toml");
    std::fs::write(
        &config,
        r#"
[labeler]
subject_types = ["account", "record"]
reason_types = ["com.atproto.moderation.defs#reasonSpam"]
[[labeler.label]]
identifier = "spam"
severity = "inform"
blurs = "none"
default_setting = "warn"
[[labeler.label.locale]]
lang = "en"
name = "Spam"
description = "Unwanted, repeated promotion."
"#,
    )
    .unwrap();
    let declared = Command::new(env!("CARGO_BIN_EXE_skywarden"))
        .args(["labeler", "declare", "--config"])
        .arg(&config)
        .args(["--pds", &pds, "--identifier", "hank.test"])
        .env("SKYWARDEN_PDS_PASSWORD", "hank-password")
        .output()
        .await
        .unwrap();
    assert!(
        declared.status.success(),
        "labeler declare: {}",
        String::from_utf8_lossy(&declared.stderr)
    );
    let uri = String::from_utf8_lossy(&declared.stdout).trim().to_string();
    assert_eq!(uri, format!("at://{hank}/app.bsky.labeler.service/self"));
    let pds_port: u16 = pds
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let (status, record) = http_get(
        pds_port,
        &format!("/xrpc/com.atproto.repo.getRecord?repo={hank}&collection=app.bsky.labeler.service&rkey=self"),
    )
    .await;
    assert_eq!(status, 200, "{record}");
    let record: Value = serde_json::from_str(&record).unwrap();
    assert_eq!(
        record["value"]["policies"]["labelValues"][0], "spam",
        "{record}"
    );
    assert_eq!(
        record["value"]["policies"]["labelValueDefinitions"][0]["locales"][0]["name"],
        "Spam"
    );
    harness.exit().await;

    let store = Store::open(&data).await.unwrap();
    let effects: Vec<EffectRow> = store.effects_after(0, 100_000).await.unwrap();
    store.close().await;
    let listing: String = effects
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {} {}\n",
                e.effect.rule, e.effect.verb, e.effect.subject, e.effect.outcome, e.effect.did
            )
        })
        .collect();
    let find = |rule: &str, verb: &str, did: &str| -> &EffectRow {
        effects
            .iter()
            .find(|e| e.effect.rule == rule && e.effect.verb == verb && e.effect.did == did)
            .unwrap_or_else(|| panic!("no {rule} {verb} for {did}; effects:\n{listing}"))
    };
    let action = |e: &EffectRow| -> Value { serde_json::from_str(&e.effect.action).unwrap() };

    // GTUBE: the post is labelled spam, with the text that fired it.
    let gtube = find("gtube-post", "label", &gtuber);
    assert!(
        gtube
            .effect
            .subject
            .starts_with(&format!("at://{gtuber}/app.bsky.feed.post/"))
    );
    assert_eq!(gtube.effect.outcome, "applied");
    let a = action(gtube);
    assert_eq!(a["action"]["label"], "spam");
    assert!(
        a["explanation"]["text.raw"]
            .as_str()
            .unwrap()
            .contains("GTUBE"),
        "{a}"
    );

    // Identical replies: the account is flagged and reported, with the counts.
    let reply_report = find("identical-replies", "report", &replier);
    assert_eq!(reply_report.effect.subject, replier);
    let a = action(reply_report);
    assert!(
        a["action"]["comment"]
            .as_str()
            .unwrap()
            .contains("identical replies this hour"),
        "{a}"
    );
    find("identical-replies", "flag", &replier);
    // One open report, however many replies fired the rule after the sixth.
    assert_eq!(
        effects
            .iter()
            .filter(|e| e.effect.rule == "identical-replies" && e.effect.verb == "report")
            .count(),
        1,
        "{listing}"
    );

    // Bulk following.
    let bulk = find("bulk-follower", "flag", &follower);
    assert!(
        action(bulk)["explanation"]["counters.follows_created.day"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 3000
    );

    // Identity resolution reached the rules: new accounts are tagged for review, with their age.
    let new_account = find("new-account", "tag", &gina);
    assert!(action(new_account)["explanation"]["account.age"].is_string());

    // The ordinary accounts: nothing but the review-only tags and flags every new account gets.
    for did in [&gina, &hank] {
        for e in effects
            .iter()
            .filter(|e| e.effect.did == *did || e.effect.subject.contains(did.as_str()))
        {
            assert!(
                ["new-account", "first-account-on-host"].contains(&e.effect.rule.as_str())
                    && ["tag", "flag", "notify"].contains(&e.effect.verb.as_str()),
                "enforcement on an ordinary account: {} {} {}",
                e.effect.rule,
                e.effect.verb,
                e.effect.subject
            );
        }
    }
    let enforcement = ["label", "report", "takedown"];
    assert!(
        !effects
            .iter()
            .any(|e| (e.effect.did == gina || e.effect.did == hank)
                && enforcement.contains(&e.effect.verb.as_str())),
        "{listing}"
    );
    println!("{} effects:\n{listing}", effects.len());
    drop(harness);
    let _ = std::fs::remove_dir_all(&work);
}

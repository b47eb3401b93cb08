//! The moderation API of `skywarden serve`, driven by an independent client: the team,
//! reports, the queue, events, appeals, roles and auth refusals, through `@atproto/api` with
//! service-auth JWTs minted by `@atproto/xrpc-server`, every body validated against the
//! shared lexicons by `@atproto/lexicon` (`tests/pds/moderation.mjs`). The callers' DID
//! documents come from a small PLC directory served here; the firehose from the simulator.
//! Then a moderator's change to a set reaches the engine's lists (a reload).
//!
//! Needs Node.js with npm (see tests/pds/README.md).

use base64::Engine;
use skywarden_atproto::crypto::{Curve, SigningKey};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Kills the child when dropped, so a failing assertion leaves no server behind.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn skywarden() -> Command {
    Command::new(env!("CARGO_BIN_EXE_skywarden"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A PLC directory holding fixed DID documents; answers `GET /{did}` and `/{did}/log/audit`.
fn plc_directory(docs: HashMap<String, String>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let docs = Arc::new(docs);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let docs = docs.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let path = line
                    .split(' ')
                    .nth(1)
                    .unwrap_or("/")
                    .trim_start_matches('/');
                let (status, body) = match path.strip_suffix("/log/audit") {
                    Some(did) if docs.contains_key(did) => (
                        "200 OK",
                        r#"[{"createdAt":"2024-01-01T00:00:00.000Z"}]"#.to_string(),
                    ),
                    Some(_) => ("404 Not Found", "{}".to_string()),
                    None => match docs.get(path) {
                        Some(doc) => ("200 OK", doc.clone()),
                        None => ("404 Not Found", "{}".to_string()),
                    },
                };
                let mut s = stream;
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    port
}

fn http(
    port: u16,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: localhost\r\n");
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        ));
    } else {
        req.push_str("\r\n");
    }
    let _ = s.write_all(req.as_bytes());
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

const ADMIN_PASSWORD: &str = "moderation-test-admin-password";
const SERVICE_DID: &str = "did:plc:skywardenmodservice00000";

#[test]
fn an_independent_ozone_client_runs_the_moderation_scenario() {
    let pds_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/pds");
    let lexicons = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/lexicons");
    let status = Command::new("bash")
        .arg(pds_dir.join("install.sh"))
        .status()
        .expect("run tests/pds/install.sh");
    assert!(status.success(), "tests/pds/install.sh failed");

    let work = std::env::temp_dir().join(format!("skywarden-moderation-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let rules = work.join("rules");
    std::fs::create_dir_all(rules.join("lists")).unwrap();
    std::fs::write(
        rules.join("links.toml"),
        r#"
[[list]]
name = "watched_domains"
description = "Domains moderators watch (managed as the set watched-domains)."
file = "lists/watched-domains.txt"

[[rule]]
name = "watched-domain"
description = "A post links to a watched domain: report it."
on = ["create:post"]
when = "text.domains.exists(d, d in lists.watched_domains)"

[[rule.action]]
report = "spam"
comment = "links to a watched domain"
"#,
    )
    .unwrap();
    std::fs::write(rules.join("lists/watched-domains.txt"), "").unwrap();

    let names = [
        "reporter1",
        "reporter2",
        "reporter3",
        "moderator",
        "triage",
        "subject",
    ];
    let mut docs = HashMap::new();
    let mut accounts = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let key = SigningKey::generate(Curve::K256);
        // did:plc identifiers are 24 base32 characters.
        let did = format!("did:plc:mod{}{}", &"bcdefg"[i..=i], "a".repeat(20));
        let doc = serde_json::json!({
            "id": did,
            "alsoKnownAs": [format!("at://{name}.test")],
            "verificationMethod": [{
                "id": format!("{did}#atproto"),
                "type": "Multikey",
                "controller": did,
                "publicKeyMultibase": key.public().to_multikey(),
            }],
            "service": [],
        });
        docs.insert(did.clone(), doc.to_string());
        let hex: String = key.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
        accounts.push(serde_json::json!({"name": name, "did": did, "key": hex}));
    }
    let plc = plc_directory(docs);

    let sim_port = free_port();
    let _sim = skywarden()
        .args([
            "simulate",
            "--accounts",
            "20",
            "--rate",
            "20",
            "--no-abuse",
            "--listen",
        ])
        .arg(format!("127.0.0.1:{sim_port}"))
        .stderr(Stdio::null())
        .spawn()
        .map(Running)
        .unwrap();
    let port = free_port();
    let log = std::fs::File::create(work.join("serve.log")).unwrap();
    let _serve = skywarden()
        .arg("serve")
        .arg("--relay")
        .arg(format!("ws://127.0.0.1:{sim_port}"))
        .arg("--plc")
        .arg(format!("http://127.0.0.1:{plc}"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(work.join("data"))
        .arg("--rules")
        .arg(&rules)
        .arg("--labeler-did")
        .arg(SERVICE_DID)
        .arg("--log-format")
        .arg("text")
        .env("SKYWARDEN_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .stderr(log)
        .spawn()
        .map(Running)
        .unwrap();
    let started = Instant::now();
    while http(port, "GET", "/xrpc/_health", None, None).0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "serve did not start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let out = Command::new("node")
        .arg(pds_dir.join("moderation.mjs"))
        .arg("--service")
        .arg(format!("http://127.0.0.1:{port}"))
        .arg("--lexicons")
        .arg(&lexicons)
        .current_dir(&pds_dir)
        .env("ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("SERVICE_DID", SERVICE_DID)
        .env("ACCOUNTS", serde_json::Value::from(accounts).to_string())
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&out.stdout).to_string();
    let result: serde_json::Value = serde_json::from_str(summary.trim()).unwrap_or_else(|_| {
        panic!(
            "no summary from moderation.mjs:\n{summary}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let serve_log = std::fs::read_to_string(work.join("serve.log")).unwrap_or_default();
    assert_eq!(
        result["ok"],
        true,
        "conformance problems: {:#}\nserve log tail:\n{}",
        result["problems"],
        serve_log
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!("moderation.mjs: {result}");
    assert!(result["checked"].as_u64().unwrap_or(0) > 200, "{result}");

    // A moderator's set change reaches the engine's lists: the ruleset reloads with it.
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("admin:{ADMIN_PASSWORD}"))
    );
    let version = |body: &str| -> String {
        serde_json::from_str::<serde_json::Value>(body).unwrap()["ruleset"]["version"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let before = version(&http(port, "GET", "/xrpc/_health", None, None).1);
    let (code, body) = http(
        port,
        "POST",
        "/xrpc/tools.ozone.set.addValues",
        Some(&basic),
        Some(r#"{"name": "watched-domains", "values": ["scam.example"]}"#),
    );
    assert_eq!(code, 200, "{body}");
    assert!(
        std::fs::read_to_string(rules.join("lists/watched-domains.txt"))
            .unwrap()
            .lines()
            .any(|l| l == "scam.example")
    );
    let started = Instant::now();
    loop {
        let now = version(&http(port, "GET", "/xrpc/_health", None, None).1);
        if now != before && !now.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the ruleset did not reload after the set changed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Team and set changes are in the audit trail, with who made them.
    let db = work.join("data/moderation.db");
    let trail: Vec<(String, String)> = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display()))
            .await
            .unwrap();
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT actor, method FROM mod_audit ORDER BY id")
                .fetch_all(&pool)
                .await
                .unwrap();
        pool.close().await;
        rows
    });
    assert!(
        trail
            .iter()
            .filter(|(a, m)| a == SERVICE_DID && m == "tools.ozone.team.addMember")
            .count()
            >= 2,
        "{trail:?}"
    );
    assert!(
        trail.iter().any(|(_, m)| m == "tools.ozone.set.addValues"),
        "{trail:?}"
    );
    // The admin password is never logged.
    let serve_log = std::fs::read_to_string(work.join("serve.log")).unwrap_or_default();
    assert!(!serve_log.contains(ADMIN_PASSWORD));

    let _ = std::fs::remove_dir_all(&work);
}

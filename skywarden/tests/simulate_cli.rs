//! `skywarden simulate` as a user runs it: an archive of signed frames with its ground truth,
//! which `ingest` decodes without an error and `serve` turns into explained effects and a
//! signed label; and `--listen`, which `serve --relay … --plc …` consumes like a relay.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn skywarden() -> Command {
    Command::new(env!("CARGO_BIN_EXE_skywarden"))
}

fn work(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("skywarden-sim-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn an_archive_with_ground_truth_decodes_and_serve_acts_on_it() {
    let dir = work("archive");
    let archive = dir.join("sim.skwa");
    let truth = dir.join("truth.jsonl");
    let out = skywarden()
        .args([
            "simulate",
            "--seed",
            "5",
            "--accounts",
            "300",
            "--events",
            "4000",
            "--out",
        ])
        .arg(&archive)
        .arg("--truth")
        .arg(&truth)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&truth)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let scenarios: std::collections::BTreeSet<&str> = lines
        .iter()
        .map(|l| l["scenario"].as_str().unwrap())
        .collect();
    assert_eq!(
        scenarios.len(),
        skywarden_sim::SCENARIOS.len(),
        "{scenarios:?}"
    );

    let stats = skywarden()
        .args(["ingest", "--stats", "--archive"])
        .arg(&archive)
        .output()
        .unwrap();
    assert!(stats.status.success());
    let last: serde_json::Value = String::from_utf8_lossy(&stats.stdout)
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap();
    assert_eq!(last["decode_errors"], 0, "{last}");
    assert_eq!(last["events"], 4000, "{last}");

    let data = dir.join("data");
    let served = skywarden()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "text",
            "--archive",
        ])
        .arg(&archive)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        served.status.success(),
        "{}",
        String::from_utf8_lossy(&served.stderr)
    );
    let log = String::from_utf8_lossy(&served.stderr);
    for rule in [
        "identical-replies",
        "domain-hopping-link-spam",
        "bad-word-post",
    ] {
        assert!(
            log.contains(&format!("rule={rule}")),
            "{rule} did not fire:\n{log}"
        );
    }
    // Everything is linked for the first time on the simulation's only day: a domain being
    // new means nothing yet, so the new-domain rule stays quiet.
    assert!(!log.contains("rule=new-domain-link-spam"), "{log}");

    // `rules eval` compares the logged actions with the ground truth.
    let eval = skywarden()
        .args(["rules", "eval", "--data-dir"])
        .arg(&data)
        .arg("--truth")
        .arg(&truth)
        .output()
        .unwrap();
    assert!(
        eval.status.success(),
        "{}",
        String::from_utf8_lossy(&eval.stderr)
    );
    let table = String::from_utf8_lossy(&eval.stdout);
    println!("{table}");
    let row = |name: &str| -> Vec<String> {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row {name}:\n{table}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    // The look-alike slur is caught by the bad-word rule, which acts on nobody else.
    let bad_word = row("bad-word-post");
    assert_eq!(bad_word[4], "1.00", "precision: {bad_word:?}");
    let slurs = row("slur-evasion");
    assert_eq!(slurs[3], "1.00", "recall: {slurs:?}");
    for scenario in skywarden_sim::SCENARIOS {
        row(scenario);
    }
    let bad_truth = dir.join("bad.jsonl");
    std::fs::write(
        &bad_truth,
        "{\"scenario\":\"nonsense\",\"did\":\"did:plc:x\"}\n",
    )
    .unwrap();
    let refused = skywarden()
        .args(["rules", "eval", "--data-dir"])
        .arg(&data)
        .arg("--truth")
        .arg(&bad_truth)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("bad.jsonl:1: unknown scenario"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn serve_consumes_the_simulated_relay_and_its_plc() {
    let dir = work("relay");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let truth = dir.join("truth.jsonl");
    let mut sim = skywarden()
        .args([
            "simulate",
            "--accounts",
            "200",
            "--rate",
            "2000",
            "--listen",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--truth")
        .arg(&truth)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut serve = skywarden()
        .args([
            "serve",
            "--cursor",
            "0",
            "--identity-budget-ms",
            "100",
            "--relay",
        ])
        .arg(format!("ws://127.0.0.1:{port}"))
        .arg("--plc")
        .arg(format!("http://127.0.0.1:{port}"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{http}"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let metrics = loop {
        std::thread::sleep(Duration::from_millis(300));
        let text = get(http, "/metrics");
        let events: u64 = text
            .lines()
            .filter(|l| l.starts_with("skywarden_events_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        let resolved = text.contains("skywarden_identity_fetches_total");
        if events > 3000 && resolved {
            break text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "serve did not consume the simulator:\n{text}"
        );
    };
    assert!(metrics.contains("skywarden_rule_hits_total"), "{metrics}");
    let _ = serve.kill();
    let _ = serve.wait();
    // Stopped the way a service manager stops it, the simulator still writes its ground truth.
    let terminated = Command::new("kill")
        .args(["-TERM", &sim.id().to_string()])
        .status()
        .unwrap();
    assert!(terminated.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = sim.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "simulate did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "simulate exit status {status}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&truth)
        .expect("the ground truth is written on SIGTERM")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!lines.is_empty(), "no abusive account in the ground truth");
    assert!(
        lines
            .iter()
            .all(|t| t["did"].is_string() && t["scenario"].is_string())
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

//! The binary's commands, run as a user would.

use std::path::PathBuf;
use std::process::Command;

fn skywarden(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_skywarden"))
        .args(args)
        .output()
        .expect("run skywarden")
}

fn sample() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/firehose/pds-recording.skwa")
        .display()
        .to_string()
}

#[test]
fn version_and_help() {
    let out = skywarden(&["version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("skywarden {}", env!("CARGO_PKG_VERSION"))
    );
    let help = skywarden(&["--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    for word in ["ingest", "record", "version", "--archive"] {
        assert!(text.contains(word), "--help lacks {word}");
    }
}

#[test]
fn ingest_prints_one_json_line_per_event() {
    let out = skywarden(&["ingest", "--archive", &sample(), "--records"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 3443);
    let mut last = 0;
    for line in &lines {
        let cursor = line["cursor"].as_i64().unwrap();
        assert!(cursor > last);
        last = cursor;
        assert!(line["did"].as_str().unwrap().starts_with("did:"));
        if line["kind"] == "commit" {
            for op in line["ops"].as_array().unwrap() {
                assert!(op["path"].as_str().unwrap().contains('/'));
            }
        }
    }
    let post = lines
        .iter()
        .flat_map(|l| l["ops"].as_array().into_iter().flatten())
        .find(|op| op["record"]["$type"] == "app.bsky.feed.post")
        .expect("a post with its record");
    assert!(post["record"]["text"].is_string());
    assert!(String::from_utf8_lossy(&out.stderr).contains("resume with --cursor"));
}

#[test]
fn stats_and_limit() {
    let out = skywarden(&["ingest", "--archive", &sample(), "--stats"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["events"], 3443);
    assert_eq!(last["decode_errors"], 0);
    let out = skywarden(&["ingest", "--archive", &sample(), "--limit", "5"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 5);
}

#[test]
fn record_converts_and_resumes() {
    let dir = std::env::temp_dir().join(format!("skw-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("copy.skwa");
    let copy = copy.to_str().unwrap();
    let out = skywarden(&[
        "record",
        "--archive",
        &sample(),
        "--out",
        copy,
        "--limit",
        "1000",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = skywarden(&[
        "record",
        "--archive",
        &sample(),
        "--out",
        copy,
        "--append",
        "--cursor",
        "1000",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let original = skywarden(&["ingest", "--archive", &sample()]).stdout;
    let copied = skywarden(&["ingest", "--archive", copy]).stdout;
    assert!(original == copied, "a recorded copy replays differently");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_is_a_clear_error() {
    let out = skywarden(&["ingest", "--archive", "/nonexistent/file.skwa"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/file.skwa"));
    let out = skywarden(&["ingest", "--relay", "ftp://example.com"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("scheme"));
    let out = skywarden(&["ingest"]);
    assert!(!out.status.success(), "a source is required");
    let out = skywarden(&["ingest", "--archive", "a", "--relay", "ws://x"]);
    assert!(!out.status.success(), "only one source");
}

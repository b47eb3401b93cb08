//! `skywarden rules ...` as an analyst runs it.

use std::path::PathBuf;
use std::process::Command;

fn skywarden(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_skywarden"))
        .args(args)
        .output()
        .expect("run skywarden")
}

fn repo(path: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
        .display()
        .to_string()
}

fn text(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_the_default_ruleset_and_the_builtin_copy_is_identical() {
    let on_disk = skywarden(&["rules", "check", &repo("rules")]);
    let (stdout, stderr) = text(&on_disk);
    assert!(on_disk.status.success(), "{stdout}{stderr}");
    assert!(stdout.starts_with("ok: "), "{stdout}");
    let builtin = skywarden(&["rules", "check"]);
    let (builtin_out, _) = text(&builtin);
    assert!(builtin.status.success());
    // Same files, same content hash: the embedded ruleset cannot drift from rules/.
    let version = |s: &str| s.rsplit("version ").next().unwrap_or("").trim().to_string();
    assert_eq!(version(&stdout), version(&builtin_out));
    assert!(version(&stdout).starts_with("sha256:"));
}

#[test]
fn check_rejects_broken_rules_with_every_error_located() {
    let out = skywarden(&["rules", "check", &repo("testdata/rules/broken")]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stdout.is_empty(), "{stdout}");
    let located = stderr
        .lines()
        .filter(|l| l.contains(".toml:") && l.contains(": error: "))
        .count();
    assert_eq!(located, 22, "{stderr}");
    assert!(stderr.contains("04-unknown-field.toml:4:21: error: unknown field `record.post.txt`"));
    assert!(
        stderr
            .trim_end()
            .ends_with("error: 22 errors in the ruleset"),
        "{stderr}"
    );
}

#[test]
fn test_passes_on_the_default_ruleset_including_the_real_spam_capture() {
    let out = skywarden(&["rules", "test", &repo("rules"), "--verbose"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("ok    fixture a real WhatsApp"), "{stdout}");
    assert!(stdout.contains("identical-replies fired"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(!stdout.contains("rules without inline tests"), "{stdout}");
}

#[test]
fn test_reports_failures_and_exits_non_zero() {
    let dir = std::env::temp_dir().join(format!("skywarden-rules-fail-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("r.toml"),
        r#"
[[rule]]
name = "short-post"
on = ["post"]
when = "text.length < 5"
[[rule.action]]
flag = "short"
[[rule.test]]
name = "wrong expectation"
expect = "fire"
record = { text = "a long enough post" }
"#,
    )
    .unwrap();
    let out = skywarden(&["rules", "test", dir.to_str().unwrap()]);
    let (stdout, _) = text(&out);
    assert!(!out.status.success());
    assert!(
        stdout.contains("FAIL  short-post: wrong expectation  (r.toml:8)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("expected short-post to fire, but it did not fire"),
        "{stdout}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn run_backtests_the_tutorial_example() {
    let out = skywarden(&[
        "rules",
        "run",
        &repo("docs/rules/example"),
        "--events",
        &repo("docs/rules/example/sample.jsonl"),
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let firings: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let dids: Vec<&str> = firings.iter().filter_map(|f| f["did"].as_str()).collect();
    assert_eq!(dids, ["did:plc:newscammer01", "did:plc:newscammer02"]);
    assert_eq!(firings[0]["mode"], "shadow");
    assert_eq!(firings[0]["explanation"]["account.age"], "13h");
    assert_eq!(
        firings[0]["actions"][1]["action"]["comment"],
        "new account (13h old) posting a giveaway link to [\"claim-now.example\"]"
    );
    assert!(stderr.contains("new-account-giveaway"), "{stderr}");
    assert!(stderr.contains("label=2 report=2"), "{stderr}");
}

#[test]
fn run_on_a_recorded_archive_prints_a_summary_per_rule() {
    let out = skywarden(&[
        "rules",
        "run",
        &repo("rules"),
        "--archive",
        &repo("testdata/firehose/pds-recording.skwa"),
        "--summary-only",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.is_empty());
    assert!(stderr.contains("3443 events"), "{stderr}");
    for rule in ["gtube-post", "identical-replies", "near-duplicate-campaign"] {
        assert!(stderr.contains(rule), "{stderr}");
    }
}

#[test]
fn reference_prints_the_generated_page() {
    let out = skywarden(&["rules", "reference"]);
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    let committed = std::fs::read_to_string(repo("docs/rules/reference.md")).unwrap();
    assert_eq!(stdout, committed);
}

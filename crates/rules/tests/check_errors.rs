//! `rules check` on a directory of broken rule files: one precise error per mistake, with
//! file:line:col, covering each error class.

use skywarden_rules::Ruleset;
use std::path::Path;

fn broken_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/rules/broken")
}

#[test]
fn every_mistake_gets_exactly_one_located_error() {
    let diags = Ruleset::load_dir(&broken_dir()).expect_err("the broken set must not load");
    let got: Vec<(String, usize, usize, String)> = diags
        .iter()
        .map(|d| {
            (
                d.file.display().to_string(),
                d.line,
                d.col,
                d.message.clone(),
            )
        })
        .collect();
    // (file, line, col, a phrase the message must contain)
    let want: &[(&str, usize, usize, &str)] = &[
        ("01-toml-syntax.toml", 3, 17, "invalid basic string"),
        ("02-unknown-key.toml", 5, 1, "unknown field `severity`"),
        ("03-cel-syntax.toml", 4, 33, "syntax error"),
        (
            "04-unknown-field.toml",
            4,
            21,
            "unknown field `record.post.txt`",
        ),
        (
            "05-wrong-type.toml",
            4,
            21,
            "cannot compare duration with int",
        ),
        (
            "06-unknown-function.toml",
            4,
            26,
            "unknown function `containz`",
        ),
        ("07-unknown-counter.toml", 4, 25, "unknown counter `replys`"),
        ("08-unknown-list.toml", 4, 36, "unknown list `bad_wrods`"),
        (
            "09-undeclared-window.toml",
            10,
            24,
            "counter `posts` has no window `day`",
        ),
        (
            "10-not-bool.toml",
            4,
            21,
            "expected a bool expression, found int",
        ),
        (
            "11-duplicate-rule.toml",
            2,
            9,
            "rule `not-bool` is declared twice",
        ),
        ("12-bad-selector.toml", 3, 8, "`postt` is not a collection"),
        ("13-bad-mode.toml", 5, 9, "unknown mode `dry-run`"),
        (
            "14-bad-report-reason.toml",
            6,
            11,
            "unknown report reason `reasonSpamm`",
        ),
        ("15-bad-duration.toml", 4, 32, "unknown unit `w`"),
        ("16-bad-regex.toml", 4, 26, "invalid regex: unclosed group"),
        ("17-missing-list-file.toml", 3, 9, "cannot read list file"),
        (
            "18-counter-key-type.toml",
            4,
            8,
            "a counter key must be a string (or a list of strings, one key each), found int",
        ),
        (
            "19-two-verbs.toml",
            5,
            1,
            "one action per table: found label, flag",
        ),
        ("20-bad-test.toml", 7, 1, "unknown expectation `fires`"),
        ("21-multiline.toml", 7, 11, "unknown field `account.agee`"),
        (
            "22-counter-offset.toml",
            7,
            11,
            "offset must be from 0 to less than a day",
        ),
    ];
    assert_eq!(
        got.len(),
        want.len(),
        "one error per broken file:\n{got:#?}"
    );
    for ((file, line, col, msg), (wf, wl, wc, wm)) in got.iter().zip(want) {
        assert_eq!(
            (file.as_str(), *line, *col),
            (*wf, *wl, *wc),
            "position of: {msg}"
        );
        assert!(msg.contains(wm), "{file}: `{msg}` should mention `{wm}`");
    }
}

#[test]
fn hints_point_at_the_fix() {
    let diags = Ruleset::load_dir(&broken_dir()).unwrap_err();
    let hint = |file: &str| {
        diags
            .iter()
            .find(|d| d.file.to_str() == Some(file))
            .and_then(|d| d.hint.clone())
            .unwrap_or_default()
    };
    assert_eq!(hint("04-unknown-field.toml"), "did you mean `text`?");
    assert_eq!(hint("06-unknown-function.toml"), "did you mean `contains`?");
    assert_eq!(hint("21-multiline.toml"), "did you mean `age`?");
    assert!(hint("05-wrong-type.toml").contains("duration(\"7d\")"));
    assert!(hint("09-undeclared-window.toml").contains("hour"));
    assert!(hint("11-duplicate-rule.toml").contains("10-not-bool.toml:2"));
}

#[test]
fn the_default_ruleset_checks_clean() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules");
    let rs = Ruleset::load_dir(&dir).unwrap_or_else(|d| {
        panic!(
            "{}",
            d.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    assert!(!rs.rules.is_empty());
    assert!(rs.version.starts_with("sha256:"));
    // Every default rule proves both directions: a case where it fires and one where it must not.
    for (i, rule) in rs.rules.iter().enumerate() {
        let fires = rs.tests.iter().any(|t| t.rule == i && t.expect_fire);
        let passes = rs.tests.iter().any(|t| t.rule == i && !t.expect_fire);
        assert!(
            fires && passes,
            "{} needs a firing and a passing test case",
            rule.name
        );
    }
    // And every test passes.
    let read = |p: &Path| std::fs::read_to_string(dir.join(p));
    for outcome in skywarden_rules::testing::run_all(&rs, &read) {
        assert!(outcome.passed, "{}: {:?}", outcome.name, outcome.detail);
    }
}

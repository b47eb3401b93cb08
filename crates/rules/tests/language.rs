//! The rule language end to end: files → compiled ruleset → evaluation on events.

use skywarden_atproto::data::json_to_ipld;
use skywarden_atproto::event::Action as OpAction;
use skywarden_rules::action::{Subject, Verb};
use skywarden_rules::counter::MemoryCounters;
use skywarden_rules::ruleset::SourceFile;
use skywarden_rules::testing::record_event;
use skywarden_rules::{Account, Evaluator, Firing, Input, Ruleset};
use std::path::{Path, PathBuf};

const T0: i64 = 1_717_243_200_000_000; // 2024-06-01T12:00:00Z

fn ruleset(text: &str) -> Ruleset {
    ruleset_with_lists(text, &[])
}

fn ruleset_with_lists(text: &str, lists: &[(&str, &str)]) -> Ruleset {
    let lists: Vec<(String, String)> = lists
        .iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect();
    let read = move |p: &Path| {
        lists
            .iter()
            .find(|(name, _)| Path::new(name) == p)
            .map(|(_, t)| t.clone())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such list"))
    };
    Ruleset::from_sources(
        vec![SourceFile {
            path: PathBuf::from("test.toml"),
            text: text.to_string(),
        }],
        &read,
    )
    .unwrap_or_else(|d| {
        panic!(
            "{}",
            d.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

struct Run {
    rs: Ruleset,
    eval: Evaluator,
    counters: MemoryCounters,
}

impl Run {
    fn new(rs: Ruleset) -> Run {
        let counters = MemoryCounters::new(rs.counters.iter().map(|c| c.spec.clone()).collect());
        Run {
            rs,
            eval: Evaluator::new(),
            counters,
        }
    }

    fn post(
        &mut self,
        did: &str,
        t: i64,
        record: serde_json::Value,
        account: &Account,
    ) -> Vec<Firing> {
        self.record(
            did,
            t,
            "app.bsky.feed.post",
            OpAction::Create,
            Some(record),
            account,
        )
    }

    fn record(
        &mut self,
        did: &str,
        t: i64,
        collection: &str,
        action: OpAction,
        record: Option<serde_json::Value>,
        account: &Account,
    ) -> Vec<Firing> {
        let record = record.map(|mut r| {
            r["$type"] = collection.into();
            json_to_ipld(&r).unwrap()
        });
        let rkey = format!("3k{:011}", t % 100_000_000_000);
        let event = record_event(did, t, action, collection, &rkey, record);
        let mut out = Vec::new();
        for input in Input::units(&event, account, t) {
            self.eval
                .evaluate(&self.rs, input, &mut self.counters, &mut out);
        }
        out
    }
}

fn names(f: &[Firing]) -> Vec<&str> {
    f.iter().map(|f| f.rule_name.as_str()).collect()
}

const DID: &str = "did:plc:alice";

#[test]
fn missing_data_never_fires_a_rule() {
    let rs = ruleset(
        r#"
[[rule]]
name = "young"
on = ["post"]
when = "account.age < duration('7d')"
[[rule.action]]
flag = "young"

[[rule]]
name = "not-old"
on = ["post"]
when = "!(account.age >= duration('7d'))"
[[rule.action]]
flag = "not-old"

[[rule]]
name = "unknown-or-young"
on = ["post"]
when = "!has(account.age) || account.age < duration('7d')"
[[rule.action]]
flag = "x"

[[rule]]
name = "false-and-missing"
on = ["post"]
when = "!(record.post.text == 'x' && account.age < duration('1d'))"
[[rule.action]]
flag = "x"
"#,
    );
    let mut run = Run::new(rs);
    let unknown = Account::default();
    let fired = run.post(DID, T0, serde_json::json!({"text": "hi"}), &unknown);
    // Age unknown: `young` and `not-old` are missing; `false && missing` is false, negated true.
    assert_eq!(names(&fired), ["unknown-or-young", "false-and-missing"]);
    let young = Account {
        created_at: Some(T0 - 3_600_000_000),
        ..Account::default()
    };
    let fired = run.post(DID, T0, serde_json::json!({"text": "hi"}), &young);
    assert_eq!(
        names(&fired),
        ["young", "not-old", "unknown-or-young", "false-and-missing"]
    );
}

#[test]
fn selectors_route_by_collection_and_action() {
    let rs = ruleset(
        r#"
[[rule]]
name = "any-delete"
on = ["delete:*"]
when = "true"
[[rule.action]]
flag = "d"

[[rule]]
name = "like-written"
on = ["like"]
when = "record.like.subject.did == 'did:plc:bob'"
[[rule.action]]
flag = "l"
"#,
    );
    let mut run = Run::new(rs);
    let a = Account::default();
    let like = serde_json::json!({"subject": {"uri": "at://did:plc:bob/app.bsky.feed.post/1", "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"}, "createdAt": "2024-06-01T12:00:00Z"});
    let f = run.record(
        DID,
        T0,
        "app.bsky.feed.like",
        OpAction::Create,
        Some(like),
        &a,
    );
    assert_eq!(names(&f), ["like-written"]);
    let f = run.record(DID, T0, "app.bsky.feed.like", OpAction::Delete, None, &a);
    assert_eq!(names(&f), ["any-delete"]);
    let f = run.record(DID, T0, "app.bsky.graph.follow", OpAction::Delete, None, &a);
    assert_eq!(names(&f), ["any-delete"]);
}

#[test]
fn counters_include_the_current_event_and_roll_over() {
    let rs = ruleset(
        r#"
[[counter]]
name = "replies"
on = ["create:post"]
when = "record.post.is_reply"
key = "account.did"
windows = ["hour", "day"]

[[counter]]
name = "reply_targets"
on = ["create:post"]
key = "account.did"
distinct = "record.post.reply.parent.did"
windows = ["hour"]

[[rule]]
name = "third-reply"
on = ["post"]
when = "counters.replies.hour == 3"
[[rule.action]]
report = "spam"
comment = "{{ counters.replies.hour }} replies to {{ counters.reply_targets.hour }} accounts"
target = "account"
"#,
    );
    let mut run = Run::new(rs);
    let a = Account::default();
    let reply = |parent: &str| {
        serde_json::json!({"text": "x", "reply": {
            "parent": {"uri": format!("at://{parent}/app.bsky.feed.post/1"), "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"},
            "root": {"uri": format!("at://{parent}/app.bsky.feed.post/1"), "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"}}})
    };
    assert!(run.post(DID, T0, reply("did:plc:b1"), &a).is_empty());
    // Not a reply: not counted, but the rule still reads the counter (2 != 3).
    assert!(
        run.post(DID, T0 + 1, serde_json::json!({"text": "x"}), &a)
            .is_empty()
    );
    assert!(run.post(DID, T0 + 2, reply("did:plc:b1"), &a).is_empty());
    let f = run.post(DID, T0 + 3, reply("did:plc:b2"), &a);
    assert_eq!(names(&f), ["third-reply"]);
    let action = &f[0].actions[0];
    assert_eq!(
        action.verb,
        Verb::Report {
            reason: "com.atproto.moderation.defs#reasonSpam".into(),
            comment: "3 replies to 2 accounts".into()
        }
    );
    assert_eq!(action.subject, Subject::Account { did: DID.into() });
    assert_eq!(action.rule, "third-reply");
    assert!(action.ruleset_version.starts_with("sha256:"));
    assert_eq!(
        *f[0].explanation,
        [("counters.replies.hour".to_string(), "3".to_string())]
    );
    // Another account has its own key.
    assert!(
        run.post("did:plc:other", T0 + 4, reply("did:plc:b1"), &a)
            .is_empty()
    );
    // Next hour: the hour window restarts (12:00 → 13:00 UTC).
    let next_hour = T0 + 3_600_000_000;
    assert!(run.post(DID, next_hour, reply("did:plc:b1"), &a).is_empty());
    assert!(
        run.post(DID, next_hour + 1, reply("did:plc:b1"), &a)
            .is_empty()
    );
    assert_eq!(
        names(&run.post(DID, next_hour + 2, reply("did:plc:b1"), &a)),
        ["third-reply"]
    );
}

#[test]
fn lists_keywords_domains_and_regexes() {
    let rs = ruleset_with_lists(
        r#"
[[list]]
name = "bad_words"
file = "lists/bad.txt"

[[list]]
name = "promo"
items = ["promo.example", "shop.test"]

[[rule]]
name = "bad-word"
on = ["post"]
when = "text.raw.has_keyword(lists.bad_words)"
[[rule.action]]
label = "rude"

[[rule]]
name = "bad-handle"
on = ["identity"]
when = "event.handle.contains_keyword(lists.bad_words)"
[[rule.action]]
flag = "bad-handle"
target = "account"

[[rule]]
name = "promo-link"
on = ["post"]
when = "text.links.exists(l, l.domain_in(lists.promo))"
[[rule.action]]
tag = ["promo"]

[[rule]]
name = "phone-number"
on = ["post"]
when = '''text.raw.matches(r"\+1 \(\d{3}\)")'''
[[rule.action]]
flag = "phone"
"#,
        &[("lists/bad.txt", "# words\nscam\n")],
    );
    let mut run = Run::new(rs);
    let a = Account::default();
    let f = run.post(DID, T0, serde_json::json!({"text": "this is a SCAM"}), &a);
    assert_eq!(names(&f), ["bad-word"]);
    assert!(
        run.post(
            DID,
            T0,
            serde_json::json!({"text": "scampi for dinner"}),
            &a
        )
        .is_empty()
    );
    let f = run.post(
        DID,
        T0,
        serde_json::json!({"text": "deals at https://www.promo.example/x"}),
        &a,
    );
    assert_eq!(names(&f), ["promo-link"]);
    let f = run.post(
        DID,
        T0,
        serde_json::json!({"text": "call +1 (765) 734"}),
        &a,
    );
    assert_eq!(names(&f), ["phone-number"]);
    let event = skywarden_atproto::event::Event {
        cursor: 1,
        did: DID.into(),
        time: "2024-06-01T12:00:00Z".into(),
        body: skywarden_atproto::event::EventBody::Identity {
            handle: Some("xx-scam-xx.bsky.social".into()),
        },
    };
    let mut out = Vec::new();
    for input in Input::units(&event, &a, T0) {
        run.eval
            .evaluate(&run.rs, input, &mut run.counters, &mut out);
    }
    assert_eq!(names(&out), ["bad-handle"]);
    assert_eq!(
        out[0].actions[0].subject,
        Subject::Account { did: DID.into() }
    );
}

#[test]
fn comprehensions_and_constants() {
    let rs = ruleset(
        r#"
[constants]
MAX_TAGS = 3
LANGS = ["en", "fr"]
YOUNG = { duration = "2d" }

[[rule]]
name = "many-tags"
on = ["post"]
when = "size(record.post.tags.filter(t, t.startsWith('x'))) >= MAX_TAGS"
[[rule.action]]
flag = "tags"

[[rule]]
name = "foreign-young"
on = ["post"]
when = "record.post.langs.all(l, !(l in LANGS)) && size(record.post.langs) > 0 && account.age < YOUNG"
[[rule.action]]
flag = "foreign"

[[rule]]
name = "one-x"
on = ["post"]
when = "record.post.tags.exists_one(t, t == 'x1')"
[[rule.action]]
flag = "one"
"#,
    );
    let mut run = Run::new(rs);
    let young = Account {
        created_at: Some(T0 - 3_600_000_000),
        ..Account::default()
    };
    let f = run.post(
        DID,
        T0,
        serde_json::json!({"text": "a", "tags": ["x1", "x2", "x3", "y"], "langs": ["de"]}),
        &young,
    );
    assert_eq!(names(&f), ["many-tags", "foreign-young", "one-x"]);
    let f = run.post(
        DID,
        T0,
        serde_json::json!({"text": "a", "tags": ["x1", "x1"], "langs": ["en", "de"]}),
        &young,
    );
    assert!(f.is_empty(), "{:?}", names(&f));
}

#[test]
fn shadow_rules_fire_with_their_mode_and_off_rules_do_not_run() {
    let rs = ruleset(
        r#"
[[rule]]
name = "shadowed"
on = ["post"]
when = "true"
mode = "shadow"
[[rule.action]]
label = "spam"
expires = "1h"

[[rule]]
name = "disabled"
on = ["post"]
when = "true"
mode = "off"
[[rule.action]]
label = "spam"
"#,
    );
    let mut run = Run::new(rs);
    let f = run.post(
        DID,
        T0,
        serde_json::json!({"text": "a"}),
        &Account::default(),
    );
    assert_eq!(names(&f), ["shadowed"]);
    assert_eq!(f[0].mode, skywarden_rules::Mode::Shadow);
    assert_eq!(f[0].actions[0].mode, skywarden_rules::Mode::Shadow);
    assert_eq!(
        f[0].actions[0].verb,
        Verb::Label {
            value: "spam".into(),
            negate: false,
            expires_in: Some(3_600_000_000)
        }
    );
    match &f[0].actions[0].subject {
        Subject::Record { uri, cid } => {
            assert!(uri.starts_with("at://did:plc:alice/app.bsky.feed.post/"));
            assert!(cid.as_deref().is_some_and(|c| c.starts_with("bafyrei")));
        }
        other => panic!("expected a record subject, got {other:?}"),
    }
}

#[test]
fn lists_reload_without_recompiling() {
    const RULES: &str = r#"
[[list]]
name = "blocked"
file = "lists/blocked.txt"

[[rule]]
name = "blocked-reply"
on = ["post"]
when = "record.post.reply.parent.did in lists.blocked"
[[rule.action]]
flag = "x"
"#;
    let reply = serde_json::json!({"text": "x", "reply": {
        "parent": {"uri": "at://did:plc:new/app.bsky.feed.post/1", "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"},
        "root": {"uri": "at://did:plc:new/app.bsky.feed.post/1", "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"}}});
    let mut rs = ruleset_with_lists(RULES, &[("lists/blocked.txt", "did:plc:bad\n")]);
    let version = rs.version.clone();
    let mut before = Run::new(ruleset_with_lists(
        RULES,
        &[("lists/blocked.txt", "did:plc:bad\n")],
    ));
    assert!(
        before
            .post(DID, T0, reply.clone(), &Account::default())
            .is_empty()
    );
    // The list file changes on disk: reload it, keep the compiled rules.
    let edited = |p: &Path| -> std::io::Result<String> {
        assert_eq!(p, Path::new("lists/blocked.txt"));
        Ok("did:plc:bad\ndid:plc:new\n".into())
    };
    let lists = rs.reload_lists(&edited).unwrap();
    rs.set_lists(lists);
    assert_eq!(rs.version, version, "rules did not change");
    let mut after = Run::new(rs);
    assert_eq!(
        names(&after.post(DID, T0, reply, &Account::default())),
        ["blocked-reply"]
    );
}

#[test]
fn generic_field_access_for_other_collections() {
    let rs = ruleset(
        r#"
[[rule]]
name = "whtwnd-entry"
on = ["com.whtwnd.blog.entry"]
when = 'record.get("title").contains("giveaway") && record.get("visibility") == "public" && record.get("stats.views") == "12"'
[[rule.action]]
flag = "x"
"#,
    );
    let mut run = Run::new(rs);
    let a = Account::default();
    let entry = serde_json::json!({"title": "crypto giveaway", "visibility": "public", "stats": {"views": 12}});
    let f = run.record(
        DID,
        T0,
        "com.whtwnd.blog.entry",
        OpAction::Create,
        Some(entry),
        &a,
    );
    assert_eq!(names(&f), ["whtwnd-entry"]);
    assert_eq!(
        *f[0].explanation,
        [
            (
                "record.get(\"title\")".to_string(),
                "crypto giveaway".to_string()
            ),
            (
                "record.get(\"visibility\")".to_string(),
                "public".to_string()
            ),
            ("record.get(\"stats.views\")".to_string(), "12".to_string()),
        ]
    );
    // A missing field is missing: the rule stays quiet.
    let entry = serde_json::json!({"visibility": "public"});
    let f = run.record(
        DID,
        T0,
        "com.whtwnd.blog.entry",
        OpAction::Create,
        Some(entry),
        &a,
    );
    assert!(f.is_empty());
}

#[test]
fn contains_with_a_literal_agrees_with_contains_with_a_value() {
    // A literal needle is searched with a searcher built at load; a needle from the event is
    // searched at evaluation. Both must answer alike, missing text included.
    let rs = ruleset(
        r#"
[constants]
NEEDLE = "spam ✓"

[[rule]]
name = "literal"
on = ["post"]
when = "record.post.text.contains(NEEDLE)"
[[rule.action]]
flag = "literal"

[[rule]]
name = "from-the-record"
on = ["post"]
when = "record.post.text.contains(record.get('needle'))"
[[rule.action]]
flag = "value"

[[rule]]
name = "not-literal"
on = ["post"]
when = "!record.post.text.contains('spam ✓')"
[[rule.action]]
flag = "not"

[[rule]]
name = "title-without-it"
on = ["post"]
when = "!record.get('title').contains('spam ✓')"
[[rule.action]]
flag = "title"
"#,
    );
    let mut run = Run::new(rs);
    let account = Account::default();
    let cases = [
        ("buy spam ✓ now", true),
        ("spam ✓", true),
        ("spam", false),
        ("SPAM ✓", false),
        ("", false),
        ("spam ✗ spam ✓", true),
    ];
    for (i, (text, hit)) in cases.into_iter().enumerate() {
        let t = T0 + i as i64 * 1_000_000;
        let fired = run.post(
            DID,
            t,
            serde_json::json!({"text": text, "needle": "spam ✓", "createdAt": "2024-06-01T12:00:00Z"}),
            &account,
        );
        let want: Vec<&str> = if hit {
            vec!["literal", "from-the-record"]
        } else {
            vec!["not-literal"]
        };
        assert_eq!(names(&fired), want, "text {text:?}");
    }
    // A missing haystack makes `contains` missing, negated or not: only a present title
    // without the needle fires.
    let fired = run.post(
        DID,
        T0 + 100_000_000,
        serde_json::json!({"text": "spam ✓", "title": "hello", "needle": "spam ✓", "createdAt": "2024-06-01T12:00:00Z"}),
        &account,
    );
    assert_eq!(
        names(&fired),
        vec!["literal", "from-the-record", "title-without-it"]
    );
}

#[test]
fn evaluations_and_firings_are_tallied_per_rule_and_drained() {
    let rs = ruleset(
        r#"
[[rule]]
name = "posts"
on = ["post"]
when = "true"
[[rule.action]]
flag = "p"

[[rule]]
name = "likes"
on = ["like"]
when = "false"
[[rule.action]]
flag = "l"

[[rule]]
name = "everything-off"
mode = "off"
on = ["*"]
when = "true"
[[rule.action]]
flag = "o"
"#,
    );
    let mut run = Run::new(rs);
    let account = Account::default();
    for i in 0..3 {
        run.post(
            DID,
            T0 + i,
            serde_json::json!({"text": "x", "createdAt": "2024-06-01T12:00:00Z"}),
            &account,
        );
    }
    let like = serde_json::json!({
        "subject": {"uri": "at://did:plc:bob/app.bsky.feed.post/3k00000000001", "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"},
        "createdAt": "2024-06-01T12:00:00Z"
    });
    run.record(
        DID,
        T0 + 10,
        "app.bsky.feed.like",
        OpAction::Create,
        Some(like),
        &account,
    );
    let mut tally = Vec::new();
    run.eval
        .drain_tally(|rule, n, fired| tally.push((rule, n, fired)));
    // `off` rules are not evaluated by the engine, so not counted.
    assert_eq!(tally, vec![(0, 3, 3), (1, 1, 0)]);
    let mut again = Vec::new();
    run.eval
        .drain_tally(|rule, n, fired| again.push((rule, n, fired)));
    assert!(
        again.is_empty(),
        "a drain starts the count again: {again:?}"
    );
    // Rule tests evaluate `off` rules too, and count them.
    run.eval.include_off = true;
    run.post(
        DID,
        T0 + 20,
        serde_json::json!({"text": "x", "createdAt": "2024-06-01T12:00:00Z"}),
        &account,
    );
    let mut with_off = Vec::new();
    run.eval
        .drain_tally(|rule, n, fired| with_off.push((rule, n, fired)));
    assert_eq!(with_off, vec![(0, 1, 1), (2, 1, 1)]);
}

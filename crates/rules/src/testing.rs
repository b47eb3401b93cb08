//! Rule tests: inline cases declared next to each rule, and fixture files of recorded events.
//!
//! A test case is a short story: optional `before` events, then the event under test (optionally
//! repeated), each evaluated through the whole ruleset with fresh in-memory counters. The case
//! passes when the rule under test fires (`expect = "fire"`) or does not (`expect = "pass"`) on
//! the last event.

use crate::counter::MemoryCounters;
use crate::evaluator::{Evaluator, Firing};
use crate::input::{Account, Input};
use crate::ruleset::{Location, Ruleset, collection_of};
use crate::value::parse_duration;
use serde::Deserialize;
use skywarden_atproto::CompactString;
use skywarden_atproto::data::{Ipld, cid_for_cbor, encode_cbor, json_to_ipld};
use skywarden_atproto::event::{
    Action as OpAction, Commit, Event, EventBody, Op, SignatureCheck, split_path,
};
use skywarden_atproto::record::Record;
use skywarden_atproto::syntax::{Datetime, Tid};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The DID test events come from unless they say otherwise.
pub const TEST_DID: &str = "did:plc:testauthor00000000000000";
/// The time of the first test event unless it says otherwise.
pub const TEST_TIME: &str = "2024-06-01T12:00:00.000Z";

/// What the author account looks like in a test, as written in rule files.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountDoc {
    handle: Option<String>,
    pds_host: Option<String>,
    /// Account age at the event, e.g. `"2d"`.
    age: Option<String>,
    /// Time since first seen, e.g. `"1h"`.
    seen_age: Option<String>,
    #[serde(default)]
    first_event: bool,
    posts: Option<i64>,
    followers: Option<i64>,
    follows: Option<i64>,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    followed_by: Option<Vec<String>>,
    has_avatar: Option<bool>,
}

/// One event of a test, as written in rule files.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventDoc {
    event: Option<String>,
    action: Option<String>,
    did: Option<String>,
    rkey: Option<String>,
    time: Option<String>,
    record: Option<toml::Value>,
    handle: Option<String>,
    active: Option<bool>,
    status: Option<String>,
    account: Option<AccountDoc>,
    repeat: Option<u32>,
}

/// An inline test case, as written in rule files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestDoc {
    name: String,
    expect: String,
    #[serde(default)]
    before: Vec<EventDoc>,
    event: Option<String>,
    action: Option<String>,
    did: Option<String>,
    rkey: Option<String>,
    time: Option<String>,
    record: Option<toml::Value>,
    handle: Option<String>,
    active: Option<bool>,
    status: Option<String>,
    account: Option<AccountDoc>,
    repeat: Option<u32>,
}

/// A fixture declaration, as written in rule files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureDoc {
    name: String,
    file: String,
    format: String,
    #[serde(default)]
    expect_fire: Vec<String>,
    #[serde(default)]
    expect_pass: Vec<String>,
    account: Option<AccountDoc>,
}

/// One step of a test: an event, its author account, how many times it is sent.
#[derive(Debug, Clone)]
pub struct Step {
    /// The event.
    pub event: Event,
    /// The author.
    pub account: Account,
    /// Times sent (each with a fresh record key and one second later).
    pub repeat: u32,
    /// Evaluation time of the first sending.
    pub now: i64,
}

/// A compiled inline test case.
#[derive(Debug, Clone)]
pub struct TestCase {
    /// Index of the rule under test.
    pub rule: usize,
    /// Name.
    pub name: String,
    /// Whether the rule must fire on the last event.
    pub expect_fire: bool,
    /// The events, in order; the last one is under test.
    pub steps: Vec<Step>,
    /// Where it is declared.
    pub location: Location,
}

/// Formats of fixture files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FixtureFormat {
    /// An account capture (`accountMeta` + `postRecords`), as saved by Bluesky's automod tools.
    Capture,
    /// JSON lines of events, as printed by `skywarden ingest --records`.
    Events,
}

/// A fixture: recorded events replayed through the ruleset.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// Name.
    pub name: String,
    /// File, relative to the ruleset root.
    pub file: PathBuf,
    /// Format.
    pub format: FixtureFormat,
    /// Rules that must fire at least once.
    pub expect_fire: Vec<String>,
    /// Rules that must never fire.
    pub expect_pass: Vec<String>,
    /// The author account (captures also supply the handle).
    pub account: Account,
    /// Where it is declared.
    pub location: Location,
}

type DocError = (String, Option<String>);

fn parse_time(s: &str) -> Result<i64, DocError> {
    Datetime::new(s).map(|d| d.timestamp_micros()).map_err(|e| {
        (
            format!("invalid time `{s}`: {e}"),
            Some("write times like 2024-06-01T12:00:00.000Z".into()),
        )
    })
}

fn account(doc: Option<&AccountDoc>, now: i64) -> Result<Account, DocError> {
    let Some(d) = doc else {
        return Ok(Account::default());
    };
    let ago = |s: &Option<String>| -> Result<Option<i64>, DocError> {
        s.as_deref()
            .map(|x| parse_duration(x).map(|d| now - d).map_err(|m| (m, None)))
            .transpose()
    };
    Ok(Account {
        handle: d.handle.as_deref().map(CompactString::from),
        pds_host: d.pds_host.clone(),
        created_at: ago(&d.age)?,
        first_seen: ago(&d.seen_age)?,
        first_event: d.first_event,
        posts: d.posts,
        followers: d.followers,
        follows: d.follows,
        labels: d.labels.clone(),
        tags: d.tags.clone(),
        followed_by: d.followed_by.as_ref().map(|v| v.iter().cloned().collect()),
        has_avatar: d.has_avatar,
    })
}

/// Builds a commit event with one op.
pub fn record_event(
    did: &str,
    time_micros: i64,
    action: OpAction,
    collection: &str,
    rkey: &str,
    record: Option<Ipld>,
) -> Event {
    let (cid, record) = match record {
        Some(value) => {
            let cid = encode_cbor(&value).ok().map(|b| cid_for_cbor(&b));
            (cid, Some(Record::from_value(value)))
        }
        None => (None, None),
    };
    Event {
        cursor: 0,
        did: did.into(),
        time: Datetime::from_timestamp_micros(time_micros)
            .map(|d| d.as_str().into())
            .unwrap_or_else(|_| TEST_TIME.into()),
        body: EventBody::Commit(Commit {
            rev: tid(time_micros).into(),
            since: None,
            too_big: false,
            signature: SignatureCheck::Unchecked,
            ops: vec![Op {
                action,
                collection: collection.into(),
                rkey: rkey.into(),
                cid,
                prev: None,
                record,
                record_problem: None,
            }],
        }),
    }
}

fn tid(micros: i64) -> String {
    Tid::from_parts(u64::try_from(micros).unwrap_or(0), 0)
        .map(|t| t.as_str().to_string())
        .unwrap_or_else(|_| "2222222222222".to_string())
}

fn step(doc: &EventDoc, index: usize, base: i64) -> Result<Step, DocError> {
    let now = match &doc.time {
        Some(t) => parse_time(t)?,
        None => base + index as i64 * 1_000_000,
    };
    let did = doc.did.clone().unwrap_or_else(|| TEST_DID.to_string());
    let kind = doc.event.as_deref().unwrap_or("post");
    let time = Datetime::from_timestamp_micros(now)
        .map_err(|e| (e.to_string(), None))?
        .as_str()
        .to_string();
    let event = match kind {
        "identity" => Event {
            cursor: 0,
            did: did.into(),
            time: time.into(),
            body: EventBody::Identity {
                handle: doc.handle.as_deref().map(CompactString::from),
            },
        },
        "account" => Event {
            cursor: 0,
            did: did.into(),
            time: time.into(),
            body: EventBody::Account {
                active: doc.active.unwrap_or(true),
                status: doc.status.as_deref().map(CompactString::from),
            },
        },
        other => {
            let collection = collection_of(other).ok_or_else(|| {
                (
                    format!("`{other}` is not an event kind"),
                    Some("use identity, account, a collection alias like post, or an NSID".into()),
                )
            })?;
            let action = match doc.action.as_deref() {
                None => OpAction::Create,
                Some(a) => OpAction::parse(a).ok_or_else(|| {
                    (
                        format!("unknown action `{a}`"),
                        Some("use create, update or delete".into()),
                    )
                })?,
            };
            let record = match (&doc.record, action) {
                (_, OpAction::Delete) => None,
                (Some(v), _) => {
                    let mut json = serde_json::to_value(v).map_err(|e| (e.to_string(), None))?;
                    if let Some(obj) = json.as_object_mut() {
                        obj.entry("$type")
                            .or_insert_with(|| collection.clone().into());
                        obj.entry("createdAt")
                            .or_insert_with(|| time.clone().into());
                    }
                    Some(json_to_ipld(&json).map_err(|e| (format!("invalid record: {e}"), None))?)
                }
                (None, _) => {
                    let mut m = BTreeMap::new();
                    m.insert("$type".to_string(), Ipld::String(collection.clone()));
                    m.insert("createdAt".to_string(), Ipld::String(time.clone()));
                    Some(Ipld::Map(m))
                }
            };
            let rkey = doc.rkey.clone().unwrap_or_else(|| tid(now));
            record_event(&did, now, action, &collection, &rkey, record)
        }
    };
    Ok(Step {
        event,
        account: account(doc.account.as_ref(), now)?,
        repeat: doc.repeat.unwrap_or(1).max(1),
        now,
    })
}

/// Compiles a test case declared on rule `rule`.
pub fn test_case(rule: usize, doc: &TestDoc, location: Location) -> Result<TestCase, DocError> {
    let expect_fire = match doc.expect.as_str() {
        "fire" => true,
        "pass" => false,
        other => {
            return Err((
                format!("test `{}`: unknown expectation `{other}`", doc.name),
                Some("expect is \"fire\" or \"pass\"".into()),
            ));
        }
    };
    let base = parse_time(TEST_TIME)?;
    let mut steps = Vec::new();
    let mut index = 0usize;
    for b in &doc.before {
        let s = step(b, index, base).map_err(|(m, h)| (format!("test `{}`: {m}", doc.name), h))?;
        index += s.repeat as usize;
        steps.push(s);
    }
    let last = EventDoc {
        event: doc.event.clone(),
        action: doc.action.clone(),
        did: doc.did.clone(),
        rkey: doc.rkey.clone(),
        time: doc.time.clone(),
        record: doc.record.clone(),
        handle: doc.handle.clone(),
        active: doc.active,
        status: doc.status.clone(),
        account: doc.account.clone(),
        repeat: doc.repeat,
    };
    steps
        .push(step(&last, index, base).map_err(|(m, h)| (format!("test `{}`: {m}", doc.name), h))?);
    Ok(TestCase {
        rule,
        name: doc.name.clone(),
        expect_fire,
        steps,
        location,
    })
}

/// Compiles a fixture declaration found in `file`.
pub fn fixture(doc: &FixtureDoc, file: &Path) -> Result<Fixture, DocError> {
    let format = match doc.format.as_str() {
        "capture" => FixtureFormat::Capture,
        "events" => FixtureFormat::Events,
        other => {
            return Err((
                format!("fixture `{}`: unknown format `{other}`", doc.name),
                Some("formats are capture and events".into()),
            ));
        }
    };
    Ok(Fixture {
        name: doc.name.clone(),
        file: file.parent().unwrap_or(Path::new("")).join(&doc.file),
        format,
        expect_fire: doc.expect_fire.clone(),
        expect_pass: doc.expect_pass.clone(),
        account: account(doc.account.as_ref(), 0)?,
        location: Location {
            file: file.to_path_buf(),
            line: 0,
        },
    })
}

/// The outcome of one test case or fixture.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// `rule: case` or `fixture NAME`.
    pub name: String,
    /// Where it is declared.
    pub location: Location,
    /// Whether it passed.
    pub passed: bool,
    /// What happened, for the report: which rules fired and why.
    pub detail: Vec<String>,
}

fn describe(firings: &[Firing]) -> Vec<String> {
    firings
        .iter()
        .map(|f| {
            let why: Vec<String> = f
                .explanation
                .iter()
                .map(|(k, v)| format!("{k} = {v}"))
                .collect();
            format!("fired {} ({})", f.rule_name, why.join(", "))
        })
        .collect()
}

/// Runs one inline test case.
pub fn run_case(ruleset: &Ruleset, case: &TestCase) -> Outcome {
    let mut evaluator = Evaluator::new();
    evaluator.include_off = true;
    let mut counters =
        MemoryCounters::new(ruleset.counters.iter().map(|c| c.spec.clone()).collect());
    let mut firings = Vec::new();
    let mut last = Vec::new();
    for s in &case.steps {
        for i in 0..s.repeat {
            let mut event = s.event.clone();
            let now = s.now + i64::from(i) * 1_000_000;
            if i > 0
                && let EventBody::Commit(c) = &mut event.body
            {
                for op in &mut c.ops {
                    op.rkey = tid(now).into();
                }
                event.time = Datetime::from_timestamp_micros(now)
                    .map(|d| d.as_str().into())
                    .unwrap_or_default();
            }
            firings.clear();
            for input in Input::units(&event, &s.account, now) {
                evaluator.evaluate(ruleset, input, &mut counters, &mut firings);
            }
        }
        last = firings.clone();
    }
    let rule = &ruleset.rules[case.rule];
    let fired = last.iter().any(|f| f.rule == case.rule);
    let mut detail = describe(&last);
    if fired != case.expect_fire {
        detail.insert(
            0,
            format!(
                "expected {} to {}, but it {}",
                rule.name,
                if case.expect_fire {
                    "fire"
                } else {
                    "stay quiet"
                },
                if fired { "fired" } else { "did not fire" }
            ),
        );
    }
    Outcome {
        name: format!("{}: {}", rule.name, case.name),
        location: case.location.clone(),
        passed: fired == case.expect_fire,
        detail,
    }
}

/// Reads the events of a fixture (capture or JSON lines), with the account each belongs to.
pub fn fixture_events(fixture: &Fixture, text: &str) -> Result<Vec<(Event, Account)>, String> {
    match fixture.format {
        FixtureFormat::Capture => capture_events(text, &fixture.account),
        FixtureFormat::Events => text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                let v: serde_json::Value =
                    serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1))?;
                let event = event_from_json(&v).map_err(|m| format!("line {}: {m}", i + 1))?;
                let account = account_from_json(&v)
                    .map_err(|m| format!("line {}: {m}", i + 1))?
                    .unwrap_or_else(|| fixture.account.clone());
                Ok((event, account))
            })
            .collect(),
    }
}

/// Converts an account capture into events: the profile, then the posts oldest first, each at
/// its `createdAt`.
pub fn capture_events(text: &str, base: &Account) -> Result<Vec<(Event, Account)>, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let meta = &v["accountMeta"];
    let did = meta["Identity"]["DID"]
        .as_str()
        .ok_or("capture has no accountMeta.Identity.DID")?;
    let mut account = base.clone();
    // What the capture knew about the account fills what the fixture did not say.
    if account.handle.is_none() {
        account.handle = meta["Identity"]["Handle"].as_str().map(CompactString::from);
    }
    account.has_avatar = account
        .has_avatar
        .or(meta["Profile"]["HasAvatar"].as_bool());
    account.followers = account.followers.or(meta["FollowersCount"].as_i64());
    account.follows = account.follows.or(meta["FollowsCount"].as_i64());
    account.posts = account.posts.or(meta["PostsCount"].as_i64());
    let mut posts: Vec<(i64, Event)> = Vec::new();
    for p in v["postRecords"].as_array().map_or(&[][..], Vec::as_slice) {
        let uri = p["uri"].as_str().ok_or("post without uri")?;
        let rkey = uri.rsplit('/').next().unwrap_or("");
        let created = p["value"]["createdAt"]
            .as_str()
            .ok_or("post without createdAt")?;
        let t = Datetime::new(created)
            .map_err(|e| format!("{uri}: {e}"))?
            .timestamp_micros();
        let value = json_to_ipld(&p["value"]).map_err(|e| format!("{uri}: {e}"))?;
        posts.push((
            t,
            record_event(
                did,
                t,
                OpAction::Create,
                "app.bsky.feed.post",
                rkey,
                Some(value),
            ),
        ));
    }
    posts.sort_by_key(|(t, _)| *t);
    let mut out = Vec::new();
    if let Some(profile) = meta.get("Profile").filter(|p| p.is_object()) {
        let t = posts.first().map_or(0, |(t, _)| *t - 1_000_000);
        let mut m = serde_json::Map::new();
        m.insert("$type".into(), "app.bsky.actor.profile".into());
        for (from, to) in [
            ("DisplayName", "displayName"),
            ("Description", "description"),
        ] {
            if let Some(s) = profile[from].as_str() {
                m.insert(to.into(), s.into());
            }
        }
        let value = json_to_ipld(&serde_json::Value::Object(m)).map_err(|e| e.to_string())?;
        out.push((
            record_event(
                did,
                t,
                OpAction::Update,
                "app.bsky.actor.profile",
                "self",
                Some(value),
            ),
            account.clone(),
        ));
    }
    out.extend(posts.into_iter().map(|(_, e)| (e, account.clone())));
    Ok(out)
}

/// Reads the optional `account` object of an event line: what enrichment knew about the author
/// (`handle`, `pdsHost`, `createdAt`, `firstSeen`, `hasAvatar`, `followers`, `follows`, `posts`,
/// `labels`, `tags`, `followedBy`). Lines without one give `None`.
pub fn account_from_json(v: &serde_json::Value) -> Result<Option<Account>, String> {
    let Some(a) = v.get("account").filter(|a| a.is_object()) else {
        return Ok(None);
    };
    let time = |key: &str| -> Result<Option<i64>, String> {
        a[key]
            .as_str()
            .map(|s| {
                Datetime::new(s)
                    .map(|d| d.timestamp_micros())
                    .map_err(|e| format!("account.{key}: {e}"))
            })
            .transpose()
    };
    let strings = |key: &str| -> Vec<String> {
        a[key]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(Some(Account {
        handle: a["handle"].as_str().map(CompactString::from),
        pds_host: a["pdsHost"].as_str().map(str::to_string),
        created_at: time("createdAt")?,
        first_seen: time("firstSeen")?,
        first_event: false,
        has_avatar: a["hasAvatar"].as_bool(),
        posts: a["posts"].as_i64(),
        followers: a["followers"].as_i64(),
        follows: a["follows"].as_i64(),
        labels: strings("labels"),
        tags: strings("tags"),
        followed_by: a["followedBy"].as_array().map(|l| {
            l.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        }),
    }))
}

/// Parses one event as printed by `skywarden ingest --records`.
pub fn event_from_json(v: &serde_json::Value) -> Result<Event, String> {
    let did = v["did"].as_str().ok_or("event without did")?.to_string();
    let time = v["time"].as_str().unwrap_or(TEST_TIME).to_string();
    let cursor = v["cursor"].as_i64().unwrap_or(0);
    let body = match v["kind"].as_str().ok_or("event without kind")? {
        "commit" => {
            let mut ops = Vec::new();
            for op in v["ops"].as_array().map_or(&[][..], Vec::as_slice) {
                let action = op["action"]
                    .as_str()
                    .and_then(OpAction::parse)
                    .ok_or("op without a valid action")?;
                let path = op["path"].as_str().ok_or("op without path")?;
                let (collection, rkey) =
                    split_path(path).ok_or("op path is not collection/rkey")?;
                let record = match op.get("record") {
                    Some(r) if !r.is_null() => Some(Record::from_value(
                        json_to_ipld(r).map_err(|e| format!("{path}: {e}"))?,
                    )),
                    _ => None,
                };
                let cid = op["cid"]
                    .as_str()
                    .and_then(|c| skywarden_atproto::syntax::parse_cid_str(c).ok());
                ops.push(Op {
                    action,
                    collection: collection.into(),
                    rkey: rkey.into(),
                    cid,
                    prev: None,
                    record,
                    record_problem: None,
                });
            }
            EventBody::Commit(Commit {
                rev: v["rev"].as_str().unwrap_or("").into(),
                since: None,
                too_big: v["tooBig"].as_bool().unwrap_or(false),
                signature: SignatureCheck::Unchecked,
                ops,
            })
        }
        "identity" => EventBody::Identity {
            handle: v["handle"].as_str().map(CompactString::from),
        },
        "account" => EventBody::Account {
            active: v["active"].as_bool().unwrap_or(true),
            status: v["status"].as_str().map(CompactString::from),
        },
        "sync" => EventBody::Sync {
            rev: v["rev"].as_str().unwrap_or("").into(),
        },
        other => return Err(format!("unknown event kind `{other}`")),
    };
    Ok(Event {
        cursor,
        did: did.into(),
        time: time.into(),
        body,
    })
}

/// Replays a fixture and checks its expectations.
pub fn run_fixture(ruleset: &Ruleset, fixture: &Fixture, text: &str) -> Outcome {
    let name = format!("fixture {}", fixture.name);
    let events = match fixture_events(fixture, text) {
        Ok(e) => e,
        Err(m) => {
            return Outcome {
                name,
                location: fixture.location.clone(),
                passed: false,
                detail: vec![format!("{}: {m}", fixture.file.display())],
            };
        }
    };
    let mut evaluator = Evaluator::new();
    evaluator.include_off = true;
    let mut counters =
        MemoryCounters::new(ruleset.counters.iter().map(|c| c.spec.clone()).collect());
    let mut firings = Vec::new();
    for (event, account) in &events {
        let now = Datetime::new(&event.time).map_or(0, |d| d.timestamp_micros());
        for input in Input::units(event, account, now) {
            evaluator.evaluate(ruleset, input, &mut counters, &mut firings);
        }
    }
    let mut detail = Vec::new();
    let mut passed = true;
    for want in &fixture.expect_fire {
        let n = firings.iter().filter(|f| &f.rule_name == want).count();
        if n == 0 {
            passed = false;
            detail.push(format!("expected {want} to fire, but it never did"));
        } else {
            detail.push(format!("{want} fired {n} time(s)"));
        }
    }
    for quiet in &fixture.expect_pass {
        let n = firings.iter().filter(|f| &f.rule_name == quiet).count();
        if n > 0 {
            passed = false;
            detail.push(format!(
                "expected {quiet} to stay quiet, but it fired {n} time(s)"
            ));
        }
    }
    if let Some(first) = firings
        .iter()
        .find(|f| fixture.expect_fire.contains(&f.rule_name))
    {
        detail.extend(describe(std::slice::from_ref(first)));
    }
    Outcome {
        name,
        location: fixture.location.clone(),
        passed,
        detail,
    }
}

/// Runs every inline case and fixture of a ruleset. Fixture files are read through `read`
/// (relative to the ruleset root).
pub fn run_all(ruleset: &Ruleset, read: crate::ruleset::ReadFile<'_>) -> Vec<Outcome> {
    let mut out: Vec<Outcome> = ruleset.tests.iter().map(|c| run_case(ruleset, c)).collect();
    for fx in &ruleset.fixtures {
        out.push(match read(&fx.file) {
            Ok(text) => run_fixture(ruleset, fx, &text),
            Err(e) => Outcome {
                name: format!("fixture {}", fx.name),
                location: fx.location.clone(),
                passed: false,
                detail: vec![format!("cannot read {}: {e}", fx.file.display())],
            },
        });
    }
    out
}

//! End-to-end test against a real PDS: `tests/pds/harness.mjs` starts `@atproto/pds` (via
//! `@atproto/dev-env`) and performs a scripted scenario; a firehose [`Source`] must deliver every
//! event of it, decoded, signature-checked, with no gap or duplicate across a forced reconnect
//! and a consumer restart from its saved cursor.
//!
//! Needs Node.js (>= 18.7, 20 recommended) with npm; `tests/pds/install.sh` installs the
//! harness' pinned dependencies when needed (a cold install also compiles better-sqlite3:
//! python3, make, g++). The test fails, it does not skip, when that is impossible.
//!
//! ```sh
//! cargo test -p skywarden-ingest --test real_pds -- --nocapture
//! ```

use serde_json::{Value, json};
use skywarden_atproto::crypto::PublicKey;
use skywarden_atproto::event::{Action, Event, EventBody, SignatureCheck};
use skywarden_atproto::record::{Embed, FacetFeature, Record};
use skywarden_ingest::firehose::WsSettings;
use skywarden_ingest::metrics::{DROP_REASONS, SourceMetrics};
use skywarden_ingest::{Source, SourceConfig, StaticKeys};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::timeout;

/// Everything after the install: harness start-up (~5 s), both phases and the checks.
const TEST_TIMEOUT: Duration = Duration::from_secs(240);
/// `npm ci` from scratch downloads ~500 packages and compiles better-sqlite3.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(900);
/// Waiting for one harness line (start-up, or one phase).
const HARNESS_LINE_TIMEOUT: Duration = Duration::from_secs(120);
/// Waiting for one event from the firehose (everything is replayed, so this is generous).
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);
/// After this many phase-1 events the test drops the connection once.
const DISCONNECT_AFTER: usize = 10;

fn pds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/pds")
}

#[tokio::test(flavor = "multi_thread")]
async fn real_pds_firehose_end_to_end() {
    let dir = pds_dir();
    let started = Instant::now();

    // 1. Install the harness' dependencies (fast when already installed).
    let install = timeout(
        INSTALL_TIMEOUT,
        Command::new("bash")
            .arg(dir.join("install.sh"))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("tests/pds/install.sh did not finish within {INSTALL_TIMEOUT:?}"))
    .unwrap_or_else(|e| panic!("cannot run bash tests/pds/install.sh: {e}"));
    assert!(
        install.status.success(),
        "tests/pds/install.sh failed ({}); the PDS test needs Node.js with npm.\n--- stdout\n{}\n--- stderr\n{}",
        install.status,
        String::from_utf8_lossy(&install.stdout),
        String::from_utf8_lossy(&install.stderr),
    );
    let install_time = started.elapsed();

    // 2. Everything else, under one timeout. The guard prints the harness log on any failure.
    let work = unique_temp_dir();
    std::fs::create_dir_all(&work).expect("create the test's temp dir");
    let guard = FailureReport {
        log: work.join("harness.log"),
        work: work.clone(),
    };
    match timeout(TEST_TIMEOUT, run(&dir, &work)).await {
        Ok(timings) => eprintln!(
            "real_pds: passed in {:.1}s (install check {:.2}s, {timings})",
            started.elapsed().as_secs_f64(),
            install_time.as_secs_f64()
        ),
        Err(_) => panic!("the real-PDS test did not finish within {TEST_TIMEOUT:?}"),
    }
    drop(guard);
    let _ = std::fs::remove_dir_all(&work);
}

fn unique_temp_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!("skywarden-real-pds-{}-{nanos}", std::process::id()))
}

/// On a failing (panicking) test, prints the end of the harness log and where the files are.
struct FailureReport {
    log: PathBuf,
    work: PathBuf,
}

impl Drop for FailureReport {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(80)..].join("\n");
        eprintln!(
            "--- harness stderr ({}, last {} lines; data kept in {})\n{tail}\n---",
            self.log.display(),
            lines.len().min(80),
            self.work.display()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The harness process
// ---------------------------------------------------------------------------------------------

struct Harness {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

/// A `done` message.
struct Done {
    actions: Vec<Value>,
    last_seq: i64,
    keys: HashMap<String, (String, String)>,
}

impl Harness {
    async fn start(dir: &Path, work: &Path) -> (Harness, String) {
        let log = std::fs::File::create(work.join("harness.log")).expect("create harness.log");
        let mut child = Command::new("node")
            .arg(dir.join("harness.mjs"))
            .arg("--data-dir")
            .arg(work.join("pds-data"))
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `node tests/pds/harness.mjs`: {e}"));
        let stdin = child.stdin.take().expect("piped stdin");
        let lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let mut harness = Harness {
            child,
            stdin,
            lines,
        };
        let ready = harness.read_message("the ready line").await;
        assert_eq!(
            ready["type"], "ready",
            "expected the ready line, got {ready}"
        );
        let pds_url = ready["pdsUrl"]
            .as_str()
            .unwrap_or_else(|| panic!("ready line without pdsUrl: {ready}"))
            .to_string();
        (harness, pds_url)
    }

    /// The next protocol line; fails on an `error` message, EOF or timeout.
    async fn read_message(&mut self, what: &str) -> Value {
        let line = match timeout(HARNESS_LINE_TIMEOUT, self.lines.next_line()).await {
            Err(_) => panic!("harness: no {what} within {HARNESS_LINE_TIMEOUT:?}"),
            Ok(Err(e)) => panic!("harness: reading {what}: {e}"),
            Ok(Ok(None)) => {
                let status = self.child.try_wait().ok().flatten();
                panic!("harness: stdout closed while waiting for {what} (exit status {status:?})")
            }
            Ok(Ok(Some(line))) => line,
        };
        let message: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("harness: {what} is not JSON ({e}): {line:?}"));
        if message["type"] == "error" {
            panic!(
                "harness reported an error while we waited for {what}: {}",
                message["message"]
            );
        }
        message
    }

    async fn send(&mut self, command: &str) {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .unwrap_or_else(|e| panic!("harness: sending {command:?}: {e}"));
        self.stdin.flush().await.expect("flush harness stdin");
    }

    async fn phase(&mut self, phase: &str) -> Done {
        self.send(phase).await;
        let done = self.read_message(&format!("the {phase} done line")).await;
        assert_eq!(
            done["type"], "done",
            "expected {phase}'s done line, got {done}"
        );
        assert_eq!(done["phase"], phase, "done line of the wrong phase: {done}");
        let actions = done["actions"]
            .as_array()
            .unwrap_or_else(|| panic!("{phase}: done without actions: {done}"))
            .clone();
        let last_seq = done["lastSeq"]
            .as_i64()
            .unwrap_or_else(|| panic!("{phase}: done without lastSeq: {done}"));
        // The DID documents' verification methods exactly as the PLC serves them (this PLC
        // still writes the legacy `EcdsaSecp256k1VerificationKey2019` form).
        let keys = done["didDocKeys"]
            .as_object()
            .unwrap_or_else(|| panic!("{phase}: done without didDocKeys: {done}"))
            .iter()
            .map(|(did, method)| {
                let field = |k: &str| {
                    method[k]
                        .as_str()
                        .unwrap_or_else(|| panic!("{phase}: {k} of {did} in {method}"))
                        .to_string()
                };
                (did.clone(), (field("type"), field("publicKeyMultibase")))
            })
            .collect();
        Done {
            actions,
            last_seq,
            keys,
        }
    }

    async fn exit(mut self) {
        self.send("exit").await;
        let status = timeout(Duration::from_secs(30), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("harness did not exit within 30 s of `exit`"))
            .expect("wait for the harness");
        assert!(status.success(), "harness exited with {status}");
    }
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

/// Runs the scenario; returns a timing summary.
async fn run(dir: &Path, work: &Path) -> String {
    let t0 = Instant::now();
    let (mut harness, pds_url) = Harness::start(dir, work).await;
    let startup = t0.elapsed();

    let settings = WsSettings {
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        max_retries: Some(20),
        ..WsSettings::default()
    };

    // Phase 1, then a consumer that starts from the beginning (cursor 0) and is disconnected
    // once in the middle of the replay.
    let t1 = Instant::now();
    let phase1 = harness.phase("phase1").await;
    let mut source = Source::firehose(
        &pds_url,
        settings.clone(),
        SourceConfig {
            cursor: Some(0),
            keys: Some(Arc::new(static_keys(&phase1.keys))),
            require_signatures: false,
        },
    )
    .expect("firehose source");
    let metrics1 = source.metrics();
    let mut events: Vec<Event> = Vec::new();
    let mut disconnected = false;
    loop {
        let event = next_event(&mut source, &events, phase1.last_seq, "phase 1").await;
        let cursor = event.cursor;
        events.push(event);
        if !disconnected && events.len() == DISCONNECT_AFTER {
            source.disconnect();
            disconnected = true;
        }
        if cursor >= phase1.last_seq {
            break;
        }
    }
    assert!(
        disconnected,
        "phase 1 had only {} events: the forced reconnect never happened",
        events.len()
    );
    assert!(
        metrics1.reconnects.load(Relaxed) >= 1,
        "after source.disconnect() the source should have reconnected; metrics: {:?}",
        metrics1.snapshot()
    );
    assert_eq!(
        source.cursor(),
        Some(phase1.last_seq),
        "the resume cursor after phase 1 should be its last seq"
    );
    let phase1_events = events.len();
    let phase1_time = t1.elapsed();

    // A consumer restart: save the cursor, drop the source, let phase 2 happen while nobody is
    // connected, then resume from the saved cursor with a new source.
    let t2 = Instant::now();
    let saved_cursor = source.cursor();
    drop(source);
    let phase2 = harness.phase("phase2").await;
    let mut keys = phase1.keys.clone();
    keys.extend(phase2.keys.clone());
    let mut source = Source::firehose(
        &pds_url,
        settings,
        SourceConfig {
            cursor: saved_cursor,
            keys: Some(Arc::new(static_keys(&keys))),
            require_signatures: false,
        },
    )
    .expect("firehose source");
    let metrics2 = source.metrics();
    loop {
        let event = next_event(&mut source, &events, phase2.last_seq, "phase 2").await;
        let cursor = event.cursor;
        events.push(event);
        if cursor >= phase2.last_seq {
            break;
        }
    }
    assert_eq!(source.cursor(), Some(phase2.last_seq));
    let phase2_time = t2.elapsed();

    // The harness drops open sockets when it exits: close ours first.
    drop(source);
    harness.exit().await;

    let names = account_names(&phase1.actions);
    let listing = listing(&events, &names);
    check_sequence(&events, phase2.last_seq, &listing);
    check_metrics("phase-1 source", &metrics1, &listing);
    check_metrics("phase-2 source (after the restart)", &metrics2, &listing);
    check_signatures(&events, &[&metrics1, &metrics2], &listing);
    let actions: Vec<Value> = phase1
        .actions
        .iter()
        .chain(&phase2.actions)
        .cloned()
        .collect();
    check_actions(&actions, &events, &names, &listing);
    // Shown with --nocapture: what the firehose delivered.
    eprintln!("{listing}");

    format!(
        "harness start-up {:.2}s, phase 1 {:.2}s ({phase1_events} events, {} reconnect(s)), \
         phase 2 + restart {:.2}s ({} events)",
        startup.as_secs_f64(),
        phase1_time.as_secs_f64(),
        metrics1.reconnects.load(Relaxed),
        phase2_time.as_secs_f64(),
        events.len() - phase1_events,
    )
}

fn static_keys(keys: &HashMap<String, (String, String)>) -> StaticKeys {
    StaticKeys(
        keys.iter()
            .map(|(did, (kind, multibase))| {
                let key =
                    PublicKey::from_verification_method(kind, multibase).unwrap_or_else(|e| {
                        panic!("signing key of {did} ({kind} {multibase}) does not parse: {e}")
                    });
                (did.clone(), key)
            })
            .collect(),
    )
}

/// The next event, or a failure that says what had arrived so far.
async fn next_event(source: &mut Source, so_far: &[Event], last_seq: i64, phase: &str) -> Event {
    // The source has already received every frame up to `last_seq` without delivering the last
    // ones (skipped as undecodable, or dropped by the stream guard): no point in waiting.
    if source.cursor().is_some_and(|c| c >= last_seq) {
        panic!(
            "{phase}: the source received every frame up to seq {last_seq} but did not deliver \
             the events after seq {:?}; metrics {:?}\nevents so far:\n{}",
            so_far.last().map(|e| e.cursor),
            source.metrics().snapshot(),
            listing(so_far, &HashMap::new())
        );
    }
    match timeout(EVENT_TIMEOUT, source.next_event()).await {
        Ok(Ok(Some(event))) => event,
        Ok(Ok(None)) => panic!("{phase}: the firehose source ended"),
        Ok(Err(e)) => panic!(
            "{phase}: source error before reaching seq {last_seq}: {e}\nevents so far:\n{}",
            listing(so_far, &HashMap::new())
        ),
        Err(_) => panic!(
            "{phase}: no event within {EVENT_TIMEOUT:?}; waiting for seq {last_seq}, resume cursor \
             {:?}; metrics {:?}\nevents so far:\n{}",
            source.cursor(),
            source.metrics().snapshot(),
            listing(so_far, &HashMap::new())
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

/// Every seq from 1 to `last_seq` exactly once, in increasing order.
fn check_sequence(events: &[Event], last_seq: i64, listing: &str) {
    let got: Vec<i64> = events.iter().map(|e| e.cursor).collect();
    let want: Vec<i64> = (1..=last_seq).collect();
    if got != want {
        let mut seen = HashMap::new();
        for s in &got {
            *seen.entry(*s).or_insert(0) += 1;
        }
        let missing: Vec<i64> = want
            .iter()
            .filter(|s| !seen.contains_key(s))
            .copied()
            .collect();
        let duplicated: Vec<i64> = seen
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(s, _)| *s)
            .collect();
        let out_of_order: Vec<(i64, i64)> = got
            .windows(2)
            .filter(|w| w[1] <= w[0])
            .map(|w| (w[0], w[1]))
            .collect();
        panic!(
            "expected every seq 1..={last_seq} exactly once and in order; got {} events: missing \
             {missing:?}, duplicated {duplicated:?}, out of order {out_of_order:?}\n{listing}",
            got.len()
        );
    }
}

fn check_metrics(name: &str, m: &SourceMetrics, listing: &str) {
    let snapshot = m.snapshot();
    assert_eq!(
        m.decode_errors.load(Relaxed),
        0,
        "{name}: decode errors; {snapshot:?}\n{listing}"
    );
    assert_eq!(
        m.oversized.load(Relaxed),
        0,
        "{name}: oversized frames; {snapshot:?}\n{listing}"
    );
    assert_eq!(
        m.outdated_cursor.load(Relaxed),
        0,
        "{name}: OutdatedCursor; {snapshot:?}"
    );
    for reason in DROP_REASONS {
        assert_eq!(
            m.dropped_for(reason),
            0,
            "{name}: events dropped by the stream guard for {reason}; {snapshot:?}\n{listing}"
        );
    }
    // The stream-control frames (#info, error, unknown) never came: every frame is an event.
    let frames: u64 = ["#commit", "#identity", "#account", "#sync"]
        .iter()
        .map(|k| m.frames_of(k))
        .sum();
    assert_eq!(
        frames,
        m.events.load(Relaxed),
        "{name}: frames received vs events delivered; {snapshot:?}"
    );
    for kind in ["#info", "error", "unknown"] {
        assert_eq!(
            m.frames_of(kind),
            0,
            "{name}: unexpected {kind} frames; {snapshot:?}"
        );
    }
}

/// Every commit (account creation's empty one included) is signed and verified.
fn check_signatures(events: &[Event], metrics: &[&SourceMetrics], listing: &str) {
    let mut commits = 0;
    for e in events {
        if let EventBody::Commit(c) = &e.body {
            commits += 1;
            assert_eq!(
                c.signature,
                SignatureCheck::Verified,
                "commit seq {} of {} ({} ops) was not signature-verified\n{listing}",
                e.cursor,
                e.did,
                c.ops.len()
            );
            assert!(!c.too_big, "commit seq {} is tooBig\n{listing}", e.cursor);
        }
    }
    let verified: u64 = metrics
        .iter()
        .map(|m| m.signatures_verified.load(Relaxed))
        .sum();
    assert_eq!(
        verified, commits,
        "signatures_verified metric vs verified commits"
    );
}

/// Matches every harness action to its event(s) and checks their fields; then checks that no
/// event is left unexplained.
fn check_actions(
    actions: &[Value],
    events: &[Event],
    names: &HashMap<String, String>,
    listing: &str,
) {
    let mut used = vec![false; events.len()];
    let mut problems: Vec<String> = Vec::new();
    // Latest record CID per at-uri path, from the harness' own actions (for `prev`).
    let mut current_cid: HashMap<(String, String, String), String> = HashMap::new();
    let mut last_matched: Option<(usize, String)> = None;
    let mut created: Vec<String> = Vec::new();

    for (n, action) in actions.iter().enumerate() {
        let kind = action["kind"].as_str().unwrap_or("?");
        let did = action["did"].as_str().unwrap_or("?").to_string();
        let mut label = format!("action #{n} {kind} by {}", name_of(names, &did));
        if let (Some(c), Some(r)) = (action["collection"].as_str(), action["rkey"].as_str()) {
            label += &format!(" of {c}/{r}");
        }
        let mut take = |pred: &dyn Fn(&Event) -> bool| -> Option<usize> {
            let i = (0..events.len())
                .find(|&i| !used[i] && events[i].did == did && pred(&events[i]))?;
            used[i] = true;
            Some(i)
        };
        let mut matched: Vec<usize> = Vec::new();
        match kind {
            "account_created" => {
                created.push(did.clone());
                let handle = action["handle"].as_str();
                match take(&|e| matches!(e.body, EventBody::Identity { .. })) {
                    None => problems.push(format!("{label}: no #identity event")),
                    Some(i) => {
                        matched.push(i);
                        check_identity(&events[i], handle, &label, &mut problems);
                    }
                }
                match take(&|e| matches!(e.body, EventBody::Account { .. })) {
                    None => problems.push(format!("{label}: no #account event")),
                    Some(i) => {
                        matched.push(i);
                        check_account(&events[i], true, None, &label, &mut problems);
                    }
                }
            }
            "create" | "update" | "delete" => {
                let collection = action["collection"].as_str().unwrap_or("?").to_string();
                let rkey = action["rkey"].as_str().unwrap_or("?").to_string();
                let want_action = match kind {
                    "create" => Action::Create,
                    "update" => Action::Update,
                    _ => Action::Delete,
                };
                let found = take(&|e| match &e.body {
                    EventBody::Commit(c) => c.ops.iter().any(|op| {
                        op.action == want_action && op.collection == collection && op.rkey == rkey
                    }),
                    _ => false,
                });
                let path = (did.clone(), collection.clone(), rkey.clone());
                let Some(i) = found else {
                    problems.push(format!(
                        "{label}: no commit with a {kind} op for {collection}/{rkey}"
                    ));
                    continue;
                };
                matched.push(i);
                let EventBody::Commit(commit) = &events[i].body else {
                    unreachable!()
                };
                let seq = events[i].cursor;
                if commit.ops.len() != 1 {
                    problems.push(format!(
                        "{label}: commit seq {seq} has {} ops, expected 1",
                        commit.ops.len()
                    ));
                }
                let op = commit
                    .ops
                    .iter()
                    .find(|op| {
                        op.action == want_action && op.collection == collection && op.rkey == rkey
                    })
                    .expect("matched above");
                let got_cid = op.cid.map(|c| c.to_string());
                let want_cid = action["cid"].as_str().map(str::to_string);
                if got_cid != want_cid {
                    problems.push(format!(
                        "{label}: seq {seq} op cid {got_cid:?}, expected {want_cid:?}"
                    ));
                }
                let got_prev = op.prev.map(|c| c.to_string());
                let want_prev = current_cid.get(&path).cloned();
                if want_action != Action::Create && (got_prev.is_none() || got_prev != want_prev) {
                    problems.push(format!(
                        "{label}: seq {seq} op prev {got_prev:?}, expected the previous record CID {want_prev:?}"
                    ));
                }
                if want_action == Action::Delete {
                    current_cid.remove(&path);
                    if op.record.is_some() {
                        problems.push(format!("{label}: seq {seq}: a delete op carries a record"));
                    }
                } else {
                    if let Some(cid) = &want_cid {
                        current_cid.insert(path, cid.clone());
                    }
                    match &op.record {
                        None => problems.push(format!(
                            "{label}: seq {seq}: no record ({:?})",
                            op.record_problem
                        )),
                        Some(record) => {
                            for p in check_record(&collection, record, &action["fields"]) {
                                problems.push(format!("{label}: seq {seq}: {p}"));
                            }
                        }
                    }
                }
            }
            "identity" => {
                let handle = action["handle"].as_str();
                match take(&|e| matches!(e.body, EventBody::Identity { .. })) {
                    None => problems.push(format!("{label}: no #identity event")),
                    Some(i) => {
                        matched.push(i);
                        check_identity(&events[i], handle, &label, &mut problems);
                    }
                }
            }
            "account" | "takedown" => {
                let (active, status) = if kind == "takedown" {
                    (false, Some("takendown"))
                } else {
                    (
                        action["active"].as_bool().unwrap_or(true),
                        action["status"].as_str(),
                    )
                };
                match take(&|e| matches!(e.body, EventBody::Account { .. })) {
                    None => problems.push(format!("{label}: no #account event")),
                    Some(i) => {
                        matched.push(i);
                        check_account(&events[i], active, status, &label, &mut problems);
                    }
                }
            }
            other => problems.push(format!("{label}: unknown action kind {other:?}")),
        }
        // The firehose must show the actions in the order the harness performed them.
        if let (Some(&first), Some((prev, prev_label))) = (matched.iter().min(), &last_matched)
            && first < *prev
        {
            problems.push(format!(
                "{label}: its event seq {} comes before seq {} of the earlier {prev_label}",
                events[first].cursor, events[*prev].cursor
            ));
        }
        if let Some(&last) = matched.iter().max() {
            last_matched = Some((last, label.clone()));
        }
    }

    // What no action explains must be account creation's empty first commit and its #sync:
    // exactly one of each per created account.
    let mut empty_commits: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    let mut syncs: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        if used[i] {
            continue;
        }
        match &e.body {
            EventBody::Commit(c)
                if c.ops.is_empty() && created.iter().any(|d| d == e.did.as_str()) =>
            {
                empty_commits.entry(&e.did).or_default().push(e.cursor)
            }
            EventBody::Sync { .. } if created.iter().any(|d| d == e.did.as_str()) => {
                syncs.entry(&e.did).or_default().push(e.cursor)
            }
            _ => problems.push(format!(
                "event seq {} ({}) matches no action",
                e.cursor,
                describe(e, names)
            )),
        }
    }
    for did in &created {
        for (what, map) in [("empty first commit", &empty_commits), ("#sync", &syncs)] {
            let n = map.get(did.as_str()).map_or(0, Vec::len);
            if n != 1 {
                problems.push(format!(
                    "account {} ({did}): expected one {what} from account creation, got {n}: {:?}",
                    name_of(names, did),
                    map.get(did.as_str())
                ));
            }
        }
    }

    assert!(
        problems.is_empty(),
        "{} problem(s) matching the harness' actions to the firehose:\n  {}\n{listing}",
        problems.len(),
        problems.join("\n  ")
    );
}

fn check_account(
    e: &Event,
    active: bool,
    status: Option<&str>,
    label: &str,
    problems: &mut Vec<String>,
) {
    if let EventBody::Account {
        active: got_active,
        status: got_status,
    } = &e.body
        && (*got_active != active || got_status.as_deref() != status)
    {
        problems.push(format!(
            "{label}: #account seq {} is active={got_active} status={got_status:?}, expected \
             active={active} status={status:?}",
            e.cursor
        ));
    }
}

fn check_identity(e: &Event, handle: Option<&str>, label: &str, problems: &mut Vec<String>) {
    if let EventBody::Identity { handle: got } = &e.body
        && got.as_deref() != handle
    {
        problems.push(format!(
            "{label}: #identity seq {} has handle {got:?}, expected {handle:?}",
            e.cursor
        ));
    }
}

/// Compares a decoded record with the harness' `fields`; returns the differences.
fn check_record(collection: &str, record: &Record, want: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if record.record_type() != Some(collection) {
        problems.push(format!(
            "record $type {:?}, expected {collection}",
            record.record_type()
        ));
    }
    let got = match collection {
        "app.bsky.feed.post" => {
            let (fields, facet_problems) = post_fields(record);
            problems.extend(facet_problems);
            fields
        }
        "app.bsky.actor.profile" => {
            let p = record.as_profile();
            json!({ "displayName": p.display_name(), "description": p.description() })
        }
        "app.bsky.feed.like" | "app.bsky.feed.repost" => {
            if !record.subject().is_some_and(|s| s.starts_with("at://")) {
                problems.push(format!("subject {:?} is not an AT URI", record.subject()));
            }
            json!({ "subject": record.subject() })
        }
        "app.bsky.graph.follow" | "app.bsky.graph.block" => {
            if !record.subject().is_some_and(|s| s.starts_with("did:")) {
                problems.push(format!("subject {:?} is not a DID", record.subject()));
            }
            json!({ "subject": record.subject() })
        }
        other => {
            problems.push(format!("the test does not know collection {other}"));
            json!({})
        }
    };
    let Some(want) = want.as_object() else {
        problems.push(format!("harness fields are not an object: {want}"));
        return problems;
    };
    for (key, want_value) in want {
        let got_value = got.get(key).unwrap_or(&Value::Null);
        if got_value != want_value {
            problems.push(format!("{key}: expected {want_value}, got {got_value}"));
        }
    }
    problems
}

/// A post's typed fields in the harness' shape (see `postFields` in harness.mjs), plus
/// problems found in its facets.
fn post_fields(record: &Record) -> (Value, Vec<String>) {
    let post = record.as_post();
    let text = post.text();
    let mut problems = Vec::new();
    let facets = post.facets();
    let mut features = Vec::new();
    let mut targets = Vec::new();
    let mut slices = Vec::new();
    for facet in &facets {
        let slice = facet.slice(text);
        if slice.is_none() {
            problems.push(format!(
                "facet bytes {}..{} are not a valid range of the text {text:?}",
                facet.byte_start, facet.byte_end
            ));
        }
        slices.push(json!(slice));
        for feature in &facet.features {
            let (kind, target) = match feature {
                FacetFeature::Mention(did) => ("app.bsky.richtext.facet#mention", Some(*did)),
                FacetFeature::Link(uri) => ("app.bsky.richtext.facet#link", Some(*uri)),
                FacetFeature::Tag(tag) => ("app.bsky.richtext.facet#tag", Some(*tag)),
                FacetFeature::Other(kind) => (*kind, None),
            };
            features.push(json!(kind));
            targets.push(json!(target));
            match (feature, slice) {
                (FacetFeature::Mention(_), Some(s)) if !s.starts_with('@') => problems.push(
                    format!("mention facet covers {s:?}, which does not start with @"),
                ),
                (FacetFeature::Tag(tag), Some(s)) if s != format!("#{tag}") => {
                    problems.push(format!("tag facet #{tag} covers {s:?}"))
                }
                _ => {}
            }
        }
    }
    let embed = post.embed();
    let images = match &embed {
        Some(Embed::Images(alts)) => alts.len(),
        _ => 0,
    };
    let external_uri = match &embed {
        Some(Embed::External { uri, .. }) => *uri,
        _ => None,
    };
    let reply = post.reply();
    let fields = json!({
        "text": text,
        "facets": facets.len(),
        "facetFeatures": features,
        "facetTargets": targets,
        "facetSlices": slices,
        "embed": embed.as_ref().map(Embed::type_name),
        "externalUri": external_uri,
        "replyParent": reply.as_ref().and_then(|r| r.parent),
        "replyRoot": reply.as_ref().and_then(|r| r.root),
        "quoteUri": embed.as_ref().and_then(Embed::quoted_uri),
        "images": images,
        "langs": post.langs().collect::<Vec<_>>(),
    });
    (fields, problems)
}

// ---------------------------------------------------------------------------------------------
// Failure output
// ---------------------------------------------------------------------------------------------

/// DID → short account name (alice, bob, ...), from the account_created actions.
fn account_names(actions: &[Value]) -> HashMap<String, String> {
    actions
        .iter()
        .filter(|a| a["kind"] == "account_created")
        .filter_map(|a| {
            let did = a["did"].as_str()?;
            let handle = a["handle"].as_str()?;
            Some((
                did.to_string(),
                handle.trim_end_matches(".test").to_string(),
            ))
        })
        .collect()
}

fn name_of<'a>(names: &'a HashMap<String, String>, did: &'a str) -> &'a str {
    names.get(did).map_or(did, String::as_str)
}

fn describe(e: &Event, names: &HashMap<String, String>) -> String {
    let who = name_of(names, &e.did);
    match &e.body {
        EventBody::Commit(c) => {
            let ops: Vec<String> = c
                .ops
                .iter()
                .map(|op| {
                    let mut s = format!("{} {}", op.action.as_str(), op.path());
                    if let Some(cid) = &op.cid {
                        let _ = write!(s, " cid={cid}");
                    }
                    if let Some(prev) = &op.prev {
                        let _ = write!(s, " prev={prev}");
                    }
                    if let Some(r) = &op.record {
                        let _ = write!(s, " record={}", r.to_json());
                    }
                    if let Some(p) = &op.record_problem {
                        let _ = write!(s, " problem={p}");
                    }
                    s
                })
                .collect();
            format!(
                "{who} #commit rev={} sig={:?}{} ops=[{}]",
                c.rev,
                c.signature,
                if c.too_big { " tooBig" } else { "" },
                ops.join("; ")
            )
        }
        EventBody::Identity { handle } => format!("{who} #identity handle={handle:?}"),
        EventBody::Account { active, status } => {
            format!("{who} #account active={active} status={status:?}")
        }
        EventBody::Sync { rev } => format!("{who} #sync rev={rev}"),
    }
}

fn listing(events: &[Event], names: &HashMap<String, String>) -> String {
    let mut out = format!("--- {} events received:\n", events.len());
    let mut seen = HashSet::new();
    for e in events {
        let dup = if seen.insert(e.cursor) {
            ""
        } else {
            " (DUPLICATE)"
        };
        let _ = writeln!(out, "  seq {:>3}{dup}: {}", e.cursor, describe(e, names));
    }
    out
}

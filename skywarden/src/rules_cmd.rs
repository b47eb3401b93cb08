//! `skywarden rules ...`: check, test, backtest and document rulesets.

use crate::SourceArgs;
use crate::default_rules;
use clap::Subcommand;
use skywarden_atproto::syntax::Datetime;
use skywarden_rules::counter::MemoryCounters;
use skywarden_rules::testing;
use skywarden_rules::{Account, Evaluator, Input, Ruleset};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Subcommand)]
pub enum RulesCommand {
    /// Load and type-check a ruleset; print every error with file:line:col.
    ///
    /// Without DIR, checks the built-in default ruleset.
    Check {
        /// The ruleset directory (all *.toml files under it).
        dir: Option<PathBuf>,
    },
    /// Run a ruleset's inline tests and fixtures; show which rules fired and why.
    ///
    /// Without DIR, tests the built-in default ruleset (inline cases only: fixtures live on disk).
    Test {
        /// The ruleset directory.
        dir: Option<PathBuf>,
        /// Show what fired for passing cases too.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Evaluate a recorded (or live) stream offline: print one JSON line per firing and a
    /// summary per rule. Nothing is carried out: this is the backtest before a rule goes live.
    ///
    /// Accounts are known only from the stream itself (first seen, handle from identity
    /// events): account age and follower counts are missing, so rules that need them stay
    /// quiet.
    ///
    /// Example:
    ///   skywarden rules run rules/ --archive testdata/firehose/pds-recording.skwa
    ///   skywarden ingest --relay wss://bsky.network --records --limit 100000 > sample.jsonl
    ///   skywarden rules run my-rules/ --events sample.jsonl
    #[command(verbatim_doc_comment)]
    Run {
        /// The ruleset directory (default: the built-in ruleset).
        dir: Option<PathBuf>,
        #[command(flatten)]
        source: SourceArgs,
        /// Print only the summary.
        #[arg(long)]
        summary_only: bool,
        /// Stop after this many events.
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
    },
    /// Compare the actions a run logged with a simulation's ground truth: precision per rule,
    /// recall and time to detection per scenario.
    ///
    /// Example:
    ///   skywarden simulate --seed 7 --events 200000 --out sim.skwa --truth truth.jsonl
    ///   skywarden serve --archive sim.skwa --data-dir eval-data
    ///   skywarden rules eval --data-dir eval-data --truth truth.jsonl
    #[command(verbatim_doc_comment)]
    Eval {
        /// The data directory of the `serve` run.
        #[arg(long, value_name = "DIR", default_value = "skywarden-data")]
        data_dir: PathBuf,
        /// The ground truth written by `skywarden simulate --truth`.
        #[arg(long, value_name = "FILE")]
        truth: PathBuf,
    },
    /// Print the rule language reference (Markdown), generated from the vocabulary.
    Reference,
}

fn load(dir: Option<&Path>) -> Result<Ruleset, String> {
    let result = match dir {
        Some(d) => Ruleset::load_dir(d),
        None => default_rules::load(),
    };
    result.map_err(|diags| {
        for d in &diags {
            eprintln!("{d}");
        }
        let n = diags.len();
        format!("{n} error{} in the ruleset", if n == 1 { "" } else { "s" })
    })
}

pub async fn run(cmd: RulesCommand) -> Result<(), String> {
    match cmd {
        RulesCommand::Check { dir } => {
            let rs = load(dir.as_deref())?;
            println!(
                "ok: {} rules ({} live, {} shadow, {} off), {} counters, {} lists, {} tests, version {}",
                rs.rules.len(),
                rs.rules
                    .iter()
                    .filter(|r| r.mode == skywarden_rules::Mode::Live)
                    .count(),
                rs.rules
                    .iter()
                    .filter(|r| r.mode == skywarden_rules::Mode::Shadow)
                    .count(),
                rs.rules
                    .iter()
                    .filter(|r| r.mode == skywarden_rules::Mode::Off)
                    .count(),
                rs.counters.len(),
                rs.lists.names().len(),
                rs.tests.len() + rs.fixtures.len(),
                rs.version
            );
            Ok(())
        }
        RulesCommand::Test { dir, verbose } => test(dir.as_deref(), verbose),
        RulesCommand::Run {
            dir,
            source,
            summary_only,
            limit,
        } => backtest(dir.as_deref(), source, summary_only, limit).await,
        RulesCommand::Reference => {
            print!("{}", skywarden_rules::reference::markdown());
            Ok(())
        }
        RulesCommand::Eval { data_dir, truth } => eval(&data_dir, &truth).await,
    }
}

async fn eval(data_dir: &Path, truth: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(truth)
        .map_err(|e| format!("cannot read {}: {e}", truth.display()))?;
    let mut entries = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let at = || format!("{}:{}", truth.display(), n + 1);
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("{}: {e}", at()))?;
        let name = v["scenario"].as_str().unwrap_or_default();
        let scenario = skywarden_sim::SCENARIOS
            .iter()
            .copied()
            .find(|s| *s == name)
            .ok_or_else(|| format!("{}: unknown scenario `{name}`", at()))?;
        entries.push(skywarden_sim::Truth {
            scenario,
            did: v["did"]
                .as_str()
                .ok_or_else(|| format!("{}: no did", at()))?
                .to_string(),
            first_seq: v["firstSeq"].as_i64().unwrap_or(0),
            first_time: v["firstTime"].as_i64().unwrap_or(0),
        });
    }
    if !data_dir.join("skywarden.db").exists() {
        return Err(format!(
            "no skywarden.db in {}: run `skywarden serve --data-dir {}` on the simulation first",
            data_dir.display(),
            data_dir.display()
        ));
    }
    let store = skywarden_store::Store::open(data_dir)
        .await
        .map_err(|e| e.to_string())?;
    let mut actions = Vec::new();
    let mut after = 0;
    loop {
        let rows = store
            .effects_after(after, 10_000)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = rows.last().map(|r| r.id) else {
            break;
        };
        after = last;
        actions.extend(rows.into_iter().map(|r| skywarden_sim::quality::ActionRow {
            rule: r.effect.rule,
            verb: r.effect.verb,
            subject: r.effect.subject,
            event_time: r.effect.event_time,
        }));
    }
    store.close().await;
    let q = skywarden_sim::quality::evaluate(&entries, &actions);
    print!("{}", q.table());
    Ok(())
}

fn test(dir: Option<&Path>, verbose: bool) -> Result<(), String> {
    let rs = load(dir)?;
    let root = rs.root.clone();
    let read = move |p: &Path| match &root {
        Some(r) => std::fs::read_to_string(r.join(p)),
        None => default_rules::read(p),
    };
    let outcomes = testing::run_all(&rs, &read);
    let mut failed = 0;
    for o in &outcomes {
        if o.passed {
            println!("ok    {}", o.name);
        } else {
            failed += 1;
            println!("FAIL  {}  ({})", o.name, o.location);
        }
        if !o.passed || verbose {
            for d in &o.detail {
                println!("        {d}");
            }
        }
    }
    let untested: Vec<&str> = rs
        .rules
        .iter()
        .enumerate()
        .filter(|(i, _)| !rs.tests.iter().any(|t| t.rule == *i))
        .map(|(_, r)| r.name.as_str())
        .collect();
    if !untested.is_empty() {
        println!("note: rules without inline tests: {}", untested.join(", "));
    }
    println!(
        "{} passed, {failed} failed ({} cases, {} fixtures)",
        outcomes.len() - failed,
        rs.tests.len(),
        rs.fixtures.len()
    );
    if failed > 0 {
        Err(format!("{failed} test(s) failed"))
    } else {
        Ok(())
    }
}

/// Where a backtest's events come from.
enum Feed {
    Source(Box<skywarden_ingest::Source>),
    /// Events with the enrichment their lines carried, if any.
    Lines(std::vec::IntoIter<(skywarden_atproto::event::Event, Option<Account>)>),
}

#[derive(Default)]
struct RuleStats {
    fired: u64,
    accounts: HashSet<String>,
    actions: BTreeMap<&'static str, u64>,
}

async fn backtest(
    dir: Option<&Path>,
    args: SourceArgs,
    summary_only: bool,
    limit: Option<u64>,
) -> Result<(), String> {
    let rs = load(dir)?;
    let mut feed = match args.events_file() {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let mut events = Vec::new();
            for (i, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let value: serde_json::Value = serde_json::from_str(line)
                    .map_err(|e| format!("{}:{}: not JSON: {e}", path.display(), i + 1))?;
                let at = |e: String| format!("{}:{}: {e}", path.display(), i + 1);
                let event = testing::event_from_json(&value).map_err(at)?;
                let account = testing::account_from_json(&value).map_err(at)?;
                events.push((event, account));
            }
            Feed::Lines(events.into_iter())
        }
        None => Feed::Source(Box::new(args.open().map_err(|e| e.to_string())?)),
    };
    let mut evaluator = Evaluator::new();
    let mut counters = MemoryCounters::new(rs.counters.iter().map(|c| c.spec.clone()).collect());
    let mut seen: HashMap<String, Account> = HashMap::new();
    let mut firings = Vec::new();
    let mut stats: Vec<RuleStats> = rs.rules.iter().map(|_| RuleStats::default()).collect();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let (mut events, mut units, mut evaluated) = (0u64, 0u64, 0usize);
    let started = Instant::now();
    let mut eval_time = std::time::Duration::ZERO;
    while limit.is_none_or(|l| events < l) {
        let next = match &mut feed {
            Feed::Source(source) => source
                .next_event()
                .await
                .map_err(|e| e.to_string())?
                .map(|e| (e, None)),
            Feed::Lines(events) => events.next(),
        };
        let Some((event, known)) = next else {
            break;
        };
        events += 1;
        let now = Datetime::new(&event.time)
            .map(|d| d.timestamp_micros())
            .unwrap_or_else(|_| skywarden_ingest::now_micros());
        let account = seen
            .entry(event.did.to_string())
            .or_insert_with(|| Account {
                first_seen: Some(now),
                first_event: true,
                ..Account::default()
            });
        if let Some(known) = known {
            // What the line says about the account wins; first-seen tracking stays ours.
            *account = Account {
                first_seen: account.first_seen,
                first_event: account.first_event,
                ..known
            };
        }
        if let skywarden_atproto::event::EventBody::Identity { handle: Some(h) } = &event.body {
            account.handle = Some(h.clone());
        }
        let account = account.clone();
        firings.clear();
        let t = Instant::now();
        for input in Input::units(&event, &account, now) {
            units += 1;
            evaluated += evaluator.evaluate(&rs, input, &mut counters, &mut firings);
        }
        eval_time += t.elapsed();
        if let Some(a) = seen.get_mut(event.did.as_str()) {
            a.first_event = false;
        }
        for f in &firings {
            let s = &mut stats[f.rule];
            s.fired += 1;
            s.accounts.insert(event.did.to_string());
            for a in &f.actions {
                *s.actions.entry(a.verb.name()).or_default() += 1;
            }
            if !summary_only {
                // One line per firing: the explanation once, then each action's verb and subject.
                let actions: Vec<serde_json::Value> = f
                    .actions
                    .iter()
                    .map(|a| {
                        let mut j = a.to_json();
                        if let Some(o) = j.as_object_mut() {
                            for key in ["rule", "rulesetVersion", "mode", "explanation"] {
                                o.remove(key);
                            }
                        }
                        j
                    })
                    .collect();
                let explanation: serde_json::Map<String, serde_json::Value> = f
                    .explanation
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone().into()))
                    .collect();
                let line = serde_json::json!({
                    "cursor": event.cursor,
                    "time": event.time,
                    "did": event.did,
                    "rule": f.rule_name,
                    "mode": f.mode.as_str(),
                    "rulesetVersion": rs.version,
                    "explanation": explanation,
                    "actions": actions,
                });
                if writeln!(out, "{line}").is_err() {
                    return Ok(());
                }
            }
        }
    }
    let _ = out.flush();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "ruleset {}: {events} events, {units} units, {evaluated} rule evaluations in {secs:.2}s \
         ({:.0} units/s evaluating)",
        rs.version,
        units as f64 / eval_time.as_secs_f64().max(1e-9)
    );
    if evaluator.failed_units > 0 {
        eprintln!(
            "warning: {} units could not be evaluated (an internal error, reported above); \
             they were skipped",
            evaluator.failed_units
        );
    }
    eprintln!(
        "{:<36} {:>7} {:>8} {:>8}  actions",
        "rule", "mode", "fired", "accounts"
    );
    for (rule, s) in rs.rules.iter().zip(&stats) {
        let actions: Vec<String> = s.actions.iter().map(|(k, v)| format!("{k}={v}")).collect();
        eprintln!(
            "{:<36} {:>7} {:>8} {:>8}  {}",
            rule.name,
            rule.mode.as_str(),
            s.fired,
            s.accounts.len(),
            actions.join(" ")
        );
    }
    Ok(())
}

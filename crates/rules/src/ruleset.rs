//! Rule files and their loading: parse TOML, resolve declarations across files, compile every
//! expression, and report every mistake with its file:line:col.

use crate::Mode;
use crate::action::resolve_reason;
use crate::compile::{self, CompileError, Compiled, CounterSig, Lit, Node, RegexTable, Scope};
use crate::counter::{CounterSpec, MAX_OFFSET_MICROS, Window, WindowSet};
use crate::input::Subject;
use crate::lists::{ListSource, Lists};
use crate::testing::{self, Fixture, TestCase, TestDoc};
use crate::value::{Ty, parse_duration};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use skywarden_atproto::event::Action as OpAction;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use toml::Spanned;

/// A rule file's text and where it came from.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path as shown in messages (relative to the ruleset directory).
    pub path: PathBuf,
    /// Contents.
    pub text: String,
}

/// A mistake in a ruleset, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// File.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (characters).
    pub col: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: error: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )?;
        if let Some(h) = &self.hint {
            write!(f, "\n  = hint: {h}")?;
        }
        Ok(())
    }
}

/// Which units a rule or counter applies to: `[action:]target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// Record actions matched; `None` for non-record targets.
    pub actions: Option<[bool; 3]>,
    /// What is matched.
    pub target: Target,
}

/// The target part of a [`Selector`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Records of one collection.
    Collection(String),
    /// Records of any collection.
    AnyRecord,
    /// Identity events.
    Identity,
    /// Account status events.
    Account,
}

/// Short names for common collections, usable in `on` and in tests.
pub const COLLECTION_ALIASES: &[(&str, &str)] = &[
    ("post", "app.bsky.feed.post"),
    ("like", "app.bsky.feed.like"),
    ("repost", "app.bsky.feed.repost"),
    ("follow", "app.bsky.graph.follow"),
    ("block", "app.bsky.graph.block"),
    ("profile", "app.bsky.actor.profile"),
    ("list", "app.bsky.graph.list"),
    ("listitem", "app.bsky.graph.listitem"),
    ("feed_generator", "app.bsky.feed.generator"),
    ("starterpack", "app.bsky.graph.starterpack"),
    ("threadgate", "app.bsky.feed.threadgate"),
];

/// Resolves a collection alias or NSID.
pub fn collection_of(name: &str) -> Option<String> {
    if let Some((_, nsid)) = COLLECTION_ALIASES.iter().find(|(a, _)| *a == name) {
        return Some((*nsid).to_string());
    }
    skywarden_atproto::syntax::validate_nsid(name)
        .ok()
        .map(|()| name.to_string())
}

fn action_index(a: OpAction) -> usize {
    match a {
        OpAction::Create => 0,
        OpAction::Update => 1,
        OpAction::Delete => 2,
    }
}

impl Selector {
    /// Parses `post`, `create:post`, `delete:app.bsky.graph.follow`, `*:*`, `identity`, `account`.
    /// A bare collection means written (created or updated); deletes must be asked for.
    pub fn parse(s: &str) -> Result<Selector, String> {
        let (action, target) = match s.split_once(':') {
            Some((a, t)) => (Some(a), t),
            None => (None, s),
        };
        let target = match target {
            "identity" | "account" if action.is_some() => {
                return Err(format!("`{s}`: {target} events have no action"));
            }
            "identity" => Target::Identity,
            "account" => Target::Account,
            "*" | "record" => Target::AnyRecord,
            other => Target::Collection(collection_of(other).ok_or_else(|| {
                format!(
                    "`{other}` is not a collection: use an NSID or one of {}, or identity, account, *",
                    COLLECTION_ALIASES.iter().map(|(a, _)| *a).collect::<Vec<_>>().join(", ")
                )
            })?),
        };
        let actions = match (&target, action) {
            (Target::Identity | Target::Account, _) => None,
            (_, None) => Some([true, true, false]),
            (_, Some("create")) => Some([true, false, false]),
            (_, Some("update")) => Some([false, true, false]),
            (_, Some("delete")) => Some([false, false, true]),
            (_, Some("write")) => Some([true, true, false]),
            (_, Some("*")) => Some([true, true, true]),
            (_, Some(a)) => {
                return Err(format!(
                    "unknown action `{a}`: use create, update, delete, write or *"
                ));
            }
        };
        Ok(Selector { actions, target })
    }

    /// Whether the selector matches a unit.
    pub fn matches(&self, subject: &Subject<'_>) -> bool {
        match (subject, &self.target) {
            (Subject::Identity, Target::Identity) | (Subject::Account, Target::Account) => true,
            (Subject::Record { action, collection }, t) => {
                let on = self.actions.is_some_and(|a| a[action_index(*action)]);
                on && match t {
                    Target::AnyRecord => true,
                    Target::Collection(c) => c == collection,
                    _ => false,
                }
            }
            _ => false,
        }
    }
}

/// A comment or message with `{{ expression }}` holes.
#[derive(Debug, Clone)]
pub struct Template {
    /// Literal text and compiled holes, in order.
    pub parts: Vec<TemplatePart>,
}

/// One part of a [`Template`].
#[derive(Debug, Clone)]
pub enum TemplatePart {
    /// Literal text.
    Text(String),
    /// An expression rendered with its value.
    Hole(Node),
}

/// Whether an action is about the account or the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// The account.
    Account,
    /// The record (falls back to the account for non-record events).
    Record,
}

/// An action as declared, before it is bound to a unit.
#[derive(Debug, Clone)]
pub struct ActionTemplate {
    /// What.
    pub verb: VerbTemplate,
    /// On what.
    pub target: TargetKind,
}

/// A [`crate::action::Verb`] with templates not yet rendered.
pub type VerbTemplate = crate::action::Verb<Template>;

/// Where something was declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// File.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique name.
    pub name: String,
    /// What it catches and why.
    pub description: String,
    /// live, shadow or off.
    pub mode: Mode,
    /// Where it is declared.
    pub location: Location,
    /// Units it applies to.
    pub on: Vec<Selector>,
    /// The condition's source.
    pub when_source: String,
    /// The compiled condition.
    pub when: Node,
    /// Leaf reads of the condition, for explanations.
    pub observed: Vec<(String, Node)>,
    /// Actions taken when it fires.
    pub actions: Vec<ActionTemplate>,
}

/// A compiled counter.
#[derive(Debug, Clone)]
pub struct Counter {
    /// Unique name.
    pub name: String,
    /// What it counts.
    pub description: String,
    /// Units it counts.
    pub on: Vec<Selector>,
    /// Only units for which this holds are counted.
    pub when: Option<Node>,
    /// Distinct-value expression (string or list of strings), for distinct counters.
    pub distinct: Option<Node>,
    /// Windows and retention.
    pub spec: CounterSpec,
    /// Where it is declared.
    pub location: Location,
}

/// Where a list's entries come from, so lists can be reloaded.
#[derive(Debug, Clone)]
pub enum ListOrigin {
    /// A file, relative to the ruleset directory.
    File(PathBuf),
    /// Inline items.
    Inline(Vec<String>),
}

/// A multiply-rotate hash over 8-byte words (as rustc's FxHash): collection names are short
/// keys from a small set chosen by the ruleset, where SipHash's cost shows and its DoS
/// resistance buys nothing (an unknown collection just misses).
#[derive(Default, Clone, Copy)]
pub struct RouteHasher(u64);

impl RouteHasher {
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl std::hash::Hasher for RouteHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.mix(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(b));
        }
    }
}

/// What applies to one kind of unit, by index: the counters that count it and the rules
/// evaluated on it.
#[derive(Debug, Clone, Default)]
pub struct Route {
    /// Counters that count the unit.
    pub counters: Vec<usize>,
    /// Live and shadow rules.
    pub rules: Vec<usize>,
    /// Every rule, `off` ones included (for rule tests).
    pub all_rules: Vec<usize>,
}

/// The [`Route`] of every kind of unit: routing costs one hash lookup per unit.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    by_collection: HashMap<String, [Route; 3], std::hash::BuildHasherDefault<RouteHasher>>,
    any_record: [Route; 3],
    identity: Route,
    account: Route,
    sync: Route,
}

impl Routes {
    /// Routes for counters and rules declared `on` these selectors, in declaration order.
    fn build(counters: &[&[Selector]], live: &[&[Selector]], all: &[&[Selector]]) -> Routes {
        let route = |subject: &Subject<'_>| {
            let matching = |selectors: &[&[Selector]]| -> Vec<usize> {
                (0..selectors.len())
                    .filter(|&i| selectors[i].iter().any(|sel| sel.matches(subject)))
                    .collect()
            };
            Route {
                counters: matching(counters),
                rules: matching(live),
                all_rules: matching(all),
            }
        };
        let record = |collection: &str| {
            [OpAction::Create, OpAction::Update, OpAction::Delete]
                .map(|action| route(&Subject::Record { action, collection }))
        };
        let mut by_collection = HashMap::default();
        for selector in [counters, all].into_iter().flatten().flat_map(|s| s.iter()) {
            if let Target::Collection(c) = &selector.target
                && !by_collection.contains_key(c)
            {
                by_collection.insert(c.clone(), record(c));
            }
        }
        Routes {
            by_collection,
            any_record: record("\u{0}unlisted"),
            identity: route(&Subject::Identity),
            account: route(&Subject::Account),
            sync: route(&Subject::Sync),
        }
    }

    /// What applies to a unit.
    pub fn get(&self, subject: &Subject<'_>) -> &Route {
        match subject {
            Subject::Record { action, collection } => {
                let slots = self
                    .by_collection
                    .get(*collection)
                    .unwrap_or(&self.any_record);
                &slots[action_index(*action)]
            }
            Subject::Identity => &self.identity,
            Subject::Account => &self.account,
            Subject::Sync => &self.sync,
        }
    }
}

/// A loaded, checked and compiled ruleset.
pub struct Ruleset {
    /// Content hash of every file the ruleset was built from (`sha256:` + 16 hex digits).
    pub version: String,
    /// Rules, in file then declaration order.
    pub rules: Vec<Rule>,
    /// Counters.
    pub counters: Vec<Counter>,
    /// Counter key expressions, by counter index.
    pub counter_keys: Vec<Node>,
    /// Named constants.
    pub constants: BTreeMap<String, Lit>,
    /// Lists (swap with [`Ruleset::set_lists`] to reload).
    pub lists: Arc<Lists>,
    /// Where each list came from, by index.
    pub list_origins: Vec<(String, ListOrigin)>,
    /// The one regex set of the ruleset.
    pub regexes: Option<regex::RegexSet>,
    /// Regex sources, by index.
    pub regex_patterns: Vec<String>,
    /// The counters and rules that apply to each kind of unit.
    pub routes: Routes,
    /// Inline test cases.
    pub tests: Vec<TestCase>,
    /// Fixture files to replay in `rules test`.
    pub fixtures: Vec<Fixture>,
    /// The ruleset's directory, if loaded from disk (fixtures and lists are relative to it).
    pub root: Option<PathBuf>,
}

impl fmt::Debug for Ruleset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ruleset")
            .field("version", &self.version)
            .field("rules", &self.rules.len())
            .field("counters", &self.counters.len())
            .finish_non_exhaustive()
    }
}

// ---- file format -------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    constants: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    list: Vec<Spanned<ListDoc>>,
    #[serde(default)]
    counter: Vec<Spanned<CounterDoc>>,
    #[serde(default)]
    rule: Vec<Spanned<RuleDoc>>,
    #[serde(default)]
    fixture: Vec<Spanned<testing::FixtureDoc>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListDoc {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    file: Option<Spanned<String>>,
    items: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CounterDoc {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    on: Spanned<Vec<Spanned<String>>>,
    when: Option<Spanned<String>>,
    key: Spanned<String>,
    distinct: Option<Spanned<String>>,
    windows: Spanned<Vec<Spanned<String>>>,
    retention: Option<Spanned<String>>,
    offset: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDoc {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    on: Spanned<Vec<Spanned<String>>>,
    when: Spanned<String>,
    mode: Option<Spanned<String>>,
    #[serde(default)]
    action: Vec<Spanned<ActionDoc>>,
    #[serde(default)]
    test: Vec<Spanned<TestDoc>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionDoc {
    label: Option<Spanned<String>>,
    negate_label: Option<Spanned<String>>,
    tag: Option<Vec<String>>,
    flag: Option<Spanned<String>>,
    report: Option<Spanned<String>>,
    takedown: Option<bool>,
    escalate: Option<bool>,
    acknowledge: Option<bool>,
    comment: Option<Spanned<String>>,
    notify: Option<Spanned<String>>,
    target: Option<Spanned<String>>,
    expires: Option<Spanned<String>>,
    message: Option<Spanned<String>>,
}

/// Default retention of idle keys in `total` windows.
pub const DEFAULT_RETENTION: &str = "30d";

struct Ctx<'f> {
    file: &'f SourceFile,
    diags: &'f mut Vec<Diagnostic>,
}

/// 1-based (line, column) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before[before.rfind('\n').map_or(0, |i| i + 1)..]
        .chars()
        .count()
        + 1;
    (line, col)
}

impl Ctx<'_> {
    /// A duration option in microseconds; outside `allowed` or unparsable, an error at the
    /// value (`out_of_range` or the parser's message) and 0.
    fn duration(
        &mut self,
        value: &Spanned<String>,
        allowed: impl std::ops::RangeBounds<i64>,
        out_of_range: &str,
    ) -> i64 {
        match parse_duration(value.get_ref()) {
            Ok(d) if allowed.contains(&d) => d,
            Ok(_) => {
                self.at(value.span().start + 1, out_of_range, None);
                0
            }
            Err(m) => {
                self.at(value.span().start + 1, m, None);
                0
            }
        }
    }

    fn at(&mut self, offset: usize, message: impl Into<String>, hint: Option<String>) {
        let (line, col) = line_col(&self.file.text, offset);
        self.diags.push(Diagnostic {
            file: self.file.path.clone(),
            line,
            col,
            message: message.into(),
            hint,
        });
    }

    fn location(&self, offset: usize) -> Location {
        Location {
            file: self.file.path.clone(),
            line: line_col(&self.file.text, offset).0,
        }
    }

    /// Where the value of a string starts in the file, and whether offsets inside the value map
    /// one to one onto the file (no escapes in between).
    fn string_base(&self, s: &Spanned<String>) -> (usize, bool) {
        let span = s.span();
        let raw = &self.file.text[span.clone()];
        let delim = ["'''", "\"\"\"", "'", "\""]
            .into_iter()
            .find(|d| raw.starts_with(d))
            .unwrap_or("");
        let mut start = span.start + delim.len();
        if delim.len() == 3 {
            if self.file.text[start..].starts_with("\r\n") {
                start += 2;
            } else if self.file.text[start..].starts_with('\n') {
                start += 1;
            }
        }
        let exact = self
            .file
            .text
            .get(start..start + s.get_ref().len())
            .is_some_and(|t| t == s.get_ref());
        (start, exact)
    }

    fn compile_errors(&mut self, s: &Spanned<String>, errors: Vec<CompileError>) {
        let (base, exact) = self.string_base(s);
        for e in errors {
            let offset = if exact { base + e.offset } else { base };
            self.at(offset, e.message, e.hint);
        }
    }

    fn expr(
        &mut self,
        s: &Spanned<String>,
        scope: &Scope,
        regexes: &mut RegexTable,
        want: Option<Ty>,
    ) -> Option<Compiled> {
        match compile::compile(s.get_ref(), scope, regexes, want) {
            Ok(ok) => Some(ok),
            Err(errors) => {
                self.compile_errors(s, errors);
                None
            }
        }
    }

    fn selectors(&mut self, on: &Spanned<Vec<Spanned<String>>>) -> Vec<Selector> {
        if on.get_ref().is_empty() {
            self.at(
                on.span().start,
                "`on` is empty",
                Some("say which events apply, e.g. on = [\"post\"]".into()),
            );
        }
        let mut out = Vec::new();
        for s in on.get_ref() {
            match Selector::parse(s.get_ref()) {
                Ok(sel) => out.push(sel),
                Err(m) => self.at(s.span().start + 1, m, None),
            }
        }
        out
    }

    fn template(
        &mut self,
        s: &Spanned<String>,
        scope: &Scope,
        regexes: &mut RegexTable,
    ) -> Template {
        let text = s.get_ref();
        let (base, exact) = self.string_base(s);
        let mut parts = Vec::new();
        let mut rest = text.as_str();
        let mut pos = 0;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(TemplatePart::Text(rest[..open].to_string()));
            }
            let Some(close) = rest[open..].find("}}") else {
                self.at(
                    if exact { base + pos + open } else { base },
                    "`{{` without `}}`",
                    None,
                );
                break;
            };
            let inner = &rest[open + 2..open + close];
            match compile::compile(inner, scope, regexes, None) {
                Ok(c) if !matches!(c.ty, Ty::Object | Ty::NamedList) => {
                    parts.push(TemplatePart::Hole(c.node));
                }
                Ok(Compiled { ty, .. }) => self.at(
                    if exact { base + pos + open + 2 } else { base },
                    format!("a {ty} cannot be written into text"),
                    None,
                ),
                Err(errors) => {
                    for e in errors {
                        let off = if exact {
                            base + pos + open + 2 + e.offset
                        } else {
                            base
                        };
                        self.at(off, e.message, e.hint);
                    }
                }
            }
            pos += open + close + 2;
            rest = &rest[open + close + 2..];
        }
        if !rest.is_empty() {
            parts.push(TemplatePart::Text(rest.to_string()));
        }
        Template { parts }
    }
}

fn constant(v: &toml::Value) -> Result<Lit, String> {
    match v {
        toml::Value::Integer(i) => Ok(Lit::Int(*i)),
        toml::Value::Float(x) => Ok(Lit::Float(*x)),
        toml::Value::Boolean(b) => Ok(Lit::Bool(*b)),
        toml::Value::String(s) => Ok(Lit::Str(s.as_str().into())),
        toml::Value::Array(a) => a
            .iter()
            .map(|x| match x {
                toml::Value::String(s) => Ok(Box::<str>::from(s.as_str())),
                _ => Err("list constants may only hold strings".to_string()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|v| Lit::List(v.into())),
        toml::Value::Table(t) if t.len() == 1 && t.contains_key("duration") => {
            match &t["duration"] {
                toml::Value::String(s) => parse_duration(s).map(Lit::Dur),
                _ => Err("`duration` must be a string like \"7d\"".into()),
            }
        }
        _ => Err("a constant is an integer, float, boolean, string, list of strings, or { duration = \"7d\" }".into()),
    }
}

fn is_constant_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// How list files are read: from disk for a directory, from memory for the built-in ruleset.
pub type ReadFile<'r> = &'r dyn Fn(&Path) -> std::io::Result<String>;

impl Ruleset {
    /// Loads every `*.toml` file under `dir` (recursively, in path order) as one ruleset.
    pub fn load_dir(dir: &Path) -> Result<Ruleset, Vec<Diagnostic>> {
        let mut files = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        let io_diag = |path: &Path, e: std::io::Error| Diagnostic {
            file: path.to_path_buf(),
            line: 1,
            col: 1,
            message: format!("cannot read: {e}"),
            hint: None,
        };
        while let Some(d) = stack.pop() {
            let entries = std::fs::read_dir(&d).map_err(|e| vec![io_diag(&d, e)])?;
            for entry in entries {
                let path = entry.map_err(|e| vec![io_diag(&d, e)])?.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "toml") {
                    let text =
                        std::fs::read_to_string(&path).map_err(|e| vec![io_diag(&path, e)])?;
                    let rel = path.strip_prefix(dir).unwrap_or(&path).to_path_buf();
                    files.push(SourceFile { path: rel, text });
                }
            }
        }
        if files.is_empty() {
            return Err(vec![Diagnostic {
                file: dir.to_path_buf(),
                line: 1,
                col: 1,
                message: "no rule files (*.toml) in this directory".into(),
                hint: None,
            }]);
        }
        let base = dir.to_path_buf();
        let read = move |p: &Path| std::fs::read_to_string(base.join(p));
        let mut rs = Ruleset::from_sources(files, &read)?;
        rs.root = Some(dir.to_path_buf());
        Ok(rs)
    }

    /// Builds a ruleset from rule files; list files are read through `read` with paths relative
    /// to the ruleset root.
    pub fn from_sources(
        mut files: Vec<SourceFile>,
        read: ReadFile<'_>,
    ) -> Result<Ruleset, Vec<Diagnostic>> {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let mut diags = Vec::new();
        let mut hasher = Sha256::new();
        let mut docs = Vec::new();
        for file in &files {
            hasher.update(file.path.to_string_lossy().as_bytes());
            hasher.update([0]);
            hasher.update(file.text.as_bytes());
            hasher.update([0]);
            match toml::from_str::<FileDoc>(&file.text) {
                Ok(doc) => docs.push((file, doc)),
                Err(e) => {
                    let offset = e.span().map_or(0, |s| s.start);
                    let mut cx = Ctx {
                        file,
                        diags: &mut diags,
                    };
                    let message = e.message().trim().to_string();
                    let hint = message.contains("unknown field").then(|| {
                        "see docs/rules/reference.md for the keys each table accepts".to_string()
                    });
                    cx.at(offset, message, hint);
                }
            }
        }

        // Pass 1: declarations.
        let mut scope = Scope::default();
        let mut constants = BTreeMap::new();
        let mut list_sources = Vec::new();
        let mut list_origins = Vec::new();
        let mut seen: HashMap<(String, &str), Location> = HashMap::new();
        let mut declare = |cx: &mut Ctx<'_>, kind: &'static str, name: &Spanned<String>| -> bool {
            let loc = cx.location(name.span().start);
            match seen.get(&(name.get_ref().clone(), kind)) {
                Some(first) => {
                    cx.at(
                        name.span().start + 1,
                        format!("{kind} `{}` is declared twice", name.get_ref()),
                        Some(format!("first declared at {first}")),
                    );
                    false
                }
                None => {
                    seen.insert((name.get_ref().clone(), kind), loc);
                    true
                }
            }
        };
        for (file, doc) in &docs {
            let mut cx = Ctx {
                file,
                diags: &mut diags,
            };
            for (name, value) in &doc.constants {
                if !is_constant_name(name) {
                    cx.at(
                        value.span().start,
                        format!("constant `{name}` must be written in UPPER_CASE"),
                        Some("upper case keeps constants apart from vocabulary names".into()),
                    );
                    continue;
                }
                if constants.contains_key(name) {
                    cx.at(
                        value.span().start,
                        format!("constant `{name}` is declared twice"),
                        None,
                    );
                    continue;
                }
                match constant(value.get_ref()) {
                    Ok(lit) => {
                        constants.insert(name.clone(), lit);
                    }
                    Err(m) => cx.at(value.span().start, m, None),
                }
            }
            for list in &doc.list {
                let l = list.get_ref();
                if !declare(&mut cx, "list", &l.name) {
                    continue;
                }
                let (origin, items) = match (&l.file, &l.items) {
                    (Some(f), None) => {
                        let rel = file
                            .path
                            .parent()
                            .unwrap_or(Path::new(""))
                            .join(f.get_ref());
                        match read(&rel) {
                            Ok(text) => {
                                hasher.update(rel.to_string_lossy().as_bytes());
                                hasher.update([0]);
                                hasher.update(text.as_bytes());
                                hasher.update([0]);
                                let src = ListSource::parse(l.name.get_ref(), &text);
                                (ListOrigin::File(rel), src.items)
                            }
                            Err(e) => {
                                cx.at(
                                    f.span().start + 1,
                                    format!("cannot read list file `{}`: {e}", rel.display()),
                                    Some("list files are relative to the rule file".into()),
                                );
                                continue;
                            }
                        }
                    }
                    (None, Some(items)) => (ListOrigin::Inline(items.clone()), items.clone()),
                    _ => {
                        cx.at(
                            list.span().start,
                            format!(
                                "list `{}` needs exactly one of `file` or `items`",
                                l.name.get_ref()
                            ),
                            None,
                        );
                        continue;
                    }
                };
                let _ = &l.description;
                list_sources.push(ListSource {
                    name: l.name.get_ref().clone(),
                    items,
                });
                list_origins.push((l.name.get_ref().clone(), origin));
            }
            for counter in &doc.counter {
                let c = counter.get_ref();
                if declare(&mut cx, "counter", &c.name) {
                    let windows = c
                        .windows
                        .get_ref()
                        .iter()
                        .filter_map(|w| Window::parse(w.get_ref()))
                        .collect();
                    scope.counters.push(CounterSig {
                        name: c.name.get_ref().clone(),
                        windows,
                        list_key: false,
                    });
                }
            }
            for rule in &doc.rule {
                declare(&mut cx, "rule", &rule.get_ref().name);
            }
        }
        scope.constants = constants.clone().into_iter().collect();
        scope.lists = list_sources.iter().map(|l| l.name.clone()).collect();
        for (file, doc) in &docs {
            for (name, v) in &doc.constants {
                if crate::vocab::ROOTS
                    .iter()
                    .any(|(r, _)| r.eq_ignore_ascii_case(name))
                {
                    Ctx {
                        file,
                        diags: &mut diags,
                    }
                    .at(
                        v.span().start,
                        format!("constant `{name}` shadows a vocabulary root"),
                        None,
                    );
                }
            }
        }

        // Pass 2: compile.
        let mut regexes = RegexTable::default();
        let mut counters = Vec::new();
        let mut counter_keys = Vec::new();
        let mut rules = Vec::new();
        let mut tests_docs = Vec::new();
        let mut fixtures = Vec::new();
        for (file, doc) in &docs {
            let mut cx = Ctx {
                file,
                diags: &mut diags,
            };
            scope.counters_allowed = false;
            for counter in &doc.counter {
                let c = counter.get_ref();
                if !is_name(c.name.get_ref()) {
                    cx.at(
                        c.name.span().start + 1,
                        format!(
                            "counter name `{}` must be lower_snake_case",
                            c.name.get_ref()
                        ),
                        None,
                    );
                }
                let on = cx.selectors(&c.on);
                let when = c.when.as_ref().and_then(|w| {
                    cx.expr(w, &scope, &mut regexes, Some(Ty::Bool))
                        .map(|x| x.node)
                });
                let key = cx.expr(&c.key, &scope, &mut regexes, None);
                if let Some(Compiled { ty, .. }) = &key {
                    match ty {
                        Ty::String => {}
                        Ty::List => {
                            if let Some(sig) =
                                scope.counters.iter_mut().find(|s| &s.name == c.name.get_ref())
                            {
                                sig.list_key = true;
                            }
                        }
                        _ => cx.at(
                            cx.string_base(&c.key).0,
                            format!(
                                "a counter key must be a string (or a list of strings, one key \
                                 each), found {ty}"
                            ),
                            Some(
                                "build keys with string(x) and +, e.g. account.did + \"|\" + string(x)"
                                    .into(),
                            ),
                        ),
                    }
                }
                let distinct = c.distinct.as_ref().and_then(|d| {
                    let out = cx.expr(d, &scope, &mut regexes, None)?;
                    if !matches!(out.ty, Ty::String | Ty::List) {
                        cx.at(
                            cx.string_base(d).0,
                            format!(
                                "distinct values must be a string or a list of strings, found {}",
                                out.ty
                            ),
                            None,
                        );
                        return None;
                    }
                    Some(out.node)
                });
                let mut windows = WindowSet::empty();
                for w in c.windows.get_ref() {
                    match Window::parse(w.get_ref()) {
                        Some(win) => windows.insert(win),
                        None => cx.at(
                            w.span().start + 1,
                            format!("unknown window `{}`", w.get_ref()),
                            Some("windows are minute, hour, day and total".into()),
                        ),
                    }
                }
                if c.windows.get_ref().is_empty() {
                    cx.at(
                        c.windows.span().start,
                        "a counter needs at least one window",
                        None,
                    );
                }
                let retention = match &c.retention {
                    Some(r) => cx.duration(r, 1.., "retention must be positive"),
                    None => parse_duration(DEFAULT_RETENTION).expect("valid default"),
                };
                let offset = c.offset.as_ref().map_or(0, |o| {
                    cx.duration(
                        o,
                        0..MAX_OFFSET_MICROS,
                        "offset must be from 0 to less than a day",
                    )
                });
                let location = cx.location(counter.span().start);
                counter_keys.push(key.map_or(Node::Lit(Lit::Bool(false)), |k| k.node));
                counters.push(Counter {
                    name: c.name.get_ref().clone(),
                    description: c.description.clone(),
                    on,
                    when,
                    distinct,
                    spec: CounterSpec {
                        windows,
                        distinct: c.distinct.is_some(),
                        retention_micros: retention,
                        offset_micros: offset,
                    },
                    location,
                });
            }
        }
        scope.counters_allowed = true;
        for (file, doc) in &docs {
            let mut cx = Ctx {
                file,
                diags: &mut diags,
            };
            for rule in &doc.rule {
                let r = rule.get_ref();
                if !is_name(r.name.get_ref()) {
                    cx.at(
                        r.name.span().start + 1,
                        format!(
                            "rule name `{}` must use lower case letters, digits, `-` and `_`",
                            r.name.get_ref()
                        ),
                        None,
                    );
                }
                let on = cx.selectors(&r.on);
                let when = cx.expr(&r.when, &scope, &mut regexes, Some(Ty::Bool));
                let mode = match r.mode.as_ref().map(|m| m.get_ref().as_str()) {
                    None | Some("live") => Mode::Live,
                    Some("shadow") => Mode::Shadow,
                    Some("off") => Mode::Off,
                    Some(other) => {
                        cx.at(
                            r.mode.as_ref().map_or(0, |m| m.span().start + 1),
                            format!("unknown mode `{other}`"),
                            Some("modes are live, shadow and off".into()),
                        );
                        Mode::Off
                    }
                };
                if r.action.is_empty() {
                    cx.at(
                        rule.span().start,
                        format!("rule `{}` has no actions", r.name.get_ref()),
                        Some("add an [[rule.action]] table, e.g. flag = \"...\"".into()),
                    );
                }
                let actions: Vec<ActionTemplate> = r
                    .action
                    .iter()
                    .filter_map(|a| action(&mut cx, a, &scope, &mut regexes))
                    .collect();
                let index = rules.len();
                for t in &r.test {
                    tests_docs.push((index, *file, t));
                }
                if let Some(Compiled {
                    node: when,
                    observed,
                    ..
                }) = when
                {
                    rules.push(Rule {
                        name: r.name.get_ref().clone(),
                        description: r.description.clone(),
                        mode,
                        location: cx.location(rule.span().start),
                        on,
                        when_source: r.when.get_ref().trim().to_string(),
                        when,
                        observed,
                        actions,
                    });
                } else {
                    // Keep indexes stable for tests; the ruleset is rejected anyway.
                    rules.push(Rule {
                        name: r.name.get_ref().clone(),
                        description: String::new(),
                        mode: Mode::Off,
                        location: cx.location(rule.span().start),
                        on,
                        when_source: String::new(),
                        when: Node::Lit(Lit::Bool(false)),
                        observed: Vec::new(),
                        actions,
                    });
                }
            }
            for f in &doc.fixture {
                match testing::fixture(f.get_ref(), &file.path) {
                    Ok(fx) => fixtures.push(fx),
                    Err((m, hint)) => cx.at(f.span().start, m, hint),
                }
            }
        }
        let mut tests = Vec::new();
        for (rule, file, t) in tests_docs {
            let mut cx = Ctx {
                file,
                diags: &mut diags,
            };
            let location = cx.location(t.span().start);
            match testing::test_case(rule, t.get_ref(), location) {
                Ok(tc) => tests.push(tc),
                Err((m, hint)) => cx.at(t.span().start, m, hint),
            }
        }
        for fx in &fixtures {
            for name in fx.expect_fire.iter().chain(&fx.expect_pass) {
                if !rules.iter().any(|r| &r.name == name) {
                    diags.push(Diagnostic {
                        file: fx.location.file.clone(),
                        line: fx.location.line,
                        col: 1,
                        message: format!("fixture `{}` names unknown rule `{name}`", fx.name),
                        hint: None,
                    });
                }
            }
        }
        let lists = match Lists::build(list_sources) {
            Ok(l) => l,
            Err(m) => {
                diags.push(Diagnostic {
                    file: files.first().map_or_else(PathBuf::new, |f| f.path.clone()),
                    line: 1,
                    col: 1,
                    message: m,
                    hint: None,
                });
                Lists::default()
            }
        };
        let regex_set = if regexes.patterns.is_empty() {
            None
        } else {
            match regex::RegexSet::new(&regexes.patterns) {
                Ok(set) => Some(set),
                Err(e) => {
                    diags.push(Diagnostic {
                        file: PathBuf::new(),
                        line: 1,
                        col: 1,
                        message: format!("the ruleset's regexes do not compile together: {e}"),
                        hint: None,
                    });
                    None
                }
            }
        };
        if !diags.is_empty() {
            diags.sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
            return Err(diags);
        }
        let digest = hasher.finalize();
        let version = format!(
            "sha256:{}",
            digest
                .iter()
                .take(8)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let live: Vec<&[Selector]> = rules
            .iter()
            .map(|r| {
                if r.mode == Mode::Off {
                    &[][..]
                } else {
                    &r.on[..]
                }
            })
            .collect();
        let all: Vec<&[Selector]> = rules.iter().map(|r| &r.on[..]).collect();
        let counter_sels: Vec<&[Selector]> = counters.iter().map(|c| &c.on[..]).collect();
        Ok(Ruleset {
            version,
            routes: Routes::build(&counter_sels, &live, &all),
            rules,
            counters,
            counter_keys,
            constants,
            lists: Arc::new(lists),
            list_origins,
            regexes: regex_set,
            regex_patterns: regexes.patterns,
            tests,
            fixtures,
            root: None,
        })
    }

    /// Re-reads list files and rebuilds the matchers, leaving rules untouched.
    pub fn reload_lists(&self, read: ReadFile<'_>) -> Result<Lists, String> {
        let mut sources = Vec::new();
        for (name, origin) in &self.list_origins {
            let items = match origin {
                ListOrigin::File(p) => {
                    ListSource::parse(name, &read(p).map_err(|e| format!("{}: {e}", p.display()))?)
                        .items
                }
                ListOrigin::Inline(items) => items.clone(),
            };
            sources.push(ListSource {
                name: name.clone(),
                items,
            });
        }
        Lists::build(sources)
    }

    /// Replaces the lists (e.g. after [`Ruleset::reload_lists`]).
    pub fn set_lists(&mut self, lists: Lists) {
        self.lists = Arc::new(lists);
    }

    /// A rule by name.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }
}

fn action(
    cx: &mut Ctx<'_>,
    a: &Spanned<ActionDoc>,
    scope: &Scope,
    regexes: &mut RegexTable,
) -> Option<ActionTemplate> {
    let d = a.get_ref();
    let at = a.span().start;
    let verbs: Vec<&str> = [
        ("label", d.label.is_some()),
        ("negate_label", d.negate_label.is_some()),
        ("tag", d.tag.is_some()),
        ("flag", d.flag.is_some()),
        ("report", d.report.is_some()),
        ("takedown", d.takedown == Some(true)),
        ("escalate", d.escalate == Some(true)),
        ("acknowledge", d.acknowledge == Some(true)),
        ("notify", d.notify.is_some()),
    ]
    .into_iter()
    .filter(|(_, on)| *on)
    .map(|(n, _)| n)
    .collect();
    // `comment` alone is the comment verb; with another verb it is that verb's comment.
    let verb_name = match (verbs.as_slice(), &d.comment) {
        ([v], _) => *v,
        ([], Some(_)) => "comment",
        ([], None) => {
            cx.at(
                at,
                "an action needs a verb",
                Some("one of label, negate_label, tag, flag, report, takedown, escalate, acknowledge, comment, notify".into()),
            );
            return None;
        }
        (many, _) => {
            cx.at(
                at,
                format!("one action per table: found {}", many.join(", ")),
                Some("split them into several [[rule.action]] tables".into()),
            );
            return None;
        }
    };
    let mut comment = |cx: &mut Ctx<'_>| match &d.comment {
        Some(c) => cx.template(c, scope, regexes),
        None => Template { parts: Vec::new() },
    };
    let expires_in = match &d.expires {
        Some(e) if matches!(verb_name, "label" | "negate_label") => {
            match parse_duration(e.get_ref()) {
                Ok(x) if x > 0 => Some(x),
                Ok(_) => {
                    cx.at(e.span().start + 1, "expiry must be positive", None);
                    None
                }
                Err(m) => {
                    cx.at(e.span().start + 1, m, None);
                    None
                }
            }
        }
        Some(e) => {
            cx.at(e.span().start, "only labels expire", None);
            None
        }
        None => None,
    };
    let label_value = |cx: &mut Ctx<'_>, v: &Spanned<String>| {
        let s = v.get_ref();
        if s.is_empty() || s.len() > 128 || s.chars().any(|c| c.is_whitespace()) {
            cx.at(
                v.span().start + 1,
                format!("`{s}` is not a valid label value"),
                Some("label values are short, without spaces, e.g. spam".into()),
            );
        }
        s.clone()
    };
    let verb = match verb_name {
        "label" => VerbTemplate::Label {
            value: label_value(cx, d.label.as_ref()?),
            negate: false,
            expires_in,
        },
        "negate_label" => VerbTemplate::Label {
            value: label_value(cx, d.negate_label.as_ref()?),
            negate: true,
            expires_in,
        },
        "tag" => VerbTemplate::Tag {
            tags: d.tag.clone()?,
        },
        "flag" => VerbTemplate::Flag {
            value: d.flag.as_ref()?.get_ref().clone(),
        },
        "report" => {
            let r = d.report.as_ref()?;
            let Some(reason) = resolve_reason(r.get_ref()) else {
                cx.at(
                    r.span().start + 1,
                    format!("unknown report reason `{}`", r.get_ref()),
                    Some("use spam, violation, misleading, sexual, rude, other, appeal, or a full reason NSID from com.atproto.moderation.defs or tools.ozone.report.defs".into()),
                );
                return None;
            };
            VerbTemplate::Report {
                reason: reason.to_string(),
                comment: comment(cx),
            }
        }
        "takedown" => VerbTemplate::Takedown {
            comment: comment(cx),
        },
        "escalate" => VerbTemplate::Escalate {
            comment: comment(cx),
        },
        "acknowledge" => VerbTemplate::Acknowledge {
            comment: comment(cx),
        },
        "comment" => VerbTemplate::Comment {
            comment: comment(cx),
        },
        "notify" => VerbTemplate::Notify {
            webhook: d.notify.as_ref()?.get_ref().clone(),
            message: match &d.message {
                Some(m) => cx.template(m, scope, regexes),
                None => Template { parts: Vec::new() },
            },
        },
        _ => unreachable!("verb names come from the list above"),
    };
    let target = match d.target.as_ref().map(|t| t.get_ref().as_str()) {
        None | Some("record") => TargetKind::Record,
        Some("account") => TargetKind::Account,
        Some(other) => {
            cx.at(
                d.target.as_ref().map_or(at, |t| t.span().start + 1),
                format!("unknown target `{other}`"),
                Some("targets are account and record".into()),
            );
            TargetKind::Record
        }
    };
    Some(ActionTemplate { verb, target })
}

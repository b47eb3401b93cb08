//! An independent check of expression evaluation.
//!
//! A small reference evaluator, written from `reference_language.md` ("Types and operators",
//! "Functions", "Missing data") and not from the crate's compiler or evaluator, walks the `cel`
//! AST directly and resolves every name by its dotted path in a map built from this file's own
//! model of the event. A typed generator produces random well-typed expressions over a
//! subset of the vocabulary and random post events and accounts; every expression must compile
//! and the crate's result must equal the reference result.
//!
//! The property runs 512 expressions, each on 4 events, from a fixed seed; set
//! `REFERENCE_EVAL_CASES` and `REFERENCE_EVAL_SEED` to explore further.

use cel::common::ast::{ComprehensionExpr, Expr, IdedExpr, LiteralValue};
use proptest::prelude::*;
use proptest::strategy::{BoxedStrategy, Union, ValueTree};
use proptest::test_runner::{RngSeed, TestRunner};
use serde_json::json;
use skywarden_atproto::data::json_to_ipld;
use skywarden_atproto::event::{Action as OpAction, Event};
use skywarden_rules::ruleset::SourceFile;
use skywarden_rules::testing::record_event;
use skywarden_rules::value::Owned;
use skywarden_rules::{Account, Input, Ruleset, evaluate_expression};
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

/// 2024-06-01T12:00:00Z in microseconds.
const T0: i64 = 1_717_243_200_000_000;
const SECOND: i64 = 1_000_000;
const HOUR: i64 = 3_600 * SECOND;
const DAY: i64 = 24 * HOUR;
const POST: &str = "app.bsky.feed.post";
const CID: &str = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm";

// ---------------------------------------------------------------------------------------------
// The test's own model of an event and account.
// ---------------------------------------------------------------------------------------------

/// A reply reference: each side is `(did, rkey)` of the post it points to.
#[derive(Debug, Clone)]
struct ReplyModel {
    /// `None` models a malformed reply without a parent.
    parent: Option<(String, String)>,
    root: (String, String),
}

#[derive(Debug, Clone)]
struct PostModel {
    did: String,
    rkey: String,
    text: String,
    /// `None`: the `langs` key is absent (as opposed to an empty list).
    langs: Option<Vec<String>>,
    tags: Option<Vec<String>>,
    reply: Option<ReplyModel>,
}

#[derive(Debug, Clone, Default)]
struct AccountModel {
    /// Age in microseconds at `now`; the account's `created_at` is `now - age`.
    age: Option<i64>,
    followers: Option<i64>,
    posts: Option<i64>,
    handle: Option<String>,
}

#[derive(Debug, Clone)]
struct Case {
    post: PostModel,
    account: AccountModel,
    now: i64,
}

fn post_uri(did: &str, rkey: &str) -> String {
    format!("at://{did}/{POST}/{rkey}")
}

impl Case {
    fn event(&self) -> Event {
        let p = &self.post;
        let mut record = json!({
            "$type": POST,
            "text": p.text,
            "createdAt": "2024-06-01T12:00:00.000Z",
        });
        if let Some(langs) = &p.langs {
            record["langs"] = json!(langs);
        }
        if let Some(tags) = &p.tags {
            record["tags"] = json!(tags);
        }
        if let Some(reply) = &p.reply {
            let mut r = serde_json::Map::new();
            if let Some((did, rkey)) = &reply.parent {
                r.insert(
                    "parent".into(),
                    json!({"uri": post_uri(did, rkey), "cid": CID}),
                );
            }
            let (did, rkey) = &reply.root;
            r.insert(
                "root".into(),
                json!({"uri": post_uri(did, rkey), "cid": CID}),
            );
            record["reply"] = serde_json::Value::Object(r);
        }
        let ipld = json_to_ipld(&record).expect("record converts to IPLD");
        record_event(
            &p.did,
            self.now,
            OpAction::Create,
            POST,
            &p.rkey,
            Some(ipld),
        )
    }

    fn account(&self) -> Account {
        let a = &self.account;
        Account {
            created_at: a.age.map(|age| self.now - age),
            followers: a.followers,
            posts: a.posts,
            handle: a.handle.as_deref().map(Into::into),
            ..Default::default()
        }
    }

    /// The values of the vocabulary subset, by dotted path, computed from the model alone.
    fn env(&self) -> BTreeMap<String, RefValue> {
        use RefValue::*;
        let p = &self.post;
        let a = &self.account;
        let opt_str = |s: Option<String>| s.map_or(Missing, Str);
        let opt_int = |i: Option<i64>| i.map_or(Missing, Int);
        let parent = p.reply.as_ref().and_then(|r| r.parent.clone());
        let root = p.reply.as_ref().map(|r| r.root.clone());
        let entries: Vec<(&str, RefValue)> = vec![
            ("event.kind", Str("commit".into())),
            ("event.action", Str("create".into())),
            ("event.collection", Str(POST.into())),
            ("event.did", Str(p.did.clone())),
            ("record.post", Group(true)),
            ("record.post.text", Str(p.text.clone())),
            (
                "record.post.langs",
                List(p.langs.clone().unwrap_or_default()),
            ),
            ("record.post.tags", List(p.tags.clone().unwrap_or_default())),
            ("record.post.is_reply", Bool(p.reply.is_some())),
            ("record.post.reply", Group(p.reply.is_some())),
            (
                "record.post.reply.parent.uri",
                opt_str(parent.as_ref().map(|(d, r)| post_uri(d, r))),
            ),
            (
                "record.post.reply.parent.did",
                opt_str(parent.as_ref().map(|(d, _)| d.clone())),
            ),
            (
                "record.post.reply.root.uri",
                opt_str(root.as_ref().map(|(d, r)| post_uri(d, r))),
            ),
            (
                "record.post.reply.root.did",
                opt_str(root.as_ref().map(|(d, _)| d.clone())),
            ),
            ("account.age", a.age.map_or(Missing, Dur)),
            ("account.followers", opt_int(a.followers)),
            ("account.posts", opt_int(a.posts)),
            ("account.handle", opt_str(a.handle.clone())),
            ("text.length", Int(p.text.chars().count() as i64)),
        ];
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The reference evaluator.
// ---------------------------------------------------------------------------------------------

/// A value of the reference evaluator.
#[derive(Debug, Clone, PartialEq)]
enum RefValue {
    Missing,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Dur(i64),
    List(Vec<String>),
    /// A group of fields (`record.post.reply`): only `has()` reads it; `true` when present.
    Group(bool),
}

/// Kleene conjunction.
fn and(a: RefValue, b: RefValue) -> RefValue {
    use RefValue::*;
    match (&a, &b) {
        (Bool(false), _) | (_, Bool(false)) => Bool(false),
        (Bool(true), Bool(true)) => Bool(true),
        (Bool(_) | Missing, Bool(_) | Missing) => Missing,
        _ => panic!("ill-typed &&: {a:?}, {b:?}"),
    }
}

/// Kleene disjunction.
fn or(a: RefValue, b: RefValue) -> RefValue {
    use RefValue::*;
    match (&a, &b) {
        (Bool(true), _) | (_, Bool(true)) => Bool(true),
        (Bool(false), Bool(false)) => Bool(false),
        (Bool(_) | Missing, Bool(_) | Missing) => Missing,
        _ => panic!("ill-typed ||: {a:?}, {b:?}"),
    }
}

fn not(a: RefValue) -> RefValue {
    match a {
        RefValue::Bool(b) => RefValue::Bool(!b),
        RefValue::Missing => RefValue::Missing,
        other => panic!("ill-typed !: {other:?}"),
    }
}

fn compare(op: &str, a: RefValue, b: RefValue) -> RefValue {
    use RefValue::*;
    let ord = match (&a, &b) {
        (Missing, _) | (_, Missing) => return Missing,
        (Int(x), Int(y)) => x.cmp(y),
        // Strings compare by their UTF-8 bytes.
        (Str(x), Str(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Dur(x), Dur(y)) => x.cmp(y),
        (Bool(x), Bool(y)) if matches!(op, "_==_" | "_!=_") => x.cmp(y),
        _ => panic!("ill-typed comparison {op}: {a:?}, {b:?}"),
    };
    Bool(match op {
        "_==_" => ord == Ordering::Equal,
        "_!=_" => ord != Ordering::Equal,
        "_<_" => ord == Ordering::Less,
        "_<=_" => ord != Ordering::Greater,
        "_>_" => ord == Ordering::Greater,
        "_>=_" => ord != Ordering::Less,
        _ => unreachable!("{op}"),
    })
}

fn arith(op: &str, a: RefValue, b: RefValue) -> RefValue {
    use RefValue::*;
    let checked = |r: Option<i64>, wrap: fn(i64) -> RefValue| r.map_or(Missing, wrap);
    match (op, &a, &b) {
        (_, Missing, _) | (_, _, Missing) => Missing,
        ("_+_", Int(x), Int(y)) => checked(x.checked_add(*y), Int),
        ("_-_", Int(x), Int(y)) => checked(x.checked_sub(*y), Int),
        ("_*_", Int(x), Int(y)) => checked(x.checked_mul(*y), Int),
        ("_/_", Int(x), Int(y)) => checked(x.checked_div(*y), Int),
        ("_%_", Int(x), Int(y)) => checked(x.checked_rem(*y), Int),
        ("_+_", Str(x), Str(y)) => Str(format!("{x}{y}")),
        ("_+_", Dur(x), Dur(y)) => checked(x.checked_add(*y), Dur),
        ("_-_", Dur(x), Dur(y)) => checked(x.checked_sub(*y), Dur),
        ("_*_", Dur(x), Int(y)) => checked(x.checked_mul(*y), Dur),
        ("_/_", Dur(x), Int(y)) => checked(x.checked_div(*y), Dur),
        _ => panic!("ill-typed arithmetic {op}: {a:?}, {b:?}"),
    }
}

/// CEL duration syntax with the `d` extension: `[-]` then `NUMBER UNIT` pairs, `NUMBER` an
/// integer or decimal, units `d h m s ms us`. Computed with integers only.
fn reference_duration(s: &str) -> i64 {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    if rest == "0" {
        return 0;
    }
    let mut total: i64 = 0;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .expect("unit");
        let (number, tail) = rest.split_at(n);
        let unit_len = if tail.starts_with("ms") || tail.starts_with("us") {
            2
        } else {
            1
        };
        let (unit, tail) = tail.split_at(unit_len);
        let per: i64 = match unit {
            "d" => DAY,
            "h" => HOUR,
            "m" => 60 * SECOND,
            "s" => SECOND,
            "ms" => 1_000,
            "us" => 1,
            other => panic!("unit {other}"),
        };
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        total += whole.parse::<i64>().expect("digits") * per;
        if !frac.is_empty() {
            let scale = 10i64.pow(frac.len() as u32);
            total += frac.parse::<i64>().expect("digits") * per / scale;
        }
        rest = tail;
    }
    if neg { -total } else { total }
}

/// Which macro a comprehension is the expansion of.
enum Macro<'e> {
    Exists(&'e IdedExpr),
    All(&'e IdedExpr),
    ExistsOne(&'e IdedExpr),
    Filter(&'e IdedExpr),
    Map(&'e IdedExpr),
    /// `l.map(x, p, f)`: the CEL three-argument map, `f` of the items where `p` holds.
    MapFilter(&'e IdedExpr, &'e IdedExpr),
}

fn call<'e>(e: &'e IdedExpr, name: &str, arity: usize) -> Option<&'e [IdedExpr]> {
    match &e.expr {
        Expr::Call(c) if c.func_name == name && c.target.is_none() && c.args.len() == arity => {
            Some(&c.args)
        }
        _ => None,
    }
}

fn is_ident(e: &IdedExpr, name: &str) -> bool {
    matches!(&e.expr, Expr::Ident(n) if n == name)
}

fn is_int(e: &IdedExpr, value: i64) -> bool {
    matches!(&e.expr, Expr::Literal(LiteralValue::Int(i)) if *i.inner() == value)
}

/// Recognises the CEL macro expansions (exists, all, exists_one, filter, map) by their full
/// shape: accumulator initial value, step and result.
fn recognise(c: &ComprehensionExpr) -> Macro<'_> {
    let accu = c.accu_var.as_str();
    let result_is_accu = is_ident(&c.result, accu);
    let empty_list = matches!(&c.accu_init.expr, Expr::List(l) if l.elements.is_empty());
    let init_bool = match &c.accu_init.expr {
        Expr::Literal(LiteralValue::Boolean(b)) => Some(*b.inner()),
        _ => None,
    };
    if let (Some(false), Some(a), true) = (init_bool, call(&c.loop_step, "_||_", 2), result_is_accu)
        && is_ident(&a[0], accu)
    {
        return Macro::Exists(&a[1]);
    }
    if let (Some(true), Some(a), true) = (init_bool, call(&c.loop_step, "_&&_", 2), result_is_accu)
        && is_ident(&a[0], accu)
    {
        return Macro::All(&a[1]);
    }
    if is_int(&c.accu_init, 0)
        && let Some(a) = call(&c.loop_step, "_?_:_", 3)
        && let Some(inc) = call(&a[1], "_+_", 2)
        && is_ident(&inc[0], accu)
        && is_int(&inc[1], 1)
        && is_ident(&a[2], accu)
        && let Some(r) = call(&c.result, "_==_", 2)
        && is_ident(&r[0], accu)
        && is_int(&r[1], 1)
    {
        return Macro::ExistsOne(&a[0]);
    }
    if empty_list
        && result_is_accu
        && let Some(a) = call(&c.loop_step, "_?_:_", 3)
        && let Some(add) = call(&a[1], "_+_", 2)
        && is_ident(&add[0], accu)
        && matches!(&add[1].expr, Expr::List(l) if l.elements.len() == 1 && is_ident(&l.elements[0], &c.iter_var))
        && is_ident(&a[2], accu)
    {
        return Macro::Filter(&a[0]);
    }
    if empty_list
        && result_is_accu
        && let Some(a) = call(&c.loop_step, "_?_:_", 3)
        && let Some(add) = call(&a[1], "_+_", 2)
        && is_ident(&add[0], accu)
        && let Expr::List(l) = &add[1].expr
        && l.elements.len() == 1
        && is_ident(&a[2], accu)
    {
        return Macro::MapFilter(&a[0], &l.elements[0]);
    }
    if empty_list
        && result_is_accu
        && let Some(add) = call(&c.loop_step, "_+_", 2)
        && is_ident(&add[0], accu)
        && let Expr::List(l) = &add[1].expr
        && l.elements.len() == 1
    {
        return Macro::Map(&l.elements[0]);
    }
    panic!("reference: unrecognised comprehension {c:?}")
}

/// The dotted name an identifier or selection chain spells.
fn dotted(e: &IdedExpr) -> String {
    match &e.expr {
        Expr::Ident(n) => n.clone(),
        Expr::Select(s) if !s.test => format!("{}.{}", dotted(&s.operand), s.field),
        other => panic!("reference: not a name: {other:?}"),
    }
}

struct Reference<'m> {
    env: &'m BTreeMap<String, RefValue>,
    /// Comprehension variables in scope, innermost last.
    locals: Vec<(String, RefValue)>,
}

impl Reference<'_> {
    fn lookup(&self, name: &str) -> RefValue {
        if !name.contains('.')
            && let Some((_, v)) = self.locals.iter().rev().find(|(n, _)| n == name)
        {
            return v.clone();
        }
        match self.env.get(name) {
            Some(v) => v.clone(),
            None => panic!("reference: unknown name `{name}`"),
        }
    }

    fn eval(&mut self, e: &IdedExpr) -> RefValue {
        match &e.expr {
            Expr::Literal(l) => match l {
                LiteralValue::Boolean(b) => RefValue::Bool(*b.inner()),
                LiteralValue::Int(i) => RefValue::Int(*i.inner()),
                LiteralValue::Double(d) => RefValue::Float(*d.inner()),
                LiteralValue::String(s) => RefValue::Str(s.inner().to_string()),
                other => panic!("reference: literal {other:?}"),
            },
            Expr::List(l) => RefValue::List(
                l.elements
                    .iter()
                    .map(|x| match self.eval(x) {
                        RefValue::Str(s) => s,
                        other => panic!("reference: list item {other:?}"),
                    })
                    .collect(),
            ),
            Expr::Select(s) if s.test => {
                // has(path): whether the optional field or group is present.
                let path = format!("{}.{}", dotted(&s.operand), s.field);
                RefValue::Bool(match self.lookup(&path) {
                    RefValue::Group(present) => present,
                    RefValue::Missing => false,
                    _ => true,
                })
            }
            Expr::Ident(_) | Expr::Select(_) => {
                let v = self.lookup(&dotted(e));
                assert!(!matches!(v, RefValue::Group(_)), "group used as a value");
                v
            }
            Expr::Call(c) => {
                let name = c.func_name.as_str();
                match (name, c.target.as_deref(), c.args.as_slice()) {
                    ("_&&_", None, [a, b]) => {
                        let (a, b) = (self.eval(a), self.eval(b));
                        and(a, b)
                    }
                    ("_||_", None, [a, b]) => {
                        let (a, b) = (self.eval(a), self.eval(b));
                        or(a, b)
                    }
                    ("!_", None, [a]) => {
                        let a = self.eval(a);
                        not(a)
                    }
                    ("_?_:_", None, [c, a, b]) => match self.eval(c) {
                        RefValue::Bool(true) => self.eval(a),
                        RefValue::Bool(false) => self.eval(b),
                        RefValue::Missing => RefValue::Missing,
                        other => panic!("ill-typed condition {other:?}"),
                    },
                    ("_==_" | "_!=_" | "_<_" | "_<=_" | "_>_" | "_>=_", None, [a, b]) => {
                        let (a, b) = (self.eval(a), self.eval(b));
                        compare(name, a, b)
                    }
                    ("_+_" | "_-_" | "_*_" | "_/_" | "_%_", None, [a, b]) => {
                        let (a, b) = (self.eval(a), self.eval(b));
                        arith(name, a, b)
                    }
                    ("-_", None, [a]) => match self.eval(a) {
                        RefValue::Int(i) => {
                            i.checked_neg().map_or(RefValue::Missing, RefValue::Int)
                        }
                        RefValue::Dur(d) => {
                            d.checked_neg().map_or(RefValue::Missing, RefValue::Dur)
                        }
                        RefValue::Missing => RefValue::Missing,
                        other => panic!("ill-typed negation {other:?}"),
                    },
                    ("@in", None, [x, l]) => match (self.eval(x), self.eval(l)) {
                        (RefValue::Missing, _) | (_, RefValue::Missing) => RefValue::Missing,
                        (RefValue::Str(s), RefValue::List(items)) => {
                            RefValue::Bool(items.contains(&s))
                        }
                        (a, b) => panic!("ill-typed in: {a:?}, {b:?}"),
                    },
                    ("size", None, [x]) | ("size", Some(x), []) => match self.eval(x) {
                        RefValue::Str(s) => RefValue::Int(s.chars().count() as i64),
                        RefValue::List(l) => RefValue::Int(l.len() as i64),
                        RefValue::Missing => RefValue::Missing,
                        other => panic!("ill-typed size: {other:?}"),
                    },
                    ("contains" | "startsWith" | "endsWith", Some(s), [t]) => {
                        match (self.eval(s), self.eval(t)) {
                            (RefValue::Str(s), RefValue::Str(t)) => RefValue::Bool(match name {
                                "contains" => s.contains(&t),
                                "startsWith" => s.starts_with(&t),
                                _ => s.ends_with(&t),
                            }),
                            (RefValue::Missing, _) | (_, RefValue::Missing) => RefValue::Missing,
                            (a, b) => panic!("ill-typed {name}: {a:?}, {b:?}"),
                        }
                    }
                    ("duration", None, [arg]) => match &arg.expr {
                        Expr::Literal(LiteralValue::String(s)) => {
                            RefValue::Dur(reference_duration(s.inner()))
                        }
                        other => panic!("reference: duration of {other:?}"),
                    },
                    _ => panic!("reference: unsupported call {c:?}"),
                }
            }
            Expr::Comprehension(c) => self.comprehension(c),
            other => panic!("reference: unsupported expression {other:?}"),
        }
    }

    /// Evaluates `body` with the comprehension variable bound to each item; `None` when the
    /// list itself is missing (a field list never is, but `c ? l1 : l2` with `c` missing is).
    fn each(&mut self, c: &ComprehensionExpr, body: &IdedExpr) -> Option<Vec<(String, RefValue)>> {
        let items = match self.eval(&c.iter_range) {
            RefValue::List(items) => items,
            RefValue::Missing => return None,
            other => panic!("reference: iterating over {other:?}"),
        };
        Some(
            items
                .into_iter()
                .map(|item| {
                    self.locals
                        .push((c.iter_var.clone(), RefValue::Str(item.clone())));
                    let v = self.eval(body);
                    self.locals.pop();
                    (item, v)
                })
                .collect(),
        )
    }

    /// A macro over a missing list is missing, like any function of a missing operand.
    fn comprehension(&mut self, c: &ComprehensionExpr) -> RefValue {
        self.comprehension_of_list(c).unwrap_or(RefValue::Missing)
    }

    fn comprehension_of_list(&mut self, c: &ComprehensionExpr) -> Option<RefValue> {
        use RefValue::*;
        Some(match recognise(c) {
            // True if any item is true, else missing if any is missing, else false.
            Macro::Exists(body) => {
                let vs = self.each(c, body)?;
                if vs.iter().any(|(_, v)| *v == Bool(true)) {
                    Bool(true)
                } else if vs.iter().any(|(_, v)| *v == Missing) {
                    Missing
                } else {
                    Bool(false)
                }
            }
            // The mirror: false if any is false, else missing if any is missing, else true.
            Macro::All(body) => {
                let vs = self.each(c, body)?;
                if vs.iter().any(|(_, v)| *v == Bool(false)) {
                    Bool(false)
                } else if vs.iter().any(|(_, v)| *v == Missing) {
                    Missing
                } else {
                    Bool(true)
                }
            }
            // The page does not say: this model follows "missing propagates" (any missing
            // predicate makes the result missing), which is also what the CEL expansion
            // `p ? @result + 1 : @result` gives under propagation.
            Macro::ExistsOne(body) => {
                let vs = self.each(c, body)?;
                if vs.iter().any(|(_, v)| *v == Missing) {
                    Missing
                } else {
                    Bool(vs.iter().filter(|(_, v)| *v == Bool(true)).count() == 1)
                }
            }
            // Keeps the items whose predicate is true: false and missing are dropped.
            Macro::Filter(body) => List(
                self.each(c, body)?
                    .into_iter()
                    .filter(|(_, v)| *v == Bool(true))
                    .map(|(item, _)| item)
                    .collect(),
            ),
            // Drops missing results.
            Macro::Map(body) => List(
                self.each(c, body)?
                    .into_iter()
                    .filter_map(|(_, v)| match v {
                        Str(s) => Some(s),
                        Missing => None,
                        other => panic!("ill-typed map result {other:?}"),
                    })
                    .collect(),
            ),
            // Filter, then map; the page documents only the two-argument form.
            Macro::MapFilter(pred, body) => {
                let kept: Vec<String> = self
                    .each(c, pred)?
                    .into_iter()
                    .filter(|(_, v)| *v == Bool(true))
                    .map(|(item, _)| item)
                    .collect();
                List(
                    kept.into_iter()
                        .filter_map(|item| {
                            self.locals.push((c.iter_var.clone(), Str(item)));
                            let v = self.eval(body);
                            self.locals.pop();
                            match v {
                                Str(s) => Some(s),
                                Missing => None,
                                other => panic!("ill-typed map result {other:?}"),
                            }
                        })
                        .collect(),
                )
            }
        })
    }
}

fn reference_eval(case: &Case, source: &str) -> RefValue {
    let (ast, _) = cel::parser::Parser::new()
        .parse_with_source_info(source)
        .unwrap_or_else(|e| panic!("reference: `{source}` does not parse: {e:?}"));
    let env = case.env();
    let mut r = Reference {
        env: &env,
        locals: Vec::new(),
    };
    r.eval(&ast)
}

// ---------------------------------------------------------------------------------------------
// Running the crate.
// ---------------------------------------------------------------------------------------------

fn ruleset() -> &'static Ruleset {
    static RULESET: OnceLock<Ruleset> = OnceLock::new();
    RULESET.get_or_init(|| {
        Ruleset::from_sources(
            vec![SourceFile {
                path: "t.toml".into(),
                text: "[[rule]]\nname='x'\non=['post']\nwhen='true'\n[[rule.action]]\nflag='x'\n"
                    .into(),
            }],
            &|_p| Err(std::io::Error::other("none")),
        )
        .unwrap_or_else(|d| panic!("{d:?}"))
    })
}

/// The crate's value of `source` on the case. A compile error is a finding: every generated
/// expression is well typed.
fn crate_eval(case: &Case, source: &str) -> Result<Owned, String> {
    let event = case.event();
    let account = case.account();
    let input = Input::units(&event, &account, case.now)
        .next()
        .expect("one unit");
    evaluate_expression(ruleset(), source, input).map_err(|e| format!("{e:?}"))
}

fn same(a: &Owned, b: &RefValue) -> bool {
    match (a, b) {
        (Owned::Missing, RefValue::Missing) => true,
        (Owned::Bool(x), RefValue::Bool(y)) => x == y,
        (Owned::Int(x), RefValue::Int(y)) => x == y,
        (Owned::Float(x), RefValue::Float(y)) => x == y || (x.is_nan() && y.is_nan()),
        (Owned::Str(x), RefValue::Str(y)) => x == y,
        (Owned::Dur(x), RefValue::Dur(y)) => x == y,
        (Owned::List(x), RefValue::List(y)) => x == y,
        _ => false,
    }
}

/// Both evaluators on one case: `Err` describes a disagreement or a compile error.
fn check_case(case: &Case, source: &str) -> Result<RefValue, String> {
    let expected = reference_eval(case, source);
    match crate_eval(case, source) {
        Err(e) => Err(format!(
            "well-typed expression does not compile\n  expr: {source}\n  errors: {e}"
        )),
        Ok(got) if same(&got, &expected) => Ok(expected),
        Ok(got) => Err(format!(
            "evaluators disagree\n  expr: {source}\n  crate: {got:?}\n  reference: {expected:?}\n  case: {case:#?}"
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Generators.
// ---------------------------------------------------------------------------------------------

const WORDS: &[&str] = &[
    "spam",
    "Spam",
    "SCAM",
    "free",
    "héllo",
    "Ünïcode",
    "日本語",
    "🙂",
    "a",
    "en",
    "did:plc:abc",
    "crypto",
    "x",
];
const LANGS: &[&str] = &["en", "ja", "pt-BR", "EN", "de"];
const TAGS: &[&str] = &["a", "spam", "Crypto", "日本", "b"];
const AUTHORS: &[&str] = &["did:plc:abc", "did:plc:xyz", "did:web:example.com"];
const OTHERS: &[&str] = &["did:plc:abc", "did:plc:p1", "did:plc:p2"];
const RKEYS: &[&str] = &["3kabc2xyz7de2", "3lzzzzzzzzz22", "self"];
const HANDLES: &[&str] = &["alice.bsky.social", "Bob.example", "ünï.test", ""];
const COUNTS: &[i64] = &[0, 1, 2, 5, 100, 1000, -1, i64::MAX, i64::MIN];
const AGES: &[i64] = &[
    0,
    1,
    SECOND,
    HOUR,
    DAY - 1,
    DAY,
    DAY + 1,
    3 * DAY,
    7 * DAY,
    30 * DAY,
    400 * DAY,
    -HOUR,
];

/// String literals of expressions: words of the texts, parts of URIs, vocabulary values.
const STR_LITS: &[&str] = &[
    "",
    "a",
    "en",
    "EN",
    "spam",
    "Spam",
    "héllo",
    "日本",
    "🙂",
    "did:plc:abc",
    "did:plc:p1",
    "at://",
    "at://did:plc:p1/app.bsky.feed.post/self",
    "commit",
    "create",
    "app.bsky.feed.post",
    "alice.bsky.social",
    "z",
];
const INT_LITS: &[i64] = &[
    0,
    1,
    2,
    3,
    5,
    10,
    100,
    -1,
    -7,
    i64::MAX,
    4_611_686_018_427_387_904,
];
const DUR_LITS: &[&str] = &[
    "0", "0s", "1s", "90s", "1m", "1h", "1h30m", "1.5h", "23h", "1d", "2d", "3d", "7d", "30d",
    "365d", "250ms", "-5m", "-1d",
];
/// String fields that are always there.
const STR_FIELDS: &[&str] = &[
    "event.kind",
    "event.action",
    "event.collection",
    "event.did",
];
/// String fields that can be missing.
const OPT_STR_FIELDS: &[&str] = &[
    "record.post.text",
    "record.post.reply.parent.did",
    "record.post.reply.parent.uri",
    "record.post.reply.root.did",
    "account.handle",
];
const INT_FIELDS: &[&str] = &["text.length"];
const OPT_INT_FIELDS: &[&str] = &["account.followers", "account.posts"];
const LIST_FIELDS: &[&str] = &["record.post.langs", "record.post.tags"];
const BOOL_LEAVES: &[&str] = &[
    "true",
    "false",
    "record.post.is_reply",
    "has(record.post.reply)",
    "has(record.post.reply.parent.uri)",
    "has(account.age)",
    "has(account.handle)",
    "has(account.followers)",
];
const CMP: &[&str] = &["==", "!=", "<", "<=", ">", ">="];
/// Comprehension variable names (a scope is a bit set over them).
const VARS: &[&str] = &["x", "y"];
const MAX_DEPTH: usize = 4;
/// Events each generated expression is evaluated on.
const EVENTS_PER_EXPRESSION: usize = 4;

fn sel<T: Clone + std::fmt::Debug + 'static>(items: &'static [T]) -> BoxedStrategy<T> {
    prop::sample::select(items).boxed()
}

fn word_list(pool: &'static [&'static str]) -> BoxedStrategy<Option<Vec<String>>> {
    // Mostly present and non-empty, so that comprehensions have items to work on.
    let items = prop::collection::vec(sel(pool).prop_map(String::from), 0..=3);
    prop_oneof![1 => Just(None), 4 => items.prop_map(Some)].boxed()
}

fn other_post() -> BoxedStrategy<(String, String)> {
    (sel(OTHERS), sel(RKEYS))
        .prop_map(|(d, r)| (d.to_string(), r.to_string()))
        .boxed()
}

fn post_strategy() -> impl Strategy<Value = PostModel> {
    let reply = (
        prop_oneof![9 => other_post().prop_map(Some), 1 => Just(None)],
        other_post(),
    )
        .prop_map(|(parent, root)| ReplyModel { parent, root });
    (
        sel(AUTHORS),
        sel(RKEYS),
        prop::collection::vec(sel(WORDS), 0..=6).prop_map(|w| w.join(" ")),
        word_list(LANGS),
        word_list(TAGS),
        prop::option::of(reply),
    )
        .prop_map(|(did, rkey, text, langs, tags, reply)| PostModel {
            did: did.to_string(),
            rkey: rkey.to_string(),
            text,
            langs,
            tags,
            reply,
        })
}

fn account_strategy() -> impl Strategy<Value = AccountModel> {
    let age = prop_oneof![sel(AGES), -DAY..=1000 * DAY];
    (
        prop::option::of(age),
        prop::option::of(sel(COUNTS)),
        prop::option::of(sel(COUNTS)),
        prop::option::of(sel(HANDLES).prop_map(String::from)),
    )
        .prop_map(|(age, followers, posts, handle)| AccountModel {
            age,
            followers,
            posts,
            handle,
        })
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (post_strategy(), account_strategy(), 0..10_000 * SECOND).prop_map(|(post, account, offset)| {
        Case {
            post,
            account,
            now: T0 + offset,
        }
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Ty {
    Bool,
    Int,
    Str,
    Dur,
    List,
}

const TYPES: [Ty; 5] = [Ty::Bool, Ty::Int, Ty::Str, Ty::Dur, Ty::List];

type S = BoxedStrategy<String>;

fn quote(s: &str) -> String {
    // The pool holds no quotes or backslashes.
    format!("\"{s}\"")
}

/// A typed expression grammar: `table[(depth, ty, scope)]` generates expressions of type `ty`,
/// nested at most `depth` deep, that may use the comprehension variables of bit set `scope`.
struct Grammar {
    table: HashMap<(usize, Ty, u8), S>,
}

impl Grammar {
    fn new() -> Grammar {
        let mut g = Grammar {
            table: HashMap::new(),
        };
        for depth in 0..=MAX_DEPTH {
            for scope in 0..(1u8 << VARS.len()) {
                for ty in TYPES {
                    let s = g.build(depth, ty, scope);
                    g.table.insert((depth, ty, scope), s);
                }
            }
        }
        g
    }

    fn get(&self, depth: usize, ty: Ty, scope: u8) -> S {
        self.table[&(depth, ty, scope)].clone()
    }

    fn expr(&self, ty: Ty) -> S {
        self.get(MAX_DEPTH, ty, 0)
    }

    /// An expression of any type, nested 1 to `MAX_DEPTH` deep: conditions mostly, but values
    /// of the other types are compared directly too.
    fn any_expr(&self) -> BoxedStrategy<(Ty, String)> {
        let mut alts = Vec::new();
        for depth in 1..=MAX_DEPTH {
            for ty in TYPES {
                // Small expressions often: in a large one most sub-results are masked.
                let w = match ty {
                    Ty::Bool => 4,
                    Ty::Int => 2,
                    _ => 1,
                } * if depth <= 2 { 3 } else { 2 };
                let s = self.get(depth, ty, 0).prop_map(move |s| (ty, s)).boxed();
                alts.push((w, s));
            }
        }
        Union::new_weighted(alts).boxed()
    }

    fn leaves(ty: Ty, scope: u8) -> S {
        let mut alts: Vec<(u32, S)> = match ty {
            Ty::Bool => vec![(1, sel(BOOL_LEAVES).prop_map(String::from).boxed())],
            Ty::Int => vec![
                (1, sel(INT_LITS).prop_map(|i| i.to_string()).boxed()),
                (1, sel(INT_FIELDS).prop_map(String::from).boxed()),
                (2, sel(OPT_INT_FIELDS).prop_map(String::from).boxed()),
            ],
            Ty::Str => vec![
                (2, sel(STR_LITS).prop_map(quote).boxed()),
                (1, sel(STR_FIELDS).prop_map(String::from).boxed()),
                (3, sel(OPT_STR_FIELDS).prop_map(String::from).boxed()),
            ],
            Ty::Dur => vec![
                (1, Just("account.age".to_string()).boxed()),
                (
                    1,
                    sel(DUR_LITS)
                        .prop_map(|d| format!("duration({})", quote(d)))
                        .boxed(),
                ),
            ],
            Ty::List => vec![
                (2, sel(LIST_FIELDS).prop_map(String::from).boxed()),
                (
                    1,
                    prop::collection::vec(sel(STR_LITS), 0..=3)
                        .prop_map(|items| {
                            let items: Vec<String> = items.into_iter().map(quote).collect();
                            format!("[{}]", items.join(", "))
                        })
                        .boxed(),
                ),
            ],
        };
        if ty == Ty::Str {
            let vars: Vec<&'static str> = VARS
                .iter()
                .enumerate()
                .filter(|(i, _)| scope & (1 << i) != 0)
                .map(|(_, v)| *v)
                .collect();
            if !vars.is_empty() {
                alts.push((5, prop::sample::select(vars).prop_map(String::from).boxed()));
            }
        }
        Union::new_weighted(alts).boxed()
    }

    fn build(&self, depth: usize, ty: Ty, scope: u8) -> S {
        let leaves = Grammar::leaves(ty, scope);
        if depth == 0 {
            return leaves;
        }
        let d = depth - 1;
        let sub = |t: Ty| self.get(d, t, scope);
        let bin = |a: Ty, op: &'static str, b: Ty| -> S {
            (sub(a), sub(b))
                .prop_map(move |(a, b)| format!("({a} {op} {b})"))
                .boxed()
        };
        let cmp = |t: Ty, ops: &'static [&'static str]| -> S {
            (sub(t), sel(ops), sub(t))
                .prop_map(|(a, op, b)| format!("({a} {op} {b})"))
                .boxed()
        };
        let cond = (sub(Ty::Bool), sub(ty), sub(ty))
            .prop_map(|(c, a, b)| format!("({c} ? {a} : {b})"))
            .boxed();
        // `macro_(name)` is `LIST.name(v, BODY)` for each variable name, the body seeing `v`.
        let macro_ = |name: &'static str| -> Vec<S> {
            VARS.iter()
                .enumerate()
                .map(|(i, v)| {
                    (sub(Ty::List), self.get(d, Ty::Bool, scope | (1 << i)))
                        .prop_map(move |(l, p)| format!("{l}.{name}({v}, {p})"))
                        .boxed()
                })
                .collect()
        };
        let method = |name: &'static str| -> S {
            (sub(Ty::Str), sub(Ty::Str))
                .prop_map(move |(s, t)| format!("{s}.{name}({t})"))
                .boxed()
        };
        let mut alts: Vec<S> = vec![cond];
        match ty {
            Ty::Bool => {
                alts.push(bin(Ty::Bool, "&&", Ty::Bool));
                alts.push(bin(Ty::Bool, "||", Ty::Bool));
                alts.push(bin(Ty::Bool, "&&", Ty::Bool));
                alts.push(bin(Ty::Bool, "||", Ty::Bool));
                alts.push(sub(Ty::Bool).prop_map(|a| format!("!({a})")).boxed());
                alts.push(sub(Ty::Bool).prop_map(|a| format!("!({a})")).boxed());
                alts.push(cmp(Ty::Int, CMP));
                alts.push(cmp(Ty::Int, CMP));
                alts.push(cmp(Ty::Str, CMP));
                alts.push(cmp(Ty::Str, CMP));
                alts.push(cmp(Ty::Dur, CMP));
                alts.push(cmp(Ty::Dur, CMP));
                alts.push(cmp(Ty::Bool, &["==", "!="]));
                alts.push(method("contains"));
                alts.push(method("startsWith"));
                alts.push(method("endsWith"));
                alts.push(bin(Ty::Str, "in", Ty::List));
                alts.push(bin(Ty::Str, "in", Ty::List));
                alts.extend(macro_("exists"));
                alts.extend(macro_("all"));
                alts.extend(macro_("exists_one"));
            }
            Ty::Int => {
                alts.push(bin(Ty::Int, "+", Ty::Int));
                alts.push(bin(Ty::Int, "-", Ty::Int));
                alts.push(bin(Ty::Int, "*", Ty::Int));
                alts.push(bin(Ty::Int, "/", Ty::Int));
                alts.push(bin(Ty::Int, "%", Ty::Int));
                alts.push(sub(Ty::Int).prop_map(|a| format!("(-{a})")).boxed());
                alts.push(sub(Ty::Str).prop_map(|s| format!("size({s})")).boxed());
                alts.push(sub(Ty::Str).prop_map(|s| format!("{s}.size()")).boxed());
                alts.push(sub(Ty::List).prop_map(|l| format!("size({l})")).boxed());
                alts.push(sub(Ty::List).prop_map(|l| format!("{l}.size()")).boxed());
                alts.extend(
                    macro_("filter")
                        .into_iter()
                        .map(|f| f.prop_map(|f| format!("size({f})")).boxed()),
                );
            }
            Ty::Str => {
                alts.push(bin(Ty::Str, "+", Ty::Str));
            }
            Ty::Dur => {
                alts.push(bin(Ty::Dur, "+", Ty::Dur));
                alts.push(bin(Ty::Dur, "-", Ty::Dur));
                alts.push(bin(Ty::Dur, "*", Ty::Int));
                alts.push(bin(Ty::Dur, "/", Ty::Int));
                alts.push(sub(Ty::Dur).prop_map(|a| format!("(-{a})")).boxed());
            }
            Ty::List => {
                alts.extend(macro_("filter"));
            }
        }
        // Leaves first: a union shrinks towards its earlier alternatives.
        let n = alts.len() as u32;
        let weighted: Vec<(u32, S)> = std::iter::once((n, leaves))
            .chain(alts.into_iter().map(|s| (2, s)))
            .collect();
        Union::new_weighted(weighted).boxed()
    }
}

fn grammar() -> Grammar {
    Grammar::new()
}

fn cases() -> u32 {
    std::env::var("REFERENCE_EVAL_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(512)
}

fn seed() -> u64 {
    std::env::var("REFERENCE_EVAL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5ca1_ab1e)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        rng_seed: RngSeed::Fixed(seed()),
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// The crate agrees with the reference on random well-typed expressions, each evaluated on
    /// several random events.
    #[test]
    fn crate_agrees_with_reference(
        (_ty, source) in grammar().any_expr(),
        cases in prop::collection::vec(case_strategy(), EVENTS_PER_EXPRESSION),
    ) {
        for case in &cases {
            if let Err(msg) = check_case(case, &source) {
                prop_assert!(false, "{}", msg);
            }
        }
    }
}

/// The generator is not degenerate: Boolean expressions come out true, false and missing, and
/// every vocabulary name of the subset is generated.
#[test]
fn generator_covers_three_values_and_the_vocabulary() {
    let mut runner = TestRunner::new(config());
    let strategy = (grammar().expr(Ty::Bool), case_strategy());
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    let vocabulary = STR_FIELDS
        .iter()
        .chain(OPT_STR_FIELDS)
        .chain(INT_FIELDS)
        .chain(OPT_INT_FIELDS)
        .chain(LIST_FIELDS)
        .chain(BOOL_LEAVES)
        .chain(&[
            "account.age",
            ".exists(",
            ".all(",
            ".exists_one(",
            ".filter(",
        ]);
    let n = 400;
    let mut total_len = 0;
    for _ in 0..n {
        let (source, case) = strategy.new_tree(&mut runner).expect("generates").current();
        total_len += source.len();
        for name in vocabulary.clone() {
            if source.contains(name) {
                *names.entry(name).or_default() += 1;
            }
        }
        let outcome = match reference_eval(&case, &source) {
            RefValue::Bool(true) => "true",
            RefValue::Bool(false) => "false",
            RefValue::Missing => "missing",
            other => panic!("a bool expression gave {other:?}"),
        };
        *outcomes.entry(outcome).or_default() += 1;
    }
    println!("outcomes: {outcomes:?}");
    println!("mean length: {}", total_len / n);
    println!("names: {names:?}");
    for outcome in ["true", "false", "missing"] {
        let count = outcomes.get(outcome).copied().unwrap_or(0);
        assert!(count >= n / 20, "{outcome}: only {count} of {n}");
    }
    for name in vocabulary {
        assert!(names.contains_key(name), "`{name}` never generated");
    }
}

// ---------------------------------------------------------------------------------------------
// Fixed examples.
// ---------------------------------------------------------------------------------------------

fn plain_case() -> Case {
    Case {
        post: PostModel {
            did: "did:plc:abc".into(),
            rkey: "3kabc2xyz7de2".into(),
            text: "héllo 日本語".into(),
            langs: None,
            tags: None,
            reply: None,
        },
        account: AccountModel::default(),
        now: T0,
    }
}

/// Asserts both evaluators give `expected`.
#[track_caller]
fn expect(case: &Case, source: &str, expected: RefValue) {
    let reference = reference_eval(case, source);
    assert_eq!(reference, expected, "reference model on `{source}`");
    let got = crate_eval(case, source).unwrap_or_else(|e| panic!("`{source}`: {e}"));
    assert!(
        same(&got, &expected),
        "crate on `{source}`: {got:?}, expected {expected:?}"
    );
}

#[test]
fn unknown_age_is_missing_and_kleene_logic_decides_around_it() {
    use RefValue::*;
    let c = plain_case();
    expect(&c, r#"account.age < duration("1d")"#, Missing);
    expect(&c, r#"!(account.age >= duration("7d"))"#, Missing);
    expect(
        &c,
        r#"false && (account.age < duration("1d"))"#,
        Bool(false),
    );
    expect(
        &c,
        r#"(account.age < duration("1d")) && false"#,
        Bool(false),
    );
    expect(&c, r#"true && (account.age < duration("1d"))"#, Missing);
    expect(&c, r#"true || (account.followers > 3)"#, Bool(true));
    expect(&c, r#"(account.followers > 3) || true"#, Bool(true));
    expect(&c, r#"(account.followers > 3) || false"#, Missing);
    expect(
        &c,
        r#"!has(account.age) || account.age < duration("7d")"#,
        Bool(true),
    );
    expect(&c, r#"(account.followers > 3) ? 1 : 2"#, Missing);
    expect(&c, r#"account.handle in ["a"]"#, Missing);
    expect(&c, r#"account.handle == account.handle"#, Missing);
    expect(&c, r#"size(account.handle)"#, Missing);
    expect(&c, r#"account.followers + 1"#, Missing);
}

#[test]
fn known_account_values() {
    use RefValue::*;
    let mut c = plain_case();
    c.account = AccountModel {
        age: Some(DAY),
        followers: Some(i64::MAX),
        posts: Some(3),
        handle: Some("alice.bsky.social".into()),
    };
    expect(&c, "account.age", Dur(DAY));
    expect(&c, r#"account.age < duration("1d")"#, Bool(false));
    expect(&c, r#"account.age <= duration("24h")"#, Bool(true));
    expect(&c, r#"account.age == duration("1.5h") * 16"#, Bool(true));
    expect(&c, "account.followers + 1", Missing);
    expect(&c, "account.followers - 1", Int(i64::MAX - 1));
    expect(&c, "account.posts * -7", Int(-21));
    expect(&c, r#"account.handle.endsWith(".bsky.social")"#, Bool(true));
    expect(
        &c,
        r#"account.handle in ["a", "alice.bsky.social"]"#,
        Bool(true),
    );
}

#[test]
fn lists_and_comprehensions() {
    use RefValue::*;
    let mut c = plain_case();
    expect(&c, r#"record.post.tags.exists(t, t == "a")"#, Bool(false));
    expect(&c, r#"record.post.tags.all(t, t == "a")"#, Bool(true));
    expect(
        &c,
        r#"record.post.tags.exists_one(t, t == "a")"#,
        Bool(false),
    );
    expect(&c, "size(record.post.langs)", Int(0));
    c.post.tags = Some(vec!["a".into(), "b".into()]);
    c.post.langs = Some(vec!["en".into(), "ja".into(), "es".into()]);
    // Handle unknown: the predicate is missing for every item but "a".
    expect(
        &c,
        "record.post.tags.exists(t, t == account.handle)",
        Missing,
    );
    expect(
        &c,
        r#"record.post.tags.exists(t, t == "a" || t == account.handle)"#,
        Bool(true),
    );
    expect(
        &c,
        r#"record.post.tags.all(t, t == "a" || t == account.handle)"#,
        Missing,
    );
    expect(
        &c,
        r#"record.post.tags.all(t, t != "a" && t == account.handle)"#,
        Bool(false),
    );
    expect(
        &c,
        r#"record.post.tags.filter(t, t == "a" || t == account.handle)"#,
        List(vec!["a".into()]),
    );
    expect(
        &c,
        r#"size(record.post.tags.filter(t, t == account.handle))"#,
        Int(0),
    );
    expect(
        &c,
        r#"record.post.tags.exists_one(t, t == "a" || t == account.handle)"#,
        Missing,
    );
    // Two items certainly match and one is unknown: the page is silent on exists_one with
    // missing items; the reference propagates missing.
    expect(
        &c,
        r#"record.post.langs.exists_one(l, l.startsWith("e") || account.followers > 0)"#,
        Missing,
    );
    expect(
        &c,
        r#"record.post.langs.exists_one(l, l == "ja")"#,
        Bool(true),
    );
    // Shadowing: the inner `x` is the inner item.
    expect(
        &c,
        r#"record.post.tags.exists(x, record.post.langs.exists(x, x == "ja"))"#,
        Bool(true),
    );
    expect(
        &c,
        r#"record.post.tags.all(x, record.post.langs.exists(y, y.size() == x.size() + 1))"#,
        Bool(true),
    );
    expect(&c, r#""a" in record.post.tags"#, Bool(true));
    expect(&c, r#""A" in record.post.tags"#, Bool(false));
}

/// `text.simhash`, its bands and `text.fingerprint` are the text module's functions of the
/// normalised text, also when one expression reads them several times (they are computed
/// once per unit and shared).
#[test]
fn text_hashes_are_functions_of_the_normalised_text() {
    use skywarden_rules::text::{fingerprint, normalize_into, simhash};
    let mut c = plain_case();
    c.post.text = "Buy CHEAP followers now, only at our shop".into();
    let mut normalized = String::new();
    normalize_into(&c.post.text, &mut normalized);
    let h = simhash(&normalized);
    let bands: Vec<String> = (0..4)
        .map(|band| format!("{band}:{:04x}", (h >> (band * 16)) & 0xffff))
        .collect();
    let eval = |source: &str| crate_eval(&c, source).unwrap_or_else(|e| panic!("`{source}`: {e}"));
    assert_eq!(eval("text.simhash"), Owned::Int(h as i64));
    assert_eq!(
        eval("text.fingerprint"),
        Owned::Str(format!("{:016x}", fingerprint(&normalized)))
    );
    assert_eq!(eval("text.simhash_bands"), Owned::List(bands.clone()));
    let twice = format!(
        "text.simhash == text.simhash && size(text.simhash_bands) == 4 \
         && {:?} in text.simhash_bands && text.fingerprint == text.fingerprint",
        bands[3]
    );
    assert_eq!(eval(&twice), Owned::Bool(true));
    c.post.text = "!!! ...".into();
    let eval = |source: &str| crate_eval(&c, source).unwrap_or_else(|e| panic!("`{source}`: {e}"));
    assert_eq!(eval("text.simhash"), Owned::Missing);
    assert_eq!(eval("text.fingerprint"), Owned::Missing);
    assert_eq!(eval("size(text.simhash_bands)"), Owned::Int(0));
}

#[test]
fn replies_and_text() {
    use RefValue::*;
    let mut c = plain_case();
    expect(&c, "record.post.is_reply", Bool(false));
    expect(&c, "has(record.post.reply)", Bool(false));
    expect(&c, "has(record.post.reply.parent.uri)", Bool(false));
    expect(
        &c,
        r#"record.post.reply.parent.did == "did:plc:p1""#,
        Missing,
    );
    expect(&c, "text.length", Int(9));
    expect(&c, "size(record.post.text) == text.length", Bool(true));
    expect(&c, r#"record.post.text.contains("日本")"#, Bool(true));
    expect(&c, r#"record.post.text.startsWith("Héllo")"#, Bool(false));
    // Byte order: "Z" (0x5a) < "a" (0x61) < "é" (0xc3 0xa9).
    expect(&c, r#""Z" < "a""#, Bool(true));
    expect(&c, r#""é" > "z""#, Bool(true));
    expect(
        &c,
        r#"event.kind + ":" + event.action"#,
        Str("commit:create".into()),
    );
    c.post.reply = Some(ReplyModel {
        parent: Some(("did:plc:p1".into(), "self".into())),
        root: ("did:plc:p2".into(), "3kabc2xyz7de2".into()),
    });
    expect(&c, "record.post.is_reply", Bool(true));
    expect(&c, "has(record.post.reply)", Bool(true));
    expect(
        &c,
        r#"record.post.reply.parent.did == "did:plc:p1""#,
        Bool(true),
    );
    expect(
        &c,
        "record.post.reply.parent.uri",
        Str("at://did:plc:p1/app.bsky.feed.post/self".into()),
    );
    // A malformed reply without a parent: the group is there, the parent's fields are not.
    c.post.reply = Some(ReplyModel {
        parent: None,
        root: ("did:plc:p2".into(), "self".into()),
    });
    expect(&c, "has(record.post.reply)", Bool(true));
    expect(&c, "has(record.post.reply.parent.uri)", Bool(false));
    expect(&c, "record.post.reply.parent.did", Missing);
}

#[test]
fn map_macro() {
    use RefValue::*;
    let c = plain_case();
    expect(
        &c,
        r#"["a", "b"].map(x, x + "!")"#,
        List(vec!["a!".into(), "b!".into()]),
    );
    // Missing results are dropped.
    expect(&c, r#"["a", "b"].map(x, account.handle)"#, List(vec![]));
    expect(&c, r#"["a", "b"].existsOne(x, x == "a")"#, Bool(true));
}

/// CEL's three-argument `map(x, p, f)` must not run as `filter(x, p)` (dropping the
/// transform): either the crate rejects the form at load or applies `f`.
#[test]
fn three_argument_map_applies_its_transform() {
    let c = plain_case();
    let source = r#"["a", "b"].map(x, x == "a", x + "!")"#;
    assert_eq!(
        reference_eval(&c, source),
        RefValue::List(vec!["a!".into()])
    );
    match crate_eval(&c, source) {
        Err(_) => {}
        Ok(got) => assert_eq!(got, Owned::List(vec!["a!".into()]), "`{source}`"),
    }
}

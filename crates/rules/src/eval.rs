//! Evaluation of compiled expressions, with three-valued logic for missing data.

use crate::compile::{Arith, Builtin, Cmp, Lit, Loop, Node};
use crate::counter::CounterStore;
use crate::frame::Frame;
use crate::text;
use crate::value::Val;
use crate::vocab::did_of;
use bumpalo::collections::{String as BumpString, Vec as BumpVec};

/// What evaluation needs besides the frame.
pub struct Cx<'f, 'a> {
    /// The unit's state.
    pub frame: &'f Frame<'a>,
    /// The ruleset's regex set, if it has regexes.
    pub regexes: Option<&'f regex::RegexSet>,
    /// Key expressions of the ruleset's counters, by index (keys are computed lazily).
    pub counter_keys: &'a [Node],
    /// Counter values, once counters are updated for this unit. `None` while computing
    /// counter keys and conditions themselves.
    pub store: Option<&'f dyn CounterStore>,
}

/// Hashes a counter key string.
pub fn key_hash(key: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(key.as_bytes())
}

/// Hashes a distinct value.
pub fn value_hash(value: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(value.as_bytes())
}

impl<'a> Cx<'_, 'a> {
    /// The key of counter `i` for this unit: `None` when the key expression is missing.
    pub fn counter_key(&self, i: usize) -> Option<u128> {
        *self.frame.counter_keys[i].get_or_init(|| match self.eval(&self.counter_keys[i]) {
            Val::Str(s) => Some(self.frame.key_hash(s)),
            _ => None,
        })
    }

    fn lit(&self, l: &'a Lit) -> Val<'a> {
        match l {
            Lit::Bool(b) => Val::Bool(*b),
            Lit::Int(i) => Val::Int(*i),
            Lit::Float(x) => Val::Float(*x),
            Lit::Str(s) => Val::Str(s),
            Lit::Time(t) => Val::Time(*t),
            Lit::Dur(d) => Val::Dur(*d),
            Lit::List(items) => Val::List(self.frame.list(items.iter().map(|s| &**s))),
        }
    }

    /// Evaluates an operand: leaves (literals, fields, variables), which most operands are, in
    /// line, anything else through [`Cx::eval`]. Saves the recursive call and its stack frame
    /// for most nodes of a condition.
    #[inline(always)]
    fn operand(&self, node: &'a Node) -> Val<'a> {
        match node {
            Node::Lit(Lit::List(_)) => self.eval(node),
            Node::Lit(l) => self.lit(l),
            Node::Field(read) => read(self.frame),
            Node::Local(slot) => self.frame.locals[*slot as usize].get(),
            _ => self.eval(node),
        }
    }

    /// Evaluates `node`.
    pub fn eval(&self, node: &'a Node) -> Val<'a> {
        let f = self.frame;
        match node {
            Node::Lit(l) => self.lit(l),
            Node::Field(read) => read(f),
            Node::Local(slot) => f.locals[*slot as usize].get(),
            Node::Counter { counter, window } => match (self.store, self.counter_key(*counter)) {
                (Some(store), Some(key)) => {
                    let v = store.get(*counter, key, *window, f.input.now);
                    Val::Int(i64::try_from(v).unwrap_or(i64::MAX))
                }
                _ => Val::Missing,
            },
            Node::CounterAt {
                counter,
                window,
                key,
            } => match (self.store, self.eval(key)) {
                (Some(store), Val::Str(k)) => {
                    let v = store.get(*counter, f.key_hash(k), *window, f.input.now);
                    Val::Int(i64::try_from(v).unwrap_or(i64::MAX))
                }
                _ => Val::Missing,
            },
            Node::Not(a) => match self.operand(a) {
                Val::Bool(b) => Val::Bool(!b),
                _ => Val::Missing,
            },
            Node::And(ab) => match self.operand(&ab[0]) {
                Val::Bool(false) => Val::Bool(false),
                a => match (a, self.operand(&ab[1])) {
                    (_, Val::Bool(false)) => Val::Bool(false),
                    (Val::Bool(true), Val::Bool(true)) => Val::Bool(true),
                    _ => Val::Missing,
                },
            },
            Node::Or(ab) => match self.operand(&ab[0]) {
                Val::Bool(true) => Val::Bool(true),
                a => match (a, self.operand(&ab[1])) {
                    (_, Val::Bool(true)) => Val::Bool(true),
                    (Val::Bool(false), Val::Bool(false)) => Val::Bool(false),
                    _ => Val::Missing,
                },
            },
            Node::Cond(cab) => match self.eval(&cab[0]) {
                Val::Bool(true) => self.eval(&cab[1]),
                Val::Bool(false) => self.eval(&cab[2]),
                _ => Val::Missing,
            },
            Node::Cmp(op, ab) => compare(*op, self.operand(&ab[0]), self.operand(&ab[1])),
            Node::Arith(op, ab) => self.arith(*op, self.operand(&ab[0]), self.operand(&ab[1])),
            Node::Neg(a) => match self.eval(a) {
                Val::Int(i) => i.checked_neg().map_or(Val::Missing, Val::Int),
                Val::Float(x) => Val::Float(-x),
                Val::Dur(d) => d.checked_neg().map_or(Val::Missing, Val::Dur),
                _ => Val::Missing,
            },
            Node::In(ab) => match (self.operand(&ab[0]), self.operand(&ab[1])) {
                (Val::Str(s), Val::List(items)) => Val::Bool(items.contains(&s)),
                _ => Val::Missing,
            },
            Node::InNamed(a, list) => match self.operand(a) {
                Val::Str(s) => Val::Bool(f.lists.contains(*list, s)),
                _ => Val::Missing,
            },
            Node::Keyword { arg, list, whole } => match self.operand(arg) {
                Val::Str(s) => {
                    let (words, anywhere) = f.keyword_hits(s);
                    let bits = if *whole { words } else { anywhere };
                    Val::Bool(bits & (1u128 << list) != 0)
                }
                _ => Val::Missing,
            },
            Node::DomainIn(a, list) => match self.eval(a) {
                Val::Str(s) => Val::Bool(f.lists.domain_in(*list, s)),
                _ => Val::Missing,
            },
            Node::Regex(a, id) => match (self.eval(a), self.regexes) {
                (Val::Str(s), Some(set)) => {
                    let bits = f.regex_hits(s, set);
                    Val::Bool(bits[id / 64] & (1 << (id % 64)) != 0)
                }
                _ => Val::Missing,
            },
            Node::Has(read) => Val::Bool(!read(f).is_missing()),
            Node::OrValue(xd) => match self.operand(&xd[0]) {
                Val::Missing => self.operand(&xd[1]),
                v => v,
            },
            Node::Call(b, args) => self.call(*b, args),
            Node::ContainsText(s, finder) => match self.operand(s) {
                Val::Str(s) => Val::Bool(finder.find(s.as_bytes()).is_some()),
                _ => Val::Missing,
            },
            Node::Loop {
                kind,
                range,
                slot,
                body,
            } => self.comprehension(*kind, range, *slot, body),
        }
    }

    #[inline(never)]
    fn arith(&self, op: Arith, a: Val<'a>, b: Val<'a>) -> Val<'a> {
        use Val::*;
        let int = |x: Option<i64>| x.map_or(Missing, Int);
        match (op, a, b) {
            (Arith::Add, Int(x), Int(y)) => int(x.checked_add(y)),
            (Arith::Sub, Int(x), Int(y)) => int(x.checked_sub(y)),
            (Arith::Mul, Int(x), Int(y)) => int(x.checked_mul(y)),
            (Arith::Div, Int(x), Int(y)) => int(x.checked_div(y)),
            (Arith::Rem, Int(x), Int(y)) => int(x.checked_rem(y)),
            (_, Int(_) | Float(_), Int(_) | Float(_)) => {
                let (x, y) = (as_f64(a), as_f64(b));
                match op {
                    Arith::Add => Float(x + y),
                    Arith::Sub => Float(x - y),
                    Arith::Mul => Float(x * y),
                    Arith::Div => Float(x / y),
                    Arith::Rem => Missing,
                }
            }
            (Arith::Add, Str(x), Str(y)) => {
                let mut s = BumpString::with_capacity_in(x.len() + y.len(), self.frame.bump);
                s.push_str(x);
                s.push_str(y);
                Str(s.into_bump_str())
            }
            (Arith::Sub, Time(x), Time(y)) => x.checked_sub(y).map_or(Missing, Dur),
            (Arith::Add, Time(x), Dur(y)) | (Arith::Add, Dur(y), Time(x)) => {
                x.checked_add(y).map_or(Missing, Time)
            }
            (Arith::Sub, Time(x), Dur(y)) => x.checked_sub(y).map_or(Missing, Time),
            (Arith::Add, Dur(x), Dur(y)) => x.checked_add(y).map_or(Missing, Dur),
            (Arith::Sub, Dur(x), Dur(y)) => x.checked_sub(y).map_or(Missing, Dur),
            (Arith::Mul, Dur(x), Int(y)) => x.checked_mul(y).map_or(Missing, Dur),
            (Arith::Div, Dur(x), Int(y)) => x.checked_div(y).map_or(Missing, Dur),
            _ => Missing,
        }
    }

    #[inline(never)]
    fn call(&self, b: Builtin, args: &'a [Node]) -> Val<'a> {
        let f = self.frame;
        let a = self.operand(&args[0]);
        if a.is_missing() {
            return Val::Missing;
        }
        let second = || args.get(1).map_or(Val::Missing, |n| self.operand(n));
        match (b, a) {
            (Builtin::Size, Val::Str(s)) => Val::Int(s.chars().count() as i64),
            (Builtin::Size, Val::List(l)) => Val::Int(l.len() as i64),
            (Builtin::Contains, Val::Str(s)) => match second() {
                Val::Str(t) => Val::Bool(s.contains(t)),
                _ => Val::Missing,
            },
            (Builtin::StartsWith, Val::Str(s)) => match second() {
                Val::Str(t) => Val::Bool(s.starts_with(t)),
                _ => Val::Missing,
            },
            (Builtin::EndsWith, Val::Str(s)) => match second() {
                Val::Str(t) => Val::Bool(s.ends_with(t)),
                _ => Val::Missing,
            },
            (Builtin::Lower, Val::Str(s)) => {
                if s.chars().any(char::is_uppercase) {
                    let mut out = BumpString::with_capacity_in(s.len(), f.bump);
                    out.extend(s.chars().flat_map(char::to_lowercase));
                    Val::Str(out.into_bump_str())
                } else {
                    Val::Str(s)
                }
            }
            (Builtin::Trim, Val::Str(s)) => Val::Str(s.trim()),
            (Builtin::Normalize, Val::Str(s)) => Val::Str(if f.is_text(s) {
                f.normalized()
            } else {
                f.normalize(s)
            }),
            (Builtin::Tokens, Val::Str(s)) => {
                let n = f.normalize(s);
                Val::List(f.list(text::tokens(n)))
            }
            (Builtin::Host, Val::Str(s)) => Val::opt_str(text::host_of(s)),
            (Builtin::Domain, Val::Str(s)) => Val::opt_str(f.domain_of(s)),
            (Builtin::Did, Val::Str(s)) => Val::opt_str(did_of(s)),
            (Builtin::Split, Val::Str(s)) => match second() {
                Val::Str(sep) if !sep.is_empty() => Val::List(f.list(s.split(sep))),
                Val::Str(_) => Val::List(f.list([s])),
                _ => Val::Missing,
            },
            (Builtin::Hamming, Val::Int(x)) => match second() {
                Val::Int(y) => Val::Int(i64::from(text::hamming(x as u64, y as u64))),
                _ => Val::Missing,
            },
            (Builtin::ToInt, v) => match v {
                Val::Int(i) => Val::Int(i),
                Val::Float(x) if x.is_finite() && x.abs() < 9.2e18 => Val::Int(x as i64),
                Val::Str(s) => s.trim().parse().map_or(Val::Missing, Val::Int),
                Val::Time(t) => Val::Int(t / 1_000_000),
                Val::Dur(d) => Val::Int(d / 1_000_000),
                _ => Val::Missing,
            },
            (Builtin::ToFloat, v) => match v {
                Val::Int(i) => Val::Float(i as f64),
                Val::Float(x) => Val::Float(x),
                Val::Str(s) => s.trim().parse().map_or(Val::Missing, Val::Float),
                _ => Val::Missing,
            },
            (Builtin::ToString, v) => match v {
                Val::Str(s) => Val::Str(s),
                other => {
                    use std::fmt::Write;
                    let mut out = BumpString::new_in(f.bump);
                    let _ = write!(out, "{other}");
                    Val::Str(out.into_bump_str())
                }
            },
            (Builtin::RecordGet, Val::Str(path)) => {
                use skywarden_atproto::tree::{Kind, Value};
                let Some(value) = f.record().and_then(|r| r.get_path(path)) else {
                    return Val::Missing;
                };
                match value.kind() {
                    Kind::Str(s) => Val::Str(s),
                    Kind::Int(i) => Val::Str(bumpalo::format!(in f.bump, "{}", i).into_bump_str()),
                    Kind::Bool(b) => Val::Str(if b { "true" } else { "false" }),
                    Kind::Link(_) => match Value::as_link(value) {
                        Some(cid) => {
                            Val::Str(bumpalo::format!(in f.bump, "{}", cid).into_bump_str())
                        }
                        None => Val::Missing,
                    },
                    _ => Val::Missing,
                }
            }
            (Builtin::FollowedBy, Val::Str(did)) => match &f.input.account.followed_by {
                Some(set) => Val::Bool(set.contains(did)),
                None => Val::Missing,
            },
            _ => Val::Missing,
        }
    }

    #[inline(never)]
    fn comprehension(&self, kind: Loop, range: &'a Node, slot: u8, body: &'a Node) -> Val<'a> {
        let Val::List(items) = self.eval(range) else {
            return Val::Missing;
        };
        let local = &self.frame.locals[slot as usize];
        let mut missing = false;
        let mut count = 0usize;
        let mut out: Option<BumpVec<'a, &'a str>> = match kind {
            Loop::Filter | Loop::Map => Some(BumpVec::new_in(self.frame.bump)),
            _ => None,
        };
        for item in items {
            local.set(Val::Str(item));
            let v = self.operand(body);
            match (kind, v) {
                (Loop::Exists, Val::Bool(true)) => return Val::Bool(true),
                (Loop::All, Val::Bool(false)) => return Val::Bool(false),
                (Loop::ExistsOne, Val::Bool(true)) => count += 1,
                (Loop::Filter, Val::Bool(true)) => out.as_mut().expect("filter").push(item),
                (Loop::Map, Val::Str(s)) => out.as_mut().expect("map").push(s),
                (_, Val::Missing) => missing = true,
                _ => {}
            }
        }
        match kind {
            Loop::Exists | Loop::All if missing => Val::Missing,
            Loop::Exists => Val::Bool(false),
            Loop::All => Val::Bool(true),
            Loop::ExistsOne if missing => Val::Missing,
            Loop::ExistsOne => Val::Bool(count == 1),
            Loop::Filter | Loop::Map => Val::List(out.expect("list").into_bump_slice()),
        }
    }
}

fn as_f64(v: Val<'_>) -> f64 {
    match v {
        Val::Int(i) => i as f64,
        Val::Float(x) => x,
        _ => f64::NAN,
    }
}

/// Compares two values; missing on either side (or mismatched types) gives missing.
pub fn compare<'a>(op: Cmp, a: Val<'a>, b: Val<'a>) -> Val<'a> {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match (a, b) {
        (Val::Int(x), Val::Int(y)) => Some(x.cmp(&y)),
        (Val::Int(_) | Val::Float(_), Val::Int(_) | Val::Float(_)) => {
            as_f64(a).partial_cmp(&as_f64(b))
        }
        (Val::Str(x), Val::Str(y)) => Some(x.cmp(y)),
        (Val::Time(x), Val::Time(y)) | (Val::Dur(x), Val::Dur(y)) => Some(x.cmp(&y)),
        (Val::Bool(x), Val::Bool(y)) => Some(x.cmp(&y)),
        (Val::List(x), Val::List(y)) => Some(x.cmp(y)),
        _ => return Val::Missing,
    };
    let Some(ord) = ord else {
        // NaN: only != holds.
        return Val::Bool(op == Cmp::Ne);
    };
    Val::Bool(match op {
        Cmp::Eq => ord == Ordering::Equal,
        Cmp::Ne => ord != Ordering::Equal,
        Cmp::Lt => ord == Ordering::Less,
        Cmp::Le => ord != Ordering::Greater,
        Cmp::Gt => ord == Ordering::Greater,
        Cmp::Ge => ord != Ordering::Less,
    })
}

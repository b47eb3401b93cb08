//! The checker and compiler: a parsed CEL expression becomes a typed [`Node`] tree in which every
//! name is already resolved (fields to readers, counters and lists to indexes, variables to
//! slots, regexes to positions in the ruleset's one `RegexSet`). Nothing is looked up by name
//! while evaluating.

use crate::counter::Window;
use crate::value::{Ty, parse_duration};
use crate::vocab::{self, Reader};
use cel::common::ast::{Expr, IdedExpr, LiteralValue};
use std::collections::HashMap;

/// A constant value.
#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    /// Boolean.
    Bool(bool),
    /// Integer.
    Int(i64),
    /// Float.
    Float(f64),
    /// String.
    Str(Box<str>),
    /// Timestamp (µs).
    Time(i64),
    /// Duration (µs).
    Dur(i64),
    /// List of strings.
    List(Box<[Box<str>]>),
}

impl Lit {
    /// The constant's type.
    pub fn ty(&self) -> Ty {
        match self {
            Lit::Bool(_) => Ty::Bool,
            Lit::Int(_) => Ty::Int,
            Lit::Float(_) => Ty::Float,
            Lit::Str(_) => Ty::String,
            Lit::Time(_) => Ty::Timestamp,
            Lit::Dur(_) => Ty::Duration,
            Lit::List(_) => Ty::List,
        }
    }
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// Arithmetic operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arith {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Rem,
}

/// Built-in functions and methods that need no resolution beyond their arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// `size(x)`: characters of a string, items of a list.
    Size,
    /// `s.contains(t)`
    Contains,
    /// `s.startsWith(t)`
    StartsWith,
    /// `s.endsWith(t)`
    EndsWith,
    /// `s.lower()`
    Lower,
    /// `s.trim()`: without surrounding whitespace.
    Trim,
    /// `s.normalize()`
    Normalize,
    /// `s.tokens()`
    Tokens,
    /// `s.host()`: host of a URL.
    Host,
    /// `s.domain()`: registrable domain of a URL or host.
    Domain,
    /// `s.did()`: the DID of an AT-URI.
    Did,
    /// `s.split(sep)`: the parts of `s` between separators.
    Split,
    /// `int(x)`
    ToInt,
    /// `double(x)`
    ToFloat,
    /// `string(x)`
    ToString,
    /// `hamming(a, b)`: differing bits of two simhashes.
    Hamming,
    /// `account.followed_by(did)`
    FollowedBy,
    /// `record.get("path.to.field")`: any record field, as text.
    RecordGet,
}

/// Comprehension macros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loop {
    /// `l.exists(x, p)`
    Exists,
    /// `l.all(x, p)`
    All,
    /// `l.exists_one(x, p)`
    ExistsOne,
    /// `l.filter(x, p)`
    Filter,
    /// `l.map(x, f)`
    Map,
}

/// A compiled expression.
#[derive(Debug, Clone)]
pub enum Node {
    /// A constant.
    Lit(Lit),
    /// A vocabulary field.
    Field(Reader),
    /// A comprehension variable.
    Local(u8),
    /// `counters.NAME.WINDOW`.
    Counter {
        /// Counter index.
        counter: usize,
        /// Window read.
        window: Window,
    },
    /// `counters.NAME.WINDOW(key)`: the value for an explicit key.
    CounterAt {
        /// Counter index.
        counter: usize,
        /// Window read.
        window: Window,
        /// The key.
        key: Box<Node>,
    },
    /// `!x`
    Not(Box<Node>),
    /// `a && b`
    And(Box<[Node; 2]>),
    /// `a || b`
    Or(Box<[Node; 2]>),
    /// `c ? a : b`
    Cond(Box<[Node; 3]>),
    /// Comparison.
    Cmp(Cmp, Box<[Node; 2]>),
    /// Arithmetic.
    Arith(Arith, Box<[Node; 2]>),
    /// `-x`
    Neg(Box<Node>),
    /// `x in list`
    In(Box<[Node; 2]>),
    /// `x in lists.NAME`
    InNamed(Box<Node>, usize),
    /// `s.has_keyword(lists.NAME)` (whole words) / `s.contains_keyword(lists.NAME)` (anywhere).
    Keyword {
        /// The text.
        arg: Box<Node>,
        /// The list.
        list: usize,
        /// Whole words only.
        whole: bool,
    },
    /// `s.domain_in(lists.NAME)`
    DomainIn(Box<Node>, usize),
    /// `s.matches(RE)`: pattern `id` of the ruleset's regex set.
    Regex(Box<Node>, usize),
    /// A built-in call.
    Call(Builtin, Box<[Node]>),
    /// `s.contains("text")` with a literal: the searcher is built once, when the ruleset loads,
    /// not at every evaluation.
    ContainsText(Box<Node>, Box<memchr::memmem::Finder<'static>>),
    /// `has(field)`
    Has(Reader),
    /// `x.orValue(d)`: `d` where `x` is missing.
    OrValue(Box<[Node; 2]>),
    /// A comprehension.
    Loop {
        /// Which macro.
        kind: Loop,
        /// The list iterated.
        range: Box<Node>,
        /// The variable's slot.
        slot: u8,
        /// Predicate or transform.
        body: Box<Node>,
    },
}

/// A compile error at a byte offset of the expression source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    /// Byte offset in the expression.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when we can tell.
    pub hint: Option<String>,
}

/// A declared counter, as the checker needs it.
#[derive(Debug, Clone)]
pub struct CounterSig {
    /// Name.
    pub name: String,
    /// Declared windows.
    pub windows: Vec<Window>,
    /// Whether the key expression is a list (one key per item): such counters are read with an
    /// explicit key, `counters.NAME.WINDOW(key)`.
    pub list_key: bool,
}

/// Names an expression can refer to beyond the vocabulary.
#[derive(Debug, Default)]
pub struct Scope {
    /// Named constants.
    pub constants: HashMap<String, Lit>,
    /// Declared counters, by index.
    pub counters: Vec<CounterSig>,
    /// Declared lists, by index.
    pub lists: Vec<String>,
    /// Whether counters may be read (not inside counter definitions).
    pub counters_allowed: bool,
}

/// Regex patterns collected across a ruleset, each compiled once into one set.
#[derive(Debug, Default)]
pub struct RegexTable {
    /// Patterns, in set order.
    pub patterns: Vec<String>,
}

impl RegexTable {
    fn intern(&mut self, pattern: &str) -> usize {
        match self.patterns.iter().position(|p| p == pattern) {
            Some(i) => i,
            None => {
                self.patterns.push(pattern.to_string());
                self.patterns.len() - 1
            }
        }
    }
}

/// The compiler for one expression.
pub struct Compiler<'s> {
    scope: &'s Scope,
    regexes: &'s mut RegexTable,
    source: &'s str,
    offsets: cel::common::ast::SourceInfo,
    locals: Vec<String>,
    /// Leaf reads (fields, counters) with their source text, for explanations.
    pub observed: Vec<(String, Node)>,
}

type R<T> = Result<T, CompileError>;

const MAX_NESTING: usize = crate::frame::MAX_LOCALS;

/// A compiled expression with its type and the leaf reads it makes.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The expression.
    pub node: Node,
    /// Its type.
    pub ty: Ty,
    /// Fields and counters it reads, with their source text (for explanations).
    pub observed: Vec<(String, Node)>,
}

/// Parses and compiles `source`, expecting a value of type `want` (if given).
pub fn compile(
    source: &str,
    scope: &Scope,
    regexes: &mut RegexTable,
    want: Option<Ty>,
) -> Result<Compiled, Vec<CompileError>> {
    let parsed = cel::parser::Parser::new().parse_with_source_info(source);
    let (expr, info) = match parsed {
        Ok(ok) => ok,
        Err(errs) => {
            return Err(errs
                .errors
                .iter()
                .map(|e| CompileError {
                    offset: line_col_to_offset(source, e.pos.0, e.pos.1),
                    message: format!(
                        "syntax error: {}",
                        e.msg.trim_start_matches("Syntax error: ")
                    ),
                    hint: None,
                })
                .collect());
        }
    };
    let mut c = Compiler {
        scope,
        regexes,
        source,
        offsets: info,
        locals: Vec::new(),
        observed: Vec::new(),
    };
    let (node, ty) = c.expr(&expr).map_err(|e| vec![e])?;
    if let Some(want) = want
        && ty != want
        && !(want == Ty::String && ty == Ty::String)
    {
        return Err(vec![CompileError {
            offset: c.offset(&expr),
            message: format!("expected a {want} expression, found {ty}"),
            hint: (want == Ty::Bool)
                .then(|| "a condition must be true or false, e.g. `x > 3` or `has(x)`".to_string()),
        }]);
    }
    Ok(Compiled {
        node,
        ty,
        observed: c.observed,
    })
}

fn line_col_to_offset(source: &str, line: isize, col: isize) -> usize {
    let mut offset = 0;
    for (i, l) in source.split_inclusive('\n').enumerate() {
        if i as isize + 1 == line {
            return offset + (col.max(0) as usize).min(l.len());
        }
        offset += l.len();
    }
    offset.min(source.len())
}

/// Levenshtein distance, for "did you mean" hints.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

fn suggest<'n>(name: &str, candidates: impl IntoIterator<Item = &'n str>) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (distance(name, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| format!("did you mean `{c}`?"))
}

fn err<T>(offset: usize, message: impl Into<String>, hint: Option<String>) -> R<T> {
    Err(CompileError {
        offset,
        message: message.into(),
        hint,
    })
}

/// The name of a select chain `a.b.c`, if it is one.
fn path_of(e: &IdedExpr) -> Option<String> {
    match &e.expr {
        Expr::Ident(n) => Some(n.clone()),
        Expr::Select(s) if !s.test => Some(format!("{}.{}", path_of(&s.operand)?, s.field)),
        _ => None,
    }
}

fn call_of(x: &IdedExpr) -> Option<(&str, &Vec<IdedExpr>)> {
    match &x.expr {
        Expr::Call(call) => Some((call.func_name.as_str(), &call.args)),
        _ => None,
    }
}

fn is_numeric(t: Ty) -> bool {
    matches!(t, Ty::Int | Ty::Float)
}

impl Compiler<'_> {
    fn offset(&self, e: &IdedExpr) -> usize {
        let start = self.offsets.offset_for(e.id).map_or(0, |(s, _)| s as usize);
        // Selections are positioned at their dot: point at the field name instead.
        match &e.expr {
            Expr::Select(_) if self.source.as_bytes().get(start) == Some(&b'.') => start + 1,
            _ => start,
        }
    }

    fn expr(&mut self, e: &IdedExpr) -> R<(Node, Ty)> {
        match &e.expr {
            Expr::Literal(l) => self.literal(e, l),
            Expr::Ident(_) | Expr::Select(_) => self.select(e),
            Expr::Call(call) => self.call(e, call),
            Expr::List(list) => {
                let mut items = Vec::new();
                for item in &list.elements {
                    match self.expr(item)? {
                        (Node::Lit(Lit::Str(s)), _) => items.push(s),
                        _ => {
                            return err(
                                self.offset(item),
                                "list literals may only hold string constants",
                                Some("write [\"a\", \"b\"], or declare a named list".into()),
                            );
                        }
                    }
                }
                Ok((Node::Lit(Lit::List(items.into())), Ty::List))
            }
            Expr::Comprehension(c) => self.comprehension(e, c),
            Expr::Map(_) | Expr::Struct(_) => err(
                self.offset(e),
                "map and message literals are not supported in rules",
                None,
            ),
            Expr::Unspecified => err(self.offset(e), "empty expression", None),
        }
    }

    fn literal(&mut self, e: &IdedExpr, l: &LiteralValue) -> R<(Node, Ty)> {
        let lit = match l {
            LiteralValue::Boolean(b) => Lit::Bool(*b.inner()),
            LiteralValue::Int(i) => Lit::Int(*i.inner()),
            LiteralValue::UInt(u) => {
                Lit::Int(i64::try_from(*u.inner()).map_err(|_| CompileError {
                    offset: self.offset(e),
                    message: "unsigned literal too large".into(),
                    hint: None,
                })?)
            }
            LiteralValue::Double(d) => Lit::Float(*d.inner()),
            LiteralValue::String(s) => Lit::Str(s.inner().into()),
            LiteralValue::Bytes(_) => {
                return err(self.offset(e), "bytes literals are not supported", None);
            }
            LiteralValue::Null => {
                return err(
                    self.offset(e),
                    "`null` is not a value in rules",
                    Some("test for absent data with `has(field)`".into()),
                );
            }
        };
        let ty = lit.ty();
        Ok((Node::Lit(lit), ty))
    }

    /// Identifiers and field selections: variables, constants, fields, counters, lists.
    fn select(&mut self, e: &IdedExpr) -> R<(Node, Ty)> {
        if let Expr::Select(s) = &e.expr
            && s.test
        {
            // has(x.y)
            let path = format!(
                "{}.{}",
                path_of(&s.operand).ok_or_else(|| CompileError {
                    offset: self.offset(e),
                    message: "has() needs a field path such as `record.post.reply`".into(),
                    hint: None,
                })?,
                s.field
            );
            return match vocab::field(&path) {
                Some(f) if f.optional => Ok((Node::Has(f.read), Ty::Bool)),
                Some(_) => err(
                    self.offset(e),
                    format!("`{path}` is always present, so has() is always true"),
                    Some("remove the has() test".into()),
                ),
                None => self.unknown_field(e, &path),
            };
        }
        let Some(path) = path_of(e) else {
            // A selection on a computed value, e.g. `(a).b`.
            return err(
                self.offset(e),
                "fields can only be selected from vocabulary names",
                None,
            );
        };
        let mut parts = path.splitn(3, '.');
        let root = parts.next().unwrap_or("");
        if let Some(slot) = self.locals.iter().rposition(|l| l == root) {
            if path.contains('.') {
                return err(
                    self.offset(e),
                    format!("`{root}` is a string: it has no fields"),
                    None,
                );
            }
            return Ok((Node::Local(slot as u8), Ty::String));
        }
        if let Some(lit) = self.scope.constants.get(root) {
            if path.contains('.') {
                return err(
                    self.offset(e),
                    format!("constant `{root}` has no fields"),
                    None,
                );
            }
            return Ok((Node::Lit(lit.clone()), lit.ty()));
        }
        match root {
            "counters" => self.counter(e, parts.next(), parts.next()),
            "lists" => {
                let name = parts.next();
                let Some(name) = name else {
                    return err(self.offset(e), "name a list: `lists.NAME`", None);
                };
                if parts.next().is_some() {
                    return err(self.offset(e), "a list has no fields", None);
                }
                match self.scope.lists.iter().position(|l| l == name) {
                    Some(i) => Ok((Node::Lit(Lit::Int(i as i64)), Ty::NamedList)),
                    None => err(
                        self.offset(e),
                        format!("unknown list `{name}`"),
                        suggest(name, self.scope.lists.iter().map(String::as_str))
                            .or_else(|| Some("declare it in a [[list]] table".into())),
                    ),
                }
            }
            _ => match vocab::field(&path) {
                Some(f) => {
                    let node = Node::Field(f.read);
                    if f.ty != Ty::Object {
                        self.observed.push((path.clone(), node.clone()));
                    }
                    Ok((node, f.ty))
                }
                None => self.unknown_field(e, &path),
            },
        }
    }

    fn unknown_field<T>(&self, e: &IdedExpr, path: &str) -> R<T> {
        let (parent, last) = path.rsplit_once('.').unwrap_or(("", path));
        let hint = if parent.is_empty() {
            let roots = vocab::ROOTS.iter().map(|(r, _)| *r);
            let constants = self.scope.constants.keys().map(String::as_str);
            suggest(last, roots.chain(constants)).or_else(|| {
                Some(
                    "names start with event, record, account, text, counters or lists, \
                     or are declared constants"
                        .into(),
                )
            })
        } else {
            let siblings: Vec<&str> = vocab::children(parent)
                .map(|f| f.path.rsplit('.').next().unwrap_or(""))
                .collect();
            suggest(last, siblings.iter().copied()).or_else(|| {
                (!siblings.is_empty()).then(|| format!("`{parent}` has: {}", siblings.join(", ")))
            })
        };
        err(self.offset(e), format!("unknown field `{path}`"), hint)
    }

    fn counter(&mut self, e: &IdedExpr, name: Option<&str>, window: Option<&str>) -> R<(Node, Ty)> {
        self.counter_read(e, name, window, None)
    }

    /// A counter read, for this event's key or for an explicit `key`.
    fn counter_read(
        &mut self,
        e: &IdedExpr,
        name: Option<&str>,
        window: Option<&str>,
        key: Option<&IdedExpr>,
    ) -> R<(Node, Ty)> {
        if !self.scope.counters_allowed {
            return err(
                self.offset(e),
                "counters cannot be read here",
                Some("counter keys and conditions are computed before counters are updated".into()),
            );
        }
        let Some(name) = name else {
            return err(
                self.offset(e),
                "name a counter: `counters.NAME.WINDOW`",
                None,
            );
        };
        let Some(index) = self.scope.counters.iter().position(|c| c.name == name) else {
            return err(
                self.offset(e),
                format!("unknown counter `{name}`"),
                suggest(name, self.scope.counters.iter().map(|c| c.name.as_str()))
                    .or_else(|| Some("declare it in a [[counter]] table".into())),
            );
        };
        let sig = &self.scope.counters[index];
        let declared = || {
            sig.windows
                .iter()
                .map(|w| w.name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let Some(window) = window else {
            return err(
                self.offset(e),
                format!("read a window of counter `{name}`"),
                Some(format!(
                    "write `counters.{name}.WINDOW` with one of: {}",
                    declared()
                )),
            );
        };
        match Window::parse(window) {
            Some(w) if sig.windows.contains(&w) => {
                let list_key = sig.list_key;
                let node = match key {
                    Some(k) => Node::CounterAt {
                        counter: index,
                        window: w,
                        key: Box::new(self.want(k, Ty::String, "a counter key")?),
                    },
                    None if list_key => {
                        return err(
                            self.offset(e),
                            format!("counter `{name}` has one key per list item"),
                            Some(format!(
                                "read it for one key: `counters.{name}.{window}(key)`"
                            )),
                        );
                    }
                    None => {
                        let node = Node::Counter {
                            counter: index,
                            window: w,
                        };
                        self.observed
                            .push((format!("counters.{name}.{window}"), node.clone()));
                        node
                    }
                };
                Ok((node, Ty::Int))
            }
            _ => err(
                self.offset(e),
                format!("counter `{name}` has no window `{window}`"),
                Some(format!("declared windows: {}", declared())),
            ),
        }
    }

    fn want(&mut self, e: &IdedExpr, ty: Ty, what: &str) -> R<Node> {
        let (node, got) = self.expr(e)?;
        if got == ty || (ty == Ty::Float && got == Ty::Int) {
            Ok(node)
        } else {
            err(
                self.offset(e),
                format!("{what} must be a {ty}, found {got}"),
                None,
            )
        }
    }

    fn const_str(&mut self, e: &IdedExpr, what: &str) -> R<Box<str>> {
        match self.expr(e)? {
            (Node::Lit(Lit::Str(s)), _) => Ok(s),
            _ => err(
                self.offset(e),
                format!("{what} must be a string literal or a string constant"),
                None,
            ),
        }
    }

    fn named_list(&mut self, e: &IdedExpr) -> R<usize> {
        match self.expr(e)? {
            (Node::Lit(Lit::Int(i)), Ty::NamedList) => Ok(i as usize),
            (_, got) => err(
                self.offset(e),
                format!("expected a named list (`lists.NAME`), found {got}"),
                None,
            ),
        }
    }

    fn call(&mut self, e: &IdedExpr, call: &cel::common::ast::CallExpr) -> R<(Node, Ty)> {
        use cel::common::ast::operators as op;
        let name = call.func_name.as_str();
        let args = &call.args;
        let target = call.target.as_deref();
        let bin = |c: &mut Self| -> R<((Node, Ty), (Node, Ty))> {
            Ok((c.expr(&args[0])?, c.expr(&args[1])?))
        };
        match (name, target, args.len()) {
            (op::LOGICAL_AND | op::LOGICAL_OR, None, 2) => {
                let a = self.want(&args[0], Ty::Bool, "each side of && and ||")?;
                let b = self.want(&args[1], Ty::Bool, "each side of && and ||")?;
                let pair = Box::new([a, b]);
                Ok((
                    if name == op::LOGICAL_AND {
                        Node::And(pair)
                    } else {
                        Node::Or(pair)
                    },
                    Ty::Bool,
                ))
            }
            (op::LOGICAL_NOT, None, 1) => {
                let a = self.want(&args[0], Ty::Bool, "the operand of !")?;
                Ok((Node::Not(Box::new(a)), Ty::Bool))
            }
            (op::CONDITIONAL, None, 3) => {
                let c = self.want(&args[0], Ty::Bool, "a ?: condition")?;
                let (a, ta) = self.expr(&args[1])?;
                let (b, tb) = self.expr(&args[2])?;
                if ta != tb {
                    return err(
                        self.offset(e),
                        format!("both branches of ?: must have one type, found {ta} and {tb}"),
                        None,
                    );
                }
                Ok((Node::Cond(Box::new([c, a, b])), ta))
            }
            (
                op::EQUALS
                | op::NOT_EQUALS
                | op::LESS
                | op::LESS_EQUALS
                | op::GREATER
                | op::GREATER_EQUALS,
                None,
                2,
            ) => {
                let ((a, ta), (b, tb)) = bin(self)?;
                let cmp = match name {
                    op::EQUALS => Cmp::Eq,
                    op::NOT_EQUALS => Cmp::Ne,
                    op::LESS => Cmp::Lt,
                    op::LESS_EQUALS => Cmp::Le,
                    op::GREATER => Cmp::Gt,
                    _ => Cmp::Ge,
                };
                let same = ta == tb || (is_numeric(ta) && is_numeric(tb));
                let ordered = matches!(
                    ta,
                    Ty::Int | Ty::Float | Ty::String | Ty::Timestamp | Ty::Duration
                );
                let equatable = ordered || ta == Ty::Bool;
                if !same || !(ordered || (equatable && matches!(cmp, Cmp::Eq | Cmp::Ne))) {
                    let hint = match (ta, tb) {
                        (Ty::Duration, Ty::String) | (Ty::String, Ty::Duration) => {
                            Some("write durations as `duration(\"7d\")`".to_string())
                        }
                        (Ty::Duration, Ty::Int | Ty::Float)
                        | (Ty::Int | Ty::Float, Ty::Duration) => {
                            Some("durations compare with durations: `duration(\"7d\")`".to_string())
                        }
                        (Ty::Timestamp, Ty::String) | (Ty::String, Ty::Timestamp) => {
                            Some("write times as `timestamp(\"2024-01-01T00:00:00Z\")`".to_string())
                        }
                        _ => None,
                    };
                    return err(
                        self.offset(e),
                        format!("cannot compare {ta} with {tb}"),
                        hint,
                    );
                }
                Ok((Node::Cmp(cmp, Box::new([a, b])), Ty::Bool))
            }
            (op::ADD | op::SUBSTRACT | op::MULTIPLY | op::DIVIDE | op::MODULO, None, 2) => {
                let ((a, ta), (b, tb)) = bin(self)?;
                let arith = match name {
                    op::ADD => Arith::Add,
                    op::SUBSTRACT => Arith::Sub,
                    op::MULTIPLY => Arith::Mul,
                    op::DIVIDE => Arith::Div,
                    _ => Arith::Rem,
                };
                let ty = match (arith, ta, tb) {
                    (_, Ty::Int, Ty::Int) => Some(Ty::Int),
                    (Arith::Rem, _, _) => None,
                    (_, Ty::Int | Ty::Float, Ty::Int | Ty::Float) => Some(Ty::Float),
                    (Arith::Add, Ty::String, Ty::String) => Some(Ty::String),
                    (Arith::Sub, Ty::Timestamp, Ty::Timestamp) => Some(Ty::Duration),
                    (Arith::Add | Arith::Sub, Ty::Timestamp, Ty::Duration) => Some(Ty::Timestamp),
                    (Arith::Add, Ty::Duration, Ty::Timestamp) => Some(Ty::Timestamp),
                    (Arith::Add | Arith::Sub, Ty::Duration, Ty::Duration) => Some(Ty::Duration),
                    (Arith::Mul | Arith::Div, Ty::Duration, Ty::Int) => Some(Ty::Duration),
                    _ => None,
                };
                match ty {
                    Some(ty) => Ok((Node::Arith(arith, Box::new([a, b])), ty)),
                    None => err(
                        self.offset(e),
                        format!(
                            "no operator `{}` for {ta} and {tb}",
                            &name[1..name.len() - 1]
                        ),
                        (ta == Ty::String || tb == Ty::String)
                            .then(|| "convert with string(x) to join text and numbers".to_string()),
                    ),
                }
            }
            (op::NEGATE, None, 1) => {
                let (a, ta) = self.expr(&args[0])?;
                if !matches!(ta, Ty::Int | Ty::Float | Ty::Duration) {
                    return err(self.offset(e), format!("cannot negate a {ta}"), None);
                }
                Ok((Node::Neg(Box::new(a)), ta))
            }
            (op::IN, None, 2) => {
                let needle = self.want(&args[0], Ty::String, "the left side of `in`")?;
                let (hay, th) = self.expr(&args[1])?;
                match (hay, th) {
                    (Node::Lit(Lit::Int(i)), Ty::NamedList) => {
                        Ok((Node::InNamed(Box::new(needle), i as usize), Ty::Bool))
                    }
                    (hay, Ty::List) => Ok((Node::In(Box::new([needle, hay])), Ty::Bool)),
                    (_, th) => err(
                        self.offset(&args[1]),
                        format!("the right side of `in` must be a list, found {th}"),
                        None,
                    ),
                }
            }
            (op::INDEX, None, 2) => err(
                self.offset(e),
                "indexing is not supported",
                Some("use exists()/all() over lists".into()),
            ),
            ("duration", None, 1) => {
                let s = self.const_str(&args[0], "the argument of duration()")?;
                match parse_duration(&s) {
                    Ok(d) => Ok((Node::Lit(Lit::Dur(d)), Ty::Duration)),
                    Err(m) => err(self.offset(&args[0]), m, None),
                }
            }
            ("timestamp", None, 1) => {
                let s = self.const_str(&args[0], "the argument of timestamp()")?;
                match skywarden_atproto::syntax::Datetime::new(&s) {
                    Ok(t) => Ok((Node::Lit(Lit::Time(t.timestamp_micros())), Ty::Timestamp)),
                    Err(m) => err(
                        self.offset(&args[0]),
                        format!("invalid timestamp: {m}"),
                        None,
                    ),
                }
            }
            ("matches", t, n) if n == if t.is_some() { 1 } else { 2 } => {
                let (subject, pattern) = match t {
                    Some(t) => (t, &args[0]),
                    None => (&args[0], &args[1]),
                };
                let s = self.want(subject, Ty::String, "the text matched")?;
                let p = self.const_str(pattern, "a regex")?;
                if let Err(m) = regex::Regex::new(&p) {
                    // The regex crate's message spans lines (pattern, caret, reason): keep the reason.
                    let m = m.to_string();
                    let reason = m.lines().last().unwrap_or("").trim_start_matches("error: ");
                    return err(
                        self.offset(pattern),
                        format!("invalid regex: {reason}"),
                        None,
                    );
                }
                let id = self.regexes.intern(&p);
                Ok((Node::Regex(Box::new(s), id), Ty::Bool))
            }
            ("has_keyword" | "contains_keyword", Some(t), 1) => {
                let s = self.want(t, Ty::String, "the text searched")?;
                let list = self.named_list(&args[0])?;
                Ok((
                    Node::Keyword {
                        arg: Box::new(s),
                        list,
                        whole: name == "has_keyword",
                    },
                    Ty::Bool,
                ))
            }
            ("domain_in", Some(t), 1) => {
                let s = self.want(t, Ty::String, "the URL or host")?;
                let list = self.named_list(&args[0])?;
                Ok((Node::DomainIn(Box::new(s), list), Ty::Bool))
            }
            (_, Some(t), 1)
                if path_of(t)
                    .is_some_and(|p| p.starts_with("counters.") && p.matches('.').count() == 1) =>
            {
                let path = path_of(t).unwrap_or_default();
                self.counter_read(
                    e,
                    path.strip_prefix("counters."),
                    Some(name),
                    Some(&args[0]),
                )
            }
            ("get", Some(t), 1) if path_of(t).as_deref() == Some("record") => {
                let path = self.const_str(&args[0], "the field path of record.get()")?;
                if path.is_empty() || path.split('.').any(str::is_empty) {
                    return err(
                        self.offset(&args[0]),
                        format!("`{path}` is not a field path"),
                        Some("write a dotted path such as \"embed.external.uri\"".into()),
                    );
                }
                let source = format!("record.get({path:?})");
                let node = Node::Call(Builtin::RecordGet, Box::new([Node::Lit(Lit::Str(path))]));
                self.observed.push((source, node.clone()));
                Ok((node, Ty::String))
            }
            ("orValue", Some(t), 1) => {
                let (value, ty) = self.expr(t)?;
                if matches!(ty, Ty::Object | Ty::NamedList) {
                    return err(
                        self.offset(t),
                        format!("a {ty} has no value to default"),
                        None,
                    );
                }
                let (default, dty) = self.expr(&args[0])?;
                if dty != ty && !(is_numeric(ty) && is_numeric(dty)) {
                    return err(
                        self.offset(&args[0]),
                        format!("the default of orValue() must be a {ty}, found {dty}"),
                        None,
                    );
                }
                Ok((Node::OrValue(Box::new([value, default])), ty))
            }
            ("followed_by", Some(t), 1) if path_of(t).as_deref() == Some("account") => {
                let did = self.want(&args[0], Ty::String, "the DID")?;
                Ok((Node::Call(Builtin::FollowedBy, Box::new([did])), Ty::Bool))
            }
            _ => self.builtin(e, name, target, args),
        }
    }

    fn builtin(
        &mut self,
        e: &IdedExpr,
        name: &str,
        target: Option<&IdedExpr>,
        args: &[IdedExpr],
    ) -> R<(Node, Ty)> {
        // Methods and functions are the same: `s.size()` is `size(s)`.
        let all: Vec<&IdedExpr> = target.into_iter().chain(args.iter()).collect();
        let sig: Option<(Builtin, &[Ty], Ty)> = match name {
            "size" => Some((Builtin::Size, &[Ty::String], Ty::Int)),
            "contains" => Some((Builtin::Contains, &[Ty::String, Ty::String], Ty::Bool)),
            "startsWith" => Some((Builtin::StartsWith, &[Ty::String, Ty::String], Ty::Bool)),
            "endsWith" => Some((Builtin::EndsWith, &[Ty::String, Ty::String], Ty::Bool)),
            "lower" | "lowerAscii" => Some((Builtin::Lower, &[Ty::String], Ty::String)),
            "trim" => Some((Builtin::Trim, &[Ty::String], Ty::String)),
            "normalize" => Some((Builtin::Normalize, &[Ty::String], Ty::String)),
            "tokens" => Some((Builtin::Tokens, &[Ty::String], Ty::List)),
            "host" => Some((Builtin::Host, &[Ty::String], Ty::String)),
            "domain" => Some((Builtin::Domain, &[Ty::String], Ty::String)),
            "did" => Some((Builtin::Did, &[Ty::String], Ty::String)),
            "split" => Some((Builtin::Split, &[Ty::String, Ty::String], Ty::List)),
            "hamming" => Some((Builtin::Hamming, &[Ty::Int, Ty::Int], Ty::Int)),
            "int" => Some((Builtin::ToInt, &[], Ty::Int)),
            "double" => Some((Builtin::ToFloat, &[], Ty::Float)),
            "string" => Some((Builtin::ToString, &[], Ty::String)),
            _ => None,
        };
        let Some((builtin, params, ret)) = sig else {
            const KNOWN: &[&str] = &[
                "size",
                "contains",
                "startsWith",
                "endsWith",
                "lower",
                "normalize",
                "tokens",
                "host",
                "domain",
                "did",
                "split",
                "trim",
                "get",
                "orValue",
                "hamming",
                "int",
                "double",
                "string",
                "matches",
                "has_keyword",
                "contains_keyword",
                "domain_in",
                "duration",
                "timestamp",
                "exists",
                "all",
                "exists_one",
                "filter",
                "map",
                "has",
                "followed_by",
            ];
            return err(
                self.offset(e),
                format!("unknown function `{name}`"),
                suggest(name, KNOWN.iter().copied())
                    .or_else(|| Some("see the function list in docs/rules/reference.md".into())),
            );
        };
        // Conversions take any scalar.
        if params.is_empty() {
            if all.len() != 1 {
                return err(self.offset(e), format!("{name}() takes one argument"), None);
            }
            let (a, ta) = self.expr(all[0])?;
            let ok = match builtin {
                Builtin::ToInt => matches!(
                    ta,
                    Ty::Int | Ty::Float | Ty::String | Ty::Timestamp | Ty::Duration
                ),
                Builtin::ToFloat => matches!(ta, Ty::Int | Ty::Float | Ty::String),
                _ => matches!(
                    ta,
                    Ty::Int | Ty::Float | Ty::String | Ty::Bool | Ty::Timestamp | Ty::Duration
                ),
            };
            if !ok {
                return err(
                    self.offset(all[0]),
                    format!("{name}() cannot convert a {ta}"),
                    None,
                );
            }
            return Ok((Node::Call(builtin, Box::new([a])), ret));
        }
        if all.len() != params.len() {
            return err(
                self.offset(e),
                format!(
                    "{name}() takes {} argument{} (counting the value it is called on), found {}",
                    params.len(),
                    if params.len() == 1 { "" } else { "s" },
                    all.len()
                ),
                None,
            );
        }
        let mut nodes = Vec::new();
        for (arg, want) in all.iter().zip(params) {
            if builtin == Builtin::Size {
                let (n, t) = self.expr(arg)?;
                if !matches!(t, Ty::String | Ty::List) {
                    return err(
                        self.offset(arg),
                        format!("size() needs a string or list, found {t}"),
                        None,
                    );
                }
                nodes.push(n);
            } else {
                nodes.push(self.want(arg, *want, &format!("the argument of {name}()"))?);
            }
        }
        if builtin == Builtin::Contains
            && let Some(Node::Lit(Lit::Str(text))) = nodes.get(1)
        {
            let finder = memchr::memmem::Finder::new(text.as_bytes()).into_owned();
            let s = nodes.swap_remove(0);
            return Ok((Node::ContainsText(Box::new(s), Box::new(finder)), ret));
        }
        Ok((Node::Call(builtin, nodes.into()), ret))
    }

    fn comprehension(
        &mut self,
        e: &IdedExpr,
        c: &cel::common::ast::ComprehensionExpr,
    ) -> R<(Node, Ty)> {
        use cel::common::ast::operators as op;
        let range = self.want(&c.iter_range, Ty::List, "the list iterated")?;
        if self.locals.len() >= MAX_NESTING {
            return err(self.offset(e), "comprehensions nested too deeply", None);
        }
        if c.iter_var2.is_some() {
            return err(
                self.offset(e),
                "two-variable comprehensions are not supported",
                None,
            );
        }
        let is_accu = |x: &IdedExpr| matches!(&x.expr, Expr::Ident(n) if *n == c.accu_var);
        // Recognise the macro from the shape of its expansion.
        let (kind, body): (Loop, &IdedExpr) = match (call_of(&c.loop_step), &c.accu_init.expr) {
            (Some((op::LOGICAL_OR, a)), Expr::Literal(LiteralValue::Boolean(_)))
                if is_accu(&a[0]) =>
            {
                (Loop::Exists, &a[1])
            }
            (Some((op::LOGICAL_AND, a)), Expr::Literal(LiteralValue::Boolean(_)))
                if is_accu(&a[0]) =>
            {
                (Loop::All, &a[1])
            }
            (Some((op::CONDITIONAL, a)), Expr::Literal(LiteralValue::Int(_))) => {
                (Loop::ExistsOne, &a[0])
            }
            (Some((op::CONDITIONAL, a)), Expr::List(_)) => {
                // `filter` appends the item itself; the three-argument `map(x, p, f)` appends a
                // transform of it, which is not supported (and must not run as a filter).
                let appends_item = matches!(call_of(&a[1]), Some((op::ADD, parts))
                    if matches!(&parts[1].expr, Expr::List(l) if l.elements.len() == 1
                        && matches!(&l.elements[0].expr, Expr::Ident(n) if *n == c.iter_var)));
                if !appends_item {
                    return err(
                        self.offset(e),
                        "map() with a filter is not supported",
                        Some("write l.filter(x, p).map(x, f)".into()),
                    );
                }
                (Loop::Filter, &a[0])
            }
            (Some((op::ADD, a)), Expr::List(_)) => match &a[1].expr {
                Expr::List(l) if l.elements.len() == 1 => (Loop::Map, &l.elements[0]),
                _ => return err(self.offset(e), "unsupported comprehension", None),
            },
            _ => return err(self.offset(e), "unsupported comprehension", None),
        };
        self.locals.push(c.iter_var.clone());
        let slot = (self.locals.len() - 1) as u8;
        let compiled = if kind == Loop::Map {
            self.want(body, Ty::String, "the map() transform")
        } else {
            self.want(body, Ty::Bool, "the predicate")
        };
        self.locals.pop();
        let body = compiled?;
        let ty = match kind {
            Loop::Filter | Loop::Map => Ty::List,
            _ => Ty::Bool,
        };
        Ok((
            Node::Loop {
                kind,
                range: Box::new(range),
                slot,
                body: Box::new(body),
            },
            ty,
        ))
    }
}

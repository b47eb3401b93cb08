//! Types and values of the rule language.
//!
//! Every expression has a static [`Ty`] known at load time, and evaluates to a [`Val`] that
//! borrows from the event or from the per-evaluation arena: evaluation never allocates on the
//! global heap for values.

use std::fmt;

/// The static type of an expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// `true` / `false`.
    Bool,
    /// 64-bit signed integer.
    Int,
    /// 64-bit float.
    Float,
    /// UTF-8 text.
    String,
    /// A point in time (microsecond precision, UTC).
    Timestamp,
    /// A length of time (microsecond precision).
    Duration,
    /// A list of strings.
    List,
    /// A named list declared in the ruleset (`lists.NAME`): only usable with `in` and the
    /// list-matching methods.
    NamedList,
    /// A group of fields (`record.post`, `record.post.reply`): only usable to select a field or
    /// with `has()`.
    Object,
}

impl Ty {
    /// The name used in error messages and the reference page.
    pub fn name(self) -> &'static str {
        match self {
            Ty::Bool => "bool",
            Ty::Int => "int",
            Ty::Float => "double",
            Ty::String => "string",
            Ty::Timestamp => "timestamp",
            Ty::Duration => "duration",
            Ty::List => "list(string)",
            Ty::NamedList => "named list",
            Ty::Object => "object",
        }
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A value during evaluation.
///
/// `Missing` is the value of optional data that is not there (no reply, account age not known)
/// and of anything computed from it: see the reference page for the three-valued logic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Val<'a> {
    /// Absent optional data, or a computation on it.
    Missing,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(&'a str),
    /// A timestamp in microseconds since the Unix epoch.
    Time(i64),
    /// A duration in microseconds.
    Dur(i64),
    /// A list of strings.
    List(&'a [&'a str]),
}

impl<'a> Val<'a> {
    /// The value as a string, or `None`.
    pub fn as_str(&self) -> Option<&'a str> {
        match self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }

    /// `Some(b)` for a boolean, `None` otherwise (including missing).
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Val::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// Whether this is `Missing`.
    pub fn is_missing(&self) -> bool {
        matches!(self, Val::Missing)
    }

    /// Builds a string value from an optional string.
    pub fn opt_str(s: Option<&'a str>) -> Val<'a> {
        s.map_or(Val::Missing, Val::Str)
    }

    /// Builds an int value from an optional int.
    pub fn opt_int(i: Option<i64>) -> Val<'a> {
        i.map_or(Val::Missing, Val::Int)
    }
}

/// A value that owns its data: what [`crate::evaluator::evaluate_expression`] returns.
#[derive(Debug, Clone, PartialEq)]
pub enum Owned {
    /// Missing.
    Missing,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A timestamp (µs).
    Time(i64),
    /// A duration (µs).
    Dur(i64),
    /// A list of strings.
    List(Vec<String>),
}

impl Val<'_> {
    /// Copies the value out of the arena.
    pub fn to_owned_value(&self) -> Owned {
        match *self {
            Val::Missing => Owned::Missing,
            Val::Bool(b) => Owned::Bool(b),
            Val::Int(i) => Owned::Int(i),
            Val::Float(x) => Owned::Float(x),
            Val::Str(s) => Owned::Str(s.to_string()),
            Val::Time(t) => Owned::Time(t),
            Val::Dur(d) => Owned::Dur(d),
            Val::List(l) => Owned::List(l.iter().map(|s| s.to_string()).collect()),
        }
    }
}

impl fmt::Display for Val<'_> {
    /// The value as an analyst reads it in explanations and comments.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Val::Missing => f.write_str("missing"),
            Val::Bool(b) => write!(f, "{b}"),
            Val::Int(i) => write!(f, "{i}"),
            Val::Float(x) => write!(f, "{x}"),
            Val::Str(s) => f.write_str(s),
            Val::Time(t) => match skywarden_atproto::syntax::Datetime::from_timestamp_micros(*t) {
                Ok(dt) => write!(f, "{}", dt.as_str()),
                Err(_) => write!(f, "{t}µs"),
            },
            Val::Dur(d) => f.write_str(&format_duration(*d)),
            Val::List(items) => {
                f.write_str("[")?;
                for (i, s) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{s:?}")?;
                }
                f.write_str("]")
            }
        }
    }
}

const MICROS_PER: [(char, i64); 6] = [
    ('d', 86_400_000_000),
    ('h', 3_600_000_000),
    ('m', 60_000_000),
    ('s', 1_000_000),
    ('u', 1),
    ('n', 0),
];

/// Parses a duration: CEL's form (`1h30m`, `90s`, `1.5h`, `250ms`, `-5m`) extended with `d`
/// for days. Units: `d`, `h`, `m`, `s`, `ms`, `us`, `ns` (nanoseconds are truncated to
/// microseconds). Returns microseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    if rest == "0" {
        return Ok(0);
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("`{s}`: number without a unit (use d, h, m, s, ms, us, ns)"))?;
        if num_len == 0 {
            return Err(format!("`{s}`: expected a number before the unit"));
        }
        let number: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("`{s}`: `{}` is not a number", &rest[..num_len]))?;
        rest = &rest[num_len..];
        let (unit, len): (i64, usize) = if rest.starts_with("ms") {
            (1_000, 2)
        } else if rest.starts_with("us") || rest.starts_with("µs") {
            (
                1,
                if rest.starts_with("us") {
                    2
                } else {
                    "µs".len()
                },
            )
        } else if rest.starts_with("ns") {
            (0, 2)
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            match MICROS_PER
                .iter()
                .find(|(u, _)| *u == c && c != 'u' && c != 'n')
            {
                Some((_, m)) => (*m, 1),
                None => {
                    return Err(format!(
                        "`{s}`: unknown unit `{c}` (use d, h, m, s, ms, us, ns)"
                    ));
                }
            }
        };
        rest = &rest[len..];
        total += if unit == 0 {
            number / 1000.0
        } else {
            number * unit as f64
        };
    }
    if total > i64::MAX as f64 {
        return Err(format!("`{s}`: duration too large"));
    }
    let micros = total as i64;
    Ok(if neg { -micros } else { micros })
}

/// Formats microseconds as a compact duration (`1d2h`, `90s`, `250ms`).
pub fn format_duration(micros: i64) -> String {
    if micros == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = micros.unsigned_abs();
    if micros < 0 {
        out.push('-');
    }
    for (unit, per) in [
        ("d", 86_400_000_000u64),
        ("h", 3_600_000_000),
        ("m", 60_000_000),
        ("s", 1_000_000),
        ("ms", 1_000),
        ("us", 1),
    ] {
        if rest >= per {
            out.push_str(&format!("{}{unit}", rest / per));
            rest %= per;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_cel_units_and_days() {
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000_000));
        assert_eq!(parse_duration("7d"), Ok(7 * 86_400_000_000));
        assert_eq!(parse_duration("1.5h"), Ok(5_400_000_000));
        assert_eq!(parse_duration("250ms"), Ok(250_000));
        assert_eq!(parse_duration("-5m"), Ok(-300_000_000));
        assert_eq!(parse_duration("0"), Ok(0));
        assert!(parse_duration("5").unwrap_err().contains("without a unit"));
        assert!(
            parse_duration("5w")
                .unwrap_err()
                .contains("unknown unit `w`")
        );
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn durations_format_compactly() {
        assert_eq!(format_duration(5_400_000_000), "1h30m");
        assert_eq!(format_duration(7 * 86_400_000_000 + 1_000), "7d1ms");
        assert_eq!(format_duration(-300_000_000), "-5m");
    }
}

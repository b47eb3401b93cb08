//! Runs the atproto interop syntax vectors (`testdata/atproto-interop/syntax/*.txt`) against
//! `skywarden_atproto::syntax`.
//!
//! File format: one value per line; lines starting with `#` and empty lines are comments.
//! Everything else is a vector *verbatim*: leading and trailing spaces are part of the value
//! (several invalid vectors test exactly that), so lines are never trimmed.
//!
//! One test per file, so the pass counts show up in normal `cargo test` output and a missing
//! or empty file fails loudly instead of passing vacuously.

use std::fmt::Debug;
use std::str::FromStr;

use serde::Serialize;
use serde::de::DeserializeOwned;
use skywarden_atproto::syntax::{
    AtIdentifier, AtUri, Datetime, Did, Handle, Language, Nsid, RecordKey, SyntaxError, Tid,
    validate_cid_str, validate_datetime, validate_datetime_syntax, validate_language,
    validate_language_syntax, validate_uri,
};

const SYNTAX_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/atproto-interop/syntax"
);

/// The vectors of one file, comments and blank lines removed, values untouched.
fn load(file: &str) -> Vec<String> {
    let path = format!("{SYNTAX_DIR}/{file}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    text.split('\n')
        // Tolerate CRLF checkouts; a '\r' is never part of a vector.
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// Shortens a vector for failure messages (some are 8 KB long).
fn show(v: &str) -> String {
    match v.char_indices().nth(80) {
        Some((cut, _)) => format!("{:?}… ({} bytes)", &v[..cut], v.len()),
        None => format!("{v:?}"),
    }
}

/// Applies `check` to every vector of `file`, collecting all failures into one assertion, and
/// reports the count. `check` returns `Err(why)` when the vector does not behave as expected.
fn run(file: &str, check: impl Fn(&str) -> Result<(), String>) {
    let vectors = load(file);
    assert!(!vectors.is_empty(), "syntax/{file}: no vectors found");
    let failures: Vec<String> = vectors
        .iter()
        .filter_map(|v| check(v).err().map(|why| format!("  {}: {why}", show(v))))
        .collect();
    assert!(
        failures.is_empty(),
        "syntax/{file}: {} of {} vectors failed:\n{}",
        failures.len(),
        vectors.len(),
        failures.join("\n")
    );
    println!("syntax/{file}: {} vectors passed", vectors.len());
}

/// Expects `v` to parse as `T` via every entry point, round-trip through `Display` and JSON,
/// and keep its exact spelling.
fn expect_valid<T>(v: &str) -> Result<(), String>
where
    T: FromStr<Err = SyntaxError>
        + for<'a> TryFrom<&'a str, Error = SyntaxError>
        + TryFrom<String, Error = SyntaxError>
        + AsRef<str>
        + ToString
        + Serialize
        + DeserializeOwned
        + PartialEq
        + Debug,
{
    let parsed = T::from_str(v).map_err(|e| format!("rejected: {e}"))?;
    if parsed.as_ref() != v || parsed.to_string() != v {
        return Err(format!("spelling changed to {:?}", parsed.as_ref()));
    }
    let owned = T::try_from(v.to_owned()).map_err(|e| format!("TryFrom<String>: {e}"))?;
    let borrowed = T::try_from(v).map_err(|e| format!("TryFrom<&str>: {e}"))?;
    if owned != parsed || borrowed != parsed {
        return Err("constructors disagree".into());
    }
    let json = serde_json::to_string(&parsed).map_err(|e| format!("serialize: {e}"))?;
    let back: T = serde_json::from_str(&json).map_err(|e| format!("deserialize: {e}"))?;
    if back != parsed {
        return Err("JSON round trip changed the value".into());
    }
    Ok(())
}

/// Expects `v` to be rejected by `T`'s parser and by its serde deserializer.
fn expect_invalid<T>(v: &str) -> Result<(), String>
where
    T: FromStr<Err = SyntaxError> + DeserializeOwned + Debug,
{
    match T::from_str(v) {
        Ok(t) => return Err(format!("accepted as {t:?}")),
        Err(e) if e.to_string().is_empty() => return Err("empty error message".into()),
        Err(_) => {}
    }
    let json = serde_json::to_string(v).map_err(|e| e.to_string())?;
    if let Ok(t) = serde_json::from_str::<T>(&json) {
        return Err(format!("deserialized as {t:?}"));
    }
    Ok(())
}

/// Adapts a plain validation function to the `check` signature.
fn accepts(f: fn(&str) -> Result<(), SyntaxError>) -> impl Fn(&str) -> Result<(), String> {
    move |v| f(v).map_err(|e| format!("rejected: {e}"))
}

/// Adapts a plain validation function to expect rejection.
fn rejects(f: fn(&str) -> Result<(), SyntaxError>) -> impl Fn(&str) -> Result<(), String> {
    move |v| match f(v) {
        Ok(()) => Err("accepted".into()),
        Err(_) => Ok(()),
    }
}

macro_rules! typed_vectors {
    ($valid:ident, $invalid:ident, $ty:ty, $stem:literal) => {
        #[test]
        fn $valid() {
            run(concat!($stem, "_syntax_valid.txt"), expect_valid::<$ty>);
        }

        #[test]
        fn $invalid() {
            run(concat!($stem, "_syntax_invalid.txt"), expect_invalid::<$ty>);
        }
    };
}

typed_vectors!(
    atidentifier_valid,
    atidentifier_invalid,
    AtIdentifier,
    "atidentifier"
);
typed_vectors!(aturi_valid, aturi_invalid, AtUri, "aturi");
typed_vectors!(did_valid, did_invalid, Did, "did");
typed_vectors!(handle_valid, handle_invalid, Handle, "handle");
typed_vectors!(nsid_valid, nsid_invalid, Nsid, "nsid");
typed_vectors!(recordkey_valid, recordkey_invalid, RecordKey, "recordkey");
typed_vectors!(tid_valid, tid_invalid, Tid, "tid");

#[test]
fn cid_valid() {
    run("cid_syntax_valid.txt", accepts(validate_cid_str));
}

#[test]
fn cid_invalid() {
    run("cid_syntax_invalid.txt", rejects(validate_cid_str));
}

#[test]
fn uri_valid() {
    run("uri_syntax_valid.txt", accepts(validate_uri));
}

#[test]
fn uri_invalid() {
    run("uri_syntax_invalid.txt", rejects(validate_uri));
}

#[test]
fn datetime_valid() {
    run("datetime_syntax_valid.txt", |v| {
        validate_datetime_syntax(v).map_err(|e| format!("syntax check rejected: {e}"))?;
        expect_valid::<Datetime>(v)
    });
}

#[test]
fn datetime_invalid() {
    run("datetime_syntax_invalid.txt", |v| {
        rejects(validate_datetime_syntax)(v).map_err(|_| "syntax check accepted".to_string())?;
        expect_invalid::<Datetime>(v)
    });
}

/// Well-formed but impossible datetimes: the syntax check lets them through (as the file's
/// header says), the full parse behind `Datetime` must not.
#[test]
fn datetime_parse_invalid() {
    run("datetime_parse_invalid.txt", |v| {
        validate_datetime_syntax(v).map_err(|e| format!("syntax check rejected: {e}"))?;
        rejects(validate_datetime)(v).map_err(|_| "full check accepted".to_string())?;
        expect_invalid::<Datetime>(v)
    });
}

#[test]
fn language_valid() {
    run("language_syntax_valid.txt", |v| {
        validate_language_syntax(v).map_err(|e| format!("syntax check rejected: {e}"))?;
        expect_valid::<Language>(v)
    });
}

#[test]
fn language_invalid() {
    run("language_syntax_invalid.txt", |v| {
        rejects(validate_language_syntax)(v).map_err(|_| "syntax check accepted".to_string())?;
        expect_invalid::<Language>(v)
    });
}

/// Well-formed tags that repeat a variant or extension singleton: valid syntax, invalid tag.
#[test]
fn language_parse_invalid() {
    run("language_parse_invalid.txt", |v| {
        validate_language_syntax(v).map_err(|e| format!("syntax check rejected: {e}"))?;
        rejects(validate_language)(v).map_err(|_| "full check accepted".to_string())?;
        expect_invalid::<Language>(v)
    });
}

/// AT URI accessors agree with the vectors they were parsed from.
#[test]
fn aturi_valid_accessors() {
    run("aturi_syntax_valid.txt", |v| {
        let uri = AtUri::from_str(v).map_err(|e| e.to_string())?;
        let mut rebuilt = format!("at://{}", uri.authority());
        for part in [uri.collection(), uri.rkey()].into_iter().flatten() {
            rebuilt.push('/');
            rebuilt.push_str(part);
        }
        if rebuilt != v {
            return Err(format!("accessors rebuild {rebuilt:?}"));
        }
        if uri.rkey().is_some() && uri.collection().is_none() {
            return Err("rkey without collection".into());
        }
        Ok(())
    });
}

/// TID vectors decode and re-encode to themselves.
#[test]
fn tid_valid_round_trip() {
    run("tid_syntax_valid.txt", |v| {
        let tid = Tid::from_str(v).map_err(|e| e.to_string())?;
        let again = Tid::from_parts(tid.timestamp_micros(), tid.clock_id())
            .map_err(|e| format!("re-encode: {e}"))?;
        if again != tid {
            return Err(format!("re-encoded as {again}"));
        }
        Ok(())
    });
}

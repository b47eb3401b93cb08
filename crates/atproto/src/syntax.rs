//! AT Protocol string syntax: DIDs, handles, NSIDs, AT URIs, TIDs, record keys, datetimes,
//! language tags, CID strings and generic URIs.
//!
//! Each identifier is a newtype over `String` that can only be built from a valid value, so code
//! holding a [`Did`] never re-checks it. Validation is hand-written byte scanning (no regex): it
//! runs on every record of the firehose, and it lets errors say *what* is wrong.
//!
//! The rules follow the atproto specs (<https://atproto.com/specs/did>, `handle`, `nsid`,
//! `at-uri-scheme`, `tid`, `record-key`, `lexicon#string-formats`) and are checked against the
//! interop vectors in `testdata/atproto-interop/syntax`.
//!
//! Two formats have a stricter "parse" level above plain syntax, mirroring the interop vectors:
//! [`Datetime`] and [`Language`] reject values that are well-formed but meaningless (month 13,
//! a repeated variant subtag). The syntax-only checks stay available as
//! [`validate_datetime_syntax`] and [`validate_language_syntax`] for callers that want to be
//! lenient with what others wrote.

use std::borrow::{Borrow, Cow};
use std::fmt;
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How many characters of an offending value an error message quotes.
const ERROR_VALUE_MAX_CHARS: usize = 100;

/// A string that is not valid for its atproto format.
///
/// Displays as `invalid DID "did:foo": missing method-specific identifier`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {reason}")]
pub struct SyntaxError {
    /// The format that was expected, e.g. `"DID"` or `"AT URI"`.
    pub kind: &'static str,
    /// The offending value, cut to about 100 characters so a hostile megabyte string does not
    /// end up in every log line.
    pub value: String,
    /// What is wrong with it.
    pub reason: Cow<'static, str>,
}

impl SyntaxError {
    /// Builds an error for `value`, truncating it for display.
    pub fn new(kind: &'static str, value: &str, reason: impl Into<Cow<'static, str>>) -> Self {
        let value = match value.char_indices().nth(ERROR_VALUE_MAX_CHARS) {
            Some((cut, _)) => format!("{}…", &value[..cut]),
            None => value.to_owned(),
        };
        Self {
            kind,
            value,
            reason: reason.into(),
        }
    }
}

/// Generates the common string-newtype plumbing: constructor, accessors, conversions, serde.
macro_rules! string_type {
    ($ty:ident, $validate:path) => {
        impl $ty {
            #[doc = concat!("Validates `s` and wraps a copy of it as a [`", stringify!($ty), "`].")]
            pub fn new(s: &str) -> Result<Self, SyntaxError> {
                $validate(s)?;
                Ok(Self(s.to_owned()))
            }

            /// The value as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Unwraps into the underlying `String`.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $ty {
            type Err = SyntaxError;
            fn from_str(s: &str) -> Result<Self, SyntaxError> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = SyntaxError;
            fn try_from(s: &str) -> Result<Self, SyntaxError> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = SyntaxError;
            fn try_from(s: String) -> Result<Self, SyntaxError> {
                // Validate first, then move: no copy for the common owned case.
                $validate(&s)?;
                Ok(Self(s))
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        // Hash and Eq are derived from the single String field, so they agree with `str`'s and
        // `Borrow` is sound: maps keyed by the type can be queried with a plain `&str`.
        impl Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl From<$ty> for String {
            fn from(v: $ty) -> String {
                v.0
            }
        }

        impl PartialEq<str> for $ty {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = String::deserialize(deserializer)?;
                Self::try_from(s).map_err(D::Error::custom)
            }
        }
    };
}

// ---------------------------------------------------------------------------------------------
// DID
// ---------------------------------------------------------------------------------------------

/// Maximum length of a DID, in characters (the atproto limit, not the W3C one).
pub const DID_MAX_LEN: usize = 2 * 1024;

/// A decentralized identifier, e.g. `did:plc:7iza6de2dwap2sbkpav7c6c6`.
///
/// Case-sensitive; only the generic DID syntax is checked, not method-specific rules.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Did(String);

string_type!(Did, validate_did);

impl Did {
    /// The DID method, e.g. `"plc"` or `"web"`.
    pub fn method(&self) -> &str {
        let rest = self.0.get(4..).unwrap_or("");
        rest.split_once(':').map_or(rest, |(method, _)| method)
    }

    /// The method-specific identifier, everything after the method's colon.
    pub fn method_specific_id(&self) -> &str {
        let rest = self.0.get(4..).unwrap_or("");
        rest.split_once(':').map_or("", |(_, id)| id)
    }
}

/// Checks DID syntax: `did:` + lowercase method + `:` + identifier of `[A-Za-z0-9._:%-]`, not
/// ending in `:`, `%` always followed by two hex digits, at most [`DID_MAX_LEN`] characters.
pub fn validate_did(s: &str) -> Result<(), SyntaxError> {
    check_did(s).map_err(|reason| SyntaxError::new("DID", s, reason))
}

fn check_did(s: &str) -> Result<(), &'static str> {
    let Some(rest) = s.strip_prefix("did:") else {
        return Err("must start with \"did:\" (lowercase)");
    };
    if s.len() > DID_MAX_LEN {
        return Err("longer than 2048 characters");
    }
    let Some((method, id)) = rest.split_once(':') else {
        return Err("missing method-specific identifier");
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err("method must be lowercase letters");
    }
    if id.is_empty() {
        return Err("method-specific identifier is empty");
    }
    let b = id.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = |j: usize| b.get(j).is_some_and(u8::is_ascii_hexdigit);
                if !(hex(i + 1) && hex(i + 2)) {
                    return Err("\"%\" must be followed by two hex digits");
                }
                i += 3;
                continue;
            }
            c if c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-') => {}
            _ => return Err("identifier may only contain ASCII letters, digits and ._:%-"),
        }
        i += 1;
    }
    if id.ends_with(':') {
        return Err("must not end with \":\"");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Handle
// ---------------------------------------------------------------------------------------------

/// Maximum length of a handle, in characters (a DNS name).
pub const HANDLE_MAX_LEN: usize = 253;

/// A handle, a DNS name such as `alice.bsky.social`.
///
/// Handles are case-insensitive but stored as given, so that a value read from a record
/// round-trips unchanged; compare [`Handle::normalized`] forms to test identity.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Handle(String);

string_type!(Handle, validate_handle);

impl Handle {
    /// The canonical lowercase form of this handle.
    pub fn normalized(&self) -> Handle {
        Handle(self.0.to_ascii_lowercase())
    }
}

/// Checks handle syntax: at least two dot-separated labels of 1-63 ASCII letters, digits and
/// hyphens (no leading or trailing hyphen), a last label starting with a letter, at most
/// [`HANDLE_MAX_LEN`] characters.
pub fn validate_handle(s: &str) -> Result<(), SyntaxError> {
    check_handle(s).map_err(|reason| SyntaxError::new("handle", s, reason))
}

fn check_handle(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("empty");
    }
    if s.len() > HANDLE_MAX_LEN {
        return Err("longer than 253 characters");
    }
    let mut labels = 0usize;
    let mut last = "";
    for label in s.split('.') {
        check_dns_label(label)?;
        labels += 1;
        last = label;
    }
    if labels < 2 {
        return Err("must have at least two dot-separated segments");
    }
    // A TLD starting with a digit would make IPv4 addresses look like handles.
    if !last.as_bytes()[0].is_ascii_alphabetic() {
        return Err("last segment (TLD) must start with a letter");
    }
    Ok(())
}

/// Checks one DNS label: 1-63 of `[A-Za-z0-9-]`, not starting or ending with a hyphen.
fn check_dns_label(label: &str) -> Result<(), &'static str> {
    let b = label.as_bytes();
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return Err("empty segment (leading, trailing or double dot)");
    };
    if b.len() > 63 {
        return Err("segment longer than 63 characters");
    }
    if !b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-') {
        return Err("may only contain ASCII letters, digits, hyphens and dots");
    }
    if first == b'-' || last == b'-' {
        return Err("segment must not start or end with a hyphen");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// AT identifier
// ---------------------------------------------------------------------------------------------

/// Either a [`Did`] or a [`Handle`], as accepted wherever atproto says "at-identifier".
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum AtIdentifier {
    /// A DID.
    Did(Did),
    /// A handle.
    Handle(Handle),
}

impl AtIdentifier {
    /// Parses `s` as a DID if it starts with `did:`, otherwise as a handle.
    pub fn new(s: &str) -> Result<Self, SyntaxError> {
        validate_at_identifier(s)?;
        Ok(Self::from_validated(s.to_owned()))
    }

    /// Wraps a string already proven to be a DID or handle; the `did:` prefix decides which.
    fn from_validated(s: String) -> Self {
        if s.starts_with("did:") {
            Self::Did(Did(s))
        } else {
            Self::Handle(Handle(s))
        }
    }

    /// The identifier as a string slice.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Did(d) => d.as_str(),
            Self::Handle(h) => h.as_str(),
        }
    }

    /// The DID, if this is one.
    pub fn as_did(&self) -> Option<&Did> {
        match self {
            Self::Did(d) => Some(d),
            Self::Handle(_) => None,
        }
    }

    /// The handle, if this is one.
    pub fn as_handle(&self) -> Option<&Handle> {
        match self {
            Self::Did(_) => None,
            Self::Handle(h) => Some(h),
        }
    }

    /// Unwraps into the underlying `String`.
    pub fn into_string(self) -> String {
        match self {
            Self::Did(d) => d.0,
            Self::Handle(h) => h.0,
        }
    }
}

/// Checks that `s` is a valid DID (if it starts with `did:`) or a valid handle.
pub fn validate_at_identifier(s: &str) -> Result<(), SyntaxError> {
    let inner = if s.starts_with("did:") {
        validate_did(s)
    } else {
        validate_handle(s)
    };
    inner.map_err(|e| SyntaxError {
        kind: "AT identifier",
        ..e
    })
}

impl From<Did> for AtIdentifier {
    fn from(d: Did) -> Self {
        Self::Did(d)
    }
}

impl From<Handle> for AtIdentifier {
    fn from(h: Handle) -> Self {
        Self::Handle(h)
    }
}

impl From<AtIdentifier> for String {
    fn from(v: AtIdentifier) -> String {
        v.into_string()
    }
}

impl fmt::Display for AtIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AtIdentifier {
    type Err = SyntaxError;
    fn from_str(s: &str) -> Result<Self, SyntaxError> {
        Self::new(s)
    }
}

impl TryFrom<&str> for AtIdentifier {
    type Error = SyntaxError;
    fn try_from(s: &str) -> Result<Self, SyntaxError> {
        Self::new(s)
    }
}

impl TryFrom<String> for AtIdentifier {
    type Error = SyntaxError;
    fn try_from(s: String) -> Result<Self, SyntaxError> {
        validate_at_identifier(&s)?;
        Ok(Self::from_validated(s))
    }
}

impl AsRef<str> for AtIdentifier {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Serialize for AtIdentifier {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for AtIdentifier {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::try_from(s).map_err(D::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------------
// NSID
// ---------------------------------------------------------------------------------------------

/// Maximum length of an NSID, in characters.
pub const NSID_MAX_LEN: usize = 317;

/// A namespaced identifier, e.g. `app.bsky.feed.post`: a reversed domain authority plus a name.
///
/// The authority is case-insensitive, the name case-sensitive; stored as given.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Nsid(String);

string_type!(Nsid, validate_nsid);

impl Nsid {
    /// The authority segments in NSID order, e.g. `"app.bsky.feed"` for `app.bsky.feed.post`.
    ///
    /// Kept in NSID order because prefix matching (`"app.bsky."`) is the common use.
    pub fn authority(&self) -> &str {
        self.0
            .rsplit_once('.')
            .map_or("", |(authority, _)| authority)
    }

    /// The authority as a lowercase DNS name, e.g. `"feed.bsky.app"` for `app.bsky.feed.post`.
    pub fn domain_authority(&self) -> String {
        let mut out = String::with_capacity(self.0.len());
        for (i, seg) in self.authority().rsplit('.').enumerate() {
            if i > 0 {
                out.push('.');
            }
            out.push_str(seg);
        }
        out.make_ascii_lowercase();
        out
    }

    /// The final segment, e.g. `"post"` for `app.bsky.feed.post`.
    pub fn name(&self) -> &str {
        self.0
            .rsplit_once('.')
            .map_or(self.0.as_str(), |(_, name)| name)
    }
}

/// Checks NSID syntax: at least three segments; authority segments are DNS labels (the first
/// must not start with a digit); the name is 1-63 ASCII letters and digits starting with a
/// letter; at most [`NSID_MAX_LEN`] characters overall.
///
/// The authority is not held to a handle's 253-character limit: the interop vectors accept a
/// 283-character one, and the 317 overall limit already bounds it.
pub fn validate_nsid(s: &str) -> Result<(), SyntaxError> {
    check_nsid(s).map_err(|reason| SyntaxError::new("NSID", s, reason))
}

fn check_nsid(s: &str) -> Result<(), &'static str> {
    if s.len() > NSID_MAX_LEN {
        return Err("longer than 317 characters");
    }
    let Some((authority, name)) = s.rsplit_once('.') else {
        return Err("must have at least three dot-separated segments");
    };
    let mut segments = 0usize;
    for seg in authority.split('.') {
        check_dns_label(seg)?;
        // The first NSID segment is the TLD, which may not start with a digit.
        if segments == 0 && seg.as_bytes()[0].is_ascii_digit() {
            return Err("first segment must not start with a digit");
        }
        segments += 1;
    }
    if segments < 2 {
        return Err("must have at least three dot-separated segments");
    }
    let nb = name.as_bytes();
    let Some(first) = nb.first() else {
        return Err("name (last segment) is empty");
    };
    if nb.len() > 63 {
        return Err("name (last segment) longer than 63 characters");
    }
    if !first.is_ascii_alphabetic() {
        return Err("name (last segment) must start with a letter");
    }
    if !nb.iter().all(u8::is_ascii_alphanumeric) {
        return Err("name (last segment) may only contain ASCII letters and digits");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Record key
// ---------------------------------------------------------------------------------------------

/// Maximum length of a record key, in characters.
pub const RECORD_KEY_MAX_LEN: usize = 512;

/// A record key, the last segment of a record's AT URI, e.g. `self` or a TID.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct RecordKey(String);

string_type!(RecordKey, validate_record_key);

/// Checks record key syntax: 1-512 of `[A-Za-z0-9._~:-]`, and not `.` or `..`.
pub fn validate_record_key(s: &str) -> Result<(), SyntaxError> {
    check_record_key(s).map_err(|reason| SyntaxError::new("record key", s, reason))
}

fn check_record_key(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("empty");
    }
    if s.len() > RECORD_KEY_MAX_LEN {
        return Err("longer than 512 characters");
    }
    if !s
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'~' | b':' | b'-'))
    {
        return Err("may only contain ASCII letters, digits and ._~:-");
    }
    // Path-traversal lookalikes are banned so keys can map to file or URL path segments.
    if s == "." || s == ".." {
        return Err("must not be \".\" or \"..\"");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// AT URI
// ---------------------------------------------------------------------------------------------

/// Maximum length of an AT URI, in characters.
pub const AT_URI_MAX_LEN: usize = 8 * 1024;

/// An AT URI in the restricted form Lexicon uses: `at://AUTHORITY[/COLLECTION[/RKEY]]`.
///
/// The authority is a DID or handle, the collection an NSID, the rkey a record key. Query
/// strings, fragments and trailing slashes are rejected: records never carry them, and allowing
/// them would give one record many spellings.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct AtUri(String);

string_type!(AtUri, validate_at_uri);

impl AtUri {
    /// Builds the URI of a record from its parts.
    ///
    /// Infallible because each part is already valid and their maximum lengths sum to well
    /// under [`AT_URI_MAX_LEN`].
    pub fn from_parts(did: &Did, collection: &Nsid, rkey: &RecordKey) -> AtUri {
        AtUri(format!("at://{did}/{collection}/{rkey}"))
    }

    /// Splits the validated string into authority, collection and rkey.
    fn parts(&self) -> (&str, Option<&str>, Option<&str>) {
        let rest = self.0.get(5..).unwrap_or("");
        let mut it = rest.splitn(3, '/');
        (it.next().unwrap_or(""), it.next(), it.next())
    }

    /// The authority, a DID or handle, e.g. `"did:plc:asdf123"`.
    pub fn authority(&self) -> &str {
        self.parts().0
    }

    /// The authority as a typed [`AtIdentifier`].
    pub fn identifier(&self) -> AtIdentifier {
        AtIdentifier::from_validated(self.authority().to_owned())
    }

    /// The collection NSID, if the URI has a path.
    pub fn collection(&self) -> Option<&str> {
        self.parts().1
    }

    /// The record key, if the URI names a record.
    pub fn rkey(&self) -> Option<&str> {
        self.parts().2
    }
}

/// Checks restricted AT URI syntax: `at://` + DID or handle, then optionally `/` + NSID, then
/// optionally `/` + record key; no query, fragment or trailing slash; at most
/// [`AT_URI_MAX_LEN`] characters.
pub fn validate_at_uri(s: &str) -> Result<(), SyntaxError> {
    let err = |reason: Cow<'static, str>| Err(SyntaxError::new("AT URI", s, reason));
    if s.len() > AT_URI_MAX_LEN {
        return err("longer than 8192 characters".into());
    }
    let Some(rest) = s.strip_prefix("at://") else {
        return err("must start with \"at://\"".into());
    };
    if let Some(c) = rest.chars().find(|c| matches!(c, '?' | '#')) {
        return err(format!("{c:?} not allowed: query and fragment are not supported").into());
    }
    let mut segments = rest.split('/');
    let authority = segments.next().unwrap_or("");
    let authority_check = if authority.starts_with("did:") {
        check_did(authority)
    } else {
        check_handle(authority)
    };
    if let Err(reason) = authority_check {
        return err(format!("authority is not a valid DID or handle: {reason}").into());
    }
    if let Some(collection) = segments.next() {
        if collection.is_empty() {
            return err("empty path segment (trailing or double slash)".into());
        }
        if let Err(reason) = check_nsid(collection) {
            return err(format!("collection is not a valid NSID: {reason}").into());
        }
    }
    if let Some(rkey) = segments.next() {
        if rkey.is_empty() {
            return err("empty path segment (trailing or double slash)".into());
        }
        if let Err(reason) = check_record_key(rkey) {
            return err(format!("record key is invalid: {reason}").into());
        }
    }
    if segments.next().is_some() {
        return err("more than two path segments (collection and record key)".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// TID
// ---------------------------------------------------------------------------------------------

/// The base32-sortable alphabet: digits 2-7 then a-z, so string order equals numeric order.
const B32_SORTABLE: &[u8; 32] = b"234567abcdefghijklmnopqrstuvwxyz";

/// The value of one base32-sortable character, or `None` if it is not in the alphabet.
fn b32_value(c: u8) -> Option<u64> {
    match c {
        b'2'..=b'7' => Some(u64::from(c - b'2')),
        b'a'..=b'z' => Some(u64::from(c - b'a') + 6),
        _ => None,
    }
}

/// A timestamp identifier: 13 base32-sortable characters encoding a 64-bit integer of
/// 53 bits of microseconds since the Unix epoch and a 10-bit clock id.
///
/// TIDs sort lexically in time order, which is why they are used as record keys and revisions.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Tid(String);

string_type!(Tid, validate_tid);

impl Tid {
    /// Largest timestamp a TID can hold (53 bits of microseconds, until about year 2255).
    pub const MAX_MICROS: u64 = (1 << 53) - 1;
    /// Largest clock id a TID can hold (10 bits).
    pub const MAX_CLOCK_ID: u16 = (1 << 10) - 1;

    /// Encodes a TID from microseconds since the Unix epoch and a clock id.
    ///
    /// Fails if either value does not fit its bit field, rather than silently truncating.
    pub fn from_parts(micros: u64, clock_id: u16) -> Result<Tid, SyntaxError> {
        if micros > Self::MAX_MICROS {
            return Err(SyntaxError::new(
                "TID",
                &micros.to_string(),
                "timestamp does not fit in 53 bits",
            ));
        }
        if clock_id > Self::MAX_CLOCK_ID {
            return Err(SyntaxError::new(
                "TID",
                &clock_id.to_string(),
                "clock id does not fit in 10 bits",
            ));
        }
        let mut v = (micros << 10) | u64::from(clock_id);
        let mut out = [b'2'; 13];
        for slot in out.iter_mut().rev() {
            *slot = B32_SORTABLE[(v & 31) as usize];
            v >>= 5;
        }
        // Every byte comes from the ASCII alphabet, so this cannot fail.
        Ok(Tid(out.iter().map(|&b| char::from(b)).collect()))
    }

    /// The whole 64-bit value.
    fn to_u64(&self) -> u64 {
        // Validation guarantees 13 alphabet characters with a first digit below 16, so the
        // value fits in 64 bits; the fallback of 0 is unreachable.
        self.0
            .bytes()
            .fold(0u64, |acc, c| (acc << 5) | b32_value(c).unwrap_or(0))
    }

    /// Microseconds since the Unix epoch.
    pub fn timestamp_micros(&self) -> u64 {
        self.to_u64() >> 10
    }

    /// The clock id, which separates TIDs minted in the same microsecond.
    pub fn clock_id(&self) -> u16 {
        (self.to_u64() & 0x3ff) as u16
    }
}

/// Checks TID syntax: exactly 13 base32-sortable characters, the first in `2-7a-j` so the
/// encoded integer's top bit stays clear.
pub fn validate_tid(s: &str) -> Result<(), SyntaxError> {
    let err = |reason: &'static str| Err(SyntaxError::new("TID", s, reason));
    let b = s.as_bytes();
    if b.len() != 13 {
        return err("must be exactly 13 characters");
    }
    if !b.iter().all(|&c| b32_value(c).is_some()) {
        return err("may only contain lowercase base32-sortable characters (2-7, a-z)");
    }
    if b32_value(b[0]).unwrap_or(u64::MAX) >= 16 {
        return err("first character must be in 2-7 or a-j (high bit must be 0)");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Datetime
// ---------------------------------------------------------------------------------------------

/// Maximum length of a datetime string, in characters.
pub const DATETIME_MAX_LEN: usize = 64;

/// Microseconds since the Unix epoch of `0000-01-01T00:00:00Z`, the earliest allowed instant.
const MIN_DATETIME_MICROS: i64 = -62_167_219_200 * 1_000_000;
/// Microseconds since the Unix epoch just past `9999-12-31T23:59:59.999999Z`.
const END_DATETIME_MICROS: i64 = 253_402_300_800 * 1_000_000;

/// A datetime in atproto's strict profile of RFC 3339 / ISO 8601:
/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)`, with uppercase `T` and `Z`, a required
/// timezone, and no `-00:00`.
///
/// Construction also rejects impossible values (month 13, February 30, minute 99) and instants
/// before year 0 in UTC. Ordering is by string, which is chronological only for values written
/// with the same offset and precision; compare [`Datetime::timestamp_micros`] for time order.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Datetime(String);

string_type!(Datetime, validate_datetime);

/// The numeric fields of a datetime whose syntax has been checked.
struct DtFields {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
    /// Fraction of a second, truncated to microseconds.
    frac_micros: i64,
    /// Offset from UTC (`+HH:MM` / `-HH:MM`); all zero for `Z`.
    offset_hours: i64,
    offset_minutes: i64,
    offset_negative: bool,
}

impl DtFields {
    /// Reads the fields by position. Never panics; on bytes that failed the syntax check the
    /// numbers are simply meaningless, so only call it after [`check_datetime_syntax`].
    fn read(b: &[u8]) -> Self {
        let num = |range: std::ops::Range<usize>| -> i64 {
            b.get(range).unwrap_or(&[]).iter().fold(0i64, |acc, &c| {
                acc * 10 + i64::from(c.wrapping_sub(b'0') % 10)
            })
        };
        let tail = b.get(19..).unwrap_or(&[]);
        let mut frac_micros = 0i64;
        if tail.first() == Some(&b'.') {
            let digits = tail[1..].iter().take_while(|c| c.is_ascii_digit());
            let mut scale = 100_000i64;
            for &c in digits.take(6) {
                frac_micros += i64::from(c - b'0') * scale;
                scale /= 10;
            }
        }
        let (offset_hours, offset_minutes, offset_negative) = match b.last() {
            Some(b'Z') | None => (0, 0, false),
            Some(_) => {
                let n = b.len();
                (
                    num(n.saturating_sub(5)..n.saturating_sub(3)),
                    num(n.saturating_sub(2)..n),
                    b.get(n.saturating_sub(6)) == Some(&b'-'),
                )
            }
        };
        Self {
            year: num(0..4),
            month: num(5..7),
            day: num(8..10),
            hour: num(11..13),
            minute: num(14..16),
            second: num(17..19),
            frac_micros,
            offset_hours,
            offset_minutes,
            offset_negative,
        }
    }

    /// The instant in microseconds since the Unix epoch.
    fn utc_micros(&self) -> i64 {
        let days = days_from_civil(self.year, self.month, self.day);
        let offset = (self.offset_hours * 60 + self.offset_minutes) * 60;
        let offset = if self.offset_negative {
            -offset
        } else {
            offset
        };
        let secs = days * 86_400 + self.hour * 3_600 + self.minute * 60 + self.second - offset;
        secs * 1_000_000 + self.frac_micros
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let mp = (month + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + day - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian `(year, month, day)` of a day count since 1970-01-01; the inverse
/// of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl Datetime {
    /// Microseconds since the Unix epoch (negative before 1970). Digits of the fraction beyond
    /// microseconds are truncated.
    pub fn timestamp_micros(&self) -> i64 {
        DtFields::read(self.0.as_bytes()).utc_micros()
    }

    /// Checks `s` as [`Datetime::new`] does and gives its [`Datetime::timestamp_micros`],
    /// without keeping a copy of the string (for per-event times on the hot path).
    pub fn parse_micros(s: &str) -> Result<i64, SyntaxError> {
        match utc_micros_common(s.as_bytes()) {
            Some(micros) => Ok(micros),
            None => Self::parse_micros_general(s),
        }
    }

    /// [`Datetime::parse_micros`] for every shape the syntax allows, and its error messages.
    fn parse_micros_general(s: &str) -> Result<i64, SyntaxError> {
        let b = s.as_bytes();
        check_datetime_syntax(b)
            .and_then(|()| {
                let fields = DtFields::read(b);
                check_datetime_fields(&fields).map(|()| fields.utc_micros())
            })
            .map_err(|reason| SyntaxError::new("datetime", s, reason))
    }

    /// Formats an instant as `YYYY-MM-DDTHH:MM:SS.sssZ`, or with six fraction digits when the
    /// instant is not a whole millisecond.
    ///
    /// Fails outside years 0000-9999, which four-digit years cannot express.
    pub fn from_timestamp_micros(micros: i64) -> Result<Datetime, SyntaxError> {
        if !(MIN_DATETIME_MICROS..END_DATETIME_MICROS).contains(&micros) {
            return Err(SyntaxError::new(
                "datetime",
                &micros.to_string(),
                "timestamp outside years 0000-9999",
            ));
        }
        Ok(Datetime(format_micros(micros)))
    }

    /// The current time from the system clock, in the format of
    /// [`Datetime::from_timestamp_micros`].
    pub fn now() -> Datetime {
        let micros = match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
            Err(e) => i64::try_from(e.duration().as_micros()).map_or(i64::MIN, |m| -m),
        };
        // A clock outside 0000-9999 is broken; clamping keeps this infallible.
        Datetime(format_micros(
            micros.clamp(MIN_DATETIME_MICROS, END_DATETIME_MICROS - 1),
        ))
    }
}

/// Formats an in-range instant; see [`Datetime::from_timestamp_micros`].
fn format_micros(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let (hour, minute, second) = (sod / 3_600, sod % 3_600 / 60, sod % 60);
    let date = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}");
    if frac % 1_000 == 0 {
        format!("{date}.{:03}Z", frac / 1_000)
    } else {
        format!("{date}.{frac:06}Z")
    }
}

/// Checks datetime syntax only: the shape `YYYY-MM-DDTHH:MM:SS[.1-20 digits](Z|±HH:MM)`, not
/// `-00:00`, at most [`DATETIME_MAX_LEN`] characters. Does not check that the date exists;
/// [`validate_datetime`] does.
pub fn validate_datetime_syntax(s: &str) -> Result<(), SyntaxError> {
    check_datetime_syntax(s.as_bytes()).map_err(|reason| SyntaxError::new("datetime", s, reason))
}

/// Checks datetime syntax and that the value is a real instant (valid month, day, time and
/// offset ranges, not before year 0 in UTC). This is what [`Datetime`] enforces.
pub fn validate_datetime(s: &str) -> Result<(), SyntaxError> {
    let b = s.as_bytes();
    check_datetime_syntax(b)
        .and_then(|()| check_datetime_fields(&DtFields::read(b)))
        .map_err(|reason| SyntaxError::new("datetime", s, reason))
}

/// The shape nearly every event time has, `YYYY-MM-DDTHH:MM:SS`, an optional fraction of one
/// to six digits, then `Z`, read in one pass; `None` for anything else (a valid datetime of
/// another shape included), which the general path then reads or rejects with its reason.
fn utc_micros_common(b: &[u8]) -> Option<i64> {
    let n = b.len();
    // 20 bytes without a fraction; with one, a dot and one to six digits.
    let (Some(head), Some(&b'Z')) = (b.first_chunk::<20>(), b.last()) else {
        return None;
    };
    if !(n == 20 || (22..=27).contains(&n))
        || head[4] != b'-'
        || head[7] != b'-'
        || head[10] != b'T'
        || head[13] != b':'
        || head[16] != b':'
        || (n > 20 && head[19] != b'.')
    {
        return None;
    }
    // A byte that is not a digit wraps to 10 or more: the largest is checked once, at the end.
    let mut largest = 0u8;
    let mut two = |i: usize| {
        let (hi, lo) = (head[i].wrapping_sub(b'0'), head[i + 1].wrapping_sub(b'0'));
        largest = largest.max(hi).max(lo);
        i64::from(hi) * 10 + i64::from(lo)
    };
    let year = two(0) * 100 + two(2);
    let (month, day) = (two(5), two(8));
    let (hour, minute, second) = (two(11), two(14), two(17));
    let mut frac_micros = 0;
    let mut scale = 100_000;
    for &c in b.get(20..n - 1).unwrap_or_default() {
        let d = c.wrapping_sub(b'0');
        largest = largest.max(d);
        frac_micros += i64::from(d) * scale;
        scale /= 10;
    }
    // Years are 0000-9999 and the offset is zero, so the instant is always in range; the rest
    // is checked as `check_datetime_fields` does.
    if largest > 9
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some((days * 86_400 + hour * 3_600 + minute * 60 + second) * 1_000_000 + frac_micros)
}

fn check_datetime_syntax(b: &[u8]) -> Result<(), &'static str> {
    if b.len() > DATETIME_MAX_LEN {
        return Err("longer than 64 characters");
    }
    if b.len() < 20 {
        return Err("too short: expected YYYY-MM-DDTHH:MM:SS plus a timezone");
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if !(digits(0..4) && b[4] == b'-' && digits(5..7) && b[7] == b'-' && digits(8..10)) {
        return Err("date must be YYYY-MM-DD");
    }
    if b[10] != b'T' {
        return Err("date and time must be separated by uppercase \"T\"");
    }
    if !(digits(11..13) && b[13] == b':' && digits(14..16) && b[16] == b':' && digits(17..19)) {
        return Err("time must be HH:MM:SS");
    }
    let mut tz = &b[19..];
    if let Some(frac) = tz.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return Err("fractional seconds must have at least one digit");
        }
        if n > 20 {
            return Err("fractional seconds longer than 20 digits");
        }
        tz = &frac[n..];
    }
    match tz {
        b"Z" => Ok(()),
        b"-00:00" => Err("\"-00:00\" (unknown offset) is not allowed; use \"Z\" or \"+00:00\""),
        [b'+' | b'-', h1, h2, b':', m1, m2]
            if [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()) =>
        {
            Ok(())
        }
        _ => Err("timezone must be \"Z\" or \"+HH:MM\"/\"-HH:MM\""),
    }
}

fn check_datetime_fields(f: &DtFields) -> Result<(), &'static str> {
    if !(1..=12).contains(&f.month) {
        return Err("month out of range");
    }
    if !(1..=days_in_month(f.year, f.month)).contains(&f.day) {
        return Err("day out of range for the month");
    }
    // Leap seconds (":60") are rejected like common parsers do: they have no Unix timestamp.
    if f.hour > 23 || f.minute > 59 || f.second > 59 {
        return Err("time of day out of range");
    }
    if f.offset_hours > 23 || f.offset_minutes > 59 {
        return Err("timezone offset out of range");
    }
    if f.utc_micros() < MIN_DATETIME_MICROS {
        return Err("instant is before year 0 in UTC");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Language
// ---------------------------------------------------------------------------------------------

/// Tags RFC 5646 lists as grandfathered; the irregular ones do not fit the normal grammar.
const GRANDFATHERED_TAGS: &[&str] = &[
    "en-GB-oed",
    "i-ami",
    "i-bnn",
    "i-default",
    "i-enochian",
    "i-hak",
    "i-klingon",
    "i-lux",
    "i-mingo",
    "i-navajo",
    "i-pwn",
    "i-tao",
    "i-tay",
    "i-tsu",
    "sgn-BE-FR",
    "sgn-BE-NL",
    "sgn-CH-DE",
    "art-lojban",
    "cel-gaulish",
    "no-bok",
    "no-nyn",
    "zh-guoyu",
    "zh-hakka",
    "zh-min",
    "zh-min-nan",
    "zh-xiang",
];

/// A BCP 47 language tag such as `en`, `pt-BR` or `zh-Hant`.
///
/// Construction checks the RFC 5646 grammar, requires the primary language subtag in lowercase
/// (as atproto's reference implementations do), and rejects tags that repeat a variant or an
/// extension singleton. It does not check subtags against the IANA registry.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Language(String);

string_type!(Language, validate_language);

impl Language {
    /// The primary language subtag, e.g. `"pt"` for `pt-BR` (or `"x"`/`"i"` for private-use and
    /// grandfathered tags).
    pub fn primary(&self) -> &str {
        self.0.split('-').next().unwrap_or("")
    }
}

/// Checks that `s` is a well-formed language tag (RFC 5646 syntax, lowercase primary subtag).
/// Accepts repeated variants or singletons; [`validate_language`] does not.
pub fn validate_language_syntax(s: &str) -> Result<(), SyntaxError> {
    check_language(s, false).map_err(|reason| SyntaxError::new("language tag", s, reason))
}

/// Checks that `s` is a well-formed *and* valid language tag: no variant subtag or extension
/// singleton appears twice (RFC 5646 section 2.2.9). This is what [`Language`] enforces.
pub fn validate_language(s: &str) -> Result<(), SyntaxError> {
    check_language(s, true).map_err(|reason| SyntaxError::new("language tag", s, reason))
}

fn check_language(s: &str, strict: bool) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("empty");
    }
    if GRANDFATHERED_TAGS.iter().any(|g| g.eq_ignore_ascii_case(s)) {
        return Ok(());
    }
    let subtags: Vec<&[u8]> = s.split('-').map(str::as_bytes).collect();
    for t in &subtags {
        if t.is_empty() || t.len() > 8 || !t.iter().all(u8::is_ascii_alphanumeric) {
            return Err("subtags must be 1-8 ASCII letters or digits separated by \"-\"");
        }
    }
    let alpha = |t: &[u8]| t.iter().all(u8::is_ascii_alphabetic);
    let digit = |t: &[u8]| t.iter().all(u8::is_ascii_digit);
    let is_x = |t: &[u8]| t.eq_ignore_ascii_case(b"x");

    let mut rest = &subtags[..];
    let Some((&lang, tail)) = rest.split_first() else {
        return Err("empty");
    };
    rest = tail;

    if is_x(lang) {
        return check_private_use(rest);
    }
    if !alpha(lang) || lang.len() < 2 {
        return Err("primary language subtag must be 2-3 or 5-8 letters");
    }
    if lang.len() == 4 {
        return Err("4-letter primary language subtags are reserved");
    }
    if !lang.iter().all(u8::is_ascii_lowercase) {
        return Err("primary language subtag must be lowercase");
    }
    // extlang: up to three 3-letter subtags, only after a 2-3 letter language.
    if lang.len() <= 3 {
        let mut n = 0;
        while n < 3 && rest.first().is_some_and(|t| t.len() == 3 && alpha(t)) {
            rest = &rest[1..];
            n += 1;
        }
    }
    // script
    if rest.first().is_some_and(|t| t.len() == 4 && alpha(t)) {
        rest = &rest[1..];
    }
    // region
    if rest
        .first()
        .is_some_and(|t| (t.len() == 2 && alpha(t)) || (t.len() == 3 && digit(t)))
    {
        rest = &rest[1..];
    }
    // variants
    let n_variants = rest
        .iter()
        .take_while(|t| (5..=8).contains(&t.len()) || (t.len() == 4 && t[0].is_ascii_digit()))
        .count();
    if strict && n_variants > 1 {
        // Sort-and-compare rather than pairwise, so a hostile tag with thousands of variants
        // costs n log n, not n squared.
        let mut seen: Vec<[u8; 8]> = rest[..n_variants]
            .iter()
            .map(|t| {
                let mut key = [0u8; 8];
                for (k, c) in key.iter_mut().zip(t.iter()) {
                    *k = c.to_ascii_lowercase();
                }
                key
            })
            .collect();
        seen.sort_unstable();
        if seen.windows(2).any(|w| w[0] == w[1]) {
            return Err("variant subtag repeated");
        }
    }
    rest = &rest[n_variants..];
    // extensions: a singleton followed by one or more 2-8 character subtags.
    let mut singletons_seen = 0u64;
    while let Some(&t) = rest.first() {
        if t.len() != 1 || is_x(t) {
            break;
        }
        let bit = 1u64 << alnum_index(t[0]);
        if strict && singletons_seen & bit != 0 {
            return Err("extension singleton repeated");
        }
        singletons_seen |= bit;
        rest = &rest[1..];
        let n = rest.iter().take_while(|t| t.len() >= 2).count();
        if n == 0 {
            return Err("extension singleton must be followed by a 2-8 character subtag");
        }
        rest = &rest[n..];
    }
    match rest.split_first() {
        None => Ok(()),
        Some((&t, tail)) if is_x(t) => check_private_use(tail),
        Some(_) => Err("subtag out of place or of the wrong length"),
    }
}

/// Index of an ASCII alphanumeric in `0-9a-z`, case-insensitive, for singleton bitsets.
fn alnum_index(c: u8) -> u32 {
    let c = c.to_ascii_lowercase();
    if c.is_ascii_digit() {
        u32::from(c - b'0')
    } else {
        u32::from(c.wrapping_sub(b'a')) % 26 + 10
    }
}

/// Checks the subtags after an `x` singleton: at least one, each 1-8 alphanumerics (already
/// checked by the caller).
fn check_private_use(rest: &[&[u8]]) -> Result<(), &'static str> {
    if rest.is_empty() {
        return Err("private-use \"x\" must be followed by a subtag");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// CID strings
// ---------------------------------------------------------------------------------------------

/// Checks the string syntax of a CID as Lexicon's `cid` format defines it: 8-256 characters of
/// `[A-Za-z0-9+=]`, and not a legacy CIDv0 (`Qm…`).
///
/// Syntax only, like the interop vectors: the multibase payload is not decoded. Use
/// [`parse_cid_str`] to get a [`cid::Cid`].
pub fn validate_cid_str(s: &str) -> Result<(), SyntaxError> {
    let err = |reason: &'static str| Err(SyntaxError::new("CID", s, reason));
    if !(8..=256).contains(&s.len()) {
        return err("must be 8-256 characters");
    }
    if !s
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'=')
    {
        return err("may only contain ASCII letters, digits, \"+\" and \"=\"");
    }
    if s.starts_with("Qm") {
        return err("CIDv0 is not supported; use a multibase CIDv1");
    }
    Ok(())
}

/// Checks [`validate_cid_str`] and decodes the string into a CIDv1.
pub fn parse_cid_str(s: &str) -> Result<cid::Cid, SyntaxError> {
    validate_cid_str(s)?;
    let cid = cid::Cid::try_from(s)
        .map_err(|e| SyntaxError::new("CID", s, format!("does not decode: {e}")))?;
    if cid.version() != cid::Version::V1 {
        return Err(SyntaxError::new("CID", s, "only CIDv1 is supported"));
    }
    Ok(cid)
}

// ---------------------------------------------------------------------------------------------
// Generic URI
// ---------------------------------------------------------------------------------------------

/// Maximum length of a Lexicon `uri` string, in characters.
pub const URI_MAX_LEN: usize = 8 * 1024;

/// Checks Lexicon's generic `uri` format: an RFC 3986 scheme (a letter, then letters, digits,
/// `+`, `-` or `.`), a colon, and at least one more character; printable ASCII only (no
/// whitespace; non-ASCII must be percent-encoded); at most [`URI_MAX_LEN`] characters.
pub fn validate_uri(s: &str) -> Result<(), SyntaxError> {
    let err = |reason: &'static str| Err(SyntaxError::new("URI", s, reason));
    if s.len() > URI_MAX_LEN {
        return err("longer than 8192 characters");
    }
    let Some((scheme, rest)) = s.split_once(':') else {
        return err("missing \"scheme:\"");
    };
    let sb = scheme.as_bytes();
    if !sb.first().is_some_and(u8::is_ascii_alphabetic) {
        return err("scheme must start with a letter");
    }
    if !sb
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
    {
        return err("scheme may only contain ASCII letters, digits, \"+\", \"-\" and \".\"");
    }
    if rest.is_empty() {
        return err("nothing after the scheme");
    }
    if !rest.bytes().all(|c| c.is_ascii_graphic()) {
        return err("may only contain printable ASCII without whitespace");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass reading of the common shape agrees with the general path on every string
    /// it accepts, and leaves every other string (valid or not) to it: datetimes built from
    /// edge values, then each mutated by one byte.
    #[test]
    fn common_shape_agrees_with_the_general_path() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let pick = |next: &mut dyn FnMut(u64) -> u64, edges: &[u32], span: u64| {
            if next(2) == 0 {
                edges[next(edges.len() as u64) as usize]
            } else {
                next(span) as u32
            }
        };
        let (mut fast, mut checked) = (0, 0);
        for _ in 0..200_000 {
            let year = pick(
                &mut next,
                &[0, 1, 1969, 1970, 2000, 2024, 2100, 9999],
                10_000,
            );
            let month = pick(&mut next, &[0, 1, 2, 12, 13], 14);
            let day = pick(&mut next, &[0, 1, 28, 29, 30, 31, 32], 33);
            let hour = pick(&mut next, &[0, 23, 24], 25);
            let minute = pick(&mut next, &[0, 59, 60], 61);
            let second = pick(&mut next, &[0, 59, 60], 61);
            let mut s = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}");
            let digits = next(9) as usize;
            if digits > 0 {
                s.push('.');
                for _ in 0..digits {
                    s.push(char::from(b'0' + next(10) as u8));
                }
            }
            s.push_str(["Z", "Z", "Z", "+00:00", "-05:30", "z", ""][next(7) as usize]);
            let mut b = s.into_bytes();
            if next(3) == 0 {
                let i = next(b.len() as u64) as usize;
                b[i] = b"0123456789-:.TZt+ \x80"[next(17) as usize];
            }
            let Ok(s) = String::from_utf8(b) else {
                continue;
            };
            let general = Datetime::parse_micros_general(&s);
            match utc_micros_common(s.as_bytes()) {
                Some(micros) => {
                    fast += 1;
                    assert_eq!(general, Ok(micros), "{s}");
                }
                None => assert_eq!(Datetime::parse_micros(&s), general, "{s}"),
            }
            checked += 1;
        }
        // Both sides of the split were exercised.
        assert!(
            fast > 10_000 && checked - fast > 10_000,
            "{fast} of {checked}"
        );
    }

    #[test]
    fn tid_round_trip() {
        for (micros, clock) in [
            (0, 0),
            (1, 1),
            (1_729_705_879_128_000, 42),
            (Tid::MAX_MICROS, Tid::MAX_CLOCK_ID),
        ] {
            let tid = Tid::from_parts(micros, clock).expect("in range");
            assert_eq!(tid.as_str().len(), 13);
            assert!(validate_tid(tid.as_str()).is_ok(), "{tid}");
            assert_eq!(tid.timestamp_micros(), micros);
            assert_eq!(tid.clock_id(), clock);
            let reparsed: Tid = tid.as_str().parse().expect("valid");
            assert_eq!(reparsed, tid);
        }
        assert_eq!(Tid::from_parts(0, 0).unwrap().as_str(), "2222222222222");
        assert_eq!(
            Tid::from_parts(Tid::MAX_MICROS, Tid::MAX_CLOCK_ID)
                .unwrap()
                .as_str(),
            "bzzzzzzzzzzzz"
        );
        assert!(Tid::from_parts(Tid::MAX_MICROS + 1, 0).is_err());
        assert!(Tid::from_parts(0, 1024).is_err());
    }

    #[test]
    fn tid_order_matches_time_order() {
        let a = Tid::from_parts(1_000_000, 5).unwrap();
        let b = Tid::from_parts(1_000_001, 0).unwrap();
        assert!(a < b);
        let t: Tid = "3jzfcijpj2z2a".parse().unwrap();
        assert_eq!(
            Tid::from_parts(t.timestamp_micros(), t.clock_id()).unwrap(),
            t
        );
    }

    #[test]
    fn datetime_timestamp_micros() {
        let cases = [
            ("1970-01-01T00:00:00Z", 0),
            ("1970-01-01T00:00:00.000001Z", 1),
            ("2024-10-23T17:51:19.128Z", 1_729_705_879_128_000),
            ("2024-10-23T19:51:19.128+02:00", 1_729_705_879_128_000),
            ("2024-10-23T12:21:19.128-05:30", 1_729_705_879_128_000),
            ("1969-12-31T23:59:59.5Z", -500_000),
            ("2000-02-29T00:00:00Z", 951_782_400_000_000),
            ("1985-04-12T23:20:50.1235678912345Z", 482_196_050_123_567),
            ("0000-01-01T00:00:00.000Z", MIN_DATETIME_MICROS),
        ];
        for (s, micros) in cases {
            let dt = Datetime::new(s).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(dt.timestamp_micros(), micros, "{s}");
            assert_eq!(Datetime::parse_micros(s), Ok(micros), "{s}");
        }
    }

    #[test]
    fn datetime_from_timestamp_round_trip() {
        for micros in [
            0,
            1,
            -1,
            1_729_705_879_128_000,
            1_729_705_879_128_001,
            MIN_DATETIME_MICROS,
            END_DATETIME_MICROS - 1,
        ] {
            let dt = Datetime::from_timestamp_micros(micros).unwrap();
            assert_eq!(dt.timestamp_micros(), micros, "{dt}");
        }
        assert_eq!(
            Datetime::from_timestamp_micros(1_729_705_879_128_000)
                .unwrap()
                .as_str(),
            "2024-10-23T17:51:19.128Z"
        );
        assert_eq!(
            Datetime::from_timestamp_micros(-1).unwrap().as_str(),
            "1969-12-31T23:59:59.999999Z"
        );
        assert!(Datetime::from_timestamp_micros(MIN_DATETIME_MICROS - 1).is_err());
        assert!(Datetime::from_timestamp_micros(END_DATETIME_MICROS).is_err());
        assert!(Datetime::now().timestamp_micros() > 1_700_000_000_000_000);
    }

    #[test]
    fn datetime_rejects_impossible_dates() {
        assert!(Datetime::new("2023-02-29T00:00:00Z").is_err());
        assert!(Datetime::new("2024-02-29T00:00:00Z").is_ok());
        assert!(Datetime::new("1900-02-29T00:00:00Z").is_err());
        for bad in [
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-01",
            "now",
        ] {
            assert!(Datetime::parse_micros(bad).is_err(), "{bad}");
            assert_eq!(
                Datetime::parse_micros(bad).map_err(|e| e.to_string()),
                Datetime::new(bad)
                    .map(|d| d.timestamp_micros())
                    .map_err(|e| e.to_string()),
            );
        }
        assert!(validate_datetime_syntax("2023-02-29T00:00:00Z").is_ok());
    }

    #[test]
    fn civil_round_trip() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn error_message_names_kind_value_and_reason() {
        let e = Did::new("did:FOO:bar").unwrap_err();
        assert_eq!(e.kind, "DID");
        assert_eq!(
            e.to_string(),
            "invalid DID \"did:FOO:bar\": method must be lowercase letters"
        );
        let long = format!("did:plc:{}", "a".repeat(3000));
        let msg = Did::new(&long).unwrap_err().to_string();
        assert!(msg.len() < 200, "{msg}");
        assert!(msg.contains('…'));
    }

    #[test]
    fn accessors() {
        let did = Did::new("did:plc:7iza6de2dwap2sbkpav7c6c6").unwrap();
        assert_eq!(did.method(), "plc");
        assert_eq!(did.method_specific_id(), "7iza6de2dwap2sbkpav7c6c6");

        let nsid = Nsid::new("app.bsky.feed.post").unwrap();
        assert_eq!(nsid.authority(), "app.bsky.feed");
        assert_eq!(nsid.domain_authority(), "feed.bsky.app");
        assert_eq!(nsid.name(), "post");

        let rkey = RecordKey::new("3jzfcijpj2z2a").unwrap();
        let uri = AtUri::from_parts(&did, &nsid, &rkey);
        assert_eq!(
            uri.as_str(),
            "at://did:plc:7iza6de2dwap2sbkpav7c6c6/app.bsky.feed.post/3jzfcijpj2z2a"
        );
        assert!(validate_at_uri(uri.as_str()).is_ok());
        assert_eq!(uri.authority(), did.as_str());
        assert_eq!(uri.identifier().as_did(), Some(&did));
        assert_eq!(uri.collection(), Some("app.bsky.feed.post"));
        assert_eq!(uri.rkey(), Some("3jzfcijpj2z2a"));

        let bare = AtUri::new("at://alice.test").unwrap();
        assert_eq!(bare.authority(), "alice.test");
        assert_eq!(bare.collection(), None);
        assert_eq!(bare.rkey(), None);
        assert!(bare.identifier().as_handle().is_some());

        let h = Handle::new("Alice.Bsky.Social").unwrap();
        assert_eq!(h.normalized().as_str(), "alice.bsky.social");
        assert_eq!(Language::new("pt-BR").unwrap().primary(), "pt");
    }

    #[test]
    fn serde_validates() {
        let did: Did = serde_json::from_str("\"did:web:example.com\"").unwrap();
        assert_eq!(
            serde_json::to_string(&did).unwrap(),
            "\"did:web:example.com\""
        );
        assert!(serde_json::from_str::<Did>("\"did:Web:example.com\"").is_err());
        let id: AtIdentifier = serde_json::from_str("\"alice.test\"").unwrap();
        assert!(id.as_handle().is_some());
        assert!(serde_json::from_str::<AtIdentifier>("\"alice\"").is_err());
        assert!(serde_json::from_str::<Datetime>("\"1985-13-12T23:20:50Z\"").is_err());
    }

    #[test]
    fn cid_parse() {
        let s = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi";
        assert_eq!(parse_cid_str(s).unwrap().to_string(), s);
        assert!(parse_cid_str("QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR").is_err());
    }
}

//! Firehose frames: `com.atproto.sync.subscribeRepos` messages as they arrive on the WebSocket.
//!
//! A frame is two DAG-CBOR values back to back: a header `{op, t}` and a body. `op: 1` is a
//! message whose body type is named by `t` (`#commit`, `#identity`, `#account`, `#sync`,
//! `#info`); `op: -1` is an error frame `{error, message}` after which the server closes.
//! Bodies borrow strings and the CAR bytes from the frame, so decoding copies little.

use crate::car::CarError;
use crate::crypto::CryptoError;
use crate::data::{DataError, Ipld};
use cid::Cid;
use serde::{Deserialize, Serialize};

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The header is not `{op, t}`.
    #[error("bad frame header: {0}")]
    Header(String),
    /// The body does not match its declared type.
    #[error("bad {kind} body: {message}")]
    Body {
        /// The message type from the header (`#commit`, ...).
        kind: String,
        /// The decoder's complaint.
        message: String,
    },
    /// Bytes remain after the body.
    #[error("trailing bytes after the frame body")]
    Trailing,
    /// The header's `op` is neither 1 nor -1.
    #[error("unknown frame op {0}")]
    UnknownOp(i64),
}

/// Why a commit could not be trusted or resolved.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The CAR is malformed.
    #[error("commit CAR: {0}")]
    Car(#[from] CarError),
    /// A block does not hash to its CID.
    #[error("commit block: {0}")]
    Block(#[from] DataError),
    /// The signed commit object is not in the CAR.
    #[error("commit block {0} missing from the CAR")]
    MissingCommit(String),
    /// The signed commit object is malformed.
    #[error("commit object: {0}")]
    BadCommit(String),
    /// The commit's `did` or `rev` contradicts the frame.
    #[error("commit object says {field} = {inner:?} but the frame says {outer:?}")]
    Mismatch {
        /// Which field disagrees.
        field: &'static str,
        /// Value in the signed commit.
        inner: String,
        /// Value in the frame.
        outer: String,
    },
    /// The signature does not verify with the account's key.
    #[error("commit signature: {0}")]
    Signature(#[from] CryptoError),
    /// An op's path is not `collection/rkey`.
    #[error("op path {0:?} is not collection/rkey")]
    BadPath(String),
    /// An op action is not create, update or delete.
    #[error("unknown op action {0:?}")]
    BadAction(String),
}

#[derive(Deserialize)]
struct Header<'a> {
    op: i64,
    #[serde(borrow, default)]
    t: Option<&'a str>,
}

/// One decoded frame.
// Frames live briefly on the stack while one message is handled; boxing the commit variant
// would cost an allocation per frame to save a few hundred bytes of stack.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Frame<'a> {
    /// `#commit`: a repo changed.
    Commit(CommitFrame<'a>),
    /// `#identity`: an account's handle or DID document may have changed.
    Identity(IdentityFrame<'a>),
    /// `#account`: an account's hosting status changed.
    Account(AccountFrame<'a>),
    /// `#sync`: the repo's state was reset to a new commit (no ops).
    Sync(SyncFrame<'a>),
    /// `#info`: an informational message (e.g. `OutdatedCursor`).
    Info(InfoFrame),
    /// An error frame (`op: -1`); the server closes the stream after it.
    Error(ErrorFrame),
    /// A message type this version does not know; kept so it can be counted, not failed.
    Unknown {
        /// The header's `t`.
        kind: String,
    },
}

impl Frame<'_> {
    /// The frame's message type, e.g. `#commit`, or `error` for error frames.
    pub fn kind(&self) -> &str {
        match self {
            Frame::Commit(_) => "#commit",
            Frame::Identity(_) => "#identity",
            Frame::Account(_) => "#account",
            Frame::Sync(_) => "#sync",
            Frame::Info(_) => "#info",
            Frame::Error(_) => "error",
            Frame::Unknown { kind } => kind,
        }
    }

    /// The stream sequence number, for frames that carry one.
    pub fn seq(&self) -> Option<i64> {
        match self {
            Frame::Commit(c) => Some(c.seq),
            Frame::Identity(c) => Some(c.seq),
            Frame::Account(c) => Some(c.seq),
            Frame::Sync(c) => Some(c.seq),
            _ => None,
        }
    }
}

/// A `#commit` body.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitFrame<'a> {
    /// Stream sequence number.
    pub seq: i64,
    /// Set when the commit was too big to include its blocks; ops carry CIDs only.
    #[serde(default)]
    pub too_big: bool,
    /// The repo's DID.
    #[serde(borrow)]
    pub repo: &'a str,
    /// CID of the signed commit object (in `blocks`).
    #[serde(deserialize_with = "wire_cid::one")]
    pub commit: Cid,
    /// The commit's revision (a TID).
    #[serde(borrow)]
    pub rev: &'a str,
    /// The previous revision this diff is against, if any.
    #[serde(borrow, default)]
    pub since: Option<&'a str>,
    /// CAR slice with the commit, changed MST nodes and new records.
    #[serde(borrow, with = "serde_bytes")]
    pub blocks: &'a [u8],
    /// The record operations.
    #[serde(borrow)]
    pub ops: Vec<RepoOp<'a>>,
    /// Blobs referenced by new records (nullable on some relays).
    #[serde(default)]
    pub blobs: Option<Vec<Cid>>,
    /// MST root before this commit (sync v1.1), if sent.
    #[serde(default, deserialize_with = "wire_cid::optional")]
    pub prev_data: Option<Cid>,
    /// When the event was emitted (datetime).
    #[serde(borrow)]
    pub time: &'a str,
}

/// One op of a commit.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RepoOp<'a> {
    /// `create`, `update` or `delete`.
    #[serde(borrow)]
    pub action: &'a str,
    /// `collection/rkey`.
    #[serde(borrow)]
    pub path: &'a str,
    /// The new record's CID; null for deletes.
    #[serde(default, deserialize_with = "wire_cid::optional")]
    pub cid: Option<Cid>,
    /// The previous record's CID for updates and deletes (sync v1.1).
    #[serde(default, deserialize_with = "wire_cid::optional")]
    pub prev: Option<Cid>,
}

/// CIDs in frame bodies, with the common CIDv1/sha2-256 form read directly: a commit frame
/// carries several, and the general reader goes through `std::io` for each.
mod wire_cid {
    use cid::Cid;
    use serde::de::{self, Deserializer, Visitor};
    use std::fmt;

    /// A CID (DAG-CBOR tag 42).
    pub fn one<'de, D: Deserializer<'de>>(d: D) -> Result<Cid, D::Error> {
        d.deserialize_newtype_struct(cid::serde::CID_SERDE_PRIVATE_IDENTIFIER, Entry)
    }

    /// A CID or null.
    pub fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cid>, D::Error> {
        d.deserialize_option(Nullable)
    }

    struct Entry;

    impl<'de> Visitor<'de> for Entry {
        type Value = Cid;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a CID")
        }

        fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Cid, D::Error> {
            d.deserialize_bytes(Bytes)
        }
    }

    /// A CID's binary form (without the DAG-CBOR zero prefix), read as frames carry it.
    pub(super) fn from_bytes(v: &[u8]) -> Result<Cid, cid::Error> {
        match crate::car::read_sha256_cid_v1(v) {
            Some((cid, [])) => Ok(cid),
            _ => Cid::try_from(v),
        }
    }

    struct Bytes;

    impl Visitor<'_> for Bytes {
        type Value = Cid;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("CID bytes")
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Cid, E> {
            from_bytes(v).map_err(|e| E::custom(format!("bad CID: {e}")))
        }
    }

    struct Nullable;

    impl<'de> Visitor<'de> for Nullable {
        type Value = Option<Cid>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a CID or null")
        }

        fn visit_none<E: de::Error>(self) -> Result<Option<Cid>, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Option<Cid>, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<Cid>, D::Error> {
            one(d).map(Some)
        }
    }
}

/// An `#identity` body.
#[derive(Debug, Clone, Deserialize)]
pub struct IdentityFrame<'a> {
    /// Stream sequence number.
    pub seq: i64,
    /// The account's DID.
    #[serde(borrow)]
    pub did: &'a str,
    /// When the event was emitted.
    #[serde(borrow)]
    pub time: &'a str,
    /// The current handle, if the server sent one.
    #[serde(borrow, default)]
    pub handle: Option<&'a str>,
}

/// An `#account` body.
#[derive(Debug, Clone, Deserialize)]
pub struct AccountFrame<'a> {
    /// Stream sequence number.
    pub seq: i64,
    /// The account's DID.
    #[serde(borrow)]
    pub did: &'a str,
    /// When the event was emitted.
    #[serde(borrow)]
    pub time: &'a str,
    /// Whether the account is active (content should be served).
    pub active: bool,
    /// Why it is inactive: `takendown`, `suspended`, `deleted`, `deactivated`, ...
    #[serde(borrow, default)]
    pub status: Option<&'a str>,
}

/// A `#sync` body.
#[derive(Debug, Clone, Deserialize)]
pub struct SyncFrame<'a> {
    /// Stream sequence number.
    pub seq: i64,
    /// The account's DID.
    #[serde(borrow)]
    pub did: &'a str,
    /// CAR with the signed commit block.
    #[serde(borrow, with = "serde_bytes")]
    pub blocks: &'a [u8],
    /// The commit's revision.
    #[serde(borrow)]
    pub rev: &'a str,
    /// When the event was emitted.
    #[serde(borrow)]
    pub time: &'a str,
}

/// An `#info` body.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct InfoFrame {
    /// e.g. `OutdatedCursor`.
    pub name: String,
    /// Human-readable detail.
    #[serde(default)]
    pub message: Option<String>,
}

/// An error frame body.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct ErrorFrame {
    /// e.g. `FutureCursor`, `ConsumerTooSlow`.
    pub error: String,
    /// Human-readable detail.
    #[serde(default)]
    pub message: Option<String>,
}

/// Decodes one frame as received on the WebSocket.
pub fn decode_frame(bytes: &[u8]) -> Result<Frame<'_>, FrameError> {
    let scanned = if let Some(body) = bytes.strip_prefix(COMMIT_HEADER) {
        body_scan::commit(body).map(Frame::Commit)
    } else if let Some(body) = bytes.strip_prefix(IDENTITY_HEADER) {
        body_scan::identity(body).map(Frame::Identity)
    } else if let Some(body) = bytes.strip_prefix(ACCOUNT_HEADER) {
        body_scan::account(body).map(Frame::Account)
    } else {
        None
    };
    match scanned {
        Some(frame) => Ok(frame),
        None => decode_frame_general(bytes),
    }
}

/// The header of a `#commit` frame in canonical DAG-CBOR: `{"t": "#commit", "op": 1}`.
const COMMIT_HEADER: &[u8] = b"\xa2\x61t\x67#commit\x62op\x01";
/// The header of an `#identity` frame in canonical DAG-CBOR.
const IDENTITY_HEADER: &[u8] = b"\xa2\x61t\x69#identity\x62op\x01";
/// The header of an `#account` frame in canonical DAG-CBOR.
const ACCOUNT_HEADER: &[u8] = b"\xa2\x61t\x68#account\x62op\x01";

/// `#commit`, `#identity` and `#account` bodies read in place. They are almost every frame,
/// and the general decoder spends most of its time on serde's machinery (a visitor per field,
/// per op and per CID). The scan takes a body only when it is canonical DAG-CBOR with exactly
/// the types the frame's fields have (other keys only with scalar values) and ends the frame;
/// anything else returns `None` and goes to the general decoder, which then accepts or
/// rejects it as it always has. So the scan changes speed, never what is accepted.
mod body_scan {
    use super::{AccountFrame, CommitFrame, IdentityFrame, RepoOp};
    use crate::cbor::{Head, head, map_key, string};
    use cid::Cid;

    /// A head with the shortest encoding, of major type `major`.
    fn minimal(bytes: &[u8], at: usize, major: u8) -> Option<(Head, usize)> {
        head(bytes, at)
            .ok()
            .filter(|(h, _)| h.major == major && h.minimal)
    }

    /// The payload range of the string of major type `major` (2 bytes, 3 text) at `at`.
    fn string_of(bytes: &[u8], at: usize, major: u8) -> Option<(usize, usize)> {
        let (h, start, end) = string(bytes, at).ok()?;
        (h.major == major && h.minimal).then_some((start, end))
    }

    fn int(bytes: &[u8], at: usize) -> Option<(i64, usize)> {
        let (h, next) = head(bytes, at).ok().filter(|(h, _)| h.minimal)?;
        let n = i64::try_from(h.arg).ok()?;
        match h.major {
            0 => Some((n, next)),
            1 => Some((-1 - n, next)),
            _ => None,
        }
    }

    fn boolean(bytes: &[u8], at: usize) -> Option<(bool, usize)> {
        match bytes.get(at)? {
            0xf4 => Some((false, at + 1)),
            0xf5 => Some((true, at + 1)),
            _ => None,
        }
    }

    fn is_null(bytes: &[u8], at: usize) -> bool {
        bytes.get(at) == Some(&0xf6)
    }

    fn text(bytes: &[u8], at: usize) -> Option<(&str, usize)> {
        let (start, end) = string_of(bytes, at, 3)?;
        Some((crate::cbor::utf8(&bytes[start..end])?, end))
    }

    fn byte_string(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
        let (start, end) = string_of(bytes, at, 2)?;
        Some((&bytes[start..end], end))
    }

    /// Tag 42 around the CID's bytes behind a zero byte, read as the general decoder reads it.
    fn cid(bytes: &[u8], at: usize) -> Option<(Cid, usize)> {
        let (tag, next) = minimal(bytes, at, 6)?;
        if tag.arg != 42 {
            return None;
        }
        let (raw, end) = byte_string(bytes, next)?;
        let raw = raw.strip_prefix(&[0]).filter(|r| !r.is_empty())?;
        Some((super::wire_cid::from_bytes(raw).ok()?, end))
    }

    /// A CID or null (null reads as an absent key does).
    fn nullable_cid(bytes: &[u8], at: usize) -> Option<(Option<Cid>, usize)> {
        if is_null(bytes, at) {
            return Some((None, at + 1));
        }
        cid(bytes, at).map(|(c, end)| (Some(c), end))
    }

    /// The value of a key the frame type does not name: only integers, strings, booleans and
    /// null are taken (`rebase`, for one); anything else goes to the general decoder.
    fn other_scalar(bytes: &[u8], at: usize) -> Option<usize> {
        let (h, next) = head(bytes, at).ok().filter(|(h, _)| h.minimal)?;
        match h.major {
            0 | 1 => Some(next),
            2 => byte_string(bytes, at).map(|(_, end)| end),
            3 => text(bytes, at).map(|(_, end)| end),
            7 if matches!(h.arg, 20..=22) && next == at + 1 => Some(next),
            _ => None,
        }
    }

    /// Calls `entry` with each key's text and the position of its value, keys checked to be
    /// canonical; `entry` returns the position after the value.
    fn map<'b>(
        bytes: &'b [u8],
        at: usize,
        mut entry: impl FnMut(&'b [u8], usize) -> Option<usize>,
    ) -> Option<usize> {
        let (h, mut at) = minimal(bytes, at, 5)?;
        let mut previous = None;
        for _ in 0..h.arg {
            let key = map_key(bytes, at, previous, 1)
                .ok()
                .filter(|k| k.canonical)?;
            previous = Some(key.encoded);
            at = entry(key.text, key.end)?;
        }
        Some(at)
    }

    /// Stores a value read at a key; gives the position after it.
    fn put<T>(slot: &mut Option<T>, read: Option<(T, usize)>) -> Option<usize> {
        let (value, end) = read?;
        *slot = Some(value);
        Some(end)
    }

    fn op(bytes: &[u8], at: usize) -> Option<(RepoOp<'_>, usize)> {
        let (mut action, mut path, mut op_cid, mut prev) = (None, None, None, None);
        let end = map(bytes, at, |key, at| match key {
            b"action" => put(&mut action, text(bytes, at)),
            b"path" => put(&mut path, text(bytes, at)),
            b"cid" => put(&mut op_cid, nullable_cid(bytes, at)),
            b"prev" => put(&mut prev, nullable_cid(bytes, at)),
            _ => other_scalar(bytes, at),
        })?;
        let op = RepoOp {
            action: action?,
            path: path?,
            cid: op_cid.flatten(),
            prev: prev.flatten(),
        };
        Some((op, end))
    }

    fn list<'b, T>(
        bytes: &'b [u8],
        at: usize,
        item: impl Fn(&'b [u8], usize) -> Option<(T, usize)>,
    ) -> Option<(Vec<T>, usize)> {
        let (h, mut at) = minimal(bytes, at, 4)?;
        // Every item takes at least one byte: a count beyond the input is not a list.
        let len = usize::try_from(h.arg).ok().filter(|&n| n <= bytes.len())?;
        let mut items = Vec::with_capacity(len);
        for _ in 0..len {
            let (value, end) = item(bytes, at)?;
            items.push(value);
            at = end;
        }
        Some((items, at))
    }

    /// A whole `#commit` body that ends the frame, or `None` (see the module docs).
    pub(super) fn commit(bytes: &[u8]) -> Option<CommitFrame<'_>> {
        let (mut seq, mut too_big, mut repo, mut commit, mut rev, mut since) =
            (None, None, None, None, None, None);
        let (mut blocks, mut ops, mut blobs, mut prev_data, mut time) =
            (None, None, None, None, None);
        let end = map(bytes, 0, |key, at| match key {
            b"seq" => put(&mut seq, int(bytes, at)),
            b"tooBig" => put(&mut too_big, boolean(bytes, at)),
            b"repo" => put(&mut repo, text(bytes, at)),
            b"commit" => put(&mut commit, cid(bytes, at)),
            b"rev" => put(&mut rev, text(bytes, at)),
            b"since" if is_null(bytes, at) => Some(at + 1),
            b"since" => put(&mut since, text(bytes, at)),
            b"blocks" => put(&mut blocks, byte_string(bytes, at)),
            b"ops" => put(&mut ops, list(bytes, at, op)),
            b"blobs" if is_null(bytes, at) => Some(at + 1),
            b"blobs" => put(&mut blobs, list(bytes, at, cid)),
            b"prevData" => put(&mut prev_data, nullable_cid(bytes, at)),
            b"time" => put(&mut time, text(bytes, at)),
            _ => other_scalar(bytes, at),
        })?;
        if end != bytes.len() {
            return None;
        }
        Some(CommitFrame {
            seq: seq?,
            too_big: too_big.unwrap_or(false),
            repo: repo?,
            commit: commit?,
            rev: rev?,
            since,
            blocks: blocks?,
            ops: ops?,
            blobs,
            prev_data: prev_data.flatten(),
            time: time?,
        })
    }

    /// The fields `#identity` and `#account` bodies share (`seq`, `did`, `time`), read from a
    /// whole body that ends the frame; `field` reads every other key's value and returns the
    /// position after it.
    fn account_event<'b>(
        bytes: &'b [u8],
        mut field: impl FnMut(&'b [u8], usize) -> Option<usize>,
    ) -> Option<(i64, &'b str, &'b str)> {
        let (mut seq, mut did, mut time) = (None, None, None);
        let end = map(bytes, 0, |key, at| match key {
            b"seq" => put(&mut seq, int(bytes, at)),
            b"did" => put(&mut did, text(bytes, at)),
            b"time" => put(&mut time, text(bytes, at)),
            _ => field(key, at),
        })?;
        (end == bytes.len()).then_some((seq?, did?, time?))
    }

    /// A whole `#identity` body that ends the frame, or `None` (see the module docs).
    pub(super) fn identity(bytes: &[u8]) -> Option<IdentityFrame<'_>> {
        let mut handle = None;
        let (seq, did, time) = account_event(bytes, |key, at| match key {
            b"handle" if is_null(bytes, at) => Some(at + 1),
            b"handle" => put(&mut handle, text(bytes, at)),
            _ => other_scalar(bytes, at),
        })?;
        Some(IdentityFrame {
            seq,
            did,
            time,
            handle,
        })
    }

    /// A whole `#account` body that ends the frame, or `None` (see the module docs).
    pub(super) fn account(bytes: &[u8]) -> Option<AccountFrame<'_>> {
        let (mut active, mut status) = (None, None);
        let (seq, did, time) = account_event(bytes, |key, at| match key {
            b"active" => put(&mut active, boolean(bytes, at)),
            b"status" if is_null(bytes, at) => Some(at + 1),
            b"status" => put(&mut status, text(bytes, at)),
            _ => other_scalar(bytes, at),
        })?;
        Some(AccountFrame {
            seq,
            did,
            time,
            active: active?,
            status,
        })
    }
}

/// Decodes one frame with serde alone: every frame type, and the commits the scan in
/// [`decode_frame`] does not take. It gives what `decode_frame` gives, more slowly; it is
/// public so that tests outside this crate can hold the two against each other.
pub fn decode_frame_general(bytes: &[u8]) -> Result<Frame<'_>, FrameError> {
    let mut de = serde_ipld_dagcbor::de::Deserializer::from_slice(bytes);
    let header = Header::deserialize(&mut de).map_err(|e| FrameError::Header(e.to_string()))?;
    // One macro instead of a generic fn: the slice reader type is private to the CBOR crate.
    macro_rules! body {
        ($kind:expr) => {
            Deserialize::deserialize(&mut de).map_err(|e| FrameError::Body {
                kind: $kind.to_string(),
                message: e.to_string(),
            })?
        };
    }
    let frame = match header.op {
        1 => {
            let t = header
                .t
                .ok_or_else(|| FrameError::Header("message frame without `t`".into()))?;
            match t {
                "#commit" => Frame::Commit(body!(t)),
                "#identity" => Frame::Identity(body!(t)),
                "#account" => Frame::Account(body!(t)),
                "#sync" => Frame::Sync(body!(t)),
                "#info" => Frame::Info(body!(t)),
                other => {
                    // Skip the unknown body but still check it is one well-formed value.
                    let _: Ipld = body!(other);
                    Frame::Unknown {
                        kind: other.to_string(),
                    }
                }
            }
        }
        -1 => Frame::Error(body!("error")),
        op => return Err(FrameError::UnknownOp(op)),
    };
    de.end().map_err(|_| FrameError::Trailing)?;
    Ok(frame)
}

#[derive(Serialize)]
struct OutHeader<'a> {
    op: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    t: Option<&'a str>,
}

/// Encodes a message frame of any event stream: header `{op: 1, t}` then `body`.
pub fn encode_message<T: Serialize>(t: &str, body: &T) -> Result<Vec<u8>, DataError> {
    let mut out = crate::data::encode_cbor(&OutHeader { op: 1, t: Some(t) })?;
    out.extend(crate::data::encode_cbor(body)?);
    Ok(out)
}

/// Encodes an error frame: header `{op: -1}` then `{error, message}`.
pub fn encode_error(error: &str, message: &str) -> Vec<u8> {
    let body = ErrorFrame {
        error: error.to_string(),
        message: Some(message.to_string()),
    };
    let mut out = crate::data::encode_cbor(&OutHeader { op: -1, t: None }).unwrap_or_default();
    out.extend(crate::data::encode_cbor(&body).unwrap_or_default());
    out
}

/// A frame of any event stream, with its body decoded as the caller's type.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamFrame<T> {
    /// `op: 1` with its message type `t`.
    Message {
        /// The header's `t`, e.g. `#labels`.
        t: String,
        /// The body, as `Ipld` when `t` is not the caller's type.
        body: Result<T, Ipld>,
    },
    /// `op: -1`.
    Error(ErrorFrame),
}

/// Decodes a frame of any subscription; bodies of type `t == want` decode as `T`, others as
/// `Ipld`.
pub fn decode_stream_frame<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    want: &str,
) -> Result<StreamFrame<T>, FrameError> {
    let mut de = serde_ipld_dagcbor::de::Deserializer::from_slice(bytes);
    let header = Header::deserialize(&mut de).map_err(|e| FrameError::Header(e.to_string()))?;
    let body_err = |kind: &str, e: serde_ipld_dagcbor::DecodeError<std::convert::Infallible>| {
        FrameError::Body {
            kind: kind.to_string(),
            message: e.to_string(),
        }
    };
    let frame = match header.op {
        1 => {
            let t = header
                .t
                .ok_or_else(|| FrameError::Header("message frame without `t`".into()))?
                .to_string();
            let body = if t == want {
                Ok(T::deserialize(&mut de).map_err(|e| body_err(&t, e))?)
            } else {
                Err(Ipld::deserialize(&mut de).map_err(|e| body_err(&t, e))?)
            };
            StreamFrame::Message { t, body }
        }
        -1 => {
            StreamFrame::Error(ErrorFrame::deserialize(&mut de).map_err(|e| body_err("error", e))?)
        }
        op => return Err(FrameError::UnknownOp(op)),
    };
    de.end().map_err(|_| FrameError::Trailing)?;
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{cid_for_cbor, encode_cbor};
    use std::collections::BTreeMap;

    fn link(n: u8) -> Ipld {
        Ipld::Link(cid_for_cbor(&[n]))
    }

    fn map(entries: Vec<(&str, Ipld)>) -> Ipld {
        Ipld::Map(
            entries
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect::<BTreeMap<_, _>>(),
        )
    }

    fn frame(header: &Ipld, body: &Ipld) -> Vec<u8> {
        let mut bytes = encode_cbor(header).unwrap();
        bytes.extend(encode_cbor(body).unwrap());
        bytes
    }

    fn commit_header() -> Ipld {
        header("#commit")
    }

    fn op(action: &str, path: &str, cid: Option<Ipld>, prev: Option<Ipld>) -> Ipld {
        let mut entries = vec![
            ("action", Ipld::String(action.into())),
            ("path", Ipld::String(path.into())),
            ("cid", cid.unwrap_or(Ipld::Null)),
        ];
        if let Some(prev) = prev {
            entries.push(("prev", prev));
        }
        map(entries)
    }

    /// Commit bodies of every shape the scan takes, and some it leaves to serde.
    fn bodies() -> Vec<Ipld> {
        let base = || {
            vec![
                ("seq", Ipld::Integer(4_621_317_030)),
                ("rebase", Ipld::Bool(false)),
                ("tooBig", Ipld::Bool(false)),
                ("repo", Ipld::String("did:plc:abc".into())),
                ("commit", link(1)),
                ("rev", Ipld::String("3lbqtdx5zyc2a".into())),
                ("since", Ipld::String("3lbqtdx5zyc22".into())),
                ("blocks", Ipld::Bytes(vec![1, 2, 3])),
                (
                    "ops",
                    Ipld::List(vec![
                        op("create", "app.bsky.feed.like/3l", Some(link(2)), None),
                        op("delete", "app.bsky.feed.post/3k", None, Some(link(3))),
                    ]),
                ),
                ("blobs", Ipld::List(vec![link(4)])),
                ("prevData", link(5)),
                ("time", Ipld::String("2026-01-01T00:00:00.000Z".into())),
            ]
        };
        let with = |changes: Vec<(&'static str, Option<Ipld>)>| {
            let mut entries = base();
            for (key, value) in changes {
                entries.retain(|(k, _)| *k != key);
                if let Some(v) = value {
                    entries.push((key, v));
                }
            }
            map(entries)
        };
        vec![
            map(base()),
            with(vec![
                ("since", Some(Ipld::Null)),
                ("blobs", Some(Ipld::Null)),
            ]),
            with(vec![("since", None), ("blobs", None), ("prevData", None)]),
            with(vec![
                ("prevData", Some(Ipld::Null)),
                ("tooBig", Some(Ipld::Bool(true))),
            ]),
            with(vec![("seq", Some(Ipld::Integer(-3)))]),
            with(vec![("ops", Some(Ipld::List(vec![])))]),
            with(vec![("extra", Some(Ipld::String("kept aside".into())))]),
            // Left to serde: an unknown key with a map, a float, a missing field, wrong types.
            with(vec![("extra", Some(map(vec![("a", Ipld::Integer(1))])))]),
            with(vec![("extra", Some(Ipld::Float(1.5)))]),
            with(vec![("time", None)]),
            with(vec![("seq", Some(Ipld::String("1".into())))]),
            with(vec![("commit", Some(Ipld::Bytes(vec![0, 1])))]),
            with(vec![("ops", Some(Ipld::List(vec![Ipld::Integer(1)])))]),
            with(vec![("since", Some(Ipld::Integer(1)))]),
        ]
    }

    /// `decode_frame` and the general decoder agree, on success and on failure.
    fn agree(bytes: &[u8]) {
        assert_eq!(
            format!("{:?}", decode_frame(bytes)),
            format!("{:?}", decode_frame_general(bytes)),
            "frame {bytes:02x?}"
        );
    }

    #[test]
    fn the_commit_scan_takes_canonical_commits_and_agrees_with_serde() {
        let bodies = bodies();
        for (i, body) in bodies.iter().enumerate() {
            let bytes = frame(&commit_header(), body);
            assert!(bytes.starts_with(COMMIT_HEADER));
            let scanned = body_scan::commit(&bytes[COMMIT_HEADER.len()..]);
            // The first seven bodies are the scan's; the rest it leaves to serde.
            assert_eq!(scanned.is_some(), i < 7, "body {i}: {body:?}");
            if let Some(commit) = scanned {
                let Ok(Frame::Commit(general)) = decode_frame_general(&bytes) else {
                    panic!("body {i}: serde refused what the scan took")
                };
                assert_eq!(commit, general, "body {i}");
            }
            agree(&bytes);
        }
    }

    #[test]
    fn damaged_commits_decode_as_serde_decodes_them() {
        // Every truncation and single-byte change of every body: the scan either gives what
        // serde gives or steps aside, so the results (values and errors) are the same.
        for body in bodies() {
            agree_when_damaged(&frame(&commit_header(), &body));
        }
    }

    /// `agree` on every truncation of a frame, every single-byte change, and a byte appended.
    fn agree_when_damaged(bytes: &[u8]) {
        for end in 0..bytes.len() {
            agree(&bytes[..end]);
        }
        let mut damaged = bytes.to_vec();
        for at in 0..bytes.len() {
            for flip in [0x01u8, 0x02, 0x20, 0x40, 0x80, 0xff] {
                damaged[at] ^= flip;
                agree(&damaged);
                damaged[at] ^= flip;
            }
        }
        let mut trailing = bytes.to_vec();
        trailing.push(0);
        agree(&trailing);
    }

    fn header(t: &str) -> Ipld {
        map(vec![
            ("op", Ipld::Integer(1)),
            ("t", Ipld::String(t.into())),
        ])
    }

    /// `#identity` and `#account` bodies: how many the scan takes (the first ones), then the
    /// bodies it leaves to serde.
    fn identity_and_account_bodies() -> Vec<(&'static str, usize, Vec<Ipld>)> {
        let did = (
            "did",
            Ipld::String("did:plc:ewvi7nxzyoun6zhxrhs64oiz".into()),
        );
        let seq = ("seq", Ipld::Integer(41));
        let time = ("time", Ipld::String("2026-01-01T00:00:00.000Z".into()));
        let body = |extra: Vec<(&str, Ipld)>, without: &str| {
            let mut entries = vec![did.clone(), seq.clone(), time.clone()];
            entries.retain(|(k, _)| *k != without);
            entries.extend(extra);
            map(entries)
        };
        let identity = vec![
            body(vec![("handle", Ipld::String("alice.test".into()))], ""),
            body(vec![], ""),
            body(vec![("handle", Ipld::Null)], ""),
            body(vec![("extra", Ipld::Integer(-7))], ""),
            body(vec![("seq", Ipld::Integer(-3))], ""),
            // Left to serde.
            body(vec![("handle", Ipld::Integer(1))], ""),
            body(vec![("extra", map(vec![("a", Ipld::Integer(1))]))], ""),
            body(vec![], "time"),
            body(vec![("seq", Ipld::String("1".into()))], ""),
        ];
        let active = |b: bool| ("active", Ipld::Bool(b));
        let account = vec![
            body(vec![active(true)], ""),
            body(
                vec![active(false), ("status", Ipld::String("takendown".into()))],
                "",
            ),
            body(vec![active(false), ("status", Ipld::Null)], ""),
            body(vec![active(true), ("extra", Ipld::Bool(false))], ""),
            // Left to serde.
            body(vec![], ""),
            body(vec![("active", Ipld::Integer(1))], ""),
            body(vec![active(true), ("status", Ipld::Integer(2))], ""),
            body(vec![active(true), ("extra", Ipld::Float(0.5))], ""),
            body(vec![active(true)], "did"),
        ];
        vec![("#identity", 5, identity), ("#account", 4, account)]
    }

    #[test]
    fn identity_and_account_scans_agree_with_serde() {
        for (t, taken, bodies) in identity_and_account_bodies() {
            let header = header(t);
            let prefix = encode_cbor(&header).unwrap();
            assert_eq!(
                prefix,
                if t == "#identity" {
                    IDENTITY_HEADER
                } else {
                    ACCOUNT_HEADER
                }
            );
            for (i, body) in bodies.iter().enumerate() {
                let bytes = frame(&header, body);
                let rest = &bytes[prefix.len()..];
                let scanned = if t == "#identity" {
                    body_scan::identity(rest).map(Frame::Identity)
                } else {
                    body_scan::account(rest).map(Frame::Account)
                };
                assert_eq!(scanned.is_some(), i < taken, "{t} body {i}: {body:?}");
                if let Some(scanned) = scanned {
                    assert_eq!(
                        format!("{scanned:?}"),
                        format!("{:?}", decode_frame_general(&bytes).unwrap()),
                        "{t} body {i}"
                    );
                }
                agree(&bytes);
            }
        }
    }

    #[test]
    fn damaged_identity_and_account_frames_decode_as_serde_decodes_them() {
        for (t, _, bodies) in identity_and_account_bodies() {
            for body in bodies {
                agree_when_damaged(&frame(&header(t), &body));
            }
        }
    }

    /// A map encoded with its entries in the order given, canonical or not.
    fn raw_map(entries: &[(&str, Ipld)]) -> Vec<u8> {
        let mut out = Vec::new();
        crate::cbor::write_head(&mut out, 5, entries.len() as u64);
        for (key, value) in entries {
            out.extend(encode_cbor(&Ipld::String(key.to_string())).unwrap());
            out.extend(encode_cbor(value).unwrap());
        }
        out
    }

    #[test]
    fn keys_out_of_canonical_order_or_repeated_go_to_serde() {
        let Ipld::Map(base) = &bodies()[0] else {
            panic!()
        };
        let canonical: Vec<(&str, Ipld)> = {
            let mut entries: Vec<(&str, Ipld)> =
                base.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            entries.sort_by(|a, b| (a.0.len(), a.0).cmp(&(b.0.len(), b.0)));
            entries
        };
        assert_eq!(raw_map(&canonical), encode_cbor(&bodies()[0]).unwrap());
        assert!(body_scan::commit(&raw_map(&canonical)).is_some());
        let mut header = encode_cbor(&commit_header()).unwrap();
        // `rev` and `seq` swapped: same length, so only the bytes order them.
        let mut swapped = canonical.clone();
        let (r, q) = (
            swapped.iter().position(|e| e.0 == "rev").unwrap(),
            swapped.iter().position(|e| e.0 == "seq").unwrap(),
        );
        swapped.swap(r, q);
        // `time` (4 bytes) before `ops` (3 bytes): the longer key first.
        let mut longer_first = canonical.clone();
        let (t, o) = (
            longer_first.iter().position(|e| e.0 == "time").unwrap(),
            longer_first.iter().position(|e| e.0 == "ops").unwrap(),
        );
        longer_first.swap(t, o);
        // `time` twice, side by side.
        let mut repeated = canonical.clone();
        let at = repeated.iter().position(|e| e.0 == "time").unwrap();
        repeated.insert(
            at + 1,
            ("time", Ipld::String("2026-01-02T00:00:00.000Z".into())),
        );
        for body in [swapped, longer_first, repeated] {
            let bytes = raw_map(&body);
            assert!(body_scan::commit(&bytes).is_none(), "{body:?}");
            header.truncate(COMMIT_HEADER.len());
            header.extend(&bytes);
            agree(&header);
        }
    }

    #[test]
    fn a_non_canonical_commit_goes_to_serde() {
        // `seq` as a non-minimal integer: 5 in one extra byte. serde reads it; the scan does not.
        let body = map(vec![("seq", Ipld::Integer(5))]);
        let canonical = encode_cbor(&body).unwrap();
        let mut loose = canonical.clone();
        let at = loose.iter().position(|&b| b == 0x05).unwrap();
        loose.splice(at..=at, [0x18, 0x05]);
        assert!(body_scan::commit(&loose).is_none());
        let mut bytes = encode_cbor(&commit_header()).unwrap();
        bytes.extend(&loose);
        agree(&bytes);
    }
}

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
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
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

    struct Bytes;

    impl Visitor<'_> for Bytes {
        type Value = Cid;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("CID bytes")
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Cid, E> {
            match crate::car::read_sha256_cid_v1(v) {
                Some((cid, [])) => Ok(cid),
                _ => Cid::try_from(v).map_err(|e| E::custom(format!("bad CID: {e}"))),
            }
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

//! The typed event every source yields, whatever the wire: firehose frames and Jetstream JSON
//! both become an [`Event`].

use crate::car::Car;
use crate::crypto::PublicKey;
use crate::data::{Ipld, encode_cbor, verify_block};
use crate::frame::{CommitError, CommitFrame, Frame, SyncFrame};
use crate::record::Record;
use cid::Cid;
use compact_str::CompactString;
use serde_json::{Value, json};
use std::borrow::Cow;

/// One repo or account event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The source's position for this event: the firehose `seq`, or Jetstream's `time_us`.
    pub cursor: i64,
    /// The account's DID.
    pub did: CompactString,
    /// When the source says the event happened (atproto datetime, as sent).
    pub time: CompactString,
    /// What happened.
    pub body: EventBody,
}

// Events travel by value from the decoder through the dispatcher's batches to a worker: every
// byte here is copied several times per event.
const _: () = assert!(std::mem::size_of::<Event>() <= 136);

/// What an event is about.
#[derive(Debug, Clone, PartialEq)]
pub enum EventBody {
    /// Records created, updated or deleted.
    Commit(Commit),
    /// Handle or DID document change.
    Identity {
        /// The current handle, if sent.
        handle: Option<CompactString>,
    },
    /// Hosting status change.
    Account {
        /// Whether the account is active.
        active: bool,
        /// Why not: `takendown`, `suspended`, `deleted`, `deactivated`, ...
        status: Option<CompactString>,
    },
    /// The repo was reset to a new commit; consumers should re-sync it.
    Sync {
        /// The new revision.
        rev: CompactString,
    },
}

impl EventBody {
    /// `commit`, `identity`, `account` or `sync`.
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::Commit(_) => "commit",
            EventBody::Identity { .. } => "identity",
            EventBody::Account { .. } => "account",
            EventBody::Sync { .. } => "sync",
        }
    }
}

/// A repo commit.
#[derive(Debug, Clone, PartialEq)]
pub struct Commit {
    /// Revision (TID) of this commit.
    pub rev: CompactString,
    /// Revision this diff is against.
    pub since: Option<CompactString>,
    /// The commit was too big for the relay to include its blocks: ops have CIDs but no
    /// records. Surfaced so a consumer can fetch the repo instead of silently missing data.
    pub too_big: bool,
    /// Whether the commit signature was checked against the account's key.
    pub signature: SignatureCheck,
    /// The record operations, in commit order.
    pub ops: Vec<Op>,
}

/// Whether a commit's signature was verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureCheck {
    /// Verified against the account's signing key.
    Verified,
    /// Not checked: the key was not known, or the source (Jetstream) carries no signature.
    Unchecked,
}

/// What an op did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// A new record.
    Create,
    /// A record replaced.
    Update,
    /// A record removed.
    Delete,
}

impl Action {
    /// Parses `create` / `update` / `delete`.
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "create" => Some(Action::Create),
            "update" => Some(Action::Update),
            "delete" => Some(Action::Delete),
            _ => None,
        }
    }

    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }
}

/// One record operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    /// Create, update or delete.
    pub action: Action,
    /// The collection NSID.
    pub collection: CompactString,
    /// The record key.
    pub rkey: CompactString,
    /// The new record's CID (none for deletes).
    pub cid: Option<Cid>,
    /// The previous record's CID, when the source sends it (sync v1.1).
    pub prev: Option<Cid>,
    /// The record, for creates and updates whose block was present and matched its CID.
    pub record: Option<Record>,
    /// Why `record` is missing on a create or update (e.g. `tooBig`, block absent).
    pub record_problem: Option<String>,
}

impl Op {
    /// `collection/rkey`.
    pub fn path(&self) -> String {
        format!("{}/{}", self.collection, self.rkey)
    }

    /// `at://did/collection/rkey`.
    pub fn uri(&self, did: &str) -> String {
        format!("at://{did}/{}/{}", self.collection, self.rkey)
    }
}

/// Splits an op path `collection/rkey`.
pub fn split_path(path: &str) -> Option<(&str, &str)> {
    let (collection, rkey) = path.split_once('/')?;
    (!collection.is_empty() && !rkey.is_empty() && !rkey.contains('/'))
        .then_some((collection, rkey))
}

/// The signed commit object inside a commit's CAR, borrowed from the block where it can be.
#[derive(Debug, Clone)]
pub struct SignedCommit<'a> {
    /// The repo's DID.
    pub did: Cow<'a, str>,
    /// Repo format version (3).
    pub version: i64,
    /// The MST root.
    pub data: Cid,
    /// Revision.
    pub rev: Cow<'a, str>,
    /// The signature over the commit without `sig`.
    pub sig: Cow<'a, [u8]>,
    unsigned: Unsigned<'a>,
}

/// The bytes the signature covers: spliced out of a canonical block when asked for (a firehose
/// consumer that does not verify never needs them), or encoded again from a decoded one.
#[derive(Debug, Clone)]
enum Unsigned<'a> {
    Splice {
        block: &'a [u8],
        /// Entries in the map without `sig`.
        entries: u64,
        /// Where the map's entries start, and the `sig` entry's range.
        body_start: usize,
        sig_entry: (usize, usize),
    },
    Encoded(Vec<u8>),
}

impl PartialEq for SignedCommit<'_> {
    fn eq(&self, other: &Self) -> bool {
        (&self.did, self.version, self.data, &self.rev, &self.sig)
            == (
                &other.did,
                other.version,
                other.data,
                &other.rev,
                &other.sig,
            )
            && self.unsigned_bytes() == other.unsigned_bytes()
    }
}

impl<'a> SignedCommit<'a> {
    /// Decodes and checks the commit block (hash must match `cid`).
    pub fn from_block(cid: &Cid, bytes: &'a [u8]) -> Result<Self, CommitError> {
        verify_block(cid, bytes)?;
        match Self::scan_canonical(bytes) {
            Some(commit) => Ok(commit),
            None => Self::decode_and_reencode(bytes),
        }
    }

    /// The DAG-CBOR bytes of the commit without `sig`: what the signature covers.
    pub fn unsigned_bytes(&self) -> Cow<'_, [u8]> {
        match &self.unsigned {
            Unsigned::Encoded(bytes) => Cow::Borrowed(bytes),
            Unsigned::Splice {
                block,
                entries,
                body_start,
                sig_entry: (start, end),
            } => {
                let mut out = Vec::with_capacity(block.len() - (end - start));
                crate::cbor::write_head(&mut out, 5, *entries);
                out.extend_from_slice(&block[*body_start..*start]);
                out.extend_from_slice(&block[*end..]);
                Cow::Owned(out)
            }
        }
    }

    /// The fast path for a canonical block: the fields read in place, and the unsigned bytes
    /// spliced out of the block (the same bytes re-encoding would give). `None` when the block
    /// is not canonical DAG-CBOR or not a well-formed commit; the general path then decodes it
    /// and says what is wrong.
    fn scan_canonical(bytes: &'a [u8]) -> Option<Self> {
        use crate::cbor::{head, map_key, scan, string};
        let (map, mut at) = head(bytes, 0).ok()?;
        if map.major != 5 || !map.minimal {
            return None;
        }
        let body_start = at;
        let (mut did, mut rev, mut version, mut data, mut sig) = (None, None, None, None, None);
        let mut sig_entry = None;
        let mut previous_key: Option<&[u8]> = None;
        for _ in 0..map.arg {
            let entry = at;
            // The same canonical checks as `scan`, one entry at a time.
            let key = map_key(bytes, at, previous_key, 1)
                .ok()
                .filter(|k| k.canonical)?;
            previous_key = Some(key.encoded);
            let key_end = key.end;
            let (h, payload) = head(bytes, key_end).ok()?;
            let value_end = match h.major {
                // Strings are checked here, once: their bytes are the fields.
                2 | 3 => {
                    let (_, a, b) = string(bytes, key_end).ok()?;
                    if !h.minimal {
                        return None;
                    }
                    let raw = &bytes[a..b];
                    match (key.text, h.major) {
                        (b"did", 3) => did = Some(crate::cbor::utf8(raw)?),
                        (b"rev", 3) => rev = Some(crate::cbor::utf8(raw)?),
                        (b"sig", 2) => {
                            sig = Some(raw);
                            sig_entry = Some((entry, b));
                        }
                        (_, 3) => {
                            crate::cbor::utf8(raw)?;
                        }
                        _ => {}
                    }
                    b
                }
                _ => {
                    let value = scan(bytes, key_end).ok().filter(|v| v.canonical)?;
                    match key.text {
                        b"version" if h.major == 0 => version = i64::try_from(h.arg).ok(),
                        b"version" if h.major == 1 => {
                            version = i64::try_from(h.arg).ok().map(|n| -1 - n)
                        }
                        b"data" if h.major == 6 && h.arg == 42 => {
                            let (_, a, b) = string(bytes, payload).ok()?;
                            let link = bytes.get(a..b)?.strip_prefix(&[0])?;
                            data = Cid::try_from(link).ok();
                        }
                        _ => {}
                    }
                    value.end
                }
            };
            at = value_end;
        }
        if at != bytes.len() {
            return None;
        }
        Some(SignedCommit {
            did: Cow::Borrowed(did?),
            version: version?,
            data: data?,
            rev: Cow::Borrowed(rev?),
            sig: Cow::Borrowed(sig?),
            unsigned: Unsigned::Splice {
                block: bytes,
                entries: map.arg - 1,
                body_start,
                sig_entry: sig_entry?,
            },
        })
    }

    /// The general path: decode into the data model, take `sig` out, encode the rest.
    fn decode_and_reencode(bytes: &[u8]) -> Result<Self, CommitError> {
        let value: Ipld = serde_ipld_dagcbor::from_slice(bytes)
            .map_err(|e| CommitError::BadCommit(e.to_string()))?;
        let Ipld::Map(mut map) = value else {
            return Err(CommitError::BadCommit("not a map".into()));
        };
        let sig = match map.remove("sig") {
            Some(Ipld::Bytes(sig)) => sig,
            _ => return Err(CommitError::BadCommit("missing `sig` bytes".into())),
        };
        let text = |map: &std::collections::BTreeMap<String, Ipld>, key: &str| match map.get(key) {
            Some(Ipld::String(s)) => Ok(s.clone()),
            _ => Err(CommitError::BadCommit(format!("missing string `{key}`"))),
        };
        let did = text(&map, "did")?;
        let rev = text(&map, "rev")?;
        let version = match map.get("version") {
            Some(Ipld::Integer(v)) => i64::try_from(*v).unwrap_or(-1),
            _ => return Err(CommitError::BadCommit("missing `version`".into())),
        };
        let data = match map.get("data") {
            Some(Ipld::Link(c)) => *c,
            _ => return Err(CommitError::BadCommit("missing `data` link".into())),
        };
        let unsigned_bytes = encode_cbor(&Ipld::Map(map))?;
        Ok(SignedCommit {
            did: Cow::Owned(did),
            version,
            data,
            rev: Cow::Owned(rev),
            sig: Cow::Owned(sig),
            unsigned: Unsigned::Encoded(unsigned_bytes),
        })
    }

    /// Verifies the signature with the account's signing key.
    pub fn verify(&self, key: &PublicKey) -> Result<(), CommitError> {
        Ok(key.verify(&self.unsigned_bytes(), &self.sig)?)
    }

    fn check_matches(&self, did: &str, rev: &str) -> Result<(), CommitError> {
        if self.did != did {
            return Err(CommitError::Mismatch {
                field: "did",
                inner: self.did.to_string(),
                outer: did.into(),
            });
        }
        if self.rev != rev {
            return Err(CommitError::Mismatch {
                field: "rev",
                inner: self.rev.to_string(),
                outer: rev.into(),
            });
        }
        Ok(())
    }
}

impl CommitFrame<'_> {
    /// Resolves the ops to records, checking each record block against its CID, and — when
    /// `key` is given — the commit's signature. A record that is missing does not fail the
    /// commit (it is reported on the op); a block that does not match its CID does, because
    /// then the frame is not what the repo signed. Records are decoded when first read
    /// ([`Record::from_block`]); one whose block is not DAG-CBOR reads as `null`.
    pub fn to_event(&self, key: Option<&PublicKey>) -> Result<Event, CommitError> {
        let car = if self.too_big || self.blocks.is_empty() {
            None
        } else {
            Some(Car::parse(self.blocks)?)
        };
        let mut signature = SignatureCheck::Unchecked;
        if let Some(car) = &car {
            let block = car
                .get(&self.commit)
                .ok_or_else(|| CommitError::MissingCommit(self.commit.to_string()))?;
            let signed = SignedCommit::from_block(&self.commit, block)?;
            signed.check_matches(self.repo, self.rev)?;
            if let Some(key) = key {
                signed.verify(key)?;
                signature = SignatureCheck::Verified;
            }
        }
        let mut ops = Vec::with_capacity(self.ops.len());
        for op in &self.ops {
            let action =
                Action::parse(op.action).ok_or_else(|| CommitError::BadAction(op.action.into()))?;
            let (collection, rkey) =
                split_path(op.path).ok_or_else(|| CommitError::BadPath(op.path.into()))?;
            let (mut record, mut record_problem) = (None, None);
            if action != Action::Delete {
                match (&car, &op.cid) {
                    (_, None) => record_problem = Some("op has no CID".to_string()),
                    (None, Some(_)) => {
                        record_problem =
                            Some(if self.too_big { "tooBig" } else { "no blocks" }.into())
                    }
                    (Some(car), Some(cid)) => match car.get(cid) {
                        None => record_problem = Some("record block missing from CAR".into()),
                        Some(bytes) => {
                            verify_block(cid, bytes)?;
                            record = Some(Record::from_block(bytes));
                        }
                    },
                }
            }
            ops.push(Op {
                action,
                collection: collection.into(),
                rkey: rkey.into(),
                cid: op.cid,
                prev: op.prev,
                record,
                record_problem,
            });
        }
        Ok(Event {
            cursor: self.seq,
            did: self.repo.into(),
            time: self.time.into(),
            body: EventBody::Commit(Commit {
                rev: self.rev.into(),
                since: self.since.map(CompactString::from),
                too_big: self.too_big,
                signature,
                ops,
            }),
        })
    }
}

impl SyncFrame<'_> {
    /// Checks the `#sync` commit block (and its signature when `key` is given).
    pub fn to_event(&self, key: Option<&PublicKey>) -> Result<Event, CommitError> {
        let car = Car::parse(self.blocks)?;
        let root = *car
            .roots()
            .first()
            .ok_or_else(|| CommitError::BadCommit("#sync CAR has no root".into()))?;
        let block = car
            .get(&root)
            .ok_or_else(|| CommitError::MissingCommit(root.to_string()))?;
        let signed = SignedCommit::from_block(&root, block)?;
        signed.check_matches(self.did, self.rev)?;
        if let Some(key) = key {
            signed.verify(key)?;
        }
        Ok(Event {
            cursor: self.seq,
            did: self.did.into(),
            time: self.time.into(),
            body: EventBody::Sync {
                rev: self.rev.into(),
            },
        })
    }
}

impl Frame<'_> {
    /// The repo DID a message frame is about.
    pub fn did(&self) -> Option<&str> {
        match self {
            Frame::Commit(c) => Some(c.repo),
            Frame::Identity(f) => Some(f.did),
            Frame::Account(f) => Some(f.did),
            Frame::Sync(f) => Some(f.did),
            _ => None,
        }
    }

    /// Turns a repo/account frame into an [`Event`]; `None` for `#info`, errors and unknown
    /// types, which are stream control, not events.
    pub fn to_event(&self, key: Option<&PublicKey>) -> Result<Option<Event>, CommitError> {
        Ok(Some(match self {
            Frame::Commit(c) => c.to_event(key)?,
            Frame::Sync(s) => s.to_event(key)?,
            Frame::Identity(f) => Event {
                cursor: f.seq,
                did: f.did.into(),
                time: f.time.into(),
                body: EventBody::Identity {
                    handle: f.handle.map(CompactString::from),
                },
            },
            Frame::Account(f) => Event {
                cursor: f.seq,
                did: f.did.into(),
                time: f.time.into(),
                body: EventBody::Account {
                    active: f.active,
                    status: f.status.map(CompactString::from),
                },
            },
            Frame::Info(_) | Frame::Error(_) | Frame::Unknown { .. } => return Ok(None),
        }))
    }
}

impl Event {
    /// The event as one JSON object, for `skywarden ingest` and scripts. With `records`, each
    /// op carries its record as atproto JSON.
    pub fn to_json(&self, records: bool) -> Value {
        let mut out = json!({
            "cursor": self.cursor,
            "kind": self.body.kind(),
            "did": self.did,
            "time": self.time,
        });
        let obj = out.as_object_mut().expect("literal object");
        match &self.body {
            EventBody::Commit(c) => {
                obj.insert("rev".into(), json!(c.rev));
                if c.too_big {
                    obj.insert("tooBig".into(), json!(true));
                }
                if c.signature == SignatureCheck::Verified {
                    obj.insert("verified".into(), json!(true));
                }
                let ops: Vec<Value> = c
                    .ops
                    .iter()
                    .map(|op| {
                        let mut o = json!({ "action": op.action.as_str(), "path": op.path() });
                        let m = o.as_object_mut().expect("literal object");
                        if let Some(cid) = &op.cid {
                            m.insert("cid".into(), json!(cid.to_string()));
                        }
                        if let Some(p) = &op.record_problem {
                            m.insert("recordProblem".into(), json!(p));
                        }
                        if let Some(r) = op.record.as_ref().filter(|_| records) {
                            m.insert("record".into(), r.to_json());
                        }
                        o
                    })
                    .collect();
                obj.insert("ops".into(), Value::Array(ops));
            }
            EventBody::Identity { handle } => {
                obj.insert("handle".into(), json!(handle));
            }
            EventBody::Account { active, status } => {
                obj.insert("active".into(), json!(active));
                obj.insert("status".into(), json!(status));
            }
            EventBody::Sync { rev } => {
                obj.insert("rev".into(), json!(rev));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::cid_for_cbor;
    use std::collections::BTreeMap;

    fn commit_map() -> BTreeMap<String, Ipld> {
        let mut map = BTreeMap::new();
        map.insert("did".into(), Ipld::String("did:plc:abc".into()));
        map.insert("version".into(), Ipld::Integer(3));
        map.insert("data".into(), Ipld::Link(cid_for_cbor(b"\xa0")));
        map.insert("rev".into(), Ipld::String("3lbqtdx5zyc2a".into()));
        map.insert("prev".into(), Ipld::Null);
        map.insert("sig".into(), Ipld::Bytes(vec![7; 64]));
        map
    }

    #[test]
    fn the_fast_path_splices_the_bytes_re_encoding_gives() {
        let mut map = commit_map();
        // An extra field is covered by the signature too.
        map.insert("extension".into(), Ipld::List(vec![Ipld::Integer(1)]));
        let bytes = encode_cbor(&Ipld::Map(map)).unwrap();
        let fast = SignedCommit::scan_canonical(&bytes).expect("canonical");
        let general = SignedCommit::decode_and_reencode(&bytes).unwrap();
        assert_eq!(fast, general);
        let mut unsigned = commit_map();
        unsigned.remove("sig");
        unsigned.insert("extension".into(), Ipld::List(vec![Ipld::Integer(1)]));
        assert_eq!(
            fast.unsigned_bytes().as_ref(),
            encode_cbor(&Ipld::Map(unsigned)).unwrap()
        );
    }

    #[test]
    fn a_non_canonical_commit_takes_the_general_path() {
        // `version` as a non-minimal integer: 3 in one extra byte.
        let canonical = encode_cbor(&Ipld::Map(commit_map())).unwrap();
        let at = canonical
            .windows(8)
            .position(|w| w == b"\x67version")
            .unwrap()
            + 8;
        assert_eq!(canonical[at], 0x03);
        let mut odd = canonical[..at].to_vec();
        odd.extend_from_slice(&[0x18, 0x03]);
        odd.extend_from_slice(&canonical[at + 1..]);
        assert!(SignedCommit::scan_canonical(&odd).is_none());
        let commit = SignedCommit::from_block(&cid_for_cbor(&odd), &odd).unwrap();
        // What the signature covers is the canonical encoding, whatever the block's form.
        assert_eq!(
            commit.unsigned_bytes(),
            SignedCommit::scan_canonical(&canonical)
                .unwrap()
                .unsigned_bytes()
        );
    }

    #[test]
    fn a_commit_without_its_fields_is_an_error() {
        for missing in ["did", "rev", "sig", "data", "version"] {
            let mut map = commit_map();
            map.remove(missing);
            let bytes = encode_cbor(&Ipld::Map(map)).unwrap();
            assert!(SignedCommit::scan_canonical(&bytes).is_none(), "{missing}");
            let err = SignedCommit::from_block(&cid_for_cbor(&bytes), &bytes).unwrap_err();
            assert!(err.to_string().contains(missing), "{missing}: {err}");
        }
    }
}

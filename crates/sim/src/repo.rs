//! One simulated repo: records in a Merkle Search Tree, signed commits, and the `#commit`
//! frame body a PDS would emit for each change.

use cid::Cid;
use serde::Serialize;
use skywarden_atproto::car::write_car;
use skywarden_atproto::crypto::SigningKey;
use skywarden_atproto::data::{Ipld, cid_for_cbor, encode_cbor};
use skywarden_atproto::mst::Mst;
use std::collections::HashSet;

/// A change to one record.
#[derive(Debug, Clone)]
pub enum Change {
    /// Create or update `collection/rkey` with this record.
    Put {
        /// `collection/rkey`.
        path: String,
        /// The record.
        record: Ipld,
    },
    /// Delete `collection/rkey`.
    Delete {
        /// `collection/rkey`.
        path: String,
    },
}

/// A repo: its records' CIDs by path in an MST, its last commit.
#[derive(Debug)]
pub struct Repo {
    /// The account's DID.
    pub did: String,
    records: Mst,
    data: Option<Cid>,
    /// The last commit's revision.
    pub rev: Option<String>,
}

#[derive(Serialize)]
struct CommitFields<'a> {
    did: &'a str,
    version: i64,
    data: Cid,
    rev: &'a str,
    prev: Option<Cid>,
}

#[derive(Serialize)]
struct SignedCommitFields<'a> {
    did: &'a str,
    version: i64,
    data: Cid,
    rev: &'a str,
    prev: Option<Cid>,
    #[serde(with = "serde_bytes")]
    sig: &'a [u8],
}

/// One op of a commit, as the frame lists it.
#[derive(Debug, Clone, Serialize)]
pub struct FrameOp {
    /// `create`, `update`, `delete`.
    pub action: &'static str,
    /// `collection/rkey`.
    pub path: String,
    /// The new record's CID (null for deletes).
    pub cid: Option<Cid>,
    /// The previous record's CID (updates and deletes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev: Option<Cid>,
}

/// A commit whose tree is settled but not yet signed. Signing is most of a commit's cost
/// and needs nothing of the repo, so it can happen on another thread while the repo goes on.
#[derive(Debug, Clone)]
pub struct UnsignedCommit {
    did: String,
    /// This revision.
    pub rev: String,
    /// The previous revision.
    pub since: Option<String>,
    data: Cid,
    /// The ops.
    pub ops: Vec<FrameOp>,
    /// MST root before the commit.
    pub prev_data: Option<Cid>,
    /// Blobs referenced by new records.
    pub blobs: Vec<Cid>,
    /// The blocks the CAR carries after the commit: new MST nodes, nodes on the ops' paths,
    /// new records.
    blocks: Vec<(Cid, Vec<u8>)>,
}

/// A signed commit: what the frame carries.
#[derive(Debug, Clone)]
pub struct SignedCommit {
    /// CID of the signed commit block.
    pub cid: Cid,
    /// CAR bytes: the commit, then the other blocks.
    pub car: Vec<u8>,
    /// This revision.
    pub rev: String,
    /// The previous revision.
    pub since: Option<String>,
    /// The ops.
    pub ops: Vec<FrameOp>,
    /// MST root before the commit.
    pub prev_data: Option<Cid>,
    /// Blobs referenced by new records.
    pub blobs: Vec<Cid>,
}

impl UnsignedCommit {
    /// Signs the commit with `key` and writes its CAR.
    pub fn sign(self, key: &SigningKey) -> SignedCommit {
        let unsigned = CommitFields {
            did: &self.did,
            version: 3,
            data: self.data,
            rev: &self.rev,
            prev: None,
        };
        let sig = key.sign(&encode_cbor(&unsigned).expect("commit encodes"));
        let signed = SignedCommitFields {
            did: &self.did,
            version: 3,
            data: self.data,
            rev: &self.rev,
            prev: None,
            sig: &sig,
        };
        let commit_bytes = encode_cbor(&signed).expect("commit encodes");
        let cid = cid_for_cbor(&commit_bytes);
        let mut blocks = self.blocks;
        blocks.insert(0, (cid, commit_bytes));
        SignedCommit {
            cid,
            car: write_car(&[cid], &blocks).expect("CAR encodes"),
            rev: self.rev,
            since: self.since,
            ops: self.ops,
            prev_data: self.prev_data,
            blobs: self.blobs,
        }
    }
}

impl Repo {
    /// An empty repo.
    pub fn new(did: String) -> Repo {
        Repo {
            did,
            records: Mst::new(),
            data: None,
            rev: None,
        }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the repo holds no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Whether `path` exists.
    pub fn contains(&self, path: &str) -> bool {
        self.records.get(path.as_bytes()).is_some()
    }

    /// The CID of the record at `path`.
    pub fn cid(&self, path: &str) -> Option<Cid> {
        self.records.get(path.as_bytes())
    }

    /// The paths, in key order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.records.keys().map(as_path)
    }

    /// The paths in `collection`, in key order.
    pub fn paths_in<'a>(&'a self, collection: &'a str) -> impl Iterator<Item = &'a str> {
        self.records
            .keys_with_prefix(collection.as_bytes())
            .filter(move |k| k.get(collection.len()) == Some(&b'/'))
            .map(as_path)
    }

    /// The `n`-th path in key order (for picking a record to update or delete).
    pub fn nth_path(&self, n: usize) -> Option<&str> {
        self.paths().nth(n)
    }

    /// Applies `changes` as one commit at revision `rev`, to be signed with
    /// [`UnsignedCommit::sign`].
    pub fn commit(&mut self, rev: String, changes: &[Change], blobs: Vec<Cid>) -> UnsignedCommit {
        let mut new_blocks: Vec<(Cid, Vec<u8>)> = Vec::new();
        let mut ops = Vec::with_capacity(changes.len());
        for change in changes {
            match change {
                Change::Put { path, record } => {
                    let bytes = encode_cbor(record).expect("records are valid data");
                    let cid = cid_for_cbor(&bytes);
                    let prev = self.records.insert(path.clone().into_bytes(), cid);
                    new_blocks.push((cid, bytes));
                    ops.push(FrameOp {
                        action: if prev.is_some() { "update" } else { "create" },
                        path: path.clone(),
                        cid: Some(cid),
                        prev,
                    });
                }
                Change::Delete { path } => {
                    let prev = self.records.remove(path.as_bytes());
                    ops.push(FrameOp {
                        action: "delete",
                        path: path.clone(),
                        cid: None,
                        prev,
                    });
                }
            }
        }
        // The blocks a PDS sends: the nodes that are new in this tree, and every node on the
        // search path of each op's key, changed or not, so that a consumer can prove each op
        // (a delete's absence, too) from the signed root. In the tree's order, so that the
        // same seed gives the same bytes.
        let mut encoded = Vec::new();
        let data = self
            .records
            .update_root(&mut encoded)
            .expect("MST nodes encode");
        let mut sent: HashSet<Cid> = HashSet::new();
        for node in encoded.iter().filter(|n| n.new) {
            if sent.insert(node.cid) {
                new_blocks.push((node.cid, node.bytes.clone()));
            }
        }
        for op in &ops {
            for cid in self.records.path(op.path.as_bytes()) {
                if sent.insert(cid) {
                    // The path of a changed key is re-encoded by the update.
                    let node = encoded.iter().find(|n| n.cid == cid).expect("re-encoded");
                    new_blocks.push((cid, node.bytes.clone()));
                }
            }
        }
        let prev_data = self.data.replace(data);
        let since = self.rev.replace(rev.clone());
        UnsignedCommit {
            did: self.did.clone(),
            rev,
            since,
            data,
            ops,
            prev_data,
            blobs,
            blocks: new_blocks,
        }
    }
}

/// A repo path from an MST key (the repo writes only `collection/rkey` strings).
fn as_path(key: &[u8]) -> &str {
    std::str::from_utf8(key).expect("repo paths are UTF-8")
}

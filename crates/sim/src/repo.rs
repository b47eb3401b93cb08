//! One simulated repo: records in a Merkle Search Tree, signed commits, and the `#commit`
//! frame body a PDS would emit for each change.

use cid::Cid;
use serde::Serialize;
use skywarden_atproto::car::write_car;
use skywarden_atproto::crypto::SigningKey;
use skywarden_atproto::data::{Ipld, cid_for_cbor, encode_cbor};
use skywarden_atproto::mst::root_cid;
use std::collections::{BTreeMap, HashSet};

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

/// A repo: its records' CIDs by path, its MST node blocks, its last commit.
#[derive(Debug)]
pub struct Repo {
    /// The account's DID.
    pub did: String,
    records: BTreeMap<String, Cid>,
    nodes: HashSet<Cid>,
    data: Option<Cid>,
    /// The last commit's revision.
    pub rev: Option<String>,
}

#[derive(Serialize)]
struct UnsignedCommit<'a> {
    did: &'a str,
    version: i64,
    data: Cid,
    rev: &'a str,
    prev: Option<Cid>,
}

#[derive(Serialize)]
struct SignedCommit<'a> {
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

/// What a commit produced: the frame's fields.
#[derive(Debug, Clone)]
pub struct CommitOutput {
    /// CID of the signed commit.
    pub commit: Cid,
    /// This revision.
    pub rev: String,
    /// The previous revision.
    pub since: Option<String>,
    /// CAR bytes: the commit, new MST nodes, new records.
    pub blocks: Vec<u8>,
    /// The ops.
    pub ops: Vec<FrameOp>,
    /// MST root before the commit.
    pub prev_data: Option<Cid>,
    /// Blobs referenced by new records.
    pub blobs: Vec<Cid>,
}

#[derive(serde::Deserialize)]
struct NodeIn {
    e: Vec<EntryIn>,
    l: Option<Cid>,
}

#[derive(serde::Deserialize)]
struct EntryIn {
    #[serde(with = "serde_bytes")]
    k: Vec<u8>,
    p: usize,
    t: Option<Cid>,
}

/// The nodes a lookup of `key` visits, from `root` down.
fn search_path(nodes: &std::collections::HashMap<Cid, Vec<u8>>, root: Cid, key: &[u8]) -> Vec<Cid> {
    let mut path = Vec::new();
    let mut at = Some(root);
    while let Some(cid) = at.take() {
        let Some(bytes) = nodes.get(&cid) else { break };
        path.push(cid);
        let Ok(node) = serde_ipld_dagcbor::from_slice::<NodeIn>(bytes) else {
            break;
        };
        // Descend into the gap where `key` falls, unless an entry holds it.
        let mut below = node.l;
        let mut previous: Vec<u8> = Vec::new();
        for entry in &node.e {
            let mut full = previous[..entry.p.min(previous.len())].to_vec();
            full.extend_from_slice(&entry.k);
            match key.cmp(&full[..]) {
                std::cmp::Ordering::Less => break,
                std::cmp::Ordering::Equal => {
                    below = None;
                    break;
                }
                std::cmp::Ordering::Greater => below = entry.t,
            }
            previous = full;
        }
        at = below;
    }
    path
}

impl Repo {
    /// An empty repo.
    pub fn new(did: String) -> Repo {
        Repo {
            did,
            records: BTreeMap::new(),
            nodes: HashSet::new(),
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
        self.records.contains_key(path)
    }

    /// The CID of the record at `path`.
    pub fn cid(&self, path: &str) -> Option<Cid> {
        self.records.get(path).copied()
    }

    /// The `n`-th path in key order (for picking a record to update or delete).
    pub fn nth_path(&self, n: usize) -> Option<&str> {
        self.records.keys().nth(n).map(String::as_str)
    }

    /// Applies `changes` as one commit at revision `rev`, signed with `key`.
    pub fn commit(
        &mut self,
        key: &SigningKey,
        rev: String,
        changes: &[Change],
        blobs: Vec<Cid>,
    ) -> CommitOutput {
        let mut new_blocks: Vec<(Cid, Vec<u8>)> = Vec::new();
        let mut ops = Vec::with_capacity(changes.len());
        for change in changes {
            match change {
                Change::Put { path, record } => {
                    let bytes = encode_cbor(record).expect("records are valid data");
                    let cid = cid_for_cbor(&bytes);
                    let prev = self.records.insert(path.clone(), cid);
                    new_blocks.push((cid, bytes));
                    ops.push(FrameOp {
                        action: if prev.is_some() { "update" } else { "create" },
                        path: path.clone(),
                        cid: Some(cid),
                        prev,
                    });
                }
                Change::Delete { path } => {
                    let prev = self.records.remove(path);
                    ops.push(FrameOp {
                        action: "delete",
                        path: path.clone(),
                        cid: None,
                        prev,
                    });
                }
            }
        }
        let entries: Vec<(Vec<u8>, Cid)> = self
            .records
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), *v))
            .collect();
        let mut tree = Vec::new();
        let data = root_cid(&entries, &mut tree).expect("MST nodes encode");
        let nodes: HashSet<Cid> = tree.iter().map(|(c, _)| *c).collect();
        // The blocks a PDS sends: the nodes that are new in this tree, and every node on the
        // search path of each op's key, changed or not, so that a consumer can prove each op
        // (a delete's absence, too) from the signed root.
        // (In the tree's order, not the map's: the same seed must give the same bytes.)
        let mut sent: HashSet<Cid> = HashSet::new();
        for (cid, bytes) in &tree {
            if !self.nodes.contains(cid) && sent.insert(*cid) {
                new_blocks.push((*cid, bytes.clone()));
            }
        }
        let by_cid: std::collections::HashMap<Cid, Vec<u8>> = tree.into_iter().collect();
        for op in &ops {
            for cid in search_path(&by_cid, data, op.path.as_bytes()) {
                if sent.insert(cid) {
                    new_blocks.push((cid, by_cid[&cid].clone()));
                }
            }
        }
        let unsigned = UnsignedCommit {
            did: &self.did,
            version: 3,
            data,
            rev: &rev,
            prev: None,
        };
        let sig = key.sign(&encode_cbor(&unsigned).expect("commit encodes"));
        let signed = SignedCommit {
            did: &self.did,
            version: 3,
            data,
            rev: &rev,
            prev: None,
            sig: &sig,
        };
        let commit_bytes = encode_cbor(&signed).expect("commit encodes");
        let commit = cid_for_cbor(&commit_bytes);
        new_blocks.insert(0, (commit, commit_bytes));
        let blocks = write_car(&[commit], &new_blocks).expect("CAR encodes");
        let prev_data = self.data.replace(data);
        self.nodes = nodes;
        let since = self.rev.replace(rev.clone());
        CommitOutput {
            commit,
            rev,
            since,
            blocks,
            ops,
            prev_data,
            blobs,
        }
    }
}

//! The Merkle Search Tree that holds a repo's records: key heights and the root CID of a set of
//! keys.
//!
//! A key's height is the number of leading zero bits of SHA-256(key), counted in pairs (fanout
//! 4). A node at height `h` holds the keys of height `h` in order; the gaps between them hold
//! subtrees one level down. Nodes encode as `{l, e: [{p, k, v, t}]}` with each key written as
//! the length of the prefix shared with the previous key plus the rest.
//!
//! [`root_cid`] builds a whole tree from its keys; [`Mst`] keeps one and, after a change,
//! re-encodes only the nodes on the changed keys' paths (what a repo host does per commit).

use crate::data::{DataError, cid_for_cbor, encode_cbor};
use cid::Cid;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

/// The height of a key in the tree.
pub fn key_height(key: &[u8]) -> u32 {
    let digest = Sha256::digest(key);
    let mut zeros = 0;
    for byte in digest.iter() {
        if *byte == 0 {
            zeros += 8;
            continue;
        }
        zeros += byte.leading_zeros();
        break;
    }
    zeros / 2
}

/// The number of leading bytes two keys share.
pub fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[derive(Serialize)]
struct Node<'a> {
    e: Vec<Entry<'a>>,
    l: Option<Cid>,
}

#[derive(Serialize)]
struct Entry<'a> {
    #[serde(with = "serde_bytes")]
    k: &'a [u8],
    p: u64,
    t: Option<Cid>,
    v: Cid,
}

/// The root CID of the tree holding `entries` (sorted by key, unique), writing every node block
/// to `blocks`.
pub fn root_cid(
    entries: &[(Vec<u8>, Cid)],
    blocks: &mut Vec<(Cid, Vec<u8>)>,
) -> Result<Cid, DataError> {
    let height = entries
        .iter()
        .map(|(k, _)| key_height(k))
        .max()
        .unwrap_or(0);
    let heights: Vec<u32> = entries.iter().map(|(k, _)| key_height(k)).collect();
    build(entries, &heights, height, blocks)
}

fn build(
    entries: &[(Vec<u8>, Cid)],
    heights: &[u32],
    height: u32,
    blocks: &mut Vec<(Cid, Vec<u8>)>,
) -> Result<Cid, DataError> {
    // Subtree below this node for the keys in `range`, if any.
    let subtree = |range: std::ops::Range<usize>,
                   blocks: &mut Vec<(Cid, Vec<u8>)>|
     -> Result<Option<Cid>, DataError> {
        if range.is_empty() || height == 0 {
            return Ok(None);
        }
        build(&entries[range.clone()], &heights[range], height - 1, blocks).map(Some)
    };
    let mut node = Node {
        e: Vec::new(),
        l: None,
    };
    let mut gap_start = 0;
    let mut previous: &[u8] = &[];
    let mut first = true;
    for (i, (key, value)) in entries.iter().enumerate() {
        if heights[i] != height {
            continue;
        }
        let below = subtree(gap_start..i, blocks)?;
        if first {
            node.l = below;
            first = false;
        } else if let Some(last) = node.e.last_mut() {
            last.t = below;
        }
        let prefix = common_prefix_len(previous, key);
        node.e.push(Entry {
            k: &key[prefix..],
            p: prefix as u64,
            t: None,
            v: *value,
        });
        previous = key;
        gap_start = i + 1;
    }
    let below = subtree(gap_start..entries.len(), blocks)?;
    match node.e.last_mut() {
        Some(last) => last.t = below,
        None => node.l = below,
    }
    let bytes = encode_cbor(&node)?;
    let cid = cid_for_cbor(&bytes);
    blocks.push((cid, bytes));
    Ok(cid)
}

/// Where a node sits: its height and the keys of greater height on either side of it (`None`
/// for the ends of the key space). The keys between the bounds are exactly the node's subtree,
/// so a node is identified by its span, and it stays valid until a key inside or on the span's
/// bounds changes.
type Span = (u32, Option<Vec<u8>>, Option<Vec<u8>>);

/// A key → CID map kept as a Merkle Search Tree. A change marks the nodes on its key's path;
/// [`Mst::update_root`] re-encodes those nodes only and reuses every other node's CID, so a
/// commit of a few records costs a few nodes instead of the whole repo.
///
/// Gives the same root as [`root_cid`] over the same entries.
#[derive(Debug, Default)]
pub struct Mst {
    /// Every key with its value and height.
    leaves: BTreeMap<Vec<u8>, (Cid, u32)>,
    /// `layers[h - 1]`: the keys of height `h` or more, for each height `h ≥ 1` a key has.
    layers: Vec<BTreeSet<Vec<u8>>>,
    /// The encoded nodes of the current tree by span.
    nodes: HashMap<Span, Cid>,
    /// The current tree's nodes, with the number of spans naming each (the blocks themselves
    /// are not kept: a commit sends only the nodes it re-encodes).
    refs: HashMap<Cid, u32>,
    /// Nodes whose spans a change made stale, dropped from `refs` at the next update.
    stale: Vec<Cid>,
}

/// A node [`Mst::update_root`] encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    /// The node's CID.
    pub cid: Cid,
    /// The node block.
    pub bytes: Vec<u8>,
    /// Whether the node was not in the tree at the update before (a node can come back
    /// unchanged when a value is put back as it was).
    pub new: bool,
}

impl Mst {
    /// An empty tree.
    pub fn new() -> Mst {
        Mst::default()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.leaves.len()
    }

    /// Whether the tree holds no key.
    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }

    /// The value at `key`.
    pub fn get(&self, key: &[u8]) -> Option<Cid> {
        self.leaves.get(key).map(|(cid, _)| *cid)
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &[u8]> {
        self.leaves.keys().map(Vec::as_slice)
    }

    /// The keys that start with `prefix`, in order.
    pub fn keys_with_prefix<'a>(&'a self, prefix: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
        self.leaves
            .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
            .map(|(k, _)| k.as_slice())
            .take_while(move |k| k.starts_with(prefix))
    }

    /// Sets `key` to `value`; returns the value it replaced.
    pub fn insert(&mut self, key: Vec<u8>, value: Cid) -> Option<Cid> {
        let height = match self.leaves.get(&key) {
            Some(&(_, height)) => height,
            None => key_height(&key),
        };
        self.invalidate(&key, height);
        for h in 1..=height as usize {
            if self.layers.len() < h {
                self.layers.push(BTreeSet::new());
            }
            self.layers[h - 1].insert(key.clone());
        }
        self.leaves.insert(key, (value, height)).map(|(cid, _)| cid)
    }

    /// Removes `key`; returns its value.
    pub fn remove(&mut self, key: &[u8]) -> Option<Cid> {
        let &(_, height) = self.leaves.get(key)?;
        self.invalidate(key, height);
        for h in 1..=height as usize {
            self.layers[h - 1].remove(key);
        }
        while self.layers.last().is_some_and(BTreeSet::is_empty) {
            self.layers.pop();
        }
        self.leaves.remove(key).map(|(cid, _)| cid)
    }

    /// The root CID of the tree as it is now. Re-encodes the nodes that changes since the
    /// last update made stale and appends them to `encoded`, children before parents, left to
    /// right (the order [`root_cid`] writes them in). Every node on the path of a key changed
    /// since the last update is among them.
    pub fn update_root(&mut self, encoded: &mut Vec<Encoded>) -> Result<Cid, DataError> {
        let mut fresh = Vec::new();
        let root = self.node(self.top(), None, None, &mut fresh)?;
        for (cid, bytes) in fresh {
            let refs = self.refs.entry(cid).or_insert(0);
            *refs += 1;
            encoded.push(Encoded {
                cid,
                bytes,
                new: *refs == 1,
            });
        }
        for cid in std::mem::take(&mut self.stale) {
            if let Some(refs) = self.refs.get_mut(&cid) {
                *refs -= 1;
                if *refs == 0 {
                    self.refs.remove(&cid);
                }
            }
        }
        Ok(root)
    }

    /// The nodes a lookup of `key` visits, root first, as of the last [`Mst::update_root`]:
    /// what proves `key`'s value, or its absence, from the root.
    pub fn path(&self, key: &[u8]) -> Vec<Cid> {
        let present = self.leaves.get(key).map(|&(_, h)| h);
        let mut path = Vec::new();
        let mut h = self.top();
        loop {
            let (lo, hi) = self.bounds(h + 1, key);
            let Some(cid) = self.nodes.get(&span(h, lo, hi)) else {
                break;
            };
            path.push(*cid);
            if present == Some(h) || h == 0 {
                break;
            }
            h -= 1;
        }
        path
    }

    fn top(&self) -> u32 {
        self.layers.len() as u32
    }

    /// The nearest keys of height `h ≥ 1` or more on either side of `key` (`key` itself
    /// excluded); `None` past the last such key, and always above the top.
    fn bounds(&self, h: u32, key: &[u8]) -> (Option<&[u8]>, Option<&[u8]>) {
        let Some(layer) = self.layers.get(h as usize - 1) else {
            return (None, None);
        };
        (
            layer
                .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(key)))
                .next_back()
                .map(Vec::as_slice),
            layer
                .range::<[u8], _>((Bound::Excluded(key), Bound::Unbounded))
                .next()
                .map(Vec::as_slice),
        )
    }

    /// Forgets every node whose span holds `key` or ends at it, at every height up to the
    /// tree's top or the key's own, whichever is higher. Called before the change is applied.
    fn invalidate(&mut self, key: &[u8], height: u32) {
        for h in 0..=self.top().max(height) {
            let (lo, hi) = self.bounds(h + 1, key);
            let spans = [
                span(h, lo, hi),
                span(h, lo, Some(key)),
                span(h, Some(key), hi),
            ];
            for span in spans {
                if let Some(cid) = self.nodes.remove(&span) {
                    self.stale.push(cid);
                }
            }
        }
    }

    /// The subtree at height `h` between `lo` and `hi`, if it holds any key.
    fn subtree(
        &mut self,
        h: u32,
        lo: Option<&[u8]>,
        hi: Option<&[u8]>,
        fresh: &mut Vec<(Cid, Vec<u8>)>,
    ) -> Result<Option<Cid>, DataError> {
        if self
            .leaves
            .range::<[u8], _>(between(lo, hi))
            .next()
            .is_none()
        {
            return Ok(None);
        }
        self.node(h, lo, hi, fresh).map(Some)
    }

    /// The node at height `h` between `lo` and `hi`: from `nodes`, or encoded (and its new
    /// descendants) into `fresh`.
    fn node(
        &mut self,
        h: u32,
        lo: Option<&[u8]>,
        hi: Option<&[u8]>,
        fresh: &mut Vec<(Cid, Vec<u8>)>,
    ) -> Result<Cid, DataError> {
        let span = span(h, lo, hi);
        if let Some(cid) = self.nodes.get(&span) {
            return Ok(*cid);
        }
        // The keys of this height in the span: no key between the bounds is higher.
        let range = between(lo, hi);
        let keys: Vec<(Vec<u8>, Cid)> = match h {
            0 => self
                .leaves
                .range::<[u8], _>(range)
                .map(|(k, (v, _))| (k.clone(), *v))
                .collect(),
            _ => self.layers[h as usize - 1]
                .range::<[u8], _>(range)
                .map(|k| (k.clone(), self.leaves[k].0))
                .collect(),
        };
        let mut node = Node {
            e: Vec::with_capacity(keys.len()),
            l: None,
        };
        if h > 0 {
            node.l = self.subtree(h - 1, lo, keys.first().map_or(hi, |(k, _)| Some(k)), fresh)?;
        }
        let mut previous: &[u8] = &[];
        for (i, (key, value)) in keys.iter().enumerate() {
            let t = if h > 0 {
                let next = keys.get(i + 1).map_or(hi, |(k, _)| Some(k.as_slice()));
                self.subtree(h - 1, Some(key), next, fresh)?
            } else {
                None
            };
            let prefix = common_prefix_len(previous, key);
            node.e.push(Entry {
                k: &key[prefix..],
                p: prefix as u64,
                t,
                v: *value,
            });
            previous = key;
        }
        let bytes = encode_cbor(&node)?;
        let cid = cid_for_cbor(&bytes);
        fresh.push((cid, bytes));
        self.nodes.insert(span, cid);
        Ok(cid)
    }
}

/// The span of the node at height `h` between `lo` and `hi`.
fn span(h: u32, lo: Option<&[u8]>, hi: Option<&[u8]>) -> Span {
    (h, lo.map(<[u8]>::to_vec), hi.map(<[u8]>::to_vec))
}

/// The keys strictly between `lo` and `hi` (`None`: no bound).
fn between<'a>(lo: Option<&'a [u8]>, hi: Option<&'a [u8]>) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
    (
        lo.map_or(Bound::Unbounded, Bound::Excluded),
        hi.map_or(Bound::Unbounded, Bound::Excluded),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift), so failures reproduce.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
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

    /// A lookup of `key` from `root` by decoding each node block.
    fn decoded_path(blocks: &HashMap<Cid, Vec<u8>>, root: Cid, key: &[u8]) -> Vec<Cid> {
        let mut path = Vec::new();
        let mut at = Some(root);
        while let Some(cid) = at.take() {
            path.push(cid);
            let node: NodeIn = serde_ipld_dagcbor::from_slice(&blocks[&cid]).unwrap();
            let mut below = node.l;
            let mut previous: Vec<u8> = Vec::new();
            for entry in &node.e {
                let mut full = previous[..entry.p].to_vec();
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

    fn value(n: u64) -> Cid {
        cid_for_cbor(&encode_cbor(&n).unwrap())
    }

    /// Random puts and deletes, a few per commit: after every commit the incremental tree has
    /// the root, the node set and the new blocks a full rebuild gives; paths are the lookups
    /// the blocks give, and a changed key's path is made of nodes the update encoded.
    #[test]
    fn incremental_updates_match_a_full_rebuild() {
        for seed in 1..=8u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut tree = Mst::new();
            let mut reference: BTreeMap<Vec<u8>, Cid> = BTreeMap::new();
            let mut previous_nodes: std::collections::HashSet<Cid> = Default::default();
            // A narrow key space, so keys come back after deletes and values are replaced.
            let keyspace = 40 + seed * 25;
            for commit in 0..250u64 {
                let mut changed = Vec::new();
                for _ in 0..=rng.below(3) {
                    let key = format!("app.bsky.feed.post/{:06}", rng.below(keyspace)).into_bytes();
                    if rng.below(3) == 0 {
                        let removed = tree.remove(&key);
                        assert_eq!(removed, reference.remove(&key));
                        if removed.is_some() {
                            changed.push(key);
                        }
                    } else {
                        changed.push(key.clone());
                        let v = value(rng.below(5));
                        assert_eq!(tree.insert(key.clone(), v), reference.insert(key, v));
                    }
                }
                let mut encoded = Vec::new();
                let root = tree.update_root(&mut encoded).unwrap();
                let entries: Vec<(Vec<u8>, Cid)> =
                    reference.iter().map(|(k, v)| (k.clone(), *v)).collect();
                let mut all = Vec::new();
                let expected = root_cid(&entries, &mut all).unwrap();
                assert_eq!(root, expected, "seed {seed}, commit {commit}");
                let expected_new: Vec<Cid> = all
                    .iter()
                    .map(|(c, _)| *c)
                    .filter(|c| !previous_nodes.contains(c))
                    .collect();
                let new: Vec<Cid> = encoded.iter().filter(|e| e.new).map(|e| e.cid).collect();
                assert_eq!(new, expected_new, "seed {seed}, commit {commit}");
                let blocks: HashMap<Cid, Vec<u8>> = all.into_iter().collect();
                for e in &encoded {
                    assert_eq!(blocks.get(&e.cid), Some(&e.bytes));
                }
                previous_nodes = blocks.keys().copied().collect();
                let held: std::collections::HashSet<Cid> = tree.refs.keys().copied().collect();
                assert_eq!(held, previous_nodes, "seed {seed}, commit {commit}");
                for key in &changed {
                    for cid in tree.path(key) {
                        assert!(
                            encoded.iter().any(|e| e.cid == cid),
                            "seed {seed}, commit {commit}"
                        );
                    }
                }
                // Paths of keys present and of keys just deleted, against a lookup that
                // decodes the blocks.
                for n in 0..6 {
                    let key = format!("app.bsky.feed.post/{:06}", rng.below(keyspace)).into_bytes();
                    let path = tree.path(&key);
                    assert_eq!(
                        path,
                        decoded_path(&blocks, root, &key),
                        "seed {seed}, commit {commit}, lookup {n}"
                    );
                }
            }
        }
    }
}

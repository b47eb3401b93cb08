//! The Merkle Search Tree that holds a repo's records: key heights and the root CID of a set of
//! keys.
//!
//! A key's height is the number of leading zero bits of SHA-256(key), counted in pairs (fanout
//! 4). A node at height `h` holds the keys of height `h` in order; the gaps between them hold
//! subtrees one level down. Nodes encode as `{l, e: [{p, k, v, t}]}` with each key written as
//! the length of the prefix shared with the previous key plus the rest.

use crate::data::{DataError, cid_for_cbor, encode_cbor};
use cid::Cid;
use serde::Serialize;
use sha2::{Digest, Sha256};

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

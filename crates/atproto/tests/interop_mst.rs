//! The interop MST vectors: key heights, common prefixes, and the commit-proof fixtures' tree
//! roots before and after each commit.

mod common;

use common::load_json;
use skywarden_atproto::Cid;
use skywarden_atproto::mst::{common_prefix_len, key_height, root_cid};

#[test]
fn key_heights() {
    let vectors = load_json("atproto-interop/mst/key_heights.json");
    for v in vectors.as_array().unwrap() {
        let key = v["key"].as_str().unwrap();
        assert_eq!(
            key_height(key.as_bytes()) as u64,
            v["height"].as_u64().unwrap(),
            "{key}"
        );
    }
    // example_keys.txt names each key's height in its second character.
    let path = common::testdata("atproto-interop/mst/example_keys.txt");
    let keys = std::fs::read_to_string(path).unwrap();
    let mut n = 0;
    for key in keys.lines().filter(|l| !l.is_empty()) {
        let expected = key[1..2].parse::<u32>().unwrap();
        assert_eq!(key_height(key.as_bytes()), expected, "{key}");
        n += 1;
    }
    println!(
        "key_heights.json: {} vectors; example_keys.txt: {n} keys passed",
        vectors.as_array().unwrap().len()
    );
    assert!(n > 100);
}

#[test]
fn common_prefixes() {
    let vectors = load_json("atproto-interop/mst/common_prefix.json");
    for v in vectors.as_array().unwrap() {
        let (l, r) = (v["left"].as_str().unwrap(), v["right"].as_str().unwrap());
        assert_eq!(
            common_prefix_len(l.as_bytes(), r.as_bytes()) as u64,
            v["len"].as_u64().unwrap()
        );
    }
    println!(
        "common_prefix.json: {} vectors passed",
        vectors.as_array().unwrap().len()
    );
}

/// The strings of a fixture's array field `k`.
fn strings(v: &serde_json::Value, k: &str) -> Vec<String> {
    v[k].as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn commit_proof_roots() {
    let vectors = load_json("atproto-interop/firehose/commit-proof-fixtures.json");
    for v in vectors.as_array().unwrap() {
        let leaf = Cid::try_from(v["leafValue"].as_str().unwrap()).unwrap();
        let strings = |k: &str| strings(v, k);
        let mut keys = strings("keys");
        keys.sort();
        let entries: Vec<(Vec<u8>, Cid)> = keys
            .iter()
            .map(|k| (k.clone().into_bytes(), leaf))
            .collect();
        let before = root_cid(&entries, &mut Vec::new()).unwrap();
        assert_eq!(
            before.to_string(),
            v["rootBeforeCommit"].as_str().unwrap(),
            "{}",
            v["comment"]
        );
        let dels = strings("dels");
        keys.retain(|k| !dels.contains(k));
        keys.extend(strings("adds"));
        keys.sort();
        let entries: Vec<(Vec<u8>, Cid)> = keys
            .iter()
            .map(|k| (k.clone().into_bytes(), leaf))
            .collect();
        let mut blocks = Vec::new();
        let after = root_cid(&entries, &mut blocks).unwrap();
        assert_eq!(
            after.to_string(),
            v["rootAfterCommit"].as_str().unwrap(),
            "{}",
            v["comment"]
        );
        // Every block the proof needs is a node of the new tree.
        for cid in strings("blocksInProof") {
            assert!(
                blocks.iter().any(|(c, _)| c.to_string() == cid),
                "{}: {cid} not in tree",
                v["comment"]
            );
        }
    }
    println!(
        "commit-proof-fixtures.json: {} trees rebuilt",
        vectors.as_array().unwrap().len()
    );
}

/// The same fixtures through the incremental tree: built from the keys, then changed by the
/// commit's deletes and adds, it reaches both roots, and the nodes it re-encodes for the
/// commit hold every block of the fixture's proof (which @atproto/repo computed).
#[test]
fn commit_proof_roots_incrementally() {
    use skywarden_atproto::mst::Mst;
    let vectors = load_json("atproto-interop/firehose/commit-proof-fixtures.json");
    for v in vectors.as_array().unwrap() {
        let comment = &v["comment"];
        let leaf = Cid::try_from(v["leafValue"].as_str().unwrap()).unwrap();
        let strings = |k: &str| strings(v, k);
        let mut tree = Mst::new();
        for key in strings("keys") {
            tree.insert(key.into_bytes(), leaf);
        }
        let before = tree.update_root(&mut Vec::new()).unwrap();
        assert_eq!(
            before.to_string(),
            v["rootBeforeCommit"].as_str().unwrap(),
            "{comment}"
        );
        for key in strings("dels") {
            assert_eq!(tree.remove(key.as_bytes()), Some(leaf), "{comment}");
        }
        for key in strings("adds") {
            tree.insert(key.into_bytes(), leaf);
        }
        let mut encoded = Vec::new();
        let after = tree.update_root(&mut encoded).unwrap();
        assert_eq!(
            after.to_string(),
            v["rootAfterCommit"].as_str().unwrap(),
            "{comment}"
        );
        for cid in strings("blocksInProof") {
            assert!(
                encoded.iter().any(|e| e.cid.to_string() == cid),
                "{comment}: {cid} not re-encoded"
            );
        }
    }
}

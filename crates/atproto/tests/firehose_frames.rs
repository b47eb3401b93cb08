//! Every recorded relay frame in testdata/firehose decodes: ops resolve to records whose blocks
//! match their CIDs, and commit signatures verify against the scenario's DID document key.

mod common;

use common::{load_json, testdata};
use serde_json::json;
use skywarden_atproto::crypto::PublicKey;
use skywarden_atproto::data::{encode_cbor, json_to_ipld};
use skywarden_atproto::event::{EventBody, SignatureCheck};
use skywarden_atproto::frame::{Frame, decode_frame};

/// Rebuilds the wire bytes of a frame given as JSON header + body.
fn frame_bytes(header: &serde_json::Value, body: &serde_json::Value) -> Vec<u8> {
    let mut bytes = encode_cbor(&json_to_ipld(header).unwrap()).unwrap();
    bytes.extend(encode_cbor(&json_to_ipld(body).unwrap()).unwrap());
    bytes
}

#[test]
fn single_relay_commits_decode_with_checked_records() {
    let mut count = 0;
    for entry in std::fs::read_dir(testdata("firehose")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with("firehose_commit_") {
            continue;
        }
        let body = load_json(&format!("firehose/{name}"));
        let bytes = frame_bytes(&json!({"op": 1, "t": "#commit"}), &body);
        let frame = decode_frame(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let Frame::Commit(commit) = &frame else {
            panic!("{name}: not a commit")
        };
        assert_eq!(commit.seq, body["seq"].as_i64().unwrap());
        let event = frame.to_event(None).unwrap().unwrap();
        let EventBody::Commit(c) = &event.body else {
            panic!()
        };
        assert_eq!(c.ops.len(), body["ops"].as_array().unwrap().len());
        for (op, expected) in c.ops.iter().zip(body["ops"].as_array().unwrap()) {
            assert_eq!(op.path(), expected["path"].as_str().unwrap());
            assert_eq!(
                op.cid.unwrap().to_string(),
                expected["cid"]["$link"].as_str().unwrap()
            );
            let record = op.record.as_ref().expect("record present and CID-checked");
            assert_eq!(record.record_type(), Some(op.collection.as_str()));
        }
        // Corrupting one byte of a record block must fail the CID check.
        let blocks =
            skywarden_atproto::data::decode_base64(body["blocks"]["$bytes"].as_str().unwrap())
                .unwrap();
        let car = skywarden_atproto::car::Car::parse(&blocks).unwrap();
        let record = car.get(c.ops[0].cid.as_ref().unwrap()).unwrap();
        let offset = record.as_ptr() as usize - blocks.as_ptr() as usize + record.len() / 2;
        let mut corrupted = blocks.clone();
        corrupted[offset] ^= 0x01;
        let mut tampered = body.clone();
        tampered["blocks"] = json!({"$bytes": base64_encode(&corrupted)});
        let bytes = frame_bytes(&json!({"op": 1, "t": "#commit"}), &tampered);
        let frame = decode_frame(&bytes).unwrap();
        let err = frame
            .to_event(None)
            .expect_err("tampered record block accepted");
        assert!(err.to_string().contains("does not match its CID"), "{err}");
        count += 1;
    }
    println!("firehose_commit_*.json: {count} commits decoded and checked");
    assert_eq!(count, 4);
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(b)
}

#[test]
fn relay_scenarios_decode_and_signatures_verify() {
    let mut frames = 0;
    let mut verified = 0;
    for name in [
        "account_lifecycle",
        "deactivation",
        "legacy",
        "post_lifecycle",
        "post_lifecycle_legacy",
        "rev_ordering",
        "seq_ordering",
    ] {
        let scenario = load_json(&format!("firehose/{name}.json"));
        let key = PublicKey::from_multikey(
            scenario["accounts"][0]["identity"]["keys"]["atproto"]["publicKeyMultibase"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        for message in scenario["messages"].as_array().unwrap() {
            let bytes = frame_bytes(&message["frame"]["header"], &message["frame"]["body"]);
            let frame = decode_frame(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            frames += 1;
            let event = match frame.to_event(Some(&key)) {
                Ok(event) => event.expect("repo event"),
                // Frames a relay drops may also be internally inconsistent (rev_ordering forges
                // a frame rev that contradicts the signed commit); rejecting them is correct.
                Err(_) if message["drop"] == true => continue,
                Err(e) => panic!("{name} seq {:?}: {e}", frame.seq()),
            };
            if let EventBody::Commit(c) = &event.body {
                assert_eq!(c.signature, SignatureCheck::Verified);
                verified += 1;
                for op in &c.ops {
                    if op.action != skywarden_atproto::event::Action::Delete {
                        assert!(op.record.is_some(), "{name}: {} has no record", op.path());
                    }
                }
            }
        }
        // A different key must not verify any of this scenario's commits.
        let other = skywarden_atproto::crypto::SigningKey::generate(key.curve()).public();
        for message in scenario["messages"].as_array().unwrap() {
            if message["frame"]["header"]["t"] == "#commit" {
                let bytes = frame_bytes(&message["frame"]["header"], &message["frame"]["body"]);
                assert!(
                    decode_frame(&bytes)
                        .unwrap()
                        .to_event(Some(&other))
                        .is_err()
                );
            }
        }
    }
    println!("relay scenarios: {frames} frames decoded, {verified} commit signatures verified");
    assert!(verified > 20);
}

#[test]
fn malformed_frames_are_errors_not_panics() {
    let good = frame_bytes(
        &json!({"op": 1, "t": "#identity"}),
        &json!({"seq": 1, "did": "did:plc:abc", "time": "2025-01-01T00:00:00Z"}),
    );
    assert!(decode_frame(&good).is_ok());
    for cut in 0..good.len() {
        assert!(
            decode_frame(&good[..cut]).is_err(),
            "truncated at {cut} accepted"
        );
    }
    let mut trailing = good.clone();
    trailing.push(0x00);
    assert!(decode_frame(&trailing).is_err());
    let unknown = frame_bytes(&json!({"op": 1, "t": "#future"}), &json!({"x": 1}));
    assert!(matches!(decode_frame(&unknown), Ok(Frame::Unknown { .. })));
    let error = frame_bytes(
        &json!({"op": -1}),
        &json!({"error": "FutureCursor", "message": "cursor in the future"}),
    );
    assert!(matches!(decode_frame(&error), Ok(Frame::Error(e)) if e.error == "FutureCursor"));
    let info = frame_bytes(
        &json!({"op": 1, "t": "#info"}),
        &json!({"name": "OutdatedCursor"}),
    );
    assert!(matches!(decode_frame(&info), Ok(Frame::Info(i)) if i.name == "OutdatedCursor"));
    let bad_op = frame_bytes(&json!({"op": 7}), &json!({}));
    assert!(decode_frame(&bad_op).is_err());
}

#[test]
fn commit_cids_in_every_form_decode() {
    use skywarden_atproto::Cid;
    use skywarden_atproto::data::{DAG_CBOR, cid_for};
    let v1 = cid_for(DAG_CBOR, b"record");
    let raw = cid_for(0x55, b"blob");
    // A CIDv0 and a CIDv1 with an identity multihash: not the direct form, read generally.
    let v0 = Cid::new_v0(*v1.hash()).unwrap();
    let identity = Cid::new_v1(
        DAG_CBOR,
        multihash::Multihash::<64>::wrap(0x00, b"inline").unwrap(),
    );
    let body = |cid: serde_json::Value| {
        json!({
            "seq": 5, "rebase": false, "tooBig": false, "repo": "did:plc:abc",
            "commit": {"$link": v1.to_string()}, "rev": "3lbqtdx5zyc2a", "since": null,
            "blocks": {"$bytes": ""}, "blobs": [], "time": "2025-01-01T00:00:00Z",
            "prevData": {"$link": raw.to_string()},
            "ops": [
                {"action": "create", "path": "app.bsky.feed.post/3lbqtdx5zyc2a", "cid": cid},
                {"action": "delete", "path": "app.bsky.feed.post/3lbqtdx5zyc2b", "cid": null,
                 "prev": {"$link": v1.to_string()}},
            ],
        })
    };
    for cid in [v1, raw, v0, identity] {
        let bytes = frame_bytes(
            &json!({"op": 1, "t": "#commit"}),
            &body(json!({"$link": cid.to_string()})),
        );
        let Ok(Frame::Commit(c)) = decode_frame(&bytes) else {
            panic!("{cid} not decoded")
        };
        assert_eq!((c.commit, c.prev_data), (v1, Some(raw)));
        assert_eq!(c.ops[0].cid, Some(cid));
        assert_eq!((c.ops[1].cid, c.ops[1].prev), (None, Some(v1)));
    }
    // A CID that is not a link, or bytes that are no CID, fail the frame.
    for bad in [json!("bafy..."), json!({"$bytes": "AXESIA"})] {
        let bytes = frame_bytes(&json!({"op": 1, "t": "#commit"}), &body(bad.clone()));
        assert!(decode_frame(&bytes).is_err(), "{bad}");
    }
}

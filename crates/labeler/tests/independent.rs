//! skywarden's labels checked by implementations it did not write: `@atproto/crypto`
//! verifies the signatures over `@ipld/dag-cbor`'s encoding, and `@atproto/lexicon` checks the
//! shape, for k256 and p256 keys; and labels signed by `@atproto/crypto` verify here.
//! (`tests/pds/labels.mjs verify`; `tests/pds/install.sh` installs the pinned packages.)

use serde_json::Value;
use skywarden_atproto::crypto::{Curve, PublicKey, SigningKey};
use skywarden_atproto::label::Label;
use skywarden_labeler::key::LabelerKey;
use skywarden_labeler::sink::signed;
use skywarden_labeler::stored_to_label;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn pds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/pds")
}

fn labels() -> Vec<Label> {
    let base = Label {
        ver: Some(1),
        src: "did:web:labels.example.org".into(),
        uri: "did:plc:ewvi7nxzyoun6zhxrhs64oiz".into(),
        cid: None,
        val: "spam".into(),
        neg: false,
        cts: "2026-12-01T12:00:00.000Z".into(),
        exp: None,
        sig: None,
    };
    vec![
        base.clone(),
        Label {
            uri: "at://did:plc:ewvi7nxzyoun6zhxrhs64oiz/app.bsky.feed.post/3l2s5xxv2ze2c".into(),
            cid: Some("bafyreifepiu23okq5zuyvyhsoiazv2ayrqp2l4idi4cr2yhlpuclelg7l4".into()),
            val: "!hide".into(),
            ..base.clone()
        },
        Label {
            neg: true,
            ..base.clone()
        },
        Label {
            exp: Some("2026-12-08T12:00:00.000Z".into()),
            cts: "2026-12-01T12:00:00.123456Z".into(),
            val: "temporary-hold".into(),
            ..base.clone()
        },
        Label {
            val: "é".repeat(64),
            ..base.clone()
        },
    ]
}

#[test]
fn labels_signed_here_verify_in_atproto_crypto_and_theirs_verify_here() {
    let dir = pds_dir();
    let install = Command::new("bash")
        .arg(dir.join("install.sh"))
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .expect("run tests/pds/install.sh");
    assert!(
        install.status.success(),
        "tests/pds/install.sh failed: {}",
        String::from_utf8_lossy(&install.stderr)
    );

    let mut input = String::new();
    let mut expected = Vec::new();
    for curve in [Curve::K256, Curve::P256] {
        let key = LabelerKey::new(SigningKey::generate(curve));
        for label in labels() {
            // The same path the label sink takes: sign, store form, back to the protocol type.
            let stored = signed(&key, label, None).unwrap().label;
            let json = stored_to_label(&stored).to_json();
            input.push_str(
                &serde_json::json!({ "didKey": key.did_key(), "label": json }).to_string(),
            );
            input.push('\n');
            expected.push(true);
        }
        // A label changed after signing must fail there too: the check can fail.
        let mut tampered = signed(&key, labels()[0].clone(), None).unwrap().label;
        tampered.val = "not-spam".into();
        let json = stored_to_label(&tampered).to_json();
        input.push_str(&serde_json::json!({ "didKey": key.did_key(), "label": json }).to_string());
        input.push('\n');
        expected.push(false);
    }

    let mut child = Command::new("node")
        .arg(dir.join("labels.mjs"))
        .arg("verify")
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node tests/pds/labels.mjs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "labels.mjs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let verified: Vec<&Value> = lines.iter().filter(|l| l["type"] == "verified").collect();
    assert_eq!(verified.len(), expected.len());
    for (result, should_pass) in verified.iter().zip(&expected) {
        let problems = result["problems"].as_array().unwrap();
        if *should_pass {
            assert!(problems.is_empty(), "{result}");
        } else {
            assert!(
                problems
                    .iter()
                    .any(|p| p.as_str().unwrap().contains("signature")),
                "a tampered label must fail: {result}"
            );
        }
    }

    let theirs: Vec<&Value> = lines.iter().filter(|l| l["type"] == "signed").collect();
    assert_eq!(theirs.len(), 2, "k256 and p256");
    for t in theirs {
        let key = PublicKey::from_did_key(t["didKey"].as_str().unwrap()).unwrap();
        let label = Label::from_json(&t["label"]).unwrap();
        label.validate().unwrap();
        label
            .verify(&key)
            .unwrap_or_else(|e| panic!("{} label from @atproto/crypto: {e}", t["curve"]));
        let mut changed = label.clone();
        changed.exp = None;
        assert!(changed.verify(&key).is_err());
    }
}

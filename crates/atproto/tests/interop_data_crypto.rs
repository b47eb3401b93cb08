//! The atproto interop vectors for the data model, signatures and did:key.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use common::load_json;
use skywarden_atproto::crypto::{Curve, PublicKey, SigningKey};
use skywarden_atproto::data::{cid_for_cbor, decode_cbor, encode_cbor, ipld_to_json, json_to_ipld};

fn b64(s: &str) -> Vec<u8> {
    STANDARD_NO_PAD
        .decode(s.trim_end_matches('='))
        .expect("vector base64")
}

#[test]
fn data_model_fixtures_encode_decode_and_hash() {
    let vectors = load_json("atproto-interop/data-model/data-model-fixtures.json");
    let vectors = vectors.as_array().unwrap();
    for v in vectors {
        let ipld = json_to_ipld(&v["json"]).unwrap();
        let cbor = encode_cbor(&ipld).unwrap();
        assert_eq!(
            cbor,
            b64(v["cbor_base64"].as_str().unwrap()),
            "encoding of {}",
            v["json"]
        );
        assert_eq!(cid_for_cbor(&cbor).to_string(), v["cid"].as_str().unwrap());
        let decoded = decode_cbor(&cbor).unwrap();
        assert_eq!(ipld_to_json(&decoded), v["json"], "JSON round trip");
    }
    println!("data-model-fixtures.json: {} vectors passed", vectors.len());
    assert!(!vectors.is_empty());
}

#[test]
fn data_model_valid_and_invalid() {
    let valid = load_json("atproto-interop/data-model/data-model-valid.json");
    let valid = valid.as_array().unwrap();
    for v in valid {
        json_to_ipld(&v["json"]).unwrap_or_else(|e| panic!("{}: {e}", v["note"]));
    }
    let invalid = load_json("atproto-interop/data-model/data-model-invalid.json");
    let invalid = invalid.as_array().unwrap();
    for v in invalid {
        assert!(
            json_to_ipld(&v["json"]).is_err(),
            "accepted invalid: {}",
            v["note"]
        );
    }
    println!(
        "data-model-valid.json: {} passed; data-model-invalid.json: {} rejected",
        valid.len(),
        invalid.len()
    );
    assert!(!valid.is_empty() && !invalid.is_empty());
}

#[test]
fn signature_fixtures() {
    let vectors = load_json("atproto-interop/crypto/signature-fixtures.json");
    let vectors = vectors.as_array().unwrap();
    for v in vectors {
        let key = PublicKey::from_did_key(v["publicKeyDid"].as_str().unwrap()).unwrap();
        let expected_curve = match v["algorithm"].as_str().unwrap() {
            "ES256K" => Curve::K256,
            "ES256" => Curve::P256,
            other => panic!("unknown algorithm {other}"),
        };
        assert_eq!(key.curve(), expected_curve);
        let msg = b64(v["messageBase64"].as_str().unwrap());
        let sig = b64(v["signatureBase64"].as_str().unwrap());
        let ok = key.verify(&msg, &sig).is_ok();
        assert_eq!(
            ok,
            v["validSignature"].as_bool().unwrap(),
            "{}",
            v["comment"]
        );
    }
    println!("signature-fixtures.json: {} vectors passed", vectors.len());
    assert_eq!(vectors.len(), 6);
}

#[test]
fn did_key_vectors() {
    let k256 = load_json("atproto-interop/crypto/w3c_didkey_K256.json");
    for v in k256.as_array().unwrap() {
        let secret = hex(v["privateKeyBytesHex"].as_str().unwrap());
        let key = SigningKey::from_bytes(Curve::K256, &secret).unwrap();
        let did = v["publicDidKey"].as_str().unwrap();
        assert_eq!(key.public().to_did_key(), did);
        assert_eq!(PublicKey::from_did_key(did).unwrap(), key.public());
    }
    let p256 = load_json("atproto-interop/crypto/w3c_didkey_P256.json");
    for v in p256.as_array().unwrap() {
        let (_, secret) =
            multibase::decode(format!("z{}", v["privateKeyBytesBase58"].as_str().unwrap()))
                .unwrap();
        let key = SigningKey::from_bytes(Curve::P256, &secret).unwrap();
        let did = v["publicDidKey"].as_str().unwrap();
        assert_eq!(key.public().to_did_key(), did);
        assert_eq!(PublicKey::from_did_key(did).unwrap(), key.public());
    }
    let n = k256.as_array().unwrap().len() + p256.as_array().unwrap().len();
    println!("w3c_didkey_K256.json + w3c_didkey_P256.json: {n} vectors passed");
    assert!(n >= 2);
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

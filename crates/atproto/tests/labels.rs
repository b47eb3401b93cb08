//! A label signed by a production labeler verifies, and stops verifying when any field changes.

mod common;

use common::load_json;
use serde_json::json;
use skywarden_atproto::crypto::{Curve, PublicKey, SigningKey};
use skywarden_atproto::label::Label;

#[test]
fn production_label_verifies_and_any_change_breaks_it() {
    let vectors = load_json("labels/signed-labels.json");
    for v in vectors.as_array().unwrap() {
        let key = PublicKey::from_multikey(v["publicKeyMultibase"].as_str().unwrap()).unwrap();
        let label = Label::from_json(&v["label"]).unwrap();
        assert_eq!(label.verify(&key).is_ok(), v["valid"].as_bool().unwrap());

        let mut variants = Vec::new();
        let mut l = label.clone();
        l.ver = Some(2);
        variants.push(("ver", l));
        let mut l = label.clone();
        l.src = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa".into();
        variants.push(("src", l));
        let mut l = label.clone();
        l.uri.push('x');
        variants.push(("uri", l));
        let mut l = label.clone();
        l.cid = Some("bafyreidfayvfuwqa7qlnopdjiqrxzs6blmoeu4rujcjtnci5beludirz2a".into());
        variants.push(("cid", l));
        let mut l = label.clone();
        l.val = "spam".into();
        variants.push(("val", l));
        let mut l = label.clone();
        l.neg = true;
        variants.push(("neg", l));
        let mut l = label.clone();
        l.cts = "2024-10-23T17:51:19.129Z".into();
        variants.push(("cts", l));
        let mut l = label.clone();
        l.exp = Some("2030-01-01T00:00:00.000Z".into());
        variants.push(("exp", l));
        let mut l = label.clone();
        l.sig.as_mut().unwrap()[10] ^= 1;
        variants.push(("sig", l));
        for (field, changed) in variants {
            assert!(
                changed.verify(&key).is_err(),
                "changing {field} still verifies"
            );
        }
    }
}

#[test]
fn own_labels_round_trip_on_both_curves() {
    for curve in [Curve::K256, Curve::P256] {
        let key = SigningKey::generate(curve);
        let mut label = Label::from_json(&json!({
            "ver": 1, "src": "did:plc:n3timvoib5nau7gvwd6cshap", "uri": "did:plc:44ybard66vv44zksje25o7dz",
            "val": "spam", "cts": "2026-01-01T00:00:00.000Z"
        }))
        .unwrap();
        label.sign(&key).unwrap();
        label.verify(&key.public()).unwrap();
        assert_eq!(label.sig.as_ref().unwrap().len(), 64);
    }
}

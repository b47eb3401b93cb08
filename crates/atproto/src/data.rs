//! The atproto data model: DAG-CBOR values, their JSON form (`$link`, `$bytes`, blobs) and CIDs.
//!
//! Values are [`Ipld`] from `ipld-core`; encoding and decoding go through `serde_ipld_dagcbor`,
//! so the canonical DAG-CBOR rules (sorted map keys, no floats in atproto records, tag 42 links)
//! are the library's, not ours.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use cid::Cid;
pub use ipld_core::ipld::Ipld;
use sha2::{Digest, Sha256};

/// Multicodec code of DAG-CBOR, the codec of every atproto record and repo node.
pub const DAG_CBOR: u64 = 0x71;
/// Multicodec code of raw bytes, the codec of blobs.
pub const RAW: u64 = 0x55;
/// Multihash code of SHA-256, the only hash atproto uses.
pub const SHA2_256: u64 = 0x12;

/// Why a value is not valid atproto data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The bytes are not valid DAG-CBOR.
    #[error("invalid DAG-CBOR: {0}")]
    Cbor(String),
    /// The value could not be encoded as DAG-CBOR.
    #[error("cannot encode as DAG-CBOR: {0}")]
    Encode(String),
    /// The value breaks an atproto data model rule.
    #[error("invalid atproto data at {path}: {message}")]
    Model {
        /// Where in the value, as a JSON-pointer-like path (`/embed/images/0`).
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A block's bytes do not hash to its CID.
    #[error("block does not match its CID {cid}")]
    CidMismatch {
        /// The CID the block was announced under.
        cid: String,
    },
    /// The CID uses a hash or codec atproto does not allow.
    #[error("unsupported CID {cid}: {message}")]
    UnsupportedCid {
        /// The CID.
        cid: String,
        /// Why it is not supported.
        message: &'static str,
    },
}

pub(crate) fn model_err(path: &str, message: impl Into<String>) -> DataError {
    DataError::Model {
        path: if path.is_empty() {
            "/".into()
        } else {
            path.into()
        },
        message: message.into(),
    }
}

/// Decodes one DAG-CBOR value (an atproto record, a commit, a repo node) into [`Ipld`].
pub fn decode_cbor(bytes: &[u8]) -> Result<Ipld, DataError> {
    serde_ipld_dagcbor::from_slice(bytes).map_err(|e| DataError::Cbor(e.to_string()))
}

/// Encodes a value as canonical DAG-CBOR.
pub fn encode_cbor<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, DataError> {
    serde_ipld_dagcbor::to_vec(value).map_err(|e| DataError::Encode(e.to_string()))
}

/// The CIDv1 (dag-cbor, sha2-256) of an encoded DAG-CBOR block.
pub fn cid_for_cbor(bytes: &[u8]) -> Cid {
    cid_for(DAG_CBOR, bytes)
}

/// The CIDv1 with `codec` and a sha2-256 multihash of `bytes`.
pub fn cid_for(codec: u64, bytes: &[u8]) -> Cid {
    let digest = Sha256::digest(bytes);
    // A 32-byte digest always fits the 64-byte multihash.
    let mh = multihash::Multihash::<64>::wrap(SHA2_256, &digest).expect("32-byte digest fits");
    Cid::new_v1(codec, mh)
}

/// Checks that `bytes` hash to `cid` (sha2-256, any codec).
///
/// This is what makes a record from a firehose commit trustworthy: the op names a CID and the
/// CAR carries the bytes; if they disagree the record is not the one the repo committed to.
pub fn verify_block(cid: &Cid, bytes: &[u8]) -> Result<(), DataError> {
    let mh = cid.hash();
    if mh.code() != SHA2_256 {
        return Err(DataError::UnsupportedCid {
            cid: cid.to_string(),
            message: "hash is not sha2-256",
        });
    }
    if mh.digest() != &Sha256::digest(bytes)[..] {
        return Err(DataError::CidMismatch {
            cid: cid.to_string(),
        });
    }
    Ok(())
}

/// Converts atproto JSON (with `$link`, `$bytes` and blob objects) into a data model value,
/// checking the data model rules: the top level is an object, no non-integer floats, `$type`
/// a non-empty string, well-formed links, bytes and blobs.
pub fn json_to_ipld(value: &serde_json::Value) -> Result<Ipld, DataError> {
    crate::tree::Tree::from_json(value).map(|tree| tree.to_ipld())
}

pub(crate) fn check_blob_json(
    map: &serde_json::Map<String, serde_json::Value>,
    path: &str,
) -> Result<(), DataError> {
    let has_link = map
        .get("ref")
        .and_then(|r| r.as_object())
        .is_some_and(|r| r.contains_key("$link"));
    if !has_link {
        return Err(model_err(path, "blob needs a `ref` link"));
    }
    if !map.get("mimeType").is_some_and(|m| m.is_string()) {
        return Err(model_err(path, "blob needs a string `mimeType`"));
    }
    if !map.get("size").is_some_and(|s| s.is_i64() || s.is_u64()) {
        return Err(model_err(path, "blob needs an integer `size`"));
    }
    Ok(())
}

/// Decodes base64 as atproto writes it: standard alphabet, padding optional.
pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
    STANDARD_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
        .or_else(|| STANDARD.decode(s).ok())
}

/// Encodes bytes as atproto JSON's `$bytes` does: standard alphabet, no padding.
pub fn encode_base64(bytes: &[u8]) -> String {
    STANDARD_NO_PAD.encode(bytes)
}

/// Converts a data model value to atproto JSON (`$link`, `$bytes` without padding).
pub fn ipld_to_json(value: &Ipld) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        Ipld::Null => J::Null,
        Ipld::Bool(b) => J::Bool(*b),
        Ipld::Integer(i) => match i64::try_from(*i) {
            Ok(i) => J::from(i),
            Err(_) => J::String(i.to_string()),
        },
        Ipld::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Ipld::String(s) => J::String(s.clone()),
        Ipld::Bytes(b) => serde_json::json!({ "$bytes": encode_base64(b) }),
        Ipld::List(items) => J::Array(items.iter().map(ipld_to_json).collect()),
        Ipld::Map(map) => J::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), ipld_to_json(v)))
                .collect(),
        ),
        Ipld::Link(cid) => serde_json::json!({ "$link": cid.to_string() }),
    }
}

/// Checks the data model rules on a decoded value: no floats anywhere, `$type` (when present)
/// a non-empty string, blobs well-formed.
pub fn validate_ipld(value: &Ipld) -> Result<(), DataError> {
    fn walk(v: &Ipld, path: &mut String) -> Result<(), DataError> {
        match v {
            Ipld::Float(_) => Err(model_err(path, "floats are not allowed")),
            Ipld::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("/{i}"));
                    walk(item, path)?;
                    path.truncate(len);
                }
                Ok(())
            }
            Ipld::Map(map) => {
                match map.get("$type") {
                    None => {}
                    Some(Ipld::String(s)) if s.is_empty() => {
                        return Err(model_err(path, "$type must not be empty"));
                    }
                    Some(Ipld::String(s)) if s == "blob" => {
                        let ok = matches!(map.get("ref"), Some(Ipld::Link(_)))
                            && matches!(map.get("mimeType"), Some(Ipld::String(_)))
                            && matches!(map.get("size"), Some(Ipld::Integer(_)));
                        if !ok {
                            return Err(model_err(path, "malformed blob"));
                        }
                    }
                    Some(Ipld::String(_)) => {}
                    Some(_) => return Err(model_err(path, "$type must be a string")),
                }
                for (k, item) in map {
                    let len = path.len();
                    path.push('/');
                    path.push_str(k);
                    walk(item, path)?;
                    path.truncate(len);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
    walk(value, &mut String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cid_of_empty_map_is_stable() {
        let bytes = encode_cbor(&Ipld::Map(std::collections::BTreeMap::new())).unwrap();
        assert_eq!(bytes, [0xa0]);
        let cid = cid_for_cbor(&bytes);
        verify_block(&cid, &bytes).unwrap();
        assert!(verify_block(&cid, &[0xa1]).is_err());
    }

    #[test]
    fn json_round_trip_keeps_links_and_bytes() {
        let json = serde_json::json!({
            "a": {"$link": "bafyreidfayvfuwqa7qlnopdjiqrxzs6blmoeu4rujcjtnci5beludirz2a"},
            "b": {"$bytes": "nFERjvLLiw9qm45JrqH9QTzyC2Lu1Xb4ne6+sBrCzI0"},
        });
        let ipld = json_to_ipld(&json).unwrap();
        assert!(matches!(ipld.get("a"), Ok(Some(Ipld::Link(_)))));
        assert_eq!(ipld_to_json(&ipld), json);
    }
}

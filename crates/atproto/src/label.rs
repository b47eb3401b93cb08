//! Labels (`com.atproto.label.defs#label`) and their signatures.
//!
//! A label's signature covers SHA-256 of the DAG-CBOR encoding of the label without `sig`.
//! Optional fields are omitted when absent, and `neg` is omitted unless true, so the bytes are
//! the same ones every implementation signs.

use crate::crypto::{CryptoError, PublicKey, SigningKey};
use crate::data::{DataError, encode_cbor};
use serde::{Deserialize, Serialize};

/// A label, signed or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    /// Label format version (1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ver: Option<i64>,
    /// DID of the labeler.
    pub src: String,
    /// AT-URI of a record or a DID of an account.
    pub uri: String,
    /// Pins the label to one version of a record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
    /// The label value.
    pub val: String,
    /// True when this negates an earlier label.
    #[serde(default, skip_serializing_if = "is_false")]
    pub neg: bool,
    /// Creation time.
    pub cts: String,
    /// Expiry time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<String>,
    /// Signature bytes.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "optional_bytes"
    )]
    pub sig: Option<Vec<u8>>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

mod optional_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_bytes(b),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<serde_bytes::ByteBuf>::deserialize(d).map(|o| o.map(|b| b.into_vec()))
    }
}

/// Why a label's signature is missing or wrong.
#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    /// The label has no `sig`.
    #[error("label is not signed")]
    Unsigned,
    /// The label could not be encoded.
    #[error(transparent)]
    Encode(#[from] DataError),
    /// The signature is wrong.
    #[error(transparent)]
    Signature(#[from] CryptoError),
}

impl Label {
    /// The DAG-CBOR bytes the signature covers: the label without `sig`.
    pub fn signing_bytes(&self) -> Result<Vec<u8>, DataError> {
        let unsigned = Label {
            sig: None,
            ..self.clone()
        };
        encode_cbor(&unsigned)
    }

    /// Signs the label in place.
    pub fn sign(&mut self, key: &SigningKey) -> Result<(), DataError> {
        self.sig = Some(key.sign(&self.signing_bytes()?).to_vec());
        Ok(())
    }

    /// Verifies the label's signature with the labeler's key.
    pub fn verify(&self, key: &PublicKey) -> Result<(), LabelError> {
        let sig = self.sig.as_deref().ok_or(LabelError::Unsigned)?;
        key.verify(&self.signing_bytes()?, sig)?;
        Ok(())
    }

    /// Reads a label from atproto JSON (`sig` as `{"$bytes": ...}`).
    pub fn from_json(value: &serde_json::Value) -> Result<Label, DataError> {
        let ipld = crate::data::json_to_ipld(value)?;
        let bytes = encode_cbor(&ipld)?;
        serde_ipld_dagcbor::from_slice(&bytes).map_err(|e| DataError::Cbor(e.to_string()))
    }
}

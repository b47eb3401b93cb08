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
    /// A field breaks `com.atproto.label.defs#label`.
    #[error("label field `{field}`: {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

/// The longest label value the lexicon allows, in bytes.
pub const MAX_VALUE_BYTES: usize = 128;

fn invalid(field: &'static str, message: impl Into<String>) -> LabelError {
    LabelError::Invalid {
        field,
        message: message.into(),
    }
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

    /// Checks the fields against `com.atproto.label.defs#label`: `ver` 1, `src` a DID, `uri`
    /// an AT-URI or a DID, `cid` a CID, `val` 1–128 bytes, `cts` and `exp` datetimes, `sig`
    /// (when present) 64 bytes.
    pub fn validate(&self) -> Result<(), LabelError> {
        use crate::syntax::{AtUri, Datetime, Did, validate_cid_str};
        if let Some(ver) = self.ver
            && ver != 1
        {
            return Err(invalid("ver", format!("version {ver}; only 1 is defined")));
        }
        Did::new(&self.src).map_err(|e| invalid("src", e.to_string()))?;
        if self.uri.starts_with("did:") {
            Did::new(&self.uri).map_err(|e| invalid("uri", e.to_string()))?;
        } else {
            AtUri::new(&self.uri).map_err(|e| invalid("uri", e.to_string()))?;
        }
        if let Some(cid) = &self.cid {
            validate_cid_str(cid).map_err(|e| invalid("cid", e.to_string()))?;
        }
        if self.val.is_empty() || self.val.len() > MAX_VALUE_BYTES {
            return Err(invalid(
                "val",
                format!(
                    "{} bytes; a value has 1 to {MAX_VALUE_BYTES}",
                    self.val.len()
                ),
            ));
        }
        Datetime::new(&self.cts).map_err(|e| invalid("cts", e.to_string()))?;
        if let Some(exp) = &self.exp {
            Datetime::new(exp).map_err(|e| invalid("exp", e.to_string()))?;
        }
        if let Some(sig) = &self.sig
            && sig.len() != 64
        {
            return Err(invalid("sig", format!("{} bytes; expected 64", sig.len())));
        }
        Ok(())
    }

    /// The label as atproto JSON (`sig` as `{"$bytes": base64}`), as XRPC responses carry it.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "src": self.src,
            "uri": self.uri,
            "val": self.val,
            "cts": self.cts,
        });
        let o = v.as_object_mut().expect("object");
        if let Some(ver) = self.ver {
            o.insert("ver".into(), ver.into());
        }
        if let Some(cid) = &self.cid {
            o.insert("cid".into(), cid.clone().into());
        }
        if self.neg {
            o.insert("neg".into(), true.into());
        }
        if let Some(exp) = &self.exp {
            o.insert("exp".into(), exp.clone().into());
        }
        if let Some(sig) = &self.sig {
            o.insert(
                "sig".into(),
                serde_json::json!({ "$bytes": crate::data::encode_base64(sig) }),
            );
        }
        v
    }

    /// Reads a label from atproto JSON (`sig` as `{"$bytes": ...}`).
    pub fn from_json(value: &serde_json::Value) -> Result<Label, DataError> {
        let ipld = crate::data::json_to_ipld(value)?;
        let bytes = encode_cbor(&ipld)?;
        serde_ipld_dagcbor::from_slice(&bytes).map_err(|e| DataError::Cbor(e.to_string()))
    }
}

/// The body of a `#labels` message on `com.atproto.label.subscribeLabels`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelsMessage {
    /// The stream position of these labels.
    pub seq: i64,
    /// The labels.
    pub labels: Vec<Label>,
}

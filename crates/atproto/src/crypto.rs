//! Keys and signatures: k256 (secp256k1, `ES256K`) and p256 (NIST P-256, `ES256`).
//!
//! atproto signs the SHA-256 of the bytes with ECDSA and writes the signature as 64 bytes
//! `r || s` with a low `s`. High-S and DER signatures are rejected, as the spec requires, so a
//! signature has exactly one valid form. Public keys travel as `did:key` or multibase
//! "Multikey" strings: base58btc of a multicodec prefix plus the compressed point.

use k256::ecdsa::signature::{Signer as _, Verifier as _};

/// Multicodec prefix of a secp256k1 public key (varint of 0xe7).
const K256_PUB_PREFIX: [u8; 2] = [0xe7, 0x01];
/// Multicodec prefix of a P-256 public key (varint of 0x1200).
const P256_PUB_PREFIX: [u8; 2] = [0x80, 0x24];

/// Why a key or signature was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// The did:key / multibase string is malformed.
    #[error("invalid public key {key:?}: {message}")]
    BadKey {
        /// The key as given (truncated).
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// Private key bytes are not a valid scalar.
    #[error("invalid private key: {0}")]
    BadPrivateKey(String),
    /// The signature is not 64 bytes of `r || s`.
    #[error("signature must be 64 bytes (r || s), got {0}")]
    BadSignatureLength(usize),
    /// The signature has a high `s`; atproto only accepts the low-S form.
    #[error("signature has high S (atproto requires low-S)")]
    HighS,
    /// The signature does not verify.
    #[error("signature does not verify")]
    Invalid,
}

/// A curve atproto uses for signing keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Curve {
    /// secp256k1 (`ES256K`), the default for repos and labelers.
    K256,
    /// NIST P-256 (`ES256`).
    P256,
}

/// A public key able to verify atproto signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// secp256k1.
    K256(k256::ecdsa::VerifyingKey),
    /// NIST P-256.
    P256(p256::ecdsa::VerifyingKey),
}

fn bad_key(key: &str, message: impl Into<String>) -> CryptoError {
    CryptoError::BadKey {
        key: key.chars().take(80).collect(),
        message: message.into(),
    }
}

impl PublicKey {
    /// Parses a `did:key:z...` string.
    pub fn from_did_key(did_key: &str) -> Result<Self, CryptoError> {
        let multibase = did_key
            .strip_prefix("did:key:")
            .ok_or_else(|| bad_key(did_key, "does not start with did:key:"))?;
        Self::from_multikey(multibase)
    }

    /// Parses a multibase Multikey (`z` + base58btc of multicodec prefix + key), as found in
    /// DID documents under `publicKeyMultibase` of a `Multikey` verification method (see
    /// [`PublicKey::from_verification_method`] for the legacy types).
    pub fn from_multikey(multibase: &str) -> Result<Self, CryptoError> {
        let (base, bytes) =
            multibase::decode(multibase).map_err(|e| bad_key(multibase, e.to_string()))?;
        if base != multibase::Base::Base58Btc {
            return Err(bad_key(multibase, "multibase must be base58btc ('z')"));
        }
        if let Some(key) = bytes.strip_prefix(&K256_PUB_PREFIX) {
            k256::ecdsa::VerifyingKey::from_sec1_bytes(key)
                .map(PublicKey::K256)
                .map_err(|_| bad_key(multibase, "not a valid secp256k1 point"))
        } else if let Some(key) = bytes.strip_prefix(&P256_PUB_PREFIX) {
            p256::ecdsa::VerifyingKey::from_sec1_bytes(key)
                .map(PublicKey::P256)
                .map_err(|_| bad_key(multibase, "not a valid P-256 point"))
        } else {
            Err(bad_key(
                multibase,
                "unknown multicodec (expected secp256k1-pub or p256-pub)",
            ))
        }
    }

    /// Parses a DID document verification method: `Multikey` (multicodec-prefixed, compressed),
    /// or the legacy `EcdsaSecp256k1VerificationKey2019` / `EcdsaSecp256r1VerificationKey2019`
    /// whose `publicKeyMultibase` is the bare SEC1 point (older PLC documents still use them).
    pub fn from_verification_method(kind: &str, multibase: &str) -> Result<Self, CryptoError> {
        let legacy_curve = match kind {
            "EcdsaSecp256k1VerificationKey2019" => Curve::K256,
            "EcdsaSecp256r1VerificationKey2019" => Curve::P256,
            _ => return Self::from_multikey(multibase),
        };
        let (_, bytes) =
            multibase::decode(multibase).map_err(|e| bad_key(multibase, e.to_string()))?;
        match legacy_curve {
            Curve::K256 => k256::ecdsa::VerifyingKey::from_sec1_bytes(&bytes)
                .map(PublicKey::K256)
                .map_err(|_| bad_key(multibase, "not a valid secp256k1 point")),
            Curve::P256 => p256::ecdsa::VerifyingKey::from_sec1_bytes(&bytes)
                .map(PublicKey::P256)
                .map_err(|_| bad_key(multibase, "not a valid P-256 point")),
        }
    }

    /// The key's curve.
    pub fn curve(&self) -> Curve {
        match self {
            PublicKey::K256(_) => Curve::K256,
            PublicKey::P256(_) => Curve::P256,
        }
    }

    /// The compressed SEC1 point (33 bytes).
    pub fn to_compressed(&self) -> Vec<u8> {
        match self {
            PublicKey::K256(k) => k.to_encoded_point(true).as_bytes().to_vec(),
            PublicKey::P256(k) => k.to_encoded_point(true).as_bytes().to_vec(),
        }
    }

    /// The multibase Multikey form (`z...`), as written in a DID document.
    pub fn to_multikey(&self) -> String {
        let prefix = match self {
            PublicKey::K256(_) => K256_PUB_PREFIX,
            PublicKey::P256(_) => P256_PUB_PREFIX,
        };
        let mut bytes = prefix.to_vec();
        bytes.extend_from_slice(&self.to_compressed());
        multibase::encode(multibase::Base::Base58Btc, bytes)
    }

    /// The `did:key:z...` form.
    pub fn to_did_key(&self) -> String {
        format!("did:key:{}", self.to_multikey())
    }

    /// Verifies an atproto signature (64-byte low-S `r || s`) over SHA-256 of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), CryptoError> {
        if signature.len() != 64 {
            return Err(CryptoError::BadSignatureLength(signature.len()));
        }
        match self {
            PublicKey::K256(key) => {
                let sig = k256::ecdsa::Signature::from_slice(signature)
                    .map_err(|_| CryptoError::Invalid)?;
                if sig.normalize_s().is_some() {
                    return Err(CryptoError::HighS);
                }
                key.verify(message, &sig).map_err(|_| CryptoError::Invalid)
            }
            PublicKey::P256(key) => {
                let sig = p256::ecdsa::Signature::from_slice(signature)
                    .map_err(|_| CryptoError::Invalid)?;
                if sig.normalize_s().is_some() {
                    return Err(CryptoError::HighS);
                }
                key.verify(message, &sig).map_err(|_| CryptoError::Invalid)
            }
        }
    }
}

/// A private signing key.
#[derive(Clone)]
pub enum SigningKey {
    /// secp256k1.
    K256(k256::ecdsa::SigningKey),
    /// NIST P-256.
    P256(p256::ecdsa::SigningKey),
}

impl std::fmt::Debug for SigningKey {
    // Never print secret material, even in debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SigningKey({:?}, {})",
            self.curve(),
            self.public().to_did_key()
        )
    }
}

impl SigningKey {
    /// Builds a key from 32 secret bytes.
    pub fn from_bytes(curve: Curve, secret: &[u8]) -> Result<Self, CryptoError> {
        match curve {
            Curve::K256 => k256::ecdsa::SigningKey::from_slice(secret)
                .map(SigningKey::K256)
                .map_err(|e| CryptoError::BadPrivateKey(e.to_string())),
            Curve::P256 => p256::ecdsa::SigningKey::from_slice(secret)
                .map(SigningKey::P256)
                .map_err(|e| CryptoError::BadPrivateKey(e.to_string())),
        }
    }

    /// Generates a fresh random key from the operating system's RNG.
    pub fn generate(curve: Curve) -> Self {
        let mut rng = k256::elliptic_curve::rand_core::OsRng;
        match curve {
            Curve::K256 => SigningKey::K256(k256::ecdsa::SigningKey::random(&mut rng)),
            Curve::P256 => SigningKey::P256(p256::ecdsa::SigningKey::random(&mut rng)),
        }
    }

    /// The key's curve.
    pub fn curve(&self) -> Curve {
        match self {
            SigningKey::K256(_) => Curve::K256,
            SigningKey::P256(_) => Curve::P256,
        }
    }

    /// The 32 secret bytes (for storing the key; never log them).
    pub fn to_bytes(&self) -> [u8; 32] {
        match self {
            SigningKey::K256(k) => k.to_bytes().into(),
            SigningKey::P256(k) => k.to_bytes().into(),
        }
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        match self {
            SigningKey::K256(k) => PublicKey::K256(*k.verifying_key()),
            SigningKey::P256(k) => PublicKey::P256(*k.verifying_key()),
        }
    }

    /// Signs SHA-256 of `message`; returns the 64-byte low-S `r || s` signature.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        match self {
            SigningKey::K256(k) => {
                let sig: k256::ecdsa::Signature = k.sign(message);
                sig.normalize_s().unwrap_or(sig).to_bytes().into()
            }
            SigningKey::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(message);
                sig.normalize_s().unwrap_or(sig).to_bytes().into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_both_curves_and_reject_tampering() {
        for curve in [Curve::K256, Curve::P256] {
            let key = SigningKey::generate(curve);
            let public = PublicKey::from_did_key(&key.public().to_did_key()).unwrap();
            for i in 0..32u8 {
                let msg = [i; 40];
                let sig = key.sign(&msg);
                public.verify(&msg, &sig).unwrap();
                let mut bad = sig;
                bad[5] ^= 1;
                assert!(public.verify(&msg, &bad).is_err());
                assert!(public.verify(b"other", &sig).is_err());
            }
        }
    }

    #[test]
    fn legacy_verification_methods() {
        for curve in [Curve::K256, Curve::P256] {
            let public = SigningKey::generate(curve).public();
            let uncompressed = match &public {
                PublicKey::K256(k) => k.to_encoded_point(false).as_bytes().to_vec(),
                PublicKey::P256(k) => k.to_encoded_point(false).as_bytes().to_vec(),
            };
            let legacy = multibase::encode(multibase::Base::Base58Btc, uncompressed);
            let kind = match curve {
                Curve::K256 => "EcdsaSecp256k1VerificationKey2019",
                Curve::P256 => "EcdsaSecp256r1VerificationKey2019",
            };
            assert_eq!(
                PublicKey::from_verification_method(kind, &legacy).unwrap(),
                public
            );
            assert!(PublicKey::from_multikey(&legacy).is_err());
            let modern = public.to_multikey();
            assert_eq!(
                PublicKey::from_verification_method("Multikey", &modern).unwrap(),
                public
            );
        }
        // A key a real PLC served in the legacy form.
        let plc = "zQsDt2toG7N6om2YGs2fvn1WWj6H2hzTUGsBqyMQoWnqqEkaS6KRkeGDYpD2m8K9iERCdjT6nkmAu1HzLE3EbySEX";
        let key =
            PublicKey::from_verification_method("EcdsaSecp256k1VerificationKey2019", plc).unwrap();
        assert_eq!(key.curve(), Curve::K256);
    }

    #[test]
    fn high_s_is_rejected() {
        let key = SigningKey::generate(Curve::P256);
        let sig = key.sign(b"msg");
        let parsed = p256::ecdsa::Signature::from_slice(&sig).unwrap();
        // Flip s to n - s: the same signature in its high-S form.
        let (r, s) = parsed.split_scalars();
        let high = p256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
        let high: [u8; 64] = high.to_bytes().into();
        assert_eq!(key.public().verify(b"msg", &high), Err(CryptoError::HighS));
    }
}

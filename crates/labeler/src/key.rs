//! The labeler's signing key: configured as hex (like Ozone's `OZONE_SIGNING_KEY_HEX`), or
//! generated on first run and kept in the data directory, readable by its owner only.

use skywarden_atproto::crypto::{Curve, PublicKey, SigningKey};
use skywarden_atproto::label::Label;
use std::path::{Path, PathBuf};

/// The name of the key file in the data directory.
pub const KEY_FILE: &str = "labeler.key";

/// Why a key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The configured or stored key is malformed.
    #[error("signing key {origin}: {message}")]
    Bad {
        /// Where the key came from.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// The key file could not be read or written.
    #[error("signing key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
}

/// Where the key in use came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    /// From configuration (hex).
    Configured,
    /// From the key file in the data directory.
    File(PathBuf),
    /// Generated now and written to the key file.
    Generated(PathBuf),
}

/// A labeler signing key and its did:key.
pub struct LabelerKey {
    key: SigningKey,
    did_key: String,
}

impl std::fmt::Debug for LabelerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("LabelerKey")
            .field("did_key", &self.did_key)
            .finish()
    }
}

/// Parses a curve name: `k256` (or `secp256k1`) and `p256` (or `secp256r1`).
pub fn parse_curve(name: &str) -> Result<Curve, String> {
    match name.to_ascii_lowercase().as_str() {
        "k256" | "secp256k1" | "es256k" => Ok(Curve::K256),
        "p256" | "secp256r1" | "es256" => Ok(Curve::P256),
        other => Err(format!("key type `{other}`: expected k256 or p256")),
    }
}

fn curve_name(curve: Curve) -> &'static str {
    match curve {
        Curve::K256 => "k256",
        Curve::P256 => "p256",
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    let hex = hex.trim();
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl LabelerKey {
    /// Wraps a signing key.
    pub fn new(key: SigningKey) -> LabelerKey {
        let did_key = key.public().to_did_key();
        LabelerKey { key, did_key }
    }

    /// A key from 64 hex digits of secret on `curve`.
    pub fn from_hex(curve: Curve, hex: &str, origin: &str) -> Result<LabelerKey, KeyError> {
        let bad = |message: String| KeyError::Bad {
            origin: origin.to_string(),
            message,
        };
        let bytes = decode_hex(hex).ok_or_else(|| bad("not hex".into()))?;
        if bytes.len() != 32 {
            return Err(bad(format!(
                "{} bytes; a private key has 32 (64 hex digits)",
                bytes.len()
            )));
        }
        let key = SigningKey::from_bytes(curve, &bytes).map_err(|e| bad(e.to_string()))?;
        Ok(LabelerKey::new(key))
    }

    /// The key in `dir`'s key file, or a new `curve` key written there (mode 0600) when there
    /// is none. A key file readable by others is refused.
    pub fn load_or_generate(dir: &Path, curve: Curve) -> Result<(LabelerKey, KeyOrigin), KeyError> {
        let path = dir.join(KEY_FILE);
        let io = |source| KeyError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                check_permissions(&path)?;
                let origin = path.display().to_string();
                let (name, hex) = text.trim().split_once(':').ok_or_else(|| KeyError::Bad {
                    origin: origin.clone(),
                    message: "expected `k256:<hex>` or `p256:<hex>`".into(),
                })?;
                let curve = parse_curve(name).map_err(|message| KeyError::Bad {
                    origin: origin.clone(),
                    message,
                })?;
                Ok((
                    LabelerKey::from_hex(curve, hex, &origin)?,
                    KeyOrigin::File(path),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = SigningKey::generate(curve);
                let text = format!("{}:{}\n", curve_name(curve), encode_hex(&key.to_bytes()));
                match write_private(&path, text.as_bytes()) {
                    Ok(()) => Ok((LabelerKey::new(key), KeyOrigin::Generated(path))),
                    // Another process made the key first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Self::load_or_generate(dir, curve)
                    }
                    Err(e) => Err(io(e)),
                }
            }
            Err(e) => Err(io(e)),
        }
    }

    /// did:key of the public key: what goes under `#atproto_label` in the labeler's DID
    /// document.
    pub fn did_key(&self) -> &str {
        &self.did_key
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        self.key.public()
    }

    /// The key's curve.
    pub fn curve(&self) -> Curve {
        self.key.curve()
    }

    /// The key's curve name (`k256`, `p256`).
    pub fn curve_name(&self) -> &'static str {
        curve_name(self.key.curve())
    }

    /// Signs `label` in place (`sig` over the DAG-CBOR of the label without `sig`).
    pub fn sign(&self, label: &mut Label) -> Result<(), skywarden_atproto::data::DataError> {
        label.sign(&self.key)
    }
}

/// Writes a new private file atomically: a temporary file (mode 0600, synced) linked into
/// place, so a crash never leaves a partial key, and of two processes starting at once one
/// wins and the other finds the file already there.
#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    linked
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(unix)]
fn check_permissions(path: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(KeyError::Bad {
            origin: path.display().to_string(),
            message: format!(
                "permissions {:o} let others read the key; run `chmod 600 {}`",
                mode & 0o777,
                path.display()
            ),
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_: &Path) -> Result<(), KeyError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_private_and_reload_equal() {
        let dir = std::env::temp_dir().join(format!("skywarden-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, origin) = LabelerKey::load_or_generate(&dir, Curve::P256).unwrap();
        assert!(matches!(origin, KeyOrigin::Generated(_)));
        assert!(a.did_key().starts_with("did:key:zDn"), "p256 did:key");
        let (b, origin) = LabelerKey::load_or_generate(&dir, Curve::K256).unwrap();
        assert!(matches!(origin, KeyOrigin::File(_)));
        assert_eq!(
            a.did_key(),
            b.did_key(),
            "the stored key wins over the curve for new keys"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = dir.join(KEY_FILE);
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = LabelerKey::load_or_generate(&dir, Curve::K256).unwrap_err();
            assert!(e.to_string().contains("chmod 600"), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hex_keys_are_checked() {
        let hex = "9085d2bef69286a6cbb51623c8fa258629945cd55ca705cc4e66700396894e0c";
        let k = LabelerKey::from_hex(Curve::K256, hex, "test").unwrap();
        assert!(k.did_key().starts_with("did:key:zQ3s"), "k256 did:key");
        assert!(
            !format!("{k:?}").contains(hex),
            "Debug never shows the secret"
        );
        assert!(LabelerKey::from_hex(Curve::K256, "abc", "test").is_err());
        assert!(LabelerKey::from_hex(Curve::K256, &hex[..62], "test").is_err());
        assert!(LabelerKey::from_hex(Curve::K256, &"zz".repeat(32), "test").is_err());
        assert_eq!(parse_curve("P256").unwrap(), Curve::P256);
        assert!(parse_curve("ed25519").is_err());
    }
}

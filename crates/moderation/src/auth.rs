//! Who is calling: atproto service auth and the operator's password.
//!
//! A team member's client (or their PDS, proxying) sends `Authorization: Bearer <jwt>`: a JWT
//! signed with the caller's atproto signing key (ES256K or ES256, 64-byte low-S signature),
//! whose `iss` is the caller's DID, `aud` this service's DID, `lxm` the method called, and
//! `exp` in the future. The key comes from the caller's resolved DID document
//! (verificationMethod `#atproto`), through a [`KeyResolver`]. Operators use
//! `Authorization: Basic base64("admin:<password>")`; the password is compared in constant
//! time and never logged.
//!
//! Every refusal is a 401 XRPC error naming what was wrong (`AuthenticationRequired`,
//! `BadJwt`, `JwtExpired`, `BadJwtAudience`, `BadJwtLexiconMethod`, `BadJwtSignature`), the
//! names `@atproto/xrpc-server` uses.

use crate::XrpcError;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use skywarden_atproto::crypto::PublicKey;
use skywarden_atproto::syntax::Did;
use std::future::Future;
use std::pin::Pin;

/// A boxed future (the resolver is used as `dyn KeyResolver`).
pub type KeyFuture<'a> = Pin<Box<dyn Future<Output = Result<Option<String>, String>> + Send + 'a>>;

/// Finds a DID's atproto signing key (`did:key:…`); `Ok(None)` when the DID does not
/// resolve or its document has no `#atproto` key.
pub trait KeyResolver: Send + Sync {
    /// The key of `did`.
    fn signing_key<'a>(&'a self, did: &'a str) -> KeyFuture<'a>;
}

/// A team role (`tools.ozone.team.defs#role*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Verifiers manage verifications only; no moderation access.
    Verifier,
    /// Triage: read the queue, acknowledge, escalate, comment, tag, mute; no takedowns or labels.
    Triage,
    /// Moderators: everything on subjects.
    Moderator,
    /// Admins: moderators who also manage the team.
    Admin,
}

impl Role {
    /// The lexicon token.
    pub fn token(self) -> &'static str {
        match self {
            Role::Verifier => "tools.ozone.team.defs#roleVerifier",
            Role::Triage => "tools.ozone.team.defs#roleTriage",
            Role::Moderator => "tools.ozone.team.defs#roleModerator",
            Role::Admin => "tools.ozone.team.defs#roleAdmin",
        }
    }

    /// Parses a lexicon token.
    pub fn from_token(s: &str) -> Option<Role> {
        [Role::Verifier, Role::Triage, Role::Moderator, Role::Admin]
            .into_iter()
            .find(|r| r.token() == s)
    }
}

/// How the caller proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// The operator's password.
    Admin,
    /// A verified service-auth JWT from this DID.
    Service {
        /// The caller.
        did: String,
    },
}

/// The maximum lifetime accepted for a service-auth JWT: a longer-lived token is a stolen
/// token waiting to happen.
pub const MAX_JWT_LIFETIME_SECONDS: i64 = 3600;
/// Clock skew allowed on `exp` and `iat`.
pub const CLOCK_SKEW_SECONDS: i64 = 30;

fn unauthorized(error: &str, message: impl Into<String>) -> XrpcError {
    XrpcError::new(401, error, message)
}

/// Checks an `Authorization` header for a call of `lxm`. `aud` is this service's DID;
/// `admin_password` the operator's password, if one is set; `now` is seconds since the epoch.
pub async fn authenticate(
    header: Option<&str>,
    lxm: &str,
    aud: &str,
    admin_password: Option<&str>,
    keys: &dyn KeyResolver,
    now: i64,
) -> Result<Credentials, XrpcError> {
    let Some(header) = header else {
        return Err(unauthorized(
            "AuthenticationRequired",
            "this method needs an Authorization header: a service-auth JWT (Bearer) or the operator's Basic credentials",
        ));
    };
    if let Some(basic) = strip_scheme(header, "Basic") {
        return check_basic(basic, admin_password);
    }
    if let Some(token) = strip_scheme(header, "Bearer") {
        return verify_service_jwt(token, lxm, aud, keys, now)
            .await
            .map(|did| Credentials::Service { did });
    }
    Err(unauthorized(
        "AuthenticationRequired",
        "unsupported Authorization scheme: use Bearer (service auth) or Basic",
    ))
}

fn strip_scheme<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = header.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

fn check_basic(encoded: &str, admin_password: Option<&str>) -> Result<Credentials, XrpcError> {
    let bad = || unauthorized("AuthenticationRequired", "invalid admin credentials");
    let Some(expected) = admin_password else {
        return Err(unauthorized(
            "AuthenticationRequired",
            "admin password authentication is disabled: no admin password is configured",
        ));
    };
    let decoded = STANDARD.decode(encoded).map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (user, password) = decoded.split_once(':').ok_or_else(bad)?;
    if user == "admin" && constant_time_eq(password.as_bytes(), expected.as_bytes()) {
        Ok(Credentials::Admin)
    } else {
        Err(bad())
    }
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for (x, y) in a.iter().zip(b.iter().cycle()) {
        diff |= x ^ y;
    }
    diff == 0 && a.len() == b.len()
}

/// Verifies a service-auth JWT for a call of `lxm` to `aud`; returns the caller's DID.
pub async fn verify_service_jwt(
    token: &str,
    lxm: &str,
    aud: &str,
    keys: &dyn KeyResolver,
    now: i64,
) -> Result<String, XrpcError> {
    let bad = |m: &str| unauthorized("BadJwt", m.to_string());
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("not a JWT (three base64url parts)"));
    };
    let header: serde_json::Value = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| bad("JWT header is not base64url JSON"))?;
    let payload: serde_json::Value = URL_SAFE_NO_PAD
        .decode(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| bad("JWT payload is not base64url JSON"))?;
    let alg = header["alg"].as_str().unwrap_or("");
    if !matches!(alg, "ES256K" | "ES256") {
        return Err(bad("JWT alg must be ES256K or ES256"));
    }
    if matches!(header["typ"].as_str(), Some(t) if t == "at+jwt" || t == "refresh+jwt" || t == "dpop+jwt")
    {
        return Err(bad(
            "an access or refresh token is not a service-auth token",
        ));
    }
    let iss = payload["iss"]
        .as_str()
        .ok_or_else(|| bad("JWT has no iss"))?;
    // `did:…#atproto_labeler` style issuers name a service of the DID; the key is the DID's.
    let did = iss.split('#').next().unwrap_or(iss);
    Did::new(did).map_err(|_| bad("JWT iss is not a DID"))?;
    let exp = payload["exp"]
        .as_i64()
        .ok_or_else(|| bad("JWT has no exp"))?;
    if exp + CLOCK_SKEW_SECONDS <= now {
        return Err(unauthorized("JwtExpired", "JWT expired"));
    }
    if exp > now + MAX_JWT_LIFETIME_SECONDS + CLOCK_SKEW_SECONDS {
        return Err(bad("JWT expires too far in the future (at most one hour)"));
    }
    let token_aud = payload["aud"].as_str().unwrap_or("");
    let aud_ok = token_aud == aud
        || token_aud
            .strip_prefix(aud)
            .is_some_and(|rest| rest == "#atproto_labeler");
    if !aud_ok {
        return Err(unauthorized(
            "BadJwtAudience",
            format!("JWT audience does not match this service's DID ({aud})"),
        ));
    }
    match payload["lxm"].as_str() {
        Some(m) if m == lxm => {}
        Some(_) => {
            return Err(unauthorized(
                "BadJwtLexiconMethod",
                format!("JWT lxm does not match the method called ({lxm})"),
            ));
        }
        None => {
            return Err(unauthorized(
                "BadJwtLexiconMethod",
                "JWT has no lxm; service-auth tokens for this service must name the method",
            ));
        }
    }
    let sig = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| bad("JWT signature is not base64url"))?;
    let did_key = keys
        .signing_key(did)
        .await
        .map_err(|e| {
            unauthorized(
                "BadJwtSignature",
                format!("could not resolve the issuer's signing key: {e}"),
            )
        })?
        .ok_or_else(|| {
            unauthorized(
                "BadJwtSignature",
                "the issuer's DID has no atproto signing key",
            )
        })?;
    let key = PublicKey::from_did_key(&did_key).map_err(|e| {
        unauthorized(
            "BadJwtSignature",
            format!("the issuer's signing key is unusable: {e}"),
        )
    })?;
    let expected_alg = match key.curve() {
        skywarden_atproto::crypto::Curve::K256 => "ES256K",
        skywarden_atproto::crypto::Curve::P256 => "ES256",
    };
    if alg != expected_alg {
        return Err(unauthorized(
            "BadJwtSignature",
            "JWT alg does not match the issuer's key type",
        ));
    }
    let signed = &token[..h.len() + 1 + p.len()];
    key.verify(signed.as_bytes(), &sig).map_err(|_| {
        unauthorized(
            "BadJwtSignature",
            "JWT signature does not verify with the issuer's key",
        )
    })?;
    Ok(did.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use skywarden_atproto::crypto::{Curve, SigningKey};

    struct Keys(String, String);
    impl KeyResolver for Keys {
        fn signing_key<'a>(&'a self, did: &'a str) -> KeyFuture<'a> {
            Box::pin(async move { Ok((did == self.0).then(|| self.1.clone())) })
        }
    }

    fn jwt(key: &SigningKey, alg: &str, payload: serde_json::Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(format!(r#"{{"typ":"JWT","alg":"{alg}"}}"#));
        let p = URL_SAFE_NO_PAD.encode(payload.to_string());
        let sig = key.sign(format!("{h}.{p}").as_bytes());
        format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    #[tokio::test]
    async fn service_jwts_are_checked_field_by_field() {
        let key = SigningKey::generate(Curve::K256);
        let did = "did:plc:moderator0000000000000000";
        let keys = Keys(did.into(), key.public().to_did_key());
        let aud = "did:plc:service000000000000000000";
        let lxm = "tools.ozone.moderation.queryStatuses";
        let now = 1_800_000_000;
        let good =
            serde_json::json!({"iss": did, "aud": aud, "lxm": lxm, "exp": now + 60, "iat": now});
        let ok = verify_service_jwt(&jwt(&key, "ES256K", good.clone()), lxm, aud, &keys, now).await;
        assert_eq!(ok.as_deref(), Ok(did));
        let cases = [
            ("aud", serde_json::json!("did:plc:other"), "BadJwtAudience"),
            (
                "lxm",
                serde_json::json!("tools.ozone.moderation.getRepo"),
                "BadJwtLexiconMethod",
            ),
            ("exp", serde_json::json!(now - 120), "JwtExpired"),
            ("exp", serde_json::json!(now + 86_400), "BadJwt"),
            (
                "iss",
                serde_json::json!("did:plc:stranger000000000000000"),
                "BadJwtSignature",
            ),
        ];
        for (field, value, error) in cases {
            let mut p = good.clone();
            p[field] = value;
            let e = verify_service_jwt(&jwt(&key, "ES256K", p), lxm, aud, &keys, now)
                .await
                .unwrap_err();
            assert_eq!((e.status, e.error.as_str()), (401, error), "{field}");
        }
        let other = SigningKey::generate(Curve::K256);
        let forged = verify_service_jwt(&jwt(&other, "ES256K", good.clone()), lxm, aud, &keys, now)
            .await
            .unwrap_err();
        assert_eq!(forged.error, "BadJwtSignature");
        let wrong_alg = verify_service_jwt(&jwt(&key, "ES256", good), lxm, aud, &keys, now)
            .await
            .unwrap_err();
        assert_eq!(wrong_alg.error, "BadJwtSignature");
    }

    #[tokio::test]
    async fn basic_admin_needs_the_configured_password() {
        let keys = Keys(String::new(), String::new());
        let header = format!("Basic {}", STANDARD.encode("admin:s3cret"));
        let ok = authenticate(Some(&header), "m", "did:web:x", Some("s3cret"), &keys, 0).await;
        assert_eq!(ok, Ok(Credentials::Admin));
        for password in [Some("other"), None] {
            let e = authenticate(Some(&header), "m", "did:web:x", password, &keys, 0)
                .await
                .unwrap_err();
            assert_eq!(e.status, 401);
        }
        let e = authenticate(None, "m", "did:web:x", Some("s3cret"), &keys, 0)
            .await
            .unwrap_err();
        assert_eq!(e.error, "AuthenticationRequired");
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}

//! skywarden's moderation backend: the core of Ozone's API (`tools.ozone.*` and
//! `com.atproto.moderation.createReport`) on skywarden's own store, so the clients and habits
//! of Ozone teams carry over, with the engine's automated flags in the same queue.
//!
//! The layers, top down:
//!
//! - [`service::Moderation`]: one method per XRPC endpoint; JSON in, JSON views out, every
//!   refusal an [`XrpcError`]. It checks the caller's role ([`auth::Role`]) and input, builds
//!   events ([`event`]) and the views ([`view`]).
//! - [`event`]: the event types served, their validation, who may emit them, and the subject
//!   status state machine (a pure function of the current status and the event).
//! - [`auth`]: atproto service auth (ES256K/ES256 JWTs verified against the caller's DID
//!   document) and the operator's Basic `admin:<password>`.
//! - [`sets`]: `tools.ozone.set.*` on the rule engine's list files, so a moderator's change
//!   reaches detection at the next reload.
//! - [`sinks`]: what follows from the logs: engine effects become moderation events; label
//!   and takedown events become signed labels; takedowns are enforced on a PDS or a remote
//!   Ozone.
//!
//! Persistence is `skywarden_store::moderation` (SQLite or Postgres); this crate decides, the
//! store only keeps.

pub mod auth;
pub mod event;
pub mod metrics;
pub mod service;
pub mod sets;
pub mod sinks;
pub mod view;

use skywarden_atproto::syntax::Datetime;

/// A refusal, as an XRPC error body (`{"error", "message"}`) with its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XrpcError {
    /// HTTP status: 400, 401, 403, 404, 429 or 500.
    pub status: u16,
    /// The error name (`InvalidRequest`, `AuthenticationRequired`, a method's own error, ...).
    pub error: String,
    /// What was wrong, for people.
    pub message: String,
}

impl XrpcError {
    /// A refusal with `status` and `error`.
    pub fn new(status: u16, error: &str, message: impl Into<String>) -> Self {
        XrpcError {
            status,
            error: error.to_string(),
            message: message.into(),
        }
    }

    /// 400 `InvalidRequest`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidRequest", message)
    }

    /// 403 `Forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// 500 `InternalServerError`; the cause is logged, not shown.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "moderation request failed");
        Self::new(
            500,
            "InternalServerError",
            "internal error; see the service's log",
        )
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": self.error, "message": self.message })
    }
}

impl std::fmt::Display for XrpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.error, self.message)
    }
}

impl std::error::Error for XrpcError {}

impl From<skywarden_store::StoreError> for XrpcError {
    fn from(e: skywarden_store::StoreError) -> Self {
        XrpcError::internal(e)
    }
}

/// Microseconds since the epoch, now.
pub fn now_micros() -> i64 {
    Datetime::now().timestamp_micros()
}

/// `micros` as the datetime form every stored moderation timestamp uses: UTC, exactly three
/// fraction digits, so that stored datetimes compare as strings in time order.
pub fn datetime_ms(micros: i64) -> String {
    let ms = micros - micros.rem_euclid(1000);
    Datetime::from_timestamp_micros(ms)
        .map(Datetime::into_string)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".into())
}

/// A datetime from a request, in the stored form ([`datetime_ms`]), or why it is not one.
pub fn normalise_datetime(field: &str, s: &str) -> Result<String, XrpcError> {
    let dt = Datetime::new(s)
        .map_err(|e| XrpcError::invalid(format!("{field}: not an atproto datetime: {e}")))?;
    Ok(datetime_ms(dt.timestamp_micros()))
}

//! skywarden's HTTP surface: health, readiness and Prometheus metrics for operators, the
//! labeler's public XRPC, and the moderation XRPC API (Ozone's `tools.ozone.*`).
//!
//! | path | what |
//! |---|---|
//! | `GET /xrpc/_health` | `{"version": …, "ruleset": {…}}`, always 200 while the process serves |
//! | `GET /ready` | 200 once the engine runs with a good ruleset and a live source; 503 with the reason otherwise |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /xrpc/com.atproto.label.subscribeLabels` | the label stream (WebSocket, CBOR frames) |
//! | `GET /xrpc/com.atproto.label.queryLabels` | current labels by URI pattern |
//! | `GET /.well-known/did.json` | the DID document of a did:web labeler |
//! | `GET`/`POST /xrpc/{method}` | the moderation API (`createReport`, `tools.ozone.*`; see `docs/moderation.md`) |
//!
//! The labeler's routes are read-only and public, as the protocol defines them; every
//! moderation method is authenticated (service auth or the operator's password) and
//! role-checked by `skywarden_moderation`.

#![warn(missing_docs)]

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use skywarden_engine::metrics::Metrics;
use skywarden_engine::rules::RulesSlot;
use std::sync::{Arc, Mutex};

pub mod labels;
pub mod moderation;

pub use labels::LabelerApi;

/// What the readiness probe reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Starting: state being restored, source not yet connected.
    Starting,
    /// Running.
    Ready,
    /// Draining before exit.
    Stopping,
    /// The engine stopped with this error.
    Failed(String),
}

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    /// The engine's metrics.
    pub metrics: Arc<Metrics>,
    /// The running ruleset.
    pub rules: Arc<RulesSlot>,
    /// The engine's lifecycle, set by the binary.
    pub readiness: Arc<Mutex<Readiness>>,
    /// The labeler, when this process is one.
    pub labeler: Option<LabelerApi>,
    /// The moderation API, when served.
    pub moderation: Option<Arc<skywarden_moderation::service::Moderation>>,
}

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/xrpc/_health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route(
            "/xrpc/com.atproto.label.subscribeLabels",
            get(labels::subscribe_labels),
        )
        .route(
            "/xrpc/com.atproto.label.queryLabels",
            get(labels::query_labels),
        )
        .route("/.well-known/did.json", get(labels::did_document))
        .route(
            "/xrpc/{method}",
            get(moderation::query)
                .post(moderation::procedure)
                .layer(DefaultBodyLimit::max(moderation::MAX_BODY_BYTES)),
        )
        .fallback(not_found)
        .with_state(state)
}

async fn health(State(state): State<AppState>) -> Response {
    let body = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "ruleset": state.rules.status(),
    });
    json(StatusCode::OK, body)
}

async fn ready(State(state): State<AppState>) -> Response {
    let readiness = state
        .readiness
        .lock()
        .map(|r| r.clone())
        .unwrap_or(Readiness::Starting);
    let status = state.rules.status();
    let (code, reason) = match readiness {
        Readiness::Ready if status.last_reload_errors.is_empty() => (StatusCode::OK, None),
        Readiness::Ready => (
            StatusCode::OK,
            Some("the last ruleset reload was refused; the previous ruleset is running".into()),
        ),
        Readiness::Starting => (StatusCode::SERVICE_UNAVAILABLE, Some("starting".into())),
        Readiness::Stopping => (StatusCode::SERVICE_UNAVAILABLE, Some("stopping".into())),
        Readiness::Failed(e) => (StatusCode::SERVICE_UNAVAILABLE, Some(e)),
    };
    json(
        code,
        serde_json::json!({ "ready": code == StatusCode::OK, "reason": reason, "ruleset": status }),
    )
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut registry = state.metrics.registry();
    if let Some(labeler) = &state.labeler {
        labeler.hub.metrics().register(&mut registry);
    }
    if let Some(m) = &state.moderation {
        m.metrics().register(&mut registry);
    }
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

async fn not_found() -> Response {
    xrpc_error(StatusCode::NOT_FOUND, "NotFound", "no such endpoint")
}

/// An XRPC error response: `{"error", "message"}`.
pub(crate) fn xrpc_error(code: StatusCode, error: &str, message: &str) -> Response {
    json(
        code,
        serde_json::json!({ "error": error, "message": message }),
    )
}

pub(crate) fn json(code: StatusCode, body: serde_json::Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

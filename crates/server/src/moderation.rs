//! The moderation XRPC API: `com.atproto.moderation.createReport` and the served
//! `tools.ozone.*` methods, as `GET` (queries) and `POST` (procedures) on `/xrpc/{method}`.
//!
//! This module moves requests to [`Moderation::call`] and its answers back; authentication,
//! roles and every decision live in `skywarden_moderation`. It also adapts the engine's
//! identity resolver to the two lookups the service needs: signing keys (service auth) and
//! handles (views).

use crate::{AppState, json, xrpc_error};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use skywarden_engine::identity::{IdentityResolver, Lookup};
use skywarden_moderation::XrpcError;
use skywarden_moderation::auth::{KeyFuture, KeyResolver};
use skywarden_moderation::service::{Directory, Input, Moderation};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// Largest request body accepted (reports and events are small).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// How long a request waits for a DID to resolve.
const RESOLVE_BUDGET: Duration = Duration::from_secs(3);

/// Signing keys and handles from the engine's identity resolver (cached, rate-limited,
/// SSRF-safe).
#[derive(Clone, Debug)]
pub struct ResolverAdapter(pub IdentityResolver);

impl KeyResolver for ResolverAdapter {
    fn signing_key<'a>(&'a self, did: &'a str) -> KeyFuture<'a> {
        Box::pin(async move {
            match self.0.resolve_within(did, RESOLVE_BUDGET).await {
                Lookup::Known(identity) => Ok(identity.signing_key.clone()),
                Lookup::NotFound => Ok(None),
                Lookup::Unknown => Err("the DID did not resolve in time".into()),
            }
        })
    }
}

impl Directory for ResolverAdapter {
    fn handle<'a>(
        &'a self,
        did: &'a str,
    ) -> Pin<Box<dyn Future<Output = Option<String>> + Send + 'a>> {
        Box::pin(async move {
            match self.0.lookup(did) {
                Lookup::Known(identity) => identity.handle.clone(),
                _ => None,
            }
        })
    }
}

fn respond(result: Result<serde_json::Value, XrpcError>) -> Response {
    match result {
        Ok(body) => json(StatusCode::OK, body),
        Err(e) => {
            let code = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = xrpc_error(code, &e.error, &e.message);
            if e.status == 401 {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer, Basic realm=\"skywarden\""),
                );
            }
            response
        }
    }
}

fn service<'a>(state: &'a AppState, method: &str) -> Result<&'a Moderation, XrpcError> {
    match (&state.moderation, Moderation::method(method)) {
        (Some(m), Some(_)) => Ok(m),
        _ => Err(XrpcError::new(
            501,
            "MethodNotImplemented",
            format!("{method} is not served here"),
        )),
    }
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// `GET /xrpc/{method}`.
pub async fn query(
    State(state): State<AppState>,
    Path(method): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let m = match service(&state, &method) {
        Ok(m) => m,
        Err(e) => return respond(Err(e)),
    };
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    respond(
        m.call(&method, authorization(&headers), Input::Query(params))
            .await,
    )
}

/// `POST /xrpc/{method}`.
pub async fn procedure(
    State(state): State<AppState>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let m = match service(&state, &method) {
        Ok(m) => m,
        Err(e) => return respond(Err(e)),
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !body.is_empty() && !content_type.starts_with("application/json") {
        return respond(Err(XrpcError::invalid("the body must be application/json")));
    }
    let value = if body.is_empty() {
        serde_json::Value::Object(Default::default())
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return respond(Err(XrpcError::invalid(format!(
                    "the body is not JSON: {e}"
                ))));
            }
        }
    };
    respond(
        m.call(&method, authorization(&headers), Input::Body(value))
            .await,
    )
}

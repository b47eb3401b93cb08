//! The labeler's XRPC surface: `com.atproto.label.subscribeLabels` (WebSocket),
//! `com.atproto.label.queryLabels`, and `/.well-known/did.json` for a did:web labeler. The
//! stream's logic (replay, live, slow consumers) is `skywarden_labeler::hub`; this module
//! moves its frames onto sockets.

use crate::{AppState, xrpc_error};
use axum::extract::ws::{
    Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use skywarden_labeler::hub::{LabelHub, Next};
use skywarden_labeler::stored_to_label;
use skywarden_store::labels::{LabelQuery, QueryCursor, UriPattern};
use std::sync::Arc;

/// What the HTTP layer needs of the labeler.
#[derive(Debug, Clone)]
pub struct LabelerApi {
    /// The fan-out (and through it the label store and metrics).
    pub hub: Arc<LabelHub>,
    /// The labeler's DID document, served at `/.well-known/did.json` when the DID is did:web.
    pub did_document: Option<serde_json::Value>,
}

/// `uriPatterns` per request at most (each is one index range read).
pub const MAX_PATTERNS: usize = 50;
/// Length of one pattern or source at most.
const MAX_PARAM_BYTES: usize = 4096;

fn params(query: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn invalid(message: impl Into<String>) -> Response {
    xrpc_error(StatusCode::BAD_REQUEST, "InvalidRequest", &message.into())
}

fn not_a_labeler() -> Response {
    xrpc_error(
        StatusCode::NOT_IMPLEMENTED,
        "MethodNotImplemented",
        "this skywarden runs without a labeler",
    )
}

/// `GET /xrpc/com.atproto.label.queryLabels`.
pub async fn query_labels(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let Some(labeler) = &state.labeler else {
        return not_a_labeler();
    };
    let mut patterns = Vec::new();
    let mut sources = Vec::new();
    let mut limit = 50u32;
    let mut after = None;
    for (key, value) in params(query.as_deref()) {
        if value.len() > MAX_PARAM_BYTES {
            return invalid(format!("{key}: longer than {MAX_PARAM_BYTES} bytes"));
        }
        if value.chars().any(char::is_control) {
            return invalid(format!("{key}: control characters are not allowed"));
        }
        match key.as_str() {
            "uriPatterns" => match UriPattern::parse(&value) {
                Ok(p) => patterns.push(p),
                Err(e) => return invalid(e),
            },
            "sources" => {
                if skywarden_atproto::syntax::Did::new(&value).is_err() {
                    return invalid(format!("sources: `{value}` is not a DID"));
                }
                sources.push(value);
            }
            "limit" => match value.parse::<u32>() {
                Ok(n) if (1..=250).contains(&n) => limit = n,
                _ => {
                    return invalid(format!(
                        "limit `{value}`: expected an integer from 1 to 250"
                    ));
                }
            },
            "cursor" => match QueryCursor::decode(&value) {
                Some(c) => after = Some(c),
                None => {
                    return invalid(format!(
                        "cursor `{value}` was not returned by this endpoint"
                    ));
                }
            },
            _ => {}
        }
    }
    if patterns.is_empty() {
        return invalid("uriPatterns is required: one or more URIs, a trailing `*` for a prefix");
    }
    if patterns.len() > MAX_PATTERNS {
        return invalid(format!("at most {MAX_PATTERNS} uriPatterns per request"));
    }
    let q = LabelQuery {
        patterns,
        sources,
        after,
        limit,
        now_micros: now_micros(),
    };
    match labeler.hub.store().query(&q).await {
        Ok(page) => {
            let labels: Vec<serde_json::Value> = page
                .labels
                .iter()
                .map(|r| stored_to_label(&r.label).to_json())
                .collect();
            let mut body = serde_json::json!({ "labels": labels });
            if let Some(c) = page.cursor {
                body["cursor"] = c.encode().into();
            }
            crate::json(StatusCode::OK, body)
        }
        Err(e) => {
            tracing::error!(error = %e, "queryLabels failed");
            xrpc_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "the label store could not be read",
            )
        }
    }
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// `GET /xrpc/com.atproto.label.subscribeLabels` (WebSocket).
pub async fn subscribe_labels(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Some(labeler) = state.labeler.clone() else {
        return not_a_labeler();
    };
    let mut cursor = None;
    for (key, value) in params(query.as_deref()) {
        if key == "cursor" {
            match value.parse::<i64>() {
                Ok(n) if n >= 0 => cursor = Some(n),
                _ => return invalid(format!("cursor `{value}`: expected a non-negative integer")),
            }
        }
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            return invalid(format!(
                "subscribeLabels is a WebSocket endpoint ({e}); connect with `Upgrade: websocket`"
            ));
        }
    };
    // Subscribers only read; anything they send is small or ignored.
    ws.max_message_size(16 * 1024)
        .on_upgrade(move |socket| stream(socket, labeler.hub, cursor))
}

async fn stream(socket: WebSocket, hub: Arc<LabelHub>, cursor: Option<i64>) {
    let (mut tx, mut rx) = socket.split();
    let timeout = hub.config().send_timeout;
    let metrics = hub.metrics().clone();
    let mut sub = match hub.subscribe(cursor).await {
        Ok(sub) => sub,
        Err(refusal) => {
            let _ = tx.send(Message::Binary(refusal.frame())).await;
            let _ = tx.close().await;
            return;
        }
    };
    // The client's messages are read (and dropped) by their own task, so that they never
    // interrupt a store read in progress; only the end of the connection stops the stream.
    let (closed_tx, mut closed) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = rx.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
        let _ = closed_tx.send(());
    });
    loop {
        let next = tokio::select! {
            next = sub.next() => next,
            _ = &mut closed => break,
        };
        let (frame, last) = match next {
            Next::Frame(f) => (f, false),
            Next::Close(f) => (f, true),
            Next::End => break,
        };
        // Frames of a replay page are queued and flushed together: one write per page, not
        // per label. A live frame (nothing else ready) is flushed at once.
        let write = async {
            tx.feed(Message::Binary(frame)).await?;
            if last || !sub.has_buffered() {
                tx.flush().await?;
            }
            Ok::<(), axum::Error>(())
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(())) => {
                metrics.frames_sent.inc();
            }
            Ok(Err(_)) => break,
            Err(_) => {
                // The socket did not take a frame in time: a stalled reader.
                metrics.slow_consumers.inc();
                break;
            }
        }
        if last {
            let _ = tokio::time::timeout(timeout, tx.close()).await;
            break;
        }
    }
    reader.abort();
}

/// `GET /.well-known/did.json`.
pub async fn did_document(State(state): State<AppState>) -> Response {
    match state.labeler.as_ref().and_then(|l| l.did_document.clone()) {
        Some(doc) => crate::json(StatusCode::OK, doc),
        None => xrpc_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            "this labeler's DID is not a did:web served here",
        ),
    }
}

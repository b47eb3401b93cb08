//! The `com.atproto.sync.subscribeRepos` WebSocket transport, for relays and PDSes.

use crate::backoff::Backoff;
use crate::metrics::SourceMetrics;
use crate::{RawFrame, now_micros};
use bytes::Bytes;
use futures_util::StreamExt as _;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use url::Url;

/// The XRPC path of the repo event stream.
pub const SUBSCRIBE_REPOS: &str = "/xrpc/com.atproto.sync.subscribeRepos";

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Builds the stream URL from a host's base URL (`wss://bsky.network`, `http://127.0.0.1:2583`):
/// `http(s)` becomes `ws(s)`, the XRPC path is appended unless already there, and `cursor` is set.
pub fn stream_url(base: &str, path: &str, cursor: Option<i64>) -> Result<Url, String> {
    let mut url = Url::parse(base).map_err(|e| format!("{base:?} is not a URL: {e}"))?;
    let scheme = match url.scheme() {
        "ws" | "http" => "ws",
        "wss" | "https" => "wss",
        other => {
            return Err(format!(
                "{base:?}: scheme {other:?} is not ws, wss, http or https"
            ));
        }
    };
    url.set_scheme(scheme)
        .map_err(|_| format!("{base:?}: cannot use scheme {scheme}"))?;
    if !url.path().ends_with(path) {
        let trimmed = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{trimmed}{path}"));
    }
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "cursor")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    {
        let mut q = url.query_pairs_mut();
        q.clear();
        for (k, v) in &kept {
            q.append_pair(k, v);
        }
        if let Some(c) = cursor {
            q.append_pair("cursor", &c.to_string());
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    Ok(url)
}

/// Connection settings shared by the WebSocket transports.
#[derive(Debug, Clone)]
pub struct WsSettings {
    /// Frames larger than this are counted as oversized and skipped.
    pub max_frame_bytes: usize,
    /// First reconnect delay.
    pub backoff_base: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// Give up after this many consecutive failed connects (`None`: never).
    pub max_retries: Option<u32>,
}

impl Default for WsSettings {
    fn default() -> Self {
        WsSettings {
            max_frame_bytes: 5 << 20,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            max_retries: None,
        }
    }
}

/// What a read from a WebSocket transport produced.
pub(crate) enum WsRead {
    /// A data message, as the socket's buffer holds it (not copied).
    Data(Bytes),
    /// The connection ended (closed or failed); reconnect.
    Closed(String),
}

/// A reconnecting WebSocket, shared by the firehose and Jetstream transports.
pub(crate) struct Ws {
    settings: WsSettings,
    backoff: Backoff,
    socket: Option<Socket>,
    failures: u32,
    pub(crate) metrics: Arc<SourceMetrics>,
    connected_once: bool,
}

impl Ws {
    pub(crate) fn new(settings: WsSettings, metrics: Arc<SourceMetrics>) -> Self {
        Ws {
            backoff: Backoff::new(settings.backoff_base, settings.backoff_max),
            settings,
            socket: None,
            failures: 0,
            metrics,
            connected_once: false,
        }
    }

    pub(crate) fn max_frame_bytes(&self) -> usize {
        self.settings.max_frame_bytes
    }

    /// Drops the connection; the next read reconnects.
    pub(crate) fn disconnect(&mut self) {
        self.socket = None;
    }

    /// Reads the next data message, connecting (with backoff) when needed. `url` is asked for
    /// on every connect so it carries the latest cursor.
    pub(crate) async fn read(
        &mut self,
        url: impl Fn() -> Result<Url, String>,
    ) -> Result<Bytes, String> {
        loop {
            if self.socket.is_none() {
                let url = url()?;
                if self.connected_once || self.failures > 0 {
                    let delay = self.backoff.next_delay();
                    tracing::info!(%url, ?delay, "reconnecting");
                    tokio::time::sleep(delay).await;
                }
                // tungstenite refuses messages above this; ours is checked per frame below so
                // one oversized frame is skipped instead of failing the connection forever.
                let config = WebSocketConfig::default()
                    .max_message_size(Some(self.settings.max_frame_bytes.max(64 << 20)))
                    .max_frame_size(Some(self.settings.max_frame_bytes.max(64 << 20)));
                // Boxed: inline, the handshake's state (about 10 KB) would be part of every
                // read's future, which is created for every frame; boxed, that is 400 bytes.
                let connect = Box::pin(tokio_tungstenite::connect_async_with_config(
                    url.as_str(),
                    Some(config),
                    false,
                ));
                match connect.await {
                    Ok((socket, _)) => {
                        if self.connected_once {
                            self.metrics.reconnects.fetch_add(1, Relaxed);
                        }
                        self.connected_once = true;
                        self.failures = 0;
                        self.socket = Some(socket);
                        tracing::info!(%url, "connected");
                    }
                    Err(e) => {
                        self.failures += 1;
                        tracing::warn!(%url, error = %e, failures = self.failures, "connect failed");
                        if self.settings.max_retries.is_some_and(|m| self.failures > m) {
                            return Err(format!(
                                "cannot connect to {url} after {} attempts: {e}",
                                self.failures
                            ));
                        }
                        continue;
                    }
                }
            }
            match self.next_message().await {
                WsRead::Data(bytes) => {
                    // A frame arrived: the connection is healthy, so a later failure starts
                    // its backoff small again.
                    self.backoff.reset();
                    if bytes.len() > self.settings.max_frame_bytes {
                        self.metrics.oversized.fetch_add(1, Relaxed);
                        tracing::warn!(
                            bytes = bytes.len(),
                            limit = self.settings.max_frame_bytes,
                            "frame over the size limit skipped"
                        );
                        continue;
                    }
                    return Ok(bytes);
                }
                WsRead::Closed(reason) => {
                    tracing::warn!(%reason, "stream ended");
                    self.socket = None;
                }
            }
        }
    }

    async fn next_message(&mut self) -> WsRead {
        let Some(socket) = self.socket.as_mut() else {
            return WsRead::Closed("not connected".into());
        };
        loop {
            match socket.next().await {
                Some(Ok(Message::Binary(b))) => return WsRead::Data(b),
                Some(Ok(Message::Text(t))) => return WsRead::Data(t.into()),
                Some(Ok(Message::Close(frame))) => {
                    return WsRead::Closed(format!("closed by server: {frame:?}"));
                }
                // Pings are answered by tungstenite on the next read; nothing to do.
                Some(Ok(_)) => continue,
                Some(Err(e)) => return WsRead::Closed(e.to_string()),
                None => return WsRead::Closed("connection closed".into()),
            }
        }
    }
}

/// The firehose transport: raw `subscribeRepos` frames from a relay or PDS.
pub struct FirehoseTransport {
    base: String,
    ws: Ws,
}

impl FirehoseTransport {
    /// A transport for the host at `base` (e.g. `wss://bsky.network`).
    pub fn new(
        base: &str,
        settings: WsSettings,
        metrics: Arc<SourceMetrics>,
    ) -> Result<Self, String> {
        stream_url(base, SUBSCRIBE_REPOS, None)?;
        Ok(FirehoseTransport {
            base: base.to_string(),
            ws: Ws::new(settings, metrics),
        })
    }

    /// The next raw frame; reconnects from `cursor` when the connection drops.
    pub async fn next_frame(&mut self, cursor: Option<i64>) -> Result<RawFrame, String> {
        let bytes = self
            .ws
            .read(|| stream_url(&self.base, SUBSCRIBE_REPOS, cursor))
            .await?;
        Ok(RawFrame {
            bytes,
            received_micros: now_micros(),
        })
    }

    /// Drops the connection (after an error frame); the next read reconnects.
    pub fn disconnect(&mut self) {
        self.ws.disconnect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_from_base() {
        let u = stream_url("wss://bsky.network", SUBSCRIBE_REPOS, Some(42)).unwrap();
        assert_eq!(
            u.as_str(),
            "wss://bsky.network/xrpc/com.atproto.sync.subscribeRepos?cursor=42"
        );
        let u = stream_url("http://127.0.0.1:2583/", SUBSCRIBE_REPOS, None).unwrap();
        assert_eq!(
            u.as_str(),
            "ws://127.0.0.1:2583/xrpc/com.atproto.sync.subscribeRepos"
        );
        let u = stream_url(
            "https://relay.example/xrpc/com.atproto.sync.subscribeRepos?cursor=1",
            SUBSCRIBE_REPOS,
            Some(7),
        )
        .unwrap();
        assert_eq!(
            u.as_str(),
            "wss://relay.example/xrpc/com.atproto.sync.subscribeRepos?cursor=7"
        );
        assert!(stream_url("ftp://x", SUBSCRIBE_REPOS, None).is_err());
        assert!(stream_url("not a url", SUBSCRIBE_REPOS, None).is_err());
    }
}

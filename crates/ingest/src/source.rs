//! [`Source`]: one transport plus decoding, consumer checks, metrics and the resume cursor.

use crate::archive::{ArchiveError, ArchiveReader};
use crate::firehose::{FirehoseTransport, WsSettings};
use crate::guard::StreamGuard;
use crate::jetstream::{JetstreamTransport, decode_message};
use crate::metrics::SourceMetrics;
use crate::{Format, RawFrame};
use skywarden_atproto::crypto::PublicKey;
use skywarden_atproto::event::{Event, EventBody, SignatureCheck};
use skywarden_atproto::frame::{Frame, decode_frame};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// Looks up an account's current signing key, to verify commit signatures.
pub trait KeyLookup: Send + Sync {
    /// The key for `did`, if known. Must not block: unknown keys leave commits unchecked.
    fn key_for(&self, did: &str) -> Option<PublicKey>;
}

/// A fixed DID → key map (tests, scenario files, pre-resolved accounts).
#[derive(Debug, Default, Clone)]
pub struct StaticKeys(pub HashMap<String, PublicKey>);

impl KeyLookup for StaticKeys {
    fn key_for(&self, did: &str) -> Option<PublicKey> {
        self.0.get(did).cloned()
    }
}

/// Why a source stopped.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The source's address or options are unusable.
    #[error("{0}")]
    Config(String),
    /// The connection could not be (re-)established.
    #[error("{0}")]
    Connection(String),
    /// The server refused our cursor as being in the future.
    #[error(
        "the server says cursor {cursor} is in the future ({message}); resume from a lower cursor or none"
    )]
    FutureCursor {
        /// The cursor we asked for.
        cursor: i64,
        /// The server's message.
        message: String,
    },
    /// The archive could not be read.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

/// Where frames come from.
pub enum Transport {
    /// A relay or PDS `subscribeRepos` stream.
    Firehose(FirehoseTransport),
    /// A Jetstream instance.
    Jetstream(JetstreamTransport),
    /// A recorded archive file.
    Archive(ArchiveReader),
}

/// Options common to every source.
#[derive(Clone, Default)]
pub struct SourceConfig {
    /// Resume after this cursor (`seq` or `time_us`); `None` starts live (or at the archive's
    /// start).
    pub cursor: Option<i64>,
    /// Signing keys for commit signature checks.
    pub keys: Option<Arc<dyn KeyLookup>>,
    /// Reject commits whose signature cannot be checked (no key known). Off by default.
    pub require_signatures: bool,
}

/// A source of events.
pub struct Source {
    transport: Transport,
    format: Format,
    /// Where a reconnect resumes: the last frame received, delivered or not.
    resume_cursor: Option<i64>,
    guard: StreamGuard,
    metrics: Arc<SourceMetrics>,
    config: SourceConfig,
    /// Receive time of the frame the lag gauge was last computed from.
    lag_received_micros: i64,
}

/// The lag gauge is recomputed at most once per this much receive time (parsing each event's
/// datetime for it would cost more than the gauge is worth).
const LAG_EVERY_MICROS: i64 = 1_000;

impl Source {
    /// A firehose source for the host at `base` (`wss://bsky.network`).
    pub fn firehose(
        base: &str,
        settings: WsSettings,
        config: SourceConfig,
    ) -> Result<Self, SourceError> {
        let metrics = Arc::new(SourceMetrics::default());
        let t =
            FirehoseTransport::new(base, settings, metrics.clone()).map_err(SourceError::Config)?;
        Ok(Self::with(
            Transport::Firehose(t),
            Format::Firehose,
            metrics,
            config,
        ))
    }

    /// A Jetstream source.
    pub fn jetstream(
        base: &str,
        collections: Vec<String>,
        compress: bool,
        settings: WsSettings,
        config: SourceConfig,
    ) -> Result<Self, SourceError> {
        let metrics = Arc::new(SourceMetrics::default());
        let t = JetstreamTransport::new(base, collections, compress, settings, metrics.clone())
            .map_err(SourceError::Config)?;
        Ok(Self::with(
            Transport::Jetstream(t),
            Format::Jetstream,
            metrics,
            config,
        ))
    }

    /// An archive replay. With a cursor, frames at or below it are skipped.
    pub fn archive(path: &Path, config: SourceConfig) -> Result<Self, SourceError> {
        let reader = ArchiveReader::open(path)?;
        let format = reader.format();
        let metrics = Arc::new(SourceMetrics::default());
        Ok(Self::with(
            Transport::Archive(reader),
            format,
            metrics,
            config,
        ))
    }

    fn with(
        transport: Transport,
        format: Format,
        metrics: Arc<SourceMetrics>,
        config: SourceConfig,
    ) -> Self {
        Source {
            transport,
            format,
            resume_cursor: config.cursor,
            guard: StreamGuard::resuming_after(config.cursor),
            lag_received_micros: i64::MIN,
            metrics,
            config,
        }
    }

    /// The frame format this source yields.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The source's counters (shared; keep the `Arc` to read them while the source runs).
    pub fn metrics(&self) -> Arc<SourceMetrics> {
        self.metrics.clone()
    }

    /// The cursor to resume from after a restart: the last frame received.
    pub fn cursor(&self) -> Option<i64> {
        self.resume_cursor
    }

    /// Drops the current connection (if any); the next read reconnects from [`Self::cursor`].
    pub fn disconnect(&mut self) {
        match &mut self.transport {
            Transport::Firehose(t) => t.disconnect(),
            Transport::Jetstream(t) => t.disconnect(),
            Transport::Archive(_) => {}
        }
    }

    async fn next_transport_frame(&mut self) -> Result<Option<RawFrame>, SourceError> {
        let cursor = self.resume_cursor;
        Ok(Some(match &mut self.transport {
            Transport::Firehose(t) => t
                .next_frame(cursor)
                .await
                .map_err(SourceError::Connection)?,
            Transport::Jetstream(t) => t
                .next_frame(cursor)
                .await
                .map_err(SourceError::Connection)?,
            Transport::Archive(r) => match r.next_frame()? {
                Some(f) => f,
                None => return Ok(None),
            },
        }))
    }

    /// The next raw message frame (stream-control frames are handled here and not returned).
    /// `None` when an archive ends. Used by `skywarden record`.
    pub async fn next_raw(&mut self) -> Result<Option<RawFrame>, SourceError> {
        loop {
            let Some(raw) = self.next_transport_frame().await? else {
                return Ok(None);
            };
            let carries_event = if self.format == Format::Jetstream {
                self.observe_jetstream(&raw)
            } else {
                let frame = decode_frame(&raw.bytes);
                self.observe(&raw, frame.as_ref().ok())?
            };
            if carries_event {
                return Ok(Some(raw));
            }
        }
    }

    /// Counts a Jetstream message and advances the cursor; every message carries an event.
    fn observe_jetstream(&mut self, raw: &RawFrame) -> bool {
        self.metrics
            .bytes
            .fetch_add(raw.bytes.len() as u64, Relaxed);
        self.metrics.frame("jetstream");
        // The cursor must advance in raw mode too (recording), so read just `time_us`.
        #[derive(serde::Deserialize)]
        struct Cursor {
            time_us: i64,
        }
        if let Ok(c) = serde_json::from_slice::<Cursor>(&raw.bytes) {
            self.resume_cursor = Some(c.time_us);
        }
        true
    }

    /// Counts a firehose frame (`frame` is `None` when it does not decode) and handles stream
    /// control; true when it carries an event to decode.
    fn observe(&mut self, raw: &RawFrame, frame: Option<&Frame<'_>>) -> Result<bool, SourceError> {
        self.metrics
            .bytes
            .fetch_add(raw.bytes.len() as u64, Relaxed);
        // Undecodable frames still go on to the decoder, which counts and logs them.
        let Some(frame) = frame else {
            return Ok(true);
        };
        self.metrics.frame(match frame {
            Frame::Unknown { .. } => "unknown",
            f => f.kind(),
        });
        match frame {
            Frame::Info(info) => {
                if info.name == "OutdatedCursor" {
                    self.metrics.outdated_cursor.fetch_add(1, Relaxed);
                }
                tracing::warn!(name = %info.name, message = ?info.message, "#info from server");
                Ok(false)
            }
            Frame::Error(err) => {
                tracing::warn!(error = %err.error, message = ?err.message, "error frame from server");
                if err.error == "FutureCursor" {
                    return Err(SourceError::FutureCursor {
                        cursor: self.resume_cursor.unwrap_or(0),
                        message: err.message.clone().unwrap_or_default(),
                    });
                }
                // e.g. ConsumerTooSlow: the server closes; resume from our cursor.
                self.disconnect();
                Ok(false)
            }
            Frame::Unknown { kind } => {
                tracing::debug!(%kind, "unknown message type skipped");
                Ok(false)
            }
            other => {
                if let Some(seq) = other.seq() {
                    self.resume_cursor = Some(seq);
                }
                Ok(true)
            }
        }
    }

    /// The next event that passes the consumer checks; `None` when an archive ends.
    pub async fn next_event(&mut self) -> Result<Option<Event>, SourceError> {
        loop {
            let Some(raw) = self.next_transport_frame().await? else {
                return Ok(None);
            };
            // Each frame is decoded once: the same decoded frame is counted and turned into
            // the event.
            let decoded = if self.format == Format::Jetstream {
                self.observe_jetstream(&raw);
                decode_message(&raw.bytes).map(Some)
            } else {
                let frame = decode_frame(&raw.bytes);
                if !self.observe(&raw, frame.as_ref().ok())? {
                    continue;
                }
                frame
                    .map_err(|e| e.to_string())
                    .and_then(|frame| self.to_event(&frame))
            };
            let event = match decoded {
                Ok(Some(event)) => event,
                Ok(None) => continue,
                Err(message) => {
                    self.metrics.decode_errors.fetch_add(1, Relaxed);
                    tracing::warn!(cursor = ?self.resume_cursor, %message, "frame skipped");
                    continue;
                }
            };
            if let Err(reason) = self.guard.check(&event) {
                self.metrics.dropped(reason.as_str());
                tracing::debug!(cursor = event.cursor, did = %event.did, reason = reason.as_str(), "event dropped");
                continue;
            }
            self.account(&event, &raw);
            return Ok(Some(event));
        }
    }

    /// The event of a decoded firehose frame, its commit checked against the account's key
    /// when one is known.
    fn to_event(&self, frame: &Frame<'_>) -> Result<Option<Event>, String> {
        let key = match (&self.config.keys, frame.did()) {
            (Some(keys), Some(did)) => keys.key_for(did),
            _ => None,
        };
        if self.config.require_signatures && key.is_none() && matches!(frame, Frame::Commit(_)) {
            return Err(format!(
                "no signing key known for {}",
                frame.did().unwrap_or("?")
            ));
        }
        frame
            .to_event(key.as_ref())
            .map_err(|e| format!("{} seq {:?}: {e}", frame.kind(), frame.seq()))
    }

    fn account(&mut self, event: &Event, raw: &RawFrame) {
        self.metrics.events.fetch_add(1, Relaxed);
        self.metrics.last_cursor.store(event.cursor, Relaxed);
        if let EventBody::Commit(c) = &event.body
            && c.signature == SignatureCheck::Verified
        {
            self.metrics.signatures_verified.fetch_add(1, Relaxed);
        }
        if raw.received_micros > 0
            && raw.received_micros.saturating_sub(self.lag_received_micros) >= LAG_EVERY_MICROS
            && let Ok(t) = skywarden_atproto::syntax::Datetime::parse_micros(&event.time)
        {
            self.lag_received_micros = raw.received_micros;
            self.metrics
                .lag_micros
                .store(raw.received_micros - t, Relaxed);
        }
    }
}

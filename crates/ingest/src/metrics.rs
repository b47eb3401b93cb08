//! Counters a source keeps, ready for a Prometheus exporter: frames by type, bytes, decode
//! errors, dropped events by reason, reconnects, and how far behind the source we are.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// Frame types counted separately.
pub const FRAME_KINDS: [&str; 8] = [
    "#commit",
    "#identity",
    "#account",
    "#sync",
    "#info",
    "error",
    "unknown",
    "jetstream",
];

/// Reasons an event is dropped by the stream guard (see [`crate::guard`]).
pub const DROP_REASONS: [&str; 3] = [
    "seq_not_increasing",
    "rev_not_increasing",
    "account_inactive",
];

/// Live counters of one source. All updates are relaxed atomics: cheap on the hot path, and a
/// reader sees each counter's own latest value.
#[derive(Debug, Default)]
pub struct SourceMetrics {
    frames: [AtomicU64; FRAME_KINDS.len()],
    dropped: [AtomicU64; DROP_REASONS.len()],
    /// Bytes received (frame payloads, after decompression for Jetstream).
    pub bytes: AtomicU64,
    /// Frames that could not be decoded (skipped, logged).
    pub decode_errors: AtomicU64,
    /// Frames over the size limit (skipped, logged).
    pub oversized: AtomicU64,
    /// Events delivered to the consumer.
    pub events: AtomicU64,
    /// Commit signatures verified.
    pub signatures_verified: AtomicU64,
    /// Connections re-established after a failure.
    pub reconnects: AtomicU64,
    /// `#info OutdatedCursor` messages seen (history before our cursor was gone).
    pub outdated_cursor: AtomicU64,
    /// The last delivered cursor (`seq` or `time_us`); 0 before the first event.
    pub last_cursor: AtomicI64,
    /// Microseconds between the last event's own timestamp and when we received it.
    pub lag_micros: AtomicI64,
}

/// A point-in-time copy of [`SourceMetrics`], for printing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MetricsSnapshot {
    /// Frames by type.
    pub frames: Vec<(&'static str, u64)>,
    /// Dropped events by reason.
    pub dropped: Vec<(&'static str, u64)>,
    /// Bytes received.
    pub bytes: u64,
    /// Undecodable frames.
    pub decode_errors: u64,
    /// Oversized frames.
    pub oversized: u64,
    /// Events delivered.
    pub events: u64,
    /// Signatures verified.
    pub signatures_verified: u64,
    /// Reconnects.
    pub reconnects: u64,
    /// OutdatedCursor infos.
    pub outdated_cursor: u64,
    /// Last cursor.
    pub last_cursor: i64,
    /// Lag behind the source in seconds.
    pub lag_seconds: f64,
}

impl SourceMetrics {
    /// Counts one frame of `kind` (one of [`FRAME_KINDS`]; anything else counts as unknown).
    pub fn frame(&self, kind: &str) {
        let i = FRAME_KINDS.iter().position(|k| *k == kind).unwrap_or(6);
        self.frames[i].fetch_add(1, Relaxed);
    }

    /// Counts one dropped event (`reason` one of [`DROP_REASONS`]).
    pub fn dropped(&self, reason: &str) {
        if let Some(i) = DROP_REASONS.iter().position(|r| *r == reason) {
            self.dropped[i].fetch_add(1, Relaxed);
        }
    }

    /// Frames seen of one kind.
    pub fn frames_of(&self, kind: &str) -> u64 {
        FRAME_KINDS
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.frames[i].load(Relaxed))
    }

    /// Events dropped for one reason.
    pub fn dropped_for(&self, reason: &str) -> u64 {
        DROP_REASONS
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.dropped[i].load(Relaxed))
    }

    /// Copies every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            frames: FRAME_KINDS
                .iter()
                .zip(&self.frames)
                .map(|(k, v)| (*k, v.load(Relaxed)))
                .collect(),
            dropped: DROP_REASONS
                .iter()
                .zip(&self.dropped)
                .map(|(k, v)| (*k, v.load(Relaxed)))
                .collect(),
            bytes: self.bytes.load(Relaxed),
            decode_errors: self.decode_errors.load(Relaxed),
            oversized: self.oversized.load(Relaxed),
            events: self.events.load(Relaxed),
            signatures_verified: self.signatures_verified.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            outdated_cursor: self.outdated_cursor.load(Relaxed),
            last_cursor: self.last_cursor.load(Relaxed),
            lag_seconds: self.lag_micros.load(Relaxed) as f64 / 1e6,
        }
    }
}

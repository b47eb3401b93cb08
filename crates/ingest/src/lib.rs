//! Sources for skywarden: the relay or PDS firehose, Jetstream, and recorded archives.
//!
//! Every source yields the same [`Event`] with a resumable cursor (the firehose `seq`, or
//! Jetstream's `time_us`). A [`Source`] pulls one frame at a time from its transport, so a slow
//! consumer slows the socket read instead of buffering without bound. Frames that fail to
//! decode are counted and logged, then skipped; the events around them are delivered.
#![warn(missing_docs)]

pub mod archive;
pub mod backoff;
pub mod firehose;
pub mod guard;
pub mod jetstream;
pub mod metrics;
mod source;
pub mod synth;

pub use skywarden_atproto::event::Event;
pub use source::{KeyLookup, Source, SourceConfig, SourceError, StaticKeys, Transport};

use bytes::Bytes;

/// What kind of bytes a frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `subscribeRepos` frames: CBOR header + CBOR body.
    Firehose,
    /// Jetstream JSON messages (uncompressed).
    Jetstream,
}

/// One frame as received, before decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// The frame's bytes exactly as the server sent them (Jetstream: after decompression).
    pub bytes: Bytes,
    /// When we received it, in microseconds since the Unix epoch (0 when unknown).
    pub received_micros: i64,
}

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

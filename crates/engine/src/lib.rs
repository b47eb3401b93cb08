//! The running skywarden pipeline: a source's events are routed by account to partitions,
//! enriched, evaluated against the compiled ruleset, and the actions rules fire become durable,
//! de-duplicated, quota-checked entries of the effect log, which sinks consume. The source
//! cursor is checkpointed only past events whose effects are durable.
//!
//! Modules follow the flow: [`pipeline`] (routing, workers, barrier checkpoints), [`state`]
//! (shared counters and account state), [`identity`] (asynchronous DID resolution),
//! [`rules`] (the active ruleset and reloads), [`effects`] (de-duplication, quotas, the log),
//! [`sinks`] (webhooks), [`webhook`] (signed HTTP delivery), [`metrics`].

#![warn(missing_docs)]

pub mod effects;
pub mod identity;
pub mod metrics;
pub mod pipeline;
pub mod rules;
pub mod sinks;
pub mod state;
pub mod webhook;

pub use pipeline::{Engine, EngineConfig, EngineError, EventSource, RunSummary};

/// Appends `bytes` to `out` as lowercase hex.
pub(crate) fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &byte in bytes {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
}
pub use rules::{RulesOrigin, RulesSlot};

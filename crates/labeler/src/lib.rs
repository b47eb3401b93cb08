//! skywarden's labeler: the signing key, the sink that turns label effects into signed labels,
//! and the `com.atproto.label.subscribeLabels` fan-out.
//!
//! | module | job |
//! |---|---|
//! | [`key`] | the signing key: configured hex or a generated key file; did:key |
//! | [`sink`] | effect log → signed labels in the label store (idempotent per effect); re-signing after rotation |
//! | [`hub`] | the stream: a publisher tailing the store, a shared ring of encoded frames, subscriptions that replay then go live |
//! | [`service`] | the did:web DID document and the `app.bsky.labeler.service` record |
//! | [`metrics`] | `skywarden_labeler_*` metrics |
//!
//! The HTTP and WebSocket surface (`subscribeLabels`, `queryLabels`, `/.well-known/did.json`)
//! lives in `skywarden-server`; it only moves frames this crate produces.

#![warn(missing_docs)]

pub mod hub;
pub mod key;
pub mod metrics;
pub mod service;
pub mod sink;

use skywarden_atproto::label::Label;
use skywarden_atproto::syntax::Datetime;
use skywarden_store::labels::StoredLabel;

/// A stored label as the protocol's [`Label`] (with its signature).
pub fn stored_to_label(s: &StoredLabel) -> Label {
    Label {
        ver: Some(s.ver),
        src: s.src.clone(),
        uri: s.uri.clone(),
        cid: s.cid.clone(),
        val: s.val.clone(),
        neg: s.neg,
        cts: s.cts.clone(),
        exp: s.exp.clone(),
        sig: Some(s.sig.clone()),
    }
}

/// A signed [`Label`] in its stored form; `signing_key` is the did:key that signed it.
pub fn label_to_stored(l: &Label, signing_key: &str) -> StoredLabel {
    StoredLabel {
        ver: l.ver.unwrap_or(1),
        src: l.src.clone(),
        uri: l.uri.clone(),
        cid: l.cid.clone(),
        val: l.val.clone(),
        neg: l.neg,
        cts: l.cts.clone(),
        exp_micros: l
            .exp
            .as_deref()
            .and_then(|e| Datetime::new(e).ok())
            .map(|d| d.timestamp_micros()),
        exp: l.exp.clone(),
        sig: l.sig.clone().unwrap_or_default(),
        signing_key: signing_key.to_string(),
    }
}

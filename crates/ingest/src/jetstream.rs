//! The Jetstream v1 transport (`/subscribe`): JSON events, optionally zstd-compressed with
//! Jetstream's dictionary, resumable by `time_us`.

use crate::firehose::{Ws, WsSettings, stream_url};
use crate::metrics::SourceMetrics;
use crate::{RawFrame, now_micros};
use serde::Deserialize;
use skywarden_atproto::CompactString;
use skywarden_atproto::event::{Action, Commit, Event, EventBody, Op, SignatureCheck};
use skywarden_atproto::record::Record;
use skywarden_atproto::syntax::Datetime;
use std::io::Read as _;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// Jetstream's zstd dictionary for `/subscribe?compress=true` (bluesky-social/jetstream,
/// MIT/Apache-2.0), shipped inside the binary.
pub static DICTIONARY: &[u8] = include_bytes!("../assets/legacy_subscribe.zdict");

/// The Jetstream transport.
pub struct JetstreamTransport {
    base: String,
    collections: Vec<String>,
    compress: bool,
    ws: Ws,
    dictionary: zstd::dict::DecoderDictionary<'static>,
}

impl JetstreamTransport {
    /// A transport for the Jetstream instance at `base`, asking only for `collections` (all when
    /// empty), with zstd compression when `compress`.
    pub fn new(
        base: &str,
        collections: Vec<String>,
        compress: bool,
        settings: WsSettings,
        metrics: Arc<SourceMetrics>,
    ) -> Result<Self, String> {
        let t = JetstreamTransport {
            base: base.to_string(),
            collections,
            compress,
            ws: Ws::new(settings, metrics),
            dictionary: zstd::dict::DecoderDictionary::copy(DICTIONARY),
        };
        t.url(None)?;
        Ok(t)
    }

    fn url(&self, cursor: Option<i64>) -> Result<url::Url, String> {
        subscribe_url(&self.base, &self.collections, self.compress, cursor)
    }

    /// Drops the connection; the next read reconnects.
    pub fn disconnect(&mut self) {
        self.ws.disconnect();
    }

    /// The next message as JSON bytes (decompressed); reconnects from `cursor` (a `time_us`).
    pub async fn next_frame(&mut self, cursor: Option<i64>) -> Result<RawFrame, String> {
        loop {
            let (base, collections, compress) = (&self.base, &self.collections, self.compress);
            let bytes = self
                .ws
                .read(|| subscribe_url(base, collections, compress, cursor))
                .await?;
            // Compressed messages are zstd frames; JSON starts with `{`.
            let json = if bytes.first() == Some(&b'{') {
                bytes
            } else {
                match decompress(&bytes, &self.dictionary, self.ws.max_frame_bytes()) {
                    Ok(json) => json.into(),
                    Err(e) => {
                        self.ws.metrics.decode_errors.fetch_add(1, Relaxed);
                        tracing::warn!(error = %e, "undecodable Jetstream message skipped");
                        continue;
                    }
                }
            };
            return Ok(RawFrame {
                bytes: json,
                received_micros: now_micros(),
            });
        }
    }
}

/// The `/subscribe` URL for a Jetstream base URL, with the collection filter, compression and
/// cursor as query parameters.
pub fn subscribe_url(
    base: &str,
    collections: &[String],
    compress: bool,
    cursor: Option<i64>,
) -> Result<url::Url, String> {
    let mut url = stream_url(base, "/subscribe", cursor)?;
    {
        let mut q = url.query_pairs_mut();
        for c in collections {
            q.append_pair("wantedCollections", c);
        }
        if compress {
            q.append_pair("compress", "true");
        }
    }
    Ok(url)
}

/// Decompresses one Jetstream message with the dictionary, refusing output above `limit`.
pub fn decompress(
    bytes: &[u8],
    dictionary: &zstd::dict::DecoderDictionary<'_>,
    limit: usize,
) -> Result<Vec<u8>, String> {
    let decoder = zstd::stream::read::Decoder::with_prepared_dictionary(bytes, dictionary)
        .map_err(|e| format!("zstd: {e}"))?;
    let mut out = Vec::new();
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("zstd: {e}"))?;
    if out.len() > limit {
        return Err(format!("decompressed message exceeds {limit} bytes"));
    }
    Ok(out)
}

#[derive(Deserialize)]
struct JsMessage {
    did: CompactString,
    time_us: i64,
    kind: String,
    #[serde(default)]
    commit: Option<JsCommit>,
    #[serde(default)]
    identity: Option<JsIdentity>,
    #[serde(default)]
    account: Option<JsAccount>,
}

#[derive(Deserialize)]
struct JsCommit {
    rev: CompactString,
    operation: String,
    collection: CompactString,
    rkey: CompactString,
    #[serde(default)]
    record: Option<serde_json::Value>,
    #[serde(default)]
    cid: Option<String>,
}

#[derive(Deserialize)]
struct JsIdentity {
    #[serde(default)]
    handle: Option<CompactString>,
    #[serde(default)]
    time: Option<CompactString>,
}

#[derive(Deserialize)]
struct JsAccount {
    active: bool,
    #[serde(default)]
    status: Option<CompactString>,
    #[serde(default)]
    time: Option<CompactString>,
}

/// Turns one Jetstream JSON message into an [`Event`]. Records are read leniently: a record that
/// breaks the data model is reported on the op, not fatal.
pub fn decode_message(json: &[u8]) -> Result<Event, String> {
    let msg: JsMessage =
        serde_json::from_slice(json).map_err(|e| format!("bad Jetstream message: {e}"))?;
    let time_of = |t: Option<CompactString>| t.unwrap_or_else(|| format_micros(msg.time_us));
    let body = match msg.kind.as_str() {
        "commit" => {
            let c = msg.commit.ok_or("commit message without `commit`")?;
            let action = Action::parse(&c.operation)
                .ok_or_else(|| format!("unknown operation {:?}", c.operation))?;
            let cid = match &c.cid {
                Some(s) => Some(
                    skywarden_atproto::Cid::try_from(s.as_str())
                        .map_err(|e| format!("bad cid {s:?}: {e}"))?,
                ),
                None => None,
            };
            let (record, record_problem) = match (&c.record, action) {
                (_, Action::Delete) => (None, None),
                (Some(r), _) => match Record::from_json(r) {
                    Ok(record) => (Some(record), None),
                    Err(e) => (None, Some(e.to_string())),
                },
                (None, _) => (None, Some("no record in message".into())),
            };
            EventBody::Commit(Commit {
                rev: c.rev,
                since: None,
                too_big: false,
                signature: SignatureCheck::Unchecked,
                ops: vec![Op {
                    action,
                    collection: c.collection,
                    rkey: c.rkey,
                    cid,
                    prev: None,
                    record,
                    record_problem,
                }],
            })
        }
        "identity" => {
            let i = msg.identity.ok_or("identity message without `identity`")?;
            return Ok(Event {
                cursor: msg.time_us,
                did: msg.did,
                time: time_of(i.time),
                body: EventBody::Identity { handle: i.handle },
            });
        }
        "account" => {
            let a = msg.account.ok_or("account message without `account`")?;
            return Ok(Event {
                cursor: msg.time_us,
                did: msg.did,
                time: time_of(a.time),
                body: EventBody::Account {
                    active: a.active,
                    status: a.status,
                },
            });
        }
        other => return Err(format!("unknown Jetstream kind {other:?}")),
    };
    Ok(Event {
        cursor: msg.time_us,
        time: format_micros(msg.time_us),
        did: msg.did,
        body,
    })
}

/// Formats microseconds since the epoch as an atproto datetime (24 bytes: kept inline).
fn format_micros(micros: i64) -> CompactString {
    Datetime::from_timestamp_micros(micros)
        .map_or_else(|_| CompactString::default(), |d| d.as_str().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_three_kinds_and_rejects_garbage() {
        let commit = br#"{"did":"did:plc:abc","time_us":1725911162329308,"kind":"commit","commit":{"rev":"3l3qo2vutsw2b","operation":"create","collection":"app.bsky.feed.post","rkey":"3l3qo2vuowo2b","record":{"$type":"app.bsky.feed.post","text":"hi","createdAt":"2024-09-09T19:46:02.102Z"},"cid":"bafyreidfayvfuwqa7qlnopdjiqrxzs6blmoeu4rujcjtnci5beludirz2a"}}"#;
        let e = decode_message(commit).unwrap();
        let EventBody::Commit(c) = &e.body else {
            panic!()
        };
        assert_eq!(c.ops[0].record.as_ref().unwrap().as_post().text(), "hi");
        assert_eq!(e.cursor, 1725911162329308);
        let float = br#"{"did":"did:plc:abc","time_us":2,"kind":"commit","commit":{"rev":"3l3qo2vutsw2b","operation":"create","collection":"x.y.z","rkey":"a","record":{"n":1.5}}}"#;
        let e = decode_message(float).unwrap();
        let EventBody::Commit(c) = &e.body else {
            panic!()
        };
        assert!(c.ops[0].record.is_none() && c.ops[0].record_problem.is_some());
        let account = br#"{"did":"did:plc:abc","time_us":3,"kind":"account","account":{"active":false,"did":"did:plc:abc","seq":1,"status":"takendown","time":"2024-09-05T06:11:04.870Z"}}"#;
        assert!(matches!(
            decode_message(account).unwrap().body,
            EventBody::Account { active: false, .. }
        ));
        let identity = br#"{"did":"did:plc:abc","time_us":4,"kind":"identity","identity":{"did":"did:plc:abc","handle":"a.test","seq":1,"time":"2024-09-05T06:11:04.870Z"}}"#;
        assert!(matches!(
            decode_message(identity).unwrap().body,
            EventBody::Identity { handle: Some(_) }
        ));
        assert!(decode_message(b"{").is_err());
        assert!(decode_message(br#"{"did":"x","time_us":1,"kind":"weird"}"#).is_err());
    }
}

//! The WebSocket sources against a local server that misbehaves on purpose: disconnects,
//! `#info OutdatedCursor`, error frames, malformed and oversized frames, and Jetstream's
//! dictionary compression.

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::json;
use skywarden_atproto::data::{encode_cbor, json_to_ipld};
use skywarden_atproto::event::EventBody;
use skywarden_ingest::firehose::WsSettings;
use skywarden_ingest::{Source, SourceConfig, SourceError};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

fn frame(header: serde_json::Value, body: serde_json::Value) -> Vec<u8> {
    let mut bytes = encode_cbor(&json_to_ipld(&header).unwrap()).unwrap();
    bytes.extend(encode_cbor(&json_to_ipld(&body).unwrap()).unwrap());
    bytes
}

fn identity(seq: i64) -> Vec<u8> {
    frame(
        json!({"op": 1, "t": "#identity"}),
        json!({"seq": seq, "did": format!("did:plc:user{seq}"), "time": "2026-01-01T00:00:00.000Z", "handle": format!("u{seq}.test")}),
    )
}

fn settings() -> WsSettings {
    WsSettings {
        max_frame_bytes: 4096,
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        max_retries: Some(20),
    }
}

/// Serves one scripted connection per entry of `script`; records each request's query.
// The handshake callback's signature (and its large error type) is tungstenite's.
#[allow(clippy::result_large_err)]
async fn serve(
    script: Vec<Vec<Message>>,
    close_abruptly: bool,
) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let queries = Arc::new(Mutex::new(Vec::new()));
    let q = queries.clone();
    tokio::spawn(async move {
        for messages in script {
            let (tcp, _) = listener.accept().await.unwrap();
            let q = q.clone();
            let mut ws =
                tokio_tungstenite::accept_hdr_async(tcp, |req: &Request, resp: Response| {
                    q.lock().unwrap().push(format!(
                        "{}?{}",
                        req.uri().path(),
                        req.uri().query().unwrap_or("")
                    ));
                    Ok(resp)
                })
                .await
                .unwrap();
            for m in messages {
                if ws.send(m).await.is_err() {
                    break;
                }
            }
            if close_abruptly {
                drop(ws);
            } else {
                let _ = ws.close(None).await;
                // Drain until the client acknowledges the close.
                while let Some(Ok(_)) = ws.next().await {}
            }
        }
    });
    (format!("ws://{addr}"), queries)
}

#[tokio::test]
async fn firehose_survives_bad_frames_and_resumes_from_its_cursor() {
    let mut first = vec![Message::Binary(
        frame(
            json!({"op": 1, "t": "#info"}),
            json!({"name": "OutdatedCursor", "message": "old"}),
        )
        .into(),
    )];
    for seq in 1..=3 {
        first.push(Message::Binary(identity(seq).into()));
    }
    first.push(Message::Binary(vec![0xa2, 0x61, 0x74].into())); // truncated CBOR
    first.push(Message::Binary(vec![0u8; 5000].into())); // over the 4096-byte limit
    first.push(Message::Binary(
        frame(json!({"op": 1, "t": "#future"}), json!({"x": 1})).into(),
    ));
    for seq in 4..=5 {
        first.push(Message::Binary(identity(seq).into()));
    }
    // The server resends seq 5 after reconnect (overlap) and then goes on.
    let second: Vec<Message> = (5..=8)
        .map(|s| Message::Binary(identity(s).into()))
        .chain([Message::Binary(
            frame(json!({"op": -1}), json!({"error": "ConsumerTooSlow"})).into(),
        )])
        .collect();
    let third: Vec<Message> = (9..=10)
        .map(|s| Message::Binary(identity(s).into()))
        .collect();
    let (url, queries) = serve(vec![first, second, third], true).await;

    let mut source = Source::firehose(
        &url,
        settings(),
        SourceConfig {
            cursor: Some(0),
            ..SourceConfig::default()
        },
    )
    .unwrap();
    let mut seqs = Vec::new();
    while seqs.len() < 10 {
        let event = tokio::time::timeout(Duration::from_secs(10), source.next_event())
            .await
            .expect("stream stalled")
            .unwrap()
            .unwrap();
        assert!(matches!(event.body, EventBody::Identity { .. }));
        seqs.push(event.cursor);
    }
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    let m = source.metrics();
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(m.decode_errors.load(Relaxed), 1);
    assert_eq!(m.oversized.load(Relaxed), 1);
    assert_eq!(m.outdated_cursor.load(Relaxed), 1);
    assert_eq!(m.frames_of("unknown"), 1);
    assert_eq!(m.frames_of("error"), 1);
    assert_eq!(m.reconnects.load(Relaxed), 2);
    assert_eq!(m.dropped_for("seq_not_increasing"), 1);
    let queries = queries.lock().unwrap().clone();
    assert_eq!(
        queries,
        vec![
            "/xrpc/com.atproto.sync.subscribeRepos?cursor=0",
            "/xrpc/com.atproto.sync.subscribeRepos?cursor=5",
            "/xrpc/com.atproto.sync.subscribeRepos?cursor=8",
        ]
    );
}

#[tokio::test]
async fn future_cursor_stops_with_a_clear_error() {
    let script = vec![vec![Message::Binary(
        frame(
            json!({"op": -1}),
            json!({"error": "FutureCursor", "message": "Cursor in the future."}),
        )
        .into(),
    )]];
    let (url, _) = serve(script, false).await;
    let mut source = Source::firehose(
        &url,
        settings(),
        SourceConfig {
            cursor: Some(999),
            ..SourceConfig::default()
        },
    )
    .unwrap();
    let err = source.next_event().await.unwrap_err();
    assert!(
        matches!(err, SourceError::FutureCursor { cursor: 999, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("999"));
}

#[tokio::test]
async fn unreachable_relay_gives_up_after_the_retry_limit() {
    // Bind then drop to get a port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut s = settings();
    s.max_retries = Some(2);
    let mut source = Source::firehose(
        &format!("ws://127.0.0.1:{port}"),
        s,
        SourceConfig::default(),
    )
    .unwrap();
    let err = source.next_event().await.unwrap_err();
    assert!(err.to_string().contains("after 3 attempts"), "{err}");
}

#[tokio::test]
async fn jetstream_compressed_and_plain_messages() {
    let dict = skywarden_ingest::jetstream::DICTIONARY;
    let mut compressor = zstd::bulk::Compressor::with_dictionary(3, dict).unwrap();
    let messages: Vec<String> = (1..=4)
        .map(|i| {
            json!({"did": "did:plc:abc", "time_us": 1_700_000_000_000_000i64 + i, "kind": "commit",
                "commit": {"rev": format!("3l3qo2vutsw{}b", i + 1), "operation": "create", "collection": "app.bsky.feed.post",
                    "rkey": format!("3l3qo2vuowo{i}b"), "record": {"$type": "app.bsky.feed.post", "text": format!("post {i}"),
                    "createdAt": "2024-09-09T19:46:02.102Z"},
                    "cid": "bafyreidfayvfuwqa7qlnopdjiqrxzs6blmoeu4rujcjtnci5beludirz2a"}})
            .to_string()
        })
        .collect();
    let mut first: Vec<Message> = messages[..2]
        .iter()
        .map(|m| Message::Binary(compressor.compress(m.as_bytes()).unwrap().into()))
        .collect();
    first.push(Message::Binary(vec![0x28, 0xb5, 0x2f, 0xfd, 0x00].into())); // broken zstd
    first.push(Message::Text("not json".into()));
    let second = vec![
        Message::Text(messages[2].clone().into()),
        Message::Binary(compressor.compress(messages[3].as_bytes()).unwrap().into()),
    ];
    let (url, queries) = serve(vec![first, second], true).await;
    let mut source = Source::jetstream(
        &url,
        vec!["app.bsky.feed.post".into()],
        true,
        settings(),
        SourceConfig::default(),
    )
    .unwrap();
    let mut texts = Vec::new();
    while texts.len() < 4 {
        let event = tokio::time::timeout(Duration::from_secs(10), source.next_event())
            .await
            .expect("stream stalled")
            .unwrap()
            .unwrap();
        let EventBody::Commit(c) = &event.body else {
            panic!("not a commit")
        };
        texts.push(
            c.ops[0]
                .record
                .as_ref()
                .unwrap()
                .as_post()
                .text()
                .to_string(),
        );
    }
    assert_eq!(texts, ["post 1", "post 2", "post 3", "post 4"]);
    assert_eq!(source.cursor(), Some(1_700_000_000_000_004));
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(
        source.metrics().decode_errors.load(Relaxed),
        2,
        "the broken zstd frame and the non-JSON text message"
    );
    let queries = queries.lock().unwrap().clone();
    assert_eq!(
        queries[0],
        "/subscribe?wantedCollections=app.bsky.feed.post&compress=true"
    );
    assert_eq!(
        queries[1],
        "/subscribe?cursor=1700000000000002&wantedCollections=app.bsky.feed.post&compress=true"
    );
}

//! The relay scenario files replayed through a [`Source`]: the events a consumer must drop
//! (marked `drop`) are dropped — stale revs, replayed sequence numbers, commits of a
//! deactivated account — and every other event arrives with its signature verified.

use skywarden_atproto::crypto::PublicKey;
use skywarden_atproto::data::{encode_cbor, json_to_ipld};
use skywarden_atproto::event::{EventBody, SignatureCheck};
use skywarden_ingest::archive::ArchiveWriter;
use skywarden_ingest::{Format, RawFrame, Source, SourceConfig, StaticKeys};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

fn load(name: &str) -> serde_json::Value {
    let path = format!(
        "{}/../../testdata/firehose/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[tokio::test]
async fn consumer_checks_match_the_relay_marks() {
    let dir = std::env::temp_dir().join(format!("skw-scenarios-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut total_dropped = 0;
    for name in [
        "account_lifecycle",
        "deactivation",
        "legacy",
        "post_lifecycle",
        "post_lifecycle_legacy",
        "rev_ordering",
        "seq_ordering",
    ] {
        let scenario = load(name);
        let mut keys = HashMap::new();
        for account in scenario["accounts"].as_array().unwrap() {
            let identity = &account["identity"];
            keys.insert(
                identity["did"].as_str().unwrap().to_string(),
                PublicKey::from_multikey(
                    identity["keys"]["atproto"]["publicKeyMultibase"]
                        .as_str()
                        .unwrap(),
                )
                .unwrap(),
            );
        }
        // Record the scenario's frames into an archive, as `skywarden record` would.
        let path = dir.join(format!("{name}.skwa"));
        let mut writer = ArchiveWriter::create(&path, Format::Firehose).unwrap();
        let mut expected = Vec::new();
        for message in scenario["messages"].as_array().unwrap() {
            let mut bytes =
                encode_cbor(&json_to_ipld(&message["frame"]["header"]).unwrap()).unwrap();
            bytes.extend(encode_cbor(&json_to_ipld(&message["frame"]["body"]).unwrap()).unwrap());
            writer
                .write(&RawFrame {
                    bytes: bytes.into(),
                    received_micros: 0,
                })
                .unwrap();
            if message["drop"] != true {
                expected.push(message["frame"]["body"]["seq"].as_i64().unwrap());
            } else {
                total_dropped += 1;
            }
        }
        writer.finish().unwrap();

        let config = SourceConfig {
            keys: Some(Arc::new(StaticKeys(keys))),
            require_signatures: true,
            ..SourceConfig::default()
        };
        let mut source = Source::archive(&path, config).unwrap();
        let mut delivered = Vec::new();
        while let Some(event) = source.next_event().await.unwrap() {
            if let EventBody::Commit(c) = &event.body {
                assert_eq!(
                    c.signature,
                    SignatureCheck::Verified,
                    "{name} seq {}",
                    event.cursor
                );
            }
            delivered.push(event.cursor);
        }
        assert_eq!(
            delivered, expected,
            "{name}: delivered seqs differ from the relay's verdicts"
        );
        let m = source.metrics();
        let rejected = m.dropped_for("seq_not_increasing")
            + m.dropped_for("rev_not_increasing")
            + m.dropped_for("account_inactive")
            + m.decode_errors.load(Relaxed);
        assert_eq!(
            rejected as usize,
            scenario["messages"].as_array().unwrap().len() - expected.len(),
            "{name}: every dropped frame is counted"
        );
        println!("{name}: {} delivered, {rejected} dropped", delivered.len());
    }
    assert!(total_dropped >= 5);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn bundled_pds_recording_replays_cleanly() {
    let path = format!(
        "{}/../../testdata/firehose/pds-recording.skwa",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut source = Source::archive(std::path::Path::new(&path), SourceConfig::default()).unwrap();
    let mut count = 0;
    let mut last = 0;
    let mut posts_with_text = 0;
    while let Some(event) = source.next_event().await.unwrap() {
        assert!(event.cursor > last);
        last = event.cursor;
        count += 1;
        if let EventBody::Commit(c) = &event.body {
            for op in &c.ops {
                if op.collection == "app.bsky.feed.post"
                    && let Some(record) = &op.record
                {
                    posts_with_text += usize::from(!record.as_post().text().is_empty());
                }
            }
        }
    }
    assert_eq!(count, 3443);
    assert!(posts_with_text > 4000);
    assert_eq!(source.metrics().decode_errors.load(Relaxed), 0);
    // Resuming from a cursor skips everything up to it.
    let config = SourceConfig {
        cursor: Some(last - 10),
        ..SourceConfig::default()
    };
    let mut source = Source::archive(std::path::Path::new(&path), config).unwrap();
    let mut rest = 0;
    while let Some(event) = source.next_event().await.unwrap() {
        assert!(event.cursor > last - 10);
        rest += 1;
    }
    assert_eq!(rest, 10);
}

/// Every block of the real PDS recording (records, MST nodes, commits), and damaged copies of
/// them, decode to a flat record tree exactly when they decode into `Ipld`, to the same value.
#[test]
fn record_trees_agree_with_ipld_on_every_recorded_block() {
    use skywarden_atproto::car::Car;
    use skywarden_atproto::data::decode_cbor;
    use skywarden_atproto::frame::{Frame, decode_frame};
    use skywarden_atproto::tree::Tree;
    let mut reader = pds_recording();
    let check = |bytes: &[u8]| {
        let ours = Tree::from_cbor(bytes).map(|t| t.to_ipld());
        let theirs = decode_cbor(bytes);
        let ok = ours.is_ok();
        assert_eq!(ok, theirs.is_ok(), "{bytes:02x?}: {ours:?} vs {theirs:?}");
        if let (Ok(a), Ok(b)) = (ours, theirs) {
            assert_eq!(a, b);
        }
        ok
    };
    let (mut blocks, mut damaged, mut refused) = (0, 0, 0);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    while let Some(raw) = reader.next_frame().unwrap() {
        let Ok(Frame::Commit(commit)) = decode_frame(&raw.bytes) else {
            continue;
        };
        let Ok(car) = Car::parse(commit.blocks) else {
            continue;
        };
        for block in car.blocks.iter().map(|b| b.data) {
            assert!(check(block));
            blocks += 1;
            // A truncated copy and a copy with one byte changed.
            xorshift(&mut seed);
            let cut = (seed as usize) % block.len();
            refused += usize::from(!check(&block[..cut]));
            let mut changed = block.to_vec();
            changed[cut] ^= (seed >> 32) as u8 | 1;
            refused += usize::from(!check(&changed));
            damaged += 2;
        }
    }
    assert!(blocks > 10_000, "{blocks} blocks");
    assert!(
        refused > damaged / 4,
        "{refused} of {damaged} damaged blocks refused"
    );
}

/// Every frame of the real PDS recording, and damaged copies of each, decode the same through
/// `decode_frame` (which reads canonical commits in place) and through serde alone.
#[test]
fn recorded_frames_decode_the_same_with_and_without_the_commit_scan() {
    use skywarden_atproto::frame::{Frame, decode_frame, decode_frame_general};
    let mut reader = pds_recording();
    let agree = |bytes: &[u8]| {
        let fast = format!("{:?}", decode_frame(bytes));
        assert_eq!(fast, format!("{:?}", decode_frame_general(bytes)));
    };
    let (mut frames, mut commits) = (0, 0);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    while let Some(raw) = reader.next_frame().unwrap() {
        let bytes = &raw.bytes[..];
        agree(bytes);
        frames += 1;
        commits += usize::from(matches!(decode_frame(bytes), Ok(Frame::Commit(_))));
        for _ in 0..4 {
            xorshift(&mut seed);
            let at = (seed as usize) % bytes.len();
            agree(&bytes[..at]);
            let mut changed = bytes.to_vec();
            changed[at] ^= (seed >> 32) as u8 | 1;
            agree(&changed);
        }
    }
    assert_eq!(frames, 3443);
    assert!(commits > 3000, "{commits} commits");
}

/// The bundled recording of a real PDS's firehose, frame by frame.
fn pds_recording() -> skywarden_ingest::archive::ArchiveReader {
    let path = format!(
        "{}/../../testdata/firehose/pds-recording.skwa",
        env!("CARGO_MANIFEST_DIR")
    );
    skywarden_ingest::archive::ArchiveReader::open(std::path::Path::new(&path)).unwrap()
}

/// A step of a xorshift generator: where to damage the next copy, deterministically.
fn xorshift(seed: &mut u64) {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
}

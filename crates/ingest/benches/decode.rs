//! Frame decoding on the bundled recording of a real PDS (3,443 frames, 6.6 MB).
//!
//! `cargo bench -p skywarden-ingest --bench decode` prints, per stage, criterion's figures and a
//! plain summary line with frames/s and MB/s:
//! - `frame`: header + body decoded (strings and CAR bytes borrowed, nothing resolved);
//! - `event`: the full decode a source does — CAR parsed, commit block and every record block
//!   checked against its CID, every record decoded (read once: records decode on first read),
//!   the owned [`Event`] built;
//! - `source`: the archive source end to end (decompress, decode, consumer checks, metrics).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// The allocator `skywarden serve` runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use skywarden_atproto::frame::decode_frame;
use skywarden_ingest::archive::ArchiveReader;
use skywarden_ingest::{Source, SourceConfig};
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

fn recording() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/firehose/pds-recording.skwa")
}

fn load_frames() -> Vec<Vec<u8>> {
    let mut reader = ArchiveReader::open(&recording()).expect("bundled recording");
    let mut frames = Vec::new();
    while let Some(f) = reader.next_frame().expect("readable") {
        frames.push(f.bytes.to_vec());
    }
    frames
}

fn decode_all_events(frames: &[Vec<u8>]) -> usize {
    let mut ops = 0;
    for f in frames {
        let frame = decode_frame(f).expect("valid frame");
        if let Some(event) = frame.to_event(None).expect("valid event") {
            if let skywarden_atproto::event::EventBody::Commit(c) = &event.body {
                ops += c.ops.len();
                // Records are decoded on first read; read each, as the peers decode each.
                for record in c.ops.iter().filter_map(|o| o.record.as_ref()) {
                    black_box(record.value());
                }
            }
            black_box(event);
        }
    }
    ops
}

fn replay_source(runtime: &tokio::runtime::Runtime) -> usize {
    runtime.block_on(async {
        let mut source = Source::archive(&recording(), SourceConfig::default()).expect("open");
        let mut n = 0;
        while let Some(e) = source.next_event().await.expect("replay") {
            black_box(e);
            n += 1;
        }
        n
    })
}

/// A plain figure per stage, independent of criterion's statistics: best of 5 passes.
fn summary(name: &str, frames: usize, bytes: usize, mut pass: impl FnMut()) {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        pass();
        best = best.min(start.elapsed().as_secs_f64());
    }
    println!(
        "summary {name:<7} {:>10.0} frames/s {:>8.1} MB/s ({frames} frames, {:.1} MB, best of 5: {:.1} ms)",
        frames as f64 / best,
        bytes as f64 / best / 1e6,
        bytes as f64 / 1e6,
        best * 1e3
    );
}

fn bench(c: &mut Criterion) {
    let frames = load_frames();
    let bytes: usize = frames.iter().map(Vec::len).sum();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");

    summary("frame", frames.len(), bytes, || {
        for f in &frames {
            black_box(decode_frame(f).expect("valid"));
        }
    });
    summary("event", frames.len(), bytes, || {
        black_box(decode_all_events(&frames));
    });
    summary("source", frames.len(), bytes, || {
        black_box(replay_source(&runtime));
    });

    for (unit, throughput) in [
        ("frames", Throughput::Elements(frames.len() as u64)),
        ("bytes", Throughput::Bytes(bytes as u64)),
    ] {
        let mut group = c.benchmark_group(format!("decode_{unit}"));
        group.throughput(throughput);
        group.sample_size(20);
        group.bench_function("frame", |b| {
            b.iter(|| {
                for f in &frames {
                    black_box(decode_frame(f).expect("valid"));
                }
            })
        });
        group.bench_function("event", |b| b.iter(|| decode_all_events(&frames)));
        group.bench_function("source", |b| b.iter(|| replay_source(&runtime)));
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

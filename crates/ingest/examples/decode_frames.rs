//! Decodes a file of `[u32 little-endian length][frame]` firehose frames as a source does
//! (header and body, CAR parsed, every record block checked against its CID, records decoded,
//! the owned event built) and prints frames/s on one core: the skywarden side of
//! `benches/peers/decode.sh`. With `--export ARCHIVE`, writes such a file from an archive.
//!
//!   cargo run --release -p skywarden-ingest --example decode_frames -- frames.bin [passes]
//!   cargo run --release -p skywarden-ingest --example decode_frames -- --export in.skwa frames.bin

use skywarden_atproto::frame::decode_frame;
use skywarden_ingest::archive::ArchiveReader;
use std::hint::black_box;
use std::io::Write;
use std::time::Instant;

/// The allocator `skywarden serve` runs with: decoding allocates owned records.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--export") {
        let (input, output) = (&args[1], &args[2]);
        let mut reader = ArchiveReader::open(std::path::Path::new(input)).expect("archive");
        let mut out = std::io::BufWriter::new(std::fs::File::create(output).expect("output"));
        let mut n = 0;
        while let Some(f) = reader.next_frame().expect("readable") {
            out.write_all(&(f.bytes.len() as u32).to_le_bytes())
                .unwrap();
            out.write_all(&f.bytes).unwrap();
            n += 1;
        }
        out.flush().unwrap();
        eprintln!("{n} frames to {output}");
        return;
    }
    let bytes = std::fs::read(&args[0]).expect("frames file");
    let passes: usize = args.get(1).and_then(|p| p.parse().ok()).unwrap_or(20);
    let mut frames = Vec::new();
    let mut at = 0;
    while at + 4 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        frames.push(&bytes[at + 4..at + 4 + len]);
        at += 4 + len;
    }
    let mut best = f64::MAX;
    let mut records = 0;
    for _ in 0..passes {
        let start = Instant::now();
        records = 0;
        for f in &frames {
            let frame = decode_frame(f).expect("valid frame");
            if let Some(event) = frame.to_event(None).expect("valid event") {
                if let skywarden_atproto::event::EventBody::Commit(c) = &event.body {
                    // Records are decoded on first read: read each (the peers decode each),
                    // and count those that decode to a map.
                    records += c
                        .ops
                        .iter()
                        .filter(|o| o.record.as_ref().is_some_and(|r| r.value().is_map()))
                        .count();
                }
                black_box(event);
            }
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    println!(
        "{{\"decoder\":\"skywarden\",\"frames\":{},\"records\":{records},\"frames_per_s\":{:.0}}}",
        frames.len(),
        frames.len() as f64 / best
    );
}

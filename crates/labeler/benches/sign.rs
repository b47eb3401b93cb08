//! Labels signed per second on one core, for k256 and p256: build the DAG-CBOR signing bytes,
//! hash, sign (low-S). Also verification, which AppViews and subscribers do per label.
//!
//! `cargo bench -p skywarden-labeler --bench sign`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use skywarden_atproto::crypto::{Curve, SigningKey};
use skywarden_atproto::label::Label;
use std::hint::black_box;

fn label(i: u64) -> Label {
    Label {
        ver: Some(1),
        src: "did:plc:ar7c4by46qjdydhdevvrndac".into(),
        uri: format!("at://did:plc:ewvi7nxzyoun6zhxrhs64oiz/app.bsky.feed.post/3l{i:011}"),
        cid: Some("bafyreifepiu23okq5zuyvyhsoiazv2ayrqp2l4idi4cr2yhlpuclelg7l4".into()),
        val: "spam".into(),
        neg: false,
        cts: "2026-12-01T12:00:00.000Z".into(),
        exp: None,
        sig: None,
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("label");
    group.throughput(Throughput::Elements(1));
    for (name, curve) in [("k256", Curve::K256), ("p256", Curve::P256)] {
        let key = SigningKey::generate(curve);
        let mut i = 0u64;
        group.bench_function(format!("sign/{name}"), |b| {
            b.iter(|| {
                i += 1;
                let mut l = label(i);
                l.sign(&key).unwrap();
                black_box(l)
            })
        });
        let mut signed = label(0);
        signed.sign(&key).unwrap();
        let public = key.public();
        group.bench_function(format!("verify/{name}"), |b| {
            b.iter(|| black_box(&signed).verify(&public).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

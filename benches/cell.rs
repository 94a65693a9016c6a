//! Micro-benchmarks of the LWW cell: encoding (every write), decoding
//! (every read, and anti-entropy's version-only decode) and merge (every
//! replicated write, read repair and anti-entropy pull).
//!
//! `cargo bench -p capkv --bench cell`. No speed targets: these numbers
//! show where a regression comes from, see docs/performance.md.

use std::hint::black_box;

use bytes::Bytes;
use capkv::store::cell::Cell;
use capkv::{Level, Version};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};

/// Value sizes: the `kv bench` default, and a larger one where copying shows.
const VALUE_SIZES_BYTES: [usize; 2] = [128, 4096];

fn cell(value_bytes: usize, hlc: u64) -> Cell {
    Cell::value(Bytes::from(vec![b'v'; value_bytes]), Version::new(hlc, 1), Level::Eventual)
}

fn encode_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("cell");
    for size in VALUE_SIZES_BYTES {
        let cl = cell(size, 1_700_000_000_000 << 16);
        let encoded = cl.encode();
        g.throughput(Throughput::Bytes(encoded.len() as u64));
        g.bench_with_input(BenchmarkId::new("encode", size), &cl, |b, cl| b.iter(|| black_box(cl).encode()));
        g.bench_with_input(BenchmarkId::new("encode_into_reused", size), &cl, |b, cl| {
            let mut buf = Vec::with_capacity(cl.encoded_len());
            b.iter(|| {
                buf.clear();
                black_box(cl).encode_into(&mut buf);
                black_box(buf.len())
            })
        });
        g.bench_with_input(BenchmarkId::new("decode", size), &encoded, |b, e| {
            b.iter(|| Cell::decode(black_box(e)).expect("valid cell"))
        });
        // Reads the 14-byte header only: count cells, not bytes.
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new("decode_version", size), &encoded, |b, e| {
            b.iter(|| Cell::decode_version(black_box(e)).expect("valid cell"))
        });
    }
    g.finish();
}

fn merge(c: &mut Criterion) {
    let mut g = c.benchmark_group("cell/merge");
    let older = cell(128, 10);
    let newer = cell(128, 11);
    // Equal versions, different content: the (never expected) tie-break
    // path that compares the values themselves.
    let twin = Cell::value(Bytes::from(vec![b'w'; 128]), Version::new(10, 1), Level::Eventual);
    let tombstone = Cell::tombstone(Version::new(12, 2), Level::Eventual);
    for (name, a, b) in [
        ("newer_wins", &older, &newer),
        ("older_loses", &newer, &older),
        ("equal_version_tie_break", &older, &twin),
        ("tombstone_wins", &newer, &tombstone),
    ] {
        g.bench_function(name, |bench| {
            bench.iter_batched(|| (a.clone(), b.clone()), |(a, b)| a.merge(b), BatchSize::SmallInput)
        });
    }
    g.finish();
}

criterion_group!(benches, encode_decode, merge);
criterion_main!(benches);

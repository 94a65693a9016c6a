//! Micro-benchmark of anti-entropy's pure core: `reconcile` merge-joins two
//! key-ordered listings of one key window (at most `LIST_PAGE_ENTRIES` per
//! side) into the keys to push and to pull. It runs for every differing
//! bucket of every round, so its cost per entry bounds how fast replicas
//! can compare after a partition heals.
//!
//! `cargo bench -p capkv --bench anti_entropy`.

use std::hint::black_box;

use bytes::Bytes;
use capkv::levels::eventual::anti_entropy::{reconcile, Entry, LIST_PAGE_ENTRIES};
use capkv::Version;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn key(i: usize) -> Bytes {
    Bytes::from(format!("bench/{i:010}"))
}

/// `n` entries, every key present, all at version 10 from node 1.
fn listing(n: usize) -> Vec<Entry> {
    (0..n).map(|i| (key(i), Version::new(10, 1), false)).collect()
}

fn reconcile_window(c: &mut Criterion) {
    let n = LIST_PAGE_ENTRIES;
    let local = listing(n);
    let mut g = c.benchmark_group("anti_entropy/reconcile");
    g.throughput(Throughput::Elements(2 * n as u64));

    // In sync: the common case of a round after convergence.
    let same = local.clone();
    // 1 % of keys newer on the peer (a few missed writes).
    let mut few_newer = local.clone();
    for e in few_newer.iter_mut().step_by(100) {
        e.1 = Version::new(11, 2);
    }
    // The peer holds every other key only (keys missing on one side).
    let half: Vec<Entry> = local.iter().step_by(2).cloned().collect();
    // Disjoint windows: everything moves (a replica that was wiped).
    let disjoint: Vec<Entry> = (n..2 * n).map(|i| (key(i), Version::new(10, 1), false)).collect();

    for (name, remote) in
        [("in_sync", &same), ("one_percent_newer", &few_newer), ("half_missing", &half), ("disjoint", &disjoint)]
    {
        g.bench_with_input(BenchmarkId::new(name, n), remote, |b, remote| {
            b.iter(|| {
                let d = reconcile(black_box(&local), black_box(remote));
                black_box((d.push.len(), d.pull.len()))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, reconcile_window);
criterion_main!(benches);

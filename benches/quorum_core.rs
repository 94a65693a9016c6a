//! Micro-benchmarks of the ABD coordinator core (`levels::quorum::core`):
//! one whole get or set driven through `Coordinator::step` with in-memory
//! replicas answering at once — the protocol's CPU cost without any I/O.
//!
//! `cargo bench -p capkv --bench quorum_core`. No speed targets.

use std::collections::VecDeque;
use std::hint::black_box;

use bytes::Bytes;
use capkv::levels::quorum::{Coordinator, Effect, Input, Op, QuorumConfig, Replica};
use capkv::{Level, Version};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

/// Runs one operation to completion against `replicas` (index = node id - 1).
fn drive(op: Op, replicas: &mut [Replica], next_hlc: &mut u64) -> bool {
    let ids: Vec<u32> = (1..=replicas.len() as u32).collect();
    let mut coord = Coordinator::new(op, ids, QuorumConfig::default()).expect("valid replica set");
    let mut effects: VecDeque<Effect> = coord.step(Input::Start).into();
    while let Some(e) = effects.pop_front() {
        match e {
            Effect::Send { to, msg } => {
                let input = replicas[to as usize - 1].serve(to, &msg);
                effects.extend(coord.step(input));
            }
            Effect::NeedVersion { above } => {
                *next_hlc = (*next_hlc).max(above.hlc) + 1;
                effects.extend(coord.step(Input::Version(Version::new(*next_hlc, 1))));
            }
            Effect::Done(r) => return r.is_ok(),
        }
    }
    false
}

fn operations(c: &mut Criterion) {
    let mut g = c.benchmark_group("quorum_core");
    for n in [3usize, 5] {
        let mut replicas: Vec<Replica> = (0..n).map(|_| Replica::new()).collect();
        let mut hlc = 1u64;
        let key = Bytes::from_static(b"bench-key");
        assert!(drive(Op::set(key.clone(), Bytes::from(vec![b'v'; 128])), &mut replicas, &mut hlc));
        g.bench_function(BenchmarkId::new("set", n), |b| {
            b.iter(|| drive(Op::set(key.clone(), Bytes::from_static(&[b'v'; 128])), black_box(&mut replicas), &mut hlc))
        });
        g.bench_function(BenchmarkId::new("get_unanimous", n), |b| {
            b.iter(|| drive(Op::get(key.clone()), black_box(&mut replicas), &mut hlc))
        });
        // A get whose replies differ: the coordinator imposes (phase 2).
        g.bench_function(BenchmarkId::new("get_with_impose", n), |b| {
            b.iter_batched(
                || {
                    let mut rs: Vec<Replica> = (0..n).map(|_| Replica::new()).collect();
                    let cell = capkv::store::Cell::value(Bytes::from_static(b"new"), Version::new(9, 2), Level::Quorum);
                    rs[0].write(key.clone(), cell);
                    rs
                },
                |mut rs| drive(Op::get(key.clone()), &mut rs, &mut 10),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, operations);
criterion_main!(benches);

//! Micro-benchmarks of the linearizable state machine's apply
//! (`rsm::state_machine::Applier`): one Raft entry carrying a
//! batch of commands applied over an in-memory `rsm` view — the
//! deterministic CPU work every replica does per committed entry, without
//! RocksDB.
//!
//! `cargo bench -p capkv --bench raft_apply`. No speed targets.

use std::collections::BTreeMap;
use std::hint::black_box;

use bytes::Bytes;
use capkv::proto::rsm::{self, command::Op};
use capkv::rsm::state_machine::{Applier, RsmRead};
use capkv::store::StoreError;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use prost::Message;

#[derive(Default)]
struct MemRsm(BTreeMap<Vec<u8>, Vec<u8>>);

impl RsmRead for MemRsm {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.get(key).cloned())
    }
    fn scan(&self, prefix: &[u8], after: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        Ok(self
            .0
            .range(after.to_vec()..)
            .filter(|(k, _)| k.as_slice() != after && k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

fn entry(commands: usize, cas: bool) -> Vec<u8> {
    let commands = (0..commands as u64)
        .map(|i| rsm::Command {
            client_id: 1 + i % 32,
            request_id: 1000 + i,
            ack_below: 1000 + i,
            sessionless: false,
            op: Some(if cas {
                Op::Cas(rsm::Cas {
                    key: Bytes::from(format!("k{}", i % 1000)),
                    expect_absent: true,
                    expected: Bytes::new(),
                    new_value: Bytes::from(vec![b'v'; 128]),
                    dep: None,
                })
            } else {
                Op::Put(rsm::Put {
                    key: Bytes::from(format!("k{}", i % 1000)),
                    value: Bytes::from(vec![b'v'; 128]),
                    dep: None,
                })
            }),
        })
        .collect();
    rsm::Batch { stamp: 1 << 40, proposer: 1, commands }.encode_to_vec()
}

fn apply(c: &mut Criterion) {
    let mut g = c.benchmark_group("raft_apply");
    let view = MemRsm::default();
    for n in [1usize, 32, 256] {
        for (name, cas) in [("put", false), ("cas", true)] {
            let data = entry(n, cas);
            g.throughput(Throughput::Elements(n as u64));
            g.bench_with_input(BenchmarkId::new(name, n), &data, |b, data| {
                b.iter(|| {
                    let mut a = Applier::new(&view);
                    a.apply(7, 1, black_box(data)).expect("apply");
                    black_box(a.finish())
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, apply);
criterion_main!(benches);

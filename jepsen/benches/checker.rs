//! The linearizability checker on the reference histories of
//! `../shared/porcupine-data` (the Jepsen etcd register logs and the
//! Porcupine kv logs): whole-file check time, loading included.
//!
//! `cargo bench -p capkv-jepsen --bench checker`. Skips (with a message)
//! when the reference folder is absent. No speed targets.

use std::path::PathBuf;
use std::time::Duration;

use capkv_jepsen::checker::{check_file, Format};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

const BUDGET: Duration = Duration::from_secs(60);

fn data_dir() -> PathBuf {
    std::env::var_os("CAPKV_PORCUPINE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/porcupine-data")))
}

fn reference(c: &mut Criterion) {
    let dir = data_dir();
    if !dir.is_dir() {
        eprintln!("SKIPPED: reference histories not found at {}", dir.display());
        return;
    }
    let mut g = c.benchmark_group("checker");
    g.sample_size(10);
    // The four slowest etcd logs (per Porcupine's own timings) and the kv logs.
    for (format, file) in [
        (Format::JepsenEtcd, "etcd/etcd_002.log"),
        (Format::JepsenEtcd, "etcd/etcd_007.log"),
        (Format::JepsenEtcd, "etcd/etcd_040.log"),
        (Format::JepsenEtcd, "etcd/etcd_099.log"),
        (Format::PorcupineKv, "kv/c01-ok.txt"),
        (Format::PorcupineKv, "kv/c10-ok.txt"),
        (Format::PorcupineKv, "kv/c10-bad.txt"),
    ] {
        let path = dir.join(file);
        g.bench_with_input(BenchmarkId::from_parameter(file), &path, |b, path| {
            b.iter(|| check_file(format, path, BUDGET).expect("reference file checks"))
        });
    }
    g.finish();
}

criterion_group!(benches, reference);
criterion_main!(benches);

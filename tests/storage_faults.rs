//! A node whose disk fails under its Raft log (full, or any other write
//! error) stops, saying why, with an error exit status, as etcd and Kafka
//! brokers do, instead of running on with its Raft driver gone: answering
//! status as the leader it no longer is, and failing every linearizable
//! request sent to it. The others serve on; once the disk is fixed and the
//! node restarted, it catches up, and nothing acknowledged is lost.
//!
//! The fault is real and needs neither root nor a small filesystem: node 3
//! runs with `RLIMIT_FSIZE` (the harness's `max_file_bytes`), so the write
//! that would grow its RocksDB write-ahead log past the limit fails with
//! `EFBIG`, as it fails with `ENOSPC` on a full disk (checked by hand with a
//! small tmpfs: docs/operations.md, "When the disk fills up").

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use capkv::client::Client;
use capkv::Level;
use common::{eventually, opts, TestCluster};

/// Node 3 may grow no file past this: its write-ahead log reaches it after
/// some hundreds of 4 KiB sets (each writes the Raft entry, the state
/// machine's cell and the write-back's into one log), long before a
/// memtable of 2 MiB is flushed to an SST file of that size.
const MAX_FILE_BYTES: u64 = 3 << 20;
const VALUE_BYTES: usize = 4096;
/// Sets written while waiting for node 3 to stop, at most (some 80 MB).
const MAX_SETS: usize = 20_000;
const STOP_WITHIN: Duration = Duration::from_secs(90);

fn value(i: usize) -> Vec<u8> {
    let mut v = format!("value {i} ").into_bytes();
    v.resize(VALUE_BYTES, b'.');
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_raft_storage_fails_stops_and_catches_up_after_a_restart() {
    let mut c = TestCluster::start(3, &[]).await;
    // Node 3 again, now with the file size limit.
    assert!(c.terminate(3).success());
    c.nodes[2].max_file_bytes = Some(MAX_FILE_BYTES);
    c.restart(3).await;

    // Linearizable sets through nodes 1 and 2 (node 3 may lead: they
    // forward to it) until node 3 stops by itself.
    let endpoints = vec![c.node(1).addr.clone(), c.node(2).addr.clone()];
    let client = Client::connect(&endpoints, &c.connect).unwrap();
    let mut acked: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let deadline = Instant::now() + STOP_WITHIN;
    let status = loop {
        let child = c.nodes[2].child.as_mut().expect("node 3 was started");
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            acked.len() < MAX_SETS && Instant::now() < deadline,
            "node 3 still runs after {} acknowledged sets of {VALUE_BYTES} B with its files limited to \
             {MAX_FILE_BYTES} B:\n{}",
            acked.len(),
            c.log_tail(3)
        );
        let i = acked.len();
        let key = format!("k{i:06}");
        // A set that fails (node 3 leading when it stopped) may or may not
        // have taken effect: only acknowledged ones are checked below.
        if client.set(key.as_bytes(), &value(i), opts(Level::Linearizable)).await.is_ok() {
            acked.insert(key, value(i));
        }
    };
    c.nodes[2].child = None;
    // An orderly stop with an error status, not a crash by a signal.
    assert!(!status.success() && status.signal().is_none(), "node 3 stopped with {status}:\n{}", c.log_tail(3));
    let log = std::fs::read_to_string(&c.node(3).log).unwrap();
    assert!(log.contains("raft storage failed"), "{}", c.log_tail(3));
    assert!(log.contains("writing its Raft log failed"), "the exit names the cause:\n{}", c.log_tail(3));
    assert!(log.contains("File too large"), "the reason names the OS error:\n{}", c.log_tail(3));

    // The two others serve on, with a leader among them.
    client.set(b"after", b"1", opts(Level::Linearizable)).await.expect("nodes 1 and 2 serve on");
    acked.insert("after".into(), b"1".to_vec());

    // The disk fixed (no limit) and node 3 restarted: it catches up, and
    // every acknowledged set is in its own store (an eventual get reads
    // this node's cells only) and reads back linearizably through it.
    c.nodes[2].max_file_bytes = None;
    c.restart(3).await;
    let three = c.client(3);
    let last = acked.keys().last().unwrap().clone();
    eventually(Duration::from_secs(60), "node 3 to apply every acknowledged set", || async {
        for (key, want) in &acked {
            let got = three.get(key.as_bytes(), opts(Level::Eventual)).await.ok()??;
            if got.value.as_ref() != want.as_slice() {
                return None;
            }
        }
        Some(())
    })
    .await;
    let got = three.get(last.as_bytes(), opts(Level::Linearizable)).await.unwrap();
    assert_eq!(got.map(|v| v.value.to_vec()), acked.get(&last).cloned());
}

/// The free-space reserve (`--min-free-disk-mb`, `node::disk_space`): a
/// node below it refuses sets and CAS before writing anything, as
/// retry-safe, so a client that knows another node writes there; reads and
/// deletes through it are served. Node 3's reserve here is more than any
/// disk has, so it is below it from the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_its_disk_reserve_a_node_refuses_writes_and_serves_reads_and_deletes() {
    let c = TestCluster::start_with(3, |id| {
        if id == 3 {
            vec!["--min-free-disk-mb".into(), "1000000000".into()]
        } else {
            Vec::new()
        }
    })
    .await;
    let (one, three) = (c.client(1), c.client(3));
    for level in [Level::Eventual, Level::Quorum, Level::Linearizable] {
        let key = format!("k-{level:?}");
        one.set(key.as_bytes(), b"v", opts(level)).await.unwrap();

        let e = three.set(key.as_bytes(), b"w", opts(level)).await.unwrap_err().to_string();
        assert!(e.contains("disk almost full") && e.contains("--min-free-disk-mb"), "{level:?}: {e}");
        let e = three.cas(key.as_bytes(), Some(b"v"), b"w", opts(level)).await.unwrap_err().to_string();
        assert!(e.contains("disk almost full"), "{level:?}: {e}");
        // Nothing of the refused writes was written.
        let got = one.get(key.as_bytes(), opts(Level::Linearizable)).await.unwrap();
        assert_eq!(got.map(|v| v.value), Some("v".into()), "{level:?}");

        // Reads and deletes through node 3 are served.
        if level != Level::Eventual {
            let got = three.get(key.as_bytes(), opts(level)).await.unwrap();
            assert_eq!(got.map(|v| v.value), Some("v".into()), "{level:?}");
        }
        three.delete(key.as_bytes(), opts(level)).await.unwrap();
        if level == Level::Eventual {
            // Replicated after the answer.
            eventually(Duration::from_secs(20), "the eventual delete to reach node 1", || async {
                one.get(key.as_bytes(), opts(Level::Eventual)).await.unwrap().is_none().then_some(())
            })
            .await;
        } else {
            let got = one.get(key.as_bytes(), opts(Level::Linearizable)).await.unwrap();
            assert_eq!(got, None, "{level:?}: deleted through node 3");
        }
    }

    // Each refusal is counted (Prometheus: capkv_writes_refused_disk_full_total).
    let st = three.node_status(0, Duration::from_secs(5)).await.unwrap();
    assert_eq!(st.counters.get("writes_refused_disk_full"), Some(&6), "3 levels × set and cas: {:?}", st.counters);

    // A client that knows another node writes there.
    let both = Client::connect(&[c.node(3).addr.clone(), c.node(1).addr.clone()], &c.connect).unwrap();
    both.set(b"elsewhere", b"1", opts(Level::Linearizable)).await.expect("taken by node 1");
    let got = three.get(b"elsewhere", opts(Level::Linearizable)).await.unwrap();
    assert_eq!(got.map(|v| v.value), Some("1".into()));
}

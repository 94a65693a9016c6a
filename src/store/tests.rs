//! Store tests: durability across reopen, LWW merge through the writer,
//! coordinator-local CAS, hints, digests and stamp reservation.

use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::level::Level;

fn open(dir: &Path, node: NodeId) -> Arc<Store> {
    Store::open(dir, Arc::new(Clock::new(node, 500)), vec![2, 3]).unwrap()
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn fresh(store: &Store, key: &str, value: Option<&str>, hints: bool) -> Cell {
    let out = store
        .write(vec![WriteOp::Fresh { key: b(key), value: value.map(b), origin: Level::Eventual, hints }], true)
        .await
        .unwrap();
    match &out[0] {
        OpOutcome::Written(c) => c.clone(),
        o => panic!("unexpected {o:?}"),
    }
}

#[tokio::test]
async fn writes_survive_reopen() {
    // An acknowledged (synced) write is there after the store is reopened.
    let dir = tempfile::tempdir().unwrap();
    let c = {
        let s = open(dir.path(), 1);
        fresh(&s, "k", Some("v1"), false).await
    };
    let s = open(dir.path(), 1);
    assert_eq!(s.get_cell(b"k").unwrap(), Some(c.clone()));
    // Versions keep increasing after a restart (stamp reservation).
    let c2 = fresh(&s, "k", Some("v2"), false).await;
    assert!(c2.version > c.version);
}

#[tokio::test]
async fn reservation_covers_stamps_after_restart() {
    // A restarted node never re-issues a stamp: the clock starts above the
    // persisted reservation, which is above every stamp issued before.
    let dir = tempfile::tempdir().unwrap();
    let issued = {
        let s = open(dir.path(), 1);
        let c = fresh(&s, "k", Some("v"), false).await;
        let lifted = s.clock().next_after(c.version).unwrap();
        s.ensure_reserved(lifted.hlc).await.unwrap();
        lifted.hlc
    };
    let s = open(dir.path(), 1);
    assert!(s.clock().now() > issued);
}

#[tokio::test]
async fn merge_keeps_newest_and_reports_applied() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), 1);
    let newer = Cell::value(b("new"), Version::new(100, 2), Level::Eventual);
    let older = Cell::value(b("old"), Version::new(50, 3), Level::Eventual);
    let out = s
        .write(
            vec![WriteOp::Merge { key: b("k"), cell: newer.clone() }, WriteOp::Merge { key: b("k"), cell: older }],
            true,
        )
        .await
        .unwrap();
    assert_eq!(out, vec![OpOutcome::Merged { applied: true }, OpOutcome::Merged { applied: false }]);
    assert_eq!(s.get_cell(b"k").unwrap(), Some(newer));
}

#[tokio::test]
async fn fresh_write_beats_a_far_future_cell() {
    // A local write always gets a version above the key's current one, even
    // when that came from a peer whose clock is far ahead.
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), 1);
    let future = crate::clock::hlc_from_physical_ms(crate::clock::system_unix_ms() + 3_600_000);
    let far = Cell::value(b("future"), Version::new(future, 2), Level::Eventual);
    s.write(vec![WriteOp::Merge { key: b("k"), cell: far.clone() }], true).await.unwrap();
    let mine = fresh(&s, "k", Some("now"), false).await;
    assert!(mine.version > far.version);
    assert_eq!(s.get_cell(b"k").unwrap().unwrap().value, Some(b("now")));
}

#[tokio::test]
async fn cas_compares_current_value() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), 1);
    let cas = |expected: Option<&str>, new: &str| WriteOp::Cas {
        key: b("k"),
        expected: expected.map(b),
        new_value: b(new),
        origin: Level::Eventual,
        hints: false,
    };
    let out =
        s.write(vec![cas(None, "a"), cas(None, "b"), cas(Some("a"), "c"), cas(Some("a"), "d")], true).await.unwrap();
    let swapped: Vec<bool> = out.iter().map(|o| matches!(o, OpOutcome::Cas { swapped: true, .. })).collect();
    assert_eq!(swapped, vec![true, false, true, false]);
    match &out[3] {
        OpOutcome::Cas { current: Some(c), .. } => assert_eq!(c.value, Some(b("c"))),
        o => panic!("{o:?}"),
    }
    // A tombstone counts as absent.
    fresh(&s, "k", None, false).await;
    let out = s.write(vec![cas(None, "e")], true).await.unwrap();
    assert!(matches!(out[0], OpOutcome::Cas { swapped: true, .. }));
}

#[tokio::test]
async fn hints_are_written_with_the_cell_and_cleared_by_version() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), 1);
    let c1 = fresh(&s, "k", Some("v1"), true).await;
    assert_eq!(s.count_hints(2, 100).unwrap(), 1);
    assert_eq!(s.count_hints(3, 100).unwrap(), 1);
    let c2 = fresh(&s, "k", Some("v2"), true).await;
    // Clearing the hint with the old version must not drop the newer write.
    s.write(vec![WriteOp::ClearHint { peer: 2, key: b("k"), version: c1.version }], false).await.unwrap();
    assert_eq!(s.scan_hints(2, b"", 10, 1 << 20).unwrap(), vec![(b("k"), c2.clone())]);
    s.write(vec![WriteOp::ClearHint { peer: 2, key: b("k"), version: c2.version }], false).await.unwrap();
    assert_eq!(s.count_hints(2, 100).unwrap(), 0);
    assert_eq!(s.count_hints(3, 100).unwrap(), 1);
}

#[tokio::test]
async fn hint_pages_are_cut_by_bytes_as_well_as_count() {
    // Issue 19, item 7: a page of hints is one peer message, so it must stay
    // under a byte cap; a single hint larger than the cap still comes alone.
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), 1);
    let big = "x".repeat(1000);
    for k in ["a", "b", "c", "d"] {
        fresh(&s, k, Some(&big), true).await;
    }
    let keys = |page: Vec<(Bytes, Cell)>| page.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(keys(s.scan_hints(2, b"", 10, 2_500).unwrap()), vec![b("a"), b("b")]);
    assert_eq!(keys(s.scan_hints(2, b"b", 10, 2_500).unwrap()), vec![b("c"), b("d")]);
    assert_eq!(keys(s.scan_hints(2, b"", 10, 10).unwrap()), vec![b("a")]);
    assert_eq!(keys(s.scan_hints(2, b"", 3, 1 << 20).unwrap()).len(), 3);
}

#[tokio::test]
async fn concurrent_writers_share_batches() {
    // Many concurrent writers: all acknowledged, all readable, versions unique.
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), 1);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move { fresh(&s, &format!("k{}", i % 20), Some(&i.to_string()), false).await }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.unwrap().version);
    }
    versions.sort();
    versions.dedup();
    assert_eq!(versions.len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_see_answered_writes_and_never_go_back() {
    // Through the cell cache: a get right after a write is answered returns
    // that write (or newer), and concurrent readers never see a key's
    // version go down, with fresh writes and merges interleaved and keys
    // read before their first write (cache misses, then known absent).
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), 1);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Readers stop even when an assertion below fails.
    struct StopOnDrop(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _stop_readers = StopOnDrop(stop.clone());
    let mut readers = Vec::new();
    for _ in 0..2 {
        let (s, stop) = (s.clone(), stop.clone());
        readers.push(tokio::task::spawn_blocking(move || {
            let mut last = [Version::ZERO; 8];
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for (i, seen) in last.iter_mut().enumerate() {
                    let v = s.get_cell(format!("k{i}").as_bytes()).unwrap().map_or(Version::ZERO, |c| c.version);
                    assert!(v >= *seen, "k{i} went back from {seen} to {v}");
                    *seen = v;
                    reads += 1;
                }
            }
            reads
        }));
    }
    for round in 0..300u64 {
        let key = format!("k{}", round % 8);
        let written = if round % 3 == 0 {
            // A merge from "another node" far ahead of this node's clock.
            let cell = Cell::value(b("merged"), Version::new(s.clock().now() + 1_000 + round, 2), Level::Quorum);
            s.write(vec![WriteOp::Merge { key: b(&key), cell: cell.clone() }], true).await.unwrap();
            cell
        } else {
            fresh(&s, &key, Some(&round.to_string()), false).await
        };
        let read = s.get_cell(key.as_bytes()).unwrap().expect("just written");
        assert!(read.version >= written.version, "{key}: read {} after writing {}", read.version, written.version);
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.await.unwrap() > 0);
    }
}

#[tokio::test]
async fn digests_are_rebuilt_identically_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let s = open(dir.path(), 1);
        for i in 0..50 {
            fresh(&s, &format!("k{i}"), Some("v"), false).await;
        }
        fresh(&s, "k7", None, false).await;
        s.digests()
    };
    let s = open(dir.path(), 1);
    assert_eq!(s.digests(), before);
    let (entries, more) = s.list_buckets(&[digest::bucket_of(b"k7")], b"", 100).unwrap();
    assert!(!more);
    assert!(entries.iter().any(|(k, _, tomb)| &k[..] == b"k7" && *tomb));
}

#[test]
fn second_open_of_same_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _s = open(dir.path(), 1);
    let err = Store::open(dir.path(), Arc::new(Clock::new(1, 500)), vec![]).err().unwrap();
    assert!(err.to_string().contains("in use"), "{err}");
}

#[test]
fn the_info_log_is_bounded() {
    // RocksDB records the options it runs with in db/OPTIONS-*; by default
    // its info log (db/LOG) is never rolled while the node runs and grows
    // without bound under load.
    let dir = tempfile::tempdir().unwrap();
    let _s = open(dir.path(), 1);
    let options_file = std::fs::read_dir(dir.path().join("db"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("OPTIONS-"))
        .max()
        .expect("RocksDB wrote no OPTIONS file");
    let options = std::fs::read_to_string(&options_file).unwrap();
    let value = |name: &str| {
        options
            .lines()
            .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("{name} not in {}", options_file.display()))
            .to_string()
    };
    assert_eq!(value("max_log_file_size"), MAX_INFO_LOG_BYTES.to_string());
    assert_eq!(value("keep_log_file_num"), INFO_LOG_FILES_KEPT.to_string());
}

#[tokio::test]
async fn writes_survive_reopen_after_log_files_are_recycled() {
    // Enough synced writes to switch the write-ahead log many times and pass
    // MAX_TOTAL_WAL_BYTES, so obsolete log files are written over: recovery
    // must read a recycled file's new records and not its stale tail.
    const KEYS: usize = 200;
    const VALUE_BYTES: usize = 4096;
    const OPS_PER_BATCH: usize = 64;
    let dir = tempfile::tempdir().unwrap();
    let total_bytes = 4 * MAX_TOTAL_WAL_BYTES;
    let mut last = vec![None; KEYS];
    {
        let s = open(dir.path(), 1);
        let mut written = 0usize;
        let mut round = 0usize;
        while written < total_bytes {
            let ops: Vec<WriteOp> = (0..OPS_PER_BATCH)
                .map(|i| {
                    let k = (round * OPS_PER_BATCH + i) % KEYS;
                    let mut v = vec![b'a' + (round % 26) as u8; VALUE_BYTES];
                    v[..8].copy_from_slice(&(round as u64).to_be_bytes());
                    WriteOp::Fresh {
                        key: b(&format!("k{k}")),
                        value: Some(Bytes::from(v)),
                        origin: Level::Eventual,
                        hints: false,
                    }
                })
                .collect();
            for (i, o) in s.write(ops, true).await.unwrap().into_iter().enumerate() {
                match o {
                    OpOutcome::Written(c) => last[(round * OPS_PER_BATCH + i) % KEYS] = Some(c),
                    o => panic!("unexpected {o:?}"),
                }
            }
            written += OPS_PER_BATCH * VALUE_BYTES;
            round += 1;
        }
    }
    let info_log = std::fs::read_to_string(dir.path().join("db").join("LOG")).unwrap();
    assert!(info_log.contains("from recycle list"), "no write-ahead log file was recycled");
    let s = open(dir.path(), 1);
    for (k, cell) in last.iter().enumerate() {
        assert_eq!(&s.get_cell(format!("k{k}").as_bytes()).unwrap(), cell, "key k{k}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_inline_writer_writes_in_place_and_takes_its_simulated_disk_time() {
    // The simulation's writer: no thread; a synced write waits the disk's
    // simulated latency (paused time moves by exactly that), an unsynced
    // one none, and both are written (and survive a reopen) when answered.
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(Clock::new(1, 500));
    let mode = WriterMode::Inline { sync_delay_ms: 7 };
    let c = {
        let s = Store::open_with(dir.path(), clock.clone(), vec![2, 3], mode).unwrap();
        let t0 = tokio::time::Instant::now();
        let c = fresh(&s, "k", Some("v1"), false).await;
        assert_eq!(t0.elapsed(), std::time::Duration::from_millis(7));
        assert_eq!(s.get_cell(b"k").unwrap(), Some(c.clone()));
        let t1 = tokio::time::Instant::now();
        let cell = Cell::value(b("v2"), s.clock().next_after(c.version).unwrap(), Level::Quorum);
        s.write(vec![WriteOp::Merge { key: b("k2"), cell }], false).await.unwrap();
        assert_eq!(t1.elapsed(), std::time::Duration::ZERO);
        c
    };
    let s = Store::open_with(dir.path(), clock, vec![2, 3], mode).unwrap();
    assert_eq!(s.get_cell(b"k").unwrap(), Some(c));
    assert!(s.get_cell(b"k2").unwrap().is_some());
    s.shutdown();
    assert!(matches!(s.write(Vec::new(), true).await, Err(StoreError::Closed)));
}

#[test]
fn errors_carry_facts_and_keep_their_sentences() {
    // Issue 20: the variants hold the facts, `Display` writes the sentences
    // operators saw before (docs/operations.md quotes the first).
    let in_use = StoreError::InUse { dir: "/d".into(), owner_pid: Some(42) };
    assert_eq!(
        in_use.to_string(),
        "data dir /d is in use by another capkv process (pid 42); stop it or choose another --data-dir"
    );
    let unknown_owner = StoreError::InUse { dir: "/d".into(), owner_pid: None };
    assert_eq!(
        unknown_owner.to_string(),
        "data dir /d is in use by another capkv process; stop it or choose another --data-dir"
    );
    let io = StoreError::Io {
        op: "open",
        path: "/d/LOCK.capkv".into(),
        source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
    };
    assert_eq!(io.to_string(), "storage I/O error: cannot open /d/LOCK.capkv: permission denied");
    assert!(std::error::Error::source(&io).is_some(), "the io::Error is the source");
    let gap = StoreError::RaftLogGap { index: 7 };
    assert_eq!(gap.to_string(), "corrupt data: gap in the raft log at index 7");
    let big = StoreError::SnapshotTooLarge { name: "snap-1-1.bin".into(), bytes: 10, max_bytes: 5 };
    assert_eq!(
        big.to_string(),
        "too large: snapshot snap-1-1.bin holds 10 bytes; one install writes at most 5 (MAX_INSTALL_BYTES)"
    );
}

#[tokio::test]
async fn a_purge_drops_the_tombstone_its_hints_and_its_digest_entry_only() {
    // Tombstone GC (docs/consistency.md): a purge at version t deletes the
    // key's cell at or below t and every hint at or below t, and leaves the
    // digests as if the key had never been written; a newer cell stays.
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), 1);
    fresh(&s, "k", Some("v1"), true).await;
    let t = fresh(&s, "k", None, true).await;
    let other = fresh(&s, "other", Some("x"), false).await;
    assert_eq!(s.count_hints(2, 10).unwrap(), 1);
    let out = s.write(vec![WriteOp::Purge { key: b("k"), version: t.version }], false).await.unwrap();
    assert_eq!(out, vec![OpOutcome::Purged { removed: true }]);
    assert_eq!(s.get_cell(b"k").unwrap(), None);
    assert_eq!(s.count_hints(2, 10).unwrap() + s.count_hints(3, 10).unwrap(), 0, "hints of the key go too");
    assert_eq!(s.get_cell(b"other").unwrap(), Some(other.clone()));
    // Only "other" is left in the digests.
    let expected = Digests::default();
    expected.update(b"other", None, Some((other.version, false)));
    assert_eq!(s.digests(), expected.snapshot());
    // A purge never drops a newer cell (a write after the tombstone).
    let t2 = fresh(&s, "k2", None, false).await;
    let newer = fresh(&s, "k2", Some("back"), true).await;
    let out = s.write(vec![WriteOp::Purge { key: b("k2"), version: t2.version }], false).await.unwrap();
    assert_eq!(out, vec![OpOutcome::Purged { removed: false }]);
    assert_eq!(s.get_cell(b"k2").unwrap(), Some(newer.clone()));
    assert_eq!(s.count_hints(2, 10).unwrap(), 1, "the newer write's hint stays");
    drop(s);
    // Durable and rebuilt identically.
    let s = open(dir.path(), 1);
    assert_eq!(s.get_cell(b"k").unwrap(), None);
    let expected = Digests::default();
    expected.update(b"other", None, Some((other.version, false)));
    expected.update(b"k2", None, Some((newer.version, false)));
    assert_eq!(s.digests(), expected.snapshot());
}

#[tokio::test]
async fn a_node_covers_a_tombstone_only_with_it_or_newer_and_no_older_hint() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), 1);
    let v1 = fresh(&s, "k", Some("v1"), true).await;
    // A tombstone from elsewhere, newer than v1: merged, but this node's
    // hint of v1 for peers 2 and 3 is still to be delivered.
    let t = Cell::tombstone(s.clock().next_after(v1.version).unwrap(), Level::Quorum);
    s.write(vec![WriteOp::Merge { key: b("k"), cell: t.clone() }], true).await.unwrap();
    assert!(!s.gc_covers(b"k", t.version).unwrap(), "an older hint would bring v1 back after a purge");
    for peer in [2, 3] {
        s.write(vec![WriteOp::ClearHint { peer, key: b("k"), version: v1.version }], false).await.unwrap();
    }
    assert!(s.gc_covers(b"k", t.version).unwrap());
    assert!(s.gc_covers(b"k", v1.version).unwrap(), "a newer cell covers an older tombstone");
    assert!(!s.gc_covers(b"absent", t.version).unwrap(), "no cell covers nothing");
    let later = Version { hlc: t.version.hlc + 1, ..t.version };
    assert!(!s.gc_covers(b"k", later).unwrap(), "an older cell does not cover");
}

#[tokio::test]
async fn tombstone_scans_are_bounded_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), 1);
    for i in 0..10 {
        fresh(&s, &format!("k{i}"), if i % 2 == 0 { None } else { Some("v") }, false).await;
    }
    // Tombstones: k0 k2 k4 k6 k8. Three cells per scan.
    let (found, next) = s.scan_tombstones(b"", 3, 100, |_| true).unwrap();
    assert_eq!(found.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), vec![b("k0"), b("k2")]);
    assert_eq!(next, Some(b("k2")));
    let (found, next) = s.scan_tombstones(b"k2", 3, 100, |_| true).unwrap();
    assert_eq!(found.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), vec![b("k4")]);
    assert_eq!(next, Some(b("k5")));
    // At most take_max tombstones.
    let (found, next) = s.scan_tombstones(b"", 100, 1, |_| true).unwrap();
    assert_eq!((found.len(), next), (1, Some(b("k0"))));
    // The filter decides (the grace rule); the scan reaches the end.
    let (found, next) = s.scan_tombstones(b"k5", 100, 100, |_| false).unwrap();
    assert_eq!((found.len(), next), (0, None));
}

#[tokio::test]
async fn large_values_grow_the_cells_memtable_and_rocksdb_applies_it() {
    // memtable_size: 4 KiB values make the cells family's memtable 16 MiB
    // after one window of entries; RocksDB then holds more than the 2 MiB
    // it opened with before flushing.
    use memtable_size::{MAX_MEMTABLE_BYTES, MIN_MEMTABLE_BYTES, WINDOW_ENTRIES};
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), 1);
    let value = Bytes::from(vec![b'v'; 4096]);
    let write = |from: usize, n: usize| {
        let ops: Vec<WriteOp> = (from..from + n)
            .map(|i| WriteOp::Fresh {
                key: Bytes::from(format!("big/{i:06}")),
                value: Some(value.clone()),
                origin: Level::Quorum,
                hints: false,
            })
            .collect();
        s.write(ops, false)
    };
    let sizes = |s: &Store| s.memtable_sizes().into_iter().collect::<std::collections::BTreeMap<_, _>>();
    assert_eq!(sizes(&s)[&Cf::Cells], MIN_MEMTABLE_BYTES);
    let window = WINDOW_ENTRIES as usize;
    for from in (0..window).step_by(64) {
        write(from, 64).await.unwrap();
    }
    assert_eq!(sizes(&s)[&Cf::Cells], MAX_MEMTABLE_BYTES);
    assert_eq!(sizes(&s)[&Cf::Rsm], MIN_MEMTABLE_BYTES, "nothing was written to the state machine");
    // Start from empty memtables (and obsolete log files), then write 8 MiB.
    for c in Cf::ALL {
        s.db().flush_cf(s.cf(c)).unwrap();
    }
    for from in (window..window + 2048).step_by(64) {
        write(from, 64).await.unwrap();
    }
    let active = s.db().property_int_value_cf(s.cf(Cf::Cells), "rocksdb.cur-size-active-mem-table").unwrap().unwrap();
    assert!(active > 2 * MIN_MEMTABLE_BYTES as u64, "active memtable holds {active} bytes");
    assert_eq!(s.get_cell(b"big/000000").unwrap().and_then(|c| c.value), Some(value));
}

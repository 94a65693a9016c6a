//! State machine tests: determinism, version monotonicity under clock
//! regressions, CAS, and exactly-once sessions (DESIGN §4-5).

use super::*;
use bytes::Bytes;

use crate::clock::Version;
use crate::level::Level;
use crate::proto::rsm::{Batch, Command};
use crate::store::Cell;

impl MemRsm {
    fn persist(&mut self, ops: &[WriteOp]) {
        for op in ops {
            match op {
                WriteOp::Put { cf: Cf::Rsm, key, value } => {
                    self.0.insert(key.clone(), value.clone());
                }
                WriteOp::Delete { cf: Cf::Rsm, key } => {
                    self.0.remove(key);
                }
                WriteOp::Merge { .. } | WriteOp::Purge { .. } => {}
                other => panic!("unexpected op {other:?}"),
            }
        }
    }

    /// Applies one entry and persists it; returns its answers and merged cells.
    fn step(&mut self, index: u64, batch: &Batch) -> (Vec<Answer>, Vec<(Bytes, Cell)>) {
        self.step_with_voters(index, batch, &[])
    }

    /// `step` in a group with these voters.
    fn step_with_voters(&mut self, index: u64, batch: &Batch, voters: &[u32]) -> (Vec<Answer>, Vec<(Bytes, Cell)>) {
        let mut a = Applier::new(&*self).with_voters(voters.iter().copied());
        a.apply(index, 1, &batch.encode_to_vec()).unwrap();
        let (ops, answers, applied) = a.finish();
        assert_eq!(applied, Some((index, 1)));
        self.persist(&ops);
        let cells = ops
            .into_iter()
            .filter_map(|o| match o {
                WriteOp::Merge { key, cell } => Some((key, cell)),
                _ => None,
            })
            .collect();
        (answers, cells)
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn put(client: u64, rid: u64, k: &str, v: &str) -> Command {
    Command {
        client_id: client,
        request_id: rid,
        ack_below: 0,
        sessionless: false,
        op: Some(Op::Put(rsm::Put { key: b(k), value: b(v), dep: None })),
    }
}

fn cas(client: u64, rid: u64, k: &str, expected: Option<&str>, new: &str) -> Command {
    Command {
        client_id: client,
        request_id: rid,
        ack_below: 0,
        sessionless: false,
        op: Some(Op::Cas(rsm::Cas {
            key: b(k),
            expect_absent: expected.is_none(),
            expected: expected.map(b).unwrap_or_default(),
            new_value: b(new),
            dep: None,
        })),
    }
}

fn batch(stamp: u64, proposer: u32, commands: Vec<Command>) -> Batch {
    Batch { stamp, proposer, commands }
}

fn written(a: &Answer) -> Version {
    match &a.reply.result {
        Some(reply::Result::Written(w)) => Version::new(w.hlc, w.node_id),
        r => panic!("not a write: {r:?}"),
    }
}

fn cas_result(a: &Answer) -> rsm::CasResult {
    match &a.reply.result {
        Some(reply::Result::Cas(c)) => c.clone(),
        r => panic!("not a cas: {r:?}"),
    }
}

#[test]
fn replicas_applying_the_same_entries_agree_byte_for_byte() {
    // Determinism: the state machine's output depends only on the log.
    let entries = [
        batch(1000, 1, vec![put(7, 1, "a", "x"), cas(7, 2, "a", Some("x"), "y"), put(8, 1, "b", "z")]),
        batch(
            900,
            2,
            vec![
                cas(9, 1, "a", Some("x"), "w"),
                Command { op: Some(Op::Del(rsm::Del { key: b("b"), dep: None })), ..put(9, 2, "", "") },
            ],
        ),
    ];
    let (mut r1, mut r2) = (MemRsm::default(), MemRsm::default());
    for (i, e) in entries.iter().enumerate() {
        let x = r1.step(i as u64 + 1, e);
        let y = r2.step(i as u64 + 1, e);
        assert_eq!(x, y);
    }
    assert_eq!(r1.0, r2.0);
}

#[test]
fn versions_increase_even_when_a_later_proposer_clock_is_behind() {
    // A new leader with a slower clock must still produce newer versions.
    let mut r = MemRsm::default();
    let (a1, c1) = r.step(1, &batch(5000, 1, vec![put(1, 1, "k", "v1")]));
    let (a2, c2) = r.step(2, &batch(100, 2, vec![put(2, 1, "k", "v2"), put(2, 2, "k", "v3")]));
    let v1 = written(&a1[0]);
    let (v2, v3) = (written(&a2[0]), written(&a2[1]));
    assert_eq!(v1, Version::new(5000, 1 | LINEAR_VERSION_BIT));
    assert!(v2 > v1 && v3 > v2);
    assert_eq!(v3.node_id, 2 | LINEAR_VERSION_BIT);
    // The cells merged carry the same versions, with origin linearizable.
    assert_eq!(c1[0].1.version, v1);
    assert_eq!(c2[1].1, Cell::value(b("v3"), v3, Level::Linearizable));
}

#[test]
fn cas_swaps_only_on_match_and_reports_the_current_value() {
    let mut r = MemRsm::default();
    let (a, _) = r.step(
        1,
        &batch(10, 1, vec![cas(1, 1, "k", None, "a"), cas(1, 2, "k", None, "b"), cas(1, 3, "k", Some("a"), "c")]),
    );
    let res: Vec<rsm::CasResult> = a.iter().map(cas_result).collect();
    assert!(res[0].swapped && !res[1].swapped && res[2].swapped);
    assert_eq!(res[1].current, b("a"));
    assert_eq!(res[2].current, b("c"));
    // After a delete the key is absent again.
    let del = Command { op: Some(Op::Del(rsm::Del { key: b("k"), dep: None })), ..put(1, 4, "", "") };
    r.step(2, &batch(11, 1, vec![del]));
    let (a, _) = r.step(3, &batch(12, 1, vec![cas(1, 5, "k", Some("c"), "d"), cas(1, 6, "k", None, "e")]));
    let res: Vec<rsm::CasResult> = a.iter().map(cas_result).collect();
    assert!(!res[0].swapped && !res[0].found);
    assert!(res[1].swapped);
}

#[test]
fn a_retried_command_applies_once_and_gets_the_same_reply() {
    // Exactly-once: the same (client, request) in a later entry (a retry that
    // was committed twice) is answered from the session without effect.
    let mut r = MemRsm::default();
    r.step(1, &batch(10, 1, vec![put(1, 1, "ctr", "0")]));
    let (first, _) = r.step(2, &batch(11, 1, vec![cas(5, 7, "ctr", Some("0"), "1")]));
    let (again, cells) = r.step(3, &batch(12, 2, vec![cas(5, 7, "ctr", Some("0"), "1")]));
    assert_eq!(first[0].reply, again[0].reply);
    assert!(cas_result(&again[0]).swapped);
    assert!(cells.is_empty(), "a duplicate must not write");
    // Another client's identical request is a new command: compare fails.
    let (other, _) = r.step(4, &batch(13, 1, vec![cas(6, 7, "ctr", Some("0"), "1")]));
    assert!(!cas_result(&other[0]).swapped);
}

#[test]
fn ack_below_trims_the_session_and_refuses_late_duplicates() {
    let mut r = MemRsm::default();
    r.step(1, &batch(10, 1, vec![put(5, 1, "a", "1"), put(5, 2, "a", "2")]));
    let mut c = put(5, 3, "a", "3");
    c.ack_below = 3;
    r.step(2, &batch(11, 1, vec![c]));
    let s: rsm::Session = rsm::Session::decode(&r.0[&session_key(5)][..]).unwrap();
    assert_eq!(s.entries.iter().map(|e| e.request_id).collect::<Vec<_>>(), vec![3]);
    let (late, cells) = r.step(3, &batch(12, 1, vec![put(5, 1, "a", "1")]));
    assert!(matches!(late[0].reply.result, Some(reply::Result::Refused(_))));
    assert!(cells.is_empty());
}

#[test]
fn idle_sessions_expire_by_log_time_only() {
    let mut r = MemRsm::default();
    let t0 = hlc_from_physical_ms(1_800_000_000_000);
    r.step(1, &batch(t0, 1, vec![put(1, 1, "a", "1")]));
    r.step(2, &batch(t0, 1, vec![put(2, 1, "b", "1")]));
    // Entry at a sweep index, 11 minutes of log time later, from client 2.
    let later = hlc_from_physical_ms(1_800_000_000_000 + 11 * 60 * 1000);
    r.step(SESSION_SWEEP_EVERY_ENTRIES, &batch(later, 1, vec![put(2, 2, "b", "2")]));
    assert!(!r.0.contains_key(&session_key(1)), "client 1 idle past the TTL");
    assert!(r.0.contains_key(&session_key(2)), "client 2 just wrote");
}

#[test]
fn a_busy_client_retry_is_answered_from_its_session_never_applied_twice() {
    // Review issue, item 3: a shared client with many tasks keeps request 1
    // unfinished (its reply was lost: indeterminate) while over
    // MAX_SESSION_REPLIES later requests apply. Its retry must get the
    // original reply; evicting the lowest id re-applied it (a stale set
    // reappeared over a newer one).
    let mut r = MemRsm::default();
    let (first, _) = r.step(1, &batch(10, 1, vec![put(3, 1, "k", "old")]));
    let next = |rid: u64, v: &str| {
        let mut c = put(3, rid, "k", v);
        c.ack_below = 1; // request 1 is still unfinished
        c
    };
    let later: Vec<Command> = (2..=(MAX_SESSION_REPLIES as u64 + 10)).map(|i| next(i, "new")).collect();
    let (answers, _) = r.step(2, &batch(11, 1, later));
    // The session is full: the requests past its bound were refused as busy
    // (not applied), the others applied.
    let busy = answers.iter().filter(|a| matches!(a.reply.result, Some(reply::Result::Busy(_)))).count();
    // Request 1 and 1023 later ones fill the session; the last 10 are refused.
    assert_eq!(busy, 10, "requests past the bound are refused, not applied");
    let s: rsm::Session = rsm::Session::decode(&r.0[&session_key(3)][..]).unwrap();
    assert_eq!(s.entries.len(), MAX_SESSION_REPLIES);
    // The retry of request 1 gets its original answer and does not write "old" again.
    let (retry, cells) = r.step(3, &batch(12, 1, vec![next(1, "old")]));
    assert_eq!(retry[0].reply, first[0].reply);
    assert!(cells.is_empty(), "a retry must not apply again");
    // Once the client finishes request 1 and more, its session has room again.
    let mut c = put(3, 5000, "k", "newest");
    c.ack_below = 600;
    let (ok, cells) = r.step(4, &batch(13, 1, vec![c]));
    assert!(matches!(ok[0].reply.result, Some(reply::Result::Written(_))));
    assert_eq!(cells.len(), 1);
}

#[test]
fn sessionless_commands_keep_no_session() {
    // A request that came without a client id gets ids from its node and is
    // never retried: no session is written for it.
    let mut r = MemRsm::default();
    let mut c = put(77, 1, "k", "v");
    c.sessionless = true;
    let (a, cells) = r.step(1, &batch(10, 1, vec![c]));
    assert!(matches!(a[0].reply.result, Some(reply::Result::Written(_))));
    assert_eq!(cells.len(), 1);
    assert!(!r.0.contains_key(&session_key(77)));
}

fn log_time(r: &MemRsm) -> u64 {
    u64::from_be_bytes(r.0[META_MAX_STAMP].as_slice().try_into().unwrap())
}

#[test]
fn one_fast_clock_cannot_expire_every_session() {
    // Review issue, item 4: log time was the largest stamp any proposer put
    // on a batch, so one node 15 minutes ahead made the next sweep delete
    // every idle session. Now a minority of voters cannot move log time
    // more than LOG_TIME_LEAD_MAX_MS past what a majority vouches for.
    let voters = [1, 2, 3];
    let mut r = MemRsm::default();
    let t0_ms = 1_800_000_000_000;
    let at = |ms: i64| hlc_from_physical_ms(t0_ms + ms);
    // All three nodes propose with correct clocks; clients 1 and 2 have sessions.
    r.step_with_voters(1, &batch(at(0), 1, vec![put(1, 1, "a", "1")]), &voters);
    r.step_with_voters(2, &batch(at(10), 2, vec![put(2, 1, "b", "1")]), &voters);
    r.step_with_voters(3, &batch(at(20), 3, vec![]), &voters);
    // Node 3's clock jumps 15 minutes ahead; 30 s later it proposes at a sweep index.
    let fast = at(30_000 + 15 * 60 * 1000);
    r.step_with_voters(SESSION_SWEEP_EVERY_ENTRIES, &batch(fast, 3, vec![put(9, 1, "c", "1")]), &voters);
    assert!(r.0.contains_key(&session_key(1)), "a session idle for 30 s expired: log time jumped with one clock");
    assert!(r.0.contains_key(&session_key(2)));
    assert!(log_time(&r) <= at(10 + LOG_TIME_LEAD_MAX_MS), "log time ran ahead of the majority");
    // A majority with fast clocks (nodes 2 and 3) is the time of the group.
    r.step_with_voters(SESSION_SWEEP_EVERY_ENTRIES + 1, &batch(fast + 1, 2, vec![]), &voters);
    assert!(log_time(&r) >= fast, "log time follows a majority");
    // Log time never goes back, whatever a slow clock proposes.
    let before = log_time(&r);
    r.step_with_voters(SESSION_SWEEP_EVERY_ENTRIES + 2, &batch(at(0), 1, vec![]), &voters);
    assert_eq!(log_time(&r), before);
}

#[test]
fn sessions_still_expire_when_the_majority_moves_on() {
    // The cap must not stop expiry: with correct clocks log time follows
    // the stamps and idle sessions are swept after SESSION_TTL_MS.
    let voters = [1, 2, 3];
    let mut r = MemRsm::default();
    let t0_ms = 1_800_000_000_000;
    let at = |ms: i64| hlc_from_physical_ms(t0_ms + ms);
    r.step_with_voters(1, &batch(at(0), 1, vec![put(1, 1, "a", "1")]), &voters);
    let later = 11 * 60 * 1000;
    r.step_with_voters(2, &batch(at(later), 2, vec![]), &voters);
    r.step_with_voters(3, &batch(at(later), 3, vec![]), &voters);
    r.step_with_voters(SESSION_SWEEP_EVERY_ENTRIES, &batch(at(later + 5), 1, vec![put(2, 1, "b", "1")]), &voters);
    assert!(!r.0.contains_key(&session_key(1)), "client 1 idle past the TTL");
    assert!(r.0.contains_key(&session_key(2)));
}

/// A command's dependency: the cell its proposer read from a majority.
fn dep(value: Option<&str>, version: Version) -> Option<rsm::Dep> {
    let cell = match value {
        Some(v) => Cell::value(b(v), version, Level::Quorum),
        None => Cell::tombstone(version, Level::Quorum),
    };
    kv::dep_of(Some(&cell))
}

fn with_dep(mut c: Command, d: Option<rsm::Dep>) -> Command {
    match c.op.as_mut() {
        Some(Op::Put(p)) => p.dep = d,
        Some(Op::Del(x)) => x.dep = d,
        Some(Op::Cas(x)) => x.dep = d,
        _ => panic!("not a kv command"),
    }
    c
}

#[test]
fn a_dependency_newer_than_the_state_machine_is_the_base_of_cas() {
    // One keyspace: a quorum write the state machine never saw (it came as
    // the proposer's majority read) decides the comparison.
    let mut r = MemRsm::default();
    r.step(1, &batch(10, 1, vec![put(1, 1, "k", "old")]));
    let quorum_write = Version::new(50, 2);
    let (a, cells) =
        r.step(2, &batch(11, 1, vec![with_dep(cas(1, 2, "k", Some("blue"), "red"), dep(Some("blue"), quorum_write))]));
    let c = cas_result(&a[0]);
    assert!(c.swapped, "compared against the dependency, not the state machine's stale value: {c:?}");
    // The result is a carstamp on the quorum write: right after it, before
    // any plain write with a larger (hlc, node).
    let v = Version { hlc: c.hlc, node_id: c.node_id, rmw: c.rmw };
    assert_eq!(v, quorum_write.after_rmw());
    assert!(v < Version::new(50, 3) && v < Version::new(51, 0));
    // The dependency is merged into the cells too, then the result.
    assert_eq!(
        cells,
        vec![
            (b("k"), Cell::value(b("blue"), quorum_write, Level::Linearizable)),
            (b("k"), Cell::value(b("red"), v, Level::Linearizable))
        ]
    );
    // The state machine keeps it: the next CAS chains on it.
    let (a, _) = r.step(3, &batch(12, 1, vec![cas(1, 3, "k", Some("red"), "green")]));
    let c = cas_result(&a[0]);
    assert!(c.swapped);
    assert_eq!(Version { hlc: c.hlc, node_id: c.node_id, rmw: c.rmw }, quorum_write.after_rmw().after_rmw());
    // A dependency older than the state machine's cell changes nothing.
    let (a, _) =
        r.step(4, &batch(13, 1, vec![with_dep(cas(1, 4, "k", Some("blue"), "x"), dep(Some("blue"), quorum_write))]));
    let c = cas_result(&a[0]);
    assert!(!c.swapped && c.found && c.current == b("green"), "{c:?}");
}

#[test]
fn a_put_after_a_dependency_gets_a_version_above_it() {
    // A linearizable put must supersede a quorum write that finished before
    // it began, even when the proposer's clock is far behind that write.
    let mut r = MemRsm::default();
    let quorum_write = Version::new(9_000, 2);
    let (a, cells) = r.step(1, &batch(100, 1, vec![with_dep(put(1, 1, "k", "lin"), dep(Some("q"), quorum_write))]));
    let v = written(&a[0]);
    assert!(v > quorum_write, "{v:?} must be above {quorum_write:?}");
    assert_eq!(cells.last().unwrap().1.version, v);
    // A delete too, and a tombstone dependency is a base like any other.
    let tomb = Version::new(20_000, 3);
    let del = Command { op: Some(Op::Del(rsm::Del { key: b("k"), dep: dep(None, tomb) })), ..put(1, 2, "", "") };
    let (a, _) = r.step(2, &batch(100, 1, vec![del]));
    assert!(written(&a[0]) > tomb);
}

#[test]
fn a_failed_cas_reports_a_tombstone_base_with_its_version() {
    // The proposer writes back what the comparison failed on when it is
    // newer than what it read: a tombstone needs its version for that.
    let mut r = MemRsm::default();
    let tomb = Version::new(70, 2);
    let (a, _) = r.step(1, &batch(10, 1, vec![with_dep(cas(1, 1, "k", Some("v"), "w"), dep(None, tomb))]));
    let c = cas_result(&a[0]);
    assert!(!c.swapped && !c.found);
    assert_eq!(Version { hlc: c.hlc, node_id: c.node_id, rmw: c.rmw }, tomb);
    // Absent everywhere: the zero version (nothing to write back).
    let (a, _) = r.step(2, &batch(11, 1, vec![cas(1, 2, "other", Some("v"), "w")]));
    assert_eq!(cas_result(&a[0]), rsm::CasResult::default());
    // A CAS from absent is ordered right after "nothing": any write beats it.
    let (a, _) = r.step(3, &batch(12, 1, vec![cas(1, 3, "other", None, "first")]));
    let c = cas_result(&a[0]);
    assert!(c.swapped);
    assert_eq!(Version { hlc: c.hlc, node_id: c.node_id, rmw: c.rmw }, Version::ZERO.after_rmw());
}

fn del(client: u64, rid: u64, k: &str) -> Command {
    Command { op: Some(Op::Del(rsm::Del { key: b(k), dep: None })), ..put(client, rid, "", "") }
}

fn purge(entries: &[(&str, Version)]) -> Command {
    Command {
        client_id: 0,
        request_id: 0,
        ack_below: 0,
        sessionless: true,
        op: Some(Op::Purge(rsm::Purge {
            entries: entries
                .iter()
                .map(|(k, v)| rsm::PurgeEntry { key: b(k), hlc: v.hlc, node_id: v.node_id, rmw: v.rmw })
                .collect(),
        })),
    }
}

#[test]
fn a_purge_drops_the_state_machines_cell_and_keeps_later_versions_above_it() {
    // Tombstone GC (docs/consistency.md): the purge is a command, so every
    // replica drops the same cells; and an absent key may hide a purged
    // tombstone, so a later write or CAS of it is placed above the purge
    // floor, never below the tombstone it replaces (carstamp order).
    let mut r = MemRsm::default();
    r.step(1, &batch(5_000, 1, vec![put(7, 1, "k", "v1")]));
    let (a, _) = r.step(2, &batch(6_000, 1, vec![del(7, 2, "k")]));
    let t = written(&a[0]);
    let mut a = Applier::new(&r);
    a.apply(3, 1, &batch(7_000, 1, vec![purge(&[("k", t), ("never-written", t)])]).encode_to_vec()).unwrap();
    let (ops, answers, _) = a.finish();
    assert!(matches!(answers[0].reply.result, Some(reply::Result::Purged(rsm::Purged { state_machine_cells: 1 }))));
    let purges: Vec<&WriteOp> = ops.iter().filter(|o| matches!(o, WriteOp::Purge { .. })).collect();
    assert_eq!(purges.len(), 2, "every node drops its own cells of both keys");
    r.persist(&ops);
    assert_eq!(kv::read_cell(&r, b"k").unwrap(), None);
    // A write proposed with a stamp below the tombstone still lands above it.
    let (a, _) = r.step(4, &batch(10, 2, vec![put(8, 1, "k", "v2")]));
    assert!(written(&a[0]) > t, "{} not above the purged {t}", written(&a[0]));
    // A CAS on an absent key goes right above the floor, not at (0, 0, 1),
    // which a replica still holding the tombstone would keep under it.
    let (a, _) = r.step(5, &batch(10, 2, vec![cas(8, 2, "fresh", None, "x")]));
    let c = cas_result(&a[0]);
    assert!(c.swapped);
    assert_eq!(Version { hlc: c.hlc, node_id: c.node_id, rmw: c.rmw }, t.after_rmw());
    // Negative control: the same CAS on a replica with no purge floor is
    // placed below the tombstone, where LWW would hide it.
    let (a, _) = MemRsm::default().step(1, &batch(10, 2, vec![cas(8, 2, "fresh", None, "x")]));
    let c = cas_result(&a[0]);
    assert!(Version { hlc: c.hlc, node_id: c.node_id, rmw: c.rmw } < t);
}

#[test]
fn a_purge_leaves_a_newer_cell_and_replicas_agree() {
    let entries =
        [batch(5_000, 1, vec![del(7, 1, "k"), del(7, 2, "j")]), batch(6_000, 2, vec![put(8, 1, "k", "again")])];
    let (mut r1, mut r2) = (MemRsm::default(), MemRsm::default());
    let mut t = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let (a, _) = r1.step(i as u64 + 1, e);
        assert_eq!(r2.step(i as u64 + 1, e).0, a);
        t.extend(a.iter().map(written));
    }
    // Purge both tombstones: "k" was written again since, so it stays.
    let p = batch(7_000, 1, vec![purge(&[("k", t[0]), ("j", t[1])])]);
    let (a, _) = r1.step(3, &p);
    assert_eq!(r2.step(3, &p).0, a);
    assert_eq!(r1.0, r2.0, "replicas agree byte for byte after a purge");
    assert_eq!(kv::read_cell(&r1, b"k").unwrap().and_then(|c| c.value), Some(b("again")));
    assert_eq!(kv::read_cell(&r1, b"j").unwrap(), None);
    assert!(r1.0.contains_key(kv::META_PURGE_FLOOR), "the floor is state machine data (snapshots carry it)");
}

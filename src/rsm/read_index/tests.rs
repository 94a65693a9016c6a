//! The read-index queue and lease rules, pinned to the behaviour the driver
//! had when they were inline (issue 20): ReadIndex (Raft §6.4), the
//! leader-committed-in-its-term rule (§8) and our lease (driver docs).

use super::*;

const LEASE_MS: u64 = 405;

fn leader(term: u64, commit_index: u64, applied: u64) -> RaftFacts {
    RaftFacts { is_leader: true, leader_known: true, term, commit_index, committed_in_term: true, applied }
}

fn follower(term: u64, applied: u64) -> RaftFacts {
    RaftFacts { is_leader: false, leader_known: true, term, commit_index: applied, committed_in_term: false, applied }
}

fn ctx_of(effects: &[ReadEffect<u32>]) -> Vec<u8> {
    match effects {
        [ReadEffect::Issue { ctx }] => ctx.clone(),
        other => panic!("expected one Issue, got {other:?}"),
    }
}

fn completed(effects: Vec<ReadEffect<u32>>) -> Vec<(u64, u32)> {
    effects
        .into_iter()
        .filter_map(|e| match e {
            ReadEffect::Complete { index, waiter } => Some((index, waiter)),
            _ => None,
        })
        .collect()
}

fn refused(effects: Vec<ReadEffect<u32>>) -> Vec<(Refusal, u32)> {
    effects
        .into_iter()
        .filter_map(|e| match e {
            ReadEffect::Refuse { why, waiter } => Some((why, waiter)),
            _ => None,
        })
        .collect()
}

/// A lease-mode leader of `term` holding a lease from a round issued at
/// `issued_ms` (confirmed later).
fn leased(term: u64, issued_ms: u64) -> ReadIndexQueue<u32> {
    let mut q = ReadIndexQueue::new(true, LEASE_MS);
    let raft = leader(term, 10, 10);
    let ctx = ctx_of(&q.request(issued_ms, &raft, vec![]));
    assert!(q.on_read_state(10, &ctx, &raft).is_empty());
    q
}

#[test]
fn readers_share_one_context_and_complete_in_order_once_applied() {
    let mut q = ReadIndexQueue::new(false, 0);
    let raft = follower(2, 8);
    let ctx = ctx_of(&q.request(0, &raft, vec![1, 2, 3]));
    assert_eq!(ctx, 1u64.to_be_bytes().to_vec());
    assert_eq!(q.pending_contexts(), 1);
    assert!(q.on_read_state(10, &ctx, &raft).is_empty(), "index 10 is not applied yet (applied 8)");
    assert_eq!(q.pending_contexts(), 0);
    assert!(q.complete(9).is_empty());
    assert_eq!(completed(q.complete(10)), vec![(10, 1), (10, 2), (10, 3)]);
    assert!(q.complete(11).is_empty(), "each reader is answered once");
}

#[test]
fn a_read_index_already_applied_completes_at_once() {
    let mut q = ReadIndexQueue::new(false, 0);
    let raft = follower(2, 12);
    let ctx = ctx_of(&q.request(0, &raft, vec![7]));
    assert_eq!(completed(q.on_read_state(12, &ctx, &raft)), vec![(12, 7)]);
}

#[test]
fn readers_waiting_for_different_indexes_complete_as_each_is_applied() {
    let mut q = ReadIndexQueue::new(false, 0);
    let raft = follower(2, 1);
    let a = ctx_of(&q.request(0, &raft, vec![1]));
    let b = ctx_of(&q.request(1, &raft, vec![2]));
    q.on_read_state(20, &b, &raft);
    q.on_read_state(15, &a, &raft);
    assert_eq!(completed(q.complete(17)), vec![(15, 1)]);
    assert_eq!(completed(q.complete(25)), vec![(20, 2)]);
}

#[test]
fn an_unanswered_context_is_retried_under_a_new_one_and_a_late_answer_is_ignored() {
    let mut q = ReadIndexQueue::new(false, 0);
    let raft = follower(2, 5);
    let old = ctx_of(&q.request(1_000, &raft, vec![1, 2]));
    assert!(q.retry(1_000 + READ_INDEX_RETRY_MS - 1, &raft, |_| true).is_empty(), "not yet due");
    // Reader 2 gave up (its channel closed): not asked again.
    let new = ctx_of(&q.retry(1_000 + READ_INDEX_RETRY_MS, &raft, |&w| w != 2));
    assert_ne!(new, old);
    assert_eq!(q.pending_contexts(), 1);
    assert!(q.on_read_state(5, &old, &raft).is_empty(), "the old context is forgotten");
    assert_eq!(completed(q.on_read_state(5, &new, &raft)), vec![(5, 1)]);
}

#[test]
fn garbage_and_unknown_contexts_are_ignored() {
    let mut q = ReadIndexQueue::new(false, 0);
    let raft = follower(2, 5);
    let ctx = ctx_of(&q.request(0, &raft, vec![1]));
    assert!(q.on_read_state(5, b"short", &raft).is_empty());
    assert!(q.on_read_state(5, &99u64.to_be_bytes(), &raft).is_empty());
    assert_eq!(q.pending_contexts(), 1);
    assert_eq!(completed(q.on_read_state(5, &ctx, &raft)), vec![(5, 1)]);
}

#[test]
fn without_a_leader_or_with_too_many_contexts_out_readers_are_refused() {
    let mut q = ReadIndexQueue::new(false, 0);
    let none = RaftFacts { leader_known: false, ..follower(3, 0) };
    assert_eq!(refused(q.request(0, &none, vec![1, 2])), vec![(Refusal::NoLeader, 1), (Refusal::NoLeader, 2)]);
    assert_eq!(q.pending_contexts(), 0);
    let raft = follower(3, 0);
    for i in 0..MAX_PENDING_READ_CONTEXTS {
        ctx_of(&q.request(0, &raft, vec![i as u32]));
    }
    assert_eq!(refused(q.request(0, &raft, vec![9])), vec![(Refusal::TooManyPending, 9)]);
    assert_eq!(q.pending_contexts(), MAX_PENDING_READ_CONTEXTS, "bounded");
}

#[test]
fn a_new_term_refuses_readers_of_older_terms_only() {
    let mut q = ReadIndexQueue::new(false, 0);
    let old = ctx_of(&q.request(0, &follower(2, 0), vec![1]));
    let current = ctx_of(&q.request(0, &follower(3, 0), vec![2]));
    assert_eq!(refused(q.on_term_change(3)), vec![(Refusal::LeadershipChanged, 1)]);
    assert!(q.on_read_state(4, &old, &follower(3, 4)).is_empty());
    assert_eq!(completed(q.on_read_state(4, &current, &follower(3, 4))), vec![(4, 2)]);
}

#[test]
fn contexts_are_forgotten_after_their_ttl() {
    let mut q = ReadIndexQueue::new(false, 0);
    let raft = follower(2, 0);
    let ctx = ctx_of(&q.request(100, &raft, vec![1]));
    q.expire(100 + READ_CONTEXT_TTL_MS - 1);
    assert_eq!(q.pending_contexts(), 1);
    q.expire(100 + READ_CONTEXT_TTL_MS);
    assert_eq!(q.pending_contexts(), 0);
    assert!(q.on_read_state(0, &ctx, &raft).is_empty());
}

/// The lease runs from when the round was *issued*: a majority heard from
/// the leader at or after then, not necessarily at confirmation.
#[test]
fn the_lease_expires_at_issue_time_plus_lease_ms_not_at_confirmation() {
    let mut q = ReadIndexQueue::new(true, LEASE_MS);
    let raft = leader(5, 10, 10);
    let ctx = ctx_of(&q.request(1_000, &raft, vec![]));
    assert!(!q.lease_holds(1_000, &raft), "no lease before a round is confirmed");
    q.on_read_state(10, &ctx, &raft); // confirmed 300 ms later
    assert!(q.lease_holds(1_300, &raft));
    assert!(q.lease_holds(1_000 + LEASE_MS - 1, &raft));
    assert!(!q.lease_holds(1_000 + LEASE_MS, &raft));
    assert!(!q.lease_holds(1_300 + LEASE_MS - 1, &raft), "would hold if counted from confirmation");
}

#[test]
fn a_lease_served_read_needs_no_round_and_waits_for_the_commit_index_to_apply() {
    let mut q = leased(5, 0);
    let raft = leader(5, 12, 10);
    let effects = q.request(50, &raft, vec![1, 2]);
    assert_eq!(effects, vec![ReadEffect::LeaseServed { reads: 2 }]);
    assert_eq!(q.pending_contexts(), 0, "no read-index round");
    assert!(q.complete(11).is_empty());
    assert_eq!(completed(q.complete(12)), vec![(12, 1), (12, 2)]);
    let at_once = q.request(60, &leader(5, 12, 12), vec![3]);
    assert_eq!(completed(at_once), vec![(12, 3)]);
}

#[test]
fn no_lease_before_the_leader_committed_in_its_term_nor_as_follower_nor_in_read_index_mode() {
    let q = leased(5, 0);
    assert!(q.lease_holds(10, &leader(5, 10, 10)));
    assert!(!q.lease_holds(10, &RaftFacts { committed_in_term: false, ..leader(5, 10, 10) }), "Raft §8");
    assert!(!q.lease_holds(10, &RaftFacts { is_leader: false, ..leader(5, 10, 10) }), "stepped down");
    assert!(!q.lease_holds(10, &leader(6, 10, 10)), "a lease of term 5 is no lease in term 6");

    let mut q = ReadIndexQueue::new(false, LEASE_MS);
    let raft = leader(5, 10, 10);
    let ctx = ctx_of(&q.request(0, &raft, vec![]));
    q.on_read_state(10, &ctx, &raft);
    assert!(!q.lease_holds(1, &raft), "ReadIndex mode never grants a lease");
    ctx_of(&q.request(1, &raft, vec![1]));
}

#[test]
fn a_round_confirmed_for_an_older_term_or_while_not_leader_grants_no_lease() {
    let mut q = ReadIndexQueue::new(true, LEASE_MS);
    let ctx = ctx_of(&q.request(0, &leader(5, 10, 10), vec![1]));
    // Re-elected in term 6 before the confirmation is seen: the readers
    // still get the index a majority confirmed, the lease is not granted.
    assert_eq!(completed(q.on_read_state(10, &ctx, &leader(6, 10, 10))), vec![(10, 1)]);
    assert!(!q.lease_holds(1, &leader(6, 10, 10)));
    assert!(!q.lease_holds(1, &leader(5, 10, 10)));

    let mut q = ReadIndexQueue::new(true, LEASE_MS);
    let ctx = ctx_of(&q.request(0, &leader(5, 10, 10), vec![]));
    q.on_read_state(10, &ctx, &RaftFacts { is_leader: false, ..leader(5, 10, 10) });
    assert!(!q.lease_holds(1, &leader(5, 10, 10)));
}

#[test]
fn a_new_term_drops_the_lease() {
    let mut q = leased(5, 0);
    assert!(q.lease_holds(10, &leader(5, 10, 10)));
    q.on_term_change(5);
    assert!(!q.lease_holds(10, &leader(5, 10, 10)), "dropped even if the driver reports the same term");
}

#[test]
fn a_late_confirmation_of_an_older_round_never_shortens_the_lease() {
    let mut q = ReadIndexQueue::new(true, LEASE_MS);
    let raft = leader(5, 10, 10);
    let early = ctx_of(&q.request(100, &raft, vec![]));
    let late = ctx_of(&q.request(200, &raft, vec![]));
    q.on_read_state(10, &late, &raft);
    q.on_read_state(10, &early, &raft);
    assert!(q.lease_holds(200 + LEASE_MS - 1, &raft));
    assert!(!q.lease_holds(200 + LEASE_MS, &raft));
}

#[test]
fn the_lease_is_renewed_when_less_than_half_is_left_and_no_round_is_out() {
    let half = LEASE_MS / 2;
    let mut q = leased(5, 0);
    let raft = leader(5, 10, 10);
    assert!(q.renew_lease(LEASE_MS - half - 1, &raft).is_empty(), "more than half left");
    let ctx = ctx_of(&q.renew_lease(LEASE_MS - half, &raft));
    assert!(q.renew_lease(LEASE_MS - half + 1, &raft).is_empty(), "a round is out");
    assert!(q.renew_lease(LEASE_MS - half + half - 1, &raft).is_empty(), "the round is still recent");
    // Unanswered for half a lease: another round.
    ctx_of(&q.renew_lease(LEASE_MS - half + half, &raft));
    q.on_read_state(10, &ctx, &raft);
    assert!(q.lease_holds(LEASE_MS, &raft), "renewed from the first renewal round's issue time");

    assert!(ReadIndexQueue::<u32>::new(true, LEASE_MS).renew_lease(0, &follower(5, 0)).is_empty());
    assert!(ReadIndexQueue::<u32>::new(false, LEASE_MS).renew_lease(0, &raft).is_empty());
}

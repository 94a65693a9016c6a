//! The leader's append decision (group commit, offsets, idempotent
//! producers as in Kafka's KIP-98), tested on the pure planner: no store,
//! no locks, no clock.

use proptest::prelude::*;

use super::*;

const EPOCH: u64 = 3;
const END: LogEnd = LogEnd { offset: 100, position: 5_000, timestamp_ms: 1_000 };

/// `n` records of 2-byte keys and 3-byte values.
fn records(n: usize) -> Vec<ProducerRecord> {
    (0..n).map(|i| ProducerRecord { key: vec![i as u8; 2].into(), value: vec![7; 3].into() }).collect()
}

fn req(producer_id: u64, base_sequence: u64, n: usize) -> AppendRequest {
    AppendRequest { epoch: EPOCH, producer_id, base_sequence, records: records(n) }
}

fn ok(base_offset: u64, count: u64) -> Outcome {
    Outcome::Ok(Appended { base_offset: Some(base_offset), count, duplicate: false })
}

/// The state of a producer whose sequence numbers `0..count` are at offsets `first_offset..`.
fn producer(first_offset: u64, count: u64, last_timestamp_ms: i64) -> ProducerEntry {
    let mut e = ProducerEntry::default();
    for i in 0..count {
        e.record(i, first_offset + i, last_timestamp_ms);
    }
    e
}

#[test]
fn offsets_and_positions_continue_from_the_log_end_without_gaps() {
    let plan = plan_append(EPOCH, END, 2_000, &HashMap::new(), vec![req(0, 0, 2), req(7, 0, 3), req(0, 0, 1)]);
    assert_eq!(plan.outcomes, vec![ok(100, 2), ok(102, 3), ok(105, 1)]);
    let offsets: Vec<u64> = plan.records.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, (100..106).collect::<Vec<_>>());
    let positions: Vec<u64> = plan.records.iter().map(|(_, r)| r.position).collect();
    assert_eq!(positions, vec![5_000, 5_005, 5_010, 5_015, 5_020, 5_025], "5 payload bytes per record");
    assert!(plan.records.iter().all(|(_, r)| r.leader_epoch == EPOCH && r.timestamp_ms == 2_000));
    assert_eq!(plan.end, LogEnd { offset: 106, position: 5_030, timestamp_ms: 2_000 });
    assert!(!plan.writes_nothing());
}

#[test]
fn timestamps_never_go_backwards_when_the_wall_clock_does() {
    let plan = plan_append(EPOCH, END, 400, &HashMap::new(), vec![req(0, 0, 1)]);
    assert_eq!(plan.records[0].1.timestamp_ms, 1_000);
    assert_eq!(plan.end.timestamp_ms, 1_000);
}

#[test]
fn records_carry_the_producer_and_its_sequence_numbers_and_update_its_state() {
    let plan = plan_append(EPOCH, END, 2_000, &HashMap::new(), vec![req(7, 10, 3), req(0, 5, 1)]);
    let seq: Vec<(u64, u64)> = plan.records.iter().map(|(_, r)| (r.producer_id, r.sequence)).collect();
    assert_eq!(seq, vec![(7, 10), (7, 11), (7, 12), (0, 0)], "no sequence without a producer id");
    assert_eq!(plan.producers.len(), 1, "producer 0 keeps no state");
    let e = &plan.producers[&7];
    assert_eq!(e.next_sequence(), Some(13));
    assert_eq!(e.check(10, 3), Check::Duplicate(Some(100)));
    assert_eq!(e.last_timestamp_ms, 2_000);
}

#[test]
fn a_retry_of_appended_records_gets_the_original_offset_and_writes_nothing() {
    let producers = HashMap::from([(7, producer(40, 5, 900))]);
    let plan = plan_append(EPOCH, END, 2_000, &producers, vec![req(7, 2, 3)]);
    assert_eq!(plan.outcomes, vec![Outcome::Ok(Appended { base_offset: Some(42), count: 3, duplicate: true })]);
    assert!(plan.records.is_empty() && plan.producers.is_empty());
    assert!(plan.writes_nothing());
    assert_eq!(plan.end.offset, END.offset, "the log end does not move");
}

#[test]
fn a_retry_within_the_same_batch_gets_the_offset_of_the_first_copy() {
    let plan = plan_append(EPOCH, END, 2_000, &HashMap::new(), vec![req(7, 0, 2), req(0, 0, 1), req(7, 0, 2)]);
    assert_eq!(
        plan.outcomes,
        vec![ok(100, 2), ok(102, 1), Outcome::Ok(Appended { base_offset: Some(100), count: 2, duplicate: true })]
    );
    assert_eq!(plan.records.len(), 3, "the retry is not written twice");
}

#[test]
fn an_out_of_order_sequence_is_refused_and_takes_no_offset() {
    // Producer 7 holds sequences 0..5: a gap (6) and an overlap (4..6) are
    // refused; the expected next sequence (5) is still appended after them.
    let producers = HashMap::from([(7, producer(40, 5, 900))]);
    let plan = plan_append(EPOCH, END, 2_000, &producers, vec![req(7, 6, 1), req(7, 4, 2), req(7, 5, 1)]);
    assert_eq!(
        plan.outcomes,
        vec![Outcome::OutOfOrder { expected: 5 }, Outcome::OutOfOrder { expected: 5 }, ok(100, 1)]
    );
    assert_eq!(plan.records.len(), 1);
    assert_eq!(plan.records[0].1.sequence, 5);
    assert_eq!(plan.producers[&7].next_sequence(), Some(6));
}

#[test]
fn requests_of_another_leader_epoch_or_without_records_are_refused_as_not_leader() {
    let stale = AppendRequest { epoch: EPOCH - 1, ..req(0, 0, 2) };
    let empty = req(7, 0, 0);
    let plan = plan_append(EPOCH, END, 2_000, &HashMap::new(), vec![stale, empty, req(0, 0, 1)]);
    assert_eq!(plan.outcomes, vec![Outcome::NotLeader, Outcome::NotLeader, ok(100, 1)]);
    assert_eq!(plan.records.len(), 1);
    assert!(plan.producers.is_empty(), "an empty request leaves no producer state");
}

#[test]
fn a_new_producer_beyond_the_limit_evicts_the_least_recently_active() {
    let producers: HashMap<u64, ProducerEntry> =
        (1..=MAX_PRODUCERS_PER_PARTITION as u64).map(|id| (id, producer(0, 1, 10_000 - id as i64))).collect();
    // The newest id was active longest ago; an existing producer appending
    // evicts nobody, a new one evicts exactly that one.
    let plan = plan_append(EPOCH, END, 20_000, &producers, vec![req(1, 1, 1)]);
    assert!(plan.evicted.is_empty());
    let plan = plan_append(EPOCH, END, 20_000, &producers, vec![req(u64::MAX, 0, 1)]);
    assert_eq!(plan.evicted, vec![MAX_PRODUCERS_PER_PARTITION as u64]);
    assert!(!plan.evicted.contains(&u64::MAX), "the producer that appends is kept");
}

#[test]
fn a_group_commit_stops_at_the_byte_limit_and_never_splits_a_request() {
    let size = |n: &usize| *n;
    // 3 + 4 < 8 takes another request, which crosses the limit: 11 >= 8.
    let mut queue = vec![4, 4, 1].into_iter();
    assert_eq!(gather(3, 8, size, || queue.next()), vec![3, 4, 4]);
    // 3 + 3 < 8 takes a third request; 9 >= 8 stops: the fourth stays queued.
    let mut queue = vec![3, 3, 3].into_iter();
    assert_eq!(gather(3, 8, size, || queue.next()), vec![3, 3, 3]);
    assert_eq!(queue.next(), Some(3), "left for the next batch");
    // A request beyond the limit is a batch alone; an empty queue ends it.
    let mut queue = vec![1].into_iter();
    assert_eq!(gather(20, 8, size, || queue.next()), vec![20]);
    assert_eq!(gather(1, 8, size, || None), vec![1]);
    assert_eq!(payload_bytes(&records(4)), 20);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever the mix of producers and sequences: every accepted request
    /// gets the next offsets in order, duplicates and refusals take none,
    /// and the plan's log end is the old one plus the records written.
    #[test]
    fn accepted_requests_get_contiguous_offsets_in_order(
        reqs in prop::collection::vec((0u64..3, 0u64..6, 0usize..4, any::<bool>()), 0..12),
    ) {
        let producers = HashMap::from([(1, producer(10, 2, 0))]);
        let requests: Vec<AppendRequest> = reqs
            .iter()
            .map(|&(id, seq, n, stale)| AppendRequest { epoch: if stale { EPOCH + 1 } else { EPOCH }, ..req(id, seq, n) })
            .collect();
        let plan = plan_append(EPOCH, END, 0, &producers, requests);
        prop_assert_eq!(plan.outcomes.len(), reqs.len());
        let mut next = END.offset;
        for (o, &(_, _, n, stale)) in plan.outcomes.iter().zip(&reqs) {
            match *o {
                Outcome::Ok(a) if !a.duplicate => {
                    prop_assert!(!stale && n > 0);
                    prop_assert_eq!(a.base_offset, Some(next));
                    prop_assert_eq!(a.count, n as u64);
                    next += n as u64;
                }
                Outcome::Ok(a) => prop_assert!(a.base_offset.is_none_or(|b| b < next)),
                Outcome::NotLeader => prop_assert!(stale || n == 0),
                Outcome::OutOfOrder { .. } => {}
            }
        }
        prop_assert_eq!(plan.end.offset, next);
        let offsets: Vec<u64> = plan.records.iter().map(|(o, _)| *o).collect();
        prop_assert_eq!(offsets, (END.offset..next).collect::<Vec<_>>());
    }
}

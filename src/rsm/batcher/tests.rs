//! The proposal batcher's rules, pinned to the behaviour the driver had
//! when they were inline (issue 20): Nagle-style batching with one own
//! entry in flight, the fill target and its linger, the bounds, the timers.

use super::*;

const MS: u64 = 1_000;

#[test]
fn the_fill_target_waits_for_most_waiting_clients_and_never_for_none() {
    // Idle, or a single client: propose at once.
    assert_eq!(fill_target_for(0), 1);
    assert_eq!(fill_target_for(1), 1);
    // Two clients: the one just answered is waited for (up to FILL_LINGER_US),
    // so both share a round instead of alternating.
    assert_eq!(fill_target_for(2), 2);
    assert_eq!(fill_target_for(32), 24);
    assert_eq!(fill_target_for(usize::MAX / 1000), MAX_ENTRY_COMMANDS);
    for waiting in 0..10_000 {
        let t = fill_target_for(waiting);
        assert!((1..=MAX_ENTRY_COMMANDS).contains(&t) && t <= waiting.max(1), "{waiting} -> {t}");
    }
}

#[test]
fn an_idle_node_proposes_at_once_and_holds_back_while_its_entry_is_in_flight() {
    let mut b = ProposalBatcher::new(0);
    assert!(b.accepting());
    assert_eq!(b.offer(10, vec![1, 2]), Some(vec![1, 2]), "fill target 1: at once, in order");
    assert_eq!(b.linger_until_us(), None);
    b.proposed(10, 2, true);
    assert!(!b.accepting(), "one own entry in flight at most");
    b.after_turn(5);
    assert!(!b.accepting());
    b.applied_own(500, 1);
    assert!(b.accepting());
}

#[test]
fn after_an_entry_is_applied_the_next_waits_for_most_clients_or_the_linger() {
    let mut b = ProposalBatcher::new(0);
    b.offer(0, (0..8).collect::<Vec<u32>>()).unwrap();
    b.proposed(0, 8, true);
    b.applied_own(400, 1);
    // 8 were in flight, none held, none queued: aim at 6.
    b.after_turn(0);
    assert_eq!(b.offer(410, vec![100, 101, 102]), None);
    assert_eq!(b.linger_until_us(), Some(410 + FILL_LINGER_US));
    assert_eq!(b.offer(600, vec![103, 104]), None);
    assert_eq!(b.linger_until_us(), Some(410 + FILL_LINGER_US), "the linger runs from the first held proposal");
    assert_eq!(b.offer(700, vec![105]), Some(vec![100, 101, 102, 103, 104, 105]), "target reached");
    assert_eq!(b.linger_until_us(), None);

    let mut b = ProposalBatcher::new(0);
    b.offer(0, (0..8).collect::<Vec<u32>>()).unwrap();
    b.proposed(0, 8, true);
    b.applied_own(400, 1);
    b.after_turn(0);
    assert_eq!(b.offer(410, vec![1]), None);
    assert_eq!(b.on_linger(), vec![1], "the linger sends what is held");
    assert_eq!(b.held(), 0);
}

#[test]
fn the_fill_target_counts_held_and_queued_proposals_too() {
    let mut b = ProposalBatcher::new(0);
    b.offer(0, vec![1, 2]).unwrap();
    b.proposed(0, 2, true);
    b.applied_own(100, 1);
    b.after_turn(10); // 2 done + 10 queued: target 9
    assert_eq!(b.offer(110, (0..8).collect::<Vec<u32>>()), None);
    assert!(b.offer(120, vec![8]).is_some());
}

#[test]
fn held_proposals_never_exceed_the_command_bound_and_a_full_batch_always_goes() {
    let mut b = ProposalBatcher::new(0);
    b.offer(0, (0..10_000).take(MAX_ENTRY_COMMANDS).collect::<Vec<u32>>()).unwrap();
    b.proposed(0, MAX_ENTRY_COMMANDS, true);
    b.applied_own(1, 1);
    b.after_turn(1_000_000);
    assert_eq!(b.room(), MAX_ENTRY_COMMANDS);
    let full: Vec<u32> = (0..MAX_ENTRY_COMMANDS as u32).collect();
    assert_eq!(b.offer(2, full.clone()), Some(full), "a full batch never lingers");
}

#[test]
#[should_panic(expected = "held proposals over their bound")]
fn offering_more_than_the_room_is_a_bug() {
    let mut b = ProposalBatcher::new(0);
    b.offer(0, vec![1]).unwrap();
    b.proposed(0, 2, true);
    b.applied_own(1, 1);
    b.after_turn(10); // target 9
    b.offer(2, vec![1]);
    b.offer(3, vec![0u32; MAX_ENTRY_COMMANDS]);
}

#[test]
fn an_entry_closes_at_the_command_that_reaches_the_byte_bound() {
    let mut e = EntryBytes::default();
    let kib = 1024;
    let mut entries = vec![Vec::new()];
    let sizes = [kib; 5000];
    for (i, &n) in sizes.iter().enumerate() {
        entries.last_mut().unwrap().push(i);
        if e.closes_after(n) {
            entries.push(Vec::new());
        }
    }
    // 4096 commands of 1 KiB reach 4 MiB: that one is the last of its entry.
    assert_eq!(entries[0].len(), MAX_ENTRY_BYTES / kib);
    assert_eq!(entries[1].len(), 5000 - MAX_ENTRY_BYTES / kib);
    let flat: Vec<usize> = entries.concat();
    assert_eq!(flat, (0..5000).collect::<Vec<_>>(), "order preserved");

    // A command larger than the bound goes alone (after what came before it).
    let mut e = EntryBytes::default();
    assert!(!e.closes_after(10));
    assert!(e.closes_after(MAX_ENTRY_BYTES + 1));
    assert!(!e.closes_after(10), "the count starts again");
    // Under the bound nothing closes; at it, the entry holds < bound + one command.
    let mut e = EntryBytes::default();
    assert!(!e.closes_after(MAX_ENTRY_BYTES - 1));
    assert!(e.closes_after(1));
}

#[test]
fn a_lost_own_entry_stops_holding_back_proposals_after_its_timeout() {
    let mut b = ProposalBatcher::<u32>::new(0);
    b.proposed(1_000 * MS, 3, true);
    assert!(!b.on_tick(1_000 * MS + OWN_ENTRY_LOST_MS * MS - 1, true));
    assert!(!b.accepting());
    b.on_tick(1_000 * MS + OWN_ENTRY_LOST_MS * MS, true);
    assert!(b.accepting());
}

#[test]
fn a_refused_proposal_does_not_count_as_in_flight() {
    let mut b = ProposalBatcher::<u32>::new(0);
    b.proposed(5, 3, false);
    assert!(b.accepting());
    b.after_turn(0);
    // Nothing was in flight: the fill target stays 1.
    assert_eq!(b.offer(6, vec![1]), Some(vec![1]));
}

#[test]
fn a_new_term_forgets_own_entries_in_flight() {
    let mut b = ProposalBatcher::<u32>::new(0);
    b.proposed(5, 3, true);
    b.on_term_change();
    assert!(b.accepting());
}

#[test]
fn an_idle_node_with_a_leader_proposes_an_empty_entry_every_stamp_period() {
    let mut b = ProposalBatcher::<u32>::new(0);
    assert!(!b.on_tick(STAMP_EVERY_MS * MS - 1, true));
    assert!(!b.on_tick(STAMP_EVERY_MS * MS, false), "no leader known");
    assert!(b.on_tick(STAMP_EVERY_MS * MS, true));
    // Even a refused proposal restarts the period.
    b.proposed(STAMP_EVERY_MS * MS, 0, false);
    assert!(!b.on_tick(2 * STAMP_EVERY_MS * MS - 1, true));
    assert!(b.on_tick(2 * STAMP_EVERY_MS * MS, true));
    // Not while proposals are held.
    let t = 2 * STAMP_EVERY_MS * MS;
    b.proposed(t, 4, true);
    b.applied_own(t, 1);
    b.after_turn(0); // target 3
    assert_eq!(b.offer(t, vec![1]), None);
    assert!(!b.on_tick(t + 10 * STAMP_EVERY_MS * MS, true));
    assert_eq!(b.on_linger(), vec![1]);
    assert!(b.on_tick(t + 10 * STAMP_EVERY_MS * MS, true));
}

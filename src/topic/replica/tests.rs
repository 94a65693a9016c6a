//! Replica shell tests: when a produce request may be acknowledged.

use super::produce::{ack_state, AckState};
use super::*;
use crate::proto::Acks;
use crate::topic::isr::IsrSettings;

const S: IsrSettings = IsrSettings { lag_time_max_ms: 1_000, min_insync_replicas: 2 };

/// Node 1's replica of a partition on replicas 1, 2, 3 with log end `leo`
/// and high watermark `hw`, in role `role` at leader epoch `leader_epoch`.
fn state(role: Role, leader: NodeId, leader_epoch: u64, leo: u64, hw: u64) -> State {
    State {
        meta: PartitionMeta {
            id: 0,
            replicas: vec![1, 2, 3],
            leader,
            isr: vec![1, 2, 3],
            leader_epoch,
            partition_epoch: leader_epoch,
            ..Default::default()
        },
        config: TopicConfig { min_insync_replicas: 2, ..Default::default() },
        role,
        log_start: 0,
        start_position: 0,
        leo,
        high_watermark: hw,
        hw_checkpointed: hw,
        hw_checkpoint_ms: 0,
        end_position: 0,
        last_timestamp_ms: 0,
        epochs: EpochCache::default(),
        producers: HashMap::new(),
        acks_waiters: BTreeMap::new(),
    }
}

fn leader(epoch: u64, leo: u64, hw: u64) -> Role {
    Role::Leader(Box::new(LeaderCore::new(0, 1, epoch, epoch, &[1, 2, 3], &[1, 2, 3], leo, hw, S)))
}

/// Safety review (issue 19, item 6). Node 1 leads epoch 3 and appends
/// offsets [10, 15). Before the producer is answered, node 2 takes over in
/// epoch 4 without those records; node 1 follows, truncates to 10 and
/// fetches node 2's own records [10, 20) with high watermark 20. Its high
/// watermark now passes 15, but the records it appended are gone: only the
/// leader of the epoch the records were appended in may acknowledge them
/// (Kafka answers NOT_LEADER_OR_FOLLOWER; the producer retries with the
/// same sequence numbers).
#[test]
fn a_produce_is_never_acknowledged_once_leadership_of_its_epoch_moved() {
    // Still leading epoch 3: acks=1 answers at once, acks=all waits for
    // the high watermark, then answers.
    let st = state(leader(3, 15, 10), 1, 3, 15, 10);
    assert_eq!(ack_state(&st, &PartitionName::new("t", 0), Acks::Leader, 3, 15).unwrap(), AckState::Ack);
    assert_eq!(ack_state(&st, &PartitionName::new("t", 0), Acks::All, 3, 15).unwrap(), AckState::WaitFor(15));
    let st = state(leader(3, 15, 15), 1, 3, 15, 15);
    assert_eq!(ack_state(&st, &PartitionName::new("t", 0), Acks::All, 3, 15).unwrap(), AckState::Ack);

    // Truncated and refetched as node 2's follower in epoch 4.
    let st = state(Role::Follower { leader: 2, epoch: 4 }, 2, 4, 20, 20);
    for acks in [Acks::Leader, Acks::All] {
        let r = ack_state(&st, &PartitionName::new("t", 0), acks, 3, 15);
        assert!(matches!(r, Err(TopicError::Indeterminate(_))), "{acks:?} as a follower of epoch 4: {r:?}");
    }
    // Taking over in the middle of the switch, or leading again in a later
    // epoch, is not leading the epoch the records were appended in.
    for (role, epoch) in [(Role::BecomingLeader, 5), (leader(5, 20, 20), 5), (Role::Offline, 4)] {
        let st = state(role, 1, epoch, 20, 20);
        for acks in [Acks::Leader, Acks::All] {
            let r = ack_state(&st, &PartitionName::new("t", 0), acks, 3, 15);
            assert!(matches!(r, Err(TopicError::Indeterminate(_))), "{acks:?} at epoch {epoch}: {r:?}");
        }
    }
}

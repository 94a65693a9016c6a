//! The kill-isr nemesis (topic workload only): make a replica fall out of
//! a partition's ISR, then kill every replica that is still in it.
//!
//! This is the schedule under which an unclean leader election loses
//! acknowledged records (`docs/topics.md`, "Unclean leader election"):
//!
//! 1. **start**: pick a partition with a leader and an ISR of at least two
//!    (deterministically from the planned `pick`), SIGSTOP one in-sync
//!    follower, and wait until the leader has removed it from the ISR
//!    (`replica.lag.time.max.ms`). While the window lasts, `acks=all`
//!    records are acknowledged by the smaller ISR only; the paused follower
//!    misses them.
//! 2. **heal**: kill -9 every member of the partition's ISR now, SIGCONT
//!    the follower, and watch the controller: with
//!    `--unclean-leader-election` it elects the lagging follower, whose log
//!    lacks the records of step 1; without, the partition goes offline.
//!    Then restart the killed nodes: they truncate their logs to the new
//!    leader's (unclean), or one of them leads again with every record
//!    (clean).
//!
//! Why a pause and not a cut between leader and follower: a cut link also
//! carries Raft, and when one end is the controller (the Raft leader) the
//! other end looks dead to it, so the controller moves the partition
//! (cleanly) instead of letting the ISR shrink. A paused follower is simply
//! absent; the leader and the controller see the same thing.
//!
//! The killed ISR must be a minority of the cluster — the controller is the
//! Raft leader and needs a majority to elect anyone — so with replication
//! factor 3 and `min.insync.replicas` 2 this takes 5 nodes (kill 2); with
//! 3 nodes, replication factor 2 and `min.insync.replicas` 1 it kills one.
//! A partition that does not qualify is passed over; if none does, the
//! window is skipped (its description says why). [`choose`] is pure and
//! tested; the rest acts on the cluster.

use std::collections::BTreeSet;
use std::time::Duration;

use capkv::client::topics::TopicClient;
use tokio::time::Instant;

use super::{minority_size, node_list, NemesisError};
use crate::cluster::{Cluster, NodeId};
use crate::topic::consume::{partition_states, PartitionState};

/// How long to wait for the leader to drop the paused follower from the
/// ISR (the topic's `replica.lag.time.max.ms` plus the leader's reaction).
pub const ISR_SHRINK_TIMEOUT_MS: u64 = 30_000;
/// How long to wait, after killing the ISR, for the controller to elect a
/// leader outside it (or, without unclean election, to take the partition
/// offline): the controller's node timeout (3 s by default) plus a Raft
/// election if the controller was among the killed.
pub const ELECTION_TIMEOUT_MS: u64 = 15_000;
/// Pause between metadata reads while waiting.
pub const WATCH_POLL_MS: u64 = 100;

/// The topic the nemesis acts on.
pub struct TopicTarget {
    /// A client of the cluster (metadata only).
    pub client: TopicClient,
    /// The topic's name.
    pub topic: String,
    /// Whether the topic allows unclean leader election (then a partition
    /// with leader 0 may still get one; without, leader 0 means offline).
    pub unclean: bool,
}

/// Which partition to act on and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    /// The partition.
    pub partition: u32,
    /// Its leader.
    pub leader: NodeId,
    /// The in-sync follower to pause.
    pub follower: NodeId,
    /// The ISR before.
    pub isr: Vec<NodeId>,
}

/// A kill-isr window in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Active {
    /// What was chosen.
    pub choice: Choice,
    /// Whether the follower left the ISR.
    pub shrunk: bool,
}

/// The first partition, from `pick mod P` on, with a leader and at least
/// one in-sync follower, whose ISR without that follower is a non-empty
/// minority of `nodes`; the follower is chosen by `pick` among the in-sync
/// followers. (Pausing the follower and killing that ISR leaves a majority
/// alive at any time, so the Raft controller can still elect.)
pub fn choose(partitions: &[PartitionState], pick: u32, nodes: usize) -> Option<Choice> {
    let n = partitions.len();
    (0..n).map(|i| &partitions[(pick as usize + i) % n]).find_map(|p| {
        let followers: Vec<NodeId> = p.isr.iter().copied().filter(|&r| r != p.leader).collect();
        let qualifies = p.leader != 0
            && p.isr.contains(&p.leader)
            && !followers.is_empty()
            && p.isr.len() - 1 <= minority_size(nodes);
        qualifies.then(|| Choice {
            partition: p.partition,
            leader: p.leader,
            follower: followers[pick as usize % followers.len()],
            isr: p.isr.clone(),
        })
    })
}

/// The topic's partitions, read through the linearizable store (so the
/// ISR is the controller's, not a lagging node's view); retried until
/// `deadline`.
async fn partitions(target: &TopicTarget, deadline: Instant) -> Result<Vec<PartitionState>, NemesisError> {
    loop {
        let last = match target.client.list_topics().await {
            Ok(topics) => match topics.iter().find(|t| t.name == target.topic) {
                Some(info) => return Ok(partition_states(info)),
                None => format!("topic {} not found", target.topic),
            },
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(NemesisError::Topic(format!("cannot read the metadata of {}: {last}", target.topic)));
        }
        tokio::time::sleep(Duration::from_millis(WATCH_POLL_MS)).await;
    }
}

/// Step 1 of the module docs. Returns the window's state (`None`: skipped)
/// and what happened, in words.
pub async fn start(
    cluster: &mut Cluster,
    target: &TopicTarget,
    pick: u32,
) -> Result<(Option<Active>, String), NemesisError> {
    let deadline = Instant::now() + Duration::from_millis(ISR_SHRINK_TIMEOUT_MS);
    let states = partitions(target, deadline).await?;
    let nodes = cluster.ids().len();
    let Some(choice) = choose(&states, pick, nodes) else {
        return Ok((
            None,
            format!(
                "kill-isr skipped: no partition of {} has a leader and an in-sync follower whose removal leaves an \
                 ISR of at most {} nodes (a minority of {nodes})",
                target.topic,
                minority_size(nodes)
            ),
        ));
    };
    let (leader, follower) = (choice.leader, choice.follower);
    cluster.pause(follower)?;
    let started = Instant::now();
    let mut shrunk = false;
    while Instant::now() < deadline {
        let states = partitions(target, deadline).await?;
        if states.iter().any(|p| p.partition == choice.partition && !p.isr.contains(&follower)) {
            shrunk = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(WATCH_POLL_MS)).await;
    }
    let what = format!(
        "kill-isr {}/{}: leader n{leader}, ISR [{}]; paused n{follower}; {}",
        target.topic,
        choice.partition,
        node_list(&choice.isr),
        if shrunk {
            format!("n{follower} left the ISR after {:.1} s", started.elapsed().as_secs_f64())
        } else {
            format!("n{follower} was still in the ISR after {ISR_SHRINK_TIMEOUT_MS} ms")
        }
    );
    Ok((Some(Active { choice, shrunk }), what))
}

/// Step 2 of the module docs; returns what happened, in words.
pub async fn heal(cluster: &mut Cluster, target: &TopicTarget, active: &Active) -> Result<String, NemesisError> {
    let choice = &active.choice;
    if !active.shrunk {
        cluster.resume(choice.follower)?;
        return Ok(format!("n{} never left the ISR: only resumed it", choice.follower));
    }
    let deadline = Instant::now() + Duration::from_millis(ELECTION_TIMEOUT_MS);
    let states = partitions(target, deadline).await?;
    let isr: BTreeSet<NodeId> = states
        .iter()
        .find(|p| p.partition == choice.partition)
        .map(|p| p.isr.iter().copied().collect())
        .unwrap_or_default();
    if isr.is_empty() || isr.contains(&choice.follower) || isr.len() > minority_size(cluster.ids().len()) {
        cluster.resume(choice.follower)?;
        return Ok(format!("ISR now [{}]: not killed, only resumed n{}", node_list(&isr), choice.follower));
    }
    for &id in &isr {
        cluster.kill(id)?;
    }
    cluster.resume(choice.follower)?;
    let killed_at = Instant::now();
    let mut elected = None;
    while Instant::now() < deadline {
        let Ok(states) = partitions(target, deadline).await else { break };
        let leader = states.iter().find(|p| p.partition == choice.partition).map_or(0, |p| p.leader);
        if leader != 0 && !isr.contains(&leader) {
            elected = Some(leader);
            break;
        }
        // Without unclean election, "no leader" is final until the ISR
        // returns — once the controller has noticed (leader 0).
        if leader == 0 && !target.unclean {
            break;
        }
        tokio::time::sleep(Duration::from_millis(WATCH_POLL_MS)).await;
    }
    let after_s = killed_at.elapsed().as_secs_f64();
    for &id in &isr {
        cluster.restart(id).await?;
    }
    let outcome = match elected {
        Some(leader) if leader == choice.follower => {
            format!("n{leader} (out of sync) elected uncleanly after {after_s:.1} s")
        }
        Some(leader) => format!("n{leader} elected after {after_s:.1} s"),
        None if !target.unclean => format!("the partition went offline (no clean candidate) after {after_s:.1} s"),
        None => format!("no leader within {ELECTION_TIMEOUT_MS} ms"),
    };
    Ok(format!(
        "killed the ISR [{}], resumed n{}; {outcome}; restarted {}",
        node_list(&isr),
        choice.follower,
        node_list(&isr)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(partition: u32, leader: NodeId, isr: &[NodeId]) -> PartitionState {
        PartitionState {
            partition,
            leader,
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
            high_watermark: 0,
            log_end_offset: 0,
            offsets_known: true,
        }
    }

    // Proves: the choice starts at `pick mod P`, passes over partitions
    // without a leader or an in-sync follower, and over those whose
    // remaining ISR would not be a minority (the controller needs a
    // majority alive to elect).
    #[test]
    fn chooses_a_partition_whose_isr_can_be_killed() {
        let states = vec![partition(0, 1, &[1, 2, 3]), partition(1, 0, &[2, 3]), partition(2, 3, &[3])];
        // 5 nodes: killing 2 of 5 is a minority.
        let c = choose(&states, 0, 5).unwrap();
        assert_eq!((c.partition, c.leader, c.isr.clone()), (0, 1, vec![1, 2, 3]));
        assert!([2, 3].contains(&c.follower));
        // From partition 1 on: 1 has no leader, 2 no follower, wrap to 0.
        assert_eq!(choose(&states, 1, 5).unwrap().partition, 0);
        // 3 nodes: an ISR of 2 left would be a majority.
        assert_eq!(choose(&states, 0, 3), None);
        let two = vec![partition(0, 2, &[2, 3])];
        let c = choose(&two, 7, 3).unwrap();
        assert_eq!((c.leader, c.follower), (2, 3));
        assert_eq!(choose(&[], 0, 3), None);
    }

    // Proves: the follower depends on `pick`, so a seed picks it and
    // different seeds vary it.
    #[test]
    fn follower_follows_the_pick() {
        let states = vec![partition(0, 1, &[1, 2, 3])];
        let followers: BTreeSet<NodeId> = (0..4).map(|pick| choose(&states, pick, 5).unwrap().follower).collect();
        assert_eq!(followers, BTreeSet::from([2, 3]));
    }
}

//! The topic workload (`--workload topic`): what capkv's topic log
//! promises acknowledged messages, tested under faults.
//!
//! A run creates one topic, lets producers send unique messages with the
//! chosen acks while the nemesis works, heals, waits for the partitions to
//! settle, reads every partition from offset 0 to its high watermark, and
//! checks that no acknowledged message was lost, duplicated or reordered.
//!
//! - [`history`]: the topic history format (`send` and `poll` events);
//! - [`recorder`]: recording it while the run goes;
//! - [`workload`]: the producer processes;
//! - [`consume`]: the settle wait and the final read;
//! - [`checker`]: the verdict (pure, tested on hand-written histories);
//! - [`run`]: one run from start to verdict.
//!
//! `docs/jepsen.md` ("The topic workload") is the user-facing description.

pub mod checker;
pub mod consume;
pub mod history;
pub mod recorder;
pub mod run;
pub mod workload;

use std::time::Duration;

use capkv::client::topics::Acks;

/// The topic every run creates (each run has a fresh cluster).
pub const TOPIC_NAME: &str = "jepsen";
/// Most partitions (capkv's own limit per topic).
pub const PARTITIONS_MAX: u32 = 1_024;
/// Default `replica.lag.time.max.ms` of the topic: shorter than the nodes'
/// default (10 s) so that a follower cut off for one fault window leaves
/// the ISR within it, and `acks=all` goes on with the others — the
/// behaviour worth testing.
pub const REPLICA_LAG_TIME_MAX_DEFAULT_MS: u64 = 2_000;

/// The topic and how producers send to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicOptions {
    /// Partitions (1..=[`PARTITIONS_MAX`]).
    pub partitions: u32,
    /// Replicas per partition (1..=nodes).
    pub replication_factor: u32,
    /// `min.insync.replicas` (1..=replication factor).
    pub min_insync_replicas: u32,
    /// Whether a replica outside the ISR may become leader.
    pub unclean_leader_election: bool,
    /// The producers' acknowledgement level.
    pub acks: Acks,
    /// The topic's `replica.lag.time.max.ms`.
    pub replica_lag_time_max: Duration,
}

impl TopicOptions {
    /// 3 partitions, replication factor min(3, nodes), `min.insync`
    /// min(2, replication factor), acks=all, clean elections only.
    pub fn defaults(nodes: usize) -> TopicOptions {
        let replication_factor = (nodes as u32).clamp(1, 3);
        TopicOptions {
            partitions: 3,
            replication_factor,
            min_insync_replicas: replication_factor.min(2),
            unclean_leader_election: false,
            acks: Acks::All,
            replica_lag_time_max: Duration::from_millis(REPLICA_LAG_TIME_MAX_DEFAULT_MS),
        }
    }

    /// Checks the bounds against a cluster of `nodes`.
    pub fn validate(&self, nodes: usize) -> Result<(), String> {
        if !(1..=PARTITIONS_MAX).contains(&self.partitions) {
            return Err(format!("--topic-partitions {} is out of range: 1 to {PARTITIONS_MAX}", self.partitions));
        }
        if self.replication_factor == 0 || self.replication_factor as usize > nodes {
            return Err(format!(
                "--replication-factor {} is out of range: 1 to the node count ({nodes})",
                self.replication_factor
            ));
        }
        if self.min_insync_replicas == 0 || self.min_insync_replicas > self.replication_factor {
            return Err(format!(
                "--min-insync {} is out of range: 1 to the replication factor ({})",
                self.min_insync_replicas, self.replication_factor
            ));
        }
        let lag_ms = self.replica_lag_time_max.as_millis();
        if lag_ms == 0 || lag_ms > u128::from(u32::MAX) {
            return Err(format!("--replica-lag-time-max {:?} is out of range", self.replica_lag_time_max));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves: the defaults fit any cluster size, and out-of-range settings
    // are refused with the flag's name.
    #[test]
    fn defaults_fit_and_bounds_hold() {
        for nodes in 1..=5 {
            assert_eq!(TopicOptions::defaults(nodes).validate(nodes), Ok(()), "{nodes} nodes");
        }
        let d = TopicOptions::defaults(3);
        assert_eq!((d.replication_factor, d.min_insync_replicas, d.acks), (3, 2, Acks::All));
        let e = TopicOptions { replication_factor: 4, ..d.clone() }.validate(3).unwrap_err();
        assert!(e.contains("--replication-factor"), "{e}");
        let e = TopicOptions { min_insync_replicas: 4, ..d.clone() }.validate(3).unwrap_err();
        assert!(e.contains("--min-insync"), "{e}");
        let e = TopicOptions { partitions: 0, ..d }.validate(3).unwrap_err();
        assert!(e.contains("--topic-partitions"), "{e}");
        assert_eq!([Acks::None, Acks::Leader, Acks::All].map(Acks::name), ["0", "1", "all"]);
    }
}

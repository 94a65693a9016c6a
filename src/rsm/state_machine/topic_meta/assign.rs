//! Deterministic placement: replicas of a new topic's partitions over the
//! nodes, partitions of a consumer group over its members, and records over
//! partitions by key. Pure functions, so every replica of the state machine
//! (and every client) computes the same answer.

use std::collections::BTreeMap;

use crate::clock::NodeId;

/// Replicas of each partition: partition `p` of topic `topic_id` goes to
/// `rf` consecutive nodes starting at `(topic_id + p) mod n`, so leaders
/// (the first replica) spread over the nodes and topics start at different
/// nodes. `nodes` need not be sorted; the result does not depend on order.
pub fn replica_assignment(topic_id: u64, partitions: u32, rf: usize, nodes: &[NodeId]) -> Vec<Vec<NodeId>> {
    let mut nodes = nodes.to_vec();
    nodes.sort_unstable();
    nodes.dedup();
    let n = nodes.len();
    assert!(rf >= 1 && rf <= n, "replication factor {rf} with {n} nodes");
    (0..partitions as u64)
        .map(|p| {
            let start = ((topic_id + p) % n as u64) as usize;
            (0..rf).map(|j| nodes[(start + j) % n]).collect()
        })
        .collect()
}

/// The partition of a keyed record (part of the client contract, so it
/// lives in `capkv-proto`).
pub use capkv_proto::partition::partition_for_key;

/// Partitions of each member: for every topic, its subscribers sorted by
/// id take partitions round-robin (partition `p` to subscriber `p mod m`).
/// `members` are (member id, subscribed topics); `topics` gives partition
/// counts (unknown topics are skipped).
pub fn group_assignment(
    members: &[(String, Vec<String>)],
    topics: &BTreeMap<String, u32>,
) -> BTreeMap<String, BTreeMap<String, Vec<u32>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<u32>>> =
        members.iter().map(|(id, _)| (id.clone(), BTreeMap::new())).collect();
    for (topic, &count) in topics {
        let mut subscribers: Vec<&String> =
            members.iter().filter(|(_, ts)| ts.iter().any(|t| t == topic)).map(|(id, _)| id).collect();
        subscribers.sort();
        subscribers.dedup();
        if subscribers.is_empty() {
            continue;
        }
        for p in 0..count {
            let m = subscribers[p as usize % subscribers.len()];
            out.get_mut(m).expect("member").entry(topic.clone()).or_default().push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_distinct_spread_and_order_independent() {
        let a = replica_assignment(1, 3, 3, &[3, 1, 2]);
        assert_eq!(a, vec![vec![2, 3, 1], vec![3, 1, 2], vec![1, 2, 3]]);
        assert_eq!(a, replica_assignment(1, 3, 3, &[1, 2, 3]));
        for r in replica_assignment(5, 10, 2, &[1, 2, 3, 4, 5]) {
            assert_eq!(r.len(), 2);
            assert_ne!(r[0], r[1]);
        }
        let leaders: Vec<NodeId> = replica_assignment(0, 6, 1, &[1, 2, 3]).iter().map(|r| r[0]).collect();
        assert_eq!(leaders, vec![1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn keys_map_to_a_stable_partition() {
        let p = partition_for_key(b"user-42", 3);
        assert!(p < 3);
        for _ in 0..10 {
            assert_eq!(partition_for_key(b"user-42", 3), p);
        }
        let spread: std::collections::BTreeSet<u32> =
            (0..100).map(|i| partition_for_key(format!("k{i}").as_bytes(), 3)).collect();
        assert_eq!(spread.len(), 3);
    }

    #[test]
    fn group_members_share_each_topic_they_subscribe_to() {
        let topics: BTreeMap<String, u32> = [("a".to_string(), 3), ("b".to_string(), 2)].into();
        let members =
            vec![("m2".to_string(), vec!["a".to_string()]), ("m1".to_string(), vec!["a".to_string(), "b".to_string()])];
        let got = group_assignment(&members, &topics);
        assert_eq!(got["m1"]["a"], vec![0, 2]);
        assert_eq!(got["m2"]["a"], vec![1]);
        assert_eq!(got["m1"]["b"], vec![0, 1]);
        assert!(!got["m2"].contains_key("b"));
        // More members than partitions: some get nothing.
        let many: Vec<(String, Vec<String>)> = (0..5).map(|i| (format!("m{i}"), vec!["b".to_string()])).collect();
        let got = group_assignment(&many, &topics);
        assert_eq!(got.values().filter(|a| a.is_empty()).count(), 3);
    }
}

//! Topics follow the cluster's members (issue 22) on real processes: a
//! node that joins (`kv serve --join`, `kv cluster add`) can be given
//! replicas (`kv topic reassign`), a reassignment to a node that is not a
//! member is refused, and a removed node (`kv cluster remove`) is down for
//! the controller at once: the partitions it led fail over to their live
//! ISR and it leaves every ISR (Kafka's controller does the same for an
//! unregistered broker), while acks=all records are produced continuously.
//! Every acknowledged record is consumed afterwards, once, in order, at
//! the offset its acknowledgement named.
//!
//! The nodes run with a node timeout and a follower lag limit of 10
//! minutes, so within the bounded waits here only the membership path can
//! move leadership off the removed node or drop it from an ISR (it keeps
//! running until that is seen). A
//! removed node that keeps running is a zombie leader for producers that
//! still route to it (docs/topics.md, "Changing the members"): it refuses
//! or cannot complete acks=all, so those sends fail, unacknowledged; the
//! test then stops it, as an operator would.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use capkv::client::topics::*;
use capkv::proto::TopicInfo;
use common::topics::*;
use common::*;

/// A node timeout and a follower lag limit no wait of this test comes
/// near: neither the controller's failure detection nor the leaders' lag
/// rule can take the removed node out of a leadership or an ISR in time.
const FLAGS: &[&str] = &["--topic-node-timeout-ms", "600000", "--replica-lag-time-max-ms", "600000"];
const PARTITIONS: u32 = 3;
/// Records a producer keeps unacknowledged at most (per round, all partitions).
const IN_FLIGHT_MAX: usize = 30;

async fn acked_at_least(count: &AtomicU64, n: u64, what: &str) {
    eventually(Duration::from_secs(60), what, || async { (count.load(Ordering::Relaxed) >= n).then_some(()) }).await;
}

/// Waits (bounded) until `ok` holds for the metadata alone (a partition
/// whose leader is gone has no offsets to report).
async fn meta_within(client: &TopicClient, what: &str, within: Duration, ok: impl Fn(&TopicInfo) -> bool) -> TopicInfo {
    eventually(within, what, || async {
        let t = client.describe_topic("grow").await.ok()?;
        ok(&t).then_some(t)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_follow_a_join_a_reassignment_and_a_removal_without_losing_acks_all_records() {
    let mut c = TestCluster::start(3, FLAGS).await;
    let founders = c.endpoints();
    let admin = client_for(&c, &[1, 2, 3]);
    admin.create_topic("grow", spec(PARTITIONS, 3, 2)).await.unwrap();
    let t = described_within(&admin, "grow", "every replica in sync", Duration::from_secs(60), |t| {
        t.partitions.iter().all(|p| p.isr.len() == 3)
    })
    .await;
    // The founder that leaves: the leader of partition 0. Partition 1 is
    // moved off it (onto node 4) first; it keeps leading partition 0 and
    // following in partition 2 until its removal.
    let gone = t.partitions[0].leader;
    assert_ne!(t.partitions[1].leader, gone, "leaders are spread over the nodes");
    let stay: Vec<u32> = (1..=3).filter(|&n| n != gone).collect();

    // The producer and its metadata go through the nodes that stay.
    let client = client_for(&c, &stay);
    let producer = Arc::new(Producer::new(client.clone(), "grow", ProducerOptions::default()).await.unwrap());
    let (stop, count) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let run = tokio::spawn(produce_until(producer, PARTITIONS, IN_FLIGHT_MAX, stop.clone(), count.clone()));
    acked_at_least(&count, 300, "300 records acknowledged").await;

    // Node 4 joins and is added.
    let (four, _) = c.join_and_add(&[1, 2, 3], FLAGS, &founders).await;
    assert_eq!(four, 4);

    // A reassignment to a node that is not a member is refused; one onto
    // node 4 and away from the leaving founder is taken.
    let ep = c.endpoints();
    let (code, _, err) =
        kv(&["--endpoints", &ep, "topic", "reassign", "grow", "--partition", "1", "--replicas", "2,3,5"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("node 5 is not a member of the cluster"), "{err}");
    let mut target: Vec<u32> = t.partitions[1].replicas.iter().copied().filter(|&r| r != gone).collect();
    target.push(four);
    let list = target.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(",");
    let (code, out, err) =
        kv(&["--endpoints", &ep, "topic", "reassign", "grow", "--partition", "1", "--replicas", &list]);
    assert_eq!(code, 0, "kv topic reassign: {out}{err}");
    let before = count.load(Ordering::Relaxed);
    meta_within(&client, "partition 1 moved onto node 4", Duration::from_secs(60), |t| {
        let p = &t.partitions[1];
        p.replicas == target && p.removing_replicas.is_empty() && p.isr.len() == 3
    })
    .await;
    acked_at_least(&count, before + 300, "300 more records acknowledged on the new replicas").await;

    // The founder is removed while it still leads partition 0 and runs.
    let before_removal = client.describe_topic("grow").await.unwrap();
    assert_eq!(before_removal.partitions[0].leader, gone, "node {gone} still leads partition 0");
    assert!(before_removal.partitions[2].isr.contains(&gone));
    // Every endpoint: the Raft leader (maybe the leaving node) takes it.
    let (code, out, err) = kv(&["--endpoints", &ep, "cluster", "remove", "--id", &gone.to_string()]);
    assert_eq!(code, 0, "kv cluster remove: {out}{err}");
    // Far within the node timeout: only the membership path does this.
    let after = meta_within(&client, "the removed node leads nothing and is in no ISR", Duration::from_secs(30), |t| {
        t.partitions.iter().all(|p| p.leader != gone && p.leader != 0 && !p.isr.contains(&gone))
    })
    .await;
    let p0 = &after.partitions[0];
    assert!(p0.leader_epoch > before_removal.partitions[0].leader_epoch, "partition 0 failed over");
    assert!(p0.replicas.contains(&gone), "the replica list keeps the removed node until a reassignment");
    eprintln!("after the removal of node {gone}: {:?}", after.partitions);
    c.kill(gone);

    // Producing goes on on the new leader; then every acknowledged record
    // is read back through the nodes that stay.
    let goal = count.load(Ordering::Relaxed) + 300;
    acked_at_least(&count, goal, "300 records acknowledged after the removal").await;
    stop.store(true, Ordering::Relaxed);
    let produced = run.await.unwrap();
    let total: usize = produced.acked.values().map(Vec::len).sum();
    let reader = client_for(&c, &[stay[0], stay[1], four]);
    let got = consume(reader, "grow", ConsumerOptions::default(), total).await;
    let mut consumed: BTreeMap<u32, Vec<(String, u64)>> = BTreeMap::new();
    for r in &got {
        consumed.entry(r.partition).or_default().push((String::from_utf8(r.value.to_vec()).unwrap(), r.offset));
    }
    let failed: BTreeSet<&str> = produced.failed.iter().map(String::as_str).collect();
    for (partition, acked) in &produced.acked {
        let seen = consumed.get(partition).cloned().unwrap_or_default();
        assert_acked_consumed(*partition, acked, &seen, &failed);
    }
    eprintln!(
        "{total} records acknowledged, every one consumed once, in order, at its offset; {} sends not acknowledged",
        failed.len()
    );
}

/// Every acknowledged record of `partition` is consumed once, at the
/// offset its acknowledgement named, in sending order; anything else
/// consumed is a send whose outcome was not acknowledged (indeterminate).
fn assert_acked_consumed(partition: u32, acked: &[(String, u64)], seen: &[(String, u64)], failed: &BTreeSet<&str>) {
    let mut values = BTreeSet::new();
    for (v, _) in seen {
        assert!(values.insert(v.as_str()), "partition {partition}: {v} consumed twice");
    }
    for w in seen.windows(2) {
        assert!(w[0].1 < w[1].1 && w[0].0 < w[1].0, "partition {partition}: out of order: {:?} then {:?}", w[0], w[1]);
    }
    let at: BTreeMap<&str, u64> = seen.iter().map(|(v, o)| (v.as_str(), *o)).collect();
    for (v, o) in acked {
        assert_eq!(at.get(v.as_str()), Some(o), "partition {partition}: acknowledged {v}@{o} lost or moved");
    }
    let acked_values: BTreeSet<&str> = acked.iter().map(|(v, _)| v.as_str()).collect();
    for (v, _) in seen {
        assert!(
            acked_values.contains(v.as_str()) || failed.contains(v.as_str()),
            "partition {partition}: {v} consumed but never sent"
        );
    }
}

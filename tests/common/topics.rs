//! Helpers the topic tests share (tests/topics.rs, tests/topic_reassign.rs,
//! tests/topic_membership.rs).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use capkv::client::topics::*;
use capkv::proto::TopicInfo;

use super::{eventually, TestCluster};

/// A topic client with nodes `ids` of `c` as endpoints.
pub fn client_for(c: &TestCluster, ids: &[u32]) -> Arc<TopicClient> {
    let eps: Vec<String> = ids.iter().map(|&i| c.node(i).addr.clone()).collect();
    Arc::new(TopicClient::new(&eps).unwrap())
}

pub fn spec(partitions: u32, rf: u32, min_insync: u32) -> TopicSpec {
    TopicSpec { min_insync_replicas: min_insync, ..TopicSpec::new(partitions, rf) }
}

/// Waits up to `within` until every partition's leader answers for it
/// (describe reports its offsets) and `ok` holds for the description.
pub async fn described_within(
    client: &TopicClient,
    topic: &str,
    what: &str,
    within: Duration,
    ok: impl Fn(&TopicInfo) -> bool,
) -> TopicInfo {
    eventually(within, what, || async {
        let t = client.describe_topic(topic).await.ok()?;
        (t.partitions.iter().all(|p| p.offsets_known) && ok(&t)).then_some(t)
    })
    .await
}

/// Consumes `topic` (the partitions `opts` names) from the beginning until
/// every one is read up to its high watermark and at least `expected`
/// records came.
pub async fn consume(
    client: Arc<TopicClient>,
    topic: &str,
    opts: ConsumerOptions,
    expected: usize,
) -> Vec<ConsumedRecord> {
    let mut c = Consumer::new(client, topic, opts).await.unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(out.len() >= expected && c.at_end()) {
        assert!(Instant::now() < deadline, "consumed {} of {expected} records in 60 s", out.len());
        match c.poll().await {
            Ok(recs) => out.extend(recs),
            Err(e) => {
                eprintln!("poll: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    out
}

/// What a producer run got: per partition, (value, offset) of every
/// acknowledged record in sending order; the values whose send failed.
#[derive(Default)]
pub struct Produced {
    pub acked: BTreeMap<u32, Vec<(String, u64)>>,
    pub failed: Vec<String>,
}

/// Sends "p<partition>-<n>" to partitions 0..`partitions` in turn, in
/// rounds of `in_flight` concurrent sends, until `stop`, counting
/// acknowledgements in `acked_count`.
pub async fn produce_until(
    producer: Arc<Producer>,
    partitions: u32,
    in_flight: usize,
    stop: Arc<AtomicBool>,
    acked_count: Arc<AtomicU64>,
) -> Produced {
    let mut out = Produced::default();
    let mut next = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut round = Vec::with_capacity(in_flight);
        for _ in 0..in_flight {
            let partition = (next % partitions as u64) as u32;
            let v = format!("p{partition}-{next:06}");
            next += 1;
            let rx = producer.enqueue(partition, None, v.as_bytes()).unwrap();
            round.push((partition, v, rx));
        }
        for (partition, v, rx) in round {
            match rx.await.unwrap() {
                Ok(m) => {
                    out.acked.entry(partition).or_default().push((v, m.offset.expect("acks=all gives offsets")));
                    acked_count.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    eprintln!("{v} not acknowledged: {e}");
                    out.failed.push(v);
                }
            }
        }
    }
    out
}

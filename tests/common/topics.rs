//! Helpers the topic tests share (tests/topics.rs, tests/topic_reassign.rs).

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

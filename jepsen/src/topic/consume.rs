//! After the heal: wait for the partitions to settle, then read every
//! partition from offset 0 to its high watermark, recording each fetch as
//! a `poll`.
//!
//! *Settled* means, for every partition: a leader that answers, every
//! replica back in the ISR, and the high watermark equal to the leader's
//! log end (followers caught up, so every record that will ever commit has
//! committed). The harness waits for that up to `--converge-timeout`, then
//! reads anyway: acknowledged records are below the high watermark in any
//! case, so an unsettled partition still gets a complete check of them;
//! the wait only gives unknown-outcome sends their chance to commit.
//!
//! The read uses the client library's [`TopicClient::fetch`] (leader
//! reads, only records below the high watermark), one fetch at a time per
//! partition, bounded in bytes ([`POLL_MAX_BYTES`]) and in number; a fetch
//! that fails is recorded as a failed poll and retried a bounded number of
//! times ([`POLL_FAILURES_MAX`]) before the partition is given up (the
//! checker then calls it incomplete).
//!
//! The read of a partition ends at a high watermark that equals the
//! leader's log end. A leader elected a moment ago may not have advanced
//! its high watermark over records the old leader had committed (Kafka
//! has the same lag); stopping below them would make acknowledged records
//! look lost. So a fetch that reaches the high watermark while the log end
//! is above it counts as "not yet" and is retried (bounded as a failure).

use std::time::Duration;

use capkv::client::topics::TopicClient;
use capkv::proto::TopicInfo;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::history::ReadValue;
use super::recorder::{PollCompletion, TopicRecorder};
use crate::record::RecordError;

/// Bytes of stored records one fetch asks for (a record is its value plus
/// some 40 bytes of header), which bounds a poll line of the history.
pub const POLL_MAX_BYTES: u32 = 64 * 1024;
/// Deadline of one fetch.
pub const POLL_TIMEOUT_MS: u64 = 5_000;
/// Failed fetches of one partition, in a row, before it is given up.
pub const POLL_FAILURES_MAX: u32 = 20;
/// Pause after a failed fetch.
pub const POLL_RETRY_MS: u64 = 250;
/// Most fetches of one partition.
pub const POLLS_PER_PARTITION_MAX: u64 = 100_000;
/// Pause between looks at the partitions while waiting for them to settle.
pub const SETTLE_POLL_MS: u64 = 250;

/// One partition as the settle wait last saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PartitionState {
    /// The partition.
    pub partition: u32,
    /// Its leader (0: none).
    pub leader: u32,
    /// Its replicas.
    pub replicas: Vec<u32>,
    /// Its in-sync replicas.
    pub isr: Vec<u32>,
    /// The leader's high watermark.
    pub high_watermark: u64,
    /// The leader's log end offset.
    pub log_end_offset: u64,
    /// Whether the leader answered with its offsets.
    pub offsets_known: bool,
}

impl PartitionState {
    /// Leader up, every replica in sync, high watermark at the log end.
    pub fn settled(&self) -> bool {
        self.leader != 0
            && self.offsets_known
            && self.isr.len() == self.replicas.len()
            && self.high_watermark == self.log_end_offset
    }
}

/// What the settle wait saw last.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SettleOutcome {
    /// How long after it started every partition was settled; `None`: not
    /// within the patience.
    pub settled_after_ms: Option<u64>,
    /// Every partition, as last seen (empty if the topic could not be
    /// described at all).
    pub partitions: Vec<PartitionState>,
    /// The last error describing the topic, if the last look failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The partitions of a described topic.
pub fn partition_states(info: &TopicInfo) -> Vec<PartitionState> {
    info.partitions
        .iter()
        .map(|p| PartitionState {
            partition: p.id,
            leader: p.leader,
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
            high_watermark: p.high_watermark,
            log_end_offset: p.log_end_offset,
            offsets_known: p.offsets_known,
        })
        .collect()
}

/// Describes the topic until every partition is settled or `patience`
/// runs out.
pub async fn await_settled(
    client: &TopicClient,
    topic: &str,
    patience: Duration,
    cancel: &CancellationToken,
) -> SettleOutcome {
    let started = Instant::now();
    let mut outcome = SettleOutcome::default();
    loop {
        match client.describe_topic(topic).await {
            Ok(info) => {
                outcome.partitions = partition_states(&info);
                outcome.error = None;
                if !outcome.partitions.is_empty() && outcome.partitions.iter().all(PartitionState::settled) {
                    outcome.settled_after_ms = Some(started.elapsed().as_millis() as u64);
                    return outcome;
                }
            }
            Err(e) => outcome.error = Some(e.to_string()),
        }
        if started.elapsed() >= patience || cancel.is_cancelled() {
            return outcome;
        }
        tokio::time::sleep(Duration::from_millis(SETTLE_POLL_MS)).await;
    }
}

/// Reads partitions `0..partitions` from offset 0 to the high watermark,
/// partition `p` by process `first_process + p`; see the module docs.
pub async fn consume_all(
    client: &TopicClient,
    topic: &str,
    partitions: u32,
    recorder: &TopicRecorder,
    first_process: u64,
    cancel: &CancellationToken,
) -> Result<(), RecordError> {
    for partition in 0..partitions {
        consume_partition(client, topic, partition, recorder, first_process + partition as u64, cancel).await?;
    }
    Ok(())
}

async fn consume_partition(
    client: &TopicClient,
    topic: &str,
    partition: u32,
    recorder: &TopicRecorder,
    process: u64,
    cancel: &CancellationToken,
) -> Result<(), RecordError> {
    let mut offset = 0u64;
    let mut failures = 0u32;
    for _ in 0..POLLS_PER_PARTITION_MAX {
        if cancel.is_cancelled() || failures >= POLL_FAILURES_MAX {
            return Ok(());
        }
        recorder.invoke_poll(process, partition, offset)?;
        let fetch = client.fetch(topic, partition, offset, POLL_MAX_BYTES, Duration::ZERO);
        let answer = tokio::time::timeout(Duration::from_millis(POLL_TIMEOUT_MS), fetch).await;
        match answer {
            Ok(Ok(f)) => {
                let records: Vec<(u64, ReadValue)> =
                    f.records.iter().map(|r| (r.offset, ReadValue::of(&r.value))).collect();
                let progressed = f.next_offset > offset;
                let at_end = f.next_offset >= f.high_watermark && f.high_watermark >= f.log_end_offset;
                recorder.complete_poll(
                    process,
                    PollCompletion::Ok {
                        records,
                        next_offset: f.next_offset,
                        high_watermark: f.high_watermark,
                        log_end_offset: f.log_end_offset,
                    },
                )?;
                if at_end {
                    return Ok(());
                }
                if progressed {
                    offset = f.next_offset;
                    failures = 0;
                    continue;
                }
                // Below the high watermark yet nothing came, or at a high
                // watermark still below the log end: count it as a failure
                // so a stuck partition ends.
                failures += 1;
            }
            Ok(Err(e)) => {
                recorder.complete_poll(process, PollCompletion::Fail(e.to_string()))?;
                failures += 1;
            }
            Err(_) => {
                recorder
                    .complete_poll(process, PollCompletion::Fail(format!("no answer within {POLL_TIMEOUT_MS} ms")))?;
                failures += 1;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(POLL_RETRY_MS)) => {}
            _ = cancel.cancelled() => return Ok(()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves: a partition is settled only with a leader that answered,
    // every replica in sync and the high watermark at the log end.
    #[test]
    fn settled_needs_leader_full_isr_and_caught_up_followers() {
        let settled = PartitionState {
            partition: 0,
            leader: 1,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
            high_watermark: 10,
            log_end_offset: 10,
            offsets_known: true,
        };
        assert!(settled.settled());
        assert!(!PartitionState { leader: 0, ..settled.clone() }.settled());
        assert!(!PartitionState { isr: vec![1, 2], ..settled.clone() }.settled());
        assert!(!PartitionState { high_watermark: 9, ..settled.clone() }.settled());
        assert!(!PartitionState { offsets_known: false, ..settled }.settled());
    }
}

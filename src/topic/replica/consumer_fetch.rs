//! Consumer fetches, served by the leader: records below the high
//! watermark only, long-polling on the high watermark until there are
//! some or the wait ends.

use std::time::Duration;

use tokio::time::Instant;

use super::{Partition, Role, MAX_CONSUMER_FETCH_WAIT_MS};
use crate::proto::ConsumerRecord;
use crate::topic::log;
use crate::topic::{TopicError, UnavailableReason};

/// What a consumer fetch returns.
#[derive(Clone, Debug, Default)]
pub struct ConsumerFetch {
    pub records: Vec<ConsumerRecord>,
    pub high_watermark: u64,
    pub log_start_offset: u64,
    pub log_end_offset: u64,
    pub next_offset: u64,
}

impl Partition {
    /// A consumer's fetch from `offset`: records below the high watermark.
    pub async fn consumer_fetch(
        &self,
        offset: u64,
        max_bytes: usize,
        max_wait: Duration,
    ) -> Result<ConsumerFetch, TopicError> {
        let mut hw_rx = self.hw_tx.subscribe();
        let deadline = Instant::now() + max_wait.min(Duration::from_millis(MAX_CONSUMER_FETCH_WAIT_MS));
        loop {
            hw_rx.borrow_and_update();
            let (hw, log_start, leo) = {
                let st = self.lock();
                if !matches!(st.role, Role::Leader(_)) {
                    return Err(self.not_leader(&st));
                }
                (st.high_watermark, st.log_start, st.leo)
            };
            if offset > leo {
                return Err(TopicError::OffsetOutOfRange { partition: self.name(), offset, log_start, log_end: leo });
            }
            // Below the log start (retention): the consumer moves up to it.
            let from = offset.max(log_start);
            if from < hw || Instant::now() >= deadline {
                let raw = log::read(self.ctx.store.db(), self.pid, from, hw, max_bytes)?;
                let mut records = Vec::with_capacity(raw.len());
                for (i, b) in raw.iter().enumerate() {
                    let r = log::decode_record(b)?;
                    records.push(ConsumerRecord {
                        offset: from + i as u64,
                        key: r.key,
                        value: r.value,
                        timestamp_ms: r.timestamp_ms,
                    });
                }
                let next_offset = from + records.len() as u64;
                return Ok(ConsumerFetch {
                    records,
                    high_watermark: hw,
                    log_start_offset: log_start,
                    log_end_offset: leo,
                    next_offset,
                });
            }
            if tokio::time::timeout_at(deadline, hw_rx.changed()).await.is_ok_and(|r| r.is_err()) {
                return Err(TopicError::Unavailable(UnavailableReason::ReplicaStopped));
            }
        }
    }
}

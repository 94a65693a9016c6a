//! The topic metadata command family: topics, partition assignment,
//! leaders, ISR, epochs and consumer-group offsets (DESIGN §6). What each
//! command does is `crate::topic::meta`'s (its epoch CAS rules and key
//! layout under the `t` prefix); this file hands it the applier's overlay,
//! so its reads and writes join the batch like every other command's, and
//! the log time.

use super::{Applier, ApplyError, RsmRead};
use crate::proto::rsm::{self, reply};
use crate::store::StoreError;

impl<R: RsmRead> Applier<'_, R> {
    pub(super) fn topic_meta(&mut self, batch: &rsm::Batch, op: &rsm::TopicOp) -> Result<reply::Result, ApplyError> {
        // Log time: the largest stamp applied so far (set by `apply`).
        let log_time = self.max_stamp.unwrap_or(batch.stamp);
        Ok(reply::Result::Topic(crate::topic::meta::apply(self, log_time, op)?))
    }
}

/// Topic metadata reads and writes through the same overlay as every other
/// command of the batch.
impl<R: RsmRead> crate::topic::meta::MetaKv for Applier<'_, R> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Applier::get(self, key)
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        Applier::put(self, key, value)
    }

    fn delete(&mut self, key: Vec<u8>) {
        Applier::delete(self, key)
    }
}

//! Retention on the leader: deletes records older than retention.ms or
//! beyond retention.bytes, never at or above the high watermark, by moving
//! the log start up (followers follow the leader's log start).

use super::Partition;
use crate::proto::peer::StoredRecord;
use crate::store::{StoreError, WriteOp};
use crate::topic::log::{self, PartitionId};

impl Partition {
    /// Deletes records older than retention.ms or beyond retention.bytes,
    /// never at or above the high watermark.
    pub(super) async fn enforce_retention(&self) -> Result<(), StoreError> {
        let (retention_ms, retention_bytes, log_start, hw, end_position) = {
            let st = self.lock();
            (st.config.retention_ms, st.config.retention_bytes, st.log_start, st.high_watermark, st.end_position)
        };
        if (retention_ms == 0 && retention_bytes == 0) || hw <= log_start {
            return Ok(());
        }
        let db = self.ctx.store.db().clone();
        let pid = self.pid;
        let now_wall = self.ctx.store.clock().wall_ms();
        let cut = crate::rt::spawn_blocking(move || -> Result<u64, StoreError> {
            // Timestamps and positions never decrease along the log, so both
            // cuts are binary searches with point reads.
            let mut cut = log_start;
            if retention_ms > 0 {
                let oldest_kept = now_wall - retention_ms as i64;
                cut = cut.max(first_where(&db, pid, log_start, hw, |r| r.timestamp_ms >= oldest_kept)?);
            }
            if retention_bytes > 0 {
                let floor = end_position.saturating_sub(retention_bytes);
                cut = cut.max(first_where(&db, pid, log_start, hw, |r| r.position >= floor)?);
            }
            Ok(cut.min(hw))
        })
        .await
        .map_err(|source| StoreError::Task { task: "retention", source })??;
        if cut > log_start {
            self.advance_log_start(cut).await?;
        }
        Ok(())
    }

    async fn advance_log_start(&self, cut: u64) -> Result<(), StoreError> {
        let _w = self.write_lock.lock().await;
        let (ops, epochs, position, from) = {
            let st = self.lock();
            let cut = cut.min(st.high_watermark);
            if cut <= st.log_start {
                return Ok(());
            }
            let position = if cut < st.leo {
                log::read_record(self.ctx.store.db(), self.pid, cut)?.map_or(st.end_position, |r| r.position)
            } else {
                st.end_position
            };
            let mut epochs = st.epochs.clone();
            let mut ops: Vec<WriteOp> =
                vec![log::delete_below(self.pid, cut), log::put_log_start(self.pid, cut, position)];
            for e in epochs.truncate_before(cut) {
                ops.push(log::delete_epoch(self.pid, e));
            }
            if let Some(&(e, start)) = epochs.entries().first() {
                ops.push(log::put_epoch(self.pid, e, start));
            }
            (ops, epochs, (cut, position), st.log_start)
        };
        self.ctx.store.write(ops, false).await?;
        let mut st = self.lock();
        st.log_start = position.0;
        st.start_position = position.1;
        st.epochs = epochs;
        tracing::info!(partition = %self.name(), from, to = position.0, "retention advanced the log start");
        Ok(())
    }
}

/// The first offset in `[lo, hi)` whose record satisfies `pred` (which
/// must be false then true along the log), or `hi`.
fn first_where(
    db: &rocksdb::DB,
    pid: PartitionId,
    mut lo: u64,
    mut hi: u64,
    pred: impl Fn(&StoredRecord) -> bool,
) -> Result<u64, StoreError> {
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match log::read_record(db, pid, mid)? {
            Some(r) if pred(&r) => hi = mid,
            _ => lo = mid + 1,
        }
    }
    Ok(lo)
}

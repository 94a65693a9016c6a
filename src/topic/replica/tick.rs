//! Periodic work of a replica: the leader core's lag check, dropping
//! acks=all waiters whose producer gave up, high watermark checkpoints,
//! and (when due, on the leader) retention.

use std::sync::Arc;

use super::{Partition, Role};
use crate::store::StoreError;
use crate::topic::log;
use crate::topic::HW_CHECKPOINT_INTERVAL_MS;

impl Partition {
    /// Periodic work: the core's lag check, high watermark checkpoints,
    /// and (when due, on the leader) retention.
    pub async fn tick(self: &Arc<Self>, retention_due: bool) -> Result<(), StoreError> {
        let now = self.ctx.now_ms();
        let (proposals, checkpoint, leading) = {
            let mut st = self.lock();
            st.acks_waiters.retain(|_, ws| {
                ws.retain(|w| !w.is_closed());
                !ws.is_empty()
            });
            let fx = match &mut st.role {
                Role::Leader(core) => core.tick(now),
                _ => Vec::new(),
            };
            let proposals = self.on_effects(&mut st, fx);
            let due = now.saturating_sub(st.hw_checkpoint_ms) >= HW_CHECKPOINT_INTERVAL_MS;
            let checkpoint = (st.high_watermark != st.hw_checkpointed && due).then_some(st.high_watermark);
            (proposals, checkpoint, matches!(st.role, Role::Leader(_)))
        };
        self.spawn_proposals(proposals);
        if let Some(hw) = checkpoint {
            // Skipped while a write holds the lock; the next tick retries.
            if let Ok(_w) = self.write_lock.try_lock() {
                self.ctx.store.write(vec![log::put_high_watermark(self.pid, hw)], false).await?;
                let mut st = self.lock();
                st.hw_checkpointed = hw;
                st.hw_checkpoint_ms = now;
            }
        }
        if retention_due && leading {
            self.enforce_retention().await?;
        }
        Ok(())
    }
}

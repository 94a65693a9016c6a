//! The leader side of follower fetches: checks the follower's epoch and
//! log against this leader's (answering where it diverges or that it fell
//! below the log start), feeds its fetch offset to the [`LeaderCore`](crate::topic::isr::LeaderCore), and
//! long-polls on the log end for new records.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Partition, Role, MAX_REPLICA_FETCH_WAIT_MS, REPLICA_FETCH_MAX_BYTES};
use crate::proto::peer::{ReplicaFetchError, ReplicaFetchRequest, ReplicaFetchResponse};
use crate::topic::epochs::divergence;
use crate::topic::log;

/// A refused follower fetch.
pub fn fetch_error(error: ReplicaFetchError, message: String) -> ReplicaFetchResponse {
    ReplicaFetchResponse { error: error as i32, message, ..Default::default() }
}

impl Partition {
    /// Serves a follower's fetch (this node should lead the partition).
    pub async fn serve_replica_fetch(self: &Arc<Self>, req: ReplicaFetchRequest) -> ReplicaFetchResponse {
        let now = self.ctx.now_ms();
        let mut leo_rx = self.leo_tx.subscribe();
        let proposals = {
            let mut st = self.lock();
            let current = st.meta.leader_epoch;
            let leading = matches!(&st.role, Role::Leader(c) if c.leader_epoch() == req.leader_epoch);
            if !leading {
                let mut r = if req.leader_epoch < current {
                    fetch_error(
                        ReplicaFetchError::StaleEpoch,
                        format!("leader epoch {} of {} is stale: {current} is current", req.leader_epoch, self.name()),
                    )
                } else {
                    fetch_error(
                        ReplicaFetchError::NotLeader,
                        format!(
                            "node {} does not lead {} in epoch {} (it knows epoch {current})",
                            self.ctx.node_id,
                            self.name(),
                            req.leader_epoch
                        ),
                    )
                };
                r.leader_epoch = current;
                return r;
            }
            if !st.meta.replicas.contains(&req.from_node) {
                return fetch_error(
                    ReplicaFetchError::UnknownPartition,
                    format!("node {} is not a replica of {}", req.from_node, self.name()),
                );
            }
            if req.fetch_offset < st.log_start {
                let mut r = fetch_error(
                    ReplicaFetchError::OffsetOutOfRange,
                    format!("offset {} is below the log start {} of {}", req.fetch_offset, st.log_start, self.name()),
                );
                r.log_start_offset = st.log_start;
                r.leader_epoch = current;
                return r;
            }
            if let Some((epoch, end)) = divergence(&st.epochs, st.leo, req.fetch_offset, req.last_fetched_epoch) {
                let mut r = fetch_error(
                    ReplicaFetchError::Diverging,
                    format!(
                        "the log of node {} diverges from the leader's after epoch {epoch} at offset {end}",
                        req.from_node
                    ),
                );
                r.leader_epoch = current;
                r.diverging_epoch = epoch;
                r.diverging_end_offset = end;
                return r;
            }
            let fx = match &mut st.role {
                Role::Leader(core) => core.on_fetch(now, req.from_node, req.fetch_offset),
                _ => unreachable!("checked above"),
            };
            self.on_effects(&mut st, fx)
        };
        self.spawn_proposals(proposals);
        let wait = Duration::from_millis((req.max_wait_ms as u64).min(MAX_REPLICA_FETCH_WAIT_MS));
        let deadline = Instant::now() + wait;
        while *leo_rx.borrow_and_update() <= req.fetch_offset {
            match tokio::time::timeout_at(deadline, leo_rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => break,
            }
        }
        let (leo, hw, log_start, leading) = {
            let st = self.lock();
            let leading = matches!(&st.role, Role::Leader(c) if c.leader_epoch() == req.leader_epoch);
            (st.leo, st.high_watermark, st.log_start, leading)
        };
        if !leading {
            return fetch_error(
                ReplicaFetchError::NotLeader,
                format!("node {} stopped leading {}", self.ctx.node_id, self.name()),
            );
        }
        let max = (req.max_bytes as usize).clamp(1, REPLICA_FETCH_MAX_BYTES as usize);
        let records = match log::read(self.ctx.store.db(), self.pid, req.fetch_offset, leo, max) {
            Ok(r) => r,
            Err(e) => return fetch_error(ReplicaFetchError::NotLeader, format!("leader storage error: {e}")),
        };
        ReplicaFetchResponse {
            error: ReplicaFetchError::FetchOk as i32,
            message: String::new(),
            leader_epoch: req.leader_epoch,
            high_watermark: hw,
            log_start_offset: log_start,
            log_end_offset: leo,
            diverging_epoch: 0,
            diverging_end_offset: 0,
            records,
        }
    }
}

//! One partition replica on this node: the I/O shell around the
//! [`LeaderCore`], the [`EpochCache`] and the producer state.
//!
//! The role comes from the metadata this node applied: it leads in the
//! current leader epoch only if the metadata names it, follows the named
//! leader otherwise, and acts only in the epoch it read (requests carry
//! epochs; a peer in another epoch is refused).
//!
//! * **Leader.** Produce requests queue for one appender task that turns
//!   all queued requests into one write batch with one fsync (group
//!   commit), assigns offsets, checks idempotence, then feeds the new log
//!   end to the core. Follower fetches feed the core their offsets and
//!   long-poll for new records. acks=all requests wait until the high
//!   watermark passes their records. acks=1 and acks=all are acknowledged
//!   only while this node still leads the epoch the records were appended
//!   in (see `ack_state` in `produce.rs`).
//! * **Follower.** A fetcher task pulls from the leader, appends what it
//!   gets with one fsync per response, truncates where the leader says its
//!   log diverges (leader epochs, never the high watermark), and restarts
//!   its log at the leader's log start when it fell behind retention.
//! * Every log mutation (appends, truncation, retention) holds the
//!   partition's write lock, so offsets are assigned against a stable log
//!   end; the in-memory state is a `std` mutex never held across `.await`.
//!
//! This file holds the replica's state and its lifecycle (open, stop,
//! delete, status); each role is one file:
//!
//! * `role.rs`: role selection from the applied metadata; taking over.
//! * `isr_shell.rs`: the shell around the leader's ISR core.
//! * `produce.rs`: the leader's produce path and acknowledgements.
//! * `appender.rs`: the leader's group-commit appender task (the I/O).
//! * `append_plan.rs`: what a group commit writes and answers (pure).
//! * `consumer_fetch.rs`: consumer fetches (leader, below the high watermark).
//! * `fetch_server.rs`: the leader side of follower fetches.
//! * `follower.rs`: the fetcher task and its appends.
//! * `truncation.rs`: follower truncation; restart at the leader's log start.
//! * `retention.rs`: the leader's retention.
//! * `tick.rs`: periodic work (lag checks, checkpoints, retention when due).

mod append_plan;
mod appender;
mod consumer_fetch;
mod fetch_server;
mod follower;
mod isr_shell;
mod produce;
mod retention;
mod role;
mod tick;
mod truncation;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use self::appender::Append;
pub use self::consumer_fetch::ConsumerFetch;
pub use self::fetch_server::fetch_error;
use self::produce::fail_waiters;
use super::epochs::EpochCache;
use super::isr::LeaderCore;
use super::log::{self, PartitionId};
use super::producer_state::ProducerEntry;
use super::{Ctx, IndeterminateReason, NotLeaderReason, PartitionName, TopicError};
use crate::clock::NodeId;
use crate::proto::peer::PartitionStatus;
use crate::proto::rsm::{PartitionMeta, TopicConfig};
use crate::store::StoreError;

/// Produce requests waiting for the appender, per partition.
pub const APPEND_QUEUE_DEPTH: usize = 1024;
/// Payload bytes folded into one append write at most.
pub const MAX_APPEND_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// How long a leader holds a follower fetch open waiting for records.
pub const REPLICA_FETCH_WAIT_MS: u32 = 500;
pub const MAX_REPLICA_FETCH_WAIT_MS: u64 = 5_000;
/// Record bytes per follower fetch response at most.
pub const REPLICA_FETCH_MAX_BYTES: u32 = 4 * 1024 * 1024;
/// A follower fetch RPC may take this much longer than its wait.
pub const FETCH_RPC_SLACK_MS: u64 = 2_000;
pub const FETCH_BACKOFF_MIN_MS: u64 = 50;
pub const FETCH_BACKOFF_MAX_MS: u64 = 1_000;
/// Records read back to rebuild producer state after a truncation.
pub const PRODUCER_REBUILD_SCAN_RECORDS: u64 = 100_000;
pub const MAX_CONSUMER_FETCH_WAIT_MS: u64 = 30_000;

/// Where a produce request's records went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the first record (`None`: acks=0, or a retry of a batch
    /// too old to know where it went).
    pub base_offset: Option<u64>,
    pub count: u64,
    /// A retry of records appended before; nothing new was written.
    pub duplicate: bool,
}

enum Role {
    Leader(Box<LeaderCore>),
    /// The metadata names this node leader; the epoch is being set up.
    BecomingLeader,
    Follower {
        leader: NodeId,
        epoch: u64,
    },
    Offline,
}

type AckWaiter = oneshot::Sender<Result<(), TopicError>>;

struct State {
    meta: PartitionMeta,
    config: TopicConfig,
    role: Role,
    log_start: u64,
    /// `position` of the record at `log_start`.
    start_position: u64,
    leo: u64,
    high_watermark: u64,
    hw_checkpointed: u64,
    hw_checkpoint_ms: u64,
    end_position: u64,
    last_timestamp_ms: i64,
    epochs: EpochCache,
    producers: HashMap<u64, ProducerEntry>,
    /// acks=all requests by the offset the high watermark must reach.
    acks_waiters: BTreeMap<u64, Vec<AckWaiter>>,
}

/// One replica's offsets and replication state, for metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionGauges {
    pub is_leader: bool,
    pub log_start_offset: u64,
    pub log_end_offset: u64,
    pub high_watermark: u64,
    /// Members of the in-sync replica set in the metadata this replica applied.
    pub isr_size: u64,
    /// Assigned replicas (the replication factor).
    pub replicas: u64,
}

pub struct Partition {
    pub pid: PartitionId,
    pub topic: String,
    ctx: Arc<Ctx>,
    state: Mutex<State>,
    write_lock: tokio::sync::Mutex<()>,
    /// Durable log end; follower fetches long-poll on it.
    leo_tx: watch::Sender<u64>,
    /// High watermark; consumer fetches long-poll on it.
    hw_tx: watch::Sender<u64>,
    /// Bumped on every role change; wakes the fetcher.
    role_tx: watch::Sender<u64>,
    appends: mpsc::Sender<Append>,
    cancel: CancellationToken,
}

impl Partition {
    /// Recovers the replica from disk and starts its appender and fetcher.
    pub async fn open(ctx: Arc<Ctx>, pid: PartitionId, topic: String) -> Result<Arc<Partition>, StoreError> {
        let db = ctx.store.db().clone();
        let r = crate::rt::spawn_blocking(move || log::recover(&db, pid))
            .await
            .map_err(|source| StoreError::Task { task: "recovery", source })??;
        ctx.store.write(vec![log::put_replica_marker(pid, &topic)], false).await?;
        tracing::info!(topic = %topic, partition = %pid, log_start = r.log_start, leo = r.leo, hw = r.high_watermark, epochs = ?r.epochs, "partition replica recovered");
        let (tx, rx) = mpsc::channel(APPEND_QUEUE_DEPTH);
        let p = Arc::new(Partition {
            pid,
            topic,
            cancel: ctx.cancel.child_token(),
            state: Mutex::new(State {
                meta: PartitionMeta::default(),
                config: TopicConfig::default(),
                role: Role::Offline,
                log_start: r.log_start,
                start_position: r.start_position,
                leo: r.leo,
                high_watermark: r.high_watermark,
                hw_checkpointed: r.high_watermark,
                hw_checkpoint_ms: 0,
                end_position: r.end_position,
                last_timestamp_ms: r.last_timestamp_ms,
                epochs: r.epochs,
                producers: r.producers,
                acks_waiters: BTreeMap::new(),
            }),
            write_lock: tokio::sync::Mutex::new(()),
            leo_tx: watch::Sender::new(r.leo),
            hw_tx: watch::Sender::new(r.high_watermark),
            role_tx: watch::Sender::new(0),
            appends: tx,
            ctx: ctx.clone(),
        });
        ctx.tracker.spawn(p.clone().run_appender(rx));
        ctx.tracker.spawn(p.clone().run_fetcher());
        Ok(p)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("partition state lock")
    }

    fn name(&self) -> PartitionName {
        PartitionName::new(&self.topic, self.pid.partition)
    }

    /// Stops the tasks; pending acks=all requests learn the outcome is unknown.
    pub fn stop(&self) {
        self.cancel.cancel();
        let mut st = self.lock();
        fail_waiters(&mut st, || TopicError::Indeterminate(IndeterminateReason::ReplicaStopped));
    }

    /// Stops the replica and deletes everything this node keeps of it.
    pub async fn delete(&self) -> Result<(), StoreError> {
        self.stop();
        let _w = self.write_lock.lock().await;
        self.ctx.store.write(log::delete_partition(self.pid), false).await?;
        Ok(())
    }

    fn not_leader(&self, st: &State) -> TopicError {
        let reason = match st.role {
            Role::BecomingLeader => NotLeaderReason::TakingOver { leader_epoch: st.meta.leader_epoch },
            _ => NotLeaderReason::NotLeading,
        };
        TopicError::NotLeader { node: self.ctx.node_id, partition: self.name(), leader: st.meta.leader, reason }
    }

    /// What Prometheus shows of this replica (`node::metrics_export`),
    /// read under the state lock once per scrape.
    pub fn gauges(&self) -> PartitionGauges {
        let st = self.lock();
        PartitionGauges {
            is_leader: matches!(st.role, Role::Leader(_)),
            log_start_offset: st.log_start,
            log_end_offset: st.leo,
            high_watermark: st.high_watermark,
            isr_size: st.meta.isr.len() as u64,
            replicas: st.meta.replicas.len() as u64,
        }
    }

    pub fn status(&self) -> PartitionStatus {
        let st = self.lock();
        PartitionStatus {
            partition: self.pid.partition,
            role: match st.role {
                Role::Leader(_) => "leader",
                Role::BecomingLeader => "becoming-leader",
                Role::Follower { .. } => "follower",
                Role::Offline => "none",
            }
            .into(),
            leader_epoch: st.meta.leader_epoch,
            high_watermark: st.high_watermark,
            log_end_offset: st.leo,
            log_start_offset: st.log_start,
        }
    }
}

#[cfg(test)]
mod tests;

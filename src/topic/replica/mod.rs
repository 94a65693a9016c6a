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
//!   in (see [`ack_state`]).
//! * **Follower.** A fetcher task pulls from the leader, appends what it
//!   gets with one fsync per response, truncates where the leader says its
//!   log diverges (leader epochs, never the high watermark), and restarts
//!   its log at the leader's log start when it fell behind retention.
//! * Every log mutation (appends, truncation, retention) holds the
//!   partition's write lock, so offsets are assigned against a stable log
//!   end; the in-memory state is a `std` mutex never held across `.await`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prost::Message;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::epochs::{divergence, truncation_offset, EpochCache};
use super::isr::{Effect, IsrSettings, LeaderCore};
use super::log::{self, PartitionId};
use super::producer_state::{Check, ProducerEntry, MAX_PRODUCERS_PER_PARTITION};
use super::{Ctx, TopicError, HW_CHECKPOINT_INTERVAL_MS, META_PROPOSAL_TIMEOUT_MS};
use crate::clock::{wall_clock_ms, NodeId};
use crate::levels::linear::Caller;
use crate::proto::peer::{PartitionStatus, ReplicaFetchError, ReplicaFetchRequest, ReplicaFetchResponse, StoredRecord};
use crate::proto::rsm::{topic_op, AlterPartition, PartitionMeta, TopicConfig, TopicErrorCode, TopicOp};
use crate::proto::{Acks, ConsumerRecord, ProducerRecord};
use crate::store::{StoreError, WriteOp};

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

struct Append {
    epoch: u64,
    producer_id: u64,
    base_sequence: u64,
    records: Vec<ProducerRecord>,
    reply: oneshot::Sender<Result<Appended, TopicError>>,
}

/// What a consumer fetch returns.
#[derive(Clone, Debug, Default)]
pub struct ConsumerFetch {
    pub records: Vec<ConsumerRecord>,
    pub high_watermark: u64,
    pub log_start_offset: u64,
    pub log_end_offset: u64,
    pub next_offset: u64,
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

fn isr_settings(config: &TopicConfig, ctx: &Ctx) -> IsrSettings {
    IsrSettings {
        lag_time_max_ms: match config.replica_lag_time_max_ms {
            0 => ctx.settings.replica_lag_time_max_ms,
            ms => ms,
        },
        min_insync_replicas: config.min_insync_replicas.max(1) as usize,
    }
}

pub fn fetch_error(error: ReplicaFetchError, message: String) -> ReplicaFetchResponse {
    ReplicaFetchResponse { error: error as i32, message, ..Default::default() }
}

impl Partition {
    /// Recovers the replica from disk and starts its appender and fetcher.
    pub async fn open(ctx: Arc<Ctx>, pid: PartitionId, topic: String) -> Result<Arc<Partition>, StoreError> {
        let db = ctx.store.db().clone();
        let r = tokio::task::spawn_blocking(move || log::recover(&db, pid))
            .await
            .map_err(|e| StoreError::Io(format!("recovery task: {e}")))??;
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

    fn name(&self) -> String {
        format!("{}/{}", self.topic, self.pid.partition)
    }

    /// Stops the tasks; pending acks=all requests learn the outcome is unknown.
    pub fn stop(&self) {
        self.cancel.cancel();
        let mut st = self.lock();
        fail_waiters(&mut st, || TopicError::Indeterminate("the partition replica stopped".into()));
    }

    /// Stops the replica and deletes everything this node keeps of it.
    pub async fn delete(&self) -> Result<(), StoreError> {
        self.stop();
        let _w = self.write_lock.lock().await;
        self.ctx.store.write(log::delete_partition(self.pid), false).await?;
        Ok(())
    }

    fn not_leader(&self, st: &State) -> TopicError {
        let why = match st.role {
            Role::BecomingLeader => format!(
                "node {} is taking over leadership of {} (epoch {}); retry",
                self.ctx.node_id,
                self.name(),
                st.meta.leader_epoch
            ),
            _ if st.meta.leader == 0 => format!("{} has no leader now; retry later", self.name()),
            _ => format!("node {} does not lead {}; node {} does", self.ctx.node_id, self.name(), st.meta.leader),
        };
        TopicError::NotLeader { message: why, leader: st.meta.leader }
    }

    /// Applies the partition's metadata as this node applied it. Stale
    /// (lower partition epoch) metadata is ignored.
    pub async fn update_meta(self: &Arc<Self>, meta: PartitionMeta, config: TopicConfig) -> Result<(), StoreError> {
        let become_leader = {
            let mut st = self.lock();
            if meta.partition_epoch <= st.meta.partition_epoch {
                // Already applied, unless taking over failed half-way (a
                // storage error): then try again.
                matches!(st.role, Role::BecomingLeader) && st.meta == meta
            } else {
                self.apply_new_meta(&mut st, meta.clone(), config)
            }
        };
        if become_leader {
            self.become_leader(meta.leader_epoch).await?;
        }
        Ok(())
    }

    /// Applies metadata with a newer partition epoch; returns whether this
    /// node must now take over leadership.
    fn apply_new_meta(self: &Arc<Self>, st: &mut State, meta: PartitionMeta, config: TopicConfig) -> bool {
        let me = self.ctx.node_id;
        let same_epoch = meta.leader_epoch == st.meta.leader_epoch;
        if same_epoch {
            let proposals = self.note_meta(st, meta, config);
            self.spawn_proposals(proposals);
            false
        } else {
            let old_epoch = st.meta.leader_epoch;
            st.meta = meta.clone();
            st.config = config;
            fail_waiters(st, || {
                TopicError::Indeterminate(
                    "leadership moved before the records committed; they may or may not survive".into(),
                )
            });
            let become_leader = meta.leader == me;
            st.role = if become_leader {
                Role::BecomingLeader
            } else if meta.leader != 0 {
                Role::Follower { leader: meta.leader, epoch: meta.leader_epoch }
            } else {
                Role::Offline
            };
            self.role_tx.send_modify(|g| *g += 1);
            tracing::info!(
                partition = %self.name(),
                leader = meta.leader,
                epoch = meta.leader_epoch,
                old_epoch,
                isr = ?meta.isr,
                "partition leadership changed"
            );
            become_leader
        }
    }

    /// Metadata of the current leader epoch (an ISR change): feeds the core.
    fn note_meta(&self, st: &mut State, meta: PartitionMeta, config: TopicConfig) -> Vec<AlterPartition> {
        let settings = isr_settings(&config, &self.ctx);
        let (pe, isr) = (meta.partition_epoch, meta.isr.clone());
        st.meta = meta;
        st.config = config;
        let fx = match &mut st.role {
            Role::Leader(core) => core.on_metadata(pe, &isr, settings),
            _ => Vec::new(),
        };
        if !fx.is_empty() || matches!(st.role, Role::Leader(_)) {
            tracing::info!(partition = %self.name(), isr = ?isr, partition_epoch = pe, "ISR changed");
        }
        self.on_effects(st, fx)
    }

    async fn become_leader(&self, epoch: u64) -> Result<(), StoreError> {
        let _w = self.write_lock.lock().await;
        let ops = {
            let mut st = self.lock();
            if !matches!(st.role, Role::BecomingLeader) || st.meta.leader_epoch != epoch {
                return Ok(());
            }
            let leo = st.leo;
            // Records of this epoch start at our log end (KIP-101).
            if st.epochs.assign(epoch, leo) {
                vec![log::put_epoch(self.pid, epoch, leo)]
            } else {
                Vec::new()
            }
        };
        if !ops.is_empty() {
            self.ctx.store.write(ops, true).await?;
        }
        let now = self.ctx.now_ms();
        let mut st = self.lock();
        if !matches!(st.role, Role::BecomingLeader) || st.meta.leader_epoch != epoch {
            return Ok(());
        }
        let settings = isr_settings(&st.config, &self.ctx);
        let core = LeaderCore::new(
            now,
            self.ctx.node_id,
            epoch,
            st.meta.partition_epoch,
            &st.meta.replicas,
            &st.meta.isr,
            st.leo,
            st.high_watermark,
            settings,
        );
        let hw = core.high_watermark();
        st.role = Role::Leader(Box::new(core));
        if hw > st.high_watermark {
            st.high_watermark = hw;
            self.hw_tx.send_replace(hw);
        }
        self.role_tx.send_modify(|g| *g += 1);
        tracing::info!(partition = %self.name(), epoch, leo = st.leo, hw = st.high_watermark, isr = ?st.meta.isr, "leading the partition");
        Ok(())
    }

    /// Applies core effects; returns the ISR changes to propose.
    fn on_effects(&self, st: &mut State, fx: Vec<Effect>) -> Vec<AlterPartition> {
        let mut out = Vec::new();
        for e in fx {
            match e {
                Effect::HighWatermark(hw) => {
                    assert!(hw <= st.leo, "high watermark {hw} beyond log end {}", st.leo);
                    if hw <= st.high_watermark {
                        continue;
                    }
                    st.high_watermark = hw;
                    self.hw_tx.send_replace(hw);
                    let enough = matches!(&st.role, Role::Leader(c) if c.committed_isr_satisfies_min());
                    let isr = st.meta.isr.clone();
                    let min = st.config.min_insync_replicas;
                    let later = st.acks_waiters.split_off(&(hw + 1));
                    for (_, ws) in std::mem::replace(&mut st.acks_waiters, later) {
                        for w in ws {
                            let _ = w.send(if enough {
                                Ok(())
                            } else {
                                Err(TopicError::NotEnoughReplicasAfterAppend(format!(
                                    "the records of {} committed with the ISR {isr:?} below min.insync.replicas {min}; \
                                     they are on fewer replicas than required",
                                    self.name()
                                )))
                            });
                        }
                    }
                }
                Effect::ProposeIsr { partition_epoch, leader_epoch, isr } => out.push(AlterPartition {
                    topic_id: self.pid.topic_id,
                    partition: self.pid.partition,
                    expected_partition_epoch: partition_epoch,
                    expected_leader_epoch: leader_epoch,
                    leader: self.ctx.node_id,
                    isr,
                    requested_by: self.ctx.node_id,
                }),
            }
        }
        out
    }

    /// Proposes ISR changes to the controller (the linearizable store).
    fn spawn_proposals(self: &Arc<Self>, proposals: Vec<AlterPartition>) {
        for a in proposals {
            let me = self.clone();
            self.ctx.tracker.spawn(async move {
                tracing::info!(partition = %me.name(), isr = ?a.isr, epoch = a.expected_partition_epoch, "proposing an ISR change");
                let op = TopicOp { op: Some(topic_op::Op::Alter(a)) };
                let timeout = Duration::from_millis(META_PROPOSAL_TIMEOUT_MS);
                match me.ctx.linear.topic(Caller::default(), op, timeout).await {
                    Ok(r) if r.code == TopicErrorCode::TopicOk as i32 => {
                        // Fast path; the reconcile loop would get there too.
                        let t = r.topic.unwrap_or_default();
                        if let Some(pm) = t.partitions.get(me.pid.partition as usize) {
                            let proposals = {
                                let mut st = me.lock();
                                if pm.partition_epoch > st.meta.partition_epoch
                                    && pm.leader_epoch == st.meta.leader_epoch
                                {
                                    me.note_meta(&mut st, pm.clone(), t.config.unwrap_or_default())
                                } else {
                                    Vec::new()
                                }
                            };
                            me.spawn_proposals(proposals);
                        }
                    }
                    Ok(r) => {
                        tracing::info!(partition = %me.name(), why = %r.message, "ISR change refused");
                        me.rejected();
                    }
                    Err(e) => {
                        tracing::warn!(partition = %me.name(), error = %e, "ISR change not proposed");
                        me.rejected();
                    }
                }
            });
        }
    }

    fn rejected(&self) {
        if let Role::Leader(core) = &mut self.lock().role {
            core.on_rejected();
        }
    }

    /// Produces records (the caller routed to this node as the leader).
    pub async fn produce(
        &self,
        acks: Acks,
        producer_id: u64,
        base_sequence: u64,
        records: Vec<ProducerRecord>,
        timeout: Duration,
    ) -> Result<Appended, TopicError> {
        let deadline = Instant::now() + timeout;
        let count = records.len() as u64;
        let epoch = {
            let st = self.lock();
            match &st.role {
                Role::Leader(core) => {
                    if acks == Acks::All {
                        if let Err((have, need)) = core.check_acks_all(self.ctx.now_ms()) {
                            return Err(TopicError::NotEnoughReplicas(format!(
                                "not enough in-sync replicas for {}: {have} of the ISR {:?} in sync, \
                                 min.insync.replicas is {need}; nothing was written (acks=1 would be accepted)",
                                self.name(),
                                core.isr()
                            )));
                        }
                    }
                    core.leader_epoch()
                }
                _ => return Err(self.not_leader(&st)),
            }
        };
        let (tx, rx) = oneshot::channel();
        let append = Append { epoch, producer_id, base_sequence, records, reply: tx };
        match tokio::time::timeout_at(deadline, self.appends.send(append)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                return Err(TopicError::Unavailable("the partition replica stopped; nothing was written".into()))
            }
            Err(_) => {
                return Err(TopicError::Unavailable(format!(
                    "the append queue of {} stayed full for {} ms; nothing was written",
                    self.name(),
                    timeout.as_millis()
                )))
            }
        }
        if acks == Acks::None {
            return Ok(Appended { base_offset: None, count, duplicate: false });
        }
        let appended = match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => {
                return Err(TopicError::Indeterminate(
                    "the append was abandoned (the replica stopped); the records may or may not be written".into(),
                ))
            }
            Err(_) => {
                return Err(TopicError::Indeterminate(format!(
                    "the append did not finish within {} ms; the records may or may not be written",
                    timeout.as_millis()
                )))
            }
        };
        let wait = {
            let mut st = self.lock();
            let end = match appended.base_offset {
                Some(b) => b + count,
                None => st.leo,
            };
            match ack_state(&st, &self.name(), acks, epoch, end)? {
                AckState::Ack => return Ok(appended),
                AckState::WaitFor(end) => {
                    let (tx, rx) = oneshot::channel();
                    st.acks_waiters.entry(end).or_default().push(tx);
                    rx
                }
            }
        };
        match tokio::time::timeout_at(deadline, wait).await {
            Ok(Ok(Ok(()))) => Ok(appended),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => {
                Err(TopicError::Indeterminate("the partition replica stopped before the records committed".into()))
            }
            Err(_) => Err(TopicError::Indeterminate(format!(
                "the records were appended to {} but did not reach every in-sync replica within {} ms; \
                 they may still commit",
                self.name(),
                timeout.as_millis()
            ))),
        }
    }

    async fn run_appender(self: Arc<Self>, mut rx: mpsc::Receiver<Append>) {
        loop {
            let first = tokio::select! {
                _ = self.cancel.cancelled() => break,
                a = rx.recv() => match a { Some(a) => a, None => break },
            };
            let mut bytes: usize = first.records.iter().map(|r| r.key.len() + r.value.len()).sum();
            let mut batch = vec![first];
            while bytes < MAX_APPEND_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(a) => {
                        bytes += a.records.iter().map(|r| r.key.len() + r.value.len()).sum::<usize>();
                        batch.push(a);
                    }
                    Err(_) => break,
                }
            }
            if let Err(e) = self.append_batch(batch).await {
                tracing::error!(partition = %self.name(), error = %e, "append failed");
            }
        }
    }

    /// Appends the batch with one fsync; answers every request.
    async fn append_batch(&self, batch: Vec<Append>) -> Result<(), StoreError> {
        let _w = self.write_lock.lock().await;
        let now_wall = wall_clock_ms();
        let mut ops = Vec::new();
        let mut replies: Vec<(oneshot::Sender<Result<Appended, TopicError>>, Appended)> = Vec::new();
        let mut touched: HashMap<u64, ProducerEntry> = HashMap::new();
        let (epoch, next, position, ts) = {
            let st = self.lock();
            let epoch = match &st.role {
                Role::Leader(core) => core.leader_epoch(),
                _ => {
                    for a in batch {
                        let _ = a.reply.send(Err(self.not_leader(&st)));
                    }
                    return Ok(());
                }
            };
            let mut next = st.leo;
            let mut position = st.end_position;
            let ts = st.last_timestamp_ms.max(now_wall);
            for a in batch {
                if a.epoch != epoch || a.records.is_empty() {
                    let _ = a.reply.send(Err(self.not_leader(&st)));
                    continue;
                }
                let count = a.records.len() as u64;
                let mut entry = if a.producer_id != 0 {
                    let e = touched
                        .get(&a.producer_id)
                        .or_else(|| st.producers.get(&a.producer_id))
                        .cloned()
                        .unwrap_or_default();
                    match e.check(a.base_sequence, count) {
                        Check::Append => Some(e),
                        Check::Duplicate(at) => {
                            // Answered after the write: the original may be in this batch.
                            replies.push((a.reply, Appended { base_offset: at, count, duplicate: true }));
                            continue;
                        }
                        Check::OutOfOrder { expected } => {
                            let _ = a.reply.send(Err(TopicError::OutOfOrderSequence {
                                message: format!(
                                    "producer {:x} sent sequence {} to {} but {expected} is expected next; nothing was written",
                                    a.producer_id,
                                    a.base_sequence,
                                    self.name()
                                ),
                                expected,
                            }));
                            continue;
                        }
                    }
                } else {
                    None
                };
                let base = next;
                for (i, r) in a.records.into_iter().enumerate() {
                    let sequence = if a.producer_id != 0 { a.base_sequence + i as u64 } else { 0 };
                    let len = (r.key.len() + r.value.len()) as u64;
                    let rec = StoredRecord {
                        leader_epoch: epoch,
                        timestamp_ms: ts,
                        position,
                        producer_id: a.producer_id,
                        sequence,
                        key: r.key,
                        value: r.value,
                    };
                    ops.push(log::put_record(self.pid, next, rec.encode_to_vec()));
                    if let Some(e) = &mut entry {
                        e.record(sequence, next, ts);
                    }
                    position += len;
                    next += 1;
                }
                if let Some(e) = entry {
                    touched.insert(a.producer_id, e);
                }
                replies.push((a.reply, Appended { base_offset: Some(base), count, duplicate: false }));
            }
            for (id, e) in &touched {
                ops.push(log::put_producer(self.pid, *id, e));
            }
            ops.extend(evictions(&st, &touched).into_iter().map(|id| log::delete_producer(self.pid, id)));
            (epoch, next, position, ts)
        };
        if ops.is_empty() {
            for (r, a) in replies {
                let _ = r.send(Ok(a));
            }
            return Ok(());
        }
        if let Err(e) = self.ctx.store.write(ops, true).await {
            for (r, _) in replies {
                let _ = r.send(Err(TopicError::Store(StoreError::Io(format!("append failed: {e}")))));
            }
            return Err(e);
        }
        let proposals = {
            let mut st = self.lock();
            st.leo = next;
            st.end_position = position;
            st.last_timestamp_ms = ts;
            let evicted = evictions(&st, &touched);
            for id in evicted {
                st.producers.remove(&id);
            }
            st.producers.extend(touched);
            self.leo_tx.send_replace(next);
            let fx = match &mut st.role {
                Role::Leader(core) if core.leader_epoch() == epoch => core.appended(next),
                _ => Vec::new(),
            };
            self.on_effects(&mut st, fx)
        };
        debug_assert!(proposals.is_empty(), "appends only move the high watermark");
        for (r, a) in replies {
            let _ = r.send(Ok(a));
        }
        Ok(())
    }

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
                return Err(TopicError::OffsetOutOfRange {
                    message: format!("offset {offset} is beyond the log end {leo} of {}", self.name()),
                    log_start,
                    log_end: leo,
                });
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
                return Err(TopicError::Unavailable("the partition replica stopped".into()));
            }
        }
    }

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

    /// The follower side: pull from the leader while following.
    async fn run_fetcher(self: Arc<Self>) {
        let mut role_rx = self.role_tx.subscribe();
        let mut backoff_ms = FETCH_BACKOFF_MIN_MS;
        let mut prepared_epoch = 0;
        let me = self.ctx.node_id;
        loop {
            role_rx.borrow_and_update();
            let target = match self.lock().role {
                Role::Follower { leader, epoch } => Some((leader, epoch)),
                _ => None,
            };
            let Some((leader, epoch)) = target else {
                tokio::select! {
                    _ = self.cancel.cancelled() => break,
                    _ = role_rx.changed() => {}
                }
                continue;
            };
            if prepared_epoch != epoch {
                match self.prepare_follower(epoch).await {
                    Ok(()) => prepared_epoch = epoch,
                    Err(e) => tracing::error!(partition = %self.name(), error = %e, "cannot start following"),
                }
            }
            let req = {
                let st = self.lock();
                ReplicaFetchRequest {
                    from_node: me,
                    topic_id: self.pid.topic_id,
                    partition: self.pid.partition,
                    leader_epoch: epoch,
                    fetch_offset: st.leo,
                    last_fetched_epoch: st.epochs.latest_epoch(),
                    max_bytes: REPLICA_FETCH_MAX_BYTES,
                    max_wait_ms: REPLICA_FETCH_WAIT_MS,
                }
            };
            let fetch_offset = req.fetch_offset;
            let rpc_timeout = REPLICA_FETCH_WAIT_MS as u64 + FETCH_RPC_SLACK_MS;
            let resp = tokio::select! {
                _ = self.cancel.cancelled() => break,
                _ = role_rx.changed() => continue,
                r = self.ctx.peers.replica_fetch(leader, req, rpc_timeout) => r,
            };
            let progressed = match resp {
                Err(s) => {
                    tracing::debug!(partition = %self.name(), leader, error = %s.message(), "fetch from the leader failed");
                    false
                }
                Ok(r) => {
                    let outcome = match ReplicaFetchError::try_from(r.error) {
                        Ok(ReplicaFetchError::FetchOk) => {
                            self.follower_append(epoch, fetch_offset, r).await.map(|_| true)
                        }
                        Ok(ReplicaFetchError::Diverging) => self
                            .follower_truncate(epoch, fetch_offset, r.diverging_epoch, r.diverging_end_offset)
                            .await
                            .map(|_| true),
                        Ok(ReplicaFetchError::OffsetOutOfRange) => {
                            self.follower_reset(epoch, fetch_offset, r.log_start_offset).await.map(|_| true)
                        }
                        _ => {
                            tracing::debug!(partition = %self.name(), leader, why = %r.message, "fetch refused");
                            Ok(false)
                        }
                    };
                    outcome.unwrap_or_else(|e| {
                        tracing::error!(partition = %self.name(), error = %e, "follower write failed");
                        false
                    })
                }
            };
            if progressed {
                backoff_ms = FETCH_BACKOFF_MIN_MS;
            } else {
                tokio::select! {
                    _ = self.cancel.cancelled() => break,
                    _ = role_rx.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(backoff_ms)) => {}
                }
                backoff_ms = (backoff_ms * 2).min(FETCH_BACKOFF_MAX_MS);
            }
        }
    }

    fn follows_at(st: &State, epoch: u64) -> bool {
        matches!(st.role, Role::Follower { epoch: e, .. } if e == epoch)
    }

    /// Entering a follower epoch: drop epochs this node led without writing
    /// (they describe no record and would confuse the divergence check).
    async fn prepare_follower(&self, epoch: u64) -> Result<(), StoreError> {
        let _w = self.write_lock.lock().await;
        let (removed, epochs) = {
            let st = self.lock();
            if !Self::follows_at(&st, epoch) {
                return Ok(());
            }
            let mut epochs = st.epochs.clone();
            (epochs.truncate_from(st.leo), epochs)
        };
        if removed.is_empty() {
            return Ok(());
        }
        let ops = removed.iter().map(|&e| log::delete_epoch(self.pid, e)).collect();
        self.ctx.store.write(ops, true).await?;
        let mut st = self.lock();
        if Self::follows_at(&st, epoch) {
            st.epochs = epochs;
        }
        Ok(())
    }

    /// Appends a fetch response's records with one fsync.
    async fn follower_append(&self, epoch: u64, fetch_offset: u64, r: ReplicaFetchResponse) -> Result<(), StoreError> {
        let _w = self.write_lock.lock().await;
        let mut ops = Vec::with_capacity(r.records.len() + 4);
        let mut touched: HashMap<u64, ProducerEntry> = HashMap::new();
        let (epochs, new_leo, end_position, last_ts, new_hw, new_start) = {
            let st = self.lock();
            if !Self::follows_at(&st, epoch) || st.leo != fetch_offset {
                return Ok(());
            }
            let mut epochs = st.epochs.clone();
            let mut end_position = st.end_position;
            let mut last_ts = st.last_timestamp_ms;
            let mut positions = Vec::with_capacity(r.records.len());
            let mut offset = fetch_offset;
            for raw in &r.records {
                let rec = log::decode_record(raw)?;
                if rec.leader_epoch > epochs.latest_epoch() && epochs.assign(rec.leader_epoch, offset) {
                    ops.push(log::put_epoch(self.pid, rec.leader_epoch, offset));
                }
                if rec.producer_id != 0 {
                    touched
                        .entry(rec.producer_id)
                        .or_insert_with(|| st.producers.get(&rec.producer_id).cloned().unwrap_or_default())
                        .record(rec.sequence, offset, rec.timestamp_ms);
                }
                positions.push(rec.position);
                end_position = rec.position + log::payload_len(&rec);
                last_ts = rec.timestamp_ms;
                ops.push(log::put_record(self.pid, offset, raw.to_vec()));
                offset += 1;
            }
            let new_leo = offset;
            for (id, e) in &touched {
                ops.push(log::put_producer(self.pid, *id, e));
            }
            ops.extend(evictions(&st, &touched).into_iter().map(|id| log::delete_producer(self.pid, id)));
            let new_hw = st.high_watermark.max(r.high_watermark.min(new_leo));
            if !ops.is_empty() && new_hw != st.hw_checkpointed {
                ops.push(log::put_high_watermark(self.pid, new_hw));
            }
            // The leader's retention moved its log start: follow it.
            let new_start = if r.log_start_offset > st.log_start {
                let s = r.log_start_offset.min(new_leo);
                let position = if s >= new_leo {
                    end_position
                } else if s >= fetch_offset {
                    positions[(s - fetch_offset) as usize]
                } else {
                    log::read_record(self.ctx.store.db(), self.pid, s)?.map_or(st.start_position, |rec| rec.position)
                };
                ops.push(log::delete_below(self.pid, s));
                ops.push(log::put_log_start(self.pid, s, position));
                for e in epochs.truncate_before(s) {
                    ops.push(log::delete_epoch(self.pid, e));
                }
                if let Some(&(e, start)) = epochs.entries().first() {
                    ops.push(log::put_epoch(self.pid, e, start));
                }
                Some((s, position))
            } else {
                None
            };
            (epochs, new_leo, end_position, last_ts, new_hw, new_start)
        };
        let wrote = !ops.is_empty();
        if wrote {
            self.ctx.store.write(ops, true).await?;
        }
        let mut st = self.lock();
        st.leo = new_leo;
        st.epochs = epochs;
        st.end_position = end_position;
        st.last_timestamp_ms = last_ts;
        for id in evictions(&st, &touched) {
            st.producers.remove(&id);
        }
        st.producers.extend(touched);
        if new_hw > st.high_watermark {
            st.high_watermark = new_hw;
            self.hw_tx.send_replace(new_hw);
        }
        if wrote {
            st.hw_checkpointed = new_hw;
        }
        if let Some((s, position)) = new_start {
            st.log_start = s;
            st.start_position = position;
        }
        self.leo_tx.send_replace(new_leo);
        Ok(())
    }

    /// Truncates where the leader says this log diverges (KIP-279).
    async fn follower_truncate(
        &self,
        epoch: u64,
        fetch_offset: u64,
        leader_epoch: u64,
        leader_end: u64,
    ) -> Result<(), StoreError> {
        let _w = self.write_lock.lock().await;
        let (to, plan) = {
            let st = self.lock();
            if !Self::follows_at(&st, epoch) || st.leo != fetch_offset {
                return Ok(());
            }
            let to = truncation_offset(&st.epochs, st.leo, leader_epoch, leader_end);
            if to < st.log_start {
                (to, None)
            } else {
                (to, Some(Self::truncation_plan(&st, to)))
            }
        };
        let Some((epochs, removed, affected, log_start, old_hw)) = plan else {
            return self.reset_locked(to).await;
        };
        let mut ops = vec![log::delete_from(self.pid, to)];
        ops.extend(removed.iter().map(|&e| log::delete_epoch(self.pid, e)));
        let db = self.ctx.store.db().clone();
        let pid = self.pid;
        let rebuilt = if affected.is_empty() {
            HashMap::new()
        } else {
            tokio::task::spawn_blocking(move || {
                log::rebuild_producers(&db, pid, log_start, to, &affected, PRODUCER_REBUILD_SCAN_RECORDS)
            })
            .await
            .map_err(|e| StoreError::Io(format!("rebuild task: {e}")))??
        };
        for (id, e) in &rebuilt {
            ops.push(match e {
                Some(e) => log::put_producer(self.pid, *id, e),
                None => log::delete_producer(self.pid, *id),
            });
        }
        let last = if to > log_start { log::read_record(self.ctx.store.db(), self.pid, to - 1)? } else { None };
        let new_hw = old_hw.min(to);
        if new_hw < old_hw {
            // Only an unclean election can take committed records away.
            tracing::warn!(partition = %self.name(), hw = old_hw, to, "truncating below the high watermark (unclean leader election)");
            ops.push(log::put_high_watermark(self.pid, new_hw));
        }
        self.ctx.store.write(ops, true).await?;
        let mut st = self.lock();
        let from = st.leo;
        st.leo = to;
        st.epochs = epochs;
        match last {
            Some(rec) => {
                st.end_position = rec.position + log::payload_len(&rec);
                st.last_timestamp_ms = rec.timestamp_ms;
            }
            None => st.end_position = st.start_position,
        }
        for (id, e) in rebuilt {
            match e {
                Some(e) => st.producers.insert(id, e),
                None => st.producers.remove(&id),
            };
        }
        if new_hw < st.high_watermark {
            st.high_watermark = new_hw;
            st.hw_checkpointed = new_hw;
            self.hw_tx.send_replace(new_hw);
        }
        self.leo_tx.send_replace(to);
        tracing::warn!(partition = %self.name(), from, to, leader_epoch, "truncated to where the leader's log diverges");
        Ok(())
    }

    /// (epochs after, epochs removed, producers to rebuild, log start, hw)
    /// for truncating the log to end at `to`.
    fn truncation_plan(st: &State, to: u64) -> (EpochCache, Vec<u64>, Vec<u64>, u64, u64) {
        let mut epochs = st.epochs.clone();
        let removed = epochs.truncate_from(to);
        let affected: Vec<u64> = st
            .producers
            .iter()
            .filter(|(_, e)| e.runs.back().is_some_and(|r| r.first_offset + r.count > to))
            .map(|(&id, _)| id)
            .collect();
        (epochs, removed, affected, st.log_start, st.high_watermark)
    }

    /// The leader's log starts above our log end: restart empty there.
    async fn follower_reset(&self, epoch: u64, fetch_offset: u64, leader_log_start: u64) -> Result<(), StoreError> {
        let _w = self.write_lock.lock().await;
        {
            let st = self.lock();
            if !Self::follows_at(&st, epoch) || st.leo != fetch_offset || leader_log_start <= fetch_offset {
                return Ok(());
            }
        }
        self.reset_locked(leader_log_start).await
    }

    /// Empties the log and restarts it at `offset` (write lock held).
    async fn reset_locked(&self, offset: u64) -> Result<(), StoreError> {
        let mut ops = vec![log::delete_from(self.pid, 0)];
        {
            let st = self.lock();
            ops.extend(st.epochs.entries().iter().map(|&(e, _)| log::delete_epoch(self.pid, e)));
            ops.extend(st.producers.keys().map(|&id| log::delete_producer(self.pid, id)));
        }
        ops.push(log::put_log_start(self.pid, offset, 0));
        ops.push(log::put_high_watermark(self.pid, offset));
        self.ctx.store.write(ops, true).await?;
        let mut st = self.lock();
        tracing::warn!(partition = %self.name(), from = st.leo, to = offset, "log restarted at the leader's log start");
        st.log_start = offset;
        st.start_position = 0;
        st.leo = offset;
        st.end_position = 0;
        st.epochs.clear();
        st.producers.clear();
        st.high_watermark = offset;
        st.hw_checkpointed = offset;
        self.hw_tx.send_replace(offset);
        self.leo_tx.send_replace(offset);
        Ok(())
    }

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

    /// Deletes records older than retention.ms or beyond retention.bytes,
    /// never at or above the high watermark.
    async fn enforce_retention(&self) -> Result<(), StoreError> {
        let (retention_ms, retention_bytes, log_start, hw, end_position) = {
            let st = self.lock();
            (st.config.retention_ms, st.config.retention_bytes, st.log_start, st.high_watermark, st.end_position)
        };
        if (retention_ms == 0 && retention_bytes == 0) || hw <= log_start {
            return Ok(());
        }
        let db = self.ctx.store.db().clone();
        let pid = self.pid;
        let cut = tokio::task::spawn_blocking(move || -> Result<u64, StoreError> {
            // Timestamps and positions never decrease along the log, so both
            // cuts are binary searches with point reads.
            let mut cut = log_start;
            if retention_ms > 0 {
                let oldest_kept = wall_clock_ms() - retention_ms as i64;
                cut = cut.max(first_where(&db, pid, log_start, hw, |r| r.timestamp_ms >= oldest_kept)?);
            }
            if retention_bytes > 0 {
                let floor = end_position.saturating_sub(retention_bytes);
                cut = cut.max(first_where(&db, pid, log_start, hw, |r| r.position >= floor)?);
            }
            Ok(cut.min(hw))
        })
        .await
        .map_err(|e| StoreError::Io(format!("retention task: {e}")))??;
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

/// What a produce request is owed once its records are appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AckState {
    /// Acknowledge now.
    Ack,
    /// acks=all: wait until the high watermark reaches this offset.
    WaitFor(u64),
}

/// The answer owed to an acks=1 or acks=all request of partition `name`
/// whose records were appended in leader epoch `epoch` and end at `end`.
///
/// Only the leader of `epoch` may acknowledge them (Kafka answers
/// NOT_LEADER_OR_FOLLOWER otherwise). A node that stopped leading it may
/// have truncated them and fetched the new leader's records at the same
/// offsets, so its high watermark passing `end` says nothing about them;
/// they may or may not have reached the new leader, hence an indeterminate
/// answer, which the idempotent producer retries with the same sequence
/// numbers. While this node leads `epoch` its log still holds them: a
/// leader never truncates its own epoch.
fn ack_state(st: &State, name: &str, acks: Acks, epoch: u64, end: u64) -> Result<AckState, TopicError> {
    let core = match &st.role {
        Role::Leader(core) if core.leader_epoch() == epoch => core,
        _ => {
            return Err(TopicError::Indeterminate(format!(
                "this node no longer leads {name} in leader epoch {epoch}, where the records were appended \
                 (the partition is at epoch {}); they may or may not survive",
                st.meta.leader_epoch
            )))
        }
    };
    assert!(end <= st.leo, "records of {name} up to {end} acknowledged beyond the leader's log end {}", st.leo);
    if acks == Acks::Leader {
        return Ok(AckState::Ack);
    }
    if st.high_watermark < end {
        return Ok(AckState::WaitFor(end));
    }
    if !core.committed_isr_satisfies_min() {
        return Err(TopicError::NotEnoughReplicasAfterAppend(format!(
            "the records of {name} are committed but the ISR {:?} is below min.insync.replicas {}",
            core.isr(),
            st.config.min_insync_replicas
        )));
    }
    Ok(AckState::Ack)
}

fn fail_waiters(st: &mut State, err: impl Fn() -> TopicError) {
    for (_, ws) in std::mem::take(&mut st.acks_waiters) {
        for w in ws {
            let _ = w.send(Err(err()));
        }
    }
}

/// Producers to forget so that at most [`MAX_PRODUCERS_PER_PARTITION`]
/// remain after `touched` is added: the least recently active.
fn evictions(st: &State, touched: &HashMap<u64, ProducerEntry>) -> Vec<u64> {
    let new = touched.keys().filter(|id| !st.producers.contains_key(id)).count();
    let total = st.producers.len() + new;
    if total <= MAX_PRODUCERS_PER_PARTITION {
        return Vec::new();
    }
    let mut idle: Vec<(i64, u64)> = st
        .producers
        .iter()
        .filter(|(id, _)| !touched.contains_key(id))
        .map(|(&id, e)| (e.last_timestamp_ms, id))
        .collect();
    idle.sort_unstable();
    idle.into_iter().take(total - MAX_PRODUCERS_PER_PARTITION).map(|(_, id)| id).collect()
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

#[cfg(test)]
mod tests;

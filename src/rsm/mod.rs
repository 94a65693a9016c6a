//! The node's replicated state machine (DESIGN §2, `rsm/`): one Raft group
//! of all nodes (tikv raft-rs `RawNode`) and the state machine it feeds.
//! The linearizable KV level (`levels::linear`) and topic metadata
//! (`topic`) are its clients; each brings a command family.
//!
//! * [`state_machine`]: what applying an entry does (pure, deterministic),
//!   with one file per command family ([`state_machine::kv`],
//!   [`state_machine::topic_meta`]).
//! * [`driver`]: the task that owns the `RawNode` and does its I/O.
//! * [`batcher`]: which proposals go into the next own entry, and when (pure).
//! * [`read_index`]: read-index requests in flight and the leader lease (pure).
//! * [`storage`]: `raft::Storage` over the node's RocksDB.
//! * [`transport`]: Raft messages and snapshots over the peer service.
//! * [`snapshot`]: snapshot files, generation and installation.
//! * [`logger`]: raft-rs's slog records into `tracing`.
//!
//! Any node accepts a command. It is proposed through the local Raft node
//! (raft-rs forwards a follower's proposal to the leader) and answered when
//! applied; reads wait for a read index ([`Rsm::barrier`]), then read this
//! node's state machine. A command that was not answered in time is
//! *indeterminate*; retrying it with the same (client id, request id) is
//! safe because the state machine applies each at most once.

pub mod batcher;
pub mod driver;
pub mod error;
pub mod logger;
pub mod membership;
pub mod read_index;
pub mod snapshot;
pub mod state_machine;
pub mod storage;
pub mod transport;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use raft::eraftpb::Message;
use raft::RawNode;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::levels::LevelError;
use crate::metrics::Metrics;
use crate::node::peers::Peers;
use crate::proto::rsm::{self, command::Op, reply};
use crate::store::{Store, StoreError};
pub use driver::{Applied, DbRsm, RaftRole, RaftSettings, RaftView, ReadMode};
use driver::{Channels, Driver, Proposal, ReadWaiter};
pub use error::RaftError;
use snapshot::Snapshots;
pub use state_machine::RsmRead;
use state_machine::{decode_applied, META_APPLIED};
use storage::RaftStore;

/// Queued proposals / reads / inbound messages before senders wait or drop.
pub const PROPOSAL_QUEUE: usize = 16 * 1024;
pub const READ_QUEUE: usize = 16 * 1024;
pub const INBOUND_QUEUE: usize = 16 * 1024;
/// Membership changes queued for the driver (one is proposed at a time).
pub const CONF_QUEUE: usize = 16;

/// Who is asking: the client's session identifiers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Caller {
    pub client_id: u64,
    pub request_id: u64,
    pub ack_below: u64,
}

/// The handle the rest of the node holds: proposes commands, waits for
/// read indexes, and feeds the driver what peers send.
pub struct Rsm {
    proposals: mpsc::Sender<Proposal>,
    reads: mpsc::Sender<ReadWaiter>,
    inbound: mpsc::Sender<transport::Inbound>,
    conf: mpsc::Sender<membership::ConfProposal>,
    store: Arc<Store>,
    peers: Arc<Peers>,
    view: watch::Receiver<RaftView>,
    snapshots: Arc<Snapshots>,
    /// Session id for requests that come without a client id.
    own_client_id: u64,
    own_seq: AtomicU64,
}

impl Rsm {
    /// Opens the Raft state (finishing an interrupted snapshot install) and
    /// starts the driver and transport.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        id: u32,
        store: Arc<Store>,
        peers: Arc<Peers>,
        clock: Arc<Clock>,
        metrics: Arc<Metrics>,
        settings: RaftSettings,
        seed: Option<u64>,
        cancel: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Arc<Rsm>, StoreError> {
        // Simulation (`seed`): the driver's election timeouts and this
        // node's own client id come from the seed; otherwise from the OS.
        let mut rng = match seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        let own_client_id = rng.random::<u64>() | 1;
        let election_rng = seed.map(|_| StdRng::seed_from_u64(rng.random()));
        let snapshots = Arc::new(Snapshots::open(store.dir().join("snapshots"))?);
        let configured = peers.members();
        // A fresh node founds the group of the configured members, or, when
        // it joins a running cluster, waits with no configuration until the
        // leader adds it (and sends it a snapshot).
        let voters: Vec<u64> = if settings.join { Vec::new() } else { configured.keys().map(|&i| i as u64).collect() };
        let raft_store = RaftStore::open(store.db().clone(), &voters, snapshots.clone())?;
        driver::finish_interrupted_install(&store, &raft_store).await?;
        // Members added or removed since the configuration was written.
        let records = state_machine::members::read_all(&DbRsm(store.db()))?;
        driver::sync_peers(&peers, &state_machine::members::merge_into(&configured, &records));
        let applied = DbRsm(store.db()).get(META_APPLIED)?.and_then(|b| decode_applied(&b)).map_or(0, |(i, _)| i);
        if let Some(op) = raft_store.commit_at_least(applied) {
            store.write(vec![op], true).await?;
        }
        let cfg = driver::raft_config(id, applied, &settings);
        cfg.validate().map_err(|e| StoreError::Malformed { what: "raft config", source: e.into() })?;
        let node = RawNode::new(&cfg, raft_store, &logger::raft_logger(id))
            .map_err(|e| StoreError::Malformed { what: "raft state at start", source: e.into() })?;

        let (ptx, prx) = mpsc::channel(PROPOSAL_QUEUE);
        let (rtx, rrx) = mpsc::channel(READ_QUEUE);
        let (itx, irx) = mpsc::channel(INBOUND_QUEUE);
        let (etx, erx) = mpsc::channel(1024);
        let (ctx, crx) = mpsc::channel(CONF_QUEUE);
        let (vtx, vrx) = watch::channel(RaftView::default());
        let lost_log = Arc::new(transport::LostLog::default());
        let transport = transport::Transport::start(
            peers.clone(),
            snapshots.clone(),
            etx,
            lost_log.clone(),
            cancel.clone(),
            tracker,
        );
        let driver = Driver::new(
            node,
            id,
            store.clone(),
            transport,
            settings,
            clock,
            metrics.clone(),
            vtx,
            cancel,
            applied,
            lost_log,
            election_rng,
            configured,
        );
        tracker.spawn(driver.run(Channels { proposals: prx, reads: rrx, inbound: irx, events: erx, conf: crx }));
        tracing::info!(id, applied, "replicated state machine started");
        Ok(Arc::new(Rsm {
            proposals: ptx,
            reads: rtx,
            inbound: itx,
            conf: ctx,
            store,
            peers,
            view: vrx,
            snapshots,
            own_client_id,
            own_seq: AtomicU64::new(1),
        }))
    }

    pub fn view(&self) -> RaftView {
        self.view.borrow().clone()
    }

    /// The view, to wait for its changes.
    pub fn view_changes(&self) -> watch::Receiver<RaftView> {
        self.view.clone()
    }

    /// Completes with the reason once the driver stopped on a storage
    /// failure ([`RaftView::stopped`]); never after an orderly shutdown.
    pub async fn storage_failed(&self) -> String {
        let mut view = self.view.clone();
        // The borrow of the view ends here, before any waiting below.
        let why = view.wait_for(|v| v.stopped.is_some()).await.ok().and_then(|v| v.stopped.clone());
        match why {
            Some(why) => why,
            // The driver ended without failing (shutdown).
            None => std::future::pending().await,
        }
    }

    /// The Raft leader this node knows of (`0`: none known).
    pub fn leader_id(&self) -> u64 {
        self.view.borrow().leader_id
    }

    /// Hands messages from a peer to the driver; dropped when it is
    /// overloaded (Raft retransmits).
    pub fn step(&self, msgs: Vec<Message>) {
        for m in msgs {
            if self.inbound.try_send(transport::Inbound::Message(m)).is_err() {
                break;
            }
        }
    }

    /// A peer says it lost its Raft log and holds entries up to `last_index`.
    pub fn peer_lost_log(&self, from: u32, last_index: u64) {
        let _ = self.inbound.try_send(transport::Inbound::LostLog { from: from as u64, last_index });
    }

    pub fn snapshots(&self) -> &Arc<Snapshots> {
        &self.snapshots
    }

    /// Waits until this node has applied everything committed before now.
    async fn read_barrier(&self, deadline: Instant) -> Result<u64, LevelError> {
        let (tx, rx) = oneshot::channel();
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.reads.send(tx)).await {
            Ok(Ok(())) => {}
            _ => return Err(RaftError::Overloaded.into()),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(RaftError::Stopped.into()),
            Err(_) => Err(RaftError::NoReadIndex { waited_ms: left.as_millis() as u64 }.into()),
        }
    }

    /// Proposes `op` for `caller` and waits for its reply (refusals and
    /// busy sessions come back as errors).
    pub async fn propose(&self, caller: Caller, op: Op, timeout: Duration) -> Result<rsm::Reply, LevelError> {
        Ok(self.propose_applied(caller, op, timeout).await?.reply)
    }

    /// [`Rsm::propose`], with the applied index this node's answer came at.
    pub async fn propose_applied(&self, caller: Caller, op: Op, timeout: Duration) -> Result<Applied, LevelError> {
        let deadline = Instant::now() + timeout;
        let caller = if caller.client_id == 0 {
            let seq = self.own_seq.fetch_add(1, Ordering::Relaxed);
            Caller { client_id: self.own_client_id, request_id: seq, ack_below: 0 }
        } else {
            caller
        };
        let cmd = rsm::Command {
            client_id: caller.client_id,
            request_id: caller.request_id,
            ack_below: caller.ack_below,
            sessionless: caller.client_id == self.own_client_id,
            op: Some(op),
        };
        let (tx, rx) = oneshot::channel();
        match tokio::time::timeout(timeout, self.proposals.send(Proposal { cmd, reply: tx })).await {
            Ok(Ok(())) => {}
            _ => return Err(RaftError::Overloaded.into()),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let reply = match tokio::time::timeout(left, rx).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => return Err(RaftError::StoppedBeforeApplied.into()),
            Err(_) => return Err(RaftError::NotAppliedWithin { waited_ms: timeout.as_millis() as u64 }.into()),
        };
        match &reply.reply.result {
            Some(reply::Result::Refused(why)) => Err(LevelError::Refused { reason: why.clone() }),
            Some(reply::Result::Busy(why)) => Err(RaftError::SessionBusy(why.clone()).into()),
            Some(_) => Ok(reply),
            None => Err(LevelError::UnexpectedReply { command: "command", reply: "none".into() }),
        }
    }

    /// Proposes a topic metadata command (`state_machine::topic_meta`); the reply
    /// says whether it was applied.
    pub async fn topic(
        &self,
        caller: Caller,
        op: rsm::TopicOp,
        timeout: Duration,
    ) -> Result<rsm::TopicReply, LevelError> {
        match self.propose(caller, Op::Topic(op), timeout).await?.result {
            Some(reply::Result::Topic(r)) => Ok(r),
            other => Err(LevelError::UnexpectedReply { command: "topic command", reply: format!("{other:?}") }),
        }
    }

    /// Proposes a membership change on this node, which must be the leader
    /// (`membership::decide` lists the refusals), and waits until it is applied.
    pub async fn change_members(
        &self,
        op: membership::MemberOp,
        timeout: Duration,
    ) -> Result<raft::eraftpb::ConfState, membership::MembershipError> {
        use membership::MembershipError;
        let (tx, rx) = oneshot::channel();
        let waited_ms = timeout.as_millis() as u64;
        match tokio::time::timeout(timeout, self.conf.send(membership::ConfProposal { op, reply: tx })).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(MembershipError::Stopped),
            Err(_) => return Err(MembershipError::Timeout { waited_ms }),
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(MembershipError::Stopped),
            Err(_) => Err(MembershipError::Timeout { waited_ms }),
        }
    }

    /// The members with their addresses as this node knows them: the Raft
    /// configuration (view) with the state machine's records over the
    /// start-up configuration.
    pub fn member_records(&self) -> Result<std::collections::BTreeMap<u32, rsm::MemberRecord>, StoreError> {
        Ok(state_machine::members::read_all(&DbRsm(self.store.db()))?)
    }

    /// The member set peers are reached at (changes as members come and go).
    pub fn peers(&self) -> &Arc<Peers> {
        &self.peers
    }

    /// Proposes a tombstone purge (`crate::tombstone_gc`) and waits until
    /// it is applied here.
    pub async fn purge(&self, entries: Vec<rsm::PurgeEntry>, timeout: Duration) -> Result<rsm::Purged, LevelError> {
        match self.propose(Caller::default(), Op::Purge(rsm::Purge { entries }), timeout).await?.result {
            Some(reply::Result::Purged(p)) => Ok(p),
            other => Err(LevelError::UnexpectedReply { command: "purge", reply: format!("{other:?}") }),
        }
    }

    /// Waits until this node has applied everything committed before now
    /// (ReadIndex), so reads of the `rsm` family that follow are linearizable.
    pub async fn barrier(&self, timeout: Duration) -> Result<u64, LevelError> {
        self.read_barrier(Instant::now() + timeout).await
    }
}

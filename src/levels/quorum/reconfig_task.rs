//! The quorum level's replica set follows the Raft voters: the I/O shell
//! that runs the sans-I/O [`Reconfig`] driver inside the node.
//!
//! Why it exists: the quorum level's replicas and the Raft group are the
//! same nodes; when a node is promoted to voter or removed, the ABD replica
//! set must change too, by the rule of docs/consistency.md, "Changing the
//! replica set" (joint epoch, state transfer, new epoch). `reconfig.rs`
//! decides; this task does the I/O.
//!
//! What it does, on the Raft leader only, every [`CHECK_INTERVAL_MS`] and at
//! every change of the Raft view:
//!
//! 1. At every new term, every [`PROBE_INTERVAL_MS`] and before every
//!    change, it pushes the configuration it holds to every member
//!    (`AdoptConfig`); each answers with the one it holds, and the newest
//!    is adopted. So a new leader learns a change a former leader left
//!    joint, and a member that missed the last push catches up.
//! 2. If the held configuration is joint, it resumes that change (to its
//!    `next`); else, if the applied voter set differs from the held
//!    `current`, it starts a change from the held configuration to the
//!    voter set. One change at a time.
//! 3. Effects: `PushConfig` → `AdoptConfig` to the node (or the local
//!    [`HeldConfig`]); `Pull` → the leader relays: `PullCells` from the
//!    source, carrying the joint configuration (the source adopts it or
//!    refuses), then the batch is merged durably into the target (its
//!    `Replicate`, or the local store) before the driver hears `Pulled`.
//!    At most [`PULLS_IN_FLIGHT_MAX`] pulls at once, each at most
//!    `pull_cells_max` cells and `peer_service::MAX_PULL_REPLY_BYTES`; a
//!    failed step is reported after [`RETRY_PAUSE_MS`] and retried by the
//!    driver at most `attempts_max` times.
//! 4. It abandons the change when it stops being the leader of the term it
//!    started in (the next leader resumes it from step 1), and after a
//!    failed change waits [`FAILED_CHANGE_PAUSE_MS`] before trying again.
//!
//! Known limits: two leaders of successive terms may briefly both run a
//! change; if they derive different joint configurations of one epoch,
//! replicas keep the first they adopted and refuse the other (see
//! `held`): safe, but the changes can stall (each leader retries the joint
//! configuration it holds); nothing moves past such a conflict yet.
//! A node removed from the Raft group is no longer a peer, so it is not
//! told the final configuration (it is not needed for it: the new epoch
//! needs a majority of the new set).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::held::{HeldConfig, Served};
use super::reconfig::{Effect, Input, ReconfigSettings};
use super::{Reconfig, ReconfigError, ReplicaConfig};
use crate::clock::NodeId;
use crate::metrics::{add, inc, Metrics};
use crate::node::peer_service::MAX_PULL_REPLY_BYTES;
use crate::node::peers::Peers;
use crate::proto::peer::{AdoptConfigRequest, Cell as PeerCell, CellsRequest, PullCellsRequest};
use crate::rsm::{RaftRole, Rsm};
use crate::store::{Store, WriteOp};
use crate::wire::{cell_from_peer, cell_to_peer, config_from_peer, config_to_peer};

/// How often the leader compares the voters with the held configuration
/// (besides every change of the Raft view).
pub const CHECK_INTERVAL_MS: u64 = 500;
/// Longest wait for one push or one leg (fetch or merge) of a pull.
pub const STEP_TIMEOUT_MS: u64 = 5_000;
/// Pause before a failed push or pull is reported (the driver retries it).
pub const RETRY_PAUSE_MS: u64 = 200;
/// Pause after a failed or abandoned change before the next attempt.
pub const FAILED_CHANGE_PAUSE_MS: u64 = 1_000;
/// Pulls relayed at once (each holds one batch in memory).
pub const PULLS_IN_FLIGHT_MAX: usize = 4;
/// How often the leader pushes its configuration to every member and
/// adopts the newest they hold (also at every new term).
pub const PROBE_INTERVAL_MS: u64 = 2_000;

#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error(transparent)]
    Reconfig(#[from] ReconfigError),
    #[error("no longer the Raft leader of term {term}")]
    LostLeadership { term: u64 },
    #[error("the change stalled: nothing in flight and not done")]
    Stalled,
    #[error("a reconfiguration step panicked: {0}")]
    Step(String),
    #[error("stopping")]
    Stopped,
}

struct Ctx {
    me: NodeId,
    held: Arc<HeldConfig>,
    store: Arc<Store>,
    peers: Arc<Peers>,
    metrics: Arc<Metrics>,
    pulls: Semaphore,
}

/// Starts the task (it acts only while this node is the Raft leader).
#[allow(clippy::too_many_arguments)]
pub fn start(
    held: Arc<HeldConfig>,
    store: Arc<Store>,
    peers: Arc<Peers>,
    rsm: Arc<Rsm>,
    metrics: Arc<Metrics>,
    settings: ReconfigSettings,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) {
    if settings.skip_transfer_unsafe || settings.skip_joint_unsafe {
        tracing::warn!(?settings, "UNSAFE: quorum replica-set changes skip a step (test switch)");
    }
    let ctx =
        Arc::new(Ctx { me: peers.self_id(), held, store, peers, metrics, pulls: Semaphore::new(PULLS_IN_FLIGHT_MAX) });
    tracker.spawn(run(ctx, rsm, settings, cancel));
}

async fn run(ctx: Arc<Ctx>, rsm: Arc<Rsm>, settings: ReconfigSettings, cancel: CancellationToken) {
    let mut view = rsm.view_changes();
    // The term and time of the last probe (`learn_newest`).
    let mut probed: Option<(u64, Instant)> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = view.changed() => {
                if r.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(CHECK_INTERVAL_MS)) => {}
        }
        let v = rsm.view();
        if v.role != RaftRole::Leader || v.voters.is_empty() {
            continue;
        }
        let due =
            probed.is_none_or(|(term, at)| term != v.term || at.elapsed() >= Duration::from_millis(PROBE_INTERVAL_MS));
        if due {
            // Also spreads the held configuration to members that missed it.
            learn_newest(&ctx, &v.voters).await;
            probed = Some((v.term, Instant::now()));
        }
        let held = ctx.held.current();
        let mut voters: Vec<NodeId> = v.voters.iter().map(|&id| id as NodeId).collect();
        voters.sort_unstable();
        let (from, to) = match &held.next {
            Some(next) => {
                // A change left joint (by a former leader, or by this one
                // before a restart): finish it first.
                let Some(epoch) = held.epoch.checked_sub(1) else {
                    tracing::warn!(?held, "a joint quorum configuration at epoch 0 cannot be resumed");
                    continue;
                };
                (ReplicaConfig { epoch, current: held.current.clone(), next: None }, next.clone())
            }
            None => {
                if held.is_settled_on(&v.voters) {
                    continue;
                }
                ((*held).clone(), voters)
            }
        };
        // Another node may hold a newer configuration: start from it.
        learn_newest(&ctx, &v.voters).await;
        if *ctx.held.current() != *held {
            continue;
        }
        inc(&ctx.metrics.quorum_reconfig_started);
        match change(&ctx, &rsm, v.term, &from, to, settings.clone(), &cancel).await {
            Ok(done) => {
                inc(&ctx.metrics.quorum_reconfig_done);
                tracing::info!(epoch = done.epoch, current = ?done.current, "quorum replica-set change done");
            }
            Err(ChangeError::Stopped) => return,
            Err(e) => {
                inc(&ctx.metrics.quorum_reconfig_failed);
                tracing::warn!(error = %e, from_epoch = from.epoch, "quorum replica-set change abandoned; will retry");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(FAILED_CHANGE_PAUSE_MS)) => {}
                }
            }
        }
    }
}

/// Pushes the held configuration to the voters and every member of it;
/// adopts the newest configuration they answer with.
async fn learn_newest(ctx: &Arc<Ctx>, voters: &[u64]) {
    let held = ctx.held.current();
    let mut nodes = held.members();
    nodes.extend(voters.iter().map(|&v| v as NodeId).filter(|v| !held.contains(*v)));
    let mut asks = JoinSet::new();
    for to in nodes.into_iter().filter(|&n| n != ctx.me) {
        let (ctx, config) = (ctx.clone(), (*held).clone());
        asks.spawn(async move { push_once(&ctx, to, &config).await });
    }
    while let Some(r) = asks.join_next().await {
        if let Ok(Ok(theirs)) = r {
            if theirs.epoch > ctx.held.current().epoch {
                tracing::info!(epoch = theirs.epoch, "learnt a newer quorum replica configuration");
                if let Err(e) = ctx.held.adopt(&theirs).await {
                    tracing::warn!(error = %e, "cannot adopt a newer quorum configuration");
                }
            }
        }
    }
}

/// One change from `from` to `to`, while this node leads `term`.
async fn change(
    ctx: &Arc<Ctx>,
    rsm: &Rsm,
    term: u64,
    from: &ReplicaConfig,
    to: Vec<NodeId>,
    settings: ReconfigSettings,
    cancel: &CancellationToken,
) -> Result<ReplicaConfig, ChangeError> {
    let mut driver = Reconfig::new(from, to, settings)?;
    tracing::info!(
        from_epoch = from.epoch,
        old = ?from.current,
        joint = ?driver.joint(),
        target = ?driver.target(),
        "quorum replica-set change starts"
    );
    let mut steps: JoinSet<Input> = JoinSet::new();
    let mut effects: VecDeque<Effect> = driver.step(Input::Start).into();
    loop {
        while let Some(effect) = effects.pop_front() {
            match effect {
                Effect::PushConfig { to, config } => {
                    tracing::debug!(to, epoch = config.epoch, "quorum reconfiguration: push");
                    steps.spawn(push(ctx.clone(), to, config));
                }
                Effect::Pull { into, from, config, after, limit } => {
                    tracing::debug!(into, from, after = ?after, "quorum reconfiguration: pull");
                    steps.spawn(pull(ctx.clone(), into, from, config, after, limit));
                }
                Effect::Done(result) => {
                    // Let the last pushes land (each is bounded in time);
                    // pulls still running are of no use any more.
                    let drain = async { while steps.join_next().await.is_some() {} };
                    let _ = tokio::time::timeout(Duration::from_millis(2 * STEP_TIMEOUT_MS), drain).await;
                    return Ok(result?);
                }
            }
        }
        let v = rsm.view();
        if v.role != RaftRole::Leader || v.term != term {
            steps.abort_all();
            return Err(ChangeError::LostLeadership { term });
        }
        let input = tokio::select! {
            _ = cancel.cancelled() => return Err(ChangeError::Stopped),
            // Wake up now and then to check the leadership.
            _ = tokio::time::sleep(Duration::from_millis(CHECK_INTERVAL_MS)) => continue,
            joined = steps.join_next() => match joined {
                Some(Ok(input)) => input,
                Some(Err(e)) => return Err(ChangeError::Step(e.to_string())),
                None => return Err(ChangeError::Stalled),
            },
        };
        effects.extend(driver.step(input));
    }
}

/// Makes `to` adopt `config`; the configuration it holds afterwards.
async fn push_once(ctx: &Ctx, to: NodeId, config: &ReplicaConfig) -> Result<ReplicaConfig, String> {
    if to == ctx.me {
        return ctx.held.adopt(config).await.map(|c| (*c).clone()).map_err(|e| e.to_string());
    }
    let mut client = ctx.peers.client(to).ok_or_else(|| format!("node {to} is not a member"))?;
    let req = AdoptConfigRequest { from_node: ctx.me, config: Some(config_to_peer(config)) };
    let reply = tokio::time::timeout(Duration::from_millis(STEP_TIMEOUT_MS), client.adopt_config(req))
        .await
        .map_err(|_| format!("no answer within {STEP_TIMEOUT_MS} ms"))?
        .map_err(|s| s.message().to_string())?
        .into_inner();
    let held = reply.held.ok_or("an answer without a configuration")?;
    config_from_peer(held).map_err(|e| e.to_string())
}

async fn push(ctx: Arc<Ctx>, to: NodeId, config: ReplicaConfig) -> Input {
    match push_once(&ctx, to, &config).await {
        Ok(held) => {
            if held.epoch > config.epoch {
                let _ = ctx.held.adopt(&held).await;
            }
            Input::ConfigAck { from: to, epoch: held.epoch }
        }
        Err(e) => {
            tracing::debug!(to, epoch = config.epoch, error = %e, "quorum configuration push failed");
            tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await;
            Input::ConfigFailed { to, epoch: config.epoch }
        }
    }
}

/// One batch fetched from a source.
enum Fetched {
    Cells {
        cells: Vec<PeerCell>,
        more: bool,
    },
    /// The source holds this newer (or conflicting) configuration.
    Refused(ReplicaConfig),
}

async fn fetch(
    ctx: &Ctx,
    from: NodeId,
    config: &ReplicaConfig,
    after: Option<Bytes>,
    limit: usize,
) -> Result<Fetched, String> {
    if from == ctx.me {
        let store = ctx.store.clone();
        let scan = async move {
            crate::rt::spawn_blocking(move || store.scan_cells(after.as_deref(), limit, MAX_PULL_REPLY_BYTES)).await
        };
        return match ctx.held.serve_at(config, scan).await.map_err(|e| e.to_string())? {
            Served::Served(scanned) => {
                let (cells, more) = scanned.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
                Ok(Fetched::Cells { cells: cells.iter().map(|(k, c)| cell_to_peer(k, c)).collect(), more })
            }
            Served::Refused(held) => Ok(Fetched::Refused((*held).clone())),
        };
    }
    let mut client = ctx.peers.client(from).ok_or_else(|| format!("node {from} is not a member"))?;
    let req = PullCellsRequest {
        from_node: ctx.me,
        config: Some(config_to_peer(config)),
        after_key: after,
        limit: u32::try_from(limit).unwrap_or(u32::MAX),
    };
    let reply = tokio::time::timeout(Duration::from_millis(STEP_TIMEOUT_MS), client.pull_cells(req))
        .await
        .map_err(|_| format!("no answer within {STEP_TIMEOUT_MS} ms"))?
        .map_err(|s| s.message().to_string())?
        .into_inner();
    match reply.refused {
        Some(c) => Ok(Fetched::Refused(config_from_peer(c).map_err(|e| e.to_string())?)),
        None => Ok(Fetched::Cells { cells: reply.cells, more: reply.more }),
    }
}

/// Merges `cells` into `into`, durably (higher version wins per key).
async fn merge(ctx: &Ctx, into: NodeId, cells: Vec<PeerCell>) -> Result<(), String> {
    if into == ctx.me {
        let count = cells.len();
        let ops: Vec<WriteOp> =
            cells.into_iter().filter_map(cell_from_peer).map(|(key, cell)| WriteOp::Merge { key, cell }).collect();
        if ops.len() != count {
            return Err("a pulled cell of an unknown level".into());
        }
        return ctx.store.write(ops, true).await.map(|_| ()).map_err(|e| e.to_string());
    }
    let mut client = ctx.peers.client(into).ok_or_else(|| format!("node {into} is not a member"))?;
    let req = CellsRequest { from_node: ctx.me, cells };
    tokio::time::timeout(Duration::from_millis(STEP_TIMEOUT_MS), client.replicate(req))
        .await
        .map_err(|_| format!("no answer within {STEP_TIMEOUT_MS} ms"))?
        .map_err(|s| s.message().to_string())?;
    Ok(())
}

async fn pull(
    ctx: Arc<Ctx>,
    into: NodeId,
    from: NodeId,
    config: ReplicaConfig,
    after: Option<Bytes>,
    limit: usize,
) -> Input {
    let Ok(_permit) = ctx.pulls.acquire().await else {
        return pull_failed(into, from, after, "stopping".into()).await;
    };
    let (cells, more) = match fetch(&ctx, from, &config, after.clone(), limit).await {
        Ok(Fetched::Cells { cells, more }) => (cells, more),
        Ok(Fetched::Refused(theirs)) if theirs.epoch > config.epoch => {
            tracing::info!(from, epoch = theirs.epoch, "quorum state-transfer source holds a newer configuration");
            if let Err(e) = ctx.held.adopt(&theirs).await {
                tracing::warn!(error = %e, "cannot adopt a newer quorum configuration");
            }
            return Input::PullRefused { into, from, config: theirs };
        }
        Ok(Fetched::Refused(theirs)) => {
            let why = format!("refused: the source holds another configuration of epoch {}", theirs.epoch);
            return pull_failed(into, from, after, why).await;
        }
        Err(e) => return pull_failed(into, from, after, e).await,
    };
    if more && cells.is_empty() {
        return pull_failed(into, from, after, "an empty batch with more after it".into()).await;
    }
    let last_key = cells.last().map(|c| c.key.clone());
    let count = cells.len() as u64;
    if !cells.is_empty() {
        if let Err(e) = merge(&ctx, into, cells).await {
            return pull_failed(into, from, after, e).await;
        }
    }
    add(&ctx.metrics.quorum_reconfig_cells_pulled, count);
    Input::Pulled { into, from, after, last_key, more }
}

async fn pull_failed(into: NodeId, from: NodeId, after: Option<Bytes>, why: String) -> Input {
    tracing::debug!(into, from, error = %why, "quorum state-transfer pull failed");
    tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await;
    Input::PullFailed { into, from, after }
}

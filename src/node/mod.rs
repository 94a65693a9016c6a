//! Process wiring of one node: open the store, start the levels' background
//! tasks, serve the gRPC services on two ports, and shut down cleanly.
//!
//! Clients' services (Kv, Topics, Cluster) are served on the client port
//! only, the peers' (Peer, TopicPeer) and the operators' test hooks (Admin)
//! on the peer port only: a peer RPC sent to the client port is
//! UNIMPLEMENTED, so the two can be firewalled (and later authenticated)
//! apart.
//!
//! The listener and the shutdown signal are passed in (as in mini-redis'
//! `server::run`), so tests and `kv dev` can run nodes on ports they chose.
//! Every background task is spawned on one [`TaskTracker`] and stopped
//! through one [`CancellationToken`]; shutdown waits for them, then stops the
//! writer thread so RocksDB closes after its last write. Peers' long-lived
//! incoming streams end earlier, on [`NodeState::stopping`], as soon as
//! shutdown begins (the server's graceful stop waits for open requests).

pub mod auth;
pub mod config;
pub mod disk_space;
pub mod metrics_export;
pub mod metrics_http;
pub mod peer_batch;
pub mod peer_input;
pub mod peer_service;
pub mod peers;
pub mod request_stream;
pub mod router;
pub mod service;
pub mod tls;
pub mod tls_certs;
pub mod topic_peer_service;
pub mod topic_service;

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::{Clock, NodeId, SystemWallTime, WallTime};
use crate::levels::eventual::{anti_entropy, read_repair::ReadRepair, replication::Replication, Eventual};
use crate::levels::join::QuorumLevel;
use crate::levels::linear::{Linear, TestSwitches as LinearSwitches};
use crate::levels::quorum::held::HeldConfig;
use crate::levels::quorum::reconfig::ReconfigSettings;
use crate::levels::quorum::{Quorum, QuorumConfig};
use crate::metrics::Metrics;
use crate::proto::admin_server::AdminServer;
use crate::proto::cluster_server::ClusterServer;
use crate::proto::kv_server::KvServer;
use crate::proto::peer::peer_server::PeerServer;
use crate::proto::peer::topic_peer_server::TopicPeerServer;
use crate::proto::topics_server::TopicsServer;
use crate::rsm::Rsm;
use crate::store::{Store, StoreError, WriterMode};
use crate::topic::Topics;
pub use config::NodeConfig;

/// How long shutdown waits for background tasks before giving up on them.
pub const SHUTDOWN_GRACE_MS: u64 = 5_000;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Config(String),
    #[error("gRPC server failed: {0}")]
    Serve(String),
    /// The cluster removed this node: it stopped serving. Its data must
    /// not serve again; a node on this machine rejoins under a new id.
    #[error(
        "node {id} was removed from the cluster ({why}); it stopped. Delete its data directory; to bring a node back \
         here, start it with an empty one, `--join` and a new --id, and `kv cluster add` it"
    )]
    Removed { id: NodeId, why: String },
    /// Writing the Raft log or state machine failed (a full disk, an I/O
    /// error): the node stopped. The failed write was not applied or
    /// acknowledged; what is on disk is consistent, so a restart once the
    /// cause is fixed resumes where it was.
    #[error(
        "node {id} stopped: writing its Raft log failed ({why}). Nothing unwritten was acknowledged. Fix the \
         cause (free disk space, replace a failing disk) and start it again with the same data directory"
    )]
    RaftStorage { id: NodeId, why: String },
}

/// Accepted connections with Nagle's algorithm off. tonic's
/// `Server::tcp_nodelay` applies only to listeners it binds itself; with
/// Nagle on, a response written in two pieces waits for the client's delayed
/// ACK (40 ms on Linux) — seen as 40 ms stalls on quorum reads.
fn nodelay(incoming: TcpListenerStream) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    incoming.map(|conn| {
        conn.inspect(|s| {
            if let Err(e) = s.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        })
    })
}

/// A gRPC server with the transport settings both ports use.
fn server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(5)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
}

/// What the services share.
pub struct NodeState {
    pub cfg: NodeConfig,
    pub store: Arc<Store>,
    pub peers: Arc<peers::Peers>,
    pub eventual: Eventual,
    /// ABD get/set/del, and CAS through `linear` (`levels::join`).
    pub quorum: QuorumLevel,
    /// The quorum level's replica configuration this node holds (its
    /// coordinators use it; its replica side refuses older epochs by it).
    pub quorum_config: Arc<HeldConfig>,
    pub linear: Arc<Linear>,
    /// The replicated state machine under `linear` and topic metadata.
    pub rsm: Arc<Rsm>,
    pub topics: Arc<Topics>,
    pub metrics: Arc<Metrics>,
    /// Request ids and the slow-request log threshold (`router`).
    pub request_log: router::RequestLog,
    /// The free-space reserve client writes are checked against.
    pub disk: disk_space::DiskSpace,
    pub started: Instant,
    /// Cancelled when shutdown begins, before the server waits for open
    /// requests to finish: long-lived streams (peers' Raft and quorum
    /// streams) end on it, or the server would wait for them forever.
    pub stopping: CancellationToken,
}

/// What a node takes from its surroundings besides its configuration: the
/// wall clock it reads and how it connects to other nodes. A real node
/// reads the system clock and dials TCP ([`NodeEnv::real`]); a simulation
/// running several nodes in one process gives each its own (see
/// `crate::sim`). Monotonic time is tokio's clock (`tokio::time`), which a
/// test runtime can pause and advance.
#[derive(Clone)]
pub struct NodeEnv {
    pub wall: Arc<dyn WallTime>,
    pub dialer: Arc<dyn peers::Dialer>,
    /// TLS on both ports (`tls`); `None` = plaintext.
    pub tls: Option<tls::NodeTls>,
    /// `Some` only in the one-thread deterministic simulation (`crate::sim`);
    /// `None` = a real node.
    pub sim: Option<NodeSim>,
}

/// How a node runs inside the deterministic simulation: the store writes in
/// the caller's task ([`WriterMode::Inline`], each fsynced write taking
/// `fsync_ms` of simulated time) and the node's own randomness (Raft
/// election timeouts, its own client id) comes from `seed`, so that a seed
/// replays the same schedule.
#[derive(Clone, Copy, Debug)]
pub struct NodeSim {
    pub seed: u64,
    pub fsync_ms: u64,
}

impl NodeEnv {
    /// The system clock, and TCP from `local_ip` (the listen address, so
    /// that partitions between per-node loopback addresses cut exactly the
    /// links they name).
    pub fn real(local_ip: IpAddr, tls: Option<tls::NodeTls>) -> Self {
        let dialer = peers::TcpDialer { local_ip, tls: tls.as_ref().map(|t| t.dialer.clone()) };
        NodeEnv { wall: Arc::new(SystemWallTime), dialer: Arc::new(dialer), tls, sim: None }
    }
}

/// Runs a node until `shutdown` completes: client services on `listener`,
/// peer services on `peer_listener`.
pub async fn run(
    cfg: NodeConfig,
    listener: TcpListener,
    peer_listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    let addr = listener.local_addr().map_err(|e| NodeError::Serve(e.to_string()))?;
    let peer_addr = peer_listener.local_addr().map_err(|e| NodeError::Serve(e.to_string()))?;
    tracing::info!(id = cfg.id, %addr, %peer_addr, members = cfg.cluster.len(), data_dir = %cfg.data_dir.display(), "capkv node serving");
    // Peer connections leave from the peer address, so that partitions
    // between per-node loopback addresses cut exactly the links they name.
    let tls = match &cfg.tls {
        Some(files) => Some(tls::NodeTls::load(files, cfg.id).map_err(NodeError::Config)?),
        None => None,
    };
    let env = NodeEnv::real(cfg.peer_listen.ip(), tls);
    run_with(
        cfg,
        env,
        nodelay(TcpListenerStream::new(listener)),
        nodelay(TcpListenerStream::new(peer_listener)),
        shutdown,
    )
    .await
}

/// Runs a node in `env`, serving clients the connections `incoming` yields
/// and peers those `peer_incoming` yields, until `shutdown` completes.
/// [`run`] is this with TCP and the system clock.
pub async fn run_with<I, P, IO, IE>(
    cfg: NodeConfig,
    env: NodeEnv,
    incoming: I,
    peer_incoming: P,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError>
where
    I: tokio_stream::Stream<Item = Result<IO, IE>>,
    P: tokio_stream::Stream<Item = Result<IO, IE>>,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + tonic::transport::server::Connected + Unpin + Send + 'static,
    IO::ConnectInfo: Clone + Send + Sync + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if cfg.unsafe_test.any() {
        tracing::warn!(switches = ?cfg.unsafe_test, "UNSAFE TEST SWITCHES ARE ON: this node deliberately violates its guarantees");
    }
    // Read before anything runs, so a bad token file fails start-up.
    let tokens = match &cfg.token_file {
        Some(path) => {
            let t = auth::Tokens::load(path).map_err(|e| NodeError::Config(e.to_string()))?;
            tracing::info!(tokens = t.len(), file = %path.display(), "client requests need a token");
            Some(Arc::new(t))
        }
        None => None,
    };
    let auth = auth::AuthLayer::new(tokens);
    // Bound first, so a taken metrics port fails start-up before anything runs.
    let metrics_listener = match cfg.metrics_listen {
        Some(addr) => Some(metrics_http::bind(addr).await.map_err(NodeError::Serve)?),
        None => None,
    };
    let clock = Arc::new(Clock::with_wall(cfg.id, cfg.max_clock_drift_ms, env.wall.clone()));
    let hint_peers = if cfg.hinted_handoff { cfg.peers() } else { Vec::new() };
    let writer = match env.sim {
        Some(sim) => WriterMode::Inline { sync_delay_ms: sim.fsync_ms },
        None => WriterMode::Thread,
    };
    let store = Store::open_with(&cfg.data_dir, clock.clone(), hint_peers, writer)?;
    let peers = Arc::new(peers::Peers::new(cfg.id, &cfg.peer_cluster, env.dialer.clone()).map_err(NodeError::Config)?);
    let metrics = Arc::new(Metrics::default());
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();

    let replication =
        Replication::start(store.clone(), peers.clone(), metrics.clone(), cfg.hinted_handoff, cancel.clone(), &tracker);
    let repair = ReadRepair::start(
        store.clone(),
        peers.clone(),
        metrics.clone(),
        cancel.clone(),
        &tracker,
        cfg.read_repair_chance,
        cfg.max_value_bytes,
    );
    anti_entropy::start(
        store.clone(),
        peers.clone(),
        metrics.clone(),
        cfg.anti_entropy_interval_ms,
        cfg.max_value_bytes,
        cancel.clone(),
        &tracker,
    );
    let eventual = Eventual::new(store.clone(), replication, repair, metrics.clone(), cfg.hinted_handoff);
    // The quorum level's replicas: the configuration stored by an earlier
    // run, else `cfg.quorum_replicas` at epoch 0 (the founding members, or
    // for a node that joined, the set the cluster reported). Raft
    // membership changes move it (`levels::quorum::reconfig_task`, on the
    // leader).
    let quorum_config = Arc::new(
        HeldConfig::load(store.clone(), cfg.quorum_replicas.clone()).map_err(|e| NodeError::Config(e.to_string()))?,
    );
    let abd = Arc::new(Quorum::new(
        store.clone(),
        peers.clone(),
        quorum_config.clone(),
        QuorumConfig { skip_read_impose_unsafe: cfg.unsafe_test.skip_read_impose, read_fanout: cfg.quorum_read_fanout },
        cfg.max_value_bytes,
        metrics.clone(),
        cancel.clone(),
        &tracker,
    ));
    let linear = Linear::start(
        cfg.id,
        store.clone(),
        peers.clone(),
        abd.clone(),
        clock.clone(),
        metrics.clone(),
        cfg.raft.clone(),
        LinearSwitches {
            local_reads: cfg.unsafe_test.linearizable_local_reads,
            skip_level_join: cfg.unsafe_test.skip_level_join,
        },
        env.sim.map(|s| s.seed),
        cancel.clone(),
        &tracker,
    )
    .await?;
    let quorum = QuorumLevel::new(abd, linear.clone(), metrics.clone());
    let rsm = linear.rsm().clone();
    crate::levels::quorum::reconfig_task::start(
        quorum_config.clone(),
        store.clone(),
        peers.clone(),
        rsm.clone(),
        metrics.clone(),
        ReconfigSettings {
            skip_transfer_unsafe: cfg.unsafe_test.quorum_reconfig_skip_transfer,
            ..ReconfigSettings::default()
        },
        cancel.clone(),
        &tracker,
    );
    crate::tombstone_gc::start(
        store.clone(),
        peers.clone(),
        rsm.clone(),
        metrics.clone(),
        crate::tombstone_gc::GcSettings {
            grace_ms: cfg.gc_grace_ms,
            skip_replica_check: cfg.unsafe_test.gc_skip_replica_check,
        },
        cancel.clone(),
        &tracker,
    );
    let topics = Topics::start(
        cfg.id,
        store.clone(),
        rsm.clone(),
        cfg.cluster.clone(),
        env.dialer.clone(),
        cfg.topics.clone(),
        cancel.clone(),
        &tracker,
    );

    let state = Arc::new(NodeState {
        cfg: cfg.clone(),
        store: store.clone(),
        peers,
        eventual,
        quorum,
        quorum_config,
        linear,
        rsm,
        topics,
        metrics,
        request_log: router::RequestLog::new(Duration::from_millis(cfg.slow_request_ms)),
        disk: disk_space::DiskSpace::new(&cfg.data_dir, cfg.min_free_disk_bytes),
        started: Instant::now(),
        stopping: CancellationToken::new(),
    });
    if let Some(listener) = metrics_listener {
        let addr = listener.local_addr().map_err(|e| NodeError::Serve(e.to_string()))?;
        tracing::info!(id = cfg.id, "serving Prometheus metrics at http://{addr}/metrics");
        metrics_http::spawn(listener, state.clone(), cancel.clone(), &tracker);
    }
    // Either server failing stops the other: a node serves both or neither.
    // So does learning that the cluster removed this node (node::peers).
    // So does a storage failure under the Raft log (`rsm::driver`): like
    // etcd and Kafka, the node stops rather than serve on without it.
    let stopping = state.stopping.clone();
    let removed = state.peers.removed();
    let rsm = state.rsm.clone();
    let signal = async {
        let failed = tokio::select! {
            _ = shutdown => None,
            _ = stopping.cancelled() => None,
            _ = removed.cancelled() => {
                tracing::error!(id = cfg.id, "removed from the cluster: stopping");
                None
            }
            why = rsm.storage_failed() => {
                tracing::error!(id = cfg.id, error = %why, "raft storage failed: stopping");
                Some(why)
            }
        };
        stopping.cancel();
        failed
    };
    let max_request_bytes = cfg.max_value_bytes + config::MAX_KEY_BYTES + 64 * 1024;
    let (client_server, peer_server) = match &env.tls {
        None => (server(), server()),
        Some(t) => (
            server().tls_config(t.client_port.clone()).map_err(|e| NodeError::Config(format!("TLS: {e}")))?,
            server().tls_config(t.peer_port.clone()).map_err(|e| NodeError::Config(format!("TLS: {e}")))?,
        ),
    };
    let client_served = async {
        let r = client_server
            .layer(auth.clone())
            .add_service(
                KvServer::new(service::KvService::new(state.clone())).max_decoding_message_size(max_request_bytes),
            )
            .add_service(
                TopicsServer::new(topic_service::TopicService::new(state.clone()))
                    .max_decoding_message_size(topic_service::MAX_TOPIC_REQUEST_BYTES)
                    .max_encoding_message_size(topic_service::MAX_TOPIC_REQUEST_BYTES),
            )
            .add_service(ClusterServer::new(service::ClusterService::new(state.clone())))
            .serve_with_incoming_shutdown(incoming, stopping.cancelled())
            .await;
        stopping.cancel();
        r
    };
    let peer_served = async {
        let r = peer_server
            .layer(auth.clone())
            .add_service(
                PeerServer::new(peer_service::PeerService::new(state.clone()))
                    .max_decoding_message_size(peers::MAX_PEER_MESSAGE_BYTES)
                    .max_encoding_message_size(peers::MAX_PEER_MESSAGE_BYTES),
            )
            .add_service(
                TopicPeerServer::new(topic_peer_service::TopicPeerService::new(state.clone()))
                    .max_decoding_message_size(peers::MAX_PEER_MESSAGE_BYTES)
                    .max_encoding_message_size(peers::MAX_PEER_MESSAGE_BYTES),
            )
            .add_service(AdminServer::new(service::AdminService::new(state.clone())))
            .serve_with_incoming_shutdown(peer_incoming, stopping.cancelled())
            .await;
        stopping.cancel();
        r
    };
    let (storage_failed, client_served, peer_served) = tokio::join!(signal, client_served, peer_served);
    let served = client_served.and(peer_served);

    tracing::info!(id = cfg.id, "shutting down");
    cancel.cancel();
    tracker.close();
    if tokio::time::timeout(Duration::from_millis(SHUTDOWN_GRACE_MS), tracker.wait()).await.is_err() {
        tracing::warn!("background tasks did not stop in time");
    }
    let removed_why = state.peers.removed_why();
    drop(state);
    store.shutdown();
    tracing::info!(id = cfg.id, "stopped");
    if let Some(why) = removed_why {
        return Err(NodeError::Removed { id: cfg.id, why });
    }
    if let Some(why) = storage_failed {
        return Err(NodeError::RaftStorage { id: cfg.id, why });
    }
    served.map_err(|e| NodeError::Serve(e.to_string()))
}

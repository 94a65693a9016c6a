//! A cluster of real capkv nodes inside one process, on a [`SimNet`].
//!
//! Each node is the production node ([`crate::node::run_with`]) with its own
//! RocksDB directory, its own clock (a [`TokioWallTime`] that starts at the
//! real time and can be skewed per node) and the simulated network as its
//! only way out. Nodes serve clients at `n<id>:7000` and peers at
//! `n<id>:8000` (the default peer port, client port + 1000); clients dial
//! them through [`SimCluster::client`]. Faults act between hosts (`n<id>`),
//! whatever the port.
//!
//! Determinism: run it on a current-thread tokio runtime with paused time
//! and a seeded RNG (`capkv_jepsen::sim` does). Every node then gets
//! [`NodeEnv::sim`] (its store writes in place, its Raft election timeouts
//! and own client id come from the seed), its wall clock starts at
//! [`SIM_WALL_START_MS`] whatever the date, and clients get ids derived from
//! the seed and their name: two runs of one seed take the same steps.
//!
//! A restart is a clean shutdown (the node's tasks stop, RocksDB closes)
//! followed by a start on the same directory; while a node is down nothing
//! listens at its name, so peers' connections are refused.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::net::SimNet;
use crate::client::Client;
use crate::clock::{NodeId, TokioWallTime};
use crate::node::config::{resolve, Overrides};
use crate::node::peers::Dialer;
use crate::node::{NodeConfig, NodeEnv, NodeError, NodeSim};
use crate::proto::cluster_client::ClusterClient;

/// Client port of every simulated node (names differ, so one port is enough).
pub const SIM_PORT: u16 = 7000;
/// Peer port of every simulated node: the default, client port + 1000.
pub const SIM_PEER_PORT: u16 = SIM_PORT + crate::node::config::PEER_PORT_OFFSET;
/// How long a stopped node may take to release its data dir.
pub const STOP_WAIT_MS: u64 = 15_000;
/// Where every simulated wall clock starts (2026-01-01T00:00:00Z), so that
/// stamps do not depend on when the simulation runs.
pub const SIM_WALL_START_MS: i64 = 1_767_225_600_000;

/// Settings of a simulated cluster beyond its size.
#[derive(Clone, Debug)]
pub struct SimSettings {
    pub nodes: usize,
    pub raft_tick_ms: u64,
    pub raft_election_ticks: usize,
    pub request_timeout_ms: u64,
    /// Test-only switches that break a guarantee (negative controls).
    pub unsafe_local_linear_reads: bool,
    pub unsafe_skip_read_impose: bool,
    pub unsafe_skip_level_join: bool,
    /// Quorum replica-set changes skip the state transfer (see
    /// `UnsafeTestSwitches::quorum_reconfig_skip_transfer`).
    pub unsafe_quorum_reconfig_skip_transfer: bool,
    /// Seeds the nodes' and clients' randomness (see the module docs).
    pub seed: u64,
    /// The network's latency: every read of every connection waits this
    /// long (see [`SimNet::with_base_delay_ms`]).
    pub link_delay_ms: u64,
    /// How long an fsynced write takes (see `store::WriterMode::Inline`).
    pub fsync_ms: u64,
    /// `--raft-snapshot-entries` and `--raft-catch-up-entries`: small values
    /// make a node that was cut off or down catch up by a snapshot install.
    pub raft_snapshot_entries: Option<u64>,
    pub raft_catch_up_entries: Option<u64>,
    /// `--anti-entropy-interval-ms` (`None`: the default): a long one keeps
    /// the eventual level's background repair out of a test's way.
    pub anti_entropy_interval_ms: Option<u64>,
}

impl Default for SimSettings {
    fn default() -> Self {
        SimSettings {
            nodes: 3,
            raft_tick_ms: 20,
            raft_election_ticks: 10,
            request_timeout_ms: 1_000,
            unsafe_local_linear_reads: false,
            unsafe_skip_read_impose: false,
            unsafe_skip_level_join: false,
            unsafe_quorum_reconfig_skip_transfer: false,
            seed: 0,
            // The smallest steps tokio's timers take: loopback and an SSD's
            // fsync are below a millisecond.
            link_delay_ms: 1,
            fsync_ms: 1,
            raft_snapshot_entries: None,
            raft_catch_up_entries: None,
            anti_entropy_interval_ms: None,
        }
    }
}

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), NodeError>>,
}

pub struct SimCluster {
    pub net: SimNet,
    configs: BTreeMap<NodeId, NodeConfig>,
    running: BTreeMap<NodeId, Running>,
    /// Each node's wall clock, kept across restarts (a restart does not
    /// reset a machine's clock).
    walls: BTreeMap<NodeId, Arc<TokioWallTime>>,
    seed: u64,
    fsync_ms: u64,
}

/// A 64-bit value drawn from `seed` and `salt` (FNV-1a, then splitmix64's
/// finalizer): distinct names get unrelated values.
fn derive(seed: u64, salt: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in salt.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The network name of node `id`'s client port.
pub fn host(id: NodeId) -> String {
    format!("n{id}:{SIM_PORT}")
}

/// The network name of node `id`'s peer port.
pub fn peer_host(id: NodeId) -> String {
    format!("n{id}:{SIM_PEER_PORT}")
}

impl SimCluster {
    /// Starts `settings.nodes` nodes with their data under `dir`.
    pub fn start(dir: PathBuf, settings: SimSettings) -> Result<SimCluster, NodeError> {
        let ids: Vec<NodeId> = (1..=settings.nodes as NodeId).collect();
        let cluster_spec = ids.iter().map(|&id| format!("{id}={}", host(id))).collect::<Vec<_>>().join(",");
        let mut configs = BTreeMap::new();
        for &id in &ids {
            let mut cfg = resolve(
                None,
                Overrides {
                    id: Some(id),
                    data_dir: Some(dir.join(format!("n{id}"))),
                    // Not bound: the node serves the simulated network.
                    listen: Some("127.0.0.1:1".into()),
                    peer_listen: Some("127.0.0.1:2".into()),
                    cluster: Some(cluster_spec.clone()),
                    request_timeout_ms: Some(settings.request_timeout_ms),
                    raft_tick_ms: Some(settings.raft_tick_ms),
                    raft_election_ticks: Some(settings.raft_election_ticks),
                    raft_snapshot_entries: settings.raft_snapshot_entries,
                    raft_catch_up_entries: settings.raft_catch_up_entries,
                    anti_entropy_interval_ms: settings.anti_entropy_interval_ms,
                    ..Overrides::default()
                },
            )
            .map_err(|e| NodeError::Config(e.to_string()))?;
            cfg.unsafe_test.linearizable_local_reads = settings.unsafe_local_linear_reads;
            cfg.unsafe_test.skip_read_impose = settings.unsafe_skip_read_impose;
            cfg.unsafe_test.skip_level_join = settings.unsafe_skip_level_join;
            cfg.unsafe_test.quorum_reconfig_skip_transfer = settings.unsafe_quorum_reconfig_skip_transfer;
            // Admin (clock offset, membership changes) is how tests drive nodes.
            cfg.enable_test_hooks = true;
            configs.insert(id, cfg);
        }
        let walls = ids.iter().map(|&id| (id, Arc::new(TokioWallTime::new(SIM_WALL_START_MS)))).collect();
        let mut c = SimCluster {
            net: SimNet::with_base_delay_ms(settings.link_delay_ms),
            configs,
            running: BTreeMap::new(),
            walls,
            seed: settings.seed,
            fsync_ms: settings.fsync_ms,
        };
        for id in ids {
            c.start_node(id);
        }
        Ok(c)
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.configs.keys().copied().collect()
    }

    /// Starts a new node `id` that joins the running cluster: it knows the
    /// other members' addresses but has no Raft configuration, and waits
    /// until the leader adds it (Admin `ChangeMembers`) and sends it a
    /// snapshot. Its quorum-level replicas are the members it was pointed at.
    pub fn join_node(&mut self, id: NodeId) -> Result<(), NodeError> {
        assert!(!self.configs.contains_key(&id), "node {id} exists");
        let any = self.configs.values().next().expect("a running cluster").clone();
        let mut cfg = any;
        cfg.id = id;
        cfg.data_dir = cfg.data_dir.with_file_name(format!("n{id}"));
        cfg.cluster.insert(id, host(id));
        cfg.peer_cluster.insert(id, peer_host(id));
        cfg.raft.join = true;
        self.configs.insert(id, cfg);
        self.walls.insert(id, Arc::new(TokioWallTime::new(SIM_WALL_START_MS)));
        self.start_node(id);
        Ok(())
    }

    /// The Cluster service of node `id` (its client port) from the test's
    /// host, as an operator's `kv cluster ...` reaches it.
    pub fn cluster_service(&self, id: NodeId) -> ClusterClient<tonic::transport::Channel> {
        let channel = self.net.dialer("operator").channel(&host(id)).expect("valid simulated address");
        ClusterClient::new(channel)
    }

    /// Starts node `id` (no-op if it runs).
    pub fn start_node(&mut self, id: NodeId) {
        if self.running.contains_key(&id) {
            return;
        }
        let cfg = self.configs[&id].clone();
        let name = host(id);
        let env = NodeEnv {
            wall: self.walls[&id].clone(),
            dialer: Arc::new(self.net.dialer(&name)),
            tls: None,
            sim: Some(NodeSim { seed: derive(self.seed, &name), fsync_ms: self.fsync_ms }),
        };
        let incoming = self.net.listen(&name);
        let peer_incoming = self.net.listen(&peer_host(id));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(crate::node::run_with(cfg, env, incoming, peer_incoming, async move {
            let _ = stopped.await;
        }));
        self.running.insert(id, Running { stop, task });
    }

    /// Stops node `id` cleanly and waits until it has (its store closed).
    pub async fn stop_node(&mut self, id: NodeId) -> Result<(), NodeError> {
        let Some(r) = self.running.remove(&id) else { return Ok(()) };
        self.net.unlisten(&host(id));
        self.net.unlisten(&peer_host(id));
        let _ = r.stop.send(());
        // Fail open connections (peers' and clients'), as a stopped
        // process's would: the server's graceful stop waits for them.
        self.net.reset_host(&host(id));
        let result = match r.task.await {
            Ok(result) => result,
            Err(e) => Err(NodeError::Serve(format!("node {id} task failed: {e}"))),
        };
        // Tasks that outlived the shutdown grace (blocking reads, late
        // replies) may hold the store a little longer: a restart must wait
        // for the data dir's lock, as a new process would wait for the old
        // one to exit.
        let dir = self.configs[&id].data_dir.clone();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(STOP_WAIT_MS);
        while crate::store::lock::DirLock::acquire(&dir).is_err() {
            if tokio::time::Instant::now() > deadline {
                return Err(NodeError::Serve(format!(
                    "node {id} still holds {} after {STOP_WAIT_MS} ms",
                    dir.display()
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        result
    }

    pub async fn restart_node(&mut self, id: NodeId) -> Result<(), NodeError> {
        self.stop_node(id).await?;
        self.start_node(id);
        Ok(())
    }

    /// Cuts `id` off from every other node (clients still reach it).
    pub fn isolate(&self, id: NodeId) {
        for other in self.ids() {
            if other != id {
                self.net.cut(&host(id), &host(other));
            }
        }
    }

    /// Skews node `id`'s machine clock by `skew_ms` from the true time
    /// (replacing an earlier skew); it stays across the node's restarts.
    pub fn skew_clock(&self, id: NodeId, skew_ms: i64) {
        self.walls[&id].set_skew_ms(skew_ms);
    }

    /// A client named `name` on the network, with every node as an endpoint.
    pub fn client(&self, name: &str) -> Client {
        let endpoints: Vec<String> = self.ids().into_iter().map(host).collect();
        Client::with_dialer(&endpoints, &self.net.dialer(name))
            .expect("valid simulated endpoints")
            .with_client_id(derive(self.seed, name) | 1)
    }

    /// Stops every node.
    pub async fn shutdown(mut self) -> Result<(), NodeError> {
        self.net.heal_all();
        for id in self.ids() {
            self.stop_node(id).await?;
        }
        Ok(())
    }
}

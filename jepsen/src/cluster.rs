//! A cluster of real `kv serve` processes on loopback, for the harness.
//!
//! Node `N` listens on `127.0.0.(10+N)` at two free ports, one for clients
//! (`--listen`) and one for peers and the Admin test hooks (`--peer-listen`;
//! the `--cluster` entries name both, `N=CLIENT/PEER`). A node's outgoing
//! peer connections bind its own address (capkv's
//! `node::peers`), so every link between two nodes is a distinct
//! (address, address) pair that the partition nemesis can cut with nftables
//! while the harness's clients (source 127.0.0.1) still reach every node.
//!
//! Promises:
//! - every node keeps its data in `DIR/nodes/nN/data`, appends its log to
//!   `DIR/nodes/nN/kv.log` (across restarts) and its pid to
//!   `DIR/nodes/nN/kv.pid`;
//! - [`Cluster::start`] and [`Cluster::restart`] return only when the node
//!   answers its `Cluster.Status` RPC, or fail within
//!   [`READY_TIMEOUT_MS`] with the node's last log lines;
//! - kill -9, SIGSTOP and SIGCONT act on our own children only;
//! - no node outlives the harness: dropping the cluster (also while
//!   unwinding from a panic) kills every node, and each node gets SIGKILL
//!   from the kernel if the harness dies (`PR_SET_PDEATHSIG`).
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that spawned the child exits,
//! so nodes must be spawned from a thread that outlives the cluster:
//! `kv-jepsen` runs the whole harness on a current-thread runtime on its
//! main thread.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use capkv::client::{Client, ClientError, ClientTls, ConnectOptions};
use capkv::proto::NodeStatus;

/// A node's id, as in `kv serve --id` (1, 2, 3, …).
pub type NodeId = u32;

/// Largest cluster the harness starts (capkv's own limit is 15 members, and
/// the addresses 127.0.0.11 … 127.0.0.25 stay clear of 127.0.0.1).
pub const NODES_MAX: usize = 15;
/// How long a node may take to answer after being spawned.
pub const READY_TIMEOUT_MS: u64 = 60_000;
/// Pause between readiness probes.
pub const READY_POLL_MS: u64 = 50;
/// Deadline of one readiness probe.
pub const READY_PROBE_TIMEOUT_MS: u64 = 500;
/// How long [`Cluster::stop`] waits after SIGTERM before SIGKILL.
pub const STOP_GRACE_MS: u64 = 5_000;
/// Lines of a node's log quoted in errors.
pub const LOG_TAIL_LINES: usize = 30;
/// Bytes read from the end of a log to find those lines.
const LOG_TAIL_BYTES: u64 = 16 * 1024;

/// The loopback address of node `id`: 127.0.0.(10+id).
pub fn node_ip(id: NodeId) -> Ipv4Addr {
    assert!(id >= 1 && id as usize <= NODES_MAX, "node id {id} out of 1..={NODES_MAX}");
    Ipv4Addr::new(127, 0, 0, 10 + id as u8)
}

/// What to start.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// The `kv` binary.
    pub kv: PathBuf,
    /// The run directory; nodes live in `DIR/nodes/nN/`.
    pub dir: PathBuf,
    /// How many nodes (1..=[`NODES_MAX`]).
    pub nodes: usize,
    /// Extra arguments for every `kv serve`, after the harness's own.
    pub serve_args: Vec<String>,
    /// TLS on every port: a throwaway CA and certificates in `DIR/tls`.
    pub tls: bool,
}

/// Why the cluster could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The spec asks for an impossible cluster.
    #[error("invalid cluster: {0}")]
    Invalid(String),
    /// A node directory or log could not be created.
    #[error("cannot prepare {}: {source}", path.display())]
    Prepare {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// No free port on a node's address.
    #[error("cannot find a free port on {ip}: {source}")]
    Port {
        /// The node's address.
        ip: Ipv4Addr,
        /// The OS error.
        source: io::Error,
    },
    /// The `kv` process could not be spawned.
    #[error("cannot start node {id} with {}: {source}", kv.display())]
    Spawn {
        /// The node.
        id: NodeId,
        /// The binary.
        kv: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The node exited while we waited for it to answer.
    #[error("node {id} exited during startup ({status}); last lines of {}:\n{tail}", log.display())]
    Exited {
        /// The node.
        id: NodeId,
        /// How it exited.
        status: ExitStatus,
        /// Its log.
        log: PathBuf,
        /// The end of its log.
        tail: String,
    },
    /// The node did not answer in time.
    #[error("node {id} did not answer within {READY_TIMEOUT_MS} ms ({last_error}); last lines of {}:\n{tail}", log.display())]
    NotReady {
        /// The node.
        id: NodeId,
        /// The last probe's error.
        last_error: String,
        /// Its log.
        log: PathBuf,
        /// The end of its log.
        tail: String,
    },
    /// The node is not running (killed, or never started).
    #[error("node {0} is not running")]
    NotRunning(NodeId),
    /// A signal could not be delivered.
    #[error("cannot send {signal} to node {id}: {source}")]
    Signal {
        /// The node.
        id: NodeId,
        /// The signal's name.
        signal: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The capkv client refused the node's address.
    #[error("client for node {id}: {source}")]
    Client {
        /// The node.
        id: NodeId,
        /// The client's error.
        source: ClientError,
    },
}

/// One node process.
#[derive(Debug)]
struct Node {
    /// The slot: the address and directory, fixed for the run.
    id: NodeId,
    /// The id it serves under (`kv serve --id`): the slot's own at first, a
    /// fresh one each time the membership nemesis replaces it.
    raft_id: u32,
    /// `None` for a founder (`--cluster`); the endpoints it was told to
    /// join otherwise (`--join`).
    join: Option<Vec<String>>,
    /// Removed from the cluster (and stopped, data deleted): not restarted
    /// until it joins again under a new id.
    removed: bool,
    addr: SocketAddr,
    peer_addr: SocketAddr,
    dir: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// How many times it was spawned.
    starts: u32,
}

impl Node {
    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("kv.log")
    }
}

/// A running cluster; see the module docs.
#[derive(Debug)]
pub struct Cluster {
    spec: ClusterSpec,
    nodes: Vec<Node>,
    /// `--cluster` for every node: `1=127.0.0.11:P1/127.0.0.11:Q1,2=…`.
    members: String,
    /// How the harness's clients connect (TLS when `spec.tls`).
    connect: ConnectOptions,
    /// The certificates of a TLS cluster, and the CA that issues one for
    /// each node that joins.
    certs: Option<(capkv::node::tls_certs::DevCerts, capkv::node::tls_certs::Ca)>,
    /// TLS to the peer ports: the CA and a client certificate it signed.
    peer_tls: Option<ClientTls>,
}

impl Cluster {
    /// Chooses addresses and ports, starts every node and waits until each
    /// answers.
    pub async fn start(spec: ClusterSpec) -> Result<Cluster, ClusterError> {
        if spec.nodes == 0 || spec.nodes > NODES_MAX {
            return Err(ClusterError::Invalid(format!(
                "{} nodes requested; 1 to {NODES_MAX} are possible",
                spec.nodes
            )));
        }
        if !spec.kv.is_file() {
            return Err(ClusterError::Invalid(format!(
                "no kv binary at {}: build it with `cargo build --release --workspace --bins` or pass --kv PATH",
                spec.kv.display()
            )));
        }
        let mut nodes = Vec::with_capacity(spec.nodes);
        for id in 1..=spec.nodes as NodeId {
            let ip = node_ip(id);
            let (port, peer_port) = free_ports(ip)?;
            let dir = spec.dir.join("nodes").join(format!("n{id}"));
            fs::create_dir_all(&dir).map_err(|source| ClusterError::Prepare { path: dir.clone(), source })?;
            nodes.push(Node {
                id,
                raft_id: id,
                join: None,
                removed: false,
                addr: SocketAddr::new(IpAddr::V4(ip), port),
                peer_addr: SocketAddr::new(IpAddr::V4(ip), peer_port),
                dir,
                child: None,
                paused: false,
                starts: 0,
            });
        }
        let members = capkv::node::config::cluster_spec(nodes.iter().map(|n| (n.id, n.addr, n.peer_addr)));
        let (connect, certs, peer_tls) = if spec.tls {
            let hosts: Vec<(NodeId, String)> = nodes.iter().map(|n| (n.id, n.addr.ip().to_string())).collect();
            let tls_dir = spec.dir.join("tls");
            let (certs, ca) =
                capkv::node::tls_certs::generate_keeping_ca(&tls_dir, &hosts).map_err(ClusterError::Invalid)?;
            let tls = ClientTls::load(&certs.ca, None, None).map_err(ClusterError::Invalid)?;
            let peer_tls = ClientTls::load(&certs.ca, Some(&certs.client_cert), Some(&certs.client_key))
                .map_err(ClusterError::Invalid)?;
            (ConnectOptions { token: None, tls: Some(tls) }, Some((certs, ca)), Some(peer_tls))
        } else {
            (ConnectOptions::default(), None, None)
        };
        let mut cluster = Cluster { spec, nodes, members, connect, certs, peer_tls };
        for id in cluster.ids() {
            cluster.spawn(id)?;
        }
        for id in cluster.ids() {
            cluster.wait_ready(id).await?;
        }
        Ok(cluster)
    }

    /// Node ids, ascending.
    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// The id node slot `id` serves under now (`kv serve --id`): `id`
    /// itself until the membership nemesis replaced it.
    pub fn raft_id(&self, id: NodeId) -> u32 {
        self.node(id).raft_id
    }

    /// A serving id no node of this run ever had: one above the largest
    /// now. (Each id given is the largest, and a slot keeps it until it
    /// joins again under a larger one, so the largest ever is still here.)
    pub fn fresh_raft_id(&self) -> u32 {
        self.nodes.iter().map(|n| n.raft_id).max().unwrap_or(0) + 1
    }

    /// Whether slot `id` was removed from the cluster and has not joined
    /// again.
    pub fn is_removed(&self, id: NodeId) -> bool {
        self.node(id).removed
    }

    /// Stops node `id` for good after the cluster removed it: kill -9, its
    /// data deleted (a removed member's data must never serve again), and
    /// no restarts until [`Cluster::join`].
    pub fn retire(&mut self, id: NodeId) -> Result<(), ClusterError> {
        self.kill(id)?;
        let node = self.node_mut(id);
        node.removed = true;
        let data = node.data_dir();
        match fs::remove_dir_all(&data) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(ClusterError::Prepare { path: data, source: e }),
            _ => Ok(()),
        }
    }

    /// Starts slot `id`, retired before, as a new node `raft_id` that joins
    /// through `endpoints` (`kv serve --join`, empty data), and waits until
    /// it answers. The caller then adds it to the membership.
    pub async fn join(&mut self, id: NodeId, raft_id: u32, endpoints: Vec<String>) -> Result<(), ClusterError> {
        let node = self.node_mut(id);
        assert!(node.removed && node.child.is_none(), "node {id} joins only after it was retired");
        assert!(!endpoints.is_empty(), "a joining node needs endpoints");
        node.raft_id = raft_id;
        node.join = Some(endpoints);
        node.removed = false;
        if let Some((certs, ca)) = &mut self.certs {
            // Its certificate names its new id (`node-<ID>`), as peers check.
            let host = node_ip(id).to_string();
            certs.issue_node(ca, &self.spec.dir.join("tls"), raft_id, &host).map_err(ClusterError::Invalid)?;
        }
        self.spawn(id)?;
        self.wait_ready(id).await
    }

    /// The address node `id` serves clients on.
    pub fn addr(&self, id: NodeId) -> SocketAddr {
        self.node(id).addr
    }

    /// The address node `id` serves peers and the Admin test hooks on.
    pub fn peer_addr(&self, id: NodeId) -> SocketAddr {
        self.node(id).peer_addr
    }

    /// How clients of this cluster connect (the CA of a TLS cluster).
    pub fn connect_options(&self) -> &ConnectOptions {
        &self.connect
    }

    /// TLS to the peer ports (the Admin hooks): the CA and a client
    /// certificate it signed; `None` for a plaintext cluster.
    pub fn peer_tls(&self) -> Option<&ClientTls> {
        self.peer_tls.as_ref()
    }

    /// Every node's `host:port`, in id order.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.to_string()).collect()
    }

    /// The `--cluster` argument every node gets.
    pub fn members(&self) -> &str {
        &self.members
    }

    /// Node `id`'s log file.
    pub fn log_path(&self, id: NodeId) -> PathBuf {
        self.node(id).log_path()
    }

    /// Whether node `id` has a live process (paused counts as running).
    pub fn is_running(&self, id: NodeId) -> bool {
        self.node(id).child.is_some()
    }

    /// Whether node `id` is stopped with SIGSTOP.
    pub fn is_paused(&self, id: NodeId) -> bool {
        self.node(id).paused
    }

    /// How many times node `id` was spawned (1 + restarts).
    pub fn starts(&self, id: NodeId) -> u32 {
        self.node(id).starts
    }

    /// kill -9 node `id` and reap it. Killing a dead node is a no-op.
    pub fn kill(&mut self, id: NodeId) -> Result<(), ClusterError> {
        let node = self.node_mut(id);
        if let Some(mut child) = node.child.take() {
            // SIGKILL also ends a stopped process.
            child.kill().map_err(|source| ClusterError::Signal { id, signal: "SIGKILL", source })?;
            let _ = child.wait();
        }
        node.paused = false;
        Ok(())
    }

    /// Starts node `id` again on its address and data, and waits until it
    /// answers. A running node, and one removed from the cluster, are left
    /// alone.
    pub async fn restart(&mut self, id: NodeId) -> Result<(), ClusterError> {
        if self.is_removed(id) {
            return Ok(());
        }
        if self.reap(id).is_none() && self.is_running(id) {
            return Ok(());
        }
        self.spawn(id)?;
        self.wait_ready(id).await
    }

    /// SIGSTOP node `id`.
    pub fn pause(&mut self, id: NodeId) -> Result<(), ClusterError> {
        self.signal(id, libc::SIGSTOP, "SIGSTOP")?;
        self.node_mut(id).paused = true;
        Ok(())
    }

    /// SIGCONT node `id`. Resuming a node that is not paused is a no-op.
    pub fn resume(&mut self, id: NodeId) -> Result<(), ClusterError> {
        if !self.node(id).paused {
            return Ok(());
        }
        self.signal(id, libc::SIGCONT, "SIGCONT")?;
        self.node_mut(id).paused = false;
        Ok(())
    }

    /// Nodes that exited by themselves since the last call (not by
    /// [`Cluster::kill`]), with how they exited. They count as not running.
    pub fn reap_exited(&mut self) -> Vec<(NodeId, ExitStatus)> {
        self.ids().into_iter().filter_map(|id| self.reap(id).map(|status| (id, status))).collect()
    }

    /// What node `id` says about itself.
    pub async fn status(&self, id: NodeId, timeout: Duration) -> Result<NodeStatus, ClusterError> {
        let client = self.client(id)?;
        client.node_status(0, timeout).await.map_err(|source| ClusterError::Client { id, source })
    }

    /// A client that talks to node `id` only.
    pub fn client(&self, id: NodeId) -> Result<Client, ClusterError> {
        Client::connect(&[self.addr(id).to_string()], &self.connect)
            .map_err(|source| ClusterError::Client { id, source })
    }

    /// The last [`LOG_TAIL_LINES`] lines of node `id`'s log.
    pub fn log_tail(&self, id: NodeId) -> String {
        log_tail(&self.node(id).log_path())
    }

    /// Stops every node: SIGCONT, SIGTERM, then SIGKILL for any node still
    /// alive after [`STOP_GRACE_MS`]. Returns the nodes that needed SIGKILL.
    ///
    /// Async on purpose: while the nodes shut down gracefully they send
    /// GOAWAY on our own idle client connections and wait for them to
    /// close, which needs our runtime to keep running.
    pub async fn stop(&mut self) -> Vec<NodeId> {
        for node in &mut self.nodes {
            if let Some(child) = &node.child {
                let pid = child.id() as libc::pid_t;
                // SAFETY: signalling our own, not yet reaped, child.
                unsafe {
                    libc::kill(pid, libc::SIGCONT);
                    libc::kill(pid, libc::SIGTERM);
                }
                node.paused = false;
            }
        }
        let deadline = Instant::now() + Duration::from_millis(STOP_GRACE_MS);
        let mut killed = Vec::new();
        for node in &mut self.nodes {
            let Some(mut child) = node.child.take() else { continue };
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        killed.push(node.id);
                        break;
                    }
                    Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }
        killed
    }

    /// Removes every node's data directory (logs stay). Only for a stopped
    /// cluster.
    pub fn remove_data(&self) -> io::Result<()> {
        for node in &self.nodes {
            assert!(node.child.is_none(), "removing the data of running node {}", node.id);
            match fs::remove_dir_all(node.data_dir()) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    fn node(&self, id: NodeId) -> &Node {
        self.nodes.iter().find(|n| n.id == id).unwrap_or_else(|| panic!("no node {id} in this cluster"))
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.id == id).unwrap_or_else(|| panic!("no node {id} in this cluster"))
    }

    /// If node `id`'s process has exited, forgets it and returns how it
    /// exited.
    fn reap(&mut self, id: NodeId) -> Option<ExitStatus> {
        let node = self.node_mut(id);
        let status = node.child.as_mut()?.try_wait().ok()??;
        node.child = None;
        node.paused = false;
        Some(status)
    }

    fn signal(&mut self, id: NodeId, signal: i32, name: &'static str) -> Result<(), ClusterError> {
        let child = self.node(id).child.as_ref().ok_or(ClusterError::NotRunning(id))?;
        // SAFETY: signalling our own child; it is not reaped while we hold
        // its `Child`, so the pid cannot have been reused.
        if unsafe { libc::kill(child.id() as libc::pid_t, signal) } != 0 {
            return Err(ClusterError::Signal { id, signal: name, source: io::Error::last_os_error() });
        }
        Ok(())
    }

    fn spawn(&mut self, id: NodeId) -> Result<(), ClusterError> {
        let kv = self.spec.kv.clone();
        let node = self.node(id);
        assert!(!node.removed, "spawning node {id}, which was removed from the cluster");
        let mut args: Vec<String> = Vec::new();
        if let (Some(_), Some((c, _))) = (&node.join, &self.certs) {
            // A joining node asks a member for the membership over TLS.
            args.extend(["--cacert".into(), c.ca.display().to_string()]);
        }
        args.extend(["serve".into(), "--id".into(), node.raft_id.to_string()]);
        match &node.join {
            None => args.extend(["--cluster".into(), self.members.clone()]),
            Some(endpoints) => args.extend(["--join".into(), endpoints.join(",")]),
        }
        args.extend([
            "--listen".into(),
            self.addr(id).to_string(),
            "--peer-listen".into(),
            self.peer_addr(id).to_string(),
            "--data-dir".into(),
            self.node(id).data_dir().display().to_string(),
            // The clock nemesis moves node clocks through Admin.
            "--enable-test-hooks".into(),
        ]);
        if let Some((c, _)) = &self.certs {
            args.extend(c.serve_args(node.raft_id));
        }
        args.extend(self.spec.serve_args.iter().cloned());
        let node = self.node_mut(id);
        assert!(node.child.is_none(), "node {id} is already running");
        let log_path = node.log_path();
        let prepare = |source| ClusterError::Prepare { path: log_path.clone(), source };
        let mut log = OpenOptions::new().create(true).append(true).open(&log_path).map_err(prepare)?;
        writeln!(log, "==== kv-jepsen: start #{} of node {id}: {} {}", node.starts + 1, kv.display(), args.join(" "))
            .map_err(prepare)?;
        let stderr = log.try_clone().map_err(prepare)?;
        let mut command = Command::new(&kv);
        command.args(&args).stdin(Stdio::null()).stdout(log).stderr(stderr);
        // SAFETY: prctl is async-signal-safe; it only sets a flag on the
        // child between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(|source| ClusterError::Spawn { id, kv: kv.clone(), source })?;
        let pid_path = node.dir.join("kv.pid");
        fs::write(&pid_path, format!("{}\n", child.id()))
            .map_err(|source| ClusterError::Prepare { path: pid_path, source })?;
        node.child = Some(child);
        node.paused = false;
        node.starts += 1;
        Ok(())
    }

    async fn wait_ready(&mut self, id: NodeId) -> Result<(), ClusterError> {
        let client = self.client(id)?;
        let deadline = Instant::now() + Duration::from_millis(READY_TIMEOUT_MS);
        loop {
            let last_error = match client.node_status(0, Duration::from_millis(READY_PROBE_TIMEOUT_MS)).await {
                Ok(_) => return Ok(()),
                Err(e) => e.to_string(),
            };
            if let Some(status) = self.reap(id) {
                let log = self.log_path(id);
                return Err(ClusterError::Exited { id, status, tail: log_tail(&log), log });
            }
            if Instant::now() >= deadline {
                let log = self.log_path(id);
                return Err(ClusterError::NotReady { id, last_error, tail: log_tail(&log), log });
            }
            tokio::time::sleep(Duration::from_millis(READY_POLL_MS)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Two different ports that are free on `ip` right now (the OS picks them;
/// both are held until both are known).
fn free_ports(ip: Ipv4Addr) -> Result<(u16, u16), ClusterError> {
    let port = |l: &TcpListener| Ok(l.local_addr().map_err(|source| ClusterError::Port { ip, source })?.port());
    let a = TcpListener::bind((ip, 0)).map_err(|source| ClusterError::Port { ip, source })?;
    let b = TcpListener::bind((ip, 0)).map_err(|source| ClusterError::Port { ip, source })?;
    Ok((port(&a)?, port(&b)?))
}

/// The last [`LOG_TAIL_LINES`] lines of `path` ("" if unreadable).
fn log_tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)));
        let mut bytes = Vec::new();
        let _ = file.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves: node addresses are 127.0.0.(10+N), distinct, and never the
    // clients' 127.0.0.1.
    #[test]
    fn node_addresses() {
        assert_eq!(node_ip(1), Ipv4Addr::new(127, 0, 0, 11));
        assert_eq!(node_ip(NODES_MAX as NodeId), Ipv4Addr::new(127, 0, 0, 25));
        let all: std::collections::BTreeSet<_> = (1..=NODES_MAX as NodeId).map(node_ip).collect();
        assert_eq!(all.len(), NODES_MAX);
        assert!(!all.contains(&Ipv4Addr::new(127, 0, 0, 1)));
    }

    // Proves: the log tail keeps only the last lines.
    #[test]
    fn log_tail_keeps_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        fs::write(&path, text).unwrap();
        let tail = log_tail(&path);
        assert_eq!(tail.lines().count(), LOG_TAIL_LINES);
        assert!(tail.ends_with("line 99"));
        assert_eq!(log_tail(&dir.path().join("missing")), "");
    }
}

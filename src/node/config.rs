//! Node configuration: `kv serve` flags or a TOML file (`--config FILE`),
//! flags winning over the file. Validation here turns every bad setting into
//! one sentence that says what is wrong and what is expected.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::clock::NodeId;
use crate::levels::quorum::ReadFanout;
use crate::rsm::{RaftSettings, ReadMode};
use crate::topic::TopicSettings;

/// Longest key accepted, in bytes (DESIGN §5).
pub const MAX_KEY_BYTES: usize = 4096;
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Largest `--max-value-bytes` accepted: a peer message of one such cell
/// must fit under the peer message limit (see `node::peer_batch`).
pub const MAX_CONFIGURABLE_VALUE_BYTES: usize = 64 * 1024 * 1024;
/// Default deadline of a client request (like etcdctl's command timeout).
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 5_000;
/// Share of eventual gets followed by a background read repair.
pub const DEFAULT_READ_REPAIR_CHANCE: f64 = 1.0;
/// Largest cluster a node accepts (bounds fan-out and quorum bookkeeping).
pub const MAX_NODES: usize = 15;
/// A node's peer port is its client port plus this, unless its `--cluster`
/// entry names the peer address (`ID=CLIENT/PEER`).
pub const PEER_PORT_OFFSET: u16 = 1000;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// Test-only switches that deliberately break a guarantee, so the test
/// harness can show that its checkers catch the bug (negative controls).
/// Never set them in production; the node logs a loud warning when one is on.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UnsafeTestSwitches {
    /// Quorum gets skip the ABD write-back (read-impose).
    #[serde(default)]
    pub skip_read_impose: bool,
    /// Linearizable gets read the local state machine without ReadIndex.
    #[serde(default)]
    pub linearizable_local_reads: bool,
    /// Linearizable and quorum-CAS operations skip the steps that join the
    /// Raft order with the quorum (ABD) order: no majority read before a
    /// proposal, no write-back of its result, linearizable gets read the
    /// state machine only (quorum writes become invisible to them).
    #[serde(default)]
    pub skip_level_join: bool,
    /// The topic controller completes a partition reassignment at once,
    /// without waiting for the target replicas to be in the ISR (and
    /// elects a target that may lack records): acknowledged records are
    /// lost.
    #[serde(default)]
    pub reassign_without_catch_up: bool,
    /// Tombstone GC purges tombstones past the grace period without
    /// checking that every replica holds them (a deleted value can come
    /// back from a replica that missed the delete).
    #[serde(default)]
    pub gc_skip_replica_check: bool,
    /// Quorum replica-set changes skip the state transfer: the new set
    /// takes over holding nothing of what the old one acknowledged.
    #[serde(default)]
    pub quorum_reconfig_skip_transfer: bool,
}

impl UnsafeTestSwitches {
    pub fn any(&self) -> bool {
        self.skip_read_impose
            || self.linearizable_local_reads
            || self.skip_level_join
            || self.reassign_without_catch_up
            || self.gc_skip_replica_check
            || self.quorum_reconfig_skip_transfer
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct NodeConfig {
    pub id: NodeId,
    pub data_dir: PathBuf,
    /// Address the client services (Kv, Topics, Cluster) bind.
    pub listen: SocketAddr,
    /// Address the peer services (Peer, TopicPeer, Admin) bind.
    pub peer_listen: SocketAddr,
    /// Every member, including this node: id → the host:port clients are
    /// told to use (client port).
    pub cluster: BTreeMap<NodeId, String>,
    /// Every member, including this node: id → the host:port peers dial
    /// (peer port).
    pub peer_cluster: BTreeMap<NodeId, String>,
    /// The quorum level's replicas: the founding members (`--cluster`), or,
    /// for a node that joined (`kv serve --join`), the set the cluster told
    /// it (saved in its data directory, `cli::join`).
    pub quorum_replicas: Vec<NodeId>,
    /// Which replicas a quorum read asks first (`--quorum-read-fanout`).
    pub quorum_read_fanout: ReadFanout,
    pub max_value_bytes: usize,
    pub request_timeout_ms: u64,
    /// Period of anti-entropy rounds (eventual level), one peer per round.
    pub anti_entropy_interval_ms: u64,
    /// Whether writes that could not reach a peer are kept as hints.
    pub hinted_handoff: bool,
    /// Share of eventual gets that queue a background read repair, in [0, 1].
    pub read_repair_chance: f64,
    /// A peer stamp further ahead than this does not move our clock.
    pub max_clock_drift_ms: u64,
    /// Tombstones older than this, held by every replica, are purged
    /// (`crate::tombstone_gc`).
    pub gc_grace_ms: u64,
    pub raft: RaftSettings,
    /// Topic layer settings (liveness timeout, default ISR lag, retention checks).
    pub topics: TopicSettings,
    pub unsafe_test: UnsafeTestSwitches,
    /// Where `/metrics` (Prometheus text) is served; `None` = not served.
    pub metrics_listen: Option<SocketAddr>,
    /// KV requests taking this long or longer log a WARN line (0 = every request).
    pub slow_request_ms: u64,
    /// Client writes that add data are refused while the data directory's
    /// filesystem has less free (`node::disk_space`; 0 = never refused).
    pub min_free_disk_bytes: u64,
    /// Client tokens and their roles (`node::auth`); `None` = no token checks.
    pub token_file: Option<PathBuf>,
    /// Serve the Admin test hooks (clock offset) on the peer port.
    pub enable_test_hooks: bool,
    /// TLS on both ports (mutual between peers); `None` = plaintext.
    pub tls: Option<TlsFiles>,
}

/// `--tls-cert`, `--tls-key`, `--tls-ca`: this node's certificate (PEM,
/// valid for its hosts and for the DNS name `node-<ID>`), its private key,
/// and the cluster CA that signs every node's (and client's) certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl NodeConfig {
    pub fn peers(&self) -> Vec<NodeId> {
        self.cluster.keys().copied().filter(|&id| id != self.id).collect()
    }

    pub fn majority(&self) -> usize {
        self.cluster.len() / 2 + 1
    }
}

/// The TOML file: same names as the flags, with `_` instead of `-`.
/// `kv serve --print-config` prints the effective configuration in this
/// format (every setting, defaults included), so its output is a valid file.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<NodeId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_value_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anti_entropy_interval_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hinted_handoff: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_repair_chance: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_clock_drift_ms: Option<u64>,
    /// `--gc-grace` in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gc_grace_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raft_tick_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raft_election_ticks: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raft_heartbeat_ticks: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raft_snapshot_entries: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raft_catch_up_entries: Option<u64>,
    /// "read-index" (default) or "lease".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_mode: Option<String>,
    /// "majority" (default) or "all".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quorum_read_fanout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic_node_timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica_lag_time_max_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic_retention_check_ms: Option<u64>,
    /// Log filter (RUST_LOG syntax); the `--log` flag and `RUST_LOG` win.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// "text" (default) or "json".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
    /// Either "1=host:port,2=host:port" or a table `[cluster] 1 = "host:port"`.
    /// (Tables come last in the printed file, as TOML requires.)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterSpec>,
    #[serde(default, skip_serializing_if = "UnsafeTestSwitches::is_off")]
    pub unsafe_test: UnsafeTestSwitches,
    /// HOST:PORT of the Prometheus `/metrics` endpoint (off when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_request_ms: Option<u64>,
    /// MiB that must stay free under the data directory for client writes
    /// to be taken (default 256; 0 = no reserve).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_free_disk_mb: Option<u64>,
    /// Token file (`TOKEN ROLE` lines); client requests need a token when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_test_hooks: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// Where the settings came from, to name the file and line in errors.
    #[serde(skip)]
    pub source: Option<FileSource>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ClusterSpec {
    Text(String),
    Table(BTreeMap<String, String>),
}

/// The file a [`FileConfig`] was read from and the line of each key in it
/// (`table.key` for keys inside a table).
#[derive(Debug, Default)]
pub struct FileSource {
    pub path: PathBuf,
    pub lines: BTreeMap<String, usize>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        FileConfig::parse(&text, path)
    }

    /// Parses the file's `text`; errors name `path` and the line.
    pub fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
        let mut file: FileConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|span| line_of(text, span.start));
            let at = line.map_or(String::new(), |l| format!(", line {l}"));
            ConfigError(format!("invalid config file {}{at}: {}", path.display(), e.message().trim_end()))
        })?;
        file.source = Some(FileSource { path: path.to_path_buf(), lines: key_lines(text) });
        Ok(file)
    }

    /// ` (set by KEY in FILE line N)` when `key` came from this file and no
    /// flag overrode it (`overridden`); empty otherwise.
    fn origin(&self, key: &str, overridden: bool) -> String {
        match &self.source {
            Some(src) if !overridden => match src.lines.get(key) {
                Some(line) => format!(" (set by `{key}` in {} line {line})", src.path.display()),
                None => String::new(),
            },
            _ => String::new(),
        }
    }
}

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// The line of each `key = ...` in a TOML text, by (dotted) name. A plain
/// scan, not a parser: it runs only after the text parsed, to locate keys
/// for messages about their values.
fn key_lines(text: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let mut table = String::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            table = name.trim().to_string();
            continue;
        }
        let Some((key, _)) = line.split_once('=') else { continue };
        let key = key.trim().trim_matches('"');
        if key.is_empty() || key.starts_with('#') {
            continue;
        }
        let name = if table.is_empty() { key.to_string() } else { format!("{table}.{key}") };
        out.entry(name).or_insert(i + 1);
    }
    out
}

impl UnsafeTestSwitches {
    fn is_off(&self) -> bool {
        !self.any()
    }
}

impl NodeConfig {
    /// The configuration as a TOML file that resolves to exactly this
    /// configuration (`kv serve --print-config`).
    pub fn to_file(&self) -> FileConfig {
        FileConfig {
            id: Some(self.id),
            data_dir: Some(self.data_dir.clone()),
            listen: Some(self.listen.to_string()),
            peer_listen: Some(self.peer_listen.to_string()),
            max_value_bytes: Some(self.max_value_bytes),
            request_timeout_ms: Some(self.request_timeout_ms),
            anti_entropy_interval_ms: Some(self.anti_entropy_interval_ms),
            hinted_handoff: Some(self.hinted_handoff),
            read_repair_chance: Some(self.read_repair_chance),
            max_clock_drift_ms: Some(self.max_clock_drift_ms),
            gc_grace_ms: Some(self.gc_grace_ms),
            raft_tick_ms: Some(self.raft.tick_ms),
            raft_election_ticks: Some(self.raft.election_ticks),
            raft_heartbeat_ticks: Some(self.raft.heartbeat_ticks),
            raft_snapshot_entries: Some(self.raft.snapshot_entries),
            raft_catch_up_entries: Some(self.raft.catch_up_entries),
            read_mode: Some(read_mode_name(self.raft.read_mode).to_string()),
            quorum_read_fanout: Some(read_fanout_name(self.quorum_read_fanout).to_string()),
            topic_node_timeout_ms: Some(self.topics.node_timeout_ms),
            replica_lag_time_max_ms: Some(self.topics.replica_lag_time_max_ms),
            topic_retention_check_ms: Some(self.topics.retention_check_interval_ms),
            log: None,
            log_format: None,
            cluster: Some(ClusterSpec::Table(
                self.cluster.iter().map(|(id, a)| (id.to_string(), format!("{a}/{}", self.peer_cluster[id]))).collect(),
            )),
            unsafe_test: self.unsafe_test.clone(),
            metrics_listen: self.metrics_listen.map(|a| a.to_string()),
            slow_request_ms: Some(self.slow_request_ms),
            min_free_disk_mb: Some(self.min_free_disk_bytes >> 20),
            token_file: self.token_file.clone(),
            enable_test_hooks: Some(self.enable_test_hooks),
            tls_cert: self.tls.as_ref().map(|t| t.cert.clone()),
            tls_key: self.tls.as_ref().map(|t| t.key.clone()),
            tls_ca: self.tls.as_ref().map(|t| t.ca.clone()),
            source: None,
        }
    }
}

/// The members named by `--cluster`: each node's client and peer address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Members {
    /// id → client address (Kv, Topics, Cluster).
    pub client: BTreeMap<NodeId, String>,
    /// id → peer address (Peer, TopicPeer, Admin).
    pub peer: BTreeMap<NodeId, String>,
}

/// Parses `1=127.0.0.1:7001,2=127.0.0.1:7002,...`; an entry may give the
/// peer address after a slash (`1=127.0.0.1:7001/127.0.0.1:9001`),
/// otherwise it is the client address with the port plus [`PEER_PORT_OFFSET`].
pub fn parse_cluster(spec: &str) -> Result<Members, ConfigError> {
    let mut out = Members::default();
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((id, addr)) = entry.split_once('=') else {
            return err(format!(
                "malformed --cluster entry {entry:?}: expected ID=HOST:PORT or ID=HOST:PORT/HOST:PEER_PORT, e.g. 1=127.0.0.1:7001"
            ));
        };
        insert_member(&mut out, id, addr)?;
    }
    if out.client.is_empty() {
        return err(
            "--cluster is empty: expected ID=HOST:PORT,... e.g. 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003",
        );
    }
    Ok(out)
}

/// The `--cluster` text naming both addresses of each node, in the order
/// given: `(id, client address, peer address)` → `1=C/P,2=C/P,...`, the
/// inverse of [`parse_cluster`].
pub fn cluster_spec<C: std::fmt::Display, P: std::fmt::Display>(
    members: impl IntoIterator<Item = (NodeId, C, P)>,
) -> String {
    members.into_iter().map(|(id, client, peer)| format!("{id}={client}/{peer}")).collect::<Vec<_>>().join(",")
}

fn insert_member(out: &mut Members, id: &str, addr: &str) -> Result<(), ConfigError> {
    let id: NodeId = match id.trim().parse() {
        Ok(n) if n > 0 => n,
        _ => return err(format!("malformed --cluster entry: node id {id:?} must be a positive integer")),
    };
    let bad = |m: String| ConfigError(format!("malformed --cluster entry for node {id}: {m}"));
    let (client, peer) = match addr.split_once('/') {
        Some((c, p)) => (c.trim(), Some(p.trim())),
        None => (addr.trim(), None),
    };
    validate_host_port(client).map_err(bad)?;
    let peer = match peer {
        Some(p) => {
            validate_host_port(p).map_err(|m| bad(format!("peer {m}")))?;
            p.to_string()
        }
        None => default_peer_addr(client).map_err(bad)?,
    };
    if client == peer {
        return Err(bad(format!("client and peer address are both {client:?}; they must differ")));
    }
    if out.client.insert(id, client.to_string()).is_some() {
        return err(format!("malformed --cluster: node id {id} appears twice"));
    }
    out.peer.insert(id, peer);
    Ok(())
}

/// `host:port` → `host:(port + PEER_PORT_OFFSET)`; `addr` is valid HOST:PORT.
pub fn default_peer_addr(addr: &str) -> Result<String, String> {
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| format!("address {addr:?} has no port"))?;
    let port: u16 = port.parse().map_err(|_| format!("address {addr:?} has an invalid port"))?;
    match port.checked_add(PEER_PORT_OFFSET) {
        Some(p) => Ok(format!("{host}:{p}")),
        None => Err(format!(
            "port {port} + {PEER_PORT_OFFSET} (the default peer port) exceeds 65535: give the peer address as {addr}/HOST:PEER_PORT"
        )),
    }
}

pub use capkv_proto::channel::validate_host_port;

/// Everything `kv serve` can be told on the command line.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// Set by `kv serve --join`: this node joins a running cluster (whose
    /// members are in `cluster`, this node included) and these are the
    /// quorum level's replicas the cluster reported.
    pub join_quorum_replicas: Option<Vec<NodeId>>,
    pub id: Option<NodeId>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub peer_listen: Option<String>,
    pub cluster: Option<String>,
    pub max_value_bytes: Option<usize>,
    pub request_timeout_ms: Option<u64>,
    pub anti_entropy_interval_ms: Option<u64>,
    pub hinted_handoff: Option<bool>,
    pub read_repair_chance: Option<f64>,
    pub max_clock_drift_ms: Option<u64>,
    /// `--gc-grace`, in ms.
    pub gc_grace_ms: Option<u64>,
    pub raft_tick_ms: Option<u64>,
    pub raft_election_ticks: Option<usize>,
    pub raft_heartbeat_ticks: Option<usize>,
    pub raft_snapshot_entries: Option<u64>,
    pub raft_catch_up_entries: Option<u64>,
    pub read_mode: Option<String>,
    pub quorum_read_fanout: Option<String>,
    pub topic_node_timeout_ms: Option<u64>,
    pub replica_lag_time_max_ms: Option<u64>,
    pub topic_retention_check_ms: Option<u64>,
    pub unsafe_skip_read_impose: bool,
    pub unsafe_linearizable_local_reads: bool,
    pub unsafe_skip_level_join: bool,
    pub unsafe_reassign_without_catch_up: bool,
    pub unsafe_gc_skip_replica_check: bool,
    pub metrics_listen: Option<String>,
    pub slow_request_ms: Option<u64>,
    pub min_free_disk_mb: Option<u64>,
    pub token_file: Option<PathBuf>,
    pub enable_test_hooks: bool,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
}

/// The name `parse_read_mode` reads back.
pub fn read_mode_name(mode: ReadMode) -> &'static str {
    match mode {
        ReadMode::ReadIndex => "read-index",
        ReadMode::Lease => "lease",
        ReadMode::UnsafeUnboundedLease => "unsafe-unbounded-lease",
    }
}

/// How `kv serve` writes its log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

pub fn parse_log_format(s: &str) -> Result<LogFormat, ConfigError> {
    match s {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => err(format!("unknown log format {s:?}: expected text or json")),
    }
}

/// The name `parse_read_fanout` reads back.
pub fn read_fanout_name(fanout: ReadFanout) -> &'static str {
    match fanout {
        ReadFanout::Majority => "majority",
        ReadFanout::All => "all",
    }
}

pub fn parse_read_fanout(s: &str) -> Result<ReadFanout, ConfigError> {
    match s {
        "majority" => Ok(ReadFanout::Majority),
        "all" => Ok(ReadFanout::All),
        _ => err(format!("unknown quorum read fan-out {s:?}: expected majority or all")),
    }
}

pub fn parse_read_mode(s: &str) -> Result<ReadMode, ConfigError> {
    match s {
        "read-index" | "readindex" => Ok(ReadMode::ReadIndex),
        "lease" => Ok(ReadMode::Lease),
        "unsafe-unbounded-lease" => Ok(ReadMode::UnsafeUnboundedLease),
        _ => err(format!("unknown read mode {s:?}: expected read-index or lease")),
    }
}

/// `text` (HOST:PORT) as an address to bind; `flag` names it in errors.
fn socket_addr(flag: &str, text: &str, origin: &str) -> Result<SocketAddr, ConfigError> {
    validate_host_port(text).map_err(|m| ConfigError(format!("invalid {flag}: {m}{origin}")))?;
    if let Ok(a) = text.parse() {
        return Ok(a);
    }
    use std::net::ToSocketAddrs;
    match text.to_socket_addrs().ok().and_then(|mut a| a.next()) {
        Some(a) => Ok(a),
        None => err(format!("invalid {flag} {text:?}: cannot resolve it to an address{origin}")),
    }
}

/// Builds the node configuration from an optional file and flag overrides.
pub fn resolve(file: Option<FileConfig>, o: Overrides) -> Result<NodeConfig, ConfigError> {
    let file = file.unwrap_or_default();
    let Some(id) = o.id.or(file.id) else {
        return err("missing node id: pass --id N (or `id = N` in the config file)");
    };
    if id == 0 {
        return err(format!("node id must be a positive integer{}", file.origin("id", o.id.is_some())));
    }
    let Some(data_dir) = o.data_dir.or_else(|| file.data_dir.clone()) else {
        return err("missing data directory: pass --data-dir DIR (or `data_dir = \"DIR\"` in the config file)");
    };
    let cluster = match (o.cluster, &file.cluster) {
        (Some(spec), _) => parse_cluster(&spec)?,
        (None, Some(ClusterSpec::Text(spec))) => {
            parse_cluster(spec).map_err(|e| ConfigError(format!("{e}{}", file.origin("cluster", false))))?
        }
        (None, Some(ClusterSpec::Table(t))) => {
            let mut out = Members::default();
            for (id, addr) in t {
                insert_member(&mut out, id, addr)
                    .map_err(|e| ConfigError(format!("{e}{}", file.origin(&format!("cluster.{id}"), false))))?;
            }
            out
        }
        (None, None) => {
            return err("missing --cluster: expected ID=HOST:PORT,... listing every node, this one included")
        }
    };
    let Members { client: cluster, peer: peer_cluster } = cluster;
    if cluster.len() > MAX_NODES {
        return err(format!("--cluster lists {} nodes; at most {MAX_NODES} are supported", cluster.len()));
    }
    let Some(own) = cluster.get(&id) else {
        return err(format!("--cluster does not list this node's id {id}: include {id}=HOST:PORT"));
    };
    let listen_text = o.listen.clone().or_else(|| file.listen.clone()).unwrap_or_else(|| own.clone());
    let listen = socket_addr("--listen", &listen_text, &file.origin("listen", o.listen.is_some()))?;
    // Like --listen, --peer-listen defaults to this node's own entry: its
    // peer address (the client port + PEER_PORT_OFFSET unless the entry names it).
    let peer_origin = file.origin("peer_listen", o.peer_listen.is_some());
    let peer_listen_text =
        o.peer_listen.or_else(|| file.peer_listen.clone()).unwrap_or_else(|| peer_cluster[&id].clone());
    let peer_listen = socket_addr("--peer-listen", &peer_listen_text, &peer_origin)?;
    if peer_listen == listen {
        return err(format!(
            "--peer-listen {peer_listen} is the client address (--listen); they must differ{peer_origin}"
        ));
    }
    let max_value_bytes = o.max_value_bytes.or(file.max_value_bytes).unwrap_or(DEFAULT_MAX_VALUE_BYTES);
    if max_value_bytes == 0 || max_value_bytes > MAX_CONFIGURABLE_VALUE_BYTES {
        return err(format!(
            "--max-value-bytes {max_value_bytes} is out of range: expected 1 to {MAX_CONFIGURABLE_VALUE_BYTES}{}",
            file.origin("max_value_bytes", o.max_value_bytes.is_some())
        ));
    }
    let request_timeout_ms = o.request_timeout_ms.or(file.request_timeout_ms).unwrap_or(DEFAULT_REQUEST_TIMEOUT_MS);
    if request_timeout_ms == 0 {
        return err(format!(
            "--request-timeout-ms must be positive{}",
            file.origin("request_timeout_ms", o.request_timeout_ms.is_some())
        ));
    }
    let d = RaftSettings::default();
    let raft = RaftSettings {
        tick_ms: o.raft_tick_ms.or(file.raft_tick_ms).unwrap_or(d.tick_ms),
        election_ticks: o.raft_election_ticks.or(file.raft_election_ticks).unwrap_or(d.election_ticks),
        heartbeat_ticks: o.raft_heartbeat_ticks.or(file.raft_heartbeat_ticks).unwrap_or(d.heartbeat_ticks),
        snapshot_entries: o.raft_snapshot_entries.or(file.raft_snapshot_entries).unwrap_or(d.snapshot_entries),
        catch_up_entries: o.raft_catch_up_entries.or(file.raft_catch_up_entries).unwrap_or(d.catch_up_entries),
        read_mode: match (&o.read_mode, &file.read_mode) {
            (Some(m), _) => parse_read_mode(m)?,
            (None, Some(m)) => {
                parse_read_mode(m).map_err(|e| ConfigError(format!("{e}{}", file.origin("read_mode", false))))?
            }
            (None, None) => d.read_mode,
        },
        join: o.join_quorum_replicas.is_some(),
    };
    if raft.tick_ms == 0 || raft.tick_ms > 10_000 {
        return err(format!(
            "--raft-tick-ms {} is out of range: 1 to 10000{}",
            raft.tick_ms,
            file.origin("raft_tick_ms", o.raft_tick_ms.is_some())
        ));
    }
    if raft.heartbeat_ticks == 0 || raft.election_ticks <= raft.heartbeat_ticks {
        return err(format!(
            "--raft-election-ticks ({}) must exceed --raft-heartbeat-ticks ({}), which must be positive{}{}",
            raft.election_ticks,
            raft.heartbeat_ticks,
            file.origin("raft_election_ticks", o.raft_election_ticks.is_some()),
            file.origin("raft_heartbeat_ticks", o.raft_heartbeat_ticks.is_some())
        ));
    }
    if raft.snapshot_entries == 0 {
        return err(format!(
            "--raft-snapshot-entries must be positive{}",
            file.origin("raft_snapshot_entries", o.raft_snapshot_entries.is_some())
        ));
    }
    let td = TopicSettings::default();
    let topics = TopicSettings {
        node_timeout_ms: o.topic_node_timeout_ms.or(file.topic_node_timeout_ms).unwrap_or(td.node_timeout_ms),
        replica_lag_time_max_ms: o
            .replica_lag_time_max_ms
            .or(file.replica_lag_time_max_ms)
            .unwrap_or(td.replica_lag_time_max_ms),
        retention_check_interval_ms: o
            .topic_retention_check_ms
            .or(file.topic_retention_check_ms)
            .unwrap_or(td.retention_check_interval_ms),
        unsafe_reassign_without_catch_up: o.unsafe_reassign_without_catch_up
            || file.unsafe_test.reassign_without_catch_up,
    };
    for (flag, key, v, overridden) in [
        ("--topic-node-timeout-ms", "topic_node_timeout_ms", topics.node_timeout_ms, o.topic_node_timeout_ms.is_some()),
        (
            "--replica-lag-time-max-ms",
            "replica_lag_time_max_ms",
            topics.replica_lag_time_max_ms,
            o.replica_lag_time_max_ms.is_some(),
        ),
        (
            "--topic-retention-check-ms",
            "topic_retention_check_ms",
            topics.retention_check_interval_ms,
            o.topic_retention_check_ms.is_some(),
        ),
    ] {
        if !(100..=3_600_000).contains(&v) {
            return err(format!("{flag} {v} is out of range: 100 to 3600000{}", file.origin(key, overridden)));
        }
    }
    let read_repair_chance = o.read_repair_chance.or(file.read_repair_chance).unwrap_or(DEFAULT_READ_REPAIR_CHANCE);
    if !(0.0..=1.0).contains(&read_repair_chance) {
        return err(format!(
            "--read-repair-chance {read_repair_chance} is out of range: 0 to 1{}",
            file.origin("read_repair_chance", o.read_repair_chance.is_some())
        ));
    }
    let unsafe_test = UnsafeTestSwitches {
        skip_read_impose: o.unsafe_skip_read_impose || file.unsafe_test.skip_read_impose,
        linearizable_local_reads: o.unsafe_linearizable_local_reads || file.unsafe_test.linearizable_local_reads,
        skip_level_join: o.unsafe_skip_level_join || file.unsafe_test.skip_level_join,
        reassign_without_catch_up: o.unsafe_reassign_without_catch_up || file.unsafe_test.reassign_without_catch_up,
        gc_skip_replica_check: o.unsafe_gc_skip_replica_check || file.unsafe_test.gc_skip_replica_check,
        quorum_reconfig_skip_transfer: file.unsafe_test.quorum_reconfig_skip_transfer,
    };
    let max_clock_drift_ms = o.max_clock_drift_ms.or(file.max_clock_drift_ms).unwrap_or(500);
    let gc_grace_ms = o.gc_grace_ms.or(file.gc_grace_ms).unwrap_or(crate::tombstone_gc::rule::DEFAULT_GC_GRACE_MS);
    // Versions of writes made after a purge must land above the purged
    // tombstones; a clock behind by more than the grace could not.
    if gc_grace_ms <= max_clock_drift_ms {
        return err(format!(
            "--gc-grace {gc_grace_ms} ms must exceed --max-clock-drift-ms ({max_clock_drift_ms}){}",
            file.origin("gc_grace_ms", o.gc_grace_ms.is_some())
        ));
    }
    let tls = match (
        o.tls_cert.or_else(|| file.tls_cert.clone()),
        o.tls_key.or_else(|| file.tls_key.clone()),
        o.tls_ca.or_else(|| file.tls_ca.clone()),
    ) {
        (None, None, None) => None,
        (Some(cert), Some(key), Some(ca)) => Some(TlsFiles { cert, key, ca }),
        (cert, key, ca) => {
            let missing: Vec<&str> =
                [("--tls-cert", cert.is_none()), ("--tls-key", key.is_none()), ("--tls-ca", ca.is_none())]
                    .into_iter()
                    .filter_map(|(flag, absent)| absent.then_some(flag))
                    .collect();
            return err(format!(
                "TLS needs --tls-cert, --tls-key and --tls-ca together; missing {}",
                missing.join(" and ")
            ));
        }
    };
    let metrics_origin = file.origin("metrics_listen", o.metrics_listen.is_some());
    let metrics_listen = match o.metrics_listen.or_else(|| file.metrics_listen.clone()) {
        Some(text) => Some(parse_metrics_listen(&text, &metrics_origin)?),
        None => None,
    };
    let min_free_disk_mb =
        o.min_free_disk_mb.or(file.min_free_disk_mb).unwrap_or(crate::node::disk_space::DEFAULT_MIN_FREE_DISK_MB);
    let Some(min_free_disk_bytes) = min_free_disk_mb.checked_mul(1 << 20) else {
        return err(format!("--min-free-disk-mb {min_free_disk_mb} is too large"));
    };
    let quorum_read_fanout = match (&o.quorum_read_fanout, &file.quorum_read_fanout) {
        (Some(f), _) => parse_read_fanout(f)?,
        (None, Some(f)) => {
            parse_read_fanout(f).map_err(|e| ConfigError(format!("{e}{}", file.origin("quorum_read_fanout", false))))?
        }
        (None, None) => ReadFanout::Majority,
    };
    let quorum_replicas = match o.join_quorum_replicas {
        Some(r) => r,
        None => cluster.keys().copied().collect(),
    };
    Ok(NodeConfig {
        id,
        data_dir,
        listen,
        peer_listen,
        cluster,
        peer_cluster,
        quorum_replicas,
        quorum_read_fanout,
        max_value_bytes,
        request_timeout_ms,
        anti_entropy_interval_ms: o
            .anti_entropy_interval_ms
            .or(file.anti_entropy_interval_ms)
            .unwrap_or(10_000)
            .max(100),
        hinted_handoff: o.hinted_handoff.or(file.hinted_handoff).unwrap_or(true),
        read_repair_chance,
        max_clock_drift_ms,
        gc_grace_ms,
        raft,
        topics,
        unsafe_test,
        metrics_listen,
        slow_request_ms: o.slow_request_ms.or(file.slow_request_ms).unwrap_or(DEFAULT_SLOW_REQUEST_MS),
        min_free_disk_bytes,
        token_file: o.token_file.or_else(|| file.token_file.clone()),
        enable_test_hooks: o.enable_test_hooks || file.enable_test_hooks.unwrap_or(false),
        tls,
    })
}

/// Default of `--slow-request-ms`: a KV request this slow is worth a WARN
/// line (about 1000 times a loopback quorum write).
pub const DEFAULT_SLOW_REQUEST_MS: u64 = 1000;

/// `--metrics-listen HOST:PORT` as an address to bind. An IP address may
/// take port 0 (the system picks one; the node logs which), as tests do.
fn parse_metrics_listen(text: &str, origin: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(a) = text.parse() {
        return Ok(a);
    }
    socket_addr("--metrics-listen", text, origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Overrides {
        Overrides {
            id: Some(1),
            data_dir: Some("/tmp/x".into()),
            cluster: Some("1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003".into()),
            ..Default::default()
        }
    }

    #[test]
    fn resolves_flags_with_defaults() {
        let c = resolve(None, base()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7001");
        assert_eq!(c.peers(), vec![2, 3]);
        assert_eq!(c.majority(), 2);
        assert_eq!(c.max_value_bytes, DEFAULT_MAX_VALUE_BYTES);
    }

    #[test]
    fn malformed_cluster_says_what_is_expected() {
        for (spec, needle) in [
            ("1=127.0.0.1:7001,2", "expected ID=HOST:PORT"),
            ("x=127.0.0.1:7001", "positive integer"),
            ("1=127.0.0.1", "no port"),
            ("1=127.0.0.1:99999", "invalid port"),
            ("1=a:1,1=b:2", "appears twice"),
            ("", "empty"),
        ] {
            let e = parse_cluster(spec).unwrap_err().to_string();
            assert!(e.contains(needle), "{spec:?}: {e}");
        }
        let e = resolve(None, Overrides { id: Some(4), ..base() }).unwrap_err().to_string();
        assert!(e.contains("does not list this node's id 4"), "{e}");
    }

    #[test]
    fn toml_file_with_table_and_flag_override() {
        let f: FileConfig = toml::from_str(
            "id = 2\ndata_dir = \"/d\"\nmax_value_bytes = 100\n[cluster]\n1 = \"127.0.0.1:1\"\n2 = \"127.0.0.1:2\"\n",
        )
        .unwrap();
        let c = resolve(Some(f), Overrides { max_value_bytes: Some(200), ..Default::default() }).unwrap();
        assert_eq!(c.id, 2);
        assert_eq!(c.listen.to_string(), "127.0.0.1:2");
        assert_eq!(c.max_value_bytes, 200);
        let bad = toml::from_str::<FileConfig>("idd = 1").unwrap_err().message().to_string();
        assert!(bad.contains("unknown field"), "{bad}");
    }

    // Proves: a node's peer address is its client port + 1000 unless its
    // entry names it; --peer-listen defaults to this node's peer address,
    // and flags or the file override it.
    #[test]
    fn peer_addresses_default_to_client_port_plus_1000() {
        let c = resolve(None, base()).unwrap();
        assert_eq!(c.peer_listen.to_string(), "127.0.0.1:8001");
        assert_eq!(c.peer_cluster[&2], "127.0.0.1:8002");
        assert_eq!(c.cluster[&2], "127.0.0.1:7002");
        let spec = "1=127.0.0.1:7001/127.0.0.1:9001,2=127.0.0.1:7002".to_string();
        let c = resolve(None, Overrides { cluster: Some(spec), ..base() }).unwrap();
        assert_eq!(c.peer_listen.to_string(), "127.0.0.1:9001");
        assert_eq!(c.peer_cluster[&1], "127.0.0.1:9001");
        assert_eq!(c.peer_cluster[&2], "127.0.0.1:8002");
        let c = resolve(None, Overrides { peer_listen: Some("127.0.0.1:9999".into()), ..base() }).unwrap();
        assert_eq!(c.peer_listen.to_string(), "127.0.0.1:9999");
        let f: FileConfig = toml::from_str("peer_listen = \"127.0.0.1:9998\"").unwrap();
        assert_eq!(resolve(Some(f), base()).unwrap().peer_listen.to_string(), "127.0.0.1:9998");
        let e = resolve(None, Overrides { peer_listen: Some("127.0.0.1:7001".into()), ..base() }).unwrap_err();
        assert!(e.to_string().contains("they must differ"), "{e}");
        for (spec, needle) in [
            ("1=127.0.0.1:7001/127.0.0.1", "peer address \"127.0.0.1\" has no port"),
            ("1=127.0.0.1:7001/127.0.0.1:7001", "they must differ"),
            ("1=127.0.0.1:65000", "exceeds 65535"),
        ] {
            let e = parse_cluster(spec).unwrap_err().to_string();
            assert!(e.contains(needle), "{spec:?}: {e}");
        }
    }

    #[test]
    fn cluster_spec_parses_back_to_its_members() {
        let spec = cluster_spec([(1, "127.0.0.1:7001", "127.0.0.1:9001"), (2, "127.0.0.2:7002", "127.0.0.2:9002")]);
        assert_eq!(spec, "1=127.0.0.1:7001/127.0.0.1:9001,2=127.0.0.2:7002/127.0.0.2:9002");
        let m = parse_cluster(&spec).unwrap();
        assert_eq!(m.client[&2], "127.0.0.2:7002");
        assert_eq!(m.peer[&1], "127.0.0.1:9001");
    }

    #[test]
    fn metrics_listen_is_off_by_default_and_checked() {
        assert_eq!(resolve(None, base()).unwrap().metrics_listen, None);
        let c = resolve(None, Overrides { metrics_listen: Some("127.0.0.1:9101".into()), ..base() }).unwrap();
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9101".parse().unwrap()));
        let c = resolve(None, Overrides { metrics_listen: Some("127.0.0.1:0".into()), ..base() }).unwrap();
        assert_eq!(c.metrics_listen, Some("127.0.0.1:0".parse().unwrap()));
        let f: FileConfig = toml::from_str("metrics_listen = \"127.0.0.1:9102\"").unwrap();
        assert_eq!(resolve(Some(f), base()).unwrap().metrics_listen, Some("127.0.0.1:9102".parse().unwrap()));
        let e = resolve(None, Overrides { metrics_listen: Some("127.0.0.1".into()), ..base() }).unwrap_err();
        assert!(e.to_string().contains("--metrics-listen"), "{e}");
    }

    #[test]
    fn min_free_disk_mb_defaults_and_overrides() {
        let mib = 1u64 << 20;
        assert_eq!(
            resolve(None, base()).unwrap().min_free_disk_bytes,
            crate::node::disk_space::DEFAULT_MIN_FREE_DISK_MB * mib
        );
        let f: FileConfig = toml::from_str("min_free_disk_mb = 1024").unwrap();
        assert_eq!(resolve(Some(f), base()).unwrap().min_free_disk_bytes, 1024 * mib);
        let f: FileConfig = toml::from_str("min_free_disk_mb = 1024").unwrap();
        let c = resolve(Some(f), Overrides { min_free_disk_mb: Some(0), ..base() }).unwrap();
        assert_eq!(c.min_free_disk_bytes, 0);
        let e = resolve(None, Overrides { min_free_disk_mb: Some(u64::MAX), ..base() }).unwrap_err();
        assert!(e.to_string().contains("too large"), "{e}");
    }

    #[test]
    fn slow_request_ms_defaults_and_overrides() {
        assert_eq!(resolve(None, base()).unwrap().slow_request_ms, DEFAULT_SLOW_REQUEST_MS);
        let f: FileConfig = toml::from_str("slow_request_ms = 250").unwrap();
        assert_eq!(resolve(Some(f), base()).unwrap().slow_request_ms, 250);
        let f: FileConfig = toml::from_str("slow_request_ms = 250").unwrap();
        let c = resolve(Some(f), Overrides { slow_request_ms: Some(0), ..base() }).unwrap();
        assert_eq!(c.slow_request_ms, 0);
    }

    #[test]
    fn file_errors_name_the_file_and_line() {
        let path = Path::new("node.toml");
        let e = FileConfig::parse("id = 1\ndata_dir = \"/d\"\nidd = 1\n", path).unwrap_err().to_string();
        assert!(e.contains("node.toml, line 3") && e.contains("unknown field `idd`"), "{e}");
        let e = FileConfig::parse("id = 1\nmax_value_bytes = \"big\"\n", path).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("invalid type"), "{e}");
        let e = FileConfig::parse("id = [\n", path).unwrap_err().to_string();
        assert!(e.contains("node.toml, line"), "{e}");
        // Values that parse but are out of range name the key and its line,
        // unless a flag set them.
        let text = "id = 1\ndata_dir = \"/d\"\n# comment\nread_repair_chance = 1.5\n\
                    [cluster]\n1 = \"127.0.0.1:7001\"\n";
        let e = resolve(Some(FileConfig::parse(text, path).unwrap()), Overrides::default()).unwrap_err().to_string();
        assert!(
            e.contains("--read-repair-chance 1.5") && e.contains("`read_repair_chance` in node.toml line 4"),
            "{e}"
        );
        let flag = Overrides { read_repair_chance: Some(2.0), ..Default::default() };
        let e = resolve(Some(FileConfig::parse(text, path).unwrap()), flag).unwrap_err().to_string();
        assert!(e.contains("--read-repair-chance 2") && !e.contains("node.toml"), "{e}");
        let text = "id = 1\ndata_dir = \"/d\"\nread_mode = \"fast\"\n[cluster]\n1 = \"127.0.0.1\"\n";
        let e = resolve(Some(FileConfig::parse(text, path).unwrap()), Overrides::default()).unwrap_err().to_string();
        assert!(e.contains("no port") && e.contains("`cluster.1` in node.toml line 5"), "{e}");
        let ok_cluster = text.replace("127.0.0.1\"", "127.0.0.1:7001\"");
        let e =
            resolve(Some(FileConfig::parse(&ok_cluster, path).unwrap()), Overrides::default()).unwrap_err().to_string();
        assert!(e.contains("unknown read mode \"fast\"") && e.contains("node.toml line 3"), "{e}");
    }

    #[test]
    fn printed_config_resolves_to_the_same_config() {
        let o = Overrides {
            read_repair_chance: Some(0.25),
            raft_tick_ms: Some(20),
            read_mode: Some("lease".into()),
            hinted_handoff: Some(false),
            ..base()
        };
        let cfg = resolve(None, o).unwrap();
        let text = toml::to_string(&cfg.to_file()).unwrap();
        let again = resolve(Some(FileConfig::parse(&text, Path::new("printed.toml")).unwrap()), Overrides::default())
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(again, cfg, "{text}");
        assert!(text.contains("read_mode = \"lease\"") && text.contains("[cluster]"), "{text}");
        assert!(!text.contains("unsafe_test"), "switches that are off are not printed: {text}");
    }

    #[test]
    fn gc_grace_defaults_to_a_day_and_must_exceed_the_clock_drift() {
        assert_eq!(resolve(None, base()).unwrap().gc_grace_ms, 24 * 3_600_000);
        let c = resolve(None, Overrides { gc_grace_ms: Some(2_000), ..base() }).unwrap();
        assert_eq!(c.gc_grace_ms, 2_000);
        let e = resolve(None, Overrides { gc_grace_ms: Some(500), ..base() }).unwrap_err().to_string();
        assert!(e.contains("--gc-grace 500 ms must exceed --max-clock-drift-ms (500)"), "{e}");
        let text = toml::to_string(&c.to_file()).unwrap();
        assert!(text.contains("gc_grace_ms = 2000"), "{text}");
    }

    #[test]
    fn log_format_is_text_or_json() {
        assert_eq!(parse_log_format("json").unwrap(), LogFormat::Json);
        assert_eq!(parse_log_format("text").unwrap(), LogFormat::Text);
        assert!(parse_log_format("xml").unwrap_err().to_string().contains("expected text or json"));
    }

    #[test]
    fn read_repair_chance_is_a_share() {
        assert_eq!(resolve(None, base()).unwrap().read_repair_chance, DEFAULT_READ_REPAIR_CHANCE);
        let c = resolve(None, Overrides { read_repair_chance: Some(0.1), ..base() }).unwrap();
        assert_eq!(c.read_repair_chance, 0.1);
        for bad in [-0.1, 1.5, f64::NAN] {
            let e = resolve(None, Overrides { read_repair_chance: Some(bad), ..base() }).unwrap_err().to_string();
            assert!(e.contains("--read-repair-chance"), "{e}");
        }
    }
}

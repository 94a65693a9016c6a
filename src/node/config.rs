//! Node configuration: `kv serve` flags or a TOML file (`--config FILE`),
//! flags winning over the file. Validation here turns every bad setting into
//! one sentence that says what is wrong and what is expected.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::clock::NodeId;
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
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
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
}

impl UnsafeTestSwitches {
    pub fn any(&self) -> bool {
        self.skip_read_impose || self.linearizable_local_reads || self.skip_level_join
    }
}

#[derive(Clone, Debug)]
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
    pub raft: RaftSettings,
    /// Topic layer settings (liveness timeout, default ISR lag, retention checks).
    pub topics: TopicSettings,
    pub unsafe_test: UnsafeTestSwitches,
    /// Where `/metrics` (Prometheus text) is served; `None` = not served.
    pub metrics_listen: Option<SocketAddr>,
    /// KV requests taking this long or longer log a WARN line (0 = every request).
    pub slow_request_ms: u64,
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
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub id: Option<NodeId>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub peer_listen: Option<String>,
    /// Either "1=host:port,2=host:port" or a table `[cluster] 1 = "host:port"`;
    /// an entry may name the peer address too: "host:port/host:peerport".
    pub cluster: Option<ClusterSpec>,
    pub max_value_bytes: Option<usize>,
    pub request_timeout_ms: Option<u64>,
    pub anti_entropy_interval_ms: Option<u64>,
    pub hinted_handoff: Option<bool>,
    pub read_repair_chance: Option<f64>,
    pub max_clock_drift_ms: Option<u64>,
    pub raft_tick_ms: Option<u64>,
    pub raft_election_ticks: Option<usize>,
    pub raft_heartbeat_ticks: Option<usize>,
    pub raft_snapshot_entries: Option<u64>,
    pub raft_catch_up_entries: Option<u64>,
    /// "read-index" (default) or "lease".
    pub read_mode: Option<String>,
    pub topic_node_timeout_ms: Option<u64>,
    pub replica_lag_time_max_ms: Option<u64>,
    pub topic_retention_check_ms: Option<u64>,
    #[serde(default)]
    pub unsafe_test: UnsafeTestSwitches,
    /// HOST:PORT of the Prometheus `/metrics` endpoint (off when absent).
    pub metrics_listen: Option<String>,
    pub slow_request_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ClusterSpec {
    Text(String),
    Table(BTreeMap<String, String>),
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        toml::from_str(&text)
            .map_err(|e| ConfigError(format!("invalid config file {}: {}", path.display(), e.message())))
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
fn default_peer_addr(addr: &str) -> Result<String, String> {
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
    pub raft_tick_ms: Option<u64>,
    pub raft_election_ticks: Option<usize>,
    pub raft_heartbeat_ticks: Option<usize>,
    pub raft_snapshot_entries: Option<u64>,
    pub raft_catch_up_entries: Option<u64>,
    pub read_mode: Option<String>,
    pub topic_node_timeout_ms: Option<u64>,
    pub replica_lag_time_max_ms: Option<u64>,
    pub topic_retention_check_ms: Option<u64>,
    pub unsafe_skip_read_impose: bool,
    pub unsafe_linearizable_local_reads: bool,
    pub unsafe_skip_level_join: bool,
    pub metrics_listen: Option<String>,
    pub slow_request_ms: Option<u64>,
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
fn socket_addr(flag: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    validate_host_port(text).map_err(|m| ConfigError(format!("invalid {flag}: {m}")))?;
    if let Ok(a) = text.parse() {
        return Ok(a);
    }
    use std::net::ToSocketAddrs;
    match text.to_socket_addrs().ok().and_then(|mut a| a.next()) {
        Some(a) => Ok(a),
        None => err(format!("invalid {flag} {text:?}: cannot resolve it to an address")),
    }
}

/// Builds the node configuration from an optional file and flag overrides.
pub fn resolve(file: Option<FileConfig>, o: Overrides) -> Result<NodeConfig, ConfigError> {
    let file = file.unwrap_or_default();
    let Some(id) = o.id.or(file.id) else {
        return err("missing node id: pass --id N (or `id = N` in the config file)");
    };
    if id == 0 {
        return err("node id must be a positive integer");
    }
    let Some(data_dir) = o.data_dir.or(file.data_dir) else {
        return err("missing data directory: pass --data-dir DIR (or `data_dir = \"DIR\"` in the config file)");
    };
    let cluster = match (o.cluster, file.cluster) {
        (Some(spec), _) => parse_cluster(&spec)?,
        (None, Some(ClusterSpec::Text(spec))) => parse_cluster(&spec)?,
        (None, Some(ClusterSpec::Table(t))) => {
            let mut out = Members::default();
            for (id, addr) in t {
                insert_member(&mut out, &id, &addr)?;
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
    let listen_text = o.listen.or(file.listen).unwrap_or_else(|| own.clone());
    let listen = socket_addr("--listen", &listen_text)?;
    // Like --listen, --peer-listen defaults to this node's own entry: its
    // peer address (the client port + PEER_PORT_OFFSET unless the entry names it).
    let peer_listen_text = o.peer_listen.or(file.peer_listen).unwrap_or_else(|| peer_cluster[&id].clone());
    let peer_listen = socket_addr("--peer-listen", &peer_listen_text)?;
    if peer_listen == listen {
        return err(format!("--peer-listen {peer_listen} is the client address (--listen); they must differ"));
    }
    let max_value_bytes = o.max_value_bytes.or(file.max_value_bytes).unwrap_or(DEFAULT_MAX_VALUE_BYTES);
    if max_value_bytes == 0 || max_value_bytes > MAX_CONFIGURABLE_VALUE_BYTES {
        return err(format!(
            "--max-value-bytes {max_value_bytes} is out of range: expected 1 to {MAX_CONFIGURABLE_VALUE_BYTES}"
        ));
    }
    let request_timeout_ms = o.request_timeout_ms.or(file.request_timeout_ms).unwrap_or(DEFAULT_REQUEST_TIMEOUT_MS);
    if request_timeout_ms == 0 {
        return err("--request-timeout-ms must be positive");
    }
    let d = RaftSettings::default();
    let raft = RaftSettings {
        tick_ms: o.raft_tick_ms.or(file.raft_tick_ms).unwrap_or(d.tick_ms),
        election_ticks: o.raft_election_ticks.or(file.raft_election_ticks).unwrap_or(d.election_ticks),
        heartbeat_ticks: o.raft_heartbeat_ticks.or(file.raft_heartbeat_ticks).unwrap_or(d.heartbeat_ticks),
        snapshot_entries: o.raft_snapshot_entries.or(file.raft_snapshot_entries).unwrap_or(d.snapshot_entries),
        catch_up_entries: o.raft_catch_up_entries.or(file.raft_catch_up_entries).unwrap_or(d.catch_up_entries),
        read_mode: match o.read_mode.or(file.read_mode) {
            Some(m) => parse_read_mode(&m)?,
            None => d.read_mode,
        },
    };
    if raft.tick_ms == 0 || raft.tick_ms > 10_000 {
        return err(format!("--raft-tick-ms {} is out of range: 1 to 10000", raft.tick_ms));
    }
    if raft.heartbeat_ticks == 0 || raft.election_ticks <= raft.heartbeat_ticks {
        return err(format!(
            "--raft-election-ticks ({}) must exceed --raft-heartbeat-ticks ({}), which must be positive",
            raft.election_ticks, raft.heartbeat_ticks
        ));
    }
    if raft.snapshot_entries == 0 {
        return err("--raft-snapshot-entries must be positive");
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
    };
    for (flag, v) in [
        ("--topic-node-timeout-ms", topics.node_timeout_ms),
        ("--replica-lag-time-max-ms", topics.replica_lag_time_max_ms),
        ("--topic-retention-check-ms", topics.retention_check_interval_ms),
    ] {
        if !(100..=3_600_000).contains(&v) {
            return err(format!("{flag} {v} is out of range: 100 to 3600000"));
        }
    }
    let read_repair_chance = o.read_repair_chance.or(file.read_repair_chance).unwrap_or(DEFAULT_READ_REPAIR_CHANCE);
    if !(0.0..=1.0).contains(&read_repair_chance) {
        return err(format!("--read-repair-chance {read_repair_chance} is out of range: 0 to 1"));
    }
    let unsafe_test = UnsafeTestSwitches {
        skip_read_impose: o.unsafe_skip_read_impose || file.unsafe_test.skip_read_impose,
        linearizable_local_reads: o.unsafe_linearizable_local_reads || file.unsafe_test.linearizable_local_reads,
        skip_level_join: o.unsafe_skip_level_join || file.unsafe_test.skip_level_join,
    };
    let metrics_listen = match o.metrics_listen.or(file.metrics_listen) {
        Some(text) => Some(parse_metrics_listen(&text)?),
        None => None,
    };
    Ok(NodeConfig {
        id,
        data_dir,
        listen,
        peer_listen,
        cluster,
        peer_cluster,
        max_value_bytes,
        request_timeout_ms,
        anti_entropy_interval_ms: o
            .anti_entropy_interval_ms
            .or(file.anti_entropy_interval_ms)
            .unwrap_or(10_000)
            .max(100),
        hinted_handoff: o.hinted_handoff.or(file.hinted_handoff).unwrap_or(true),
        read_repair_chance,
        max_clock_drift_ms: o.max_clock_drift_ms.or(file.max_clock_drift_ms).unwrap_or(500),
        raft,
        topics,
        unsafe_test,
        metrics_listen,
        slow_request_ms: o.slow_request_ms.or(file.slow_request_ms).unwrap_or(DEFAULT_SLOW_REQUEST_MS),
    })
}

/// Default of `--slow-request-ms`: a KV request this slow is worth a WARN
/// line (about 1000 times a loopback quorum write).
pub const DEFAULT_SLOW_REQUEST_MS: u64 = 1000;

/// `--metrics-listen HOST:PORT` as an address to bind. An IP address may
/// take port 0 (the system picks one; the node logs which), as tests do.
fn parse_metrics_listen(text: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(a) = text.parse() {
        return Ok(a);
    }
    validate_host_port(text).map_err(|m| ConfigError(format!("invalid --metrics-listen: {m}")))?;
    use std::net::ToSocketAddrs;
    match text.to_socket_addrs().ok().and_then(|mut a| a.next()) {
        Some(a) => Ok(a),
        None => err(format!("invalid --metrics-listen {text:?}: cannot resolve it to an address")),
    }
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
    fn slow_request_ms_defaults_and_overrides() {
        assert_eq!(resolve(None, base()).unwrap().slow_request_ms, DEFAULT_SLOW_REQUEST_MS);
        let f: FileConfig = toml::from_str("slow_request_ms = 250").unwrap();
        assert_eq!(resolve(Some(f), base()).unwrap().slow_request_ms, 250);
        let f: FileConfig = toml::from_str("slow_request_ms = 250").unwrap();
        let c = resolve(Some(f), Overrides { slow_request_ms: Some(0), ..base() }).unwrap();
        assert_eq!(c.slow_request_ms, 0);
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

//! `kv serve`: run one node until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::fail;
use crate::client::ConnectOptions;
use crate::node::config::{self, FileConfig, LogFormat, Overrides};

#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// This node's id (a positive integer listed in --cluster).
    #[arg(long)]
    pub id: Option<u32>,
    /// Directory of this node's RocksDB (created if missing).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address of the client services (Kv, Topics, Cluster), HOST:PORT
    /// (default: this node's --cluster entry).
    #[arg(long)]
    pub listen: Option<String>,
    /// Address of the peer services (Peer, TopicPeer, Admin), HOST:PORT
    /// (default: this node's peer address in --cluster, i.e. its client port + 1000).
    #[arg(long)]
    pub peer_listen: Option<String>,
    /// Every node: ID=HOST:PORT,... (client address; the peer address is
    /// the client port + 1000) or ID=HOST:PORT/HOST:PEER_PORT,...
    #[arg(long)]
    pub cluster: Option<String>,
    /// Join a running cluster instead of founding one: the client
    /// addresses of one or more members, HOST:PORT,... Needs --id, --listen
    /// and --data-dir, not --cluster. Add the node with `kv cluster add`
    /// (before or after starting it). Later starts read what the first one
    /// learned from DATA_DIR/join.json and ask nobody.
    #[arg(long, value_delimiter = ',', conflicts_with = "cluster")]
    pub join: Option<Vec<String>>,
    /// TOML file with the same settings (flags win).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Largest value accepted, in bytes (default 1 MiB).
    #[arg(long)]
    pub max_value_bytes: Option<usize>,
    /// Default deadline of a client request, in ms (default 5000).
    #[arg(long)]
    pub request_timeout_ms: Option<u64>,
    /// Period of anti-entropy rounds, in ms (default 10000).
    #[arg(long)]
    pub anti_entropy_interval_ms: Option<u64>,
    /// Do not keep hints for unreachable peers (anti-entropy still repairs).
    #[arg(long)]
    pub no_hinted_handoff: bool,
    /// Share of eventual gets followed by a background read repair, 0 to 1 (default 1).
    #[arg(long)]
    pub read_repair_chance: Option<f64>,
    /// Peer clock stamps further ahead than this do not move our clock (ms, default 500).
    #[arg(long)]
    pub max_clock_drift_ms: Option<u64>,
    /// Tombstones older than this and held by every replica are purged
    /// (e.g. 30m, 24h, 1d; default 1d). Must exceed --max-clock-drift-ms.
    #[arg(long, value_parser = super::parse_duration)]
    pub gc_grace: Option<std::time::Duration>,
    /// Raft tick interval in ms (default 50).
    #[arg(long)]
    pub raft_tick_ms: Option<u64>,
    /// Ticks without a leader before an election (default 10; randomized up to 2x).
    #[arg(long)]
    pub raft_election_ticks: Option<usize>,
    /// Ticks between leader heartbeats (default 2).
    #[arg(long)]
    pub raft_heartbeat_ticks: Option<usize>,
    /// Compact the Raft log after this many applied entries (default 10000).
    #[arg(long)]
    pub raft_snapshot_entries: Option<u64>,
    /// Entries kept behind the applied index at compaction (default 1000).
    #[arg(long)]
    pub raft_catch_up_entries: Option<u64>,
    /// Linearizable reads: read-index (default) or lease (a leader lease
    /// bounded by the election timeout; assumes clock rates within 10 %).
    /// `unsafe-unbounded-lease` is a TEST-ONLY negative control.
    #[arg(long)]
    pub read_mode: Option<String>,
    /// Quorum reads: `majority` (default) asks this node and one peer of
    /// three first and the others only after a hedge delay or a failure;
    /// `all` asks every replica at once. Both answer from a majority.
    #[arg(long)]
    pub quorum_read_fanout: Option<String>,
    /// Topics: a node the controller has not heard from for this long is down (ms, default 3000).
    #[arg(long)]
    pub topic_node_timeout_ms: Option<u64>,
    /// Topics: default replica.lag.time.max.ms of topics that do not set it (default 10000).
    #[arg(long)]
    pub replica_lag_time_max_ms: Option<u64>,
    /// Topics: how often partition leaders apply retention (ms, default 5000).
    #[arg(long)]
    pub topic_retention_check_ms: Option<u64>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (default: off).
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Log a WARN line for each KV request taking at least this many ms (default 1000; 0 = every request).
    #[arg(long)]
    pub slow_request_ms: Option<u64>,
    /// Refuse client writes that add data (set, cas, produce) while less
    /// than this many MiB are free under --data-dir; reads and deletes go on
    /// (default 256; 0 = never refuse).
    #[arg(long)]
    pub min_free_disk_mb: Option<u64>,
    /// Require a token on every client request: a file of `TOKEN ROLE` lines
    /// (role read, readwrite or admin). Default: no tokens checked.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Serve the Admin test hooks (clock offset) on the peer port, as the
    /// Jepsen harness needs. Off by default.
    #[arg(long)]
    pub enable_test_hooks: bool,
    /// TLS on both ports: this node's certificate (PEM). It must be valid
    /// for the node's hosts in --cluster and for the DNS name node-ID (how
    /// peers know which member it is). Needs --tls-key and --tls-ca.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// The cluster CA (PEM): peers' certificates must be signed by it
    /// (mutual TLS on the peer port), and clients' when they send one.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// Log filter (RUST_LOG syntax), e.g. info, debug, capkv=debug (default info).
    #[arg(long, env = "RUST_LOG")]
    pub log: Option<String>,
    /// Log lines as `text` (default) or `json` (one object per line).
    #[arg(long)]
    pub log_format: Option<String>,
    /// Print the effective configuration (file, flags and defaults merged)
    /// as a TOML config file, and exit without starting the node.
    #[arg(long)]
    pub print_config: bool,
    /// TEST ONLY: quorum gets skip read-impose (breaks linearizability).
    #[arg(long, hide = true)]
    pub unsafe_skip_read_impose: bool,
    /// TEST ONLY: linearizable gets skip ReadIndex and read locally (stale reads).
    #[arg(long, hide = true)]
    pub unsafe_linearizable_local_reads: bool,
    /// TEST ONLY: linearizable ops and quorum CAS skip the majority read and
    /// write-back that join them with quorum operations (breaks linearizability
    /// of mixed-level histories).
    #[arg(long, hide = true)]
    pub unsafe_skip_level_join: bool,
    /// TEST ONLY: the topic controller completes a reassignment without
    /// waiting for the new replicas to catch up (loses acknowledged records).
    #[arg(long, hide = true)]
    pub unsafe_reassign_without_catch_up: bool,
    /// TEST ONLY: tombstone GC purges without checking that every replica
    /// holds the tombstone (a deleted value can come back).
    #[arg(long, hide = true)]
    pub unsafe_gc_skip_replica_check: bool,
}

pub fn run(args: ServeArgs, connect: Result<ConnectOptions, String>) -> ExitCode {
    let file = match &args.config {
        Some(p) => match FileConfig::load(p) {
            Ok(f) => Some(f),
            Err(e) => return fail(e),
        },
        None => None,
    };
    let overrides = Overrides {
        join_quorum_replicas: None,
        id: args.id,
        data_dir: args.data_dir.clone(),
        listen: args.listen.clone(),
        peer_listen: args.peer_listen.clone(),
        cluster: args.cluster.clone(),
        max_value_bytes: args.max_value_bytes,
        request_timeout_ms: args.request_timeout_ms,
        anti_entropy_interval_ms: args.anti_entropy_interval_ms,
        hinted_handoff: args.no_hinted_handoff.then_some(false),
        read_repair_chance: args.read_repair_chance,
        max_clock_drift_ms: args.max_clock_drift_ms,
        gc_grace_ms: args.gc_grace.map(|d| d.as_millis().min(u64::MAX as u128) as u64),
        raft_tick_ms: args.raft_tick_ms,
        raft_election_ticks: args.raft_election_ticks,
        raft_heartbeat_ticks: args.raft_heartbeat_ticks,
        raft_snapshot_entries: args.raft_snapshot_entries,
        raft_catch_up_entries: args.raft_catch_up_entries,
        read_mode: args.read_mode.clone(),
        quorum_read_fanout: args.quorum_read_fanout.clone(),
        topic_node_timeout_ms: args.topic_node_timeout_ms,
        replica_lag_time_max_ms: args.replica_lag_time_max_ms,
        topic_retention_check_ms: args.topic_retention_check_ms,
        unsafe_skip_read_impose: args.unsafe_skip_read_impose,
        unsafe_linearizable_local_reads: args.unsafe_linearizable_local_reads,
        unsafe_skip_level_join: args.unsafe_skip_level_join,
        unsafe_reassign_without_catch_up: args.unsafe_reassign_without_catch_up,
        unsafe_gc_skip_replica_check: args.unsafe_gc_skip_replica_check,
        metrics_listen: args.metrics_listen.clone(),
        slow_request_ms: args.slow_request_ms,
        min_free_disk_mb: args.min_free_disk_mb,
        token_file: args.token_file.clone(),
        enable_test_hooks: args.enable_test_hooks,
        tls_cert: args.tls_cert.clone(),
        tls_key: args.tls_key.clone(),
        tls_ca: args.tls_ca.clone(),
    };
    // Logging settings are the CLI's, not the node's: read them before the
    // file is consumed.
    let log_filter = args.log.clone().or_else(|| file.as_ref().and_then(|f| f.log.clone()));
    let log_format = match (&args.log_format, file.as_ref().and_then(|f| f.log_format.as_ref())) {
        (Some(f), _) => config::parse_log_format(f),
        (None, Some(f)) => config::parse_log_format(f).map_err(|e| {
            let at =
                args.config.as_ref().map_or(String::new(), |p| format!(" (set by `log_format` in {})", p.display()));
            config::ConfigError(format!("{e}{at}"))
        }),
        (None, None) => Ok(LogFormat::Text),
    };
    let log_format = match log_format {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    let log_filter = log_filter.unwrap_or_else(|| "info".to_string());
    let filter = match tracing_subscriber::EnvFilter::try_new(&log_filter) {
        Ok(f) => f,
        Err(e) => return fail(format!("invalid log filter {log_filter:?}: {e}")),
    };
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    match log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let mut overrides = overrides;
    if let Some(endpoints) = &args.join {
        match joined(&args, file.as_ref(), endpoints, connect) {
            Ok(j) => {
                overrides.cluster = Some(j.cluster_spec());
                overrides.join_quorum_replicas = Some(j.quorum_replicas);
            }
            Err(e) => return fail(e),
        }
    }
    let cfg = match config::resolve(file, overrides) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if args.print_config {
        let mut printed = cfg.to_file();
        printed.log = Some(log_filter);
        printed.log_format = Some(if log_format == LogFormat::Json { "json" } else { "text" }.to_string());
        return match toml::to_string(&printed) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(format!("cannot print the configuration: {e}")),
        };
    }
    // Fail-stop: a bug anywhere in a node (a panic in any task) stops the
    // process loudly rather than leaving it half alive. Restart is safe:
    // everything acknowledged is on disk.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        tracing::error!("panic: {info}; aborting the node");
        std::process::abort();
    }));

    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(cfg.listen).await {
            Ok(l) => l,
            Err(e) => return fail(format!("cannot listen on {}: {e}", cfg.listen)),
        };
        let peer_listener = match tokio::net::TcpListener::bind(cfg.peer_listen).await {
            Ok(l) => l,
            Err(e) => return fail(format!("cannot listen on {} (--peer-listen): {e}", cfg.peer_listen)),
        };
        // A log line (so `--log-format json` output stays one object per
        // line), at every filter level a person starting nodes would use.
        tracing::info!("kv serve: node {}: clients on {}, peers on {}", cfg.id, cfg.listen, cfg.peer_listen);
        match crate::node::run(cfg, listener, peer_listener, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        }
    })
}

/// What `--join` needs: the saved join file on a restart, otherwise the
/// cluster's answer (then saved).
fn joined(
    args: &ServeArgs,
    file: Option<&FileConfig>,
    endpoints: &[String],
    connect: Result<ConnectOptions, String>,
) -> Result<super::join::Joined, String> {
    use super::join;
    if file.is_some_and(|f| f.cluster.is_some()) {
        return Err(
            "--join and a `cluster` in the config file exclude each other: a joining node asks the cluster".into()
        );
    }
    let Some(id) = args.id.or(file.and_then(|f| f.id)) else {
        return Err("--join needs --id: the id `kv cluster add --id` gives this node".into());
    };
    let Some(data_dir) = args.data_dir.clone().or_else(|| file.and_then(|f| f.data_dir.clone())) else {
        return Err("--join needs --data-dir".into());
    };
    if let Some(j) = join::saved(&data_dir)? {
        if !j.members.contains_key(&id) {
            return Err(format!(
                "{} was written for another node id than {id}",
                data_dir.join(join::JOIN_FILE).display()
            ));
        }
        tracing::info!(file = %data_dir.join(join::JOIN_FILE).display(), "restarting a joined node");
        return Ok(j);
    }
    let listen = args.listen.clone().or_else(|| file.and_then(|f| f.listen.clone()));
    let peer_listen = args.peer_listen.clone().or_else(|| file.and_then(|f| f.peer_listen.clone()));
    let (listen, peer) = join::own_addresses(listen.as_deref(), peer_listen.as_deref())?;
    let opts = connect?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let j = rt.block_on(join::ask(endpoints, &opts, (id, listen, peer)))?;
    join::save(&data_dir, &j)?;
    tracing::info!(
        members = ?j.members.keys().collect::<Vec<_>>(),
        quorum_replicas = ?j.quorum_replicas,
        "joining the cluster; waiting for the leader to add this node (`kv cluster add --id {id}`)"
    );
    Ok(j)
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

//! `kv dev`: a local cluster of real `kv serve` processes in one command.
//!
//! Ports (each node's client port and its peer port, 1000 above) are
//! checked before anything starts; each node logs to
//! `DATA_DIR/node-N.log` and its pid is in `DATA_DIR/node-N.pid`; `KV_ENDPOINTS=...` is printed on stdout once every
//! node answers, so scripts can wait for that line. SIGTERM or Ctrl-C stops
//! all nodes (SIGTERM, then SIGKILL after a grace period); children also get
//! SIGTERM if `kv dev` itself dies (PR_SET_PDEATHSIG).

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Args;

use super::fail;
use crate::client::Client;

pub const MAX_DEV_NODES: usize = 7;
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
pub const STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Where the nodes keep their data (default: a temporary directory, removed on exit).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Client port of node 1; node N listens on base-port + N - 1 for
    /// clients and 1000 above that for peers.
    #[arg(long, default_value_t = 7001)]
    pub base_port: u16,
    /// Host the nodes bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Serve Prometheus metrics: node N at http://HOST:(metrics-base-port + N - 1)/metrics (default: off).
    #[arg(long)]
    pub metrics_base_port: Option<u16>,
    /// Require tokens: writes a token file with a fresh random `admin` token
    /// (and a `read` one) into the data directory, starts the nodes with
    /// `--token-file`, and prints `KV_TOKEN=...` (the admin token).
    #[arg(long)]
    pub auth: bool,
    /// TLS on every port: generates a throwaway CA and certificates into
    /// DATA_DIR/tls (rcgen), starts the nodes with them, and prints
    /// `KV_CACERT=...` (the CA the CLI needs).
    #[arg(long)]
    pub tls: bool,
    /// Extra arguments for every `kv serve`, after `--`.
    #[arg(last = true)]
    pub serve_args: Vec<String>,
}

struct Cluster {
    children: Vec<(u32, Child)>,
    temp: Option<PathBuf>,
}

impl Cluster {
    fn stop(&mut self) {
        for (_, c) in &self.children {
            // SAFETY: sending a signal to our own child process.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + STOP_GRACE;
        for (id, c) in &mut self.children {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        eprintln!("node {id} did not stop within {}s; killing it", STOP_GRACE.as_secs());
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        self.children.clear();
        if let Some(t) = self.temp.take() {
            let _ = std::fs::remove_dir_all(t);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

pub fn run(args: DevArgs) -> ExitCode {
    if args.nodes == 0 || args.nodes > MAX_DEV_NODES {
        return fail(format!("--nodes {} is out of range: 1 to {MAX_DEV_NODES}", args.nodes));
    }
    let peer_offset = crate::node::config::PEER_PORT_OFFSET as usize;
    if args.base_port as usize + args.nodes + peer_offset > 65536 || args.base_port == 0 {
        return fail(format!(
            "--base-port {} leaves no room for {} nodes and their peer ports ({peer_offset} above)",
            args.base_port, args.nodes
        ));
    }
    let addrs: Vec<String> =
        (0..args.nodes).map(|i| format!("{}:{}", args.host, args.base_port as usize + i)).collect();
    let peer_addrs: Vec<String> =
        (0..args.nodes).map(|i| format!("{}:{}", args.host, args.base_port as usize + i + peer_offset)).collect();
    for a in addrs.iter().chain(&peer_addrs) {
        if let Err(e) = std::net::TcpListener::bind(a) {
            return fail(format!("cannot use {a} for kv dev: {e}; choose another --base-port"));
        }
    }
    let metrics_addrs: Vec<String> = match args.metrics_base_port {
        None => Vec::new(),
        Some(p) if p == 0 || p as usize + args.nodes > 65536 => {
            return fail(format!("--metrics-base-port {p} leaves no room for {} nodes", args.nodes))
        }
        Some(p) => (0..args.nodes).map(|i| format!("{}:{}", args.host, p as usize + i)).collect(),
    };
    for a in &metrics_addrs {
        if addrs.contains(a) {
            return fail(format!("metrics address {a} is also a node address; choose another --metrics-base-port"));
        }
        if let Err(e) = std::net::TcpListener::bind(a) {
            return fail(format!("cannot use {a} for metrics: {e}; choose another --metrics-base-port"));
        }
    }
    let (dir, temp) = match &args.data_dir {
        Some(d) => (d.clone(), None),
        None => {
            let d = std::env::temp_dir().join(format!("capkv-dev-{}", std::process::id()));
            (d.clone(), Some(d))
        }
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return fail(format!("cannot create {}: {e}", dir.display()));
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return fail(format!("cannot find the kv binary: {e}")),
    };
    let token = if args.auth {
        match write_token_file(&dir) {
            Ok(t) => Some(t),
            Err(e) => return fail(e),
        }
    } else {
        None
    };
    let certs = if args.tls {
        let nodes: Vec<(u32, String)> = (1..=args.nodes as u32).map(|i| (i, args.host.clone())).collect();
        match crate::node::tls_certs::generate(&dir.join("tls"), &nodes) {
            Ok(c) => Some(c),
            Err(e) => return fail(e),
        }
    } else {
        None
    };
    let connect = crate::client::ConnectOptions {
        token: token.clone(),
        tls: match &certs {
            Some(c) => match crate::client::ClientTls::load(&c.ca, None, None) {
                Ok(t) => Some(t),
                Err(e) => return fail(e),
            },
            None => None,
        },
    };
    let cluster_spec =
        crate::node::config::cluster_spec((1..).zip(addrs.iter().zip(&peer_addrs)).map(|(id, (a, p))| (id, a, p)));
    let mut cluster = Cluster { children: Vec::new(), temp };
    for i in 1..=args.nodes as u32 {
        let log_path = dir.join(format!("node-{i}.log"));
        let log = match std::fs::OpenOptions::new().create(true).append(true).open(&log_path) {
            Ok(f) => f,
            Err(e) => return fail(format!("cannot open {}: {e}", log_path.display())),
        };
        let err_log = match log.try_clone() {
            Ok(f) => f,
            Err(e) => return fail(e),
        };
        let mut cmd = Command::new(&exe);
        cmd.arg("serve")
            .arg("--id")
            .arg(i.to_string())
            .arg("--data-dir")
            .arg(dir.join(format!("node-{i}")))
            .arg("--cluster")
            .arg(&cluster_spec)
            .args(metrics_addrs.get(i as usize - 1).map(|a| ["--metrics-listen", a.as_str()]).into_iter().flatten())
            .args(token.as_ref().map(|_| ["--token-file".into(), dir.join(TOKEN_FILE)]).into_iter().flatten())
            .args(certs.as_ref().map(|c| c.serve_args(i)).unwrap_or_default())
            .args(&args.serve_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log);
        // SAFETY: prctl in the child before exec; async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        match cmd.spawn() {
            Ok(c) => {
                // For scripts that pause or kill one node (e.g. the demo).
                let _ = std::fs::write(dir.join(format!("node-{i}.pid")), format!("{}\n", c.id()));
                cluster.children.push((i, c));
            }
            Err(e) => return fail(format!("cannot start node {i}: {e}")),
        }
    }

    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    let ready = rt.block_on(wait_ready(&addrs, &connect, &mut cluster, &dir));
    if let Err(e) = ready {
        return fail(e);
    }
    // One `NAME=VALUE` per line, no spaces: `kv` reads these from the
    // environment, so `export` of each line configures a shell.
    println!("KV_ENDPOINTS={}", addrs.join(","));
    if let Some(t) = &token {
        println!("KV_TOKEN={t}");
    }
    if let Some(c) = &certs {
        println!("KV_CACERT={}", c.ca.display());
    }
    let _ = std::io::stdout().flush();
    eprintln!(
        "capkv dev cluster: {} nodes (clients on {}; peers on {}), data in {}{}, logs node-N.log there. Ctrl-C stops it.",
        args.nodes,
        addrs.join(","),
        peer_addrs.join(","),
        dir.display(),
        if cluster.temp.is_some() { " (temporary)" } else { "" }
    );
    if !metrics_addrs.is_empty() {
        let urls: Vec<String> = metrics_addrs.iter().map(|a| format!("http://{a}/metrics")).collect();
        eprintln!("Prometheus metrics: {}", urls.join(" "));
    }
    rt.block_on(async {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let signal = super::serve::shutdown_signal();
        tokio::pin!(signal);
        let mut reported = std::collections::BTreeSet::new();
        loop {
            tokio::select! {
                _ = &mut signal => break,
                _ = tick.tick() => {
                    for (id, c) in &mut cluster.children {
                        if let Ok(Some(st)) = c.try_wait() {
                            if reported.insert(*id) {
                                eprintln!("node {id} exited ({st}); the others keep running");
                            }
                        }
                    }
                }
            }
        }
    });
    eprintln!("stopping the cluster");
    cluster.stop();
    ExitCode::SUCCESS
}

/// The token file `kv dev --auth` writes into the data directory.
const TOKEN_FILE: &str = "tokens";

/// Writes `DIR/tokens` (mode 0600) with a fresh `admin` token and a `read`
/// token; returns the admin token.
fn write_token_file(dir: &Path) -> Result<String, String> {
    use rand::distr::{Alphanumeric, SampleString};
    let admin = Alphanumeric.sample_string(&mut rand::rng(), 32);
    let read = Alphanumeric.sample_string(&mut rand::rng(), 32);
    let text = format!(
        "# kv dev --auth: TOKEN ROLE (read, readwrite or admin); kv --token T or KV_TOKEN=T\n{admin} admin\n{read} read\n"
    );
    crate::node::tls_certs::write_private(&dir.join(TOKEN_FILE), &text)?;
    Ok(admin)
}

async fn wait_ready(
    addrs: &[String],
    connect: &crate::client::ConnectOptions,
    cluster: &mut Cluster,
    dir: &Path,
) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    for (i, a) in addrs.iter().enumerate() {
        let client = Client::connect(&[a], connect).map_err(|e| e.to_string())?;
        loop {
            if client.node_status(0, Duration::from_millis(500)).await.is_ok() {
                break;
            }
            let (id, child) = &mut cluster.children[i];
            if let Ok(Some(st)) = child.try_wait() {
                let log = dir.join(format!("node-{id}.log"));
                return Err(format!(
                    "node {id} exited during start-up ({st}); end of {}:\n{}",
                    log.display(),
                    log_tail(&log)
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!("node {} at {a} did not become ready within {}s", i + 1, READY_TIMEOUT.as_secs()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Ready means every level serves: wait until all nodes know the Raft leader.
    let client = Client::connect(addrs, connect).map_err(|e| e.to_string())?;
    loop {
        let mut agreed = true;
        for i in 0..addrs.len() {
            let leader =
                client.node_status(i, Duration::from_millis(500)).await.ok().and_then(|s| s.raft).map(|r| r.leader_id);
            agreed &= leader.is_some_and(|l| l != 0);
        }
        if agreed {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no Raft leader elected within {}s; see the node logs in {}",
                READY_TIMEOUT.as_secs(),
                dir.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

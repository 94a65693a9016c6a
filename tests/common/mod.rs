//! Test harness: a cluster of real `kv serve` processes on loopback.
//!
//! Every cluster gets loopback addresses of its own, 127.X.Y.(10+id) with
//! X.Y unique to the cluster, and ports from binding those addresses to
//! port 0. Ports alone are not enough: between picking a port and a node
//! binding it, a cluster of a test running in parallel could pick the same
//! one, and then its node (not ours, and not paused by our SIGSTOP) would
//! answer for ours. Data lives in a temp dir; every process is killed when
//! the cluster is dropped (also on test panic). Waiting is always "poll a
//! condition with a bounded deadline", never a fixed sleep.

#![allow(dead_code)]

pub mod sim;
pub mod topics;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use capkv::client::{CallOptions, Client};
use capkv::Level;

pub const KV: &str = env!("CARGO_BIN_EXE_kv");

/// Whether every thread of `pid` is in the stopped state (`T`).
fn all_threads_stopped(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().all(|t| {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // The state follows the command name, which is in parentheses.
        let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
        matches!(state, Some('T' | 't'))
    })
}

pub fn free_port() -> u16 {
    free_port_on(std::net::Ipv4Addr::LOCALHOST)
}

pub fn free_port_on(ip: std::net::Ipv4Addr) -> u16 {
    std::net::TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

/// Two different free `ip:port` addresses on `ip` (a node's client and
/// peer address): both listeners are held until both ports are known.
pub fn two_free_addrs_on(ip: std::net::Ipv4Addr) -> (String, String) {
    let a = std::net::TcpListener::bind((ip, 0)).unwrap();
    let b = std::net::TcpListener::bind((ip, 0)).unwrap();
    (a.local_addr().unwrap().to_string(), b.local_addr().unwrap().to_string())
}

/// Loopback addresses no other cluster of any test process uses: the
/// second and third octets come from this process's id, a counter and the
/// time, the second kept in 64..=254 (clear of 127.0.0.0/24, where `kv dev`
/// and the Jepsen harness live).
fn cluster_ips(n: usize) -> Vec<std::net::Ipv4Addr> {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static CLUSTERS: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u64(CLUSTERS.fetch_add(1, Ordering::Relaxed));
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    let bits = h.finish();
    let (x, y) = (64 + (bits % 191) as u8, (bits >> 8) as u8);
    (1..=n).map(|id| std::net::Ipv4Addr::new(127, x, y, 10 + id as u8)).collect()
}

pub struct Node {
    pub id: u32,
    /// Client address (Kv, Topics, Cluster).
    pub addr: String,
    /// Peer address (Peer, TopicPeer, Admin).
    pub peer_addr: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
    pub extra: Vec<String>,
    /// `Some(endpoints)`: the node joins with `kv serve --join endpoints`
    /// instead of `--cluster` ([`TestCluster::prepare_joiner`]).
    pub join: Option<String>,
    /// `Some(bytes)`: the process may not grow any file past `bytes`
    /// (`RLIMIT_FSIZE`, with `SIGXFSZ` ignored): a write that would fails
    /// with `EFBIG`, as a full disk fails it with `ENOSPC`. A storage fault
    /// without root or a small filesystem.
    pub max_file_bytes: Option<u64>,
}

pub struct TestCluster {
    pub nodes: Vec<Node>,
    pub spec: String,
    pub dir: tempfile::TempDir,
    /// How this harness's own clients connect (TLS for a TLS cluster).
    pub connect: capkv::client::ConnectOptions,
    /// The certificates of a TLS cluster ([`TestCluster::start_tls`]).
    pub certs: Option<capkv::node::tls_certs::DevCerts>,
}

impl TestCluster {
    /// Starts `n` nodes, each with `extra` flags, and waits until all answer.
    pub async fn start(n: usize, extra: &[&str]) -> TestCluster {
        Self::start_with(n, |_| extra.iter().map(|s| s.to_string()).collect()).await
    }

    /// Like `start`, with per-node extra flags.
    pub async fn start_with(n: usize, extra: impl Fn(u32) -> Vec<String>) -> TestCluster {
        Self::prepare(n, extra).launch().await
    }

    /// Like `start`, with TLS on every port: a fresh CA and certificates
    /// (`capkv::node::tls_certs`) for each node's address.
    pub async fn start_tls(n: usize, extra: &[&str]) -> TestCluster {
        let mut c = Self::prepare(n, |_| Vec::new());
        let hosts: Vec<(u32, String)> =
            c.nodes.iter().map(|n| (n.id, n.addr.rsplit_once(':').unwrap().0.to_string())).collect();
        let certs = capkv::node::tls_certs::generate(&c.dir.path().join("tls"), &hosts).unwrap();
        for node in &mut c.nodes {
            node.extra = certs.serve_args(node.id);
            node.extra.extend(extra.iter().map(|s| s.to_string()));
        }
        c.connect.tls = Some(capkv::client::ClientTls::load(&certs.ca, None, None).unwrap());
        c.certs = Some(certs);
        c.launch().await
    }

    /// Spawns every node and waits until each answers.
    async fn launch(mut self) -> TestCluster {
        for id in 1..=self.nodes.len() as u32 {
            self.spawn(id);
        }
        for id in 1..=self.nodes.len() as u32 {
            self.wait_ready(id).await;
        }
        self
    }

    /// The cluster's addresses and directories, nothing started.
    fn prepare(n: usize, extra: impl Fn(u32) -> Vec<String>) -> TestCluster {
        let dir = tempfile::tempdir().unwrap();
        // Two ports per node (client and peer), both chosen by the OS.
        let (addrs, peer_addrs): (Vec<String>, Vec<String>) = cluster_ips(n).into_iter().map(two_free_addrs_on).unzip();
        let spec =
            capkv::node::config::cluster_spec((1..).zip(addrs.iter().zip(&peer_addrs)).map(|(id, (a, p))| (id, a, p)));
        let nodes = (1..=n as u32)
            .map(|id| Node {
                id,
                addr: addrs[id as usize - 1].clone(),
                peer_addr: peer_addrs[id as usize - 1].clone(),
                data_dir: dir.path().join(format!("node-{id}")),
                log: dir.path().join(format!("node-{id}.log")),
                child: None,
                extra: extra(id),
                join: None,
                max_file_bytes: None,
            })
            .collect();
        TestCluster { nodes, spec, dir, connect: Default::default(), certs: None }
    }

    /// Addresses and a directory for node `nodes.len() + 1`, which will
    /// join with `kv serve --join` through the endpoints of `via` (not
    /// started: [`TestCluster::spawn`] it). Returns its id.
    pub fn prepare_joiner(&mut self, via: &[u32], extra: &[&str]) -> u32 {
        let id = self.nodes.len() as u32 + 1;
        let first: std::net::Ipv4Addr = self.nodes[0].addr.rsplit_once(':').unwrap().0.parse().unwrap();
        let [a, x, y, _] = first.octets();
        let (addr, peer_addr) = two_free_addrs_on(std::net::Ipv4Addr::new(a, x, y, 10 + id as u8));
        let join = via.iter().map(|&v| self.node(v).addr.clone()).collect::<Vec<_>>().join(",");
        self.nodes.push(Node {
            id,
            addr,
            peer_addr,
            data_dir: self.dir.path().join(format!("node-{id}")),
            log: self.dir.path().join(format!("node-{id}.log")),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            join: Some(join),
            max_file_bytes: None,
        });
        id
    }

    /// Starts a new node that joins through `via` ([`prepare_joiner`]) and
    /// adds it with `kv --endpoints ENDPOINTS cluster add` (learner, then
    /// promoted), asserting the command succeeded. Returns its id and the
    /// command's output.
    ///
    /// [`prepare_joiner`]: TestCluster::prepare_joiner
    pub async fn join_and_add(&mut self, via: &[u32], extra: &[&str], endpoints: &str) -> (u32, String) {
        let id = self.prepare_joiner(via, extra);
        self.spawn(id);
        self.wait_ready(id).await;
        let node = self.node(id);
        let id_arg = id.to_string();
        let args = [
            "--endpoints",
            endpoints,
            "cluster",
            "add",
            "--id",
            &id_arg,
            "--address",
            &node.addr,
            "--peer-address",
            &node.peer_addr,
        ];
        let (code, out, err) = kv(&args);
        assert_eq!(code, 0, "kv cluster add: {out}{err}");
        (id, out)
    }

    pub fn node(&self, id: u32) -> &Node {
        &self.nodes[id as usize - 1]
    }

    pub fn endpoints(&self) -> String {
        self.nodes.iter().map(|n| n.addr.clone()).collect::<Vec<_>>().join(",")
    }

    pub fn spawn(&mut self, id: u32) {
        let spec = self.spec.clone();
        let n = &mut self.nodes[id as usize - 1];
        assert!(n.child.is_none(), "node {id} already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&n.log).unwrap();
        let mut cmd = Command::new(KV);
        match &n.join {
            None => cmd.args(["serve", "--id", &id.to_string(), "--cluster", &spec]),
            Some(endpoints) => cmd.args([
                "serve",
                "--id",
                &id.to_string(),
                "--join",
                endpoints,
                "--listen",
                &n.addr,
                "--peer-listen",
                &n.peer_addr,
            ]),
        };
        if let Some(limit) = n.max_file_bytes {
            use std::os::unix::process::CommandExt;
            // SAFETY: between fork and exec only async-signal-safe calls
            // (signal, setrlimit), no allocation.
            unsafe {
                cmd.pre_exec(move || {
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    let lim = libc::rlimit { rlim_cur: limit, rlim_max: limit };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .arg("--data-dir")
            .arg(&n.data_dir)
            .args(&n.extra)
            .env("RUST_LOG", "info,capkv=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        n.child = Some(child);
    }

    pub async fn wait_ready(&self, id: u32) {
        let n = self.node(id);
        let client = Client::connect(std::slice::from_ref(&n.addr), &self.connect).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        // A node that checks tokens answers too: "unauthenticated".
        while client
            .node_status(0, Duration::from_millis(500))
            .await
            .is_err_and(|e| !matches!(e, capkv::client::ClientError::Unauthenticated(_)))
        {
            assert!(Instant::now() < deadline, "node {id} not ready in 60s; log:\n{}", self.log_tail(id));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The Raft leader every node in `alive` names, once they agree and it
    /// is one of them (bounded wait: 20 s).
    pub async fn raft_leader(&self, alive: &[u32]) -> u32 {
        eventually(Duration::from_secs(20), "a Raft leader all live nodes agree on", || async {
            let mut seen = None;
            for &id in alive {
                let st = self.client(id).node_status(0, Duration::from_millis(500)).await.ok()?;
                let l = st.raft?.leader_id as u32;
                if l == 0 || seen.is_some_and(|s| s != l) {
                    return None;
                }
                seen = Some(l);
            }
            seen.filter(|l| alive.contains(l))
        })
        .await
    }

    pub fn log_tail(&self, id: u32) -> String {
        let text = std::fs::read_to_string(&self.node(id).log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub fn pid(&self, id: u32) -> i32 {
        self.node(id).child.as_ref().expect("node running").id() as i32
    }

    pub fn signal(&self, id: u32, sig: i32) {
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(self.pid(id), sig) }, 0);
    }

    /// SIGSTOP, then waits until every thread of the node is stopped. The
    /// kernel stops a multi-threaded process only when one of its threads
    /// takes the signal; on a busy machine the others go on serving
    /// requests for milliseconds after `kill` returned.
    pub fn stop(&self, id: u32) {
        self.signal(id, libc::SIGSTOP);
        let pid = self.pid(id);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !all_threads_stopped(pid) {
            assert!(Instant::now() < deadline, "node {id} (pid {pid}) did not stop within 10 s of SIGSTOP");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn cont(&self, id: u32) {
        self.signal(id, libc::SIGCONT);
    }

    /// kill -9 and reap.
    pub fn kill(&mut self, id: u32) {
        if let Some(mut c) = self.nodes[id as usize - 1].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn terminate(&mut self, id: u32) -> std::process::ExitStatus {
        let mut c = self.nodes[id as usize - 1].child.take().expect("running");
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "node {id} did not exit on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub async fn restart(&mut self, id: u32) {
        self.spawn(id);
        self.wait_ready(id).await;
    }

    /// A client talking to one node only.
    pub fn client(&self, id: u32) -> Client {
        Client::connect(&[self.node(id).addr.clone()], &self.connect).unwrap()
    }

    pub fn data_dir(&self, id: u32) -> &Path {
        &self.node(id).data_dir
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if std::env::var_os("CAPKV_KEEP_TEST_DIR").is_some() {
                let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
                eprintln!("keeping test dir {}", dir.keep().display());
            }
            for n in &self.nodes {
                eprintln!("----- last lines of node {} log ({}) -----\n{}", n.id, n.log.display(), self.log_tail(n.id));
            }
        }
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                unsafe { libc::kill(c.id() as i32, libc::SIGCONT) };
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Cuts links between nodes of one cluster for real, with an nftables
/// table of its own (needs root and `nft`, which `scripts/test.sh`
/// installs). Nodes connect to peers from their own address, and every
/// cluster has addresses of its own, so the rules touch no other test.
/// The table is deleted on drop, also when the test panics.
pub struct Firewall {
    table: String,
}

fn nft(args: &[&str]) {
    let out = Command::new("nft").args(args).output().expect("cannot run nft (apt-get install nftables; needs root)");
    assert!(out.status.success(), "nft {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Firewall {
    pub fn new() -> Firewall {
        use std::sync::atomic::{AtomicU64, Ordering};
        static TABLES: AtomicU64 = AtomicU64::new(0);
        let table = format!("capkv_test_{}_{}", std::process::id(), TABLES.fetch_add(1, Ordering::Relaxed));
        nft(&["add", "table", "inet", &table]);
        nft(&["add", "chain", "inet", &table, "out", "{ type filter hook output priority 0; }"]);
        Firewall { table }
    }

    /// Drops all traffic between node `id` and every other node of `c`
    /// (clients, on 127.0.0.1, still reach it).
    pub fn isolate(&self, c: &TestCluster, id: u32) {
        let ip = |n: u32| c.node(n).addr.rsplit_once(':').unwrap().0.to_string();
        for other in c.nodes.iter().map(|n| n.id).filter(|&o| o != id) {
            for (from, to) in [(ip(id), ip(other)), (ip(other), ip(id))] {
                nft(&["add", "rule", "inet", &self.table, "out", "ip", "saddr", &from, "ip", "daddr", &to, "drop"]);
            }
        }
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        let _ = Command::new("nft").args(["delete", "table", "inet", &self.table]).output();
    }
}

pub fn opts(level: Level) -> CallOptions {
    CallOptions::new(level)
}

/// Polls `f` until it returns Some, at most `timeout`; panics with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the kv binary with args; returns (exit code, stdout, stderr).
pub fn kv(args: &[&str]) -> (i32, String, String) {
    kv_env(args, &[])
}

pub fn kv_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(KV)
        .args(args)
        .env_remove("KV_ENDPOINTS")
        .env_remove("KV_CONSISTENCY")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the kv binary with `stdin` as its standard input; returns (exit
/// code, stdout, stderr).
pub fn kv_stdin(args: &[&str], stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(KV)
        .args(args)
        .env_remove("KV_ENDPOINTS")
        .env_remove("KV_CONSISTENCY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_string();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(data.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

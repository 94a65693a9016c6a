//! The `kv` command line as a user meets it: exit statuses, one-line errors
//! for every kind of bad input, `kv dev`, and `kv cluster status`.

mod common;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn assert_one_clear_line(stderr: &str, needle: &str) {
    assert!(stderr.contains(needle), "stderr {stderr:?} lacks {needle:?}");
    assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "stderr looks like a panic: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_set_del_cas_exit_statuses() {
    let c = TestCluster::start(3, &[]).await;
    let ep = c.endpoints();
    let kv_e = |args: &[&str]| {
        let mut a = vec!["--endpoints", &ep, "--consistency", "eventual"];
        a.extend_from_slice(args);
        kv(&a)
    };
    assert_eq!(kv_e(&["set", "fruit", "apple"]).0, 0);
    let (code, out, _) = kv_e(&["get", "fruit"]);
    assert_eq!((code, out.as_str()), (0, "apple\n"));
    // Missing key: nothing on stdout, "not found" on stderr, exit 1.
    let (code, out, err) = kv_e(&["get", "nope"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(err.contains("not found"), "{err}");
    // CAS: 0 swapped, 1 compare failed (stderr names the current value).
    assert_eq!(kv_e(&["cas", "fruit", "--expect", "apple", "pear"]).0, 0);
    let (code, _, err) = kv_e(&["cas", "fruit", "--expect", "apple", "plum"]);
    assert_eq!(code, 1);
    assert!(err.contains("\"pear\""), "{err}");
    assert_eq!(kv_e(&["cas", "new", "--expect-absent", "x"]).0, 0);
    assert_eq!(kv_e(&["cas", "new", "--expect-absent", "y"]).0, 1);
    // JSON output.
    let (code, out, _) = kv_e(&["--output", "json", "get", "fruit"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["value"], "pear");
    assert!(v["version"]["hlc"].as_u64().unwrap() > 0);
    // Delete, then the key is gone.
    assert_eq!(kv_e(&["del", "fruit"]).0, 0);
    assert_eq!(kv_e(&["get", "fruit"]).0, 1);
    // Env vars are defaults for --endpoints and --consistency.
    let (code, out, _) = kv_env(&["get", "new"], &[("KV_ENDPOINTS", &ep), ("KV_CONSISTENCY", "eventual")]);
    assert_eq!((code, out.as_str()), (0, "x\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_one_clear_line_and_non_zero_exit() {
    let c = TestCluster::start(1, &["--max-value-bytes", "1000"]).await;
    let ep = c.endpoints();
    let run = |args: &[&str]| {
        let mut a = vec!["--endpoints", &ep, "-c", "eventual"];
        a.extend_from_slice(args);
        kv(&a)
    };
    let (code, _, err) = run(&["get", ""]);
    assert_eq!(code, 2);
    assert_one_clear_line(&err, "key must not be empty");

    let long_key = "k".repeat(5000);
    let (code, _, err) = run(&["set", &long_key, "v"]);
    assert_eq!(code, 2);
    assert_one_clear_line(&err, "key is 5000 bytes; the limit is 4096");

    let big = "v".repeat(2000);
    let (code, _, err) = run(&["set", "k", &big]);
    assert_eq!(code, 2);
    assert_one_clear_line(&err, "value is 2000 bytes; this node's limit is 1000");

    let (code, _, err) = kv(&["--endpoints", &ep, "--consistency", "bogus", "get", "k"]);
    assert_eq!(code, 2);
    assert_one_clear_line(&err, "unknown consistency level \"bogus\"");
    let (code, _, err) = kv_env(&["--endpoints", &ep, "get", "k"], &[("KV_CONSISTENCY", "strongish")]);
    assert_eq!(code, 2);
    assert_one_clear_line(&err, "unknown consistency level \"strongish\"");

    let dead = format!("127.0.0.1:{}", free_port());
    let (code, _, err) = kv(&["--endpoints", &dead, "-c", "eventual", "get", "k"]);
    assert_eq!(code, 2);
    assert_one_clear_line(&err, &dead);
    assert_one_clear_line(&err, "cannot connect");

    let (code, _, err) = kv(&["--endpoints", "nonsense", "get", "k"]);
    assert_eq!(code, 2);
    assert_one_clear_line(&err, "has no port");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_bad_configuration_and_a_data_dir_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("n1");
    let d = d.to_str().unwrap();
    for (cluster, needle) in [
        ("1=127.0.0.1", "no port"),
        ("1=127.0.0.1:7001,2", "expected ID=HOST:PORT"),
        ("2=127.0.0.1:7001", "does not list this node's id 1"),
        ("x=127.0.0.1:7001", "positive integer"),
        ("1=127.0.0.1:7001/127.0.0.1", "peer address \"127.0.0.1\" has no port"),
        ("1=127.0.0.1:7001/127.0.0.1:7001", "they must differ"),
        ("1=127.0.0.1:65000", "exceeds 65535"),
    ] {
        let (code, _, err) = kv(&["serve", "--id", "1", "--data-dir", d, "--cluster", cluster]);
        assert_eq!(code, 2, "{cluster}");
        assert_one_clear_line(&err, needle);
    }
    let (code, _, err) = kv(&["serve", "--data-dir", d, "--cluster", "1=127.0.0.1:7001"]);
    assert_eq!(code, 2);
    assert_one_clear_line(&err, "missing node id");

    let c = TestCluster::start(1, &[]).await;
    let used = c.data_dir(1).to_str().unwrap().to_string();
    let (a, p) = two_free_addrs_on(std::net::Ipv4Addr::LOCALHOST);
    let spec = format!("1={a}/{p}");
    let (code, _, err) = kv(&["serve", "--id", "1", "--data-dir", &used, "--cluster", &spec]);
    assert_eq!(code, 2);
    assert_one_clear_line(&err, "is in use by another capkv process (pid");

    // The same node from a TOML file, its peer address from `peer_listen`.
    let (addr, peer_addr) = two_free_addrs_on(std::net::Ipv4Addr::LOCALHOST);
    let toml = dir.path().join("node.toml");
    std::fs::write(
        &toml,
        format!(
            "id = 1\ndata_dir = \"{d}\"\npeer_listen = \"{peer_addr}\"\nlog_format = \"json\"\n[cluster]\n1 = \"{addr}\"\n"
        ),
    )
    .unwrap();
    let child =
        Command::new(KV).args(["serve", "--config", toml.to_str().unwrap()]).stderr(Stdio::piped()).spawn().unwrap();
    let client = capkv::client::Client::new(std::slice::from_ref(&addr)).unwrap();
    eventually(Duration::from_secs(30), "node from TOML config answers", || async {
        client.node_status(0, Duration::from_millis(300)).await.ok()
    })
    .await;
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    // `log_format = "json"`: every log line is one JSON object.
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.lines().count() >= 2, "{logs}");
    for line in logs.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(v.get("level").is_some() && v.get("fields").is_some(), "{line}");
    }
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "id = 1\nbogus_setting = 3\n").unwrap();
    let (code, _, err) = kv(&["serve", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert_one_clear_line(&err, "unknown field");
}

/// Config files as an operator meets them: a typo or a bad value names the
/// key and its line; `--print-config` shows the effective settings as a
/// file that resolves to the same settings; nothing starts on an error.
#[test]
fn serve_config_errors_name_the_line_and_print_config_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("n1");
    let d = d.to_str().unwrap();
    let head = format!("id = 1\ndata_dir = \"{d}\"\n");
    let cluster = "[cluster]\n1 = \"127.0.0.1:7001\"\n";
    for (body, needles) in [
        (format!("{head}max_value_byts = 10\n{cluster}"), vec!["line 3", "unknown field `max_value_byts`"]),
        (format!("{head}request_timeout_ms = \"soon\"\n{cluster}"), vec!["line 3", "invalid type"]),
        (
            format!("{head}\nread_repair_chance = 3.0\n{cluster}"),
            vec!["--read-repair-chance 3 is out of range", "`read_repair_chance` in", "line 4"],
        ),
        (format!("{head}read_mode = \"fastest\"\n{cluster}"), vec!["unknown read mode", "line 3"]),
        (format!("{head}[cluster]\n1 = \"127.0.0.1\"\n"), vec!["no port", "`cluster.1`", "line 4"]),
        (format!("{head}log_format = \"xml\"\n{cluster}"), vec!["expected text or json", "log_format"]),
    ] {
        let path = dir.path().join("node.toml");
        std::fs::write(&path, &body).unwrap();
        let (code, _, err) = kv(&["serve", "--config", path.to_str().unwrap()]);
        assert_eq!(code, 2, "{body}");
        for needle in needles {
            assert_one_clear_line(&err, needle);
        }
        assert!(err.contains("node.toml"), "{err}");
        assert!(!std::path::Path::new(d).exists(), "a refused config must not create the data dir");
    }

    // Effective config: file + flag + defaults, printed, and a fixed point.
    let path = dir.path().join("node.toml");
    std::fs::write(&path, format!("{head}raft_tick_ms = 20\n{cluster}")).unwrap();
    let (code, printed, err) =
        kv(&["serve", "--config", path.to_str().unwrap(), "--max-value-bytes", "2048", "--print-config"]);
    assert_eq!(code, 0, "{err}");
    for needle in [
        "max_value_bytes = 2048",
        "raft_tick_ms = 20",
        "request_timeout_ms = 5000",
        "log_format = \"text\"",
        "[cluster]",
    ] {
        assert!(printed.contains(needle), "{needle} missing from:\n{printed}");
    }
    let again = dir.path().join("printed.toml");
    std::fs::write(&again, &printed).unwrap();
    let (code, printed_again, err) = kv(&["serve", "--config", again.to_str().unwrap(), "--print-config"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(printed_again, printed);
    assert!(!std::path::Path::new(d).exists(), "--print-config must not start the node");
}

/// `kv bench --timeline-ms` (what benches/failover.sh reads): every
/// request of the measured phase is in exactly one interval, and the
/// intervals cover the measured time; a timeline needs --duration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_timeline_counts_every_request_in_one_interval() {
    let c = TestCluster::start(3, &[]).await;
    let ep = c.endpoints();
    let (code, out, err) = kv(&[
        "--endpoints",
        &ep,
        "--output",
        "json",
        "-c",
        "quorum",
        "bench",
        "--op",
        "set",
        "--clients",
        "4",
        "--duration",
        "1s",
        "--warmup",
        "0",
        "--timeline-ms",
        "50",
    ]);
    assert_eq!(code, 0, "kv bench failed: {err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let t = &v["timeline"];
    let sum = |f: &str| t[f].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).sum::<u64>();
    assert_eq!(sum("ok"), v["ops"].as_u64().unwrap(), "{v}");
    assert_eq!(sum("errors"), v["errors"].as_u64().unwrap(), "{v}");
    assert_eq!(t["bucket_ms"], 50);
    let intervals = t["ok"].as_array().unwrap().len() as f64;
    let covered = v["elapsed_s"].as_f64().unwrap() * 1000.0 / 50.0;
    assert!(intervals >= covered.floor() && intervals <= covered.floor() + 1.0, "{intervals} intervals over {v}");
    assert!(t["longest_stall"].is_null() || t["longest_stall"]["length_ms"].is_u64(), "{t}");
    // A request count has no known span: refused in one line.
    let (code, _, err) = kv(&["--endpoints", &ep, "bench", "--requests", "10", "--timeline-ms", "10"]);
    assert_ne!(code, 0);
    assert_one_clear_line(&err, "--timeline-ms needs --duration");
}

/// `kv bench --rate`: the clients together send at most the rate (each
/// request of a client one interval after its previous one), and the
/// report says what they were paced at. The fsync workload needs no
/// cluster; unpaced it does hundreds of requests a second on any disk.
#[test]
fn bench_rate_paces_the_clients() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (code, out, err) = kv(&[
        "--output",
        "json",
        "bench",
        "--op",
        "fsync",
        "--data-dir",
        d,
        "--clients",
        "2",
        "--rate",
        "40",
        "--duration",
        "1s",
        "--warmup",
        "0",
    ]);
    assert_eq!(code, 0, "kv bench failed: {err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let ops = v["ops"].as_u64().unwrap();
    // Each client: one request at once, then one per 50 ms.
    let most = (v["elapsed_s"].as_f64().unwrap() * 40.0).floor() as u64 + 2;
    assert!(ops >= 1 && ops <= most, "{ops} requests in {v}");
    assert_eq!(v["rate_per_sec"], 40.0);
    let (code, _, err) = kv(&["bench", "--op", "fsync", "--data-dir", d, "--rate", "0"]);
    assert_eq!(code, 2);
    assert_one_clear_line(&err, "--rate 0 must be a positive number");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_lists_every_node_and_who_is_unreachable() {
    let mut c = TestCluster::start(3, &[]).await;
    let ep = c.endpoints();
    let (code, out, _) = kv(&["--endpoints", &ep, "cluster", "status"]);
    assert_eq!(code, 0, "{out}");
    for id in 1..=3 {
        assert!(out.contains(&c.node(id).addr), "{out}");
    }
    c.kill(2);
    let (code, out, _) = kv(&["--endpoints", &ep, "--output", "json", "cluster", "status"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let reach: Vec<bool> = v["nodes"].as_array().unwrap().iter().map(|n| n["reachable"].as_bool().unwrap()).collect();
    assert_eq!(reach, vec![true, false, true]);
}

/// `kv dev` with `flags` on free ports: the child, its base port, and the
/// `NAME=VALUE` lines it printed (`names`, in order) once ready.
fn start_dev(flags: &[&str], names: &[&str]) -> (std::process::Child, u16, Vec<String>) {
    // Find 3 consecutive free ports, and the 3 peer ports 1000 above them.
    let base = loop {
        let p = free_port();
        let free = |q: u16| std::net::TcpListener::bind(("127.0.0.1", q)).is_ok();
        if p < 64000 && (1..3).all(|i| free(p + i)) && (0..3).all(|i| free(p + 1000 + i)) {
            break p;
        }
    };
    let mut dev = Command::new(KV)
        .args(["dev", "--base-port", &base.to_string()])
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(dev.stdout.take().unwrap());
    let values = names
        .iter()
        .map(|name| {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            let prefix = format!("{name}=");
            let v = line.trim_end().strip_prefix(&prefix).unwrap_or_else(|| panic!("expected {name}=, got {line:?}"));
            assert!(!v.is_empty() && !v.contains(' '), "{line:?}");
            v.to_string()
        })
        .collect();
    (dev, base, values)
}

/// Ctrl-C stops `kv dev` and every node: their ports are free again.
fn stop_dev(mut dev: std::process::Child, base: u16) {
    unsafe { libc::kill(dev.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = dev.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "kv dev did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    for port in (0..3).flat_map(|i| [base + i, base + 1000 + i]) {
        let addr = ("127.0.0.1", port);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpListener::bind(addr).is_err() {
            assert!(Instant::now() < deadline, "port {port} still in use");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn kv_dev_starts_a_cluster_and_ctrl_c_stops_it() {
    let (dev, base, vars) = start_dev(&[], &["KV_ENDPOINTS"]);
    let endpoints = &vars[0];
    assert_eq!(endpoints.split(',').count(), 3);
    let (code, _, err) = kv(&["--endpoints", endpoints, "-c", "eventual", "set", "a", "1"]);
    assert_eq!(code, 0, "{err}");
    stop_dev(dev, base);
}

/// `kv dev --tls --auth`: the printed CA and token are all the CLI needs;
/// without the CA the CLI is told the node uses TLS.
#[test]
fn kv_dev_tls_prints_a_ca_the_cli_reads_from_the_environment() {
    let (dev, base, vars) = start_dev(&["--tls", "--auth"], &["KV_ENDPOINTS", "KV_TOKEN", "KV_CACERT"]);
    let env = [("KV_ENDPOINTS", vars[0].as_str()), ("KV_TOKEN", vars[1].as_str()), ("KV_CACERT", vars[2].as_str())];
    let (code, _, err) = kv_env(&["-c", "quorum", "set", "a", "1"], &env);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = kv_env(&["get", "a"], &env);
    assert_eq!((code, out.trim()), (0, "1"), "{err}");
    let (code, _, err) = kv_env(&["get", "a"], &env[..2]);
    assert_eq!(code, 2, "{err}");
    assert_one_clear_line(&err, "pass --cacert");
    stop_dev(dev, base);
}

/// `kv dev --auth`: the printed token works from the environment; without
/// it the CLI exits 2 with "unauthenticated".
#[test]
fn kv_dev_auth_prints_a_token_the_cli_reads_from_the_environment() {
    let (dev, base, vars) = start_dev(&["--auth"], &["KV_ENDPOINTS", "KV_TOKEN"]);
    let env = [("KV_ENDPOINTS", vars[0].as_str()), ("KV_TOKEN", vars[1].as_str())];
    let (code, _, err) = kv_env(&["set", "a", "1"], &env);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = kv_env(&["-c", "quorum", "get", "a"], &env);
    assert_eq!((code, out.trim()), (0, "1"), "{err}");
    let (code, _, err) = kv_env(&["get", "a"], &env[..1]);
    assert_eq!(code, 2, "{err}");
    assert_one_clear_line(&err, "unauthenticated");
    stop_dev(dev, base);
}

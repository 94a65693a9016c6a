//! TLS on real nodes (issue 23): both ports speak TLS, peers authenticate
//! each other with certificates signed by the cluster CA, a peer's member id
//! comes from its certificate (never from a message field), and every bad
//! input — a plaintext client, a wrong CA, an expired certificate, a
//! certificate that names no member, a message claiming another sender —
//! gets a clear refusal and changes nothing.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::time::Duration;

use capkv::client::ClientTls;
use capkv::node::tls_certs::{write_private, Ca};
use capkv::proto::peer::peer_client::PeerClient;
use capkv::proto::peer::PingRequest;
use capkv::Level;
use common::*;
use tonic::Code;

fn peer_ping(addr: &str, tls: Option<&ClientTls>, from_node: u32) -> Result<u32, tonic::Status> {
    let rt = tokio::runtime::Handle::current();
    let ch = capkv::node::peers::tls_channel(addr, IpAddr::V4(Ipv4Addr::UNSPECIFIED), tls).unwrap();
    tokio::task::block_in_place(|| {
        rt.block_on(async {
            capkv::node::peers::call(5_000, PeerClient::new(ch).ping(PingRequest { from_node, hlc: 1 }))
                .await
                .map(|r| r.node_id)
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_serves_every_level_and_refuses_what_it_cannot_trust() {
    let c = TestCluster::start_tls(3, &[]).await;
    let certs = c.certs.clone().unwrap();
    let ep = c.endpoints();
    let ca = certs.ca.to_str().unwrap();

    // Quorum and linearizable writes need the peers: mutual TLS works.
    let client = c.client(1);
    for (i, level) in [Level::Eventual, Level::Quorum, Level::Linearizable].into_iter().enumerate() {
        let key = format!("k{i}");
        eventually(Duration::from_secs(30), "a write over TLS", || async {
            client.set(key.as_bytes(), b"v", opts(level)).await.ok()
        })
        .await;
        let other = c.client(3);
        eventually(Duration::from_secs(30), "the write seen from node 3", || async {
            let got = other.get(key.as_bytes(), opts(level)).await.ok()??;
            (&got.value[..] == b"v").then_some(())
        })
        .await;
    }
    // The CLI with --cacert (and optionally a client certificate).
    let (code, out, err) = kv(&["--endpoints", &ep, "--cacert", ca, "-c", "quorum", "get", "k1"]);
    assert_eq!((code, out.trim()), (0, "v"), "{err}");
    let (cert, key) = (certs.client_cert.to_str().unwrap(), certs.client_key.to_str().unwrap());
    let (code, out, err) =
        kv_env(&["get", "k2"], &[("KV_ENDPOINTS", &ep), ("KV_CACERT", ca), ("KV_CERT", cert), ("KV_KEY", key)]);
    assert_eq!((code, out.trim()), (0, "v"), "{err}");
    let (code, _, err) = kv(&[
        "--endpoints",
        &ep,
        "--cacert",
        ca,
        "topic",
        "create",
        "t",
        "--partitions",
        "1",
        "--replication-factor",
        "3",
    ]);
    assert_eq!(code, 0, "{err}");

    // A plaintext client: a clear refusal that names the fix.
    let (code, _, err) = kv(&["--endpoints", &ep, "get", "k1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("if it uses TLS, pass --cacert"), "{err}");
    // Another CA: the node's certificate is not trusted.
    let other = Ca::new("someone else's CA").unwrap();
    let other_ca = c.dir.path().join("other-ca.pem");
    write_private(&other_ca, &other.pem()).unwrap();
    let (code, _, err) = kv(&["--endpoints", &ep, "--cacert", other_ca.to_str().unwrap(), "get", "k1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("UnknownIssuer"), "{err}");
    // A client certificate from another CA is refused by the client port.
    let (oc, ok) = other.issue_now(&["client".to_string()]).unwrap();
    let (oc_path, ok_path) = (c.dir.path().join("oc.pem"), c.dir.path().join("ok.pem"));
    write_private(&oc_path, &oc).unwrap();
    write_private(&ok_path, &ok).unwrap();
    let (code, _, err) = kv(&[
        "--endpoints",
        &ep,
        "--cacert",
        ca,
        "--cert",
        oc_path.to_str().unwrap(),
        "--key",
        ok_path.to_str().unwrap(),
        "set",
        "k1",
        "x",
    ]);
    assert_eq!(code, 2, "{err}");
    let (code, out, _) = kv(&["--endpoints", &ep, "--cacert", ca, "get", "k1"]);
    assert_eq!((code, out.trim()), (0, "v"), "a refused write changed nothing");

    // The peer port: plaintext and certificate-less calls fail; the client
    // certificate (signed by the CA, but naming no member) is refused; a
    // node's certificate speaks only for that node.
    let peer = c.node(1).peer_addr.clone();
    assert!(peer_ping(&peer, None, 2).is_err(), "plaintext on the peer port");
    let ca_only = ClientTls::load(&certs.ca, None, None).unwrap();
    assert!(peer_ping(&peer, Some(&ca_only), 2).is_err(), "no client certificate on the peer port");
    let client_cert = ClientTls::load(&certs.ca, Some(&certs.client_cert), Some(&certs.client_key)).unwrap();
    let e = peer_ping(&peer, Some(&client_cert), 2).unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("names no member"), "{}", e.message());
    let (_, n2_cert, n2_key) = certs.nodes.iter().find(|n| n.0 == 2).unwrap().clone();
    let node2 = ClientTls::load(&certs.ca, Some(&n2_cert), Some(&n2_key)).unwrap();
    let e = peer_ping(&peer, Some(&node2), 3).unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("comes from node 3") && e.message().contains("node 2's"), "{}", e.message());
    assert_eq!(peer_ping(&peer, Some(&node2), 2).unwrap(), 1, "node 2's certificate speaking for node 2");
}

#[test]
fn bad_tls_settings_stop_the_node_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("n1");
    let (a, p) = two_free_addrs_on(Ipv4Addr::LOCALHOST);
    let spec = format!("1={a}/{p}");
    let ca = Ca::new("test CA").unwrap();
    let ca_path = dir.path().join("ca.pem");
    write_private(&ca_path, &ca.pem()).unwrap();
    let (cert, key) = ca.issue_now(&["127.0.0.1".to_string(), "node-2".to_string()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("n.pem"), dir.path().join("n-key.pem"));
    write_private(&cert_path, &cert).unwrap();
    write_private(&key_path, &key).unwrap();
    let base = ["serve", "--id", "1", "--cluster", &spec, "--data-dir", d.to_str().unwrap()];
    let run = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().copied().chain(extra.iter().copied()).collect();
        kv(&args)
    };
    let (c, k, ca_s) = (cert_path.to_str().unwrap(), key_path.to_str().unwrap(), ca_path.to_str().unwrap());
    let (code, _, err) = run(&["--tls-cert", c, "--tls-key", k]);
    assert_eq!(code, 2);
    assert!(err.contains("missing --tls-ca"), "{err}");
    let (code, _, err) = run(&["--tls-cert", c, "--tls-key", k, "--tls-ca", ca_s]);
    assert_eq!(code, 2);
    assert!(err.contains("is not valid for the DNS name node-1"), "{err}");
    let (code, _, err) = run(&["--tls-cert", k, "--tls-key", k, "--tls-ca", ca_s]);
    assert_eq!(code, 2);
    assert!(err.contains("holds no PEM certificate"), "{err}");
    let (code, _, err) = run(&["--tls-cert", c, "--tls-key", c, "--tls-ca", ca_s]);
    assert_eq!(code, 2);
    assert!(err.contains("holds no PEM private key"), "{err}");
    assert!(!d.exists(), "a refused start must not create the data dir");
}

/// A node whose certificate has expired: clients refuse it, saying so.
#[test]
fn an_expired_node_certificate_is_refused_by_clients() {
    let dir = tempfile::tempdir().unwrap();
    let (a, p) = two_free_addrs_on(Ipv4Addr::LOCALHOST);
    let ca = Ca::new("test CA").unwrap();
    let ca_path = dir.path().join("ca.pem");
    write_private(&ca_path, &ca.pem()).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let (cert, key) = ca
        .issue(
            &["127.0.0.1".to_string(), "node-1".to_string()],
            now - time::Duration::days(30),
            now - time::Duration::days(1),
        )
        .unwrap();
    let (cert_path, key_path) = (dir.path().join("n.pem"), dir.path().join("n-key.pem"));
    write_private(&cert_path, &cert).unwrap();
    write_private(&key_path, &key).unwrap();
    let mut node = Command::new(KV)
        .args(["serve", "--id", "1", "--cluster", &format!("1={a}/{p}"), "--data-dir"])
        .arg(dir.path().join("n1"))
        .args(["--tls-cert", cert_path.to_str().unwrap(), "--tls-key", key_path.to_str().unwrap()])
        .args(["--tls-ca", ca_path.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let err = loop {
        let (code, _, err) =
            kv(&["--endpoints", &a, "--cacert", ca_path.to_str().unwrap(), "-c", "eventual", "get", "k"]);
        assert_eq!(code, 2, "{err}");
        if err.contains("certificate expired") || std::time::Instant::now() > deadline {
            break err;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    node.kill().unwrap();
    node.wait().unwrap();
    assert!(err.contains("invalid peer certificate: certificate expired"), "{err}");
}

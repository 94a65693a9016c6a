//! Token authentication on real nodes (issue 23): a node started with
//! `--token-file` refuses client requests without a known token
//! (UNAUTHENTICATED) or with too weak a role (PERMISSION_DENIED), on the
//! unary calls and on each write of a session stream, and applies nothing
//! it refused. The Admin test hooks are off unless `--enable-test-hooks`,
//! and need the `admin` role.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use capkv::client::{Client, ClientError, Transport};
use capkv::proto::admin_client::AdminClient;
use capkv::proto::SetClockOffsetRequest;
use capkv::Level;
use common::*;
use tonic::Code;

const READ: &str = "read-token-0123456789abcdef";
const WRITE: &str = "write-token-0123456789abcdef";
const ADMIN: &str = "admin-token-0123456789abcdef";

fn token_file(dir: &std::path::Path) -> String {
    let p = dir.join("tokens");
    std::fs::write(&p, format!("# test tokens\n{READ} read\n{WRITE} readwrite\n{ADMIN} admin\n")).unwrap();
    p.to_str().unwrap().to_string()
}

/// An Admin call with `token` (when given) on `peer_addr`.
async fn set_offset(peer_addr: &str, token: Option<&str>, offset_ms: i64) -> Result<i64, tonic::Status> {
    let ch = capkv::node::peers::channel(peer_addr, IpAddr::V4(Ipv4Addr::UNSPECIFIED)).unwrap();
    let mut req = tonic::Request::new(SetClockOffsetRequest { offset_ms });
    if let Some(t) = token {
        req.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    AdminClient::new(ch).set_clock_offset(req).await.map(|r| r.into_inner().previous_offset_ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_on_every_client_request_and_refusals_apply_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_file(dir.path());
    let c = TestCluster::start(3, &["--token-file", &tokens]).await;
    let ep = c.endpoints();

    // The CLI: no token, an unknown token, a read token writing.
    let (code, _, err) = kv(&["--endpoints", &ep, "get", "k"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unauthenticated") && err.contains("--token"), "{err}");
    let (code, _, err) = kv(&["--endpoints", &ep, "--token", "not-a-known-token-at-all", "get", "k"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unauthenticated: unknown token"), "{err}");
    for level in ["eventual", "quorum", "linearizable"] {
        let (code, _, err) = kv(&["--endpoints", &ep, "--token", READ, "-c", level, "set", "k", "v"]);
        assert_eq!(code, 2, "{level}: {err}");
        assert!(err.contains("permission denied") && err.contains("role readwrite"), "{level}: {err}");
    }
    let (code, _, err) = kv(&["--endpoints", &ep, "--token", READ, "del", "k"]);
    assert_eq!((code, err.contains("permission denied")), (2, true), "{err}");
    let (code, _, err) = kv(&["--endpoints", &ep, "--token", READ, "cas", "k", "--expect", "v", "w"]);
    assert_eq!((code, err.contains("permission denied")), (2, true), "{err}");
    let (code, _, err) = kv(&[
        "--endpoints",
        &ep,
        "--token",
        READ,
        "topic",
        "create",
        "t",
        "--partitions",
        "1",
        "--replication-factor",
        "3",
    ]);
    assert_eq!((code, err.contains("permission denied")), (2, true), "{err}");
    // Nothing was applied: the key and the topic are absent (read at every level).
    for level in ["eventual", "quorum", "linearizable"] {
        let (code, out, err) = kv_env(&["--endpoints", &ep, "-c", level, "get", "k"], &[("KV_TOKEN", READ)]);
        assert_eq!(code, 1, "{level}: {out} {err}");
    }
    let (code, out, err) = kv(&["--endpoints", &ep, "--token", READ, "topic", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.lines().any(|l| l.split_whitespace().next() == Some("t")), "{out}");

    // A readwrite token (from the environment) writes; a read token reads it.
    let (code, _, err) = kv_env(&["--endpoints", &ep, "set", "k", "v"], &[("KV_TOKEN", WRITE)]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = kv(&["--endpoints", &ep, "--token", READ, "get", "k"]);
    assert_eq!((code, out.trim()), (0, "v"), "{err}");

    // The client library, both transports: reads pass, writes are refused
    // with PermissionDenied and change nothing.
    for transport in [Transport::Session, Transport::Unary] {
        let reader = Client::new_with_token(&[&c.node(2).addr], Some(READ)).unwrap().with_transport(transport);
        for level in [Level::Eventual, Level::Quorum, Level::Linearizable] {
            let got = reader.get(b"k", opts(level)).await.unwrap_or_else(|e| panic!("{transport:?} {level:?}: {e}"));
            assert_eq!(got.map(|v| v.value), Some(bytes::Bytes::from_static(b"v")), "{transport:?} {level:?}");
            match reader.set(b"k", b"other", opts(level)).await {
                Err(ClientError::PermissionDenied(m)) => assert!(m.contains("Kv/Set"), "{m}"),
                r => panic!("{transport:?} {level:?}: a read token's set gave {r:?}"),
            }
        }
        let none = Client::new(&[&c.node(2).addr]).unwrap().with_transport(transport);
        match none.get(b"k", opts(Level::Eventual)).await {
            Err(ClientError::Unauthenticated(_)) => {}
            r => panic!("{transport:?}: a get without a token gave {r:?}"),
        }
    }
    let writer = Client::new_with_token(&[&c.node(3).addr], Some(WRITE)).unwrap();
    let v = writer.get(b"k", opts(Level::Linearizable)).await.unwrap().unwrap();
    assert_eq!(&v.value[..], b"v", "refused writes changed the value");

    // Admin is off without --enable-test-hooks, even for an admin token;
    // without a token it is not even reached.
    let peer = &c.node(1).peer_addr;
    let e = set_offset(peer, Some(ADMIN), 1_000).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("--enable-test-hooks"), "{}", e.message());
    let e = set_offset(peer, None, 1_000).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let st = writer.node_status(0, Duration::from_secs(2)).await.unwrap();
    assert_eq!(st.clock_offset_ms, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_hooks_need_the_flag_and_the_admin_role() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_file(dir.path());
    let c = TestCluster::start(1, &["--token-file", &tokens, "--enable-test-hooks"]).await;
    let peer = &c.node(1).peer_addr;
    for t in [READ, WRITE] {
        let e = set_offset(peer, Some(t), 1_000).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains("role admin"), "{}", e.message());
    }
    assert_eq!(set_offset(peer, Some(ADMIN), 1_000).await.unwrap(), 0);
    assert_eq!(set_offset(peer, Some(ADMIN), 0).await.unwrap(), 1_000);

    // Without tokens, the flag alone opens Admin; without the flag it is off.
    let open = TestCluster::start(1, &["--enable-test-hooks"]).await;
    assert_eq!(set_offset(&open.node(1).peer_addr, None, 5).await.unwrap(), 0);
    let closed = TestCluster::start(1, &[]).await;
    let e = set_offset(&closed.node(1).peer_addr, None, 5).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
}

#[test]
fn a_bad_token_file_stops_the_node_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("n1");
    let (a, p) = two_free_addrs_on(Ipv4Addr::LOCALHOST);
    let spec = format!("1={a}/{p}");
    let tokens = dir.path().join("tokens");
    let serve = |token_file: &str| {
        kv(&["serve", "--id", "1", "--cluster", &spec, "--data-dir", d.to_str().unwrap(), "--token-file", token_file])
    };
    for (text, needle) in [
        (format!("{READ} read\n{WRITE} superuser\n"), "line 2: unknown role \"superuser\""),
        ("short read\n".to_string(), "line 1: a token must be 16 to 256 characters"),
        ("# nothing\n".to_string(), "lists no token"),
    ] {
        std::fs::write(&tokens, &text).unwrap();
        let (code, _, err) = serve(tokens.to_str().unwrap());
        assert_eq!(code, 2, "{text}: {err}");
        assert!(err.contains(needle), "{text}: {err}");
        assert!(err.contains("tokens"), "the message names the file: {err}");
    }
    let (code, _, err) = serve("/nonexistent");
    assert_eq!(code, 2);
    assert!(err.contains("cannot read token file /nonexistent"), "{err}");
}

//! The two transports of the client (`Kv.Session` streams, the default, and
//! one unary call per request) answer alike, and a session recovers from
//! what breaks it: a node that dies, pauses or restarts, and more requests
//! at once than one stream carries.

mod common;

use std::sync::Arc;
use std::time::Duration;

use capkv::client::{CallOptions, Client, ClientError, Transport};
use capkv::Level;
use common::*;

const E: Level = Level::Eventual;
const Q: Level = Level::Quorum;
const L: Level = Level::Linearizable;

fn client_on(c: &TestCluster, ids: &[u32], transport: Transport) -> Client {
    let eps: Vec<String> = ids.iter().map(|&i| c.node(i).addr.clone()).collect();
    Client::new(&eps).unwrap().with_transport(transport)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_and_session_calls_answer_alike() {
    let c = TestCluster::start(3, &[]).await;
    for transport in [Transport::Session, Transport::Unary] {
        let client = client_on(&c, &[1, 2, 3], transport);
        assert_eq!(client.transport(), transport);
        for level in [E, Q, L] {
            let key = format!("{transport:?}/{level}");
            let key = key.as_bytes();
            let v1 = client.set(key, b"one", opts(level)).await.unwrap();
            let got = client.get(key, opts(level)).await.unwrap().expect("just written");
            assert_eq!((&got.value[..], got.version), (&b"one"[..], v1), "{transport:?} {level}");
            let o = client.cas(key, Some(b"nope"), b"two", opts(level)).await.unwrap();
            assert!(!o.swapped, "{transport:?} {level}: a failed compare");
            assert_eq!(&o.current.unwrap().value[..], b"one", "it returns the current value");
            let o = client.cas(key, Some(b"one"), b"two", opts(level)).await.unwrap();
            assert!(o.swapped, "{transport:?} {level}");
            let v2 = client.delete(key, opts(level)).await.unwrap();
            assert!(v2 > v1, "{transport:?} {level}: the tombstone's version is newer");
            assert_eq!(client.get(key, opts(level)).await.unwrap(), None, "{transport:?} {level}");
        }
        // Refusals keep their kind and message.
        let e = client.get(b"", opts(E)).await.unwrap_err();
        assert_eq!(e, ClientError::InvalidArgument("key must not be empty".into()), "{transport:?}");
        // A linearizable reply names the leader, whichever node answered.
        let l = leader(&c).await;
        let follower = (1..=3).find(|&i| i != l).unwrap();
        let via_follower = client_on(&c, &[follower, l], transport);
        via_follower.set(b"k", b"v", opts(L)).await.unwrap();
        assert_eq!(via_follower.leader_endpoint(), Some(c.node(l).addr.clone()), "{transport:?}");
    }
}

/// The Raft leader's id, once one node reports it.
async fn leader(c: &TestCluster) -> u32 {
    eventually(Duration::from_secs(20), "a leader is known", || async {
        let s = c.client(1).node_status(0, Duration::from_secs(1)).await.ok()?;
        let id = s.raft?.leader_id;
        (id != 0).then_some(id as u32)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_too_large_for_the_node_fails_alone() {
    // 200 KB is beyond what a node with a 1000-byte value limit decodes; on
    // the session stream it would end the stream, so it goes as a unary
    // call and fails as one, and requests in flight beside it are unharmed.
    let c = TestCluster::start(1, &["--max-value-bytes", "1000"]).await;
    let client = Arc::new(c.client(1));
    assert_eq!(client.transport(), Transport::Session);
    client.set(b"k", b"v", opts(E)).await.unwrap();
    let beside: Vec<_> = (0..50)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.get(b"k", opts(E)).await })
        })
        .collect();
    let e = client.set(b"big", &vec![b'x'; 200_000], opts(E)).await.unwrap_err();
    assert!(matches!(e, ClientError::InvalidArgument(_)), "{e}");
    for t in beside {
        assert_eq!(&t.await.unwrap().unwrap().unwrap().value[..], b"v");
    }
    let e = client.set(b"k", &vec![b'x'; 2000], opts(E)).await.unwrap_err();
    assert!(
        matches!(&e, ClientError::InvalidArgument(m) if m.starts_with("value is 2000 bytes; this node's limit is 1000")),
        "{e}"
    );
    assert_eq!(&client.get(b"k", opts(E)).await.unwrap().unwrap().value[..], b"v");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_reopened_after_its_node_restarts() {
    let mut c = TestCluster::start(3, &[]).await;
    let client = c.client(1);
    client.set(b"k", b"before", opts(E)).await.unwrap();
    c.kill(1);
    // The stream broke; the next request finds nobody to open a new one.
    let e = client.get(b"k", opts(E).timeout(Duration::from_secs(2))).await.unwrap_err();
    assert!(matches!(e, ClientError::Unavailable(_)), "{e}");
    c.restart(1).await;
    let got = eventually(Duration::from_secs(10), "the same client reads again", || async {
        client.get(b"k", opts(E)).await.ok().flatten()
    })
    .await;
    assert_eq!(&got.value[..], b"before");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_timed_out_on_a_paused_node_leaves_the_session_usable() {
    let c = TestCluster::start(3, &[]).await;
    let client = c.client(1);
    client.set(b"k", b"v", opts(E)).await.unwrap();
    c.stop(1);
    let short = opts(E).timeout(Duration::from_millis(500));
    // Sent, then no answer: the client cannot know whether it was applied.
    let e = client.set(b"k", b"w", short).await.unwrap_err();
    assert!(matches!(e, ClientError::Indeterminate(_)), "{e}");
    c.cont(1);
    // The late reply to the forgotten request is dropped; new requests on
    // the same stream get their own replies. (Other keys: the indeterminate
    // write to "k" may still land at any time, as over unary calls.)
    for i in 0..20 {
        let (k, v) = (format!("k{i}"), format!("after-{i}"));
        client.set(k.as_bytes(), v.as_bytes(), opts(E)).await.unwrap();
        assert_eq!(&client.get(k.as_bytes(), opts(E)).await.unwrap().unwrap().value[..], v.as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_requests_at_once_than_one_session_carries_all_complete() {
    let c = TestCluster::start(3, &[]).await;
    let client = Arc::new(c.client(1));
    let n = 3 * capkv::node::request_stream::MAX_SESSION_IN_FLIGHT;
    let o: CallOptions = opts(E).timeout(Duration::from_secs(30));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let key = format!("k{}", i % 100);
                if i % 2 == 0 {
                    client.set(key.as_bytes(), b"v", o).await.map(|_| ())
                } else {
                    client.get(key.as_bytes(), o).await.map(|_| ())
                }
            })
        })
        .collect();
    let mut failed = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            failed.push(e);
        }
    }
    assert!(failed.is_empty(), "{} of {n} failed, e.g. {:?}", failed.len(), failed.first());
}

//! Peer and admin services on real processes refuse hostile input (issue
//! 19, item 8). They are served on the client port and nothing
//! authenticates the caller, so every handler has to check what it is
//! sent: a request that is malformed, names an unknown node, carries a
//! stamp out of the clock's reach, names a snapshot file outside the
//! snapshot dir or moves the clock too far fails with INVALID_ARGUMENT,
//! and the node goes on serving writes at every level.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use bytes::Bytes;
use capkv::proto::admin_client::AdminClient;
use capkv::proto::peer::peer_client::PeerClient;
use capkv::proto::peer::{Cell, CellsRequest, PingRequest, RaftBatch};
use capkv::proto::SetClockOffsetRequest;
use capkv::Level;
use common::*;
use protobuf::Message as _;
use tonic::Code;

fn channel(addr: &str) -> tonic::transport::Channel {
    capkv::node::peers::channel(addr, IpAddr::V4(Ipv4Addr::UNSPECIFIED)).unwrap()
}

fn cell(key: &str, hlc: u64, node_id: u32) -> Cell {
    Cell {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::from_static(b"hostile"),
        tombstone: false,
        hlc,
        node_id,
        origin: Level::Eventual as u32,
        rmw: 0,
    }
}

/// A Raft snapshot message from member 2 whose data (the snapshot file
/// name the receiver installs) points outside the snapshot dir.
fn snapshot_message_naming(path: &str) -> Bytes {
    let mut m = raft::eraftpb::Message::default();
    m.set_msg_type(raft::eraftpb::MessageType::MsgSnapshot);
    m.from = 2;
    m.to = 1;
    m.term = 1_000;
    let snap = m.mut_snapshot();
    snap.set_data(path.as_bytes().to_vec().into());
    let meta = snap.mut_metadata();
    meta.index = 1_000_000;
    meta.term = 1_000;
    meta.mut_conf_state().voters = vec![1, 2, 3];
    Bytes::from(m.write_to_bytes().unwrap())
}

fn code<T>(r: Result<T, tonic::Status>) -> Option<Code> {
    r.err().map(|s| s.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peer_and_admin_requests_fail_alone_and_the_node_keeps_writing() {
    let c = TestCluster::start(3, &[]).await;
    let n1 = c.client(1);
    // Raft has a leader before the hostile messages arrive.
    eventually(Duration::from_secs(30), "a first linearizable write", || async {
        n1.set(b"warm-up", b"x", opts(Level::Linearizable)).await.ok()
    })
    .await;
    let addr = c.node(1).addr.clone();
    let mut peer = PeerClient::new(channel(&addr));
    let mut admin = AdminClient::new(channel(&addr));
    let mut refused: Vec<(&str, Option<Code>)> = Vec::new();

    // A cell stamped u64::MAX: the next local write to the key needs a
    // stamp above it, which used to overflow and kill the writer thread.
    let r = peer.replicate(CellsRequest { from_node: 2, cells: vec![cell("victim", u64::MAX, 2)] }).await;
    refused.push(("cell stamped u64::MAX", code(r)));
    // The same through the quorum level's write path is covered by the
    // shared handler; a stamp a year ahead is refused too.
    let year_ahead = capkv::clock::hlc_from_physical_ms(capkv::clock::system_unix_ms() + 365 * 24 * 3_600_000);
    let r = peer.replicate(CellsRequest { from_node: 2, cells: vec![cell("victim2", year_ahead, 2)] }).await;
    refused.push(("cell stamped a year ahead", code(r)));
    // An empty key is never written by a client.
    let r = peer.replicate(CellsRequest { from_node: 2, cells: vec![cell("", 1, 2)] }).await;
    refused.push(("cell with an empty key", code(r)));
    // Requests naming a node that is not a member, or the receiver itself.
    let r = peer.replicate(CellsRequest { from_node: 99, cells: vec![cell("k", 1, 2)] }).await;
    refused.push(("replicate from unknown node 99", code(r)));
    let r = peer.ping(PingRequest { from_node: 99, hlc: 1 }).await;
    refused.push(("ping from unknown node 99", code(r)));
    let r = peer.ping(PingRequest { from_node: 1, hlc: 1 }).await;
    refused.push(("ping from the receiver itself", code(r)));
    let r = peer.ping(PingRequest { from_node: 2, hlc: u64::MAX }).await;
    refused.push(("ping stamped u64::MAX", code(r)));
    // A snapshot message on the Raft stream naming a path outside the
    // snapshot dir (snapshots travel on the Snapshot RPC only).
    for path in ["../../../../../../etc/passwd", "/etc/passwd"] {
        let batch = RaftBatch {
            from_node: 2,
            messages: vec![snapshot_message_naming(path)],
            lost_log: false,
            log_last_index: 0,
        };
        let r = peer.raft(tokio_stream::iter(vec![batch])).await;
        refused.push(("raft snapshot message naming a path", code(r)));
    }
    // Clock offsets beyond the bound, including one whose absolute value
    // overflows.
    for offset_ms in [24 * 3_600_000, -24 * 3_600_000, i64::MIN, i64::MAX] {
        let r = admin.set_clock_offset(SetClockOffsetRequest { offset_ms }).await;
        refused.push(("clock offset beyond the bound", code(r)));
    }

    // The node still serves: the attacked key takes a new eventual write,
    // and every level writes through node 1.
    n1.set(b"victim", b"good", opts(Level::Eventual)).await.expect("eventual write to the attacked key");
    assert_eq!(&n1.get(b"victim", opts(Level::Eventual)).await.unwrap().unwrap().value[..], b"good");
    for level in Level::ALL {
        let key = format!("after-{level:?}");
        eventually(Duration::from_secs(20), &format!("a {level:?} write through node 1"), || async {
            n1.set(key.as_bytes(), b"v", opts(level)).await.ok()
        })
        .await;
    }
    for (what, code) in &refused {
        assert_eq!(*code, Some(Code::InvalidArgument), "{what} was not refused as invalid");
    }
    // The clock-skew nemesis' offsets (up to an hour) still work.
    for offset_ms in [3_600_000, -3_600_000, 0] {
        admin.set_clock_offset(SetClockOffsetRequest { offset_ms }).await.expect("offset within the bound");
    }
}

//! Connections to the other nodes.
//!
//! One lazily connected tonic channel per peer, shared by every level
//! (tonic channels multiplex and reconnect by themselves). Outgoing
//! connections bind this node's listen IP as their source, so that network
//! partitions between per-node loopback addresses (127.0.0.11, .12, ...)
//! cut exactly the links they name.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::clock::NodeId;
use crate::proto::peer::peer_client::PeerClient;

/// Largest peer message, in bytes (cell batches, snapshots chunks).
pub const MAX_PEER_MESSAGE_BYTES: usize = 80 * 1024 * 1024;
pub const PEER_CONNECT_TIMEOUT_MS: u64 = 500;

pub struct Peers {
    self_id: NodeId,
    addrs: BTreeMap<NodeId, String>,
    clients: BTreeMap<NodeId, PeerClient<Channel>>,
}

impl Peers {
    /// `cluster` lists every member including this node; `local_ip` is used
    /// as the source address of outgoing connections unless unspecified.
    pub fn new(self_id: NodeId, cluster: &BTreeMap<NodeId, String>, local_ip: IpAddr) -> Result<Peers, String> {
        let mut clients = BTreeMap::new();
        for (&id, addr) in cluster {
            if id == self_id {
                continue;
            }
            clients.insert(
                id,
                PeerClient::new(channel(addr, local_ip)?)
                    .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES),
            );
        }
        Ok(Peers { self_id, addrs: cluster.clone(), clients })
    }

    pub fn self_id(&self) -> NodeId {
        self.self_id
    }

    /// Ids of the other nodes, ascending.
    pub fn ids(&self) -> Vec<NodeId> {
        self.clients.keys().copied().collect()
    }

    /// All members including this node, ascending.
    pub fn members(&self) -> &BTreeMap<NodeId, String> {
        &self.addrs
    }

    pub fn client(&self, id: NodeId) -> PeerClient<Channel> {
        self.clients.get(&id).cloned().unwrap_or_else(|| panic!("unknown peer {id}"))
    }
}

/// A lazily connected channel to `addr` with the cluster's transport settings.
pub fn channel(addr: &str, local_ip: IpAddr) -> Result<Channel, String> {
    let ep = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("invalid address {addr:?}: {e}"))?
        .connect_timeout(Duration::from_millis(PEER_CONNECT_TIMEOUT_MS))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(2))
        .keep_alive_while_idle(true)
        .initial_connection_window_size(8 * 1024 * 1024)
        .initial_stream_window_size(4 * 1024 * 1024);
    let ep = if local_ip.is_unspecified() { ep } else { ep.local_address(Some(local_ip)) };
    Ok(ep.connect_lazy())
}

/// A tonic request carrying a deadline for the server (`grpc-timeout`).
/// The client does not enforce it: wrap the call in [`call`].
pub fn request<T>(msg: T, timeout_ms: u64) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(Duration::from_millis(timeout_ms));
    r
}

/// Awaits an RPC for at most `timeout_ms`. A peer that is paused (SIGSTOP)
/// or cut off may never answer; without this the caller would wait forever.
pub async fn call<T>(
    timeout_ms: u64,
    rpc: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    call_full(timeout_ms, rpc).await.map(tonic::Response::into_inner)
}

/// [`call`], keeping the reply's metadata.
pub async fn call_full<T>(
    timeout_ms: u64,
    rpc: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<tonic::Response<T>, tonic::Status> {
    match tokio::time::timeout(Duration::from_millis(timeout_ms), rpc).await {
        Ok(r) => r,
        Err(_) => Err(tonic::Status::deadline_exceeded(format!("no answer within {timeout_ms} ms"))),
    }
}

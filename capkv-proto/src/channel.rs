//! Connections: how every capkv connection (client to node, node to node)
//! is set up, and how a call is bounded in time.
//!
//! Channels connect lazily and reconnect by themselves (tonic multiplexes
//! calls over one HTTP/2 connection). Outgoing connections can bind a
//! source IP, so that network partitions between per-node loopback
//! addresses (127.0.0.11, .12, ...) cut exactly the links they name.

use std::net::IpAddr;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

pub const PEER_CONNECT_TIMEOUT_MS: u64 = 500;

/// Checks `host:port` (port 1..=65535, non-empty host).
pub fn validate_host_port(addr: &str) -> Result<(), String> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(format!("address {addr:?} has no port: expected HOST:PORT"));
    };
    if host.is_empty() {
        return Err(format!("address {addr:?} has no host: expected HOST:PORT"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("address {addr:?} has an invalid port {port:?}: expected 1-65535")),
    }
}

/// A lazily connected channel to `addr` with the cluster's transport settings.
pub fn channel(addr: &str, local_ip: IpAddr) -> Result<Channel, String> {
    let ep = endpoint(addr)?;
    let ep = if local_ip.is_unspecified() { ep } else { ep.local_address(Some(local_ip)) };
    Ok(ep.connect_lazy())
}

/// The transport settings of every capkv connection to `addr`, whatever
/// carries its bytes.
pub fn endpoint(addr: &str) -> Result<Endpoint, String> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("invalid address {addr:?}: {e}"))?
        .connect_timeout(Duration::from_millis(PEER_CONNECT_TIMEOUT_MS))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(2))
        .keep_alive_while_idle(true)
        .initial_connection_window_size(8 * 1024 * 1024)
        .initial_stream_window_size(4 * 1024 * 1024))
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

/// How a process opens connections. Real processes dial TCP
/// ([`TcpDialer`]); a simulation of several nodes in one process dials its
/// in-memory network instead, so that it can cut, delay and reset links.
/// Every connection the node and the client library open goes through one.
pub trait Dialer: Send + Sync + 'static {
    /// A lazily connected channel to `addr` (`host:port`).
    fn channel(&self, addr: &str) -> Result<Channel, String>;
}

/// TCP, with outgoing connections bound to `local_ip` unless unspecified
/// (see [`channel`]).
#[derive(Clone, Copy, Debug)]
pub struct TcpDialer {
    pub local_ip: IpAddr,
}

impl TcpDialer {
    /// Any source address: what a client uses.
    pub fn any() -> Self {
        TcpDialer { local_ip: IpAddr::from([0, 0, 0, 0]) }
    }
}

impl Dialer for TcpDialer {
    fn channel(&self, addr: &str) -> Result<Channel, String> {
        channel(addr, self.local_ip)
    }
}

//! Connections: how every capkv connection (client to node, node to node)
//! is set up, and how a call is bounded in time.
//!
//! Channels connect lazily and reconnect by themselves (tonic multiplexes
//! calls over one HTTP/2 connection). Outgoing connections can bind a
//! source IP, so that network partitions between per-node loopback
//! addresses (127.0.0.11, .12, ...) cut exactly the links they name.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

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
    tls_channel(addr, local_ip, None)
}

/// [`channel`], over TLS when `tls` is given.
pub fn tls_channel(addr: &str, local_ip: IpAddr, tls: Option<&ClientTls>) -> Result<Channel, String> {
    let ep = match tls {
        None => endpoint(addr)?,
        Some(t) => endpoint_with_scheme("https", addr)?
            .tls_config(t.config.clone())
            .map_err(|e| format!("invalid TLS settings for {addr}: {e}"))?,
    };
    let ep = if local_ip.is_unspecified() { ep } else { ep.local_address(Some(local_ip)) };
    Ok(ep.connect_lazy())
}

/// Largest PEM file read (a certificate chain or a key), in bytes.
pub const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;

/// Reads a PEM file named by `flag` (for the error message), bounded.
pub fn read_pem(flag: &str, path: &Path) -> Result<Vec<u8>, String> {
    let len = std::fs::metadata(path).map_err(|e| format!("cannot read {flag} {}: {e}", path.display()))?.len();
    if len > MAX_PEM_FILE_BYTES {
        return Err(format!("{flag} {} is larger than {MAX_PEM_FILE_BYTES} bytes", path.display()));
    }
    std::fs::read(path).map_err(|e| format!("cannot read {flag} {}: {e}", path.display()))
}

/// Checks that `pem` holds at least one certificate (`what` names it).
pub fn check_cert_pem(what: &str, pem: &[u8]) -> Result<(), String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut n = 0;
    for c in CertificateDer::pem_slice_iter(pem) {
        c.map_err(|e| format!("{what} is not a valid PEM certificate file: {e}"))?;
        n += 1;
    }
    if n == 0 {
        return Err(format!("{what} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
    }
    Ok(())
}

/// Checks that `pem` holds a private key (`what` names it).
pub fn check_key_pem(what: &str, pem: &[u8]) -> Result<(), String> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::PrivateKeyDer::from_pem_slice(pem)
        .map(|_| ())
        .map_err(|e| format!("{what} holds no PEM private key: {e}"))
}

/// TLS for outgoing connections: the CA whose signature a server's
/// certificate must carry, and our own certificate and key when we have
/// one (mutual TLS: nodes always present theirs to peers). A server's
/// certificate must also be valid for the host its address names (an IP
/// address or DNS name in its subject alternative names).
#[derive(Clone, Debug)]
pub struct ClientTls {
    config: ClientTlsConfig,
}

impl ClientTls {
    /// From PEM text: the CA certificate(s) and an optional (certificate
    /// chain, private key) pair.
    pub fn from_pem(ca_pem: &[u8], identity: Option<(&[u8], &[u8])>) -> Result<ClientTls, String> {
        ClientTls::checked(["the CA certificate", "the certificate", "the key"].map(String::from), ca_pem, identity)
    }

    /// From files, as the CLI names them (`--cacert`, `--cert`, `--key`):
    /// `cert` and `key` go together.
    pub fn load(ca: &Path, cert: Option<&Path>, key: Option<&Path>) -> Result<ClientTls, String> {
        let ca_pem = read_pem("--cacert", ca)?;
        let (identity, names) = match (cert, key) {
            (None, None) => (None, [String::new(), String::new()]),
            (Some(c), Some(k)) => (
                Some((read_pem("--cert", c)?, read_pem("--key", k)?)),
                [format!("--cert {}", c.display()), format!("--key {}", k.display())],
            ),
            _ => return Err("--cert and --key go together: pass both or neither".to_string()),
        };
        let [cert_name, key_name] = names;
        ClientTls::checked(
            [format!("--cacert {}", ca.display()), cert_name, key_name],
            &ca_pem,
            identity.as_ref().map(|(c, k)| (&c[..], &k[..])),
        )
    }

    /// Checks each PEM text (errors say `names`: CA, certificate, key) and
    /// builds the settings.
    fn checked(names: [String; 3], ca_pem: &[u8], identity: Option<(&[u8], &[u8])>) -> Result<ClientTls, String> {
        let [ca_name, cert_name, key_name] = names;
        check_cert_pem(&ca_name, ca_pem)?;
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
        if let Some((cert, key)) = identity {
            check_cert_pem(&cert_name, cert)?;
            check_key_pem(&key_name, key)?;
            config = config.identity(Identity::from_pem(cert, key));
        }
        Ok(ClientTls { config })
    }
}

/// The transport settings of every capkv connection to `addr`, whatever
/// carries its bytes.
pub fn endpoint(addr: &str) -> Result<Endpoint, String> {
    endpoint_with_scheme("http", addr)
}

fn endpoint_with_scheme(scheme: &str, addr: &str) -> Result<Endpoint, String> {
    Ok(Endpoint::from_shared(format!("{scheme}://{addr}"))
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
/// (see [`channel`]), over TLS when `tls` is set.
#[derive(Clone, Debug)]
pub struct TcpDialer {
    pub local_ip: IpAddr,
    pub tls: Option<ClientTls>,
}

impl TcpDialer {
    /// Any source address, plaintext: what a client uses by default.
    pub fn any() -> Self {
        TcpDialer { local_ip: IpAddr::from([0, 0, 0, 0]), tls: None }
    }
}

impl Dialer for TcpDialer {
    fn channel(&self, addr: &str) -> Result<Channel, String> {
        tls_channel(addr, self.local_ip, self.tls.as_ref())
    }
}

//! An in-memory network for running several whole nodes (and their
//! clients) in one process, with faults a test can inject per link.
//!
//! Every listener has a name (a node's `host:port` address, or any name for
//! a client); a host is that name without its `:port`, so a node listening
//! on two ports (client and peer) is one host. A connection is a pair of
//! in-memory byte pipes; the gRPC stack above it is the real one
//! (tonic/hyper, HTTP/2 keep-alives, reconnects). Faults act on the link
//! between two hosts, both directions, whatever the ports:
//!
//! * **cut** — bytes stop moving and new connections hang, as with a
//!   firewall that drops packets: established connections resume with
//!   nothing lost when the link heals, unless the stack gave up on them
//!   first (keep-alive timeouts), exactly as over TCP;
//! * **delay** — each read on the link waits `delay_ms` before it returns
//!   data (on top of the network's base latency, [`SimNet::with_base_delay_ms`]);
//! * **reset** — every open connection on the link fails at once (what is
//!   in flight is lost); new connections work.
//!
//! Cut and delay are polled every [`STALL_POLL_MS`], so no waker lists are
//! kept; the cost is a timer per stalled connection.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::sync::mpsc;
use tokio::time::Sleep;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Uri};

use crate::node::peers::Dialer;

/// Bytes buffered in each direction of a connection.
pub const PIPE_BYTES: usize = 256 * 1024;
/// How often a stalled read or write (cut or delayed link) looks again.
pub const STALL_POLL_MS: u64 = 5;
/// Connections a host's listener may have waiting to be accepted.
pub const ACCEPT_QUEUE: usize = 64;

/// The link between two hosts, as an unordered pair.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Link(String, String);

/// `name` without its `:port` suffix, if it has one.
pub fn host_of(name: &str) -> &str {
    match name.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => name,
    }
}

impl Link {
    /// The link between the hosts of names `a` and `b` (ports dropped).
    pub fn new(a: &str, b: &str) -> Link {
        let (a, b) = (host_of(a), host_of(b));
        if a <= b {
            Link(a.to_string(), b.to_string())
        } else {
            Link(b.to_string(), a.to_string())
        }
    }
}

#[derive(Default)]
struct State {
    listeners: HashMap<String, mpsc::Sender<SimConn>>,
    cut: HashSet<Link>,
    delay_ms: HashMap<Link, u64>,
    /// Bumped by a reset: connections made before fail.
    resets: HashMap<Link, u64>,
    /// Bumped by a host reset: every connection of the host fails.
    host_resets: HashMap<String, u64>,
    /// Every read of every link waits this long first (the network's
    /// latency; on a paused clock nothing else makes time pass). Whole
    /// milliseconds: tokio's timers have that resolution.
    base_delay_ms: u64,
}

/// The network. Cheap to clone; every clone is the same network.
#[derive(Clone, Default)]
pub struct SimNet {
    state: Arc<Mutex<State>>,
}

impl SimNet {
    pub fn new() -> SimNet {
        SimNet::default()
    }

    /// A network where every read waits `base_delay_ms` before it returns
    /// data (on top of a link's [`SimNet::set_delay_ms`]).
    pub fn with_base_delay_ms(base_delay_ms: u64) -> SimNet {
        let net = SimNet::default();
        net.lock().base_delay_ms = base_delay_ms;
        net
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("sim net lock poisoned")
    }

    /// Accepts connections to `host` from now on (replacing an earlier
    /// listener of the same host, e.g. a restarted node's).
    pub fn listen(&self, host: &str) -> impl tokio_stream::Stream<Item = io::Result<SimConn>> {
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        self.lock().listeners.insert(host.to_string(), tx);
        tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok)
    }

    /// Stops accepting connections to `host` (a crashed node).
    pub fn unlisten(&self, host: &str) {
        self.lock().listeners.remove(host);
    }

    /// A dialer that connects as `from`.
    pub fn dialer(&self, from: &str) -> SimDialer {
        SimDialer { net: self.clone(), from: from.to_string() }
    }

    pub fn cut(&self, a: &str, b: &str) {
        self.lock().cut.insert(Link::new(a, b));
    }

    pub fn heal(&self, a: &str, b: &str) {
        self.lock().cut.remove(&Link::new(a, b));
    }

    pub fn heal_all(&self) {
        let mut st = self.lock();
        st.cut.clear();
        st.delay_ms.clear();
    }

    pub fn set_delay_ms(&self, a: &str, b: &str, delay_ms: u64) {
        let mut st = self.lock();
        if delay_ms == 0 {
            st.delay_ms.remove(&Link::new(a, b));
        } else {
            st.delay_ms.insert(Link::new(a, b), delay_ms);
        }
    }

    /// Fails every connection open on the link now.
    pub fn reset(&self, a: &str, b: &str) {
        *self.lock().resets.entry(Link::new(a, b)).or_default() += 1;
    }

    /// Fails every connection `host` has open now (a crashed process's).
    pub fn reset_host(&self, host: &str) {
        *self.lock().host_resets.entry(host_of(host).to_string()).or_default() += 1;
    }

    /// (cut, read delay in ms, reset epoch): the epoch counts resets of the
    /// link and of either host, so it changes whenever any of them happens.
    fn link_state(&self, link: &Link) -> (bool, u64, u64) {
        let st = self.lock();
        let host_resets = |h: &str| st.host_resets.get(h).copied().unwrap_or(0);
        let epoch = st.resets.get(link).copied().unwrap_or(0) + host_resets(&link.0) + host_resets(&link.1);
        let delay_ms = st.base_delay_ms + st.delay_ms.get(link).copied().unwrap_or(0);
        (st.cut.contains(link), delay_ms, epoch)
    }

    /// Opens a connection from `from` to `to`; waits while the link is cut
    /// (the caller's connect timeout bounds it), refuses when nothing
    /// listens at `to`.
    pub async fn connect(&self, from: &str, to: &str) -> io::Result<SimConn> {
        let link = Link::new(from, to);
        while self.link_state(&link).0 {
            tokio::time::sleep(Duration::from_millis(STALL_POLL_MS)).await;
        }
        let Some(listener) = self.lock().listeners.get(to).cloned() else {
            return Err(io::Error::new(io::ErrorKind::ConnectionRefused, format!("nothing listens at {to}")));
        };
        let (near, far) = tokio::io::duplex(PIPE_BYTES);
        let epoch = self.link_state(&link).2;
        let server_side = SimConn::new(self.clone(), link.clone(), epoch, far, from.to_string());
        listener
            .send(server_side)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::ConnectionRefused, format!("{to} stopped listening")))?;
        Ok(SimConn::new(self.clone(), link, epoch, near, to.to_string()))
    }
}

/// One end of a simulated connection.
pub struct SimConn {
    net: SimNet,
    link: Link,
    epoch: u64,
    pipe: DuplexStream,
    peer: String,
    read_stall: Option<Pin<Box<Sleep>>>,
    write_stall: Option<Pin<Box<Sleep>>>,
    /// The delay of the current read was waited for.
    read_delayed: bool,
}

impl SimConn {
    fn new(net: SimNet, link: Link, epoch: u64, pipe: DuplexStream, peer: String) -> SimConn {
        SimConn { net, link, epoch, pipe, peer, read_stall: None, write_stall: None, read_delayed: false }
    }

    /// `Ready(Ok)` when bytes may move now; `Pending` (with a timer armed)
    /// while the link is cut or, for a read, until its delay passed; an
    /// error after a reset of the link.
    fn gate(&mut self, read: bool, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let stall = if read { &mut self.read_stall } else { &mut self.write_stall };
            if let Some(s) = stall.as_mut() {
                ready!(s.as_mut().poll(cx));
                *stall = None;
            }
            let (cut, delay_ms, resets) = self.net.link_state(&self.link);
            if resets != self.epoch {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "link reset by the simulation",
                )));
            }
            let wait_ms = if cut {
                STALL_POLL_MS
            } else if read && delay_ms > 0 && !self.read_delayed {
                self.read_delayed = true;
                delay_ms
            } else {
                return Poll::Ready(Ok(()));
            };
            *stall = Some(Box::pin(tokio::time::sleep(Duration::from_millis(wait_ms))));
        }
    }
}

impl AsyncRead for SimConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.gate(true, cx))?;
        let before = buf.filled().len();
        let r = ready!(Pin::new(&mut this.pipe).poll_read(cx, buf));
        if buf.filled().len() > before {
            this.read_delayed = false;
        }
        Poll::Ready(r)
    }
}

impl AsyncWrite for SimConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.gate(false, cx))?;
        Pin::new(&mut this.pipe).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.pipe).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.pipe).poll_shutdown(cx)
    }
}

/// Who is on the other end of an accepted simulated connection.
#[derive(Clone, Debug)]
pub struct SimConnInfo {
    pub peer: String,
}

impl Connected for SimConn {
    type ConnectInfo = SimConnInfo;

    fn connect_info(&self) -> SimConnInfo {
        SimConnInfo { peer: self.peer.clone() }
    }
}

/// Connects through a [`SimNet`] as one host.
#[derive(Clone)]
pub struct SimDialer {
    net: SimNet,
    from: String,
}

impl Dialer for SimDialer {
    fn channel(&self, addr: &str) -> Result<Channel, String> {
        let ep = capkv_proto::channel::endpoint(addr)?;
        let (net, from, to) = (self.net.clone(), self.from.clone(), addr.to_string());
        Ok(ep.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let (net, from, to) = (net.clone(), from.clone(), to.clone());
            async move { net.connect(&from, &to).await.map(TokioIo::new) }
        })))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_stream::StreamExt;

    use super::*;

    async fn pair(net: &SimNet) -> (SimConn, SimConn) {
        let mut incoming = Box::pin(net.listen("b"));
        let client = net.connect("a", "b").await.unwrap();
        let server = incoming.next().await.unwrap().unwrap();
        (client, server)
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_flow_stall_while_cut_and_resume_intact_after_heal() {
        let net = SimNet::new();
        let (mut a, mut b) = pair(&net).await;
        a.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        b.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");

        net.cut("b", "a");
        let writer = tokio::spawn(async move {
            a.write_all(b"world").await.unwrap();
            a
        });
        let read = tokio::time::timeout(Duration::from_millis(200), b.read_exact(&mut buf)).await;
        assert!(read.is_err(), "bytes crossed a cut link");
        net.heal("a", "b");
        b.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"world");
        writer.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_fails_open_connections_but_not_new_ones() {
        let net = SimNet::new();
        let (mut a, _b) = pair(&net).await;
        net.reset("a", "b");
        let e = a.write_all(b"x").await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        let (mut a2, mut b2) = pair(&net).await;
        a2.write_all(b"y").await.unwrap();
        let mut buf = [0u8; 1];
        b2.read_exact(&mut buf).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_reads_wait_and_refused_connects_fail() {
        let net = SimNet::new();
        let (mut a, mut b) = pair(&net).await;
        net.set_delay_ms("a", "b", 300);
        let start = tokio::time::Instant::now();
        a.write_all(b"z").await.unwrap();
        let mut buf = [0u8; 1];
        b.read_exact(&mut buf).await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(300));
        let e = net.connect("a", "nobody").await.err().expect("nobody listens");
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    }

    // Proves: a cut between two hosts stops connections to every port of
    // the far host (a node's client and peer ports are one machine), and
    // leaves a third host alone.
    #[tokio::test(start_paused = true)]
    async fn a_cut_acts_on_hosts_whatever_the_port() {
        let net = SimNet::new();
        let _client_port = net.listen("n2:7000");
        let _peer_port = net.listen("n2:8000");
        let _other = net.listen("n3:8000");
        net.cut("n1:7000", "n2:7000");
        for to in ["n2:7000", "n2:8000"] {
            let r = tokio::time::timeout(Duration::from_millis(200), net.connect("n1:7000", to)).await;
            assert!(r.is_err(), "connected to {to} across a cut");
        }
        assert!(net.connect("n1:7000", "n3:8000").await.is_ok());
        assert_eq!(host_of("n2:8000"), "n2");
        assert_eq!(host_of("client-1"), "client-1");
    }
}

//! The capkv client library.
//!
//! ```no_run
//! # async fn demo() -> Result<(), capkv_client::ClientError> {
//! use capkv_client::{Client, CallOptions};
//! use capkv_client::Level;
//! let client = Client::new(&["127.0.0.1:7001", "127.0.0.1:7002"])?;
//! let opts = CallOptions::new(Level::Quorum);
//! client.set(b"greeting", b"hello", opts).await?;
//! let v = client.get(b"greeting", opts).await?;
//! # Ok(()) }
//! ```
//!
//! Every call names its consistency level and has a deadline (default 5 s)
//! covering all attempts. A call is retried on another endpoint only when
//! that cannot apply it twice:
//! * the request never left (connection refused, no route);
//! * the node said it certainly did not apply it (`capkv-retry: safe`,
//!   e.g. no quorum or no leader);
//! * it is a read;
//! * it is a linearizable write: the request id makes the state machine
//!   apply a retry at most once.
//!
//! Otherwise a write whose reply was lost is reported as
//! [`ClientError::Indeterminate`]: it may or may not have taken effect.
//!
//! Linearizable requests go to the Raft leader when the client knows it:
//! every reply to one names the leader (`capkv-raft-leader`), and when that
//! is one of the client's endpoints the next linearizable request starts
//! there. Any node accepts them, but a follower only forwards a write to the
//! leader (a hop each way, and the leader's batches split) and asks the
//! leader for a read index before it reads (a round trip more than the
//! leader needs). The other levels stay on the endpoint that answered last.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tonic::{Code, Status};

pub use capkv_proto::channel::ClientTls;
use capkv_proto::channel::{Dialer, TcpDialer};
pub use capkv_proto::{proto, Level, Version};

use crate::proto::cluster_client::ClusterClient;
use crate::proto::kv_client::KvClient;
use crate::proto::session_reply::Result as R;
use crate::proto::session_request::Op;
use crate::proto::{NodeStatus, RequestHeader};

pub mod auth;
mod request_stream;
pub mod topics;

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between rounds over all endpoints while nodes answer "retry".
pub const RETRY_PAUSE_MS: u64 = 50;
pub const MAX_ENDPOINTS: usize = 64;
/// `Client::leader` when no leader among the endpoints is known.
const NO_LEADER: usize = usize::MAX;
/// Pause between rounds of [`Client::change_members`] over the endpoints.
pub const MEMBERS_RETRY_MS: u64 = 200;
/// Largest request the client sends or reply it accepts.
pub const MAX_MESSAGE_BYTES: usize = 80 * 1024 * 1024;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ClientError {
    #[error("{0}")]
    Config(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Nothing was applied: no endpoint could serve the request.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A write that may or may not have taken effect.
    #[error("indeterminate: {0}")]
    Indeterminate(String),
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    #[error("unimplemented: {0}")]
    Unimplemented(String),
    /// No token, or one the node does not know: nothing was applied.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The token's role does not allow the request: nothing was applied.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("server error ({code}): {message}")]
    Server { code: String, message: String },
}

/// How a client reaches nodes that check tokens or serve TLS, like
/// etcdctl's `--user`/`--cacert`/`--cert`/`--key`.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    /// Sent as `authorization: Bearer TOKEN` with every call.
    pub token: Option<String>,
    /// TLS to the nodes' client ports: the CA that signed their
    /// certificates, and a client certificate when the nodes ask for one.
    pub tls: Option<ClientTls>,
}

impl ConnectOptions {
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    pub fn with_tls(mut self, tls: ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    pub(crate) fn dialer(&self) -> TcpDialer {
        TcpDialer { tls: self.tls.clone(), ..TcpDialer::any() }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct CallOptions {
    pub consistency: Level,
    pub timeout: Duration,
}

impl CallOptions {
    pub fn new(consistency: Level) -> Self {
        CallOptions { consistency, timeout: DEFAULT_TIMEOUT }
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Value {
    pub value: Bytes,
    pub version: Version,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CasOutcome {
    pub swapped: bool,
    /// The value after the operation (`None` = the key is absent).
    pub current: Option<Value>,
}

/// How requests travel to a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// All requests to a node share one `Kv.Session` stream (the default):
    /// a fraction of a unary call's cost per request.
    #[default]
    Session,
    /// One unary gRPC call per request (`Kv.Get`, `Kv.Set`, ...), as a
    /// plain gRPC client would send them.
    Unary,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Session => "session",
            Transport::Unary => "unary",
        }
    }
}

struct Endpoint {
    addr: String,
    transport: Transport,
    kv: KvClient<auth::Conn>,
    session: request_stream::SessionSlot,
    cluster: ClusterClient<auth::Conn>,
}

impl Endpoint {
    async fn get(&self, req: proto::GetRequest, t: Duration) -> Result<tonic::Response<proto::GetResponse>, Status> {
        match self.transport_for(req.key.len()) {
            Transport::Unary => self.kv.clone().get(timed(req, t)).await,
            Transport::Session => request_stream::unpack(self.session.call(Op::Get(req)).await, |r| match r {
                R::Get(r) => Some(r),
                _ => None,
            }),
        }
    }

    /// The transport for a request of `bytes` key and value bytes.
    fn transport_for(&self, bytes: usize) -> Transport {
        if bytes > request_stream::MAX_SESSION_REQUEST_BYTES {
            Transport::Unary
        } else {
            self.transport
        }
    }

    async fn set(&self, req: proto::SetRequest, t: Duration) -> Result<tonic::Response<proto::SetResponse>, Status> {
        match self.transport_for(req.key.len() + req.value.len()) {
            Transport::Unary => self.kv.clone().set(timed(req, t)).await,
            Transport::Session => request_stream::unpack(self.session.call(Op::Set(req)).await, |r| match r {
                R::Set(r) => Some(r),
                _ => None,
            }),
        }
    }

    async fn delete(
        &self,
        req: proto::DeleteRequest,
        t: Duration,
    ) -> Result<tonic::Response<proto::DeleteResponse>, Status> {
        match self.transport_for(req.key.len()) {
            Transport::Unary => self.kv.clone().delete(timed(req, t)).await,
            Transport::Session => request_stream::unpack(self.session.call(Op::Delete(req)).await, |r| match r {
                R::Delete(r) => Some(r),
                _ => None,
            }),
        }
    }

    async fn cas(&self, req: proto::CasRequest, t: Duration) -> Result<tonic::Response<proto::CasResponse>, Status> {
        match self.transport_for(req.key.len() + req.expected.len() + req.new_value.len()) {
            Transport::Unary => self.kv.clone().cas(timed(req, t)).await,
            Transport::Session => request_stream::unpack(self.session.call(Op::Cas(req)).await, |r| match r {
                R::Cas(r) => Some(r),
                _ => None,
            }),
        }
    }

    async fn ping(&self, payload: Bytes, t: Duration) -> Result<tonic::Response<proto::PingResponse>, Status> {
        let req = proto::PingRequest { payload };
        match self.transport_for(req.payload.len()) {
            Transport::Unary => self.cluster.clone().ping(timed(req, t)).await,
            Transport::Session => request_stream::unpack(self.session.call(Op::Ping(req)).await, |r| match r {
                R::Ping(r) => Some(r),
                _ => None,
            }),
        }
    }
}

pub struct Client {
    endpoints: Vec<Endpoint>,
    client_id: u64,
    next_request_id: AtomicU64,
    /// The endpoint that answered last; tried first.
    preferred: AtomicUsize,
    /// The endpoint of the Raft leader as last reported ([`NO_LEADER`]:
    /// unknown); linearizable requests try it first.
    leader: AtomicUsize,
    /// Request ids in flight; the smallest is sent as `ack_below` so the
    /// linearizable state machine can forget finished requests.
    inflight: std::sync::Mutex<std::collections::BTreeSet<u64>>,
    /// Plaintext TCP: a connection a node drops at once may be a TLS port
    /// refusing it, and the error says how to fix that.
    plaintext_tcp: bool,
}

/// A request id, released from the in-flight set when dropped.
struct RequestId<'a> {
    id: u64,
    client: &'a Client,
}

impl Drop for RequestId<'_> {
    fn drop(&mut self) {
        self.client.inflight.lock().expect("inflight lock").remove(&self.id);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Reads: any failure may be retried elsewhere.
    Read,
    /// Writes without de-duplication: only "never applied" may be retried.
    Write,
    /// Writes the server de-duplicates by (client id, request id).
    DedupWrite,
}

impl Client {
    /// A client for `endpoints` (`host:port`). Connections are made lazily.
    pub fn new<S: AsRef<str>>(endpoints: &[S]) -> Result<Client, ClientError> {
        Client::build(endpoints, &TcpDialer::any(), None, true)
    }

    /// A client that opens its connections with `dialer` (a simulation's
    /// in-memory network, for instance).
    pub fn with_dialer<S: AsRef<str>>(endpoints: &[S], dialer: &dyn Dialer) -> Result<Client, ClientError> {
        Client::build(endpoints, dialer, None, false)
    }

    /// A client for `endpoints` that sends `token` (when given) as a
    /// bearer token with every call, for nodes that check tokens.
    pub fn new_with_token<S: AsRef<str>>(endpoints: &[S], token: Option<&str>) -> Result<Client, ClientError> {
        Client::build(endpoints, &TcpDialer::any(), token, true)
    }

    /// A client for `endpoints` with a token and/or TLS (`opts`).
    pub fn connect<S: AsRef<str>>(endpoints: &[S], opts: &ConnectOptions) -> Result<Client, ClientError> {
        Client::build(endpoints, &opts.dialer(), opts.token.as_deref(), opts.tls.is_none())
    }

    fn build<S: AsRef<str>>(
        endpoints: &[S],
        dialer: &dyn Dialer,
        token: Option<&str>,
        plaintext_tcp: bool,
    ) -> Result<Client, ClientError> {
        let bearer = auth::Bearer::new(token).map_err(ClientError::Config)?;
        if endpoints.is_empty() {
            return Err(ClientError::Config(
                "no endpoints given: pass --endpoints HOST:PORT,... or set KV_ENDPOINTS".into(),
            ));
        }
        if endpoints.len() > MAX_ENDPOINTS {
            return Err(ClientError::Config(format!("{} endpoints given; at most {MAX_ENDPOINTS}", endpoints.len())));
        }
        let mut out = Vec::new();
        for e in endpoints {
            let addr = e.as_ref().trim().trim_start_matches("http://").to_string();
            capkv_proto::channel::validate_host_port(&addr)
                .map_err(|m| ClientError::Config(format!("invalid endpoint: {m}")))?;
            let ch = dialer.channel(&addr).map_err(ClientError::Config)?;
            let kv = KvClient::with_interceptor(ch.clone(), bearer.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            out.push(Endpoint {
                session: request_stream::SessionSlot::new(addr.clone(), kv.clone()),
                addr,
                transport: Transport::default(),
                kv,
                cluster: ClusterClient::with_interceptor(ch, bearer.clone()),
            });
        }
        Ok(Client {
            endpoints: out,
            client_id: rand::random::<u64>() | 1,
            next_request_id: AtomicU64::new(1),
            preferred: AtomicUsize::new(0),
            leader: AtomicUsize::new(NO_LEADER),
            inflight: Default::default(),
            plaintext_tcp,
        })
    }

    /// This client, with `client_id` as the id of its exactly-once session
    /// instead of a random one. Two clients must never share an id; a
    /// deterministic simulation names its clients with this.
    pub fn with_client_id(mut self, client_id: u64) -> Self {
        assert!(client_id != 0, "client id 0 means no session");
        self.client_id = client_id;
        self
    }

    /// This client, sending its requests with `transport`.
    pub fn with_transport(mut self, transport: Transport) -> Self {
        for e in &mut self.endpoints {
            e.transport = transport;
        }
        self
    }

    pub fn transport(&self) -> Transport {
        // Every endpoint has the same one; `new` refuses an empty list.
        self.endpoints[0].transport
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints.iter().map(|e| e.addr.clone()).collect()
    }

    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    fn request_id(&self) -> RequestId<'_> {
        let id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        self.inflight.lock().expect("inflight lock").insert(id);
        RequestId { id, client: self }
    }

    fn header(&self, opts: CallOptions, timeout: Duration, request_id: u64) -> Option<RequestHeader> {
        let ack_below = self.inflight.lock().expect("inflight lock").first().copied().unwrap_or(request_id);
        Some(RequestHeader {
            consistency: opts.consistency.to_proto() as i32,
            client_id: self.client_id,
            request_id,
            timeout_ms: timeout.as_millis().clamp(1, u32::MAX as u128) as u32,
            ack_below,
        })
    }

    /// Reads `key`; `None` when it does not exist.
    pub async fn get(&self, key: &[u8], opts: CallOptions) -> Result<Option<Value>, ClientError> {
        let key = Bytes::copy_from_slice(key);
        let rid_guard = self.request_id();
        let rid = rid_guard.id;
        let r = self
            .call(opts, Retry::Read, |ep, t| {
                let req = proto::GetRequest { header: self.header(opts, t, rid), key: key.clone() };
                ep.get(req, t)
            })
            .await?;
        Ok(found_value(r.found, r.value, r.version))
    }

    /// Writes `value`; returns the version it got.
    pub async fn set(&self, key: &[u8], value: &[u8], opts: CallOptions) -> Result<Version, ClientError> {
        let (key, value) = (Bytes::copy_from_slice(key), Bytes::copy_from_slice(value));
        let rid_guard = self.request_id();
        let rid = rid_guard.id;
        let r = self
            .call(opts, write_retry(opts), |ep, t| {
                let req =
                    proto::SetRequest { header: self.header(opts, t, rid), key: key.clone(), value: value.clone() };
                ep.set(req, t)
            })
            .await?;
        Ok(version(r.version))
    }

    /// Deletes `key` (a tombstone with a version).
    pub async fn delete(&self, key: &[u8], opts: CallOptions) -> Result<Version, ClientError> {
        let key = Bytes::copy_from_slice(key);
        let rid_guard = self.request_id();
        let rid = rid_guard.id;
        let r = self
            .call(opts, write_retry(opts), |ep, t| {
                let req = proto::DeleteRequest { header: self.header(opts, t, rid), key: key.clone() };
                ep.delete(req, t)
            })
            .await?;
        Ok(version(r.version))
    }

    /// Sets `key` to `new` if its value is `expected` (`None`: if absent).
    pub async fn cas(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: &[u8],
        opts: CallOptions,
    ) -> Result<CasOutcome, ClientError> {
        let key = Bytes::copy_from_slice(key);
        let new = Bytes::copy_from_slice(new);
        let expected_bytes = expected.map(Bytes::copy_from_slice);
        let rid_guard = self.request_id();
        let rid = rid_guard.id;
        let r = self
            .call(opts, write_retry(opts), |ep, t| {
                let req = proto::CasRequest {
                    header: self.header(opts, t, rid),
                    key: key.clone(),
                    expect_absent: expected_bytes.is_none(),
                    expected: expected_bytes.clone().unwrap_or_default(),
                    new_value: new.clone(),
                };
                ep.cas(req, t)
            })
            .await?;
        Ok(CasOutcome { swapped: r.swapped, current: found_value(r.found, r.current, r.version) })
    }

    /// The status one endpoint reports about itself.
    pub async fn node_status(&self, endpoint: usize, timeout: Duration) -> Result<NodeStatus, ClientError> {
        let e = &self.endpoints[endpoint];
        let mut c = e.cluster.clone();
        capkv_proto::channel::call(timeout.as_millis() as u64, c.status(timed(proto::StatusRequest {}, timeout)))
            .await
            .map_err(|s| match s.code() {
                // The node answered, and refused us: say why.
                Code::Unauthenticated | Code::PermissionDenied | Code::Unimplemented => fatal(s),
                _ => ClientError::Unavailable(format!("{}: {}", e.addr, describe(&s))),
            })
    }

    /// The status of the first endpoint that answers.
    pub async fn any_status(&self, timeout: Duration) -> Result<NodeStatus, ClientError> {
        let mut errors = Vec::new();
        for i in 0..self.endpoints.len() {
            match self.node_status(i, timeout).await {
                Ok(s) => return Ok(s),
                Err(e) => errors.push(e.to_string()),
            }
        }
        Err(ClientError::Unavailable(format!("no endpoint answered: {}", errors.join("; "))))
    }

    /// The Raft group's members (voters and learners, with addresses), as
    /// the first endpoint that answers knows them.
    pub async fn members(&self, timeout: Duration) -> Result<proto::MembersResponse, ClientError> {
        let mut errors = Vec::new();
        for e in &self.endpoints {
            let mut c = e.cluster.clone();
            match capkv_proto::channel::call(
                timeout.as_millis() as u64,
                c.members(timed(proto::MembersRequest {}, timeout)),
            )
            .await
            {
                Ok(r) => return Ok(r),
                Err(s) if matches!(s.code(), Code::Unauthenticated | Code::PermissionDenied) => return Err(fatal(s)),
                Err(s) => errors.push(format!("{}: {}", e.addr, describe(&s))),
            }
        }
        Err(ClientError::Unavailable(format!("no endpoint answered: {}", errors.join("; "))))
    }

    /// One membership change (`kv cluster add/promote/remove`), sent to
    /// whichever endpoint is the Raft leader. Answers that mean "not here or
    /// not now" (not the leader, leadership moving, another change in
    /// progress, a learner still catching up) are retried over the
    /// endpoints every [`MEMBERS_RETRY_MS`] until `timeout`; a refusal
    /// (FAILED_PRECONDITION: would lose quorum, already a member, ...) comes
    /// back at once. A change whose outcome is unknown (the leader changed
    /// or the wait timed out) may have been applied: the caller checks
    /// [`Client::members`] before retrying it.
    pub async fn change_members(
        &self,
        req: proto::ChangeMembersRequest,
        timeout: Duration,
    ) -> Result<proto::ChangeMembersResponse, ClientError> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            for e in &self.endpoints {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ClientError::Unavailable(format!(
                        "membership change not done within {} ms: {last}",
                        timeout.as_millis()
                    )));
                }
                let mut c = e.cluster.clone();
                let mut r = req.clone();
                r.timeout_ms = left.as_millis() as u64;
                match capkv_proto::channel::call(left.as_millis() as u64, c.change_members(timed(r, left))).await {
                    Ok(r) => return Ok(r),
                    Err(s) if matches!(s.code(), Code::Unavailable | Code::Aborted | Code::DeadlineExceeded) => {
                        last = format!("{}: {}", e.addr, describe(&s));
                    }
                    Err(s) => return Err(fatal(s)),
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(left.min(Duration::from_millis(MEMBERS_RETRY_MS))).await;
        }
    }

    /// Echoes `payload` off endpoint `endpoint` over this client's
    /// transport (a benchmark baseline: no storage, no level, no retry).
    pub async fn ping(&self, endpoint: usize, payload: Bytes, timeout: Duration) -> Result<Bytes, Status> {
        let e = &self.endpoints[endpoint];
        capkv_proto::channel::call(timeout.as_millis() as u64, e.ping(payload, timeout)).await.map(|r| r.payload)
    }

    async fn call<'a, T, F, Fut>(&'a self, opts: CallOptions, retry: Retry, f: F) -> Result<T, ClientError>
    where
        F: Fn(&'a Endpoint, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = Instant::now() + opts.timeout;
        let n = self.endpoints.len();
        let to_leader = opts.consistency == Level::Linearizable;
        let leader = self.leader.load(Ordering::Relaxed);
        let start = if to_leader && leader < n { leader } else { self.preferred.load(Ordering::Relaxed) % n };
        let mut failures: Vec<String> = Vec::new();
        let mut last_round: Vec<String> = Vec::new();
        let mut maybe_applied: Option<String> = None;
        let mut round = 0usize;
        loop {
            let mut server_said_retry = false;
            for i in 0..n {
                let idx = (start + i) % n;
                let now = Instant::now();
                if now >= deadline {
                    return Err(self.give_up(opts, &both(&last_round, &failures), maybe_applied));
                }
                let ep = &self.endpoints[idx];
                // The server gets the deadline (in the request header, and in
                // `grpc-timeout` for unary calls); the client
                // enforces it too (a paused node would never answer).
                match capkv_proto::channel::call_full((deadline - now).as_millis() as u64 + 1, f(ep, deadline - now))
                    .await
                {
                    Ok(r) => {
                        if to_leader {
                            self.learn_leader(r.metadata());
                        } else {
                            self.preferred.store(idx, Ordering::Relaxed);
                        }
                        return Ok(r.into_inner());
                    }
                    Err(s) => {
                        if to_leader && idx == leader {
                            // Stale or down: forget it until a reply names one.
                            let _ =
                                self.leader.compare_exchange(leader, NO_LEADER, Ordering::Relaxed, Ordering::Relaxed);
                        }
                        let why = format!("{} ({})", ep.addr, describe(&s));
                        match classify(&s) {
                            Class::Fatal => return Err(fatal(s)),
                            Class::NotSent => failures.push(why),
                            // A node out of disk space (below its reserve)
                            // will not have room a moment later: try the
                            // others, but do not wait for it.
                            Class::NotApplied if s.code() == Code::ResourceExhausted => failures.push(why),
                            Class::NotApplied => {
                                server_said_retry = true;
                                failures.push(why);
                            }
                            Class::Unknown => {
                                if retry == Retry::Write {
                                    return Err(ClientError::Indeterminate(format!(
                                        "the write may or may not have been applied: {why}"
                                    )));
                                }
                                if retry == Retry::DedupWrite {
                                    maybe_applied.get_or_insert(why.clone());
                                }
                                failures.push(why);
                            }
                        }
                    }
                }
            }
            round += 1;
            // Only keep going while some node is alive and asked for a retry
            // (e.g. a leader election); dead endpoints fail fast.
            if !server_said_retry && maybe_applied.is_none() {
                return Err(self.give_up(opts, &both(&last_round, &failures), None));
            }
            let pause = Duration::from_millis(RETRY_PAUSE_MS * (round as u64).min(10));
            if Instant::now() + pause >= deadline {
                return Err(self.give_up(opts, &both(&last_round, &failures), maybe_applied));
            }
            tokio::time::sleep(pause).await;
            last_round = std::mem::take(&mut failures);
        }
    }

    /// Remembers the leader a reply names, when it is one of our endpoints.
    fn learn_leader(&self, md: &tonic::metadata::MetadataMap) {
        let named = md.get(capkv_proto::headers::RAFT_LEADER_HEADER).and_then(|v| v.to_str().ok());
        let idx = named.and_then(|a| self.endpoints.iter().position(|e| e.addr == a)).unwrap_or(NO_LEADER);
        self.leader.store(idx, Ordering::Relaxed);
    }

    /// The endpoint linearizable requests try first, if a leader is known.
    pub fn leader_endpoint(&self) -> Option<String> {
        self.endpoints.get(self.leader.load(Ordering::Relaxed)).map(|e| e.addr.clone())
    }

    fn give_up(&self, opts: CallOptions, failures: &[String], maybe_applied: Option<String>) -> ClientError {
        let tried = if failures.is_empty() {
            "no attempt finished before the deadline".to_string()
        } else {
            failures.join("; ")
        };
        match maybe_applied {
            Some(_) => ClientError::Indeterminate(format!(
                "no definite answer within {} ms (the operation may have been applied): {tried}",
                opts.timeout.as_millis()
            )),
            None => ClientError::Unavailable(format!(
                "no endpoint could serve the {} request: {tried}{}",
                opts.consistency,
                if self.plaintext_tcp && tried.contains(DROPPED_AT_ONCE) { PLAINTEXT_HINT } else { "" }
            )),
        }
    }
}

/// The failures of the previous round and of this one, for the error a
/// caller sees: a retry that ran out of time ("no answer within 48 ms")
/// must not hide why the round before failed (e.g. "1 of 3 replicas
/// answered; 2 needed"). At most two rounds over the endpoints.
fn both(last_round: &[String], failures: &[String]) -> Vec<String> {
    last_round.iter().chain(failures).cloned().collect()
}

fn write_retry(opts: CallOptions) -> Retry {
    if opts.consistency == Level::Linearizable {
        Retry::DedupWrite
    } else {
        Retry::Write
    }
}

pub(crate) fn timed<T>(msg: T, t: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(t);
    r
}

fn version(v: Option<proto::Version>) -> Version {
    v.map(|v| Version { hlc: v.hlc, node_id: v.node_id, rmw: v.rmw }).unwrap_or_default()
}

fn found_value(found: bool, value: Bytes, v: Option<proto::Version>) -> Option<Value> {
    found.then(|| Value { value, version: version(v) })
}

enum Class {
    /// Do not retry: the request itself is wrong or impossible.
    Fatal,
    /// The request never reached a node.
    NotSent,
    /// A node answered that it did not apply it.
    NotApplied,
    /// Sent, fate unknown.
    Unknown,
}

fn classify(s: &Status) -> Class {
    if s.metadata().get(capkv_proto::headers::RETRY_SAFE_HEADER).is_some() {
        return Class::NotApplied;
    }
    if is_connect_error(s) {
        return Class::NotSent;
    }
    match s.code() {
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::Unimplemented
        | Code::NotFound
        | Code::OutOfRange
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::AlreadyExists
        | Code::Internal
        | Code::DataLoss => Class::Fatal,
        _ => Class::Unknown,
    }
}

pub(crate) fn is_connect_error(s: &Status) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(s);
    while let Some(e) = src {
        if e.downcast_ref::<tonic::ConnectError>().is_some() {
            return true;
        }
        src = e.source();
    }
    false
}

/// What a plaintext client is told when a node may be serving TLS.
const PLAINTEXT_HINT: &str = "; if it uses TLS, pass --cacert CA.pem (or set KV_CACERT)";
/// hyper's words for a connection closed under a request: what a plaintext
/// client sees when a TLS port drops it before its HTTP/2 preface is read
/// (a busy node; otherwise the client reads the TLS alert as an "h2
/// protocol error").
const DROPPED_AT_ONCE: &str = "operation was canceled";

pub(crate) fn describe(s: &Status) -> String {
    let mut msg = s.message().to_string();
    if is_connect_error(s) {
        let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(s);
        let mut last = None;
        while let Some(e) = src {
            last = Some(e.to_string());
            src = e.source();
        }
        msg = format!("cannot connect: {}", last.unwrap_or(msg));
    } else if msg.is_empty() {
        msg = format!("{:?}", s.code());
    }
    msg
}

fn fatal(s: Status) -> ClientError {
    let m = s.message().to_string();
    match s.code() {
        Code::InvalidArgument | Code::OutOfRange => ClientError::InvalidArgument(m),
        Code::FailedPrecondition => ClientError::FailedPrecondition(m),
        // tonic's answer for a service the server does not have: most often
        // a client pointed at a node's peer port.
        Code::Unimplemented if m.is_empty() => ClientError::Unimplemented(
            "this address does not serve the client API; is it a node's peer port? \
             Clients use the node's client port (--listen; the peer port is 1000 above it by default)"
                .to_string(),
        ),
        Code::Unimplemented => ClientError::Unimplemented(m),
        // What a plaintext HTTP/2 client sees from a TLS port.
        Code::Internal if m.contains("h2 protocol error") => {
            ClientError::Unavailable(format!("{m}: the node did not answer plaintext gRPC{PLAINTEXT_HINT}"))
        }
        // The node's sentence starts with the same words as our Display.
        Code::Unauthenticated => {
            ClientError::Unauthenticated(m.strip_prefix("unauthenticated: ").unwrap_or(&m).to_string())
        }
        Code::PermissionDenied => {
            ClientError::PermissionDenied(m.strip_prefix("permission denied: ").unwrap_or(&m).to_string())
        }
        c => ClientError::Server { code: format!("{c:?}"), message: m },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_plaintext_client_whose_connections_are_dropped_at_once_is_told_about_tls() {
        let opts = CallOptions::new(Level::Linearizable);
        let dropped = vec![format!("127.0.0.1:1 ({DROPPED_AT_ONCE})"), format!("127.0.0.1:2 ({DROPPED_AT_ONCE})")];
        let refused = vec!["127.0.0.1:1 (cannot connect: Connection refused)".to_string()];
        let plain = Client::new(&["127.0.0.1:1", "127.0.0.1:2"]).unwrap();
        let e = plain.give_up(opts, &dropped, None).to_string();
        assert!(
            e.starts_with("unavailable: no endpoint could serve") && e.contains("if it uses TLS, pass --cacert"),
            "{e}"
        );
        let e = plain.give_up(opts, &refused, None).to_string();
        assert!(!e.contains("TLS"), "a refused connection is not a TLS port: {e}");
        // Not plain TCP (a simulation's network, or a TLS client): no hint.
        let other = Client::with_dialer(&["127.0.0.1:1"], &TcpDialer::any()).unwrap();
        let e = other.give_up(opts, &dropped, None).to_string();
        assert!(!e.contains("TLS"), "{e}");
    }
}

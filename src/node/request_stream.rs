//! The server side of `Kv.Session`: a client's get/set/delete/CAS requests
//! multiplexed over one long-lived gRPC stream.
//!
//! Why: a unary gRPC call opens an HTTP/2 stream and sends headers, a body
//! and trailers each way. On this kind of machine that costs about 20 µs of
//! server CPU and 25 µs of client CPU per call, more than a RocksDB read or
//! a Raft append. A message on an open stream costs about a third of that
//! (see `docs/performance.md`, "Sessions"). Cassandra's native protocol and
//! Kafka's make the same choice: many requests in flight on one connection,
//! matched to replies by an id.
//!
//! What it promises: each request is served exactly as the unary RPC of the
//! same name would serve it (the same handler runs), and its reply carries
//! what the unary call would have put in metadata (the Raft leader, the
//! "retry is safe" mark). Requests run concurrently, at most
//! [`MAX_SESSION_IN_FLIGHT`] per session; replies go back as they finish.
//! Each request is bounded by the deadline in its header, as `grpc-timeout`
//! bounds a unary call. The stream ends when the client closes its side (after
//! the requests in flight are answered), or when the node begins to shut down.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::auth::Role;
use super::service::{KvService, RAFT_LEADER_HEADER, RETRY_SAFE_HEADER};
use crate::proto::kv_server::Kv;
use crate::proto::{session_reply, session_request, PingResponse, SessionError, SessionReply, SessionRequest};

pub use capkv_proto::limits::MAX_SESSION_IN_FLIGHT;

/// The reply half of a session, as the `Kv` service returns it.
pub type Replies = ReceiverStream<Result<SessionReply, Status>>;

/// Starts serving the session whose requests arrive on `inbound`.
/// `role` is the caller's token role (`None` when the node checks no
/// tokens): writes need `readwrite`, checked per request as the unary
/// calls are checked per call.
pub fn serve(svc: KvService, role: Option<Role>, mut inbound: tonic::Streaming<SessionRequest>) -> Replies {
    // Every reply holds a permit until it is queued, so the queue never
    // holds more than MAX_SESSION_IN_FLIGHT replies.
    let (tx, rx) = mpsc::channel(MAX_SESSION_IN_FLIGHT);
    tokio::spawn(async move {
        let in_flight = Arc::new(Semaphore::new(MAX_SESSION_IN_FLIGHT));
        loop {
            let req = tokio::select! {
                _ = svc.node.stopping.cancelled() => break,
                m = inbound.message() => match m {
                    Ok(Some(req)) => req,
                    Ok(None) => break,
                    Err(s) => {
                        tracing::debug!(error = %s, "session stream failed");
                        break;
                    }
                },
            };
            if answered_at_once(&req) {
                // Nothing to wait for: a task of its own would cost more
                // than the answer (a RocksDB read at most).
                if tx.send(Ok(serve_one(&svc, role, req).await)).await.is_err() {
                    break;
                }
                continue;
            }
            let Ok(permit) = in_flight.clone().acquire_owned().await else { break };
            let (svc, tx) = (svc.clone(), tx.clone());
            tokio::spawn(async move {
                let reply = serve_one(&svc, role, req).await;
                let _ = tx.send(Ok(reply)).await;
                drop(permit);
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Pings and eventual gets: served from this node's store alone, without
/// waiting for a peer, the disk or the clock.
fn answered_at_once(req: &SessionRequest) -> bool {
    match &req.op {
        Some(session_request::Op::Ping(_)) => true,
        Some(session_request::Op::Get(g)) => {
            g.header.as_ref().is_some_and(|h| h.consistency == crate::proto::Consistency::Eventual as i32)
        }
        _ => false,
    }
}

/// Serves one request with the unary handler of the same operation.
async fn serve_one(svc: &KvService, role: Option<Role>, req: SessionRequest) -> SessionReply {
    use session_reply::Result as R;
    use session_request::Op;
    let id = req.id;
    let Some(op) = req.op else {
        return failed(id, Status::invalid_argument("a session request without an operation"));
    };
    let header = match &op {
        Op::Get(r) => r.header.as_ref(),
        Op::Set(r) => r.header.as_ref(),
        Op::Delete(r) => r.header.as_ref(),
        Op::Cas(r) => r.header.as_ref(),
        Op::Ping(_) => None,
    };
    let write = match &op {
        Op::Set(_) => Some("Kv/Set"),
        Op::Delete(_) => Some("Kv/Delete"),
        Op::Cas(_) => Some("Kv/Cas"),
        Op::Get(_) | Op::Ping(_) => None,
    };
    if let Some(what) = write {
        if let Err(s) = Role::check_write(role, what) {
            return failed(id, s);
        }
    }
    let timeout_ms = header.map(|h| svc.timeout_ms(h)).unwrap_or(svc.node.cfg.request_timeout_ms);
    let served = async {
        match op {
            Op::Get(r) => svc.get(Request::new(r)).await.map(|r| split(r, R::Get)),
            Op::Set(r) => svc.set(Request::new(r)).await.map(|r| split(r, R::Set)),
            Op::Delete(r) => svc.delete(Request::new(r)).await.map(|r| split(r, R::Delete)),
            Op::Cas(r) => svc.cas(Request::new(r)).await.map(|r| split(r, R::Cas)),
            Op::Ping(p) => Ok((R::Ping(PingResponse { payload: p.payload }), String::new())),
        }
    };
    match tokio::time::timeout(Duration::from_millis(timeout_ms), served).await {
        Ok(Ok((result, raft_leader))) => SessionReply { id, raft_leader, result: Some(result) },
        Ok(Err(s)) => failed(id, s),
        // What tonic answers when `grpc-timeout` expires.
        Err(_) => failed(id, Status::cancelled("Timeout expired")),
    }
}

/// A unary reply as a session result and the leader its metadata names.
fn split<T>(r: Response<T>, wrap: fn(T) -> session_reply::Result) -> (session_reply::Result, String) {
    let leader = r.metadata().get(RAFT_LEADER_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    (wrap(r.into_inner()), leader)
}

fn failed(id: u64, s: Status) -> SessionReply {
    let error = SessionError {
        code: s.code() as i32,
        message: s.message().to_string(),
        retry_safe: s.metadata().get(RETRY_SAFE_HEADER).is_some(),
    };
    SessionReply { id, raft_leader: String::new(), result: Some(session_reply::Result::Error(error)) }
}

//! The client side of `Kv.Session`: one long-lived stream per endpoint that
//! carries this client's requests, each matched to its reply by an id.
//!
//! Why: see `node::session` — a message on an open stream costs the client
//! and the server a fraction of a unary call.
//!
//! What it promises, so that [`super::Client::call`] classifies failures as
//! it does for unary calls:
//! * a request that was never sent (the stream could not be opened) fails
//!   with the connect error tonic gives, i.e. "not sent";
//! * a request that was sent and whose stream then broke fails with
//!   `Unavailable` and no "retry is safe" mark: its fate is unknown;
//! * a reply is turned back into the `tonic::Response` or `Status` the unary
//!   call would have returned, metadata included.
//!
//! A broken stream is replaced by a new one on the next request. At most
//! [`MAX_SESSION_IN_FLIGHT`] requests wait on one stream; more wait for a
//! slot. Dropping a request's future (its deadline passed) forgets it; a
//! late reply is then dropped.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Response, Status};

use crate::proto::kv_client::KvClient;
use crate::proto::{session_reply, session_request, SessionReply, SessionRequest};
use capkv_proto::headers::{RAFT_LEADER_HEADER, RETRY_SAFE_HEADER};

/// Requests one session stream carries at once (as the server allows).
pub use capkv_proto::limits::MAX_SESSION_IN_FLIGHT;
/// Requests with more key and value bytes than this go as unary calls
/// instead: a large message would hold up every request behind it on the
/// stream, and one larger than the node decodes would end the stream (and
/// fail the requests in flight on it) instead of failing alone. Nodes
/// decode at least 64 KiB more than their value limit, so a request this
/// small always reaches the handler.
pub const MAX_SESSION_REQUEST_BYTES: usize = 64 * 1024;

type Waiter = oneshot::Sender<Result<SessionReply, Status>>;

/// The session to one endpoint, opened on first use and reopened after it
/// breaks.
pub(crate) struct SessionSlot {
    addr: String,
    kv: KvClient<crate::auth::Conn>,
    current: Mutex<Option<Arc<Session>>>,
    /// Held while a stream is being opened, so concurrent requests wait for
    /// that one instead of opening their own.
    opening: tokio::sync::Mutex<()>,
}

struct Session {
    requests: mpsc::Sender<SessionRequest>,
    next_id: AtomicU64,
    slots: Semaphore,
    pending: Arc<Mutex<Pending>>,
}

struct Pending {
    /// False once the reply stream ended; no new request may wait then.
    open: bool,
    /// Ordered: failing them all (the stream broke) wakes callers in a fixed order.
    waiting: BTreeMap<u64, Waiter>,
}

/// Why a request got no reply on a session.
enum Failed {
    /// The stream had ended before the request was queued: it was not
    /// sent, and here it is back.
    NotSent(session_request::Op),
    Status(Status),
}

impl SessionSlot {
    pub(crate) fn new(addr: String, kv: KvClient<crate::auth::Conn>) -> Self {
        SessionSlot { addr, kv, current: Mutex::new(None), opening: tokio::sync::Mutex::new(()) }
    }

    /// Sends `op` and waits for its reply. The caller bounds the wait.
    pub(crate) async fn call(&self, mut op: session_request::Op) -> Result<SessionReply, Status> {
        // A stream may end between taking it and queueing on it; the
        // request was not sent then, so one more stream is tried.
        for _ in 0..2 {
            let session = self.session().await?;
            match session.call(op).await {
                Ok(r) => return Ok(r),
                Err(Failed::Status(s)) => return Err(s),
                Err(Failed::NotSent(unsent)) => {
                    self.forget(&session);
                    op = unsent;
                }
            }
        }
        Err(Status::unavailable(format!("the session to {} ended twice before the request was sent", self.addr)))
    }

    fn forget(&self, s: &Arc<Session>) {
        let mut cur = self.current.lock().expect("session lock");
        if cur.as_ref().is_some_and(|c| Arc::ptr_eq(c, s)) {
            *cur = None;
        }
    }

    fn open_session(&self) -> Option<Arc<Session>> {
        let cur = self.current.lock().expect("session lock");
        cur.as_ref().filter(|s| s.is_open()).cloned()
    }

    async fn session(&self) -> Result<Arc<Session>, Status> {
        if let Some(s) = self.open_session() {
            return Ok(s);
        }
        let _opening = self.opening.lock().await;
        if let Some(s) = self.open_session() {
            return Ok(s);
        }
        let s = Session::open(self.kv.clone(), &self.addr).await?;
        *self.current.lock().expect("session lock") = Some(s.clone());
        Ok(s)
    }
}

impl Session {
    async fn open(mut kv: KvClient<crate::auth::Conn>, addr: &str) -> Result<Arc<Session>, Status> {
        let (tx, rx) = mpsc::channel(MAX_SESSION_IN_FLIGHT);
        let mut replies = kv.session(ReceiverStream::new(rx)).await?.into_inner();
        let pending = Arc::new(Mutex::new(Pending { open: true, waiting: BTreeMap::new() }));
        let p = pending.clone();
        let addr = addr.to_string();
        tokio::spawn(async move {
            let why = loop {
                match replies.message().await {
                    Ok(Some(r)) => {
                        let waiter = p.lock().expect("pending lock").waiting.remove(&r.id);
                        if let Some(w) = waiter {
                            let _ = w.send(Ok(r));
                        }
                    }
                    Ok(None) => break "the node ended it".to_string(),
                    Err(s) => break super::describe(&s),
                }
            };
            tracing::debug!(%addr, %why, "session ended");
            let waiting = {
                let mut p = p.lock().expect("pending lock");
                p.open = false;
                std::mem::take(&mut p.waiting)
            };
            for (_, w) in waiting {
                let _ = w.send(Err(Status::unavailable(format!("the session to {addr} ended ({why})"))));
            }
        });
        Ok(Arc::new(Session {
            requests: tx,
            next_id: AtomicU64::new(1),
            slots: Semaphore::new(MAX_SESSION_IN_FLIGHT),
            pending,
        }))
    }

    fn is_open(&self) -> bool {
        self.pending.lock().expect("pending lock").open
    }

    async fn call(&self, op: session_request::Op) -> Result<SessionReply, Failed> {
        let _slot = self.slots.acquire().await.expect("never closed");
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.pending.lock().expect("pending lock");
            if !p.open {
                return Err(Failed::NotSent(op));
            }
            p.waiting.insert(id, tx);
        }
        let mut forget = Forget { pending: &self.pending, id: Some(id) };
        if let Err(mpsc::error::SendError(unsent)) = self.requests.send(SessionRequest { id, op: Some(op) }).await {
            return Err(Failed::NotSent(unsent.op.expect("sent with an op")));
        }
        let reply = rx.await;
        // Whoever answered (the reader, or its end) removed the waiter.
        forget.id = None;
        match reply {
            Ok(r) => r.map_err(Failed::Status),
            Err(_) => Err(Failed::Status(Status::unavailable("the session ended"))),
        }
    }
}

/// Removes a request from the waiting set when its future is dropped
/// before an answer came (`id` is `None` once one did).
struct Forget<'a> {
    pending: &'a Mutex<Pending>,
    id: Option<u64>,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.pending.lock().expect("pending lock").waiting.remove(&id);
        }
    }
}

/// The unary call's outcome from a session reply: `pick` takes the expected
/// kind of result out of it.
pub(crate) fn unpack<T>(
    reply: Result<SessionReply, Status>,
    pick: fn(session_reply::Result) -> Option<T>,
) -> Result<Response<T>, Status> {
    let reply = reply?;
    let result = match reply.result {
        Some(session_reply::Result::Error(e)) => {
            let mut s = Status::new(Code::from_i32(e.code), e.message);
            if e.retry_safe {
                s.metadata_mut().insert(RETRY_SAFE_HEADER, "safe".parse().expect("ascii"));
            }
            return Err(s);
        }
        Some(r) => pick(r).ok_or_else(|| Status::internal("the node answered a session request with another kind"))?,
        None => return Err(Status::internal("the node answered a session request with no result")),
    };
    let mut r = Response::new(result);
    if !reply.raft_leader.is_empty() {
        if let Ok(v) = reply.raft_leader.parse() {
            r.metadata_mut().insert(RAFT_LEADER_HEADER, v);
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{GetResponse, SessionError, SetResponse};

    fn pick_get(r: session_reply::Result) -> Option<GetResponse> {
        match r {
            session_reply::Result::Get(g) => Some(g),
            _ => None,
        }
    }

    #[test]
    fn a_reply_becomes_the_unary_response_with_its_leader_metadata() {
        let g = GetResponse { found: true, value: "v".into(), version: None };
        let reply = SessionReply {
            id: 7,
            raft_leader: "127.0.0.1:7001".into(),
            result: Some(session_reply::Result::Get(g.clone())),
        };
        let r = unpack(Ok(reply), pick_get).unwrap();
        assert_eq!(r.metadata().get(RAFT_LEADER_HEADER).unwrap(), "127.0.0.1:7001");
        assert_eq!(r.into_inner(), g);
        let reply = SessionReply { id: 7, raft_leader: String::new(), result: Some(session_reply::Result::Get(g)) };
        assert!(unpack(Ok(reply), pick_get).unwrap().metadata().get(RAFT_LEADER_HEADER).is_none());
    }

    #[test]
    fn an_error_reply_becomes_the_unary_status_with_its_retry_mark() {
        for retry_safe in [false, true] {
            let e = SessionError { code: Code::Unavailable as i32, message: "no quorum".into(), retry_safe };
            let reply =
                SessionReply { id: 1, raft_leader: String::new(), result: Some(session_reply::Result::Error(e)) };
            let s = unpack(Ok(reply), pick_get).unwrap_err();
            assert_eq!((s.code(), s.message()), (Code::Unavailable, "no quorum"));
            assert_eq!(s.metadata().get(RETRY_SAFE_HEADER).is_some(), retry_safe);
        }
    }

    #[test]
    fn a_reply_of_the_wrong_kind_or_none_is_an_internal_error() {
        let set = SessionReply {
            id: 1,
            raft_leader: String::new(),
            result: Some(session_reply::Result::Set(SetResponse { version: None })),
        };
        assert_eq!(unpack(Ok(set), pick_get).unwrap_err().code(), Code::Internal);
        let none = SessionReply { id: 1, raft_leader: String::new(), result: None };
        assert_eq!(unpack(Ok(none), pick_get).unwrap_err().code(), Code::Internal);
        let broken = Status::unavailable("the session ended");
        assert_eq!(unpack(Err(broken), pick_get).unwrap_err().code(), Code::Unavailable);
    }
}

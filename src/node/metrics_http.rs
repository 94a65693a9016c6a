//! The `/metrics` endpoint (`kv serve --metrics-listen HOST:PORT`): plain
//! HTTP/1.1 on its own port, served with hyper (already in the build under
//! tonic), so Prometheus can scrape a node without speaking gRPC.
//!
//! Promises: `GET /metrics` answers OpenMetrics text (see
//! [`super::metrics_export`]); any other path is 404. Each scrape's reads
//! run on the blocking pool, never on the runtime's workers. At most
//! [`MAX_METRICS_CONNECTIONS`] connections are served at once (more wait in
//! the accept queue). The server stops on the node's cancellation token;
//! its tasks are on the node's tracker, so shutdown waits for them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{metrics_export, NodeState};

/// Scrape connections served at once.
pub const MAX_METRICS_CONNECTIONS: usize = 16;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `/metrics` for `node` on `listener` until `cancel`.
pub fn spawn(listener: TcpListener, node: Arc<NodeState>, cancel: CancellationToken, tracker: &TaskTracker) {
    let conns = tracker.clone();
    tracker.spawn(async move {
        let limit = Arc::new(Semaphore::new(MAX_METRICS_CONNECTIONS));
        loop {
            let permit = tokio::select! {
                _ = cancel.cancelled() => return,
                p = limit.clone().acquire_owned() => p.expect("semaphore is never closed"),
            };
            let (stream, peer) = tokio::select! {
                _ = cancel.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics listener: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let node = node.clone();
            let cancel = cancel.clone();
            conns.spawn(async move {
                let _permit = permit;
                let service = hyper::service::service_fn(move |req| respond(node.clone(), req));
                let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    r = conn => if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "metrics connection ended with an error");
                    },
                }
            });
        }
    });
}

async fn respond(node: Arc<NodeState>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET || req.uri().path() != "/metrics" {
        return Ok(plain(StatusCode::NOT_FOUND, "capkv serves GET /metrics only\n".into()));
    }
    let text = tokio::task::spawn_blocking(move || metrics_export::render(metrics_export::gather(&node))).await;
    Ok(match text {
        Ok(body) => Response::builder()
            .header(hyper::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(Full::new(Bytes::from(body)))
            .expect("static header is valid"),
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, format!("scrape failed: {e}\n")),
    })
}

fn plain(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}

/// Binds the metrics address, saying which one in the error.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))
}

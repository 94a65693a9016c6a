//! One client's connection to the system under test, and how each
//! [`Request`] maps onto it.
//!
//! Every client opens its own connection (its own tonic channel), so N
//! clients are N TCP connections, as in etcd's `benchmark` tool:
//! * capkv: a [`crate::client::Client`] over all endpoints, rotated so that
//!   client i prefers endpoint i mod n (load spreads over the nodes; the
//!   others remain fallbacks, as for any capkv client);
//! * ping: a bare `Cluster` client on endpoint i mod n;
//! * etcd: an `etcd-client` connection to endpoint i mod n only (etcd's
//!   `benchmark` does the same), get = linearizable Range (etcd's default,
//!   not serializable), set = Put, cas = one Txn: if value == expected
//!   (or version == 0 for "absent") then Put else Range, so a failed compare
//!   returns the current value in the same round trip, like capkv's CAS;
//! * fsync: a file of its own ([`super::fsync`]);
//! * produce, capkv: an idempotent [`Producer`] of its own over its own
//!   [`TopicClient`] (with `--producers N`, client i shares the (i mod N)-th
//!   one, which then batches the records of its clients: [`Connection::share`]);
//!   a request's records go round-robin over the partitions, all enqueued
//!   at once (the producer batches them per partition) and the request
//!   ends when every one is acknowledged;
//! * produce, NATS: a JetStream context on its own connection (shared like
//!   capkv's producers with `--producers N`); the topic is
//!   one stream per partition (`TOPIC-i`, subject `TOPIC.i`, file storage,
//!   `replication_factor` replicas), like Kafka's partitions each with its
//!   own leader; a request publishes its records round-robin over the
//!   subjects and waits for every publish acknowledgement.
//!
//! [`prepare`] creates the topic (or the streams) before the clients
//! connect; an existing one is reused.

use std::future::IntoFuture;
use std::time::Duration;

use bytes::Bytes;

use super::config::{BenchConfig, Operation, Target};
use super::fsync::FsyncFile;
use super::stats::{ErrorKind, OpError};
use super::workload::{Outcome, Request};
use super::BenchError;
use crate::client::auth::{Bearer, Conn};
use crate::client::topics::{Producer, ProducerOptions, TopicClient, TopicClientError, TopicSpec};
use crate::client::{CallOptions, Client, ClientError, Transport};
use crate::proto::cluster_client::ClusterClient;
use crate::proto::kv_client::KvClient;
use crate::proto::PingRequest;

/// A request carrying the bench's deadline for the node (`grpc-timeout`).
fn timed<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    crate::node::peers::request(msg, timeout.as_millis() as u64)
}

pub enum Connection {
    Capkv {
        client: Client,
        opts: CallOptions,
    },
    /// See [`BenchConfig::plain_client`].
    Plain {
        kv: KvClient<Conn>,
        level: crate::Level,
        timeout: Duration,
    },
    Ping {
        cluster: ClusterClient<Conn>,
        timeout: Duration,
    },
    SessionPing {
        client: Client,
        timeout: Duration,
    },
    Etcd {
        client: Box<etcd_client::Client>,
        timeout: Duration,
    },
    Fsync(FsyncFile),
    Topic {
        producer: Producer,
        timeout: Duration,
    },
    Nats {
        js: Box<async_nats::jetstream::Context>,
        partitions: u32,
        topic: String,
        next: u64,
        timeout: Duration,
    },
}

/// The NATS subject of partition `i` of `topic`.
fn nats_subject(topic: &str, i: u32) -> String {
    format!("{topic}.{i}")
}

async fn nats_connect(endpoint: &str, timeout: Duration) -> Result<async_nats::Client, BenchError> {
    let url = format!("nats://{endpoint}");
    async_nats::ConnectOptions::new()
        .connection_timeout(timeout.min(Duration::from_secs(5)))
        .connect(url.as_str())
        .await
        .map_err(|e| BenchError::Connect { endpoint: url.clone(), message: e.to_string() })
}

/// Creates what `produce` writes to, if missing: the capkv topic, or one
/// JetStream stream per partition.
pub async fn prepare(cfg: &BenchConfig) -> Result<(), BenchError> {
    let first = strip_scheme(&cfg.endpoints[0]).to_string();
    let setup = |message: String| BenchError::Connect { endpoint: first.clone(), message };
    match cfg.target {
        Target::Capkv => {
            let client =
                TopicClient::connect(&cfg.endpoints, &cfg.connect).map_err(|e| BenchError::Config(e.to_string()))?;
            let spec = TopicSpec::new(cfg.partitions, cfg.replication_factor);
            match client.create_topic(&cfg.topic, spec).await {
                Ok(_) | Err(TopicClientError::TopicExists(_)) => Ok(()),
                Err(TopicClientError::InvalidArgument(m)) => Err(BenchError::Config(m)),
                Err(e) => Err(setup(format!("cannot create topic {:?}: {e}", cfg.topic))),
            }
        }
        Target::Nats => {
            let js = async_nats::jetstream::new(nats_connect(&first, cfg.timeout).await?);
            for i in 0..cfg.partitions {
                let config = async_nats::jetstream::stream::Config {
                    name: format!("{}-{i}", cfg.topic),
                    subjects: vec![nats_subject(&cfg.topic, i)],
                    storage: async_nats::jetstream::stream::StorageType::File,
                    num_replicas: cfg.replication_factor as usize,
                    ..Default::default()
                };
                js.get_or_create_stream(config)
                    .await
                    .map_err(|e| setup(format!("cannot create JetStream stream {}-{i}: {e}", cfg.topic)))?;
            }
            Ok(())
        }
        Target::Etcd => Err(BenchError::Config("etcd has no topics".into())),
    }
}

/// `endpoints` rotated left by `by`: element `by mod n` comes first.
pub fn rotated(endpoints: &[String], by: usize) -> Vec<String> {
    let mut v = endpoints.to_vec();
    if !v.is_empty() {
        let n = v.len();
        v.rotate_left(by % n);
    }
    v
}

/// A plain gRPC channel to `endpoint` (no capkv client library on top).
fn bare_channel(
    endpoint: &str,
    connect: &crate::client::ConnectOptions,
) -> Result<tonic::transport::Channel, BenchError> {
    crate::node::config::validate_host_port(endpoint)
        .map_err(|m| BenchError::Config(format!("invalid endpoint: {m}")))?;
    crate::node::peers::tls_channel(endpoint, std::net::IpAddr::from([0, 0, 0, 0]), connect.tls.as_ref())
        .map_err(|message| BenchError::Connect { endpoint: endpoint.to_string(), message })
}

fn strip_scheme(e: &str) -> &str {
    e.trim().trim_start_matches("http://")
}

impl Connection {
    /// The connection of client `index`. Connections are lazy: an
    /// unreachable node shows up as errors of the first requests.
    pub async fn open(cfg: &BenchConfig, index: usize) -> Result<Connection, BenchError> {
        if cfg.operation == Operation::Fsync {
            let dir = cfg.data_dir.as_deref().expect("validated: fsync has a data dir");
            return FsyncFile::create(dir, index).map(Connection::Fsync).map_err(|e| BenchError::Config(e.to_string()));
        }
        let endpoints = rotated(&cfg.endpoints, index);
        let first = strip_scheme(&endpoints[0]).to_string();
        match (cfg.target, cfg.operation) {
            (Target::Capkv, Operation::Produce) => {
                let client =
                    TopicClient::connect(&endpoints, &cfg.connect).map_err(|e| BenchError::Config(e.to_string()))?;
                let opts = ProducerOptions {
                    acks: cfg.acks,
                    delivery_timeout: cfg.timeout,
                    request_timeout: cfg.timeout,
                    ..ProducerOptions::default()
                };
                let producer = Producer::new(std::sync::Arc::new(client), &cfg.topic, opts)
                    .await
                    .map_err(|e| BenchError::Connect { endpoint: first.clone(), message: e.to_string() })?;
                Ok(Connection::Topic { producer, timeout: cfg.timeout })
            }
            (Target::Nats, _) => {
                let js = async_nats::jetstream::new(nats_connect(&first, cfg.timeout).await?);
                Ok(Connection::Nats {
                    js: Box::new(js),
                    partitions: cfg.partitions,
                    topic: cfg.topic.clone(),
                    next: index as u64,
                    timeout: cfg.timeout,
                })
            }
            (Target::Capkv, Operation::Ping) if cfg.transport == Transport::Session => {
                let client = Client::connect(std::slice::from_ref(&first), &cfg.connect)
                    .map_err(|e| BenchError::Config(e.to_string()))?
                    .with_transport(Transport::Session);
                Ok(Connection::SessionPing { client, timeout: cfg.timeout })
            }
            (Target::Capkv, Operation::Ping) => {
                let ch = bare_channel(&first, &cfg.connect)?;
                let bearer = Bearer::new(cfg.connect.token.as_deref()).map_err(BenchError::Config)?;
                Ok(Connection::Ping { cluster: ClusterClient::with_interceptor(ch, bearer), timeout: cfg.timeout })
            }
            (Target::Capkv, _) if cfg.plain_client => {
                let ch = bare_channel(&first, &cfg.connect)?;
                let level = cfg.effective_level().expect("data operations have a level");
                let bearer = Bearer::new(cfg.connect.token.as_deref()).map_err(BenchError::Config)?;
                Ok(Connection::Plain { kv: KvClient::with_interceptor(ch, bearer), level, timeout: cfg.timeout })
            }
            (Target::Capkv, _) => {
                let client = Client::connect(&endpoints, &cfg.connect)
                    .map_err(|e| BenchError::Config(e.to_string()))?
                    .with_transport(cfg.transport);
                let level = cfg.effective_level().expect("data operations have a level");
                Ok(Connection::Capkv { client, opts: CallOptions::new(level).timeout(cfg.timeout) })
            }
            (Target::Etcd, _) => {
                let options = etcd_client::ConnectOptions::new()
                    .with_timeout(cfg.timeout)
                    .with_connect_timeout(cfg.timeout.min(Duration::from_secs(5)));
                let url = format!("http://{first}");
                let client = etcd_client::Client::connect([url.as_str()], Some(options))
                    .await
                    .map_err(|e| BenchError::Connect { endpoint: url.clone(), message: e.to_string() })?;
                Ok(Connection::Etcd { client: Box::new(client), timeout: cfg.timeout })
            }
        }
    }

    /// Client `index`'s use of this connection's producer (`--producers`):
    /// the same [`Producer`] (capkv) or connection (NATS), with NATS's
    /// round-robin starting at `index` as if it had opened its own. `None`
    /// for connections that are not shared.
    pub fn share(&self, index: usize) -> Option<Connection> {
        match self {
            Connection::Topic { producer, timeout } => {
                Some(Connection::Topic { producer: producer.clone(), timeout: *timeout })
            }
            Connection::Nats { js, partitions, topic, timeout, .. } => Some(Connection::Nats {
                js: js.clone(),
                partitions: *partitions,
                topic: topic.clone(),
                next: index as u64,
                timeout: *timeout,
            }),
            _ => None,
        }
    }

    /// Sends one request and waits for its answer.
    pub async fn execute(&mut self, request: &Request) -> Result<Outcome, OpError> {
        match self {
            Connection::Capkv { client, opts } => capkv(client, *opts, request).await,
            Connection::Plain { kv, level, timeout } => plain(kv, *level, *timeout, request).await,
            Connection::Ping { cluster, timeout } => {
                let Request::Ping { payload } = request else { return Err(wrong(request, "ping")) };
                let mut req = tonic::Request::new(PingRequest { payload: payload.clone() });
                req.set_timeout(*timeout);
                match tokio::time::timeout(*timeout, cluster.ping(req)).await {
                    Ok(Ok(_)) => Ok(Outcome::Done),
                    Ok(Err(s)) => Err(from_status(&s)),
                    Err(_) => Err(OpError::new(ErrorKind::Timeout, format!("no answer within {timeout:?}"))),
                }
            }
            Connection::SessionPing { client, timeout } => {
                let Request::Ping { payload } = request else { return Err(wrong(request, "ping")) };
                client.ping(0, payload.clone(), *timeout).await.map(|_| Outcome::Done).map_err(|s| from_status(&s))
            }
            Connection::Etcd { client, timeout } => match tokio::time::timeout(*timeout, etcd(client, request)).await {
                Ok(r) => r,
                Err(_) => Err(OpError::new(ErrorKind::Timeout, format!("no answer within {timeout:?}"))),
            },
            Connection::Fsync(file) => {
                let Request::Fsync { bytes } = request else { return Err(wrong(request, "fsync")) };
                file.append_and_sync(*bytes).await.map(|_| Outcome::Done)
            }
            Connection::Topic { producer, timeout } => {
                let Request::Produce { value, records } = request else { return Err(wrong(request, "topic")) };
                match tokio::time::timeout(*timeout, produce(producer, value, *records)).await {
                    Ok(r) => r,
                    Err(_) => Err(OpError::new(ErrorKind::Timeout, format!("not acknowledged within {timeout:?}"))),
                }
            }
            Connection::Nats { js, partitions, topic, next, timeout } => {
                let Request::Produce { value, records } = request else { return Err(wrong(request, "nats")) };
                let mut acks = Vec::with_capacity(*records);
                for _ in 0..*records {
                    let subject = nats_subject(topic, (*next % *partitions as u64) as u32);
                    *next += 1;
                    match js.publish(subject, value.clone()).await {
                        Ok(ack) => acks.push(ack.into_future()),
                        Err(e) => return Err(OpError::new(ErrorKind::Unavailable, e.to_string())),
                    }
                }
                match tokio::time::timeout(*timeout, futures::future::join_all(acks)).await {
                    Ok(results) => match results.into_iter().find_map(Result::err) {
                        None => Ok(Outcome::Done),
                        Some(e) => Err(OpError::new(ErrorKind::Indeterminate, e.to_string())),
                    },
                    Err(_) => Err(OpError::new(ErrorKind::Timeout, format!("not acknowledged within {timeout:?}"))),
                }
            }
        }
    }
}

/// Enqueues `records` copies of `value` round-robin and waits for all.
async fn produce(producer: &Producer, value: &Bytes, records: usize) -> Result<Outcome, OpError> {
    let mut waits = Vec::with_capacity(records);
    for _ in 0..records {
        let partition = producer.partition_for(None);
        waits.push(producer.enqueue(partition, None, value).map_err(from_topic_error)?);
    }
    for w in waits {
        match w.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(from_topic_error(e)),
            Err(_) => return Err(OpError::new(ErrorKind::Indeterminate, "the producer stopped before an answer")),
        }
    }
    Ok(Outcome::Done)
}

fn from_topic_error(e: TopicClientError) -> OpError {
    use TopicClientError as T;
    match e {
        T::Unavailable(m) | T::NotEnoughReplicas(m) => OpError::new(ErrorKind::Unavailable, m),
        T::Indeterminate(m) => OpError::new(ErrorKind::Indeterminate, m),
        T::InvalidArgument(m) | T::Config(m) | T::UnknownTopic(m) => OpError::new(ErrorKind::InvalidArgument, m),
        T::FailedPrecondition(m) => OpError::new(ErrorKind::FailedPrecondition, m),
        e => OpError::new(ErrorKind::Other, e.to_string()),
    }
}

fn wrong(request: &Request, connection: &str) -> OpError {
    OpError::new(
        ErrorKind::Other,
        format!("a {} request cannot go over a {connection} connection", request.kind().name()),
    )
}

async fn capkv(client: &Client, opts: CallOptions, request: &Request) -> Result<Outcome, OpError> {
    let r = match request {
        Request::Get { key } => client.get(key, opts).await.map(|_| Outcome::Done),
        Request::Set { key, value, .. } => client.set(key, value, opts).await.map(|_| Outcome::Done),
        Request::Cas { key, expected, new, .. } => client
            .cas(key, expected.as_deref(), new, opts)
            .await
            .map(|o| Outcome::Cas { swapped: o.swapped, current: o.current.map(|c| c.value) }),
        Request::Ping { .. } | Request::Fsync { .. } | Request::Produce { .. } => {
            return Err(wrong(request, "capkv data"))
        }
    };
    r.map_err(from_client_error)
}

/// One request as a bare gRPC call with `client_id = 0`.
async fn plain(
    kv: &mut KvClient<Conn>,
    level: crate::Level,
    timeout: Duration,
    request: &Request,
) -> Result<Outcome, OpError> {
    use crate::proto::{CasRequest, GetRequest, RequestHeader, SetRequest};
    let header = Some(RequestHeader {
        consistency: level.to_proto() as i32,
        client_id: 0,
        request_id: 0,
        timeout_ms: timeout.as_millis().clamp(1, u32::MAX as u128) as u32,
        ack_below: 0,
    });
    let r = match request {
        Request::Get { key } => {
            kv.get(timed(GetRequest { header, key: key.clone() }, timeout)).await.map(|_| Outcome::Done)
        }
        Request::Set { key, value, .. } => kv
            .set(timed(SetRequest { header, key: key.clone(), value: value.clone() }, timeout))
            .await
            .map(|_| Outcome::Done),
        Request::Cas { key, expected, new, .. } => kv
            .cas(timed(
                CasRequest {
                    header,
                    key: key.clone(),
                    expect_absent: expected.is_none(),
                    expected: expected.clone().unwrap_or_default(),
                    new_value: new.clone(),
                },
                timeout,
            ))
            .await
            .map(|r| {
                let r = r.into_inner();
                Outcome::Cas { swapped: r.swapped, current: r.found.then_some(r.current) }
            }),
        Request::Ping { .. } | Request::Fsync { .. } | Request::Produce { .. } => {
            return Err(wrong(request, "capkv data"))
        }
    };
    r.map_err(|s| from_status(&s))
}

pub fn from_client_error(e: ClientError) -> OpError {
    // The kind already names the variant; keep only the server's sentence.
    match e {
        ClientError::Unimplemented(m) => OpError::new(ErrorKind::Unimplemented, m),
        ClientError::Unavailable(m) => OpError::new(ErrorKind::Unavailable, m),
        ClientError::Indeterminate(m) => OpError::new(ErrorKind::Indeterminate, m),
        ClientError::InvalidArgument(m) | ClientError::Config(m) => OpError::new(ErrorKind::InvalidArgument, m),
        ClientError::FailedPrecondition(m) => OpError::new(ErrorKind::FailedPrecondition, m),
        e @ (ClientError::Server { .. } | ClientError::Unauthenticated(_) | ClientError::PermissionDenied(_)) => {
            OpError::new(ErrorKind::Other, e.to_string())
        }
    }
}

pub fn from_status(s: &tonic::Status) -> OpError {
    use tonic::Code;
    let kind = match s.code() {
        Code::Unimplemented => ErrorKind::Unimplemented,
        Code::Unavailable => ErrorKind::Unavailable,
        Code::DeadlineExceeded => ErrorKind::Timeout,
        Code::InvalidArgument | Code::OutOfRange => ErrorKind::InvalidArgument,
        Code::FailedPrecondition => ErrorKind::FailedPrecondition,
        _ => ErrorKind::Other,
    };
    let message = if s.message().is_empty() { format!("{:?}", s.code()) } else { s.message().to_string() };
    OpError::new(kind, message)
}

fn from_etcd_error(e: etcd_client::Error) -> OpError {
    match e {
        etcd_client::Error::GRpcStatus(s) => from_status(&s),
        etcd_client::Error::TransportError(t) => OpError::new(ErrorKind::Unavailable, t.to_string()),
        etcd_client::Error::InvalidArgs(m) => OpError::new(ErrorKind::InvalidArgument, m),
        other => OpError::new(ErrorKind::Other, other.to_string()),
    }
}

async fn etcd(client: &mut etcd_client::Client, request: &Request) -> Result<Outcome, OpError> {
    use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
    match request {
        // No GetOptions: a linearizable Range, etcd's default.
        Request::Get { key } => client.get(key.to_vec(), None).await.map(|_| Outcome::Done).map_err(from_etcd_error),
        Request::Set { key, value, .. } => {
            client.put(key.to_vec(), value.to_vec(), None).await.map(|_| Outcome::Done).map_err(from_etcd_error)
        }
        Request::Cas { key, expected, new, .. } => {
            let compare = match expected {
                Some(v) => Compare::value(key.to_vec(), CompareOp::Equal, v.to_vec()),
                // Version 0 = the key does not exist.
                None => Compare::version(key.to_vec(), CompareOp::Equal, 0),
            };
            let txn = Txn::new()
                .when([compare])
                .and_then([TxnOp::put(key.to_vec(), new.to_vec(), None)])
                .or_else([TxnOp::get(key.to_vec(), None)]);
            let r = client.txn(txn).await.map_err(from_etcd_error)?;
            if r.succeeded() {
                return Ok(Outcome::Cas { swapped: true, current: Some(new.clone()) });
            }
            let current = r.op_responses().into_iter().find_map(|op| match op {
                TxnOpResponse::Get(g) => Some(g.kvs().first().map(|kv| Bytes::copy_from_slice(kv.value()))),
                _ => None,
            });
            Ok(Outcome::Cas { swapped: false, current: current.flatten() })
        }
        Request::Ping { .. } | Request::Fsync { .. } | Request::Produce { .. } => Err(wrong(request, "etcd")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_spread_over_the_endpoints() {
        let e: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(rotated(&e, 0), ["a", "b", "c"]);
        assert_eq!(rotated(&e, 1), ["b", "c", "a"]);
        assert_eq!(rotated(&e, 5), ["c", "a", "b"]);
        assert!(rotated(&[], 3).is_empty());
    }

    /// UNIMPLEMENTED (a level not built yet) keeps its identity through
    /// both error paths, so the CLI and compare.sh can say "n/a".
    #[test]
    fn unimplemented_is_recognised() {
        let e = from_client_error(ClientError::Unimplemented("quorum not built".into()));
        assert_eq!(e.kind, ErrorKind::Unimplemented);
        assert!(e.kind.is_permanent());
        let s = from_status(&tonic::Status::unimplemented(""));
        assert_eq!(s.kind, ErrorKind::Unimplemented);
        assert_eq!(s.message, "Unimplemented");
        assert!(!from_status(&tonic::Status::unavailable("x")).kind.is_permanent());
    }
}

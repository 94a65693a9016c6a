//! What one benchmark run does, and the bounds every setting must respect.
//!
//! The CLI fills a [`BenchConfig`]; [`BenchConfig::validate`] rejects
//! anything out of bounds before a single connection is made, so a typo
//! fails in milliseconds instead of after a warm-up.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::BenchError;
use crate::level::Level;

/// Concurrent clients (= connections) at most.
pub const MAX_CLIENTS: usize = 4_096;
/// Distinct keys at most (pre-population writes each one once).
pub const MAX_KEYS: u64 = 10_000_000;
/// Largest value (or ping payload / fsync write), in bytes. Nodes refuse
/// more than their `--max-value-bytes` (1 MiB by default) anyway.
pub const MAX_VALUE_BYTES: usize = 16 * 1024 * 1024;
/// Longest measured phase.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Longest warm-up.
pub const MAX_WARMUP: Duration = Duration::from_secs(3600);
/// Longest key prefix, in bytes (keys are the prefix plus 10 digits).
pub const MAX_KEY_PREFIX_BYTES: usize = 1_024;
/// Most records one `produce` request sends (and waits for) together.
pub const MAX_BATCH_RECORDS: usize = 10_000;
/// Most partitions of the topic (or stream subjects) `produce` creates.
pub const MAX_TOPIC_PARTITIONS: u32 = 1_024;

/// The workload a run issues (`--op`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// Reads of pre-populated keys.
    Get,
    /// Blind writes.
    Set,
    /// Compare-and-set against the value the client last saw.
    Cas,
    /// Gets with probability `read_ratio`, sets otherwise.
    Mixed,
    /// capkv's bare `Cluster.Ping` round trip: no storage, no level.
    Ping,
    /// Append + fdatasync of a local file: the disk's durable-write floor.
    Fsync,
    /// Records to a topic (capkv) or a JetStream stream (NATS), waiting
    /// for the acknowledgement of each request's batch.
    Produce,
}

impl Operation {
    pub fn name(self) -> &'static str {
        match self {
            Operation::Get => "get",
            Operation::Set => "set",
            Operation::Cas => "cas",
            Operation::Mixed => "mixed",
            Operation::Ping => "ping",
            Operation::Fsync => "fsync",
            Operation::Produce => "produce",
        }
    }

    /// Whether the keys must exist (with known values) before measuring.
    pub fn needs_population(self) -> bool {
        matches!(self, Operation::Get | Operation::Cas | Operation::Mixed)
    }

    /// Whether the consistency level means anything for this workload.
    pub fn uses_level(self) -> bool {
        !matches!(self, Operation::Ping | Operation::Fsync | Operation::Produce)
    }
}

/// The system under test (`--target`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Capkv,
    /// etcd 3.x through the `etcd-client` crate: set = Put, get =
    /// linearizable Range, cas = Txn(value compare → Put, else Get).
    Etcd,
    /// NATS JetStream (`produce` only) through `async-nats`: publishes to a
    /// file-backed stream with as many replicas as the topic would have.
    Nats,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Capkv => "capkv",
            Target::Etcd => "etcd",
            Target::Nats => "nats",
        }
    }
}

/// When the measured phase ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopAfter {
    /// After this much time (requests in flight then still count).
    Duration(Duration),
    /// After this many requests, summed over all clients.
    Requests(u64),
}

#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub operation: Operation,
    pub target: Target,
    /// The level of every capkv request; etcd is always linearizable.
    pub level: Level,
    /// `host:port` (or `http://host:port`) of the nodes.
    pub endpoints: Vec<String>,
    pub clients: usize,
    pub stop: StopAfter,
    /// Requests issued before measuring starts, and not counted.
    pub warmup: Duration,
    pub keys: u64,
    pub value_bytes: usize,
    /// Share of gets in the `mixed` workload, in [0, 1].
    pub read_ratio: f64,
    /// Deadline of each request.
    pub timeout: Duration,
    /// Seeds every client's generator (client i uses seed + i).
    pub seed: u64,
    pub key_prefix: String,
    /// Directory of the `fsync` workload's files.
    pub data_dir: Option<PathBuf>,
    /// `produce`: the topic (capkv) or stream and subject (NATS), created
    /// when missing.
    pub topic: String,
    /// `produce`: records per request, sent together; the request ends
    /// when all are acknowledged.
    pub batch_records: usize,
    /// `produce`: acknowledgement level (capkv; JetStream always acks once
    /// the stream's replicas have the message).
    pub acks: crate::client::topics::Acks,
    /// `produce`: how many producers (capkv: idempotent [`Producer`]s with
    /// their connections; NATS: connections) the clients share, client i
    /// using the (i mod N)-th; `None` gives every client its own. A shared
    /// producer batches the concurrent sends of its clients into one
    /// request per partition, as one Kafka producer shared by an
    /// application's threads does.
    ///
    /// [`Producer`]: crate::client::topics::Producer
    pub producers: Option<usize>,
    /// `produce`: partitions and replicas of a topic (stream) it creates.
    pub partitions: u32,
    pub replication_factor: u32,
    /// capkv get/set/cas/mixed/ping: how requests travel (a session stream
    /// per connection, or one unary call each).
    pub transport: crate::client::Transport,
    /// capkv get/set/cas/mixed: unary calls from the generated gRPC stub
    /// with `client_id = 0` ("no session"), one connection per client to
    /// one node (clients spread over the endpoints): what a client in
    /// another language sends when it fills in only what the proto requires.
    pub plain_client: bool,
    /// capkv: the token (`--token` / `KV_TOKEN`) and TLS settings
    /// (`--cacert`, `--cert`, `--key`) of every connection.
    pub connect: crate::client::ConnectOptions,
    /// `--timeline-ms`: count successes and errors per interval of this
    /// length over the measured phase (needs `--duration`).
    pub timeline: Option<Duration>,
    /// `--rate`: at most this many requests per second in total, spread
    /// evenly over the clients ([`super::pace::Pacer`]); `None`: flat out.
    pub rate_per_sec: Option<f64>,
}

impl BenchConfig {
    /// A run of `operation` with the defaults of `kv bench`.
    pub fn new(operation: Operation, target: Target, endpoints: Vec<String>) -> Self {
        BenchConfig {
            operation,
            target,
            level: Level::Eventual,
            endpoints,
            clients: 1,
            stop: StopAfter::Duration(Duration::from_secs(10)),
            warmup: Duration::from_secs(2),
            keys: 1_000,
            value_bytes: 128,
            read_ratio: 0.9,
            timeout: Duration::from_secs(5),
            seed: 1,
            key_prefix: "bench/".into(),
            data_dir: None,
            topic: "bench".into(),
            batch_records: 1,
            acks: crate::client::topics::Acks::All,
            producers: None,
            partitions: 3,
            replication_factor: 3,
            transport: crate::client::Transport::Session,
            plain_client: false,
            connect: crate::client::ConnectOptions::default(),
            timeline: None,
            rate_per_sec: None,
        }
    }

    /// Buckets a client's timeline needs: the measured duration plus one
    /// request timeout (requests in flight at the end finish within it).
    pub fn timeline_buckets(&self) -> Option<(Duration, usize)> {
        let (bucket, StopAfter::Duration(d)) = (self.timeline?, self.stop) else { return None };
        let span = d + self.timeout;
        Some((bucket, (span.as_nanos() / bucket.as_nanos().max(1)) as usize + 1))
    }

    /// The level requests really run at: etcd's puts and ranges are always
    /// linearizable; ping and fsync have no level.
    pub fn effective_level(&self) -> Option<Level> {
        if !self.operation.uses_level() {
            None
        } else if self.target == Target::Etcd {
            Some(Level::Linearizable)
        } else {
            Some(self.level)
        }
    }

    pub fn validate(&self) -> Result<(), BenchError> {
        let err = |m: String| Err(BenchError::Config(m));
        if self.clients == 0 || self.clients > MAX_CLIENTS {
            return err(format!("--clients {} is out of range: 1 to {MAX_CLIENTS}", self.clients));
        }
        if self.keys == 0 || self.keys > MAX_KEYS {
            return err(format!("--keys {} is out of range: 1 to {MAX_KEYS}", self.keys));
        }
        if self.value_bytes > MAX_VALUE_BYTES {
            return err(format!("--value-size {} is over the limit of {MAX_VALUE_BYTES} bytes", self.value_bytes));
        }
        if !(0.0..=1.0).contains(&self.read_ratio) {
            return err(format!("--read-ratio {} must be between 0 and 1", self.read_ratio));
        }
        match self.stop {
            StopAfter::Duration(d) if d.is_zero() || d > MAX_DURATION => {
                return err(format!("--duration {d:?} is out of range: more than 0, at most {MAX_DURATION:?}"))
            }
            StopAfter::Requests(0) => return err("--requests must be at least 1".into()),
            _ => {}
        }
        if self.warmup > MAX_WARMUP {
            return err(format!("--warmup {:?} is over the limit of {MAX_WARMUP:?}", self.warmup));
        }
        if self.timeout.is_zero() {
            return err("the request timeout must be positive".into());
        }
        if let Some(bucket) = self.timeline {
            if bucket.is_zero() {
                return err("--timeline-ms must be at least 1".into());
            }
            let StopAfter::Duration(_) = self.stop else {
                return err("--timeline-ms needs --duration (a timeline spans a known time)".into());
            };
            let (_, buckets) = self.timeline_buckets().expect("a duration run with a timeline");
            if buckets > super::stats::MAX_TIMELINE_BUCKETS {
                return err(format!(
                    "--timeline-ms {} over --duration plus --timeout makes {buckets} intervals; at most {}",
                    bucket.as_millis(),
                    super::stats::MAX_TIMELINE_BUCKETS
                ));
            }
            // Every client holds its own timeline until the run ends.
            let total_bytes = buckets.saturating_mul(self.clients).saturating_mul(super::stats::TIMELINE_BUCKET_BYTES);
            if total_bytes > super::stats::MAX_TIMELINE_TOTAL_BYTES {
                return err(format!(
                    "--timeline-ms {} with {} clients needs {} MiB of interval counters ({buckets} intervals per \
                     client); at most {} MiB: use longer intervals, fewer clients or a shorter run",
                    bucket.as_millis(),
                    self.clients,
                    total_bytes >> 20,
                    super::stats::MAX_TIMELINE_TOTAL_BYTES >> 20
                ));
            }
        }
        if self.key_prefix.len() > MAX_KEY_PREFIX_BYTES {
            return err(format!("--key-prefix is over {MAX_KEY_PREFIX_BYTES} bytes"));
        }
        match self.operation {
            Operation::Fsync if self.data_dir.is_none() => {
                return err("--op fsync needs --data-dir: the directory whose disk to measure".into())
            }
            Operation::Ping if self.target != Target::Capkv => {
                return err(format!(
                    "--op ping measures capkv's bare gRPC round trip; it has no {} equivalent",
                    self.target.name()
                ))
            }
            Operation::Produce if self.target == Target::Etcd => {
                return err("--op produce needs a log: --target capkv or nats, not etcd".into())
            }
            op if op != Operation::Produce && self.target == Target::Nats => {
                return err(format!("--target nats supports --op produce only, not {}", op.name()))
            }
            _ => {}
        }
        if let Some(r) = self.rate_per_sec {
            if !(r > 0.0 && r.is_finite()) {
                return err(format!("--rate {r} must be a positive number of requests per second"));
            }
        }
        if self.operation == Operation::Produce {
            if self.batch_records == 0 || self.batch_records > MAX_BATCH_RECORDS {
                return err(format!("--batch {} is out of range: 1 to {MAX_BATCH_RECORDS}", self.batch_records));
            }
            if self.partitions == 0 || self.partitions > MAX_TOPIC_PARTITIONS {
                return err(format!("--partitions {} is out of range: 1 to {MAX_TOPIC_PARTITIONS}", self.partitions));
            }
            if self.replication_factor == 0 {
                return err("--replication-factor must be at least 1".into());
            }
            if let Some(n) = self.producers {
                if n == 0 || n > self.clients {
                    return err(format!("--producers {n} is out of range: 1 to --clients ({})", self.clients));
                }
            }
            if self.topic.is_empty() || !self.topic.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return err(format!("--topic {:?} must be letters, digits, '-' or '_'", self.topic));
            }
        }
        if self.operation != Operation::Fsync && self.endpoints.is_empty() {
            return err("no endpoints given: pass --endpoints HOST:PORT,...".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(op: Operation) -> BenchConfig {
        BenchConfig::new(op, Target::Capkv, vec!["127.0.0.1:7001".into()])
    }

    /// The defaults are a valid run; each bound is enforced.
    #[test]
    fn bounds_are_enforced() {
        assert!(cfg(Operation::Get).validate().is_ok());
        type Edit = Box<dyn Fn(&mut BenchConfig)>;
        let bad: Vec<Edit> = vec![
            Box::new(|c| c.clients = 0),
            Box::new(|c| c.clients = MAX_CLIENTS + 1),
            Box::new(|c| c.keys = 0),
            Box::new(|c| c.keys = MAX_KEYS + 1),
            Box::new(|c| c.value_bytes = MAX_VALUE_BYTES + 1),
            Box::new(|c| c.read_ratio = 1.5),
            Box::new(|c| c.read_ratio = f64::NAN),
            Box::new(|c| c.stop = StopAfter::Requests(0)),
            Box::new(|c| c.stop = StopAfter::Duration(Duration::ZERO)),
            Box::new(|c| c.warmup = MAX_WARMUP + Duration::from_secs(1)),
            Box::new(|c| c.endpoints.clear()),
            Box::new(|c| c.timeline = Some(Duration::ZERO)),
            Box::new(|c| {
                c.timeline = Some(Duration::from_millis(10));
                c.stop = StopAfter::Requests(10);
            }),
            // 10 s + the 5 s timeout at 0.1 ms: 150,001 intervals.
            Box::new(|c| c.timeline = Some(Duration::from_micros(100))),
            // 1,501 intervals is fine for one client, not for the most
            // clients at 1 ms: 15,001 × MAX_CLIENTS × 8 B is over the total.
            Box::new(|c| {
                c.timeline = Some(Duration::from_millis(1));
                c.clients = MAX_CLIENTS;
            }),
        ];
        for (i, f) in bad.iter().enumerate() {
            let mut c = cfg(Operation::Get);
            f(&mut c);
            assert!(matches!(c.validate(), Err(BenchError::Config(_))), "case {i} should be rejected");
        }
    }

    /// A timeline spans the duration plus one timeout, bucket by bucket.
    #[test]
    fn timeline_buckets_cover_duration_and_timeout() {
        let mut c = cfg(Operation::Set);
        assert_eq!(c.timeline_buckets(), None);
        c.timeline = Some(Duration::from_millis(10));
        assert!(c.validate().is_ok());
        // 10 s + 5 s at 10 ms, plus the partial last one.
        assert_eq!(c.timeline_buckets(), Some((Duration::from_millis(10), 1_501)));
    }

    #[test]
    fn fsync_needs_a_directory_but_no_endpoints() {
        let mut c = cfg(Operation::Fsync);
        assert!(c.validate().is_err());
        c.data_dir = Some("/tmp".into());
        c.endpoints.clear();
        assert!(c.validate().is_ok());
    }

    #[test]
    fn ping_is_capkv_only() {
        let mut c = cfg(Operation::Ping);
        assert!(c.validate().is_ok());
        c.target = Target::Etcd;
        assert!(c.validate().is_err());
    }

    #[test]
    fn produce_is_for_logs_only() {
        let mut c = cfg(Operation::Produce);
        assert!(c.validate().is_ok());
        assert_eq!(c.effective_level(), None, "topics have acks, not levels");
        c.target = Target::Nats;
        assert!(c.validate().is_ok());
        c.target = Target::Etcd;
        assert!(c.validate().is_err());
        let mut n = cfg(Operation::Set);
        n.target = Target::Nats;
        assert!(n.validate().is_err(), "nats: produce only");
        for edit in [
            (|c: &mut BenchConfig| c.batch_records = 0) as fn(&mut BenchConfig),
            |c| c.batch_records = MAX_BATCH_RECORDS + 1,
            |c| c.partitions = 0,
            |c| c.replication_factor = 0,
            |c| c.topic = "a b".into(),
            |c| c.producers = Some(0),
            |c| c.producers = Some(c.clients + 1),
            |c| c.rate_per_sec = Some(0.0),
            |c| c.rate_per_sec = Some(f64::NAN),
        ] {
            let mut c = cfg(Operation::Produce);
            edit(&mut c);
            assert!(c.validate().is_err());
        }
    }

    #[test]
    fn etcd_is_always_linearizable() {
        let mut c = cfg(Operation::Set);
        assert_eq!(c.effective_level(), Some(Level::Eventual));
        c.target = Target::Etcd;
        assert_eq!(c.effective_level(), Some(Level::Linearizable));
        assert_eq!(cfg(Operation::Ping).effective_level(), None);
    }
}

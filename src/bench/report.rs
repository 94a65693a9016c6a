//! The result of a run: parameters + throughput + latency percentiles, as
//! JSON (`--output json`, one object; field names carry their unit) or as a
//! few lines of text. Rendering returns strings; the CLI prints them.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use serde::Serialize;

use super::config::{BenchConfig, Operation, StopAfter};
use super::stats::{ClientStats, Stall, Summary};

/// The settings of a run, repeated in every report so a JSON line stands
/// on its own.
#[derive(Clone, Debug, Serialize)]
pub struct Parameters {
    pub target: &'static str,
    pub op: &'static str,
    /// `None` for ping and fsync; always "linearizable" for etcd.
    pub consistency: Option<&'static str>,
    pub clients: usize,
    /// Requested measuring time (`--duration`), if any.
    pub duration_s: Option<f64>,
    /// Requested request count (`--requests`), if any.
    pub requests: Option<u64>,
    pub warmup_s: f64,
    pub keys: u64,
    pub value_size: usize,
    /// Share of gets (`mixed` only).
    pub read_ratio: Option<f64>,
    pub timeout_ms: u64,
    pub seed: u64,
    pub endpoints: Vec<String>,
    pub data_dir: Option<String>,
    /// `produce` only: topic, records per request, acks, partitions, replicas.
    pub topic: Option<String>,
    pub batch_records: Option<usize>,
    pub acks: Option<&'static str>,
    pub partitions: Option<u32>,
    pub replication_factor: Option<u32>,
    /// `produce` only: producers (NATS: connections) the clients share;
    /// equal to `clients` when each has its own.
    pub producers: Option<usize>,
    /// `--rate`: the requests per second the clients were paced at.
    pub rate_per_sec: Option<f64>,
    /// capkv get/set/cas/mixed/ping only: "session" or "unary".
    pub transport: Option<&'static str>,
}

impl Parameters {
    pub fn of(cfg: &BenchConfig) -> Parameters {
        let (duration_s, requests) = match cfg.stop {
            StopAfter::Duration(d) => (Some(d.as_secs_f64()), None),
            StopAfter::Requests(n) => (None, Some(n)),
        };
        let produce = cfg.operation == Operation::Produce;
        Parameters {
            target: if cfg.operation == Operation::Fsync { "local" } else { cfg.target.name() },
            op: cfg.operation.name(),
            consistency: cfg.effective_level().map(|l| l.name()),
            clients: cfg.clients,
            duration_s,
            requests,
            warmup_s: cfg.warmup.as_secs_f64(),
            keys: cfg.keys,
            value_size: cfg.value_bytes,
            read_ratio: (cfg.operation == Operation::Mixed).then_some(cfg.read_ratio),
            timeout_ms: cfg.timeout.as_millis() as u64,
            seed: cfg.seed,
            endpoints: if cfg.operation == Operation::Fsync { Vec::new() } else { cfg.endpoints.clone() },
            data_dir: cfg.data_dir.as_ref().map(|p| p.display().to_string()),
            topic: produce.then(|| cfg.topic.clone()),
            batch_records: produce.then_some(cfg.batch_records),
            acks: (produce && cfg.target == super::config::Target::Capkv).then_some(cfg.acks.name()),
            partitions: produce.then_some(cfg.partitions),
            replication_factor: produce.then_some(cfg.replication_factor),
            producers: produce.then_some(cfg.producers.unwrap_or(cfg.clients)),
            rate_per_sec: cfg.rate_per_sec,
            transport: (cfg.target == super::config::Target::Capkv
                && !matches!(cfg.operation, Operation::Fsync | Operation::Produce))
            .then_some(if cfg.plain_client && cfg.operation != Operation::Ping {
                "plain"
            } else {
                cfg.transport.name()
            }),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub parameters: Parameters,
    /// Measured wall time, from the end of the warm-up to the last answer.
    pub elapsed_s: f64,
    /// Stopped early by the user.
    pub interrupted: bool,
    /// All request kinds together: ops, errors, ops_per_sec, *_us.
    #[serde(flatten)]
    pub overall: Summary,
    pub errors_by_kind: BTreeMap<&'static str, u64>,
    pub first_error: Option<String>,
    pub first_error_kind: Option<&'static str>,
    /// CAS requests that swapped / whose compare failed (both succeeded).
    pub cas_swapped: Option<u64>,
    pub cas_failed_compare: Option<u64>,
    /// The same summary per request kind (get and set of `mixed`).
    pub by_request: BTreeMap<&'static str, Summary>,
    /// CPU the load generator itself used while measuring, in cores
    /// (CPU seconds per second).
    pub client_cpu_cores: f64,
    /// `produce` only: acknowledged records per second (requests × batch)
    /// and their payload in MB/s (10^6 bytes).
    pub records_per_sec: Option<f64>,
    pub mb_per_sec: Option<f64>,
    /// `--timeline-ms` only: successes and errors per interval, by when
    /// they finished, from the start of the measured phase.
    pub timeline: Option<TimelineReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TimelineReport {
    /// Wall-clock start of the measured phase (Unix ms), to line the
    /// intervals up with outside events such as a node being killed.
    pub start_unix_ms: u64,
    pub bucket_ms: u64,
    pub ok: Vec<u32>,
    pub errors: Vec<u32>,
    /// The longest run of intervals within `--duration` in which no
    /// request succeeded (to the interval: at most this long, and longer
    /// than this minus two intervals); `None` when none was empty.
    pub longest_stall: Option<Stall>,
}

impl Report {
    pub fn new(cfg: &BenchConfig, stats: &ClientStats, elapsed: Duration, interrupted: bool) -> Report {
        let has_cas = stats.by_kind.contains_key(&super::workload::RequestKind::Cas);
        let overall = Summary::of(&stats.overall(), elapsed);
        let records_per_sec =
            (cfg.operation == Operation::Produce).then_some(overall.ops_per_sec * cfg.batch_records as f64);
        Report {
            parameters: Parameters::of(cfg),
            elapsed_s: elapsed.as_secs_f64(),
            interrupted,
            overall,
            errors_by_kind: stats.errors_by_kind.iter().map(|(k, n)| (k.name(), *n)).collect(),
            first_error: stats.first_error.as_ref().map(|(_, e)| e.message.clone()),
            first_error_kind: stats.first_error.as_ref().map(|(_, e)| e.kind.name()),
            cas_swapped: has_cas.then_some(stats.cas_swapped),
            cas_failed_compare: has_cas.then_some(stats.cas_failed_compare),
            by_request: stats.by_kind.iter().map(|(k, s)| (k.name(), Summary::of(s, elapsed))).collect(),
            client_cpu_cores: 0.0,
            records_per_sec,
            mb_per_sec: records_per_sec.map(|r| r * cfg.value_bytes as f64 / 1e6),
            timeline: stats.timeline.as_ref().map(|t| {
                let within = match cfg.stop {
                    StopAfter::Duration(d) => d,
                    StopAfter::Requests(_) => elapsed,
                };
                // Buckets past the last answer are left out.
                let used = ((elapsed.as_nanos() / t.bucket.as_nanos()) as usize + 1).min(t.ok.len());
                TimelineReport {
                    start_unix_ms: measured_since_unix_ms(elapsed),
                    bucket_ms: t.bucket.as_millis() as u64,
                    ok: t.ok[..used].to_vec(),
                    errors: t.errors[..used].to_vec(),
                    longest_stall: t.longest_stall(within.min(elapsed)),
                }
            }),
        }
    }

    /// Every request failed: the run measured nothing.
    pub fn all_failed(&self) -> bool {
        self.overall.ops == 0 && self.overall.errors > 0
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report serializes")
    }

    pub fn to_text(&self) -> String {
        let p = &self.parameters;
        let mut out = String::new();
        let mut what = match p.consistency {
            Some(level) => format!("{} {} ({level})", p.target, p.op),
            None => format!("{} {}", p.target, p.op),
        };
        if let Some(t) = p.transport {
            what.push_str(&format!(" over {t} calls"));
        }
        let _ = writeln!(
            out,
            "{what}: {} client{}, {:.2} s measured after {} s warm-up{}",
            p.clients,
            if p.clients == 1 { "" } else { "s" },
            self.elapsed_s,
            p.warmup_s,
            if self.interrupted { " (interrupted)" } else { "" }
        );
        let unit = match p.op {
            "ping" => "payloads",
            "produce" => "records",
            "fsync" => "writes",
            _ => "values",
        };
        let mut shape = format!("  {} B {unit}", p.value_size);
        if matches!(p.op, "get" | "set" | "cas" | "mixed") {
            let _ = write!(shape, ", {} keys", p.keys);
        }
        if let Some(r) = p.read_ratio {
            let _ = write!(shape, ", {:.0} % gets", r * 100.0);
        }
        if let Some(r) = p.rate_per_sec {
            let _ = write!(shape, ", paced at {r:.0} requests/s");
        }
        if let Some(d) = &p.data_dir {
            let _ = write!(shape, ", in {d}");
        }
        if let (Some(t), Some(b), Some(n), Some(r)) = (&p.topic, p.batch_records, p.partitions, p.replication_factor) {
            let _ = write!(shape, ", topic {t} ({n} partitions × {r} replicas), {b} per request");
            if let Some(a) = p.acks {
                let _ = write!(shape, ", acks={a}");
            }
            if let Some(n) = p.producers.filter(|&n| n != p.clients) {
                let _ = write!(shape, ", clients share {n} producer{}", if n == 1 { "" } else { "s" });
            }
        }
        if !p.endpoints.is_empty() {
            let _ = write!(shape, ", endpoints {}", p.endpoints.join(","));
        }
        let _ = writeln!(out, "{shape}");
        let o = &self.overall;
        let _ = writeln!(out, "  throughput  {:.1} ops/s ({} ok, {} errors)", o.ops_per_sec, o.ops, o.errors);
        if let (Some(r), Some(mb)) = (self.records_per_sec, self.mb_per_sec) {
            let _ = writeln!(out, "  records     {r:.0} records/s, {mb:.1} MB/s acknowledged");
        }
        let _ = writeln!(out, "  latency µs  {}", latency_line(o));
        if self.by_request.len() > 1 {
            for (kind, s) in &self.by_request {
                let _ = writeln!(out, "    {kind:<5}     {:.1} ops/s, {}", s.ops_per_sec, latency_line(s));
            }
        }
        let _ = writeln!(out, "  client CPU  {:.2} cores (this load generator)", self.client_cpu_cores);
        if let Some(t) = &self.timeline {
            match t.longest_stall {
                Some(st) => {
                    let _ = writeln!(
                        out,
                        "  stall       no request succeeded for {} ms (to {} ms), from {:.2} s into the run",
                        st.length_ms,
                        t.bucket_ms,
                        st.start_ms as f64 / 1e3
                    );
                }
                None => {
                    let _ = writeln!(out, "  stall       none: requests succeeded in every {} ms", t.bucket_ms);
                }
            }
        }
        if let (Some(sw), Some(failed)) = (self.cas_swapped, self.cas_failed_compare) {
            let _ = writeln!(out, "  cas         {sw} swapped, {failed} failed compares");
        }
        if !self.errors_by_kind.is_empty() {
            let kinds: Vec<String> = self.errors_by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let _ = writeln!(out, "  errors      {}", kinds.join(", "));
            if let Some(e) = &self.first_error {
                let _ = writeln!(out, "  first error {e}");
            }
        }
        out
    }
}

/// When the measured phase began, in Unix ms: now minus `elapsed` (the
/// report is made right after the last answer).
fn measured_since_unix_ms(elapsed: Duration) -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    now.saturating_sub(elapsed).as_millis() as u64
}

fn latency_line(s: &Summary) -> String {
    format!(
        "mean {:.0}  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        s.mean_us, s.p50_us, s.p90_us, s.p99_us, s.p999_us, s.max_us
    )
}

/// The JSON printed instead of a report when set-up failed, so scripts
/// reading `--output json` always get one object.
pub fn failure_json(cfg: &BenchConfig, error: &super::BenchError) -> String {
    #[derive(Serialize)]
    struct Failure<'a> {
        #[serde(flatten)]
        parameters: Parameters,
        error: String,
        error_kind: Option<&'a str>,
    }
    let f = Failure {
        parameters: Parameters::of(cfg),
        error: error.to_string(),
        error_kind: error.error_kind().map(|k| k.name()),
    };
    serde_json::to_string(&f).expect("a failure serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::config::Target;
    use crate::bench::stats::{ErrorKind, OpError};
    use crate::bench::workload::RequestKind;
    use crate::bench::BenchError;

    fn cfg() -> BenchConfig {
        let mut c = BenchConfig::new(Operation::Mixed, Target::Capkv, vec!["127.0.0.1:7001".into()]);
        c.clients = 4;
        c
    }

    /// The JSON has the fields scripts rely on (compare.sh, docs).
    #[test]
    fn json_has_the_documented_fields() {
        let mut s = ClientStats::default();
        for i in 1..=100 {
            s.record_ok(RequestKind::Get, Duration::from_micros(i * 10));
        }
        s.record_ok(RequestKind::Set, Duration::from_micros(5_000));
        s.record_error(RequestKind::Set, &OpError::new(ErrorKind::Timeout, "slow"), std::time::Instant::now());
        let r = Report::new(&cfg(), &s, Duration::from_secs(2), false);
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        for field in [
            "ops_per_sec",
            "p50_us",
            "p99_us",
            "p999_us",
            "max_us",
            "errors",
            "ops",
            "clients",
            "op",
            "target",
            "consistency",
            "value_size",
            "keys",
            "read_ratio",
            "elapsed_s",
        ] {
            assert!(v.get(field).is_some(), "missing {field} in {v}");
        }
        assert_eq!(v["ops"], 101);
        assert_eq!(v["errors"], 1);
        assert_eq!(v["ops_per_sec"], 50.5);
        assert_eq!(v["consistency"], "eventual");
        assert_eq!(v["errors_by_kind"]["timeout"], 1);
        assert_eq!(v["first_error_kind"], "timeout");
        assert_eq!(v["by_request"]["get"]["ops"], 100);
        assert!(!r.all_failed());
        assert!(r.to_text().contains("ops/s"));
    }

    /// Produce reports records and bytes per second: requests × batch.
    #[test]
    fn produce_reports_records_and_megabytes() {
        let mut c = BenchConfig::new(Operation::Produce, Target::Capkv, vec!["127.0.0.1:7001".into()]);
        c.batch_records = 10;
        c.value_bytes = 1000;
        let mut s = ClientStats::default();
        for _ in 0..200 {
            s.record_ok(RequestKind::Produce, Duration::from_millis(1));
        }
        let r = Report::new(&c, &s, Duration::from_secs(2), false);
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["ops_per_sec"], 100.0);
        assert_eq!(v["records_per_sec"], 1000.0);
        assert_eq!(v["mb_per_sec"], 1.0);
        assert_eq!(v["acks"], "all");
        assert_eq!(v["batch_records"], 10);
        assert!(v["consistency"].is_null());
        assert!(r.to_text().contains("1000 records/s, 1.0 MB/s"));
        assert_eq!(v["producers"], 1, "one client, its own producer");
        assert!(!r.to_text().contains("share"));
        c.clients = 32;
        c.producers = Some(2);
        let shared = Report::new(&c, &s, Duration::from_secs(2), false);
        let v: serde_json::Value = serde_json::from_str(&shared.to_json()).unwrap();
        assert_eq!(v["producers"], 2);
        assert!(shared.to_text().contains("clients share 2 producers"), "{}", shared.to_text());
        let plain = Report::new(&cfg(), &s, Duration::from_secs(2), false);
        assert!(plain.records_per_sec.is_none() && plain.mb_per_sec.is_none());
    }

    /// `--timeline-ms`: the JSON carries the intervals up to the last
    /// answer and the longest stall within --duration; the text names it.
    #[test]
    fn timelines_report_their_intervals_and_the_longest_stall() {
        let mut c = cfg();
        c.stop = StopAfter::Duration(Duration::from_millis(100));
        c.timeline = Some(Duration::from_millis(10));
        let (bucket, n) = c.timeline_buckets().unwrap();
        let mut t = super::super::stats::Timeline::new(bucket, n);
        for at in [1, 11, 21, 61, 71, 81, 91, 101] {
            t.record(Duration::from_millis(at), true);
        }
        t.record(Duration::from_millis(45), false);
        let s = ClientStats { timeline: Some(t), ..ClientStats::default() };
        let r = Report::new(&c, &s, Duration::from_millis(105), false);
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        let tl = &v["timeline"];
        assert_eq!(tl["bucket_ms"], 10);
        assert_eq!(tl["ok"], serde_json::json!([1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1]));
        assert_eq!(tl["errors"][4], 1);
        assert_eq!(tl["longest_stall"], serde_json::json!({"start_ms": 30, "length_ms": 30}));
        assert!(tl["start_unix_ms"].as_u64().unwrap() > 0);
        assert!(r.to_text().contains("no request succeeded for 30 ms"), "{}", r.to_text());
        // Without the option there is no timeline.
        let plain = Report::new(&cfg(), &ClientStats::default(), Duration::from_secs(1), false);
        assert!(serde_json::from_str::<serde_json::Value>(&plain.to_json()).unwrap()["timeline"].is_null());
    }

    #[test]
    fn a_run_without_successes_is_a_failure() {
        let mut s = ClientStats::default();
        s.record_error(RequestKind::Get, &OpError::new(ErrorKind::Unavailable, "down"), std::time::Instant::now());
        let r = Report::new(&cfg(), &s, Duration::from_secs(1), false);
        assert!(r.all_failed());
        assert!(r.to_text().contains("first error down"));
        let empty = Report::new(&cfg(), &ClientStats::default(), Duration::from_secs(1), true);
        assert!(!empty.all_failed(), "nothing ran (interrupted): not 'every request failed'");
    }

    #[test]
    fn failures_are_json_with_their_kind() {
        let e = BenchError::Probe {
            what: "set at the quorum level".into(),
            source: OpError::new(ErrorKind::Unimplemented, "not built"),
        };
        let v: serde_json::Value = serde_json::from_str(&failure_json(&cfg(), &e)).unwrap();
        assert_eq!(v["error_kind"], "unimplemented");
        assert_eq!(v["clients"], 4);
        assert!(v["error"].as_str().unwrap().contains("not built"));
    }
}

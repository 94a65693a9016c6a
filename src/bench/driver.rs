//! Runs one benchmark: connect → probe → pre-populate → warm up → measure.
//!
//! * **Connect**: for `produce`, create the topic (or streams) if missing;
//!   then one [`Connection`] per client (lazy; failures surface in the
//!   probe).
//! * **Probe**: client 0 sends one request of each kind the workload will
//!   use. A permanent error (UNIMPLEMENTED, invalid argument, failed
//!   precondition) stops the run right there with that error, so asking for
//!   a level that is not built costs milliseconds, not a run of failures.
//!   Transient errors get [`SETUP_ATTEMPTS_MAX`] attempts.
//! * **Populate** (get, cas, mixed): every key gets its initial value,
//!   the keys split round-robin over the clients' connections.
//! * **Warm up, then measure**: every client loops request → answer →
//!   request. Requests that *start* after the warm-up are recorded; the
//!   measured time runs from the end of the warm-up until the last client
//!   has stopped, so requests still in flight at the deadline count with the
//!   time they took.
//!
//! The caller watches a shared [`Progress`] and may [`Progress::interrupt`]
//! (Ctrl-C): the run then stops early and reports what it measured.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::config::{BenchConfig, Operation, StopAfter};
use super::pace::Pacer;
use super::report::Report;
use super::stats::{ClientStats, OpError, Timeline};
use super::target::Connection;
use super::workload::{Outcome, Request, Workload};
use super::BenchError;

/// Attempts of one probe or pre-population request on transient errors.
pub const SETUP_ATTEMPTS_MAX: u32 = 3;
/// Pause between those attempts.
pub const SETUP_RETRY_PAUSE: Duration = Duration::from_millis(200);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Connecting = 0,
    Probing = 1,
    Populating = 2,
    WarmingUp = 3,
    Measuring = 4,
    Done = 5,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Connecting,
            1 => Phase::Probing,
            2 => Phase::Populating,
            3 => Phase::WarmingUp,
            4 => Phase::Measuring,
            _ => Phase::Done,
        }
    }
}

/// What a running benchmark has done so far, for a progress display; and
/// the handle to stop it early.
#[derive(Debug, Default)]
pub struct Progress {
    phase: AtomicU8,
    populated_keys: AtomicU64,
    /// Successful requests recorded (measured phase only).
    ops: AtomicU64,
    errors: AtomicU64,
    measuring_since: OnceLock<Instant>,
    stop: CancellationToken,
    interrupted: AtomicBool,
}

impl Progress {
    pub fn new() -> Arc<Progress> {
        Arc::new(Progress::default())
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Relaxed))
    }

    pub fn populated_keys(&self) -> u64 {
        self.populated_keys.load(Ordering::Relaxed)
    }

    pub fn ops(&self) -> u64 {
        self.ops.load(Ordering::Relaxed)
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// When the measured phase began.
    pub fn measuring_since(&self) -> Option<Instant> {
        self.measuring_since.get().copied()
    }

    /// Stops the run early (e.g. on Ctrl-C); it still reports.
    pub fn interrupt(&self) {
        self.interrupted.store(true, Ordering::Relaxed);
        self.stop.cancel();
    }

    pub fn was_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::Relaxed)
    }

    fn set_phase(&self, p: Phase) {
        self.phase.store(p as u8, Ordering::Relaxed);
    }
}

/// Shared by the client tasks of the measured phase.
struct Control {
    /// Set at the end of the warm-up.
    recording: AtomicBool,
    /// `--requests`: tickets handed out once recording.
    tickets: AtomicU64,
    requests_max: Option<u64>,
}

/// Runs the benchmark described by `cfg`.
pub async fn run(cfg: &BenchConfig, progress: Arc<Progress>) -> Result<Report, BenchError> {
    cfg.validate()?;
    progress.set_phase(Phase::Connecting);
    if cfg.operation == Operation::Produce {
        super::target::prepare(cfg).await?;
    }
    let mut connections: Vec<Connection> = Vec::with_capacity(cfg.clients);
    for i in 0..cfg.clients {
        let shared = match cfg.producers {
            Some(n) if i >= n => connections[i % n].share(i),
            _ => None,
        };
        connections.push(match shared {
            Some(c) => c,
            None => Connection::open(cfg, i).await?,
        });
    }
    let mut workloads: Vec<Workload> = (0..cfg.clients).map(|i| Workload::new(cfg, i)).collect();

    progress.set_phase(Phase::Probing);
    probe(cfg, &mut connections[0], &mut workloads[0], &progress).await?;

    if cfg.operation.needs_population() {
        progress.set_phase(Phase::Populating);
        populate(cfg, &mut connections, &workloads, &progress).await?;
    }

    progress.set_phase(Phase::WarmingUp);
    let control = Arc::new(Control {
        recording: AtomicBool::new(false),
        tickets: AtomicU64::new(0),
        requests_max: match cfg.stop {
            StopAfter::Requests(n) => Some(n),
            StopAfter::Duration(_) => None,
        },
    });
    let timeline = cfg.timeline_buckets();
    let tasks: Vec<_> = connections
        .into_iter()
        .zip(workloads)
        .map(|(c, w)| {
            let timeline = timeline.map(|(bucket, n)| Timeline::new(bucket, n));
            let pacer = cfg.rate_per_sec.map(|r| Pacer::new(Pacer::interval_for(r, cfg.clients)));
            tokio::spawn(client_loop(c, w, timeline, pacer, control.clone(), progress.clone()))
        })
        .collect();

    sleep_unless_stopped(cfg.warmup, &progress.stop).await;
    let cpu_start = process_cpu_time();
    let measure_start = Instant::now();
    let _ = progress.measuring_since.set(measure_start);
    control.recording.store(true, Ordering::Release);
    progress.set_phase(Phase::Measuring);
    if let StopAfter::Duration(d) = cfg.stop {
        sleep_unless_stopped(d, &progress.stop).await;
        progress.stop.cancel();
    }

    let mut total = ClientStats::default();
    let mut task_error = None;
    for t in tasks {
        match t.await {
            Ok(stats) => total.merge(&stats),
            Err(e) => task_error = Some(e.to_string()),
        }
    }
    if let Some(e) = task_error {
        return Err(BenchError::Task(e));
    }
    let elapsed = measure_start.elapsed();
    let client_cpu = process_cpu_time().saturating_sub(cpu_start);
    progress.set_phase(Phase::Done);
    let mut report = Report::new(cfg, &total, elapsed, progress.was_interrupted());
    report.client_cpu_cores = client_cpu.as_secs_f64() / elapsed.as_secs_f64().max(1e-9);
    Ok(report)
}

/// CPU time (user + system) this process has used so far. The load
/// generator shares the machine with the servers under test; how much of
/// it the generator took tells whether a figure measured the servers.
fn process_cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct we pass; zeroed is a valid rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer cannot fail.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec.max(0) as u64, (t.tv_usec.max(0) as u32).min(999_999) * 1_000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

async fn sleep_unless_stopped(d: Duration, stop: &CancellationToken) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stop.cancelled() => {}
    }
}

/// Sends `request` up to [`SETUP_ATTEMPTS_MAX`] times while the error is
/// transient.
async fn setup_request(
    connection: &mut Connection,
    request: &Request,
    stop: &CancellationToken,
) -> Result<Outcome, OpError> {
    let mut attempt = 1;
    loop {
        match connection.execute(request).await {
            Ok(o) => return Ok(o),
            Err(e) if e.kind.is_permanent() || attempt >= SETUP_ATTEMPTS_MAX || stop.is_cancelled() => return Err(e),
            Err(_) => {
                attempt += 1;
                sleep_unless_stopped(SETUP_RETRY_PAUSE, stop).await;
            }
        }
    }
}

/// Describes what a probe request exercises, for the error message.
fn probe_subject(cfg: &BenchConfig, request: &Request) -> String {
    let at = || cfg.endpoints.first().cloned().unwrap_or_default();
    match (cfg.operation, cfg.effective_level()) {
        (Operation::Fsync, _) => {
            format!("fsync in {}", cfg.data_dir.as_deref().map(|p| p.display().to_string()).unwrap_or_default())
        }
        (Operation::Ping, _) => format!("the Cluster.Ping RPC of capkv at {}", at()),
        (_, Some(level)) if cfg.target == super::Target::Capkv => {
            format!("{} at the {level} level of capkv at {}", request.kind().name(), at())
        }
        _ => format!("{} on {} at {}", request.kind().name(), cfg.target.name(), at()),
    }
}

async fn probe(
    cfg: &BenchConfig,
    connection: &mut Connection,
    workload: &mut Workload,
    progress: &Progress,
) -> Result<(), BenchError> {
    for request in workload.probe_requests() {
        let result = setup_request(connection, &request, &progress.stop).await;
        workload.observe(&request, &result);
        if let Err(source) = result {
            return Err(BenchError::Probe { what: probe_subject(cfg, &request), source });
        }
    }
    Ok(())
}

async fn populate(
    cfg: &BenchConfig,
    connections: &mut [Connection],
    workloads: &[Workload],
    progress: &Progress,
) -> Result<(), BenchError> {
    let n = connections.len();
    let jobs = connections.iter_mut().zip(workloads).enumerate().map(|(i, (connection, workload))| async move {
        for key in Workload::population(i, n, cfg.keys) {
            if progress.stop.is_cancelled() {
                break;
            }
            let request = workload.populate_request(key);
            setup_request(connection, &request, &progress.stop).await.map_err(|source| BenchError::Populate {
                key: workload.values().key(key).escape_ascii().to_string(),
                source,
            })?;
            progress.populated_keys.fetch_add(1, Ordering::Relaxed);
        }
        Ok::<(), BenchError>(())
    });
    for r in futures::future::join_all(jobs).await {
        r?;
    }
    Ok(())
}

async fn client_loop(
    mut connection: Connection,
    mut workload: Workload,
    timeline: Option<Timeline>,
    mut pacer: Option<Pacer>,
    control: Arc<Control>,
    progress: Arc<Progress>,
) -> ClientStats {
    let mut stats = ClientStats { timeline, ..ClientStats::default() };
    while !progress.stop.is_cancelled() {
        if let Some(at) = pacer.as_mut().and_then(|p| p.before_send(tokio::time::Instant::now())) {
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                _ = progress.stop.cancelled() => break,
            }
        }
        let recording = control.recording.load(Ordering::Acquire);
        if recording {
            if let Some(max) = control.requests_max {
                if control.tickets.fetch_add(1, Ordering::Relaxed) >= max {
                    break;
                }
            }
        }
        let request = workload.next_request();
        let started = Instant::now();
        let result = connection.execute(&request).await;
        let finished = Instant::now();
        let latency = finished - started;
        if recording {
            if let (Some(t), Some(since)) = (&mut stats.timeline, progress.measuring_since()) {
                t.record(finished.saturating_duration_since(since), result.is_ok());
            }
            match &result {
                Ok(outcome) => {
                    stats.record_ok(request.kind(), latency);
                    if let Outcome::Cas { swapped, .. } = outcome {
                        stats.record_cas(*swapped);
                    }
                    progress.ops.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    stats.record_error(request.kind(), e, finished);
                    progress.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        workload.observe(&request, &result);
    }
    stats
}

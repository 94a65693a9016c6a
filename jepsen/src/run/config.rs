//! What a harness run is given, how it fails and what it gives back —
//! the types both workloads share (register, [`super::register`]; topic,
//! `crate::topic::run`):
//!
//! - [`RunConfig`] and its parts ([`Workload`], [`RegisterLevel`],
//!   [`CheckerKind`], [`TopicOptions`]), with the bounds of every setting
//!   ([`RunConfig::validate`]), so a run never starts on settings it cannot
//!   honour;
//! - [`RunError`]: why a run produced no verdict at all;
//! - [`RunOutcome`]: a finished run (verdict, results, directory).
//!
//! Pure: nothing here touches processes or files.

use std::path::PathBuf;
use std::time::Duration;

use capkv::client::topics::Acks;
use capkv::Level;

use crate::client::CONCURRENCY_MAX;
use crate::cluster::{ClusterError, NODES_MAX};
use crate::generator::{OpMix, KEYS_MAX};
use crate::nemesis::nft::FirewallError;
use crate::nemesis::NemesisKind;
use crate::record::RecordError;
use crate::report::Results;
use crate::validity::Validity;

/// Longest run.
pub const TIME_MAX: Duration = Duration::from_secs(24 * 3600);
/// Highest rate, operations per second.
pub const RATE_MAX_HZ: f64 = 100_000.0;
/// Largest `--value-bytes`: the nodes' default `--max-value-bytes` (1 MiB).
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;

/// `kv serve` flag the harness sets unless given in `serve_args`.
const ANTI_ENTROPY_FLAG: &str = "--anti-entropy-interval-ms";
/// Most partitions of the topic workload's topic (capkv's own limit per
/// topic).
pub const PARTITIONS_MAX: u32 = 1_024;
/// Default `replica.lag.time.max.ms` of the topic: shorter than the nodes'
/// default (10 s) so that a follower cut off for one fault window leaves
/// the ISR within it, and `acks=all` goes on with the others — the
/// behaviour worth testing.
pub const REPLICA_LAG_TIME_MAX_DEFAULT_MS: u64 = 2_000;

/// What the clients do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Reads, writes and cas on independent registers at one level.
    Register,
    /// Producers send unique messages to a topic; the partitions are read
    /// back after the heal (see [`crate::topic`]).
    Topic,
}

impl Workload {
    /// Name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Register => "register",
            Workload::Topic => "topic",
        }
    }

    /// Parses `register` or `topic`.
    pub fn parse(text: &str) -> Result<Workload, String> {
        match text.trim() {
            "register" => Ok(Workload::Register),
            "topic" => Ok(Workload::Topic),
            other => Err(format!("unknown workload {other:?}: expected register or topic")),
        }
    }
}

/// The level of the register workload's operations: one level for all, or
/// a level drawn per operation (by the seeded generator) from several, on
/// the same keys.
///
/// Why the mixed levels exist: a key written at one level and read at
/// another must still behave as one register. `mixed` draws quorum or
/// linearizable for every read, write and cas: the two levels that promise
/// linearizability, so the history as a whole must be linearizable (quorum
/// and Raft operations on a key ordered together). `mixed-eventual` also
/// draws eventual: linearizability cannot be promised once eventual writes
/// join, so it is judged by convergence (every replica ends with the
/// last-writer-wins cell of every key, whichever level wrote it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegisterLevel {
    /// Every operation at this level.
    One(Level),
    /// Each operation at quorum or linearizable.
    Mixed,
    /// Each operation at eventual, quorum or linearizable.
    MixedEventual,
}

impl RegisterLevel {
    /// Name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            RegisterLevel::One(level) => level.name(),
            RegisterLevel::Mixed => "mixed",
            RegisterLevel::MixedEventual => "mixed-eventual",
        }
    }

    /// Parses a level (`eventual`, `quorum`, `linearizable` and their
    /// aliases), `mixed` or `mixed-eventual`.
    pub fn parse(text: &str) -> Result<RegisterLevel, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "mixed" => Ok(RegisterLevel::Mixed),
            "mixed-eventual" => Ok(RegisterLevel::MixedEventual),
            other => other.parse::<Level>().map(RegisterLevel::One).map_err(|_| {
                format!("unknown consistency level {text:?}: expected eventual, quorum, linearizable, mixed or mixed-eventual")
            }),
        }
    }

    /// The levels operations are drawn from (one: every operation's).
    pub fn levels(self) -> &'static [Level] {
        match self {
            RegisterLevel::One(Level::Eventual) => &[Level::Eventual],
            RegisterLevel::One(Level::Quorum) => &[Level::Quorum],
            RegisterLevel::One(Level::Linearizable) => &[Level::Linearizable],
            RegisterLevel::Mixed => &[Level::Quorum, Level::Linearizable],
            RegisterLevel::MixedEventual => &[Level::Eventual, Level::Quorum, Level::Linearizable],
        }
    }

    /// Whether operations are drawn from more than one level.
    pub fn is_mixed(self) -> bool {
        self.levels().len() > 1
    }

    /// The level of the final reads after the heal: the run's level; for
    /// `mixed` linearizable (it must see every acknowledged write at either
    /// level), for `mixed-eventual` quorum (a majority's newest cell, which
    /// is every replica's once they converged).
    pub fn final_read_level(self) -> Level {
        match self {
            RegisterLevel::One(level) => level,
            RegisterLevel::Mixed => Level::Linearizable,
            RegisterLevel::MixedEventual => Level::Quorum,
        }
    }

    /// The operations the workload draws: the quorum level alone refuses
    /// cas by design (DESIGN §4); every other choice takes it (in the mixed
    /// levels a quorum cas goes through consensus).
    pub fn op_mix(self) -> OpMix {
        match self {
            RegisterLevel::One(Level::Quorum) => OpMix::READ_WRITE,
            _ => OpMix::WITH_CAS,
        }
    }
}

impl From<Level> for RegisterLevel {
    fn from(level: Level) -> Self {
        RegisterLevel::One(level)
    }
}

impl std::fmt::Display for RegisterLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which checker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CheckerKind {
    /// The linearizability checker on the history.
    Linearizable,
    /// Replica convergence after the heal.
    Convergence,
}

impl CheckerKind {
    /// Name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            CheckerKind::Linearizable => "linearizable",
            CheckerKind::Convergence => "convergence",
        }
    }

    /// The checkers a level is judged by unless told otherwise: any choice
    /// with eventual operations by convergence, the others by
    /// linearizability.
    pub fn defaults(level: RegisterLevel) -> Vec<CheckerKind> {
        if level.levels().contains(&Level::Eventual) {
            vec![CheckerKind::Convergence]
        } else {
            vec![CheckerKind::Linearizable]
        }
    }

    /// Parses `linearizable,convergence` (any non-empty subset).
    pub fn parse_list(text: &str) -> Result<Vec<CheckerKind>, String> {
        let mut kinds = Vec::new();
        for part in text.split(',').map(str::trim) {
            let kind = match part {
                "linearizable" => CheckerKind::Linearizable,
                "convergence" => CheckerKind::Convergence,
                _ => return Err(format!("unknown checker {part:?}: expected linearizable, convergence or both")),
            };
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        kinds.sort();
        Ok(kinds)
    }
}

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// What the clients do.
    pub workload: Workload,
    /// The topic workload's topic and producers (ignored by the register
    /// workload).
    pub topic: TopicOptions,
    /// The level of the operations (register workload).
    pub level: RegisterLevel,
    /// Fault kinds (empty: none).
    pub nemeses: Vec<NemesisKind>,
    /// Length of the workload.
    pub time: Duration,
    /// Nodes.
    pub nodes: usize,
    /// Workers.
    pub concurrency: usize,
    /// Keys active at a time.
    pub keys: usize,
    /// Operations per key before it is retired.
    pub ops_per_key: u64,
    /// Target rate, operations per second.
    pub rate_hz: f64,
    /// Seed of every random choice.
    pub seed: u64,
    /// The `kv` binary.
    pub kv: PathBuf,
    /// Checkers (`None`: the level's defaults).
    pub checkers: Option<Vec<CheckerKind>>,
    /// The run directory (created; must be empty if it exists).
    pub out: PathBuf,
    /// Extra `kv serve` arguments.
    pub serve_args: Vec<String>,
    /// TLS on every node port (a throwaway CA per run), clients included.
    pub tls: bool,
    /// Deadline of one operation.
    pub op_timeout: Duration,
    /// Length of a fault window.
    pub fault_interval: Duration,
    /// Length of a quiet window.
    pub heal_interval: Duration,
    /// How long to wait for replicas to agree after the heal.
    pub converge_timeout: Duration,
    /// Budget of the linearizability search.
    pub check_timeout: Duration,
    /// The nodes' anti-entropy period, unless `serve_args` sets it.
    pub anti_entropy_interval: Duration,
    /// Keep the nodes' data directories after the run.
    pub keep_data: bool,
    /// Pad written values to this many bytes (0: plain decimal).
    pub value_bytes: usize,
}

impl RunConfig {
    /// The checkers this run uses.
    pub fn checkers(&self) -> Vec<CheckerKind> {
        self.checkers.clone().unwrap_or_else(|| CheckerKind::defaults(self.level))
    }

    /// Checks the bounds of every setting.
    /// [`RunConfig::validate`], and that the config asks for `workload`
    /// (what each workload's run checks first).
    pub fn validate_for(&self, workload: Workload) -> Result<(), RunError> {
        self.validate()?;
        if self.workload != workload {
            return Err(RunError::Config(format!(
                "the {} run was given a {} workload",
                workload.name(),
                self.workload.name()
            )));
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), RunError> {
        let bad = |m: String| Err(RunError::Config(m));
        if !(1..=NODES_MAX).contains(&self.nodes) {
            return bad(format!("--nodes {} is out of range: 1 to {NODES_MAX}", self.nodes));
        }
        if self.nemeses.contains(&NemesisKind::Membership) && self.nodes < 3 {
            return bad(format!(
                "the membership nemesis needs at least 3 nodes (it removes one and adds a new one), not {}",
                self.nodes
            ));
        }
        if self.nemeses.contains(&NemesisKind::Partition) && self.nodes < 2 {
            return bad("the partition nemesis needs at least 2 nodes".into());
        }
        if !(1..=CONCURRENCY_MAX).contains(&self.concurrency) {
            return bad(format!("--concurrency {} is out of range: 1 to {CONCURRENCY_MAX}", self.concurrency));
        }
        if !(1..=KEYS_MAX).contains(&self.keys) {
            return bad(format!("--keys {} is out of range: 1 to {KEYS_MAX}", self.keys));
        }
        if self.ops_per_key == 0 {
            return bad("--ops-per-key must be at least 1".into());
        }
        if self.value_bytes > VALUE_BYTES_MAX {
            return bad(format!(
                "--value-bytes {} is out of range: at most {VALUE_BYTES_MAX} (the nodes' default --max-value-bytes)",
                self.value_bytes
            ));
        }
        if !(self.rate_hz > 0.0 && self.rate_hz <= RATE_MAX_HZ) {
            return bad(format!("--rate {} is out of range: above 0, at most {RATE_MAX_HZ}", self.rate_hz));
        }
        if self.time.is_zero() || self.time > TIME_MAX {
            return bad(format!("--time {:?} is out of range: above 0, at most 24 h", self.time));
        }
        for (name, d) in [
            ("--op-timeout", self.op_timeout),
            ("--fault-interval", self.fault_interval),
            ("--heal-interval", self.heal_interval),
            ("--converge-timeout", self.converge_timeout),
            ("--check-timeout", self.check_timeout),
            ("--anti-entropy-interval", self.anti_entropy_interval),
        ] {
            if d.is_zero() || d > TIME_MAX {
                return bad(format!("{name} {d:?} is out of range: above 0, at most 24 h"));
            }
        }
        if self.checkers.as_ref().is_some_and(Vec::is_empty) {
            return bad("--checker needs at least one checker".into());
        }
        match self.workload {
            Workload::Register => {
                if let Some(kind) = self.nemeses.iter().find(|k| k.needs_topic()) {
                    return bad(format!("the {kind} nemesis needs --workload topic"));
                }
            }
            Workload::Topic => {
                if self.nemeses.contains(&NemesisKind::Membership) {
                    return bad("the membership nemesis runs with the register workload only (topic replicas are placed on the founding nodes)".into());
                }
                if self.checkers.is_some() {
                    return bad(
                        "--checker chooses the register workload's checkers; the topic workload has its own".into()
                    );
                }
                self.topic.validate(self.nodes).map_err(RunError::Config)?;
            }
        }
        Ok(())
    }

    /// Whether the run cuts links (and so needs its nftables table).
    pub fn needs_firewall(&self) -> bool {
        self.nemeses.iter().any(|k| k.needs_firewall())
    }

    /// The `kv serve` arguments of every node: `serve_args`, preceded by
    /// the anti-entropy period unless they set it.
    pub(crate) fn effective_serve_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if !self.serve_args.iter().any(|a| a.starts_with(ANTI_ENTROPY_FLAG)) {
            args.push(format!("{ANTI_ENTROPY_FLAG}={}", self.anti_entropy_interval.as_millis()));
        }
        args.extend(self.serve_args.iter().cloned());
        args
    }
}

/// The topic and how producers send to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicOptions {
    /// Partitions (1..=[`PARTITIONS_MAX`]).
    pub partitions: u32,
    /// Replicas per partition (1..=nodes).
    pub replication_factor: u32,
    /// `min.insync.replicas` (1..=replication factor).
    pub min_insync_replicas: u32,
    /// Whether a replica outside the ISR may become leader.
    pub unclean_leader_election: bool,
    /// The producers' acknowledgement level.
    pub acks: Acks,
    /// The topic's `replica.lag.time.max.ms`.
    pub replica_lag_time_max: Duration,
}

impl TopicOptions {
    /// 3 partitions, replication factor min(3, nodes), `min.insync`
    /// min(2, replication factor), acks=all, clean elections only.
    pub fn defaults(nodes: usize) -> TopicOptions {
        let replication_factor = (nodes as u32).clamp(1, 3);
        TopicOptions {
            partitions: 3,
            replication_factor,
            min_insync_replicas: replication_factor.min(2),
            unclean_leader_election: false,
            acks: Acks::All,
            replica_lag_time_max: Duration::from_millis(REPLICA_LAG_TIME_MAX_DEFAULT_MS),
        }
    }

    /// Checks the bounds against a cluster of `nodes`.
    pub fn validate(&self, nodes: usize) -> Result<(), String> {
        if !(1..=PARTITIONS_MAX).contains(&self.partitions) {
            return Err(format!("--topic-partitions {} is out of range: 1 to {PARTITIONS_MAX}", self.partitions));
        }
        if self.replication_factor == 0 || self.replication_factor as usize > nodes {
            return Err(format!(
                "--replication-factor {} is out of range: 1 to the node count ({nodes})",
                self.replication_factor
            ));
        }
        if self.min_insync_replicas == 0 || self.min_insync_replicas > self.replication_factor {
            return Err(format!(
                "--min-insync {} is out of range: 1 to the replication factor ({})",
                self.min_insync_replicas, self.replication_factor
            ));
        }
        let lag_ms = self.replica_lag_time_max.as_millis();
        if lag_ms == 0 || lag_ms > u128::from(u32::MAX) {
            return Err(format!("--replica-lag-time-max {:?} is out of range", self.replica_lag_time_max));
        }
        Ok(())
    }
}

/// Why a run could not produce a verdict at all.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A setting is out of range.
    #[error("{0}")]
    Config(String),
    /// The run directory could not be prepared or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// nftables could not be set up.
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    /// The cluster could not be started.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The history could not be recorded.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The topic of a topic-workload run could not be created or did not
    /// get leaders.
    #[error("{0}")]
    TopicSetup(String),
    /// The nodes do not serve the level.
    #[error("the nodes do not serve the {level} level: {message}")]
    LevelNotServed {
        /// The level.
        level: Level,
        /// What they answered.
        message: String,
    },
}

/// A finished run.
#[derive(Debug)]
pub struct RunOutcome {
    /// The verdict.
    pub valid: Validity,
    /// Everything `results.json` says.
    pub results: Results,
    /// The run directory.
    pub dir: PathBuf,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small config that validates, for `workload`; its serve args and
    /// anti-entropy period are what `anti_entropy_flag_only_once` checks.
    pub(crate) fn sample(workload: Workload) -> RunConfig {
        RunConfig {
            workload,
            topic: TopicOptions::defaults(3),
            level: RegisterLevel::One(Level::Eventual),
            nemeses: vec![],
            time: Duration::from_secs(1),
            nodes: 3,
            concurrency: 1,
            keys: 1,
            ops_per_key: 1,
            rate_hz: 1.0,
            seed: 0,
            kv: "kv".into(),
            checkers: None,
            out: "out".into(),
            serve_args: vec!["--no-hinted-handoff".into()],
            tls: false,
            op_timeout: Duration::from_secs(1),
            fault_interval: Duration::from_secs(1),
            heal_interval: Duration::from_secs(1),
            converge_timeout: Duration::from_secs(1),
            check_timeout: Duration::from_secs(1),
            anti_entropy_interval: Duration::from_millis(700),
            keep_data: false,
            value_bytes: 0,
        }
    }

    // Proves: checker lists parse (deduplicated, sorted), unknown names are
    // refused, and each level has its documented default.
    #[test]
    fn checkers() {
        assert_eq!(
            CheckerKind::parse_list("convergence,linearizable,convergence").unwrap(),
            vec![CheckerKind::Linearizable, CheckerKind::Convergence]
        );
        assert!(CheckerKind::parse_list("serializable").is_err());
        let defaults = |level: Level| CheckerKind::defaults(level.into());
        assert_eq!(defaults(Level::Eventual), vec![CheckerKind::Convergence]);
        assert_eq!(defaults(Level::Quorum), vec![CheckerKind::Linearizable]);
        assert_eq!(defaults(Level::Linearizable), vec![CheckerKind::Linearizable]);
        assert_eq!(CheckerKind::defaults(RegisterLevel::Mixed), vec![CheckerKind::Linearizable]);
        assert_eq!(CheckerKind::defaults(RegisterLevel::MixedEventual), vec![CheckerKind::Convergence]);
    }

    // Proves: the mixed levels parse by name beside the single levels (and
    // their aliases), draw from the documented levels, read finally at a
    // level that sees every acknowledged write, and take cas; only quorum
    // alone refuses cas.
    #[test]
    fn register_levels() {
        for (text, level) in [
            ("mixed", RegisterLevel::Mixed),
            ("mixed-eventual", RegisterLevel::MixedEventual),
            ("quorum", RegisterLevel::One(Level::Quorum)),
            ("strong", RegisterLevel::One(Level::Linearizable)),
        ] {
            assert_eq!(RegisterLevel::parse(text), Ok(level), "{text}");
        }
        for level in [RegisterLevel::Mixed, RegisterLevel::MixedEventual, RegisterLevel::One(Level::Eventual)] {
            assert_eq!(RegisterLevel::parse(&level.to_string()), Ok(level));
        }
        assert!(RegisterLevel::parse("mixed-strong").unwrap_err().contains("mixed-eventual"));
        assert_eq!(RegisterLevel::Mixed.levels(), [Level::Quorum, Level::Linearizable]);
        assert_eq!(RegisterLevel::MixedEventual.levels(), Level::ALL);
        assert!(RegisterLevel::Mixed.is_mixed() && !RegisterLevel::One(Level::Quorum).is_mixed());
        assert_eq!(RegisterLevel::Mixed.final_read_level(), Level::Linearizable);
        assert_eq!(RegisterLevel::MixedEventual.final_read_level(), Level::Quorum);
        assert_eq!(RegisterLevel::One(Level::Quorum).op_mix(), OpMix::READ_WRITE);
        for level in [RegisterLevel::Mixed, RegisterLevel::MixedEventual, RegisterLevel::One(Level::Linearizable)] {
            assert!(level.op_mix().cas_percent > 0, "{level}");
        }
    }

    // Proves: every nemesis of the register workload, alone or all together,
    // is accepted at every level, mixed ones included (no level restricts
    // the faults); kill-isr still needs the topic workload.
    #[test]
    fn every_register_nemesis_at_every_level() {
        let all = vec![NemesisKind::Kill, NemesisKind::Pause, NemesisKind::Partition, NemesisKind::Clock];
        let levels =
            Level::ALL.map(RegisterLevel::One).into_iter().chain([RegisterLevel::Mixed, RegisterLevel::MixedEventual]);
        for level in levels {
            for nemeses in all.iter().map(|k| vec![*k]).chain([all.clone()]) {
                let config = RunConfig { level, nemeses: nemeses.clone(), ..sample(Workload::Register) };
                assert!(config.validate_for(Workload::Register).is_ok(), "{level} {nemeses:?}");
            }
            let config = RunConfig { level, nemeses: vec![NemesisKind::KillIsr], ..sample(Workload::Register) };
            assert!(config.validate().is_err(), "{level} kill-isr");
        }
    }

    // Proves: the harness sets the anti-entropy period unless the user's
    // serve args do, so `kv serve` never sees the flag twice.
    #[test]
    fn anti_entropy_flag_only_once() {
        let mut config = sample(Workload::Register);
        assert_eq!(config.effective_serve_args(), ["--anti-entropy-interval-ms=700", "--no-hinted-handoff"]);
        config.serve_args = vec!["--anti-entropy-interval-ms=50".into()];
        assert_eq!(config.effective_serve_args(), ["--anti-entropy-interval-ms=50"]);
        assert!(config.validate().is_ok());
        config.nodes = 0;
        assert!(config.validate().is_err());
    }

    // Proves: the defaults fit any cluster size, and out-of-range settings
    // are refused with the flag's name.
    #[test]
    fn defaults_fit_and_bounds_hold() {
        for nodes in 1..=5 {
            assert_eq!(TopicOptions::defaults(nodes).validate(nodes), Ok(()), "{nodes} nodes");
        }
        let d = TopicOptions::defaults(3);
        assert_eq!((d.replication_factor, d.min_insync_replicas, d.acks), (3, 2, Acks::All));
        let e = TopicOptions { replication_factor: 4, ..d.clone() }.validate(3).unwrap_err();
        assert!(e.contains("--replication-factor"), "{e}");
        let e = TopicOptions { min_insync_replicas: 4, ..d.clone() }.validate(3).unwrap_err();
        assert!(e.contains("--min-insync"), "{e}");
        let e = TopicOptions { partitions: 0, ..d }.validate(3).unwrap_err();
        assert!(e.contains("--topic-partitions"), "{e}");
        assert_eq!([Acks::None, Acks::Leader, Acks::All].map(Acks::name), ["0", "1", "all"]);
    }
}

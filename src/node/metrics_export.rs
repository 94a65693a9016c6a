//! What a node shows Prometheus at `/metrics` (`--metrics-listen`).
//!
//! Two steps, so the second can be tested without a node: [`gather`] reads
//! everything once per scrape — the counters and histograms the hot paths
//! keep in atomics (`crate::metrics`), and gauges computed from state the
//! node already has (Raft view, hosted partitions, RocksDB properties,
//! pending hints, `/proc/self`) — into a plain [`Scrape`]; [`render`]
//! encodes a `Scrape` as OpenMetrics text with prometheus-client. Nothing
//! here runs on a request's path. The metric names and labels are an
//! interface: docs/operations.md lists them, and the Grafana dashboard in
//! docs/grafana/ uses them.

use std::collections::BTreeMap;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::NodeState;
use crate::level::Level;
use crate::metrics::histogram::HistogramSnapshot;
use crate::metrics::requests::{Op, Outcome};
use crate::metrics::{process, Metrics};
use crate::rsm::RaftView;
use crate::store::engine_stats::{engine_stats, EngineStats};
use crate::topic::replica::PartitionGauges;

/// Hints counted per peer at each scrape, at most (counting scans them).
pub const MAX_SCRAPED_HINTS: usize = 100_000;

const RAFT_ROLES: [&str; 4] = ["leader", "follower", "candidate", "pre-candidate"];

/// Everything one scrape shows, read at one moment.
#[derive(Debug, Default)]
pub struct Scrape {
    pub node_id: u32,
    pub uptime_seconds: f64,
    /// (counter name without `_total`, value): `crate::metrics` counters.
    pub counters: Vec<(&'static str, u64)>,
    /// ((op, level, outcome), count); every combination, zeros included.
    pub requests: Vec<((Op, Level, Outcome), u64)>,
    pub request_durations: Vec<((Op, Level), HistogramSnapshot)>,
    pub raft: RaftView,
    pub raft_apply: Option<HistogramSnapshot>,
    /// Peer id → hints kept for it (capped at [`MAX_SCRAPED_HINTS`]).
    pub hints_pending: BTreeMap<u32, u64>,
    /// (topic, partition, gauges) of every hosted replica.
    pub partitions: Vec<(String, u32, PartitionGauges)>,
    pub engine: EngineStats,
    /// Free bytes under the data directory (`node::disk_space`), and the
    /// reserve below which client writes are refused.
    pub disk_free_bytes: Option<u64>,
    pub disk_reserve_bytes: u64,
    pub resident_memory_bytes: Option<u64>,
    pub open_fds: Option<u64>,
}

/// Reads the node. Blocking (RocksDB reads, `/proc`): call it off the
/// async runtime's worker threads.
pub fn gather(node: &NodeState) -> Scrape {
    let m: &Metrics = &node.metrics;
    let mut counters = m.counters().to_vec();
    counters.push(("clock_drift_rejections", node.store.clock().drift_rejections()));
    let mut requests = Vec::new();
    let mut request_durations = Vec::new();
    for op in Op::ALL {
        for level in Level::ALL {
            for outcome in Outcome::ALL {
                requests.push(((op, level, outcome), m.requests.count(op, level, outcome)));
            }
            request_durations.push(((op, level), m.requests.duration(op, level).snapshot()));
        }
    }
    let hints_pending = node
        .cfg
        .peers()
        .into_iter()
        .filter_map(|p| Some((p, node.store.count_hints(p, MAX_SCRAPED_HINTS).ok()? as u64)))
        .collect();
    let mut partitions: Vec<_> =
        node.topics.hosted_partitions().iter().map(|p| (p.topic.clone(), p.pid.partition, p.gauges())).collect();
    partitions.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    Scrape {
        node_id: node.cfg.id,
        uptime_seconds: node.started.elapsed().as_secs_f64(),
        counters,
        requests,
        request_durations,
        raft: node.linear.view(),
        raft_apply: Some(m.raft_apply.snapshot()),
        hints_pending,
        partitions,
        engine: engine_stats(&node.store),
        disk_free_bytes: Some(node.disk.free_bytes()).filter(|&b| b != u64::MAX),
        disk_reserve_bytes: node.disk.reserve_bytes(),
        resident_memory_bytes: process::resident_memory_bytes(),
        open_fds: process::open_fds(),
    }
}

/// `scrape` as OpenMetrics text (what `/metrics` returns).
pub fn render(scrape: Scrape) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).expect("writing to a String cannot fail");
    out
}

/// One line of help per `crate::metrics` counter.
fn counter_help(name: &str) -> &'static str {
    match name {
        "eventual_gets" => "Gets served at the eventual level.",
        "eventual_writes" => "Writes (set/del) served at the eventual level.",
        "replication_batches" => "Batches of eventual writes sent to peers.",
        "replication_cells" => "Cells sent to peers by eventual replication.",
        "replication_failures" => "Eventual replication sends that failed (kept as hints when hinted handoff is on).",
        "hints_delivered" => "Hinted cells delivered to a peer that came back.",
        "read_repair_rounds" => "Background read repairs after eventual gets.",
        "read_repair_cells_fixed" => "Cells fixed on peers by read repair.",
        "read_repair_keys_recent" => "Read repairs skipped because the key was repaired recently.",
        "anti_entropy_rounds" => "Anti-entropy rounds run (one peer each).",
        "anti_entropy_cells_pushed" => "Cells pushed to a peer by anti-entropy.",
        "anti_entropy_cells_pulled" => "Cells pulled from a peer by anti-entropy.",
        "tombstones_purged" => "Tombstone cells this node deleted by applying a GC purge (space reclaimed).",
        "gc_passes" => "Tombstone GC passes run (as Raft leader).",
        "gc_tombstones_blocked" => {
            "Tombstones past the GC grace period left in place because some replica was not seen to hold them."
        }
        "gc_purges_proposed" => "Tombstones this node proposed to purge (as Raft leader).",
        "quorum_gets" => "Gets served at the quorum level.",
        "quorum_writes" => "Writes served at the quorum level.",
        "read_imposes" => "Quorum gets that wrote the value back to a majority (ABD read-impose).",
        "quorum_unavailable" => "Quorum operations refused for want of a majority.",
        "quorum_read_hedges" => {
            "Quorum read phases that asked the replicas they had held back (a chosen replica was slow or failed)."
        }
        "quorum_stale_config_restarts" => {
            "Quorum phases run again because a replica held a newer replica configuration."
        }
        "quorum_reconfig_started" => "Quorum replica-set changes started by this node (as Raft leader).",
        "quorum_reconfig_done" => "Quorum replica-set changes this node completed (new epoch on a majority).",
        "quorum_reconfig_failed" => "Quorum replica-set changes this node abandoned (retried later).",
        "quorum_reconfig_cells_pulled" => "Cells this node relayed in quorum state transfers.",
        "write_backs" => "Raft command results written back to a majority of cells (level join).",
        "write_back_cells_held" => {
            "Write-back cells from peers acknowledged without writing: this node had applied their Raft entry."
        }
        "quorum_cas" => "Compare-and-set at the quorum level (through consensus).",
        "linearizable_ops" => "Commands applied by the Raft state machine that answered a waiter.",
        "linearizable_gets" => "Gets served at the linearizable level.",
        "lease_reads" => "Linearizable reads served under the leader lease.",
        "raft_entries_proposed" => "Raft entries proposed by this node (Raft proposals).",
        "raft_commands_proposed" => "Commands carried by this node's Raft proposals (several per entry when batched).",
        "raft_readies" => "Raft Ready batches handled.",
        "raft_synced_writes" => "Synced (fsync) writes of Raft entries or hard state.",
        "raft_leader_changes" => {
            "Times this node saw the Raft leader change to a known leader (first election included)."
        }
        "topic_produce_requests" => "Produce requests received (as partition leader or not).",
        "topic_produce_records" => "Records in acknowledged produce requests.",
        "topic_produce_errors" => "Produce requests refused or failed.",
        "topic_fetch_requests" => "Consumer fetch requests received.",
        "topic_fetch_records" => "Records returned to consumer fetches.",
        "topic_fetch_errors" => "Consumer fetch requests refused or failed.",
        "clock_drift_rejections" => "Peer clock stamps too far ahead that did not move this node's clock.",
        _ => "A capkv node counter (see docs/operations.md).",
    }
}

fn level_name(l: Level) -> &'static str {
    l.name()
}

fn histogram(
    m: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Vec<(&str, &str)>, &HistogramSnapshot)],
) -> std::fmt::Result {
    let mut d = m.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in rows {
        d.encode_family(labels)?.encode_histogram::<NoLabelSet>(h.sum_seconds, h.count, &h.buckets, None)?;
    }
    Ok(())
}

fn gauges<V: prometheus_client::encoding::EncodeGaugeValue>(
    m: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Vec<(&str, String)>, V)],
) -> std::fmt::Result {
    if rows.is_empty() {
        return Ok(());
    }
    let mut d = m.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        d.encode_family(labels)?.encode_gauge(v)?;
    }
    Ok(())
}

fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
    m: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: V,
) -> std::fmt::Result {
    m.encode_descriptor(name, help, None, MetricType::Gauge)?.encode_gauge(&v)
}

impl Collector for Scrape {
    fn encode(&self, mut m: DescriptorEncoder) -> std::fmt::Result {
        // Node.
        gauge(&mut m, "capkv_node_id", "This node's id.", self.node_id as u64)?;
        gauge(&mut m, "capkv_node_uptime_seconds", "Seconds since this node started serving.", self.uptime_seconds)?;

        // Requests (node::router).
        {
            let mut d = m.encode_descriptor(
                "capkv_requests",
                "Client KV requests by operation, consistency level and outcome.",
                None,
                MetricType::Counter,
            )?;
            for ((op, level, outcome), n) in &self.requests {
                let labels = [("op", op.name()), ("level", level_name(*level)), ("outcome", outcome.name())];
                d.encode_family(&labels)?.encode_counter::<NoLabelSet, _, f64>(n, None)?;
            }
        }
        let rows: Vec<_> = self
            .request_durations
            .iter()
            .map(|((op, level), h)| (vec![("op", op.name()), ("level", level_name(*level))], h))
            .collect();
        histogram(
            &mut m,
            "capkv_request_duration_seconds",
            "Time from routing a client KV request to its level until the level answered, by operation and level.",
            &rows,
        )?;

        // Counters of crate::metrics, one family each.
        for (name, v) in &self.counters {
            let full = format!("capkv_{name}");
            m.encode_descriptor(&full, counter_help(name), None, MetricType::Counter)?
                .encode_counter::<NoLabelSet, _, f64>(v, None)?;
        }

        // Raft.
        let r = &self.raft;
        gauge(&mut m, "capkv_raft_term", "Current Raft term.", r.term)?;
        gauge(&mut m, "capkv_raft_commit_index", "Raft commit index known to this node.", r.commit_index)?;
        gauge(&mut m, "capkv_raft_applied_index", "Raft index applied to this node's state machine.", r.applied_index)?;
        gauge(&mut m, "capkv_raft_leader_id", "Raft leader this node knows (0 = none).", r.leader_id)?;
        let role_rows: Vec<_> =
            RAFT_ROLES.iter().map(|&s| (vec![("role", s.to_string())], (r.role.as_str() == s) as i64)).collect();
        gauges(&mut m, "capkv_raft_role", "1 for this node's current Raft role, 0 for the others.", &role_rows)?;
        let contact: Vec<_> =
            r.last_contact_ms.iter().map(|(p, ms)| (vec![("peer", p.to_string())], *ms as f64 / 1e3)).collect();
        gauges(
            &mut m,
            "capkv_raft_peer_last_contact_seconds",
            "Seconds since a Raft message from each peer.",
            &contact,
        )?;
        if let Some(h) = &self.raft_apply {
            histogram(
                &mut m,
                "capkv_raft_apply_duration_seconds",
                "Time to apply one batch of committed Raft entries, the write that persists them included.",
                &[(vec![], h)],
            )?;
        }

        // Eventual level.
        let hints: Vec<_> = self.hints_pending.iter().map(|(p, n)| (vec![("peer", p.to_string())], *n)).collect();
        gauges(
            &mut m,
            "capkv_hints_pending",
            "Hinted cells kept for each peer, waiting for it to come back (counted up to 100000).",
            &hints,
        )?;

        // Topics, one series per hosted replica.
        let part = |f: &dyn Fn(&PartitionGauges) -> u64| -> Vec<(Vec<(&str, String)>, u64)> {
            self.partitions
                .iter()
                .map(|(t, p, g)| (vec![("topic", t.clone()), ("partition", p.to_string())], f(g)))
                .collect()
        };
        gauges(
            &mut m,
            "capkv_topic_log_start_offset",
            "First offset this replica keeps.",
            &part(&|g| g.log_start_offset),
        )?;
        gauges(
            &mut m,
            "capkv_topic_log_end_offset",
            "Offset after the last record this replica holds durably.",
            &part(&|g| g.log_end_offset),
        )?;
        gauges(
            &mut m,
            "capkv_topic_high_watermark",
            "Offset below which records are committed (on every ISR member).",
            &part(&|g| g.high_watermark),
        )?;
        gauges(
            &mut m,
            "capkv_topic_isr_size",
            "Members of the partition's in-sync replica set.",
            &part(&|g| g.isr_size),
        )?;
        gauges(&mut m, "capkv_topic_replicas", "Replicas assigned to the partition.", &part(&|g| g.replicas))?;
        gauges(
            &mut m,
            "capkv_topic_partition_leader",
            "1 when this node leads the partition.",
            &part(&|g| g.is_leader as u64),
        )?;
        gauges(
            &mut m,
            "capkv_topic_under_replicated",
            "1 on the partition leader when the ISR is smaller than the replica set.",
            &part(&|g| (g.is_leader && g.isr_size < g.replicas) as u64),
        )?;

        // RocksDB.
        let cf = |rows: &[(&'static str, u64)]| -> Vec<(Vec<(&str, String)>, u64)> {
            rows.iter().map(|(c, v)| (vec![("cf", c.to_string())], *v)).collect()
        };
        gauges(
            &mut m,
            "capkv_rocksdb_live_data_bytes",
            "RocksDB's estimate of live data per column family (rocksdb.estimate-live-data-size).",
            &cf(&self.engine.live_data_bytes),
        )?;
        gauges(
            &mut m,
            "capkv_rocksdb_pending_compaction_bytes",
            "Bytes RocksDB estimates compaction must rewrite (rocksdb.estimate-pending-compaction-bytes).",
            &cf(&self.engine.pending_compaction_bytes),
        )?;
        gauges(
            &mut m,
            "capkv_rocksdb_memtable_limit_bytes",
            "Memtable size chosen for a column family from the size of what is written to it.",
            &cf(&self.engine.memtable_limit_bytes),
        )?;
        if let Some(s) = self.engine.write_stopped {
            gauge(
                &mut m,
                "capkv_rocksdb_write_stopped",
                "1 while RocksDB stops writes (rocksdb.is-write-stopped).",
                s as u64,
            )?;
        }
        if let Some(r) = self.engine.delayed_write_rate_bytes {
            gauge(
                &mut m,
                "capkv_rocksdb_delayed_write_rate_bytes",
                "Rate RocksDB slows writes to, bytes/s; 0 when not stalling (rocksdb.actual-delayed-write-rate).",
                r,
            )?;
        }

        // Disk (node::disk_space).
        if let Some(b) = self.disk_free_bytes {
            gauge(&mut m, "capkv_disk_free_bytes", "Bytes free under the data directory (statvfs).", b)?;
        }
        gauge(
            &mut m,
            "capkv_disk_reserve_bytes",
            "Client writes are refused while capkv_disk_free_bytes is below this (--min-free-disk-mb).",
            self.disk_reserve_bytes,
        )?;

        // Process (the conventional names, so stock dashboards find them).
        if let Some(b) = self.resident_memory_bytes {
            gauge(&mut m, "process_resident_memory_bytes", "Resident memory of the node process.", b)?;
        }
        if let Some(n) = self.open_fds {
            gauge(&mut m, "process_open_fds", "Open file descriptors of the node process.", n)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::histogram::Histogram;
    use std::time::Duration;

    fn sample_value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        s.samples.iter().find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v))).and_then(
            |x| match x.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => Some(v),
                _ => None,
            },
        )
    }

    /// The text parses with a Prometheus parser and says what the scrape
    /// held: counters with `_total`, histograms with cumulative buckets,
    /// labelled per-partition gauges, and the under-replicated flag only on
    /// a leader whose ISR is short.
    #[test]
    fn renders_parseable_text_with_the_values() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(700));
        h.observe(Duration::from_millis(30));
        let scrape = Scrape {
            node_id: 2,
            counters: vec![("read_imposes", 7)],
            requests: vec![
                ((Op::Set, Level::Quorum, Outcome::Ok), 5),
                ((Op::Get, Level::Eventual, Outcome::NotFound), 1),
            ],
            request_durations: vec![((Op::Set, Level::Quorum), h.snapshot())],
            raft: RaftView { term: 3, commit_index: 10, applied_index: 9, leader_id: 2, ..Default::default() },
            hints_pending: [(1, 4)].into(),
            partitions: vec![
                (
                    "t".into(),
                    0,
                    PartitionGauges {
                        is_leader: true,
                        log_start_offset: 0,
                        log_end_offset: 12,
                        high_watermark: 11,
                        isr_size: 2,
                        replicas: 3,
                    },
                ),
                (
                    "t".into(),
                    1,
                    PartitionGauges {
                        is_leader: false,
                        log_start_offset: 0,
                        log_end_offset: 4,
                        high_watermark: 4,
                        isr_size: 2,
                        replicas: 3,
                    },
                ),
            ],
            engine: EngineStats {
                live_data_bytes: vec![("cells", 1234)],
                memtable_limit_bytes: vec![("rsm", 4 << 20)],
                write_stopped: Some(false),
                ..Default::default()
            },
            resident_memory_bytes: Some(1 << 20),
            open_fds: Some(9),
            disk_free_bytes: Some(5 << 30),
            disk_reserve_bytes: 256 << 20,
            ..Default::default()
        };
        let text = render(scrape);
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let s = prometheus_parse::Scrape::parse(lines).unwrap();
        let v = |name, labels: &[(&str, &str)]| sample_value(&s, name, labels);
        assert_eq!(v("capkv_requests_total", &[("op", "set"), ("level", "quorum"), ("outcome", "ok")]), Some(5.0));
        assert_eq!(
            v("capkv_requests_total", &[("op", "get"), ("level", "eventual"), ("outcome", "not_found")]),
            Some(1.0)
        );
        assert_eq!(v("capkv_read_imposes_total", &[]), Some(7.0));
        assert_eq!(v("capkv_raft_term", &[]), Some(3.0));
        assert_eq!(v("capkv_raft_role", &[("role", "follower")]), Some(1.0));
        assert_eq!(v("capkv_raft_role", &[("role", "leader")]), Some(0.0));
        assert_eq!(v("capkv_hints_pending", &[("peer", "1")]), Some(4.0));
        assert_eq!(v("capkv_topic_high_watermark", &[("topic", "t"), ("partition", "0")]), Some(11.0));
        assert_eq!(v("capkv_topic_under_replicated", &[("topic", "t"), ("partition", "0")]), Some(1.0));
        assert_eq!(v("capkv_topic_under_replicated", &[("topic", "t"), ("partition", "1")]), Some(0.0));
        assert_eq!(v("capkv_rocksdb_live_data_bytes", &[("cf", "cells")]), Some(1234.0));
        assert_eq!(v("capkv_rocksdb_memtable_limit_bytes", &[("cf", "rsm")]), Some((4u64 << 20) as f64));
        assert_eq!(v("process_open_fds", &[]), Some(9.0));
        assert_eq!(v("capkv_disk_free_bytes", &[]), Some((5u64 << 30) as f64));
        assert_eq!(v("capkv_disk_reserve_bytes", &[]), Some((256u64 << 20) as f64));
        let hist = s
            .samples
            .iter()
            .find(|x| x.metric == "capkv_request_duration_seconds" && x.labels.get("op") == Some("set"))
            .expect("histogram sample");
        let prometheus_parse::Value::Histogram(buckets) = &hist.value else { panic!("not a histogram: {hist:?}") };
        let at = |le: f64| buckets.iter().find(|b| b.less_than == le).map(|b| b.count);
        assert_eq!(at(0.0005), Some(0.0));
        assert_eq!(at(0.001), Some(1.0));
        assert_eq!(at(0.05), Some(2.0));
        assert_eq!(at(f64::INFINITY), Some(2.0));
    }
}

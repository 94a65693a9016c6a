//! Node counters, shown by `kv cluster status` and exported to Prometheus
//! (`node::metrics_export`), plus the request and Raft-apply latency
//! histograms that only Prometheus shows.
//!
//! Plain relaxed atomics: they are observations, never used for decisions.

pub mod histogram;
pub mod process;
pub mod requests;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        #[derive(Default)]
        pub struct Metrics {
            $(pub $name: AtomicU64,)*
            /// Client KV requests by op × level × outcome (`node::router`).
            pub requests: requests::RequestMetrics,
            /// Time to apply one batch of committed Raft entries, the write
            /// that persists them included (`rsm::driver`).
            pub raft_apply: histogram::Histogram,
        }

        impl Metrics {
            pub fn snapshot(&self) -> BTreeMap<String, u64> {
                let mut m = BTreeMap::new();
                $(m.insert(stringify!($name).to_string(), self.$name.load(Ordering::Relaxed));)*
                m
            }

            /// Every counter's name and value, in declaration order.
            pub fn counters(&self) -> [(&'static str, u64); [$(stringify!($name)),*].len()] {
                [$((stringify!($name), self.$name.load(Ordering::Relaxed))),*]
            }
        }
    };
}

counters!(
    eventual_gets,
    eventual_writes,
    replication_batches,
    replication_cells,
    replication_failures,
    hints_delivered,
    read_repair_rounds,
    read_repair_cells_fixed,
    read_repair_keys_recent,
    anti_entropy_rounds,
    anti_entropy_cells_pushed,
    anti_entropy_cells_pulled,
    // Tombstone GC (src/tombstone_gc).
    tombstones_purged,
    gc_passes,
    gc_tombstones_blocked,
    gc_purges_proposed,
    quorum_gets,
    quorum_writes,
    read_imposes,
    quorum_unavailable,
    // Quorum read phases that asked the replicas they held back.
    quorum_read_hedges,
    // Quorum phases run again in a newer replica configuration.
    quorum_stale_config_restarts,
    // Quorum-level replica-set reconfiguration (levels/quorum/reconfig_task.rs).
    quorum_reconfig_started,
    quorum_reconfig_done,
    quorum_reconfig_failed,
    quorum_reconfig_cells_pulled,
    // Raft command results written back to a majority of cells (level join).
    write_backs,
    // Write-back cells from peers acknowledged without a write: this
    // replica had applied their Raft entry already.
    write_back_cells_held,
    // Compare-and-set at the quorum level (through consensus).
    quorum_cas,
    linearizable_ops,
    linearizable_gets,
    lease_reads,
    raft_entries_proposed,
    raft_commands_proposed,
    raft_readies,
    raft_synced_writes,
    // Times this node saw the Raft leader change to a known leader.
    raft_leader_changes,
    topic_produce_requests,
    topic_produce_records,
    topic_produce_errors,
    topic_fetch_requests,
    topic_fetch_records,
    topic_fetch_errors,
    // Client writes refused because the disk was below its reserve
    // (node::disk_space).
    writes_refused_disk_full,
);

pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

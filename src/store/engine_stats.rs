//! RocksDB's own figures about this node's database, for metrics: how much
//! live data each column family holds and whether writes are being slowed
//! or stopped by compaction debt. Read at scrape time through RocksDB's
//! property interface (cheap: no scan); a property RocksDB cannot report is
//! left out rather than shown as zero.

use rocksdb::properties;

use super::keys::Cf;
use super::Store;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// (column family, `rocksdb.estimate-live-data-size` in bytes).
    pub live_data_bytes: Vec<(&'static str, u64)>,
    /// (column family, `rocksdb.estimate-pending-compaction-bytes`).
    pub pending_compaction_bytes: Vec<(&'static str, u64)>,
    /// (column family, memtable size chosen for it), for the families
    /// sized by what is written (`memtable_size`).
    pub memtable_limit_bytes: Vec<(&'static str, u64)>,
    /// `rocksdb.is-write-stopped`: writes are stopped until compaction catches up.
    pub write_stopped: Option<bool>,
    /// `rocksdb.actual-delayed-write-rate`: bytes/s writes are slowed to; 0 = no slowdown.
    pub delayed_write_rate_bytes: Option<u64>,
}

pub fn engine_stats(store: &Store) -> EngineStats {
    let db = store.db();
    let per_cf = |name: &properties::PropName| -> Vec<(&'static str, u64)> {
        Cf::ALL
            .iter()
            .filter_map(|&c| Some((c.name(), db.property_int_value_cf(store.cf(c), name).ok().flatten()?)))
            .collect()
    };
    EngineStats {
        live_data_bytes: per_cf(properties::ESTIMATE_LIVE_DATA_SIZE),
        pending_compaction_bytes: per_cf(properties::ESTIMATE_PENDING_COMPACTION_BYTES),
        memtable_limit_bytes: store.memtable_sizes().into_iter().map(|(c, b)| (c.name(), b as u64)).collect(),
        write_stopped: db.property_int_value(properties::IS_WRITE_STOPPED).ok().flatten().map(|v| v != 0),
        delayed_write_rate_bytes: db.property_int_value(properties::ACTUAL_DELAYED_WRITE_RATE).ok().flatten(),
    }
}

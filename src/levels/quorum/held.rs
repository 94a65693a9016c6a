//! The replica configuration this node holds, and the replica rule on it:
//! persisted, shared by the coordinator shell, the replica side of the peer
//! service and the reconfiguration task.
//!
//! Why it exists: the reconfiguration's safety (docs/consistency.md,
//! "Changing the replica set") rests on one replica rule — *once a replica
//! adopted epoch `x`, it never again reads or writes for a message of an
//! epoch below `x`*. `replica::Replica` is that rule over a map (for the
//! simulation); this is the same rule for the node's RocksDB cells, across
//! restarts and with concurrent requests.
//!
//! What it promises:
//! - The configuration is written to the store (`meta` family, fsynced)
//!   before it is used, so a restart never goes back to an older epoch;
//!   epochs never go down (asserted).
//! - [`HeldConfig::serve_at`] runs a read or write for a message sent in
//!   configuration `theirs` only if `theirs` is not older than the held
//!   one, adopting it first when newer, and holds the configuration for
//!   the whole read or write (a shared lock): adopting a newer epoch waits
//!   until every read and write admitted under the older one finished. So
//!   a state-transfer scan, which adopts the joint epoch before it reads,
//!   sees every write acknowledged at the older epoch, and nothing of an
//!   older epoch is acknowledged after it.
//! - Two configurations of one epoch with different sets conflict (two
//!   Raft leaders in a row may each have started a change): the one held
//!   wins; a message in the other is refused like an older one.

use std::future::Future;
use std::sync::{Arc, RwLock};

use prost::Message as _;
use tokio::sync::RwLock as AsyncRwLock;

use super::config::ReplicaConfig;
use super::core::ReplicaSetError;
use crate::clock::NodeId;
use crate::store::{Cf, Store, StoreError, WriteOp};
use crate::wire::{config_from_peer, config_to_peer};

/// `meta` key of the held configuration.
pub const META_REPLICA_CONFIG: &[u8] = b"quorum_replica_config";

#[derive(Debug, thiserror::Error)]
pub enum HeldError {
    #[error("cannot persist the quorum replica configuration: {0}")]
    Store(#[from] StoreError),
    #[error("invalid quorum replica configuration: {0}")]
    Invalid(#[from] ReplicaSetError),
}

/// What [`HeldConfig::serve_at`] did.
#[derive(Debug)]
pub enum Served<T> {
    /// Served in the sender's configuration (held, or adopted first).
    Served(T),
    /// Refused without reading or writing: the held configuration is newer
    /// than the sender's, or of its epoch with other sets.
    Refused(Arc<ReplicaConfig>),
}

pub struct HeldConfig {
    store: Arc<Store>,
    /// Shared by every read and write admitted under the configuration;
    /// taken exclusively to adopt a newer one.
    guard: AsyncRwLock<Arc<ReplicaConfig>>,
    /// The same configuration, for callers that only look at it.
    latest: RwLock<Arc<ReplicaConfig>>,
}

impl HeldConfig {
    /// The configuration stored in `store`, or `ReplicaConfig::fixed(fallback)`
    /// (epoch 0) when none was stored yet.
    pub fn load(store: Arc<Store>, fallback: Vec<NodeId>) -> Result<HeldConfig, HeldError> {
        let config = match store.get_raw(Cf::Meta, META_REPLICA_CONFIG)? {
            Some(bytes) => {
                let msg = crate::proto::peer::ReplicaConfig::decode(&bytes[..])
                    .map_err(|e| StoreError::Malformed { what: "quorum replica configuration", source: e.into() })?;
                config_from_peer(msg)?
            }
            None => {
                let fixed = ReplicaConfig::fixed(fallback);
                fixed.validate()?;
                fixed
            }
        };
        tracing::info!(epoch = config.epoch, current = ?config.current, next = ?config.next, "quorum replica configuration");
        let config = Arc::new(config);
        Ok(HeldConfig { store, guard: AsyncRwLock::new(config.clone()), latest: RwLock::new(config) })
    }

    /// The configuration held now.
    pub fn current(&self) -> Arc<ReplicaConfig> {
        self.latest.read().expect("held config lock").clone()
    }

    /// Adopts `theirs` if it is newer (durably, before returning); returns
    /// the configuration held afterwards.
    pub async fn adopt(&self, theirs: &ReplicaConfig) -> Result<Arc<ReplicaConfig>, HeldError> {
        if theirs.epoch <= self.current().epoch {
            return Ok(self.current());
        }
        theirs.validate()?;
        let mut held = self.guard.write().await;
        if theirs.epoch > held.epoch {
            self.persist(theirs).await?;
            *held = Arc::new(theirs.clone());
            *self.latest.write().expect("held config lock") = held.clone();
        }
        Ok(held.clone())
    }

    /// Runs `serve` at once, under the replica rule, when that needs no
    /// waiting: `theirs` is exactly the held configuration and no change
    /// of it is under way. Otherwise `None`: use [`HeldConfig::serve_at`].
    pub fn try_serve_now<T>(&self, theirs: &ReplicaConfig, serve: impl FnOnce() -> T) -> Option<T> {
        let held = self.guard.try_read().ok()?;
        if held.epoch != theirs.epoch || **held != *theirs {
            return None;
        }
        Some(serve())
    }

    /// Runs `serve` (one read or write of a message sent in `theirs`) under
    /// the replica rule of the module docs.
    pub async fn serve_at<T>(
        &self,
        theirs: &ReplicaConfig,
        serve: impl Future<Output = T>,
    ) -> Result<Served<T>, HeldError> {
        let held = self.guard.read().await;
        if theirs.epoch <= held.epoch {
            if theirs.epoch < held.epoch || **held != *theirs {
                return Ok(Served::Refused(held.clone()));
            }
            let out = serve.await;
            drop(held);
            return Ok(Served::Served(out));
        }
        drop(held);
        theirs.validate()?;
        let mut held = self.guard.write().await;
        if theirs.epoch > held.epoch {
            self.persist(theirs).await?;
            *held = Arc::new(theirs.clone());
            *self.latest.write().expect("held config lock") = held.clone();
        } else if **held != *theirs {
            // Another message moved past `theirs` meanwhile.
            return Ok(Served::Refused(held.clone()));
        }
        let held = held.downgrade();
        let out = serve.await;
        drop(held);
        Ok(Served::Served(out))
    }

    /// Writes `config` to the store, fsynced. Called with the exclusive
    /// guard held and only for a newer epoch.
    async fn persist(&self, config: &ReplicaConfig) -> Result<(), HeldError> {
        assert!(config.epoch > self.current().epoch, "the held epoch never goes down");
        let value = config_to_peer(config).encode_to_vec();
        self.store.write(vec![WriteOp::Put { cf: Cf::Meta, key: META_REPLICA_CONFIG.to_vec(), value }], true).await?;
        tracing::info!(epoch = config.epoch, current = ?config.current, next = ?config.next, "quorum replica configuration adopted");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    // Proves the node's replica rule (docs/consistency.md, "Changing the
    // replica set", rule 1): a message of an older epoch is refused without
    // running its read or write, a newer configuration is adopted durably
    // (it survives a reopen of the store), and epochs never go down.
    use super::*;
    use crate::clock::Clock;

    fn config(epoch: u64, current: &[NodeId], next: Option<&[NodeId]>) -> ReplicaConfig {
        ReplicaConfig { epoch, current: current.to_vec(), next: next.map(|n| n.to_vec()) }
    }

    fn open(dir: &std::path::Path) -> Arc<Store> {
        Store::open(dir, Arc::new(Clock::new(1, 500)), Vec::new()).unwrap()
    }

    #[tokio::test]
    async fn older_epochs_are_refused_newer_adopted_and_kept_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let held = HeldConfig::load(store.clone(), vec![1, 2, 3]).unwrap();
        assert_eq!(*held.current(), ReplicaConfig::fixed(vec![1, 2, 3]));

        let joint = config(1, &[1, 2, 3], Some(&[2, 3, 4]));
        let mut ran = false;
        let out = held.serve_at(&joint, async { ran = true }).await.unwrap();
        assert!(matches!(out, Served::Served(())) && ran, "a newer epoch is adopted, then served");
        assert_eq!(*held.current(), joint);

        let mut ran = false;
        let out = held.serve_at(&ReplicaConfig::fixed(vec![1, 2, 3]), async { ran = true }).await.unwrap();
        assert!(matches!(out, Served::Refused(c) if *c == joint), "epoch 0 after epoch 1");
        assert!(!ran, "a refused message is neither read nor written");

        let conflicting = config(1, &[1, 2, 3], Some(&[1, 2, 5]));
        let out = held.serve_at(&conflicting, async {}).await.unwrap();
        assert!(matches!(out, Served::Refused(_)), "one epoch, other sets: refused");

        let settled = config(2, &[2, 3, 4], None);
        assert_eq!(*held.adopt(&settled).await.unwrap(), settled);
        assert_eq!(*held.adopt(&joint).await.unwrap(), settled, "epochs never go down");
        drop(held);
        store.shutdown();
        drop(store);

        let store = open(dir.path());
        let held = HeldConfig::load(store.clone(), vec![9]).unwrap();
        assert_eq!(*held.current(), settled, "the adopted configuration survives a restart");
        store.shutdown();
    }
}

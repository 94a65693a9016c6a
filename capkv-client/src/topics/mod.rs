//! Topic client: create and inspect topics, produce and consume.
//!
//! ```no_run
//! # async fn demo() -> Result<(), capkv_client::topics::TopicClientError> {
//! use std::sync::Arc;
//! use capkv_client::topics::*;
//! let client = Arc::new(TopicClient::new(&["127.0.0.1:7001", "127.0.0.1:7002"])?);
//! client.create_topic("orders", TopicSpec::new(3, 3)).await?;
//! let producer = Producer::new(client.clone(), "orders", ProducerOptions::default()).await?;
//! let at = producer.send(Some(b"customer-7"), b"paid").await?; // (partition, offset)
//! let mut consumer = Consumer::new(client, "orders", ConsumerOptions::default()).await?;
//! for r in consumer.poll().await? {
//!     println!("{}@{}: {:?}", r.partition, r.offset, r.value);
//! }
//! # Ok(()) }
//! ```
//!
//! Metadata calls go to any endpoint. Produce and fetch go to the
//! partition's leader, found in the metadata (cached, refreshed when a node
//! says it is not the leader). The [`Producer`] is idempotent: a random
//! producer id and per-partition sequence numbers let it retry a batch
//! whose answer was lost without the records being appended twice. Keyed
//! records go to `xxh3(key) mod partitions`, keyless ones round-robin.

mod client;
mod consumer;
mod error;
mod producer;
mod types;

use std::time::Duration;

pub use client::TopicClient;
pub use consumer::{ConsumedRecord, Consumer, ConsumerOptions, StartFrom};
pub use error::TopicClientError;
pub use producer::{Producer, ProducerOptions};
pub use types::{Acks, FetchResult, GroupState, ProduceResult, Record, RecordMetadata, TopicSpec};

pub const DEFAULT_METADATA_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Records per produce request the producer builds at most.
pub const DEFAULT_MAX_BATCH_RECORDS: usize = 2_000;
/// Key + value bytes per produce request the producer builds at most.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 2 * 1024 * 1024;
/// Pause before retrying after "not the leader" or "unavailable".
pub const RETRY_PAUSE_MS: u64 = 100;
/// One metadata attempt on one node at most, so a paused node (SIGSTOP)
/// does not hold the call; the next node gets the same request id.
pub const METADATA_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_FETCH_MAX_BYTES: u32 = 1024 * 1024;
pub const DEFAULT_FETCH_WAIT: Duration = Duration::from_millis(500);
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

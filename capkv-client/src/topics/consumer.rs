//! [`Consumer`]: polls partitions from committed (or configured start)
//! offsets, alone or as a member of a consumer group.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::client::*;
use super::TopicClientError as E;
use super::*;

/// Where a consumer without a committed offset starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartFrom {
    /// The log start.
    Earliest,
    /// The high watermark when the consumer starts.
    Latest,
}

#[derive(Clone, Debug)]
pub struct ConsumerOptions {
    /// Share partitions with other members of this group and commit offsets.
    pub group: Option<String>,
    pub start: StartFrom,
    /// Only these partitions (no group).
    pub partitions: Option<Vec<u32>>,
    pub session_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub max_wait: Duration,
    pub max_bytes: u32,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        ConsumerOptions {
            group: None,
            start: StartFrom::Earliest,
            partitions: None,
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            max_wait: DEFAULT_FETCH_WAIT,
            max_bytes: DEFAULT_FETCH_MAX_BYTES,
        }
    }
}

/// A consumed record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub partition: u32,
    pub offset: u64,
    pub key: Bytes,
    pub value: Bytes,
    pub timestamp_ms: i64,
}

#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Position {
    next: u64,
    /// High watermark at the last fetch (None: not fetched yet).
    high_watermark: Option<u64>,
}

/// A consumer of one topic: all its partitions (or some), or a share of
/// them as a member of a consumer group, whose committed offsets it
/// resumes from and advances with [`Consumer::commit`].
pub struct Consumer {
    client: Arc<TopicClient>,
    topic: String,
    opts: ConsumerOptions,
    member_id: String,
    generation: u64,
    positions: BTreeMap<u32, Position>,
    last_heartbeat: Instant,
    partitions: u32,
}

impl Consumer {
    pub async fn new(client: Arc<TopicClient>, topic: &str, opts: ConsumerOptions) -> Result<Consumer, E> {
        let t = client.metadata(topic, true).await?;
        let partitions = t.partitions.len() as u32;
        if let Some(ps) = &opts.partitions {
            if let Some(bad) = ps.iter().find(|&&p| p >= partitions) {
                return Err(E::InvalidArgument(format!(
                    "topic {topic:?} has no partition {bad}: it has {partitions} (0-{})",
                    partitions.saturating_sub(1)
                )));
            }
        }
        let mut c = Consumer {
            client,
            topic: topic.to_string(),
            member_id: format!("member-{:016x}", rand::random::<u64>()),
            opts,
            generation: 0,
            positions: BTreeMap::new(),
            last_heartbeat: Instant::now(),
            partitions,
        };
        if c.opts.group.is_some() {
            c.heartbeat().await?;
        } else {
            let ps: Vec<u32> = c.opts.partitions.clone().unwrap_or_else(|| (0..partitions).collect());
            c.assign(ps).await?;
        }
        Ok(c)
    }

    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The partitions this consumer reads.
    pub fn assignment(&self) -> Vec<u32> {
        self.positions.keys().copied().collect()
    }

    /// The next offset to read, per assigned partition.
    pub fn positions(&self) -> BTreeMap<u32, u64> {
        self.positions.iter().map(|(&p, pos)| (p, pos.next)).collect()
    }

    /// Reads `partition` from `offset` next (it must be assigned).
    pub fn seek(&mut self, partition: u32, offset: u64) {
        if let Some(p) = self.positions.get_mut(&partition) {
            p.next = offset;
            p.high_watermark = None;
        }
    }

    /// Every assigned partition was fetched and read up to its high watermark.
    pub fn at_end(&self) -> bool {
        self.positions.values().all(|p| p.high_watermark.is_some_and(|hw| p.next >= hw))
    }

    async fn heartbeat(&mut self) -> Result<(), E> {
        let Some(group) = self.opts.group.clone() else { return Ok(()) };
        let g = self
            .client
            .group_heartbeat(&group, &self.member_id, std::slice::from_ref(&self.topic), self.opts.session_timeout)
            .await?;
        self.last_heartbeat = Instant::now();
        if g.generation != self.generation || self.positions.is_empty() {
            self.generation = g.generation;
            let mine = g.assignment.get(&self.topic).cloned().unwrap_or_default();
            tracing::debug!(group, generation = g.generation, partitions = ?mine, "consumer group assignment");
            self.assign(mine).await?;
        }
        Ok(())
    }

    /// Reads from `partitions` from now on: kept ones keep their position,
    /// new ones start at the group's committed offset or `opts.start`.
    async fn assign(&mut self, partitions: Vec<u32>) -> Result<(), E> {
        let committed = match &self.opts.group {
            Some(g) => self.client.committed_offsets(g, &self.topic).await?,
            None => BTreeMap::new(),
        };
        let mut next = BTreeMap::new();
        for p in partitions {
            let pos = match self.positions.get(&p) {
                Some(pos) => *pos,
                None => match committed.get(&p) {
                    Some(&o) => Position { next: o, high_watermark: None },
                    None => match self.opts.start {
                        StartFrom::Earliest => Position { next: 0, high_watermark: None },
                        StartFrom::Latest => {
                            let f = self.client.fetch(&self.topic, p, 0, 1, Duration::ZERO).await?;
                            Position { next: f.high_watermark, high_watermark: Some(f.high_watermark) }
                        }
                    },
                },
            };
            next.insert(p, pos);
        }
        self.positions = next;
        Ok(())
    }

    /// Fetches from every assigned partition (waiting up to `max_wait`
    /// for records); renews the group membership when due. Records of one
    /// partition come in offset order.
    pub async fn poll(&mut self) -> Result<Vec<ConsumedRecord>, E> {
        if self.opts.group.is_some() && self.last_heartbeat.elapsed() >= self.opts.heartbeat_interval {
            self.heartbeat().await?;
        }
        let fetches = self.positions.iter().map(|(&p, pos)| {
            let client = self.client.clone();
            let topic = self.topic.clone();
            let (offset, max_bytes, max_wait) = (pos.next, self.opts.max_bytes, self.opts.max_wait);
            async move { (p, client.fetch(&topic, p, offset, max_bytes, max_wait).await) }
        });
        let results = futures::future::join_all(fetches).await;
        let mut out = Vec::new();
        let mut first_error = None;
        for (p, r) in results {
            let Some(pos) = self.positions.get_mut(&p) else { continue };
            match r {
                Ok(f) => {
                    pos.next = f.next_offset;
                    pos.high_watermark = Some(f.high_watermark);
                    out.extend(f.records.into_iter().map(|r| ConsumedRecord {
                        partition: p,
                        offset: r.offset,
                        key: r.key,
                        value: r.value,
                        timestamp_ms: r.timestamp_ms,
                    }));
                }
                Err(E::OffsetOutOfRange { log_start, log_end, .. }) => {
                    // Past the log end (e.g. after an unclean election).
                    pos.next = match self.opts.start {
                        StartFrom::Earliest => log_start,
                        StartFrom::Latest => log_end,
                    };
                    pos.high_watermark = None;
                }
                Err(e @ (E::UnknownTopic(_) | E::InvalidArgument(_) | E::Config(_))) => return Err(e),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if out.is_empty() {
            if let Some(e) = first_error {
                return Err(e);
            }
        }
        Ok(out)
    }

    /// Commits the current positions (group consumers; a no-op otherwise).
    /// A stale generation rejoins the group and reports the error.
    pub async fn commit(&mut self) -> Result<(), E> {
        let Some(group) = self.opts.group.clone() else { return Ok(()) };
        if self.positions.is_empty() {
            return Ok(());
        }
        let offsets: Vec<(String, u32, u64)> =
            self.positions.iter().map(|(&p, pos)| (self.topic.clone(), p, pos.next)).collect();
        match self.client.commit_offsets(&group, &self.member_id, self.generation, &offsets).await {
            Err(e @ E::StaleGeneration(_)) => {
                self.heartbeat().await?;
                Err(e)
            }
            other => other,
        }
    }

    /// Leaves the group (its partitions go to the other members at once).
    pub async fn close(self) -> Result<(), E> {
        match &self.opts.group {
            Some(g) => self.client.group_leave(g, &self.member_id).await,
            None => Ok(()),
        }
    }

    pub fn partition_count(&self) -> u32 {
        self.partitions
    }
}

//! The replicated state machine: what applying a Raft entry does.
//!
//! Pure logic over a read view of the `rsm` column family: it returns the
//! writes to make and the replies to hand out, and never reads a clock. Every
//! replica applying the same entries therefore reaches the same state:
//!
//! * **Deterministic versions and CAS** for user keys: see [`kv`].
//! * **Exactly-once retries.** A session per client id keeps recent
//!   (request id → reply). A command whose id is already there is answered
//!   from the session without being applied again. The client's
//!   `ack_below` trims the session; a late duplicate below it is refused.
//!   Sessions idle for [`SESSION_TTL_MS`] of *log time* are swept every
//!   [`SESSION_SWEEP_EVERY_ENTRIES`] entries — never by a local clock.
//! * **Log time** follows the proposers' stamps but never runs more than
//!   [`LOG_TIME_LEAD_MAX_MS`] ahead of the time a majority of the voters
//!   vouch for (the latest stamp of each voter, the (f+1)-th largest of
//!   them: at least one correct clock is at or above it). One node with a
//!   clock hours ahead therefore moves log time by at most that lead, and
//!   cannot expire every session at once. Each node proposes an empty
//!   entry when it has proposed nothing for a while, so the vouched time
//!   keeps up with real time on an idle or single-client cluster.
//! * **Command families.** This file is what every command shares: the
//!   apply loop, log time, sessions and the applied index. What a command
//!   does is its family's: [`kv`] (put, delete, CAS on user keys, each
//!   write also LWW-merged into the key's cell so eventual and quorum
//!   reads see it) and [`topic_meta`] (topic and group metadata: epoch
//!   compare-and-set, groups, key layout). Membership ([`members`]) is
//!   not a command family: Raft configuration changes carry it, and the
//!   driver applies them with [`members::change_ops`].

pub mod kv;
pub mod members;
pub mod topic_meta;

use std::collections::HashMap;

use prost::Message;

use crate::clock::{hlc_from_physical_ms, hlc_physical_ms};
use crate::proto::rsm::{self, command::Op, reply};
use crate::store::{Cf, StoreError, WriteOp};
pub use kv::{user_key, KEY_PREFIX, LINEAR_VERSION_BIT};

/// Replies kept per client session at most: the requests of one client
/// that can be unfinished (at or above its `ack_below`) at once. A reply is
/// never dropped while its request may still be retried; a client that has
/// this many unfinished requests gets its next one refused as busy (not
/// applied, safe to retry) until its `ack_below` moves. The client library
/// keeps far fewer in flight per session.
pub const MAX_SESSION_REPLIES: usize = 1024;
/// A session unused for this long (log time) is dropped.
pub const SESSION_TTL_MS: i64 = 10 * 60 * 1000;
pub const SESSION_SWEEP_EVERY_ENTRIES: u64 = 8192;
/// Sessions examined per sweep at most (the sweep resumes where it stopped).
pub const SESSION_SWEEP_MAX: usize = 10_000;

pub const SESSION_PREFIX: u8 = b's';
pub const META_APPLIED: &[u8] = b"m/applied";
pub const META_MAX_STAMP: &[u8] = b"m/max_stamp";
pub const META_SWEEP_CURSOR: &[u8] = b"m/sweep_cursor";
/// Followed by a proposer's node id (u32, big-endian): its latest stamp.
pub const META_PROPOSER_STAMP_PREFIX: &[u8] = b"m/stamp/";
/// How far log time may run ahead of the time a majority of voters vouch
/// for (see the module docs). Session expiry ([`SESSION_TTL_MS`]) and
/// consumer-group member expiry can come early by at most this much when
/// a clock runs fast.
pub const LOG_TIME_LEAD_MAX_MS: i64 = 2_000;

pub fn proposer_stamp_key(node: u32) -> Vec<u8> {
    let mut k = META_PROPOSER_STAMP_PREFIX.to_vec();
    k.extend_from_slice(&node.to_be_bytes());
    k
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("corrupt state machine data: {0}")]
    Corrupt(String),
}

/// The driver stops on either: a store error passes through, corrupt state
/// machine data is the raft entry's.
impl From<ApplyError> for StoreError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::Store(e) => e,
            e @ ApplyError::Corrupt(_) => StoreError::Malformed { what: "raft entry", source: e.into() },
        }
    }
}

/// Read access to the `rsm` column family as of the last applied batch.
pub trait RsmRead {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Keys with `prefix` strictly after `after`, in order, at most `limit`.
    fn scan(&self, prefix: &[u8], after: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError>;
}

/// The `rsm` column family in memory, for tests that drive the real
/// applier (state machine, topic metadata and joined-level simulations).
#[cfg(test)]
#[derive(Default, Clone, Debug, PartialEq)]
pub(crate) struct MemRsm(pub(crate) std::collections::BTreeMap<Vec<u8>, Vec<u8>>);

#[cfg(test)]
impl RsmRead for MemRsm {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.get(key).cloned())
    }
    fn scan(&self, prefix: &[u8], after: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        Ok(self
            .0
            .range(after.to_vec()..)
            .filter(|(k, _)| k.as_slice() != after && k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

pub fn session_key(client_id: u64) -> Vec<u8> {
    let mut k = vec![SESSION_PREFIX];
    k.extend_from_slice(&client_id.to_be_bytes());
    k
}

/// The applied (index, term) recorded with the last applied batch.
pub fn decode_applied(bytes: &[u8]) -> Option<(u64, u64)> {
    if bytes.len() != 16 {
        return None;
    }
    Some((u64::from_be_bytes(bytes[..8].try_into().ok()?), u64::from_be_bytes(bytes[8..].try_into().ok()?)))
}

/// A reply together with who waits for it.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub client_id: u64,
    pub request_id: u64,
    pub reply: rsm::Reply,
}

/// Applies committed entries in order; `finish` hands out the writes (one
/// batch, including the new applied index) and the replies.
pub struct Applier<'a, R: RsmRead> {
    read: &'a R,
    overlay: HashMap<Vec<u8>, Option<Vec<u8>>>,
    ops: Vec<WriteOp>,
    answers: Vec<Answer>,
    applied: Option<(u64, u64)>,
    max_stamp: Option<u64>,
    /// Proposer of each applied batch, in order.
    proposers: Vec<u32>,
    /// The Raft voters, whose stamps vouch for log time.
    voters: Vec<u32>,
}

impl<'a, R: RsmRead> Applier<'a, R> {
    pub fn new(read: &'a R) -> Self {
        Applier {
            read,
            overlay: HashMap::new(),
            ops: Vec::new(),
            answers: Vec::new(),
            applied: None,
            max_stamp: None,
            proposers: Vec::new(),
            voters: Vec::new(),
        }
    }

    /// The voters of the Raft group (the driver passes its configuration).
    /// Without them, each batch's proposer is taken as the only voter: the
    /// log time of a one-node group.
    pub fn with_voters(mut self, voters: impl IntoIterator<Item = u32>) -> Self {
        self.voters = voters.into_iter().collect();
        self.voters.sort_unstable();
        self.voters.dedup();
        self
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.overlay.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.read.get(key),
        }
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push(WriteOp::Put { cf: Cf::Rsm, key: key.clone(), value: value.clone() });
        self.overlay.insert(key, Some(value));
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.ops.push(WriteOp::Delete { cf: Cf::Rsm, key: key.clone() });
        self.overlay.insert(key, None);
    }

    fn decode<M: Message + Default>(bytes: &[u8], what: &str) -> Result<M, ApplyError> {
        M::decode(bytes).map_err(|e| ApplyError::Corrupt(format!("{what}: {e}")))
    }

    fn read_u64(&self, key: &[u8], what: &str) -> Result<u64, ApplyError> {
        match self.get(key)? {
            Some(b) => Ok(u64::from_be_bytes(b.as_slice().try_into().map_err(|_| ApplyError::Corrupt(what.into()))?)),
            None => Ok(0),
        }
    }

    /// Records `batch`'s stamp as its proposer's latest and returns the log
    /// time after it: the previous log time, or the batch's stamp capped at
    /// [`LOG_TIME_LEAD_MAX_MS`] past the time a majority of voters vouch for.
    fn log_time_for(&mut self, batch: &rsm::Batch) -> Result<u64, ApplyError> {
        let prev = self.max_stamp()?;
        let key = proposer_stamp_key(batch.proposer);
        if batch.stamp > self.read_u64(&key, "proposer stamp")? {
            self.put(key, batch.stamp.to_be_bytes().to_vec());
        }
        let voters = if self.voters.is_empty() { std::slice::from_ref(&batch.proposer) } else { &self.voters[..] };
        let mut stamps = Vec::with_capacity(voters.len());
        for &v in voters {
            let s = self.read_u64(&proposer_stamp_key(v), "proposer stamp")?;
            if s > 0 {
                stamps.push(s);
            }
        }
        stamps.sort_unstable_by(|a, b| b.cmp(a));
        // With n voters at most f = (n-1)/2 clocks may be wrong: the
        // (f+1)-th largest stamp is at or below some correct clock. Until
        // f+1 voters have proposed (a new group's first entries), the
        // largest known stamp stands in: a jump then happens before any
        // session could have aged, and log time afterwards only waits
        // (never goes back) until the correct clocks catch up.
        let f = (voters.len() - 1) / 2;
        let vouched = stamps.get(f).or(stamps.first()).copied().unwrap_or(0);
        let cap = hlc_from_physical_ms(hlc_physical_ms(vouched).saturating_add(LOG_TIME_LEAD_MAX_MS));
        Ok(prev.max(batch.stamp.min(cap)))
    }

    fn max_stamp(&mut self) -> Result<u64, ApplyError> {
        if let Some(s) = self.max_stamp {
            return Ok(s);
        }
        let s = self.read_u64(META_MAX_STAMP, "max stamp")?;
        self.max_stamp = Some(s);
        Ok(s)
    }

    /// Applies the entry at `index` (`data` empty for Raft's own entries).
    pub fn apply(&mut self, index: u64, term: u64, data: &[u8]) -> Result<(), ApplyError> {
        if let Some((last, _)) = self.applied {
            assert!(index > last, "apply out of order: {index} after {last}");
        }
        self.applied = Some((index, term));
        if data.is_empty() {
            return Ok(());
        }
        let batch: rsm::Batch = Self::decode(data, "entry")?;
        self.proposers.push(batch.proposer);
        let log_time = self.log_time_for(&batch)?;
        assert!(log_time >= self.max_stamp()?, "log time went back");
        self.max_stamp = Some(log_time);
        for cmd in &batch.commands {
            let reply = self.apply_command(&batch, cmd, log_time)?;
            self.answers.push(Answer { client_id: cmd.client_id, request_id: cmd.request_id, reply });
        }
        if index.is_multiple_of(SESSION_SWEEP_EVERY_ENTRIES) {
            self.sweep_sessions(log_time)?;
        }
        Ok(())
    }

    fn apply_command(
        &mut self,
        batch: &rsm::Batch,
        cmd: &rsm::Command,
        log_time: u64,
    ) -> Result<rsm::Reply, ApplyError> {
        if cmd.client_id == 0 || cmd.sessionless {
            return self.execute(batch, cmd);
        }
        let skey = session_key(cmd.client_id);
        let mut session: rsm::Session = match self.get(&skey)? {
            Some(b) => Self::decode(&b, "session")?,
            None => rsm::Session::default(),
        };
        if let Some(e) = session.entries.iter().find(|e| e.request_id == cmd.request_id) {
            // A retry of a command already applied: same answer, no effect.
            return Ok(e.reply.clone().unwrap_or_default());
        }
        if cmd.request_id < session.ack_below {
            return Ok(refused("a late duplicate of a request the client already finished; not applied"));
        }
        // The client finished everything below its ack_below: those replies
        // can go (this holds even if this command is refused below).
        session.ack_below = session.ack_below.max(cmd.ack_below);
        let ack = session.ack_below;
        session.entries.retain(|e| e.request_id >= ack);
        session.last_active_stamp = log_time;
        if session.entries.len() >= MAX_SESSION_REPLIES {
            // Every kept reply may still be asked for by a retry: dropping
            // one could apply that request twice. Refuse this one instead.
            self.put(skey, session.encode_to_vec());
            return Ok(rsm::Reply {
                result: Some(reply::Result::Busy(format!(
                    "client {:#x} has {} unfinished requests, the most a session keeps: not applied; retry it \
                     once earlier requests finish",
                    cmd.client_id, MAX_SESSION_REPLIES
                ))),
            });
        }
        let reply = self.execute(batch, cmd)?;
        session.entries.push(rsm::SessionEntry { request_id: cmd.request_id, reply: Some(reply.clone()) });
        assert!(session.entries.len() <= MAX_SESSION_REPLIES, "session over its bound");
        self.put(skey, session.encode_to_vec());
        Ok(reply)
    }

    /// Runs one command of `batch` through its family.
    fn execute(&mut self, batch: &rsm::Batch, cmd: &rsm::Command) -> Result<rsm::Reply, ApplyError> {
        let result = match &cmd.op {
            Some(Op::Put(p)) => self.kv_put(batch, p)?,
            Some(Op::Del(d)) => self.kv_del(batch, d)?,
            Some(Op::Cas(c)) => self.kv_cas(batch, c)?,
            Some(Op::Topic(t)) => self.topic_meta(batch, t)?,
            Some(Op::Purge(p)) => self.kv_purge(p)?,
            None => return Ok(refused("empty command")),
        };
        Ok(rsm::Reply { result: Some(result) })
    }

    fn sweep_sessions(&mut self, log_time: u64) -> Result<(), ApplyError> {
        let cutoff = hlc_from_physical_ms(hlc_physical_ms(log_time) - SESSION_TTL_MS);
        let cursor = self.get(META_SWEEP_CURSOR)?.unwrap_or_default();
        let page = self.read.scan(&[SESSION_PREFIX], &cursor, SESSION_SWEEP_MAX)?;
        let next = if page.len() == SESSION_SWEEP_MAX {
            page.last().map(|(k, _)| k.clone()).unwrap_or_default()
        } else {
            Vec::new()
        };
        for (k, v) in page {
            // The overlay may hold a fresher copy touched in this batch.
            let v = match self.overlay.get(&k) {
                Some(Some(v)) => v.clone(),
                Some(None) => continue,
                None => v,
            };
            let s: rsm::Session = Self::decode(&v, "session")?;
            if s.last_active_stamp < cutoff {
                self.delete(k);
            }
        }
        self.put(META_SWEEP_CURSOR.to_vec(), next);
        Ok(())
    }

    /// How many of the applied batches `node` proposed.
    pub fn proposed_by(&self, node: u32) -> usize {
        self.proposers.iter().filter(|&&p| p == node).count()
    }

    /// The writes of everything applied (plus the applied index and log
    /// time), and the replies in apply order.
    pub fn finish(mut self) -> (Vec<WriteOp>, Vec<Answer>, Option<(u64, u64)>) {
        if let Some((index, term)) = self.applied {
            let mut v = index.to_be_bytes().to_vec();
            v.extend_from_slice(&term.to_be_bytes());
            self.ops.push(WriteOp::Put { cf: Cf::Rsm, key: META_APPLIED.to_vec(), value: v });
        }
        if let Some(s) = self.max_stamp {
            self.ops.push(WriteOp::Put { cf: Cf::Rsm, key: META_MAX_STAMP.to_vec(), value: s.to_be_bytes().to_vec() });
        }
        (self.ops, self.answers, self.applied)
    }
}

fn refused(why: &str) -> rsm::Reply {
    rsm::Reply { result: Some(reply::Result::Refused(why.to_string())) }
}

#[cfg(test)]
mod tests;

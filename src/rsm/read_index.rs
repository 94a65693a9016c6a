//! Read-index requests in flight and the leader lease: a sans-I/O core.
//!
//! The driver hands it batches of readers, what Raft says (read states,
//! term changes, the applied index) and the monotonic time `now_ms`; it
//! answers with [`ReadEffect`]s: ask Raft for a read index under a context,
//! answer a reader at an index, or refuse one. It reads no clock and does no
//! I/O, so its timing rules are unit-tested here.
//!
//! * **ReadIndex** (Raft §6.4): many readers share one request, keyed by a
//!   context (a counter, 8 bytes big-endian). When Raft reports the read
//!   state of a context, its readers complete once this node has applied
//!   up to the index (at once when it already has). A context unanswered
//!   after [`READ_INDEX_RETRY_MS`] is asked again under a new context:
//!   raft-rs drops a request that reaches a leader that has not committed in
//!   its term (Raft §8) without telling the follower. One unanswered after
//!   [`READ_CONTEXT_TTL_MS`] is forgotten (its readers are dropped). A new
//!   term refuses the readers of contexts issued in older terms.
//! * **The leader lease** (`ReadMode::Lease`, see `driver`'s module docs
//!   for why it is safe): a round issued at `t` and confirmed by a majority
//!   while this node is leader in the round's term grants a lease until
//!   `t + lease_ms` — from the *issue* time, never the confirmation time. A
//!   leader holding it, in its term, that has committed an entry of that
//!   term serves reads at its commit index with no round. A new term drops
//!   the lease; so does not being leader. Rounds without readers renew the
//!   lease when it has less than half left and no round of the term is out.

use std::collections::BTreeMap;

/// Read-index requests in flight, at most.
pub const MAX_PENDING_READ_CONTEXTS: usize = 10_000;
/// A read-index request without an answer after this is forgotten.
pub const READ_CONTEXT_TTL_MS: u64 = 30_000;
/// A read-index request unanswered for this long is asked again: raft-rs
/// drops one that reaches a leader that has not yet committed in its term
/// (Raft §8), without telling the follower that sent it.
pub const READ_INDEX_RETRY_MS: u64 = 250;

/// What Raft says about this node when the driver calls in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RaftFacts {
    pub is_leader: bool,
    /// Some leader is known (this node or another).
    pub leader_known: bool,
    pub term: u64,
    pub commit_index: u64,
    /// The leader has committed an entry of its current term, so its
    /// commit index covers every write earlier leaders acknowledged (§8).
    pub committed_in_term: bool,
    /// This node has applied up to here.
    pub applied: u64,
}

/// Why readers are refused (the driver words it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    NoLeader,
    TooManyPending,
    /// A new term began before their read index was confirmed.
    LeadershipChanged,
}

/// What the driver does next.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadEffect<W> {
    /// Hand this context to `RawNode::read_index`.
    Issue { ctx: Vec<u8> },
    /// Answer `waiter`: reads at `index` are linearizable (applied here).
    Complete { index: u64, waiter: W },
    /// Answer `waiter`: unavailable.
    Refuse { why: Refusal, waiter: W },
    /// `reads` readers were served by the lease, without a round (metrics).
    LeaseServed { reads: usize },
}

#[derive(Debug)]
struct Issued<W> {
    at_ms: u64,
    term: u64,
    waiters: Vec<W>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Lease {
    until_ms: u64,
    term: u64,
}

/// See the module docs. `W` is whoever waits for a read (the driver's
/// reply channel; plain numbers in tests).
#[derive(Debug)]
pub struct ReadIndexQueue<W> {
    /// `ReadMode::Lease`: grant and use leases.
    lease_mode: bool,
    lease_ms: u64,
    last_ctx: u64,
    /// By context, which is also issue order.
    issued: BTreeMap<u64, Issued<W>>,
    /// Readers with a read index this node has not applied yet, by index.
    ready: BTreeMap<u64, Vec<W>>,
    lease: Option<Lease>,
}

impl<W> ReadIndexQueue<W> {
    /// `lease_ms` is only used when `lease_mode` (see `driver::lease_ms`).
    pub fn new(lease_mode: bool, lease_ms: u64) -> Self {
        ReadIndexQueue {
            lease_mode,
            lease_ms,
            last_ctx: 0,
            issued: BTreeMap::new(),
            ready: BTreeMap::new(),
            lease: None,
        }
    }

    /// Whether this leader may serve reads at its commit index without a
    /// round: lease mode, leader, an unexpired lease of the current term,
    /// and an entry of that term committed.
    pub fn lease_holds(&self, now_ms: u64, raft: &RaftFacts) -> bool {
        self.lease_mode
            && raft.is_leader
            && self.lease.is_some_and(|l| l.term == raft.term && now_ms < l.until_ms)
            && raft.committed_in_term
    }

    /// Read-index requests issued and not answered yet.
    pub fn pending_contexts(&self) -> usize {
        self.issued.len()
    }

    /// Readers that want a read index. Served by the lease when it holds;
    /// otherwise one new context for all of them (also for none: a lease
    /// renewal round), unless no leader is known or too many are out.
    pub fn request(&mut self, now_ms: u64, raft: &RaftFacts, waiters: Vec<W>) -> Vec<ReadEffect<W>> {
        let mut out = Vec::new();
        if !waiters.is_empty() && self.lease_holds(now_ms, raft) {
            out.push(ReadEffect::LeaseServed { reads: waiters.len() });
            self.ready_at(raft.commit_index, raft.applied, waiters, &mut out);
            return out;
        }
        if !raft.leader_known || self.issued.len() >= MAX_PENDING_READ_CONTEXTS {
            let why = if !raft.leader_known { Refusal::NoLeader } else { Refusal::TooManyPending };
            out.extend(waiters.into_iter().map(|waiter| ReadEffect::Refuse { why, waiter }));
            return out;
        }
        self.last_ctx += 1;
        let ctx = self.last_ctx;
        self.issued.insert(ctx, Issued { at_ms: now_ms, term: raft.term, waiters });
        out.push(ReadEffect::Issue { ctx: ctx.to_be_bytes().to_vec() });
        out
    }

    /// Raft confirmed the read index `index` for `ctx`. Unknown contexts
    /// (forgotten, retried under a new one, or not ours) are ignored.
    pub fn on_read_state(&mut self, index: u64, ctx: &[u8], raft: &RaftFacts) -> Vec<ReadEffect<W>> {
        let mut out = Vec::new();
        let Ok(bytes) = <[u8; 8]>::try_from(ctx) else { return out };
        let Some(issued) = self.issued.remove(&u64::from_be_bytes(bytes)) else { return out };
        if self.lease_mode && raft.is_leader && issued.term == raft.term {
            // A majority confirmed us as leader after `at_ms`.
            let until_ms = issued.at_ms + self.lease_ms;
            if self.lease.is_none_or(|l| l.term != issued.term || l.until_ms < until_ms) {
                self.lease = Some(Lease { until_ms, term: issued.term });
            }
        }
        self.ready_at(index, raft.applied, issued.waiters, &mut out);
        out
    }

    /// This node applied up to `applied`: readers waiting for it complete.
    pub fn complete(&mut self, applied: u64) -> Vec<ReadEffect<W>> {
        let later = self.ready.split_off(&(applied + 1));
        std::mem::replace(&mut self.ready, later)
            .into_iter()
            .flat_map(|(index, ws)| ws.into_iter().map(move |waiter| ReadEffect::Complete { index, waiter }))
            .collect()
    }

    /// A new term: the lease ends, and readers of contexts issued in older
    /// terms are refused (their answer may never come).
    pub fn on_term_change(&mut self, term: u64) -> Vec<ReadEffect<W>> {
        self.lease = None;
        let stale: Vec<u64> = self.issued.iter().filter(|(_, i)| i.term < term).map(|(&c, _)| c).collect();
        let mut out = Vec::new();
        for ctx in stale {
            if let Some(i) = self.issued.remove(&ctx) {
                out.extend(
                    i.waiters.into_iter().map(|waiter| ReadEffect::Refuse { why: Refusal::LeadershipChanged, waiter }),
                );
            }
        }
        out
    }

    /// Re-issues contexts unanswered for [`READ_INDEX_RETRY_MS`] as one new
    /// request (the old contexts are forgotten: a late answer is ignored),
    /// keeping only the readers `keep` says still wait.
    pub fn retry(&mut self, now_ms: u64, raft: &RaftFacts, keep: impl Fn(&W) -> bool) -> Vec<ReadEffect<W>> {
        let stale: Vec<u64> = self
            .issued
            .iter()
            .filter(|(_, i)| now_ms.saturating_sub(i.at_ms) >= READ_INDEX_RETRY_MS)
            .map(|(&c, _)| c)
            .collect();
        let mut waiters = Vec::new();
        for ctx in stale {
            if let Some(i) = self.issued.remove(&ctx) {
                waiters.extend(i.waiters.into_iter().filter(|w| keep(w)));
            }
        }
        if waiters.is_empty() {
            return Vec::new();
        }
        self.request(now_ms, raft, waiters)
    }

    /// Lease mode, as leader: a round without readers when the lease has
    /// less than half its length left and no round of this term issued
    /// within that half is out.
    pub fn renew_lease(&mut self, now_ms: u64, raft: &RaftFacts) -> Vec<ReadEffect<W>> {
        if !self.lease_mode || !raft.is_leader {
            return Vec::new();
        }
        let half_ms = self.lease_ms / 2;
        let fresh = self.lease.is_some_and(|l| l.term == raft.term && l.until_ms > now_ms + half_ms);
        let round_out = self.issued.values().any(|i| i.term == raft.term && now_ms.saturating_sub(i.at_ms) < half_ms);
        if fresh || round_out {
            return Vec::new();
        }
        self.request(now_ms, raft, Vec::new())
    }

    /// Forgets contexts unanswered for [`READ_CONTEXT_TTL_MS`]; their
    /// readers are dropped unanswered.
    pub fn expire(&mut self, now_ms: u64) {
        self.issued.retain(|_, i| now_ms.saturating_sub(i.at_ms) < READ_CONTEXT_TTL_MS);
    }

    fn ready_at(&mut self, index: u64, applied: u64, waiters: Vec<W>, out: &mut Vec<ReadEffect<W>>) {
        if index <= applied {
            out.extend(waiters.into_iter().map(|waiter| ReadEffect::Complete { index, waiter }));
        } else {
            self.ready.entry(index).or_default().extend(waiters);
        }
    }
}

#[cfg(test)]
mod tests;

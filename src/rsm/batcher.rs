//! Which proposals go into this node's next Raft entry, and when: a
//! sans-I/O core. The driver hands it proposals, its entries' fates and
//! the monotonic time `now_us`; it answers with batches to propose and
//! the deadline to wake it at. It reads no clock and does no I/O.
//!
//! * **One own entry in flight** ([`MAX_OWN_ENTRIES_IN_FLIGHT`]): while it
//!   is, proposals wait in the driver's queue and go out together as the
//!   next entry (Nagle's idea, for Raft): an idle node proposes at once, a
//!   busy one batches, one entry and one fsync per round.
//! * **Fill target.** When an own entry is applied, the next waits (at
//!   most [`FILL_LINGER_US`]) until it holds [`FILL_TARGET_PERCENT`] of the
//!   commands that were in flight or queued then: the clients just
//!   answered come back within a round trip, and one entry for all of them
//!   costs one round instead of two.
//! * **Bounds.** Held proposals never exceed [`MAX_ENTRY_COMMANDS`]; the
//!   driver closes an entry at the first command that brings it to
//!   [`MAX_ENTRY_BYTES`] ([`EntryBytes`]), order preserved.
//! * **Timers.** An own entry not applied within [`OWN_ENTRY_LOST_MS`] is
//!   presumed lost and stops holding back new ones; a node that proposed
//!   nothing for [`STAMP_EVERY_MS`] proposes an empty entry (its stamp
//!   keeps log time moving, see `state_machine`'s docs).

/// Commands folded into one Raft entry at most.
pub const MAX_ENTRY_COMMANDS: usize = 4096;
/// Payload bytes at which an entry is closed: the command that reaches it
/// is the entry's last (so an entry exceeds it by less than one command,
/// and a single larger command goes alone).
pub const MAX_ENTRY_BYTES: usize = 4 * 1024 * 1024;
/// Entries this node proposed that are not applied yet, at most.
pub const MAX_OWN_ENTRIES_IN_FLIGHT: usize = 1;
/// How long the next own entry waits at most for its fill target.
pub const FILL_LINGER_US: u64 = 1_000;
pub const FILL_TARGET_PERCENT: usize = 75;
/// A node that proposed nothing for this long proposes an empty entry, so
/// its clock keeps vouching for the state machine's log time (see
/// `state_machine`'s module docs).
pub const STAMP_EVERY_MS: u64 = 1_000;
/// An own entry not applied after this is presumed lost (a proposal
/// forwarded to a leader that died) and stops holding back new ones.
pub const OWN_ENTRY_LOST_MS: u64 = 500;

/// The commands the next own entry waits for, when `waiting` commands were
/// in flight or queued as the previous one was applied: at least one (an
/// idle node proposes at once), at most [`MAX_ENTRY_COMMANDS`].
pub fn fill_target_for(waiting: usize) -> usize {
    (waiting * FILL_TARGET_PERCENT).div_ceil(100).clamp(1, MAX_ENTRY_COMMANDS)
}

/// Counts the payload of the entry being built; see [`MAX_ENTRY_BYTES`].
#[derive(Debug, Default)]
pub struct EntryBytes {
    bytes: usize,
}

impl EntryBytes {
    /// Adds a command of `bytes`; true when the entry must close after it
    /// (the count starts again for the next).
    pub fn closes_after(&mut self, bytes: usize) -> bool {
        self.bytes += bytes;
        if self.bytes >= MAX_ENTRY_BYTES {
            self.bytes = 0;
            return true;
        }
        false
    }
}

/// See the module docs. `P` is a proposal (the driver's, or a number in tests).
#[derive(Debug)]
pub struct ProposalBatcher<P> {
    /// Proposals received, waiting for the next entry.
    held: Vec<P>,
    fill_target: usize,
    /// When `held` goes out even short of the fill target.
    linger_until_us: Option<u64>,
    /// Own entries proposed and not applied (nor presumed lost).
    own_in_flight: usize,
    /// Commands in the own entries proposed since the fill target was last set.
    own_in_flight_commands: usize,
    /// When the oldest own entry in flight was proposed (or the last applied).
    own_in_flight_since_us: Option<u64>,
    last_proposed_us: u64,
}

impl<P> ProposalBatcher<P> {
    /// A batcher created at `now_us` (which counts as a proposal for
    /// [`STAMP_EVERY_MS`]).
    pub fn new(now_us: u64) -> Self {
        ProposalBatcher {
            held: Vec::new(),
            fill_target: 1,
            linger_until_us: None,
            own_in_flight: 0,
            own_in_flight_commands: 0,
            own_in_flight_since_us: None,
            last_proposed_us: now_us,
        }
    }

    /// Whether the driver should take proposals from its queue now.
    pub fn accepting(&self) -> bool {
        self.own_in_flight < MAX_OWN_ENTRIES_IN_FLIGHT
    }

    /// How many more proposals may be held.
    pub fn room(&self) -> usize {
        MAX_ENTRY_COMMANDS - self.held.len()
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// When the driver must call [`Self::on_linger`].
    pub fn linger_until_us(&self) -> Option<u64> {
        self.linger_until_us
    }

    /// Proposals taken from the queue (at most [`Self::room`]). Returns the
    /// batch to propose now when the fill target is reached; otherwise they
    /// are held until it is or the linger deadline passes.
    pub fn offer(&mut self, now_us: u64, proposals: impl IntoIterator<Item = P>) -> Option<Vec<P>> {
        self.held.extend(proposals);
        assert!(self.held.len() <= MAX_ENTRY_COMMANDS, "held proposals over their bound");
        // fill_target <= MAX_ENTRY_COMMANDS: a full batch always goes.
        if self.held.len() >= self.fill_target {
            self.linger_until_us = None;
            return Some(std::mem::take(&mut self.held));
        }
        if self.linger_until_us.is_none() && !self.held.is_empty() {
            self.linger_until_us = Some(now_us + FILL_LINGER_US);
        }
        None
    }

    /// The linger deadline passed: what is held goes now.
    pub fn on_linger(&mut self) -> Vec<P> {
        self.linger_until_us = None;
        std::mem::take(&mut self.held)
    }

    /// The driver proposed an own entry of `commands` commands at `now_us`;
    /// `accepted` when Raft took it.
    pub fn proposed(&mut self, now_us: u64, commands: usize, accepted: bool) {
        self.last_proposed_us = now_us;
        if accepted {
            self.own_in_flight += 1;
            self.own_in_flight_commands += commands;
            self.own_in_flight_since_us.get_or_insert(now_us);
        }
    }

    /// `own` of this node's entries were applied at `now_us`.
    pub fn applied_own(&mut self, now_us: u64, own: usize) {
        if own > 0 {
            self.own_in_flight = self.own_in_flight.saturating_sub(own);
            self.own_in_flight_since_us = (self.own_in_flight > 0).then_some(now_us);
        }
    }

    /// After each driver turn: once no own entry is in flight, the next
    /// aims at most of the clients that were waiting (those of the entries
    /// just done, the held ones and `queued` in the driver's channel).
    pub fn after_turn(&mut self, queued: usize) {
        if self.own_in_flight == 0 && self.own_in_flight_commands > 0 {
            self.fill_target = fill_target_for(self.own_in_flight_commands + self.held.len() + queued);
            self.own_in_flight_commands = 0;
        }
        debug_assert!(self.held.is_empty() || self.linger_until_us.is_some(), "held proposals always have a deadline");
    }

    /// A new term: own entries of older terms may never be applied.
    pub fn on_term_change(&mut self) {
        self.own_in_flight = 0;
        self.own_in_flight_since_us = None;
    }

    /// A Raft tick at `now_us`: gives up on a lost own entry; returns true
    /// when an empty entry should be proposed to carry this node's stamp.
    pub fn on_tick(&mut self, now_us: u64, leader_known: bool) -> bool {
        if self.own_in_flight_since_us.is_some_and(|t| now_us.saturating_sub(t) >= OWN_ENTRY_LOST_MS * 1000) {
            self.own_in_flight = 0;
            self.own_in_flight_since_us = None;
        }
        self.held.is_empty()
            && self.own_in_flight == 0
            && leader_known
            && now_us.saturating_sub(self.last_proposed_us) >= STAMP_EVERY_MS * 1000
    }
}

#[cfg(test)]
mod tests;

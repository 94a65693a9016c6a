//! Nemeses: the faults the harness injects into a running cluster, and
//! their heals.
//!
//! | kind        | fault                                          | heal                          |
//! |-------------|------------------------------------------------|-------------------------------|
//! | `kill`      | kill -9 a random minority of nodes             | restart them (same data)      |
//! | `pause`     | SIGSTOP a random minority of nodes             | SIGCONT                       |
//! | `partition` | cut links with nftables: isolate one node, majority/minority split, or bridge | delete the rules |
//! | `clock`     | offset the HLC source of random nodes (admin RPC) | offsets back to 0          |
//! | `membership` | remove a member from the cluster, kill it, delete its data | a new node joins on its address, is added as a learner and promoted |
//! | `kill-isr`  | (topic workload) SIGSTOP a follower of a partition until it leaves the ISR | kill -9 the ISR, SIGCONT the follower, let the controller elect, restart the ISR |
//!
//! Planning is separate from doing: [`Fault`]s are chosen by pure functions
//! of a seeded RNG ([`pick_minority`], [`partition::plan_random`],
//! [`clock::plan`]), laid out in time by [`schedule::plan`], and only then
//! applied by the [`driver`], so a seed reproduces the same faults at the
//! same offsets and the planning is tested without processes. (`kill-isr`
//! is planned as a number only; which partition and nodes it acts on is
//! read from the topic's metadata when it starts, by [`kill_isr::choose`].)
//!
//! Why a minority for kill and pause: the quorum and linearizable levels
//! stay available with a majority, so faults within a minority test their
//! safety *and* that they keep serving. Every partition plan likewise
//! leaves some majority of nodes fully connected.

pub mod clock;
pub mod driver;
pub mod kill;
pub mod kill_isr;
pub mod membership;
pub mod nft;
pub mod partition;
pub mod pause;
pub mod schedule;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use rand::seq::SliceRandom;
use rand::Rng;

use crate::cluster::{ClusterError, NodeId};
pub use partition::Partition;

/// Which kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NemesisKind {
    /// kill -9 and restart.
    Kill,
    /// SIGSTOP and SIGCONT.
    Pause,
    /// Network partitions between node addresses.
    Partition,
    /// Clock skew.
    Clock,
    /// Replace a member: remove it, then add a new node in its place (see
    /// [`membership`]).
    Membership,
    /// Topic workload: a follower falls out of a partition's ISR, then
    /// the ISR is killed (see [`kill_isr`]).
    KillIsr,
}

impl NemesisKind {
    /// Every kind, in the order the CLI lists them.
    pub const ALL: [NemesisKind; 6] = [
        NemesisKind::Kill,
        NemesisKind::Pause,
        NemesisKind::Partition,
        NemesisKind::Clock,
        NemesisKind::Membership,
        NemesisKind::KillIsr,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            NemesisKind::Kill => "kill",
            NemesisKind::Pause => "pause",
            NemesisKind::Partition => "partition",
            NemesisKind::Clock => "clock",
            NemesisKind::Membership => "membership",
            NemesisKind::KillIsr => "kill-isr",
        }
    }

    /// Whether the kind acts on a topic (and so needs the topic workload).
    pub fn needs_topic(self) -> bool {
        self == NemesisKind::KillIsr
    }

    /// Whether the kind cuts links (and so needs nftables).
    pub fn needs_firewall(self) -> bool {
        self == NemesisKind::Partition
    }

    /// Parses `kill,pause,partition,clock,membership,kill-isr` (any subset, any order) or
    /// `none`. Duplicates are folded; the result is sorted.
    pub fn parse_list(text: &str) -> Result<Vec<NemesisKind>, String> {
        let text = text.trim();
        if text == "none" {
            return Ok(Vec::new());
        }
        let mut kinds = BTreeSet::new();
        for part in text.split(',').map(str::trim) {
            kinds.insert(part.parse::<NemesisKind>()?);
        }
        Ok(kinds.into_iter().collect())
    }
}

impl fmt::Display for NemesisKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for NemesisKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NemesisKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            format!(
                "unknown nemesis {s:?}: expected a comma-separated list of kill, pause, partition, clock, membership, kill-isr, or none"
            )
        })
    }
}

/// One planned fault, with its targets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// kill -9 these nodes.
    Kill {
        /// The targets.
        nodes: BTreeSet<NodeId>,
    },
    /// SIGSTOP these nodes.
    Pause {
        /// The targets.
        nodes: BTreeSet<NodeId>,
    },
    /// Cut these links.
    Partition(Partition),
    /// Offset these nodes' clocks.
    Clock {
        /// Offset per node, in ms (non-zero).
        offsets_ms: BTreeMap<NodeId, i64>,
    },
    /// Remove the member in slot `pick mod N`, then (heal) add a new node
    /// in its place ([`membership`]).
    Membership {
        /// Chooses the slot.
        pick: u32,
    },
    /// Pause a follower until it leaves the ISR, then kill the ISR; the
    /// partition and nodes are chosen from the metadata by `pick` when the
    /// fault starts ([`kill_isr::choose`]).
    KillIsr {
        /// Chooses the partition (`pick mod P` first) and the follower.
        pick: u32,
    },
}

impl Fault {
    /// Which kind of fault this is.
    pub fn kind(&self) -> NemesisKind {
        match self {
            Fault::Kill { .. } => NemesisKind::Kill,
            Fault::Pause { .. } => NemesisKind::Pause,
            Fault::Partition(_) => NemesisKind::Partition,
            Fault::Clock { .. } => NemesisKind::Clock,
            Fault::Membership { .. } => NemesisKind::Membership,
            Fault::KillIsr { .. } => NemesisKind::KillIsr,
        }
    }

    /// Plans a fault of `kind` on `nodes`.
    pub fn plan(kind: NemesisKind, nodes: &[NodeId], rng: &mut impl Rng) -> Fault {
        match kind {
            NemesisKind::Kill => Fault::Kill { nodes: pick_minority(nodes, rng) },
            NemesisKind::Pause => Fault::Pause { nodes: pick_minority(nodes, rng) },
            NemesisKind::Partition => Fault::Partition(partition::plan_random(nodes, rng)),
            NemesisKind::Clock => Fault::Clock { offsets_ms: clock::plan(nodes, rng) },
            NemesisKind::Membership => Fault::Membership { pick: rng.random() },
            NemesisKind::KillIsr => Fault::KillIsr { pick: rng.random() },
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill { nodes } => write!(f, "kill -9 {}", node_list(nodes)),
            Fault::Pause { nodes } => write!(f, "SIGSTOP {}", node_list(nodes)),
            Fault::Partition(p) => write!(f, "partition {p}"),
            Fault::Clock { offsets_ms } => {
                let parts: Vec<String> = offsets_ms.iter().map(|(id, ms)| format!("n{id} {ms:+} ms")).collect();
                write!(f, "clock skew {}", parts.join(", "))
            }
            Fault::Membership { pick } => write!(f, "membership: replace a member (pick {pick})"),
            Fault::KillIsr { pick } => write!(f, "kill-isr (pick {pick})"),
        }
    }
}

/// `n1, n3`.
pub fn node_list<'a>(nodes: impl IntoIterator<Item = &'a NodeId>) -> String {
    nodes.into_iter().map(|id| format!("n{id}")).collect::<Vec<_>>().join(", ")
}

/// The largest minority of `n` nodes, at least 1: ⌊(n-1)/2⌋ ∨ 1.
pub fn minority_size(n: usize) -> usize {
    (n.saturating_sub(1) / 2).max(1)
}

/// A random non-empty set of at most [`minority_size`] nodes.
pub fn pick_minority(nodes: &[NodeId], rng: &mut impl Rng) -> BTreeSet<NodeId> {
    assert!(!nodes.is_empty(), "no nodes to pick from");
    let count = rng.random_range(1..=minority_size(nodes.len()));
    let mut shuffled = nodes.to_vec();
    shuffled.shuffle(rng);
    shuffled.into_iter().take(count).collect()
}

/// Why a fault could not be applied or healed.
#[derive(Debug, thiserror::Error)]
pub enum NemesisError {
    /// Starting, stopping or signalling a node failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// nftables refused a change.
    #[error(transparent)]
    Firewall(#[from] nft::FirewallError),
    /// The clock-skew admin RPC failed.
    #[error("clock skew on node {id}: {message}")]
    Clock {
        /// The node.
        id: NodeId,
        /// What went wrong.
        message: String,
    },
    /// A partition was planned but the run has no firewall.
    #[error("a partition needs nftables, but the run was started without partitions")]
    NoFirewall,
    /// A topic fault was planned but the run has no topic.
    #[error("the kill-isr nemesis needs the topic workload")]
    NoTopic,
    /// The topic's metadata could not be read.
    #[error("topic: {0}")]
    Topic(String),
    /// A membership change failed (not refused: failed, or its outcome is
    /// unknown).
    #[error("membership change: {0}")]
    Membership(String),
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    // Proves: the CLI's nemesis list parses any subset (sorted, deduplicated)
    // and `none`, and names an unknown kind in its error.
    #[test]
    fn parses_nemesis_lists() {
        assert_eq!(NemesisKind::parse_list("none").unwrap(), vec![]);
        assert_eq!(
            NemesisKind::parse_list("partition,kill,partition").unwrap(),
            vec![NemesisKind::Kill, NemesisKind::Partition]
        );
        assert_eq!(
            NemesisKind::parse_list("kill,pause,partition,clock,membership,kill-isr").unwrap(),
            NemesisKind::ALL.to_vec()
        );
        let e = NemesisKind::parse_list("kill,flood").unwrap_err();
        assert!(e.contains("\"flood\""), "{e}");
    }

    // Proves: kill and pause targets are a non-empty minority of the nodes,
    // and every minority size occurs.
    #[test]
    fn minority_targets() {
        assert_eq!([1, 2, 3, 4, 5, 7].map(minority_size), [1, 1, 1, 1, 2, 3]);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let nodes = [1, 2, 3, 4, 5];
        let mut sizes = BTreeSet::new();
        for _ in 0..200 {
            let picked = pick_minority(&nodes, &mut rng);
            assert!(!picked.is_empty() && picked.len() <= 2, "{picked:?}");
            assert!(picked.iter().all(|id| nodes.contains(id)));
            sizes.insert(picked.len());
        }
        assert_eq!(sizes, BTreeSet::from([1, 2]));
    }
}

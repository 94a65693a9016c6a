//! Partition planning: which node-to-node links to cut. Pure (a seeded RNG
//! in, a [`Partition`] out); [`super::nft`] turns the plan into rules.
//!
//! Three shapes, as in Jepsen's partition nemeses:
//! - **isolate one**: one node loses every link; the others stay connected;
//! - **majority/minority**: a random minority ([`super::minority_size`])
//!   on one side, the rest on the other;
//! - **bridge**: two halves that cannot talk, and one node in the middle
//!   that talks to both (so each half plus the bridge is a majority, and
//!   the two majorities overlap only in the bridge: a good test of "a
//!   majority" meaning "the same majority").
//!
//! Links are undirected: a cut link drops traffic both ways. Every plan
//! leaves some majority fully connected.

use std::collections::BTreeSet;
use std::fmt;

use rand::seq::SliceRandom;
use rand::Rng;

use super::{minority_size, node_list};
use crate::cluster::NodeId;

/// The shape of a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PartitionKind {
    /// One node alone.
    IsolateOne,
    /// A minority against a majority.
    MajorityMinority,
    /// Two halves joined only through one node.
    Bridge,
}

impl PartitionKind {
    /// Every shape.
    pub const ALL: [PartitionKind; 3] =
        [PartitionKind::IsolateOne, PartitionKind::MajorityMinority, PartitionKind::Bridge];

    /// The shapes possible on `n` nodes: none below 2, only isolation on 2
    /// (where it is also the majority/minority split), all from 3.
    pub fn possible(n: usize) -> &'static [PartitionKind] {
        match n {
            0 | 1 => &[],
            2 => &[PartitionKind::IsolateOne],
            _ => &PartitionKind::ALL,
        }
    }

    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            PartitionKind::IsolateOne => "isolate-one",
            PartitionKind::MajorityMinority => "majority-minority",
            PartitionKind::Bridge => "bridge",
        }
    }
}

/// An undirected link between two nodes; `a < b`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Link {
    /// The smaller node id.
    pub a: NodeId,
    /// The larger node id.
    pub b: NodeId,
}

impl Link {
    /// The link between `x` and `y` (in either order); they must differ.
    pub fn new(x: NodeId, y: NodeId) -> Link {
        assert_ne!(x, y, "a link joins two different nodes");
        Link { a: x.min(y), b: x.max(y) }
    }
}

/// A planned partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// Its shape.
    pub kind: PartitionKind,
    /// The groups that cannot talk to each other (two of them), smaller
    /// first. The bridge node is in neither.
    pub sides: [BTreeSet<NodeId>; 2],
    /// For [`PartitionKind::Bridge`]: the node that talks to both sides.
    pub bridge: Option<NodeId>,
    /// The links to cut: every pair with one node on each side.
    pub cut: BTreeSet<Link>,
}

impl Partition {
    /// Whether `x` and `y` can talk under this partition.
    pub fn connected(&self, x: NodeId, y: NodeId) -> bool {
        x == y || !self.cut.contains(&Link::new(x, y))
    }

    fn from_sides(
        kind: PartitionKind,
        left: BTreeSet<NodeId>,
        right: BTreeSet<NodeId>,
        bridge: Option<NodeId>,
    ) -> Self {
        assert!(!left.is_empty() && !right.is_empty(), "both sides of a partition have nodes");
        assert!(left.is_disjoint(&right));
        let cut = left.iter().flat_map(|&l| right.iter().map(move |&r| Link::new(l, r))).collect();
        let sides = if left.len() <= right.len() { [left, right] } else { [right, left] };
        Partition { kind, sides, bridge, cut }
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [left, right] = &self.sides;
        write!(f, "{}: {{{}}} | {{{}}}", self.kind.name(), node_list(left), node_list(right))?;
        if let Some(bridge) = self.bridge {
            write!(f, ", bridged by n{bridge}")?;
        }
        Ok(())
    }
}

/// Plans a partition of `kind` over `nodes` (at least 2; at least 3 for a
/// bridge).
pub fn plan(kind: PartitionKind, nodes: &[NodeId], rng: &mut impl Rng) -> Partition {
    assert!(
        PartitionKind::possible(nodes.len()).contains(&kind),
        "no {} partition of {} nodes",
        kind.name(),
        nodes.len()
    );
    let mut shuffled = nodes.to_vec();
    shuffled.shuffle(rng);
    match kind {
        PartitionKind::IsolateOne => {
            let rest = shuffled.split_off(1);
            Partition::from_sides(kind, shuffled.into_iter().collect(), rest.into_iter().collect(), None)
        }
        PartitionKind::MajorityMinority => {
            let majority = shuffled.split_off(minority_size(nodes.len()));
            Partition::from_sides(kind, shuffled.into_iter().collect(), majority.into_iter().collect(), None)
        }
        PartitionKind::Bridge => {
            let bridge = shuffled.pop().expect("at least 3 nodes");
            let right = shuffled.split_off(shuffled.len() / 2);
            Partition::from_sides(kind, shuffled.into_iter().collect(), right.into_iter().collect(), Some(bridge))
        }
    }
}

/// Plans a partition of a random shape possible on `nodes` (at least 2).
pub fn plan_random(nodes: &[NodeId], rng: &mut impl Rng) -> Partition {
    let kinds = PartitionKind::possible(nodes.len());
    assert!(!kinds.is_empty(), "a partition needs at least 2 nodes");
    let kind = kinds[rng.random_range(0..kinds.len())];
    plan(kind, nodes, rng)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn nodes(n: u32) -> Vec<NodeId> {
        (1..=n).collect()
    }

    /// Nodes whose links to every other node of `group` are intact.
    fn fully_connected(p: &Partition, group: &[NodeId]) -> bool {
        group.iter().all(|&x| group.iter().all(|&y| p.connected(x, y)))
    }

    /// Some majority of `all` is fully connected.
    fn has_connected_majority(p: &Partition, all: &[NodeId]) -> bool {
        let majority = all.len() / 2 + 1;
        let mut candidates: Vec<Vec<NodeId>> = p.sides.iter().map(|s| s.iter().copied().collect()).collect();
        if let Some(b) = p.bridge {
            for c in &mut candidates {
                c.push(b);
            }
        }
        candidates.iter().any(|c| c.len() >= majority && fully_connected(p, c))
    }

    // Proves: "isolate one" cuts exactly the n-1 links of one node, which
    // then talks to nobody while the rest stay fully connected.
    #[test]
    fn isolate_one_cuts_one_node_off() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for n in [2, 3, 5] {
            let all = nodes(n);
            let p = plan(PartitionKind::IsolateOne, &all, &mut rng);
            assert_eq!(p.sides[0].len(), 1, "{p}");
            let alone = *p.sides[0].first().unwrap();
            assert_eq!(p.cut.len(), n as usize - 1);
            assert!(all.iter().all(|&x| x == alone || !p.connected(alone, x)));
            let rest: Vec<NodeId> = all.iter().copied().filter(|&x| x != alone).collect();
            assert!(fully_connected(&p, &rest));
        }
    }

    // Proves: majority/minority puts minority_size nodes on the small side and
    // cuts exactly the links across (|minority| × |majority| of them).
    #[test]
    fn majority_minority_cuts_across() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for (n, minority) in [(3, 1), (4, 1), (5, 2), (7, 3)] {
            let all = nodes(n);
            let p = plan(PartitionKind::MajorityMinority, &all, &mut rng);
            assert_eq!((p.sides[0].len(), p.sides[1].len()), (minority, n as usize - minority), "{p}");
            assert_eq!(p.cut.len(), minority * (n as usize - minority));
            for x in &p.sides[0] {
                for y in &p.sides[1] {
                    assert!(!p.connected(*x, *y));
                }
            }
            assert!(has_connected_majority(&p, &all), "{p}");
        }
    }

    // Proves: a bridge partition keeps the bridge node connected to everyone
    // and cuts every link between the two (non-empty) halves.
    #[test]
    fn bridge_joins_two_halves_through_one_node() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for n in [3, 4, 5] {
            let all = nodes(n);
            let p = plan(PartitionKind::Bridge, &all, &mut rng);
            let bridge = p.bridge.expect("a bridge");
            assert!(!p.sides[0].contains(&bridge) && !p.sides[1].contains(&bridge));
            assert_eq!(p.sides[0].len() + p.sides[1].len() + 1, n as usize);
            assert!(all.iter().all(|&x| p.connected(bridge, x)), "{p}");
            for x in &p.sides[0] {
                for y in &p.sides[1] {
                    assert!(!p.connected(*x, *y));
                }
            }
            assert!(has_connected_majority(&p, &all), "{p}");
        }
        let p = plan(PartitionKind::Bridge, &nodes(3), &mut rng);
        assert_eq!(p.cut.len(), 1, "3 nodes: one cut link, {p}");
    }

    // Proves: planning is a pure function of the seed (same seed, same plans)
    // and, over seeds, every shape and every node's isolation occurs; links
    // are symmetric.
    #[test]
    fn planning_is_deterministic_and_covers_every_shape() {
        let all = nodes(5);
        let run = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..20).map(|_| plan_random(&all, &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
        let mut kinds = BTreeMap::new();
        let mut isolated = BTreeSet::new();
        for p in (0..10).flat_map(run) {
            *kinds.entry(p.kind).or_insert(0) += 1;
            if p.kind == PartitionKind::IsolateOne {
                isolated.insert(*p.sides[0].first().unwrap());
            }
            for x in &all {
                for y in &all {
                    assert_eq!(p.connected(*x, *y), p.connected(*y, *x));
                }
            }
            assert!(has_connected_majority(&p, &all), "{p}");
        }
        assert_eq!(kinds.len(), 3, "{kinds:?}");
        assert_eq!(isolated, all.iter().copied().collect());
    }

    // Proves: the description names the sides and the bridge.
    #[test]
    fn describes_itself() {
        let p = Partition::from_sides(PartitionKind::Bridge, BTreeSet::from([3]), BTreeSet::from([1]), Some(2));
        assert_eq!(p.to_string(), "bridge: {n3} | {n1}, bridged by n2");
        assert_eq!(p.cut, BTreeSet::from([Link::new(3, 1)]));
    }
}

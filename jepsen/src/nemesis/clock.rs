//! The clock nemesis: skew the hybrid logical clocks of some nodes.
//!
//! capkv stamps every write with a version from its HLC, whose physical
//! part is the wall clock plus an offset that the `Admin.SetClockOffset`
//! RPC sets (DESIGN §1, "injectable edges"). A node whose clock runs ahead
//! hands out versions from the future, so last-writer-wins may keep its
//! write over a later one; a node behind may see its writes lose. The
//! levels must stay correct anyway (the eventual level still converges;
//! quorum and Raft never order by wall clock).
//!
//! Offsets are chosen among [`OFFSETS_MS`] (both signs), some below and
//! some above capkv's default peer drift bound (500 ms), up to an hour:
//! long jumps are what once let one fast node expire every client session
//! (the Raft state machine's log time now follows a majority of clocks).
//! Jumps of [`LONG_OFFSET_MS`] or more hit a minority of the nodes only (so
//! never the one node of a one-node cluster): a
//! majority of clocks an hour off is outside the fault model (log time
//! follows a majority by design). Heal sets them back to 0. A restarted
//! node starts at 0 on its own.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use capkv::client::ClientTls;
use capkv::proto::admin_client::AdminClient;
use capkv::proto::SetClockOffsetRequest;
use rand::seq::SliceRandom;
use rand::Rng;

use super::NemesisError;
use crate::cluster::{Cluster, NodeId};

/// Offset magnitudes the nemesis picks from, in ms.
pub const OFFSETS_MS: [i64; 6] = [250, 1_000, 10_000, 60_000, 900_000, 3_600_000];
/// Offsets at least this long go to a minority of the nodes only.
pub const LONG_OFFSET_MS: i64 = 900_000;
/// Deadline of one admin call.
pub const ADMIN_TIMEOUT_MS: u64 = 2_000;

/// Offsets for a random non-empty subset of `nodes`: each a random
/// magnitude from [`OFFSETS_MS`] with a random sign.
pub fn plan(nodes: &[NodeId], rng: &mut impl Rng) -> BTreeMap<NodeId, i64> {
    assert!(!nodes.is_empty(), "no nodes to skew");
    let count = rng.random_range(1..=nodes.len());
    // A true minority: none of a one-node cluster (its clock is the majority).
    let long_ok = count <= (nodes.len() - 1) / 2;
    let magnitudes: Vec<i64> = OFFSETS_MS.into_iter().filter(|&ms| long_ok || ms < LONG_OFFSET_MS).collect();
    let mut shuffled = nodes.to_vec();
    shuffled.shuffle(rng);
    shuffled
        .into_iter()
        .take(count)
        .map(|id| {
            let magnitude = magnitudes[rng.random_range(0..magnitudes.len())];
            (id, if rng.random_bool(0.5) { magnitude } else { -magnitude })
        })
        .collect()
}

/// Sets each node's offset.
pub async fn start(cluster: &Cluster, offsets_ms: &BTreeMap<NodeId, i64>) -> Result<(), NemesisError> {
    for (&id, &offset_ms) in offsets_ms {
        set_offset(id, cluster.peer_addr(id), cluster.peer_tls(), offset_ms).await?;
    }
    Ok(())
}

/// Sets the offset of every running node in `nodes` back to 0.
pub async fn heal(cluster: &Cluster, nodes: impl IntoIterator<Item = NodeId>) -> Result<(), NemesisError> {
    for id in nodes {
        if cluster.is_running(id) {
            set_offset(id, cluster.peer_addr(id), cluster.peer_tls(), 0).await?;
        }
    }
    Ok(())
}

/// Calls `Admin.SetClockOffset` on one node at its peer address (`addr`),
/// over TLS with a CA-signed client certificate when `tls` is given;
/// returns the previous offset.
pub async fn set_offset(
    id: NodeId,
    addr: SocketAddr,
    tls: Option<&ClientTls>,
    offset_ms: i64,
) -> Result<i64, NemesisError> {
    let error = |message: String| NemesisError::Clock { id, message };
    let channel =
        capkv::node::peers::tls_channel(&addr.to_string(), IpAddr::V4(Ipv4Addr::UNSPECIFIED), tls).map_err(error)?;
    let mut admin = AdminClient::new(channel);
    let request = capkv::node::peers::request(SetClockOffsetRequest { offset_ms }, ADMIN_TIMEOUT_MS);
    let reply = capkv::node::peers::call(ADMIN_TIMEOUT_MS, admin.set_clock_offset(request))
        .await
        .map_err(|status| error(format!("{}: {}", status.code(), status.message())))?;
    Ok(reply.previous_offset_ms)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    // Proves: offsets go to a non-empty subset of the nodes, are never 0,
    // come from the documented magnitudes with both signs, and depend only
    // on the seed.
    #[test]
    fn offsets_are_planned_from_the_seed() {
        let nodes = [1, 2, 3];
        let draw = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..50).map(|_| plan(&nodes, &mut rng)).collect::<Vec<_>>()
        };
        let plans = draw(9);
        assert_eq!(plans, draw(9));
        let mut signs = std::collections::BTreeSet::new();
        let mut long = 0;
        for offsets in draw(9).iter().chain(&draw(10)).chain(&draw(11)) {
            assert!(!offsets.is_empty() && offsets.len() <= nodes.len());
            for (id, ms) in offsets {
                assert!(nodes.contains(id));
                assert!(OFFSETS_MS.contains(&ms.abs()), "{ms}");
                signs.insert(ms.signum());
            }
            let jumps = offsets.values().filter(|ms| ms.abs() >= LONG_OFFSET_MS).count();
            assert!(jumps == 0 || offsets.len() <= (nodes.len() - 1) / 2, "{offsets:?}");
            long += jumps;
        }
        assert_eq!(signs, std::collections::BTreeSet::from([-1, 1]));
        assert!(long > 0, "no jump of an hour or 15 minutes in 150 draws");
    }
}

//! `kv cluster status`: every member (the Raft group's, as the first node
//! that answers knows it) with its address and whether it answers.
//! `kv cluster members`: the Raft group's voters and learners, with their
//! client and peer addresses, as the first node that answers knows them.
//! `kv cluster add/promote/remove/replace` change them (`members`).

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use serde_json::json;

use super::{fail, Cli, Output, EXIT_ERROR, EXIT_NO};
use crate::client::Client;
use crate::proto::NodeStatus;

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// List every node: id, address, reachable or not, and what it reports.
    Status,
    /// List the Raft group's members: id, role (voter or learner), leader,
    /// client and peer addresses, and (from the leader) how far each has
    /// replicated the log.
    Members,
    /// Add a node: as a learner first, promoted to voter once it caught up.
    /// Start it with `kv serve --id ID --listen ADDRESS --join ENDPOINTS`
    /// (before or after this command).
    Add(super::members::AddArgs),
    /// Promote a caught-up learner to voter.
    Promote(super::members::IdArgs),
    /// Remove a voter or learner (a leader hands leadership over first).
    Remove(super::members::IdArgs),
    /// Replace a member (usually a dead one) by a new node: add the new
    /// one, promote it, then remove the old one.
    Replace(super::members::ReplaceArgs),
}

const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

fn level_names(s: &NodeStatus) -> String {
    s.levels.iter().filter_map(|&l| crate::level::Level::from_proto(l)).map(|l| l.name()).collect::<Vec<_>>().join(",")
}

pub async fn run(cli: &Cli, cmd: &ClusterCommand) -> ExitCode {
    match cmd {
        ClusterCommand::Status => status(cli).await,
        ClusterCommand::Members => members(cli).await,
        ClusterCommand::Add(a) => super::members::add(cli, a).await,
        ClusterCommand::Promote(a) => super::members::promote_cmd(cli, a).await,
        ClusterCommand::Remove(a) => super::members::remove_cmd(cli, a).await,
        ClusterCommand::Replace(a) => super::members::replace(cli, a).await,
    }
}

async fn members(cli: &Cli) -> ExitCode {
    let client =
        match cli.connect_options().and_then(|o| Client::connect(&cli.endpoints, &o).map_err(|e| e.to_string())) {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
    let r = match client.members(STATUS_TIMEOUT).await {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    match cli.output {
        Output::Json => {
            let members: Vec<_> = r
                .members
                .iter()
                .map(|m| {
                    json!({
                        "id": m.id, "role": m.role, "leader": m.leader,
                        "client_address": m.client_address, "peer_address": m.peer_address,
                        "matched_index": m.matched_index,
                    })
                })
                .collect();
            println!(
                "{}",
                json!({
                    "members": members, "answered_by": r.answered_by,
                    "leader_id": r.leader_id, "commit_index": r.commit_index,
                    "quorum_replicas": r.quorum_replicas.as_ref().map(|q| json!({
                        "epoch": q.epoch, "current": q.current, "next": q.next,
                    })),
                })
            );
        }
        Output::Text => {
            println!("{:<4} {:<8} {:<7} {:<22} {:<22} {:>10}", "ID", "ROLE", "LEADER", "CLIENT", "PEER", "MATCHED");
            for m in &r.members {
                let matched =
                    if r.leader_id as u32 == r.answered_by { m.matched_index.to_string() } else { "-".into() };
                println!(
                    "{:<4} {:<8} {:<7} {:<22} {:<22} {:>10}",
                    m.id,
                    m.role,
                    if m.leader { "yes" } else { "" },
                    m.client_address,
                    m.peer_address,
                    matched
                );
            }
            if let Some(q) = &r.quorum_replicas {
                let next = if q.next.is_empty() { String::new() } else { format!(", changing to {:?}", q.next) };
                println!("quorum replicas: {:?} (epoch {}{next})", q.current, q.epoch);
            }
            println!("(answered by node {}; commit index {})", r.answered_by, r.commit_index);
        }
    }
    ExitCode::SUCCESS
}

async fn status(cli: &Cli) -> ExitCode {
    let entry = match cli.connect_options().and_then(|o| Client::connect(&cli.endpoints, &o).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let first = match entry.any_status(STATUS_TIMEOUT).await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    // The Raft group's members when the node knows them (they follow
    // `kv cluster add/remove`), else the members its --cluster named.
    let listed: Vec<(u32, String)> = match entry.members(STATUS_TIMEOUT).await {
        Ok(r) if !r.members.is_empty() => r.members.iter().map(|m| (m.id, m.client_address.clone())).collect(),
        _ => first.members.iter().map(|m| (m.id, m.address.clone())).collect(),
    };
    let mut rows = Vec::new();
    for (id, address) in &listed {
        let status = match cli
            .connect_options()
            .and_then(|o| Client::connect(std::slice::from_ref(address), &o).map_err(|e| e.to_string()))
        {
            Ok(c) => c.node_status(0, STATUS_TIMEOUT).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        rows.push((*id, address.clone(), status));
    }
    let unreachable = rows.iter().filter(|r| r.2.is_err()).count();
    match cli.output {
        Output::Json => {
            let nodes: Vec<_> = rows
                .iter()
                .map(|(id, addr, s)| match s {
                    Ok(s) => json!({
                        "id": id, "address": addr, "reachable": true,
                        "levels": level_names(s).split(',').filter(|x| !x.is_empty()).collect::<Vec<_>>(),
                        "uptime_ms": s.uptime_ms,
                        "hints_pending": s.hints_pending,
                        "counters": s.counters,
                        "clock_offset_ms": s.clock_offset_ms,
                        "gc_grace_ms": s.gc_grace_ms,
                        "raft": s.raft.as_ref().map(|r| json!({
                            "role": r.role, "term": r.term, "leader": r.leader_id,
                            "commit_index": r.commit_index, "applied_index": r.applied_index,
                            "last_contact_ms": r.last_contact_ms,
                        })),
                    }),
                    Err(e) => json!({"id": id, "address": addr, "reachable": false, "error": e}),
                })
                .collect();
            println!("{}", json!({ "nodes": nodes }));
        }
        Output::Text => {
            println!(
                "{:<4} {:<22} {:<10} {:<28} {:>8} {:>8} {:>10}",
                "ID", "ADDRESS", "REACHABLE", "LEVELS", "HINTS", "IMPOSES", "UPTIME"
            );
            for (id, addr, s) in &rows {
                match s {
                    Ok(s) => {
                        let hints: u64 = s.hints_pending.values().sum();
                        let imposes = s.counters.get("read_imposes").copied().unwrap_or(0);
                        println!(
                            "{:<4} {:<22} {:<10} {:<28} {:>8} {:>8} {:>9}s",
                            id,
                            addr,
                            "yes",
                            level_names(s),
                            hints,
                            imposes,
                            s.uptime_ms / 1000
                        );
                        if let Some(r) = &s.raft {
                            let mut contact: Vec<_> = r.last_contact_ms.iter().collect();
                            contact.sort();
                            let contact: Vec<String> = contact.iter().map(|(p, ms)| format!("{p}:{ms}ms")).collect();
                            println!(
                                "     raft: role={} term={} leader={} commit={} applied={} last-contact=[{}]",
                                r.role,
                                r.term,
                                r.leader_id,
                                r.commit_index,
                                r.applied_index,
                                contact.join(" ")
                            );
                        }
                    }
                    Err(e) => println!("{:<4} {:<22} {:<10} {}", id, addr, "NO", e),
                }
            }
        }
    }
    if unreachable == 0 {
        ExitCode::SUCCESS
    } else if unreachable < rows.len() {
        ExitCode::from(EXIT_NO)
    } else {
        ExitCode::from(EXIT_ERROR)
    }
}

//! `kv topic create|produce|consume|describe|list|delete|reassign` through
//! `capkv::client::topics`. Exit status: 0 ok; 2 errors (for produce: any
//! message that was not acknowledged).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;
use futures::stream::{FuturesOrdered, StreamExt};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use super::{fail, parse_duration, Cli, Output, EXIT_ERROR};
use crate::client::topics::{
    Acks, Consumer, ConsumerOptions, Producer, ProducerOptions, StartFrom, TopicClient, TopicSpec,
};
use crate::proto::TopicInfo;

/// Records a `kv topic produce` keeps unacknowledged at most.
pub const MAX_PRODUCE_IN_FLIGHT: usize = 20_000;
/// Errors printed by `kv topic produce` before it only counts them.
pub const MAX_PRINTED_ERRORS: usize = 10;

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Number of partitions (order is per partition).
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Replicas of each partition, on distinct nodes (at most the node count).
        #[arg(long, default_value_t = 1)]
        replication_factor: u32,
        /// acks=all is refused while fewer replicas are in sync (default min(2, RF)).
        #[arg(long)]
        min_insync: Option<u32>,
        /// Allow electing a leader outside the ISR (can lose acknowledged messages).
        #[arg(long)]
        unclean_leader_election: bool,
        /// Delete messages older than this (ms; default: keep).
        #[arg(long)]
        retention_ms: Option<u64>,
        /// Keep at most this many key+value bytes per partition (default: no limit).
        #[arg(long)]
        retention_bytes: Option<u64>,
        /// A follower not caught up for this long leaves the ISR (ms; default: the nodes').
        #[arg(long)]
        replica_lag_time_max_ms: Option<u64>,
    },
    /// Produce one message per stdin line; exit non-zero if any was not acknowledged.
    Produce {
        name: String,
        /// 0 (no wait), 1 (leader fsynced), all (every in-sync replica).
        #[arg(long, default_value = "all")]
        acks: Acks,
        /// Key of every message (same key, same partition).
        #[arg(long)]
        key: Option<String>,
        /// Send every message to this partition.
        #[arg(long, conflicts_with = "key")]
        partition: Option<u32>,
        /// Give up on a message not acknowledged within this time (retries included).
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        delivery_timeout: Duration,
    },
    /// Print messages, one per line.
    Consume {
        name: String,
        /// Share partitions with the group's other members; commit and resume offsets.
        #[arg(long)]
        group: Option<String>,
        /// Start at the oldest message (when there is no committed offset).
        #[arg(long)]
        from_beginning: bool,
        /// Exit once every partition was read up to its high watermark.
        #[arg(long)]
        exit_at_end: bool,
        /// Only this partition.
        #[arg(long, conflicts_with = "group")]
        partition: Option<u32>,
        /// Exit after this many messages.
        #[arg(long)]
        max_messages: Option<u64>,
    },
    /// Leader, replicas, ISR, high watermark and log end of each partition.
    Describe { name: String },
    /// List topics.
    List,
    /// Delete a topic and its messages.
    Delete { name: String },
    /// Move a partition's replicas to the given nodes (admin role). New
    /// replicas catch up, then the others leave; `describe` shows progress.
    Reassign {
        name: String,
        #[arg(long)]
        partition: u32,
        /// The new replicas, preferred leader first (e.g. 2,3).
        #[arg(long, value_delimiter = ',', required = true)]
        replicas: Vec<u32>,
    },
}

fn client(cli: &Cli) -> Result<Arc<TopicClient>, ExitCode> {
    let opts = cli.connect_options().map_err(fail)?;
    TopicClient::connect(&cli.endpoints, &opts).map(|c| Arc::new(c.with_metadata_timeout(cli.timeout))).map_err(fail)
}

fn topic_json(t: &TopicInfo) -> serde_json::Value {
    let s = t.settings.unwrap_or_default();
    json!({
        "name": t.name,
        "id": t.id,
        "settings": {
            "partitions": s.partitions,
            "replication_factor": s.replication_factor,
            "min_insync_replicas": s.min_insync_replicas,
            "unclean_leader_election": s.unclean_leader_election,
            "retention_ms": s.retention_ms,
            "retention_bytes": s.retention_bytes,
            "replica_lag_time_max_ms": s.replica_lag_time_max_ms,
        },
        "partitions": t.partitions.iter().map(|p| json!({
            "id": p.id,
            "leader": p.leader,
            "replicas": p.replicas,
            "isr": p.isr,
            "leader_epoch": p.leader_epoch,
            "high_watermark": p.high_watermark,
            "log_end_offset": p.log_end_offset,
            "log_start_offset": p.log_start_offset,
            "offsets_known": p.offsets_known,
            "adding_replicas": p.adding_replicas,
            "removing_replicas": p.removing_replicas,
        })).collect::<Vec<_>>(),
    })
}

/// A retention limit for people: 0 means none.
fn limit_text(limit: u64) -> String {
    if limit == 0 {
        "unlimited".to_string()
    } else {
        limit.to_string()
    }
}

fn topic_text(t: &TopicInfo, offsets: bool) -> String {
    let s = t.settings.unwrap_or_default();
    let mut out = format!(
        "Topic: {}  id: {}  partitions: {}  replication-factor: {}  min.insync.replicas: {}  unclean.leader.election: {}  retention.ms: {}  retention.bytes: {}\n",
        t.name,
        t.id,
        s.partitions,
        s.replication_factor,
        s.min_insync_replicas,
        s.unclean_leader_election,
        limit_text(s.retention_ms),
        limit_text(s.retention_bytes)
    );
    for p in &t.partitions {
        out.push_str(&format!(
            "  partition {}  leader {}  replicas {:?}  isr {:?}  leader-epoch {}",
            p.id, p.leader, p.replicas, p.isr, p.leader_epoch
        ));
        if !p.adding_replicas.is_empty() || !p.removing_replicas.is_empty() {
            out.push_str(&format!("  reassigning: adding {:?} removing {:?}", p.adding_replicas, p.removing_replicas));
        }
        if offsets {
            if p.offsets_known {
                out.push_str(&format!(
                    "  high-watermark {}  log-end {}  log-start {}",
                    p.high_watermark, p.log_end_offset, p.log_start_offset
                ));
            } else if p.leader == 0 {
                out.push_str("  (offline: no leader)");
            } else {
                out.push_str("  (leader unreachable)");
            }
        }
        out.push('\n');
    }
    out
}

pub async fn run(cli: &Cli, command: &TopicCommand) -> ExitCode {
    let client = match client(cli) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            min_insync,
            unclean_leader_election,
            retention_ms,
            retention_bytes,
            replica_lag_time_max_ms,
        } => {
            let spec = TopicSpec {
                partitions: *partitions,
                replication_factor: *replication_factor,
                min_insync_replicas: min_insync.unwrap_or(0),
                unclean_leader_election: *unclean_leader_election,
                retention_ms: retention_ms.unwrap_or(0),
                retention_bytes: retention_bytes.unwrap_or(0),
                replica_lag_time_max_ms: replica_lag_time_max_ms.unwrap_or(0),
            };
            match client.create_topic(name, spec).await {
                Ok(t) => {
                    match cli.output {
                        Output::Json => println!("{}", topic_json(&t)),
                        Output::Text => print!("{}", topic_text(&t, false)),
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        TopicCommand::Delete { name } => match client.delete_topic(name).await {
            Ok(()) => {
                if cli.output == Output::Text {
                    println!("deleted topic {name}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        TopicCommand::Reassign { name, partition, replicas } => {
            match client.reassign_partition(name, *partition, replicas).await {
                Ok(t) => {
                    match cli.output {
                        Output::Json => println!("{}", topic_json(&t)),
                        Output::Text => {
                            let p = t.partitions.get(*partition as usize);
                            match p {
                                Some(p) if p.adding_replicas.is_empty() && p.removing_replicas.is_empty() => {
                                    println!("partition {name}/{partition} has replicas {:?}", p.replicas)
                                }
                                Some(p) => println!(
                                    "reassigning {name}/{partition}: adding {:?}, removing {:?}; `kv topic describe {name}` shows progress",
                                    p.adding_replicas, p.removing_replicas
                                ),
                                None => print!("{}", topic_text(&t, false)),
                            }
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        TopicCommand::List => match client.list_topics().await {
            Ok(ts) => {
                match cli.output {
                    Output::Json => println!("{}", json!({"topics": ts.iter().map(topic_json).collect::<Vec<_>>()})),
                    Output::Text => {
                        for t in ts {
                            let s = t.settings.unwrap_or_default();
                            println!(
                                "{}  partitions {}  replication-factor {}",
                                t.name, s.partitions, s.replication_factor
                            );
                        }
                    }
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        TopicCommand::Describe { name } => match client.describe_topic(name).await {
            Ok(t) => {
                match cli.output {
                    Output::Json => println!("{}", topic_json(&t)),
                    Output::Text => print!("{}", topic_text(&t, true)),
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        TopicCommand::Produce { name, acks, key, partition, delivery_timeout } => {
            let opts = ProducerOptions { acks: *acks, delivery_timeout: *delivery_timeout, ..Default::default() };
            match Producer::new(client, name, opts).await {
                Ok(p) => produce(cli, p, key.as_deref(), *partition).await,
                Err(e) => fail(e),
            }
        }
        TopicCommand::Consume { name, group, from_beginning, exit_at_end, partition, max_messages } => {
            let opts = ConsumerOptions {
                group: group.clone(),
                start: if *from_beginning { StartFrom::Earliest } else { StartFrom::Latest },
                partitions: partition.map(|p| vec![p]),
                ..Default::default()
            };
            match Consumer::new(client, name, opts).await {
                Ok(c) => consume(cli, c, *exit_at_end, *max_messages).await,
                Err(e) => fail(e),
            }
        }
    }
}

async fn produce(cli: &Cli, p: Producer, key: Option<&str>, partition: Option<u32>) -> ExitCode {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut in_flight = FuturesOrdered::new();
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut stdout = tokio::io::stdout();
    let mut report = |r: Result<Result<crate::client::topics::RecordMetadata, _>, _>, out: &mut Vec<u8>| match r {
        Ok(Ok(m)) => {
            ok += 1;
            if cli.output == Output::Json {
                let line = json!({"partition": m.partition, "offset": m.offset});
                out.extend_from_slice(format!("{line}\n").as_bytes());
            }
        }
        Ok(Err(e)) => {
            failed += 1;
            if failed as usize <= MAX_PRINTED_ERRORS {
                eprintln!("error: message not acknowledged: {e}");
            }
        }
        Err(_) => {
            failed += 1;
            eprintln!("error: the producer stopped before an answer");
        }
    };
    let mut out = Vec::new();
    loop {
        let line = match lines.next_line().await {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => return fail(format!("cannot read stdin: {e}")),
        };
        let part = partition.unwrap_or_else(|| p.partition_for(key.map(str::as_bytes)));
        match p.enqueue(part, key.map(str::as_bytes), line.as_bytes()) {
            Ok(rx) => in_flight.push_back(rx),
            Err(e) => return fail(e),
        }
        while in_flight.len() >= MAX_PRODUCE_IN_FLIGHT {
            if let Some(r) = in_flight.next().await {
                report(r, &mut out);
            }
        }
        if out.len() > 64 * 1024 {
            let _ = stdout.write_all(&out).await;
            out.clear();
        }
    }
    while let Some(r) = in_flight.next().await {
        report(r, &mut out);
    }
    let _ = stdout.write_all(&out).await;
    let _ = stdout.flush().await;
    if failed > 0 {
        eprintln!("{ok} messages acknowledged, {failed} NOT acknowledged");
        ExitCode::from(EXIT_ERROR)
    } else {
        eprintln!("{ok} messages acknowledged");
        ExitCode::SUCCESS
    }
}

async fn consume(cli: &Cli, mut c: Consumer, exit_at_end: bool, max_messages: Option<u64>) -> ExitCode {
    let mut stdout = tokio::io::stdout();
    let mut count = 0u64;
    let mut errors_in_a_row = 0u32;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let code = loop {
        if exit_at_end && c.at_end() {
            break ExitCode::SUCCESS;
        }
        let recs = tokio::select! {
            _ = &mut interrupted => break ExitCode::SUCCESS,
            r = c.poll() => r,
        };
        let mut recs = match recs {
            Ok(r) => {
                errors_in_a_row = 0;
                r
            }
            Err(e) => {
                errors_in_a_row += 1;
                if errors_in_a_row >= 20 {
                    break fail(e);
                }
                eprintln!("warning: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if let Some(max) = max_messages {
            let keep = (max - count) as usize;
            if recs.len() > keep {
                // Rewind each partition to its first message not printed,
                // so the commit covers exactly what was printed.
                let mut rewind = std::collections::BTreeMap::new();
                for r in &recs[keep..] {
                    rewind.entry(r.partition).or_insert(r.offset);
                }
                for (p, o) in rewind {
                    c.seek(p, o);
                }
                recs.truncate(keep);
            }
        }
        let mut out = Vec::new();
        for r in &recs {
            match cli.output {
                Output::Text => {
                    out.extend_from_slice(&r.value);
                    out.push(b'\n');
                }
                Output::Json => {
                    let line = json!({
                        "partition": r.partition,
                        "offset": r.offset,
                        "key": String::from_utf8_lossy(&r.key),
                        "value": String::from_utf8_lossy(&r.value),
                        "timestamp_ms": r.timestamp_ms,
                    });
                    out.extend_from_slice(format!("{line}\n").as_bytes());
                }
            }
        }
        if stdout.write_all(&out).await.and(stdout.flush().await).is_err() {
            break ExitCode::SUCCESS; // stdout closed (e.g. `| head`)
        }
        count += recs.len() as u64;
        if !recs.is_empty() {
            if let Err(e) = c.commit().await {
                eprintln!("warning: offsets not committed: {e}");
            }
        }
        if max_messages.is_some_and(|m| count >= m) {
            break ExitCode::SUCCESS;
        }
    };
    if let Err(e) = c.commit().await {
        eprintln!("warning: offsets not committed: {e}");
    }
    if let Err(e) = c.close().await {
        eprintln!("warning: could not leave the group: {e}");
    }
    code
}

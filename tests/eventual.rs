//! The eventual level on 3 real processes (issue "Foundation", DESIGN §4):
//! background replication, hinted handoff to a paused node, durability over
//! kill -9 of the whole cluster, anti-entropy when hints are lost, and the
//! coordinator-local CAS.

mod common;

use std::time::Duration;

use capkv::Level;
use common::*;

const E: Level = Level::Eventual;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_on_one_node_is_read_on_another_within_5s() {
    let c = TestCluster::start(3, &[]).await;
    c.client(1).set(b"greeting", b"hello", opts(E)).await.unwrap();
    let n3 = c.client(3);
    eventually(Duration::from_secs(5), "node 3 sees the write", || async {
        n3.get(b"greeting", opts(E)).await.unwrap().filter(|v| &v.value[..] == b"hello")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_node_gets_every_write_after_sigcont() {
    // Hinted handoff: 100 writes while node 3 is SIGSTOPped all reach it
    // within 10 s of SIGCONT.
    let c = TestCluster::start(3, &[]).await;
    c.stop(3);
    let n1 = c.client(1);
    for i in 0..100 {
        n1.set(format!("k{i}").as_bytes(), format!("v{i}").as_bytes(), opts(E)).await.unwrap();
    }
    c.cont(3);
    let n3 = c.client(3);
    eventually(Duration::from_secs(10), "all 100 writes on node 3", || async {
        for i in 0..100 {
            match n3.get(format!("k{i}").as_bytes(), opts(E)).await {
                Ok(Some(v)) if v.value == format!("v{i}").as_bytes() => {}
                _ => return None,
            }
        }
        Some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_every_node_keeps_acknowledged_writes() {
    // An acknowledged eventual write is durable on the node that took it.
    let mut c = TestCluster::start(3, &[]).await;
    let mut acked = Vec::new();
    let mut tasks = Vec::new();
    for node in 1..=3u32 {
        let client = c.client(node);
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in 0..200 {
                let key = format!("n{node}-k{i}");
                if client.set(key.as_bytes(), key.as_bytes(), opts(E)).await.is_ok() {
                    mine.push((node, key));
                }
            }
            mine
        }));
    }
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert_eq!(acked.len(), 600);
    for id in 1..=3 {
        c.kill(id);
    }
    for id in 1..=3 {
        c.restart(id).await;
    }
    for (node, key) in &acked {
        let v = c.client(*node).get(key.as_bytes(), opts(E)).await.unwrap();
        assert_eq!(v.map(|v| v.value.to_vec()), Some(key.as_bytes().to_vec()), "lost {key} on node {node}");
    }
    // And the cluster converges: every node holds every write.
    for id in 1..=3 {
        let client = c.client(id);
        let acked = acked.clone();
        eventually(Duration::from_secs(15), "convergence after restart", || {
            let (client, acked) = (&client, &acked);
            async move {
                for (_, key) in acked {
                    client.get(key.as_bytes(), opts(E)).await.ok()??;
                }
                Some(())
            }
        })
        .await;
    }
}

async fn counter(c: &TestCluster, id: u32, name: &str) -> Option<u64> {
    let st = c.client(id).any_status(Duration::from_secs(1)).await.ok()?;
    Some(st.counters.get(name).copied().unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_entropy_repairs_a_replica_whose_hints_were_lost() {
    // Node 1 keeps no hints (--no-hinted-handoff): a replication batch to the
    // paused node 3 that times out is lost for good. Anti-entropy (digest
    // exchange) must repair node 3 without anyone reading the keys.
    let c = TestCluster::start_with(3, |id| {
        let mut v = vec!["--anti-entropy-interval-ms".to_string(), "300".to_string()];
        if id == 1 {
            v.push("--no-hinted-handoff".to_string());
        }
        v
    })
    .await;
    c.stop(3);
    let n1 = c.client(1);
    for i in 0..50 {
        n1.set(format!("ae{i}").as_bytes(), b"x", opts(E)).await.unwrap();
    }
    // Wait until node 1 gave up on a batch for node 3 (its RPC timed out).
    eventually(Duration::from_secs(20), "node 1 drops a replication batch", || async {
        (counter(&c, 1, "replication_failures").await? > 0).then_some(())
    })
    .await;
    c.cont(3);
    let status = c.client(1).any_status(Duration::from_secs(2)).await.unwrap();
    assert!(status.hints_pending.values().all(|&h| h == 0), "node 1 must keep no hints: {:?}", status.hints_pending);
    // Wait for anti-entropy to repair, then for it to go quiet.
    let repaired = || async {
        Some(
            counter(&c, 3, "anti_entropy_cells_pulled").await?
                + counter(&c, 1, "anti_entropy_cells_pushed").await?
                + counter(&c, 2, "anti_entropy_cells_pushed").await?,
        )
    };
    let mut last = eventually(Duration::from_secs(20), "anti-entropy repairs node 3", || async {
        repaired().await.filter(|&n| n > 0)
    })
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        // Several anti-entropy intervals without new repairs.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let now = repaired().await.expect("status");
        if now == last {
            break;
        }
        last = now;
        assert!(std::time::Instant::now() < deadline, "anti-entropy did not go quiet");
    }
    assert_eq!(counter(&c, 3, "read_repair_cells_fixed").await, Some(0), "read repair must not be what fixed node 3");
    let n3 = c.client(3);
    for i in 0..50 {
        assert!(n3.get(format!("ae{i}").as_bytes(), opts(E)).await.unwrap().is_some(), "ae{i} missing on node 3");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventual_cas_is_atomic_on_its_coordinator() {
    // Concurrent CAS increments through ONE node never lose an update.
    let c = TestCluster::start(3, &[]).await;
    let n1 = std::sync::Arc::new(c.client(1));
    n1.set(b"ctr", b"0", opts(E)).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let n1 = n1.clone();
        tasks.push(tokio::spawn(async move {
            let mut swaps = 0;
            while swaps < 25 {
                let cur = n1.get(b"ctr", opts(E)).await.unwrap().unwrap().value;
                let next = (std::str::from_utf8(&cur).unwrap().parse::<u64>().unwrap() + 1).to_string();
                if n1.cas(b"ctr", Some(&cur), next.as_bytes(), opts(E)).await.unwrap().swapped {
                    swaps += 1;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let v = n1.get(b"ctr", opts(E)).await.unwrap().unwrap();
    assert_eq!(&v.value[..], b"100");
    // A failed compare reports the current value.
    let o = n1.cas(b"ctr", Some(b"7"), b"8", opts(E)).await.unwrap();
    assert!(!o.swapped);
    assert_eq!(&o.current.unwrap().value[..], b"100");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_cleanly_and_restart_keeps_data() {
    let mut c = TestCluster::start(3, &[]).await;
    c.client(2).set(b"k", b"v", opts(E)).await.unwrap();
    // Peers now hold long-lived Raft and quorum streams into node 2: its
    // shutdown must end them rather than wait for them.
    c.client(1).set(b"q", b"v", opts(Level::Quorum)).await.unwrap();
    c.client(3).set(b"l", b"v", opts(Level::Linearizable)).await.unwrap();
    let st = c.terminate(2);
    assert!(st.success(), "exit status {st}; log:\n{}", c.log_tail(2));
    assert!(std::fs::read_to_string(&c.node(2).log).unwrap().contains("stopped"));
    c.restart(2).await;
    assert_eq!(&c.client(2).get(b"k", opts(E)).await.unwrap().unwrap().value[..], b"v");
}

/// Node 3 missed a write for good (it was down, node 1 keeps no hints, and
/// anti-entropy runs once an hour here). With read repair on, an eventual get on node
/// 3 answers from its stale replica at once and repairs it in the
/// background; with `--read-repair-chance 0` the replica stays stale.
async fn stale_replica_after_a_lost_write(chance: &str) -> TestCluster {
    let chance = chance.to_string();
    let c = TestCluster::start_with(3, move |id| {
        let mut v = vec!["--anti-entropy-interval-ms".to_string(), "3600000".to_string()];
        if id == 1 {
            v.push("--no-hinted-handoff".to_string());
        }
        if id == 3 {
            v.extend(["--read-repair-chance".to_string(), chance.clone()]);
        }
        v
    })
    .await;
    // Killed, not paused: a paused node would still take the request that
    // node 1 gave up on from its socket buffer when it resumes.
    let mut c = c;
    c.kill(3);
    c.client(1).set(b"rr", b"fresh", opts(E)).await.unwrap();
    eventually(Duration::from_secs(20), "node 1 drops the replication batch for node 3", || async {
        (counter(&c, 1, "replication_failures").await? > 0).then_some(())
    })
    .await;
    c.restart(3).await;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_repair_fixes_a_stale_replica_after_a_get() {
    let c = stale_replica_after_a_lost_write("1").await;
    let n3 = c.client(3);
    assert!(n3.get(b"rr", opts(E)).await.unwrap().is_none(), "node 3 must have missed the write");
    eventually(Duration::from_secs(10), "read repair brings the write to node 3", || async {
        let cell = n3.get(b"rr", opts(E)).await.ok()??;
        (&cell.value[..] == b"fresh").then_some(())
    })
    .await;
    assert!(counter(&c, 3, "read_repair_cells_fixed").await.unwrap() >= 1);
    assert_eq!(counter(&c, 3, "anti_entropy_cells_pulled").await, Some(0), "anti-entropy must not be what fixed it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_read_repair_with_chance_zero() {
    let c = stale_replica_after_a_lost_write("0").await;
    let n3 = c.client(3);
    for _ in 0..20 {
        assert!(n3.get(b"rr", opts(E)).await.unwrap().is_none(), "nothing may repair node 3");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(counter(&c, 3, "read_repair_rounds").await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_of_large_values_drain_to_a_restarted_node() {
    // Issue 19, item 7: hint replay cut its pages by count only (512
    // cells). 512 hints of 512 KiB are 256 MiB, over the 80 MiB peer
    // message limit, so every replay RPC failed and the hints for the
    // restarted node never drained. Read repair is off, so only hinted
    // handoff (or anti-entropy) can bring node 3 up to date.
    const VALUES: usize = 600;
    const VALUE_BYTES: usize = 512 * 1024;
    let key = |i: usize| format!("big{i:04}");
    // Compressible, so the cluster's disks stay small; the peer message
    // carries the full size.
    let value = |i: usize| key(i).into_bytes().into_iter().cycle().take(VALUE_BYTES).collect::<Vec<u8>>();
    let mut c = TestCluster::start(3, &["--read-repair-chance", "0"]).await;
    c.kill(3);
    let n1 = c.client(1);
    for i in 0..VALUES {
        n1.set(key(i).as_bytes(), &value(i), opts(E)).await.unwrap();
    }
    c.restart(3).await;
    eventually(Duration::from_secs(180), "node 1's hints for node 3 drain", || async {
        let st = c.client(1).node_status(0, Duration::from_secs(2)).await.ok()?;
        (st.hints_pending.get(&3).copied() == Some(0)).then_some(())
    })
    .await;
    for id in [2, 3] {
        let client = c.client(id);
        for i in 0..VALUES {
            let got = client.get(key(i).as_bytes(), opts(E)).await.unwrap();
            assert!(got.is_some_and(|v| v.value == value(i)), "node {id} lacks {}", key(i));
        }
    }
}

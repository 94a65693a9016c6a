//! Cutting links between loopback node addresses with nftables.
//!
//! Each run owns one table, `inet capkv_jepsen_<pid>_<nonce>`, with one
//! chain on the `output` hook (on loopback every packet passes `output`
//! once). A cut link `a–b` becomes rules that drop the traffic of both TCP
//! connections between the two nodes: the one to `b`'s port and the one to
//! `a`'s port (their peer ports, where nodes talk to each other), in both
//! directions. Matching the ports as well as the
//! addresses keeps concurrent runs apart: two runs may both use
//! 127.0.0.11–13, but never the same ports at once. Clients connect from
//! 127.0.0.1 and are never cut.
//!
//! Safety rails:
//! - only IPv4 loopback addresses (127.0.0.0/8) ever appear in a rule;
//! - [`Firewall::cut`] replaces the chain's rules atomically (`nft -f`), so
//!   a partition is never half applied;
//! - the table is deleted by [`Firewall::remove`] and on drop (also while
//!   unwinding from a panic); tables left by runs that were SIGKILLed are
//!   deleted by the next run ([`sweep_stale_tables`]): their name holds the
//!   pid of a process that no longer exists.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use tokio::io::AsyncWriteExt;

/// Prefix of every table the harness creates.
pub const TABLE_PREFIX: &str = "capkv_jepsen_";
/// The chain in that table.
pub const CHAIN: &str = "out";
/// The `nft` binary.
pub const NFT: &str = "nft";
/// Most links one partition may cut (15 nodes have 105 links).
pub const LINKS_MAX: usize = 128;

/// Why nftables could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// `nft` could not be run.
    #[error("cannot run `{NFT}` (partitions need nftables and root; `apt-get install -y nftables`): {0}")]
    Spawn(#[source] io::Error),
    /// `nft` refused the change.
    #[error("`{NFT} {what}` failed ({status}): {stderr}")]
    Refused {
        /// What was asked.
        what: String,
        /// The exit status.
        status: String,
        /// What nft said.
        stderr: String,
    },
    /// A rule would name an address outside 127.0.0.0/8.
    #[error("refusing to cut a link to {0}: partitions only act on IPv4 loopback addresses (127.0.0.0/8)")]
    NotLoopback(SocketAddr),
    /// Too many links.
    #[error("{0} links to cut; at most {LINKS_MAX}")]
    TooManyLinks(usize),
}

/// This run's nftables table; see the module docs.
#[derive(Debug)]
pub struct Firewall {
    table: String,
    installed: bool,
}

impl Firewall {
    /// Deletes tables left by dead runs, then creates this run's table with
    /// an empty chain (nothing cut).
    pub fn install() -> Result<Firewall, FirewallError> {
        sweep_stale_tables()?;
        let table = format!("{TABLE_PREFIX}{}_{:08x}", std::process::id(), rand::random::<u32>());
        let script = format!(
            "add table inet {table}\nadd chain inet {table} {CHAIN} {{ type filter hook output priority 0; policy accept; }}\n"
        );
        nft_script_blocking(&script, "-f - (create table)")?;
        Ok(Firewall { table, installed: true })
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Replaces the current cuts by `links` (each a pair of node addresses);
    /// an empty list heals.
    pub async fn cut(&self, links: &[(SocketAddr, SocketAddr)]) -> Result<(), FirewallError> {
        let script = cut_script(&self.table, links)?;
        let mut child = tokio::process::Command::new(NFT)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(FirewallError::Spawn)?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(script.as_bytes()).await.map_err(FirewallError::Spawn)?;
        drop(stdin);
        let output = child.wait_with_output().await.map_err(FirewallError::Spawn)?;
        check(output, "-f - (cut links)")
    }

    /// Removes every cut.
    pub async fn heal(&self) -> Result<(), FirewallError> {
        self.cut(&[]).await
    }

    /// Deletes the table. Idempotent.
    pub fn remove(&mut self) -> Result<(), FirewallError> {
        if !self.installed {
            return Ok(());
        }
        self.installed = false;
        let output = Command::new(NFT)
            .args(["delete", "table", "inet", &self.table])
            .stdin(Stdio::null())
            .output()
            .map_err(FirewallError::Spawn)?;
        check(output, &format!("delete table inet {}", self.table))
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        // Nothing better to do with an error while dropping; the next run's
        // sweep deletes a table that survives this.
        let _ = self.remove();
    }
}

/// The `nft -f` script that makes `links` the only cuts of `table`.
pub fn cut_script(table: &str, links: &[(SocketAddr, SocketAddr)]) -> Result<String, FirewallError> {
    if links.len() > LINKS_MAX {
        return Err(FirewallError::TooManyLinks(links.len()));
    }
    let mut script = format!("flush chain inet {table} {CHAIN}\n");
    for &(x, y) in links {
        let (SocketAddr::V4(a), SocketAddr::V4(b)) = (x, y) else {
            return Err(FirewallError::NotLoopback(if x.is_ipv4() { y } else { x }));
        };
        for addr in [a, b] {
            if !addr.ip().is_loopback() {
                return Err(FirewallError::NotLoopback(SocketAddr::V4(addr)));
            }
        }
        // The connection a → b:port_b and the connection b → a:port_a, each
        // in both directions.
        let (ia, pa, ib, pb) = (a.ip(), a.port(), b.ip(), b.port());
        for (src, dst, dir, port) in
            [(ia, ib, "dport", pb), (ib, ia, "sport", pb), (ib, ia, "dport", pa), (ia, ib, "sport", pa)]
        {
            script.push_str(&format!(
                "add rule inet {table} {CHAIN} ip saddr {src} ip daddr {dst} tcp {dir} {port} drop\n"
            ));
        }
    }
    Ok(script)
}

/// Deletes every `capkv_jepsen_<pid>_…` table whose pid is not a live
/// process (left by a run that was SIGKILLed). Tables of live runs, and
/// every other table, are left alone.
pub fn sweep_stale_tables() -> Result<Vec<String>, FirewallError> {
    let output =
        Command::new(NFT).args(["list", "tables"]).stdin(Stdio::null()).output().map_err(FirewallError::Spawn)?;
    let listing = String::from_utf8_lossy(&output.stdout).into_owned();
    check(output, "list tables")?;
    let mut deleted = Vec::new();
    for table in stale_tables(&listing, |pid| Path::new(&format!("/proc/{pid}")).exists()) {
        let output = Command::new(NFT)
            .args(["delete", "table", "inet", &table])
            .stdin(Stdio::null())
            .output()
            .map_err(FirewallError::Spawn)?;
        // Another run may have swept it first.
        if output.status.success() {
            deleted.push(table);
        }
    }
    Ok(deleted)
}

/// The harness tables in `nft list tables` output whose pid is not alive.
fn stale_tables(listing: &str, alive: impl Fn(u32) -> bool) -> Vec<String> {
    listing
        .lines()
        .filter_map(|line| line.trim().strip_prefix("table inet "))
        .filter_map(|name| {
            let pid: u32 = name.strip_prefix(TABLE_PREFIX)?.split('_').next()?.parse().ok()?;
            (!alive(pid)).then(|| name.to_string())
        })
        .collect()
}

fn nft_script_blocking(script: &str, what: &str) -> Result<(), FirewallError> {
    use std::io::Write;
    let mut child = Command::new(NFT)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(FirewallError::Spawn)?;
    child.stdin.take().expect("piped stdin").write_all(script.as_bytes()).map_err(FirewallError::Spawn)?;
    let output = child.wait_with_output().map_err(FirewallError::Spawn)?;
    check(output, what)
}

fn check(output: Output, what: &str) -> Result<(), FirewallError> {
    if output.status.success() {
        return Ok(());
    }
    Err(FirewallError::Refused {
        what: what.to_string(),
        status: output.status.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    // Proves: a cut link drops both connections between the two nodes, in
    // both directions, matching addresses and ports; the script starts by
    // flushing (so it replaces the previous cuts) and an empty list heals.
    #[test]
    fn cut_script_drops_both_connections_of_a_link() {
        let script = cut_script("t", &[(addr("127.0.0.11:7001"), addr("127.0.0.12:7002"))]).unwrap();
        assert_eq!(
            script,
            "flush chain inet t out\n\
             add rule inet t out ip saddr 127.0.0.11 ip daddr 127.0.0.12 tcp dport 7002 drop\n\
             add rule inet t out ip saddr 127.0.0.12 ip daddr 127.0.0.11 tcp sport 7002 drop\n\
             add rule inet t out ip saddr 127.0.0.12 ip daddr 127.0.0.11 tcp dport 7001 drop\n\
             add rule inet t out ip saddr 127.0.0.11 ip daddr 127.0.0.12 tcp sport 7001 drop\n"
        );
        assert_eq!(cut_script("t", &[]).unwrap(), "flush chain inet t out\n");
    }

    // Proves: no rule ever names an address outside 127.0.0.0/8.
    #[test]
    fn refuses_non_loopback_addresses() {
        for bad in ["10.0.0.1:1", "[::1]:1", "192.168.1.2:80"] {
            let e = cut_script("t", &[(addr("127.0.0.11:1"), addr(bad))]).unwrap_err();
            assert!(matches!(e, FirewallError::NotLoopback(_)), "{bad}: {e}");
        }
        let many: Vec<_> = (0..=LINKS_MAX).map(|_| (addr("127.0.0.11:1"), addr("127.0.0.12:2"))).collect();
        assert!(matches!(cut_script("t", &many), Err(FirewallError::TooManyLinks(_))));
    }

    // Proves: the sweep picks only harness tables of dead pids.
    #[test]
    fn stale_tables_are_those_of_dead_runs() {
        let listing = "table inet capkv_jepsen_100_0000abcd\n\
                       table inet capkv_jepsen_200_ffff0000\n\
                       table inet capkv_nemesis\n\
                       table ip filter\n\
                       table inet capkv_jepsen_garbage\n";
        assert_eq!(stale_tables(listing, |pid| pid == 200), vec!["capkv_jepsen_100_0000abcd".to_string()]);
    }
}

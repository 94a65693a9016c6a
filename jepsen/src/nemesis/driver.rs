//! Applies planned faults to a running cluster and remembers when each was
//! really active, for the report's shaded windows.
//!
//! The driver owns the knowledge of what is broken right now (the active
//! fault, the nodes whose clocks are skewed), so [`Driver::heal_all`] can
//! put everything right whatever was interrupted: restart dead nodes,
//! resume paused ones, remove every cut, reset clocks.
//!
//! A fault that acts on a topic (`kill-isr`) reads the topic's metadata
//! when it starts; the driver then updates the window's description with
//! what really happened (which partition, which nodes, who was elected).

use std::collections::BTreeSet;
use std::net::SocketAddr;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::kill_isr::{self, TopicTarget};
use super::nft::Firewall;
use super::schedule::{Action, Step};
use super::{clock, kill, membership, pause, Fault, NemesisError, NemesisKind, Partition};
use crate::cluster::{Cluster, NodeId};
use crate::record::RunClock;

/// A fault as it really happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedWindow {
    /// Which kind.
    pub kind: NemesisKind,
    /// What exactly (targets, sides, offsets).
    pub description: String,
    /// When it started, in ns on the run clock.
    pub start_ns: u64,
    /// When its heal finished; `None` if the run ended first.
    pub end_ns: Option<u64>,
    /// For a partition: the plan (sides, bridge, cut links).
    pub partition: Option<Partition>,
}

/// A node that exited without the nemesis killing it: a bug worth a
/// report, whatever the checkers say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crash {
    /// The node.
    pub node: NodeId,
    /// Its exit status.
    pub status: String,
    /// When the driver noticed, in ns on the run clock.
    pub noticed_ns: u64,
}

/// See the module docs.
pub struct Driver<'a> {
    cluster: &'a mut Cluster,
    firewall: Option<&'a Firewall>,
    clock: RunClock,
    topic: Option<&'a TopicTarget>,
    skewed: BTreeSet<NodeId>,
    kill_isr: Option<kill_isr::Active>,
    membership: Option<membership::Active>,
    windows: Vec<AppliedWindow>,
    crashes: Vec<Crash>,
}

impl<'a> Driver<'a> {
    /// A driver for `cluster`; partitions need `firewall`.
    pub fn new(cluster: &'a mut Cluster, firewall: Option<&'a Firewall>, clock: RunClock) -> Self {
        Driver {
            cluster,
            firewall,
            clock,
            topic: None,
            skewed: BTreeSet::new(),
            kill_isr: None,
            membership: None,
            windows: Vec::new(),
            crashes: Vec::new(),
        }
    }

    /// The topic that topic faults (`kill-isr`) act on.
    pub fn with_topic(mut self, topic: &'a TopicTarget) -> Self {
        self.topic = Some(topic);
        self
    }

    /// Nodes that exited by themselves so far.
    pub fn crashes(&self) -> &[Crash] {
        &self.crashes
    }

    /// Notices nodes that exited by themselves since the last look.
    pub fn notice_crashes(&mut self) {
        let noticed_ns = self.clock.now_ns();
        for (node, status) in self.cluster.reap_exited() {
            self.crashes.push(Crash { node, status: status.to_string(), noticed_ns });
        }
    }

    /// The cluster, e.g. to read statuses between steps.
    pub fn cluster(&self) -> &Cluster {
        self.cluster
    }

    /// The faults applied so far.
    pub fn windows(&self) -> &[AppliedWindow] {
        &self.windows
    }

    /// Runs `steps` at their times (ms after `run_start`) until done or
    /// cancelled; `progress` hears about every step. Stops at the first
    /// error: the caller heals what it can and reports the run as unknown.
    pub async fn run(
        &mut self,
        steps: &[Step],
        run_start: Instant,
        cancel: &CancellationToken,
        progress: &(dyn Fn(String) + Sync),
    ) -> Result<(), NemesisError> {
        for step in steps {
            let at = run_start + std::time::Duration::from_millis(step.at_ms);
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                _ = cancel.cancelled() => return Ok(()),
            }
            self.notice_crashes();
            match &step.action {
                Action::Start(fault) => {
                    progress(format!("nemesis: start {fault}"));
                    self.start(fault).await?;
                }
                Action::Heal(fault) => {
                    self.heal(fault).await?;
                    progress(format!("nemesis: healed {}", fault.kind()));
                }
                Action::HealAll => {
                    self.heal_all().await?;
                    progress("nemesis: healed everything".to_string());
                }
            }
        }
        Ok(())
    }

    /// Injects `fault`.
    pub async fn start(&mut self, fault: &Fault) -> Result<(), NemesisError> {
        self.windows.push(AppliedWindow {
            kind: fault.kind(),
            description: fault.to_string(),
            start_ns: self.clock.now_ns(),
            end_ns: None,
            partition: match fault {
                Fault::Partition(p) => Some(p.clone()),
                _ => None,
            },
        });
        match fault {
            Fault::Kill { nodes } => kill::start(self.cluster, nodes),
            Fault::Pause { nodes } => pause::start(self.cluster, nodes),
            Fault::Partition(partition) => {
                let firewall = self.firewall.ok_or(NemesisError::NoFirewall)?;
                // Nodes talk to each other on their peer ports only.
                let links: Vec<(SocketAddr, SocketAddr)> =
                    partition.cut.iter().map(|l| (self.cluster.peer_addr(l.a), self.cluster.peer_addr(l.b))).collect();
                Ok(firewall.cut(&links).await?)
            }
            Fault::Clock { offsets_ms } => {
                self.skewed.extend(offsets_ms.keys().copied());
                clock::start(self.cluster, offsets_ms).await
            }
            Fault::Membership { pick } => {
                let (active, what) = membership::start(self.cluster, *pick).await?;
                self.membership = active;
                self.describe_last(what);
                Ok(())
            }
            Fault::KillIsr { pick } => {
                let target = self.topic.ok_or(NemesisError::NoTopic)?;
                let (active, what) = kill_isr::start(self.cluster, target, *pick).await?;
                self.kill_isr = active;
                self.describe_last(what);
                Ok(())
            }
        }
    }

    /// Replaces the description of the latest window.
    fn describe_last(&mut self, what: String) {
        if let Some(window) = self.windows.last_mut() {
            window.description = what;
        }
    }

    /// Heals `fault`.
    pub async fn heal(&mut self, fault: &Fault) -> Result<(), NemesisError> {
        match fault {
            Fault::Kill { nodes } => kill::heal(self.cluster, nodes).await?,
            Fault::Pause { nodes } => pause::heal(self.cluster, nodes)?,
            Fault::Partition(_) => self.firewall.ok_or(NemesisError::NoFirewall)?.heal().await?,
            Fault::Clock { offsets_ms } => {
                clock::heal(self.cluster, offsets_ms.keys().copied()).await?;
                self.skewed.retain(|id| !offsets_ms.contains_key(id));
            }
            Fault::Membership { .. } => self.heal_membership().await?,
            Fault::KillIsr { .. } => {
                if let Some(active) = self.kill_isr.take() {
                    let target = self.topic.ok_or(NemesisError::NoTopic)?;
                    let what = kill_isr::heal(self.cluster, target, &active).await?;
                    let before = self.windows.last().map(|w| w.description.clone()).unwrap_or_default();
                    self.describe_last(format!("{before}; {what}"));
                }
            }
        }
        self.close_window(fault.kind());
        Ok(())
    }

    /// Heals everything; see the module docs. Idempotent.
    pub async fn heal_all(&mut self) -> Result<(), NemesisError> {
        for id in self.cluster.ids() {
            self.cluster.resume(id)?;
        }
        if let Some(firewall) = self.firewall {
            firewall.heal().await?;
        }
        // Nodes that were killed, or crashed by themselves.
        self.notice_crashes();
        for id in self.cluster.ids() {
            if !self.cluster.is_running(id) {
                self.cluster.restart(id).await?;
            }
        }
        // A kill-isr window's paused follower was resumed above, its killed
        // nodes restarted with the others.
        self.kill_isr = None;
        // A removed member's slot gets its new node once the others are up
        // (adding it needs a leader).
        self.heal_membership().await?;
        let skewed: Vec<NodeId> = std::mem::take(&mut self.skewed).into_iter().collect();
        clock::heal(self.cluster, skewed).await?;
        let now = self.clock.now_ns();
        for window in &mut self.windows {
            window.end_ns.get_or_insert(now);
        }
        Ok(())
    }

    /// Finishes a half-done replacement, if any: the new node joins.
    async fn heal_membership(&mut self) -> Result<(), NemesisError> {
        if let Some(active) = self.membership.take() {
            let what = membership::heal(self.cluster, &active).await?;
            if let Some(w) = self.windows.iter_mut().rev().find(|w| w.kind == NemesisKind::Membership) {
                w.description = format!("{}; {what}", w.description);
            }
        }
        Ok(())
    }

    fn close_window(&mut self, kind: NemesisKind) {
        let now = self.clock.now_ns();
        if let Some(window) = self.windows.iter_mut().rev().find(|w| w.kind == kind && w.end_ns.is_none()) {
            window.end_ns = Some(now);
        }
    }
}

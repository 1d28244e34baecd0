//! The in-memory state and every decision on it: registration, swarm node claims,
//! removal, report dedupe, node status. Pure: no I/O, tested directly. The writer
//! thread and the log replay both change it only through these functions.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use protocol::wire::{NodeFacts, NodeStatus, NodeSummary};
use serde::{Deserialize, Serialize};

use super::history::{History, Point};
use super::report::{Counters, DecodedReport};

/// Per node, the last `seq` stored for each of its most recent agent instances.
const INSTANCES_REMEMBERED: usize = 8;

/// A registered node, as logged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node_id: String,
    pub facts: NodeFacts,
    pub labels: BTreeMap<String, String>,
    /// SHA-256 of the node credential's secret.
    pub credential_hash: String,
    pub registered_at_ms: u64,
    pub swarm_node_id: Option<String>,
    /// Report interval handed to the node.
    pub report_interval_seconds: u32,
}

/// What the latest report says, for tables.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatestSummary {
    pub collected_at_ms: u64,
    pub cpu_busy_ratio: Option<f64>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub temperature_celsius: Option<f64>,
    pub containers: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NodeEntry {
    pub record: NodeRecord,
    /// (agent instance, highest seq stored), most recently used last.
    pub seen: Vec<(String, u64)>,
    /// When the manager received the last new report (its own clock: boards may lack one).
    pub last_report_ms: Option<u64>,
    /// Shared, so that readers (federation) copy it out under the lock for free.
    pub latest_json: Option<Arc<str>>,
    pub latest: Option<LatestSummary>,
    pub prev_cpu: Option<(f64, f64)>,
    pub history: History,
    pub reports_total: u64,
    pub agent_dropped_total: u64,
    /// The last snapshot's counters, for the next one's rates.
    pub prev_counters: PrevCounters,
    /// Each container's CPU rate in the latest snapshot (memory only, bounded).
    pub container_cpu: super::container_cpu::ContainerCpu,
}

/// The counters of the node's latest snapshot, kept so a report need not parse
/// `latest_json` again. Not stored: after a load it is empty and taken from
/// `latest_json` at the next report, so it never differs from what is stored, and two
/// entries compare equal whatever it holds.
#[derive(Clone, Debug, Default)]
pub struct PrevCounters(pub Option<Counters>);

impl PartialEq for PrevCounters {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl NodeEntry {
    pub fn new(record: NodeRecord) -> Self {
        NodeEntry {
            record,
            seen: Vec::new(),
            last_report_ms: None,
            latest_json: None,
            latest: None,
            prev_cpu: None,
            history: History::default(),
            reports_total: 0,
            agent_dropped_total: 0,
            prev_counters: PrevCounters::default(),
            container_cpu: Default::default(),
        }
    }

    /// True when (instance, seq) is newer than anything stored from that instance.
    fn is_new(&self, instance: &str, seq: u64) -> bool {
        match self.seen.iter().find(|(i, _)| i == instance) {
            Some((_, max)) => seq > *max,
            None => true,
        }
    }

    fn mark_seen(&mut self, instance: &str, seq: u64) {
        if let Some(pos) = self.seen.iter().position(|(i, _)| i == instance) {
            let (i, max) = self.seen.remove(pos);
            self.seen.push((i, max.max(seq)));
        } else {
            if self.seen.len() == INSTANCES_REMEMBERED {
                self.seen.remove(0);
            }
            self.seen.push((instance.to_string(), seq));
        }
    }
}

#[derive(Default)]
pub struct State {
    /// Boxed: an entry is ~700 bytes, and a table sized for 10,000 nodes has 16,384
    /// slots, doubled by copying while it grows; boxed, a slot is a pointer.
    pub nodes: HashMap<String, Box<NodeEntry>>,
    by_hostname: HashMap<String, String>,
    /// Nodes the operator removed, by node id.
    pub revoked: HashMap<String, Revocation>,
}

/// A node the operator removed (its row in `revocations`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    pub node_id: String,
    pub hostname: String,
    pub machine_id: String,
    pub removed_at_ms: u64,
}

impl State {
    /// Puts a whole entry (loaded from the store) in place of any with its id.
    pub fn put_entry(&mut self, entry: NodeEntry) {
        self.remove(&entry.record.node_id);
        self.by_hostname.insert(
            entry.record.facts.hostname.clone(),
            entry.record.node_id.clone(),
        );
        self.nodes
            .insert(entry.record.node_id.clone(), Box::new(entry));
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum RegisterDecision {
    /// A new node with this id.
    New,
    /// The same machine again (reboot, reflash): its node comes back.
    Existing(String),
    /// Another machine holds this hostname; the operator must remove that node first.
    HostnameTaken(String),
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum JoinedRefusal {
    #[error("node {0} is not registered")]
    UnknownNode(String),
    #[error("swarm node {swarm_node_id} already belongs to armada node {owner}")]
    SwarmNodeTaken {
        swarm_node_id: String,
        owner: String,
    },
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReportOutcome {
    pub accepted: u32,
    pub duplicates: u32,
}

impl State {
    pub fn decide_register(&self, facts: &NodeFacts) -> RegisterDecision {
        match self
            .by_hostname
            .get(&facts.hostname)
            .and_then(|id| self.nodes.get(id))
        {
            None => RegisterDecision::New,
            Some(e) if e.record.facts.machine_id == facts.machine_id => {
                RegisterDecision::Existing(e.record.node_id.clone())
            }
            Some(e) => RegisterDecision::HostnameTaken(e.record.node_id.clone()),
        }
    }

    /// Inserts or replaces a node's record (a registration, or its replay). Reports,
    /// history and the swarm node id of an existing node are kept.
    pub fn put_record(&mut self, mut record: NodeRecord) {
        self.by_hostname
            .insert(record.facts.hostname.clone(), record.node_id.clone());
        match self.nodes.get_mut(&record.node_id) {
            Some(e) => {
                if e.record.facts.hostname != record.facts.hostname {
                    self.by_hostname.remove(&e.record.facts.hostname);
                }
                if record.swarm_node_id.is_none() {
                    record.swarm_node_id = e.record.swarm_node_id.take();
                }
                e.record = record;
            }
            None => {
                self.nodes
                    .insert(record.node_id.clone(), Box::new(NodeEntry::new(record)));
            }
        }
    }

    pub fn check_joined(&self, node_id: &str, swarm_node_id: &str) -> Result<(), JoinedRefusal> {
        if !self.nodes.contains_key(node_id) {
            return Err(JoinedRefusal::UnknownNode(node_id.to_string()));
        }
        if let Some(owner) = self.nodes.values().find(|e| {
            e.record.node_id != node_id && e.record.swarm_node_id.as_deref() == Some(swarm_node_id)
        }) {
            return Err(JoinedRefusal::SwarmNodeTaken {
                swarm_node_id: swarm_node_id.to_string(),
                owner: owner.record.node_id.clone(),
            });
        }
        Ok(())
    }

    pub fn set_joined(&mut self, node_id: &str, swarm_node_id: &str) {
        if let Some(e) = self.nodes.get_mut(node_id) {
            e.record.swarm_node_id = Some(swarm_node_id.to_string());
        }
    }

    pub fn remove(&mut self, node_id: &str) -> bool {
        match self.nodes.remove(node_id) {
            Some(e) => {
                if self
                    .by_hostname
                    .get(&e.record.facts.hostname)
                    .map(String::as_str)
                    == Some(node_id)
                {
                    self.by_hostname.remove(&e.record.facts.hostname);
                }
                true
            }
            None => false,
        }
    }

    /// How many of the report's snapshots are new, without changing anything.
    pub fn count_new(&self, node_id: &str, report: &DecodedReport) -> Option<u32> {
        let e = self.nodes.get(node_id)?;
        // Within one batch a later snapshot of the same instance must also be newer.
        let mut local: Vec<(&str, u64)> = Vec::new();
        let mut n = 0;
        for s in &report.snapshots {
            let prev = local.iter_mut().find(|(i, _)| *i == s.instance);
            let new = match prev {
                Some((_, max)) => s.seq > *max,
                None => e.is_new(&s.instance, s.seq),
            };
            if new {
                n += 1;
                match local.iter_mut().find(|(i, _)| *i == s.instance) {
                    Some(slot) => slot.1 = s.seq,
                    None => local.push((&s.instance, s.seq)),
                }
            }
        }
        Some(n)
    }

    /// Stores a report's new snapshots; `None` when the node is unknown.
    pub fn apply_report(
        &mut self,
        node_id: &str,
        received_ms: u64,
        report: &DecodedReport,
    ) -> Option<ReportOutcome> {
        let e = self.nodes.get_mut(node_id)?;
        let mut out = ReportOutcome::default();
        let last = report.snapshots.len().saturating_sub(1);
        if e.prev_counters.0.is_none() {
            e.prev_counters.0 = e
                .latest_json
                .as_deref()
                .and_then(super::report::counters_of_json);
        }
        if !e.container_cpu.seeded {
            // After a restart: the stored latest snapshot is the one before this report.
            if let Some((t, c)) = e
                .latest_json
                .as_deref()
                .and_then(super::container_cpu::counters_of_json)
            {
                e.container_cpu.update(t, &c);
            }
        }
        for (i, s) in report.snapshots.iter().enumerate() {
            if !e.is_new(&s.instance, s.seq) {
                out.duplicates += 1;
                continue;
            }
            out.accepted += 1;
            e.mark_seen(&s.instance, s.seq);
            let cpu = match (s.cpu_times, e.prev_cpu) {
                (Some((busy, total)), Some((pb, pt))) if total > pt && busy >= pb => {
                    Some((busy - pb) / (total - pt))
                }
                (Some((busy, total)), _) if total > 0.0 => Some(busy / total),
                _ => None,
            }
            .filter(|c| c.is_finite());
            if s.cpu_times.is_some() {
                e.prev_cpu = s.cpu_times;
            }
            let summary = LatestSummary {
                collected_at_ms: s.collected_at_ms,
                cpu_busy_ratio: cpu,
                memory_used_bytes: s.memory_used_bytes,
                memory_total_bytes: s.memory_total_bytes,
                temperature_celsius: s.temperature_celsius,
                containers: s.containers,
            };
            let (rx, tx, disk) = super::report::rates(&s.counters, e.prev_counters.0.as_ref());
            e.prev_counters.0 = Some(s.counters);
            e.container_cpu.update(s.collected_at_ms, &s.container_cpu);
            let finite = |v: Option<f64>| v.map(|v| v as f32).filter(|v| v.is_finite());
            e.history.push(Point {
                t_ms: s.collected_at_ms,
                cpu_busy_ratio: cpu.map(|c| c as f32),
                memory_used_bytes: s.memory_used_bytes,
                temperature_celsius: finite(s.temperature_celsius),
                containers: Some(s.containers),
                load1: finite(s.load1),
                net_rx_bytes_per_s: rx.filter(|v| v.is_finite()),
                net_tx_bytes_per_s: tx.filter(|v| v.is_finite()),
                disk_write_bytes_per_s: disk.filter(|v| v.is_finite()),
                fs_used_ratio_max: finite(s.fs_used_ratio_max),
            });
            e.latest = Some(summary);
            if i == last {
                e.latest_json = report.last_json.clone();
            }
        }
        if out.accepted > 0 {
            e.last_report_ms = Some(received_ms);
            e.reports_total = e.reports_total.saturating_add(out.accepted as u64);
        }
        e.agent_dropped_total = e.agent_dropped_total.max(report.dropped_total);
        Some(out)
    }

    pub fn node_ids_by_hostname(&self) -> Vec<&NodeEntry> {
        let mut v: Vec<&NodeEntry> = self.nodes.values().map(|e| &**e).collect();
        v.sort_by(|a, b| a.record.facts.hostname.cmp(&b.record.facts.hostname));
        v
    }
}

/// When a node counts as stale or down.
#[derive(Clone, Copy, Debug)]
pub struct StatusPolicy {
    pub stale_after_intervals: u32,
    pub down_after_ms: u64,
}

/// A node's status from its last report and the swarm's view. Pure.
pub fn node_status(
    now_ms: u64,
    entry_interval_s: u32,
    last_report_ms: Option<u64>,
    swarm_state: Option<&str>,
    policy: StatusPolicy,
) -> NodeStatus {
    if swarm_state == Some("down") {
        return NodeStatus::Down;
    }
    let Some(last) = last_report_ms else {
        return NodeStatus::Registered;
    };
    let silent = now_ms.saturating_sub(last);
    if silent > policy.down_after_ms {
        NodeStatus::Down
    } else if silent
        > (policy.stale_after_intervals as u64)
            .saturating_mul(entry_interval_s as u64)
            .saturating_mul(1000)
    {
        NodeStatus::Stale
    } else {
        NodeStatus::Up
    }
}

pub fn summary(
    e: &NodeEntry,
    now_ms: u64,
    swarm_state: Option<String>,
    policy: StatusPolicy,
) -> NodeSummary {
    let r = &e.record;
    let l = e.latest.as_ref();
    NodeSummary {
        node_id: r.node_id.clone(),
        hostname: r.facts.hostname.clone(),
        board: r.facts.board.clone(),
        role: r.facts.role,
        arch: r.facts.arch.clone(),
        status: node_status(
            now_ms,
            r.report_interval_seconds,
            e.last_report_ms,
            swarm_state.as_deref(),
            policy,
        ),
        swarm_node_id: r.swarm_node_id.clone(),
        swarm_state,
        labels: r.labels.clone(),
        registered_at_ms: r.registered_at_ms,
        last_report_ms: e.last_report_ms,
        containers: l.map(|l| l.containers),
        cpu_busy_ratio: l.and_then(|l| l.cpu_busy_ratio),
        memory_used_bytes: l.and_then(|l| l.memory_used_bytes),
        memory_total_bytes: l.and_then(|l| l.memory_total_bytes),
        temperature_celsius: l.and_then(|l| l.temperature_celsius),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::report::SnapshotDigest;
    use protocol::wire::Role;

    pub fn facts(hostname: &str, machine_id: &str) -> NodeFacts {
        NodeFacts {
            hostname: hostname.into(),
            board: "pine64".into(),
            role: Role::Worker,
            machine_id: machine_id.into(),
            arch: "aarch64".into(),
            kernel: "6.1".into(),
            cpus: 4,
            memory_bytes: 2 << 30,
            docker_version: Some("20.10".into()),
            agent_version: "0.1.0".into(),
            engine_id: None,
        }
    }

    pub fn record(id: &str, hostname: &str, machine_id: &str) -> NodeRecord {
        NodeRecord {
            node_id: id.into(),
            facts: facts(hostname, machine_id),
            labels: BTreeMap::new(),
            credential_hash: "h".into(),
            registered_at_ms: 1,
            swarm_node_id: None,
            report_interval_seconds: 10,
        }
    }

    fn report(instance: &str, seqs: &[u64]) -> DecodedReport {
        DecodedReport {
            snapshots: seqs
                .iter()
                .map(|&seq| SnapshotDigest {
                    instance: instance.into(),
                    seq,
                    collected_at_ms: seq * 10_000,
                    cpu_times: Some((seq as f64, seq as f64 * 4.0)),
                    memory_used_bytes: Some(100),
                    memory_total_bytes: Some(1000),
                    temperature_celsius: Some(50.0),
                    containers: 2,
                    load1: Some(0.5),
                    fs_used_ratio_max: Some(0.25),
                    counters: Counters {
                        t_ms: seq * 10_000,
                        net: Some((seq * 1000, seq * 10)),
                        disk_written: Some(seq * 4096),
                    },
                    container_cpu: Vec::new(),
                })
                .collect(),
            dropped_total: 0,
            largest_snapshot: None,
            last_json: Some(Arc::from(format!(
                "{{\"seq\":{}}}",
                seqs.last().unwrap_or(&0)
            ))),
            last_packed: None,
        }
    }

    #[test]
    fn same_machine_gets_its_node_back_and_another_is_refused() {
        let mut s = State::default();
        assert_eq!(
            s.decide_register(&facts("pine-01", "m1")),
            RegisterDecision::New
        );
        s.put_record(record("n-1", "pine-01", "m1"));
        assert_eq!(
            s.decide_register(&facts("pine-01", "m1")),
            RegisterDecision::Existing("n-1".into())
        );
        assert_eq!(
            s.decide_register(&facts("pine-01", "m2")),
            RegisterDecision::HostnameTaken("n-1".into())
        );
        assert!(s.remove("n-1"));
        assert_eq!(
            s.decide_register(&facts("pine-01", "m2")),
            RegisterDecision::New
        );
        assert!(!s.remove("n-1"));
    }

    #[test]
    fn re_registration_keeps_swarm_id_and_reports() {
        let mut s = State::default();
        s.put_record(record("n-1", "pine-01", "m1"));
        s.set_joined("n-1", "swarm-a");
        s.apply_report("n-1", 5, &report("i", &[1, 2])).unwrap();
        let mut again = record("n-1", "pine-01", "m1");
        again.credential_hash = "h2".into();
        s.put_record(again);
        let e = &s.nodes["n-1"];
        assert_eq!(e.record.swarm_node_id.as_deref(), Some("swarm-a"));
        assert_eq!(e.record.credential_hash, "h2");
        assert_eq!(e.reports_total, 2);
    }

    #[test]
    fn a_swarm_node_belongs_to_one_armada_node() {
        let mut s = State::default();
        s.put_record(record("n-1", "a", "m1"));
        s.put_record(record("n-2", "b", "m2"));
        s.check_joined("n-1", "sw1").unwrap();
        s.set_joined("n-1", "sw1");
        s.check_joined("n-1", "sw1").unwrap();
        assert!(matches!(
            s.check_joined("n-2", "sw1"),
            Err(JoinedRefusal::SwarmNodeTaken { .. })
        ));
        assert!(matches!(
            s.check_joined("n-9", "sw9"),
            Err(JoinedRefusal::UnknownNode(_))
        ));
    }

    #[test]
    fn retried_and_overlapping_batches_are_stored_once() {
        let mut s = State::default();
        s.put_record(record("n-1", "a", "m1"));
        let r = report("i1", &[1, 2, 3]);
        assert_eq!(s.count_new("n-1", &r), Some(3));
        assert_eq!(
            s.apply_report("n-1", 7, &r).unwrap(),
            ReportOutcome {
                accepted: 3,
                duplicates: 0
            }
        );
        assert_eq!(s.count_new("n-1", &r), Some(0));
        assert_eq!(
            s.apply_report("n-1", 8, &r).unwrap(),
            ReportOutcome {
                accepted: 0,
                duplicates: 3
            }
        );
        let overlap = report("i1", &[3, 4]);
        assert_eq!(
            s.apply_report("n-1", 9, &overlap).unwrap(),
            ReportOutcome {
                accepted: 1,
                duplicates: 1
            }
        );
        // A restarted agent (new instance) starts its seq again.
        assert_eq!(
            s.apply_report("n-1", 10, &report("i2", &[0]))
                .unwrap()
                .accepted,
            1
        );
        let e = &s.nodes["n-1"];
        assert_eq!(e.reports_total, 5);
        assert_eq!(e.last_report_ms, Some(10));
        assert_eq!(e.latest_json.as_deref(), Some("{\"seq\":0}"));
        // CPU share between reports: (4-3)/(16-12) = 0.25.
        let cpu = e.history.view()[0].points[3].cpu_busy_ratio.unwrap();
        assert!((cpu - 0.25).abs() < 1e-6, "{cpu}");
        // Rates between successive snapshots, none for the first one nor across a
        // counter that went back (the restarted agent's snapshot is older).
        let raw = &e.history.view()[0].points;
        assert_eq!(raw[0].net_rx_bytes_per_s, None);
        assert_eq!(raw[1].net_rx_bytes_per_s, Some(100.0));
        assert_eq!(raw[1].net_tx_bytes_per_s, Some(1.0));
        assert!((raw[1].disk_write_bytes_per_s.unwrap() - 409.6).abs() < 2.0);
        assert_eq!(raw[4].net_rx_bytes_per_s, None);
        assert_eq!(raw[4].disk_write_bytes_per_s, None);
        assert!(raw.iter().all(|p| p.load1 == Some(0.5)));
        assert!(raw.iter().all(|p| p.fs_used_ratio_max == Some(0.25)));
        assert!(s.apply_report("n-9", 1, &r).is_none());
    }

    #[test]
    fn status_follows_silence_and_swarm() {
        let p = StatusPolicy {
            stale_after_intervals: 3,
            down_after_ms: 120_000,
        };
        let now = 1_000_000;
        assert_eq!(node_status(now, 10, None, None, p), NodeStatus::Registered);
        assert_eq!(
            node_status(now, 10, Some(now - 29_000), None, p),
            NodeStatus::Up
        );
        assert_eq!(
            node_status(now, 10, Some(now - 31_000), None, p),
            NodeStatus::Stale
        );
        assert_eq!(
            node_status(now, 10, Some(now - 121_000), None, p),
            NodeStatus::Down
        );
        assert_eq!(
            node_status(now, 10, Some(now), Some("down"), p),
            NodeStatus::Down
        );
        assert_eq!(
            node_status(now, 10, Some(now), Some("ready"), p),
            NodeStatus::Up
        );
    }
}

//! The built-in rules: pure functions from what the manager knows about each node (and
//! the swarm's managers) plus the time to the conditions that hold right now.
//!
//! Rules that speak of "within a window" (OOM kills, restarts, dropped reports) need
//! the counters' past values: they live in [`CounterMemory`], which the caller keeps
//! (and persists) between evaluations and passes in. Durations ("for 2 minutes") are not
//! decided here but by the state machine ([`super::state`]): a condition only says
//! whether it holds now.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use protocol::wire::{NodeStatus, Role};
use serde::{Deserialize, Serialize};

/// How bad an alert is; receivers map it to their own priorities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// Which parameters a rule reads, so the config can refuse the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    pub threshold: bool,
    pub count: bool,
    pub window: bool,
}

const NONE: Params = Params {
    threshold: false,
    count: false,
    window: false,
};

/// A built-in rule and its defaults.
#[derive(Clone, Copy, Debug)]
pub struct BuiltIn {
    /// The key in `manager.toml`'s `[alerts.rules.KEY]`.
    pub key: &'static str,
    /// The `alertname` label.
    pub alertname: &'static str,
    pub severity: Severity,
    pub for_ms: u64,
    pub threshold: f64,
    pub count: u32,
    pub window_ms: u64,
    pub params: Params,
    pub summary: &'static str,
}

const MIN: u64 = 60_000;

/// Every built-in rule with its defaults. The Prometheus rules file
/// (`deploy/prometheus/armada-rules.yml`) carries the same alerts with the same numbers.
pub const BUILT_IN: &[BuiltIn] = &[
    BuiltIn {
        key: "node_down",
        alertname: "ArmadaNodeDown",
        severity: Severity::Critical,
        for_ms: 0,
        threshold: 0.0,
        count: 0,
        window_ms: 0,
        params: NONE,
        summary: "node is down (silent past --down-after, or the swarm says down)",
    },
    BuiltIn {
        key: "node_stale",
        alertname: "ArmadaNodeStale",
        severity: Severity::Warning,
        for_ms: 0,
        threshold: 0.0,
        count: 0,
        window_ms: 0,
        params: NONE,
        summary: "node missed three report intervals",
    },
    BuiltIn {
        key: "under_voltage",
        alertname: "ArmadaUnderVoltage",
        severity: Severity::Critical,
        for_ms: 0,
        threshold: 0.0,
        count: 0,
        window_ms: 0,
        params: NONE,
        summary: "under-voltage now: the power supply or cable is too weak",
    },
    BuiltIn {
        key: "under_voltage_since_boot",
        alertname: "ArmadaUnderVoltageSinceBoot",
        severity: Severity::Warning,
        for_ms: 0,
        threshold: 0.0,
        count: 0,
        window_ms: 0,
        params: NONE,
        summary: "under-voltage was seen since boot",
    },
    BuiltIn {
        key: "throttled",
        alertname: "ArmadaThrottled",
        severity: Severity::Warning,
        for_ms: MIN,
        threshold: 0.0,
        count: 0,
        window_ms: 0,
        params: NONE,
        summary: "the firmware throttles or caps the CPU frequency",
    },
    BuiltIn {
        key: "temperature",
        alertname: "ArmadaHighTemperature",
        severity: Severity::Warning,
        for_ms: 2 * MIN,
        threshold: 75.0,
        count: 0,
        window_ms: 0,
        params: Params {
            threshold: true,
            count: false,
            window: false,
        },
        summary: "SoC temperature above the threshold",
    },
    BuiltIn {
        key: "filesystem_full",
        alertname: "ArmadaFilesystemFull",
        severity: Severity::Warning,
        for_ms: 5 * MIN,
        threshold: 0.90,
        count: 0,
        window_ms: 0,
        params: Params {
            threshold: true,
            count: false,
            window: false,
        },
        summary: "filesystem use above the ratio",
    },
    BuiltIn {
        key: "filesystem_read_only",
        alertname: "ArmadaFilesystemReadOnly",
        severity: Severity::Critical,
        for_ms: 0,
        threshold: 0.0,
        count: 0,
        window_ms: 0,
        params: NONE,
        summary: "filesystem is read-only (an SD card that failed often turns read-only)",
    },
    BuiltIn {
        key: "memory_low",
        alertname: "ArmadaMemoryLow",
        severity: Severity::Warning,
        for_ms: 5 * MIN,
        threshold: 0.10,
        count: 0,
        window_ms: 0,
        params: Params {
            threshold: true,
            count: false,
            window: false,
        },
        summary: "available memory below the ratio",
    },
    BuiltIn {
        key: "container_oom",
        alertname: "ArmadaContainerOomKilled",
        severity: Severity::Warning,
        for_ms: 0,
        threshold: 0.0,
        count: 0,
        window_ms: 10 * MIN,
        params: Params {
            threshold: false,
            count: false,
            window: true,
        },
        summary: "a container was OOM-killed within the window",
    },
    BuiltIn {
        key: "container_restart_loop",
        alertname: "ArmadaContainerRestartLoop",
        severity: Severity::Warning,
        for_ms: 0,
        threshold: 0.0,
        count: 3,
        window_ms: 5 * MIN,
        params: Params {
            threshold: false,
            count: true,
            window: true,
        },
        summary: "a container restarted `count` times within the window",
    },
    BuiltIn {
        key: "swarm_quorum_at_risk",
        alertname: "ArmadaSwarmQuorumAtRisk",
        severity: Severity::Critical,
        for_ms: 0,
        threshold: 0.0,
        count: 0,
        window_ms: 0,
        params: NONE,
        summary: "reachable swarm managers are not a majority: one more loss stops the swarm",
    },
    BuiltIn {
        key: "swarm_single_manager",
        alertname: "ArmadaSwarmSingleManager",
        severity: Severity::Warning,
        for_ms: 0,
        threshold: 0.0,
        count: 0,
        window_ms: 0,
        params: NONE,
        summary: "a single reachable swarm manager is left",
    },
    BuiltIn {
        key: "clock_not_synced",
        alertname: "ArmadaClockNotSynced",
        severity: Severity::Warning,
        for_ms: 5 * MIN,
        threshold: 0.0,
        count: 0,
        window_ms: 0,
        params: NONE,
        summary: "the node's clock is not synchronised (boards have no RTC)",
    },
    BuiltIn {
        key: "agent_dropping_reports",
        alertname: "ArmadaAgentDroppingReports",
        severity: Severity::Warning,
        for_ms: 0,
        threshold: 0.0,
        count: 0,
        window_ms: 10 * MIN,
        params: Params {
            threshold: false,
            count: false,
            window: true,
        },
        summary: "the agent's backlog overflowed and dropped reports within the window",
    },
];

pub fn built_in(key: &str) -> Option<&'static BuiltIn> {
    BUILT_IN.iter().find(|r| r.key == key)
}

/// A rule as configured: the built-in defaults with `manager.toml`'s overrides.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rule {
    pub key: &'static str,
    pub alertname: &'static str,
    pub enabled: bool,
    pub severity: Severity,
    pub for_ms: u64,
    pub threshold: f64,
    pub count: u32,
    pub window_ms: u64,
    /// Only nodes carrying every one of these labels (operator labels, or `hostname`,
    /// `board`, `role`).
    pub nodes: BTreeMap<String, String>,
    pub summary: &'static str,
}

impl Rule {
    pub fn from_built_in(b: &BuiltIn) -> Rule {
        Rule {
            key: b.key,
            alertname: b.alertname,
            enabled: true,
            severity: b.severity,
            for_ms: b.for_ms,
            threshold: b.threshold,
            count: b.count,
            window_ms: b.window_ms,
            nodes: BTreeMap::new(),
            summary: b.summary,
        }
    }

    /// True when the node is in this rule's scope.
    pub fn applies_to(&self, n: &NodeView) -> bool {
        self.nodes
            .iter()
            .all(|(k, v)| n.label(k) == Some(v.as_str()))
    }
}

pub fn default_rules() -> Vec<Rule> {
    BUILT_IN.iter().map(Rule::from_built_in).collect()
}

/// One filesystem as the rules see it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FsView {
    pub mountpoint: String,
    pub device: String,
    /// Used share as `df` computes it: used / (used + available to users).
    pub used_ratio: Option<f64>,
    /// `None` while the agent does not report it.
    pub read_only: Option<bool>,
}

/// One container as the rules see it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerView {
    pub id: String,
    pub name: String,
    pub service: Option<String>,
    /// The cgroup's OOM kill counter.
    pub oom_kills: Option<u64>,
    /// Docker's restart count, when the agent reports it.
    pub restart_count: Option<u64>,
}

/// One node as the rules see it: its status now plus what its latest snapshot said.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub node_id: String,
    pub hostname: String,
    pub board: String,
    pub role: Role,
    pub labels: BTreeMap<String, String>,
    pub status: Option<NodeStatus>,
    pub under_voltage_now: Option<bool>,
    pub under_voltage_since_boot: Option<bool>,
    /// Throttled, frequency capped or soft temperature limit, now.
    pub throttled_now: Option<bool>,
    pub max_temperature_celsius: Option<f64>,
    /// The hottest zone's name, for the label.
    pub hottest_zone: Option<String>,
    pub filesystems: Vec<FsView>,
    pub memory_available_ratio: Option<f64>,
    pub containers: Vec<ContainerView>,
    pub clock_synced: Option<bool>,
    /// Reports the agent dropped since it started.
    pub agent_dropped_total: u64,
}

impl AsRef<NodeView> for NodeView {
    fn as_ref(&self) -> &NodeView {
        self
    }
}

impl NodeView {
    /// Operator labels, plus `hostname`, `board` and `role`, for rule scopes.
    pub fn label(&self, key: &str) -> Option<&str> {
        match key {
            "hostname" => Some(&self.hostname),
            "board" => Some(&self.board),
            "role" => Some(match self.role {
                Role::Manager => "manager",
                Role::Worker => "worker",
            }),
            k => self.labels.get(k).map(String::as_str),
        }
    }
}

/// The swarm's managers as the manager's engine reports them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SwarmView {
    /// (hostname, reachable) of every swarm manager; empty without an engine.
    pub managers: Vec<(String, bool)>,
}

/// A condition that holds now: the state machine turns it into an alert.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub rule: &'static str,
    /// Identifying labels, `alertname` included; `severity` is not one of them.
    pub labels: BTreeMap<String, String>,
    pub severity: Severity,
    pub summary: String,
    pub value: Option<f64>,
}

/// A counter's last value and when it last went up.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CounterTrack {
    pub last: u64,
    pub increased_at_ms: Option<u64>,
    pub seen_at_ms: u64,
}

impl CounterTrack {
    /// Records a value; a smaller value is a reset (agent restarted, new cgroup), not an
    /// increase.
    fn observe(&mut self, value: u64, now_ms: u64) {
        if value > self.last {
            self.increased_at_ms = Some(now_ms);
        }
        self.last = value;
        self.seen_at_ms = now_ms;
    }
}

/// Observes `value` under `key`. A counter seen for the first time is a baseline, not
/// an increase, unless `first_counts` (a count that is recent by nature). Returns true
/// when what is stored of it changed (a new key or a new value; only `seen_at_ms` moved
/// is no change: it is not stored). The key is copied only for a new entry.
fn observe(
    map: &mut HashMap<String, CounterTrack>,
    key: &str,
    value: u64,
    now_ms: u64,
    first_counts: bool,
) -> bool {
    if let Some(t) = map.get_mut(key) {
        let changed = t.last != value;
        t.observe(value, now_ms);
        return changed;
    }
    map.insert(
        key.to_string(),
        CounterTrack {
            last: value,
            increased_at_ms: (first_counts && value > 0).then_some(now_ms),
            seen_at_ms: now_ms,
        },
    );
    true
}

/// Adds restart count `v` to a container's samples (one per change) and drops those
/// older than `window_ms` but the last before it. Returns true when the samples changed.
fn observe_restarts(s: &mut VecDeque<(u64, u64)>, v: u64, now_ms: u64, window_ms: u64) -> bool {
    let before = (s.len(), s.front().copied(), s.back().copied());
    if s.back().map(|(_, last)| *last) != Some(v) {
        s.push_back((now_ms, v));
    }
    while s.len() > 1
        && s.get(1)
            .is_some_and(|(t, _)| now_ms.saturating_sub(*t) > window_ms)
    {
        s.pop_front();
    }
    // Bound the samples whatever the window: one per change.
    while s.len() > 256 {
        s.pop_front();
    }
    before != (s.len(), s.front().copied(), s.back().copied())
}

impl CounterTrack {
    fn increased_within(&self, now_ms: u64, window_ms: u64) -> bool {
        self.increased_at_ms
            .is_some_and(|t| now_ms.saturating_sub(t) <= window_ms)
    }
}

/// Counter history kept between evaluations (and stored with the alerts, one row per
/// key: see [`CounterMemory::dirty`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CounterMemory {
    /// "node/container id" -> OOM kill counter.
    pub oom: HashMap<String, CounterTrack>,
    /// "node/container id" -> (time, restart count) samples inside the window.
    pub restarts: HashMap<String, VecDeque<(u64, u64)>>,
    /// node id -> the agent's dropped-reports counter.
    pub dropped: HashMap<String, CounterTrack>,
    /// Keys whose stored row is out of date (changed, new or forgotten) since the store
    /// last took them. Each evaluation observes every container's counters, but only a
    /// new value or a new key is a change: at 10,000 nodes a pass changes nothing most of
    /// the time, and one that does rewrites those rows, not the whole memory (the whole
    /// memory, ~8 MB of JSON at 30,000 containers, was written every 5 s before).
    #[serde(skip)]
    pub dirty: Dirty,
}

/// Which of [`CounterMemory`]'s maps a key is in: the `kind` of its stored row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CounterKind {
    Oom,
    Restarts,
    Dropped,
}

impl CounterKind {
    pub const ALL: [CounterKind; 3] = [
        CounterKind::Oom,
        CounterKind::Restarts,
        CounterKind::Dropped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CounterKind::Oom => "oom",
            CounterKind::Restarts => "restarts",
            CounterKind::Dropped => "dropped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// The keys of [`CounterMemory::dirty`]. Not part of the memory's value: two memories
/// with the same counters are equal whatever is still to be stored.
#[derive(Clone, Debug, Default)]
pub struct Dirty(pub HashSet<(CounterKind, String)>);

impl PartialEq for Dirty {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Counters not seen for this long are forgotten (removed containers, nodes).
const FORGET_AFTER_MS: u64 = 60 * MIN;

impl CounterMemory {
    fn forget_old(&mut self, now_ms: u64) {
        let old = |t: u64| now_ms.saturating_sub(t) > FORGET_AFTER_MS;
        let dirty = &mut self.dirty.0;
        let mut forget = |kind: CounterKind, k: &String, keep: bool| {
            if !keep {
                dirty.insert((kind, k.clone()));
            }
            keep
        };
        self.oom
            .retain(|k, c| forget(CounterKind::Oom, k, !old(c.seen_at_ms)));
        self.dropped
            .retain(|k, c| forget(CounterKind::Dropped, k, !old(c.seen_at_ms)));
        self.restarts.retain(|k, s| {
            forget(
                CounterKind::Restarts,
                k,
                s.back().is_some_and(|(t, _)| !old(*t)),
            )
        });
    }

    fn changed(&mut self, kind: CounterKind, key: &str) {
        self.dirty.0.insert((kind, key.to_string()));
    }

    /// The stored form of one key's value (None: the key is gone, delete its row).
    pub fn row_json(&self, kind: CounterKind, key: &str) -> Option<String> {
        let json = match kind {
            CounterKind::Oom => self.oom.get(key).map(serde_json::to_string),
            CounterKind::Dropped => self.dropped.get(key).map(serde_json::to_string),
            CounterKind::Restarts => self.restarts.get(key).map(serde_json::to_string),
        };
        // Plain numbers: serialising them cannot fail.
        json.map(|j| j.unwrap_or_default())
    }

    /// Puts one stored row back. A track's `seen_at_ms` is not stored: it becomes
    /// `now_ms`, so a key is forgotten only after FORGET_AFTER_MS unseen since this start.
    pub fn load_row(
        &mut self,
        kind: CounterKind,
        key: String,
        json: &str,
        now_ms: u64,
    ) -> Result<(), serde_json::Error> {
        match kind {
            CounterKind::Oom | CounterKind::Dropped => {
                let mut t: CounterTrack = serde_json::from_str(json)?;
                t.seen_at_ms = now_ms;
                let map = if kind == CounterKind::Oom {
                    &mut self.oom
                } else {
                    &mut self.dropped
                };
                map.insert(key, t);
            }
            CounterKind::Restarts => {
                self.restarts.insert(key, serde_json::from_str(json)?);
            }
        }
        Ok(())
    }

    /// Marks every key as to be stored (a memory read from the old one-row form).
    pub fn mark_all_dirty(&mut self) {
        let d = &mut self.dirty.0;
        d.extend(self.oom.keys().map(|k| (CounterKind::Oom, k.clone())));
        d.extend(
            self.dropped
                .keys()
                .map(|k| (CounterKind::Dropped, k.clone())),
        );
        d.extend(
            self.restarts
                .keys()
                .map(|k| (CounterKind::Restarts, k.clone())),
        );
    }
}

fn node_labels(rule: &Rule, n: &NodeView) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert("alertname".to_string(), rule.alertname.to_string());
    l.insert("node".to_string(), n.node_id.clone());
    l.insert("hostname".to_string(), n.hostname.clone());
    l.insert("board".to_string(), n.board.clone());
    l
}

fn condition(
    rule: &Rule,
    labels: BTreeMap<String, String>,
    summary: String,
    value: Option<f64>,
) -> Condition {
    Condition {
        rule: rule.key,
        labels,
        severity: rule.severity,
        summary,
        value,
    }
}

/// Evaluates every enabled rule over every node in its scope, updating `memory`.
/// `nodes` are views or shared views (`Arc<NodeView>`, as the service keeps them).
pub fn evaluate<N: AsRef<NodeView>>(
    rules: &[Rule],
    nodes: &[N],
    swarm: &SwarmView,
    memory: &mut CounterMemory,
    now_ms: u64,
) -> Vec<Condition> {
    let mut out = Vec::new();
    // Counters are observed whatever the rules' scopes, so enabling a rule later or
    // widening its scope does not see the whole past as one fresh increase.
    let window_of = |key: &str| {
        rules
            .iter()
            .find(|r| r.key == key)
            .map(|r| r.window_ms)
            .unwrap_or(0)
    };
    let restart_window = window_of("container_restart_loop");
    for n in nodes.iter().map(AsRef::as_ref) {
        for c in &n.containers {
            let key = format!("{}/{}", n.node_id, c.id);
            // Old kills of a container first seen now are history, not news.
            if let Some(v) = c.oom_kills {
                if observe(&mut memory.oom, &key, v, now_ms, false) {
                    memory.changed(CounterKind::Oom, &key);
                }
            }
            if let Some(v) = c.restart_count {
                let changed = match memory.restarts.get_mut(&key) {
                    Some(s) => observe_restarts(s, v, now_ms, restart_window),
                    None => {
                        let mut s = VecDeque::new();
                        observe_restarts(&mut s, v, now_ms, restart_window);
                        memory.restarts.insert(key.clone(), s);
                        true
                    }
                };
                if changed {
                    memory.changed(CounterKind::Restarts, &key);
                }
            }
        }
        // An agent's drop count is since its start, and drops happen while the manager
        // is away: a first report that already counts drops is news.
        if observe(
            &mut memory.dropped,
            &n.node_id,
            n.agent_dropped_total,
            now_ms,
            true,
        ) {
            memory.changed(CounterKind::Dropped, &n.node_id);
        }
    }
    memory.forget_old(now_ms);

    for rule in rules.iter().filter(|r| r.enabled) {
        if rule.key.starts_with("swarm_") {
            out.extend(swarm_rule(rule, swarm));
            continue;
        }
        for n in nodes
            .iter()
            .map(AsRef::as_ref)
            .filter(|n| rule.applies_to(n))
        {
            node_rule(rule, n, memory, now_ms, &mut out);
        }
    }
    out
}

fn node_rule(
    rule: &Rule,
    n: &NodeView,
    memory: &CounterMemory,
    now_ms: u64,
    out: &mut Vec<Condition>,
) {
    let host = &n.hostname;
    let reporting = matches!(n.status, Some(NodeStatus::Up));
    match rule.key {
        "node_down" => flag(
            out,
            rule,
            n,
            n.status == Some(NodeStatus::Down),
            format!("{host} is down"),
            None,
        ),
        "node_stale" => flag(
            out,
            rule,
            n,
            n.status == Some(NodeStatus::Stale),
            format!("{host} missed its last reports"),
            None,
        ),
        // The health rules speak of the latest snapshot: once a node is stale or down
        // that snapshot is old news, and node_down/node_stale say what matters.
        _ if !reporting => {}
        "under_voltage" => flag(
            out,
            rule,
            n,
            n.under_voltage_now == Some(true),
            format!("{host}: under-voltage now"),
            Some(1.0),
        ),
        "under_voltage_since_boot" => flag(
            out,
            rule,
            n,
            n.under_voltage_since_boot == Some(true),
            format!("{host}: under-voltage seen since boot"),
            Some(1.0),
        ),
        "throttled" => flag(
            out,
            rule,
            n,
            n.throttled_now == Some(true),
            format!("{host}: CPU throttled or frequency capped"),
            Some(1.0),
        ),
        "temperature" => {
            let t = n.max_temperature_celsius.filter(|t| *t > rule.threshold);
            flag(
                out,
                rule,
                n,
                t.is_some(),
                format!(
                    "{host}: {} at {:.1} °C (threshold {:.1} °C)",
                    n.hottest_zone.as_deref().unwrap_or("SoC"),
                    t.unwrap_or_default(),
                    rule.threshold
                ),
                t,
            )
        }
        "filesystem_full" => {
            for fs in &n.filesystems {
                if let Some(r) = fs.used_ratio.filter(|r| *r > rule.threshold) {
                    let mut l = node_labels(rule, n);
                    l.insert("mountpoint".into(), fs.mountpoint.clone());
                    l.insert("device".into(), fs.device.clone());
                    out.push(condition(
                        rule,
                        l,
                        format!(
                            "{host}: {} is {:.0}% full (threshold {:.0}%)",
                            fs.mountpoint,
                            r * 100.0,
                            rule.threshold * 100.0
                        ),
                        Some(r),
                    ));
                }
            }
        }
        "filesystem_read_only" => {
            for fs in n.filesystems.iter().filter(|f| f.read_only == Some(true)) {
                let mut l = node_labels(rule, n);
                l.insert("mountpoint".into(), fs.mountpoint.clone());
                l.insert("device".into(), fs.device.clone());
                out.push(condition(
                    rule,
                    l,
                    format!("{host}: {} is read-only", fs.mountpoint),
                    Some(1.0),
                ));
            }
        }
        "memory_low" => {
            let r = n.memory_available_ratio.filter(|r| *r < rule.threshold);
            flag(
                out,
                rule,
                n,
                r.is_some(),
                format!(
                    "{host}: {:.0}% of memory available (threshold {:.0}%)",
                    r.unwrap_or_default() * 100.0,
                    rule.threshold * 100.0
                ),
                r,
            )
        }
        "container_oom" => {
            for c in &n.containers {
                let key = format!("{}/{}", n.node_id, c.id);
                if memory
                    .oom
                    .get(&key)
                    .is_some_and(|t| t.increased_within(now_ms, rule.window_ms))
                {
                    out.push(container_condition(rule, n, c, "was OOM-killed", None));
                }
            }
        }
        "container_restart_loop" => {
            for c in &n.containers {
                let key = format!("{}/{}", n.node_id, c.id);
                let Some(s) = memory.restarts.get(&key) else {
                    continue;
                };
                // Restarts inside the window: the newest count minus the count at the
                // window's start (the last sample at or before it).
                let start = now_ms.saturating_sub(rule.window_ms);
                let base = s
                    .iter()
                    .rev()
                    .find(|(t, _)| *t <= start)
                    .or(s.front())
                    .map(|(_, v)| *v);
                let newest = s.back().map(|(_, v)| *v);
                if let (Some(b), Some(v)) = (base, newest) {
                    let restarts = v.saturating_sub(b);
                    if restarts >= rule.count as u64 && restarts > 0 {
                        out.push(container_condition(
                            rule,
                            n,
                            c,
                            &format!("restarted {restarts} times in {} min", rule.window_ms / MIN),
                            Some(restarts as f64),
                        ));
                    }
                }
            }
        }
        "clock_not_synced" => flag(
            out,
            rule,
            n,
            n.clock_synced == Some(false),
            format!("{host}: clock not synchronised"),
            Some(1.0),
        ),
        "agent_dropping_reports" => flag(
            out,
            rule,
            n,
            memory
                .dropped
                .get(&n.node_id)
                .is_some_and(|t| t.increased_within(now_ms, rule.window_ms)),
            format!(
                "{host}: the agent dropped reports ({} since it started)",
                n.agent_dropped_total
            ),
            Some(n.agent_dropped_total as f64),
        ),
        _ => {}
    }
}

/// Pushes the node-level condition when `holds`.
fn flag(
    out: &mut Vec<Condition>,
    rule: &Rule,
    n: &NodeView,
    holds: bool,
    summary: String,
    value: Option<f64>,
) {
    if holds {
        out.push(condition(rule, node_labels(rule, n), summary, value));
    }
}

fn container_condition(
    rule: &Rule,
    n: &NodeView,
    c: &ContainerView,
    what: &str,
    value: Option<f64>,
) -> Condition {
    let mut l = node_labels(rule, n);
    l.insert("container".into(), c.name.clone());
    if let Some(s) = &c.service {
        l.insert("service".into(), s.clone());
    }
    condition(
        rule,
        l,
        format!("{}: container {} {what}", n.hostname, c.name),
        value,
    )
}

fn swarm_rule(rule: &Rule, swarm: &SwarmView) -> Option<Condition> {
    let total = swarm.managers.len();
    if total == 0 {
        return None;
    }
    let reachable = swarm.managers.iter().filter(|(_, r)| *r).count();
    let holds = match rule.key {
        // Raft needs a majority of managers: with reachable <= total/2 the swarm can
        // no longer change its state (and with total 1 there is nothing to lose).
        "swarm_quorum_at_risk" => total > 1 && reachable * 2 <= total,
        "swarm_single_manager" => total > 1 && reachable == 1,
        _ => false,
    };
    holds.then(|| {
        let mut l = BTreeMap::new();
        l.insert("alertname".to_string(), rule.alertname.to_string());
        condition(
            rule,
            l,
            format!("{reachable} of {total} swarm managers reachable"),
            Some(reachable as f64),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(host: &str) -> NodeView {
        NodeView {
            node_id: format!("id-{host}"),
            hostname: host.into(),
            board: "rpi3".into(),
            status: Some(NodeStatus::Up),
            ..Default::default()
        }
    }

    fn rule(key: &str) -> Rule {
        Rule::from_built_in(built_in(key).unwrap())
    }

    fn eval1(r: &Rule, n: &NodeView) -> Vec<Condition> {
        evaluate(
            std::slice::from_ref(r),
            std::slice::from_ref(n),
            &SwarmView::default(),
            &mut CounterMemory::default(),
            1_000_000,
        )
    }

    #[test]
    fn every_built_in_has_a_unique_key_and_name() {
        let mut keys: Vec<_> = BUILT_IN.iter().map(|r| r.key).collect();
        let mut names: Vec<_> = BUILT_IN.iter().map(|r| r.alertname).collect();
        keys.sort();
        keys.dedup();
        names.sort();
        names.dedup();
        assert_eq!(keys.len(), BUILT_IN.len());
        assert_eq!(names.len(), BUILT_IN.len());
    }

    #[test]
    fn node_down_and_stale_follow_the_status() {
        let mut n = up("a");
        assert!(eval1(&rule("node_down"), &n).is_empty());
        n.status = Some(NodeStatus::Down);
        let c = eval1(&rule("node_down"), &n);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].labels["alertname"], "ArmadaNodeDown");
        assert_eq!(c[0].labels["hostname"], "a");
        assert_eq!(c[0].severity, Severity::Critical);
        assert!(eval1(&rule("node_stale"), &n).is_empty());
        n.status = Some(NodeStatus::Stale);
        assert_eq!(eval1(&rule("node_stale"), &n).len(), 1);
        assert!(eval1(&rule("node_down"), &n).is_empty());
        // A node registered but never reporting is neither.
        n.status = Some(NodeStatus::Registered);
        assert!(eval1(&rule("node_down"), &n).is_empty());
    }

    #[test]
    fn under_voltage_now_and_since_boot() {
        let mut n = up("a");
        assert!(eval1(&rule("under_voltage"), &n).is_empty());
        n.under_voltage_now = Some(false);
        assert!(eval1(&rule("under_voltage"), &n).is_empty());
        n.under_voltage_now = Some(true);
        assert_eq!(eval1(&rule("under_voltage"), &n).len(), 1);
        assert!(eval1(&rule("under_voltage_since_boot"), &n).is_empty());
        n.under_voltage_since_boot = Some(true);
        assert_eq!(eval1(&rule("under_voltage_since_boot"), &n).len(), 1);
        // A down node's last snapshot is not evidence of anything now.
        n.status = Some(NodeStatus::Down);
        assert!(eval1(&rule("under_voltage"), &n).is_empty());
    }

    #[test]
    fn throttling_where_reported() {
        let mut n = up("a");
        assert!(
            eval1(&rule("throttled"), &n).is_empty(),
            "Pine64: not reported"
        );
        n.throttled_now = Some(true);
        assert_eq!(eval1(&rule("throttled"), &n).len(), 1);
        assert_eq!(rule("throttled").for_ms, 60_000);
    }

    #[test]
    fn temperature_above_threshold_only() {
        let r = rule("temperature");
        assert_eq!(r.threshold, 75.0);
        assert_eq!(r.for_ms, 120_000);
        let mut n = up("a");
        n.max_temperature_celsius = Some(75.0);
        assert!(eval1(&r, &n).is_empty(), "at the threshold is not above it");
        n.max_temperature_celsius = Some(81.5);
        n.hottest_zone = Some("cpu-thermal".into());
        let c = eval1(&r, &n);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].value, Some(81.5));
        assert!(c[0].summary.contains("cpu-thermal"), "{}", c[0].summary);
        let mut lower = r.clone();
        lower.threshold = 90.0;
        assert!(eval1(&lower, &n).is_empty());
    }

    #[test]
    fn filesystem_full_and_read_only_per_mount() {
        let mut n = up("a");
        n.filesystems = vec![
            FsView {
                mountpoint: "/".into(),
                device: "/dev/mmcblk0p2".into(),
                used_ratio: Some(0.95),
                read_only: Some(true),
            },
            FsView {
                mountpoint: "/boot".into(),
                device: "/dev/mmcblk0p1".into(),
                used_ratio: Some(0.5),
                read_only: None,
            },
        ];
        let c = eval1(&rule("filesystem_full"), &n);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].labels["mountpoint"], "/");
        let c = eval1(&rule("filesystem_read_only"), &n);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].labels["device"], "/dev/mmcblk0p2");
        assert_eq!(rule("filesystem_full").threshold, 0.90);
    }

    #[test]
    fn memory_available_below_ratio() {
        let mut n = up("a");
        n.memory_available_ratio = Some(0.2);
        assert!(eval1(&rule("memory_low"), &n).is_empty());
        n.memory_available_ratio = Some(0.05);
        assert_eq!(eval1(&rule("memory_low"), &n).len(), 1);
    }

    #[test]
    fn clock_not_synced_only_when_reported_false() {
        let mut n = up("a");
        assert!(eval1(&rule("clock_not_synced"), &n).is_empty());
        n.clock_synced = Some(true);
        assert!(eval1(&rule("clock_not_synced"), &n).is_empty());
        n.clock_synced = Some(false);
        assert_eq!(eval1(&rule("clock_not_synced"), &n).len(), 1);
    }

    fn container(id: &str, oom: u64, restarts: u64) -> ContainerView {
        ContainerView {
            id: id.into(),
            name: format!("name-{id}"),
            service: Some("web".into()),
            oom_kills: Some(oom),
            restart_count: Some(restarts),
        }
    }

    #[test]
    fn only_a_new_key_or_value_is_a_change_to_store() {
        let rules = [rule("container_oom"), rule("container_restart_loop")];
        let sw = SwarmView::default();
        let mut mem = CounterMemory::default();
        let mut n = up("a");
        n.containers = vec![container("c1", 0, 0), container("c2", 0, 0)];
        let pass = |n: &NodeView, mem: &mut CounterMemory, t: u64| {
            evaluate(&rules, std::slice::from_ref(n), &sw, mem, t);
            let mut d: Vec<(CounterKind, String)> = mem.dirty.0.drain().collect();
            d.sort();
            d
        };
        let first = pass(&n, &mut mem, 0);
        assert_eq!(first.len(), 5, "2 oom, 2 restarts, 1 dropped: {first:?}");
        assert!(
            pass(&n, &mut mem, 5_000).is_empty(),
            "same values: nothing to store"
        );
        n.containers[1].oom_kills = Some(1);
        assert_eq!(
            pass(&n, &mut mem, 10_000),
            [(CounterKind::Oom, "id-a/c2".to_string())]
        );
        n.containers.pop();
        // c2 unseen for more than FORGET_AFTER_MS: its rows are to be deleted. So is c1's
        // restart history, whose one sample is that old (it comes back at the next pass).
        let later = 10_000 + FORGET_AFTER_MS + 1;
        let gone = pass(&n, &mut mem, later);
        let oom = |k: &str| (CounterKind::Oom, k.to_string());
        let restarts = |k: &str| (CounterKind::Restarts, k.to_string());
        assert_eq!(
            gone,
            [oom("id-a/c2"), restarts("id-a/c1"), restarts("id-a/c2")]
        );
        for (kind, key) in &gone {
            assert_eq!(mem.row_json(*kind, key), None, "{kind:?} {key}");
        }
        assert!(
            mem.row_json(CounterKind::Oom, "id-a/c1").is_some(),
            "seen every pass"
        );
        assert_eq!(pass(&n, &mut mem, later + 5_000), [restarts("id-a/c1")]);
    }

    #[test]
    fn oom_kill_fires_on_increase_and_clears_after_the_window() {
        let r = rule("container_oom");
        let mut mem = CounterMemory::default();
        let mut n = up("a");
        n.containers = vec![container("c1", 2, 0)];
        let sw = SwarmView::default();
        // The first sight is a baseline: old kills are not news.
        assert!(evaluate(
            std::slice::from_ref(&r),
            std::slice::from_ref(&n),
            &sw,
            &mut mem,
            0
        )
        .is_empty());
        n.containers[0].oom_kills = Some(3);
        let c = evaluate(
            std::slice::from_ref(&r),
            std::slice::from_ref(&n),
            &sw,
            &mut mem,
            10_000,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].labels["container"], "name-c1");
        assert_eq!(c[0].labels["service"], "web");
        let later = 10_000 + r.window_ms;
        assert_eq!(
            evaluate(
                std::slice::from_ref(&r),
                std::slice::from_ref(&n),
                &sw,
                &mut mem,
                later
            )
            .len(),
            1
        );
        assert!(evaluate(
            std::slice::from_ref(&r),
            std::slice::from_ref(&n),
            &sw,
            &mut mem,
            later + 1
        )
        .is_empty());
    }

    #[test]
    fn restart_loop_needs_count_restarts_inside_the_window() {
        let r = rule("container_restart_loop");
        assert_eq!((r.count, r.window_ms), (3, 300_000));
        let mut mem = CounterMemory::default();
        let mut n = up("a");
        let sw = SwarmView::default();
        let mut at = |count: u64, t: u64, mem: &mut CounterMemory| {
            n.containers = vec![container("c1", 0, count)];
            evaluate(
                std::slice::from_ref(&r),
                std::slice::from_ref(&n),
                &sw,
                mem,
                t,
            )
        };
        assert!(at(5, 0, &mut mem).is_empty(), "baseline");
        assert!(at(6, 60_000, &mut mem).is_empty());
        assert!(at(7, 120_000, &mut mem).is_empty());
        let c = at(8, 180_000, &mut mem);
        assert_eq!(c.len(), 1, "3 restarts in 3 minutes");
        assert_eq!(c[0].value, Some(3.0));
        // No restart since: once the window has moved past them, it clears.
        assert!(
            !at(8, 250_000, &mut mem).is_empty(),
            "all three inside 0..250 s"
        );
        assert!(
            at(8, 400_000, &mut mem).is_empty(),
            "two (at 120 and 180 s) inside 100..400 s"
        );
        // Slow restarts, one every 3 minutes, never make 3 in 5 minutes.
        let mut mem = CounterMemory::default();
        for i in 0..10u64 {
            assert!(at(i, i * 180_000, &mut mem).is_empty(), "restart {i}");
        }
    }

    #[test]
    fn restart_count_reset_is_not_a_loop() {
        let r = rule("container_restart_loop");
        let mut mem = CounterMemory::default();
        let mut n = up("a");
        let sw = SwarmView::default();
        for (i, count) in [10u64, 0, 1].iter().enumerate() {
            n.containers = vec![container("c1", 0, *count)];
            let c = evaluate(
                std::slice::from_ref(&r),
                std::slice::from_ref(&n),
                &sw,
                &mut mem,
                i as u64 * 1000,
            );
            assert!(c.is_empty(), "{count}");
        }
    }

    #[test]
    fn agent_dropping_reports_within_window() {
        let r = rule("agent_dropping_reports");
        let mut mem = CounterMemory::default();
        let mut n = up("a");
        let sw = SwarmView::default();
        assert!(evaluate(
            std::slice::from_ref(&r),
            std::slice::from_ref(&n),
            &sw,
            &mut mem,
            0
        )
        .is_empty());
        n.agent_dropped_total = 4;
        assert_eq!(
            evaluate(
                std::slice::from_ref(&r),
                std::slice::from_ref(&n),
                &sw,
                &mut mem,
                1_000
            )
            .len(),
            1
        );
        n.agent_dropped_total = 9;
        assert_eq!(
            evaluate(
                std::slice::from_ref(&r),
                std::slice::from_ref(&n),
                &sw,
                &mut mem,
                5_000
            )
            .len(),
            1
        );
        assert!(evaluate(
            std::slice::from_ref(&r),
            std::slice::from_ref(&n),
            &sw,
            &mut mem,
            5_001 + r.window_ms
        )
        .is_empty());
    }

    #[test]
    fn swarm_quorum_and_single_manager() {
        let q = rule("swarm_quorum_at_risk");
        let s = rule("swarm_single_manager");
        let mut mem = CounterMemory::default();
        let run = |managers: &[bool], mem: &mut CounterMemory| {
            let sw = SwarmView {
                managers: managers
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (format!("m{i}"), *r))
                    .collect(),
            };
            let c = evaluate::<NodeView>(&[q.clone(), s.clone()], &[], &sw, mem, 0);
            let mut names: Vec<_> = c.iter().map(|c| c.labels["alertname"].clone()).collect();
            names.sort();
            names
        };
        assert!(run(&[], &mut mem).is_empty(), "no engine, no swarm");
        assert!(run(&[true], &mut mem).is_empty(), "one manager by design");
        assert!(run(&[true, true, true], &mut mem).is_empty());
        assert!(
            run(&[true, true, false], &mut mem).is_empty(),
            "2 of 3 is a majority"
        );
        assert_eq!(
            run(&[true, false], &mut mem),
            ["ArmadaSwarmQuorumAtRisk", "ArmadaSwarmSingleManager"]
        );
        assert_eq!(
            run(&[true, true, false, false], &mut mem),
            ["ArmadaSwarmQuorumAtRisk"]
        );
        assert_eq!(
            run(&[true, false, false], &mut mem),
            ["ArmadaSwarmQuorumAtRisk", "ArmadaSwarmSingleManager"]
        );
    }

    #[test]
    fn scope_by_node_labels() {
        let mut r = rule("node_down");
        r.nodes.insert("zone".into(), "shelf-1".into());
        let mut a = up("a");
        a.status = Some(NodeStatus::Down);
        let mut b = a.clone();
        b.hostname = "b".into();
        b.node_id = "id-b".into();
        a.labels.insert("zone".into(), "shelf-1".into());
        b.labels.insert("zone".into(), "shelf-2".into());
        let c = evaluate(
            &[r.clone()],
            &[a.clone(), b.clone()],
            &SwarmView::default(),
            &mut CounterMemory::default(),
            0,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].labels["hostname"], "a");
        let mut by_board = rule("node_down");
        by_board.nodes.insert("board".into(), "pine64".into());
        assert!(evaluate(
            &[by_board],
            &[a, b],
            &SwarmView::default(),
            &mut CounterMemory::default(),
            0
        )
        .is_empty());
    }

    #[test]
    fn disabled_rules_say_nothing() {
        let mut r = rule("node_down");
        r.enabled = false;
        let mut n = up("a");
        n.status = Some(NodeStatus::Down);
        assert!(eval1(&r, &n).is_empty());
    }
}

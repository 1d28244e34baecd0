//! Alerts: the manager tells the operator when a board or a container needs them.
//!
//! Every `interval` (manager.toml `[alerts]`, default 5 s) the built-in rules run over
//! every node's status and latest snapshot and the swarm's managers; the state machine
//! turns what holds into pending/firing/resolved alerts with stable ids; the changes
//! and the notifications they cause commit to SQLite in one transaction; a delivery
//! loop hands each queued notification to its receiver, retrying with backoff until a
//! 2xx. SIGHUP re-reads manager.toml and keeps every alert and queued delivery.
//!
//! Layout:
//! - [`rules`]: the built-in rules and their defaults, pure, over [`rules::NodeView`].
//! - [`source`]: a node's latest snapshot made into a `NodeView`.
//! - [`state`]: the state machine, alert ids, silences' effect. Pure.
//! - [`durable`]: the SQLite tables (alerts, delivery queue, events, receiver stats).
//! - [`delivery`]: payloads (generic JSON, Alertmanager v4, ntfy), backoff, redaction.
//! - [`cli`]: `armada-manager alerts`, through the API.
//! - this file: [`AlertService`], the loops, the API view and the `/metrics` families.

pub mod cli;
pub mod delivery;
pub mod durable;
pub mod rules;
pub mod source;
pub mod state;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::api::AppState;
use crate::config::{ManagerConfig, ReceiverKind, Silence};
use crate::store::state::node_status;
use durable::{AlertDb, DbError, EventRow, ReceiverStats};
use rules::{CounterMemory, NodeView, SwarmView};
use state::{Alert, AlertState, StepPolicy};

pub const DB_FILE: &str = "alerts.sqlite";
/// `GET`: [`AlertsReport`] (admin).
pub const PATH_ALERTS: &str = "/v1/alerts";
/// `GET ?since=SEQ&limit=N`: `Vec<EventRow>`, the alert transitions (admin).
pub const PATH_ALERT_EVENTS: &str = "/v1/alerts/events";

/// A receiver as the API shows it: URL redacted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReceiverView {
    pub name: String,
    pub kind: ReceiverKind,
    pub url: String,
    #[serde(flatten)]
    pub stats: ReceiverStats,
}

/// `GET /v1/alerts`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AlertsReport {
    /// Pending and firing first (most severe first), then resolved, newest first.
    pub alerts: Vec<Alert>,
    pub receivers: Vec<ReceiverView>,
    pub silences: Vec<Silence>,
    pub config_file: Option<String>,
    pub evaluated_at_ms: Option<u64>,
    /// Notifications dropped after [`delivery::GIVE_UP_AFTER`] of failures.
    pub given_up_total: u64,
}

struct Inner {
    alerts: BTreeMap<String, Alert>,
    memory: CounterMemory,
    /// node id -> (last_report_ms the view was made from, the view). Views are shared
    /// (`Arc`) between this cache, the last evaluation's `nodes` and the pass under way:
    /// at 10,000 nodes each was a full copy (~10 MB) made at every pass.
    views: HashMap<String, (Option<u64>, Arc<NodeView>)>,
    evaluated_at_ms: Option<u64>,
    /// The nodes and swarm managers as of the last evaluation (for /metrics).
    nodes: Vec<Arc<NodeView>>,
    swarm: SwarmView,
}

pub struct AlertService {
    db: AlertDb,
    config: RwLock<Arc<ManagerConfig>>,
    inner: Mutex<Inner>,
    started_ms: u64,
    client: reqwest::Client,
    wake: tokio::sync::Notify,
    given_up: std::sync::atomic::AtomicU64,
    /// Set at shutdown: the loops finish what they are doing and return.
    stop: tokio::sync::watch::Sender<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("building the receivers' HTTP client: {0}")]
    Client(String),
}

impl AlertService {
    /// Opens `state_dir/alerts.sqlite` and loads the alerts it holds.
    pub fn open(state_dir: &Path, config: ManagerConfig, now_ms: u64) -> Result<Self, AlertsError> {
        let db = AlertDb::open(&state_dir.join(DB_FILE))?;
        let loaded = db.load(now_ms)?;
        let names: Vec<String> = config.receivers.iter().map(|r| r.name.clone()).collect();
        let dropped = db.forget_receivers_except(&names)?;
        if dropped > 0 {
            tracing::warn!("alerts: dropped {dropped} queued notifications of receivers no longer in the config");
        }
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("armada-manager/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AlertsError::Client(e.without_url().to_string()))?;
        Ok(AlertService {
            db,
            config: RwLock::new(Arc::new(config)),
            inner: Mutex::new(Inner {
                alerts: loaded.alerts,
                memory: loaded.memory,
                views: HashMap::new(),
                evaluated_at_ms: None,
                nodes: Vec::new(),
                swarm: SwarmView::default(),
            }),
            started_ms: now_ms,
            client,
            wake: tokio::sync::Notify::new(),
            given_up: Default::default(),
            stop: tokio::sync::watch::channel(false).0,
        })
    }

    pub fn config(&self) -> Arc<ManagerConfig> {
        self.config
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the config (SIGHUP): alerts, counters and the queue are kept.
    pub fn set_config(&self, cfg: ManagerConfig) -> Result<(), DbError> {
        let names: Vec<String> = cfg.receivers.iter().map(|r| r.name.clone()).collect();
        let dropped = self.db.forget_receivers_except(&names)?;
        if dropped > 0 {
            tracing::warn!("alerts: dropped {dropped} queued notifications of removed receivers");
        }
        match self.config.write() {
            Ok(mut c) => *c = Arc::new(cfg),
            Err(p) => *p.into_inner() = Arc::new(cfg),
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Re-reads the config file; a bad file keeps the running config.
    pub fn reload(&self) -> Result<(), String> {
        let Some(path) = self.config().file.clone() else {
            return Err("no --config file to reload".into());
        };
        let cfg = ManagerConfig::load(&path).map_err(|e| e.to_string())?;
        self.set_config(cfg).map_err(|e| e.to_string())
    }

    /// One evaluation over these nodes at `now_ms`: state changes and the queued
    /// notifications are durable when it returns. Returns the notifications queued.
    pub fn evaluate<N: AsRef<NodeView> + Clone + Into<Arc<NodeView>>>(
        &self,
        nodes: &[N],
        swarm: &SwarmView,
        now_ms: u64,
    ) -> Result<usize, DbError> {
        let cfg = self.config();
        let mut inner = self.inner();
        // The alerts are worked on as a copy: they move only once the store has them. The
        // counter memory (tens of thousands of keys at 10,000 nodes) is not copied: it
        // moves in place and records which keys changed; a failed write leaves them
        // marked, so the next write that succeeds stores them as they are by then.
        let mut alerts = inner.alerts.clone();
        let conditions =
            rules::evaluate(&cfg.alerts.rules, nodes, swarm, &mut inner.memory, now_ms);
        let for_of = |key: &str| {
            cfg.alerts
                .rules
                .iter()
                .find(|r| r.key == key)
                .map_or(0, |r| r.for_ms)
        };
        let silenced = |labels: &BTreeMap<String, String>| {
            cfg.alerts
                .silences
                .iter()
                .any(|s| s.matches(labels, now_ms))
        };
        let policy = StepPolicy {
            for_ms: &for_of,
            silenced: &silenced,
            hold_resolutions: now_ms.saturating_sub(self.started_ms)
                < cfg.alerts.startup_grace.as_millis() as u64,
            resolved_retention_ms: cfg.alerts.resolved_retention.as_millis() as u64,
        };
        let out = state::step(&mut alerts, conditions, now_ms, &policy);
        let deliveries: Vec<(String, state::Notification)> = out
            .notifications
            .iter()
            .flat_map(|n| {
                cfg.receivers
                    .iter()
                    .filter(|r| delivery::routes_to(r, n))
                    .map(|r| (r.name.clone(), n.clone()))
            })
            .collect();
        let changed: Vec<&Alert> = out.changed.iter().filter_map(|id| alerts.get(id)).collect();
        let memory_changed = !inner.memory.dirty.0.is_empty();
        if !changed.is_empty()
            || !out.removed.is_empty()
            || !deliveries.is_empty()
            || memory_changed
        {
            self.db.commit_step(
                &changed,
                &out.removed,
                &out.transitions,
                &deliveries,
                memory_changed.then_some(&inner.memory),
                now_ms,
            )?;
            inner.memory.dirty.0.clear();
        }
        for t in &out.transitions {
            if t.to != AlertState::Pending {
                tracing::info!(
                    "alert {} {} {}: {}",
                    t.alertname,
                    t.to.as_str(),
                    t.alert_id,
                    t.summary
                );
            }
        }
        inner.alerts = alerts;
        inner.evaluated_at_ms = Some(now_ms);
        inner.swarm = swarm.clone();
        inner.nodes = nodes.iter().cloned().map(Into::into).collect();
        if !deliveries.is_empty() {
            self.wake.notify_one();
        }
        Ok(deliveries.len())
    }

    /// Node views from the store, re-parsing only snapshots that changed.
    ///
    /// The store's read lock (which its one writer, so every queued report, waits
    /// behind) is held only to compute each node's status and to take what changed since
    /// the last pass: a node whose last report, hostname, board, role and labels are
    /// those of its cached view takes that view back, moved, with nothing copied; only a
    /// new or changed node has its identity copied and, when it reported, its snapshot
    /// (an `Arc`) taken to parse outside the lock.
    pub fn gather(&self, app: &AppState, now_ms: u64) -> (Vec<Arc<NodeView>>, SwarmView) {
        struct Row {
            id: String,
            last: Option<u64>,
            status: protocol::wire::NodeStatus,
            dropped: u64,
            /// The view the last pass made for this node, if any.
            cached: Option<Arc<NodeView>>,
            /// hostname, board, role, labels: set unless `cached` holds them as they are.
            ident: Option<Ident>,
            /// The latest snapshot, when it is newer than `cached`.
            json: Option<Arc<str>>,
        }
        type Ident = (
            String,
            String,
            protocol::wire::Role,
            BTreeMap<String, String>,
        );
        // Taken, not copied: the pass below puts back what it still has.
        let mut cache = std::mem::take(&mut self.inner().views);
        let rows: Vec<Row> = {
            let st = app.store.read();
            let held = std::time::Instant::now();
            let held_cpu = thread_cpu_us();
            let rows: Vec<Row> = st
                .nodes
                .values()
                .map(|e| {
                    let r = &e.record;
                    let swarm_state = r
                        .swarm_node_id
                        .as_deref()
                        .and_then(|s| app.swarm.node_state(s));
                    let (id, made_from, cached) = match cache.remove_entry(&r.node_id) {
                        Some((id, (t, v))) => (id, Some(t), Some(v)),
                        None => (r.node_id.clone(), None, None),
                    };
                    let fresh = made_from != Some(e.last_report_ms);
                    let same = !fresh
                        && cached.as_ref().is_some_and(|v| {
                            v.hostname == r.facts.hostname
                                && v.board == r.facts.board
                                && v.role == r.facts.role
                                && v.labels == r.labels
                        });
                    Row {
                        id,
                        last: e.last_report_ms,
                        status: node_status(
                            now_ms,
                            r.report_interval_seconds,
                            e.last_report_ms,
                            swarm_state.as_deref(),
                            app.policy,
                        ),
                        dropped: e.agent_dropped_total,
                        cached,
                        ident: (!same).then(|| {
                            (
                                r.facts.hostname.clone(),
                                r.facts.board.clone(),
                                r.facts.role,
                                r.labels.clone(),
                            )
                        }),
                        json: if fresh { e.latest_json.clone() } else { None },
                    }
                })
                .collect();
            drop(st);
            tracing::debug!(
                "alerts: gather held the store's read lock {} µs ({} µs of CPU) over {} nodes",
                held.elapsed().as_micros(),
                thread_cpu_us().saturating_sub(held_cpu),
                rows.len()
            );
            rows
        };
        // What is left in `cache` are nodes the store no longer has.
        drop(cache);
        let mut views = Vec::with_capacity(rows.len());
        let mut kept = HashMap::with_capacity(rows.len());
        for row in rows {
            let mut v = match (&row.json, row.cached) {
                (Some(j), _) => Arc::new(source::view_from_snapshot(j).unwrap_or_default()),
                (None, Some(v)) => v,
                (None, None) => Arc::new(NodeView::default()),
            };
            // A cached view is shared with the last evaluation's nodes: it is copied
            // (make_mut) only when something in it changes, which most passes nothing does.
            if let Some((hostname, board, role, labels)) = row.ident {
                let m = Arc::make_mut(&mut v);
                m.hostname = hostname;
                m.board = board;
                m.role = role;
                m.labels = labels;
            }
            if v.node_id != row.id
                || v.status != Some(row.status)
                || v.agent_dropped_total != row.dropped
            {
                let m = Arc::make_mut(&mut v);
                m.node_id.clone_from(&row.id);
                m.status = Some(row.status);
                m.agent_dropped_total = row.dropped;
            }
            kept.insert(row.id, (row.last, v.clone()));
            views.push(v);
        }
        {
            let mut inner = self.inner();
            inner.views = kept;
        }
        views.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        (
            views,
            SwarmView {
                managers: app.swarm.managers(),
            },
        )
    }

    /// Tries every due delivery once; returns how many succeeded.
    pub async fn deliver_due(&self, now_ms: u64) -> Result<usize, DbError> {
        let cfg = self.config();
        let due = self.db.due(now_ms)?;
        let mut ok = 0;
        for d in due {
            let Some(r) = cfg.receivers.iter().find(|r| r.name == d.receiver) else {
                self.db.abandon(d.seq)?;
                continue;
            };
            if now_ms.saturating_sub(d.created_ms) > delivery::GIVE_UP_AFTER.as_millis() as u64 {
                tracing::error!(
                    "alerts: giving up on {} {} for receiver {} after {} attempts",
                    d.notification
                        .alert
                        .labels
                        .get("alertname")
                        .map_or("", |s| s.as_str()),
                    d.notification.alert.id,
                    r.name,
                    d.attempts
                );
                self.given_up
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.db.abandon(d.seq)?;
                continue;
            }
            match delivery::send(&self.client, r, &d.notification).await {
                Ok(()) => {
                    let now = crate::now_ms();
                    self.db.delivered(d.seq, &r.name, now)?;
                    tracing::info!(
                        "alerts: delivered {} {} ({}) to {}",
                        d.notification
                            .alert
                            .labels
                            .get("alertname")
                            .map_or("", |s| s.as_str()),
                        d.notification.alert.state.as_str(),
                        d.notification.alert.id,
                        r.name
                    );
                    ok += 1;
                }
                Err(e) => {
                    let wait = delivery::backoff(d.attempts + 1);
                    let now = crate::now_ms();
                    tracing::warn!(
                        "alerts: receiver {} ({}): {e}; retrying in {} s",
                        r.name,
                        delivery::redact(&r.url),
                        wait.as_secs()
                    );
                    self.db
                        .failed(d.seq, &r.name, &e, now + wait.as_millis() as u64, now)?;
                }
            }
        }
        Ok(ok)
    }

    pub fn report(&self) -> Result<AlertsReport, DbError> {
        let cfg = self.config();
        let stats = self.db.receiver_stats()?;
        let mut receivers: Vec<ReceiverView> = cfg
            .receivers
            .iter()
            .map(|r| ReceiverView {
                name: r.name.clone(),
                kind: r.kind,
                url: delivery::redact(&r.url),
                stats: stats
                    .iter()
                    .find(|s| s.name == r.name)
                    .cloned()
                    .unwrap_or_else(|| ReceiverStats {
                        name: r.name.clone(),
                        ..Default::default()
                    }),
            })
            .collect();
        receivers.sort_by(|a, b| a.name.cmp(&b.name));
        let inner = self.inner();
        let mut alerts: Vec<Alert> = inner.alerts.values().cloned().collect();
        alerts.sort_by(|a, b| {
            let rank = |a: &Alert| match a.state {
                AlertState::Firing => 0,
                AlertState::Pending => 1,
                AlertState::Resolved => 2,
            };
            rank(a)
                .cmp(&rank(b))
                .then(b.severity.cmp(&a.severity))
                .then(b.resolved_at_ms.cmp(&a.resolved_at_ms))
                .then(a.active_since_ms.cmp(&b.active_since_ms))
        });
        Ok(AlertsReport {
            alerts,
            receivers,
            silences: cfg.alerts.silences.clone(),
            config_file: cfg.file.as_ref().map(|p| p.display().to_string()),
            evaluated_at_ms: inner.evaluated_at_ms,
            given_up_total: self.given_up.load(std::sync::atomic::Ordering::Relaxed),
        })
    }

    pub fn events(&self, since: i64, limit: u32) -> Result<Vec<EventRow>, DbError> {
        self.db.events(since, limit.clamp(1, 1000))
    }

    /// `ALERTS{alertname, alertstate, severity, ...}` (as Prometheus's own) and the
    /// receivers' delivery families.
    pub fn render_metrics(&self, out: &mut String) {
        out.push_str("# HELP ALERTS Alerts pending or firing in armada-manager (1 per alert).\n# TYPE ALERTS gauge\n");
        {
            let inner = self.inner();
            for a in inner
                .alerts
                .values()
                .filter(|a| a.state != AlertState::Resolved)
            {
                out.push_str("ALERTS{");
                let mut first = true;
                let mut label = |out: &mut String, k: &str, v: &str| {
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                };
                for (k, v) in &a.labels {
                    label(out, k, v);
                }
                label(out, "alertstate", a.state.as_str());
                label(out, "severity", a.severity.as_str());
                out.push_str("} 1\n");
            }
            // What the rules saw, so Prometheus users' rules (deploy/prometheus/
            // armada-rules.yml) can say the same: per-node status, drops, managers.
            let views: Vec<&NodeView> = inner.nodes.iter().map(|v| &**v).collect();
            let node = |v: &NodeView| {
                format!(
                    "node=\"{}\",hostname=\"{}\",board=\"{}\"",
                    escape_label(&v.node_id),
                    escape_label(&v.hostname),
                    escape_label(&v.board)
                )
            };
            out.push_str("# HELP armada_manager_node_status The node's status as the manager's alert rules saw it last (1 for the status it has).\n# TYPE armada_manager_node_status gauge\n");
            for v in &views {
                if let Some(st) = v.status {
                    let st = serde_json::to_value(st)
                        .ok()
                        .and_then(|s| s.as_str().map(String::from))
                        .unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "armada_manager_node_status{{{},status=\"{st}\"}} 1",
                        node(v)
                    );
                }
            }
            out.push_str("# HELP armada_manager_agent_dropped_reports_total Reports the node's agent dropped from its full backlog since it started, as it last said.\n# TYPE armada_manager_agent_dropped_reports_total counter\n");
            for v in &views {
                let _ = writeln!(
                    out,
                    "armada_manager_agent_dropped_reports_total{{{}}} {}",
                    node(v),
                    v.agent_dropped_total
                );
            }
            out.push_str("# HELP armada_manager_swarm_manager_reachable Swarm managers as the manager's engine sees them: reachable by Raft (1) or not (0).\n# TYPE armada_manager_swarm_manager_reachable gauge\n");
            for (host, r) in &inner.swarm.managers {
                let _ = writeln!(
                    out,
                    "armada_manager_swarm_manager_reachable{{hostname=\"{}\"}} {}",
                    escape_label(host),
                    u8::from(*r)
                );
            }
        }
        let Ok(report) = self.report() else { return };
        out.push_str("# HELP armada_alert_notifications_total Notification attempts per receiver and result.\n# TYPE armada_alert_notifications_total counter\n");
        for r in &report.receivers {
            let n = escape_label(&r.name);
            let _ = writeln!(
                out,
                "armada_alert_notifications_total{{receiver=\"{n}\",result=\"delivered\"}} {}",
                r.stats.delivered
            );
            let _ = writeln!(
                out,
                "armada_alert_notifications_total{{receiver=\"{n}\",result=\"failed\"}} {}",
                r.stats.failed_attempts
            );
        }
        out.push_str("# HELP armada_alert_queue_notifications Notifications waiting for delivery per receiver.\n# TYPE armada_alert_queue_notifications gauge\n");
        for r in &report.receivers {
            let _ = writeln!(
                out,
                "armada_alert_queue_notifications{{receiver=\"{}\"}} {}",
                escape_label(&r.name),
                r.stats.queued
            );
        }
        out.push_str("# HELP armada_alert_receiver_last_error_timestamp_seconds When a receiver last failed (0: never).\n# TYPE armada_alert_receiver_last_error_timestamp_seconds gauge\n");
        for r in &report.receivers {
            let _ = writeln!(
                out,
                "armada_alert_receiver_last_error_timestamp_seconds{{receiver=\"{}\"}} {}",
                escape_label(&r.name),
                r.stats.last_error_ms.unwrap_or(0) as f64 / 1000.0
            );
        }
        let _ = write!(out, "# HELP armada_alert_notifications_given_up_total Notifications dropped after a day of failed attempts.\n# TYPE armada_alert_notifications_given_up_total counter\narmada_alert_notifications_given_up_total {}\n", report.given_up_total);
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The running loops; [`AlertTasks::stop`] ends them at shutdown.
pub struct AlertTasks {
    svc: Arc<AlertService>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl AlertTasks {
    /// Lets a delivery in flight finish (at most 5 s), so a clean restart sends no
    /// notification twice; then ends the loops.
    pub async fn stop(self) {
        let _ = self.svc.stop.send(true);
        for t in self.tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

/// Starts the evaluation, delivery and SIGHUP loops.
pub fn spawn(app: Arc<AppState>) -> AlertTasks {
    let svc = app.alerts.clone();
    AlertTasks {
        tasks: vec![
            tokio::spawn(evaluation_loop(app)),
            tokio::spawn(delivery_loop(svc.clone())),
            tokio::spawn(reload_on_sighup(svc.clone())),
        ],
        svc,
    }
}

/// A pass over at least this many nodes, or that queues at least this many
/// notifications, hands freed heap back after it.
const TRIM_AFTER_NODES: usize = 1000;
const TRIM_AFTER_QUEUED: usize = 256;

/// This thread's CPU time in µs: a lock hold's cost, whatever else the machine runs.
fn thread_cpu_us() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes only the timespec it is given.
        if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0 {
            return ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000;
        }
    }
    0
}

/// Hands freed heap pages back to the system.
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; it touches no live memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Sleeps `d`; false when the service is stopping.
async fn pause(stop: &mut tokio::sync::watch::Receiver<bool>, d: Duration) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => !*stop.borrow(),
        _ = stop.changed() => false,
    }
}

async fn evaluation_loop(app: Arc<AppState>) {
    let mut stop = app.alerts.stop.subscribe();
    let mut first = true;
    loop {
        let interval = app.alerts.config().alerts.interval;
        let a = app.clone();
        let r = tokio::task::spawn_blocking(move || {
            let now = crate::now_ms();
            let (nodes, swarm) = a.alerts.gather(&a, now);
            let r = a.alerts.evaluate(&nodes, &swarm, now);
            // A pass over thousands of nodes frees as much as it builds (the first one
            // parses every snapshot and, on an old store whose nodes are all silent,
            // fires an alert for each), and glibc keeps freed heap mapped: hand it back
            // now, not at the server's next 30 s trim.
            if first
                || nodes.len() >= TRIM_AFTER_NODES
                || matches!(r, Ok(n) if n >= TRIM_AFTER_QUEUED)
            {
                drop(nodes);
                let t = std::time::Instant::now();
                return_freed_memory();
                tracing::debug!("alerts: heap trimmed in {} µs", t.elapsed().as_micros());
            }
            r
        })
        .await;
        first = false;
        match r {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!("alerts: evaluation not stored: {e}"),
            Err(e) => tracing::error!("alerts: evaluation failed: {e}"),
        }
        if !pause(&mut stop, interval).await {
            return;
        }
    }
}

async fn delivery_loop(svc: Arc<AlertService>) {
    let mut stop = svc.stop.subscribe();
    loop {
        if let Err(e) = svc.deliver_due(crate::now_ms()).await {
            tracing::error!("alerts: delivery queue: {e}");
        }
        // Woken by new notifications; otherwise a second is the retry resolution.
        tokio::select! {
            _ = svc.wake.notified() => {}
            ok = pause(&mut stop, Duration::from_secs(1)) => if !ok { return },
        }
        if *stop.borrow() {
            return;
        }
    }
}

async fn reload_on_sighup(svc: Arc<AlertService>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("alerts: cannot listen for SIGHUP; config reload needs a restart");
        return;
    };
    let mut stop = svc.stop.subscribe();
    loop {
        tokio::select! {
            r = hup.recv() => if r.is_none() { return },
            _ = stop.changed() => return,
        }
        match svc.reload() {
            Ok(()) => {
                let c = svc.config();
                tracing::info!(
                    "alerts: reloaded {} ({} receivers, {} silences); alert state kept",
                    c.file
                        .as_deref()
                        .map(Path::display)
                        .map(|d| d.to_string())
                        .unwrap_or_default(),
                    c.receivers.len(),
                    c.alerts.silences.len()
                );
            }
            Err(e) => tracing::error!("alerts: reload refused, keeping the running config: {e}"),
        }
    }
}

/// The config the manager starts with: the file if given (errors are fatal at start).
pub fn load_config(path: Option<&PathBuf>) -> Result<ManagerConfig, crate::config::ConfigError> {
    match path {
        Some(p) => ManagerConfig::load(p),
        None => Ok(ManagerConfig::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::wire::NodeStatus;

    fn node(host: &str, status: NodeStatus) -> NodeView {
        NodeView {
            node_id: format!("id-{host}"),
            hostname: host.into(),
            board: "pine64".into(),
            status: Some(status),
            ..Default::default()
        }
    }

    fn config_with_receiver() -> ManagerConfig {
        ManagerConfig::parse(
            "[alerts]\nstartup_grace = \"0s\"\n[[receivers]]\nname = \"r\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\n",
            "t.toml",
        )
        .unwrap()
    }

    #[test]
    fn restart_keeps_firing_alerts_and_queues_no_second_firing() {
        let dir = tempfile::tempdir().unwrap();
        let sw = SwarmView::default();
        {
            let s = AlertService::open(dir.path(), config_with_receiver(), 0).unwrap();
            assert_eq!(
                s.evaluate(&[node("a", NodeStatus::Down)], &sw, 1_000)
                    .unwrap(),
                1
            );
        }
        // The manager restarts while the node is still down: nothing new to say.
        let s = AlertService::open(dir.path(), config_with_receiver(), 5_000).unwrap();
        assert_eq!(
            s.evaluate(&[node("a", NodeStatus::Down)], &sw, 6_000)
                .unwrap(),
            0
        );
        let due = s.db.due(10_000).unwrap();
        assert_eq!(due.len(), 1, "the first firing is still queued, once");
        assert_eq!(due[0].notification.alert.state, AlertState::Firing);
        // The node is back: the resolution is queued behind the firing.
        assert_eq!(
            s.evaluate(&[node("a", NodeStatus::Up)], &sw, 7_000)
                .unwrap(),
            1
        );
        let r = s.report().unwrap();
        assert_eq!(r.alerts[0].state, AlertState::Resolved);
        assert_eq!(r.receivers[0].stats.queued, 2);
        assert_eq!(r.receivers[0].url, "http://127.0.0.1:9/");
    }

    #[test]
    fn startup_grace_holds_resolutions() {
        let dir = tempfile::tempdir().unwrap();
        let sw = SwarmView::default();
        let mut cfg = config_with_receiver();
        cfg.alerts.startup_grace = Duration::from_secs(30);
        {
            let s = AlertService::open(dir.path(), cfg.clone(), 0).unwrap();
            s.evaluate(&[node("a", NodeStatus::Down)], &sw, 40_000)
                .unwrap();
        }
        let s = AlertService::open(dir.path(), cfg, 100_000).unwrap();
        // Just after start the node looks up (the swarm was not polled yet): held.
        assert_eq!(
            s.evaluate(&[node("a", NodeStatus::Up)], &sw, 101_000)
                .unwrap(),
            0
        );
        assert_eq!(s.report().unwrap().alerts[0].state, AlertState::Firing);
        assert_eq!(
            s.evaluate(&[node("a", NodeStatus::Up)], &sw, 131_000)
                .unwrap(),
            1
        );
        assert_eq!(s.report().unwrap().alerts[0].state, AlertState::Resolved);
    }

    #[test]
    fn reload_keeps_state_and_changes_rules() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manager.toml");
        std::fs::write(&path, "[alerts]\nstartup_grace = \"0s\"\n").unwrap();
        let cfg = ManagerConfig::load(&path).unwrap();
        let s = AlertService::open(dir.path(), cfg, 0).unwrap();
        let sw = SwarmView::default();
        let mut hot = node("a", NodeStatus::Up);
        hot.max_temperature_celsius = Some(70.0);
        let down = node("b", NodeStatus::Down);
        s.evaluate(&[hot.clone(), down.clone()], &sw, 1_000)
            .unwrap();
        assert_eq!(s.report().unwrap().alerts.len(), 1, "70 °C is below 75");
        std::fs::write(
            &path,
            "[alerts]\nstartup_grace = \"0s\"\n[alerts.rules.temperature]\nthreshold = 60.0\nfor = \"0s\"\n",
        )
        .unwrap();
        s.reload().unwrap();
        s.evaluate(&[hot.clone(), down.clone()], &sw, 2_000)
            .unwrap();
        let r = s.report().unwrap();
        assert_eq!(r.alerts.len(), 2);
        let down_alert = r
            .alerts
            .iter()
            .find(|a| a.labels["alertname"] == "ArmadaNodeDown")
            .unwrap();
        assert_eq!(
            down_alert.fired_at_ms,
            Some(1_000),
            "kept across the reload"
        );
        // A broken file is refused and the running config stays.
        std::fs::write(&path, "[alerts]\nintervl = 3\n").unwrap();
        let e = s.reload().unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        assert_eq!(
            s.config()
                .alerts
                .rules
                .iter()
                .find(|r| r.key == "temperature")
                .unwrap()
                .threshold,
            60.0
        );
    }

    #[test]
    fn silences_suppress_delivery_but_not_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config_with_receiver();
        cfg.alerts.silences.push(Silence {
            matchers: BTreeMap::from([("hostname".to_string(), "a".to_string())]),
            starts_at_ms: None,
            ends_at_ms: 10_000,
            comment: "maintenance".into(),
        });
        let s = AlertService::open(dir.path(), cfg, 0).unwrap();
        let sw = SwarmView::default();
        assert_eq!(
            s.evaluate(&[node("a", NodeStatus::Down)], &sw, 1_000)
                .unwrap(),
            0
        );
        let r = s.report().unwrap();
        assert!(r.alerts[0].silenced);
        // The window ends while it still fires: told now.
        assert_eq!(
            s.evaluate(&[node("a", NodeStatus::Down)], &sw, 10_000)
                .unwrap(),
            1
        );
    }

    #[test]
    fn metrics_show_pending_and_firing() {
        let dir = tempfile::tempdir().unwrap();
        let s = AlertService::open(dir.path(), config_with_receiver(), 0).unwrap();
        let mut hot = node("a", NodeStatus::Up);
        hot.max_temperature_celsius = Some(90.0);
        s.evaluate(
            &[hot, node("b", NodeStatus::Down)],
            &SwarmView::default(),
            1_000,
        )
        .unwrap();
        let mut out = String::new();
        s.render_metrics(&mut out);
        assert!(out.contains("ALERTS{alertname=\"ArmadaNodeDown\",board=\"pine64\",hostname=\"b\",node=\"id-b\",alertstate=\"firing\",severity=\"critical\"} 1"), "{out}");
        assert!(
            out.contains("alertname=\"ArmadaHighTemperature\"")
                && out.contains("alertstate=\"pending\""),
            "{out}"
        );
        assert!(
            out.contains("armada_alert_queue_notifications{receiver=\"r\"} 1"),
            "{out}"
        );
    }
}

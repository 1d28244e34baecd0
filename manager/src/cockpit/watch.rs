//! The cockpit's background loop, every [`WATCH_SECONDS`]: turns what changed into
//! events.
//!
//! - node_down / node_up: from the store's liveness status (the same one `/v1/nodes`
//!   shows), on a change to or from `down`. The first pass after start only learns the
//!   current statuses.
//! - task_failed: the engine's failed or rejected tasks of the last 15 minutes, stored
//!   once per task id.
//! - alert_firing / alert_resolved: copied from the alerts' own transition log (its
//!   `seq` is the cursor, kept in `cockpit.sqlite`, and the dedupe key).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use protocol::wire::NodeStatus;

use super::events::NewEvent;
use crate::alerts::state::AlertState;
use crate::api::AppState;

pub const WATCH_SECONDS: u64 = 5;
/// Alert transitions copied per pass at most (500 per read, 10 reads).
const ALERT_READS: usize = 10;

pub fn spawn(app: Arc<AppState>) {
    tokio::spawn(async move {
        let mut statuses: Option<HashMap<String, NodeStatus>> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(WATCH_SECONDS));
        loop {
            tick.tick().await;
            if app.cockpit.stopping() {
                return;
            }
            // Sessions of a rotated admin token or past their expiry go (memory).
            app.cockpit
                .sessions
                .sweep(&app.cluster.admin_token_hash(), crate::now_ms());
            let a = app.clone();
            let prev = statuses.take();
            let (next, evs) = tokio::task::spawn_blocking(move || {
                let now = crate::now_ms();
                let (next, mut evs) = liveness(&a, prev, now);
                evs.extend(alert_events(&a));
                (next, evs)
            })
            .await
            .unwrap_or_default();
            statuses = Some(next);
            let mut evs = evs;
            evs.extend(task_events(&app).await);
            app.cockpit.record(evs).await;
        }
    });
}

fn liveness(
    app: &AppState,
    prev: Option<HashMap<String, NodeStatus>>,
    now: u64,
) -> (HashMap<String, NodeStatus>, Vec<NewEvent>) {
    let now_status: Vec<(String, String, NodeStatus, Option<u64>)> = {
        let st = app.store.read();
        st.nodes
            .values()
            .map(|e| {
                let s = app.summary(e, now);
                (s.node_id, s.hostname, s.status, s.last_report_ms)
            })
            .collect()
    };
    let mut evs = Vec::new();
    if let Some(prev) = &prev {
        for (id, host, status, last) in &now_status {
            let Some(was) = prev.get(id) else { continue };
            let (kind, message) = match (was, status) {
                (NodeStatus::Down, NodeStatus::Down) => continue,
                (_, NodeStatus::Down) => (
                    "node_down",
                    match last {
                        Some(l) => format!(
                            "{host} is down: last report {} s ago",
                            now.saturating_sub(*l) / 1000
                        ),
                        None => format!("{host} is down"),
                    },
                ),
                (NodeStatus::Down, NodeStatus::Up) => ("node_up", format!("{host} is up again")),
                _ => continue,
            };
            evs.push(NewEvent {
                at_ms: now,
                kind,
                node_id: Some(id.clone()),
                hostname: Some(host.clone()),
                message,
                ..Default::default()
            });
        }
    }
    let mut next: HashMap<String, NodeStatus> = now_status
        .into_iter()
        .map(|(id, _, s, _)| (id, s))
        .collect();
    // A node still Down stays Down until it is Up (stale in between is no recovery).
    if let Some(prev) = prev {
        for (id, s) in next.iter_mut() {
            if prev.get(id) == Some(&NodeStatus::Down) && *s == NodeStatus::Stale {
                *s = NodeStatus::Down;
            }
        }
    }
    (next, evs)
}

fn alert_events(app: &AppState) -> Vec<NewEvent> {
    let log = &app.cockpit.events;
    let mut cursor = match log.cursor("alerts") {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("cockpit events: {e}");
            return Vec::new();
        }
    };
    let mut evs = Vec::new();
    for _ in 0..ALERT_READS {
        let rows = match app.alerts.events(cursor, 500) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("reading the alerts' transitions: {e}");
                break;
            }
        };
        let Some(last) = rows.last().map(|r| r.seq) else {
            break;
        };
        for r in rows {
            let t = &r.transition;
            let kind = match t.to {
                AlertState::Firing => "alert_firing",
                AlertState::Resolved => "alert_resolved",
                AlertState::Pending => continue,
            };
            evs.push(NewEvent {
                at_ms: t.at_ms,
                kind,
                node_id: t.labels.get("node").cloned(),
                hostname: t.labels.get("hostname").cloned(),
                service: t.labels.get("service").cloned(),
                message: format!("{} {}: {}", t.alertname, t.to.as_str(), t.summary),
                dedupe: Some(format!("alert:{}", r.seq)),
            });
        }
        cursor = last;
    }
    if let Err(e) = log.set_cursor("alerts", cursor) {
        tracing::warn!("cockpit events: {e}");
    }
    evs
}

async fn task_events(app: &AppState) -> Vec<NewEvent> {
    if !app.cockpit.engine.enabled() {
        return Vec::new();
    }
    let engine = match app.cockpit.engine.view().await {
        Ok(v) => v,
        Err(e) => {
            tracing::debug!("cockpit: engine lists: {e}");
            return Vec::new();
        }
    };
    let armada = super::handlers::armada_of_swarm(app);
    let names = super::views::Names::new(&engine, armada);
    let now = crate::now_ms();
    let hostnames = names.hostname_of_swarm.clone();
    super::views::shown_tasks(&engine, &names, now)
        .into_iter()
        .filter(|t| matches!(t.state.as_str(), "failed" | "rejected"))
        .map(|t| {
            let host = t
                .swarm_node_id
                .as_ref()
                .and_then(|s| hostnames.get(s))
                .cloned();
            let svc = t
                .service_name
                .clone()
                .unwrap_or_else(|| t.service_id.clone());
            NewEvent {
                at_ms: t.updated_ms.unwrap_or(now),
                kind: "task_failed",
                message: format!(
                    "task {svc}{} {} on {}: {}",
                    t.slot.map(|s| format!(".{s}")).unwrap_or_default(),
                    t.state,
                    host.as_deref().unwrap_or("no node"),
                    t.error.as_deref().unwrap_or("no error given")
                ),
                node_id: t.node_id.clone(),
                hostname: host,
                service: Some(svc),
                dedupe: Some(format!("task:{}", t.id)),
            }
        })
        .collect()
}

//! The operator's cockpit API (issue #13): what the dashboard's four views and its
//! actions are built from. The contract is `/work/notes/CONTRACT-cockpit.md`'s, the
//! served description [`openapi`]'s.
//!
//! Layout:
//! - [`session`]: the admin token exchanged for an HttpOnly session cookie, CSRF tokens,
//!   expiry, logout, sessions ended by admin-token rotation.
//! - [`engine`]: the engine's node/service/task lists behind a short cache, and the
//!   actions that change them (availability, scale, force update).
//! - [`views`]: the cluster, service and task shapes made from the store and the engine.
//! - [`series`]: a node's charts over a time range from the store's history tiers.
//! - [`events`]: the durable event history and audit log (`cockpit.sqlite`).
//! - [`watch`]: the loop turning liveness, failed tasks and alert transitions into
//!   events.
//! - [`handlers`]: the HTTP handlers and their routes.
//! - [`openapi`]: the OpenAPI 3 description of the whole API, served as is.

pub mod engine;
pub mod events;
pub mod handlers;
pub mod openapi;
pub mod series;
pub mod session;
pub mod views;
pub mod watch;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::limits::Limits;
use crate::swarm::SwarmLink;

pub use handlers::routes;

/// The cockpit's state, held by [`crate::api::AppState`].
pub struct Cockpit {
    pub sessions: session::Sessions,
    pub engine: engine::Engine,
    /// Health badges per node, keyed by the report they were made from: a snapshot is
    /// parsed once, not once per cluster view.
    badges: Mutex<HashMap<String, (u64, views::Badges)>>,
    pub events: Arc<events::EventLog>,
    stopping: AtomicBool,
}

impl Cockpit {
    /// Opens `cockpit.sqlite` in the state dir.
    pub fn open(
        swarm: Arc<SwarmLink>,
        limits: &Limits,
        state_dir: &Path,
    ) -> Result<Self, events::EventsError> {
        Ok(Cockpit {
            sessions: session::Sessions::new(limits.session_ttl, limits.max_sessions),
            engine: engine::Engine::new(swarm),
            badges: Mutex::new(HashMap::new()),
            events: Arc::new(events::EventLog::open(state_dir)?),
            stopping: AtomicBool::new(false),
        })
    }

    /// Ends the watch loop (at shutdown).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Records events off the async workers; a failure is logged, never the caller's.
    pub async fn record(&self, evs: Vec<events::NewEvent>) {
        if evs.is_empty() {
            return;
        }
        let log = self.events.clone();
        match tokio::task::spawn_blocking(move || log.record(&evs)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("cockpit events: {e}"),
            Err(e) => tracing::warn!("cockpit events: {e}"),
        }
    }

    /// One admin action: an audit entry and an `admin_action` event.
    pub async fn audit(
        &self,
        actor: String,
        action: &str,
        target: &str,
        params: serde_json::Value,
        error: Option<String>,
    ) {
        let now = crate::now_ms();
        let entry = events::AuditEntry {
            seq: 0,
            at_ms: now,
            actor: actor.clone(),
            action: action.to_string(),
            target: target.to_string(),
            params: params.clone(),
            result: if error.is_none() { "ok" } else { "error" }.to_string(),
            error: error.clone(),
        };
        let log = self.events.clone();
        match tokio::task::spawn_blocking(move || log.audit(&entry)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("cockpit audit: {e}"),
            Err(e) => tracing::warn!("cockpit audit: {e}"),
        }
        let message = match &error {
            None => format!("{actor}: {action} {target} {params}"),
            Some(e) => format!("{actor}: {action} {target} {params} failed: {e}"),
        };
        self.record(vec![events::NewEvent {
            at_ms: now,
            kind: "admin_action",
            node_id: None,
            hostname: None,
            service: None,
            message,
            dedupe: None,
        }])
        .await;
    }

    /// The badges of `node_id`'s latest snapshot (reported at `report_ms`).
    pub fn badges(&self, node_id: &str, report_ms: u64, latest: &str) -> views::Badges {
        if let Ok(m) = self.badges.lock() {
            if let Some((at, b)) = m.get(node_id) {
                if *at == report_ms {
                    return b.clone();
                }
            }
        }
        let b = crate::alerts::source::view_from_snapshot(latest)
            .map(|v| views::badges(&v))
            .unwrap_or_default();
        if let Ok(mut m) = self.badges.lock() {
            m.insert(node_id.to_string(), (report_ms, b.clone()));
        }
        b
    }

    /// Forgets the badges of nodes no longer registered.
    pub fn retain_badges(&self, keep: impl Fn(&str) -> bool) {
        if let Ok(mut m) = self.badges.lock() {
            m.retain(|k, _| keep(k));
        }
    }
}

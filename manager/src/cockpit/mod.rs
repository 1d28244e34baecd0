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
//! - [`handlers`]: the HTTP handlers and their routes.

pub mod engine;
pub mod handlers;
pub mod session;
pub mod views;

use std::collections::HashMap;
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
}

impl Cockpit {
    pub fn new(swarm: Arc<SwarmLink>, limits: &Limits) -> Self {
        Cockpit {
            sessions: session::Sessions::new(limits.session_ttl, limits.max_sessions),
            engine: engine::Engine::new(swarm),
            badges: Mutex::new(HashMap::new()),
        }
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

//! armada-manager: the cluster's control point, run on the manager board (or any host).
//!
//! It trades bootstrap tokens for per-node credentials, hands out the swarm join token,
//! labels swarm nodes, keeps every node's reports in an embedded store, and serves the
//! REST API, Prometheus federation and a small dashboard, all over HTTPS with the
//! certificate made by `armada cluster init`. It is not a metrics database: it keeps
//! each node's latest snapshot and a downsampled summary history, nothing more.
//!
//! Layout:
//! - [`cluster`]: the cluster folder (CA, server chain, bootstrap tokens, admin token),
//!   and the token file watcher that honours `armada cluster token rotate|revoke`.
//! - [`auth`]: who is calling (admin, node credential, bootstrap token): pure checks.
//! - [`store`]: the embedded store: SQLite (WAL, one writer, group commit) mirrored in
//!   memory; registry decisions, dedupe, history downsampling, node status, backups.
//! - [`swarm`]: the local Docker Engine through bollard: swarm init, join tokens,
//!   node states, labels.
//! - [`api`]: the HTTP handlers and their error mapping.
//! - [`server`]: the TLS listener, hyper's HTTP/1 per connection, graceful shutdown.
//! - [`connections`]: the connection cap (eviction of unauthenticated connections, a
//!   reserve for the admin) and each connection's deadline (handshake, headers, body,
//!   idle).
//! - [`gate`]: what is judged from a request's head before its handler: credentials
//!   first, registration rate per source; the node and stored snapshot caps.
//! - [`limits`]: every bound and timeout, with its default and why.
//! - [`headers`]: security headers on every answer, errors always as JSON.
//! - [`metrics`]: the manager's own counters and histogram, and the federation text.
//! - [`dashboard`]: the embedded web page, its script and style (served as files).
//! - [`client`]: `armada-manager nodes`: the operator's table and node removal.
//! - [`alerts`]: rules over node status and snapshots, pending/firing/resolved state,
//!   durable delivery to webhook, Alertmanager and ntfy receivers.
//! - [`cockpit`]: the operator's cockpit API: sessions and CSRF, the cluster, service
//!   and task views from the engine, history, events, audit and admin actions.
//! - [`config`]: `manager.toml` (`[alerts]`, `[[receivers]]`), reloaded on SIGHUP.
//!
//! Not part of the library: `src/sim.rs`, synthetic board snapshots, is compiled into
//! the load generator (`examples/loadgen.rs`) and the tests only.

pub mod alerts;
pub mod api;
pub mod auth;
pub mod client;
pub mod cluster;
pub mod cockpit;
pub mod config;
pub mod connections;
pub mod dashboard;
pub mod gate;
pub mod headers;
pub mod limits;
pub mod metrics;
pub mod server;
#[cfg(test)]
mod sim;
pub mod store;
pub mod swarm;

/// Milliseconds since the Unix epoch by this host's clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

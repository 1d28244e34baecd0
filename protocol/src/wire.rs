//! HTTP paths and bodies between agent and manager.
//!
//! All bodies are JSON. Reports travel gzip-compressed (`Content-Encoding: gzip`) as a
//! [`ReportBatch`], so an agent delivers its backlog in a few requests, oldest first.
//! Every endpoint except registration and `/v1/ca` needs `Authorization: Bearer <node
//! credential or admin token>`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::snapshot::Snapshot;

/// `GET`: the manager's CA certificate (PEM). The agent checks its SHA-256 against the
/// fingerprint in its bootstrap token before trusting anything else.
pub const PATH_CA: &str = "/v1/ca";
/// `GET`: liveness (`ok`). Authenticated like every endpoint but `/v1/ca` (public CA
/// certificate) and `/v1/register` (bootstrap token): admin token or node credential.
pub const PATH_HEALTH: &str = "/v1/health";
/// `POST` [`RegisterRequest`] -> [`RegisterResponse`].
pub const PATH_REGISTER: &str = "/v1/register";
/// `POST` gzip'd [`ReportBatch`] -> [`ReportAck`].
pub const PATH_REPORT: &str = "/v1/report";
/// `POST` [`JoinedRequest`] (node credential): the agent's engine joined the swarm as
/// this swarm node; the manager then labels it.
pub const PATH_JOINED: &str = "/v1/joined";
/// `GET` -> `Vec<NodeSummary>`.
pub const PATH_NODES: &str = "/v1/nodes";
/// `GET`: Prometheus text of every node's latest snapshot plus the manager's own metrics.
pub const PATH_METRICS: &str = "/metrics";

/// Role a board plays in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Worker,
    Manager,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Worker => "worker",
            Role::Manager => "manager",
        })
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "worker" => Ok(Role::Worker),
            "manager" => Ok(Role::Manager),
            other => Err(format!(
                "unknown role `{other}`: expected `worker` or `manager`"
            )),
        }
    }
}

/// What a node says about itself when it registers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeFacts {
    pub hostname: String,
    /// Board name from `armada.toml` (`rpi3`, `pine64`, ...).
    pub board: String,
    pub role: Role,
    /// `/etc/machine-id`, fresh per card at first boot.
    pub machine_id: String,
    /// `uname -m`, e.g. `aarch64`.
    pub arch: String,
    pub kernel: String,
    pub cpus: u32,
    pub memory_bytes: u64,
    pub docker_version: Option<String>,
    pub agent_version: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterRequest {
    pub protocol: u32,
    /// The bootstrap token, whole. Sent only over TLS pinned to the token's CA.
    pub token: String,
    pub facts: NodeFacts,
    /// Operator labels from `armada.toml`, applied to the swarm node as given.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub node_id: String,
    /// `armadanode1.<node id>.<secret>`; the manager keeps only its hash.
    pub credential: String,
    /// Docker Swarm worker join token (or manager token for role manager).
    pub swarm_join_token: String,
    /// `host:port` swarm addresses of the managers, from the manager's engine.
    pub swarm_managers: Vec<String>,
    /// The manager's clock (ms since the epoch): boards have no RTC, and a clock far in
    /// the past breaks TLS and swarm certificates.
    pub server_time_ms: u64,
    /// Report interval the manager wants.
    pub report_interval_seconds: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinedRequest {
    /// The local engine's `Swarm.NodeID` after `POST /swarm/join`.
    pub swarm_node_id: String,
}

/// One push: snapshots oldest first.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReportBatch {
    pub protocol: u32,
    pub snapshots: Vec<Snapshot>,
    /// Snapshots the agent dropped because its backlog was full, since it started.
    #[serde(default)]
    pub dropped_total: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReportAck {
    /// Snapshots stored durably by this request.
    pub accepted: u32,
    /// Snapshots already stored (a retried delivery).
    pub duplicates: u32,
}

/// Health of a node as the manager sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Registered, no report yet.
    Registered,
    Up,
    /// No report for three intervals.
    Stale,
    /// No report for the manager's down time.
    Down,
}

/// A row of `GET /v1/nodes`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeSummary {
    pub node_id: String,
    pub hostname: String,
    pub board: String,
    pub role: Role,
    pub arch: String,
    pub status: NodeStatus,
    pub swarm_node_id: Option<String>,
    /// The swarm's view of the node (`ready`, `down`, `unknown`), polled by the manager.
    pub swarm_state: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub registered_at_ms: u64,
    pub last_report_ms: Option<u64>,
    pub containers: Option<u32>,
    pub cpu_busy_ratio: Option<f64>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub temperature_celsius: Option<f64>,
}

/// `{"error": "..."}`: every 4xx/5xx body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

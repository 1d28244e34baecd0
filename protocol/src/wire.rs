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
/// `PUT` [`NodeLabels`] (node credential) -> [`NodeLabelsReply`]: the node's own label
/// set from `armada.toml`, replacing the one it registered with. The agent sends it at
/// start when the set differs from the last one the manager acknowledged, so an edited
/// `[labels]` reaches the manager and the swarm node without a new registration.
pub const PATH_LABELS: &str = "/v1/labels";
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
    /// The local engine's ID (`GET /info` -> `ID`). One registration per engine: two
    /// cards with the same engine ID (a baked `/etc/docker/key.json`) are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_id: Option<String>,
}

/// A registration proves itself with the bootstrap token (first registration) or, once
/// registered, with the node credential (re-registration after a `reregister` answer:
/// the manager lost its state but can still verify credentials from its cluster
/// material). Exactly one of `token` and `credential` is set.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterRequest {
    pub protocol: u32,
    /// The bootstrap token, whole. Sent only over TLS pinned to the token's CA. Empty
    /// when `credential` is set.
    #[serde(default)]
    pub token: String,
    /// The node's current credential, instead of the bootstrap token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    pub facts: NodeFacts,
    /// Operator labels from `armada.toml`, applied to the swarm node as given.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The local engine's swarm membership as the agent sees it now, if it is in one.
    /// Lets a manager that lost its state tie the node back to its swarm node, and
    /// refuse a node the operator removed from the swarm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm: Option<EngineSwarm>,
}

/// The local engine's `GET /info` -> `Swarm` (`NodeID`, `Cluster.ID`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineSwarm {
    pub node_id: String,
    /// The swarm's cluster ID; compared with [`RegisterResponse::swarm_cluster_id`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub node_id: String,
    /// `armadanode2.<node id>.<secret>.<mac>` (see `protocol::token`); the manager keeps
    /// only the hash of the secret, and verifies the MAC with its cluster key.
    pub credential: String,
    /// Docker Swarm WORKER join token: the bootstrap token never buys a manager's place
    /// (swarm managers are made by the operator).
    pub swarm_join_token: String,
    /// `host:port` swarm addresses of the managers, from the manager's engine.
    pub swarm_managers: Vec<String>,
    /// The manager's clock (ms since the epoch): boards have no RTC, and a clock far in
    /// the past breaks TLS and swarm certificates.
    pub server_time_ms: u64,
    /// Report interval the manager wants.
    pub report_interval_seconds: u32,
    /// The manager's swarm cluster ID. A worker whose engine is in a swarm with another
    /// cluster ID (the old swarm died with the old manager card) leaves it
    /// (`POST /swarm/leave?force=true`) and joins with `swarm_join_token`. Absent: a
    /// worker never leaves a swarm on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm_cluster_id: Option<String>,
    /// The swarm node IDs of the manager's swarm managers (`GET /info` ->
    /// `Swarm.RemoteManagers[].NodeID`). A WORKER's engine has no `Swarm.Cluster` in its
    /// `/info` (only managers see the cluster ID), but it lists its managers' node IDs in
    /// `Swarm.RemoteManagers`: none of these among them means the worker is in another
    /// (dead) swarm. Empty from older managers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub swarm_manager_node_ids: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinedRequest {
    /// The local engine's `Swarm.NodeID` after `POST /swarm/join`.
    pub swarm_node_id: String,
}

/// The node's whole label set (`[labels]` of `armada.toml`): keys it no longer sends are
/// taken off its swarm node, unless the operator owns them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLabels {
    pub labels: BTreeMap<String, String>,
}

/// What the manager did with a [`NodeLabels`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLabelsReply {
    pub node_id: String,
    /// The node's labels as the manager now stores them (the request's set).
    pub labels: BTreeMap<String, String>,
    /// The swarm node they were put on; `None` while the node has not joined (they are
    /// put on at `/v1/joined`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm_node_id: Option<String>,
    /// Keys the operator set or removed with the admin token (`nodes label`): the
    /// node's value for them is stored but not put on the swarm node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operator_keys: Vec<String>,
    /// Keys the node sent before and no longer does, taken off the swarm node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
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

/// `{"error": "...", "code": "..."}`: every 4xx/5xx body. `code` is set where the
/// caller must act on it: [`CODE_REREGISTER`], [`CODE_REVOKED`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// `409` on a report: the credential verifies but the manager no longer knows the node
/// (it lost its state). The agent registers again with its credential.
pub const CODE_REREGISTER: &str = "reregister";
/// `401`: the operator removed this node. The agent stops delivering and says so; it
/// never retries fast.
pub const CODE_REVOKED: &str = "revoked";

/// A label set as one line for logs and status output: `k=v, k=v`, or `none`.
pub fn format_labels(labels: &std::collections::BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "none".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body from a peer built before the re-adoption fields still parses, and the new
    /// optional fields are left out when unset (an old peer never sees them).
    #[test]
    fn new_fields_are_optional_both_ways() {
        let old_request = r#"{"protocol":1,"token":"armada1.x.y","facts":{"hostname":"pine-01",
            "board":"pine64","role":"worker","machine_id":"m1","arch":"aarch64","kernel":"6.1",
            "cpus":4,"memory_bytes":1,"docker_version":null,"agent_version":"0.1.0"}}"#;
        let r: RegisterRequest = serde_json::from_str(old_request).unwrap();
        assert_eq!(r.credential, None);
        assert_eq!(r.swarm, None);
        assert_eq!(r.facts.engine_id, None);
        let back = serde_json::to_string(&r).unwrap();
        assert!(
            !back.contains("credential") && !back.contains("engine_id"),
            "{back}"
        );

        let by_credential = r#"{"protocol":1,"credential":"armadanode2.n-1.a.b","facts":{"hostname":"h",
            "board":"b","role":"worker","machine_id":"m","arch":"a","kernel":"k","cpus":1,
            "memory_bytes":1,"docker_version":null,"agent_version":"v","engine_id":"E"},
            "swarm":{"node_id":"abc","cluster_id":"def"}}"#;
        let r: RegisterRequest = serde_json::from_str(by_credential).unwrap();
        assert_eq!(r.token, "");
        assert_eq!(r.credential.as_deref(), Some("armadanode2.n-1.a.b"));
        assert_eq!(r.facts.engine_id.as_deref(), Some("E"));
        assert_eq!(r.swarm.unwrap().cluster_id.as_deref(), Some("def"));

        let old_response = r#"{"node_id":"n","credential":"c","swarm_join_token":"t",
            "swarm_managers":[],"server_time_ms":1,"report_interval_seconds":10}"#;
        let r: RegisterResponse = serde_json::from_str(old_response).unwrap();
        assert_eq!(r.swarm_cluster_id, None);

        let e: ErrorBody = serde_json::from_str(r#"{"error":"gone"}"#).unwrap();
        assert_eq!(e.code, None);
        let e: ErrorBody = serde_json::from_str(r#"{"error":"who?","code":"reregister"}"#).unwrap();
        assert_eq!(e.code.as_deref(), Some(CODE_REREGISTER));
        let plain = serde_json::to_string(&ErrorBody {
            error: "x".into(),
            code: None,
        })
        .unwrap();
        assert_eq!(plain, r#"{"error":"x"}"#);
    }
}

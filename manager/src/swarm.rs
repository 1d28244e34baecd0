//! The manager's local Docker Engine, reached only over its unix socket (bollard).
//!
//! - Join information: the WORKER join token (`GET /swarm`: the manager token is never
//!   read, so no registration can hand it out), the swarm's cluster ID, this engine's
//!   own node ID and the managers' swarm addresses (`GET /info`), cached and refreshed
//!   every poll, so a burst of registrations does not hammer the engine. An engine that
//!   is not in a swarm is initialised (`POST /swarm/init`, advertising
//!   `--swarm-advertise-addr`).
//! - Node states: `GET /nodes` every poll; `NodeSummary.swarm_state` and the `down`
//!   status come from here.
//! - Labels: `armada.board`, `armada.arch`, `armada.hostname` and the operator's labels
//!   on each joined node, re-reading the node's version and retrying on "update out of
//!   sequence". The poll also re-applies labels that are missing (a manager restarted
//!   mid-join, an operator who removed one), so labelling converges. Keys the operator
//!   set through the admin API are listed in the node's `armada.operator-keys` label
//!   and win over the node's own labels (kept in the swarm, so they outlive the
//!   manager's state dir).
//! - The node's own labels (`[labels]` of its armada.toml, sent at registration and
//!   through `/v1/labels` when they change): their keys are listed in the node's
//!   `armada.node-keys` label, so a key the node stops sending is taken off again,
//!   by the next labelling or poll, unless the operator owns it.
//! - Operator actions: promote/demote (`Spec.Role`) and removal (`DELETE /nodes`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

use bollard::models::{LocalNodeState, NodeSpecRoleEnum, NodeState, SwarmInitRequest};
use bollard::query_parameters::{DeleteNodeOptions, UpdateNodeOptions};
use bollard::Docker;

use crate::store::state::NodeRecord;

/// Seconds between polls of the engine's node list.
pub const POLL_SECONDS: u64 = 5;
const LABEL_ATTEMPTS: u32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    #[error("the manager's Docker engine at {host}: {message}")]
    Engine { host: String, message: String },
    #[error("--docker-host `{0}` is not a unix:// socket: the engine API is never used over TCP")]
    NotUnix(String),
    #[error("the local engine is a swarm worker, not a manager: run armada-manager next to a swarm manager")]
    NotManager,
    #[error("swarm node {0} is not known to the manager's engine")]
    UnknownSwarmNode(String),
}

/// What a registration is handed. Holds no manager join token, by construction.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JoinInfo {
    pub worker_token: String,
    pub managers: Vec<String>,
    /// The swarm's cluster ID (`GET /swarm` -> `ID`).
    pub cluster_id: String,
    /// The manager's own engine's swarm node ID: labelled only for the registration
    /// that proves it runs on that engine (its `engine_id` is `own_engine_id`).
    pub own_node_id: String,
    /// The manager's own engine's ID (`GET /info` -> `ID`).
    pub own_engine_id: String,
    /// The swarm managers' node IDs (`Swarm.RemoteManagers[].NodeID`): what a worker can
    /// compare with its own engine's view, having no cluster ID.
    pub manager_node_ids: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct SwarmNodeView {
    pub state: String,
    pub hostname: String,
    /// `worker` or `manager` (`Spec.Role`).
    pub role: String,
    pub labels: HashMap<String, String>,
    /// For swarm managers: whether Raft can reach it (the alerts' quorum rules).
    pub manager_reachable: Option<bool>,
}

/// The label listing the keys the operator owns on a swarm node (comma-separated).
pub const OPERATOR_KEYS_LABEL: &str = "armada.operator-keys";

/// The label listing the keys of the node's own labels as last put on the swarm node
/// (comma-separated): what lets a key the node dropped be taken off.
pub const NODE_KEYS_LABEL: &str = "armada.node-keys";

fn key_list(have: &HashMap<String, String>, label: &str) -> Vec<String> {
    have.get(label)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Keys the operator set or removed on this node through the admin API.
pub fn operator_keys(have: &HashMap<String, String>) -> Vec<String> {
    key_list(have, OPERATOR_KEYS_LABEL)
}

/// Keys the node put on its swarm node earlier and no longer wants, to be taken off:
/// never an `armada.*` key, never one the operator owns. Pure.
pub fn stale_node_keys(
    have: &HashMap<String, String>,
    want: &BTreeMap<String, String>,
) -> Vec<String> {
    let owned = operator_keys(have);
    key_list(have, NODE_KEYS_LABEL)
        .into_iter()
        .filter(|k| {
            !k.starts_with("armada.")
                && !want.contains_key(k)
                && !owned.contains(k)
                && have.contains_key(k)
        })
        .collect()
}

/// `want` without the keys the operator owns on the node: operator labels win. Pure.
pub fn without_operator_keys(
    have: &HashMap<String, String>,
    want: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let owned = operator_keys(have);
    want.iter()
        .filter(|(k, _)| !owned.iter().any(|o| o == *k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Why a node may not claim (label) a swarm node. Pure; see [`check_claim`].
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClaimRefusal {
    #[error("swarm node {0} is the manager's own engine: only an agent on that engine (same engine ID) may claim it")]
    ManagersOwn(String),
    #[error("swarm node {sid} has hostname `{swarm}`, not the registered `{registered}`: a node may only claim its own swarm node")]
    OtherHostname {
        sid: String,
        swarm: String,
        registered: String,
    },
    #[error("swarm node {sid} carries armada.node-id {owner}: it belongs to another registration")]
    OtherOwner { sid: String, owner: String },
}

/// Who claims a swarm node: the registration's id, hostname and engine ID.
#[derive(Clone, Copy, Debug)]
pub struct Claimant<'a> {
    pub node_id: &'a str,
    pub hostname: &'a str,
    pub engine_id: Option<&'a str>,
}

/// May `who` claim swarm node `sid` as seen in `view`? The manager's own node only for
/// the agent on the manager's own engine (the engine ID is not something a worker card
/// can read from the swarm); any node only under its registered hostname, and not one
/// another registration labelled as its own.
pub fn check_claim(
    sid: &str,
    view: &SwarmNodeView,
    join: &JoinInfo,
    who: Claimant<'_>,
) -> Result<(), ClaimRefusal> {
    let Claimant {
        node_id, hostname, ..
    } = who;
    if !join.own_node_id.is_empty()
        && sid == join.own_node_id
        && (join.own_engine_id.is_empty() || who.engine_id != Some(join.own_engine_id.as_str()))
    {
        return Err(ClaimRefusal::ManagersOwn(sid.to_string()));
    }
    if !view.hostname.eq_ignore_ascii_case(hostname) {
        return Err(ClaimRefusal::OtherHostname {
            sid: sid.to_string(),
            swarm: view.hostname.clone(),
            registered: hostname.to_string(),
        });
    }
    match view.labels.get("armada.node-id") {
        Some(owner) if owner != node_id => Err(ClaimRefusal::OtherOwner {
            sid: sid.to_string(),
            owner: owner.clone(),
        }),
        _ => Ok(()),
    }
}

pub struct SwarmLink {
    /// `None`: running without an engine (`--no-swarm`, load tests).
    host: Option<String>,
    advertise_addr: Option<String>,
    docker: OnceLock<Docker>,
    join: RwLock<Option<JoinInfo>>,
    nodes: RwLock<HashMap<String, SwarmNodeView>>,
    /// One refresh (and so one `swarm init`) at a time, whatever the registration burst.
    refreshing: tokio::sync::Mutex<()>,
}

/// The labels armada puts on a swarm node. Operator labels cannot override `armada.*`.
pub fn wanted_labels(r: &NodeRecord) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = r
        .labels
        .iter()
        .filter(|(k, _)| !k.starts_with("armada."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    m.insert("armada.board".into(), r.facts.board.clone());
    m.insert("armada.arch".into(), r.facts.arch.clone());
    m.insert("armada.hostname".into(), r.facts.hostname.clone());
    m.insert("armada.node-id".into(), r.node_id.clone());
    let own: Vec<&str> = m
        .keys()
        .filter(|k| !k.starts_with("armada."))
        .map(String::as_str)
        .collect();
    let own = own.join(",");
    m.insert(NODE_KEYS_LABEL.into(), own);
    m
}

/// True when every wanted label is already on the node.
pub fn labels_present(have: &HashMap<String, String>, want: &BTreeMap<String, String>) -> bool {
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

fn view_of(
    status: Option<bollard::models::NodeStatus>,
    description: Option<bollard::models::NodeDescription>,
    spec: Option<bollard::models::NodeSpec>,
) -> SwarmNodeView {
    let role = match spec.as_ref().and_then(|s| s.role) {
        Some(NodeSpecRoleEnum::MANAGER) => "manager",
        _ => "worker",
    };
    SwarmNodeView {
        state: state_name(status.and_then(|s| s.state)).to_string(),
        hostname: description.and_then(|d| d.hostname).unwrap_or_default(),
        role: role.to_string(),
        labels: spec.and_then(|s| s.labels).unwrap_or_default(),
        manager_reachable: None,
    }
}

fn state_name(s: Option<NodeState>) -> &'static str {
    match s {
        Some(NodeState::READY) => "ready",
        Some(NodeState::DOWN) => "down",
        Some(NodeState::DISCONNECTED) => "disconnected",
        _ => "unknown",
    }
}

pub(crate) fn is_out_of_sequence(e: &bollard::errors::Error) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { message, .. }
        if message.contains("out of sequence"))
}

pub(crate) fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl SwarmLink {
    pub fn disabled() -> Self {
        SwarmLink {
            host: None,
            advertise_addr: None,
            docker: OnceLock::new(),
            join: RwLock::new(Some(JoinInfo::default())),
            nodes: RwLock::new(HashMap::new()),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    pub fn new(host: &str, advertise_addr: Option<String>) -> Result<Self, SwarmError> {
        if !host.starts_with("unix://") && !host.starts_with('/') {
            return Err(SwarmError::NotUnix(host.to_string()));
        }
        Ok(SwarmLink {
            host: Some(host.to_string()),
            advertise_addr,
            docker: OnceLock::new(),
            join: RwLock::new(None),
            nodes: RwLock::new(HashMap::new()),
            refreshing: tokio::sync::Mutex::new(()),
        })
    }

    pub fn enabled(&self) -> bool {
        self.host.is_some()
    }

    fn engine_err(&self, e: impl std::fmt::Display) -> SwarmError {
        SwarmError::Engine {
            host: self.host.clone().unwrap_or_default(),
            message: e.to_string(),
        }
    }

    /// The client, made on first use: the engine may start after the manager.
    async fn docker(&self) -> Result<Docker, SwarmError> {
        if let Some(d) = self.docker.get() {
            return Ok(d.clone());
        }
        let host = self.host.as_deref().unwrap_or_default();
        let d = Docker::connect_with_unix(host, 30, bollard::API_DEFAULT_VERSION)
            .map_err(|e| self.engine_err(e))?;
        // Debian's engine (20.10) speaks an older API than bollard's default.
        let d = d
            .negotiate_version()
            .await
            .map_err(|e| self.engine_err(e))?;
        let _ = self.docker.set(d.clone());
        Ok(d)
    }

    /// The engine client for the cockpit's lists and actions; an error without an
    /// engine (`--no-swarm`).
    pub async fn client(&self) -> Result<Docker, SwarmError> {
        if !self.enabled() {
            return Err(self.engine_err("the manager runs without a Docker engine (--no-swarm)"));
        }
        self.docker().await
    }

    /// An engine failure, naming the engine's socket.
    pub fn engine_error(&self, e: impl std::fmt::Display) -> SwarmError {
        self.engine_err(e)
    }

    /// Join tokens and manager addresses, from the cache or the engine.
    pub async fn join_info(&self) -> Result<JoinInfo, SwarmError> {
        if let Some(j) = self.join.read().ok().and_then(|j| j.clone()) {
            return Ok(j);
        }
        let _one = self.refreshing.lock().await;
        // Another request may have filled the cache while this one waited.
        if let Some(j) = self.join.read().ok().and_then(|j| j.clone()) {
            return Ok(j);
        }
        self.refresh_locked().await
    }

    /// Reads the swarm (initialising it if the engine is in none) and caches join info.
    pub async fn refresh(&self) -> Result<JoinInfo, SwarmError> {
        let _one = self.refreshing.lock().await;
        self.refresh_locked().await
    }

    async fn refresh_locked(&self) -> Result<JoinInfo, SwarmError> {
        if !self.enabled() {
            return Ok(JoinInfo::default());
        }
        let docker = self.docker().await?;
        let info = docker.info().await.map_err(|e| self.engine_err(e))?;
        let swarm = info.swarm.unwrap_or_default();
        match swarm.local_node_state {
            Some(LocalNodeState::ACTIVE) => {
                if swarm.control_available != Some(true) {
                    return Err(SwarmError::NotManager);
                }
            }
            Some(LocalNodeState::INACTIVE) | None => {
                let req = SwarmInitRequest {
                    listen_addr: Some("0.0.0.0:2377".into()),
                    advertise_addr: self.advertise_addr.clone(),
                    ..Default::default()
                };
                let id = docker.init_swarm(req).await.map_err(|e| {
                    self.engine_err(format!(
                        "swarm init failed: {e} (pass --swarm-advertise-addr when the host has several addresses)"
                    ))
                })?;
                tracing::info!("initialised a new swarm; this engine is manager node {id}");
            }
            Some(other) => {
                return Err(
                    self.engine_err(format!("the engine's swarm state is `{other}`, not active"))
                );
            }
        }
        let s = docker
            .inspect_swarm()
            .await
            .map_err(|e| self.engine_err(e))?;
        let worker_token = s.join_tokens.and_then(|t| t.worker).unwrap_or_default();
        let cluster_id = s.id.unwrap_or_default();
        let info = docker.info().await.map_err(|e| self.engine_err(e))?;
        let sw = info.swarm.unwrap_or_default();
        let own_node_id = sw.node_id.clone().unwrap_or_default();
        let own_engine_id = info.id.clone().unwrap_or_default();
        let remote = sw.remote_managers.unwrap_or_default();
        let mut manager_node_ids: Vec<String> =
            remote.iter().filter_map(|p| p.node_id.clone()).collect();
        if manager_node_ids.is_empty() && !own_node_id.is_empty() {
            manager_node_ids.push(own_node_id.clone());
        }
        manager_node_ids.sort();
        let mut managers: Vec<String> = remote.into_iter().filter_map(|p| p.addr).collect();
        if managers.is_empty() {
            if let Some(addr) = sw.node_addr.filter(|a| !a.is_empty()) {
                managers.push(format!("{addr}:2377"));
            }
        }
        managers.sort();
        let join = JoinInfo {
            worker_token,
            managers,
            cluster_id,
            own_node_id,
            own_engine_id,
            manager_node_ids,
        };
        if join.worker_token.is_empty() || join.managers.is_empty() {
            return Err(self.engine_err("the swarm reports no join token or no manager address"));
        }
        if let Ok(mut j) = self.join.write() {
            *j = Some(join.clone());
        }
        Ok(join)
    }

    pub fn node_state(&self, swarm_node_id: &str) -> Option<String> {
        self.nodes
            .read()
            .ok()?
            .get(swarm_node_id)
            .map(|n| n.state.clone())
    }

    /// The swarm's role for a node (as of the last poll).
    pub fn node_role(&self, swarm_node_id: &str) -> Option<protocol::wire::Role> {
        let nodes = self.nodes.read().ok()?;
        Some(match nodes.get(swarm_node_id)?.role.as_str() {
            "manager" => protocol::wire::Role::Manager,
            _ => protocol::wire::Role::Worker,
        })
    }

    /// (hostname, reachable) of every swarm manager, as of the last poll.
    pub fn managers(&self) -> Vec<(String, bool)> {
        let Ok(nodes) = self.nodes.read() else {
            return Vec::new();
        };
        let mut m: Vec<_> = nodes
            .values()
            .filter_map(|n| n.manager_reachable.map(|r| (n.hostname.clone(), r)))
            .collect();
        m.sort();
        m
    }

    /// Reads every swarm node's state and labels.
    pub async fn poll_nodes(&self) -> Result<(), SwarmError> {
        if !self.enabled() {
            return Ok(());
        }
        let docker = self.docker().await?;
        let list = docker
            .list_nodes(None)
            .await
            .map_err(|e| self.engine_err(e))?;
        let map = list
            .into_iter()
            .filter_map(|n| {
                let id = n.id?;
                let mut view = view_of(n.status, n.description, n.spec);
                view.manager_reachable = n
                    .manager_status
                    .map(|m| m.reachability == Some(bollard::models::Reachability::REACHABLE));
                Some((id, view))
            })
            .collect();
        if let Ok(mut n) = self.nodes.write() {
            *n = map;
        }
        Ok(())
    }

    /// Nodes whose wanted labels are not all on the swarm node (as of the last poll).
    pub fn needs_labels(&self, records: &[NodeRecord]) -> Vec<(String, BTreeMap<String, String>)> {
        let Ok(nodes) = self.nodes.read() else {
            return Vec::new();
        };
        records
            .iter()
            .filter_map(|r| {
                let sid = r.swarm_node_id.as_ref()?;
                let view = nodes.get(sid)?;
                let want = without_operator_keys(&view.labels, &wanted_labels(r));
                let settled = labels_present(&view.labels, &want)
                    && stale_node_keys(&view.labels, &want).is_empty();
                (!settled).then(|| (sid.clone(), want))
            })
            .collect()
    }

    /// Puts `want` on the swarm node, keeping its other labels but for the node's own
    /// keys it no longer wants ([`stale_node_keys`]). A node that just joined may take a
    /// moment to appear on the manager: 404 is retried too. Returns the keys taken off.
    pub async fn label(
        &self,
        swarm_node_id: &str,
        want: &BTreeMap<String, String>,
    ) -> Result<Vec<String>, SwarmError> {
        if !self.enabled() {
            return Ok(Vec::new());
        }
        let docker = self.docker().await?;
        let mut last = String::new();
        for attempt in 0..LABEL_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * attempt as u64)).await;
            }
            let node = match docker.inspect_node(swarm_node_id).await {
                Ok(n) => n,
                Err(e) if is_not_found(&e) => {
                    last = e.to_string();
                    continue;
                }
                Err(e) => return Err(self.engine_err(e)),
            };
            let version = node.version.and_then(|v| v.index).unwrap_or(0);
            let mut spec = node.spec.unwrap_or_default();
            let labels = spec.labels.get_or_insert_with(HashMap::new);
            let want = &without_operator_keys(labels, want);
            let stale = stale_node_keys(labels, want);
            if labels_present(labels, want) && stale.is_empty() {
                crate::metrics::METRICS.labels_applied.inc();
                return Ok(stale);
            }
            for k in &stale {
                labels.remove(k);
            }
            labels.extend(want.iter().map(|(k, v)| (k.clone(), v.clone())));
            match docker
                .update_node(
                    swarm_node_id,
                    spec,
                    UpdateNodeOptions {
                        version: version as i64,
                    },
                )
                .await
            {
                Ok(()) => {
                    crate::metrics::METRICS.labels_applied.inc();
                    return Ok(stale);
                }
                Err(e) if is_out_of_sequence(&e) => last = e.to_string(),
                Err(e) => {
                    crate::metrics::METRICS.label_failures.inc();
                    return Err(self.engine_err(e));
                }
            }
        }
        crate::metrics::METRICS.label_failures.inc();
        if last.contains("404") || last.to_lowercase().contains("not found") {
            return Err(SwarmError::UnknownSwarmNode(swarm_node_id.to_string()));
        }
        Err(self.engine_err(format!(
            "labelling {swarm_node_id} did not settle after {LABEL_ATTEMPTS} attempts: {last}"
        )))
    }
}

impl SwarmLink {
    /// A swarm node as the engine sees it now (not the poll's cache: a node that just
    /// joined is not in it yet). `None`: the engine does not know it.
    pub async fn inspect(&self, swarm_node_id: &str) -> Result<Option<SwarmNodeView>, SwarmError> {
        if !self.enabled() {
            return Ok(None);
        }
        let docker = self.docker().await?;
        match docker.inspect_node(swarm_node_id).await {
            Ok(n) => Ok(Some(view_of(n.status, n.description, n.spec))),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(self.engine_err(e)),
        }
    }

    /// True when the last poll listed this swarm node.
    pub fn knows(&self, swarm_node_id: &str) -> bool {
        self.nodes
            .read()
            .map(|n| n.contains_key(swarm_node_id))
            .unwrap_or(false)
    }

    /// The swarm node a re-adopted node had, from the last poll: the one labelled with
    /// its `armada.node-id`, else the only one with its hostname that no other
    /// registration labelled. Never the manager's own node.
    pub fn find_for(&self, who: Claimant<'_>, join: &JoinInfo) -> Option<String> {
        let node_id = who.node_id;
        let nodes = self.nodes.read().ok()?;
        let usable = |(sid, _): &(&String, &SwarmNodeView)| {
            sid.as_str() != join.own_node_id
                || (who.engine_id.is_some() && who.engine_id == Some(join.own_engine_id.as_str()))
        };
        if let Some((sid, _)) = nodes
            .iter()
            .filter(usable)
            .find(|(_, v)| v.labels.get("armada.node-id").map(String::as_str) == Some(node_id))
        {
            return Some(sid.clone());
        }
        let mut same_host = nodes
            .iter()
            .filter(usable)
            .filter(|(sid, v)| check_claim(sid, v, join, who).is_ok() && v.state != "down");
        match (same_host.next(), same_host.next()) {
            (Some((sid, _)), None) => Some(sid.clone()),
            _ => None,
        }
    }

    /// Removes a node from the swarm (`docker node rm --force`). Already gone: `Ok`.
    pub async fn remove_node(&self, swarm_node_id: &str) -> Result<(), SwarmError> {
        if !self.enabled() {
            return Ok(());
        }
        let docker = self.docker().await?;
        match docker
            .delete_node(swarm_node_id, Some(DeleteNodeOptions { force: true }))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(self.engine_err(e)),
        }
    }

    /// Changes a node's spec (role, labels, availability) with the version read just
    /// before, retrying on "update out of sequence".
    pub(crate) async fn update_spec(
        &self,
        swarm_node_id: &str,
        change: impl Fn(&mut bollard::models::NodeSpec),
    ) -> Result<(), SwarmError> {
        if !self.enabled() {
            return Err(self.engine_err("the manager runs without a Docker engine (--no-swarm)"));
        }
        let docker = self.docker().await?;
        let mut last = String::new();
        for attempt in 0..LABEL_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * attempt as u64)).await;
            }
            let node = match docker.inspect_node(swarm_node_id).await {
                Ok(n) => n,
                Err(e) if is_not_found(&e) => {
                    return Err(SwarmError::UnknownSwarmNode(swarm_node_id.to_string()))
                }
                Err(e) => return Err(self.engine_err(e)),
            };
            let version = node.version.and_then(|v| v.index).unwrap_or(0);
            let mut spec = node.spec.unwrap_or_default();
            change(&mut spec);
            match docker
                .update_node(
                    swarm_node_id,
                    spec,
                    UpdateNodeOptions {
                        version: version as i64,
                    },
                )
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) if is_out_of_sequence(&e) => last = e.to_string(),
                Err(e) => return Err(self.engine_err(e)),
            }
        }
        Err(self.engine_err(format!(
            "updating {swarm_node_id} did not settle after {LABEL_ATTEMPTS} attempts: {last}"
        )))
    }

    /// Promotes (`manager`) or demotes (`worker`) a swarm node: the operator's way, the
    /// only one, to make a swarm manager.
    pub async fn set_role(&self, swarm_node_id: &str, manager: bool) -> Result<(), SwarmError> {
        self.update_spec(swarm_node_id, |spec| {
            spec.role = Some(if manager {
                NodeSpecRoleEnum::MANAGER
            } else {
                NodeSpecRoleEnum::WORKER
            });
        })
        .await
    }

    /// Sets and removes operator labels; the keys become the operator's (listed in
    /// [`OPERATOR_KEYS_LABEL`]), so the node's own labels never override them.
    pub async fn set_operator_labels(
        &self,
        swarm_node_id: &str,
        set: &BTreeMap<String, String>,
        remove: &[String],
    ) -> Result<BTreeMap<String, String>, SwarmError> {
        let result = std::sync::Mutex::new(BTreeMap::new());
        self.update_spec(swarm_node_id, |spec| {
            let labels = spec.labels.get_or_insert_with(HashMap::new);
            let mut owned = operator_keys(labels);
            for k in set.keys().chain(remove) {
                if !owned.contains(k) {
                    owned.push(k.clone());
                }
            }
            owned.sort();
            for k in remove {
                labels.remove(k);
            }
            labels.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
            labels.insert(OPERATOR_KEYS_LABEL.into(), owned.join(","));
            if let Ok(mut r) = result.lock() {
                *r = labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            }
        })
        .await?;
        Ok(result.into_inner().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::state::tests::record;

    #[test]
    fn wanted_labels_cannot_be_overridden() {
        let mut r = record("n-1", "pine-01", "m");
        r.labels.insert("zone".into(), "shelf-2".into());
        r.labels.insert("armada.board".into(), "fake".into());
        let w = wanted_labels(&r);
        assert_eq!(w["armada.board"], "pine64");
        assert_eq!(w["armada.arch"], "aarch64");
        assert_eq!(w["armada.hostname"], "pine-01");
        assert_eq!(w["zone"], "shelf-2");
        let mut have: HashMap<String, String> = w.clone().into_iter().collect();
        assert!(labels_present(&have, &w));
        have.insert("extra".into(), "kept".into());
        assert!(labels_present(&have, &w));
        have.insert("zone".into(), "moved".into());
        assert!(!labels_present(&have, &w));
    }

    #[test]
    fn operator_keys_win_over_node_labels() {
        let mut have: HashMap<String, String> = HashMap::new();
        have.insert("zone".into(), "operator-zone".into());
        have.insert(OPERATOR_KEYS_LABEL.into(), "zone, gone".into());
        let want: BTreeMap<String, String> = [
            ("zone", "node-zone"),
            ("gone", "x"),
            ("rack", "r1"),
            ("armada.board", "pine64"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let apply = without_operator_keys(&have, &want);
        assert_eq!(apply.get("zone"), None);
        assert_eq!(apply.get("gone"), None);
        assert_eq!(apply["rack"], "r1");
        assert_eq!(apply["armada.board"], "pine64");
        assert_eq!(operator_keys(&have), vec!["zone", "gone"]);
    }

    /// A node's dropped key comes off its swarm node; the operator's keys, armada's own
    /// and keys nobody armada put there stay.
    #[test]
    fn keys_the_node_dropped_are_stale_others_are_not() {
        let mut r = record("n-1", "pine-01", "m");
        r.labels.insert("zone".into(), "shelf-1".into());
        r.labels.insert("spare".into(), "x".into());
        let w = wanted_labels(&r);
        assert_eq!(w[NODE_KEYS_LABEL], "spare,zone");
        let mut have: HashMap<String, String> = w.clone().into_iter().collect();
        have.insert("by-hand".into(), "docker node update".into());
        assert!(stale_node_keys(&have, &w).is_empty());

        // armada.toml now: zone changed, spare dropped, rack added; the operator owns rack.
        r.labels.remove("spare");
        r.labels.insert("zone".into(), "shelf-2".into());
        r.labels.insert("rack".into(), "node-rack".into());
        have.insert("rack".into(), "op-rack".into());
        have.insert(OPERATOR_KEYS_LABEL.into(), "rack".into());
        let w2 = without_operator_keys(&have, &wanted_labels(&r));
        assert_eq!(w2[NODE_KEYS_LABEL], "rack,zone");
        assert_eq!(stale_node_keys(&have, &w2), vec!["spare"]);
        assert!(!labels_present(&have, &w2), "zone moved");

        // The operator removed the node's spare itself: it is theirs, never stale.
        have.insert(OPERATOR_KEYS_LABEL.into(), "rack,spare".into());
        assert!(stale_node_keys(&have, &w2).is_empty());
        // Listed but already gone from the swarm node: nothing to take off.
        have.insert(OPERATOR_KEYS_LABEL.into(), "rack".into());
        have.remove("spare");
        assert!(stale_node_keys(&have, &w2).is_empty());
        // An armada.* key is never the node's to remove, whatever the list says.
        have.insert(NODE_KEYS_LABEL.into(), "armada.board,zone".into());
        assert!(stale_node_keys(&have, &BTreeMap::new()).contains(&"zone".to_string()));
        assert!(!stale_node_keys(&have, &BTreeMap::new()).contains(&"armada.board".to_string()));
    }

    #[test]
    fn claims_are_tied_to_hostname_owner_and_never_the_managers_node() {
        let mut v = SwarmNodeView {
            state: "ready".into(),
            hostname: "pine-01".into(),
            role: "worker".into(),
            labels: HashMap::new(),
            manager_reachable: None,
        };
        let join = JoinInfo {
            own_node_id: "mgr".into(),
            own_engine_id: "ENGINE-MGR".into(),
            ..Default::default()
        };
        let who = |node_id, hostname, engine_id| Claimant {
            node_id,
            hostname,
            engine_id,
        };
        assert_eq!(
            check_claim("s1", &v, &join, who("n-1", "pine-01", None)),
            Ok(())
        );
        // The manager's own node: refused to a worker, even one naming its hostname...
        assert!(matches!(
            check_claim("mgr", &v, &join, who("n-1", "pine-01", Some("ENGINE-W1"))),
            Err(ClaimRefusal::ManagersOwn(_))
        ));
        assert!(matches!(
            check_claim("mgr", &v, &join, who("n-1", "pine-01", None)),
            Err(ClaimRefusal::ManagersOwn(_))
        ));
        // ...granted to the agent on the manager's own engine.
        assert_eq!(
            check_claim("mgr", &v, &join, who("n-1", "pine-01", Some("ENGINE-MGR"))),
            Ok(())
        );
        assert!(matches!(
            check_claim("s1", &v, &join, who("n-1", "pine-02", None)),
            Err(ClaimRefusal::OtherHostname { .. })
        ));
        v.labels.insert("armada.node-id".into(), "n-2".into());
        assert!(matches!(
            check_claim("s1", &v, &join, who("n-1", "pine-01", None)),
            Err(ClaimRefusal::OtherOwner { .. })
        ));
        assert_eq!(
            check_claim("s1", &v, &join, who("n-2", "pine-01", None)),
            Ok(())
        );
    }

    #[test]
    fn tcp_engines_are_refused() {
        assert!(matches!(
            SwarmLink::new("tcp://0.0.0.0:2376", None),
            Err(SwarmError::NotUnix(_))
        ));
        assert!(SwarmLink::new("unix:///run/x.sock", None).is_ok());
    }
}

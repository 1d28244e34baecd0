//! Joining the Docker Swarm through the local engine's unix socket (never TCP).
//!
//! `POST /swarm/join` with the worker token and manager addresses the registration gave.
//! An engine that answers 503 "already part of a swarm" is fine when that swarm is ours
//! (one of its managers is one we were given); in another swarm it is an error that
//! says how to leave. A join token the swarm rejects is an error that says so. After
//! the join the swarm node id is read from `GET /info` and reported to the manager with
//! `POST /v1/joined`, which then labels the node.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bollard::errors::Error as DockerError;
use bollard::models::{LocalNodeState, SwarmJoinRequest};
use bollard::query_parameters::LeaveSwarmOptions;
use bollard::Docker;
use protocol::token::NodeCredential;
use protocol::wire::{EngineSwarm, JoinedRequest, PATH_JOINED};

use crate::register::{error_chain, error_message, ManagerAddress};

/// Swarm's default management port, used when the manager gives a bare host.
const SWARM_PORT: u16 = 2377;

/// Docker API version asked for: Debian 12's engine (20.10) speaks up to 1.41, and newer
/// engines still accept it, so no negotiation round trip is needed before the first call.
pub const API_VERSION: bollard::ClientVersion = bollard::ClientVersion {
    major_version: 1,
    minor_version: 41,
};

/// A client of the local engine, made without touching it (the engine may be down or
/// hung: nothing waits on it here). Only `unix://` addresses are accepted: the engine
/// API is never reached over the network. `timeout_s` bounds every call.
pub fn client(docker_host: &str, timeout_s: u64) -> anyhow::Result<Docker> {
    let path = docker_host.strip_prefix("unix://").with_context(|| {
        format!("docker host `{docker_host}`: only unix:///path sockets are supported")
    })?;
    Docker::connect_with_unix(path, timeout_s, &API_VERSION)
        .with_context(|| format!("making a client for the Docker engine at {docker_host}"))
}

/// The local engine, reached once its socket exists: dockerd may start after the
/// agent, or not at all on a broken board, and nothing may wait on it.
#[derive(Clone)]
pub struct Engine {
    host: String,
    timeout_s: u64,
    made: Arc<Mutex<Option<Docker>>>,
}

impl Engine {
    /// Checks the address (unix:// only) without touching the engine.
    pub fn new(docker_host: &str, timeout_s: u64) -> anyhow::Result<Self> {
        if !docker_host.starts_with("unix://") {
            anyhow::bail!("docker host `{docker_host}`: only unix:///path sockets are supported");
        }
        Ok(Engine {
            host: docker_host.to_string(),
            timeout_s,
            made: Arc::new(Mutex::new(None)),
        })
    }

    /// The client, made now if the socket has appeared since the last call.
    pub fn client(&self) -> anyhow::Result<Docker> {
        let mut made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = made.as_ref() {
            return Ok(d.clone());
        }
        let d = client(&self.host, self.timeout_s)?;
        *made = Some(d.clone());
        Ok(d)
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The engine's socket file (the address is checked to be `unix://` at [`Engine::new`]).
    pub fn socket_path(&self) -> &std::path::Path {
        std::path::Path::new(self.host.strip_prefix("unix://").unwrap_or(&self.host))
    }
}

/// How a wait for the engine ended.
#[derive(Debug, PartialEq, Eq)]
pub enum EngineWait {
    /// It answered.
    Up,
    /// No socket file: no engine on this host (or not installed), nothing to wait for.
    NoSocket,
    /// The socket is there but nothing answered within the bound.
    Silent,
}

/// Waits, bounded, for the local engine to answer `GET /version`. At boot the agent
/// starts beside Docker, not after it (Docker's start took 11-60 s of the join path under
/// TCG): its first registration waits here so it still carries the engine's version and
/// ID, and everything before it (the process, config, clock) overlaps Docker's start.
/// While dockerd starts, systemd's `docker.socket` already holds the socket: a request
/// waits in its queue, each try bounded by [`engine_version`]'s 5 s.
pub async fn wait_until_up(engine: &Engine, bound: Duration) -> EngineWait {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        if !engine.socket_path().exists() {
            return EngineWait::NoSocket;
        }
        if let Ok(docker) = engine.client() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let version = tokio::time::timeout(left, engine_version(&docker)).await;
            if matches!(version, Ok(Some(_))) {
                return EngineWait::Up;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return EngineWait::Silent;
        }
        // A refused connection (dockerd restarting, no socket activation) fails at once.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The engine's version, for the node's facts.
/// Bounded: a hung engine must not hold registration up.
pub async fn engine_version(docker: &Docker) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(5), docker.version())
        .await
        .ok()?
        .ok()
        .and_then(|v| v.version)
}

/// The engine's ID and swarm membership, for the node's facts (bounded like
/// [`engine_version`]).
pub async fn engine_identity(docker: &Docker) -> (Option<String>, Option<EngineSwarm>) {
    let Ok(Ok(info)) = tokio::time::timeout(Duration::from_secs(5), docker.info()).await else {
        return (None, None);
    };
    let cluster_id = local_cluster_id(&info);
    let swarm = info.swarm.and_then(|sw| {
        let node_id = sw.node_id.filter(|id| !id.is_empty())?;
        Some(EngineSwarm {
            node_id,
            cluster_id,
        })
    });
    (info.id.filter(|id| !id.is_empty()), swarm)
}

/// The cluster ID of the swarm the engine is in. A manager's `/info` shows it; a
/// worker's does not, but the node certificate swarm gave the worker carries it as its
/// organisation (O), under the engine's root dir.
pub fn local_cluster_id(info: &bollard::models::SystemInfo) -> Option<String> {
    let shown = info
        .swarm
        .as_ref()
        .and_then(|sw| sw.cluster.as_ref())
        .and_then(|c| c.id.clone())
        .filter(|id| !id.is_empty());
    shown.or_else(|| {
        let root = info.docker_root_dir.as_deref()?;
        let pem =
            std::fs::read(std::path::Path::new(root).join("swarm/certificates/swarm-node.crt"))
                .ok()?;
        cluster_id_of_node_cert(&pem)
    })
}

/// The organisation (O) of a swarm node certificate (PEM): swarm's cluster ID.
pub fn cluster_id_of_node_cert(pem: &[u8]) -> Option<String> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    let cert = p.parse_x509().ok()?;
    let org = cert.subject().iter_organization().next()?.as_str().ok()?;
    Some(org.to_string()).filter(|o| !o.is_empty())
}

#[derive(Debug, PartialEq, Eq)]
pub enum JoinOutcome {
    Joined,
    AlreadyMember,
    /// Left a swarm of another cluster ID (the old swarm died with the old manager), then
    /// joined ours.
    LeftAndJoined {
        left_cluster_id: String,
    },
}

/// What the local engine's swarm state means before a join (contract §4).
#[derive(Debug, PartialEq, Eq)]
pub enum JoinPlan {
    Join,
    AlreadyMember,
    LeaveThenJoin { theirs: String },
}

/// Decides from the engine's node state and cluster ID and the manager's cluster ID.
/// Without the manager's ID a worker never leaves a swarm on its own.
pub fn plan_join(
    state: Option<LocalNodeState>,
    local_cluster_id: Option<&str>,
    manager_cluster_id: Option<&str>,
) -> JoinPlan {
    let in_a_swarm = matches!(
        state,
        Some(
            LocalNodeState::ACTIVE
                | LocalNodeState::PENDING
                | LocalNodeState::LOCKED
                | LocalNodeState::ERROR
        )
    );
    match (in_a_swarm, local_cluster_id, manager_cluster_id) {
        (true, Some(local), Some(ours)) if local == ours => {
            if state == Some(LocalNodeState::ACTIVE) {
                JoinPlan::AlreadyMember
            } else {
                // Ours but pending or broken: the join call sorts it out (503 verdict).
                JoinPlan::Join
            }
        }
        (true, Some(local), Some(_)) => JoinPlan::LeaveThenJoin {
            theirs: local.to_string(),
        },
        _ => JoinPlan::Join,
    }
}

/// Why a join failed; only `Unavailable` is worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("the swarm managers {managers:?} rejected the join token from the manager: {message}")]
    TokenRejected {
        managers: Vec<String>,
        message: String,
    },
    #[error(
        "the local engine is already part of another swarm (its managers: {theirs:?}, ours: {ours:?}); \
         the manager did not name its swarm's cluster ID, so this node does not leave on its own: \
         run `docker swarm leave` on this board to let armada join it"
    )]
    OtherSwarm {
        theirs: Vec<String>,
        ours: Vec<String>,
    },
    #[error("joining the swarm through the local engine failed: {0}")]
    Unavailable(String),
}

impl JoinError {
    pub fn is_final(&self) -> bool {
        !matches!(self, JoinError::Unavailable(_))
    }
}

/// Joins the swarm of `managers` with `join_token`, first leaving a swarm whose cluster
/// ID is not `manager_cluster_id` (when the manager named one).
pub async fn join(
    docker: &Docker,
    join_token: &str,
    managers: &[String],
    manager_cluster_id: Option<&str>,
) -> Result<JoinOutcome, JoinError> {
    let info = docker
        .info()
        .await
        .map_err(|e| JoinError::Unavailable(error_chain(&e)))?;
    let local_cluster = local_cluster_id(&info);
    let sw = info.swarm.unwrap_or_default();
    let mut left = None;
    match plan_join(
        sw.local_node_state,
        local_cluster.as_deref(),
        manager_cluster_id,
    ) {
        JoinPlan::AlreadyMember => return Ok(JoinOutcome::AlreadyMember),
        JoinPlan::LeaveThenJoin { theirs } => {
            tracing::warn!(
                "the local engine is in swarm {theirs}, not the manager's swarm {}: leaving it \
                 (the old swarm went with the old manager) and joining ours",
                manager_cluster_id.unwrap_or("?")
            );
            docker
                .leave_swarm(Some(LeaveSwarmOptions { force: true }))
                .await
                .map_err(|e| {
                    JoinError::Unavailable(format!(
                        "leaving the foreign swarm {theirs}: {}",
                        error_chain(&e)
                    ))
                })?;
            left = Some(theirs);
        }
        JoinPlan::Join => {}
    }
    let joined = join_call(docker, join_token, managers).await?;
    Ok(match (joined, left) {
        (JoinOutcome::Joined, Some(left_cluster_id)) => {
            JoinOutcome::LeftAndJoined { left_cluster_id }
        }
        (outcome, _) => outcome,
    })
}

async fn join_call(
    docker: &Docker,
    join_token: &str,
    managers: &[String],
) -> Result<JoinOutcome, JoinError> {
    let advertise = managers
        .iter()
        .find_map(|m| local_address_towards(m))
        .map(|ip| ip.to_string());
    let req = SwarmJoinRequest {
        listen_addr: Some(format!("0.0.0.0:{SWARM_PORT}")),
        advertise_addr: advertise,
        data_path_addr: None,
        remote_addrs: Some(managers.to_vec()),
        join_token: Some(join_token.to_string()),
    };
    match docker.join_swarm(req).await {
        Ok(()) => Ok(JoinOutcome::Joined),
        Err(DockerError::DockerResponseServerError {
            status_code: 503,
            message,
        }) if message.contains("already part of a swarm") => {
            let info = docker
                .info()
                .await
                .map_err(|e| JoinError::Unavailable(error_chain(&e)))?;
            let swarm = info.swarm.unwrap_or_default();
            let theirs: Vec<String> = swarm
                .remote_managers
                .unwrap_or_default()
                .into_iter()
                .filter_map(|p| p.addr)
                .collect();
            match already_member_verdict(swarm.local_node_state, &theirs, managers) {
                Membership::Ours => Ok(JoinOutcome::AlreadyMember),
                Membership::NotYetKnown => Err(JoinError::Unavailable(format!(
                    "the local engine is in a swarm (state {:?}) but names no managers yet",
                    swarm.local_node_state
                ))),
                Membership::Other => Err(JoinError::OtherSwarm {
                    theirs,
                    ours: managers.to_vec(),
                }),
            }
        }
        Err(DockerError::DockerResponseServerError {
            status_code: 400,
            message,
        }) => Err(JoinError::TokenRejected {
            managers: managers.to_vec(),
            message,
        }),
        Err(e) => {
            let text = error_chain(&e);
            if looks_like_token_rejection(&text) {
                Err(JoinError::TokenRejected {
                    managers: managers.to_vec(),
                    message: text,
                })
            } else {
                Err(JoinError::Unavailable(text))
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Membership {
    Ours,
    NotYetKnown,
    Other,
}

/// What a 503 "already part of a swarm" means. A join that timed out goes on in the
/// background (state `pending`): that is our join still in progress.
pub fn already_member_verdict(
    state: Option<LocalNodeState>,
    theirs: &[String],
    ours: &[String],
) -> Membership {
    if state == Some(LocalNodeState::PENDING) {
        return Membership::Ours;
    }
    if theirs.is_empty() {
        return Membership::NotYetKnown;
    }
    if is_our_swarm(theirs, ours) {
        Membership::Ours
    } else {
        Membership::Other
    }
}

/// Swarm's wording when a manager refuses a join token (it may come back as a 500).
fn looks_like_token_rejection(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("invalid join token")
        || m.contains("valid join token is necessary")
        || m.contains("token is invalid")
}

/// True when the engine's swarm managers include one of ours (compared by host, since
/// a manager may advertise another port than the one handed out).
pub fn is_our_swarm(theirs: &[String], ours: &[String]) -> bool {
    let host = |a: &str| -> String {
        match a.parse::<SocketAddr>() {
            Ok(sa) => sa.ip().to_string(),
            Err(_) => a
                .rsplit_once(':')
                .map(|(h, _)| h)
                .unwrap_or(a)
                .trim_matches(['[', ']'])
                .to_string(),
        }
    };
    theirs
        .iter()
        .any(|t| ours.iter().any(|o| t == o || host(t) == host(o)))
}

/// The local address the kernel would use to reach `manager` (`ip:port`): the address
/// to advertise, found without sending anything (a UDP connect only picks a route).
pub fn local_address_towards(manager: &str) -> Option<IpAddr> {
    let target: SocketAddr = manager
        .parse()
        .ok()
        .or_else(|| format!("{manager}:{SWARM_PORT}").parse().ok())?;
    let bind = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = UdpSocket::bind(bind).ok()?;
    sock.connect(target).ok()?;
    sock.local_addr()
        .ok()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified())
}

/// Waits, bounded, until the engine is an active swarm node, and returns its node id.
pub async fn wait_for_node_id(docker: &Docker, wait: Duration) -> anyhow::Result<String> {
    let deadline = Instant::now() + wait;
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        match docker.info().await {
            Ok(info) => {
                let swarm = info.swarm.unwrap_or_default();
                let state = swarm.local_node_state;
                match (state, swarm.node_id.filter(|id| !id.is_empty())) {
                    (Some(LocalNodeState::ACTIVE), Some(id)) => return Ok(id),
                    (state, _) => {
                        last = format!(
                            "local node state {:?}, error {:?}",
                            state,
                            swarm.error.unwrap_or_default()
                        )
                    }
                }
            }
            Err(e) => last = error_chain(&e),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    anyhow::bail!(
        "the local engine did not become an active swarm node within {}s: {last}",
        wait.as_secs()
    )
}

/// Tells the manager which swarm node this is, so it can label it.
pub async fn report_joined(
    client: &reqwest::Client,
    manager: &ManagerAddress,
    credential: &NodeCredential,
    swarm_node_id: &str,
) -> anyhow::Result<()> {
    let resp = client
        .post(format!("{}{PATH_JOINED}", manager.base_url()))
        .bearer_auth(credential.expose())
        .json(&JoinedRequest {
            swarm_node_id: swarm_node_id.to_string(),
        })
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "telling the manager at {manager} that we joined: {}",
                error_chain(&e)
            )
        })?;
    let status = resp.status();
    if !status.is_success() {
        let message = error_message(resp).await;
        anyhow::bail!("the manager at {manager} answered {status} to {PATH_JOINED}: {message}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_engine_wait_ends_at_once_without_a_socket_and_at_the_bound_when_silent() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("docker.sock");
        let engine = Engine::new(&format!("unix://{}", sock.display()), 60).unwrap();
        let t = Instant::now();
        assert_eq!(
            wait_until_up(&engine, Duration::from_secs(30)).await,
            EngineWait::NoSocket
        );
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

        // A socket that accepts and never answers: dockerd not started yet behind
        // systemd's docker.socket.
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                open.push(conn);
            }
        });
        let t = Instant::now();
        assert_eq!(
            wait_until_up(&engine, Duration::from_millis(1500)).await,
            EngineWait::Silent
        );
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_millis(1500) && waited < Duration::from_secs(4),
            "{waited:?}"
        );
        held.abort();
    }

    #[test]
    fn our_swarm_is_recognised_by_manager_host() {
        let ours = vec!["172.30.1.1:2377".to_string()];
        assert!(is_our_swarm(&["172.30.1.1:2377".into()], &ours));
        assert!(is_our_swarm(
            &["172.30.1.9:2377".into(), "172.30.1.1:4000".into()],
            &ours
        ));
        assert!(!is_our_swarm(&["192.168.7.1:2377".into()], &ours));
        assert!(!is_our_swarm(&[], &ours));
        assert!(is_our_swarm(
            &["[fd00::1]:2377".into()],
            &["[fd00::1]:2377".into()]
        ));
    }

    #[test]
    fn an_engine_already_in_a_swarm_is_judged_by_its_managers() {
        let ours = vec!["172.30.1.1:2377".to_string()];
        let active = Some(LocalNodeState::ACTIVE);
        assert_eq!(
            already_member_verdict(active, &["172.30.1.1:2377".into()], &ours),
            Membership::Ours
        );
        assert_eq!(
            already_member_verdict(active, &["192.168.9.9:2377".into()], &ours),
            Membership::Other
        );
        assert_eq!(
            already_member_verdict(active, &[], &ours),
            Membership::NotYetKnown
        );
        assert_eq!(
            already_member_verdict(Some(LocalNodeState::PENDING), &[], &ours),
            Membership::Ours
        );
    }

    #[test]
    fn a_foreign_swarm_is_left_only_when_the_manager_names_its_own() {
        let active = Some(LocalNodeState::ACTIVE);
        assert_eq!(
            plan_join(active, Some("old"), Some("new")),
            JoinPlan::LeaveThenJoin {
                theirs: "old".into()
            }
        );
        assert_eq!(
            plan_join(Some(LocalNodeState::ERROR), Some("old"), Some("new")),
            JoinPlan::LeaveThenJoin {
                theirs: "old".into()
            }
        );
        assert_eq!(
            plan_join(active, Some("same"), Some("same")),
            JoinPlan::AlreadyMember
        );
        assert_eq!(
            plan_join(Some(LocalNodeState::PENDING), Some("same"), Some("same")),
            JoinPlan::Join,
            "our own join still going on: left to the join call"
        );
        assert_eq!(
            plan_join(active, Some("old"), None),
            JoinPlan::Join,
            "no manager cluster ID: never leave (the join call reports the foreign swarm)"
        );
        assert_eq!(
            plan_join(Some(LocalNodeState::INACTIVE), None, Some("new")),
            JoinPlan::Join
        );
        assert_eq!(plan_join(None, None, None), JoinPlan::Join);
    }

    #[test]
    fn a_workers_cluster_id_is_its_node_certificate_organisation() {
        let mut params = rcgen::CertificateParams::new(vec!["node".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "9obooinsghk5oelxiv7562jdn");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationalUnitName, "swarm-worker");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "lj4x4b5rcxrp075jaxrkqcdvm");
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        assert_eq!(
            cluster_id_of_node_cert(pem.as_bytes()).as_deref(),
            Some("lj4x4b5rcxrp075jaxrkqcdvm")
        );
        assert_eq!(cluster_id_of_node_cert(b"not a certificate"), None);

        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("swarm/certificates")).unwrap();
        std::fs::write(dir.path().join("swarm/certificates/swarm-node.crt"), &pem).unwrap();
        let info = bollard::models::SystemInfo {
            docker_root_dir: Some(dir.path().display().to_string()),
            ..Default::default()
        };
        assert_eq!(
            local_cluster_id(&info).as_deref(),
            Some("lj4x4b5rcxrp075jaxrkqcdvm")
        );
    }

    #[test]
    fn token_rejections_are_recognised() {
        assert!(looks_like_token_rejection(
            "rpc error: code = InvalidArgument desc = A valid join token is necessary to join this cluster"
        ));
        assert!(!looks_like_token_rejection("context deadline exceeded"));
    }

    #[test]
    fn advertise_address_is_the_route_source() {
        assert_eq!(
            local_address_towards("127.0.0.1:2377"),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            local_address_towards("127.0.0.1"),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(local_address_towards("not an address"), None);
    }
}

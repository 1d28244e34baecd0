//! The control plane: register once in a node's life, remove the bootstrap token, join
//! the swarm through the local engine, tell the manager the swarm node id, deliver
//! reports, and register again with the credential when a manager that lost its state
//! asks for it (contract: 409 `reregister`).
//!
//! Nothing here ends the process: every failure is recorded in the agent's status
//! ([`crate::status`], shown on `/metrics` and by `armada-agent status`) and retried
//! through [`Backoff`]; soon when the other side is away, slowly when it refused (an
//! operator has to fix something, and a rack of boards must not hammer the manager). A
//! revoked node stops delivering for good and says so; collection and `/metrics` go on.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use protocol::config::{ConfigEdit, FirstBootConfig};
use protocol::token::{BootstrapToken, NodeCredential};
use protocol::wire::{NodeFacts, RegisterResponse};

use crate::register::{ManagerAddress, RegisterError};
use crate::report::{DeliveryEnd, Shared};
use crate::retry::Backoff;
use crate::state::{Registration, RegistrationInfo, StateDir};
use crate::status::ErrorKind;
use crate::{facts, mdns, pinning, register, report, state, swarm};

/// Pause between attempts while the other side is away.
const AWAY_CAP: Duration = Duration::from_secs(60);
/// Pause between attempts after a refusal that only an operator can fix.
const REFUSED_CAP: Duration = Duration::from_secs(300);

/// What the control plane works with.
pub struct ControlPlane {
    pub cfg_path: PathBuf,
    pub root: PathBuf,
    pub state: StateDir,
    /// The local engine, for swarm calls (made when its socket appears).
    pub engine: swarm::Engine,
    pub shared: Arc<Shared>,
}

impl ControlPlane {
    fn fail(&self, kind: ErrorKind, message: String) {
        self.shared.status.fail(kind, message);
    }
}

/// Runs the control plane until the process ends. Returns only when the node was
/// revoked (delivery stopped; the caller keeps monitoring).
pub async fn run(cp: ControlPlane) -> String {
    let mut reg = obtain_registration(&cp).await;
    cp.shared.status.update(|s| {
        s.registered = true;
        s.node_id = Some(reg.credential.node_id.clone());
        s.manager = Some(reg.info.manager.clone());
    });
    cp.shared.status.clear(ErrorKind::Registration);
    tokio::spawn(remove_token_until_done(
        cp.root.clone(),
        cp.cfg_path.clone(),
        cp.shared.clone(),
    ));

    let mut acknowledge_always = false;
    let mut away = Backoff::new(Duration::from_secs(1), AWAY_CAP);
    loop {
        if reg.info.report_interval_seconds > 0 {
            cp.shared.set_interval(Duration::from_secs(u64::from(
                reg.info.report_interval_seconds,
            )));
        }
        let (client, manager) = match manager_client(&cp, &mut reg).await {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("{e:#}");
                tracing::error!("{msg}");
                cp.fail(ErrorKind::Registration, msg);
                away.wait().await;
                continue;
            }
        };
        tracing::info!(
            "reporting to {manager} every {}s as node {}",
            cp.shared.interval().as_secs(),
            reg.credential.node_id
        );
        let swarm_task = tokio::spawn(swarm_until_joined(
            cp.engine.clone(),
            client.clone(),
            manager.clone(),
            reg.clone(),
            cp.state.clone(),
            cp.shared.clone(),
            acknowledge_always,
        ));
        let labels_task = tokio::spawn(crate::labels::sync_until_done(
            cp.cfg_path.clone(),
            client.clone(),
            manager.clone(),
            reg.credential.clone(),
            cp.state.clone(),
            cp.shared.clone(),
        ));
        let end = report::deliver_loop(&client, &manager, &reg.credential, &cp.shared).await;
        swarm_task.abort();
        labels_task.abort();
        match end {
            DeliveryEnd::Revoked(message) => {
                let msg = format!(
                    "the manager at {manager} says node {} was removed ({message}): delivery \
                     stopped; metrics are still collected and served. Re-register the board \
                     with a fresh bootstrap token to bring it back",
                    reg.credential.node_id
                );
                tracing::error!("{msg}");
                cp.shared.status.update(|s| s.revoked = true);
                cp.fail(ErrorKind::Revoked, msg.clone());
                return msg;
            }
            DeliveryEnd::Reregister => {
                reg = reregister_until_done(&cp, &reg, &client, &manager).await;
                // The new registration has no swarm node yet: tell the manager again.
                acknowledge_always = true;
            }
        }
    }
}

/// The stored registration, or a new one, however long that takes.
async fn obtain_registration(cp: &ControlPlane) -> Registration {
    let mut away = Backoff::new(Duration::from_secs(1), AWAY_CAP);
    let mut refused = Backoff::new(Duration::from_secs(5), REFUSED_CAP);
    loop {
        let result = match cp.state.load() {
            Ok(Some(reg)) => {
                tracing::info!(
                    "registered as node {} with the manager at {} (credential in {})",
                    reg.credential.node_id,
                    reg.info.manager,
                    cp.state.path().display()
                );
                return reg;
            }
            Ok(None) => register_from_config(cp).await,
            Err(e) => Err(Attempt::Refused(e)),
        };
        let (msg, delay) = match result {
            Ok(reg) => return reg,
            Err(Attempt::Away(e)) => (format!("{e:#}"), away.next_delay()),
            Err(Attempt::Refused(e)) => (format!("{e:#}"), refused.next_delay()),
        };
        tracing::error!(
            "{msg}; retrying in {:.1}s (metrics are collected and served meanwhile)",
            delay.as_secs_f64()
        );
        cp.fail(ErrorKind::Registration, msg);
        tokio::time::sleep(delay).await;
    }
}

/// Why one registration attempt failed: soon worth another, or not before a fix.
enum Attempt {
    Away(anyhow::Error),
    Refused(anyhow::Error),
}

impl From<RegisterError> for Attempt {
    fn from(e: RegisterError) -> Self {
        if e.is_final() {
            Attempt::Refused(e.into())
        } else {
            Attempt::Away(e.into())
        }
    }
}

/// One registration with the bootstrap token of armada.toml (read again at every
/// attempt, so an operator's fix is picked up without a restart).
async fn register_from_config(cp: &ControlPlane) -> Result<Registration, Attempt> {
    let mut cfg = FirstBootConfig::load(&cp.cfg_path).map_err(|e| Attempt::Refused(e.into()))?;
    // First boot moved a flashed token off the FAT (crate::firstboot).
    crate::firstboot::fill_token(&cp.root, &mut cfg).map_err(Attempt::Refused)?;
    let (token, configured) =
        registration_inputs(&cp.cfg_path, &cfg, &cp.state).map_err(Attempt::Refused)?;
    let discovered = configured.is_none();
    let (manager, found_at) = match configured {
        Some(m) => (m, None),
        None => {
            let (m, at) = discover_manager(None, &cp.shared).await;
            (m, Some(at))
        }
    };
    wait_for_engine(&cp.engine).await;
    let (facts, swarm) = node_facts(&cp.root, &cfg, &cp.engine)
        .await
        .map_err(Attempt::Refused)?;
    tracing::info!(
        "registering {} (board {}, {}) with the manager at {manager}, pinned to CA {}",
        facts.hostname,
        if facts.board.is_empty() {
            "?"
        } else {
            &facts.board
        },
        facts.role,
        token.ca
    );
    let verifier = Arc::new(pinning::PinnedCaVerifier::new(token.ca.clone()));
    let client =
        pinning::client_for_pin(verifier.clone(), found_at.map(|a| (mdns::MANAGER_NAME, a)))
            .map_err(Attempt::Refused)?;
    let done = register::register_once(
        &client,
        &verifier,
        &manager,
        &token,
        &facts,
        &cfg.labels,
        swarm,
    )
    .await?;
    register::maybe_step_clock(done.response.server_time_ms);
    let reg = registration_from(
        done.response,
        done.ca_pem,
        RegistrationInfo {
            manager: manager.to_string(),
            swarm_join_token: String::new(),
            swarm_managers: Vec::new(),
            report_interval_seconds: 0,
            discovered,
            discovered_addr: found_at,
            swarm_cluster_id: None,
        },
    )
    .map_err(Attempt::Refused)?;
    cp.state.save(&reg).map_err(Attempt::Refused)?;
    record_registered_labels(&cp.state, &cfg.labels);
    tracing::info!(
        "registered as node {}; credential stored in {}",
        reg.credential.node_id,
        cp.state.path().display()
    );
    Ok(reg)
}

/// The labels a registration carried are the acknowledged set (not sent again).
fn record_registered_labels(state: &StateDir, labels: &std::collections::BTreeMap<String, String>) {
    if let Err(e) = state.save_labels_sent(&crate::labels::registered(labels)) {
        // Only costs one more send of the same labels at the next start.
        tracing::warn!("{e:#}");
    }
}

/// A registration from the manager's reply; `info` gives what the reply does not.
fn registration_from(
    response: RegisterResponse,
    ca_pem: String,
    mut info: RegistrationInfo,
) -> anyhow::Result<Registration> {
    let credential: NodeCredential = response
        .credential
        .parse()
        .context("the manager sent a malformed node credential")?;
    if credential.node_id != response.node_id {
        anyhow::bail!(
            "the manager's reply names node {} but its credential is for node {}",
            response.node_id,
            credential.node_id
        );
    }
    info.swarm_join_token = response.swarm_join_token;
    info.swarm_managers = response.swarm_managers;
    info.report_interval_seconds = response.report_interval_seconds;
    info.swarm_cluster_id = response.swarm_cluster_id;
    Ok(Registration {
        credential,
        ca_pem,
        info,
    })
}

/// What the node says about itself: armada.toml and the system, plus what the engine
/// says (bounded: a hung engine leaves those fields empty).
/// Bound on the wait for the engine before a first registration: Docker's start took up
/// to ~60 s of a raspi3b boot under TCG; an engine that does not answer by then is
/// registered without (its version and ID are then missing from the node's facts).
const ENGINE_WAIT_AT_REGISTER: Duration = Duration::from_secs(180);

/// The agent starts beside Docker at boot (its unit is not ordered after docker.service):
/// a first registration waits for the engine here, bounded, so its facts carry the
/// engine's version and ID.
async fn wait_for_engine(engine: &swarm::Engine) {
    let t = std::time::Instant::now();
    match swarm::wait_until_up(engine, ENGINE_WAIT_AT_REGISTER).await {
        swarm::EngineWait::Up => {
            if t.elapsed() > Duration::from_secs(1) {
                tracing::info!(
                    "the Docker engine answered after {:.1}s",
                    t.elapsed().as_secs_f64()
                );
            }
        }
        swarm::EngineWait::NoSocket => {}
        swarm::EngineWait::Silent => tracing::warn!(
            "the Docker engine at {} did not answer in {}s: registering without its version and ID",
            engine.host(),
            ENGINE_WAIT_AT_REGISTER.as_secs()
        ),
    }
}

async fn node_facts(
    root: &Path,
    cfg: &FirstBootConfig,
    engine: &swarm::Engine,
) -> anyhow::Result<(NodeFacts, Option<protocol::wire::EngineSwarm>)> {
    let mut facts = facts::read(root, cfg)?;
    if let Ok(docker) = engine.client() {
        facts.docker_version = swarm::engine_version(&docker).await;
        let (engine_id, swarm) = swarm::engine_identity(&docker).await;
        facts.engine_id = engine_id;
        return Ok((facts, swarm));
    }
    Ok((facts, None))
}

/// Contract §3: the manager lost this node; register again with the credential, keep
/// the same CA and node id, store whatever credential comes back.
async fn reregister_until_done(
    cp: &ControlPlane,
    reg: &Registration,
    client: &reqwest::Client,
    manager: &ManagerAddress,
) -> Registration {
    let mut away = Backoff::new(Duration::from_secs(1), AWAY_CAP);
    let mut refused = Backoff::new(Duration::from_secs(5), REFUSED_CAP);
    loop {
        let attempt = async {
            let cfg =
                FirstBootConfig::load(&cp.cfg_path).map_err(|e| Attempt::Refused(e.into()))?;
            let (facts, swarm) = node_facts(&cp.root, &cfg, &cp.engine)
                .await
                .map_err(Attempt::Refused)?;
            let response = register::reregister_once(
                client,
                manager,
                &reg.credential,
                &facts,
                &cfg.labels,
                swarm,
            )
            .await?;
            let new = registration_from(response, reg.ca_pem.clone(), reg.info.clone())
                .map_err(Attempt::Refused)?;
            if new.credential.node_id != reg.credential.node_id {
                return Err(Attempt::Refused(anyhow::anyhow!(
                    "the manager re-registered node {} as {}: contract says the same id",
                    reg.credential.node_id,
                    new.credential.node_id
                )));
            }
            Ok((new, cfg.labels))
        };
        let (msg, delay) = match attempt.await {
            Ok((new, labels)) => {
                record_registered_labels(&cp.state, &labels);
                if let Err(e) = cp.state.save(&new) {
                    // Kept in memory: the manager knows us again either way.
                    let msg = format!("{e:#}");
                    tracing::error!("{msg}");
                    cp.fail(ErrorKind::Registration, msg);
                } else {
                    cp.shared.status.clear(ErrorKind::Registration);
                }
                tracing::info!(
                    "registered again with the manager at {manager} as node {}",
                    new.credential.node_id
                );
                return new;
            }
            Err(Attempt::Away(e)) => (format!("{e:#}"), away.next_delay()),
            Err(Attempt::Refused(e)) => (format!("{e:#}"), refused.next_delay()),
        };
        tracing::error!(
            "registering again: {msg}; retrying in {:.1}s",
            delay.as_secs_f64()
        );
        cp.fail(ErrorKind::Registration, msg);
        tokio::time::sleep(delay).await;
    }
}

/// The bootstrap token and manager address an unregistered node needs (no address:
/// find the manager over mDNS).
pub fn registration_inputs(
    cfg_path: &Path,
    cfg: &FirstBootConfig,
    state: &StateDir,
) -> anyhow::Result<(BootstrapToken, Option<ManagerAddress>)> {
    if cfg.manager.token.is_empty() {
        anyhow::bail!(
            "this node is not registered ({} holds no credential) and {} has no manager.token: \
             put the cluster's bootstrap token there (armada flash does)",
            state.path().display(),
            cfg_path.display()
        );
    }
    let token: BootstrapToken = cfg
        .manager
        .token
        .parse()
        .with_context(|| format!("{}: manager.token", cfg_path.display()))?;
    if cfg.manager.address.is_empty() {
        return Ok((token, None));
    }
    let manager: ManagerAddress = cfg
        .manager
        .address
        .parse()
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("{}: manager.address", cfg_path.display()))?;
    Ok((token, Some(manager)))
}

/// The manager's address and a client pinned to the stored CA (a discovered manager is
/// looked up again: its address may have changed).
async fn manager_client(
    cp: &ControlPlane,
    reg: &mut Registration,
) -> anyhow::Result<(reqwest::Client, ManagerAddress)> {
    let manager: ManagerAddress = reg
        .info
        .manager
        .parse()
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("{}: registration.json", cp.state.path().display()))?;
    if reg.info.discovered {
        let (_, at) = discover_manager(reg.info.discovered_addr, &cp.shared).await;
        if reg.info.discovered_addr != Some(at) {
            reg.info.discovered_addr = Some(at);
            if let Err(e) = cp.state.save(reg) {
                tracing::warn!("{e:#}");
            }
        }
    }
    let resolve = reg.info.discovered_addr.filter(|_| reg.info.discovered);
    let client = pinning::client_for_ca(&reg.ca_pem, resolve.map(|a| (mdns::MANAGER_NAME, a)))?;
    Ok((client, manager))
}

/// Finds the manager over mDNS. Without a last known address it asks until one answers
/// (a new node has nowhere else to go); with one, it asks for a while and falls back to it.
pub async fn discover_manager(
    last: Option<std::net::SocketAddr>,
    shared: &Shared,
) -> (ManagerAddress, std::net::SocketAddr) {
    let port = last
        .map(|a| a.port())
        .unwrap_or(protocol::DEFAULT_MANAGER_PORT);
    let name = |port| ManagerAddress {
        host: mdns::MANAGER_NAME.to_string(),
        port,
    };
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        match mdns::find_manager(Duration::from_secs(5), port).await {
            Ok(found) => {
                tracing::info!(
                    "found the manager over mDNS at {} ({})",
                    found.addr,
                    found.via
                );
                shared.status.clear(ErrorKind::Discovery);
                return (name(found.addr.port()), found.addr);
            }
            Err(e) => {
                shared.status.fail(ErrorKind::Discovery, format!("{e:#}"));
                if let Some(at) = last.filter(|_| backoff.failures() >= 2) {
                    tracing::warn!("{e:#}; using the manager's last known address {at}");
                    return (name(at.port()), at);
                }
                let delay = backoff.next_delay();
                tracing::warn!("{e:#}; asking again in {:.1}s", delay.as_secs_f64());
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Takes the bootstrap token out of armada.toml, keeping everything else as written.
pub fn remove_token(path: &Path) -> anyhow::Result<bool> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut edit = ConfigEdit::parse(&text, &path.display().to_string())?;
    edit.remove_token();
    let (new_text, _) = edit.finish()?;
    if new_text == text {
        return Ok(false);
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(path)
            .with_context(|| format!("reading {}", path.display()))?
            .permissions(),
    ) & 0o777;
    state::write_file_atomic(path, new_text.as_bytes(), mode)
        .with_context(|| format!("removing the bootstrap token from {}", path.display()))?;
    Ok(true)
}

/// Removes the used token once registered, from both places it can be (the root
/// filesystem's copy that first boot moved off the FAT, and `armada.toml` on the boot
/// partition), retrying slowly while either is read-only or full: the token stays
/// readable on the card until then, so the failure is shown by `status` and `/metrics`.
async fn remove_token_until_done(root: PathBuf, cfg_path: PathBuf, shared: Arc<Shared>) {
    let mut backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(600));
    loop {
        match crate::firstboot::remove_used_token(&root, &cfg_path) {
            Ok(done) => {
                done.iter().for_each(|l| tracing::info!("{l}"));
                shared.status.clear(ErrorKind::Token);
                return;
            }
            Err(e) => {
                let msg = format!("{e:#} (the bootstrap token stays on the card until this works)");
                let delay = backoff.next_delay();
                tracing::error!("{msg}; retrying in {:.1}s", delay.as_secs_f64());
                shared.status.fail(ErrorKind::Token, msg);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Joins the swarm unless the engine already is an active node of it, retrying soon
/// while the engine or the swarm managers are away and slowly after a refusal (a
/// rejected join token, a foreign swarm the manager did not name); then tells the
/// manager our swarm node id.
async fn swarm_until_joined(
    engine: swarm::Engine,
    client: reqwest::Client,
    manager: ManagerAddress,
    reg: Registration,
    state: StateDir,
    shared: Arc<Shared>,
    acknowledge_always: bool,
) {
    let status = &shared.status;
    let known = state.swarm_node_id();
    let mut away = Backoff::new(Duration::from_secs(1), AWAY_CAP);
    let mut refused = Backoff::new(Duration::from_secs(5), REFUSED_CAP);
    let docker = loop {
        match engine.client() {
            Ok(d) => break d,
            Err(e) => {
                let msg = format!(
                    "{e:#}: the Docker engine is not running; joining the swarm once it is"
                );
                let delay = away.next_delay();
                tracing::warn!("{msg}");
                status.fail(ErrorKind::Engine, msg);
                tokio::time::sleep(delay).await;
            }
        }
    };
    status.clear(ErrorKind::Engine);
    away.reset();
    loop {
        if let (Ok(Ok(info)), Some(known)) = (
            tokio::time::timeout(Duration::from_secs(10), docker.info()).await,
            known.as_deref(),
        ) {
            let cluster = swarm::local_cluster_id(&info);
            let sw = info.swarm.unwrap_or_default();
            let same_cluster = match (&reg.info.swarm_cluster_id, &cluster) {
                (Some(ours), Some(theirs)) => ours == theirs,
                _ => true,
            };
            if sw.local_node_state == Some(bollard::models::LocalNodeState::ACTIVE)
                && sw.node_id.as_deref() == Some(known)
                && same_cluster
            {
                tracing::info!("the local engine already is swarm node {known}");
                break;
            }
        }
        match swarm::join(
            &docker,
            &reg.info.swarm_join_token,
            &reg.info.swarm_managers,
            reg.info.swarm_cluster_id.as_deref(),
        )
        .await
        {
            Ok(outcome) => {
                tracing::info!("swarm join via the local engine: {outcome:?}");
                break;
            }
            Err(e) => {
                let delay = if e.is_final() {
                    refused.next_delay()
                } else {
                    away.next_delay()
                };
                tracing::error!("{e}; retrying in {:.1}s", delay.as_secs_f64());
                status.fail(ErrorKind::Swarm, e.to_string());
                tokio::time::sleep(delay).await;
            }
        }
    }
    status.clear(ErrorKind::Swarm);

    // The join may still be going on (a swarm manager that was away): keep waiting,
    // the labels depend on it.
    let node_id = loop {
        match swarm::wait_for_node_id(&docker, Duration::from_secs(60)).await {
            Ok(id) => break id,
            Err(e) => {
                tracing::warn!("{e:#}; still waiting");
                status.fail(ErrorKind::Swarm, format!("{e:#}"));
            }
        }
    };
    status.clear(ErrorKind::Swarm);
    status.update(|s| {
        s.swarm_joined = true;
        s.swarm_node_id = Some(node_id.clone());
    });
    if !acknowledge_always && state.swarm_node_id().as_deref() == Some(node_id.as_str()) {
        return;
    }
    let mut backoff = Backoff::new(Duration::from_secs(1), AWAY_CAP);
    loop {
        match swarm::report_joined(&client, &manager, &reg.credential, &node_id).await {
            Ok(()) => {
                tracing::info!("the manager knows this node as swarm node {node_id}");
                status.clear(ErrorKind::Joined);
                if let Err(e) = state.save_swarm_node_id(&node_id) {
                    tracing::warn!("{e:#}");
                }
                return;
            }
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!("{e:#}; retrying in {:.1}s", delay.as_secs_f64());
                status.fail(ErrorKind::Joined, format!("{e:#}"));
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(node: &str, cred_node: &str) -> RegisterResponse {
        RegisterResponse {
            node_id: node.into(),
            credential: NodeCredential::generate(cred_node).expose(),
            swarm_join_token: "SWMTKN-1-x".into(),
            swarm_managers: vec!["172.30.13.1:2377".into()],
            server_time_ms: 0,
            report_interval_seconds: 15,
            swarm_cluster_id: Some("cluster-new".into()),
            swarm_manager_node_ids: Vec::new(),
        }
    }

    fn info() -> RegistrationInfo {
        RegistrationInfo {
            manager: "m:7443".into(),
            swarm_join_token: "old".into(),
            swarm_managers: vec![],
            report_interval_seconds: 10,
            discovered: false,
            discovered_addr: None,
            swarm_cluster_id: Some("cluster-old".into()),
        }
    }

    #[test]
    fn a_reply_updates_the_registration_and_its_swarm_cluster() {
        let reg = registration_from(response("n-3", "n-3"), "CA".into(), info()).unwrap();
        assert_eq!(reg.credential.node_id, "n-3");
        assert_eq!(reg.info.manager, "m:7443", "kept from what we had");
        assert_eq!(reg.info.swarm_join_token, "SWMTKN-1-x");
        assert_eq!(reg.info.report_interval_seconds, 15);
        assert_eq!(reg.info.swarm_cluster_id.as_deref(), Some("cluster-new"));
        assert_eq!(reg.ca_pem, "CA");
        let err = registration_from(response("n-3", "n-4"), "CA".into(), info()).unwrap_err();
        assert!(err.to_string().contains("n-4"), "{err}");
    }

    #[test]
    fn the_token_is_removed_once_and_a_read_only_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("armada.toml");
        std::fs::write(
            &path,
            "hostname = \"n1\"\n[manager]\naddress = \"m\"\ntoken = \"armada1.0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.0123456789abcdef0123\"\n",
        )
        .unwrap();
        assert!(remove_token(&path).unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("token"), "{text}");
        assert!(text.contains("address = \"m\""), "{text}");
        assert!(!remove_token(&path).unwrap(), "nothing left to remove");
        assert!(remove_token(&dir.path().join("missing.toml")).is_err());
    }
}

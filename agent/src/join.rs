//! Registration and swarm-join orchestration: register once in a node's life, remove
//! the bootstrap token, join the swarm through the local engine, and tell the manager
//! the swarm node id.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use protocol::config::{ConfigEdit, FirstBootConfig};
use protocol::token::{BootstrapToken, NodeCredential};

use crate::register::ManagerAddress;
use crate::retry::Backoff;
use crate::state::{Registration, RegistrationInfo, StateDir};
use crate::{facts, mdns, pinning, register, state, swarm};

/// Registers (once in a node's life), removes the bootstrap token, joins the swarm and
/// has the manager told; returns the client, address and registration to report with.
pub async fn join_cluster(
    cfg_path: &Path,
    cfg: &FirstBootConfig,
    root: &Path,
    state: &StateDir,
    stored: Option<Registration>,
    inputs: Option<(BootstrapToken, Option<ManagerAddress>)>,
    docker: &bollard::Docker,
) -> anyhow::Result<(reqwest::Client, ManagerAddress, Registration)> {
    let mut reg = match stored {
        Some(reg) => {
            tracing::info!(
                "registered as node {} with the manager at {} (credential in {})",
                reg.credential.node_id,
                reg.info.manager,
                state.path().display()
            );
            reg
        }
        None => {
            let (token, manager) = inputs.context("registration inputs were checked above")?;
            register_new(cfg, token, manager, root, docker, state).await?
        }
    };
    if !cfg.manager.token.is_empty() {
        remove_token(cfg_path)?;
        tracing::info!("removed the bootstrap token from {}", cfg_path.display());
    }

    let manager: ManagerAddress = reg.info.manager.parse().map_err(anyhow::Error::msg)?;
    if reg.info.discovered {
        let (_, at) = discover_manager(reg.info.discovered_addr).await;
        if reg.info.discovered_addr != Some(at) {
            reg.info.discovered_addr = Some(at);
            state.save(&reg)?;
        }
    }
    let resolve = reg.info.discovered_addr.filter(|_| reg.info.discovered);
    let client = pinning::client_for_ca(&reg.ca_pem, resolve.map(|a| (mdns::MANAGER_NAME, a)))?;
    join_swarm(docker, &reg, state).await?;
    tokio::spawn(acknowledge_join(
        docker.clone(),
        client.clone(),
        manager.clone(),
        reg.credential.clone(),
        state.clone(),
    ));
    Ok((client, manager, reg))
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

pub async fn register_new(
    cfg: &FirstBootConfig,
    token: BootstrapToken,
    configured: Option<ManagerAddress>,
    root: &Path,
    docker: &bollard::Docker,
    state: &StateDir,
) -> anyhow::Result<Registration> {
    let discovered = configured.is_none();
    let (manager, found_at) = match configured {
        Some(m) => (m, None),
        None => {
            let (m, at) = discover_manager(None).await;
            (m, Some(at))
        }
    };
    let mut facts = facts::read(root, cfg)?;
    facts.docker_version = swarm::engine_version(docker).await;
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
        pinning::client_for_pin(verifier.clone(), found_at.map(|a| (mdns::MANAGER_NAME, a)))?;
    let done =
        register::register_with_retry(&client, &verifier, &manager, &token, &facts, &cfg.labels)
            .await?;
    register::maybe_step_clock(done.response.server_time_ms);
    let credential: NodeCredential = done
        .response
        .credential
        .parse()
        .context("the manager sent a malformed node credential")?;
    if credential.node_id != done.response.node_id {
        anyhow::bail!(
            "the manager's reply names node {} but its credential is for node {}",
            done.response.node_id,
            credential.node_id
        );
    }
    let reg = Registration {
        credential,
        ca_pem: done.ca_pem,
        info: RegistrationInfo {
            manager: manager.to_string(),
            swarm_join_token: done.response.swarm_join_token,
            swarm_managers: done.response.swarm_managers,
            report_interval_seconds: done.response.report_interval_seconds,
            discovered,
            discovered_addr: found_at,
        },
    };
    state.save(&reg)?;
    tracing::info!(
        "registered as node {}; credential stored in {}",
        reg.credential.node_id,
        state.path().display()
    );
    Ok(reg)
}

/// Finds the manager over mDNS. Without a last known address it asks until one answers
/// (a new node has nowhere else to go); with one, it asks for a while and falls back to it.
pub async fn discover_manager(
    last: Option<std::net::SocketAddr>,
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
                return (name(found.addr.port()), found.addr);
            }
            Err(e) => {
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
pub fn remove_token(path: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut edit = ConfigEdit::parse(&text, &path.display().to_string())?;
    edit.remove_token();
    let (new_text, _) = edit.finish()?;
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(path)
            .with_context(|| format!("reading {}", path.display()))?
            .permissions(),
    ) & 0o777;
    state::write_file_atomic(path, new_text.as_bytes(), mode)
        .with_context(|| format!("removing the bootstrap token from {}", path.display()))
}

/// Joins the swarm unless the engine already is an active node of it; retries while
/// the swarm managers are unreachable, stops on a rejected token or a foreign swarm.
pub async fn join_swarm(
    docker: &bollard::Docker,
    reg: &Registration,
    state: &StateDir,
) -> anyhow::Result<()> {
    if let (Ok(info), Some(known)) = (docker.info().await, state.swarm_node_id()) {
        let sw = info.swarm.unwrap_or_default();
        if sw.local_node_state == Some(bollard::models::LocalNodeState::ACTIVE)
            && sw.node_id.as_deref() == Some(known.as_str())
        {
            tracing::info!("the local engine already is swarm node {known}");
            return Ok(());
        }
    }
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        match swarm::join(docker, &reg.info.swarm_join_token, &reg.info.swarm_managers).await {
            Ok(outcome) => {
                tracing::info!("swarm join via the local engine: {outcome:?}");
                return Ok(());
            }
            Err(e) if e.is_final() => return Err(e.into()),
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!("{e}; retrying in {:.1}s", delay.as_secs_f64());
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Tells the manager our swarm node id (it labels the node), retrying in the
/// background while it is away; remembers the acknowledged id.
pub async fn acknowledge_join(
    docker: bollard::Docker,
    client: reqwest::Client,
    manager: ManagerAddress,
    credential: NodeCredential,
    state: StateDir,
) {
    // The join may still be going on (a swarm manager that was away): keep waiting,
    // the labels depend on it.
    let node_id = loop {
        match swarm::wait_for_node_id(&docker, Duration::from_secs(60)).await {
            Ok(id) => break id,
            Err(e) => tracing::warn!("{e:#}; still waiting"),
        }
    };
    if state.swarm_node_id().as_deref() == Some(node_id.as_str()) {
        return;
    }
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        match swarm::report_joined(&client, &manager, &credential, &node_id).await {
            Ok(()) => {
                tracing::info!("the manager knows this node as swarm node {node_id}");
                if let Err(e) = state.save_swarm_node_id(&node_id) {
                    tracing::warn!("{e:#}");
                }
                return;
            }
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!("{e:#}; retrying in {:.1}s", delay.as_secs_f64());
                tokio::time::sleep(delay).await;
            }
        }
    }
}

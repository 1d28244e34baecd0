//! armada-agent: the program every board runs.
//!
//! At start it reads `armada.toml` from the boot partition. Not yet registered, it finds
//! the manager, trades the bootstrap token for its own credential (TLS pinned to the CA
//! fingerprint in the token), joins the Docker Swarm through the local engine's unix
//! socket and removes the token from the boot partition. Then, every interval, it reads
//! host, per-container (cgroup) and board-health metrics straight from `/proc` and
//! `/sys`, serves them on `/metrics` and pushes them to the manager, keeping a bounded
//! in-memory backlog while the manager is away. It never touches the Docker stats API
//! and never writes to the SD card per report.
//!
//! Layout:
//! - `metrics/`: one module per metric family, each a pure parse from a root path.
//! - `discover`: finding the manager over mDNS when no address is configured.
//! - `facts`: what the node says about itself when it registers.
//! - `pinning`: TLS to the manager pinned to the token's CA, then to the stored CA.
//! - `register`: `POST /v1/register` with retry and backoff, manager address, clock step.
//! - `swarm`: `POST /swarm/join` through the local engine, `POST /v1/joined`.
//! - `report`: the bounded backlog and the push loop.
//! - `serve`: the Prometheus endpoint.
//! - `state`: `/var/lib/armada` (credential, CA, registration).
//! - `clock`: `sync-clock` before Docker starts (boards have no RTC), and the clock floor.
//! - `firstboot`: hostname and ssh keys from `armada.toml`.
//! - `main.rs`: command line and wiring.

mod clock;
mod discover;
mod facts;
mod firstboot;
mod metrics;
mod pinning;
mod register;
mod report;
mod serve;
mod state;
mod swarm;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use protocol::config::{ConfigEdit, FirstBootConfig, BOOT_CONFIG_PATHS};
use protocol::token::{BootstrapToken, NodeCredential};

use crate::register::{backoff_delay, ManagerAddress};
use crate::state::{Registration, RegistrationInfo, StateDir};

#[derive(Parser)]
#[command(
    name = "armada-agent",
    version,
    about = "armada's board agent: register, join the swarm, report metrics"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Register (once), join the swarm and report metrics until stopped.
    Run(RunArgs),
    /// Apply armada.toml's hostname and ssh keys (run once by the first-boot unit).
    Firstboot(FirstbootArgs),
    /// Show this node's registration and swarm state.
    Status(StatusArgs),
    /// Collect and print metrics.
    Metrics(metrics::MetricsArgs),
    /// Step a lagging clock forward to the clock floor and the manager's time (run once
    /// per boot by armada-clock.service, before Docker).
    SyncClock(SyncClockArgs),
}

#[derive(Args)]
struct ConfigArgs {
    /// armada.toml to read; default: /boot/firmware/armada.toml or /boot/armada.toml
    /// under --root.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Root of the system to read facts and metrics from.
    #[arg(long, default_value = "/")]
    root: PathBuf,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    cfg: ConfigArgs,
    /// Where the credential, CA and registration are kept.
    #[arg(long, default_value = "/var/lib/armada")]
    state_dir: PathBuf,
    /// The local engine's socket (unix:// only: the engine is never reached over TCP).
    #[arg(long, default_value = "unix:///var/run/docker.sock")]
    docker_host: String,
}

#[derive(Args)]
struct FirstbootArgs {
    #[command(flatten)]
    cfg: ConfigArgs,
}

#[derive(Args)]
struct StatusArgs {
    #[command(flatten)]
    cfg: ConfigArgs,
    #[arg(long, default_value = "/var/lib/armada")]
    state_dir: PathBuf,
}

#[derive(Args)]
struct SyncClockArgs {
    #[command(flatten)]
    cfg: ConfigArgs,
    /// Where the registration (manager address, CA) and the clock floor are kept.
    #[arg(long, default_value = "/var/lib/armada")]
    state_dir: PathBuf,
    /// Give up reaching the manager after this many seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            init_logging();
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?
                .block_on(run(args))
        }
        Command::Firstboot(args) => {
            let (path, cfg) = load_config(&args.cfg)?;
            for line in firstboot::apply(&args.cfg.root, &cfg)? {
                println!("{line}");
            }
            println!("first boot settings from {} applied", path.display());
            Ok(())
        }
        Command::Status(args) => status(&args),
        Command::Metrics(args) => metrics::run_cli(args),
        Command::SyncClock(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?
            .block_on(clock::sync_clock(
                &args.state_dir,
                load_config(&args.cfg),
                Duration::from_secs(args.timeout),
            )),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

/// `--config`, or the first of the boot partition's paths that exists under `--root`.
fn find_config(args: &ConfigArgs) -> anyhow::Result<PathBuf> {
    if let Some(p) = &args.config {
        return Ok(p.clone());
    }
    let candidates: Vec<PathBuf> = BOOT_CONFIG_PATHS
        .iter()
        .map(|p| args.root.join(p.trim_start_matches('/')))
        .collect();
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .with_context(|| {
            format!(
                "no armada.toml found (looked at {}); pass --config PATH",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

fn load_config(args: &ConfigArgs) -> anyhow::Result<(PathBuf, FirstBootConfig)> {
    let path = find_config(args)?;
    let cfg = FirstBootConfig::load(&path)?;
    Ok((path, cfg))
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let (cfg_path, cfg) = load_config(&args.cfg)?;
    let state = StateDir::new(&args.state_dir);
    let stored = state.load()?;
    // Check what registration needs before waiting on anything.
    let inputs = match &stored {
        Some(_) => None,
        None => Some(registration_inputs(&cfg_path, &cfg, &state)?),
    };
    let docker = swarm::connect_with_wait(&args.docker_host, Duration::from_secs(120)).await?;

    // Metrics from the start: served at once, and kept in the backlog while the node
    // registers (the manager may boot after the workers).
    let interval_s = stored
        .as_ref()
        .map(|r| r.info.report_interval_seconds)
        .filter(|&s| s > 0)
        .unwrap_or(cfg.agent.interval_seconds);
    let shared = report::Shared::new(cfg.agent.backlog_reports);
    shared.set_interval(Duration::from_secs(u64::from(interval_s.max(1))));
    if !cfg.agent.metrics_listen.is_empty() {
        let listener = serve::bind(&cfg.agent.metrics_listen).await?;
        tracing::info!(
            "serving Prometheus metrics on http://{}/metrics",
            cfg.agent.metrics_listen
        );
        tokio::spawn(serve::serve(listener, shared.clone()));
    }
    // The clock floor sync-clock starts from after a power cut.
    tokio::spawn(clock::keep_floor(args.state_dir.clone()));
    let instance = hex::encode(rand::random::<[u8; 8]>());
    let source = MetricsSource(metrics::Collector::new(
        args.cfg.root.clone(),
        Some(docker.clone()),
    ));
    // The collector runs in this task (select! below), not a spawned one.
    let collect = report::collect_loop(source, shared.clone(), instance.clone());

    let report = async {
        let (client, manager, reg) =
            join_cluster(&cfg_path, &cfg, &args, &state, stored, inputs, &docker).await?;
        if reg.info.report_interval_seconds > 0 {
            shared.set_interval(Duration::from_secs(u64::from(
                reg.info.report_interval_seconds,
            )));
        }
        tracing::info!(
            "reporting to {manager} every {}s as instance {instance} (backlog of {} in memory)",
            shared.interval().as_secs(),
            cfg.agent.backlog_reports
        );
        let err =
            report::deliver_loop(client, manager, reg.credential.clone(), shared.clone()).await;
        Err::<(), anyhow::Error>(err.into())
    };

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = collect => Ok(()),
        r = report => r,
        _ = term.recv() => { tracing::info!("SIGTERM: stopping"); Ok(()) }
        _ = tokio::signal::ctrl_c() => { tracing::info!("interrupted: stopping"); Ok(()) }
    }
}

/// Registers (once in a node's life), removes the bootstrap token, joins the swarm and
/// has the manager told; returns the client, address and registration to report with.
async fn join_cluster(
    cfg_path: &Path,
    cfg: &FirstBootConfig,
    args: &RunArgs,
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
            register_new(cfg, token, manager, args, docker, state).await?
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
    let client = pinning::client_for_ca(&reg.ca_pem, resolve.map(|a| (discover::MANAGER_NAME, a)))?;
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

/// The metrics collector as the report loop's snapshot source.
struct MetricsSource(metrics::Collector);

impl report::SnapshotSource for MetricsSource {
    async fn collect(&mut self, instance: &str, seq: u64) -> protocol::snapshot::Snapshot {
        self.0.collect(instance, seq).await
    }
}

/// The bootstrap token and manager address an unregistered node needs (no address:
/// find the manager over mDNS).
fn registration_inputs(
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

async fn register_new(
    cfg: &FirstBootConfig,
    token: BootstrapToken,
    configured: Option<ManagerAddress>,
    args: &RunArgs,
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
    let mut facts = facts::read(&args.cfg.root, cfg)?;
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
    let client = pinning::client_for_pin(
        verifier.clone(),
        found_at.map(|a| (discover::MANAGER_NAME, a)),
    )?;
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
async fn discover_manager(
    last: Option<std::net::SocketAddr>,
) -> (ManagerAddress, std::net::SocketAddr) {
    let port = last
        .map(|a| a.port())
        .unwrap_or(protocol::DEFAULT_MANAGER_PORT);
    let name = |port| ManagerAddress {
        host: discover::MANAGER_NAME.to_string(),
        port,
    };
    let mut attempt = 0u32;
    loop {
        match discover::find_manager(Duration::from_secs(5), port).await {
            Ok(found) => {
                tracing::info!(
                    "found the manager over mDNS at {} ({})",
                    found.addr,
                    found.via
                );
                return (name(found.addr.port()), found.addr);
            }
            Err(e) => {
                if let Some(at) = last.filter(|_| attempt >= 2) {
                    tracing::warn!("{e:#}; using the manager's last known address {at}");
                    return (name(at.port()), at);
                }
                let delay = backoff_delay(
                    attempt,
                    Duration::from_secs(1),
                    Duration::from_secs(30),
                    rand::random(),
                );
                tracing::warn!("{e:#}; asking again in {:.1}s", delay.as_secs_f64());
                tokio::time::sleep(delay).await;
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

/// Takes the bootstrap token out of armada.toml, keeping everything else as written.
fn remove_token(path: &Path) -> anyhow::Result<()> {
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
async fn join_swarm(
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
    let mut attempt = 0u32;
    loop {
        match swarm::join(docker, &reg.info.swarm_join_token, &reg.info.swarm_managers).await {
            Ok(outcome) => {
                tracing::info!("swarm join via the local engine: {outcome:?}");
                return Ok(());
            }
            Err(e) if e.is_final() => return Err(e.into()),
            Err(e) => {
                let delay = backoff_delay(
                    attempt,
                    Duration::from_secs(1),
                    Duration::from_secs(60),
                    rand::random(),
                );
                tracing::warn!("{e}; retrying in {:.1}s", delay.as_secs_f64());
                tokio::time::sleep(delay).await;
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

/// Tells the manager our swarm node id (it labels the node), retrying in the
/// background while it is away; remembers the acknowledged id.
async fn acknowledge_join(
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
    let mut attempt = 0u32;
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
                let delay = backoff_delay(
                    attempt,
                    Duration::from_secs(1),
                    Duration::from_secs(60),
                    rand::random(),
                );
                tracing::warn!("{e:#}; retrying in {:.1}s", delay.as_secs_f64());
                tokio::time::sleep(delay).await;
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

fn status(args: &StatusArgs) -> anyhow::Result<()> {
    match load_config(&args.cfg) {
        Ok((path, cfg)) => {
            println!("config:        {}", path.display());
            println!("hostname:      {}", facts::hostname(&args.cfg.root, &cfg));
            println!("role:          {}", cfg.role);
            println!(
                "manager:       {}",
                if cfg.manager.address.is_empty() {
                    "(discover)"
                } else {
                    &cfg.manager.address
                }
            );
            println!(
                "token in file: {}",
                if cfg.manager.token.is_empty() {
                    "no"
                } else {
                    "yes"
                }
            );
        }
        Err(e) => println!("config:        {e:#}"),
    }
    let state = StateDir::new(&args.state_dir);
    match state.load()? {
        Some(reg) => {
            println!(
                "registered:    yes, node {} with {}",
                reg.credential.node_id, reg.info.manager
            );
            println!(
                "swarm node:    {}",
                state
                    .swarm_node_id()
                    .unwrap_or_else(|| "(not acknowledged by the manager yet)".into())
            );
        }
        None => println!(
            "registered:    no ({} holds no credential)",
            state.path().display()
        ),
    }
    Ok(())
}

//! The command line: its arguments, `armada.toml` lookup, and the small commands
//! (`firstboot`, `status`); `run` is in `crate::run`, `metrics` in `crate::metrics`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use protocol::config::{FirstBootConfig, BOOT_CONFIG_PATHS};

use crate::state::StateDir;
use crate::{clock, facts, firstboot, metrics, status};

#[derive(Parser)]
#[command(
    name = "armada-agent",
    version,
    about = "armada's board agent: register, join the swarm, report metrics"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Register (once), join the swarm and report metrics until stopped.
    Run(RunArgs),
    /// Apply armada.toml (hostname, ssh keys, Wi-Fi, time zone, static address) when it
    /// changed since the last boot; run at every boot by armada-firstboot.service.
    Firstboot(FirstbootArgs),
    /// Show this node's registration and swarm state.
    Status(StatusArgs),
    /// Collect and print metrics.
    Metrics(metrics::MetricsArgs),
    /// Step a lagging clock forward to the clock floor and the manager's time (run once
    /// per boot by armada-clock.service or, once the engine joined, by
    /// armada-clock-swarm.service before Docker).
    SyncClock(SyncClockArgs),
}

#[derive(Args)]
pub struct ConfigArgs {
    /// armada.toml to read; default: /boot/firmware/armada.toml or /boot/armada.toml
    /// under --root.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Root of the system to read facts and metrics from.
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub cfg: ConfigArgs,
    /// Where the credential, CA and registration are kept.
    #[arg(long, default_value = "/var/lib/armada")]
    pub state_dir: PathBuf,
    /// The local engine's socket (unix:// only: the engine is never reached over TCP).
    #[arg(long, default_value = "unix:///var/run/docker.sock")]
    pub docker_host: String,
    /// Where the running agent keeps its control-plane status for `status` (tmpfs).
    #[arg(long, default_value = status::DEFAULT_STATUS_FILE)]
    pub status_file: PathBuf,
}

#[derive(Args)]
pub struct FirstbootArgs {
    #[command(flatten)]
    pub cfg: ConfigArgs,
}

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub cfg: ConfigArgs,
    #[arg(long, default_value = "/var/lib/armada")]
    pub state_dir: PathBuf,
    /// The running agent's status file (`run --status-file`).
    #[arg(long, default_value = status::DEFAULT_STATUS_FILE)]
    pub status_file: PathBuf,
}

#[derive(Args)]
pub struct SyncClockArgs {
    #[command(flatten)]
    pub cfg: ConfigArgs,
    /// Where the registration (manager address, CA) and the clock floor are kept.
    #[arg(long, default_value = "/var/lib/armada")]
    pub state_dir: PathBuf,
    /// Give up reaching the manager after this many seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

/// Runs one command.
pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => {
            init_logging();
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?
                .block_on(crate::run::run(args))
        }
        Command::Firstboot(args) => {
            let path = find_config(&args.cfg)?;
            for line in firstboot::every_boot(&args.cfg.root, &path)? {
                println!("{line}");
            }
            Ok(())
        }
        Command::Status(args) => status(&args),
        Command::Metrics(args) => {
            // A one-shot print has no later cycle to show container names in: let its
            // one collection wait (bounded) for the engine's first answer.
            metrics::containers::set_first_list_wait(Duration::from_secs(3));
            metrics::run_cli(args)
        }
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
pub fn find_config(args: &ConfigArgs) -> anyhow::Result<PathBuf> {
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

pub fn load_config(args: &ConfigArgs) -> anyhow::Result<(PathBuf, FirstBootConfig)> {
    let path = find_config(args)?;
    let mut cfg = FirstBootConfig::load(&path)?;
    // First boot moved the token off the FAT (crate::firstboot).
    firstboot::fill_token(&args.root, &mut cfg)?;
    Ok((path, cfg))
}

pub fn status(args: &StatusArgs) -> anyhow::Result<()> {
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
    match firstboot::read_applied(&args.cfg.root) {
        Ok(Some(a)) => {
            println!(
                "settings:      armada.toml (sha256 {}) applied {}: {}",
                &a.sha256[..a.sha256.len().min(12)],
                clock::utc(a.applied_at_ms),
                if a.changes.is_empty() {
                    "nothing needed changing".to_string()
                } else {
                    format!("{} change(s)", a.changes.len())
                }
            );
            for c in &a.changes {
                println!("               - {c}");
            }
        }
        Ok(None) => println!("settings:      not applied yet (armada-firstboot runs at boot)"),
        Err(e) => println!("settings:      {e:#}"),
    }
    let state = StateDir::new(&args.state_dir);
    match state.load() {
        Err(e) => println!("registered:    ? ({e:#})"),
        Ok(reg) => {
            let registered = reg.is_some();
            print_registration(&state, reg);
            let wanted = load_config(&args.cfg).ok().map(|(_, c)| c.labels);
            if let Some(w) = wanted
                .filter(|w| registered && crate::labels::pending(w, state.labels_sent().as_ref()))
            {
                println!(
                    "               armada.toml says {}: not acknowledged yet (the agent sends them when it starts)",
                    crate::labels::format_labels(&w)
                );
            }
        }
    }
    match status::read_file(&args.status_file) {
        Ok(Some(s)) => print_agent_status(&s),
        Ok(None) => println!(
            "agent:         not running ({} absent)",
            args.status_file.display()
        ),
        Err(e) => println!("agent:         {e:#}"),
    }
    Ok(())
}

/// What the running agent says about its control plane.
fn print_agent_status(s: &status::AgentStatus) {
    let alive = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(s.pid).unwrap_or(i32::MAX)),
        None,
    )
    .is_ok();
    println!(
        "agent:         {} (pid {}, started {})",
        if alive {
            "running"
        } else {
            "not running (stale status)"
        },
        s.pid,
        clock::utc(s.started_ms)
    );
    println!(
        "delivery:      {}",
        if s.revoked {
            "stopped: the manager revoked this node".to_string()
        } else {
            match s.last_delivery_ms {
                Some(ms) => format!("last report delivered {}", clock::utc(ms)),
                None => "nothing delivered yet".to_string(),
            }
        }
    );
    for (reason, r) in &s.refused {
        println!(
            "refused:       {} snapshots dropped, {reason} (last: {} bytes of JSON, {}: {})",
            r.total,
            r.last_bytes,
            clock::utc(r.at_ms),
            r.last_message
        );
    }
    let mut any = false;
    for (kind, e) in s.active_errors() {
        any = true;
        println!(
            "error:         [{kind}] {} (since {}, {} times)",
            e.message,
            clock::utc(e.at_ms),
            e.total
        );
    }
    if !any {
        println!("errors:        none");
    }
}

fn print_registration(state: &StateDir, reg: Option<crate::state::Registration>) {
    match reg {
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
            match state.labels_sent() {
                Some(sent) => println!("labels:        {}", crate::labels::describe(&sent)),
                None => println!("labels:        (none acknowledged by the manager yet)"),
            }
        }
        None => println!(
            "registered:    no ({} holds no credential)",
            state.path().display()
        ),
    }
}

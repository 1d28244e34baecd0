//! `armada-manager`: the binary. See the library (`armada_manager`) for the layout.
//!
//! - `serve`: the manager (HTTPS API, dashboard, swarm, store).
//! - `nodes [remove ID]`: the operator's table, through the running manager's API.
//! - `backup FILE`: a consistent copy of every database of the state dir (the store,
//!   alerts, ...: `store::backup::STATE_DATABASES`) in one tar file, online.
//! - `restore FILE`: puts a backup's files in place (the manager must be stopped).
//! - `alerts [events]`: alerts and receivers, through the running manager's API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use armada_manager::limits::Limits;
use armada_manager::{client, server, store};

#[derive(Parser)]
#[command(
    name = "armada-manager",
    version,
    about = "armada's manager: registration, swarm join, labels, metrics store, API, dashboard"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the manager.
    Serve(ServeArgs),
    /// Print the node table, or remove a node (its credential stops working).
    Nodes(NodesArgs),
    /// Print the alerts (pending, firing, recently resolved) and the receivers' state.
    Alerts(AlertsArgs),
    /// Copy every database of the state dir (store, alerts) into the tar FILE,
    /// consistently, while the manager serves (or not).
    Backup(BackupArgs),
    /// Replace the state dir's databases by those of the backup FILE (each checked
    /// first); the manager must be stopped.
    Restore(BackupArgs),
}

#[derive(Args)]
struct BackupArgs {
    /// The backup file (written by `backup`, read by `restore`).
    file: PathBuf,
    /// Where the store lives.
    #[arg(long, default_value = "/var/lib/armada/manager")]
    state_dir: PathBuf,
}

#[derive(Args)]
struct ServeArgs {
    /// The folder written by `armada cluster init` (CA, manager.pem/.key, token, admin-token).
    #[arg(long, default_value = "/etc/armada/cluster")]
    cluster_dir: PathBuf,
    /// Where the store lives.
    #[arg(long, default_value = "/var/lib/armada/manager")]
    state_dir: PathBuf,
    #[arg(long, default_value = "0.0.0.0:7443")]
    listen: SocketAddr,
    /// The local Docker Engine socket (only unix sockets: the engine API is never used over TCP).
    #[arg(long, default_value = "unix:///var/run/docker.sock")]
    docker_host: String,
    /// Run without a Docker Engine: registration replies carry no join token (load tests).
    #[arg(long)]
    no_swarm: bool,
    /// Address the swarm advertises when this manager initialises it.
    #[arg(long)]
    swarm_advertise_addr: Option<String>,
    /// A node is stale after this many missed report intervals.
    #[arg(long, default_value_t = 3)]
    stale_after_intervals: u32,
    /// A node is down after this many seconds without a report (or when the swarm says so).
    #[arg(long, default_value_t = 60)]
    down_after: u64,
    /// Report interval handed to nodes at registration.
    #[arg(long, default_value_t = 10)]
    report_interval: u32,
    /// Least seconds between two checkpoints of the store's WAL into its file while
    /// reports come in (a thread beside the writer runs them; the WAL is also held
    /// near 32 MiB, and the shutdown does a last one).
    #[arg(long, default_value_t = 1)]
    checkpoint_interval: u64,
    /// The store was found damaged: keep what is readable in a new file, move the
    /// damaged one aside, print what was lost, then serve.
    #[arg(long)]
    salvage: bool,
    /// manager.toml: alert rules, silences and receivers (re-read on SIGHUP).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Open connections at most (also held below the open-file limit); 16 of them are
    /// kept for the admin token.
    #[arg(long, default_value_t = Limits::default().max_connections)]
    max_connections: usize,
    /// Registered nodes at most: a new machine beyond it is refused (507).
    #[arg(long, default_value_t = Limits::default().max_nodes)]
    max_nodes: usize,
    /// Registration attempts per source address per minute (0: no limit).
    #[arg(long, default_value_t = Limits::default().register_per_minute)]
    register_per_minute: u32,
    /// Registration attempts one source address may make at once.
    #[arg(long, default_value_t = Limits::default().register_burst)]
    register_burst: u32,
}

#[derive(Args)]
struct AlertsArgs {
    /// The manager's URL.
    #[arg(long, global = true, default_value = "https://127.0.0.1:7443")]
    url: String,
    /// The cluster folder (its ca.pem and admin-token are used).
    #[arg(long, global = true, default_value = "/etc/armada/cluster")]
    cluster_dir: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    action: Option<AlertsAction>,
}

#[derive(Subcommand)]
enum AlertsAction {
    /// The history of alert transitions, oldest first.
    Events {
        /// Only events after this sequence number.
        #[arg(long, default_value_t = 0)]
        since: i64,
    },
}

#[derive(Args)]
struct NodesArgs {
    /// The manager's URL.
    #[arg(long, global = true, default_value = "https://127.0.0.1:7443")]
    url: String,
    /// The cluster folder (its ca.pem and admin-token are used).
    #[arg(long, global = true, default_value = "/etc/armada/cluster")]
    cluster_dir: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    action: Option<NodesAction>,
}

#[derive(Subcommand)]
enum NodesAction {
    /// Remove a node: its credential is refused from now on (also by a manager started
    /// on an empty state dir: the id goes to the cluster folder's `revoked-nodes`), its
    /// swarm node is removed from the swarm, its hostname is free again.
    Remove { id: String },
    /// Make the node's swarm node a swarm manager (through the Engine API).
    Promote { id: String },
    /// Make the node's swarm node a swarm worker again.
    Demote { id: String },
    /// Set operator labels on the node's swarm node; they win over the node's own
    /// labels from armada.toml.
    Label {
        id: String,
        /// `KEY=VALUE` to set (repeatable).
        #[arg(value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// A key to remove (repeatable); the node's own value for it is not put back.
        #[arg(long = "remove", value_name = "KEY")]
        remove: Vec<String>,
    },
}

/// Two malloc arenas instead of glibc's default of up to 8 per core. Each thread that
/// allocates gets an arena of its own, and memory freed in one is not reused by
/// another: the async workers, the store's writer and the render thread each kept a
/// heap of their own holes. Measured at 10,000 nodes after 20 s of batched ingest (the
/// bench's phases, niced): 158 MiB RSS with the default, 120 MiB with two. An
/// operator's `MALLOC_ARENA_MAX` wins. Called first, before any other thread exists.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt takes two integers and touches no memory of ours; no other
        // thread allocates yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("ARMADA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Serve(a) => serve(a).await,
            Command::Nodes(a) => nodes(a).await,
            Command::Backup(a) => backup(a),
            Command::Restore(a) => restore(a),
            Command::Alerts(a) => alerts(a).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn backup(a: BackupArgs) -> Result<()> {
    let s = store::backup::backup(&a.state_dir, &a.file).with_context(|| {
        format!(
            "backing up the store of {} to {}",
            a.state_dir.display(),
            a.file.display()
        )
    })?;
    println!(
        "backed up {} to {}: {} ({} nodes, {} commits), {} bytes (every file checked)",
        a.state_dir.display(),
        a.file.display(),
        s.files.join(", "),
        s.nodes,
        s.commits,
        s.bytes
    );
    Ok(())
}

fn restore(a: BackupArgs) -> Result<()> {
    let s = store::backup::restore(&a.state_dir, &a.file).with_context(|| {
        format!(
            "restoring {} into {}",
            a.file.display(),
            a.state_dir.display()
        )
    })?;
    println!(
        "restored {} into {}: {} ({} nodes); each previous file is kept as {}/NAME.before-restore",
        a.file.display(),
        a.state_dir.display(),
        s.files.join(", "),
        s.nodes,
        a.state_dir.display()
    );
    Ok(())
}

async fn serve(a: ServeArgs) -> Result<()> {
    if a.salvage {
        let state_dir = a.state_dir.clone();
        let report = tokio::task::spawn_blocking(move || store::backup::salvage(&state_dir))
            .await
            .context("salvaging the store")?
            .with_context(|| format!("salvaging the store in {}", a.state_dir.display()))?;
        // On stderr with the log: stdout's first line stays the listening address.
        eprint!("{report}");
    }
    let cfg = server::ServeConfig {
        cluster_dir: a.cluster_dir,
        state_dir: a.state_dir,
        listen: a.listen,
        docker_host: (!a.no_swarm).then_some(a.docker_host),
        swarm_advertise_addr: a.swarm_advertise_addr,
        stale_after_intervals: a.stale_after_intervals.max(1),
        down_after: Duration::from_secs(a.down_after.max(1)),
        report_interval_seconds: a.report_interval.clamp(1, 3600),
        checkpoint_interval: Duration::from_secs(a.checkpoint_interval.max(1)),
        config_file: a.config,
        limits: Limits {
            max_connections: a.max_connections,
            max_nodes: a.max_nodes,
            register_per_minute: a.register_per_minute,
            register_burst: a.register_burst.max(1),
            ..Limits::default()
        },
    };
    server::serve(
        cfg,
        |addr| {
            // Tests and scripts read this line to learn the port of `--listen ...:0`.
            println!("armada-manager listening on https://{addr}");
            use std::io::Write;
            let _ = std::io::stdout().flush();
        },
        server::shutdown_signal(),
    )
    .await
    .context("armada-manager serve")
}

async fn nodes(a: NodesArgs) -> Result<()> {
    let url = a.url.trim_end_matches('/');
    match a.action {
        Some(NodesAction::Remove { id }) => {
            client::remove(url, &a.cluster_dir, &id).await?;
            let id = client::printable(&id);
            println!("removed {id}; its credential is refused from now on, by this manager and by one started on an empty state dir; its swarm node left the swarm");
        }
        Some(NodesAction::Promote { id }) => {
            client::set_role(url, &a.cluster_dir, &id, true).await?;
            println!("{id} is a swarm manager");
        }
        Some(NodesAction::Demote { id }) => {
            client::set_role(url, &a.cluster_dir, &id, false).await?;
            println!("{id} is a swarm worker");
        }
        Some(NodesAction::Label { id, set, remove }) => {
            let labels = client::label(url, &a.cluster_dir, &id, &set, &remove).await?;
            for (k, v) in labels {
                // Node-supplied strings: control characters printed escaped.
                println!("{}={}", k.escape_debug(), v.escape_debug());
            }
        }
        None => {
            let list = client::list(url, &a.cluster_dir).await?;
            if a.json {
                let json =
                    serde_json::to_string_pretty(&list).context("serialising the node list")?;
                println!("{}", client::json_printable(&json));
            } else {
                print!("{}", client::table(&list, armada_manager::now_ms()));
            }
        }
    }
    Ok(())
}

async fn alerts(a: AlertsArgs) -> Result<()> {
    use armada_manager::alerts::cli;
    let url = a.url.trim_end_matches('/');
    match a.action {
        Some(AlertsAction::Events { since }) => {
            let ev = cli::events(url, &a.cluster_dir, since).await?;
            if a.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&ev).context("serialising the events")?
                );
            } else {
                print!("{}", cli::events_table(&ev));
            }
        }
        None => {
            let r = cli::report(url, &a.cluster_dir).await?;
            if a.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&r).context("serialising the alerts")?
                );
            } else {
                print!("{}", cli::table(&r, armada_manager::now_ms()));
            }
        }
    }
    Ok(())
}

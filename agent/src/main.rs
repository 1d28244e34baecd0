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
//! - `main.rs`: command line, wiring.

mod metrics;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "armada-agent", version, about = "armada's board agent: register, join the swarm, report metrics")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Collect and print metrics.
    Metrics(metrics::MetricsArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Metrics(args) => metrics::run_cli(args),
    }
}

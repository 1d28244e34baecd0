//! Metric families, each parsing from a root path passed in (filled in by issue 3).

#[derive(clap::Args)]
pub struct MetricsArgs {
    /// Print one snapshot and exit.
    #[arg(long)]
    pub once: bool,
}

pub fn run_cli(_args: MetricsArgs) -> anyhow::Result<()> {
    anyhow::bail!("metrics collection is not built yet")
}

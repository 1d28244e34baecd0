//! `armada inspect IMAGE` (issue 5).

#[derive(clap::Args)]
pub struct InspectArgs {
    pub image: std::path::PathBuf,
}

pub fn run(_args: InspectArgs) -> anyhow::Result<()> {
    anyhow::bail!("armada inspect is not built yet")
}

//! `armada cluster init|token` (issue 4).

use crate::progress::Ui;

#[derive(clap::Subcommand)]
pub enum ClusterCommand {
    /// Create the cluster's CA, manager certificate and bootstrap token.
    Init { dir: Option<std::path::PathBuf> },
}

pub fn run(_cmd: ClusterCommand, _ui: &Ui) -> anyhow::Result<()> {
    anyhow::bail!("armada cluster is not built yet")
}

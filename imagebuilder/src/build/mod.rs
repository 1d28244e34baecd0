//! `armada build` and `armada boards` (issue 5).

use crate::progress::Ui;

#[derive(clap::Args)]
pub struct BuildArgs {
    #[arg(long)]
    pub board: String,
}

#[derive(clap::Args)]
pub struct BoardsArgs {}

pub fn run(_args: BuildArgs, _ui: &Ui) -> anyhow::Result<()> {
    anyhow::bail!("armada build is not built yet")
}

pub fn run_boards(_args: BoardsArgs) -> anyhow::Result<()> {
    anyhow::bail!("armada boards is not built yet")
}

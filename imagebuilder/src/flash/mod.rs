//! `armada flash IMAGE DEVICE` (issue 7).

use crate::progress::Ui;

#[derive(clap::Args)]
pub struct FlashArgs {
    pub image: std::path::PathBuf,
    pub device: std::path::PathBuf,
}

pub fn run(_args: FlashArgs, _ui: &Ui) -> anyhow::Result<()> {
    anyhow::bail!("armada flash is not built yet")
}

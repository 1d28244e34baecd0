//! `armada boot IMAGE`: smoke-boot under qemu-system-aarch64 (issue 6).

use crate::progress::Ui;

#[derive(clap::Args)]
pub struct BootArgs {
    /// The image to boot (.img; compressed images are unpacked to a temporary file).
    pub image: std::path::PathBuf,
}

pub fn run(_args: BootArgs, _ui: &Ui) -> anyhow::Result<()> {
    anyhow::bail!("armada boot is not built yet")
}

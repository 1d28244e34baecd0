//! armada: the operator's tool, run on an x86_64 host.
//!
//! It makes the cluster's credentials, builds flashable SD images for the boards in
//! `board-configs/` (a normal process: no mounts, no loop devices), writes and
//! personalises cards, inspects images and smoke-boots them under qemu-system-aarch64.
//! It knows no board by name: every board difference is data in its board config.
//!
//! Layout:
//! - `cluster`: `armada cluster init|token`: CA, manager certificate, bootstrap token.
//! - `board`: board configs (`board-configs/*.toml`): schema, validation, `armada boards`.
//! - `build`: `armada build`: rootfs, overlays, filesystems, partition table, outputs.
//! - `inspect`: `armada inspect IMAGE`.
//! - `flash`: `armada flash IMAGE DEVICE`: bmap-aware write, verify, personalise.
//! - `boot`: `armada boot IMAGE`: qemu-system-aarch64 smoke boot with milestones.
//! - `imager`: `armada imager-list`: a Raspberry Pi Imager os-list for built images.
//! - `bmap`: bmaptool-compatible block maps: create from a sparse image, write, parse.
//! - `fatfile`: read/write one file on a FAT partition inside an image or device, no mount.
//! - `pins`: which file serves each board download: pinned fetch or `--download NAME=FILE`.
//! - `kernel_fit`: refuses a userland whose systemd needs a newer kernel than the board's.
//! - `progress`: stage spinners and byte bars on a terminal, plain lines elsewhere.

mod bmap;
mod board;
mod boot;
mod build;
mod cluster;
mod fatfile;
mod fetch;
mod flash;
mod image;
mod imager;
mod inspect;
mod kernel_fit;
mod pins;
mod progress;
#[cfg(test)]
#[path = "../tests/support/skip.rs"]
mod test_skip;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "armada",
    version,
    propagate_version = true,
    about = "Build, flash and smoke-boot SD images for Docker Swarm clusters of ARM boards",
    long_about = "Build, flash and smoke-boot SD images for Docker Swarm clusters of ARM boards.\n\n\
        The flow:\n  \
        armada cluster init cluster/                        # CA, manager certificate, bootstrap token\n  \
        armada build --board rpi3 --role manager --cluster cluster/\n  \
        armada build --board pine64 --cluster cluster/\n  \
        armada flash out/pine64-worker-0.1.0.img.xz /dev/sdX --hostname pine-01\n  \
        (power on: the board grows its root, registers and joins the swarm)"
)]
struct Cli {
    /// Only errors and the final result.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create or manage the cluster's credentials (CA, manager certificate, bootstrap token).
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Build a flashable SD image for a board.
    Build(build::BuildArgs),
    /// List the boards armada can build for.
    Boards(build::BoardsArgs),
    /// Show an image's partition table, filesystems, blobs, boot files, armada.toml and manifest.
    Inspect(inspect::InspectArgs),
    /// Write an image to an SD card (or file), verify it, and personalise the card.
    Flash(flash::FlashArgs),
    /// Boot an image under qemu-system-aarch64 and report boot milestones.
    Boot(boot::BootArgs),
    /// Write a Raspberry Pi Imager os-list JSON for built images (from their manifests).
    ImagerList(imager::ImagerListArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.quiet);
    let ui = progress::Ui::new(cli.quiet);
    let result = match cli.command {
        Command::Cluster(c) => cluster::run(c, &ui),
        Command::Build(a) => build::run(a, &ui),
        Command::Boards(a) => build::run_boards(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Flash(a) => flash::run(a, &ui),
        Command::Boot(a) => boot::run(a, &ui),
        Command::ImagerList(a) => imager::run(a, &ui),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing(quiet: bool) {
    // The fatfs crate warns about every FAT that mkfs.vfat made (reserved_sectors != 1),
    // which is all of them: only its errors are worth showing.
    let default = if quiet {
        "warn,fatfs=error"
    } else {
        "info,fatfs=error"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ARMADA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
}

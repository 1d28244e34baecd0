//! `armada flash IMAGE DEVICE` (issue 7): write an image to an SD card (or a file),
//! verify it, and personalise the card.
//!
//! The order of work, each step failing loudly and nothing reported as success before
//! the last one:
//! 1. check the inputs (personalisation values, key files, cluster token, bmap);
//! 2. check the target ([`target`]: never mounted, never the running system's disk,
//!    removable and not too large unless `--force`), ask ([`confirm`]);
//! 3. open it exclusively and write the image's mapped ranges ([`write`], reading the
//!    image through [`source`]), sync;
//! 4. read every written range back from the device and compare its SHA-256;
//! 5. edit `armada.toml` on the card's boot partition ([`personalise`]) and read it
//!    back through the agent's parser.
//!
//! Layout: `source` (raw/xz/gz streaming), `target` (device facts and safety),
//! `write` (bmap-aware write and read-back), `personalise` (armada.toml), `list`
//! (`--list`), `confirm` (the question before overwriting a disk).

mod confirm;
mod list;
mod personalise;
mod source;
mod target;
mod write;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use protocol::wire::Role;

use crate::bmap::Bmap;
use crate::progress::Ui;

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    armada flash --list\n  \
    armada flash out/pine64-worker-0.1.0.img.xz /dev/sdb --hostname pine-01 --cluster cluster/\n  \
    armada flash IMG /dev/sdb --hostname 'pine-{nn}' --index 7 --label zone=shelf-2 --ssh-key ~/.ssh/id_ed25519.pub")]
pub struct FlashArgs {
    /// The image: .img, .img.xz or .img.gz.
    #[arg(required_unless_present = "list")]
    pub image: Option<PathBuf>,
    /// The SD card's block device (e.g. /dev/sdb, /dev/mmcblk0) or an image file to write.
    #[arg(required_unless_present = "list")]
    pub device: Option<PathBuf>,
    /// Show candidate removable disks with model and size, and exit.
    #[arg(long, conflicts_with_all = ["image", "device"])]
    pub list: bool,
    /// The image's bmap (default: IMAGE.bmap or the name with .xz/.gz dropped + .bmap).
    #[arg(long, value_name = "FILE", conflicts_with = "no_bmap")]
    pub bmap: Option<PathBuf>,
    /// Write every byte of the image even if a bmap is found.
    #[arg(long)]
    pub no_bmap: bool,
    /// Hostname for the card. With --index, a placeholder of n's in braces is replaced by the
    /// index padded to that many digits: 'pine-{nn}' with --index 7 gives pine-07.
    #[arg(long, value_name = "H")]
    pub hostname: Option<String>,
    /// The card's number in a batch, for a --hostname template.
    #[arg(long, value_name = "N")]
    pub index: Option<u32>,
    /// The board's role.
    #[arg(long, value_name = "worker|manager")]
    pub role: Option<Role>,
    /// A swarm node label, key=value (repeatable).
    #[arg(long, value_name = "K=V")]
    pub label: Vec<String>,
    /// A file of ssh public keys to authorise (repeatable).
    #[arg(long = "ssh-key", value_name = "FILE")]
    pub ssh_key: Vec<PathBuf>,
    /// The manager's address, host[:port].
    #[arg(long, value_name = "ADDR")]
    pub manager: Option<String>,
    /// Cluster folder from `armada cluster init`: its bootstrap token goes on the card.
    #[arg(long, value_name = "DIR")]
    pub cluster: Option<PathBuf>,
    /// Do not ask before writing a disk.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Write to a disk that is not removable, is larger than the size bound, or is a
    /// partition. Never overrides: mounted, in use, or holding the running system.
    #[arg(long)]
    pub force: bool,
    /// Size bound for the target without --force, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = target::DEFAULT_MAX_SIZE)]
    pub max_size: u64,
    /// Skip reading the card back after writing.
    #[arg(long, conflicts_with = "verify_only")]
    pub no_verify: bool,
    /// Write nothing: compare the device's mapped ranges with the image.
    #[arg(long)]
    pub verify_only: bool,
}

pub fn run(args: FlashArgs, ui: &Ui) -> Result<()> {
    if args.list {
        print!("{}", list::render(&list::candidates(Path::new("/"))?));
        return Ok(());
    }
    let (Some(image), Some(device)) = (args.image.clone(), args.device.clone()) else {
        bail!("give IMAGE and DEVICE, or --list");
    };

    // 1. Inputs, all checked before the target is touched.
    let personalisation = personalise::from_inputs(&personalise::Inputs {
        hostname: args.hostname.as_deref(),
        index: args.index,
        role: args.role,
        labels: &args.label,
        ssh_key_files: &args.ssh_key,
        manager: args.manager.as_deref(),
        cluster: args.cluster.as_deref(),
    })?;
    if args.verify_only && !personalisation.is_empty() {
        bail!("--verify-only writes nothing: drop the personalisation flags");
    }
    let source = source::Source::open(&image)?;
    if !personalisation.is_empty() && source.compression() == source::Compression::None {
        personalise::check_image(&image, &personalisation)?;
    }
    let bmap = resolve_bmap(&image, args.bmap.as_deref(), args.no_bmap, ui)?;
    if let (Some(b), Some(len)) = (&bmap, source.known_len()) {
        if len < b.image_size {
            bail!(
                "image {} is {len} bytes, smaller than the {} bytes its bmap says: the image is truncated or the bmap is another image's",
                image.display(),
                b.image_size
            );
        }
        if len > b.image_size {
            bail!(
                "image {} is {len} bytes but its bmap says {}: the bmap belongs to another image",
                image.display(),
                b.image_size
            );
        }
    }
    let image_size = bmap.as_ref().map(|b| b.image_size).or(source.known_len());

    // 2. The target.
    let facts = target::inspect(&device, Path::new("/"))?;
    if !args.verify_only {
        target::check(
            &facts,
            target::Policy {
                force: args.force,
                max_size: args.max_size,
            },
        )?;
        for input in [Some(image.as_path()), args.bmap.as_deref()]
            .into_iter()
            .flatten()
        {
            if same_file(input, &device) {
                bail!(
                    "refusing to write to {}: it is the input file {}",
                    device.display(),
                    input.display()
                );
            }
        }
    }
    if let (Some(size), true) = (image_size, facts.kind != target::TargetKind::File) {
        if facts.size < size {
            bail!(
                "target {} is {} but the image is {}: it does not fit",
                device.display(),
                target::human_bytes(facts.size),
                target::human_bytes(size)
            );
        }
    }
    if !args.verify_only && confirm::needs_asking(&facts, args.yes) {
        let q = confirm::question(&image.display().to_string(), &facts);
        confirm::ask(
            &q,
            std::io::stdin().is_terminal(),
            &mut std::io::stdin().lock(),
            &mut std::io::stderr(),
        )?;
    }
    let tgt = if args.verify_only {
        let file = std::fs::File::open(&device)
            .with_context(|| format!("opening {}", device.display()))?;
        target::Target { file, facts }
    } else {
        target::open(facts)?
    };
    let is_file = tgt.facts.kind == target::TargetKind::File;

    // 3. Write (or, for --verify-only, only read the image).
    let plan = match bmap {
        Some(b) => write::Plan::Mapped(b),
        None => write::Plan::Everything,
    };
    let total = match &plan {
        write::Plan::Mapped(b) => b.mapped_bytes(),
        write::Plan::Everything => image_size.unwrap_or(0),
    };
    let raw_image = match source.compression() {
        source::Compression::None => std::fs::File::open(&image).ok(),
        _ => None,
    };
    let streamed = if args.verify_only {
        let mut bar = ui.bytes("reading image", total);
        let s = write::stream(source, plan, &mut |_, _| Ok(()), &mut bar)?;
        bar.done();
        s
    } else {
        if is_file {
            // A fresh file of the image's size: holes read as zeros, exactly the image.
            tgt.file
                .set_len(0)
                .with_context(|| format!("truncating {}", device.display()))?;
            if let Some(size) = image_size {
                tgt.file
                    .set_len(size)
                    .with_context(|| format!("sizing {}", device.display()))?;
            }
        }
        let mut bar = ui.bytes(&format!("writing {}", device.display()), total);
        let mut sink = write::device_sink(&tgt.file, &device);
        let s = write::stream(source, plan, &mut sink, &mut bar)?;
        bar.done();
        if is_file {
            tgt.file
                .set_len(s.image_size)
                .with_context(|| format!("sizing {}", device.display()))?;
        }
        let stage = ui.stage(&format!("syncing {}", device.display()));
        tgt.file
            .sync_all()
            .with_context(|| format!("syncing {}", device.display()))?;
        stage.done();
        s
    };
    #[cfg(debug_assertions)]
    test_hook_corrupt(&tgt.file)?;

    // 4. Read back.
    let verified = if args.no_verify {
        None
    } else {
        let mut bar = ui.bytes(&format!("verifying {}", device.display()), streamed.bytes);
        let n = write::verify(
            &tgt.file,
            &device,
            &streamed.ranges,
            raw_image.as_ref(),
            &mut bar,
        )?;
        bar.done();
        Some(n)
    };
    if args.verify_only {
        ui.info(&format!(
            "verified: {} matches {} in all {} mapped bytes ({} ranges)",
            device.display(),
            image.display(),
            verified.unwrap_or(0),
            streamed.ranges.len()
        ));
        return Ok(());
    }

    // 5. Personalise.
    let summary = if personalisation.is_empty() {
        "not personalised (no --hostname/--role/--label/--ssh-key/--manager/--cluster)".to_string()
    } else {
        let cfg = personalise::personalise_card(&tgt.file, &device, &personalisation)?;
        format!(
            "armada.toml: hostname {}, role {}, {} label(s), {} ssh key(s), manager {}, bootstrap token {}",
            if cfg.hostname.is_empty() { "(image default)" } else { &cfg.hostname },
            cfg.role,
            cfg.labels.len(),
            cfg.ssh_authorized_keys.len(),
            if cfg.manager.address.is_empty() { "(mDNS)" } else { &cfg.manager.address },
            if cfg.manager.token.is_empty() { "none" } else { "set" }
        )
    };
    if !is_file {
        reread_partition_table(&tgt.file);
    }
    ui.info(&format!(
        "flashed {} to {}: {} bytes written of a {}-byte image, {}; {summary}",
        image.display(),
        device.display(),
        streamed.bytes,
        streamed.image_size,
        match verified {
            Some(n) => format!("{n} bytes read back and verified"),
            None => "NOT verified (--no-verify)".into(),
        }
    ));
    Ok(())
}

/// The bmap to use: `--bmap`, else one found beside the image, unless `--no-bmap`.
fn resolve_bmap(
    image: &Path,
    given: Option<&Path>,
    no_bmap: bool,
    ui: &Ui,
) -> Result<Option<Bmap>> {
    if no_bmap {
        return Ok(None);
    }
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => match crate::bmap::find_beside(image) {
            Some(p) => p,
            None => {
                ui.info(&format!(
                    "no bmap beside {}: writing every byte",
                    image.display()
                ));
                return Ok(None);
            }
        },
    };
    let b = Bmap::load(&path)?;
    ui.info(&format!(
        "bmap {}: {} of {} bytes mapped",
        path.display(),
        b.mapped_bytes(),
        b.image_size
    ));
    Ok(Some(b))
}

/// Whether `a` and `b` name the same existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Asks the kernel to re-read the card's new partition table so `/dev/sdX1` and
/// friends appear without re-inserting it. Best effort: a device without partition
/// support (a loop device without `-P`) says no, and that is fine.
fn reread_partition_table(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    const BLKRRPART: libc::c_ulong = 0x125F; // _IO(0x12, 95)
                                             // SAFETY: BLKRRPART takes no argument; the fd is a valid open block device.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKRRPART as _) };
    if rc != 0 {
        tracing::debug!("BLKRRPART: {}", std::io::Error::last_os_error());
    }
}

/// Test-only fault injection (debug builds): `ARMADA_FLASH_TEST_CORRUPT_AT=OFFSET`
/// flips the byte at OFFSET on the target after writing and before verifying, standing
/// in for a card that does not keep what it was given.
#[cfg(debug_assertions)]
fn test_hook_corrupt(file: &std::fs::File) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let Ok(v) = std::env::var("ARMADA_FLASH_TEST_CORRUPT_AT") else {
        return Ok(());
    };
    let at: u64 = v.parse().context("ARMADA_FLASH_TEST_CORRUPT_AT")?;
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, at)?;
    b[0] ^= 0xFF;
    file.write_all_at(&b, at)?;
    file.sync_all()?;
    Ok(())
}

//! `armada flash IMAGE DEVICE` (issue 7): write an image to an SD card (or a file),
//! verify it, and personalise the card.
//!
//! The order of work, each step failing loudly and nothing reported as success before
//! the last one:
//! 1. check every input before the first byte is written (personalisation values
//!    applied to a blank `armada.toml` through the agent's schema, key files, Wi-Fi,
//!    cluster token, bmap), and refuse a card nobody could log in to (no ssh key)
//!    unless `--no-ssh`;
//! 2. check the target ([`target`]: never mounted, never the running system's disk,
//!    removable and not too large unless `--force`), ask ([`confirm`]);
//! 3. check the target's identity again (device number, size, model, serial) right
//!    before opening it exclusively, and the opened device's number after;
//! 4. erase the card's partition table, write the image's mapped ranges except the
//!    partition table, which is held in memory ([`write`], reading the image through
//!    [`source`]), sync;
//! 5. read every written range back from the device and compare its SHA-256;
//! 6. edit `armada.toml` on the card's boot partition ([`personalise`]) and read it
//!    back through the agent's parser;
//! 7. write the partition table last and read it back.
//!
//! `--batch` ([`batch`]) repeats 2-7 for each card that appears, with a hostname
//! counting up.
//!
//! Layout: `source` (raw/xz/gz streaming), `target` (device facts, safety and
//! identity), `write` (bmap-aware write, table last, read-back), `personalise`
//! (armada.toml), `list` (`--list`), `confirm` (the question before overwriting a
//! disk), `batch` (waiting for cards, one after the other), `wifi` (the `[wifi]` flags
//! and the passphrase prompt).

mod batch;
mod confirm;
mod list;
mod personalise;
mod source;
mod target;
mod wifi;
mod write;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use protocol::config::FirstBootConfig;
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
    #[arg(required_unless_present_any = ["list", "batch"], conflicts_with = "batch")]
    pub device: Option<PathBuf>,
    /// Flash card after card: wait for the next removable card to appear, flash, verify,
    /// personalise and eject it, print the hostname it got, and wait for the next, until
    /// --count cards are done, no card comes within --wait seconds, or Ctrl-C.
    #[arg(long, conflicts_with_all = ["verify_only", "index"])]
    pub batch: bool,
    /// With --batch: stop after this many cards.
    #[arg(long, value_name = "N", requires = "batch")]
    pub count: Option<u32>,
    /// With --batch: the first card's number for the --hostname template.
    #[arg(long, value_name = "K", default_value_t = 1, requires = "batch")]
    pub start: u32,
    /// With --batch: seconds to wait for each card before stopping.
    #[arg(long, value_name = "SECS", default_value_t = 600, requires = "batch")]
    pub wait: u64,
    /// Tests only: with --batch, also take loop devices whose backing file is under DIR
    /// as cards (a real run never takes a loop device).
    #[arg(long, value_name = "DIR", hide = true, requires = "batch")]
    pub test_accept_loop_under: Option<PathBuf>,
    /// Flash a card without an ssh key: nobody can log in to it (root is locked, sshd
    /// takes keys only). Without it, a card with no key is refused.
    #[arg(long, conflicts_with = "ssh_key")]
    pub no_ssh: bool,
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
    /// The Wi-Fi network the board joins (its `[wifi]` in armada.toml). The passphrase
    /// is asked for on the terminal, or read from --wifi-psk-file; never an argument.
    #[arg(long, value_name = "SSID")]
    pub wifi_ssid: Option<String>,
    /// The radio's country code, e.g. DE or US (required with --wifi-ssid).
    #[arg(long, value_name = "CC")]
    pub wifi_country: Option<String>,
    /// A file whose first line is the Wi-Fi passphrase (8-63 characters) or 64-hex PSK.
    #[arg(long, value_name = "FILE")]
    pub wifi_psk_file: Option<PathBuf>,
    /// The Wi-Fi network does not broadcast its name.
    #[arg(long)]
    pub wifi_hidden: bool,
    /// The Wi-Fi network is open (no passphrase).
    #[arg(long)]
    pub wifi_open: bool,
    /// Time zone for the board, e.g. Europe/Berlin.
    #[arg(long, value_name = "ZONE")]
    pub timezone: Option<String>,
    /// A static IPv4 address with prefix instead of DHCP, e.g. 192.168.1.50/24.
    #[arg(long, value_name = "CIDR")]
    pub static_address: Option<String>,
    /// The default gateway for --static-address.
    #[arg(long, value_name = "IP", requires = "static_address")]
    pub gateway: Option<String>,
    /// A DNS server for --static-address (repeatable).
    #[arg(long, value_name = "IP", requires = "static_address")]
    pub dns: Vec<String>,
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
    let Some(image) = args.image.clone() else {
        bail!("give IMAGE and DEVICE, IMAGE --batch, or --list");
    };
    if args.batch {
        return batch::run(&args, &image, ui);
    }
    let Some(device) = args.device.clone() else {
        bail!("give IMAGE and DEVICE, IMAGE --batch, or --list");
    };
    let wifi = wifi_from(&args)?;
    let personalisation = personalisation_for(&args, &wifi, args.index)?;
    let job = Job::prepare(&args, &image, &personalisation, ui)?;
    let done = job.flash_card(&device, &personalisation, None, ui)?;
    if let Some(line) = done.report {
        ui.info(&line);
    }
    Ok(())
}

/// `[wifi]` from the flags (asking for the passphrase once, for a whole batch too).
fn wifi_from(args: &FlashArgs) -> Result<Option<protocol::config::WifiConfig>> {
    wifi::from_flags(&wifi::Flags {
        ssid: args.wifi_ssid.as_deref(),
        country: args.wifi_country.as_deref(),
        psk_file: args.wifi_psk_file.as_deref(),
        hidden: args.wifi_hidden,
        open: args.wifi_open,
    })
}

/// The flags' personalisation for card number `index`, every value checked (step 1).
fn personalisation_for(
    args: &FlashArgs,
    wifi: &Option<protocol::config::WifiConfig>,
    index: Option<u32>,
) -> Result<personalise::Personalisation> {
    let p = personalise::from_inputs(&personalise::Inputs {
        hostname: args.hostname.as_deref(),
        index,
        role: args.role,
        labels: &args.label,
        ssh_key_files: &args.ssh_key,
        manager: args.manager.as_deref(),
        cluster: args.cluster.as_deref(),
        wifi: wifi.clone(),
        timezone: args.timezone.as_deref(),
        network: args
            .static_address
            .as_ref()
            .map(|a| protocol::config::NetworkConfig {
                address: a.clone(),
                gateway: args.gateway.clone().unwrap_or_default(),
                dns: args.dns.clone(),
                interface: String::new(),
            }),
    })?;
    // The same edit on a blank armada.toml, through the agent's schema: a value the
    // board would reject (a reserved label key, say) fails here, not on the card.
    let blank = FirstBootConfig::default().to_toml();
    personalise::apply(&blank, "the flags given (armada.toml)", &p)?;
    Ok(p)
}

/// What every card of one run shares: the image, its bmap and the checks made once.
pub(crate) struct Job<'a> {
    args: &'a FlashArgs,
    image: PathBuf,
    bmap: Option<Bmap>,
    image_size: Option<u64>,
    /// The card would have no ssh key (none given, none in the image as far as known).
    keyless: bool,
}

/// One card done.
pub(crate) struct Flashed {
    pub hostname: String,
    /// The line printed for a single flash (None for --verify-only, printed already).
    pub report: Option<String>,
}

impl<'a> Job<'a> {
    fn prepare(
        args: &'a FlashArgs,
        image: &Path,
        personalisation: &personalise::Personalisation,
        ui: &Ui,
    ) -> Result<Self> {
        if args.verify_only && !personalisation.is_empty() {
            bail!("--verify-only writes nothing: drop the personalisation flags");
        }
        let source = source::Source::open(image)?;
        let mut image_keys = None;
        if source.compression() == source::Compression::None
            && (!personalisation.is_empty() || personalisation.ssh_keys.is_empty())
        {
            match personalise::check_image(image, personalisation) {
                Ok(cfg) => image_keys = Some(!cfg.ssh_authorized_keys.is_empty()),
                Err(e) if !personalisation.is_empty() => return Err(e),
                // Not an armada image: nothing to personalise, nothing to say about keys.
                Err(_) => image_keys = Some(false),
            }
        }
        let keyless = !args.verify_only
            && !args.no_ssh
            && personalisation.ssh_keys.is_empty()
            && image_keys != Some(true);
        let bmap = resolve_bmap(image, args.bmap.as_deref(), args.no_bmap, ui)?;
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
        Ok(Job {
            args,
            image: image.to_path_buf(),
            bmap,
            image_size,
            keyless,
        })
    }

    /// Steps 2-7 for one card. `batch` is set for --batch: the question was asked once
    /// for the whole run, and loop devices under the test directory count as cards.
    fn flash_card(
        &self,
        device: &Path,
        personalisation: &personalise::Personalisation,
        batch: Option<&batch::Accept>,
        ui: &Ui,
    ) -> Result<Flashed> {
        let args = self.args;
        let image = &self.image;
        let root = Path::new("/");
        // 2. The target.
        let mut facts = target::inspect(device, root)?;
        if let Some(accept) = batch {
            accept.apply(&mut facts);
        }
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
                if same_file(input, device) {
                    bail!(
                        "refusing to write to {}: it is the input file {}",
                        device.display(),
                        input.display()
                    );
                }
            }
        }
        if let (Some(size), true) = (self.image_size, facts.kind != target::TargetKind::File) {
            if facts.size < size {
                bail!(
                    "target {} is {} but the image is {}: it does not fit",
                    device.display(),
                    target::human_bytes(facts.size),
                    target::human_bytes(size)
                );
            }
        }
        if self.keyless {
            let msg = "no ssh key for this card: nobody will be able to log in (root is locked and sshd takes keys only); give --ssh-key FILE, or --no-ssh to flash it anyway";
            if facts.kind == target::TargetKind::File {
                // An image file is for qemu or a later `armada flash`: a warning will do.
                ui.info(&format!("warning: {msg}"));
            } else {
                bail!("refusing to write to {}: {msg}", device.display());
            }
        }
        if !args.verify_only && batch.is_none() && confirm::needs_asking(&facts, args.yes) {
            let q = confirm::question(&image.display().to_string(), &facts);
            confirm::ask(
                &q,
                std::io::stdin().is_terminal(),
                &mut std::io::stdin().lock(),
                &mut std::io::stderr(),
            )?;
        }
        let tgt = if args.verify_only {
            let file = std::fs::File::open(device)
                .with_context(|| format!("opening {}", device.display()))?;
            target::Target { file, facts }
        } else {
            // 3. The same device as the one checked and shown in the question.
            #[cfg(debug_assertions)]
            test_hook_before_open()?;
            target::recheck(&facts, root)?;
            target::open(facts)?
        };
        let is_file = tgt.facts.kind == target::TargetKind::File;

        // 4. Write (or, for --verify-only, only read the image).
        let source = source::Source::open(image)?;
        let plan = match &self.bmap {
            Some(b) => write::Plan::Mapped(b.clone()),
            None => write::Plan::Everything,
        };
        let total = match &plan {
            write::Plan::Mapped(b) => b.mapped_bytes(),
            write::Plan::Everything => self.image_size.unwrap_or(0),
        };
        let raw_image = match source.compression() {
            source::Compression::None => std::fs::File::open(image).ok(),
            _ => None,
        };
        let mut table = [0u8; write::TABLE_BYTES];
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
                if let Some(size) = self.image_size {
                    tgt.file
                        .set_len(size)
                        .with_context(|| format!("sizing {}", device.display()))?;
                }
            }
            table = write::erase_table(&tgt.file, device)?;
            let mut bar = ui.bytes(&format!("writing {}", device.display()), total);
            let s = {
                let sink = write::device_sink(&tgt.file, device);
                #[cfg(debug_assertions)]
                let sink = test_hook_fail_after(sink);
                let sink = batch::interruptible(sink);
                let mut sink = write::holding_back_table(sink, &mut table);
                write::stream(source, plan, &mut sink, &mut bar)?
            };
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

        // 5. Read back (the partition table from memory: it is not on the card yet).
        let held: &[u8] = if args.verify_only { &[] } else { &table };
        let verified = if args.no_verify {
            None
        } else {
            let mut bar = ui.bytes(&format!("verifying {}", device.display()), streamed.bytes);
            let n = write::verify(
                &tgt.file,
                device,
                &streamed.ranges,
                raw_image.as_ref(),
                held,
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
            return Ok(Flashed {
                hostname: String::new(),
                report: None,
            });
        }

        // 6. Personalise, finding the boot partition in the held-back table.
        let (summary, hostname) = if personalisation.is_empty() {
            (
                "not personalised (no --hostname/--role/--label/--ssh-key/--manager/--cluster/--wifi-ssid/--timezone/--static-address)"
                    .to_string(),
                String::new(),
            )
        } else {
            let mut mbr = [0u8; 512];
            mbr.copy_from_slice(&table[..512]);
            let part = crate::fatfile::first_fat_partition_from(&mbr, device)
                .context("finding the card's boot partition in the image's partition table")?;
            let cfg = personalise::personalise_card(&tgt.file, device, part, personalisation)?;
            (
                format!(
                    "armada.toml: hostname {}, role {}, {} label(s), {} ssh key(s), manager {}, bootstrap token {}, Wi-Fi {}, time zone {}, address {}",
                    if cfg.hostname.is_empty() { "(image default)" } else { &cfg.hostname },
                    cfg.role,
                    cfg.labels.len(),
                    cfg.ssh_authorized_keys.len(),
                    if cfg.manager.address.is_empty() { "(mDNS)" } else { &cfg.manager.address },
                    if cfg.manager.token.is_empty() { "none" } else { "set" },
                    if cfg.wifi.ssid.is_empty() { "none".to_string() } else { format!("`{}` ({})", cfg.wifi.ssid, cfg.wifi.country) },
                    if cfg.timezone.is_empty() { "(image default)" } else { &cfg.timezone },
                    if cfg.network.address.is_empty() { "DHCP" } else { &cfg.network.address }
                ),
                cfg.hostname,
            )
        };

        // 7. The partition table, last.
        write::write_table(&tgt.file, device, &table)?;
        if !is_file {
            reread_partition_table(&tgt.file);
        }
        Ok(Flashed {
            hostname,
            report: Some(format!(
                "flashed {} to {}: {} bytes written of a {}-byte image, {}; partition table written last; {summary}",
                image.display(),
                device.display(),
                streamed.bytes,
                streamed.image_size,
                match verified {
                    Some(n) => format!("{n} bytes read back and verified"),
                    None => "NOT verified (--no-verify)".into(),
                }
            )),
        })
    }
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

/// Test-only (debug builds): `ARMADA_FLASH_TEST_BEFORE_OPEN=COMMAND` runs COMMAND with
/// `sh -c` after the target was checked and before it is checked again and opened,
/// standing in for a card swapped while the question was on the screen.
#[cfg(debug_assertions)]
fn test_hook_before_open() -> Result<()> {
    let Ok(cmd) = std::env::var("ARMADA_FLASH_TEST_BEFORE_OPEN") else {
        return Ok(());
    };
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(&cmd)
        .status()
        .context("ARMADA_FLASH_TEST_BEFORE_OPEN")?;
    if !st.success() {
        bail!("ARMADA_FLASH_TEST_BEFORE_OPEN `{cmd}` failed: {st}");
    }
    Ok(())
}

/// Test-only (debug builds): `ARMADA_FLASH_TEST_FAIL_AFTER=BYTES` fails the write once
/// BYTES have gone to the target, standing in for a card pulled out mid-write.
#[cfg(debug_assertions)]
fn test_hook_fail_after<'a>(
    mut inner: impl FnMut(u64, &[u8]) -> Result<()> + 'a,
) -> impl FnMut(u64, &[u8]) -> Result<()> + 'a {
    let limit: Option<u64> = std::env::var("ARMADA_FLASH_TEST_FAIL_AFTER")
        .ok()
        .and_then(|v| v.parse().ok());
    let mut written = 0u64;
    move |offset, data| {
        if let Some(l) = limit {
            if written + data.len() as u64 > l {
                bail!(
                    "test: the card went away after {written} bytes (ARMADA_FLASH_TEST_FAIL_AFTER)"
                );
            }
        }
        written += data.len() as u64;
        inner(offset, data)
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

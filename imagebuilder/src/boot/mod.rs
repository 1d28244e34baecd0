//! `armada boot IMAGE`: smoke-boot an image under qemu-system-aarch64 (issue 6).
//!
//! The image file is never modified: qemu boots a copy-on-write overlay of it. What
//! boots is chosen the way the board's own boot chain chooses it (`[qemu.machine.NAME]
//! boot`): on raspi3b the card's `config.txt` and `cmdline.txt` name the kernel, the
//! initramfs and the command line (qemu cannot run the Pi's GPU firmware, so armada
//! reads them as it would); on virt a Pine64 card is booted by real U-Boot
//! (u-boot-qemu) reading the card's own extlinux.conf. Only the device tree of a fixed
//! board and the machine's flags come from the board config. The serial consoles are captured to files and watched for milestones
//! (kernel, systemd, multi-user, agent registered, swarm joined), each printed with its
//! time since power-on as `milestone NAME SECONDS`. A hard timeout bounds the run, and
//! qemu is stopped by its PID however the run ends.
//!
//! Layout:
//! - `cmdline`: the `[qemu]` schema and the qemu argument list (pure).
//! - `console`: serial capture tails, milestone recognition, the agent's lines (pure).
//! - `firmware`: config.txt, cmdline.txt and extlinux.conf, read as the firmware does (pure).
//! - `kernel`: what to boot, out of the FAT partition, per boot chain.
//! - `overlay`: unpacking compressed images, the qcow2 overlay, its size.
//! - `qemu`: spawning, watching and stopping qemu; SIGINT/SIGTERM handling.

pub mod cmdline;
pub mod console;
pub mod firmware;
mod kernel;
mod overlay;
mod qemu;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::board;
use crate::progress::Ui;
use cmdline::{Launch, Net, QemuMachine};
use console::{Journal, Milestone, Milestones, SerialTail};

#[derive(clap::Args)]
pub struct BootArgs {
    /// The image to boot (.img; .img.xz and .img.gz are unpacked to a temporary file).
    pub image: PathBuf,
    /// Board whose config (`board-configs/NAME.toml`) says how to boot it
    /// [default: the `board` in the image's armada.toml].
    #[arg(long, conflicts_with = "config")]
    pub board: Option<String>,
    /// Board config file to use instead of looking the board up.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Folder of board configs (default: board-configs/ here or beside the armada binary).
    #[arg(long, env = "ARMADA_BOARDS_DIR")]
    pub boards_dir: Option<PathBuf>,
    /// qemu machine: `virt` (any board) or `raspi3b` [default: the board config's].
    #[arg(long)]
    pub machine: Option<String>,
    /// Hard limit on the whole run, in seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Write the guest's console here [default: a temporary file, shown on failure].
    #[arg(long)]
    pub console: Option<PathBuf>,
    /// Guest network: `user` (qemu NAT), `tap:IFNAME` (an existing tap device) or `none`.
    #[arg(long, default_value = "user")]
    pub net: Net,
    /// Stop with success once this milestone is seen: kernel, systemd, multi-user,
    /// registered, joined; `none` runs until the timeout, the guest powers off or
    /// armada gets SIGINT/SIGTERM.
    #[arg(long, default_value = "multi-user")]
    pub until: String,
    /// Card size the guest sees (e.g. 8G) [default: the image's size, rounded up to a
    /// power of two where the machine needs it]. Larger than the image lets first boot
    /// grow the root filesystem.
    #[arg(long)]
    pub disk_size: Option<String>,
    /// Keep the copy-on-write card at this path (created if missing, booted again if
    /// present: a reboot with the same disk).
    #[arg(long)]
    pub overlay: Option<PathBuf>,
    /// Guest MAC address [default: derived from the overlay's path, stable across runs].
    #[arg(long)]
    pub mac: Option<String>,
}

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Reached(Milestone),
    GuestStopped(Option<i32>),
    StopRequested,
    TimedOut,
}

pub fn run(args: BootArgs, ui: &Ui) -> Result<()> {
    qemu::install_stop_handler()?;
    let until: Option<Milestone> = match args.until.as_str() {
        "none" => None,
        s => Some(s.parse().map_err(anyhow::Error::msg)?),
    };
    if !args.image.is_file() {
        bail!("{}: no such image file", args.image.display());
    }
    let work = overlay::WorkDir::create(false)?;

    // The raw image: unpacked next to a kept overlay so a second boot finds it again.
    let unpack_to = match &args.overlay {
        Some(o) => path_with_suffix(o, ".base.img"),
        None => work.path().join("base.img"),
    };
    let stage = ui.stage("preparing the image");
    let raw = overlay::raw_image(&args.image, &unpack_to)?;
    stage.done();

    let (config_path, section) = board_qemu(&args, &raw)?;
    let (machine, spec) = section
        .select(args.machine.as_deref())
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("board config {}", config_path.display()))?;

    let files = kernel::plan(&raw, spec, work.path())?;
    ui.info(&format!(
        "boot chain {} under {}: {}",
        spec.boot.name(),
        machine.name(),
        files.sources.join("; ")
    ));

    let disk = prepare_disk(&args, machine, &raw, work.path())?;

    let console_file = args
        .console
        .clone()
        .unwrap_or_else(|| work.path().join("console.log"));
    let primary = cmdline::console_serial(machine, &files.append, spec.pci_serial);
    let serial_files: Vec<PathBuf> = (0..machine.serial_count() + spec.pci_serial as usize)
        .map(|i| {
            if i == primary {
                console_file.clone()
            } else {
                path_with_suffix(&console_file, &format!(".serial{i}"))
            }
        })
        .collect();
    for f in &serial_files {
        // qemu appends to nothing: each run's capture starts empty.
        std::fs::write(f, b"").with_context(|| format!("creating console file {}", f.display()))?;
    }

    let mac = match &args.mac {
        Some(m) => m.clone(),
        None => cmdline::stable_mac(&format!("{}|{}", disk.display(), machine.name())),
    };
    let launch = Launch {
        machine,
        bios: files.bios,
        kernel: files.kernel,
        initrd: files.initrd,
        dtb: files.dtb,
        append: files.append.clone(),
        memory_mib: spec.memory_mib,
        smp: None,
        cpu: None,
        disk: disk.clone(),
        disk_format: "qcow2".into(),
        net: args.net.clone(),
        mac: mac.clone(),
        pci_serial: spec.pci_serial,
        serial_files: serial_files.clone(),
        qmp_socket: None,
    };
    let qemu_args = cmdline::qemu_args(&launch).map_err(anyhow::Error::msg)?;
    tracing::debug!("{} {}", qemu::QEMU_BINARY, qemu_args.join(" "));
    let qemu_log = work.path().join("qemu.log");

    let mut q = qemu::spawn(&qemu_args, &qemu_log)?;
    let power_on = Instant::now();
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    // Machine-readable: tests measure later milestones (seen elsewhere) from here.
    println!("power-on {epoch:.3} pid {} mac {}", q.pid(), launch.mac);
    ui.info(&format!(
        "qemu {} started (pid {}), console: {}, timeout {}s",
        machine.name(),
        q.pid(),
        console_file.display(),
        args.timeout
    ));

    let mut tails: Vec<SerialTail> = serial_files.iter().map(|f| SerialTail::new(f)).collect();
    let mut milestones = Milestones::default();
    let mut journal = Journal::default();
    let mut halted_at: Option<Instant> = None;
    let deadline = power_on + Duration::from_secs(args.timeout);
    let outcome = loop {
        let t = power_on.elapsed().as_secs_f64();
        for tail in tails.iter_mut() {
            let lines = tail
                .poll()
                .with_context(|| format!("reading console capture {}", tail.path().display()))?;
            for line in &lines {
                journal.observe(line, t);
                if console::is_halt_line(line) && halted_at.is_none() {
                    halted_at = Some(Instant::now());
                }
                if let Some(m) = milestones.observe(line, t) {
                    println!("milestone {} {t:.1}s ({})", m.name(), m.describe());
                }
            }
            // getty's prompt has no newline after it.
            let pending = tail.lines.pending();
            if console::is_login_prompt(&pending) {
                if let Some(m) = milestones.observe(&pending, t) {
                    println!("milestone {} {t:.1}s ({})", m.name(), m.describe());
                }
            }
        }
        if let Some(u) = until {
            if milestones.reached(u) {
                break Outcome::Reached(u);
            }
        }
        if let Some(status) = q.exited()? {
            break Outcome::GuestStopped(status.code());
        }
        // Give a machine that can power off a moment to do so by itself.
        if halted_at.is_some_and(|h| h.elapsed() > Duration::from_secs(3)) {
            break Outcome::GuestStopped(Some(0));
        }
        if qemu::stop_requested() {
            break Outcome::StopRequested;
        }
        if Instant::now() >= deadline {
            break Outcome::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // qemu writes its disk cache and the overlay's tables out on SIGTERM; on a busy host
    // that can take a while, and a SIGKILL before the end could damage the overlay.
    let stop_started = Instant::now();
    let stopped = q.stop(Duration::from_secs(90))?;
    ui.info(&format!(
        "qemu (pid {}) {} in {:.1}s",
        q.pid(),
        match stopped {
            qemu::Stopped::AlreadyExited(_) => "had exited",
            qemu::Stopped::Terminated => "stopped by SIGTERM",
            qemu::Stopped::Killed => "did not stop on SIGTERM and was killed",
        },
        stop_started.elapsed().as_secs_f64()
    ));
    let total = power_on.elapsed().as_secs_f64();

    let summary: Vec<String> = Milestone::ALL
        .iter()
        .map(|m| match milestones.at(*m) {
            Some(t) => format!("{}={t:.1}", m.name()),
            None => format!("{}=-", m.name()),
        })
        .collect();
    println!(
        "boot {} {} after {total:.1}s: {}",
        machine.name(),
        describe(&outcome),
        summary.join(" ")
    );

    let ok = match (&outcome, until) {
        (Outcome::Reached(_), _) => true,
        // Running for a while was the point: fine unless qemu never booted a kernel.
        (_, None) => milestones.reached(Milestone::Kernel),
        _ => false,
    };
    if ok {
        return Ok(());
    }
    report_failure(&serial_files, &journal, &qemu_log, primary);
    let wanted = until.map(|m| m.name()).unwrap_or("kernel");
    bail!(
        "{} did not reach `{wanted}` under {} ({}); console: {}",
        args.image.display(),
        machine.name(),
        describe(&outcome),
        console_file.display()
    )
}

fn describe(o: &Outcome) -> String {
    match o {
        Outcome::Reached(m) => format!("reached {}", m.name()),
        Outcome::GuestStopped(Some(0)) => "guest powered off or rebooted".into(),
        Outcome::GuestStopped(code) => format!("qemu exited with status {code:?}"),
        Outcome::StopRequested => "stopped on request".into(),
        Outcome::TimedOut => "timed out".into(),
    }
}

/// Prints the console's tail, the agent's lines and qemu's own messages to stderr.
fn report_failure(serials: &[PathBuf], journal: &Journal, qemu_log: &Path, primary: usize) {
    if let Some(p) = serials.get(primary) {
        eprintln!("---- last console lines ({}) ----", p.display());
        for l in console::tail_of(p, 40) {
            eprintln!("  {l}");
        }
    }
    eprintln!(
        "---- armada-agent / armada-firstboot lines seen ({}) ----",
        journal.lines.len()
    );
    for (t, l) in journal.lines.iter().rev().take(40).rev() {
        eprintln!("  [{t:7.1}s] {l}");
    }
    let q = console::tail_of(qemu_log, 20);
    if !q.is_empty() {
        eprintln!("---- qemu ----");
        for l in q {
            eprintln!("  {l}");
        }
    }
}

/// Creates or reuses the copy-on-write card, sized for the machine.
fn prepare_disk(args: &BootArgs, machine: QemuMachine, raw: &Path, work: &Path) -> Result<PathBuf> {
    let image_size = std::fs::metadata(raw)
        .with_context(|| format!("reading the size of {}", raw.display()))?
        .len();
    let mut size = match &args.disk_size {
        Some(s) => cmdline::parse_size(s).map_err(anyhow::Error::msg)?,
        None => image_size,
    };
    if size < image_size {
        bail!("--disk-size {size} bytes is smaller than the image ({image_size} bytes)");
    }
    if machine.needs_power_of_two_disk() {
        size = cmdline::next_power_of_two(size);
    }
    let disk = match &args.overlay {
        Some(o) => o.clone(),
        None => work.join("disk.qcow2"),
    };
    if disk.exists() {
        let info = overlay::overlay_info(&disk)?;
        if info.format != "qcow2" {
            bail!(
                "{} is not a qcow2 overlay (qemu-img says {})",
                disk.display(),
                info.format
            );
        }
        let backing = info.backing_file.unwrap_or_default();
        if Path::new(&backing) != raw {
            bail!(
                "{} is an overlay of {backing}, not of {}: remove it or pass another --overlay",
                disk.display(),
                raw.display()
            );
        }
        if info.virtual_size < size {
            overlay::resize_overlay(&disk, size)?;
        }
    } else {
        overlay::create_overlay(raw, &disk, size)?;
    }
    Ok(disk)
}

/// `FILE` + `suffix` (`disk.qcow2` -> `disk.qcow2.base.img`).
fn path_with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The board config to boot with (`--config`, `--board`, or the image's own board)
/// and its `[qemu]` section.
fn board_qemu(args: &BootArgs, raw: &Path) -> Result<(PathBuf, cmdline::QemuSection)> {
    let path = match (&args.config, &args.board) {
        (Some(c), _) => c.clone(),
        (None, board) => {
            let name = match board {
                Some(b) => b.clone(),
                None => image_board(raw).with_context(|| {
                    format!(
                        "finding which board {} is for (pass --board or --config)",
                        raw.display()
                    )
                })?,
            };
            let dir = crate::build::data_dir(args.boards_dir.as_deref(), "board-configs");
            board::resolve(&name, &dir)?
        }
    };
    let b = board::load(&path)?;
    let file = path.display().to_string();
    let q = b.config.qemu.ok_or_else(|| {
        anyhow::anyhow!("{file}: no [qemu] section: this board cannot be booted under qemu")
    })?;
    let section = cmdline::QemuSection {
        default_machine: q.default_machine.into_inner(),
        machine: q
            .machine
            .into_iter()
            .map(|(name, m)| {
                let spec = cmdline::MachineSpec {
                    boot: m.boot,
                    kernel: m.kernel,
                    initrd: m.initrd,
                    dtb: m.dtb,
                    append: m.append,
                    memory_mib: m.memory_mib,
                    firmware: m.firmware,
                    pci_serial: m.pci_serial,
                };
                (name, spec)
            })
            .collect(),
    };
    let section = cmdline::check_qemu_section(section, &file).map_err(anyhow::Error::msg)?;
    Ok((path, section))
}

/// The `board` an image's armada.toml names.
fn image_board(raw: &Path) -> Result<String> {
    let part = crate::fatfile::first_fat_partition(raw)?;
    let bytes = crate::fatfile::read_file(raw, part, protocol::config::BOOT_CONFIG_FILE)?;
    let text = String::from_utf8_lossy(&bytes);
    let cfg = protocol::config::FirstBootConfig::parse(&text, protocol::config::BOOT_CONFIG_FILE)?;
    if cfg.board.is_empty() {
        bail!("its armada.toml names no board");
    }
    Ok(cfg.board)
}

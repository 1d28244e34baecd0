//! The qemu-system-aarch64 command line for a board's `[qemu]` section (pure).
//!
//! The board config names, per qemu machine, which boot files to take from the image's
//! FAT partition (globs), the kernel command line and the memory size; this module turns
//! that plus the run's choices (disk, network, serial files) into an argument list.
//! What differs between qemu *machines* (how the card is attached, which NIC model, which
//! serial port a `console=` name is) lives here; nothing here knows a board by name.
//!
//! Self-contained (std and serde only) so `tests/boot_cmdline.rs` includes it directly.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The `[qemu]` section of a board config.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct QemuSection {
    /// Machine used when `--machine` is not given.
    pub default_machine: String,
    /// One entry per qemu machine the board can boot under (`virt`, `raspi3b`).
    #[serde(default)]
    pub machine: BTreeMap<String, MachineSpec>,
}

/// How the kernel is found: which part of the board's boot chain runs under qemu.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootChain {
    /// What the Raspberry Pi firmware does (qemu cannot run start.elf): kernel, initramfs
    /// and command line as the card's own `config.txt` and the `cmdline.txt` it names
    /// say; only the device tree (`dtb`) comes from the board config.
    FirmwareConfig,
    /// Real U-Boot (Debian's u-boot-qemu build for qemu_arm64, `firmware`) as `-bios`:
    /// its distro boot finds the image's bootable FAT partition and reads the image's
    /// own `extlinux/extlinux.conf`. Nothing about the kernel comes from armada.
    UBoot,
    /// The globs and command line below (machines whose firmware is not modelled).
    #[default]
    Direct,
}

/// `[qemu.machine.NAME]`: how to boot the image under one qemu machine.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct MachineSpec {
    #[serde(default)]
    pub boot: BootChain,
    /// `direct`: glob of the kernel on the FAT partition (`vmlinuz-*`, `pine64/Image`).
    #[serde(default)]
    pub kernel: Option<String>,
    /// `direct`: glob of the initrd on the FAT partition.
    #[serde(default)]
    pub initrd: Option<String>,
    /// Glob of the device tree on the FAT partition (machines with a fixed board only).
    #[serde(default)]
    pub dtb: Option<String>,
    /// `direct`: kernel command line.
    #[serde(default)]
    pub append: Option<String>,
    #[serde(default)]
    pub memory_mib: Option<u32>,
    /// `u-boot`: the U-Boot binary qemu runs as its firmware.
    #[serde(default)]
    pub firmware: Option<String>,
    /// 16550 UARTs on PCI (the kernel's ttyS0, ttyS1, ...): the board's own serial
    /// console names, on a machine whose built-in UART is another model.
    #[serde(default)]
    pub pci_serial: u32,
}

/// Where `u-boot` machines find U-Boot unless the board config says otherwise
/// (Debian's u-boot-qemu).
pub const DEFAULT_UBOOT: &str = "/usr/lib/u-boot/qemu_arm64/u-boot.bin";

impl MachineSpec {
    /// The checks that depend on the boot chain.
    fn check(&self, machine: QemuMachine) -> Result<(), String> {
        match self.boot {
            BootChain::Direct => {
                if self.kernel.is_none() || self.append.is_none() {
                    return Err("boot = \"direct\" needs `kernel` and `append`".into());
                }
            }
            BootChain::FirmwareConfig | BootChain::UBoot => {
                if self.kernel.is_some() || self.initrd.is_some() || self.append.is_some() {
                    return Err(format!(
                        "boot = \"{}\" takes kernel, initrd and command line from the image's own boot configuration: remove `kernel`, `initrd` and `append`",
                        self.boot.name()
                    ));
                }
            }
        }
        if self.boot == BootChain::UBoot && machine != QemuMachine::Virt {
            return Err(
                "boot = \"u-boot\" runs qemu_arm64 U-Boot, which only the `virt` machine models"
                    .into(),
            );
        }
        if self.boot == BootChain::UBoot && self.dtb.is_some() {
            return Err(
                "boot = \"u-boot\": U-Boot passes the machine's device tree; remove `dtb`".into(),
            );
        }
        if self.pci_serial > 0 && machine != QemuMachine::Virt {
            return Err(format!(
                "pci_serial: machine {} has no PCI bus",
                machine.name()
            ));
        }
        if self.pci_serial > 4 {
            return Err("pci_serial: at most 4".into());
        }
        Ok(())
    }
}

impl BootChain {
    pub fn name(self) -> &'static str {
        match self {
            BootChain::FirmwareConfig => "firmware-config",
            BootChain::UBoot => "u-boot",
            BootChain::Direct => "direct",
        }
    }
}

/// Checks that every machine is one armada drives and that the default one exists.
pub fn check_qemu_section(section: QemuSection, file: &str) -> Result<QemuSection, String> {
    if section.machine.is_empty() {
        return Err(format!("{file}: [qemu] has no [qemu.machine.NAME] entries"));
    }
    for (name, spec) in &section.machine {
        let m = QemuMachine::from_name(name)
            .map_err(|e| format!("{file}: [qemu.machine.{name}]: {e}"))?;
        spec.check(m)
            .map_err(|e| format!("{file}: [qemu.machine.{name}]: {e}"))?;
    }
    if !section.machine.contains_key(&section.default_machine) {
        return Err(format!(
            "{file}: [qemu] default_machine = {:?} has no [qemu.machine.{}] entry",
            section.default_machine, section.default_machine
        ));
    }
    Ok(section)
}

impl QemuSection {
    /// The spec for `machine`, or the default one; errors list the machines there are.
    pub fn select(&self, machine: Option<&str>) -> Result<(QemuMachine, &MachineSpec), String> {
        let name = machine.unwrap_or(&self.default_machine);
        let spec = self.machine.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.machine.keys().map(String::as_str).collect();
            format!(
                "this board has no qemu machine `{name}`; it boots under: {}",
                known.join(", ")
            )
        })?;
        Ok((QemuMachine::from_name(name)?, spec))
    }
}

/// The qemu machines armada knows how to drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QemuMachine {
    /// Generic virtual board: virtio disk and NIC, any CPU count, one PL011 serial.
    Virt,
    /// Raspberry Pi 3B model: the card is an SD (power-of-two size), NIC on USB,
    /// 1 GiB and 4 cores fixed, serial0 = PL011 (ttyAMA0), serial1 = mini UART (ttyS1).
    Raspi3b,
}

impl QemuMachine {
    pub fn from_name(name: &str) -> Result<Self, String> {
        match name {
            "virt" => Ok(QemuMachine::Virt),
            "raspi3b" => Ok(QemuMachine::Raspi3b),
            other => Err(format!(
                "unknown qemu machine `{other}`: armada boots `virt` and `raspi3b`"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            QemuMachine::Virt => "virt",
            QemuMachine::Raspi3b => "raspi3b",
        }
    }

    /// Serial ports the machine has (each gets its own capture file).
    pub fn serial_count(self) -> usize {
        match self {
            QemuMachine::Virt => 1,
            QemuMachine::Raspi3b => 2,
        }
    }

    /// Whether the card's size must be a power of two (qemu's SD model refuses others).
    pub fn needs_power_of_two_disk(self) -> bool {
        matches!(self, QemuMachine::Raspi3b)
    }

    /// The serial port index behind a kernel console name, if it is a serial port here.
    pub fn serial_of_console(self, tty: &str) -> Option<usize> {
        match (self, tty) {
            (_, "ttyAMA0") => Some(0),
            (QemuMachine::Raspi3b, "ttyS1") => Some(1),
            _ => None,
        }
    }

    /// Memory the machine requires, if it is fixed.
    fn fixed_memory_mib(self) -> Option<u32> {
        match self {
            QemuMachine::Raspi3b => Some(1024),
            QemuMachine::Virt => None,
        }
    }
}

/// Guest networking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Net {
    /// qemu's user-mode NAT (the host's loopback is 10.0.2.2 from the guest).
    User,
    /// An existing tap device (for example on a bridge inside a network namespace).
    Tap(String),
    None,
}

impl std::str::FromStr for Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "user" => Ok(Net::User),
            "none" => Ok(Net::None),
            _ => match s.strip_prefix("tap:") {
                Some(ifname) if valid_ifname(ifname) => Ok(Net::Tap(ifname.to_string())),
                Some(ifname) => Err(format!(
                    "`{ifname}` is not a network interface name (1-15 of a-z A-Z 0-9 . _ -)"
                )),
                None => Err(format!(
                    "unknown network `{s}`: expected user, tap:IFNAME or none"
                )),
            },
        }
    }
}

fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Everything a qemu run needs, resolved to files.
#[derive(Clone, Debug)]
pub struct Launch {
    pub machine: QemuMachine,
    /// Firmware run instead of loading a kernel (U-Boot as `-bios`).
    pub bios: Option<PathBuf>,
    /// Kernel to load (ignored with `bios`).
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub dtb: Option<PathBuf>,
    pub append: String,
    pub memory_mib: Option<u32>,
    pub smp: Option<u32>,
    pub cpu: Option<String>,
    /// The card: a qcow2 overlay on the image.
    pub disk: PathBuf,
    pub disk_format: String,
    pub net: Net,
    pub mac: String,
    /// 16550 UARTs added on PCI (ttyS0...), captured after the machine's own ports.
    pub pci_serial: u32,
    /// One capture file per serial port, in port order.
    pub serial_files: Vec<PathBuf>,
    /// QMP control socket (used to ask the guest to power off).
    pub qmp_socket: Option<PathBuf>,
}

/// The qemu-system-aarch64 arguments for `launch`.
pub fn qemu_args(launch: &Launch) -> Result<Vec<String>, String> {
    let m = launch.machine;
    let ports = m.serial_count() + launch.pci_serial as usize;
    if launch.serial_files.len() != ports {
        return Err(format!(
            "machine {} has {ports} serial ports here, {} capture files given",
            m.name(),
            launch.serial_files.len()
        ));
    }
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    let memory = match (m.fixed_memory_mib(), launch.memory_mib) {
        (Some(fixed), Some(asked)) if asked != fixed => {
            return Err(format!(
                "machine {} has exactly {fixed} MiB; the board config asks for {asked}",
                m.name()
            ))
        }
        (Some(fixed), _) => fixed,
        (None, asked) => asked.unwrap_or(1024),
    };
    match m {
        QemuMachine::Virt => {
            let cpu = launch.cpu.clone().unwrap_or_else(|| "cortex-a53".into());
            let smp = launch.smp.unwrap_or(2).to_string();
            push(&["-M", "virt", "-cpu", &cpu, "-smp", &smp]);
        }
        QemuMachine::Raspi3b => {
            if launch.smp.is_some_and(|n| n != 4) || launch.cpu.is_some() {
                return Err("machine raspi3b has a fixed CPU (4 x cortex-a53): no CPU count or model can be set".into());
            }
            push(&["-M", "raspi3b"]);
        }
    }
    push(&["-m", &memory.to_string()]);
    if let Some(bios) = &launch.bios {
        // The firmware loads whatever the card's boot configuration names.
        push(&["-bios", &path_arg(bios)?]);
    } else {
        push(&["-kernel", &path_arg(&launch.kernel)?]);
        if let Some(initrd) = &launch.initrd {
            push(&["-initrd", &path_arg(initrd)?]);
        }
        if let Some(dtb) = &launch.dtb {
            push(&["-dtb", &path_arg(dtb)?]);
        }
        push(&["-append", &launch.append]);
    }
    let interface = match m {
        QemuMachine::Virt => "virtio",
        QemuMachine::Raspi3b => "sd",
    };
    let drive = format!(
        "file={},if={interface},format={},cache=writeback",
        drive_path(&launch.disk)?,
        launch.disk_format
    );
    push(&["-drive", &drive]);
    let netdev = match &launch.net {
        Net::User => Some("user,id=n0".to_string()),
        Net::Tap(ifname) => Some(format!("tap,id=n0,ifname={ifname},script=no,downscript=no")),
        Net::None => None,
    };
    if let Some(netdev) = netdev {
        let device = match m {
            // romfile= : no PXE option ROM (efi-virtio.rom may not be installed).
            QemuMachine::Virt => format!("virtio-net-pci,netdev=n0,mac={},romfile=", launch.mac),
            QemuMachine::Raspi3b => format!("usb-net,netdev=n0,mac={}", launch.mac),
        };
        push(&["-netdev", &netdev, "-device", &device]);
    } else {
        push(&["-nic", "none"]);
    }
    let (own, pci) = launch.serial_files.split_at(m.serial_count());
    for f in own {
        push(&["-serial", &format!("file:{}", path_arg(f)?)]);
    }
    for (i, f) in pci.iter().enumerate() {
        push(&[
            "-chardev",
            &format!("file,id=pciser{i},path={}", drive_path(f)?),
            "-device",
            &format!("pci-serial,chardev=pciser{i}"),
        ]);
    }
    push(&["-display", "none", "-monitor", "none", "-no-reboot"]);
    if let Some(sock) = &launch.qmp_socket {
        push(&[
            "-qmp",
            &format!("unix:{},server=on,wait=off", path_arg(sock)?),
        ]);
    }
    Ok(a)
}

fn path_arg(p: &std::path::Path) -> Result<String, String> {
    p.to_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{} is not valid UTF-8", p.display()))
}

/// A path inside a `-drive` option: commas are doubled, as qemu's option syntax asks.
fn drive_path(p: &std::path::Path) -> Result<String, String> {
    Ok(path_arg(p)?.replace(',', ",,"))
}

/// Which serial port carries `/dev/console`: the kernel makes the last `console=` the
/// console, so systemd's status lines and the login prompt appear there. `pci_serial`
/// 16550s are ttyS0.. after the machine's own ports.
pub fn console_serial(machine: QemuMachine, append: &str, pci_serial: u32) -> usize {
    append
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("console="))
        .map(|c| c.split(',').next().unwrap_or(c))
        .filter_map(|tty| {
            let pci = tty
                .strip_prefix("ttyS")
                .and_then(|n| n.parse::<u32>().ok())
                .filter(|&n| n < pci_serial)
                .map(|n| machine.serial_count() + n as usize);
            pci.or_else(|| machine.serial_of_console(tty))
        })
        .next_back()
        .unwrap_or(0)
}

/// Smallest power of two that is at least `n` (and at least 1).
pub fn next_power_of_two(n: u64) -> u64 {
    n.max(1).checked_next_power_of_two().unwrap_or(u64::MAX)
}

/// `8G`, `512M`, `4096K`, `1T` or plain bytes (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a size (examples: 8G, 512M, 4294967296)"))?;
    let mult: u64 = match unit
        .trim_end_matches(['i', 'B'])
        .to_ascii_uppercase()
        .as_str()
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(format!("`{s}`: unknown size unit `{unit}` (K, M, G, T)")),
    };
    n.checked_mul(mult)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("`{s}` is not a usable size"))
}

/// Shell-style match of one path component pattern (`*` and `?`) against a name,
/// case-insensitive as FAT is.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let n: Vec<char> = name.to_ascii_lowercase().chars().collect();
    // Iterative wildcard match with backtracking to the last `*`.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Picks the file for a glob among a directory's file names: the only match, or, when a
/// kernel was upgraded and two versions sit side by side, the highest version.
pub fn pick_match<'a>(pattern: &str, names: &'a [String]) -> Option<&'a str> {
    names
        .iter()
        .filter(|n| glob_match(pattern, n))
        .max_by(|a, b| version_cmp(a, b))
        .map(String::as_str)
}

/// Compares names the way `sort -V` does for the common case: digit runs as numbers.
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, String)> {
        let mut out: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let digit = c.is_ascii_digit();
            match out.last_mut() {
                Some((d, text)) if *d == digit => text.push(c),
                _ => out.push((digit, c.to_string())),
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(cb.iter()) {
        let ord = match (x.0, y.0) {
            (true, true) => {
                let (xn, yn) = (x.1.trim_start_matches('0'), y.1.trim_start_matches('0'));
                xn.len().cmp(&yn.len()).then_with(|| xn.cmp(yn))
            }
            _ => x.1.cmp(&y.1),
        };
        if ord != std::cmp::Ordering::Equal {
            return ord;
        }
    }
    ca.len().cmp(&cb.len())
}

/// A locally administered, stable MAC address derived from `seed` (FNV-1a), so one
/// image booted twice keeps its DHCP lease and two images on one bridge differ.
pub fn stable_mac(seed: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    format!("52:54:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

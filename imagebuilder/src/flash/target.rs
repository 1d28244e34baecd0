//! The card (or file) being written, and the checks that keep it from being the wrong
//! disk.
//!
//! [`inspect`] gathers facts about a target from `/sys` and `/proc` under a root path;
//! [`refusals`] decides from those facts alone (pure, tested with fixture facts);
//! [`open`] opens a block device with `O_EXCL`, so the kernel refuses it too while
//! anything has it mounted or open exclusively.
//!
//! Never overridable: a mounted device or partition, swap or a device-mapper/RAID
//! holder on it, or the disk holding the running system's `/`, `/boot` or `/usr`.
//! Overridable with `--force`: a disk that is not removable (SD/MMC or USB), one larger
//! than the size bound, or a partition instead of a whole disk. A regular file is
//! always allowed.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Default bound on the target's size: the biggest SD cards people flash for boards.
pub const DEFAULT_MAX_SIZE: u64 = 256_000_000_000;

/// Mount points whose disk is "the running system".
const SYSTEM_MOUNTS: &[&str] = &["/", "/boot", "/boot/efi", "/boot/firmware", "/usr", "/var"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetKind {
    /// A regular file (created if missing).
    File,
    /// A whole disk, e.g. `/dev/sdb`.
    Disk,
    /// A partition, e.g. `/dev/sdb1`; `disk` is its parent's name.
    Partition { disk: String },
}

/// What the system says about a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetFacts {
    pub path: PathBuf,
    pub kind: TargetKind,
    /// Kernel name of the disk (`sdb`, `mmcblk0`, `loop3`); empty for files.
    pub disk: String,
    /// The device number of the target itself, `major:minor`; empty for files.
    pub devno: String,
    /// What names this very card: the MMC/USB serial or SCSI wwid from sysfs, or a
    /// loop device's backing file; empty when sysfs has none.
    pub serial: String,
    /// Bytes; for files, the current length (0 if missing).
    pub size: u64,
    /// Vendor and model from sysfs, when the device has them.
    pub model: String,
    /// `/sys/block/X/removable`, or attached over USB or MMC (SD readers, card slots).
    pub removable: bool,
    pub transport: String,
    /// "`/dev/sdb1` mounted at `/media/x`", swap and holder descriptions.
    pub in_use: Vec<String>,
    /// System mount points (`/`, `/boot`, ...) that live on this disk.
    pub holds_system: Vec<String>,
}

/// The flash policy from the command line.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub force: bool,
    pub max_size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: String,
    /// `--force` lifts it.
    pub overridable: bool,
}

/// Why flashing `facts` must not go ahead under `policy`; empty means go.
pub fn refusals(facts: &TargetFacts, policy: Policy) -> Vec<Refusal> {
    let mut out = Vec::new();
    let hard = |reason: String| Refusal {
        reason,
        overridable: false,
    };
    let soft = |reason: String| Refusal {
        reason,
        overridable: true,
    };
    if facts.kind == TargetKind::File {
        return out;
    }
    for m in &facts.holds_system {
        out.push(hard(format!("it holds the running system's {m}")));
    }
    const SHOWN: usize = 4;
    for u in facts.in_use.iter().take(SHOWN) {
        out.push(hard(format!("it is in use: {u}")));
    }
    if facts.in_use.len() > SHOWN {
        out.push(hard(format!(
            "... and {} more uses",
            facts.in_use.len() - SHOWN
        )));
    }
    if let TargetKind::Partition { disk } = &facts.kind {
        out.push(soft(format!(
            "it is a partition of /dev/{disk}, not a whole disk"
        )));
    }
    if !facts.removable {
        out.push(soft(format!(
            "it is not a removable disk (transport: {})",
            if facts.transport.is_empty() {
                "unknown"
            } else {
                &facts.transport
            }
        )));
    }
    if facts.size > policy.max_size {
        out.push(soft(format!(
            "it is {}, larger than the {} bound for SD cards",
            human_bytes(facts.size),
            human_bytes(policy.max_size)
        )));
    }
    if policy.force {
        out.retain(|r| !r.overridable);
    }
    out
}

/// Fails with every refusal listed, saying which ones `--force` would lift.
pub fn check(facts: &TargetFacts, policy: Policy) -> Result<()> {
    let refused = refusals(facts, policy);
    if refused.is_empty() {
        return Ok(());
    }
    let mut msg = format!("refusing to write to {}:", facts.path.display());
    for r in &refused {
        msg.push_str(&format!(
            "\n  - {}{}",
            r.reason,
            if r.overridable {
                " (--force overrides)"
            } else {
                ""
            }
        ));
    }
    if refused.iter().all(|r| r.overridable) {
        msg.push_str("\n  pass --force if this really is the card to overwrite");
    }
    bail!(msg)
}

/// Gathers the facts about `path`, reading `/proc` and `/sys` under `root`.
pub fn inspect(path: &Path, root: &Path) -> Result<TargetFacts> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A typo'd device name must not become a file in /dev (RAM).
            if path.starts_with("/dev") {
                bail!(
                    "{}: no such device (see `armada flash --list`)",
                    path.display()
                );
            }
            return Ok(file_facts(path, 0));
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if meta.is_file() {
        return Ok(file_facts(path, meta.len()));
    }
    if !meta.file_type().is_block_device() {
        bail!(
            "{} is neither a block device nor a regular file",
            path.display()
        );
    }
    use std::os::unix::fs::MetadataExt;
    let rdev = meta.rdev();
    let devno = format!("{}:{}", libc::major(rdev), libc::minor(rdev));
    block_facts(path, &devno, root)
}

fn file_facts(path: &Path, size: u64) -> TargetFacts {
    TargetFacts {
        path: path.to_path_buf(),
        kind: TargetKind::File,
        disk: String::new(),
        devno: String::new(),
        serial: String::new(),
        size,
        model: String::new(),
        removable: false,
        transport: "file".into(),
        in_use: vec![],
        holds_system: vec![],
    }
}

/// Facts for the block device numbered `devno` ("8:16"), from sysfs and procfs under `root`.
pub fn block_facts(path: &Path, devno: &str, root: &Path) -> Result<TargetFacts> {
    let sys = root.join("sys");
    let node = std::fs::canonicalize(sys.join("dev/block").join(devno)).with_context(|| {
        format!(
            "finding {} ({devno}) in {}",
            path.display(),
            sys.join("dev/block").display()
        )
    })?;
    let (kind, disk_dir) = if node.join("partition").exists() {
        let parent = node.parent().map(Path::to_path_buf).unwrap_or_default();
        (
            TargetKind::Partition {
                disk: file_name(&parent),
            },
            parent,
        )
    } else {
        (TargetKind::Disk, node.clone())
    };
    let disk = file_name(&disk_dir);
    let size = read_trim(&disk_dir.join("size"))
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0)
        * 512;
    let size = if matches!(kind, TargetKind::Partition { .. }) {
        read_trim(&node.join("size"))
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
            * 512
    } else {
        size
    };
    let model = [
        read_trim(&disk_dir.join("device/vendor")),
        read_trim(&disk_dir.join("device/model")),
    ]
    .into_iter()
    .flatten()
    .filter(|s| !s.is_empty())
    .collect::<Vec<_>>()
    .join(" ");
    let (removable, transport) = removable_and_transport(&disk_dir, &disk);
    let serial = serial_of(&disk_dir);

    // The disk and all its partitions, by device number and by /dev name.
    let mut members: Vec<(String, String)> = vec![(
        read_trim(&disk_dir.join("dev")).unwrap_or_default(),
        disk.clone(),
    )];
    for part in partitions(&disk_dir) {
        members.push((
            read_trim(&part.join("dev")).unwrap_or_default(),
            file_name(&part),
        ));
    }
    let member_names: BTreeSet<&str> = members.iter().map(|(_, n)| n.as_str()).collect();
    let member_nums: BTreeSet<&str> = members
        .iter()
        .map(|(d, _)| d.as_str())
        .filter(|d| !d.is_empty())
        .collect();

    let mounts = read_mountinfo(&root.join("proc/self/mountinfo"))?;
    let mut in_use = Vec::new();
    let mut holds_system = BTreeSet::new();
    for m in &mounts {
        let source_name = m.source.strip_prefix("/dev/").unwrap_or("");
        if member_nums.contains(m.devno.as_str()) || member_names.contains(source_name) {
            in_use.push(format!("{} mounted at {}", m.source, m.mount_point));
        }
        if SYSTEM_MOUNTS.contains(&m.mount_point.as_str()) {
            let mut under = BTreeSet::new();
            underlying_disks(&sys, &m.devno, 0, &mut under);
            if !source_name.is_empty() {
                if let Ok(n) = std::fs::canonicalize(sys.join("class/block").join(source_name)) {
                    if let Some(d) = read_trim(&n.join("dev")) {
                        underlying_disks(&sys, &d, 0, &mut under);
                    }
                }
            }
            if under.contains(&disk) {
                holds_system.insert(m.mount_point.clone());
            }
        }
    }
    if let Ok(swaps) = std::fs::read_to_string(root.join("proc/swaps")) {
        for line in swaps.lines().skip(1) {
            if let Some(dev) = line.split_whitespace().next() {
                if member_names.contains(dev.strip_prefix("/dev/").unwrap_or("")) {
                    in_use.push(format!("{dev} is active swap"));
                }
            }
        }
    }
    for (_, member) in &members {
        let dir = if *member == disk {
            disk_dir.clone()
        } else {
            disk_dir.join(member)
        };
        if let Ok(rd) = std::fs::read_dir(dir.join("holders")) {
            for h in rd.flatten() {
                in_use.push(format!(
                    "/dev/{member} is held by {}",
                    h.file_name().to_string_lossy()
                ));
            }
        }
    }
    Ok(TargetFacts {
        path: path.to_path_buf(),
        kind,
        disk,
        devno: devno.to_string(),
        serial,
        size,
        model,
        removable,
        transport,
        in_use,
        holds_system: holds_system.into_iter().collect(),
    })
}

/// The card's own name in sysfs: an SD card's serial (or CID), a USB reader's serial
/// (found on the USB device above the disk), a SCSI wwid, or a loop device's backing
/// file. Two different cards put into the same slot differ here even when the kernel
/// gives them the same `/dev` name.
pub fn serial_of(disk_dir: &Path) -> String {
    for f in ["device/serial", "device/cid", "device/wwid"] {
        if let Some(s) = read_trim(&disk_dir.join(f)).filter(|s| !s.is_empty()) {
            return s;
        }
    }
    if let Some(b) = read_trim(&disk_dir.join("loop/backing_file")).filter(|s| !s.is_empty()) {
        return format!("loop backing {b}");
    }
    // A USB reader: the `serial` attribute of the USB device, a few levels up.
    let mut dir = std::fs::canonicalize(disk_dir).ok();
    for _ in 0..10 {
        let Some(d) = dir else { break };
        if let Some(s) = read_trim(&d.join("serial")).filter(|s| !s.is_empty()) {
            return s;
        }
        dir = d.parent().map(Path::to_path_buf);
    }
    String::new()
}

/// Fails if the target is no longer the device that was checked (and shown in the
/// question): another card in the slot, a re-attached loop device, a changed size.
/// Called right before the target is opened.
pub fn recheck(before: &TargetFacts, root: &Path) -> Result<()> {
    let now = inspect(&before.path, root)
        .with_context(|| format!("checking {} again before opening it", before.path.display()))?;
    let changes = identity_changes(before, &now);
    if !changes.is_empty() {
        bail!(
            "refusing to write to {}: it changed since it was checked ({}); run again to check the device now there",
            before.path.display(),
            changes.join(", ")
        );
    }
    // Whatever was refused before is refused now: a partition mounted meanwhile, say.
    if !now.in_use.is_empty() || !now.holds_system.is_empty() {
        bail!(
            "refusing to write to {}: it is in use now: {}",
            before.path.display(),
            now.in_use
                .iter()
                .chain(now.holds_system.iter())
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// What differs between two looks at the same path (pure): device number, kind, size,
/// model, serial.
pub fn identity_changes(a: &TargetFacts, b: &TargetFacts) -> Vec<String> {
    let mut out = Vec::new();
    let mut cmp = |what: &str, x: &str, y: &str| {
        if x != y {
            out.push(format!("{what} was `{x}`, is `{y}`"));
        }
    };
    cmp("kind", &format!("{:?}", a.kind), &format!("{:?}", b.kind));
    cmp("device number", &a.devno, &b.devno);
    if a.kind != TargetKind::File {
        cmp("size", &a.size.to_string(), &b.size.to_string());
    }
    cmp("model", &a.model, &b.model);
    cmp("serial", &a.serial, &b.serial);
    out
}

/// Removable per sysfs, or on an SD/MMC or USB bus (an internal card slot reports
/// `removable` 0 but is exactly where SD cards go).
pub fn removable_and_transport(disk_dir: &Path, disk: &str) -> (bool, String) {
    let flag = read_trim(&disk_dir.join("removable")).as_deref() == Some("1");
    let path = disk_dir.to_string_lossy();
    let transport = if disk.starts_with("mmcblk") || path.contains("/mmc_host/") {
        "mmc"
    } else if path.contains("/usb") {
        "usb"
    } else if disk.starts_with("loop") {
        "loop"
    } else if disk.starts_with("nvme") {
        "nvme"
    } else if path.contains("/virtio") {
        "virtio"
    } else {
        ""
    };
    (
        flag || transport == "mmc" || transport == "usb",
        transport.to_string(),
    )
}

/// Partition directories of a disk in sysfs.
pub fn partitions(disk_dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(disk_dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.join("partition").exists())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The whole disks under block device `devno`, following partitions to their disk and
/// device-mapper/RAID devices to their slaves.
fn underlying_disks(sys: &Path, devno: &str, depth: u32, out: &mut BTreeSet<String>) {
    if depth > 8 {
        return;
    }
    let Ok(node) = std::fs::canonicalize(sys.join("dev/block").join(devno)) else {
        return;
    };
    let disk_dir = if node.join("partition").exists() {
        node.parent().map(Path::to_path_buf).unwrap_or_default()
    } else {
        node
    };
    out.insert(file_name(&disk_dir));
    if let Ok(rd) = std::fs::read_dir(disk_dir.join("slaves")) {
        for s in rd.flatten() {
            if let Some(d) = read_trim(&s.path().join("dev")) {
                underlying_disks(sys, &d, depth + 1, out);
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub devno: String,
    pub mount_point: String,
    pub source: String,
}

/// Parses `/proc/self/mountinfo` (fields: id parent maj:min root mount-point ... - fstype source).
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            Some(Mount {
                devno: fields.get(2)?.to_string(),
                mount_point: unescape_octal(fields.get(4)?),
                source: unescape_octal(fields.get(dash + 2).unwrap_or(&"")),
            })
        })
        .collect()
}

fn read_mountinfo(path: &Path) -> Result<Vec<Mount>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(parse_mountinfo(&text))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}

/// "31.9 GB (29.7 GiB)".
pub fn human_bytes(n: u64) -> String {
    let gb = n as f64 / 1e9;
    if gb >= 1.0 {
        format!("{gb:.1} GB ({:.1} GiB)", n as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MB", n as f64 / 1e6)
    }
}

/// An opened target.
pub struct Target {
    pub file: File,
    pub facts: TargetFacts,
}

/// Opens the target for reading and writing: block devices with `O_EXCL` (the kernel
/// then refuses while anything has the device mounted or open exclusively); a regular
/// file is created if missing.
pub fn open(facts: TargetFacts) -> Result<Target> {
    let path = &facts.path;
    let mut opts = OpenOptions::new();
    opts.read(true).write(true);
    match facts.kind {
        TargetKind::File => {
            opts.create(true).truncate(false);
        }
        _ => {
            opts.custom_flags(libc::O_EXCL | libc::O_CLOEXEC);
        }
    }
    let file = opts.open(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::EBUSY) {
            anyhow::anyhow!(
                "{} is busy: it (or a partition of it) is mounted or opened exclusively by another program",
                path.display()
            )
        } else {
            anyhow::Error::new(e).context(format!("opening {} for writing", path.display()))
        }
    })?;
    // The name could have been pointed elsewhere between the last check and the open:
    // what was opened must be the device that was checked.
    if facts.kind != TargetKind::File {
        use std::os::unix::fs::MetadataExt;
        let rdev = file
            .metadata()
            .with_context(|| format!("reading {} after opening it", path.display()))?
            .rdev();
        let opened = format!("{}:{}", libc::major(rdev), libc::minor(rdev));
        if opened != facts.devno {
            bail!(
                "refusing to write to {}: the device opened is {opened}, not the {} that was checked",
                path.display(),
                facts.devno
            );
        }
    }
    Ok(Target { file, facts })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(removable: bool, size: u64) -> TargetFacts {
        TargetFacts {
            path: "/dev/sdx".into(),
            kind: TargetKind::Disk,
            disk: "sdx".into(),
            devno: "8:16".into(),
            serial: "SN1".into(),
            size,
            model: "Generic SD".into(),
            removable,
            transport: if removable {
                "usb".into()
            } else {
                "sata".into()
            },
            in_use: vec![],
            holds_system: vec![],
        }
    }
    const P: Policy = Policy {
        force: false,
        max_size: DEFAULT_MAX_SIZE,
    };
    const F: Policy = Policy {
        force: true,
        max_size: DEFAULT_MAX_SIZE,
    };

    #[test]
    fn a_removable_card_of_sane_size_is_fine() {
        assert!(refusals(&disk(true, 32_000_000_000), P).is_empty());
    }

    #[test]
    fn fixed_or_huge_disks_need_force() {
        let r = refusals(&disk(false, 32_000_000_000), P);
        assert_eq!(r.len(), 1);
        assert!(r[0].overridable && r[0].reason.contains("not a removable"));
        let r = refusals(&disk(true, 1_000_000_000_000), P);
        assert!(r[0].reason.contains("larger than"), "{r:?}");
        assert!(refusals(&disk(false, 1_000_000_000_000), F).is_empty());
        let mut p = disk(true, 1 << 30);
        p.kind = TargetKind::Partition { disk: "sdx".into() };
        assert_eq!(refusals(&p, P).len(), 1);
        assert!(refusals(&p, F).is_empty());
    }

    #[test]
    fn mounted_and_system_disks_are_refused_even_with_force() {
        let mut d = disk(true, 1 << 30);
        d.in_use = vec!["/dev/sdx1 mounted at /media/card".into()];
        let r = refusals(&d, F);
        assert_eq!(r.len(), 1);
        assert!(!r[0].overridable);
        let mut d = disk(false, 1 << 30);
        d.holds_system = vec!["/".into()];
        let err = check(&d, F).unwrap_err().to_string();
        assert!(
            err.contains("running system's /") && !err.contains("removable"),
            "{err}"
        );
    }

    #[test]
    fn another_card_in_the_slot_is_noticed() {
        let a = disk(true, 32_000_000_000);
        assert!(identity_changes(&a, &a.clone()).is_empty());
        let mut b = a.clone();
        b.serial = "SN2".into();
        b.size = 16_000_000_000;
        let c = identity_changes(&a, &b);
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(
            c[0].contains("size") && c[1].contains("`SN1`, is `SN2`"),
            "{c:?}"
        );
        let mut d = a.clone();
        d.devno = "8:32".into();
        assert!(identity_changes(&a, &d)[0].contains("device number"));
    }

    #[test]
    fn files_are_always_allowed() {
        let mut f = file_facts(Path::new("/tmp/x.img"), 0);
        f.size = u64::MAX;
        assert!(refusals(&f, P).is_empty());
    }

    #[test]
    fn a_missing_device_is_not_created_as_a_file() {
        let err = inspect(Path::new("/dev/sdzz9"), Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such device"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let f = inspect(&dir.path().join("new.img"), Path::new("/")).unwrap();
        assert_eq!(f.kind, TargetKind::File);
    }

    #[test]
    fn mountinfo_parses_sources_and_escapes() {
        let text = "29 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                    40 29 8:17 / /media/my\\040card rw - vfat /dev/sdb1 rw\n\
                    41 29 0:45 / /home rw - btrfs /dev/nvme0n1p3 rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert_eq!(
            m[1],
            Mount {
                devno: "8:17".into(),
                mount_point: "/media/my card".into(),
                source: "/dev/sdb1".into()
            }
        );
        assert_eq!(m[2].source, "/dev/nvme0n1p3");
    }

    /// A fixture root: disk sdb (USB, removable) with partition sdb1 mounted; disk vda
    /// holding / via partition vda2; swap on sdc1.
    fn fixture(root: &Path) {
        let dev = root.join("sys/devices/pci0/usb1/1-1/host0/block/sdb");
        let vda = root.join("sys/devices/pci0/virtio0/block/vda");
        let sdc = root.join("sys/devices/pci0/ata1/host1/block/sdc");
        for (d, n, size, rem) in [
            (&dev, "8:16", "62333952", "1"),
            (&vda, "254:0", "41943040", "0"),
            (&sdc, "8:32", "1000", "0"),
        ] {
            std::fs::create_dir_all(d.join("device")).unwrap();
            std::fs::create_dir_all(d.join("holders")).unwrap();
            std::fs::write(d.join("dev"), n).unwrap();
            std::fs::write(d.join("size"), size).unwrap();
            std::fs::write(d.join("removable"), rem).unwrap();
        }
        std::fs::write(dev.join("device/vendor"), "Generic \n").unwrap();
        // A USB reader's serial lives on the USB device, above the disk.
        std::fs::write(root.join("sys/devices/pci0/usb1/1-1/serial"), "RDR42\n").unwrap();
        std::fs::write(dev.join("device/model"), "STORAGE DEVICE\n").unwrap();
        for (disk, part, n) in [
            (&dev, "sdb1", "8:17"),
            (&vda, "vda2", "254:2"),
            (&sdc, "sdc1", "8:33"),
        ] {
            let p = disk.join(part);
            std::fs::create_dir_all(p.join("holders")).unwrap();
            std::fs::write(p.join("partition"), "1").unwrap();
            std::fs::write(p.join("dev"), n).unwrap();
            std::fs::write(p.join("size"), "2048").unwrap();
        }
        std::fs::create_dir_all(root.join("sys/dev/block")).unwrap();
        std::fs::create_dir_all(root.join("sys/class/block")).unwrap();
        for (n, target) in [
            ("8:16", dev.clone()),
            ("8:17", dev.join("sdb1")),
            ("254:0", vda.clone()),
            ("254:2", vda.join("vda2")),
            ("8:32", sdc.clone()),
            ("8:33", sdc.join("sdc1")),
        ] {
            std::os::unix::fs::symlink(&target, root.join("sys/dev/block").join(n)).unwrap();
            std::os::unix::fs::symlink(
                &target,
                root.join("sys/class/block").join(file_name(&target)),
            )
            .unwrap();
        }
        std::fs::create_dir_all(root.join("proc/self")).unwrap();
        std::fs::write(
            root.join("proc/self/mountinfo"),
            "29 1 254:2 / / rw - ext4 /dev/vda2 rw\n40 29 8:17 / /media/card rw - vfat /dev/sdb1 rw\n",
        )
        .unwrap();
        std::fs::write(
            root.join("proc/swaps"),
            "Filename Type Size Used Priority\n/dev/sdc1 partition 1 0 -2\n",
        )
        .unwrap();
    }

    #[test]
    fn facts_from_a_fixture_system() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        let sdb = block_facts(Path::new("/dev/sdb"), "8:16", dir.path()).unwrap();
        assert_eq!(sdb.kind, TargetKind::Disk);
        assert_eq!(sdb.size, 62333952 * 512);
        assert_eq!(sdb.model, "Generic STORAGE DEVICE");
        assert!(sdb.removable);
        assert_eq!(sdb.transport, "usb");
        assert_eq!(sdb.serial, "RDR42");
        assert_eq!(sdb.devno, "8:16");
        assert_eq!(
            sdb.in_use,
            vec!["/dev/sdb1 mounted at /media/card".to_string()]
        );
        assert!(sdb.holds_system.is_empty());

        let vda = block_facts(Path::new("/dev/vda"), "254:0", dir.path()).unwrap();
        assert_eq!(vda.holds_system, vec!["/".to_string()]);
        assert!(!vda.removable);
        let part = block_facts(Path::new("/dev/vda2"), "254:2", dir.path()).unwrap();
        assert_eq!(part.kind, TargetKind::Partition { disk: "vda".into() });
        assert_eq!(part.size, 2048 * 512);
        assert_eq!(part.holds_system, vec!["/".to_string()]);

        let sdc = block_facts(Path::new("/dev/sdc"), "8:32", dir.path()).unwrap();
        assert_eq!(sdc.in_use, vec!["/dev/sdc1 is active swap".to_string()]);
    }
}

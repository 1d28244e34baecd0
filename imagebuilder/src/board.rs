//! Board configs (`board-configs/*.toml`): the schema, loading and validation, and the
//! rootfs profiles they share (`board-configs/rootfs/*.toml`).
//!
//! A board is data: its partition table, raw blobs at byte offsets, where the boot
//! files come from, the boot scripts, the rootfs recipe and how to boot it under qemu.
//! Everything a build could trip over later is checked here, before any work starts,
//! and every refusal names the file, the key and the line.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};
use toml::Spanned;

/// MBR sector size; the table itself is the first sector.
pub const SECTOR: u64 = 512;

#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    #[error("reading board config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("board config {file}: line {line}, column {column}: {message}")]
    Toml {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("board config {file}: `{key}` at line {line}: {message}")]
    Invalid {
        file: String,
        key: String,
        line: usize,
        message: String,
    },
    #[error("unknown board `{name}`: no {dir}/{name}.toml (boards: {known})")]
    Unknown {
        name: String,
        dir: String,
        known: String,
    },
}

/// A byte count written as an integer or as `"8KiB"`, `"20MiB"`, `"2GiB"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> Result<ByteSize, String> {
        let s = s.trim();
        let (num, mult) = [
            ("KiB", 1u64 << 10),
            ("MiB", 1 << 20),
            ("GiB", 1 << 30),
            ("B", 1),
        ]
        .iter()
        .find_map(|(suf, m)| s.strip_suffix(suf).map(|n| (n.trim(), *m)))
        .unwrap_or((s, 1));
        let n: u64 = num.parse().map_err(|_| {
            format!("`{s}` is not a size (use bytes or a number with KiB, MiB or GiB)")
        })?;
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("`{s}` is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        if v >= 1 << 20 && v % (1 << 20) == 0 {
            write!(f, "{}MiB", v >> 20)
        } else if v >= 1 << 10 && v % (1 << 10) == 0 {
            write!(f, "{}KiB", v >> 10)
        } else {
            write!(f, "{v}B")
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Str(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// A partition's size: fixed, or `"auto"` (its content plus headroom; last partition only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartSize {
    Fixed(ByteSize),
    Auto,
}

impl<'de> Deserialize<'de> for PartSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(PartSize::Fixed(ByteSize(n))),
            Raw::Str(s) if s == "auto" => Ok(PartSize::Auto),
            Raw::Str(s) => ByteSize::parse(&s)
                .map(PartSize::Fixed)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    Vfat,
    Ext4,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SizeRound {
    /// Round the image up to a whole MiB.
    #[default]
    Mib,
    /// Round the image up to a power of two (qemu's raspi3b needs it for its SD card).
    PowerOfTwo,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardConfig {
    pub name: String,
    pub description: String,
    /// Raspberry Pi Imager device tags this board's images are for (`pi3-64bit`,
    /// `pi4-64bit`); `armada imager-list` lists only boards that have them.
    #[serde(default)]
    pub imager_devices: Vec<String>,
    #[serde(default)]
    pub image: ImageSpec,
    pub partitions: Vec<Partition>,
    #[serde(default)]
    pub blobs: Vec<Blob>,
    #[serde(default)]
    pub downloads: BTreeMap<String, Download>,
    pub rootfs: RootfsSpec,
    pub boot: BootSpec,
    pub qemu: Option<QemuSpec>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// Free space left in an `auto` root filesystem (it grows to the card at first boot).
    #[serde(default = "default_headroom")]
    pub headroom: ByteSize,
    #[serde(default)]
    pub size_round: SizeRound,
}

fn default_headroom() -> ByteSize {
    ByteSize(256 << 20)
}

impl Default for ImageSpec {
    fn default() -> Self {
        ImageSpec {
            headroom: default_headroom(),
            size_round: SizeRound::Mib,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    pub name: String,
    pub fs: FsType,
    pub label: Spanned<String>,
    /// MBR partition type byte (0x0c FAT32 LBA, 0x83 Linux).
    pub mbr_type: u8,
    pub start: Spanned<ByteSize>,
    pub size: Spanned<PartSize>,
    #[serde(default)]
    pub bootable: bool,
    /// Where it is mounted on the board (`/` for the root filesystem).
    pub mount: String,
    /// ext4 only: `mkfs.ext4 -O` feature changes, e.g. `^metadata_csum,^orphan_file`
    /// for old kernels.
    pub ext4_features: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Blob {
    pub name: String,
    pub offset: Spanned<ByteSize>,
    /// The most bytes the region may hold: checked against partitions and other blobs.
    pub max_size: Spanned<ByteSize>,
    /// A path inside the rootfs (e.g. from a Debian package) ...
    pub from_rootfs: Option<String>,
    /// ... or the name of a `[downloads.NAME]` entry.
    pub download: Option<Spanned<String>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Download {
    pub url: Spanned<String>,
    pub sha256: Option<Spanned<String>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootfsSpec {
    /// A rootfs profile in `board-configs/rootfs/NAME.toml` (mmdebstrap recipe) ...
    pub profile: Option<Spanned<String>>,
    /// ... or a `[downloads]` entry holding a rootfs tarball (BSP userlands).
    pub tarball: Option<Spanned<String>>,
    /// Tarball downloads unpacked into the rootfs (`from` inside the tarball, `to` in the rootfs).
    #[serde(default)]
    pub unpack: Vec<Unpack>,
    /// Files written into the rootfs after the overlays.
    #[serde(default)]
    pub files: Vec<InlineFile>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unpack {
    pub download: Spanned<String>,
    pub from: String,
    pub to: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InlineFile {
    pub path: String,
    pub content: String,
    #[serde(default = "default_mode")]
    pub mode: u32,
}

fn default_mode() -> u32 {
    0o644
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSpec {
    /// The kernel inside the boot partition (a glob), e.g. `vmlinuz-*`.
    pub kernel: String,
    /// The initrd inside the boot partition (a glob); none for kernels that boot without.
    pub initrd: Option<String>,
    /// The kernel command line, available to boot files as `{cmdline}`.
    #[serde(default)]
    pub cmdline: String,
    /// Files copied into the boot partition, in order.
    #[serde(default)]
    pub copy: Vec<BootCopy>,
    /// Boot scripts written into the boot partition, with `{kernel}`, `{initrd}`,
    /// `{kernel_version}`, `{cmdline}`, `{root_label}`, `{boot_label}` filled in.
    #[serde(default)]
    pub files: Vec<BootFile>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootCopy {
    /// Glob relative to the rootfs, or to the unpacked download when `download` is set.
    pub from: String,
    /// Folder inside the boot partition (`""` for its root).
    #[serde(default)]
    pub to: String,
    pub download: Option<Spanned<String>>,
    /// File names (globs) not to copy.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Copy under this name instead (only when `from` matches one file).
    pub rename: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootFile {
    pub path: String,
    pub content: String,
}

/// How the boot tests boot this board's image under qemu-system-aarch64.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QemuSpec {
    pub default_machine: Spanned<String>,
    pub machine: BTreeMap<String, QemuMachine>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QemuMachine {
    /// Which part of the board's boot chain runs (`armada boot`'s boot/cmdline.rs).
    #[serde(default)]
    pub boot: crate::boot::cmdline::BootChain,
    /// `direct` only: globs inside the FAT boot partition and the command line.
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub dtb: Option<String>,
    pub append: Option<String>,
    pub memory_mib: Option<u32>,
    /// `u-boot`: the U-Boot binary run as qemu's firmware.
    pub firmware: Option<String>,
    /// 16550 UARTs on PCI (ttyS0...), for a board console the machine lacks.
    #[serde(default)]
    pub pci_serial: u32,
}

/// `board-configs/rootfs/NAME.toml`: an mmdebstrap recipe shared by boards.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RootfsProfile {
    pub suite: String,
    #[serde(default = "default_variant")]
    pub variant: String,
    pub components: Vec<String>,
    pub packages: Vec<String>,
    /// Modules for `MODULES=list` in initramfs-tools: what every board needs to find root.
    pub initramfs_modules: Vec<String>,
}

fn default_variant() -> String {
    "minbase".into()
}

/// A board config, loaded and validated, with where it came from.
#[derive(Clone, Debug)]
pub struct Board {
    pub config: BoardConfig,
    pub path: PathBuf,
    pub profile: Option<RootfsProfile>,
    pub text: String,
}

impl Board {
    pub fn root_partition(&self) -> &Partition {
        // validate() guarantees exactly one.
        self.config
            .partitions
            .iter()
            .find(|p| p.mount == "/")
            .unwrap_or(&self.config.partitions[0])
    }
    pub fn boot_partition(&self) -> &Partition {
        self.config
            .partitions
            .iter()
            .find(|p| p.fs == FsType::Vfat)
            .unwrap_or(&self.config.partitions[0])
    }
}

/// Finds a board by name in `dir` or, when `name` is a path to a `.toml`, there.
pub fn resolve(name: &str, dir: &Path) -> Result<PathBuf, BoardError> {
    let as_path = Path::new(name);
    if name.ends_with(".toml") || name.contains('/') {
        return Ok(as_path.to_path_buf());
    }
    let p = dir.join(format!("{name}.toml"));
    if p.is_file() {
        return Ok(p);
    }
    let known = list(dir)
        .into_iter()
        .map(|(n, _)| n)
        .collect::<Vec<_>>()
        .join(", ");
    Err(BoardError::Unknown {
        name: name.into(),
        dir: dir.display().to_string(),
        known,
    })
}

/// Board names and paths in `dir`, sorted.
pub fn list(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "toml") && p.is_file() {
                if let Some(stem) = p.file_stem().and_then(|s| s.to_str()) {
                    out.push((stem.to_string(), p.clone()));
                }
            }
        }
    }
    out.sort();
    out
}

/// Reads, parses and validates a board config and its rootfs profile.
pub fn load(path: &Path) -> Result<Board, BoardError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| BoardError::Read {
        path: file.clone(),
        source,
    })?;
    let config = parse(&text, &file)?;
    let profile = match &config.rootfs.profile {
        Some(name) => {
            let dir = path.parent().unwrap_or(Path::new("."));
            Some(load_profile(dir, name.get_ref()).map_err(|e| match e {
                BoardError::Read { path: p, source } => BoardError::Invalid {
                    file: file.clone(),
                    key: "rootfs.profile".into(),
                    line: line_of(&text, name.span().start),
                    message: format!("reading rootfs profile {p}: {source}"),
                },
                other => other,
            })?)
        }
        None => None,
    };
    Ok(Board {
        config,
        path: path.to_path_buf(),
        profile,
        text,
    })
}

/// Reads and checks the rootfs profile `name` (`boards_dir/rootfs/NAME.toml`).
pub fn load_profile(boards_dir: &Path, name: &str) -> Result<RootfsProfile, BoardError> {
    let ppath = boards_dir.join("rootfs").join(format!("{name}.toml"));
    let pfile = ppath.display().to_string();
    let ptext = std::fs::read_to_string(&ppath).map_err(|source| BoardError::Read {
        path: pfile.clone(),
        source,
    })?;
    let p: RootfsProfile = toml::from_str(&ptext).map_err(|e| toml_error(&ptext, &pfile, &e))?;
    if p.packages.is_empty() {
        return Err(BoardError::Invalid {
            file: pfile,
            key: "packages".into(),
            line: 1,
            message: "a rootfs profile needs packages".into(),
        });
    }
    Ok(p)
}

/// Parses and validates a board config's text; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<BoardConfig, BoardError> {
    let config: BoardConfig = toml::from_str(text).map_err(|e| toml_error(text, file, &e))?;
    validate(&config, text, file)?;
    Ok(config)
}

fn toml_error(text: &str, file: &str, e: &toml::de::Error) -> BoardError {
    let (line, column) = match e.span() {
        Some(s) => {
            let before = &text[..s.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            (
                line,
                before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1,
            )
        }
        None => (0, 0),
    };
    BoardError::Toml {
        file: file.into(),
        line,
        column,
        message: e.message().trim().to_string(),
    }
}

/// 1-based line of a byte offset in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// A byte range `[start, end)` on the disk, and what it is (for error messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    pub what: String,
    pub key: String,
    pub span_start: usize,
    pub start: u64,
    pub end: u64,
}

/// The pure layout checks: partitions and blobs neither overlap each other nor the MBR.
/// `auto` sizes count as reaching to the end of the disk.
pub fn layout_regions(c: &BoardConfig) -> Vec<Region> {
    let mut v = Vec::new();
    for (i, p) in c.partitions.iter().enumerate() {
        let start = p.start.get_ref().0;
        let end = match p.size.get_ref() {
            PartSize::Fixed(s) => start.saturating_add(s.0),
            PartSize::Auto => u64::MAX,
        };
        v.push(Region {
            what: format!("partition `{}`", p.name),
            key: format!("partitions[{i}].start"),
            span_start: p.start.span().start,
            start,
            end,
        });
    }
    for (i, b) in c.blobs.iter().enumerate() {
        let start = b.offset.get_ref().0;
        v.push(Region {
            what: format!("blob `{}`", b.name),
            key: format!("blobs[{i}].offset"),
            span_start: b.offset.span().start,
            start,
            end: start.saturating_add(b.max_size.get_ref().0),
        });
    }
    v
}

fn validate(c: &BoardConfig, text: &str, file: &str) -> Result<(), BoardError> {
    let bad = |key: &str, span: usize, message: String| BoardError::Invalid {
        file: file.into(),
        key: key.into(),
        line: line_of(text, span),
        message,
    };
    if c.partitions.is_empty() || c.partitions.len() > 4 {
        return Err(bad(
            "partitions",
            0,
            "an MBR holds 1 to 4 primary partitions".into(),
        ));
    }
    let roots: Vec<_> = c.partitions.iter().filter(|p| p.mount == "/").collect();
    if roots.len() != 1 || roots[0].fs != FsType::Ext4 {
        return Err(bad(
            "partitions",
            0,
            "exactly one partition must be the ext4 root (mount = \"/\")".into(),
        ));
    }
    if !c.partitions.iter().any(|p| p.fs == FsType::Vfat) {
        return Err(bad(
            "partitions",
            0,
            "a FAT boot partition is needed (armada.toml lives there)".into(),
        ));
    }
    for (i, p) in c.partitions.iter().enumerate() {
        let start = p.start.get_ref().0;
        if start % SECTOR != 0 || start < SECTOR {
            return Err(bad(
                &format!("partitions[{i}].start"),
                p.start.span().start,
                format!(
                    "{} must be a multiple of 512 bytes and after the partition table",
                    p.start.get_ref()
                ),
            ));
        }
        match p.size.get_ref() {
            PartSize::Fixed(s) if s.0 == 0 || s.0 % SECTOR != 0 => {
                return Err(bad(
                    &format!("partitions[{i}].size"),
                    p.size.span().start,
                    "must be a non-zero multiple of 512 bytes".into(),
                ))
            }
            PartSize::Auto if i + 1 != c.partitions.len() => {
                return Err(bad(
                    &format!("partitions[{i}].size"),
                    p.size.span().start,
                    "only the last partition can have size \"auto\"".into(),
                ))
            }
            _ => {}
        }
        let max = if p.fs == FsType::Vfat { 11 } else { 16 };
        let label = p.label.get_ref();
        if label.is_empty() || label.len() > max || !label.is_ascii() {
            return Err(bad(
                &format!("partitions[{i}].label"),
                p.label.span().start,
                format!("a {:?} label has 1 to {max} ASCII characters", p.fs),
            ));
        }
        if !p.mount.starts_with('/') {
            return Err(bad(
                &format!("partitions[{i}].mount"),
                p.label.span().start,
                "must be an absolute path".into(),
            ));
        }
    }
    let regions = layout_regions(c);
    for r in &regions {
        if r.start < SECTOR {
            return Err(bad(
                &r.key,
                r.span_start,
                format!(
                    "{} at byte {} lies over the partition table (the first 512 bytes)",
                    r.what, r.start
                ),
            ));
        }
    }
    for (i, a) in regions.iter().enumerate() {
        for b in &regions[i + 1..] {
            if a.start < b.end && b.start < a.end {
                let (first, second) = if a.span_start <= b.span_start {
                    (a, b)
                } else {
                    (b, a)
                };
                return Err(bad(
                    &second.key,
                    second.span_start,
                    format!(
                        "{} [{}, {}) overlaps {} [{}, {})",
                        second.what,
                        second.start,
                        fmt_end(second.end),
                        first.what,
                        first.start,
                        fmt_end(first.end)
                    ),
                ));
            }
        }
    }
    for (name, d) in &c.downloads {
        let key = format!("downloads.{name}");
        match &d.sha256 {
            None => {
                return Err(bad(
                    &format!("{key}.sha256"),
                    d.url.span().start,
                    "a download needs its sha256: armada never uses unverified downloads".into(),
                ))
            }
            Some(h)
                if h.get_ref().len() != 64
                    || !h.get_ref().bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                return Err(bad(
                    &format!("{key}.sha256"),
                    h.span().start,
                    "expected 64 hex digits".into(),
                ))
            }
            _ => {}
        }
        let u = d.url.get_ref();
        if !(u.starts_with("https://") || u.starts_with("http://")) {
            return Err(bad(
                &format!("{key}.url"),
                d.url.span().start,
                "expected an http(s) URL".into(),
            ));
        }
    }
    let known_download = |key: &str, n: &Spanned<String>| -> Result<(), BoardError> {
        if c.downloads.contains_key(n.get_ref()) {
            Ok(())
        } else {
            Err(bad(
                key,
                n.span().start,
                format!("no [downloads.{}] entry", n.get_ref()),
            ))
        }
    };
    for (i, b) in c.blobs.iter().enumerate() {
        match (&b.from_rootfs, &b.download) {
            (Some(_), None) => {}
            (None, Some(d)) => known_download(&format!("blobs[{i}].download"), d)?,
            _ => {
                return Err(bad(
                    &format!("blobs[{i}]"),
                    b.offset.span().start,
                    "a blob takes exactly one of `from_rootfs` or `download`".into(),
                ))
            }
        }
    }
    match (&c.rootfs.profile, &c.rootfs.tarball) {
        (Some(_), None) => {}
        (None, Some(t)) => known_download("rootfs.tarball", t)?,
        _ => {
            return Err(bad(
                "rootfs",
                0,
                "set exactly one of `profile` or `tarball`".into(),
            ))
        }
    }
    for (i, u) in c.rootfs.unpack.iter().enumerate() {
        known_download(&format!("rootfs.unpack[{i}].download"), &u.download)?;
    }
    for (i, b) in c.boot.copy.iter().enumerate() {
        if let Some(d) = &b.download {
            known_download(&format!("boot.copy[{i}].download"), d)?;
        }
    }
    if let Some(q) = &c.qemu {
        if !q.machine.contains_key(q.default_machine.get_ref()) {
            return Err(bad(
                "qemu.default_machine",
                q.default_machine.span().start,
                format!("no [qemu.machine.{}] table", q.default_machine.get_ref()),
            ));
        }
    }
    Ok(())
}

fn fmt_end(e: u64) -> String {
    if e == u64::MAX {
        "end of disk".into()
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "t"
description = "test board"

[[partitions]]
name = "boot"
fs = "vfat"
label = "BOOT"
mbr_type = 0x0c
start = "4MiB"
size = "64MiB"
mount = "/boot/firmware"

[[partitions]]
name = "root"
fs = "ext4"
label = "root"
mbr_type = 0x83
start = "68MiB"
size = "auto"
mount = "/"

[[blobs]]
name = "spl"
offset = "8KiB"
max_size = "32KiB"
from_rootfs = "usr/lib/spl.bin"

[rootfs]
profile = "p"

[boot]
kernel = "vmlinuz-*"
"#;

    fn err(text: &str) -> String {
        parse(text, "b.toml").unwrap_err().to_string()
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(ByteSize::parse("8KiB").unwrap().0, 8192);
        assert_eq!(ByteSize::parse("19096KiB").unwrap().0, 19096 * 1024);
        assert_eq!(ByteSize::parse("512").unwrap().0, 512);
        assert!(ByteSize::parse("8kb").is_err());
    }

    #[test]
    fn good_config_passes() {
        let c = parse(GOOD, "b.toml").unwrap();
        assert_eq!(c.partitions.len(), 2);
        assert_eq!(c.blobs[0].offset.get_ref().0, 8192);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = err(&GOOD.replace("mount = \"/\"", "mount = \"/\"\nbootloder = 1"));
        assert!(
            e.contains("b.toml") && e.contains("line 22") && e.contains("bootloder"),
            "{e}"
        );
    }

    #[test]
    fn toml_syntax_error_has_line() {
        let e = err(&GOOD.replace("name = \"t\"", "name = t\""));
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn overlapping_partitions_refused() {
        let e = err(&GOOD.replace("start = \"68MiB\"", "start = \"60MiB\""));
        assert!(
            e.contains("partitions[1].start") && e.contains("overlaps") && e.contains("line 19"),
            "{e}"
        );
    }

    #[test]
    fn blob_overlapping_partition_refused() {
        let e = err(&GOOD.replace("max_size = \"32KiB\"", "max_size = \"8MiB\""));
        assert!(e.contains("blob `spl`") && e.contains("overlaps"), "{e}");
    }

    #[test]
    fn blob_over_partition_table_refused() {
        let e = err(&GOOD.replace("offset = \"8KiB\"", "offset = 0"));
        assert!(
            e.contains("partition table") && e.contains("blobs[0].offset") && e.contains("line 25"),
            "{e}"
        );
    }

    #[test]
    fn download_without_sha256_refused() {
        let text = format!("{GOOD}\n[downloads.k]\nurl = \"https://example.invalid/k.tar.xz\"\n");
        let e = err(&text);
        assert!(
            e.contains("downloads.k.sha256") && e.contains("line 36"),
            "{e}"
        );
    }

    #[test]
    fn unknown_download_reference_refused() {
        let e = err(&GOOD.replace("from_rootfs = \"usr/lib/spl.bin\"", "download = \"nope\""));
        assert!(
            e.contains("blobs[0].download") && e.contains("[downloads.nope]"),
            "{e}"
        );
    }

    /// Every shipped board config loads with its rootfs profile (no download, no build),
    /// and each Raspberry Pi one (a `config.txt` in its boot files) keeps what that
    /// board's firmware reads: its firmware files and device tree are not excluded from
    /// the copy, and config.txt names the staged kernel and initrd.
    #[test]
    fn shipped_board_configs_load_and_keep_what_the_firmware_reads() {
        use crate::build::stage::glob_match;
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../board-configs");
        let boards = list(&dir);
        // The files a Pi's firmware reads from the FAT, per board config (test data).
        let firmware: BTreeMap<&str, &[&str]> = [
            (
                "rpi3",
                &[
                    "bootcode.bin",
                    "start.elf",
                    "fixup.dat",
                    "bcm2837-rpi-3-b.dtb",
                ][..],
            ),
            (
                "rpi4",
                &["start4.elf", "fixup4.dat", "bcm2711-rpi-4-b.dtb"][..],
            ),
            (
                "rpi-zero2w",
                &[
                    "bootcode.bin",
                    "start.elf",
                    "fixup.dat",
                    "bcm2837-rpi-zero-2-w.dtb",
                ][..],
            ),
        ]
        .into_iter()
        .collect();
        for want in firmware.keys().chain(&["pine64", "pine64-longsleep"]) {
            assert!(boards.iter().any(|(n, _)| n == want), "{want} missing");
        }
        for (name, path) in &boards {
            let b = load(path).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&b.config.name, name, "{}: name = file name", path.display());
            assert_eq!(resolve(name, &dir).unwrap(), *path);
            let Some(cfg) = b.config.boot.files.iter().find(|f| f.path == "config.txt") else {
                continue;
            };
            assert!(
                cfg.content.contains("kernel={kernel}")
                    && cfg.content.contains("initramfs {initrd}"),
                "{name}: config.txt must name the staged kernel and initrd"
            );
            let files = firmware
                .get(name.as_str())
                .unwrap_or_else(|| panic!("{name}: a Pi config with no firmware list here"));
            let copied =
                |f: &str| {
                    b.config.boot.copy.iter().any(|c| {
                        c.from.ends_with("/*") && !c.exclude.iter().any(|x| glob_match(x, f))
                    })
                };
            for f in *files {
                assert!(copied(f), "{name}: {f} is excluded from the boot partition");
            }
        }
    }

    #[test]
    fn auto_size_only_last() {
        let text = GOOD.replace("size = \"64MiB\"", "size = \"auto\"");
        assert!(err(&text).contains("only the last partition"));
    }
}

//! Files on a FAT partition inside an image file or block device, in-process.
//!
//! No mount and no loop device: the partition's byte range is wrapped as a seekable
//! stream ([`PartitionIo`]) and handed to the `fatfs` crate. `armada flash` uses it to
//! personalise `armada.toml` on a freshly written card; `inspect` and `boot` read files
//! with it. [`first_fat_partition`] finds the boot partition from the MBR.
//!
//! Each call mounts the filesystem, does one thing and unmounts it, so the FAT, the
//! FSInfo sector and the volume's dirty flag are consistent (`fsck.vfat -n` clean)
//! after every call that returns `Ok`.

// A shared API: `build`, `inspect`, `boot` and `flash` each use part of it.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// A partition's byte range on a disk or image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionSpan {
    pub offset: u64,
    pub len: u64,
}

/// One entry of a FAT directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FatEntry {
    /// Long name when there is one, else the 8.3 name.
    pub name: String,
    pub is_dir: bool,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum FatFileError {
    #[error("{action} {path}: {source}")]
    Io {
        action: String,
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Layout { path: String, message: String },
}

pub type Result<T> = std::result::Result<T, FatFileError>;

/// MBR partition types that hold FAT (12, 16, 32, with CHS or LBA, and the EFI system
/// partition type, which is FAT too).
const FAT_TYPES: &[u8] = &[0x01, 0x04, 0x06, 0x0b, 0x0c, 0x0e, 0xef];

/// The first primary MBR partition whose type is FAT.
pub fn first_fat_partition(dev: &Path) -> Result<PartitionSpan> {
    let file = open(dev, false)?;
    first_fat_partition_in(&file, dev)
}

/// [`first_fat_partition`] on an already open disk (`dev` names it in errors).
pub fn first_fat_partition_in(file: &File, dev: &Path) -> Result<PartitionSpan> {
    let mut sector = [0u8; 512];
    file.read_exact_at(&mut sector, 0)
        .map_err(|e| io_err("reading the MBR of", dev, e))?;
    first_fat_partition_from(&sector, dev)
}

/// [`first_fat_partition`] from the disk's first sector, given as bytes: `armada flash`
/// holds the partition table back until the rest of the card is written.
pub fn first_fat_partition_from(sector: &[u8; 512], dev: &Path) -> Result<PartitionSpan> {
    let layout = |message: String| FatFileError::Layout {
        path: dev.display().to_string(),
        message,
    };
    let header = mbrman::MBRHeader::read_from(&mut std::io::Cursor::new(&sector[..]))
        .map_err(|e| layout(format!("no valid MBR partition table: {e}")))?;
    if header.boot_signature != [0x55, 0xAA] {
        return Err(layout(
            "no MBR partition table (boot signature is not 55 AA)".into(),
        ));
    }
    for (i, p) in header.iter() {
        if p.is_used() && FAT_TYPES.contains(&p.sys) {
            if p.sectors == 0 {
                return Err(layout(format!(
                    "partition {i} (type {:#04x}) is empty",
                    p.sys
                )));
            }
            return Ok(PartitionSpan {
                offset: p.starting_lba as u64 * 512,
                len: p.sectors as u64 * 512,
            });
        }
    }
    Err(layout("no FAT partition in the MBR partition table".into()))
}

/// Reads `name` (a path inside the FAT, `/`-separated, case-insensitive).
pub fn read_file(dev: &Path, part: PartitionSpan, name: &str) -> Result<Vec<u8>> {
    let file = open(dev, false)?;
    read_file_in(&file, dev, part, name)
}

/// [`read_file`] on an already open disk (`dev` names it in errors).
pub fn read_file_in(file: &File, dev: &Path, part: PartitionSpan, name: &str) -> Result<Vec<u8>> {
    let fs = mount(file, dev, part, false)?;
    let what = || {
        format!(
            "reading {name} from the FAT partition at byte {} of",
            part.offset
        )
    };
    let mut f = fs
        .root_dir()
        .open_file(name)
        .map_err(|e| io_err(&what(), dev, e))?;
    let mut out = Vec::new();
    f.read_to_end(&mut out)
        .map_err(|e| io_err(&what(), dev, e))?;
    drop(f);
    fs.unmount()
        .map_err(|e| io_err("unmounting the FAT partition of", dev, e))?;
    Ok(out)
}

/// Writes `data` as `name` (creating it if missing): the new content is written over the
/// old from the start, then the file is cut to its new length, then the filesystem is
/// unmounted and the device synced.
pub fn write_file(dev: &Path, part: PartitionSpan, name: &str, data: &[u8]) -> Result<()> {
    let file = open(dev, true)?;
    write_file_in(&file, dev, part, name, data)?;
    file.sync_all().map_err(|e| io_err("syncing", dev, e))
}

/// [`write_file`] on an already open, writable disk; the caller syncs.
pub fn write_file_in(
    file: &File,
    dev: &Path,
    part: PartitionSpan,
    name: &str,
    data: &[u8],
) -> Result<()> {
    let fs = mount(file, dev, part, true)?;
    let what = || {
        format!(
            "writing {name} on the FAT partition at byte {} of",
            part.offset
        )
    };
    {
        let root = fs.root_dir();
        let mut f = root
            .create_file(name)
            .map_err(|e| io_err(&what(), dev, e))?;
        f.write_all(data).map_err(|e| io_err(&what(), dev, e))?;
        f.truncate().map_err(|e| io_err(&what(), dev, e))?;
        f.flush().map_err(|e| io_err(&what(), dev, e))?;
    }
    fs.unmount()
        .map_err(|e| io_err("unmounting the FAT partition of", dev, e))
}

/// Lists the directory `dir` (`""` or `/` for the root), without `.` and `..`.
pub fn list_dir(dev: &Path, part: PartitionSpan, dir: &str) -> Result<Vec<FatEntry>> {
    let file = open(dev, false)?;
    list_dir_in(&file, dev, part, dir)
}

/// [`list_dir`] on an already open disk.
pub fn list_dir_in(
    file: &File,
    dev: &Path,
    part: PartitionSpan,
    dir: &str,
) -> Result<Vec<FatEntry>> {
    let fs = mount(file, dev, part, false)?;
    let what = || {
        format!(
            "listing {dir:?} on the FAT partition at byte {} of",
            part.offset
        )
    };
    let trimmed = dir.trim_matches('/');
    let d = if trimmed.is_empty() {
        fs.root_dir()
    } else {
        fs.root_dir()
            .open_dir(trimmed)
            .map_err(|e| io_err(&what(), dev, e))?
    };
    let mut out = Vec::new();
    for entry in d.iter() {
        let entry = entry.map_err(|e| io_err(&what(), dev, e))?;
        let name = entry.file_name();
        if name == "." || name == ".." {
            continue;
        }
        out.push(FatEntry {
            name,
            is_dir: entry.is_dir(),
            size: entry.len(),
        });
    }
    drop(d);
    fs.unmount()
        .map_err(|e| io_err("unmounting the FAT partition of", dev, e))?;
    Ok(out)
}

fn open(dev: &Path, write: bool) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .open(dev)
        .map_err(|e| {
            io_err(
                if write {
                    "opening for writing"
                } else {
                    "opening"
                },
                dev,
                e,
            )
        })
}

fn mount<'f>(
    file: &'f File,
    dev: &Path,
    part: PartitionSpan,
    writable: bool,
) -> Result<fatfs::FileSystem<PartitionIo<'f>>> {
    let io = PartitionIo::new(file, part, writable);
    fatfs::FileSystem::new(io, fatfs::FsOptions::new().update_accessed_date(false)).map_err(|e| {
        io_err(
            &format!(
                "reading the FAT filesystem at byte {} (length {}) of",
                part.offset, part.len
            ),
            dev,
            e,
        )
    })
}

fn io_err(action: &str, path: &Path, source: std::io::Error) -> FatFileError {
    FatFileError::Io {
        action: action.to_string(),
        path: path.display().to_string(),
        source,
    }
}

/// A byte range of a file seen as a whole stream: positions are relative to the start
/// of the partition and I/O never leaves it. Read-only unless `writable`.
pub struct PartitionIo<'f> {
    file: &'f File,
    span: PartitionSpan,
    pos: u64,
    writable: bool,
}

impl<'f> PartitionIo<'f> {
    pub fn new(file: &'f File, span: PartitionSpan, writable: bool) -> Self {
        PartitionIo {
            file,
            span,
            pos: 0,
            writable,
        }
    }
}

impl Read for PartitionIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.span.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        let got = self
            .file
            .read_at(&mut buf[..n], self.span.offset + self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl Write for PartitionIo<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !self.writable {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "partition opened read-only",
            ));
        }
        let left = self.span.len.saturating_sub(self.pos);
        if left == 0 && !buf.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        let n = (buf.len() as u64).min(left) as usize;
        let put = self.file.write_at(&buf[..n], self.span.offset + self.pos)?;
        self.pos += put as u64;
        Ok(put)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Seek for PartitionIo<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let new = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.span.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(n) if n <= self.span.len => {
                self.pos = n;
                Ok(n)
            }
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek outside the partition",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn have(tool: &str) -> bool {
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// A 64 MiB image: MBR with a FAT32 partition at 1 MiB (type 0x0c) holding
    /// `armada.toml` and `overlays/x.dtbo`, made with sfdisk, mkfs.vfat and mcopy.
    fn fat_image(dir: &Path) -> Option<(std::path::PathBuf, PartitionSpan)> {
        if !(have("sfdisk") && have("mkfs.vfat") && have("mcopy")) {
            crate::test_skip::required("sfdisk, mkfs.vfat or mcopy missing");
            return None;
        }
        let img = dir.join("disk.img");
        File::create(&img).unwrap().set_len(64 << 20).unwrap();
        let mut sf = Command::new("sfdisk")
            .arg("-q")
            .arg(&img)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        sf.stdin
            .take()
            .unwrap()
            .write_all(b"label: dos\nstart=2048, size=81920, type=c\nstart=83968, type=83\n")
            .unwrap();
        assert!(sf.wait().unwrap().success());
        let part = PartitionSpan {
            offset: 2048 * 512,
            len: 81920 * 512,
        };
        let fat = dir.join("fat.img");
        File::create(&fat).unwrap().set_len(part.len).unwrap();
        assert!(Command::new("mkfs.vfat")
            .args(["-F", "32", "-n", "BOOT"])
            .arg(&fat)
            .output()
            .unwrap()
            .status
            .success());
        std::fs::write(dir.join("armada.toml"), "hostname = \"old\"\n").unwrap();
        std::fs::write(dir.join("x.dtbo"), vec![7u8; 3000]).unwrap();
        let mtool = |args: &[&str]| {
            let o = Command::new(args[0])
                .args(&args[1..])
                .env("MTOOLS_SKIP_CHECK", "1")
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        let fat_s = fat.to_str().unwrap();
        mtool(&[
            "mcopy",
            "-i",
            fat_s,
            dir.join("armada.toml").to_str().unwrap(),
            "::armada.toml",
        ]);
        mtool(&["mmd", "-i", fat_s, "::overlays"]);
        mtool(&[
            "mcopy",
            "-i",
            fat_s,
            dir.join("x.dtbo").to_str().unwrap(),
            "::overlays/x.dtbo",
        ]);
        let bytes = std::fs::read(&fat).unwrap();
        File::options()
            .write(true)
            .open(&img)
            .unwrap()
            .write_all_at(&bytes, part.offset)
            .unwrap();
        Some((img, part))
    }

    fn fsck_clean(img: &Path, part: PartitionSpan, dir: &Path) {
        if !have("fsck.vfat") {
            return;
        }
        let fat = dir.join("check.img");
        let mut buf = vec![0u8; part.len as usize];
        File::open(img)
            .unwrap()
            .read_exact_at(&mut buf, part.offset)
            .unwrap();
        std::fs::write(&fat, &buf).unwrap();
        let o = Command::new("fsck.vfat")
            .arg("-n")
            .arg(&fat)
            .output()
            .unwrap();
        let out =
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "fsck.vfat -n: {out}");
        assert!(!out.to_lowercase().contains("dirty"), "{out}");
    }

    #[test]
    fn finds_reads_lists_and_rewrites_with_fsck_clean() {
        let dir = tempfile::tempdir().unwrap();
        let Some((img, part)) = fat_image(dir.path()) else {
            return;
        };
        assert_eq!(first_fat_partition(&img).unwrap(), part);
        assert_eq!(
            read_file(&img, part, "armada.toml").unwrap(),
            b"hostname = \"old\"\n"
        );
        assert_eq!(
            read_file(&img, part, "ARMADA.TOML").unwrap(),
            b"hostname = \"old\"\n"
        );
        let mut root: Vec<_> = list_dir(&img, part, "/")
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.is_dir))
            .collect();
        root.sort();
        assert_eq!(
            root,
            vec![
                ("armada.toml".to_string(), false),
                ("overlays".to_string(), true)
            ]
        );
        assert_eq!(list_dir(&img, part, "overlays").unwrap()[0].size, 3000);

        // Grow, then shrink: the old tail must not survive and the FAT stays consistent.
        let long = "x".repeat(20000);
        write_file(&img, part, "armada.toml", long.as_bytes()).unwrap();
        assert_eq!(
            read_file(&img, part, "armada.toml").unwrap(),
            long.as_bytes()
        );
        fsck_clean(&img, part, dir.path());
        write_file(&img, part, "armada.toml", b"hostname = \"new\"\n").unwrap();
        fsck_clean(&img, part, dir.path());
        // A new file is created.
        write_file(&img, part, "overlays/new.txt", b"n").unwrap();
        assert_eq!(read_file(&img, part, "overlays/new.txt").unwrap(), b"n");
        fsck_clean(&img, part, dir.path());

        // mtools sees what we wrote.
        let o = Command::new("mtype")
            .args([
                "-i",
                &format!("{}@@{}", img.display(), part.offset),
                "::armada.toml",
            ])
            .env("MTOOLS_SKIP_CHECK", "1")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(o.stdout, b"hostname = \"new\"\n");
    }

    #[test]
    fn errors_name_the_device_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let Some((img, part)) = fat_image(dir.path()) else {
            return;
        };
        let err = read_file(&img, part, "missing.txt")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing.txt") && err.contains("disk.img"),
            "{err}"
        );
        let wrong = PartitionSpan {
            offset: 0,
            len: part.len,
        };
        let err = read_file(&img, wrong, "armada.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("FAT filesystem at byte 0"), "{err}");
        let blank = dir.path().join("blank.img");
        File::create(&blank).unwrap().set_len(1 << 20).unwrap();
        let err = first_fat_partition(&blank).unwrap_err().to_string();
        assert!(err.contains("blank.img") && err.contains("MBR"), "{err}");
    }

    #[test]
    fn partition_io_stays_inside_its_range() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"0123456789").unwrap();
        let f = File::options().read(true).write(true).open(&p).unwrap();
        let mut io = PartitionIo::new(&f, PartitionSpan { offset: 2, len: 4 }, true);
        let mut s = String::new();
        io.read_to_string(&mut s).unwrap();
        assert_eq!(s, "2345");
        assert!(io.seek(SeekFrom::Start(5)).is_err());
        io.seek(SeekFrom::End(-1)).unwrap();
        assert!(io.write_all(b"ab").is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"01234a6789");
        let mut ro = PartitionIo::new(&f, PartitionSpan { offset: 0, len: 4 }, false);
        assert!(ro.write(b"z").is_err());
    }
}

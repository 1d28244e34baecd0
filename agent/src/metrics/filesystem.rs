//! Size, free space and read-only state of real mounted filesystems (from the mount
//! table and `statvfs`), and ext4's lifetime written bytes per device (SD card wear).
//!
//! "Real" means disk-backed: pseudo filesystems (proc, sysfs, cgroup, tmpfs, overlay)
//! and network filesystems (whose `statvfs` can hang on a dead server) are left out,
//! and each device is reported once, at its first mount point.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use protocol::snapshot::Filesystem;

use super::pseudofile::{fields, lines, parse_u64, trim, PseudoFile, ReadError};

const DISK_FILESYSTEMS: &[&[u8]] = &[
    b"ext2", b"ext3", b"ext4", b"xfs", b"btrfs", b"vfat", b"exfat", b"f2fs", b"ntfs", b"ntfs3",
    b"jfs", b"zfs", b"fuseblk", b"nilfs2",
];

/// One line of the mount table that names a disk-backed filesystem.
#[derive(Debug, PartialEq)]
pub struct Mount {
    pub device: String,
    pub mountpoint: String,
    pub fstype: String,
}

/// The real mounts, re-read only when the kernel says the mount table changed.
///
/// `/proc/self/mounts` is costly to generate on a Docker host (every container adds an
/// overlay mount with long options), and it changes rarely: poll(2) on it reports
/// POLLPRI after a mount or unmount, so the table is parsed once per change.
#[derive(Default)]
pub struct MountTable {
    watch: Option<File>,
    mounts: Vec<Mount>,
}

impl MountTable {
    fn changed(&mut self) -> bool {
        let Some(f) = &self.watch else { return true };
        poll_pri(f)
    }

    fn refresh(&mut self, root: &Path, file: &mut PseudoFile) -> Result<(), ReadError> {
        if !self.changed() {
            return Ok(());
        }
        let path = root.join("proc/self/mounts");
        let watch = File::open(&path).map_err(|source| ReadError::Io { path, source })?;
        // Poll once now so the next poll reports only later changes.
        poll_pri(&watch);
        self.mounts = parse_mounts(file.read_in(root, "proc/self/mounts")?);
        self.watch = Some(watch);
        Ok(())
    }
}

/// Whether poll(2) reports a change (POLLPRI/POLLERR) on a mount table, without waiting.
fn poll_pri(f: &File) -> bool {
    let mut pfd = libc::pollfd {
        fd: f.as_raw_fd(),
        events: libc::POLLPRI,
        revents: 0,
    };
    // SAFETY: one valid pollfd that lives through the call; zero timeout.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n != 0 && pfd.revents != 0
}

/// `statvfs`es each real mount; the mount table is re-read only when it changed.
/// A filesystem that cannot be `statvfs`ed (permission, vanished) is skipped.
pub fn collect(
    root: &Path,
    file: &mut PseudoFile,
    table: &mut MountTable,
    out: &mut Vec<Filesystem>,
) -> Result<(), ReadError> {
    out.clear();
    table.refresh(root, file)?;
    for m in &table.mounts {
        let at = root.join(m.mountpoint.trim_start_matches('/'));
        let Ok(st) = nix::sys::statvfs::statvfs(&at) else {
            continue;
        };
        let unit = st.fragment_size();
        // Block counts times the fragment size can overflow only on a lying filesystem
        // (FUSE): such a mount is left out rather than wrapped.
        let bytes = |blocks: u64| blocks.checked_mul(unit);
        let (Some(size_bytes), Some(free_bytes), Some(avail_bytes)) = (
            bytes(st.blocks()),
            bytes(st.blocks_free()),
            bytes(st.blocks_available()),
        ) else {
            continue;
        };
        out.push(Filesystem {
            device: m.device.clone(),
            mountpoint: m.mountpoint.clone(),
            fstype: m.fstype.clone(),
            size_bytes,
            free_bytes,
            avail_bytes,
            files: st.files(),
            files_free: st.files_free(),
            readonly: Some(st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY)),
        });
    }
    Ok(())
}

/// Disk-backed mounts of a `/proc/mounts` table, one per device, in table order.
pub fn parse_mounts(table: &[u8]) -> Vec<Mount> {
    let mut out: Vec<Mount> = Vec::new();
    for line in lines(table) {
        let mut f = fields(line);
        let (Some(dev), Some(mnt), Some(fstype)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if !DISK_FILESYSTEMS.contains(&fstype) {
            continue;
        }
        let device = unescape(dev);
        // Docker's per-container bind mounts of the same device come after the host's.
        if out.iter().any(|m| m.device == device) {
            continue;
        }
        out.push(Mount {
            device,
            mountpoint: unescape(mnt),
            fstype: String::from_utf8_lossy(fstype).into_owned(),
        });
    }
    out
}

/// Undoes the kernel's octal escapes in mount fields (`\040` for a space).
fn unescape(field: &[u8]) -> String {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && i + 3 < field.len()
            && field[i + 1..i + 4]
                .iter()
                .all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (field[i + 1] - b'0') * 64 + (field[i + 2] - b'0') * 8 + (field[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(field[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The ext4 devices under `root/sys/fs/ext4` (those with a lifetime counter).
pub fn ext4_devices(root: &Path) -> Vec<(String, PathBuf)> {
    let dir = root.join("sys/fs/ext4");
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut devs: Vec<(String, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join("lifetime_write_kbytes").is_file())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    devs.sort();
    devs
}

/// `lifetime_write_kbytes` of one ext4 device, in bytes.
pub fn ext4_lifetime_written(dir: &Path, file: &mut PseudoFile) -> Result<u64, ReadError> {
    let bytes = file.read_record(dir, "lifetime_write_kbytes")?;
    match parse_u64(trim(bytes)) {
        Some(kb) => kb
            .checked_mul(1024)
            .ok_or_else(|| ReadError::parse(file.last_path(), "kilobytes overflow bytes")),
        None => Err(ReadError::parse(file.last_path(), "expected kilobytes")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_disk_filesystems_once_per_device() {
        let table = b"sysfs /sys sysfs rw 0 0\nproc /proc proc rw 0 0\n/dev/mmcblk0p2 / ext4 rw,noatime 0 0\ntmpfs /run tmpfs rw 0 0\n/dev/mmcblk0p1 /boot/firmware vfat rw 0 0\noverlay /var/lib/docker/overlay2/x/merged overlay rw 0 0\n/dev/mmcblk0p2 /var/lib/docker/containers/abc/hostname ext4 rw 0 0\n/dev/sda1 /mnt/my\\040disk ext4 rw 0 0\n";
        let m = parse_mounts(table);
        let points: Vec<&str> = m.iter().map(|m| m.mountpoint.as_str()).collect();
        assert_eq!(points, ["/", "/boot/firmware", "/mnt/my disk"]);
        assert_eq!(m[1].fstype, "vfat");
    }
}

//! A FAT boot partition formatted and filled in-process (the `fatfs` crate), from a
//! staged folder, in sorted order, with every timestamp set to the build's epoch.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{Context, Result};
use fatfs::{Date, DateTime, FormatVolumeOptions, FsOptions, Time, TimeProvider};

use crate::fatfile::{PartitionIo, PartitionSpan};

/// Hands out one fixed time: the build's epoch (FAT keeps local time; we use UTC).
#[derive(Debug)]
struct EpochTime(DateTime);

impl TimeProvider for EpochTime {
    fn get_current_date(&self) -> Date {
        self.0.date
    }
    fn get_current_date_time(&self) -> DateTime {
        self.0
    }
}

/// The FAT date-time of a Unix epoch second (clamped to FAT's 1980..=2107 range).
pub fn fat_datetime(epoch: i64) -> DateTime {
    let epoch = epoch.clamp(315_532_800, 4_354_819_199);
    let days = epoch.div_euclid(86_400);
    let secs = epoch.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    DateTime {
        date: Date {
            year: year as u16,
            month: month as u16,
            day: day as u16,
        },
        time: Time {
            hour: (secs / 3600) as u16,
            min: (secs / 60 % 60) as u16,
            sec: (secs % 60) as u16,
            millis: 0,
        },
    }
}

/// Formats `span` of `image` as FAT (type chosen by size) and copies `tree` into it.
pub fn make(
    image: &File,
    span: PartitionSpan,
    label: &str,
    volume_id: u32,
    tree: &Path,
    epoch: i64,
    fat32: bool,
) -> Result<()> {
    let mut label11 = [b' '; 11];
    for (d, s) in label11.iter_mut().zip(label.to_ascii_uppercase().bytes()) {
        *d = s;
    }
    let mut io = PartitionIo::new(image, span, true);
    let mut opts = FormatVolumeOptions::new()
        .volume_id(volume_id)
        .volume_label(label11);
    if fat32 {
        let cluster = fat32_cluster_size(span.len).with_context(|| {
            format!(
                "{} bytes are too few for FAT32 (the MBR type says FAT32)",
                span.len
            )
        })?;
        opts = opts
            .fat_type(fatfs::FatType::Fat32)
            .bytes_per_cluster(cluster);
    }
    fatfs::format_volume(&mut io, opts).context("formatting the FAT boot partition")?;
    let tp: &'static EpochTime = Box::leak(Box::new(EpochTime(fat_datetime(epoch))));
    let fs = fatfs::FileSystem::new(
        PartitionIo::new(image, span, true),
        FsOptions::new()
            .time_provider(tp)
            .update_accessed_date(false),
    )
    .context("opening the new FAT filesystem")?;
    for rel in super::tree::walk_sorted(tree)?.iter().skip(1) {
        let src = tree.join(rel);
        let name = rel
            .to_str()
            .with_context(|| format!("{} is not a UTF-8 name", src.display()))?;
        let md = std::fs::symlink_metadata(&src)
            .with_context(|| format!("reading {}", src.display()))?;
        let root = fs.root_dir();
        if md.is_dir() {
            root.create_dir(name)
                .with_context(|| format!("creating {name} on the FAT partition"))?;
        } else {
            // Symlinks are followed: FAT has none.
            let data = std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
            let mut f = root
                .create_file(name)
                .with_context(|| format!("creating {name} on the FAT partition"))?;
            f.truncate()
                .with_context(|| format!("writing {name} on the FAT partition"))?;
            f.write_all(&data)
                .with_context(|| format!("writing {name} on the FAT partition (is it full?)"))?;
            f.flush()
                .with_context(|| format!("writing {name} on the FAT partition"))?;
        }
    }
    fs.unmount().context("closing the FAT filesystem")?;
    fix_dot_entries(&mut PartitionIo::new(image, span, true))
        .context("fixing the FAT folders' `.` entries")?;
    Ok(())
}

/// The largest cluster (4 KiB down to 512 B) that still gives FAT32 its minimum of
/// 65525 clusters, with some margin for the FATs and reserved sectors.
pub fn fat32_cluster_size(len: u64) -> Option<u32> {
    [4096u32, 2048, 1024, 512]
        .into_iter()
        .find(|c| len / u64::from(*c) >= 66_000)
}

/// A folder to visit: its byte ranges, whether it is a subfolder, whether its parent
/// is the root.
type FolderTodo = (Vec<(u64, u64)>, bool, bool);

/// fatfs 0.3 writes a long-name entry before each new folder's `.` and `..`, which
/// `fsck.vfat` rejects ("Expected a valid '.' entry in this slot"): move `.` and `..`
/// to slots 0 and 1 of every folder and mark the long-name slots deleted.
fn fix_dot_entries<T: Read + Write + Seek>(io: &mut T) -> std::io::Result<()> {
    let mut bpb = [0u8; 512];
    io.seek(SeekFrom::Start(0))?;
    io.read_exact(&mut bpb)?;
    let u16_at = |o: usize| u64::from(u16::from_le_bytes([bpb[o], bpb[o + 1]]));
    let u32_at = |o: usize| {
        u64::from(u32::from_le_bytes([
            bpb[o],
            bpb[o + 1],
            bpb[o + 2],
            bpb[o + 3],
        ]))
    };
    let bps = u16_at(11);
    let spc = u64::from(bpb[13]);
    let reserved = u16_at(14);
    let fats = u64::from(bpb[16]);
    let root_entries = u16_at(17);
    let total = if u16_at(19) != 0 {
        u16_at(19)
    } else {
        u32_at(32)
    };
    let fat_size = if u16_at(22) != 0 {
        u16_at(22)
    } else {
        u32_at(36)
    };
    if bps == 0 || spc == 0 {
        return Ok(());
    }
    let root_dir_sectors = (root_entries * 32).div_ceil(bps);
    let first_data = reserved + fats * fat_size + root_dir_sectors;
    let clusters = (total - first_data) / spc;
    let fat32 = clusters >= 65_525;
    if clusters < 4085 {
        return Ok(()); // FAT12: not made by armada
    }
    let cluster_bytes = bps * spc;
    let cluster_off = |c: u64| (first_data + (c - 2) * spc) * bps;
    let next = |io: &mut T, c: u64| -> std::io::Result<Option<u64>> {
        let (off, width) = if fat32 {
            (reserved * bps + c * 4, 4)
        } else {
            (reserved * bps + c * 2, 2)
        };
        let mut b = [0u8; 4];
        io.seek(SeekFrom::Start(off))?;
        io.read_exact(&mut b[..width])?;
        let v = if fat32 {
            u64::from(u32::from_le_bytes(b) & 0x0fff_ffff)
        } else {
            u64::from(u16::from_le_bytes([b[0], b[1]]))
        };
        let eoc = if fat32 { 0x0fff_fff8 } else { 0xfff8 };
        Ok(if v < 2 || v >= eoc { None } else { Some(v) })
    };
    // (byte ranges of the folder, whether it is a subfolder)
    let mut todo: Vec<FolderTodo> = Vec::new();
    if fat32 {
        let mut chain = Vec::new();
        let mut c = Some(u32_at(44));
        while let Some(cl) = c {
            chain.push((cluster_off(cl), cluster_bytes));
            c = next(io, cl)?;
            if chain.len() > 65_536 {
                break;
            }
        }
        todo.push((chain, false, false));
    } else {
        todo.push((
            vec![((reserved + fats * fat_size) * bps, root_dir_sectors * bps)],
            false,
            false,
        ));
    }
    let mut visited = 0;
    while let Some((ranges, is_sub, parent_is_root)) = todo.pop() {
        visited += 1;
        if visited > 100_000 {
            break;
        }
        let mut data = Vec::new();
        for (off, len) in &ranges {
            let mut b = vec![0u8; *len as usize];
            io.seek(SeekFrom::Start(*off))?;
            io.read_exact(&mut b)?;
            data.extend_from_slice(&b);
        }
        if is_sub {
            let slot = |i: usize| &data[i * 32..i * 32 + 32];
            let dot = (0..6).find(|&i| &slot(i)[..11] == b".          " && slot(i)[11] & 0x10 != 0);
            let dotdot =
                (0..6).find(|&i| &slot(i)[..11] == b"..         " && slot(i)[11] & 0x10 != 0);
            if let (Some(d), Some(dd)) = (dot, dotdot) {
                let (de, mut dde) = (slot(d).to_vec(), slot(dd).to_vec());
                // `..` of a folder in the root names cluster 0, whatever the root's cluster.
                let fix_parent = parent_is_root && (dde[20..22] != [0, 0] || dde[26..28] != [0, 0]);
                if fix_parent {
                    dde[20..22].copy_from_slice(&[0, 0]);
                    dde[26..28].copy_from_slice(&[0, 0]);
                }
                if (d, dd) != (0, 1) || fix_parent {
                    let last = d.max(dd);
                    for i in 0..=last {
                        let e: Vec<u8> = match i {
                            0 => de.clone(),
                            1 => dde.clone(),
                            _ => {
                                let mut z = vec![0u8; 32];
                                z[0] = 0xe5;
                                z
                            }
                        };
                        data[i * 32..i * 32 + 32].copy_from_slice(&e);
                    }
                    let (off, _) = ranges[0];
                    io.seek(SeekFrom::Start(off))?;
                    io.write_all(&data[..(last + 1) * 32])?;
                }
            }
        }
        for e in data.chunks_exact(32) {
            if e[0] == 0 {
                break;
            }
            if e[0] == 0xe5 || e[11] == 0x0f || e[11] & 0x10 == 0 || e[0] == b'.' {
                continue;
            }
            let first = (u64::from(u16::from_le_bytes([e[20], e[21]])) << 16)
                | u64::from(u16::from_le_bytes([e[26], e[27]]));
            let mut chain = Vec::new();
            let mut c = Some(first);
            while let Some(cl) = c {
                chain.push((cluster_off(cl), cluster_bytes));
                c = next(io, cl)?;
                if chain.len() > 65_536 {
                    break;
                }
            }
            if !chain.is_empty() {
                todo.push((chain, true, !is_sub));
            }
        }
    }
    io.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_to_fat_date() {
        let d = fat_datetime(1_700_000_000); // 2023-11-14 22:13:20 UTC
        assert_eq!((d.date.year, d.date.month, d.date.day), (2023, 11, 14));
        assert_eq!((d.time.hour, d.time.min, d.time.sec), (22, 13, 20));
        let d = fat_datetime(0);
        assert_eq!((d.date.year, d.date.month, d.date.day), (1980, 1, 1));
    }
}

#[cfg(test)]
mod fsck_tests {
    use super::*;

    #[test]
    fn nested_folders_pass_fsck_vfat() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("tree");
        for p in [
            "extlinux/extlinux.conf",
            "dtbs/allwinner/a.dtb",
            "dtbs/allwinner/b.dtb",
            "top.txt",
        ] {
            let f = tree.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(&f, p).unwrap();
        }
        let img = d.path().join("fat.img");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&img)
            .unwrap();
        file.set_len(70 << 20).unwrap();
        let span = PartitionSpan {
            offset: 1 << 20,
            len: 64 << 20,
        };
        make(&file, span, "BOOT", 0x1234_5678, &tree, 1_700_000_000, true).unwrap();
        drop(file);
        let part = d.path().join("part.img");
        let o = std::process::Command::new("dd")
            .args([
                format!("if={}", img.display()),
                format!("of={}", part.display()),
                "bs=1M".into(),
                "skip=1".into(),
                "count=64".into(),
            ])
            .output()
            .unwrap();
        assert!(o.status.success());
        let o = std::process::Command::new("fsck.vfat")
            .arg("-n")
            .arg(&part)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

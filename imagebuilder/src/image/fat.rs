//! A FAT boot partition formatted and filled in-process (the `fatfs` crate), from a
//! staged folder, in sorted order, with every timestamp set to the build's epoch.

use std::fs::File;
use std::io::Write;
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
) -> Result<()> {
    let mut label11 = [b' '; 11];
    for (d, s) in label11.iter_mut().zip(label.to_ascii_uppercase().bytes()) {
        *d = s;
    }
    let mut io = PartitionIo::new(image, span, true);
    fatfs::format_volume(
        &mut io,
        FormatVolumeOptions::new()
            .volume_id(volume_id)
            .volume_label(label11),
    )
    .context("formatting the FAT boot partition")?;
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
    Ok(())
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

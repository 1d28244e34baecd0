//! `armada flash --list`: the disks a card could be, with model and size. A candidate
//! is a whole disk that is removable or on an SD/MMC or USB bus; loop, RAM and
//! device-mapper devices are never listed.

use std::path::Path;

use anyhow::{Context, Result};

use super::target::{block_facts, human_bytes, TargetFacts};

/// Candidate disks under `root` (`/` on a real system), sorted by name.
pub fn candidates(root: &Path) -> Result<Vec<TargetFacts>> {
    let block = root.join("sys/block");
    let rd = std::fs::read_dir(&block).with_context(|| format!("listing {}", block.display()))?;
    let mut out = Vec::new();
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if ["loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            continue;
        }
        let Ok(devno) = std::fs::read_to_string(entry.path().join("dev")) else {
            continue;
        };
        let Ok(facts) = block_facts(&Path::new("/dev").join(&name), devno.trim(), root) else {
            continue;
        };
        if facts.removable && facts.size > 0 {
            out.push(facts);
        }
    }
    out.sort_by(|a, b| a.disk.cmp(&b.disk));
    Ok(out)
}

/// The table `--list` prints.
pub fn render(cands: &[TargetFacts]) -> String {
    if cands.is_empty() {
        return "no removable disks found (insert a card, or give a device path or image file)\n"
            .into();
    }
    let mut s = format!("{:<16} {:<26} {:<6} {}\n", "DEVICE", "SIZE", "BUS", "MODEL");
    for f in cands {
        let mut notes = Vec::new();
        notes.extend(f.in_use.iter().cloned());
        notes.extend(f.holds_system.iter().map(|m| format!("holds {m}")));
        s.push_str(&format!(
            "{:<16} {:<26} {:<6} {}{}\n",
            f.path.display(),
            human_bytes(f.size),
            f.transport,
            if f.model.is_empty() { "-" } else { &f.model },
            if notes.is_empty() {
                String::new()
            } else {
                format!("  [{}]", notes.join("; "))
            }
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_usb_and_mmc_disks_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let disks = [
            (
                "sys/devices/pci0/usb1/1-1/host0/block/sdb",
                "8:16",
                "0",
                "62333952",
            ),
            (
                "sys/devices/platform/mmc_host/mmc0/mmc0:0001/block/mmcblk0",
                "179:0",
                "0",
                "30000000",
            ),
            (
                "sys/devices/pci0/ata1/host1/block/sda",
                "8:0",
                "0",
                "1000000",
            ),
            ("sys/devices/virtual/block/loop0", "7:0", "0", "2048"),
        ];
        std::fs::create_dir_all(root.join("sys/block")).unwrap();
        std::fs::create_dir_all(root.join("sys/dev/block")).unwrap();
        std::fs::create_dir_all(root.join("proc/self")).unwrap();
        std::fs::write(
            root.join("proc/self/mountinfo"),
            "29 1 8:1 / / rw - ext4 /dev/sda1 rw\n",
        )
        .unwrap();
        for (path, devno, rem, size) in disks {
            let d = root.join(path);
            std::fs::create_dir_all(d.join("device")).unwrap();
            std::fs::write(d.join("dev"), devno).unwrap();
            std::fs::write(d.join("removable"), rem).unwrap();
            std::fs::write(d.join("size"), size).unwrap();
            let name = d.file_name().unwrap().to_owned();
            std::os::unix::fs::symlink(&d, root.join("sys/block").join(&name)).unwrap();
            std::os::unix::fs::symlink(&d, root.join("sys/dev/block").join(devno)).unwrap();
        }
        std::fs::write(root.join(disks[0].0).join("device/model"), "Card Reader").unwrap();
        let c = candidates(root).unwrap();
        let names: Vec<&str> = c.iter().map(|f| f.disk.as_str()).collect();
        assert_eq!(names, vec!["mmcblk0", "sdb"]);
        let table = render(&c);
        assert!(
            table.contains("/dev/sdb")
                && table.contains("Card Reader")
                && table.contains("31.9 GB"),
            "{table}"
        );
        assert!(table.contains("mmc"), "{table}");
        assert!(render(&[]).contains("no removable disks"));
    }
}

//! The disk layout of one image: pure arithmetic from a board config and the size of
//! the root filesystem's content.

use sha2::{Digest, Sha256};

use crate::board::{BoardConfig, FsType, PartSize, SizeRound};

const MIB: u64 = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedPartition {
    /// 1-based MBR slot.
    pub number: usize,
    pub name: String,
    pub fs: FsType,
    pub label: String,
    pub mbr_type: u8,
    pub bootable: bool,
    pub mount: String,
    pub ext4_features: Option<String>,
    pub start: u64,
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub partitions: Vec<PlannedPartition>,
    pub image_size: u64,
}

/// Space an ext4 filesystem needs for `data_bytes` in `inodes` files, plus `headroom`:
/// data in 4 KiB blocks plus 10% for inode tables, block groups and the 2% reserve,
/// the journal, and 16 MiB of slack, rounded to a MiB.
pub fn ext4_size_for(data_bytes: u64, inodes: u64, headroom: u64) -> u64 {
    let base = data_bytes + inodes * 512;
    let with_meta = base + base / 10;
    let journal = if with_meta > 1 << 30 {
        64 * MIB
    } else {
        32 * MIB
    };
    round_up(with_meta + journal + headroom + 16 * MIB, MIB)
}

pub fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

/// Places the partitions; an `auto` partition gets `auto_size` bytes (and, when the
/// image is rounded up to a power of two, everything up to the end).
pub fn plan(c: &BoardConfig, auto_size: u64) -> Layout {
    let mut parts = Vec::new();
    let mut end = 0u64;
    for (i, p) in c.partitions.iter().enumerate() {
        let start = p.start.get_ref().0;
        let size = match p.size.get_ref() {
            PartSize::Fixed(s) => s.0,
            PartSize::Auto => round_up(auto_size, MIB),
        };
        end = end.max(start + size);
        parts.push(PlannedPartition {
            number: i + 1,
            name: p.name.clone(),
            fs: p.fs,
            label: p.label.get_ref().clone(),
            mbr_type: p.mbr_type,
            bootable: p.bootable,
            mount: p.mount.clone(),
            ext4_features: p.ext4_features.clone(),
            start,
            size,
        });
    }
    let image_size = match c.image.size_round {
        SizeRound::Mib => round_up(end, MIB),
        SizeRound::PowerOfTwo => end.next_power_of_two(),
    };
    if let Some(last) = parts.last_mut() {
        if matches!(
            c.partitions.last().map(|p| *p.size.get_ref()),
            Some(PartSize::Auto)
        ) {
            last.size = image_size - last.start;
        }
    }
    Layout {
        partitions: parts,
        image_size,
    }
}

/// A 16-byte identifier derived from the input hash and a purpose.
pub fn derive_id(input_hash: &str, purpose: &str) -> [u8; 16] {
    let d = Sha256::digest(format!("{input_hash}/{purpose}").as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// A version-4-shaped UUID string derived from the input hash.
pub fn derive_uuid(input_hash: &str, purpose: &str) -> String {
    let mut b = derive_id(input_hash, purpose);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(round: &str) -> BoardConfig {
        let text = format!(
            r#"name = "t"
description = "d"
[image]
size_round = "{round}"
[[partitions]]
name = "boot"
fs = "vfat"
label = "BOOT"
mbr_type = 12
start = "4MiB"
size = "60MiB"
mount = "/boot/firmware"
[[partitions]]
name = "root"
fs = "ext4"
label = "root"
mbr_type = 131
start = "64MiB"
size = "auto"
mount = "/"
[rootfs]
profile = "p"
[boot]
kernel = "k"
"#
        );
        crate::board::parse(&text, "t.toml").unwrap()
    }

    #[test]
    fn mib_rounding_keeps_the_root_size() {
        let l = plan(&board("mib"), 300 * MIB + 5);
        assert_eq!(l.partitions[1].start, 64 * MIB);
        assert_eq!(l.partitions[1].size, 301 * MIB);
        assert_eq!(l.image_size, 365 * MIB);
    }

    #[test]
    fn power_of_two_grows_the_last_partition_to_the_end() {
        let l = plan(&board("power-of-two"), 1000 * MIB);
        assert_eq!(l.image_size, 2048 * MIB);
        assert_eq!(l.partitions[1].start + l.partitions[1].size, l.image_size);
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        assert_eq!(derive_uuid("h", "root"), derive_uuid("h", "root"));
        assert_ne!(derive_uuid("h", "root"), derive_uuid("h", "seed"));
        assert_ne!(derive_uuid("h", "root"), derive_uuid("g", "root"));
        assert_eq!(&derive_uuid("h", "x")[14..15], "4");
    }

    #[test]
    fn ext4_estimate_has_room() {
        let s = ext4_size_for(900 * MIB, 30_000, 256 * MIB);
        assert!(s > 900 * MIB + 256 * MIB && s < 1600 * MIB, "{s}");
        assert_eq!(s % MIB, 0);
    }
}

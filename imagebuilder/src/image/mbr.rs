//! The MBR partition table and raw blobs at byte offsets.

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{bail, Context, Result};

use super::layout::Layout;

/// Writes the MBR for `layout` with `disk_signature` into sector 0 of `image`.
pub fn write_mbr(image: &mut File, layout: &Layout, disk_signature: [u8; 4]) -> Result<()> {
    let mut mbr = mbrman::MBR::new_from(image, 512, disk_signature).context("creating the MBR")?;
    for p in &layout.partitions {
        mbr[p.number] = mbrman::MBRPartitionEntry {
            boot: if p.bootable {
                mbrman::BOOT_ACTIVE
            } else {
                mbrman::BOOT_INACTIVE
            },
            first_chs: mbrman::CHS::empty(),
            sys: p.mbr_type,
            last_chs: mbrman::CHS::empty(),
            starting_lba: u32::try_from(p.start / 512).context("partition start beyond 2 TiB")?,
            sectors: u32::try_from(p.size / 512).context("partition beyond 2 TiB")?,
        };
    }
    mbr.write_into(image).context("writing the MBR")?;
    Ok(())
}

/// Writes `data` at byte `offset`, refusing to pass `max_size`.
pub fn write_blob_at(
    image: &File,
    name: &str,
    offset: u64,
    max_size: u64,
    data: &[u8],
) -> Result<()> {
    if data.len() as u64 > max_size {
        bail!(
            "blob `{name}` is {} bytes, more than the {} the board config allows at {offset}",
            data.len(),
            max_size
        );
    }
    image
        .write_all_at(data, offset)
        .with_context(|| format!("writing blob `{name}` at byte {offset}"))
}

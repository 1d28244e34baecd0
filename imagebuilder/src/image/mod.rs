//! Disk image assembly without mounts or loop devices.
//!
//! The image is a sparse file: ext4 is made from a folder straight into its partition's
//! byte range (`mkfs.ext4 -d -E offset=`), FAT by `mkfs.vfat --offset` and filled with
//! mtools (the tools Debian's and the Pi Foundation's images use), blobs are written at
//! their byte offsets and the MBR is written by code. Every identifier (disk signature, filesystem UUID, hash seed, FAT volume id)
//! is derived from the build's input hash, and every timestamp is the build's epoch,
//! so the same inputs give the same bytes.
//!
//! Layout:
//! - `layout`: pure: partition offsets and sizes, the image size, identifiers.
//! - `tree`: walks a staged folder in sorted order, clamps its timestamps, sizes it.
//! - `ext4`: `mkfs.ext4 -d` into the image and the ctime fix-up for reproducibility.
//! - `fat`: FAT by dosfstools and mtools from a folder, with fixed timestamps.
//! - `mbr`: the partition table and raw blobs at offsets.

pub mod ext4;
pub mod fat;
pub mod layout;
pub mod mbr;
pub mod tree;

//! A FAT boot partition made the way Debian's and the Raspberry Pi Foundation's images
//! make theirs: `mkfs.vfat` (dosfstools) writes the filesystem straight into the
//! partition's byte range of the image (`--offset`, no loop device), then mtools
//! (`mmd`, `mcopy`, reaching it as `IMAGE@@OFFSET`) fills it from a staged folder.
//!
//! Reproducible: `--invariant` fixes mkfs's boot-sector time and serial (the serial
//! then set from the input hash with `-i`); folders are made and files copied in
//! sorted order, a folder at a time, so directory entries never follow the host
//! filesystem's readdir order; `mcopy -m` keeps each file's clamped mtime and
//! SOURCE_DATE_EPOCH gives mtools' folder and creation times.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::build::tools::path_of;
use crate::fatfile::PartitionSpan;

/// What to make: where in the image, its label, serial and FAT type.
pub struct FatSpec<'a> {
    pub image: &'a Path,
    pub span: PartitionSpan,
    pub label: &'a str,
    pub volume_id: u32,
    pub epoch: i64,
    /// FAT32 (MBR types 0x0b/0x0c); otherwise mkfs.vfat picks by size.
    pub fat32: bool,
}

/// Formats the partition and copies `tree` into it.
pub fn make(spec: &FatSpec, tree: &Path) -> Result<()> {
    let span = spec.span;
    if span.offset % 512 != 0 || span.len % 1024 != 0 {
        bail!(
            "FAT partition at byte {} size {}: not sector-aligned",
            span.offset,
            span.len
        );
    }
    let start_sector = span.offset / 512;
    let mut mkfs = Command::new(path_of("mkfs.vfat"));
    if spec.fat32 {
        let cluster = fat32_cluster_size(span.len).with_context(|| {
            format!(
                "{} bytes are too few for FAT32 (the MBR type says FAT32)",
                span.len
            )
        })?;
        mkfs.args(["-F", "32", "-s", &(cluster / 512).to_string()]);
    }
    // -i after --invariant: the serial is ours, the rest of the invariants stay.
    mkfs.args([
        "-n",
        &spec.label.to_ascii_uppercase(),
        "-S",
        "512",
        "--invariant",
    ])
    .args(["-i", &format!("{:08x}", spec.volume_id)])
    .args(["-h", &start_sector.to_string()])
    .args(["--offset", &start_sector.to_string()])
    .arg(spec.image)
    .arg((span.len / 1024).to_string());
    run(&mut mkfs, "mkfs.vfat", "dosfstools")?;

    // Folders first (parents before children), then each folder's files in one mcopy.
    let target = format!("{}@@{}", spec.image.display(), span.offset);
    let mut dirs: Vec<String> = Vec::new();
    let mut files: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for rel in super::tree::walk_sorted(tree)?.iter().skip(1) {
        let src = tree.join(rel);
        let name = rel
            .to_str()
            .with_context(|| format!("{} is not a UTF-8 name", src.display()))?
            .to_string();
        // Symlinks are followed: FAT has none.
        let md = std::fs::metadata(&src).with_context(|| format!("reading {}", src.display()))?;
        if md.is_dir() {
            dirs.push(name);
        } else {
            let parent = rel
                .parent()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            files.entry(parent).or_default().push(src);
        }
    }
    if !dirs.is_empty() {
        let mut mmd = mtools("mmd", &target, spec.epoch);
        mmd.args(dirs.iter().map(|d| format!("::/{d}")));
        run(&mut mmd, "mmd", "mtools")?;
    }
    // Folders in walk order, so the root's entries come first as on a fresh card.
    for dir in std::iter::once(String::new()).chain(dirs.iter().cloned()) {
        let Some(srcs) = files.get(&dir) else {
            continue;
        };
        let mut mcopy = mtools("mcopy", &target, spec.epoch);
        mcopy.arg("-m").args(srcs).arg(if dir.is_empty() {
            "::/".to_string()
        } else {
            format!("::/{dir}/")
        });
        run(&mut mcopy, "mcopy", "mtools")?;
    }
    Ok(())
}

fn mtools(prog: &str, target: &str, epoch: i64) -> Command {
    let mut c = Command::new(path_of(prog));
    // The partition is inside a larger image file: mtools' size check would complain.
    c.env("MTOOLS_SKIP_CHECK", "1")
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .args(["-i", target]);
    c
}

fn run(cmd: &mut Command, what: &str, package: &str) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("running {what} (package {package})"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The largest cluster (4 KiB down to 512 B) that still gives FAT32 its minimum of
/// 65525 clusters, with some margin for the FATs and reserved sectors.
pub fn fat32_cluster_size(len: u64) -> Option<u32> {
    [4096u32, 2048, 1024, 512]
        .into_iter()
        .find(|c| len / u64::from(*c) >= 66_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_tree(root: &Path) {
        for p in [
            "extlinux/extlinux.conf",
            "dtbs/allwinner/a.dtb",
            "dtbs/allwinner/b.dtb",
            "top.txt",
            "config.txt",
        ] {
            let f = root.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(&f, p).unwrap();
        }
        super::super::tree::clamp_and_measure(root, 1_700_000_000).unwrap();
    }

    fn build(dir: &Path, tree: &Path, name: &str) -> PathBuf {
        let img = dir.join(name);
        let f = std::fs::File::create(&img).unwrap();
        f.set_len(70 << 20).unwrap();
        drop(f);
        let spec = FatSpec {
            image: &img,
            span: PartitionSpan {
                offset: 1 << 20,
                len: 64 << 20,
            },
            label: "boot",
            volume_id: 0x1234_5678,
            epoch: 1_700_000_000,
            fat32: true,
        };
        make(&spec, tree).unwrap();
        img
    }

    #[test]
    fn cluster_sizes_keep_fat32_valid() {
        assert_eq!(fat32_cluster_size(508 << 20), Some(4096));
        assert_eq!(fat32_cluster_size(252 << 20), Some(2048));
        assert_eq!(fat32_cluster_size(16 << 20), None);
    }

    #[test]
    fn dosfstools_fat_passes_fsck_reads_back_and_is_reproducible() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("tree");
        fixture_tree(&tree);
        let img = build(d.path(), &tree, "a.img");
        let part = d.path().join("part.img");
        let o = Command::new("dd")
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
        let o = Command::new("fsck.vfat")
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
        // The label, the serial and a nested file, as a reader sees them.
        let span = crate::fatfile::PartitionSpan {
            offset: 1 << 20,
            len: 64 << 20,
        };
        assert_eq!(
            crate::fatfile::read_file(&img, span, "dtbs/allwinner/b.dtb").unwrap(),
            b"dtbs/allwinner/b.dtb"
        );
        let o = Command::new("mdir")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(format!("{}@@{}", img.display(), 1 << 20))
            .arg("::/")
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&o.stdout);
        assert!(listing.contains("is BOOT"), "{listing}");
        assert!(listing.contains("1234-5678"), "{listing}");
        assert!(listing.contains("2023-11-14"), "{listing}");
        // A second build a second later from a copy of the tree: the same bytes.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let tree2 = d.path().join("tree2");
        fixture_tree(&tree2);
        let img2 = build(d.path(), &tree2, "b.img");
        assert!(
            std::fs::read(&img).unwrap() == std::fs::read(&img2).unwrap(),
            "two FATs from the same tree differ"
        );
    }
}

//! ext4 from a folder, written straight into the image at the partition's offset.
//!
//! `mkfs.ext4 -d` copies the tree without mounting anything. For identical output it
//! gets a fixed UUID and directory hash seed and `E2FSPROGS_FAKE_TIME`; the tree's
//! atime/mtime were clamped beforehand, and since mkfs also copies each file's ctime
//! (which user space cannot set), a `debugfs -w` pass then sets every inode's ctime to
//! the epoch. Both tools reach the partition through e2fsprogs' `FILE?offset=N`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

pub struct Ext4Spec<'a> {
    pub image: &'a Path,
    pub offset: u64,
    pub size: u64,
    pub label: &'a str,
    pub uuid: &'a str,
    pub hash_seed: &'a str,
    pub epoch: i64,
    pub features: Option<&'a str>,
}

/// Makes the filesystem from `tree` (whose `paths` came from `tree::walk_sorted`).
pub fn make(spec: &Ext4Spec, tree: &Path, paths: &[PathBuf], work: &Path) -> Result<()> {
    let out = Command::new(crate::build::tools::path_of("mkfs.ext4"))
        .env("E2FSPROGS_FAKE_TIME", spec.epoch.to_string())
        .env("MKE2FS_DEVICE_SECTSIZE", "512")
        .arg("-q")
        .arg("-F")
        .args([
            "-t", "ext4", "-b", "4096", "-m", "2", "-L", spec.label, "-U", spec.uuid,
        ])
        .arg("-E")
        .arg(format!(
            "offset={},hash_seed={},root_owner=0:0",
            spec.offset, spec.hash_seed
        ))
        .args(spec.features.map(|f| vec!["-O", f]).unwrap_or_default())
        .arg("-d")
        .arg(tree)
        .arg(spec.image)
        .arg(format!("{}k", spec.size / 1024))
        .output()
        .context("running mkfs.ext4 (package e2fsprogs)")?;
    if !out.status.success() {
        bail!(
            "mkfs.ext4 -d {} into {} at offset {} failed: {}",
            tree.display(),
            spec.image.display(),
            spec.offset,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    fix_ctimes(spec, paths, work)
}

fn fix_ctimes(spec: &Ext4Spec, paths: &[PathBuf], work: &Path) -> Result<()> {
    let cmds_path = work.join("ctime.debugfs");
    let mut cmds = std::io::BufWriter::new(
        std::fs::File::create(&cmds_path)
            .with_context(|| format!("creating {}", cmds_path.display()))?,
    );
    let stamp = format!("@{}", spec.epoch);
    let mut skipped = 0usize;
    for rel in std::iter::once(Path::new("lost+found")).chain(paths.iter().map(|p| p.as_path())) {
        let s = rel.to_string_lossy();
        // debugfs' command parser splits on blanks and knows double quotes only
        // (backslashes, as in systemd's `\x2d` unit names, are taken literally).
        if s.contains('"') || s.contains('\n') {
            skipped += 1;
            continue;
        }
        writeln!(cmds, "set_inode_field \"/{s}\" ctime {stamp}")
            .context("writing debugfs commands")?;
    }
    cmds.flush().context("writing debugfs commands")?;
    drop(cmds);
    let target = format!("{}?offset={}", spec.image.display(), spec.offset);
    let out = Command::new(crate::build::tools::path_of("debugfs"))
        .env("E2FSPROGS_FAKE_TIME", spec.epoch.to_string())
        .arg("-w")
        .arg("-f")
        .arg(&cmds_path)
        .arg(&target)
        .output()
        .context("running debugfs (package e2fsprogs)")?;
    let err = String::from_utf8_lossy(&out.stderr);
    let real_errors: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
        .collect();
    if !out.status.success() || !real_errors.is_empty() {
        bail!(
            "debugfs setting inode times in {target}: {}",
            real_errors.join("; ")
        );
    }
    if skipped > 0 {
        tracing::warn!(
            "{skipped} paths with double quotes or newlines keep their build-time ctime"
        );
    }
    Ok(())
}

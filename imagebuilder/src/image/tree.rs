//! A staged folder seen as filesystem content: walked in sorted order, its timestamps
//! clamped to the build's epoch, its size counted.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreeStats {
    /// Bytes in 4 KiB blocks, as ext4 will need them.
    pub data_bytes: u64,
    pub inodes: u64,
    /// Paths relative to the root ("" is the root), parents before children, sorted.
    pub paths: Vec<PathBuf>,
}

/// Every entry of `root` (root included): a folder's entries sorted bytewise, then each
/// subfolder's in the same way (parents always before their children).
pub fn walk_sorted(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = vec![PathBuf::new()];
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading folder {}", dir.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("reading folder {}", dir.display()))?;
        names.sort();
        let mut subdirs = Vec::new();
        for n in names {
            let r = rel.join(&n);
            let ft = std::fs::symlink_metadata(root.join(&r))
                .with_context(|| format!("reading {}", root.join(&r).display()))?
                .file_type();
            out.push(r.clone());
            if ft.is_dir() {
                subdirs.push(r);
            }
        }
        // Reverse so the stack pops them in sorted order.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(out)
}

/// Sets every entry's atime and mtime to `min(mtime, epoch)` and counts the tree.
/// (ctime cannot be set from user space: the ext4 step rewrites it in the image.)
pub fn clamp_and_measure(root: &Path, epoch: i64) -> Result<TreeStats> {
    let paths = walk_sorted(root)?;
    let mut stats = TreeStats {
        paths: Vec::new(),
        ..Default::default()
    };
    let mut seen_inodes = std::collections::HashSet::new();
    for rel in &paths {
        let p = root.join(rel);
        let md =
            std::fs::symlink_metadata(&p).with_context(|| format!("reading {}", p.display()))?;
        let t = md.mtime().min(epoch);
        let ts = TimeSpec::new(t, 0);
        utimensat(
            nix::fcntl::AT_FDCWD,
            &p,
            &ts,
            &ts,
            UtimensatFlags::NoFollowSymlink,
        )
        .with_context(|| format!("setting the timestamps of {}", p.display()))?;
        if seen_inodes.insert((md.dev(), md.ino())) {
            stats.inodes += 1;
            if md.is_file() || md.is_dir() || (md.file_type().is_symlink() && md.len() >= 60) {
                stats.data_bytes += md.len().div_ceil(4096).max(1) * 4096;
            }
        }
    }
    stats.paths = paths;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_is_sorted_parents_first_and_times_clamped() {
        let d = tempfile::tempdir().unwrap();
        for p in ["b/z", "b/a", "a", "c/d/e"] {
            let f = d.path().join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(&f, "x").unwrap();
        }
        let s = clamp_and_measure(d.path(), 1_000_000).unwrap();
        let names: Vec<String> = s.paths.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(names, ["", "a", "b", "c", "b/a", "b/z", "c/d", "c/d/e"]);
        assert_eq!(s.inodes, 8);
        let md = std::fs::metadata(d.path().join("b/z")).unwrap();
        assert_eq!(md.mtime(), 1_000_000);
        assert_eq!(md.atime(), 1_000_000);
    }
}

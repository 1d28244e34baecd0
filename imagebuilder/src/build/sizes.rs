//! What fills an image, measured on the staged trees (issue 12: "say what fills the
//! image"): bytes per folder two levels down (three under /usr), the largest installed packages (dpkg's
//! Installed-Size), and the boot partition's total. Printed by the build and kept in the
//! manifest, so a package added to a profile shows up as bytes.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

/// How many folders and packages are listed.
const TOP: usize = 12;

#[derive(Debug, Serialize)]
pub struct Sizes {
    /// Bytes of the regular files in the rootfs (hard links once).
    pub rootfs_bytes: u64,
    /// Bytes of the files on the boot partition.
    pub boot_bytes: u64,
    /// The largest folders two levels down (three under /usr: "/usr/lib/modules"), bytes,
    /// largest first.
    pub top_dirs: Vec<(String, u64)>,
    /// The largest packages by dpkg's Installed-Size, bytes, largest first.
    pub top_packages: Vec<(String, u64)>,
}

impl Sizes {
    /// Human lines for the build log.
    pub fn lines(&self) -> Vec<String> {
        let mib = |b: u64| format!("{:.1}", b as f64 / 1048576.0);
        let mut out = vec![format!(
            "sizes: rootfs files {} MiB, boot partition files {} MiB",
            mib(self.rootfs_bytes),
            mib(self.boot_bytes)
        )];
        out.push(format!(
            "sizes: largest folders: {}",
            self.top_dirs
                .iter()
                .map(|(d, b)| format!("{d} {}", mib(*b)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        out.push(format!(
            "sizes: largest packages: {}",
            self.top_packages
                .iter()
                .map(|(p, b)| format!("{p} {}", mib(*b)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        out
    }
}

/// Measures the staged `rootfs` and `boot` trees.
pub fn measure(rootfs: &Path, boot: &Path) -> Result<Sizes> {
    let mut dirs: BTreeMap<String, u64> = BTreeMap::new();
    let mut seen = HashSet::new();
    let rootfs_bytes = walk(rootfs, rootfs, &mut dirs, &mut seen);
    let boot_bytes = walk(boot, boot, &mut BTreeMap::new(), &mut HashSet::new());
    let mut top_dirs: Vec<(String, u64)> = dirs.into_iter().collect();
    top_dirs.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    top_dirs.truncate(TOP);
    let status = std::fs::read_to_string(rootfs.join("var/lib/dpkg/status")).unwrap_or_default();
    let mut top_packages = installed_sizes(&status);
    top_packages.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    top_packages.truncate(TOP);
    Ok(Sizes {
        rootfs_bytes,
        boot_bytes,
        top_dirs,
        top_packages,
    })
}

/// Sums regular files under `dir`, adding each to its two-level folder in `dirs`.
fn walk(
    root: &Path,
    dir: &Path,
    dirs: &mut BTreeMap<String, u64>,
    seen: &mut HashSet<(u64, u64)>,
) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0;
    for e in rd.flatten() {
        let Ok(md) = e.path().symlink_metadata() else {
            continue;
        };
        if md.is_dir() {
            total += walk(root, &e.path(), dirs, seen);
        } else if md.is_file() && (md.nlink() == 1 || seen.insert((md.dev(), md.ino()))) {
            total += md.len();
            let rel = e.path().strip_prefix(root).map(|r| r.to_path_buf());
            if let Ok(rel) = rel {
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                // /usr one level deeper: "/usr/lib" alone says little.
                let depth = if parts.first().map(String::as_str) == Some("usr") {
                    3
                } else {
                    2
                };
                let key = format!("/{}", parts[..(parts.len() - 1).min(depth)].join("/"));
                *dirs.entry(key).or_default() += md.len();
            }
        }
    }
    total
}

/// (package, bytes) from dpkg status paragraphs that are installed.
fn installed_sizes(status: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for para in status.split("\n\n") {
        let mut name = None;
        let mut size = None;
        let mut installed = false;
        for l in para.lines() {
            if let Some(v) = l.strip_prefix("Package: ") {
                name = Some(v.trim().to_string());
            } else if let Some(v) = l.strip_prefix("Installed-Size: ") {
                size = v.trim().parse::<u64>().ok();
            } else if let Some(v) = l.strip_prefix("Status: ") {
                installed = v.trim().ends_with(" installed");
            }
        }
        if let (Some(n), Some(s), true) = (name, size, installed) {
            out.push((n, s * 1024));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_packages_and_hard_links() {
        let root = std::env::temp_dir().join(format!("armada-sizes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (r, b) = (root.join("r"), root.join("b"));
        std::fs::create_dir_all(r.join("usr/lib/x")).unwrap();
        std::fs::create_dir_all(r.join("var/lib/dpkg")).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(r.join("usr/lib/x/big"), vec![0u8; 3000]).unwrap();
        std::fs::hard_link(r.join("usr/lib/x/big"), r.join("usr/lib/x/link")).unwrap();
        std::fs::write(r.join("usr/small"), vec![0u8; 10]).unwrap();
        std::fs::write(
            r.join("var/lib/dpkg/status"),
            "Package: a\nStatus: install ok installed\nInstalled-Size: 5\n\n\
             Package: b\nStatus: deinstall ok config-files\nInstalled-Size: 900\n\n\
             Package: c\nStatus: install ok installed\nInstalled-Size: 7\n",
        )
        .unwrap();
        std::fs::write(b.join("k"), vec![0u8; 100]).unwrap();
        let s = measure(&r, &b).unwrap();
        let status_len = std::fs::metadata(r.join("var/lib/dpkg/status"))
            .unwrap()
            .len();
        assert_eq!(s.rootfs_bytes, 3000 + 10 + status_len);
        assert_eq!(s.boot_bytes, 100);
        assert_eq!(s.top_dirs[0], ("/usr/lib/x".to_string(), 3000));
        assert!(s.top_dirs.contains(&("/usr".to_string(), 10)));
        assert_eq!(
            s.top_packages,
            vec![("c".to_string(), 7 * 1024), ("a".to_string(), 5 * 1024)]
        );
        assert_eq!(s.lines().len(), 3);
        std::fs::remove_dir_all(&root).unwrap();
    }
}

//! Finding each container's cgroup without asking Docker for it: walk the hierarchy
//! once for folders named like a container (`<64 hex>` with the cgroupfs driver,
//! `docker-<64 hex>.scope` with systemd), wherever `--cgroup-parent` put them. The
//! result is cached by the caller; afterwards only the root and a few folders (those
//! holding containers, and those right under the root) are listed each cycle, to notice
//! containers starting and stopping.

use std::fs;
use std::os::unix::fs::DirEntryExt;
use std::path::{Path, PathBuf};

use super::detect::{Layout, Version};

/// Bounds of one walk: deep enough for `kubepods/burstable/pod…/…` style nesting.
const MAX_DEPTH: usize = 8;
const MAX_DIRS: usize = 20_000;

/// A container's cgroup, relative to the hierarchy root.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    pub id: String,
    pub rel: PathBuf,
}

/// The hierarchy to walk: v2's single tree, or v1's cpuacct (always on) tree.
pub fn walk_root(layout: &Layout) -> PathBuf {
    match layout.version {
        Version::V2 => layout.base.clone(),
        Version::V1 => ["cpuacct", "cpu", "pids", "memory"]
            .iter()
            .map(|c| layout.base.join(c))
            .find(|p| p.is_dir())
            .unwrap_or_else(|| layout.base.join("cpuacct")),
    }
}

/// The container id a cgroup folder name stands for, if any.
pub fn container_id(name: &str) -> Option<&str> {
    let id = name
        .strip_prefix("docker-")
        .and_then(|n| n.strip_suffix(".scope"))
        .unwrap_or(name);
    (id.len() == 64 && id.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))).then_some(id)
}

/// Every container-like cgroup under `top`, bounded in depth and count.
pub fn find_all(top: &Path) -> Vec<Found> {
    let mut found = Vec::new();
    let mut stack: Vec<(PathBuf, usize)> = vec![(PathBuf::new(), 0)];
    let mut seen = 0usize;
    while let Some((rel, depth)) = stack.pop() {
        seen += 1;
        if seen > MAX_DIRS {
            break;
        }
        let Ok(entries) = fs::read_dir(top.join(&rel)) else {
            continue;
        };
        for e in entries.filter_map(Result::ok) {
            if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let child = rel.join(name);
            if let Some(id) = container_id(name) {
                found.push(Found {
                    id: id.to_string(),
                    rel: child,
                });
            } else if depth + 1 < MAX_DEPTH {
                stack.push((child, depth + 1));
            }
        }
    }
    found.sort_by(|a, b| a.id.cmp(&b.id));
    found
}

/// Container ids directly inside `dir` (one `getdents`), each with its folder's inode
/// number, appended to `out`. The inode comes with the directory entry (no `stat`):
/// kernfs gives every cgroup its own, so a changed one under the same name is a new
/// cgroup (the container restarted).
pub fn ids_in(dir: &Path, out: &mut Vec<(String, u64)>) -> std::io::Result<()> {
    for e in fs::read_dir(dir)?.filter_map(Result::ok) {
        if let Some(id) = e.file_name().to_str().and_then(container_id) {
            out.push((id.to_string(), e.ino()));
        }
    }
    Ok(())
}

/// Names of the folders directly inside `dir` that are not containers (one `getdents`),
/// appended to `out`.
pub fn dirs_in(dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    for e in fs::read_dir(dir)?.filter_map(Result::ok) {
        if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        if let Some(name) = e.file_name().to_str() {
            if container_id(name).is_none() {
                out.push(name.to_string());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";

    #[test]
    fn both_driver_namings_are_recognised() {
        assert_eq!(container_id(ID), Some(ID));
        assert_eq!(container_id(&format!("docker-{ID}.scope")), Some(ID));
        assert_eq!(container_id("system.slice"), None);
        assert_eq!(container_id(&ID[1..]), None);
        assert_eq!(container_id(&ID.to_uppercase()), None);
    }
}

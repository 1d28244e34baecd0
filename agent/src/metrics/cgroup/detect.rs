//! Which cgroup version the host runs, and whether the memory controller is enabled.
//!
//! v2 when `/sys/fs/cgroup/cgroup.controllers` exists; v1 (one folder per controller)
//! otherwise, including "hybrid" hosts that also mount an empty v2 tree at
//! `/sys/fs/cgroup/unified`: their controllers, and Docker, live in v1.

use std::path::{Path, PathBuf};

use crate::metrics::pseudofile::{fields, lines, parse_u64, PseudoFile, ReadError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    pub fn number(self) -> u8 {
        match self {
            Version::V1 => 1,
            Version::V2 => 2,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub version: Version,
    /// `root/sys/fs/cgroup`.
    pub base: PathBuf,
    /// False when the kernel has the memory controller off (a Pi kernel without
    /// `cgroup_enable=memory`): every container would read zero memory.
    pub memory_enabled: bool,
}

pub fn detect(root: &Path, file: &mut PseudoFile) -> Result<Layout, ReadError> {
    let base = root.join("sys/fs/cgroup");
    match file.read_in(&base, "cgroup.controllers") {
        Ok(bytes) => {
            let memory_enabled = fields(bytes).any(|c| c == b"memory");
            return Ok(Layout {
                version: Version::V2,
                base,
                memory_enabled,
            });
        }
        Err(e) if e.is_missing() => {}
        Err(e) => return Err(e),
    }
    if !base.join("cpuacct").is_dir() && !base.join("memory").is_dir() {
        return Err(ReadError::Io {
            path: base,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no cgroup v1 or v2 hierarchy",
            ),
        });
    }
    let bytes = file.read_in(root, "proc/cgroups")?;
    let memory_enabled = memory_enabled_v1(bytes) && base.join("memory").is_dir();
    Ok(Layout {
        version: Version::V1,
        base,
        memory_enabled,
    })
}

/// The `enabled` column of the `memory` row of `/proc/cgroups`.
pub fn memory_enabled_v1(proc_cgroups: &[u8]) -> bool {
    lines(proc_cgroups).any(|line| {
        let mut f = fields(line);
        f.next() == Some(b"memory") && f.nth(2).and_then(parse_u64) == Some(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_column_of_proc_cgroups() {
        let on = b"#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t1\t1\t1\nmemory\t4\t28\t1\n";
        let off = b"#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t1\t1\t1\nmemory\t0\t1\t0\n";
        assert!(memory_enabled_v1(on));
        assert!(!memory_enabled_v1(off));
        assert!(!memory_enabled_v1(b"cpu 1 1 1\n"));
    }
}

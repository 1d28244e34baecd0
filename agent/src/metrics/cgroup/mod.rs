//! Per-container resource usage read straight from cgroup files, v1 and v2, whichever
//! the host runs, and for both Docker cgroup drivers (cgroupfs: `<parent>/<id>`;
//! systemd: `<parent>.slice/docker-<id>.scope`).
//!
//! Layout:
//! - `detect`: which version, and whether the memory controller is on at all.
//! - `discover`: where each container's cgroup is (found by walking once, then cached).
//! - `v1`, `v2`: one container's CPU, memory, IO and pids from that version's files.

pub mod detect;
pub mod discover;
pub mod v1;
pub mod v2;

use std::path::{Path, PathBuf};

use protocol::snapshot::{ContainerCpu, ContainerIo, ContainerMemory, ContainerPids, Pressure};

use super::pseudofile::{lines, parse_u64, trim, PseudoFile, ReadError};

pub use detect::{detect, Layout, Version};

/// Where one container's cgroup files are: one folder per v1 controller, or the one
/// v2 folder.
#[derive(Clone, Debug, PartialEq)]
pub enum ContainerDirs {
    V1(V1Dirs),
    V2 { dir: PathBuf },
}

#[derive(Clone, Debug, PartialEq)]
pub struct V1Dirs {
    pub cpu: PathBuf,
    pub cpuacct: PathBuf,
    pub memory: PathBuf,
    pub blkio: PathBuf,
    pub pids: PathBuf,
}

impl ContainerDirs {
    /// The folders of the cgroup at `rel` (relative to each hierarchy's root).
    pub fn at(layout: &Layout, rel: &Path) -> ContainerDirs {
        match layout.version {
            Version::V1 => {
                let c = |controller: &str| layout.base.join(controller).join(rel);
                ContainerDirs::V1(V1Dirs {
                    cpu: c("cpu"),
                    cpuacct: c("cpuacct"),
                    memory: c("memory"),
                    blkio: c("blkio"),
                    pids: c("pids"),
                })
            }
            Version::V2 => ContainerDirs::V2 {
                dir: layout.base.join(rel),
            },
        }
    }

    /// The folder whose `cgroup.procs` lists the container's processes.
    pub fn procs_dir(&self) -> &Path {
        match self {
            ContainerDirs::V1(d) => &d.cpuacct,
            ContainerDirs::V2 { dir } => dir,
        }
    }
}

/// What one cycle read of a container's cgroup.
#[derive(Debug, Default, PartialEq)]
pub struct Usage {
    pub cpu: Option<ContainerCpu>,
    pub memory: Option<ContainerMemory>,
    pub io: Option<ContainerIo>,
    pub pids: Option<ContainerPids>,
    /// cgroup v2 PSI (`cpu.pressure`, `memory.pressure`, `io.pressure`); empty on v1.
    pub pressure: Vec<Pressure>,
}

/// A container's settings that change only with `docker update`: CPU quota/period,
/// memory limit and pids limit. Reading them every cycle was 4 of 15 files per
/// container (v1); they are read when the container is first seen and then every
/// [`LIMITS_EVERY`] cycles, and reported from here in between.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Limits {
    pub cpus: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub pids_max: Option<u64>,
}

/// Cycles between two reads of a container's [`Limits`]: with the default 10 s
/// interval a `docker update` shows within about 2 minutes.
pub const LIMITS_EVERY: u64 = 12;

/// The container's cgroup is gone (it stopped between the list and the read).
#[derive(Debug)]
pub struct Gone;

/// Reads a container's usage. `memory_enabled` false skips memory (it would read 0).
/// `refresh_limits` reads the [`Limits`] files into `limits`; otherwise the values
/// there are reported.
pub fn read(
    dirs: &ContainerDirs,
    file: &mut PseudoFile,
    ticks_per_second: f64,
    memory_enabled: bool,
    limits: &mut Limits,
    refresh_limits: bool,
    warn: &mut dyn FnMut(ReadError),
) -> Result<Usage, Gone> {
    let mut usage = match dirs {
        ContainerDirs::V1(d) => v1::read(d, file, ticks_per_second, memory_enabled, warn)?,
        ContainerDirs::V2 { dir } => v2::read(dir, file, memory_enabled, warn)?,
    };
    if refresh_limits {
        *limits = match dirs {
            ContainerDirs::V1(d) => v1::read_limits(d, file),
            ContainerDirs::V2 { dir } => v2::read_limits(dir, file),
        };
    }
    if let Some(cpu) = &mut usage.cpu {
        cpu.limit_cpus = limits.cpus;
    }
    if let Some(m) = &mut usage.memory {
        m.limit_bytes = limits.memory_bytes;
    }
    if let Some(p) = &mut usage.pids {
        p.max = limits.pids_max;
    }
    Ok(usage)
}

/// The first process id in `dir/cgroup.procs`, for the container's network namespace.
/// The file has a record per process, but only the first is wanted, and the first
/// read of a seq_file always holds whole records: one read is enough.
pub fn first_pid(dir: &Path, file: &mut PseudoFile) -> Result<Option<u32>, ReadError> {
    let bytes = file.read_record(dir, "cgroup.procs")?;
    Ok(lines(bytes)
        .find_map(|l| parse_u64(trim(l)))
        .and_then(|p| u32::try_from(p).ok()))
}

/// Turns a per-file result into a value, reporting faults; a missing file of a
/// container that exists is reported too (controller off, old kernel).
/// Files whose absence only means "the kernel has no such counter" use [`ok_or_absent`].
fn ok_or_warn<T>(r: Result<T, ReadError>, warn: &mut dyn FnMut(ReadError)) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            warn(e);
            None
        }
    }
}

/// Like [`ok_or_warn`], but a missing file is simply absent: an optional controller
/// (pids) or a file newer kernels added (`memory.events`, PSI) is not a fault.
fn ok_or_absent<T>(r: Result<T, ReadError>, warn: &mut dyn FnMut(ReadError)) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) if e.is_missing() => None,
        Err(e) => {
            warn(e);
            None
        }
    }
}

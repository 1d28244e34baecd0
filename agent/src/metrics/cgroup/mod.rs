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
    /// v1 `cpu.stat` as last read (`None`: not read yet, or absent: no CFS bandwidth
    /// control). Its counters (periods, throttled periods and time) move only while a
    /// CFS quota is set: without one the file is read with the limits, not every cycle.
    pub throttling: Option<Throttling>,
}

/// v1 `cpu.stat`: CFS bandwidth periods, throttled periods, throttled time (ns).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Throttling {
    pub periods: Option<u64>,
    pub throttled_periods: Option<u64>,
    pub throttled_ns: Option<u64>,
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
        ContainerDirs::V1(d) => {
            // With a quota (as last read) the throttling counters move: every cycle.
            let throttling = (refresh_limits || limits.cpus.is_some()).then_some(&mut *limits);
            v1::read(d, file, ticks_per_second, memory_enabled, throttling, warn)?
        }
        ContainerDirs::V2 { dir } => v2::read(dir, file, memory_enabled, warn)?,
    };
    if refresh_limits {
        let throttling = limits.throttling.take();
        *limits = match dirs {
            ContainerDirs::V1(d) => v1::read_limits(d, file),
            ContainerDirs::V2 { dir } => v2::read_limits(dir, file),
        };
        limits.throttling = throttling;
    }
    if let Some(cpu) = &mut usage.cpu {
        cpu.limit_cpus = limits.cpus;
        if let ContainerDirs::V1(_) = dirs {
            let t = limits.throttling.unwrap_or_default();
            cpu.periods = t.periods;
            cpu.throttled_periods = t.throttled_periods;
            cpu.throttled_seconds = t.throttled_ns.map(|ns| ns as f64 / 1e9);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// v1 `cpu.stat` (CFS throttling) is read every cycle only while a quota is set; with
    /// none its counters cannot move, and it is read with the limits, its last values
    /// reported in between. Absent (no CFS bandwidth control) stays absent.
    #[test]
    fn v1_throttling_is_read_every_cycle_only_under_a_quota() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let dirs = ContainerDirs::V1(V1Dirs {
            cpu: d.to_path_buf(),
            cpuacct: d.to_path_buf(),
            memory: d.to_path_buf(),
            blkio: d.to_path_buf(),
            pids: d.to_path_buf(),
        });
        let put = |name: &str, text: &str| std::fs::write(d.join(name), text).unwrap();
        put("cpuacct.usage", "1000\n");
        put("cpuacct.stat", "user 1\nsystem 1\n");
        put("cpu.cfs_period_us", "100000\n");
        put("cpu.cfs_quota_us", "-1\n");
        put("blkio.throttle.io_service_bytes", "Total 0\n");
        put("blkio.throttle.io_serviced", "Total 0\n");
        put("pids.current", "1\n");
        let stat = |periods: u64| {
            format!("nr_periods {periods}\nnr_throttled 1\nthrottled_time 2000000000\n")
        };
        put("cpu.stat", &stat(5));
        let mut file = PseudoFile::new();
        let mut limits = Limits::default();
        let mut periods = Vec::new();
        for cycle in 0..=LIMITS_EVERY * 2 {
            if cycle == 1 {
                put("cpu.stat", &stat(9));
            }
            if cycle == LIMITS_EVERY + 2 {
                put("cpu.stat", &stat(30));
            }
            if cycle == LIMITS_EVERY + 3 {
                put("cpu.stat", &stat(31));
            }
            if cycle == LIMITS_EVERY - 1 {
                put("cpu.cfs_quota_us", "50000\n");
            }
            let refresh = cycle % LIMITS_EVERY == 0;
            let u = read(
                &dirs,
                &mut file,
                100.0,
                false,
                &mut limits,
                refresh,
                &mut |e| panic!("{e}"),
            )
            .unwrap();
            let cpu = u.cpu.unwrap();
            periods.push(cpu.periods);
            if cycle == 0 {
                assert_eq!(cpu.throttled_periods, Some(1));
                assert_eq!(cpu.throttled_seconds, Some(2.0));
                assert_eq!(cpu.limit_cpus, None);
            }
        }
        let at = |c: u64| periods[usize::try_from(c).unwrap()];
        // No quota: read at cycle 0 only until the next limits read.
        assert!((0..LIMITS_EVERY).all(|c| at(c) == Some(5)), "{periods:?}");
        // That read finds the quota (set meanwhile) and cpu.stat's new value; from then
        // on every cycle reads it.
        assert_eq!(at(LIMITS_EVERY), Some(9));
        assert_eq!(at(LIMITS_EVERY + 2), Some(30));
        assert_eq!(at(LIMITS_EVERY + 3), Some(31));
        assert_eq!(limits.cpus, Some(0.5));

        // No cpu.stat at all (no CFS bandwidth control): absent, never zero.
        std::fs::remove_file(d.join("cpu.stat")).unwrap();
        let mut file = PseudoFile::new();
        let mut limits = Limits::default();
        let u = read(
            &dirs,
            &mut file,
            100.0,
            false,
            &mut limits,
            true,
            &mut |e| panic!("{e}"),
        )
        .unwrap();
        let cpu = u.cpu.unwrap();
        assert_eq!((cpu.periods, cpu.throttled_seconds), (None, None));
    }
}

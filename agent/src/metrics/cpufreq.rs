//! Current CPU frequency per core: `/sys/devices/system/cpu/cpuN/cpufreq/scaling_cur_freq`
//! (kHz). Absent on VMs and on kernels without a cpufreq driver.

use std::fs;
use std::path::{Path, PathBuf};

use protocol::snapshot::CpuFrequency;

use super::pseudofile::{parse_u64, trim, PseudoFile, ReadError};

/// Cores with a cpufreq folder, in core order.
pub fn discover(root: &Path) -> Vec<(u32, PathBuf)> {
    let base = root.join("sys/devices/system/cpu");
    let Ok(entries) = fs::read_dir(&base) else {
        return Vec::new();
    };
    let mut cpus: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let n: u32 = e.file_name().to_str()?.strip_prefix("cpu")?.parse().ok()?;
            let dir = e.path().join("cpufreq");
            dir.join("scaling_cur_freq").exists().then_some((n, dir))
        })
        .collect();
    cpus.sort_by_key(|(n, _)| *n);
    cpus
}

/// Reads every core's frequency into `out`; returns false when a core vanished.
pub fn read(
    cpus: &[(u32, PathBuf)],
    file: &mut PseudoFile,
    out: &mut Vec<CpuFrequency>,
    warn: &mut dyn FnMut(ReadError),
) -> bool {
    out.clear();
    let mut intact = true;
    for (cpu, dir) in cpus {
        match file.read_in(dir, "scaling_cur_freq") {
            Ok(bytes) => match parse_u64(trim(bytes)) {
                Some(khz) => out.push(CpuFrequency {
                    cpu: *cpu,
                    hertz: khz * 1000,
                }),
                None => warn(ReadError::parse(file.last_path(), "expected kHz")),
            },
            Err(e) if e.is_missing() => intact = false,
            Err(e) => warn(e),
        }
    }
    intact
}

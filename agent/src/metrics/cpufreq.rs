//! CPU frequency per core: `/sys/devices/system/cpu/cpuN/cpufreq/scaling_cur_freq` (kHz),
//! with the hardware maximum (`cpuinfo_max_freq`) and the cap in force
//! (`scaling_max_freq`): on a Pi with the mainline kernel, where the firmware's
//! "frequency capped" bit cannot be read, a cap below the maximum shows it. Absent on
//! VMs and on kernels without a cpufreq driver.

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
        match file.read_record(dir, "scaling_cur_freq") {
            Ok(bytes) => match parse_u64(trim(bytes)).and_then(khz_to_hertz) {
                Some(hertz) => {
                    let mut khz = |name: &str| {
                        file.read_u64(dir, name)
                            .ok()
                            .flatten()
                            .and_then(khz_to_hertz)
                    };
                    out.push(CpuFrequency {
                        cpu: *cpu,
                        hertz,
                        max_hertz: khz("cpuinfo_max_freq"),
                        scaling_max_hertz: khz("scaling_max_freq"),
                    })
                }
                None => warn(ReadError::parse(file.last_path(), "expected kHz")),
            },
            Err(e) if e.is_missing() => intact = false,
            Err(e) => warn(e),
        }
    }
    intact
}

fn khz_to_hertz(khz: u64) -> Option<u64> {
    khz.checked_mul(1000)
}

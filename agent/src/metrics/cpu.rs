//! `/proc/stat`: CPU time per mode (all CPUs and each core) and the kernel's counters
//! kept in the same file (boot time, context switches, forks, runnable and blocked
//! tasks).

use std::path::Path;

use protocol::snapshot::CpuTimes;

use super::pseudofile::{fields, lines, parse_u64, PseudoFile, ReadError};

/// The non-CPU lines of `/proc/stat`.
#[derive(Debug, Default, PartialEq)]
pub struct KernelCounters {
    pub boot_time_seconds: Option<u64>,
    pub context_switches_total: Option<u64>,
    pub forks_total: Option<u64>,
    pub procs_running: Option<u64>,
    pub procs_blocked: Option<u64>,
}

/// Reads `root/proc/stat` into `cpus` (cleared first; total line first).
pub fn collect(
    root: &Path,
    file: &mut PseudoFile,
    ticks_per_second: f64,
    cpus: &mut Vec<CpuTimes>,
) -> Result<KernelCounters, ReadError> {
    let bytes = file.read_record(root, "proc/stat")?;
    let counters = parse(bytes, ticks_per_second, cpus);
    if cpus.is_empty() {
        return Err(ReadError::parse(file.last_path(), "no cpu lines"));
    }
    Ok(counters)
}

/// Parses the text of `/proc/stat`; times are converted from USER_HZ ticks to seconds.
pub fn parse(text: &[u8], ticks_per_second: f64, cpus: &mut Vec<CpuTimes>) -> KernelCounters {
    cpus.clear();
    let mut k = KernelCounters::default();
    for line in lines(text) {
        let mut f = fields(line);
        let Some(key) = f.next() else { continue };
        if let Some(which) = key.strip_prefix(b"cpu") {
            let cpu = if which.is_empty() {
                None
            } else {
                match parse_u64(which).and_then(|n| u32::try_from(n).ok()) {
                    Some(n) => Some(n),
                    None => continue,
                }
            };
            // user nice system idle iowait irq softirq steal (guest time is inside user)
            let mut t = [0u64; 8];
            for (slot, v) in t.iter_mut().zip(&mut f) {
                *slot = parse_u64(v).unwrap_or(0);
            }
            let s = |i: usize| t[i] as f64 / ticks_per_second;
            cpus.push(CpuTimes {
                cpu,
                user: s(0),
                nice: s(1),
                system: s(2),
                idle: s(3),
                iowait: s(4),
                irq: s(5),
                softirq: s(6),
                steal: s(7),
            });
            continue;
        }
        let value = f.next().and_then(parse_u64);
        match key {
            b"btime" => k.boot_time_seconds = value,
            b"ctxt" => k.context_switches_total = value,
            b"processes" => k.forks_total = value,
            b"procs_running" => k.procs_running = value,
            b"procs_blocked" => k.procs_blocked = value,
            _ => {}
        }
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_total_and_cores_in_seconds() {
        let text = b"cpu  200 10 100 5000 30 0 4 1 0 0\ncpu0 100 5 50 2500 15 0 2 0 0 0\ncpu1 100 5 50 2500 15 0 2 1 0 0\nintr 1 2 3\nctxt 999\nbtime 1700000000\nprocesses 4242\nprocs_running 3\nprocs_blocked 1\n";
        let mut cpus = Vec::new();
        let k = parse(text, 100.0, &mut cpus);
        assert_eq!(cpus.len(), 3);
        assert_eq!(cpus[0].cpu, None);
        assert_eq!(cpus[0].user, 2.0);
        assert_eq!(cpus[0].idle, 50.0);
        assert_eq!(cpus[2].cpu, Some(1));
        assert_eq!(cpus[2].steal, 0.01);
        assert_eq!(k.boot_time_seconds, Some(1_700_000_000));
        assert_eq!(k.context_switches_total, Some(999));
        assert_eq!(k.forks_total, Some(4242));
        assert_eq!(k.procs_running, Some(3));
        assert_eq!(k.procs_blocked, Some(1));
    }
}

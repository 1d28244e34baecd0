//! One container's usage from its cgroup v2 folder: `cpu.stat` (usage/user/system µs,
//! periods, throttling), `cpu.max`, `memory.current`, `memory.max`, `memory.stat`
//! (anon, file, inactive_file), `memory.swap.current`, `memory.events` (oom_kill),
//! `io.stat`, `pids.*`, and PSI (`cpu.pressure`, `memory.pressure`, `io.pressure`).
//! Counters the kernel lacks (throttling without the cpu controller, oom_kill before
//! 4.13, pids without its controller, PSI without CONFIG_PSI) are absent, not zero.

use std::path::Path;

use protocol::snapshot::{ContainerCpu, ContainerIo, ContainerMemory, ContainerPids};

use super::{ok_or_absent, ok_or_warn, Gone, Limits, Usage};
use crate::metrics::pressure;
use crate::metrics::pseudofile::{
    fields, keyed_u64, keyed_u64s, lines, parse_u64, PseudoFile, ReadError,
};

pub fn read(
    dir: &Path,
    file: &mut PseudoFile,
    memory_enabled: bool,
    warn: &mut dyn FnMut(ReadError),
) -> Result<Usage, Gone> {
    let mut out = Usage::default();
    match file.read_record(dir, "cpu.stat") {
        Ok(b) => out.cpu = Some(parse_cpu_stat(b)),
        Err(e) if e.is_missing() => {
            if !dir.is_dir() {
                return Err(Gone);
            }
            warn(e)
        }
        Err(e) => warn(e),
    }
    if memory_enabled {
        out.memory = read_memory(dir, file, warn);
    }
    if let Some(b) = ok_or_warn(file.read_record(dir, "io.stat"), warn) {
        out.io = Some(parse_io_stat(b));
    }
    if let Some(current) = ok_or_absent(file.read_u64(dir, "pids.current"), warn).flatten() {
        out.pids = Some(ContainerPids { current, max: None });
    }
    for resource in pressure::RESOURCES {
        let name = match resource {
            "cpu" => "cpu.pressure",
            "memory" => "memory.pressure",
            _ => "io.pressure",
        };
        match file.read_record(dir, name) {
            Ok(b) => out.pressure.extend(pressure::parse(resource, b)),
            // No CONFIG_PSI, or psi=0 (EOPNOTSUPP): absent, not a fault.
            Err(e) if e.is_missing() || e.is_unsupported() => {}
            Err(e) => warn(e),
        }
    }
    Ok(out)
}

fn read_memory(
    dir: &Path,
    file: &mut PseudoFile,
    warn: &mut dyn FnMut(ReadError),
) -> Option<ContainerMemory> {
    let current = ok_or_warn(file.read_u64(dir, "memory.current"), warn)??;
    let stat = ok_or_warn(file.read_record(dir, "memory.stat"), warn)?;
    let mut m = parse_memory_stat(stat, current);
    m.swap_bytes = file.read_u64(dir, "memory.swap.current").ok().flatten();
    if let Some(b) = ok_or_absent(file.read_record(dir, "memory.events"), warn) {
        m.oom_kills = keyed_u64(b, b"oom_kill");
    }
    Some(m)
}

/// The files that change only with `docker update` (see [`Limits`]); an unreadable
/// one (`max`, or no such controller) is an absent limit.
pub fn read_limits(dir: &Path, file: &mut PseudoFile) -> Limits {
    Limits {
        cpus: file
            .read_record(dir, "cpu.max")
            .ok()
            .and_then(parse_cpu_max),
        memory_bytes: file.read_u64(dir, "memory.max").ok().flatten(),
        pids_max: file.read_u64(dir, "pids.max").ok().flatten(),
        throttling: None,
    }
}

/// `cpu.stat`: usage lines are always there; the `nr_*`/`throttled_usec` lines only
/// when the cgroup's cpu controller is on.
pub fn parse_cpu_stat(b: &[u8]) -> ContainerCpu {
    let [usage, user, system, periods, throttled, throttled_us] = keyed_u64s(
        b,
        [
            b"usage_usec",
            b"user_usec",
            b"system_usec",
            b"nr_periods",
            b"nr_throttled",
            b"throttled_usec",
        ],
    );
    let s = |v: Option<u64>| v.map(|v| v as f64 / 1e6);
    ContainerCpu {
        usage_seconds: s(usage).unwrap_or(0.0),
        user_seconds: s(user).unwrap_or(0.0),
        system_seconds: s(system).unwrap_or(0.0),
        periods,
        throttled_periods: throttled,
        throttled_seconds: s(throttled_us),
        limit_cpus: None,
    }
}

/// `cpu.max` is `<quota|max> <period>`.
pub fn parse_cpu_max(b: &[u8]) -> Option<f64> {
    let mut f = fields(b);
    let quota = parse_u64(f.next()?)?;
    let period = parse_u64(f.next()?).filter(|&p| p > 0)?;
    Some(quota as f64 / period as f64)
}

/// Memory from `memory.stat` and `memory.current`; working set = current − inactive_file.
pub fn parse_memory_stat(stat: &[u8], current: u64) -> ContainerMemory {
    let [inactive_file, anon, file] = keyed_u64s(stat, [b"inactive_file", b"anon", b"file"]);
    let inactive_file = inactive_file.unwrap_or(0);
    ContainerMemory {
        usage_bytes: current,
        working_set_bytes: current.saturating_sub(inactive_file),
        rss_bytes: anon,
        cache_bytes: file,
        swap_bytes: None,
        limit_bytes: None,
        oom_kills: None,
    }
}

/// Sums `rbytes wbytes rios wios` over every device line of `io.stat`.
pub fn parse_io_stat(b: &[u8]) -> ContainerIo {
    let mut io = ContainerIo::default();
    for line in lines(b) {
        for kv in fields(line).skip(1) {
            let Some(eq) = kv.iter().position(|&c| c == b'=') else {
                continue;
            };
            let v = parse_u64(&kv[eq + 1..]).unwrap_or(0);
            // Sums over devices saturate instead of wrapping on a lying file.
            let slot = match &kv[..eq] {
                b"rbytes" => &mut io.read_bytes,
                b"wbytes" => &mut io.written_bytes,
                b"rios" => &mut io.reads,
                b"wios" => &mut io.writes,
                _ => continue,
            };
            *slot = slot.saturating_add(v);
        }
    }
    io
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_quota_and_unlimited() {
        assert_eq!(parse_cpu_max(b"max 100000\n"), None);
        assert_eq!(parse_cpu_max(b"50000 100000\n"), Some(0.5));
    }

    #[test]
    fn io_stat_sums_devices() {
        let io = parse_io_stat(b"8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n179:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0\n");
        assert_eq!(
            io,
            ContainerIo {
                read_bytes: 101,
                written_bytes: 202,
                reads: 4,
                writes: 6
            }
        );
    }
}

//! One container's usage from its cgroup v2 folder: `cpu.stat` (usage/user/system µs,
//! periods, throttling), `cpu.max`, `memory.current`, `memory.max`, `memory.stat`
//! (anon, file, inactive_file), `memory.events` (oom_kill), `io.stat`, `pids.*`.

use std::path::Path;

use protocol::snapshot::{ContainerCpu, ContainerIo, ContainerMemory, ContainerPids};

use super::{ok_or_warn, Gone, Usage};
use crate::metrics::pseudofile::{fields, keyed_u64, lines, parse_u64, PseudoFile, ReadError};

pub fn read(
    dir: &Path,
    file: &mut PseudoFile,
    memory_enabled: bool,
    warn: &mut dyn FnMut(ReadError),
) -> Result<Usage, Gone> {
    let mut out = Usage::default();
    match file.read_in(dir, "cpu.stat") {
        Ok(b) => out.cpu = Some(parse_cpu_stat(b)),
        Err(e) if e.is_missing() => {
            if !dir.is_dir() {
                return Err(Gone);
            }
            warn(e)
        }
        Err(e) => warn(e),
    }
    if let Some(cpu) = &mut out.cpu {
        if let Ok(b) = file.read_in(dir, "cpu.max") {
            cpu.limit_cpus = parse_cpu_max(b);
        }
    }
    if memory_enabled {
        out.memory = read_memory(dir, file, warn);
    }
    if let Some(b) = ok_or_warn(file.read_in(dir, "io.stat"), warn) {
        out.io = Some(parse_io_stat(b));
    }
    if let Some(current) = ok_or_warn(file.read_u64(dir, "pids.current"), warn).flatten() {
        let max = file.read_u64(dir, "pids.max").ok().flatten();
        out.pids = Some(ContainerPids { current, max });
    }
    Ok(out)
}

fn read_memory(
    dir: &Path,
    file: &mut PseudoFile,
    warn: &mut dyn FnMut(ReadError),
) -> Option<ContainerMemory> {
    let current = ok_or_warn(file.read_u64(dir, "memory.current"), warn)??;
    let limit = file.read_u64(dir, "memory.max").ok().flatten();
    let stat = ok_or_warn(file.read_in(dir, "memory.stat"), warn)?;
    let mut m = parse_memory_stat(stat, current);
    m.limit_bytes = limit;
    if let Some(b) = ok_or_warn(file.read_in(dir, "memory.events"), warn) {
        m.oom_kills = keyed_u64(b, b"oom_kill").unwrap_or(0);
    }
    Some(m)
}

pub fn parse_cpu_stat(b: &[u8]) -> ContainerCpu {
    let us = |k: &[u8]| keyed_u64(b, k).unwrap_or(0) as f64 / 1e6;
    ContainerCpu {
        usage_seconds: us(b"usage_usec"),
        user_seconds: us(b"user_usec"),
        system_seconds: us(b"system_usec"),
        periods: keyed_u64(b, b"nr_periods").unwrap_or(0),
        throttled_periods: keyed_u64(b, b"nr_throttled").unwrap_or(0),
        throttled_seconds: us(b"throttled_usec"),
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
    let inactive_file = keyed_u64(stat, b"inactive_file").unwrap_or(0);
    ContainerMemory {
        usage_bytes: current,
        working_set_bytes: current.saturating_sub(inactive_file),
        rss_bytes: keyed_u64(stat, b"anon").unwrap_or(0),
        cache_bytes: keyed_u64(stat, b"file").unwrap_or(0),
        limit_bytes: None,
        oom_kills: 0,
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
            match &kv[..eq] {
                b"rbytes" => io.read_bytes += v,
                b"wbytes" => io.written_bytes += v,
                b"rios" => io.reads += v,
                b"wios" => io.writes += v,
                _ => {}
            }
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

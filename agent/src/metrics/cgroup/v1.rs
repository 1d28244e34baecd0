//! One container's usage from cgroup v1 files (one folder per controller).
//!
//! cpuacct: `cpuacct.usage` (ns), `cpuacct.stat` (user/system in USER_HZ ticks);
//! cpu: `cpu.stat` (nr_periods, nr_throttled, throttled_time ns; every cycle only under
//! a CFS quota, else with the limits: see [`super::Limits::throttling`]), CFS quota and
//! period;
//! memory: `memory.usage_in_bytes`, `memory.limit_in_bytes`, `memory.stat`
//! (`total_*` when hierarchical, plain names otherwise), `memory.oom_control`;
//! blkio: `blkio.throttle.io_service_bytes` / `io_serviced`; pids: `pids.current`/`max`.

use protocol::snapshot::{ContainerCpu, ContainerIo, ContainerMemory, ContainerPids};

use super::{ok_or_absent, ok_or_warn, Gone, Limits, Throttling, Usage, V1Dirs};
use crate::metrics::pseudofile::{
    fields, keyed_u64, keyed_u64s, lines, parse_u64, trim, PseudoFile, ReadError,
};

/// v1 reports "no limit" as PAGE_COUNTER_MAX pages, about 2^63: anything this large is none.
const UNLIMITED: u64 = 1 << 60;

/// `throttling`: the container's limits when `cpu.stat` is due this cycle (its
/// `throttling` is set from the file); `None` keeps the last read there (the caller
/// reports it).
pub fn read(
    d: &V1Dirs,
    file: &mut PseudoFile,
    ticks_per_second: f64,
    memory_enabled: bool,
    throttling: Option<&mut Limits>,
    warn: &mut dyn FnMut(ReadError),
) -> Result<Usage, Gone> {
    let usage_ns = match file.read_u64(&d.cpuacct, "cpuacct.usage") {
        Ok(v) => v,
        Err(e) if e.is_missing() => return Err(Gone),
        Err(e) => {
            warn(e);
            None
        }
    };
    let mut out = Usage::default();
    if let Some(ns) = usage_ns {
        let mut cpu = ContainerCpu {
            usage_seconds: ns as f64 / 1e9,
            ..Default::default()
        };
        if let Some(b) = ok_or_warn(file.read_record(&d.cpuacct, "cpuacct.stat"), warn) {
            let (user, system) = parse_cpuacct_stat(b);
            cpu.user_seconds = user as f64 / ticks_per_second;
            cpu.system_seconds = system as f64 / ticks_per_second;
        }
        // cpu.stat exists only with CFS bandwidth control (CONFIG_CFS_BANDWIDTH).
        if let Some(limits) = throttling {
            limits.throttling = ok_or_absent(file.read_record(&d.cpu, "cpu.stat"), warn).map(|b| {
                let [periods, throttled_periods, throttled_ns] =
                    keyed_u64s(b, [b"nr_periods", b"nr_throttled", b"throttled_time"]);
                Throttling {
                    periods,
                    throttled_periods,
                    throttled_ns,
                }
            });
        }
        out.cpu = Some(cpu);
    }
    if memory_enabled {
        out.memory = read_memory(d, file, warn);
    }
    out.io = read_io(d, file, warn);
    // No pids controller (old or trimmed kernels): pids absent, not a fault.
    if let Some(current) = ok_or_absent(file.read_u64(&d.pids, "pids.current"), warn).flatten() {
        out.pids = Some(ContainerPids { current, max: None });
    }
    Ok(out)
}

/// The files that change only with `docker update` (see [`Limits`]); an unreadable
/// one is an absent limit, as it was when they were read every cycle.
pub fn read_limits(d: &V1Dirs, file: &mut PseudoFile) -> Limits {
    let period = file.read_u64(&d.cpu, "cpu.cfs_period_us").ok().flatten();
    let cpus = file
        .read_record(&d.cpu, "cpu.cfs_quota_us")
        .ok()
        .and_then(|b| cpu_limit(trim(b), period));
    Limits {
        cpus,
        memory_bytes: file
            .read_u64(&d.memory, "memory.limit_in_bytes")
            .ok()
            .flatten()
            .filter(|&l| l < UNLIMITED),
        pids_max: file.read_u64(&d.pids, "pids.max").ok().flatten(),
        throttling: None,
    }
}

fn read_memory(
    d: &V1Dirs,
    file: &mut PseudoFile,
    warn: &mut dyn FnMut(ReadError),
) -> Option<ContainerMemory> {
    let usage = ok_or_warn(file.read_u64(&d.memory, "memory.usage_in_bytes"), warn)??;
    let stat = ok_or_warn(file.read_record(&d.memory, "memory.stat"), warn)?;
    let mut m = parse_memory_stat(stat, usage);
    // `oom_kill` in oom_control came with 4.13: older kernels leave it absent.
    if let Some(b) = ok_or_warn(file.read_record(&d.memory, "memory.oom_control"), warn) {
        m.oom_kills = keyed_u64(b, b"oom_kill");
    }
    Some(m)
}

fn read_io(
    d: &V1Dirs,
    file: &mut PseudoFile,
    warn: &mut dyn FnMut(ReadError),
) -> Option<ContainerIo> {
    let mut io = ContainerIo::default();
    let bytes = ok_or_warn(
        file.read_record(&d.blkio, "blkio.throttle.io_service_bytes"),
        warn,
    )?;
    (io.read_bytes, io.written_bytes) = sum_read_write(bytes);
    let ops = ok_or_warn(
        file.read_record(&d.blkio, "blkio.throttle.io_serviced"),
        warn,
    )?;
    (io.reads, io.writes) = sum_read_write(ops);
    Some(io)
}

/// `user N` and `system N` of `cpuacct.stat`, in ticks.
pub fn parse_cpuacct_stat(b: &[u8]) -> (u64, u64) {
    let [user, system] = keyed_u64s(b, [b"user", b"system"]);
    (user.unwrap_or(0), system.unwrap_or(0))
}

/// CPUs allowed by `cpu.cfs_quota_us` (`-1`: unlimited) over the period.
pub fn cpu_limit(quota: &[u8], period_us: Option<u64>) -> Option<f64> {
    let quota = parse_u64(quota)?;
    let period = period_us.filter(|&p| p > 0)?;
    Some(quota as f64 / period as f64)
}

/// Memory from `memory.stat` plus `memory.usage_in_bytes`; working set is usage minus
/// inactive file pages, as cAdvisor and the kubelet compute it.
pub fn parse_memory_stat(stat: &[u8], usage: u64) -> ContainerMemory {
    let [t_inactive, inactive, t_rss, rss, t_cache, cache, t_swap, swap] = keyed_u64s(
        stat,
        [
            b"total_inactive_file",
            b"inactive_file",
            b"total_rss",
            b"rss",
            b"total_cache",
            b"cache",
            b"total_swap",
            b"swap",
        ],
    );
    let inactive_file = t_inactive.or(inactive).unwrap_or(0);
    ContainerMemory {
        usage_bytes: usage,
        working_set_bytes: usage.saturating_sub(inactive_file),
        rss_bytes: t_rss.or(rss),
        cache_bytes: t_cache.or(cache),
        swap_bytes: t_swap.or(swap),
        limit_bytes: None,
        oom_kills: None,
    }
}

/// Sums the `Read` and `Write` rows over every device of a blkio throttle file.
pub fn sum_read_write(b: &[u8]) -> (u64, u64) {
    let (mut read, mut write) = (0, 0);
    for line in lines(b) {
        let mut f = fields(line);
        let (Some(_dev), Some(op), Some(v)) = (f.next(), f.next(), f.next().and_then(parse_u64))
        else {
            continue;
        };
        match op {
            // Counters of a lying file saturate instead of wrapping.
            b"Read" => read = u64::saturating_add(read, v),
            b"Write" => write = u64::saturating_add(write, v),
            _ => {}
        }
    }
    (read, write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_minus_one_is_unlimited() {
        assert_eq!(cpu_limit(b"-1", Some(100_000)), None);
        assert_eq!(cpu_limit(b"150000", Some(100_000)), Some(1.5));
    }

    #[test]
    fn blkio_rows_sum_over_devices_and_skip_totals() {
        let b = b"8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Async 12288\n8:0 Discard 0\n8:0 Total 12288\n8:16 Read 1\n8:16 Write 2\nTotal 12291\n";
        assert_eq!(sum_read_write(b), (4097, 8194));
    }
}

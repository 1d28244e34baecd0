//! The metrics snapshot an agent collects each interval and the manager stores.
//!
//! Units are base units (bytes, seconds, celsius, hertz). Every family is optional or a
//! list: a metric the board cannot provide is absent, never a zero that looks like data.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Agent boot instance (random per agent start) and sequence number within it: the
    /// pair identifies a snapshot, so a retried delivery is stored once.
    pub instance: String,
    pub seq: u64,
    /// Collection time, ms since the Unix epoch.
    pub collected_at_ms: u64,
    pub hostname: String,
    pub host: HostMetrics,
    #[serde(default)]
    pub containers: Vec<ContainerMetrics>,
    pub health: BoardHealth,
    /// What could not be read this cycle, once per cause (e.g. "memory cgroup disabled").
    #[serde(default)]
    pub warnings: Vec<String>,
    /// How each collector of this cycle went (duration, success, last success).
    #[serde(default)]
    pub collectors: Vec<CollectorRun>,
    /// Pending package updates, from the image's update timer; `None` when it never ran.
    #[serde(default)]
    pub updates: Option<PendingUpdates>,
}

/// One collector (metric family source) in one cycle, like node_exporter's
/// `node_scrape_collector_duration_seconds` / `_success`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CollectorRun {
    /// `cpu`, `memory`, `disk`, `containers`, ...
    pub collector: String,
    pub duration_seconds: f64,
    /// False when a source the collector found could not be read or parsed.
    pub success: bool,
    /// Last cycle (seconds since the Unix epoch) in which it succeeded, if any since start.
    pub last_success_seconds: Option<f64>,
}

/// `/var/lib/armada/pending-updates`: one `package version` per line.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PendingUpdates {
    /// Lines of the file, in file order (capped; `count` is the full number).
    #[serde(default)]
    pub packages: Vec<(String, String)>,
    pub count: u64,
    /// When the timer last wrote the file (its mtime), seconds since the Unix epoch.
    pub checked_at_seconds: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuTimes {
    /// `None` for the all-CPU total line.
    pub cpu: Option<u32>,
    pub user: f64,
    pub nice: f64,
    pub system: f64,
    pub idle: f64,
    pub iowait: f64,
    pub irq: f64,
    pub softirq: f64,
    pub steal: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadAverage {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    pub total_bytes: u64,
    pub free_bytes: u64,
    pub available_bytes: Option<u64>,
    pub buffers_bytes: u64,
    pub cached_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_free_bytes: u64,
    /// The rest of `/proc/meminfo` that matters on a small board; each is absent when
    /// the kernel's meminfo has no such line.
    #[serde(default)]
    pub swap_cached_bytes: Option<u64>,
    #[serde(default)]
    pub active_bytes: Option<u64>,
    #[serde(default)]
    pub inactive_bytes: Option<u64>,
    #[serde(default)]
    pub dirty_bytes: Option<u64>,
    #[serde(default)]
    pub writeback_bytes: Option<u64>,
    #[serde(default)]
    pub anon_bytes: Option<u64>,
    #[serde(default)]
    pub mapped_bytes: Option<u64>,
    #[serde(default)]
    pub shmem_bytes: Option<u64>,
    #[serde(default)]
    pub slab_bytes: Option<u64>,
    #[serde(default)]
    pub slab_reclaimable_bytes: Option<u64>,
    #[serde(default)]
    pub slab_unreclaimable_bytes: Option<u64>,
    #[serde(default)]
    pub kernel_stack_bytes: Option<u64>,
    #[serde(default)]
    pub page_tables_bytes: Option<u64>,
    #[serde(default)]
    pub commit_limit_bytes: Option<u64>,
    #[serde(default)]
    pub committed_bytes: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Pressure {
    /// `cpu`, `memory` or `io`.
    pub resource: String,
    pub some_avg10: f64,
    pub some_avg60: f64,
    pub some_avg300: f64,
    pub some_total_seconds: f64,
    pub full_avg10: Option<f64>,
    pub full_avg60: Option<f64>,
    pub full_avg300: Option<f64>,
    pub full_total_seconds: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DiskIo {
    pub device: String,
    pub reads: u64,
    pub read_bytes: u64,
    pub writes: u64,
    pub written_bytes: u64,
    pub io_time_seconds: f64,
    /// Time spent by reads and by writes (their sum over completed requests): divided by
    /// `reads`/`writes` it is the mean latency.
    #[serde(default)]
    pub read_time_seconds: Option<f64>,
    #[serde(default)]
    pub write_time_seconds: Option<f64>,
    /// Busy time weighted by the number of requests in flight (queue depth x time).
    #[serde(default)]
    pub io_time_weighted_seconds: Option<f64>,
    #[serde(default)]
    pub io_in_progress: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Filesystem {
    pub device: String,
    pub mountpoint: String,
    pub fstype: String,
    pub size_bytes: u64,
    pub free_bytes: u64,
    pub avail_bytes: u64,
    pub files: u64,
    pub files_free: u64,
    /// Mounted read-only now (`ST_RDONLY`): ext4 remounts itself read-only on errors,
    /// which on an SD card is the first sign it is failing.
    #[serde(default)]
    pub readonly: Option<bool>,
}

/// Link state of a host interface, from `/sys/class/net/<interface>`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkState {
    pub interface: String,
    /// RFC 2863 operstate: `up`, `down`, `dormant`, `unknown`, ...
    pub operstate: String,
    /// Physical link present; absent while the interface is administratively down.
    pub carrier: Option<bool>,
    /// Link speed in bytes per second (sysfs says Mbit/s); absent when unknown.
    pub speed_bytes: Option<u64>,
    pub mtu_bytes: Option<u64>,
}

/// The kernel clock discipline (`adjtimex`), and steps the agent saw.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClockState {
    /// Synchronised: the kernel's STA_UNSYNC is clear (an NTP client disciplines it).
    pub synced: bool,
    /// Remaining offset being slewed away.
    pub offset_seconds: f64,
    pub max_error_seconds: f64,
    pub estimated_error_seconds: f64,
    /// Frequency correction, as a ratio (ppm / 1e6).
    pub frequency_adjustment_ratio: f64,
    /// The raw `status` bits of `struct timex`.
    pub status: i64,
    /// Clock steps (wall clock moved against the boot-time clock by more than 0.5 s
    /// between two cycles) seen since the agent started, and the last one's size.
    pub steps_total: u64,
    pub last_step_seconds: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NetDev {
    pub interface: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostMetrics {
    /// The total line first (`cpu: None`), then one per core.
    #[serde(default)]
    pub cpu: Vec<CpuTimes>,
    pub load: Option<LoadAverage>,
    pub memory: Option<Memory>,
    #[serde(default)]
    pub pressure: Vec<Pressure>,
    #[serde(default)]
    pub disks: Vec<DiskIo>,
    #[serde(default)]
    pub filesystems: Vec<Filesystem>,
    #[serde(default)]
    pub network: Vec<NetDev>,
    /// Link state of the interfaces in `network` (but `lo`).
    #[serde(default)]
    pub links: Vec<LinkState>,
    #[serde(default)]
    pub clock: Option<ClockState>,
    pub uptime_seconds: Option<f64>,
    pub boot_time_seconds: Option<u64>,
    pub processes: Option<u64>,
    pub threads: Option<u64>,
    pub procs_running: Option<u64>,
    pub procs_blocked: Option<u64>,
    pub context_switches_total: Option<u64>,
    pub forks_total: Option<u64>,
    pub oom_kills_total: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerCpu {
    pub usage_seconds: f64,
    pub user_seconds: f64,
    pub system_seconds: f64,
    /// CFS bandwidth counters: absent when the kernel (or the cgroup's cpu controller)
    /// has none, never a zero that looks like "never throttled".
    pub periods: Option<u64>,
    pub throttled_periods: Option<u64>,
    pub throttled_seconds: Option<f64>,
    /// CPUs allowed by quota/period, when limited.
    pub limit_cpus: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerMemory {
    pub usage_bytes: u64,
    pub working_set_bytes: u64,
    /// rss on cgroup v1, anon on v2; absent when memory.stat lacks the line.
    pub rss_bytes: Option<u64>,
    /// cache on cgroup v1, file on v2.
    pub cache_bytes: Option<u64>,
    /// Swap used (v1 `swap` of memory.stat, v2 `memory.swap.current`).
    #[serde(default)]
    pub swap_bytes: Option<u64>,
    pub limit_bytes: Option<u64>,
    /// Absent on kernels older than 4.13 (no `oom_kill` in oom_control/memory.events).
    pub oom_kills: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerIo {
    pub read_bytes: u64,
    pub written_bytes: u64,
    pub reads: u64,
    pub writes: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerPids {
    pub current: u64,
    pub max: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerMetrics {
    pub id: String,
    pub name: String,
    pub image: String,
    /// `com.docker.swarm.service.name` and `com.docker.swarm.task.name` labels.
    pub service: Option<String>,
    pub task: Option<String>,
    /// From the engine (`running`, `paused`, `restarting`, ...); absent while the
    /// engine has not answered (the container is still reported from its cgroup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Health check status (`healthy`, `unhealthy`, `starting`); absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// The engine's `RestartCount` (restarts by its restart policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_count: Option<u64>,
    /// When the container last started, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_seconds: Option<f64>,
    pub cpu: Option<ContainerCpu>,
    pub memory: Option<ContainerMemory>,
    pub io: Option<ContainerIo>,
    pub pids: Option<ContainerPids>,
    #[serde(default)]
    pub network: Vec<NetDev>,
    /// cgroup v2 `cpu.pressure`, `memory.pressure`, `io.pressure`; empty on v1 or
    /// without PSI.
    #[serde(default)]
    pub pressure: Vec<Pressure>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ThermalZone {
    pub zone: String,
    /// The zone's `type`, e.g. `cpu-thermal`.
    pub kind: String,
    pub celsius: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HwmonSensor {
    /// The hwmon device's `name`, e.g. `rpi_volt`, `cpu_thermal`.
    pub chip: String,
    /// The sensor file stem, e.g. `temp1`, `in0`.
    pub sensor: String,
    pub label: Option<String>,
    /// Value in base units (celsius, volts, amperes, watts, rpm).
    pub value: Option<f64>,
    /// Alarm files of the sensor (`*_alarm`, `*_lcrit_alarm`), true when raised.
    pub alarm: Option<bool>,
}

/// The Raspberry Pi firmware's GET_THROTTLED bits.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Throttled {
    pub raw: u32,
    pub under_voltage_now: bool,
    pub frequency_capped_now: bool,
    pub throttled_now: bool,
    pub soft_temp_limit_now: bool,
    pub under_voltage_since_boot: bool,
    pub frequency_capped_since_boot: bool,
    pub throttled_since_boot: bool,
    pub soft_temp_limit_since_boot: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuFrequency {
    pub cpu: u32,
    pub hertz: u64,
    /// `cpuinfo_max_freq`: the hardware's top speed.
    #[serde(default)]
    pub max_hertz: Option<u64>,
    /// `scaling_max_freq`: the cap in force now (lowered by thermal or firmware limits).
    #[serde(default)]
    pub scaling_max_hertz: Option<u64>,
}

/// A thermal cooling device (fan, CPU frequency cap): `/sys/class/thermal/cooling_deviceN`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CoolingDevice {
    pub device: String,
    /// Its `type`, e.g. `cpufreq-cpu0`, `pwm-fan`.
    pub kind: String,
    pub cur_state: u64,
    pub max_state: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BoardHealth {
    #[serde(default)]
    pub thermal: Vec<ThermalZone>,
    #[serde(default)]
    pub hwmon: Vec<HwmonSensor>,
    /// The rpi_volt hwmon alarm: under-voltage seen in the last interval.
    pub under_voltage: Option<bool>,
    pub throttled: Option<Throttled>,
    #[serde(default)]
    pub cpu_frequency: Vec<CpuFrequency>,
    /// 1 or 2; `None` when /sys/fs/cgroup is not readable.
    pub cgroup_version: Option<u8>,
    /// `Some(false)` means every container's memory would read zero: the kernel command
    /// line lacks `cgroup_enable=memory`.
    pub memory_cgroup_enabled: Option<bool>,
    /// ext4 `lifetime_write_kbytes` per device, in bytes: SD card wear.
    #[serde(default)]
    pub ext4_lifetime_written: Vec<(String, u64)>,
    #[serde(default)]
    pub cooling: Vec<CoolingDevice>,
}

impl Snapshot {
    /// Busy share of all CPUs since boot, from the total line: a cheap summary for tables.
    pub fn cpu_busy_ratio_since_boot(&self) -> Option<f64> {
        let t = self.host.cpu.iter().find(|c| c.cpu.is_none())?;
        let idle = t.idle + t.iowait;
        let all = t.user + t.nice + t.system + t.irq + t.softirq + t.steal + idle;
        (all > 0.0).then(|| (all - idle) / all)
    }

    /// Highest temperature of any thermal zone.
    pub fn max_temperature(&self) -> Option<f64> {
        self.health
            .thermal
            .iter()
            .map(|z| z.celsius)
            .reduce(f64::max)
    }
}

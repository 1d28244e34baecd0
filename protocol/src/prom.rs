//! Prometheus text exposition (format 0.0.4) of snapshots.
//!
//! One function serves both the agent's `/metrics` (one snapshot, no extra labels) and
//! the manager's federation (every node's latest snapshot, each with `node`/`hostname`
//! labels): families are written once each, with their HELP and TYPE lines, and the
//! samples of every snapshot below them. A family no snapshot has is left out.
//!
//! Names follow Prometheus conventions: `armada_` prefix, base units (seconds, bytes,
//! celsius, volts, hertz, ratios), `_total` on counters, labels for dimensions.

use std::fmt::Write;

use crate::snapshot::{ContainerMetrics, HwmonSensor, NetDev, Snapshot};

/// A snapshot and the labels to put on each of its samples.
pub struct LabelledSnapshot<'a> {
    pub labels: &'a [(&'a str, &'a str)],
    pub snapshot: &'a Snapshot,
}

/// Appends the exposition of `snapshots` to `out`.
pub fn render(snapshots: &[LabelledSnapshot<'_>], out: &mut String) {
    let mut r = Renderer { out, snapshots };
    host_families(&mut r);
    container_families(&mut r);
    health_families(&mut r);
}

enum Kind {
    Counter,
    Gauge,
}

struct Renderer<'o, 's> {
    out: &'o mut String,
    snapshots: &'s [LabelledSnapshot<'s>],
}

/// Writes the samples of one family for one snapshot.
struct Samples<'a> {
    out: &'a mut String,
    name: &'static str,
    base: &'a [(&'a str, &'a str)],
    wrote: bool,
}

impl Samples<'_> {
    fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        self.wrote = true;
        self.out.push_str(self.name);
        let mut first = true;
        for (k, v) in self.base.iter().chain(labels) {
            self.out.push(if first { '{' } else { ',' });
            first = false;
            self.out.push_str(k);
            self.out.push_str("=\"");
            escape_label(self.out, v);
            self.out.push('"');
        }
        if !first {
            self.out.push('}');
        }
        self.out.push(' ');
        write_value(self.out, value);
        self.out.push('\n');
    }

    fn opt(&mut self, labels: &[(&str, &str)], value: Option<f64>) {
        if let Some(v) = value {
            self.sample(labels, v);
        }
    }
}

impl Renderer<'_, '_> {
    /// One family: header, then each snapshot's samples; dropped when none wrote any.
    fn family(
        &mut self,
        name: &'static str,
        kind: Kind,
        help: &str,
        mut each: impl FnMut(&Snapshot, &mut Samples<'_>),
    ) {
        let start = self.out.len();
        let _ = write!(self.out, "# HELP {name} ");
        escape_help(self.out, help);
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        // The leading newline ends the HELP line.
        let _ = writeln!(self.out, "\n# TYPE {name} {kind}");
        let mut any = false;
        for ls in self.snapshots {
            let mut s = Samples {
                out: self.out,
                name,
                base: ls.labels,
                wrote: false,
            };
            each(ls.snapshot, &mut s);
            any |= s.wrote;
        }
        if !any {
            self.out.truncate(start);
        }
    }
}

fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

fn b(v: bool) -> f64 {
    if v {
        1.0
    } else {
        0.0
    }
}

fn host_families(r: &mut Renderer<'_, '_>) {
    use Kind::*;
    r.family(
        "armada_cpu_seconds_total",
        Counter,
        "CPU time spent per core and mode.",
        |s, e| {
            let mut num = String::new();
            for c in s.host.cpu.iter() {
                let Some(n) = c.cpu else { continue };
                num.clear();
                let _ = write!(num, "{n}");
                for (mode, v) in [
                    ("user", c.user),
                    ("nice", c.nice),
                    ("system", c.system),
                    ("idle", c.idle),
                    ("iowait", c.iowait),
                    ("irq", c.irq),
                    ("softirq", c.softirq),
                    ("steal", c.steal),
                ] {
                    e.sample(&[("cpu", &num), ("mode", mode)], v);
                }
            }
        },
    );
    let load = |f: fn(&crate::snapshot::LoadAverage) -> f64| {
        move |s: &Snapshot, e: &mut Samples<'_>| e.opt(&[], s.host.load.as_ref().map(f))
    };
    r.family(
        "armada_load1",
        Gauge,
        "1-minute load average.",
        load(|l| l.one),
    );
    r.family(
        "armada_load5",
        Gauge,
        "5-minute load average.",
        load(|l| l.five),
    );
    r.family(
        "armada_load15",
        Gauge,
        "15-minute load average.",
        load(|l| l.fifteen),
    );

    type MemField = fn(&crate::snapshot::Memory) -> Option<u64>;
    let memory: [(&'static str, &str, MemField); 7] = [
        ("armada_memory_total_bytes", "Total usable memory.", |m| {
            Some(m.total_bytes)
        }),
        ("armada_memory_free_bytes", "Unused memory.", |m| {
            Some(m.free_bytes)
        }),
        (
            "armada_memory_available_bytes",
            "Memory available for new work without swapping (MemAvailable).",
            |m| m.available_bytes,
        ),
        (
            "armada_memory_buffers_bytes",
            "Memory in block device buffers.",
            |m| Some(m.buffers_bytes),
        ),
        (
            "armada_memory_cached_bytes",
            "Memory in the page cache.",
            |m| Some(m.cached_bytes),
        ),
        ("armada_swap_total_bytes", "Total swap space.", |m| {
            Some(m.swap_total_bytes)
        }),
        ("armada_swap_free_bytes", "Unused swap space.", |m| {
            Some(m.swap_free_bytes)
        }),
    ];
    for (name, help, f) in memory {
        r.family(name, Gauge, help, |s, e| {
            e.opt(&[], s.host.memory.as_ref().and_then(f).map(|v| v as f64))
        });
    }

    r.family(
        "armada_pressure_some_seconds_total",
        Counter,
        "Time some tasks stalled on the resource (PSI).",
        |s, e| {
            for p in &s.host.pressure {
                e.sample(&[("resource", &p.resource)], p.some_total_seconds);
            }
        },
    );
    r.family(
        "armada_pressure_full_seconds_total",
        Counter,
        "Time all non-idle tasks stalled on the resource (PSI).",
        |s, e| {
            for p in &s.host.pressure {
                e.opt(&[("resource", &p.resource)], p.full_total_seconds);
            }
        },
    );
    r.family(
        "armada_pressure_some_ratio",
        Gauge,
        "Share of time some tasks stalled on the resource, averaged over the window (PSI).",
        |s, e| {
            for p in &s.host.pressure {
                for (w, v) in [
                    ("10s", p.some_avg10),
                    ("60s", p.some_avg60),
                    ("300s", p.some_avg300),
                ] {
                    e.sample(&[("resource", &p.resource), ("window", w)], v);
                }
            }
        },
    );
    r.family(
        "armada_pressure_full_ratio",
        Gauge,
        "Share of time all non-idle tasks stalled on the resource, averaged over the window (PSI).",
        |s, e| {
            for p in &s.host.pressure {
                for (w, v) in [
                    ("10s", p.full_avg10),
                    ("60s", p.full_avg60),
                    ("300s", p.full_avg300),
                ] {
                    e.opt(&[("resource", &p.resource), ("window", w)], v);
                }
            }
        },
    );

    type DiskField = fn(&crate::snapshot::DiskIo) -> f64;
    let disk: [(&'static str, &str, DiskField); 5] = [
        (
            "armada_disk_reads_completed_total",
            "Reads completed by the block device.",
            |d| d.reads as f64,
        ),
        (
            "armada_disk_read_bytes_total",
            "Bytes read from the block device.",
            |d| d.read_bytes as f64,
        ),
        (
            "armada_disk_writes_completed_total",
            "Writes completed by the block device.",
            |d| d.writes as f64,
        ),
        (
            "armada_disk_written_bytes_total",
            "Bytes written to the block device (an SD card's wear indicator).",
            |d| d.written_bytes as f64,
        ),
        (
            "armada_disk_io_time_seconds_total",
            "Time the block device was busy with IO.",
            |d| d.io_time_seconds,
        ),
    ];
    for (name, help, f) in disk {
        r.family(name, Counter, help, |s, e| {
            for d in &s.host.disks {
                e.sample(&[("device", &d.device)], f(d));
            }
        });
    }

    type FsField = fn(&crate::snapshot::Filesystem) -> u64;
    let fs: [(&'static str, &str, FsField); 5] = [
        ("armada_filesystem_size_bytes", "Filesystem size.", |f| {
            f.size_bytes
        }),
        (
            "armada_filesystem_free_bytes",
            "Free space, including space reserved for root.",
            |f| f.free_bytes,
        ),
        (
            "armada_filesystem_avail_bytes",
            "Free space available to unprivileged users.",
            |f| f.avail_bytes,
        ),
        (
            "armada_filesystem_files",
            "Inodes in the filesystem.",
            |f| f.files,
        ),
        ("armada_filesystem_files_free", "Free inodes.", |f| {
            f.files_free
        }),
    ];
    for (name, help, f) in fs {
        r.family(name, Gauge, help, |s, e| {
            for x in &s.host.filesystems {
                e.sample(
                    &[
                        ("device", &x.device),
                        ("mountpoint", &x.mountpoint),
                        ("fstype", &x.fstype),
                    ],
                    f(x) as f64,
                );
            }
        });
    }

    for (name, help, f) in net_fields("armada_network") {
        r.family(name, Counter, help, |s, e| {
            for n in &s.host.network {
                e.sample(&[("interface", &n.interface)], f(n) as f64);
            }
        });
    }

    let h = &mut *r;
    h.family(
        "armada_uptime_seconds",
        Gauge,
        "Time since boot.",
        |s, e| e.opt(&[], s.host.uptime_seconds),
    );
    h.family(
        "armada_boot_time_seconds",
        Gauge,
        "Boot time, seconds since the Unix epoch.",
        |s, e| e.opt(&[], s.host.boot_time_seconds.map(|v| v as f64)),
    );
    h.family(
        "armada_processes",
        Gauge,
        "Processes on the host.",
        |s, e| e.opt(&[], s.host.processes.map(|v| v as f64)),
    );
    h.family(
        "armada_threads",
        Gauge,
        "Threads (kernel scheduling entities) on the host.",
        |s, e| e.opt(&[], s.host.threads.map(|v| v as f64)),
    );
    h.family(
        "armada_procs_running",
        Gauge,
        "Tasks runnable now.",
        |s, e| e.opt(&[], s.host.procs_running.map(|v| v as f64)),
    );
    h.family(
        "armada_procs_blocked",
        Gauge,
        "Tasks blocked on IO now.",
        |s, e| e.opt(&[], s.host.procs_blocked.map(|v| v as f64)),
    );
    h.family(
        "armada_context_switches_total",
        Counter,
        "Context switches since boot.",
        |s, e| e.opt(&[], s.host.context_switches_total.map(|v| v as f64)),
    );
    h.family(
        "armada_forks_total",
        Counter,
        "Processes and threads created since boot.",
        |s, e| e.opt(&[], s.host.forks_total.map(|v| v as f64)),
    );
    h.family(
        "armada_oom_kills_total",
        Counter,
        "Processes killed by the kernel's OOM killer since boot.",
        |s, e| e.opt(&[], s.host.oom_kills_total.map(|v| v as f64)),
    );
}

type NetField = fn(&NetDev) -> u64;

fn net_fields(prefix: &'static str) -> [(&'static str, &'static str, NetField); 8] {
    // Names are spelled out so they stay greppable; the prefix picks host or container.
    let host = prefix == "armada_network";
    let n = |h: &'static str, c: &'static str| if host { h } else { c };
    [
        (
            n(
                "armada_network_receive_bytes_total",
                "armada_container_network_receive_bytes_total",
            ),
            "Bytes received.",
            |d| d.rx_bytes,
        ),
        (
            n(
                "armada_network_receive_packets_total",
                "armada_container_network_receive_packets_total",
            ),
            "Packets received.",
            |d| d.rx_packets,
        ),
        (
            n(
                "armada_network_receive_errors_total",
                "armada_container_network_receive_errors_total",
            ),
            "Receive errors.",
            |d| d.rx_errors,
        ),
        (
            n(
                "armada_network_receive_drop_total",
                "armada_container_network_receive_drop_total",
            ),
            "Received packets dropped.",
            |d| d.rx_dropped,
        ),
        (
            n(
                "armada_network_transmit_bytes_total",
                "armada_container_network_transmit_bytes_total",
            ),
            "Bytes sent.",
            |d| d.tx_bytes,
        ),
        (
            n(
                "armada_network_transmit_packets_total",
                "armada_container_network_transmit_packets_total",
            ),
            "Packets sent.",
            |d| d.tx_packets,
        ),
        (
            n(
                "armada_network_transmit_errors_total",
                "armada_container_network_transmit_errors_total",
            ),
            "Transmit errors.",
            |d| d.tx_errors,
        ),
        (
            n(
                "armada_network_transmit_drop_total",
                "armada_container_network_transmit_drop_total",
            ),
            "Packets dropped on sending.",
            |d| d.tx_dropped,
        ),
    ]
}

/// The identifying labels of a container, then `extra`.
fn with_container<'a>(
    c: &'a ContainerMetrics,
    extra: &[(&'a str, &'a str)],
    buf: &mut Vec<(&'a str, &'a str)>,
) {
    buf.clear();
    buf.push(("container_id", &c.id));
    buf.push(("container", &c.name));
    buf.push(("image", &c.image));
    if let Some(s) = &c.service {
        buf.push(("service", s));
    }
    if let Some(t) = &c.task {
        buf.push(("task", t));
    }
    buf.extend_from_slice(extra);
}

fn container_families(r: &mut Renderer<'_, '_>) {
    use Kind::*;
    type Field = fn(&ContainerMetrics) -> Option<f64>;
    let families: [(&'static str, Kind, &str, Field); 18] = [
        (
            "armada_container_cpu_usage_seconds_total",
            Counter,
            "CPU time used by the container.",
            |c| c.cpu.as_ref().map(|x| x.usage_seconds),
        ),
        (
            "armada_container_cpu_user_seconds_total",
            Counter,
            "CPU time in user mode.",
            |c| c.cpu.as_ref().map(|x| x.user_seconds),
        ),
        (
            "armada_container_cpu_system_seconds_total",
            Counter,
            "CPU time in kernel mode.",
            |c| c.cpu.as_ref().map(|x| x.system_seconds),
        ),
        (
            "armada_container_cpu_periods_total",
            Counter,
            "CFS enforcement periods elapsed.",
            |c| c.cpu.as_ref().map(|x| x.periods as f64),
        ),
        (
            "armada_container_cpu_throttled_periods_total",
            Counter,
            "CFS periods in which the container was throttled.",
            |c| c.cpu.as_ref().map(|x| x.throttled_periods as f64),
        ),
        (
            "armada_container_cpu_throttled_seconds_total",
            Counter,
            "Time the container was throttled.",
            |c| c.cpu.as_ref().map(|x| x.throttled_seconds),
        ),
        (
            "armada_container_cpu_limit_cpus",
            Gauge,
            "CPUs the container may use (quota over period), when limited.",
            |c| c.cpu.as_ref().and_then(|x| x.limit_cpus),
        ),
        (
            "armada_container_memory_usage_bytes",
            Gauge,
            "Memory charged to the container, page cache included.",
            |c| c.memory.as_ref().map(|m| m.usage_bytes as f64),
        ),
        (
            "armada_container_memory_working_set_bytes",
            Gauge,
            "Memory usage minus inactive file pages.",
            |c| c.memory.as_ref().map(|m| m.working_set_bytes as f64),
        ),
        (
            "armada_container_memory_rss_bytes",
            Gauge,
            "Anonymous memory (rss on cgroup v1, anon on v2).",
            |c| c.memory.as_ref().map(|m| m.rss_bytes as f64),
        ),
        (
            "armada_container_memory_cache_bytes",
            Gauge,
            "Page cache (cache on cgroup v1, file on v2).",
            |c| c.memory.as_ref().map(|m| m.cache_bytes as f64),
        ),
        (
            "armada_container_memory_limit_bytes",
            Gauge,
            "Memory limit, when set.",
            |c| {
                c.memory
                    .as_ref()
                    .and_then(|m| m.limit_bytes)
                    .map(|v| v as f64)
            },
        ),
        (
            "armada_container_oom_kills_total",
            Counter,
            "Processes of the container killed by the OOM killer.",
            |c| c.memory.as_ref().map(|m| m.oom_kills as f64),
        ),
        (
            "armada_container_io_read_bytes_total",
            Counter,
            "Bytes read from block devices.",
            |c| c.io.as_ref().map(|x| x.read_bytes as f64),
        ),
        (
            "armada_container_io_written_bytes_total",
            Counter,
            "Bytes written to block devices.",
            |c| c.io.as_ref().map(|x| x.written_bytes as f64),
        ),
        (
            "armada_container_io_reads_total",
            Counter,
            "Read operations on block devices.",
            |c| c.io.as_ref().map(|x| x.reads as f64),
        ),
        (
            "armada_container_io_writes_total",
            Counter,
            "Write operations on block devices.",
            |c| c.io.as_ref().map(|x| x.writes as f64),
        ),
        (
            "armada_container_pids",
            Gauge,
            "Processes and threads in the container.",
            |c| c.pids.as_ref().map(|p| p.current as f64),
        ),
    ];
    for (name, kind, help, f) in families {
        r.family(name, kind, help, |s, e| {
            for c in &s.containers {
                let mut labels = Vec::new();
                with_container(c, &[], &mut labels);
                e.opt(&labels, f(c));
            }
        });
    }
    r.family(
        "armada_container_pids_max",
        Gauge,
        "Limit on the container's processes and threads, when set.",
        |s, e| {
            for c in &s.containers {
                let mut labels = Vec::new();
                with_container(c, &[], &mut labels);
                e.opt(
                    &labels,
                    c.pids.as_ref().and_then(|p| p.max).map(|v| v as f64),
                );
            }
        },
    );
    for (name, help, f) in net_fields("armada_container_network") {
        r.family(name, Counter, help, |s, e| {
            for c in &s.containers {
                for n in &c.network {
                    let mut labels = Vec::new();
                    with_container(c, &[("interface", &n.interface)], &mut labels);
                    e.sample(&labels, f(n) as f64);
                }
            }
        });
    }
}

/// Prometheus family, unit and divisor-free base unit name of an hwmon sensor kind.
fn hwmon_family(sensor: &HwmonSensor) -> Option<&'static str> {
    let kind = sensor.sensor.trim_end_matches(|c: char| c.is_ascii_digit());
    Some(match kind {
        "temp" => "armada_hwmon_temp_celsius",
        "in" => "armada_hwmon_voltage_volts",
        "curr" => "armada_hwmon_current_amperes",
        "power" => "armada_hwmon_power_watts",
        "energy" => "armada_hwmon_energy_joules_total",
        "fan" => "armada_hwmon_fan_rpm",
        "humidity" => "armada_hwmon_humidity_percent",
        _ => return None,
    })
}

fn health_families(r: &mut Renderer<'_, '_>) {
    use Kind::*;
    r.family(
        "armada_thermal_zone_celsius",
        Gauge,
        "Temperature of a thermal zone.",
        |s, e| {
            for z in &s.health.thermal {
                e.sample(&[("zone", &z.zone), ("type", &z.kind)], z.celsius);
            }
        },
    );
    for (name, kind, help) in [
        (
            "armada_hwmon_temp_celsius",
            Gauge,
            "hwmon temperature sensor.",
        ),
        ("armada_hwmon_voltage_volts", Gauge, "hwmon voltage sensor."),
        (
            "armada_hwmon_current_amperes",
            Gauge,
            "hwmon current sensor.",
        ),
        ("armada_hwmon_power_watts", Gauge, "hwmon power sensor."),
        (
            "armada_hwmon_energy_joules_total",
            Counter,
            "hwmon energy meter.",
        ),
        ("armada_hwmon_fan_rpm", Gauge, "hwmon fan speed."),
        (
            "armada_hwmon_humidity_percent",
            Gauge,
            "hwmon humidity sensor.",
        ),
    ] {
        r.family(name, kind, help, |s, e| {
            for h in &s.health.hwmon {
                if hwmon_family(h) != Some(name) {
                    continue;
                }
                let label = h.label.as_deref().unwrap_or("");
                e.opt(
                    &[("chip", &h.chip), ("sensor", &h.sensor), ("label", label)],
                    h.value,
                );
            }
        });
    }
    r.family(
        "armada_hwmon_alarm",
        Gauge,
        "hwmon alarm raised (1) or not (0); rpi_volt in0 is the Raspberry Pi under-voltage alarm.",
        |s, e| {
            for h in &s.health.hwmon {
                e.opt(&[("chip", &h.chip), ("sensor", &h.sensor)], h.alarm.map(b));
            }
        },
    );
    r.family(
        "armada_under_voltage",
        Gauge,
        "Raspberry Pi under-voltage seen in the rpi_volt driver's last poll (1) or not (0).",
        |s, e| e.opt(&[], s.health.under_voltage.map(b)),
    );
    r.family(
        "armada_rpi_throttled",
        Gauge,
        "Raspberry Pi firmware throttling flags (GET_THROTTLED), 1 when set.",
        |s, e| {
            if let Some(t) = &s.health.throttled {
                for (flag, when, v) in [
                    ("under_voltage", "now", t.under_voltage_now),
                    ("frequency_capped", "now", t.frequency_capped_now),
                    ("throttled", "now", t.throttled_now),
                    ("soft_temp_limit", "now", t.soft_temp_limit_now),
                    ("under_voltage", "since_boot", t.under_voltage_since_boot),
                    (
                        "frequency_capped",
                        "since_boot",
                        t.frequency_capped_since_boot,
                    ),
                    ("throttled", "since_boot", t.throttled_since_boot),
                    (
                        "soft_temp_limit",
                        "since_boot",
                        t.soft_temp_limit_since_boot,
                    ),
                ] {
                    e.sample(&[("flag", flag), ("when", when)], b(v));
                }
            }
        },
    );
    r.family(
        "armada_rpi_throttled_raw",
        Gauge,
        "Raspberry Pi firmware GET_THROTTLED word as vcgencmd get_throttled shows it.",
        |s, e| e.opt(&[], s.health.throttled.as_ref().map(|t| t.raw as f64)),
    );
    let mut num = String::new();
    r.family(
        "armada_cpu_frequency_hertz",
        Gauge,
        "Current CPU frequency.",
        |s, e| {
            for f in &s.health.cpu_frequency {
                num.clear();
                let _ = write!(num, "{}", f.cpu);
                e.sample(&[("cpu", &num)], f.hertz as f64);
            }
        },
    );
    r.family(
        "armada_cgroup_version",
        Gauge,
        "cgroup version the host runs (1 or 2).",
        |s, e| e.opt(&[], s.health.cgroup_version.map(f64::from)),
    );
    r.family(
        "armada_memory_cgroup_enabled",
        Gauge,
        "Memory cgroup controller enabled (1); 0 means container memory cannot be measured.",
        |s, e| e.opt(&[], s.health.memory_cgroup_enabled.map(b)),
    );
    r.family(
        "armada_ext4_lifetime_written_bytes_total",
        Counter,
        "Bytes written to an ext4 filesystem over its lifetime (SD card wear).",
        |s, e| {
            for (dev, bytes) in &s.health.ext4_lifetime_written {
                e.sample(&[("device", dev)], *bytes as f64);
            }
        },
    );
    r.family(
        "armada_collection_warnings",
        Gauge,
        "Sources that could not be read in the last collection.",
        |s, e| e.sample(&[], s.warnings.len() as f64),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::*;

    fn sample() -> Snapshot {
        Snapshot {
            hostname: "pi-1".into(),
            host: HostMetrics {
                cpu: vec![
                    CpuTimes {
                        cpu: None,
                        user: 3.0,
                        ..Default::default()
                    },
                    CpuTimes {
                        cpu: Some(0),
                        user: 1.5,
                        idle: 10.0,
                        ..Default::default()
                    },
                ],
                memory: Some(Memory {
                    total_bytes: 1 << 30,
                    available_bytes: None,
                    ..Default::default()
                }),
                ..Default::default()
            },
            containers: vec![ContainerMetrics {
                id: "abc".into(),
                name: "we\"ird\\name".into(),
                image: "busybox".into(),
                service: Some("web".into()),
                cpu: Some(ContainerCpu {
                    usage_seconds: 2.25,
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn families_appear_once_with_node_labels_per_snapshot() {
        let (a, b) = (sample(), sample());
        let mut out = String::new();
        render(
            &[
                LabelledSnapshot {
                    labels: &[("node", "n1")],
                    snapshot: &a,
                },
                LabelledSnapshot {
                    labels: &[("node", "n2")],
                    snapshot: &b,
                },
            ],
            &mut out,
        );
        assert_eq!(
            out.matches("# TYPE armada_cpu_seconds_total counter")
                .count(),
            1
        );
        assert!(
            out.contains("armada_cpu_seconds_total{node=\"n1\",cpu=\"0\",mode=\"user\"} 1.5\n"),
            "{out}"
        );
        assert!(out.contains("armada_cpu_seconds_total{node=\"n2\",cpu=\"0\",mode=\"idle\"} 10\n"));
        assert!(out.contains("armada_memory_total_bytes{node=\"n1\"} 1073741824\n"));
        assert!(
            !out.contains("armada_memory_available_bytes"),
            "absent values leave the family out"
        );
        assert!(out.contains(
            "armada_container_cpu_usage_seconds_total{node=\"n2\",container_id=\"abc\",container=\"we\\\"ird\\\\name\",image=\"busybox\",service=\"web\"} 2.25\n"
        ), "{out}");
        assert!(!out.contains("armada_thermal_zone_celsius"));
    }

    #[test]
    fn without_labels_no_braces() {
        let a = sample();
        let mut out = String::new();
        render(
            &[LabelledSnapshot {
                labels: &[],
                snapshot: &a,
            }],
            &mut out,
        );
        assert!(out.contains("\narmada_memory_total_bytes 1073741824\n"));
        assert!(out.starts_with("# HELP armada_cpu_seconds_total "));
        for line in out.lines().filter(|l| l.starts_with("# TYPE")) {
            let name = line.split(' ').nth(2).unwrap();
            assert!(
                out.contains(&format!("# HELP {name} ")),
                "{name} lacks HELP"
            );
        }
    }
}

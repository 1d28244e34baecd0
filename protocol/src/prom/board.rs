//! Board health: thermal zones, hwmon sensors (the Raspberry Pi's rpi_volt alarm among
//! them), the Pi firmware's throttling flags, CPU frequency, cooling devices, cgroup
//! facts and ext4 lifetime writes (node_thermal_zone_temp, node_hwmon_*,
//! node_cpu_scaling_frequency_hertz, node_cooling_device_*).

use std::fmt::Write;

use super::{b, Kind, Renderer};
use crate::snapshot::HwmonSensor;

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

pub(super) fn render(r: &mut Renderer<'_, '_>) {
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
        "armada_cpu_frequency_max_hertz",
        Gauge,
        "Highest frequency the CPU supports (cpuinfo_max_freq).",
        |s, e| {
            for f in &s.health.cpu_frequency {
                num.clear();
                let _ = write!(num, "{}", f.cpu);
                e.opt(&[("cpu", &num)], f.max_hertz.map(|v| v as f64));
            }
        },
    );
    r.family(
        "armada_cpu_scaling_frequency_max_hertz",
        Gauge,
        "Frequency cap in force now (scaling_max_freq); below the maximum means capped.",
        |s, e| {
            for f in &s.health.cpu_frequency {
                num.clear();
                let _ = write!(num, "{}", f.cpu);
                e.opt(&[("cpu", &num)], f.scaling_max_hertz.map(|v| v as f64));
            }
        },
    );
    r.family(
        "armada_cooling_device_cur_state",
        Gauge,
        "Current throttle state of a cooling device (0 = not cooling).",
        |s, e| {
            for c in &s.health.cooling {
                e.sample(
                    &[("device", &c.device), ("type", &c.kind)],
                    c.cur_state as f64,
                );
            }
        },
    );
    r.family(
        "armada_cooling_device_max_state",
        Gauge,
        "Highest throttle state of a cooling device.",
        |s, e| {
            for c in &s.health.cooling {
                e.sample(
                    &[("device", &c.device), ("type", &c.kind)],
                    c.max_state as f64,
                );
            }
        },
    );
}

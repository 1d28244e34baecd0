//! What the rules see of a node, made from the store's latest snapshot.
//!
//! A field the agent does not report (yet: a container's restart count) is read from
//! the snapshot's JSON by name and stays `None` while absent, so the rules over it are
//! silent, never wrong.

use serde::Deserialize;
use serde_json::Value;

use super::rules::{ContainerView, FsView, NodeView};

// What the rules read of a snapshot, and nothing else: one pass over the stored JSON
// builds only these, so a first pass over 10,000 silent nodes holds one node's few
// fields at a time, never a whole parsed `Snapshot` or JSON tree. The names and types
// are `protocol::snapshot`'s (the test below checks they map the same); every field
// defaults, since the stored JSON was checked against the full type when it came in.

#[derive(Default, Deserialize)]
#[serde(default)]
struct Seen {
    host: SeenHost,
    containers: Vec<SeenContainer>,
    health: SeenHealth,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct SeenHost {
    memory: Option<SeenMemory>,
    filesystems: Vec<SeenFs>,
    clock: Option<SeenClock>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct SeenMemory {
    total_bytes: u64,
    available_bytes: Option<u64>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct SeenFs {
    device: String,
    mountpoint: String,
    size_bytes: u64,
    free_bytes: u64,
    avail_bytes: u64,
    readonly: Option<bool>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct SeenClock {
    synced: bool,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct SeenContainer {
    id: String,
    name: String,
    service: Option<String>,
    memory: Option<SeenContainerMemory>,
    restart_count: Option<u64>,
    /// Not in the protocol's type: an older agent's name, read if present.
    restarts: Option<Value>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct SeenContainerMemory {
    oom_kills: Option<u64>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct SeenHealth {
    thermal: Vec<SeenZone>,
    hwmon: Vec<SeenSensor>,
    under_voltage: Option<bool>,
    throttled: Option<SeenThrottled>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct SeenZone {
    zone: String,
    kind: String,
    celsius: f64,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct SeenSensor {
    chip: String,
    alarm: Option<bool>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct SeenThrottled {
    under_voltage_now: bool,
    frequency_capped_now: bool,
    throttled_now: bool,
    soft_temp_limit_now: bool,
    under_voltage_since_boot: bool,
}

/// The snapshot-derived half of a [`NodeView`] (the caller fills identity and status).
pub fn view_from_snapshot(json: &str) -> Option<NodeView> {
    let snap: Seen = serde_json::from_str(json).ok()?;
    Some(view(snap))
}

fn view(snap: Seen) -> NodeView {
    let h = snap.health;
    let t = h.throttled.as_ref();
    let rpi_volt_alarm = h
        .hwmon
        .iter()
        .filter(|s| s.chip == "rpi_volt")
        .find_map(|s| s.alarm);
    let under_voltage_now = match (
        h.under_voltage,
        t.map(|t| t.under_voltage_now),
        rpi_volt_alarm,
    ) {
        (None, None, None) => None,
        (a, b, c) => Some(a == Some(true) || b == Some(true) || c == Some(true)),
    };
    let hottest = h
        .thermal
        .into_iter()
        .filter(|z| z.celsius.is_finite())
        .max_by(|a, b| a.celsius.total_cmp(&b.celsius));
    let filesystems = snap
        .host
        .filesystems
        .into_iter()
        .map(|f| {
            let used = f.size_bytes.saturating_sub(f.free_bytes);
            let denom = used.saturating_add(f.avail_bytes);
            FsView {
                mountpoint: f.mountpoint,
                device: f.device,
                used_ratio: (f.size_bytes > 0 && denom > 0).then(|| used as f64 / denom as f64),
                read_only: f.readonly,
            }
        })
        .collect();
    let memory_available_ratio = snap.host.memory.as_ref().and_then(|m| {
        let avail = m.available_bytes?;
        (m.total_bytes > 0).then(|| avail as f64 / m.total_bytes as f64)
    });
    let containers = snap
        .containers
        .into_iter()
        .map(|c| ContainerView {
            oom_kills: c.memory.as_ref().and_then(|m| m.oom_kills),
            restart_count: c
                .restart_count
                .or_else(|| c.restarts.as_ref().and_then(Value::as_u64)),
            id: c.id,
            name: c.name,
            service: c.service,
        })
        .collect();
    NodeView {
        under_voltage_now,
        under_voltage_since_boot: t.map(|t| t.under_voltage_since_boot),
        throttled_now: t
            .map(|t| t.throttled_now || t.frequency_capped_now || t.soft_temp_limit_now),
        max_temperature_celsius: hottest.as_ref().map(|z| z.celsius),
        hottest_zone: hottest.map(|z| if z.kind.is_empty() { z.zone } else { z.kind }),
        filesystems,
        memory_available_ratio,
        containers,
        clock_synced: snap.host.clock.as_ref().map(|c| c.synced),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::snapshot::Snapshot;
    use protocol::snapshot::{
        BoardHealth, ClockState, Filesystem, HwmonSensor, Memory, ThermalZone, Throttled,
    };

    #[test]
    fn health_fields_map_to_the_view() {
        let mut s = Snapshot {
            health: BoardHealth {
                thermal: vec![
                    ThermalZone {
                        zone: "thermal_zone0".into(),
                        kind: "cpu-thermal".into(),
                        celsius: 82.0,
                    },
                    ThermalZone {
                        zone: "thermal_zone1".into(),
                        kind: "gpu".into(),
                        celsius: 50.0,
                    },
                ],
                hwmon: vec![HwmonSensor {
                    chip: "rpi_volt".into(),
                    sensor: "in0".into(),
                    label: None,
                    value: None,
                    alarm: Some(true),
                }],
                ..Default::default()
            },
            ..Default::default()
        };
        s.host.memory = Some(Memory {
            total_bytes: 1000,
            available_bytes: Some(50),
            ..Default::default()
        });
        s.host.filesystems = vec![Filesystem {
            mountpoint: "/".into(),
            size_bytes: 100,
            free_bytes: 10,
            avail_bytes: 5,
            ..Default::default()
        }];
        s.host.filesystems[0].readonly = Some(true);
        s.host.clock = Some(ClockState::default());
        let v = view_from_snapshot(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(v.under_voltage_now, Some(true));
        assert_eq!(
            v.under_voltage_since_boot, None,
            "no firmware bits on this board"
        );
        assert_eq!(v.max_temperature_celsius, Some(82.0));
        assert_eq!(v.hottest_zone.as_deref(), Some("cpu-thermal"));
        assert_eq!(v.memory_available_ratio, Some(0.05));
        let r = v.filesystems[0].used_ratio.unwrap();
        assert!((r - 90.0 / 95.0).abs() < 1e-9, "{r}");
        assert_eq!(v.filesystems[0].read_only, Some(true));
        assert_eq!(v.clock_synced, Some(false));
        assert_eq!(v.throttled_now, None);

        s.health.hwmon.clear();
        s.host.filesystems[0].readonly = None;
        s.host.clock = None;
        s.health.throttled = Some(Throttled {
            under_voltage_since_boot: true,
            frequency_capped_now: true,
            ..Default::default()
        });
        let v = view_from_snapshot(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(v.under_voltage_now, Some(false));
        assert_eq!(v.under_voltage_since_boot, Some(true));
        assert_eq!(v.throttled_now, Some(true));
        assert_eq!(v.filesystems[0].read_only, None);
        assert_eq!(v.clock_synced, None);
    }
}

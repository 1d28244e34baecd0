//! Board health and host families from fixture trees of a Raspberry Pi 3 and a Pine64,
//! and host /proc files captured on the development VM.

mod metrics_common;
use metrics_common::{close, container, snapshot};

#[test]
fn raspberry_pi_thermal_under_voltage_cpufreq_and_memory_cgroup_off() {
    let s = snapshot("pi3");
    assert_eq!(s.hostname, "pi-node-1");
    let t = &s.health.thermal;
    assert_eq!(t.len(), 1);
    assert_eq!(
        (t[0].zone.as_str(), t[0].kind.as_str()),
        ("thermal_zone0", "cpu-thermal")
    );
    assert!(close(t[0].celsius, 48.312));
    assert_eq!(s.max_temperature(), Some(48.312));

    let volt = s
        .health
        .hwmon
        .iter()
        .find(|h| h.chip == "rpi_volt")
        .expect("rpi_volt sensor");
    assert_eq!(
        (volt.sensor.as_str(), volt.value, volt.alarm),
        ("in0", None, Some(true))
    );
    assert_eq!(s.health.under_voltage, Some(true));
    let temp = s
        .health
        .hwmon
        .iter()
        .find(|h| h.chip == "cpu_thermal")
        .expect("cpu_thermal");
    assert_eq!(temp.value, Some(48.312));
    assert_eq!(s.health.throttled, None, "no /dev/vcio in a fixture");

    let hz: Vec<(u32, u64)> = s
        .health
        .cpu_frequency
        .iter()
        .map(|f| (f.cpu, f.hertz))
        .collect();
    assert_eq!(
        hz,
        [
            (0, 1_200_000_000),
            (1, 1_200_000_000),
            (2, 1_200_000_000),
            (3, 600_000_000)
        ]
    );

    // Memory cgroup disabled: flagged, and no container reports zeros as data.
    assert_eq!(s.health.memory_cgroup_enabled, Some(false));
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains("memory cgroup controller is disabled")),
        "{:?}",
        s.warnings
    );
    let c = container(&s, "b06bf6a3");
    assert!(c.memory.is_none());
    assert!(c.cpu.is_some());

    // SD card wear: the whole device only, and ext4's lifetime counter.
    let disks: Vec<&str> = s.host.disks.iter().map(|d| d.device.as_str()).collect();
    assert_eq!(disks, ["mmcblk0"]);
    assert_eq!(s.host.disks[0].written_bytes, 183_912 * 512);
    assert_eq!(
        s.health.ext4_lifetime_written,
        [("mmcblk0p2".to_string(), 9_876_543 * 1024)]
    );

    let mem = s.host.memory.as_ref().unwrap();
    assert_eq!(
        (mem.total_bytes, mem.available_bytes),
        (944_268 * 1024, Some(701_344 * 1024))
    );
    assert_eq!(s.host.cpu.len(), 5);
    assert_eq!(
        s.cpu_busy_ratio_since_boot()
            .map(|r| (r * 1e6).round() / 1e6),
        Some(round6(11_130.0 / 411_630.0))
    );
}

fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

#[test]
fn pine64_generic_thermal_no_pi_sensors_and_missing_files_are_warnings() {
    let s = snapshot("pine64");
    let zones: Vec<(&str, f64)> = s
        .health
        .thermal
        .iter()
        .map(|z| (z.kind.as_str(), z.celsius))
        .collect();
    assert_eq!(
        zones,
        [
            ("cpu0-thermal", 41.25),
            ("gpu0-thermal", 40.125),
            ("gpu1-thermal", 39.875)
        ]
    );
    assert_eq!(s.health.hwmon.len(), 3);
    assert_eq!(s.health.under_voltage, None, "no rpi_volt on a Pine64");
    assert!(s
        .health
        .cpu_frequency
        .iter()
        .all(|f| f.hertz == 1_152_000_000));
    assert_eq!(s.health.cgroup_version, Some(2));
    assert_eq!(s.health.memory_cgroup_enabled, Some(true));
    // The tree has no diskstats, vmstat, mounts or net/dev: absent metrics, one warning each.
    assert!(s.host.disks.is_empty() && s.host.network.is_empty() && s.host.filesystems.is_empty());
    assert_eq!(s.host.oom_kills_total, None);
    for f in [
        "proc/diskstats",
        "proc/vmstat",
        "proc/self/mounts",
        "proc/net/dev",
    ] {
        assert!(
            s.warnings
                .iter()
                .any(|w| w.contains(f) && w.starts_with("reading ")),
            "no warning for {f}: {:?}",
            s.warnings
        );
    }
    assert!(
        s.host.memory.is_some() && s.host.load.is_some(),
        "what exists is still read"
    );
}

#[test]
fn host_proc_files_captured_on_the_vm_parse_to_their_values() {
    let s = snapshot("v1-cgroupfs");
    let h = &s.host;
    let total = &h.cpu[0];
    assert_eq!(total.cpu, None);
    assert!(close(total.user, 3129.03) && close(total.steal, 6.32));
    assert_eq!(h.cpu.iter().filter(|c| c.cpu.is_some()).count(), 2);
    assert_eq!(h.boot_time_seconds, Some(1_795_610_721));
    assert_eq!(h.context_switches_total, Some(13_185_109));
    assert_eq!(h.forks_total, Some(157_517));
    assert_eq!((h.procs_running, h.procs_blocked), (Some(9), Some(0)));
    assert_eq!(h.threads, Some(232));
    assert_eq!(
        h.processes,
        Some(4),
        "proc/1, proc/2 and the two containers' pids"
    );
    let load = h.load.as_ref().unwrap();
    assert_eq!((load.one, load.five, load.fifteen), (8.16, 8.70, 6.26));
    assert_eq!(h.uptime_seconds, Some(2657.93));
    let m = h.memory.as_ref().unwrap();
    assert_eq!(
        (m.total_bytes, m.available_bytes, m.swap_total_bytes),
        (24_684_084 * 1024, Some(22_361_296 * 1024), 0)
    );
    assert_eq!(h.oom_kills_total, Some(0));
    let vda = h.disks.iter().find(|d| d.device == "vda").expect("vda");
    assert_eq!(
        (vda.reads, vda.read_bytes, vda.writes, vda.written_bytes),
        (390_022, 24_270_786 * 512, 277_537, 68_607_096 * 512)
    );
    let eth0 = h
        .network
        .iter()
        .find(|n| n.interface == "eth0")
        .expect("eth0");
    assert_eq!(
        (
            eth0.rx_bytes,
            eth0.rx_packets,
            eth0.tx_bytes,
            eth0.tx_packets
        ),
        (907_597_578, 20_105, 908_091, 10_798)
    );
    let psi: Vec<&str> = h.pressure.iter().map(|p| p.resource.as_str()).collect();
    assert_eq!(psi, ["cpu", "memory", "io"]);
    let fs: Vec<(&str, &str)> = h
        .filesystems
        .iter()
        .map(|f| (f.mountpoint.as_str(), f.fstype.as_str()))
        .collect();
    assert_eq!(
        fs,
        [("/", "ext4")],
        "bind mounts of the same device are reported once"
    );
    assert!(h.filesystems[0].size_bytes > 0);
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
}

//! Synthetic snapshots shaped like a Pine64's (4 cores, 2 GiB, 3 containers, one
//! thermal zone): what the load generator and the tests send. Not used by `serve`.

use protocol::snapshot::*;

/// A plausible snapshot; `seq` drives the counters so consecutive ones differ.
pub fn snapshot(hostname: &str, instance: &str, seq: u64, collected_at_ms: u64) -> Snapshot {
    let t = seq as f64 * 10.0;
    let cpu = |n: Option<u32>, scale: f64| CpuTimes {
        cpu: n,
        user: 1000.0 * scale + t * 2.0 * scale,
        nice: 3.0,
        system: 400.0 * scale + t * 0.5 * scale,
        idle: 50_000.0 * scale + t * 7.0 * scale,
        iowait: 20.0 * scale,
        irq: 0.0,
        softirq: 10.0 * scale,
        steal: 0.0,
    };
    let mut cpus = vec![cpu(None, 4.0)];
    cpus.extend((0..4).map(|i| cpu(Some(i), 1.0)));
    let container = |i: u64| ContainerMetrics {
        id: format!("{:064x}", i + 1),
        name: format!("web.{}.x{}", i + 1, i),
        image: "nginx:alpine".into(),
        service: Some("web".into()),
        task: Some(format!("web.{}", i + 1)),
        cpu: Some(ContainerCpu {
            usage_seconds: t * 0.1 + i as f64,
            user_seconds: t * 0.07,
            system_seconds: t * 0.03,
            ..Default::default()
        }),
        memory: Some(ContainerMemory {
            usage_bytes: 40 << 20,
            working_set_bytes: 30 << 20,
            rss_bytes: Some(25 << 20),
            cache_bytes: Some(10 << 20),
            limit_bytes: Some(256 << 20),
            oom_kills: Some(0),
            ..Default::default()
        }),
        io: Some(ContainerIo {
            read_bytes: 4096 * seq,
            written_bytes: 8192 * seq,
            reads: seq,
            writes: 2 * seq,
        }),
        pids: Some(ContainerPids {
            current: 3,
            max: Some(100),
        }),
        network: vec![],
        ..Default::default()
    };
    Snapshot {
        instance: instance.into(),
        seq,
        collected_at_ms,
        hostname: hostname.into(),
        host: HostMetrics {
            cpu: cpus,
            load: Some(LoadAverage {
                one: 0.4,
                five: 0.3,
                fifteen: 0.2,
            }),
            memory: Some(Memory {
                total_bytes: 2 << 30,
                free_bytes: 900 << 20,
                available_bytes: Some(1300 << 20),
                buffers_bytes: 50 << 20,
                cached_bytes: 400 << 20,
                swap_total_bytes: 0,
                swap_free_bytes: 0,
                ..Default::default()
            }),
            disks: vec![DiskIo {
                device: "mmcblk0".into(),
                reads: seq * 3,
                read_bytes: seq * 12288,
                writes: seq * 5,
                written_bytes: seq * 40960,
                io_time_seconds: t * 0.01,
                ..Default::default()
            }],
            filesystems: vec![Filesystem {
                device: "/dev/mmcblk0p2".into(),
                mountpoint: "/".into(),
                fstype: "ext4".into(),
                size_bytes: 30 << 30,
                free_bytes: 20 << 30,
                avail_bytes: 19 << 30,
                files: 1_900_000,
                files_free: 1_800_000,
                ..Default::default()
            }],
            network: vec![NetDev {
                interface: "eth0".into(),
                rx_bytes: seq * 150_000,
                rx_packets: seq * 200,
                tx_bytes: seq * 90_000,
                tx_packets: seq * 150,
                ..Default::default()
            }],
            uptime_seconds: Some(t),
            boot_time_seconds: Some(1_764_000_000),
            processes: Some(140),
            threads: Some(310),
            procs_running: Some(1),
            procs_blocked: Some(0),
            context_switches_total: Some(seq * 4000),
            forks_total: Some(seq * 3),
            ..Default::default()
        },
        containers: (0..3).map(container).collect(),
        health: BoardHealth {
            thermal: vec![ThermalZone {
                zone: "thermal_zone0".into(),
                kind: "cpu-thermal".into(),
                celsius: 45.0 + (seq % 10) as f64,
            }],
            cpu_frequency: (0..4)
                .map(|cpu| CpuFrequency {
                    cpu,
                    hertz: 1_152_000_000,
                    ..Default::default()
                })
                .collect(),
            cgroup_version: Some(2),
            memory_cgroup_enabled: Some(true),
            ..Default::default()
        },
        warnings: vec![],
        ..Default::default()
    }
}

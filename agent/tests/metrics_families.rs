//! The families added for SD-card, clock-less swarm boards, read from fixture trees (and
//! the kernel clock from this machine): wider meminfo, disk latency, filesystem
//! read-only state, link state, cooling devices, cpufreq limits, container PSI, pending
//! updates, per-collector runs, clock state.

mod metrics_common;
use metrics_common::{close, container, copy_fixture, run, snapshot, snapshot_at};

#[test]
fn pi3_wider_meminfo_link_state_cpufreq_limits_and_pending_updates() {
    let s = snapshot("pi3");
    let m = s.host.memory.as_ref().expect("meminfo");
    assert_eq!(m.shmem_bytes, Some(12_800 * 1024));
    assert_eq!(m.slab_bytes, Some(46_020 * 1024));
    assert_eq!(m.slab_reclaimable_bytes, Some(27_140 * 1024));
    assert_eq!(m.dirty_bytes, Some(132 * 1024));
    assert_eq!(m.writeback_bytes, Some(0));
    assert_eq!(m.committed_bytes, Some(702_116 * 1024));

    let links = &s.host.links;
    assert_eq!(links.len(), 1, "lo is left out: {links:?}");
    assert_eq!(links[0].interface, "eth0");
    assert_eq!(links[0].operstate, "up");
    assert_eq!(links[0].carrier, Some(true));
    assert_eq!(links[0].speed_bytes, Some(12_500_000), "100 Mbit/s");
    assert_eq!(links[0].mtu_bytes, Some(1500));

    for f in &s.health.cpu_frequency {
        assert_eq!(f.max_hertz, Some(1_200_000_000));
        assert_eq!(f.scaling_max_hertz, Some(1_200_000_000));
    }

    let u = s.updates.as_ref().expect("pending-updates file present");
    assert_eq!(u.count, 3);
    assert_eq!(
        u.packages[2],
        ("linux-image-arm64".to_string(), "6.1.158-1".to_string())
    );
    assert!(u.checked_at_seconds.is_some());

    let disk = &s.host.disks[0];
    assert_eq!(disk.device, "mmcblk0");
    let (reads, read_time) = (disk.reads, disk.read_time_seconds.expect("read time"));
    assert!(
        read_time > 0.0 && reads > 0,
        "latency = time / count is computable"
    );
    assert!(disk.write_time_seconds.is_some() && disk.io_time_weighted_seconds.is_some());

    let fs = &s.host.filesystems;
    assert!(!fs.is_empty());
    assert!(
        fs.iter().all(|f| f.readonly == Some(false)),
        "fixture folders are writable: {fs:?}"
    );
    assert_eq!(
        s.host.clock, None,
        "a fixture root has no kernel clock of its own"
    );

    let text = run("pi3", false);
    for line in [
        "armada_memory_shmem_bytes 13107200\n",
        "armada_network_up{interface=\"eth0\"} 1\n",
        "armada_network_info{interface=\"eth0\",operstate=\"up\"} 1\n",
        "armada_network_speed_bytes{interface=\"eth0\"} 12500000\n",
        "armada_cpu_frequency_max_hertz{cpu=\"0\"} 1200000000\n",
        "armada_pending_updates 3\n",
        "armada_pending_update_info{package=\"openssl\",version=\"3.0.18-1~deb12u1\"} 1\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(text.contains("armada_filesystem_readonly{device=\"/dev/mmcblk0p2\",mountpoint=\"/\",fstype=\"ext4\"} 0\n"));
}

#[test]
fn pine64_cooling_device_and_no_update_file_means_no_family() {
    let s = snapshot("pine64");
    let c = &s.health.cooling;
    assert_eq!(c.len(), 1);
    assert_eq!(
        (
            c[0].device.as_str(),
            c[0].kind.as_str(),
            c[0].cur_state,
            c[0].max_state
        ),
        ("cooling_device0", "cpufreq-cpu0", 0, 7)
    );
    assert_eq!(
        s.updates, None,
        "the timer never ran: absent, not 0 updates"
    );
    let text = run("pine64", false);
    assert!(text.contains(
        "armada_cooling_device_max_state{device=\"cooling_device0\",type=\"cpufreq-cpu0\"} 7\n"
    ));
    assert!(!text.contains("armada_pending_updates"));
}

#[test]
fn v2_container_pressure_is_read_from_captured_files() {
    let s = snapshot("v2");
    let c = container(&s, "0a1b2c3d4e5f");
    let cpu = c
        .pressure
        .iter()
        .find(|p| p.resource == "cpu")
        .expect("cpu.pressure");
    assert!(close(cpu.some_total_seconds, 1517.011024));
    assert!(close(cpu.some_avg10, 0.9795));
    assert_eq!(cpu.full_total_seconds, Some(0.0));
    let io = c.pressure.iter().find(|p| p.resource == "io").unwrap();
    assert_eq!(io.full_total_seconds, Some(8.294975));
    let other = container(&s, "5f1e0c9a8b7d");
    assert!(other.pressure.is_empty(), "no PSI files there: none");
    let text = run("v2", false);
    assert!(
        text.contains("armada_container_pressure_some_seconds_total{container_id=\"0a1b2c3d4e5f")
    );
    assert!(text.contains(",resource=\"memory\"} 17.716203\n"), "{text}");
}

#[test]
fn every_collector_reports_its_run() {
    let s = snapshot("v2");
    let names: Vec<&str> = s.collectors.iter().map(|c| c.collector.as_str()).collect();
    for want in [
        "cpu",
        "loadavg",
        "meminfo",
        "vmstat",
        "pressure",
        "diskstats",
        "filesystem",
        "netdev",
        "netclass",
        "timex",
        "thermal_zone",
        "hwmon",
        "cpufreq",
        "cgroup",
        "containers",
        "updates",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    for c in &s.collectors {
        assert!(c.success, "{c:?}");
        assert!(c.duration_seconds >= 0.0 && c.duration_seconds < 5.0);
        assert_eq!(c.last_success_seconds.map(|t| t > 1e9), Some(true));
    }
}

#[test]
fn a_pending_updates_file_that_lists_nothing_is_zero_not_absent() {
    let tree = copy_fixture("pine64");
    let at = tree.path().join("var/lib/armada/pending-updates");
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    std::fs::write(&at, "").unwrap();
    let s = snapshot_at(tree.path());
    assert_eq!(s.updates.map(|u| u.count), Some(0));
}

#[test]
fn this_machine_reports_its_kernel_clock() {
    // The real root: adjtimex answers without privilege on any Linux.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_armada-agent"))
        .args(["metrics", "--once", "--no-docker", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: protocol::snapshot::Snapshot = serde_json::from_slice(&out.stdout).unwrap();
    let c = s.host.clock.expect("clock state on the real root");
    assert!(c.max_error_seconds >= 0.0);
    assert_eq!(c.steps_total, 0, "one cycle cannot see a step");
    assert!(c.frequency_adjustment_ratio.abs() < 0.01, "{c:?}");
}

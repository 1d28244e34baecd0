//! "Absent, never zero": a counter the kernel does not have is missing from the snapshot
//! and from /metrics, never reported as a 0 that looks like data. Each test copies a
//! fixture tree and takes one kernel feature away, as an older or trimmed kernel would
//! lack it, then checks the family is gone while the rest is still read.

mod metrics_common;
use std::path::Path;

use metrics_common::{container, copy_fixture, drop_lines, run_at, snapshot_at};

const BURN: &str = "b06bf6a3b7e8";
const V2_CGROUPFS: &str = "0a1b2c3d4e5f";

/// Every file under `dir` named `name`, recursively.
fn files_named(dir: &Path, name: &str, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            files_named(&e.path(), name, out);
        } else if e.file_name() == name {
            out.push(e.path());
        }
    }
}

fn remove_all(root: &Path, names: &[&str]) -> usize {
    let mut n = 0;
    for name in names {
        let mut found = Vec::new();
        files_named(root, name, &mut found);
        for f in found {
            std::fs::remove_file(f).unwrap();
            n += 1;
        }
    }
    n
}

#[test]
fn kernel_without_oom_kill_counters_has_no_oom_families() {
    // Before 4.13 neither /proc/vmstat nor memory.oom_control has an oom_kill line.
    let tree = copy_fixture("v1-cgroupfs");
    let root = tree.path();
    let before = snapshot_at(root);
    assert_eq!(before.host.oom_kills_total, Some(0), "captured: present, 0");
    drop_lines(&root.join("proc/vmstat"), "oom_kill");
    let mut oom_control = Vec::new();
    files_named(root, "memory.oom_control", &mut oom_control);
    assert_eq!(oom_control.len(), 2);
    for f in &oom_control {
        drop_lines(f, "oom_kill");
    }

    let s = snapshot_at(root);
    assert_eq!(s.host.oom_kills_total, None);
    let m = container(&s, BURN)
        .memory
        .as_ref()
        .expect("memory still read");
    assert_eq!(m.oom_kills, None, "no oom_kill line: absent, not 0");
    assert_eq!(m.usage_bytes, 335_872, "the rest of memory is unchanged");
    let text = run_at(root, false);
    assert!(!text.contains("armada_oom_kills_total"), "{text}");
    assert!(!text.contains("armada_container_oom_kills_total"));
    assert!(text.contains("armada_container_memory_usage_bytes{"));
}

#[test]
fn kernel_without_psi_has_no_pressure_families() {
    let tree = copy_fixture("v2");
    let root = tree.path();
    let before = snapshot_at(root);
    assert_eq!(before.host.pressure.len(), 3);
    let c = container(&before, V2_CGROUPFS);
    assert_eq!(c.pressure.len(), 3, "captured cgroup PSI files are read");

    std::fs::remove_dir_all(root.join("proc/pressure")).unwrap();
    let removed = remove_all(root, &["cpu.pressure", "memory.pressure", "io.pressure"]);
    assert_eq!(removed, 3);

    let s = snapshot_at(root);
    assert!(s.host.pressure.is_empty());
    assert!(s.containers.iter().all(|c| c.pressure.is_empty()));
    assert!(
        s.warnings.iter().all(|w| !w.contains("pressure")),
        "no PSI is a kernel choice, not a fault: {:?}",
        s.warnings
    );
    let text = run_at(root, false);
    assert!(!text.contains("armada_pressure_"), "{text}");
    assert!(!text.contains("armada_container_pressure_"));
    assert!(text.contains("armada_container_cpu_usage_seconds_total{"));
}

#[test]
fn kernel_without_pids_controller_has_no_pids_families() {
    // cgroup v2: `pids` not in the controllers lists, and no pids.* files.
    let tree = copy_fixture("v2");
    let root = tree.path();
    let mut lists = Vec::new();
    files_named(root, "cgroup.controllers", &mut lists);
    for f in lists {
        let text = std::fs::read_to_string(&f).unwrap();
        std::fs::write(&f, text.replace(" pids", "")).unwrap();
    }
    assert_eq!(remove_all(root, &["pids.current", "pids.max"]), 4);
    let s = snapshot_at(root);
    assert_eq!(s.containers.len(), 2);
    for c in &s.containers {
        assert_eq!(c.pids, None, "{}", c.id);
        assert!(c.cpu.is_some() && c.memory.is_some(), "the rest is read");
    }
    assert!(
        s.warnings.iter().all(|w| !w.contains("pids")),
        "{:?}",
        s.warnings
    );
    let text = run_at(root, false);
    assert!(!text.contains("armada_container_pids"), "{text}");

    // cgroup v1: no pids hierarchy mounted at all.
    let tree = copy_fixture("v1-cgroupfs");
    let root = tree.path();
    std::fs::remove_dir_all(root.join("sys/fs/cgroup/pids")).unwrap();
    let s = snapshot_at(root);
    assert_eq!(s.containers.len(), 2);
    assert!(s.containers.iter().all(|c| c.pids.is_none()));
    assert!(
        s.warnings.iter().all(|w| !w.contains("pids")),
        "{:?}",
        s.warnings
    );
}

#[test]
fn cgroup_without_cpu_controller_has_no_throttling_families() {
    // v2 cpu.stat has only the usage lines when the cpu controller is off for the
    // cgroup: throttling is then unknown, not "never throttled".
    let tree = copy_fixture("v2");
    let root = tree.path();
    let mut stats = Vec::new();
    files_named(root, "cpu.stat", &mut stats);
    assert_eq!(stats.len(), 2);
    for f in &stats {
        for key in ["nr_", "throttled_usec", "burst_usec"] {
            let text = std::fs::read_to_string(f).unwrap();
            if text.lines().any(|l| l.starts_with(key)) {
                drop_lines(f, key);
            }
        }
    }
    let s = snapshot_at(root);
    for c in &s.containers {
        let cpu = c.cpu.as_ref().expect("usage is still read");
        assert!(cpu.usage_seconds > 0.0);
        assert_eq!(
            (cpu.periods, cpu.throttled_periods, cpu.throttled_seconds),
            (None, None, None)
        );
    }
    let text = run_at(root, false);
    assert!(!text.contains("armada_container_cpu_throttled"), "{text}");
    assert!(!text.contains("armada_container_cpu_periods_total"));
}

#[test]
fn memory_stat_without_rss_and_cache_lines_leaves_them_absent() {
    let tree = copy_fixture("v1-cgroupfs");
    let root = tree.path();
    let mut stats = Vec::new();
    files_named(
        &root.join("sys/fs/cgroup/memory"),
        "memory.stat",
        &mut stats,
    );
    for f in &stats {
        for key in ["total_rss", "rss ", "total_cache", "cache "] {
            drop_lines(f, key);
        }
    }
    let s = snapshot_at(root);
    let m = container(&s, BURN).memory.as_ref().expect("memory");
    assert_eq!((m.rss_bytes, m.cache_bytes), (None, None));
    assert_eq!(m.usage_bytes, 335_872);
    let text = run_at(root, false);
    assert!(!text.contains("armada_container_memory_rss_bytes"));
    assert!(!text.contains("armada_container_memory_cache_bytes"));
}

#[test]
fn a_broken_source_fails_its_collector_only() {
    let tree = copy_fixture("v2");
    let root = tree.path();
    std::fs::write(root.join("proc/meminfo"), "garbage\n").unwrap();
    let s = snapshot_at(root);
    assert_eq!(s.host.memory, None);
    let run = |name: &str| {
        s.collectors
            .iter()
            .find(|c| c.collector == name)
            .unwrap_or_else(|| panic!("no collector {name}: {:?}", s.collectors))
    };
    let meminfo = run("meminfo");
    assert!(!meminfo.success);
    assert_eq!(meminfo.last_success_seconds, None, "never succeeded");
    let cpu = run("cpu");
    assert!(cpu.success);
    assert!(cpu.last_success_seconds.unwrap() > 1e9);
    let text = run_at(root, false);
    assert!(text.contains("armada_collector_success{collector=\"meminfo\"} 0\n"));
    assert!(text.contains("armada_collector_success{collector=\"cpu\"} 1\n"));
    assert!(!text.contains("armada_memory_total_bytes"));
}

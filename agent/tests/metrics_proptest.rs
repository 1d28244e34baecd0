//! Property tests of every /proc, /sys and cgroup parser of the agent: no input panics
//! (debug builds also trap integer overflow), every number that comes out is finite
//! (JSON cannot carry NaN or infinity: one would make the manager refuse the report),
//! and values the kernel can write are parsed exactly. Last, whole fixture trees with
//! random files garbled are collected end to end. Case counts are bounded.

use std::path::{Path, PathBuf};

use armada_agent::metrics::cgroup::{detect, discover, v1, v2};
use armada_agent::metrics::pseudofile::{self, parse_f64, parse_i64, parse_u64};
use armada_agent::metrics::{
    cpu, disk, filesystem, link, load, memory, network, pressure, rpi, timex, updates, Collector,
};
use proptest::prelude::*;

mod metrics_common;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const PIECES: &[&str] = &[
    " ",
    "  ",
    "\t",
    "\n",
    "\n",
    ":",
    "=",
    "/",
    "-",
    ".",
    "kB",
    "cpu",
    "cpu0",
    "cpu4294967296",
    "intr",
    "ctxt",
    "btime",
    "processes",
    "procs_running",
    "MemTotal:",
    "MemAvailable:",
    "Shmem:",
    "Slab:",
    "SwapTotal:",
    "oom_kill",
    "some",
    "full",
    "avg10",
    "avg60",
    "avg300",
    "total",
    "inf",
    "nan",
    "NaN",
    "-inf",
    "1e308",
    "1e309",
    "mmcblk0",
    "mmcblk0p1",
    "sda",
    "loop0",
    "nvme0n1p2",
    "lo",
    "eth0",
    "ext4",
    "tmpfs",
    "\\040",
    "\\",
    "\\777",
    "rbytes",
    "wbytes",
    "rios",
    "wios",
    "8:0",
    "Read",
    "Write",
    "Total",
    "usage_usec",
    "user_usec",
    "nr_periods",
    "nr_throttled",
    "throttled_usec",
    "throttled_time",
    "total_rss",
    "rss",
    "cache",
    "anon",
    "file",
    "inactive_file",
    "total_inactive_file",
    "max",
    "memory",
    "user",
    "system",
    "é",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999",
    "-9223372036854775808",
    "0",
    "1",
    "100000",
];

/// Text made of pieces a kernel file is made of, with random numbers and bytes.
fn proc_text() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        6 => proptest::sample::select(PIECES).prop_map(|p| p.as_bytes().to_vec()),
        2 => any::<u64>().prop_map(|n| n.to_string().into_bytes()),
        1 => any::<f64>().prop_map(|n| n.to_string().into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..4),
    ];
    proptest::collection::vec(piece, 0..120).prop_map(|v| v.concat())
}

fn finite(v: f64) -> Result<(), TestCaseError> {
    prop_assert!(v.is_finite(), "non-finite value {}", v);
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn numbers_parse_exactly_or_not_at_all(n in any::<u64>(), i in any::<i64>(), junk in proc_text()) {
        prop_assert_eq!(parse_u64(n.to_string().as_bytes()), Some(n));
        prop_assert_eq!(parse_i64(i.to_string().as_bytes()), Some(i));
        if let Some(v) = parse_f64(&junk) {
            finite(v)?;
        }
        let _ = parse_u64(&junk);
        let _ = parse_i64(&junk);
        let _ = pseudofile::keyed_u64(&junk, b"total");
        let _ = pseudofile::trim(&junk);
    }

    #[test]
    fn proc_stat_loadavg_uptime_meminfo_vmstat(text in proc_text()) {
        let mut cpus = Vec::new();
        let _ = cpu::parse(&text, 100.0, &mut cpus);
        for c in &cpus {
            for v in [c.user, c.nice, c.system, c.idle, c.iowait, c.irq, c.softirq, c.steal] {
                finite(v)?;
            }
        }
        if let Some(l) = load::parse(&text) {
            for v in [l.average.one, l.average.five, l.average.fifteen] {
                finite(v)?;
            }
        }
        let _ = memory::parse(&text);
    }

    #[test]
    fn pressure_diskstats_netdev_mounts(text in proc_text()) {
        for resource in pressure::RESOURCES {
            if let Some(p) = pressure::parse(resource, &text) {
                for v in [p.some_avg10, p.some_avg60, p.some_avg300, p.some_total_seconds] {
                    finite(v)?;
                }
                for v in [p.full_avg10, p.full_avg60, p.full_avg300, p.full_total_seconds].into_iter().flatten() {
                    finite(v)?;
                }
            }
        }
        let mut disks = Vec::new();
        disk::parse(&text, &mut disks);
        let mut net = Vec::new();
        network::parse(&text, true, &mut net);
        for m in filesystem::parse_mounts(&text) {
            prop_assert!(!m.fstype.is_empty());
        }
        let _ = disk::is_whole_disk(&text);
    }

    #[test]
    fn cgroup_files(text in proc_text(), usage in any::<u64>(), period in proptest::option::of(any::<u64>())) {
        let _ = v1::parse_cpuacct_stat(&text);
        if let Some(l) = v1::cpu_limit(&text, period) {
            finite(l)?;
        }
        let m = v1::parse_memory_stat(&text, usage);
        prop_assert!(m.working_set_bytes <= usage);
        let _ = v1::sum_read_write(&text);
        let c = v2::parse_cpu_stat(&text);
        finite(c.usage_seconds)?;
        if let Some(l) = v2::parse_cpu_max(&text) {
            finite(l)?;
        }
        let m = v2::parse_memory_stat(&text, usage);
        prop_assert!(m.working_set_bytes <= usage);
        let _ = v2::parse_io_stat(&text);
        let _ = detect::memory_enabled_v1(&text);
        let _ = discover::container_id(&String::from_utf8_lossy(&text));
    }

    #[test]
    fn sysfs_values_updates_and_clock(text in proc_text(), raw in any::<u32>(),
                                      t in (any::<i32>(), any::<i64>(), any::<i64>(), any::<i64>(), any::<i64>()),
                                      jumps in proptest::collection::vec(-1e12f64..1e12, 0..8)) {
        let _ = link::parse_speed(&text);
        let u = updates::parse(&text);
        prop_assert!(u.packages.len() as u64 <= u.count);
        prop_assert!(u.packages.len() <= updates::MAX_LISTED);
        let th = rpi::decode(raw);
        prop_assert_eq!(th.raw, raw);
        let mut w = timex::StepWatch::default();
        let mut steps = (0, None);
        for j in jumps {
            steps = w.observe(j);
        }
        let c = timex::decode(timex::Timex { status: t.0, offset: t.1, freq: t.2, maxerror: t.3, esterror: t.4 }, steps);
        for v in [c.offset_seconds, c.max_error_seconds, c.estimated_error_seconds, c.frequency_adjustment_ratio] {
            finite(v)?;
        }
    }
}

#[test]
fn non_finite_numbers_never_reach_a_snapshot() {
    assert!(load::parse(b"inf nan 1e309 1/2 3\n").is_none());
    let p = pressure::parse("cpu", b"some avg10=nan avg60=inf avg300=1e309 total=5\n").unwrap();
    for v in [p.some_avg10, p.some_avg60, p.some_avg300] {
        assert!(v.is_finite());
    }
}

/// Every regular file under `dir`.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            files(&e.path(), out);
        } else {
            out.push(e.path());
        }
    }
}

fn all_finite(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Number(n) => n.as_f64().is_some_and(f64::is_finite),
        serde_json::Value::Array(a) => a.iter().all(all_finite),
        serde_json::Value::Object(o) => o.values().all(all_finite),
        _ => true,
    }
}

proptest! {
    #![proptest_config(config(48))]

    /// Whole trees (Pi 3, cgroup v1 and v2) with a few files replaced by garbage: the
    /// collector never panics, and the snapshot still encodes as JSON the manager reads.
    #[test]
    fn garbled_fixture_trees_collect_without_panic(
        tree in proptest::sample::select(&["pi3", "v1-cgroupfs", "v2"][..]),
        picks in proptest::collection::vec((any::<proptest::sample::Index>(), proc_text()), 1..6),
    ) {
        let copy = metrics_common::copy_fixture(tree);
        let mut all = Vec::new();
        files(copy.path(), &mut all);
        all.sort();
        for (index, text) in &picks {
            std::fs::write(index.get(&all), text).unwrap();
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut collector = Collector::new(copy.path().to_path_buf(), None);
        for seq in 0..2 {
            let snap = runtime.block_on(collector.collect("fuzz", seq));
            let json = serde_json::to_value(&snap).unwrap();
            prop_assert!(all_finite(&json), "non-finite number in {}", json);
            let back: protocol::snapshot::Snapshot = serde_json::from_value(json).unwrap();
            prop_assert_eq!(back.seq, seq);
            let mut text = String::new();
            protocol::prom::render(&[protocol::prom::LabelledSnapshot { labels: &[], snapshot: &snap }], &mut text);
        }
    }
}

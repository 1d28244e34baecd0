//! Per-container metrics from fixture cgroup trees: v1 with Docker's cgroupfs driver
//! (captured), v1 with the systemd driver (derived), v2 with both drivers (constructed).

mod metrics_common;
use metrics_common::{close, command, container, copy_fixture, fixture, run_with, snapshot};
use protocol::snapshot::Snapshot;

const BURN: &str = "b06bf6a3b7e8";
const MEM: &str = "2a9ae2c2c1ab";

#[test]
fn v1_cgroupfs_driver_containers_parse_to_captured_values() {
    let s = snapshot("v1-cgroupfs");
    assert_eq!(s.health.cgroup_version, Some(1));
    assert_eq!(s.health.memory_cgroup_enabled, Some(true));
    assert_eq!(s.containers.len(), 2);

    let burn = container(&s, BURN);
    let cpu = burn.cpu.as_ref().expect("cpu");
    assert!(close(cpu.usage_seconds, 2.362171070));
    assert!(
        close(cpu.user_seconds, 2.34),
        "234 ticks at USER_HZ 100: {}",
        cpu.user_seconds
    );
    assert!(close(cpu.system_seconds, 0.01));
    assert_eq!((cpu.periods, cpu.throttled_periods), (Some(45), Some(0)));
    assert_eq!(
        cpu.limit_cpus,
        Some(1.5),
        "--cpus 1.5 is quota 150000 over period 100000"
    );
    let mem = burn.memory.as_ref().expect("memory");
    assert_eq!(mem.usage_bytes, 335_872);
    assert_eq!(mem.limit_bytes, None, "PAGE_COUNTER_MAX means no limit");
    assert_eq!(mem.rss_bytes, Some(61_440));
    assert_eq!(
        burn.pids.as_ref().map(|p| (p.current, p.max)),
        Some((1, None))
    );
    assert!(
        burn.network.is_empty(),
        "--network none has only lo, which is skipped"
    );

    let m = container(&s, MEM).memory.as_ref().expect("memory");
    assert_eq!(m.usage_bytes, 210_526_208);
    assert_eq!(m.limit_bytes, Some(536_870_912));
    assert_eq!(
        m.cache_bytes,
        Some(209_715_200),
        "the 200 MiB tmpfs is page cache (shmem)"
    );
    assert_eq!(
        m.working_set_bytes, 210_526_208,
        "no inactive file pages to subtract"
    );
    assert_eq!(m.oom_kills, Some(0));
}

#[test]
fn v1_systemd_driver_scope_is_found_and_io_summed() {
    let s = snapshot("v1-systemd");
    assert_eq!(
        s.containers.len(),
        1,
        "decoy ssh.service and user.slice are not containers"
    );
    let c = container(&s, BURN);
    assert!(close(c.cpu.as_ref().unwrap().usage_seconds, 2.362171070));
    let io = c.io.as_ref().expect("io");
    assert_eq!(
        (io.read_bytes, io.written_bytes, io.reads, io.writes),
        (1_306_624, 4_198_400, 52, 17)
    );
}

#[test]
fn v2_both_drivers_parse_to_known_values() {
    let s = snapshot("v2");
    assert_eq!(s.health.cgroup_version, Some(2));
    assert_eq!(s.health.memory_cgroup_enabled, Some(true));
    assert_eq!(s.containers.len(), 2);

    let scope = container(&s, "5f1e0c9a");
    let cpu = scope.cpu.as_ref().unwrap();
    assert!(close(cpu.usage_seconds, 0.710531));
    assert!(close(cpu.user_seconds, 0.706811));
    assert!(close(cpu.system_seconds, 0.003720));
    assert_eq!((cpu.periods, cpu.throttled_periods), (Some(120), Some(33)));
    assert!(close(cpu.throttled_seconds.unwrap(), 1.65));
    assert_eq!(cpu.limit_cpus, Some(1.5));
    let mem = scope.memory.as_ref().unwrap();
    assert_eq!(mem.usage_bytes, 71_303_168);
    assert_eq!(mem.working_set_bytes, 71_303_168 - 12_582_912);
    assert_eq!(
        (mem.rss_bytes, mem.cache_bytes),
        (Some(52_428_800), Some(16_777_216))
    );
    assert_eq!(mem.limit_bytes, Some(536_870_912));
    assert_eq!(mem.oom_kills, Some(1));
    let io = scope.io.as_ref().unwrap();
    assert_eq!(
        (io.read_bytes, io.written_bytes, io.reads, io.writes),
        (1_052_672, 4_096_000, 65, 250)
    );
    assert_eq!(
        scope.pids.as_ref().map(|p| (p.current, p.max)),
        Some((7, Some(4096)))
    );
    let names: Vec<&str> = scope.network.iter().map(|n| n.interface.as_str()).collect();
    assert_eq!(names, ["eth0", "eth1"]);
    let eth0 = &scope.network[0];
    assert_eq!(
        (
            eth0.rx_bytes,
            eth0.rx_dropped,
            eth0.tx_bytes,
            eth0.tx_errors
        ),
        (5_242_880, 2, 1_048_576, 1)
    );

    let plain = container(&s, "0a1b2c3d");
    assert_eq!(
        plain.cpu.as_ref().unwrap().limit_cpus,
        None,
        "cpu.max `max 100000` is unlimited"
    );
    let mem = plain.memory.as_ref().unwrap();
    assert_eq!(
        (mem.usage_bytes, mem.working_set_bytes, mem.limit_bytes),
        (4_096_000, 3_584_000, None)
    );
    assert_eq!(plain.pids.as_ref().map(|p| p.max), Some(None));
    assert!(
        plain.network.is_empty(),
        "its pid has no /proc entry in the fixture: no network, no crash"
    );
}

/// The fixture's snapshot with containers only from `--cgroup-parent value`
/// (armada.toml's `agent.cgroup_parent`), as (id prefix, cpu seconds) pairs.
fn scoped(root: &std::path::Path, value: &str) -> Vec<(String, f64)> {
    let s: Snapshot =
        serde_json::from_str(&run_with(root, true, &["--cgroup-parent", value])).unwrap();
    s.containers
        .iter()
        .map(|c| {
            (
                c.id[..8].to_string(),
                c.cpu.as_ref().map_or(-1.0, |c| c.usage_seconds),
            )
        })
        .collect()
}

#[test]
fn cgroup_parent_scopes_discovery_on_v2_for_both_drivers() {
    let v2 = fixture("v2");
    assert_eq!(
        scoped(&v2, "/docker"),
        [("0a1b2c3d".to_string(), 2.5)],
        "cgroupfs driver: /docker only"
    );
    let got = scoped(&v2, "system.slice");
    assert_eq!(got.len(), 1, "systemd driver: system.slice only: {got:?}");
    assert_eq!(got[0].0, "5f1e0c9a");
    assert!(close(got[0].1, 0.710531));
    assert!(
        scoped(&v2, "/user.slice").is_empty(),
        "a subtree without containers has none"
    );
    assert!(
        scoped(&v2, "/no-such-parent").is_empty(),
        "a parent the engine has not made yet: none, no failure"
    );
    assert_eq!(scoped(&v2, "").len(), 2, "empty: the whole hierarchy");

    // A nested slice is where systemd puts it: arm-st.slice is arm.slice/arm-st.slice.
    let root = copy_fixture("v2");
    let cg = root.path().join("sys/fs/cgroup");
    std::fs::create_dir_all(cg.join("arm.slice/arm-st.slice")).unwrap();
    let scope = std::fs::read_dir(cg.join("system.slice"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .find(|n| n.to_string_lossy().starts_with("docker-"))
        .unwrap();
    std::fs::rename(
        cg.join("system.slice").join(&scope),
        cg.join("arm.slice/arm-st.slice").join(&scope),
    )
    .unwrap();
    let got = scoped(root.path(), "arm-st.slice");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "5f1e0c9a");
    assert!(scoped(root.path(), "system.slice").is_empty());
}

#[test]
fn cgroup_parent_scopes_discovery_on_v1_in_every_controller() {
    // cgroupfs driver (captured): each controller's copy of /arm-fx is read, so the
    // memory and pids figures are the same as with the whole hierarchy.
    let root = fixture("v1-cgroupfs");
    let s: Snapshot =
        serde_json::from_str(&run_with(&root, true, &["--cgroup-parent", "/arm-fx/"])).unwrap();
    assert_eq!(s.containers.len(), 2);
    let m = container(&s, MEM).memory.as_ref().expect("memory");
    assert_eq!(
        (m.usage_bytes, m.limit_bytes),
        (210_526_208, Some(536_870_912))
    );
    let burn = container(&s, BURN);
    assert!(close(burn.cpu.as_ref().unwrap().usage_seconds, 2.362171070));
    assert_eq!(burn.pids.as_ref().map(|p| p.current), Some(1));
    assert!(
        scoped(&root, "/arm-other").is_empty(),
        "another engine's parent"
    );

    // systemd driver: the scope in system.slice, nothing in user.slice.
    let root = fixture("v1-systemd");
    let got = scoped(&root, "system.slice");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, &BURN[..8]);
    assert!(scoped(&root, "user.slice").is_empty());
}

#[test]
fn a_bad_cgroup_parent_is_refused_with_what_to_write() {
    for (value, says) in [
        ("docker", "`/docker`"),
        ("/a/../b", "`..` is not allowed"),
        ("a--b.slice", "not a valid systemd slice name"),
    ] {
        let out = command(&fixture("v2"), true, &["--cgroup-parent", value])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{value} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--cgroup-parent"), "{value}: {err}");
        assert!(err.contains(says), "{value}: {err}");
    }
}

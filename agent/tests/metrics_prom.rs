//! The Prometheus exposition of every fixture, and a federation of two of them with node
//! labels, pass `promtool check metrics` (Debian package prometheus).

mod metrics_common;
use metrics_common::{run, snapshot};

use std::io::Write;
use std::process::{Command, Stdio};

use protocol::prom::{render, LabelledSnapshot};

/// Lint problems reported by promtool; `None` when promtool is not installed (outside CI).
fn promtool_problems(text: &str) -> Option<String> {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(_) if std::env::var_os("CI").is_none() => return None,
        Err(e) => panic!("promtool is required in CI (package prometheus): {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(if out.status.success() {
        String::new()
    } else {
        said
    })
}

#[test]
fn every_fixture_exposition_is_lint_clean() {
    for name in ["v1-cgroupfs", "v1-systemd", "v2", "pi3", "pine64"] {
        let text = run(name, false);
        assert!(
            text.contains("# TYPE armada_cpu_seconds_total counter"),
            "{name}"
        );
        if let Some(problems) = promtool_problems(&text) {
            assert!(problems.is_empty(), "{name}: {problems}");
        }
    }
    let pi = run("pi3", false);
    assert!(
        pi.contains("armada_hwmon_alarm{chip=\"rpi_volt\",sensor=\"in0\"} 1\n"),
        "{pi}"
    );
    assert!(pi.contains("armada_memory_cgroup_enabled 0\n"));
    assert!(pi.contains(
        "armada_thermal_zone_celsius{zone=\"thermal_zone0\",type=\"cpu-thermal\"} 48.312\n"
    ));
    assert!(pi.contains("armada_disk_written_bytes_total{device=\"mmcblk0\"} 94162944\n"));
    assert!(
        !pi.contains("armada_container_memory_usage_bytes"),
        "no memory samples when the controller is off"
    );
}

#[test]
fn federation_of_two_nodes_is_lint_clean_and_labelled() {
    let (a, b) = (snapshot("v2"), snapshot("pi3"));
    let mut text = String::new();
    render(
        &[
            LabelledSnapshot {
                labels: &[("node", "n1"), ("hostname", "vm")],
                snapshot: &a,
            },
            LabelledSnapshot {
                labels: &[("node", "n2"), ("hostname", "pi-node-1")],
                snapshot: &b,
            },
        ],
        &mut text,
    );
    assert_eq!(
        text.matches("# HELP armada_container_cpu_usage_seconds_total ")
            .count(),
        1
    );
    assert!(text.contains(
        "armada_thermal_zone_celsius{node=\"n2\",hostname=\"pi-node-1\",zone=\"thermal_zone0\""
    ));
    assert!(text.contains("armada_container_memory_working_set_bytes{node=\"n1\",hostname=\"vm\",container_id=\"5f1e0c9a"));
    if let Some(problems) = promtool_problems(&text) {
        assert!(problems.is_empty(), "{problems}");
    }
}

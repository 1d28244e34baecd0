// Shared by the metrics_* tests (included with `mod metrics_common;`): runs the real
// binary against a fixture tree and decodes its JSON snapshot.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use protocol::snapshot::{ContainerMetrics, Snapshot};

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// `armada-agent metrics --once --no-docker --root <fixture> [--json]`, stdout.
pub fn run(name: &str, json: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_armada-agent"));
    cmd.args(["metrics", "--once", "--no-docker", "--root"])
        .arg(fixture(name));
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().expect("running armada-agent");
    assert!(
        out.status.success(),
        "armada-agent failed on {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

pub fn snapshot(name: &str) -> Snapshot {
    serde_json::from_str(&run(name, true)).expect("a Snapshot in JSON")
}

pub fn container<'a>(s: &'a Snapshot, id_prefix: &str) -> &'a ContainerMetrics {
    s.containers
        .iter()
        .find(|c| c.id.starts_with(id_prefix))
        .unwrap_or_else(|| {
            panic!(
                "no container {id_prefix} in {:?}",
                s.containers.iter().map(|c| &c.id).collect::<Vec<_>>()
            )
        })
}

pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

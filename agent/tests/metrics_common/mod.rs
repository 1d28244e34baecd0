// Shared by the metrics_* tests (included with `mod metrics_common;`): runs the real
// binary against a fixture tree and decodes its JSON snapshot.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use protocol::snapshot::{ContainerMetrics, Snapshot};

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// `armada-agent metrics --once --no-docker --root <fixture> [--json]`, stdout.
pub fn run(name: &str, json: bool) -> String {
    run_at(&fixture(name), json)
}

/// The same against any root folder (a fixture copy a test changed).
pub fn run_at(root: &Path, json: bool) -> String {
    run_with(root, json, &[])
}

/// The same with more arguments (`--cgroup-parent /docker`).
pub fn run_with(root: &Path, json: bool, extra: &[&str]) -> String {
    let out = command(root, json, extra)
        .output()
        .expect("running armada-agent");
    let name = root.display();
    assert!(
        out.status.success(),
        "armada-agent failed on {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// `armada-agent metrics --once --no-docker --root <root> [--json] <extra>`, not run.
pub fn command(root: &Path, json: bool, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_armada-agent"));
    cmd.args(["metrics", "--once", "--no-docker", "--root"])
        .arg(root);
    if json {
        cmd.arg("--json");
    }
    cmd.args(extra);
    cmd
}

pub fn snapshot(name: &str) -> Snapshot {
    serde_json::from_str(&run(name, true)).expect("a Snapshot in JSON")
}

pub fn snapshot_at(root: &Path) -> Snapshot {
    serde_json::from_str(&run_at(root, true)).expect("a Snapshot in JSON")
}

/// A writable copy of a fixture tree, for tests that take a kernel feature away.
pub fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary folder");
    copy_tree(&fixture(name), dir.path());
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Drops every line starting with `prefix` from `path`.
pub fn drop_lines(path: &Path, prefix: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    let kept: String = text
        .lines()
        .filter(|l| !l.starts_with(prefix))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(kept, text, "{} had no {prefix} line", path.display());
    std::fs::write(path, kept).unwrap();
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

//! Honest skips for tests that need a tool, root or a device (issue 12).
//!
//! Under `CI=true` a missing requirement FAILS the test: CI installs every tool
//! (`ci/host-deps.sh`) and runs as root, so a skip there would hide a broken set-up.
//! Elsewhere the test prints a loud `SKIP` line and appends it to the file named by
//! `$ARMADA_SKIP_LOG`, which `ci/test.sh` sets and counts in its tier summary.
//!
//! Loaded once per test crate as `test_skip` with `#[path]` (src/main.rs under
//! cfg(test), tests/flash.rs), so src/bmap.rs and src/fatfile.rs tests call
//! `crate::test_skip`; std only.

#![allow(dead_code)] // each includer uses part of it

use std::io::Write;

/// Whether this run is CI (`CI=true`, as `.ci/run` is started).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A requirement of the current test is missing: fails under CI, else records a skip.
/// The caller returns right after.
#[track_caller]
pub fn required(what: &str) {
    if in_ci() {
        panic!(
            "CI=true and {what}: CI must have every tool (ci/host-deps.sh), root and loop devices"
        );
    }
    record(what);
}

/// Something this machine cannot do at all (a kernel feature, not a missing package):
/// recorded and counted as a skip even under CI, never silent.
pub fn not_applicable(what: &str) {
    record(what);
}

fn record(what: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("unnamed test")
        .to_string();
    let line = format!("SKIP {test}: {what}");
    eprintln!("\n********** {line} **********\n");
    if let Ok(path) = std::env::var("ARMADA_SKIP_LOG") {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

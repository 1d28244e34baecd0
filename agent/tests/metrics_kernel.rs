//! Real kernel files, made by the test itself in namespaces of its own (root only):
//! - multi-page seq_files must be read whole: `/proc/net/dev` of a network namespace
//!   with 120 veth pairs (~30 KB) and the mount table of a mount namespace with 200
//!   tmpfs mounts (~15 KB). The old reader stopped at the first short read (a page).
//! - a read-only mount is reported read-only.
//!
//! Interfaces and mounts are named `arm-mx-*`; they live in namespaces that die with
//! the holder process, which is killed and reaped on every exit path.
//! Not root: a loud SKIP (also appended to `$ARMADA_SKIP_LOG`); under `CI=true` a failure.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use armada_agent::metrics::network;
use armada_agent::metrics::pseudofile::{lines, PseudoFile};
use protocol::snapshot::Snapshot;

mod metrics_common;

fn may_run(what: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        !ci,
        "{what} needs root (namespaces): under CI=true this is a failure"
    );
    let line = format!("SKIP {what}: needs root (network/mount namespaces)");
    eprintln!("\n********** {line} **********\n");
    if let Ok(path) = std::env::var("ARMADA_SKIP_LOG") {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
    false
}

/// A shell in new namespaces that prints `ready` once set up, then waits for stdin to
/// close. Killed and reaped on drop, which frees its namespaces (and their veths and
/// mounts) whatever the test did.
struct Holder(Child);

impl Holder {
    fn start(unshare: &[&str], script: &str) -> Holder {
        let mut child = Command::new("unshare")
            .args(unshare)
            .args(["--", "sh", "-ec", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("running unshare (util-linux)");
        let mut line = String::new();
        let out = child.stdout.take().expect("piped stdout");
        let h = Holder(child);
        // A failing set-up exits: stdout closes and the line is empty.
        BufReader::new(out).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "namespace set-up failed");
        h
    }

    fn ns(&self, kind: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/{kind}", self.0.id()))
    }

    fn proc_dir(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}", self.0.id()))
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `armada-agent metrics --once --json --no-docker [args]` inside the holder's
/// namespaces (`(flag, path)` pairs for nsenter).
fn agent_in(namespaces: &[(&str, PathBuf)], args: &[&str]) -> Snapshot {
    let mut cmd = Command::new("nsenter");
    for (flag, path) in namespaces {
        cmd.arg(format!("{flag}={}", path.display()));
    }
    let out = cmd
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_armada-agent"))
        .args(["metrics", "--once", "--json", "--no-docker"])
        .args(args)
        .output()
        .expect("running nsenter (util-linux)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a snapshot")
}

#[test]
fn net_dev_with_240_veths_is_read_whole() {
    if !may_run("net_dev_with_240_veths_is_read_whole") {
        return;
    }
    // A mount namespace too, with its own sysfs: /sys/class/net shows the interfaces
    // of the network namespace that mounted sysfs.
    let ns = Holder::start(
        &["--net", "--mount", "--propagation", "private"],
        "mount -t sysfs arm-mx-sysfs /sys; for i in $(seq 1 120); do ip link add arm-mx-a$i type veth peer name arm-mx-b$i; done; echo ready; read _ || true",
    );
    let dir = ns.proc_dir().join("net");
    let whole = std::fs::read(dir.join("dev")).unwrap();
    assert!(
        whole.len() > 3 * 4096,
        "{} bytes: not a multi-page table",
        whole.len()
    );
    let mut f = PseudoFile::new();
    for round in 0..2 {
        // The second round reads the kept-open file again from offset 0.
        let got = f.read_in(&dir, "dev").unwrap().to_vec();
        assert_eq!(got.len(), whole.len(), "round {round}: cut short");
        let mut out = Vec::new();
        network::parse(&got, true, &mut out);
        assert_eq!(out.len(), 241, "lo and 240 veth ends");
        assert!(out.iter().any(|n| n.interface == "arm-mx-b120"));
    }

    // End to end: the agent in that namespace reports every interface and its link.
    let s = agent_in(&[("--net", ns.ns("net")), ("--mount", ns.ns("mnt"))], &[]);
    assert_eq!(s.host.network.len(), 241);
    assert_eq!(s.host.links.len(), 240, "every veth end but lo");
    let l = s
        .host
        .links
        .iter()
        .find(|l| l.interface == "arm-mx-a77")
        .expect("a late veth");
    assert_eq!(l.operstate, "down", "created, never set up");
    assert_eq!(l.carrier, None, "carrier is unreadable while down: absent");
    assert_eq!(l.mtu_bytes, Some(1500));
}

#[test]
fn mount_table_over_8_kib_is_read_whole() {
    if !may_run("mount_table_over_8_kib_is_read_whole") {
        return;
    }
    let points = tempfile::tempdir().unwrap();
    let script = format!(
        "for i in $(seq 1 200); do mkdir -p {d}/arm-mx-$i; mount -t tmpfs -o size=4k arm-mx-$i {d}/arm-mx-$i; done; echo ready; read _ || true",
        d = points.path().display()
    );
    let ns = Holder::start(&["--mount", "--propagation", "private"], &script);
    let dir = ns.proc_dir();
    let whole = std::fs::read(dir.join("mounts")).unwrap();
    assert!(whole.len() > 8192, "{} bytes", whole.len());
    let mut f = PseudoFile::new();
    let got = f.read_in(&dir, "mounts").unwrap().to_vec();
    assert_eq!(got.len(), whole.len(), "the mount table was cut short");
    let ours = lines(&got).filter(|l| l.starts_with(b"arm-mx-")).count();
    assert_eq!(ours, 200, "every tmpfs mount, the last one included");
    let last = format!("arm-mx-200 {}/arm-mx-200 tmpfs", points.path().display());
    assert!(String::from_utf8_lossy(&got).contains(&last));
    drop(ns);
}

#[test]
fn a_read_only_mount_is_reported_read_only() {
    if !may_run("a_read_only_mount_is_reported_read_only") {
        return;
    }
    // A fixture root bind-mounted read-only onto itself in a private mount namespace:
    // its mount table names "/" (ext4), which the agent statvfs-es at the root.
    let tree = metrics_common::copy_fixture("pi3");
    let root = tree.path().display().to_string();
    let ns = Holder::start(
        &["--mount", "--propagation", "private"],
        &format!("mount --bind {root} {root}; mount -o remount,bind,ro {root}; echo ready; read _ || true"),
    );
    let s = agent_in(&[("--mount", ns.ns("mnt"))], &["--root", &root]);
    let fs = s
        .host
        .filesystems
        .iter()
        .find(|f| f.mountpoint == "/")
        .expect("the root filesystem");
    assert_eq!(fs.readonly, Some(true), "{fs:?}");
    drop(ns);
    // Outside the namespace the same folder is writable again.
    let s = metrics_common::snapshot_at(tree.path());
    let fs = s
        .host
        .filesystems
        .iter()
        .find(|f| f.mountpoint == "/")
        .unwrap();
    assert_eq!(fs.readonly, Some(false));
}

/// A cgroup the test made (v1 controller folders), removed on every exit path.
struct TestCgroup(Vec<PathBuf>);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// The premise of `PseudoFile::read_record` on this kernel: a file generated by one
/// show() call comes whole in one read, even when it is larger than a page (the
/// kernel grows its seq_file buffer until the record fits). The file: `devices.list`
/// of a v1 devices cgroup made here with 700 rules (~7 KB, one record); its contents
/// are stable, so the one-read result must equal a read-until-0 byte for byte.
#[test]
fn a_one_record_file_over_a_page_comes_whole_in_one_read() {
    if !may_run("a_one_record_file_over_a_page_comes_whole_in_one_read") {
        return;
    }
    let base = PathBuf::from("/sys/fs/cgroup/devices");
    if !base.join("devices.list").exists() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !ci,
            "no cgroup v1 devices controller: under CI=true a failure"
        );
        eprintln!("\n********** SKIP one-record file over a page: no cgroup v1 devices controller **********\n");
        return;
    }
    let dir = base.join(format!("arm-ap-devlist-{}", std::process::id()));
    std::fs::create_dir(&dir).unwrap();
    let _cg = TestCgroup(vec![dir.clone()]);
    std::fs::write(dir.join("devices.deny"), "a").unwrap();
    for minor in 1..=700 {
        std::fs::write(dir.join("devices.allow"), format!("c 1:{minor} r")).unwrap();
    }
    let whole = std::fs::read(dir.join("devices.list")).unwrap();
    assert!(whole.len() > 4096, "{} bytes: not over a page", whole.len());
    let mut f = PseudoFile::new();
    for round in 0..2 {
        // Round 0 opens the file; round 1 reads the kept-open file again from 0.
        let got = f.read_record(&dir, "devices.list").unwrap().to_vec();
        assert_eq!(got, whole, "round {round}: one read was not the whole file");
    }
}

/// The files the agent reads with `read_record`, on this host, against a read until 0:
/// the same lines with the same keys (values move between the two reads).
#[test]
fn the_hosts_one_record_files_come_whole_in_one_read() {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let mut files: Vec<PathBuf> = [
        "/proc/stat",
        "/proc/meminfo",
        "/proc/loadavg",
        "/proc/uptime",
        "/proc/pressure/cpu",
        "/proc/pressure/memory",
        "/proc/pressure/io",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    // This process's own cgroup files, v1 or v2, whichever the host runs.
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        let names: &[&str] = match controllers {
            "" => &[
                "cpu.stat",
                "memory.stat",
                "memory.current",
                "io.stat",
                "pids.current",
                "memory.events",
            ],
            c if c.split(',').any(|c| c == "memory") => {
                &["memory.stat", "memory.usage_in_bytes", "memory.oom_control"]
            }
            c if c.split(',').any(|c| c == "cpuacct") => &["cpuacct.usage", "cpuacct.stat"],
            c if c.split(',').any(|c| c == "blkio") => &[
                "blkio.throttle.io_service_bytes",
                "blkio.throttle.io_serviced",
            ],
            _ => &[],
        };
        let dir = if controllers.is_empty() {
            PathBuf::from("/sys/fs/cgroup").join(rel)
        } else {
            let c = controllers.split(',').next().unwrap_or_default();
            PathBuf::from("/sys/fs/cgroup").join(c).join(rel)
        };
        files.extend(names.iter().map(|n| dir.join(n)));
    }
    // A line's key is its first field; a line that is one value (`cpuacct.usage`) has
    // none, and only counts.
    let keys = |b: &[u8]| -> Vec<Vec<u8>> {
        lines(b)
            .map(|l| {
                let mut f = l
                    .split(|c| c.is_ascii_whitespace())
                    .filter(|f| !f.is_empty());
                match (f.next(), f.next()) {
                    (Some(k), Some(_)) => k.to_vec(),
                    _ => Vec::new(),
                }
            })
            .collect()
    };
    let mut f = PseudoFile::new();
    let mut checked = 0;
    for path in &files {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
        else {
            continue;
        };
        let Ok(whole) = f.read_in(dir, name).map(|b| b.to_vec()) else {
            continue; // this host lacks it (no PSI, other controllers)
        };
        let one = f.read_record(dir, name).unwrap().to_vec();
        assert_eq!(keys(&one), keys(&whole), "{}", path.display());
        assert!(one.ends_with(b"\n"), "{}: cut short", path.display());
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} files checked: {files:?}");
}

//! What a node tells the manager about itself when it registers ([`NodeFacts`]).
//!
//! Read once per start from a root path (`/` on a board; a prepared tree in tests):
//! `etc/machine-id`, `etc/hostname`, `proc/sys/kernel/osrelease`, `proc/cpuinfo`,
//! `proc/meminfo`. The Docker version comes from the engine, filled in by the caller.

use std::fs;
use std::path::Path;

use anyhow::Context;
use protocol::config::FirstBootConfig;
use protocol::wire::NodeFacts;

/// The node's facts; `docker_version` is left `None` for the caller to fill.
pub fn read(root: &Path, cfg: &FirstBootConfig) -> anyhow::Result<NodeFacts> {
    let machine_id_path = root.join("etc/machine-id");
    let machine_id = fs::read_to_string(&machine_id_path)
        .with_context(|| format!("reading {}", machine_id_path.display()))?
        .trim()
        .to_string();
    if machine_id.is_empty() {
        anyhow::bail!(
            "{} is empty: first boot has not made a machine id",
            machine_id_path.display()
        );
    }
    let hostname = hostname(root, cfg);
    let kernel = read_trimmed(&root.join("proc/sys/kernel/osrelease"))
        .or_else(|| uname_field(|u| u.release()))
        .unwrap_or_default();
    let cpus = fs::read_to_string(root.join("proc/cpuinfo"))
        .ok()
        .map(|t| count_processors(&t))
        .filter(|&n| n > 0)
        .or_else(|| {
            std::thread::available_parallelism()
                .ok()
                .map(|n| n.get() as u32)
        })
        .unwrap_or(1);
    let memory_bytes = fs::read_to_string(root.join("proc/meminfo"))
        .ok()
        .and_then(|t| mem_total_bytes(&t))
        .unwrap_or(0);
    Ok(NodeFacts {
        hostname,
        board: cfg.board.clone(),
        role: cfg.role,
        machine_id,
        arch: std::env::consts::ARCH.to_string(),
        kernel,
        cpus,
        memory_bytes,
        docker_version: None,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        engine_id: None,
    })
}

/// The config's hostname when set (first boot applies it), else `etc/hostname`, else
/// the running kernel's.
pub fn hostname(root: &Path, cfg: &FirstBootConfig) -> String {
    if !cfg.hostname.is_empty() {
        return cfg.hostname.clone();
    }
    read_trimmed(&root.join("etc/hostname"))
        .filter(|h| !h.is_empty())
        .or_else(|| uname_field(|u| u.nodename()))
        .unwrap_or_else(|| "localhost".to_string())
}

/// A field of the running kernel's `uname(2)`: the fallback when the root's files are
/// unreadable. (sysinfo did the same for these two fields, from a crate of its own.)
fn uname_field(field: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr) -> Option<String> {
    let u = nix::sys::utsname::uname().ok()?;
    Some(field(&u).to_string_lossy().into_owned()).filter(|s| !s.is_empty())
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// Number of `processor` entries in `/proc/cpuinfo`.
pub fn count_processors(cpuinfo: &str) -> u32 {
    cpuinfo
        .lines()
        .filter(|l| l.split(':').next().map(str::trim) == Some("processor"))
        .count() as u32
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uname_fallback_is_the_running_kernels() {
        let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        assert_eq!(
            uname_field(|u| u.release()).as_deref(),
            Some(release.trim())
        );
        let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(uname_field(|u| u.nodename()).as_deref(), Some(host.trim()));
    }

    // Captured from a Raspberry Pi 3 running Debian 12 (trimmed to two cores).
    const CPUINFO_RPI3: &str =
        "processor\t: 0\nBogoMIPS\t: 38.40\nFeatures\t: fp asimd evtstrm crc32 cpuid\n\
        CPU implementer\t: 0x41\n\nprocessor\t: 1\nBogoMIPS\t: 38.40\n\nHardware\t: BCM2835\n";

    #[test]
    fn parses_cpu_count_and_memory() {
        assert_eq!(count_processors(CPUINFO_RPI3), 2);
        assert_eq!(
            mem_total_bytes("MemTotal:         948304 kB\nMemFree: 1 kB\n"),
            Some(948304 * 1024)
        );
        assert_eq!(mem_total_bytes("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn reads_facts_from_a_root_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(root.join("proc/sys/kernel")).unwrap();
        fs::write(
            root.join("etc/machine-id"),
            "0123456789abcdef0123456789abcdef\n",
        )
        .unwrap();
        fs::write(root.join("etc/hostname"), "pine-01\n").unwrap();
        fs::write(root.join("proc/sys/kernel/osrelease"), "6.1.0-rpi\n").unwrap();
        fs::write(root.join("proc/cpuinfo"), CPUINFO_RPI3).unwrap();
        fs::write(root.join("proc/meminfo"), "MemTotal: 1000 kB\n").unwrap();
        let cfg = FirstBootConfig {
            board: "pine64".into(),
            ..Default::default()
        };
        let f = read(root, &cfg).unwrap();
        assert_eq!(f.hostname, "pine-01");
        assert_eq!(f.machine_id, "0123456789abcdef0123456789abcdef");
        assert_eq!(f.kernel, "6.1.0-rpi");
        assert_eq!(f.cpus, 2);
        assert_eq!(f.memory_bytes, 1_024_000);
        assert_eq!(f.board, "pine64");

        let named = FirstBootConfig {
            hostname: "rpi-07".into(),
            ..Default::default()
        };
        assert_eq!(read(root, &named).unwrap().hostname, "rpi-07");
    }

    #[test]
    fn missing_machine_id_names_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let err = format!(
            "{:#}",
            read(tmp.path(), &FirstBootConfig::default()).unwrap_err()
        );
        assert!(err.contains("etc/machine-id"), "{err}");
    }
}

//! Host tools the build runs, each named with the Debian package that provides it.

use anyhow::{bail, Result};

/// (program, package) pairs needed to assemble any image.
pub const ASSEMBLY: &[(&str, &str)] = &[
    ("mkfs.ext4", "e2fsprogs"),
    ("debugfs", "e2fsprogs"),
    ("mkfs.vfat", "dosfstools"),
    ("mmd", "mtools"),
    ("mcopy", "mtools"),
    ("tar", "tar"),
];
/// Needed to make a Debian rootfs for arm64 on another architecture.
pub const DEBIAN_ROOTFS: &[(&str, &str)] = &[
    ("mmdebstrap", "mmdebstrap"),
    ("arch-test", "arch-test"),
    ("qemu-aarch64-static", "qemu-user-static"),
];

/// Where `prog` is on `path` (a PATH-style list), if anywhere.
pub fn find_in(prog: &str, path: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

fn search_path() -> String {
    // sbin folders are not on every user's PATH, but mkfs and debugfs live there.
    format!(
        "{}:/usr/sbin:/sbin:/usr/bin:/bin",
        std::env::var("PATH").unwrap_or_default()
    )
}

/// The full path of `prog` (PATH, then the sbin folders), or the bare name.
pub fn path_of(prog: &str) -> std::path::PathBuf {
    find_in(prog, &search_path()).unwrap_or_else(|| prog.into())
}

/// Refuses with every missing tool and its package.
pub fn require(tools: &[(&str, &str)]) -> Result<()> {
    let path = search_path();
    let missing: Vec<String> = tools
        .iter()
        .filter(|(p, _)| find_in(p, &path).is_none())
        .map(|(p, pkg)| format!("`{p}` (Debian package {pkg})"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing host tools: {}; install them with `apt-get install` or run ci/host-deps.sh --build",
            missing.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_is_named_with_its_package() {
        let e = require(&[("armada-no-such-tool", "armada-pkg")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("armada-no-such-tool") && e.contains("armada-pkg"),
            "{e}"
        );
        assert!(require(&[("sh", "dash")]).is_ok());
    }
}

//! Does the userland's systemd run on the kernel the board boots?
//!
//! systemd documents, per release, the oldest kernel it supports at all (the "minimum
//! baseline" in its README's REQUIREMENTS): 3.15 up to 256, 4.3 for 257, 5.4 from 258.
//! A BSP board (longsleep's Pine64 kernel is 3.10) with a current Debian userland would
//! boot into a systemd that is documented not to work there, so the build refuses it,
//! naming both versions, unless the board config supplies a rootfs whose systemd fits.
//!
//! The kernel release is read from the kernel file itself (its `Linux version ...`
//! banner, inside the gzip stream where the file is compressed), the systemd version
//! from the rootfs's dpkg status, and the minimum from the rootfs's own copy of
//! systemd's README where it is installed, else from the table below.

use std::io::Read;
use std::path::Path;

/// The oldest kernel (major, minor) systemd `major_version` supports, per its README
/// (3.15 is what 240-256 state; an older userland brings its own README, read first).
pub fn documented_minimum(systemd_major: u32) -> (u32, u32) {
    match systemd_major {
        0..=256 => (3, 15),
        257 => (4, 3),
        _ => (5, 4),
    }
}

/// The minimum baseline stated in a systemd README: `Kernel versions below X
/// ("minimum baseline")`, else the first `Linux kernel ≥ X` under REQUIREMENTS.
pub fn readme_minimum(readme: &str) -> Option<(u32, u32)> {
    for line in readme.lines() {
        if line.contains("(\"minimum baseline\")") {
            let after = line.split("below").nth(1)?;
            return parse_release(after.trim_start());
        }
    }
    let req = readme.split("REQUIREMENTS:").nth(1)?;
    let first = req.lines().find(|l| l.contains("Linux kernel"))?;
    let v = first.split(['≥', '>']).nth(1)?.trim_start_matches('=');
    parse_release(v.trim_start())
}

/// `3.10.105-bsp` -> (3, 10).
pub fn parse_release(s: &str) -> Option<(u32, u32)> {
    let mut it = s.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// The release in a kernel image's `Linux version RELEASE (` banner.
pub fn banner_release(image: &[u8]) -> Option<String> {
    const NEEDLE: &[u8] = b"Linux version ";
    let at = image.windows(NEEDLE.len()).position(|w| w == NEEDLE)?;
    let rest = &image[at + NEEDLE.len()..];
    let end = rest.iter().position(|&b| b == b' ' || b == 0)?;
    let release = std::str::from_utf8(&rest[..end]).ok()?;
    parse_release(release).map(|_| release.to_string())
}

/// The kernel release of a kernel file: plain (arm64 `Image`) or gzip-compressed
/// (Debian's arm64 `vmlinuz`).
pub fn kernel_release(file: &Path) -> std::io::Result<Option<String>> {
    let data = std::fs::read(file)?;
    if data.starts_with(&[0x1f, 0x8b]) {
        let mut plain = Vec::new();
        // A kernel is tens of MiB unpacked; a bound keeps a bogus file from filling memory.
        flate2::read::MultiGzDecoder::new(&data[..])
            .take(256 << 20)
            .read_to_end(&mut plain)?;
        return Ok(banner_release(&plain));
    }
    Ok(banner_release(&data))
}

/// systemd's version in a dpkg status file: (major, full version).
pub fn systemd_in_status(status: &str) -> Option<(u32, String)> {
    for para in status.split("\n\n") {
        let field = |name: &str| {
            para.lines()
                .find_map(|l| l.strip_prefix(name).map(str::trim))
                .map(str::to_string)
        };
        if field("Package:").as_deref() != Some("systemd") {
            continue;
        }
        if !field("Status:").is_some_and(|s| s.ends_with("installed")) {
            continue;
        }
        let version = field("Version:")?;
        // `252.38-1~deb12u1`, `1:257.9-1`: the major after any epoch.
        let upstream = version.split_once(':').map(|(_, v)| v).unwrap_or(&version);
        let major = upstream
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()?;
        return Some((major, version));
    }
    None
}

/// What the check found.
#[derive(Debug, PartialEq, Eq)]
pub enum Fit {
    /// The kernel is at least systemd's minimum.
    Fits {
        kernel: String,
        systemd: String,
        minimum: (u32, u32),
    },
    /// No systemd in the userland: nothing to check.
    NoSystemd,
    /// The kernel's release could not be read from its file.
    UnknownKernel { systemd: String },
    /// Refused: the message names both versions.
    TooOld(String),
}

/// Checks the rootfs at `rootfs` against the kernel file `kernel` (pure decisions on
/// what is read from those two places).
pub fn check(rootfs: &Path, kernel: &Path, board_file: &str) -> std::io::Result<Fit> {
    let status = std::fs::read_to_string(rootfs.join("var/lib/dpkg/status")).unwrap_or_default();
    let Some((major, systemd)) = systemd_in_status(&status) else {
        return Ok(Fit::NoSystemd);
    };
    let Some(release) = kernel_release(kernel)? else {
        return Ok(Fit::UnknownKernel { systemd });
    };
    let (minimum, source) = match readme_in(rootfs).as_deref().and_then(readme_minimum) {
        Some(m) => (m, "its README in the rootfs"),
        None => (
            documented_minimum(major),
            "systemd's README for that release",
        ),
    };
    let have = parse_release(&release).unwrap_or((0, 0));
    if have >= minimum {
        return Ok(Fit::Fits {
            kernel: release,
            systemd,
            minimum,
        });
    }
    Ok(Fit::TooOld(format!(
        "board config {board_file}: the userland's systemd {systemd} needs Linux {}.{} or newer ({source}), but the board boots Linux {release} ({}). Supply a rootfs whose systemd fits that kernel ([rootfs] tarball with its sha256, or a rootfs profile of an older suite), or a newer kernel.",
        minimum.0,
        minimum.1,
        kernel.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
    )))
}

/// systemd's README as installed in the rootfs (Debian keeps it gzip-compressed).
fn readme_in(rootfs: &Path) -> Option<String> {
    let doc = rootfs.join("usr/share/doc/systemd");
    if let Ok(t) = std::fs::read_to_string(doc.join("README")) {
        return Some(t);
    }
    let gz = std::fs::read(doc.join("README.gz")).ok()?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .take(1 << 20)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Package: docker.io\nStatus: install ok installed\nVersion: 26.1.5+dfsg1-9\n\n\
        Package: systemd\nStatus: install ok installed\nArchitecture: arm64\nVersion: 252.38-1~deb12u1\n";

    #[test]
    fn reads_systemd_from_dpkg_status() {
        assert_eq!(
            systemd_in_status(STATUS),
            Some((252, "252.38-1~deb12u1".into()))
        );
        assert_eq!(
            systemd_in_status(
                "Package: systemd\nStatus: deinstall ok config-files\nVersion: 257.9-1\n"
            ),
            None
        );
        assert_eq!(
            systemd_in_status(
                "Package: systemd\nStatus: install ok installed\nVersion: 1:257.9-1\n"
            ),
            Some((257, "1:257.9-1".into()))
        );
    }

    #[test]
    fn reads_the_kernel_banner_plain_and_gzipped() {
        let mut image = vec![0u8; 4096];
        image.extend_from_slice(b"Linux version 3.10.105-bsp (longsleep@build) #2 SMP\0");
        assert_eq!(banner_release(&image), Some("3.10.105-bsp".into()));
        let dir = tempfile::tempdir().unwrap();
        let gz = dir.path().join("vmlinuz");
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz).unwrap(),
            flate2::Compression::fast(),
        );
        std::io::Write::write_all(&mut enc, &image).unwrap();
        enc.finish().unwrap();
        assert_eq!(kernel_release(&gz).unwrap(), Some("3.10.105-bsp".into()));
        assert_eq!(banner_release(b"no banner here"), None);
    }

    #[test]
    fn minimum_from_readme_text() {
        // Wording of systemd 252's README (Debian 12's /usr/share/doc/systemd/README.gz).
        let v252 = "REQUIREMENTS:\n        Linux kernel ≥ 3.15\n                     ≥ 4.3 for ambient capabilities\n";
        assert_eq!(readme_minimum(v252), Some((3, 15)));
        let v258 = "REQUIREMENTS:\n        Linux kernel ≥ 3.15 for timerfd_create() CLOCK_BOOTTIME support\n\n        ⛔ Kernel versions below 5.4 (\"minimum baseline\") are not supported at all,\n";
        assert_eq!(readme_minimum(v258), Some((5, 4)));
        assert_eq!(documented_minimum(252), (3, 15));
        assert_eq!(documented_minimum(257), (4, 3));
        assert_eq!(documented_minimum(260), (5, 4));
    }

    fn tree(status: &str, banner: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
        std::fs::write(root.join("var/lib/dpkg/status"), status).unwrap();
        let kernel = dir.path().join("Image");
        std::fs::write(&kernel, format!("\0\0{banner} (x@y) #1\0")).unwrap();
        (dir, kernel)
    }

    #[test]
    fn a_3_10_kernel_with_bookworm_systemd_is_refused_naming_both() {
        let (dir, kernel) = tree(STATUS, "Linux version 3.10.105-bsp");
        let fit = check(&dir.path().join("rootfs"), &kernel, "b.toml").unwrap();
        let Fit::TooOld(msg) = fit else {
            panic!("{fit:?}")
        };
        assert!(
            msg.contains("systemd 252.38-1~deb12u1")
                && msg.contains("Linux 3.15")
                && msg.contains("Linux 3.10.105-bsp"),
            "{msg}"
        );
    }

    #[test]
    fn fitting_or_systemd_free_userlands_pass() {
        let (dir, kernel) = tree(STATUS, "Linux version 6.12.57+deb13-arm64");
        assert!(matches!(
            check(&dir.path().join("rootfs"), &kernel, "b.toml").unwrap(),
            Fit::Fits {
                minimum: (3, 15),
                ..
            }
        ));
        // An older userland (a rootfs tarball, say) brings its own README, read first.
        let old = "Package: systemd\nStatus: install ok installed\nVersion: 215-17+deb8u7\n";
        let (dir, kernel) = tree(old, "Linux version 3.10.105-bsp");
        let doc = dir.path().join("rootfs/usr/share/doc/systemd");
        std::fs::create_dir_all(&doc).unwrap();
        std::fs::write(
            doc.join("README"),
            "REQUIREMENTS:\n        Linux kernel >= 3.0\n",
        )
        .unwrap();
        assert!(matches!(
            check(&dir.path().join("rootfs"), &kernel, "b.toml").unwrap(),
            Fit::Fits { .. }
        ));
        let (dir, kernel) = tree(
            "Package: busybox\nStatus: install ok installed\nVersion: 1\n",
            "Linux version 3.10.1",
        );
        assert_eq!(
            check(&dir.path().join("rootfs"), &kernel, "b.toml").unwrap(),
            Fit::NoSystemd
        );
    }
}

//! Staging: the rootfs tree and the boot partition's tree, both as plain folders that
//! the image step turns into filesystems.
//!
//! Order: base rootfs, overlays (`base`, `docker`, `agent`, `manager` for managers),
//! the static aarch64 binaries, the cluster files, the board's unpacked downloads and
//! inline files, then identity scrubbing (no machine-id, ssh host keys or Docker engine
//! key baked in: first boot makes them). The boot tree is filled by the board's copy
//! rules and boot-file templates, plus `armada.toml`.

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::board::{Board, BootCopy};

/// `*` and `?` matching within one path segment.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn m(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => m(&p[1..], n) || (!n.is_empty() && m(p, &n[1..])),
            (Some(b'?'), Some(_)) => m(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => m(&p[1..], &n[1..]),
            _ => false,
        }
    }
    m(pattern.as_bytes(), name.as_bytes())
}

/// Paths under `root` (relative, sorted) matching a `/`-separated glob.
pub fn expand(root: &Path, pattern: &str) -> Vec<PathBuf> {
    let mut cur = vec![PathBuf::new()];
    for seg in pattern
        .trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
    {
        let mut next = Vec::new();
        for base in &cur {
            if !seg.contains(['*', '?']) {
                let p = base.join(seg);
                if std::fs::symlink_metadata(root.join(&p)).is_ok() {
                    next.push(p);
                }
                continue;
            }
            if let Ok(rd) = std::fs::read_dir(root.join(base)) {
                let mut names: Vec<String> = rd
                    .flatten()
                    .filter_map(|e| e.file_name().to_str().map(String::from))
                    .collect();
                names.sort();
                next.extend(
                    names
                        .into_iter()
                        .filter(|n| glob_match(seg, n))
                        .map(|n| base.join(n)),
                );
            }
        }
        cur = next;
    }
    cur.retain(|p| !p.as_os_str().is_empty());
    cur
}

/// Copies `src` (file, symlink or folder) to `dst`, keeping symlinks and modes;
/// `follow` copies what symlinks point to instead (for FAT, which has none).
pub fn copy_tree(src: &Path, dst: &Path, follow: bool) -> Result<()> {
    let md = if follow {
        std::fs::metadata(src)
    } else {
        std::fs::symlink_metadata(src)
    }
    .with_context(|| format!("reading {}", src.display()))?;
    if md.file_type().is_symlink() {
        let target =
            std::fs::read_link(src).with_context(|| format!("reading link {}", src.display()))?;
        let _ = std::fs::remove_file(dst);
        symlink(&target, dst).with_context(|| format!("creating link {}", dst.display()))?;
    } else if md.is_dir() {
        if !dst.is_dir() {
            std::fs::create_dir_all(dst).with_context(|| format!("creating {}", dst.display()))?;
            std::fs::set_permissions(
                dst,
                std::fs::Permissions::from_mode(md.permissions().mode() & 0o7777),
            )
            .with_context(|| format!("setting the mode of {}", dst.display()))?;
        }
        let mut names: Vec<_> = std::fs::read_dir(src)
            .with_context(|| format!("reading {}", src.display()))?
            .flatten()
            .map(|e| e.file_name())
            .collect();
        names.sort();
        for n in names {
            copy_tree(&src.join(&n), &dst.join(&n), follow)?;
        }
    } else {
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        if std::fs::symlink_metadata(dst).is_ok_and(|m| m.file_type().is_symlink()) {
            std::fs::remove_file(dst).with_context(|| format!("replacing {}", dst.display()))?;
        }
        std::fs::copy(src, dst)
            .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
    }
    Ok(())
}

/// Writes `content` to `root/rel` with `mode`, creating folders.
pub fn write_file(root: &Path, rel: &str, content: &[u8], mode: u32) -> Result<()> {
    let p = root.join(rel.trim_start_matches('/'));
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
        std::fs::remove_file(&p).with_context(|| format!("replacing {}", p.display()))?;
    }
    std::fs::write(&p, content).with_context(|| format!("writing {}", p.display()))?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", p.display()))
}

/// Removes baked identity so each board makes its own at first boot.
pub fn scrub_identity(rootfs: &Path) -> Result<()> {
    let remove_globs = [
        "etc/ssh/ssh_host_*",
        "etc/docker/key.json",
        "var/lib/systemd/random-seed",
        "var/cache/apt/*.bin",
        "var/lib/dbus/machine-id",
    ];
    for g in remove_globs {
        for p in expand(rootfs, g) {
            let full = rootfs.join(&p);
            if full.is_dir() && !full.is_symlink() {
                std::fs::remove_dir_all(&full)
            } else {
                std::fs::remove_file(&full)
            }
            .with_context(|| format!("removing {}", full.display()))?;
        }
    }
    if rootfs.join("etc").is_dir() {
        // Empty, not absent: systemd then treats the boot as the first and makes one.
        write_file(rootfs, "etc/machine-id", b"", 0o444)?;
        write_file(rootfs, "etc/hostname", b"armada\n", 0o644)?;
        write_file(rootfs, "etc/hosts", b"127.0.0.1\tlocalhost\n127.0.1.1\tarmada\n::1\t\tlocalhost ip6-localhost ip6-loopback\n", 0o644)?;
    }
    Ok(())
}

/// A numeric id from `etc/passwd` under `rootfs`.
pub fn uid_of(rootfs: &Path, user: &str) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(rootfs.join("etc/passwd")).ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[0] == user).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

/// The clock floor: timesyncd sets the clock to at least this file's mtime at start
/// (the boards have no RTC); the tree's time clamp sets it to the build's epoch.
pub fn clock_floor(rootfs: &Path) -> Result<()> {
    let rel = "var/lib/systemd/timesync/clock";
    write_file(rootfs, rel, b"", 0o644)?;
    if let Some((uid, gid)) = uid_of(rootfs, "systemd-timesync") {
        let p = rootfs.join(rel);
        for path in [p.as_path(), p.parent().unwrap_or(rootfs)] {
            match std::os::unix::fs::chown(path, Some(uid), Some(gid)) {
                Ok(()) => {}
                // Not root: the whole tree is owned by the builder anyway.
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {}
                Err(e) => return Err(e).with_context(|| format!("chown {}", path.display())),
            }
        }
    }
    Ok(())
}

/// `/etc/.updated` and `/var/.updated` as systemd-update-done writes them, stamped with
/// the build's epoch (every file time is clamped to it, /usr's too). Without them
/// `ConditionNeedsUpdate=` is true on a board's first boot, and ldconfig.service and
/// systemd-journal-catalog-update run before sysinit.target (8.4 s and 3.7 s under
/// qemu's raspi3b) to redo what the package installation already did.
pub fn update_done(rootfs: &Path, epoch: i64) -> Result<()> {
    let text = format!(
        "# This file was created by systemd-update-done. Its only\n\
         # purpose is to hold a timestamp of the time this directory\n\
         # was updated. See man:systemd-update-done.service(8).\n\
         TIMESTAMP_NSEC={}\n",
        epoch.max(0) as i128 * 1_000_000_000
    );
    for d in ["etc", "var"] {
        if rootfs.join(d).is_dir() {
            write_file(rootfs, &format!("{d}/.updated"), text.as_bytes(), 0o644)?;
        }
    }
    Ok(())
}

/// `/etc/fstab` for the board's partitions, by label. The partitions other than root
/// (which the initramfs mounts) wait up to 5 minutes for their device instead of
/// systemd's 90 s: under qemu on a loaded host udev's coldplug alone took over a
/// minute, the wait for `/dev/disk/by-label/RASPIFIRM` timed out and the board stopped
/// in emergency mode. A real card appears in seconds; the longer bound only keeps a
/// slow start from becoming a failed one.
pub fn fstab(board: &Board) -> String {
    let mut s = String::from("# <file system>\t<mount point>\t<type>\t<options>\t<dump>\t<pass>\n");
    for p in &board.config.partitions {
        let (fs, opts, pass) = match p.fs {
            crate::board::FsType::Ext4 => (
                "ext4",
                "defaults,noatime,commit=60",
                if p.mount == "/" { 1 } else { 2 },
            ),
            crate::board::FsType::Vfat => ("vfat", "defaults,noatime,umask=0077", 2),
        };
        let wait = if p.mount == "/" {
            ""
        } else {
            ",x-systemd.device-timeout=5min"
        };
        s.push_str(&format!(
            "LABEL={}\t{}\t{fs}\t{opts}{wait}\t0\t{pass}\n",
            p.label.get_ref(),
            p.mount
        ));
    }
    s
}

/// Runs the board's copy rules into `boot`. `sources` maps download names to their
/// unpacked folders; rules without `download` read from `rootfs`.
pub fn copy_boot_files(
    rules: &[BootCopy],
    rootfs: &Path,
    sources: &BTreeMap<String, PathBuf>,
    boot: &Path,
) -> Result<()> {
    for (i, r) in rules.iter().enumerate() {
        let root = match &r.download {
            Some(d) => sources
                .get(d.get_ref())
                .with_context(|| {
                    format!(
                        "boot.copy[{i}]: download `{}` was not unpacked",
                        d.get_ref()
                    )
                })?
                .clone(),
            None => rootfs.to_path_buf(),
        };
        let matches: Vec<PathBuf> = expand(&root, &r.from)
            .into_iter()
            .filter(|m| {
                let name = m.file_name().and_then(|n| n.to_str()).unwrap_or("");
                !r.exclude.iter().any(|x| glob_match(x, name))
            })
            .collect();
        if matches.is_empty() {
            bail!(
                "boot.copy[{i}]: `{}` matches nothing in {}",
                r.from,
                root.display()
            );
        }
        if r.rename.is_some() && matches.len() != 1 {
            bail!(
                "boot.copy[{i}]: `rename` needs `{}` to match one file, it matches {}",
                r.from,
                matches.len()
            );
        }
        let to = boot.join(r.to.trim_matches('/'));
        for m in matches {
            let name = match &r.rename {
                Some(n) => PathBuf::from(n),
                None => PathBuf::from(m.file_name().unwrap_or_default()),
            };
            copy_tree(&root.join(&m), &to.join(name), true)?;
        }
    }
    Ok(())
}

/// Fills `{name}` placeholders; an unknown placeholder is an error naming it.
pub fn render(template: &str, vars: &BTreeMap<&str, String>, what: &str) -> Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let Some(j) = after.find('}') else {
            out.push_str(&rest[i..]);
            return Ok(out);
        };
        let key = &after[..j];
        match vars.get(key) {
            Some(v) => out.push_str(v),
            None if key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !key.is_empty() =>
            {
                bail!(
                    "{what}: unknown placeholder {{{key}}} (known: {})",
                    vars.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            }
            None => {
                out.push('{');
                out.push_str(key);
                out.push('}');
            }
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The one file in `boot` matching `glob` (path relative to the partition's root).
pub fn find_one(boot: &Path, glob: &str, key: &str) -> Result<String> {
    let m = expand(boot, glob);
    match m.as_slice() {
        [one] => Ok(one.to_string_lossy().into_owned()),
        _ => bail!(
            "`{key}` = `{glob}` must match exactly one file in the boot partition; it matches {}",
            m.len()
        ),
    }
}

/// Packages and versions from `var/lib/dpkg/status` (installed ones), sorted by name.
pub fn installed_packages(rootfs: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(text) = std::fs::read_to_string(rootfs.join("var/lib/dpkg/status")) else {
        return out;
    };
    for para in text.split("\n\n") {
        let mut name = None;
        let mut version = None;
        let mut installed = false;
        let mut arch = None;
        for l in para.lines() {
            if let Some(v) = l.strip_prefix("Package: ") {
                name = Some(v.trim());
            } else if let Some(v) = l.strip_prefix("Version: ") {
                version = Some(v.trim());
            } else if let Some(v) = l.strip_prefix("Status: ") {
                installed = v.trim().ends_with(" installed");
            } else if let Some(v) = l.strip_prefix("Architecture: ") {
                arch = Some(v.trim());
            }
        }
        if let (Some(n), Some(v), true) = (name, version, installed) {
            let key = match arch {
                Some(a) if a != "all" && a != "arm64" => format!("{n}:{a}"),
                _ => n.to_string(),
            };
            out.insert(key, v.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fstab_waits_longer_for_every_device_but_root() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../board-configs/rpi3.toml");
        let board = crate::board::load(&dir).unwrap();
        let t = fstab(&board);
        let line = |mount: &str| {
            t.lines()
                .find(|l| l.split('\t').nth(1) == Some(mount))
                .unwrap_or_else(|| panic!("no {mount} in {t}"))
                .to_string()
        };
        assert!(
            line("/boot/firmware").contains("umask=0077,x-systemd.device-timeout=5min\t"),
            "{t}"
        );
        assert!(!line("/").contains("device-timeout"), "{t}");
    }

    #[test]
    fn globs() {
        assert!(glob_match("vmlinuz-*", "vmlinuz-6.1.0-56-arm64"));
        assert!(!glob_match("vmlinuz-*", "initrd.img-6.1"));
        assert!(glob_match("*.dtb", "a.dtb"));
        assert!(glob_match("fixup?.dat", "fixup4.dat"));
        let d = tempfile::tempdir().unwrap();
        for p in [
            "usr/lib/linux-image-6.1/broadcom/b.dtb",
            "usr/lib/linux-image-6.1/broadcom/a.dtb",
            "usr/lib/x/c.dtb",
        ] {
            write_file(d.path(), p, b"x", 0o644).unwrap();
        }
        let m = expand(d.path(), "usr/lib/linux-image-*/broadcom/*.dtb");
        assert_eq!(m.len(), 2);
        assert!(m[0].ends_with("a.dtb"));
    }

    #[test]
    fn render_fills_and_refuses_unknown() {
        let mut v = BTreeMap::new();
        v.insert("kernel", "vmlinuz-1".to_string());
        assert_eq!(
            render("kernel={kernel}\n", &v, "t").unwrap(),
            "kernel=vmlinuz-1\n"
        );
        assert!(render("{nope}", &v, "config.txt")
            .unwrap_err()
            .to_string()
            .contains("{nope}"));
        assert_eq!(render("a { b }", &v, "t").unwrap(), "a { b }");
    }

    #[test]
    fn dpkg_status_parsing() {
        let d = tempfile::tempdir().unwrap();
        write_file(
            d.path(),
            "var/lib/dpkg/status",
            b"Package: docker.io\nStatus: install ok installed\nArchitecture: arm64\nVersion: 20.10.24+dfsg1-1+b3\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n",
            0o644,
        )
        .unwrap();
        let p = installed_packages(d.path());
        assert_eq!(p.len(), 1);
        assert_eq!(p["docker.io"], "20.10.24+dfsg1-1+b3");
    }
}

//! AppArmor at build time, so that a board's first boot does not spend its first
//! quarter-minute compiling profiles (issue 12: `apparmor.service` took 12-15 s of the
//! boot under qemu, 35 s under load, on the critical path before `sysinit.target`).
//!
//! Three steps on the staged rootfs:
//! - Docker's `docker-default` profile is rendered from the image's own dockerd into
//!   `/etc/apparmor.d` (`docker_apparmor`), so it is compiled below with the rest.
//! - Profiles for programs the image does not contain are removed. Debian 13's apparmor
//!   package ships ~90 profiles for desktop programs (browsers, chat clients, sbuild, ...);
//!   a board has none of them. A profile file is kept when its top profile has no
//!   attachment or its attachment can match a file in the image. A removed conffile stays
//!   removed on upgrades (dpkg keeps an admin's deletion), and the list goes in the
//!   manifest.
//! - What is left is compiled into the image's policy cache with the image's own
//!   `apparmor_parser` (run in the rootfs under qemu-user, as mmdebstrap's hooks are),
//!   for the kernel feature set in `board-configs/rootfs/PROFILE.apparmor-features`,
//!   which was read from a booted board (`/var/cache/apparmor/*/.features`). At boot the
//!   parser finds the cache for the running kernel's features and loads it; a kernel whose
//!   features differ compiles as before, only slower.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// What [`prepare`] did, for the build log and the manifest.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    /// Profile files removed: their program is not in the image.
    pub dropped: Vec<String>,
    /// Profile files kept.
    pub kept: Vec<String>,
    /// The cache folder written, relative to the rootfs (empty without a feature set).
    pub cache_dir: String,
    /// Compiled profiles in it.
    pub cached: usize,
    /// Docker's `docker-default`, rendered from the image's dockerd (see `docker_apparmor`).
    pub docker_default: super::docker_apparmor::Outcome,
}

/// Where a rootfs profile's kernel feature set lives, beside the profile.
pub fn features_file(boards_dir: &Path, profile: &str) -> PathBuf {
    boards_dir
        .join("rootfs")
        .join(format!("{profile}.apparmor-features"))
}

/// Removes the profiles of absent programs and, with `features`, fills the policy cache.
/// `None` when the rootfs has no AppArmor.
pub fn prepare(rootfs: &Path, features: Option<&Path>) -> Result<Option<Report>> {
    let dir = rootfs.join("etc/apparmor.d");
    let parser = rootfs.join("usr/sbin/apparmor_parser");
    if !dir.is_dir() || !parser.is_file() {
        return Ok(None);
    }
    let files = image_paths(rootfs)?;
    let mut report = Report {
        docker_default: super::docker_apparmor::write(
            rootfs,
            &super::stage::installed_packages(rootfs),
        )?,
        ..Report::default()
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && !p.is_symlink())
        .collect();
    entries.sort();
    for p in entries {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with('.') {
            continue;
        }
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        let keep = match attachment(&text) {
            None => true,
            Some(pattern) => expand_braces(&pattern)
                .iter()
                .any(|alt| files.iter().any(|f| glob_path(alt, f))),
        };
        if keep {
            report.kept.push(name);
        } else {
            std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
            report.dropped.push(name);
        }
    }
    if let Some(features) = features {
        compile(rootfs, features, &mut report)?;
    }
    Ok(Some(report))
}

/// Runs the image's parser in the rootfs: compile every kept profile into the cache for
/// `features`, loading nothing.
fn compile(rootfs: &Path, features: &Path, report: &mut Report) -> Result<()> {
    let data =
        std::fs::read(features).with_context(|| format!("reading {}", features.display()))?;
    let rel = "tmp/armada-apparmor-features";
    std::fs::create_dir_all(rootfs.join("tmp")).context("creating the rootfs's /tmp")?;
    std::fs::write(rootfs.join(rel), data)
        .with_context(|| format!("writing {}", rootfs.join(rel).display()))?;
    let parser = |args: &[&str]| {
        Command::new("chroot")
            .arg(rootfs)
            .arg("/usr/sbin/apparmor_parser")
            .arg("--kernel-features")
            .arg(format!("/{rel}"))
            .args(args)
            .output()
    };
    // The parser reads /proc/self (without it every cache write fails with "Memory
    // allocation error" and it still exits 0); unmounted on every path.
    let proc_dir = rootfs.join("proc");
    std::fs::create_dir_all(&proc_dir)
        .with_context(|| format!("creating {}", proc_dir.display()))?;
    let mounted = Command::new("mount")
        .args(["-t", "proc", "proc"])
        .arg(&proc_dir)
        .status()
        .with_context(|| format!("mounting proc on {}", proc_dir.display()))?;
    if !mounted.success() {
        bail!(
            "mount -t proc proc {} failed ({mounted})",
            proc_dir.display()
        );
    }
    let out = parser(&[
        "--skip-kernel-load",
        "--write-cache",
        "--",
        "/etc/apparmor.d",
    ]);
    let dir = parser(&["--print-cache-dir"]);
    let umounted = Command::new("umount").arg(&proc_dir).status();
    let _ = std::fs::remove_file(rootfs.join(rel));
    match umounted {
        Ok(s) if s.success() => {}
        other => bail!(
            "umount {} failed ({other:?}): unmount it by hand before removing the build folder",
            proc_dir.display()
        ),
    }
    let out = out.context("running the image's apparmor_parser (chroot, qemu-user)")?;
    if !out.status.success() {
        bail!(
            "apparmor_parser --write-cache in the image failed ({}): {}\n(the feature set is {}: read it again from a booted board's /var/cache/apparmor/*/.features)",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            features.display()
        );
    }
    let dir = dir.context("running apparmor_parser --print-cache-dir")?;
    let cache = String::from_utf8_lossy(&dir.stdout).trim().to_string();
    if !dir.status.success() || !cache.starts_with('/') {
        bail!(
            "apparmor_parser --print-cache-dir in the image said `{cache}`: {}",
            String::from_utf8_lossy(&dir.stderr).trim()
        );
    }
    let host_dir = rootfs.join(cache.trim_start_matches('/'));
    report.cached = std::fs::read_dir(&host_dir)
        .with_context(|| format!("reading the cache {}", host_dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .count();
    if report.cached == 0 {
        bail!("apparmor_parser wrote no profile into {cache}");
    }
    report.cache_dir = cache;
    Ok(())
}

/// Every path in the image as the board sees it ("/usr/bin/x"), with the merged-/usr
/// links at the top (/bin -> usr/bin, ...) followed so "/bin/x" is there too.
fn image_paths(rootfs: &Path) -> Result<Vec<String>> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = format!("{prefix}/{name}");
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            out.push(path.clone());
            if is_dir {
                walk(&e.path(), &path, out);
            }
        }
    }
    let mut out = Vec::new();
    let rd = std::fs::read_dir(rootfs).with_context(|| format!("reading {}", rootfs.display()))?;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if matches!(name.as_str(), "proc" | "sys" | "dev" | "run" | "tmp") {
            continue;
        }
        let path = format!("/{name}");
        out.push(path.clone());
        let target = match std::fs::read_link(e.path()) {
            // Relative top-level links only (usr-merge's bin -> usr/bin).
            Ok(t) if t.is_relative() => rootfs.join(t),
            Ok(_) => continue,
            Err(_) => e.path(),
        };
        if target.is_dir() {
            walk(&target, &path, &mut out);
        }
    }
    Ok(out)
}

/// The attachment of a profile file's first profile: `profile NAME ATTACH {` or
/// `ATTACH {`, with the file's own `@{VAR}=` definitions substituted. `None` when that
/// profile has no attachment (it is then kept: something refers to it by name).
pub fn attachment(text: &str) -> Option<String> {
    let mut vars: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for raw in text.lines() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("@{") {
            if let Some((name, value)) = rest.split_once('}') {
                let value = value.trim_start();
                let value = value.strip_prefix("+=").or_else(|| value.strip_prefix('='));
                if let Some(v) = value {
                    vars.entry(name.to_string()).or_default().extend(
                        v.split_whitespace()
                            .map(|s| s.trim_matches('"').to_string()),
                    );
                    continue;
                }
            }
        }
        if !line.ends_with('{') {
            continue;
        }
        let toks = tokens(line.trim_end_matches('{'));
        let attach = match toks.first().map(String::as_str) {
            Some("profile") => toks.get(2).cloned(),
            Some(_) => toks.first().cloned(),
            None => None,
        };
        return attach
            .filter(|a| a.starts_with('/') || a.starts_with("@{"))
            .map(|a| substitute(&a, &vars));
    }
    None
}

/// Whitespace-separated words, double quotes grouping (and removed).
fn tokens(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `@{VAR}` replaced by the file's own values as an alternation, or by `**` when the
/// value comes from elsewhere (tunables): matching more keeps more, never less.
fn substitute(pattern: &str, vars: &BTreeMap<String, Vec<String>>) -> String {
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(i) = rest.find("@{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(j) = after.find('}') else {
            out.push_str("**");
            return out;
        };
        match vars.get(&after[..j]) {
            Some(vals) if !vals.is_empty() => {
                out.push('{');
                out.push_str(&vals.join(","));
                out.push('}');
            }
            _ => out.push_str("**"),
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    out
}

/// AppArmor's `{a,b}` alternations expanded (nested too), at most 512 results.
pub fn expand_braces(pattern: &str) -> Vec<String> {
    let bytes = pattern.as_bytes();
    let Some(open) = pattern.find('{') else {
        return vec![pattern.to_string()];
    };
    let mut depth = 0;
    let mut close = None;
    let mut commas = Vec::new();
    for (i, &b) in bytes.iter().enumerate().skip(open) {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(i);
                    break;
                }
            }
            b',' if depth == 1 => commas.push(i),
            _ => {}
        }
    }
    let Some(close) = close else {
        return vec![pattern.to_string()];
    };
    let mut bounds = vec![open];
    bounds.extend(commas);
    bounds.push(close);
    let (head, tail) = (&pattern[..open], &pattern[close + 1..]);
    let mut out = Vec::new();
    for w in bounds.windows(2) {
        let alt = &pattern[w[0] + 1..w[1]];
        for e in expand_braces(&format!("{head}{alt}{tail}")) {
            if out.len() >= 512 {
                return out;
            }
            out.push(e);
        }
    }
    out
}

/// AppArmor path globbing without alternations: `**` any characters, `*` any but `/`,
/// `?` one character but `/`, `[...]` a class; the rest literal.
pub fn glob_path(pattern: &str, path: &str) -> bool {
    fn m(p: &[u8], s: &[u8]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some(b'*') if p.get(1) == Some(&b'*') => (0..=s.len()).any(|i| m(&p[2..], &s[i..])),
            Some(b'*') => {
                let limit = s.iter().position(|&c| c == b'/').unwrap_or(s.len());
                (0..=limit).any(|i| m(&p[1..], &s[i..]))
            }
            Some(b'?') => !s.is_empty() && s[0] != b'/' && m(&p[1..], &s[1..]),
            Some(b'[') => {
                let Some(end) = p.iter().skip(1).position(|&c| c == b']').map(|i| i + 1) else {
                    return !s.is_empty() && s[0] == b'[' && m(&p[1..], &s[1..]);
                };
                let Some(&c) = s.first() else { return false };
                let class = &p[1..end];
                let (neg, class) = match class.first() {
                    Some(b'^') => (true, &class[1..]),
                    _ => (false, class),
                };
                let mut hit = false;
                let mut i = 0;
                while i < class.len() {
                    if i + 2 < class.len() && class[i + 1] == b'-' {
                        hit |= class[i] <= c && c <= class[i + 2];
                        i += 3;
                    } else {
                        hit |= class[i] == c;
                        i += 1;
                    }
                }
                hit != neg && c != b'/' && m(&p[end + 1..], &s[1..])
            }
            Some(&c) => s.first() == Some(&c) && m(&p[1..], &s[1..]),
        }
    }
    m(pattern.as_bytes(), path.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachments() {
        assert_eq!(
            attachment("abi <abi/4.0>,\ninclude <tunables/global>\nprofile Discord /usr/share/discord/Discord flags=(unconfined) {\n  userns,\n}\n"),
            Some("/usr/share/discord/Discord".into())
        );
        assert_eq!(
            attachment("profile \"MongoDB Compass\" \"/usr/lib/mongodb-compass/MongoDB Compass\" flags=(unconfined) {\n}\n"),
            Some("/usr/lib/mongodb-compass/MongoDB Compass".into())
        );
        assert_eq!(
            attachment("# x {\n/usr/sbin/runc flags=(unconfined) {\n}\n"),
            Some("/usr/sbin/runc".into())
        );
        // No attachment: referred to by name, kept.
        assert_eq!(
            attachment("profile unprivileged_userns flags=(unconfined) {\n}\n"),
            None
        );
        // The file's own variable, and one from the tunables.
        assert_eq!(
            attachment("@{exec_path} = /usr/bin/foo /opt/foo/foo\nprofile foo @{exec_path} {\n}\n"),
            Some("{/usr/bin/foo,/opt/foo/foo}".into())
        );
        assert_eq!(
            attachment("profile q /usr/lib/@{multiarch}/qt{5,6}/x flags=(unconfined) {\n}\n"),
            Some("/usr/lib/**/qt{5,6}/x".into())
        );
    }

    #[test]
    fn braces_and_globs() {
        assert_eq!(
            expand_braces("/usr/share/code{/bin,}/code"),
            vec!["/usr/share/code/bin/code", "/usr/share/code/code"]
        );
        assert_eq!(expand_braces("/{,usr/}{,s}bin/x").len(), 4);
        assert_eq!(expand_braces("/a{b,{c,d}}e"), vec!["/abe", "/ace", "/ade"]);
        assert!(glob_path(
            "/usr/lib/**/qt5/x",
            "/usr/lib/aarch64-linux-gnu/qt5/x"
        ));
        assert!(glob_path("/usr/bin/epiphany*", "/usr/bin/epiphany-browser"));
        assert!(!glob_path("/usr/*/x", "/usr/lib/a/x"));
        assert!(glob_path("/usr/bin/[a-c]at", "/usr/bin/cat"));
        assert!(!glob_path("/usr/bin/[^a-c]at", "/usr/bin/cat"));
        assert!(!glob_path("/usr/bin/x", "/usr/bin/xy"));
    }

    #[test]
    fn prunes_absent_programs_only() {
        let root = std::env::temp_dir().join(format!("armada-aa-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let d = root.join("etc/apparmor.d");
        std::fs::create_dir_all(d.join("abstractions")).unwrap();
        std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
        std::fs::write(root.join("usr/sbin/runc"), b"").unwrap();
        std::fs::write(root.join("usr/sbin/apparmor_parser"), b"").unwrap();
        std::os::unix::fs::symlink("usr/sbin", root.join("sbin")).unwrap();
        std::fs::write(
            d.join("runc"),
            "/{,usr/}sbin/runc flags=(unconfined) {\n}\n",
        )
        .unwrap();
        std::fs::write(
            d.join("chrome"),
            "profile chrome /opt/google/chrome/chrome {\n}\n",
        )
        .unwrap();
        std::fs::write(d.join("userns"), "profile unprivileged_userns {\n}\n").unwrap();
        std::fs::write(d.join("abstractions/base"), "x\n").unwrap();
        let r = prepare(&root, None).unwrap().unwrap();
        assert_eq!(r.dropped, vec!["chrome"]);
        assert_eq!(r.kept, vec!["runc", "userns"]);
        assert!(!d.join("chrome").exists());
        assert!(d.join("abstractions/base").exists());
        std::fs::remove_dir_all(&root).unwrap();
    }
}

//! The base rootfs: an arm64 Debian tree made by mmdebstrap from a rootfs profile,
//! cached as a tarball keyed by a hash of its inputs, so every board and role that
//! shares a profile shares one base, and a warm rebuild only unpacks it.
//!
//! While packages install, `update-initramfs` is diverted to a no-op; it then runs
//! once with `MODULES=list` (ENVIRONMENT.md: 33 s instead of 466 s under emulation).
//! Downloaded packages are kept in `CACHE/apt-archives` across runs. The Debian mirror
//! comes from the host's apt sources unless `--mirror` sets one; no apt source is left
//! in the tarball (the image step writes the image's own, so the base stays shareable).
//!
//! A cached base expires (`--base-max-age`, default 7 days) so a fleet built later gets
//! later security fixes; `--refresh-base` rebuilds it now. Its metadata records when
//! the package set was taken (the wall clock and the mirror's Release dates).
//!
//! Reproducible: with the same package files and SOURCE_DATE_EPOCH two cold runs give
//! the same tarball (mmdebstrap's own clean-up of logs and caches, plus removal of the
//! random ssh host keys and a fixed resolv.conf here).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::board::RootfsProfile;
use crate::progress::Ui;

/// Bump when the recipe below changes in a way that changes the tree.
const RECIPE_VERSION: u32 = 2;

#[derive(Debug, Serialize, Deserialize)]
pub struct BaseMeta {
    pub key: String,
    /// The epoch the base was made with (its file times are clamped to it).
    pub epoch: i64,
    pub tar_sha256: String,
    pub packages: Vec<String>,
    /// When the package set was taken (unix seconds, the builder's clock); 0 in bases
    /// made before this was recorded, which therefore count as expired.
    #[serde(default)]
    pub taken_at: i64,
    /// The `Date:` lines of the mirror's Release files the packages came from.
    #[serde(default)]
    pub release_dates: Vec<String>,
}

impl BaseMeta {
    /// Whether a base taken at `taken_at` is older than `max_age_secs` at `now`.
    pub fn expired(&self, now: i64, max_age_secs: i64) -> bool {
        now.saturating_sub(self.taken_at) > max_age_secs
    }
}

/// What decides whether a cached base is reused.
#[derive(Clone, Copy, Debug)]
pub struct BasePolicy {
    /// Rebuild even when a fresh one is cached (`--refresh-base`).
    pub refresh: bool,
    /// A cached base older than this is rebuilt (`--base-max-age`).
    pub max_age_secs: i64,
}

pub struct Base {
    pub tar: PathBuf,
    pub meta: BaseMeta,
}

/// One apt source line's parts: URI and suite (components come from the profile).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AptSource {
    pub uri: String,
    pub suite: String,
}

/// The `deb` sources of the host (`/etc/apt/sources.list` and `sources.list.d/*.list`,
/// `*.sources`), read from `root`.
pub fn host_sources(root: &Path) -> Vec<AptSource> {
    let mut out = Vec::new();
    let etc = root.join("etc/apt");
    let mut files = vec![etc.join("sources.list")];
    if let Ok(rd) = std::fs::read_dir(etc.join("sources.list.d")) {
        let mut v: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        v.sort();
        files.extend(v);
    }
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let name = f.to_string_lossy();
        if name.ends_with(".sources") {
            out.extend(parse_deb822(&text));
        } else if name.ends_with(".list") {
            out.extend(parse_one_line(&text));
        }
    }
    out
}

pub fn parse_deb822(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut types = "";
        let mut uris = "";
        let mut suites = "";
        let mut enabled = true;
        for line in stanza.lines() {
            if line.starts_with('#') {
                continue;
            }
            if let Some((k, v)) = line.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "types" => types = v.trim(),
                    "uris" => uris = v.trim(),
                    "suites" => suites = v.trim(),
                    "enabled" => enabled = v.trim() != "no",
                    _ => {}
                }
            }
        }
        if !enabled || !types.split_whitespace().any(|t| t == "deb") {
            continue;
        }
        for u in uris.split_whitespace() {
            for s in suites.split_whitespace() {
                out.push(AptSource {
                    uri: u.into(),
                    suite: s.into(),
                });
            }
        }
    }
    out
}

pub fn parse_one_line(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut w = line.split_whitespace().peekable();
        if w.next() != Some("deb") {
            continue;
        }
        if w.peek().is_some_and(|x| x.starts_with('[')) {
            for x in w.by_ref() {
                if x.ends_with(']') {
                    break;
                }
            }
        }
        if let (Some(u), Some(s)) = (w.next(), w.next()) {
            out.push(AptSource {
                uri: u.into(),
                suite: s.into(),
            });
        }
    }
    out
}

/// Suites an image takes from the host's sources (backports stay opt-in on a board).
const IMAGE_SUITE_SUFFIXES: &[&str] = &["", "-updates", "-security"];

/// The image's source lines: the host's mirrors with the profile's suite in place of
/// the host's (keeping `-updates`/`-security`, dropping backports and other suites), or
/// `mirror` for the suite and its `-updates` when given (the security suite then still
/// comes from the host's `-security` source, or from `security_mirror`).
pub fn image_sources(
    host: &[AptSource],
    mirror: Option<&str>,
    security_mirror: Option<&str>,
    profile: &RootfsProfile,
) -> Vec<String> {
    let comps = profile.components.join(" ");
    let suite = &profile.suite;
    let mut out: Vec<String> = Vec::new();
    let mut push = |line: String| {
        if !out.contains(&line) {
            out.push(line);
        }
    };
    let suffix_of = |s: &AptSource| {
        s.suite
            .find('-')
            .map(|i| s.suite[i..].to_string())
            .unwrap_or_default()
    };
    if let Some(m) = mirror {
        push(format!("deb {m} {suite} {comps}"));
        push(format!("deb {m} {suite}-updates {comps}"));
    } else {
        for s in host {
            let suffix = suffix_of(s);
            if suffix != "-security" && IMAGE_SUITE_SUFFIXES.contains(&suffix.as_str()) {
                push(format!("deb {} {suite}{suffix} {comps}", s.uri));
            }
        }
    }
    match security_mirror {
        Some(sm) => push(format!("deb {sm} {suite}-security {comps}")),
        None => {
            for s in host.iter().filter(|s| suffix_of(s) == "-security") {
                push(format!("deb {} {suite}-security {comps}", s.uri));
            }
        }
    }
    out
}

/// The image's `/etc/apt/sources.list` text for `lines` (from [`image_sources`]).
pub fn sources_list(lines: &[String]) -> String {
    let mut s =
        String::from("# Written by `armada build` from the build host's mirror (or --mirror).\n");
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    s
}

/// The cache key of a base: everything that decides its packages and files.
/// SOURCE_DATE_EPOCH is left out on purpose: it only clamps file times, and the image
/// step clamps them again to the image's epoch, so one base serves every epoch.
pub fn base_key(profile: &RootfsProfile, sources: &[String]) -> String {
    let mut h = Sha256::new();
    h.update(format!("recipe {RECIPE_VERSION}\n").as_bytes());
    h.update(
        serde_json::to_string(profile)
            .unwrap_or_default()
            .as_bytes(),
    );
    for s in sources {
        h.update(s.as_bytes());
        h.update(b"\n");
    }
    hex::encode(&h.finalize()[..16])
}

/// The cached base for `profile`, made with mmdebstrap first if it is not cached.
pub fn ensure_base(
    profile: &RootfsProfile,
    sources: &[String],
    cache: &Path,
    epoch_env: Option<i64>,
    policy: BasePolicy,
    ui: &Ui,
) -> Result<Base> {
    if sources.is_empty() {
        bail!("no Debian mirror: the host's apt sources list none and --mirror was not given");
    }
    let now = now_secs();
    let key = base_key(profile, sources);
    let dir = cache.join("rootfs");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let tar = dir.join(format!("{key}.tar"));
    let meta_path = dir.join(format!("{key}.json"));
    if tar.is_file() {
        if let Ok(text) = std::fs::read_to_string(&meta_path) {
            if let Ok(meta) = serde_json::from_str::<BaseMeta>(&text) {
                let age_days = (now - meta.taken_at) as f64 / 86400.0;
                if policy.refresh {
                    ui.info(&format!(
                        "base rootfs {key}: cached, rebuilt as --refresh-base asks"
                    ));
                } else if meta.expired(now, policy.max_age_secs) {
                    ui.info(&format!(
                        "base rootfs {key}: cached {age_days:.1} days ago, older than --base-max-age: rebuilding"
                    ));
                } else {
                    ui.info(&format!(
                        "base rootfs {key}: cached ({age_days:.1} days old)"
                    ));
                    return Ok(Base { tar, meta });
                }
            }
        }
    }
    let epoch = epoch_env.unwrap_or(now);
    let stage = ui.stage(&format!(
        "base rootfs {key}: mmdebstrap {} ({} packages)",
        profile.suite,
        profile.packages.len()
    ));
    let tmp = dir.join(format!(".{key}.tar.tmp-{}", std::process::id()));
    let log = dir.join(format!("{key}.log"));
    stage.set_message(&format!("mmdebstrap, log in {}", log.display()));
    let apt_cache = cache.join("apt-archives");
    std::fs::create_dir_all(&apt_cache)
        .with_context(|| format!("creating {}", apt_cache.display()))?;
    let dates_file = dir.join(format!(".{key}.release-dates-{}", std::process::id()));
    let res = run_mmdebstrap(profile, sources, &apt_cache, &tmp, &log, &dates_file, epoch);
    let release_dates: Vec<String> = std::fs::read_to_string(&dates_file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("Date:").map(|d| d.trim().to_string()))
        .collect();
    let _ = std::fs::remove_file(&dates_file);
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let tar_sha256 = crate::fetch::sha256_file(&tmp)?;
    let meta = BaseMeta {
        key: key.clone(),
        epoch,
        tar_sha256,
        packages: profile.packages.clone(),
        taken_at: now,
        release_dates,
    };
    std::fs::write(
        &meta_path,
        serde_json::to_string_pretty(&meta).unwrap_or_default(),
    )
    .with_context(|| format!("writing {}", meta_path.display()))?;
    std::fs::rename(&tmp, &tar)
        .with_context(|| format!("renaming {} to {}", tmp.display(), tar.display()))?;
    stage.done();
    Ok(Base { tar, meta })
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn run_mmdebstrap(
    profile: &RootfsProfile,
    sources: &[String],
    apt_cache: &Path,
    out: &Path,
    log: &Path,
    dates_file: &Path,
    epoch: i64,
) -> Result<()> {
    let divert = "chroot \"$1\" dpkg-divert --local --divert /usr/sbin/update-initramfs.armada --no-rename --add /usr/sbin/update-initramfs \
        && printf '#!/bin/sh\\nexit 0\\n' > \"$1/usr/sbin/update-initramfs\" && chmod 755 \"$1/usr/sbin/update-initramfs\"";
    let undivert = "rm -f \"$1/usr/sbin/update-initramfs\" && chroot \"$1\" dpkg-divert --local --rename --remove /usr/sbin/update-initramfs";
    let modules = profile.initramfs_modules.join("\\n");
    let initramfs = format!(
        "printf 'MODULES=list\\nCOMPRESS=zstd\\n' > \"$1/etc/initramfs-tools/conf.d/armada.conf\" \
         && printf '{modules}\\n' >> \"$1/etc/initramfs-tools/modules\" \
         && chroot \"$1\" update-initramfs -c -k all"
    );
    // No mirror host name stays in the base: the image gets a commented sources file.
    let scrub = "rm -f \"$1/etc/apt/sources.list\" \"$1\"/etc/apt/sources.list.d/*.list \"$1\"/etc/apt/sources.list.d/*.sources";
    // Random per run (openssh-server's postinst makes them; first boot makes each
    // board's own), and the host's resolv.conf: both would make two bases differ.
    let reproducible = "rm -f \"$1\"/etc/ssh/ssh_host_* && ln -sfn ../run/systemd/resolve/stub-resolv.conf \"$1/etc/resolv.conf\"";
    let dates = format!(
        "grep -h '^Date:' \"$1\"/var/lib/apt/lists/*Release > '{}' || true",
        dates_file.display()
    );
    let mut cmd = Command::new("mmdebstrap");
    cmd.env("SOURCE_DATE_EPOCH", epoch.to_string())
        .arg("--architectures=arm64")
        .arg(format!("--variant={}", profile.variant))
        .arg("--format=tar")
        .arg(format!("--components={}", profile.components.join(",")))
        .arg(format!("--include={}", profile.packages.join(",")))
        .arg("--aptopt=Acquire::Retries \"3\"")
        .arg("--dpkgopt=path-exclude=/usr/share/man/*")
        .arg("--dpkgopt=path-exclude=/usr/share/doc/*")
        .arg("--dpkgopt=path-include=/usr/share/doc/*/copyright")
        .arg("--dpkgopt=path-exclude=/usr/share/info/*")
        // No board shows translated messages; dpkg keeps these excludes on upgrades.
        .arg("--dpkgopt=path-exclude=/usr/share/locale/*")
        .arg("--dpkgopt=path-include=/usr/share/locale/locale.alias")
        .arg("--dpkgopt=path-exclude=/usr/share/lintian/*")
        .arg("--skip=essential/unlink")
        .arg("--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/")
        .arg(format!(
            "--setup-hook=sync-in {} /var/cache/apt/archives/",
            apt_cache.display()
        ))
        .arg(format!("--essential-hook={divert}"))
        .arg(format!(
            "--customize-hook=sync-out /var/cache/apt/archives {}",
            apt_cache.display()
        ))
        .arg(format!("--customize-hook={undivert}"))
        .arg(format!("--customize-hook={initramfs}"))
        .arg(format!("--customize-hook={dates}"))
        .arg(format!("--customize-hook={scrub}"))
        .arg(format!("--customize-hook={reproducible}"))
        .arg(&profile.suite)
        .arg(out)
        .args(sources);
    let logf = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let status = cmd
        .stdout(logf.try_clone().context("opening the mmdebstrap log")?)
        .stderr(logf)
        .status()
        .context("running mmdebstrap (package mmdebstrap)")?;
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        bail!(
            "mmdebstrap failed ({status}); log {}:\n{}",
            log.display(),
            tail.join("\n")
        );
    }
    Ok(())
}

/// Unpacks a base tarball (owners, modes and xattrs kept) into `dest`.
pub fn unpack_base(tar: &Path, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let out = Command::new("tar")
        .args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf"])
        .arg(tar)
        .arg("-C")
        .arg(dest)
        .output()
        .context("running tar")?;
    if !out.status.success() {
        bail!(
            "unpacking {} into {}: {}",
            tar.display(),
            dest.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> RootfsProfile {
        RootfsProfile {
            suite: "trixie".into(),
            variant: "minbase".into(),
            components: vec!["main".into(), "non-free-firmware".into()],
            packages: vec!["systemd".into()],
            initramfs_modules: vec!["ext4".into()],
        }
    }

    #[test]
    fn sources_follow_the_profile_suite_and_components() {
        let host = parse_deb822(
            "Types: deb\nURIs: http://m.invalid/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n\
             Types: deb\nURIs: http://m.invalid/security\nSuites: bookworm-security\nComponents: main\n\n\
             Types: deb\nURIs: http://m.invalid/debian\nSuites: bookworm-backports\nComponents: main\n\n\
             Types: deb-src\nURIs: http://m.invalid/src\nSuites: bookworm\n",
        );
        assert_eq!(host.len(), 4);
        let lines = image_sources(&host, None, None, &profile());
        // The profile's suite, its updates and security; backports left out.
        assert_eq!(
            lines,
            [
                "deb http://m.invalid/debian trixie main non-free-firmware",
                "deb http://m.invalid/debian trixie-updates main non-free-firmware",
                "deb http://m.invalid/security trixie-security main non-free-firmware",
            ]
        );
        // --mirror replaces the main mirror; security still comes from the host's
        // security source unless --security-mirror names one.
        assert_eq!(
            image_sources(&host, Some("http://o.invalid/d"), None, &profile()),
            [
                "deb http://o.invalid/d trixie main non-free-firmware",
                "deb http://o.invalid/d trixie-updates main non-free-firmware",
                "deb http://m.invalid/security trixie-security main non-free-firmware",
            ]
        );
        assert_eq!(
            image_sources(
                &[],
                Some("http://o.invalid/d"),
                Some("http://s.invalid/ds"),
                &profile()
            )[2],
            "deb http://s.invalid/ds trixie-security main non-free-firmware"
        );
        assert!(sources_list(&lines).ends_with("trixie-security main non-free-firmware\n"));
        let one = parse_one_line(
            "deb [arch=amd64 signed-by=/k] http://x.invalid/d bookworm main\n# deb y z\n",
        );
        assert_eq!(
            one,
            [AptSource {
                uri: "http://x.invalid/d".into(),
                suite: "bookworm".into()
            }]
        );
    }

    #[test]
    fn a_base_expires_after_its_max_age() {
        let meta = BaseMeta {
            key: "k".into(),
            epoch: 0,
            tar_sha256: String::new(),
            packages: Vec::new(),
            taken_at: 1_000_000,
            release_dates: Vec::new(),
        };
        let week = 7 * 86400;
        assert!(!meta.expired(1_000_000 + week, week));
        assert!(meta.expired(1_000_000 + week + 1, week));
        // A base from before `taken_at` was recorded counts as expired.
        let old: BaseMeta =
            serde_json::from_str(r#"{"key":"k","epoch":0,"tar_sha256":"","packages":[]}"#).unwrap();
        assert!(old.expired(1_000_000, week));
    }

    #[test]
    fn key_changes_with_inputs() {
        let s = vec!["deb a b c".to_string()];
        let k = base_key(&profile(), &s);
        assert_eq!(k, base_key(&profile(), &s));
        let mut p = profile();
        p.packages.push("zstd".into());
        assert_ne!(k, base_key(&p, &s));
        assert_ne!(k, base_key(&profile(), &["deb x b c".to_string()]));
    }
}

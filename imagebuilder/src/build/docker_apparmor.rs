//! Docker's `docker-default` AppArmor profile, made at build time from the image's own
//! `dockerd` (issue 12).
//!
//! At every start dockerd checks whether a profile named `docker-default` is loaded and,
//! when none is, renders its built-in template and compiles it with `apparmor_parser`
//! (moby `daemon/apparmor_default.go`, `profiles/apparmor`), on the path to the node's
//! join (1-2 s of dockerd's start under qemu's virt, on a loaded host). Written to
//! `/etc/apparmor.d/docker-default`, the profile is compiled into the image's policy
//! cache with the others and loaded by `apparmor.service` in early boot, so dockerd
//! finds it loaded and compiles nothing.
//!
//! The template is read out of the image's `dockerd` binary (a Go string constant), not
//! copied into this repository: the profile is the one that very dockerd would load. A
//! template with an action this renderer does not know is not rendered (dockerd then
//! compiles its own at start, as without this step).
//!
//! Staleness: the file records the package and version of the dockerd it was made from.
//! `/usr/local/lib/armada/docker-apparmor-stale.sh` (overlays/docker, a dpkg post-invoke
//! hook) removes the file and its cache entry once that package's version changes, so
//! after a Docker upgrade the board behaves as a stock one: the loaded profile stays
//! until the next boot, where the new dockerd renders and loads its own.

use std::path::Path;

use anyhow::{Context, Result};

/// Where the profile goes in the rootfs.
pub const PROFILE: &str = "etc/apparmor.d/docker-default";
/// The profile's name (moby `defaultAppArmorProfile`).
const NAME: &str = "docker-default";
/// The header line the stale hook reads: `# armada-made-from: PACKAGE VERSION`.
pub const MADE_FROM: &str = "# armada-made-from:";
const DOCKERD_PATHS: [&str; 2] = ["usr/sbin/dockerd", "usr/bin/dockerd"];

/// What [`write`] did, for the manifest.
#[derive(Debug, Default, serde::Serialize)]
pub struct Outcome {
    /// `PACKAGE VERSION` the written profile was made from; empty when none was written.
    pub made_from: String,
    /// Why no profile was written (empty when one was, or the image has no dockerd).
    pub skipped: String,
}

/// Renders the image's dockerd template into [`PROFILE`]. Nothing when the image has no
/// dockerd; a reason in [`Outcome::skipped`] when its template or setup is not one this
/// step can reproduce exactly.
pub fn write(
    rootfs: &Path,
    packages: &std::collections::BTreeMap<String, String>,
) -> Result<Outcome> {
    let Some(dockerd) = DOCKERD_PATHS.iter().find(|p| rootfs.join(p).is_file()) else {
        return Ok(Outcome::default());
    };
    let skip = |why: String| {
        Ok(Outcome {
            made_from: String::new(),
            skipped: why,
        })
    };
    let binary = std::fs::read(rootfs.join(dockerd))
        .with_context(|| format!("reading {}", rootfs.join(dockerd).display()))?;
    let Some(template) = template_in(&binary) else {
        return skip(format!("no docker-default template found in /{dockerd}"));
    };
    let Some(package) = owner(rootfs, dockerd) else {
        return skip(format!(
            "/{dockerd} belongs to no dpkg package (an upgrade could not be noticed)"
        ));
    };
    let Some(version) = packages.get(&package) else {
        return skip(format!("package {package} is not installed"));
    };
    // moby renders with the daemon's own confinement as DaemonProfile; dockerd.service
    // runs unconfined unless a profile in the image attaches to dockerd.
    if let Some(p) = confining_profile(rootfs, dockerd)? {
        return skip(format!(
            "{p} confines /{dockerd}: dockerd's profile name is not known at build time"
        ));
    }
    let dir = rootfs.join("etc/apparmor.d");
    let imports = if dir.join("tunables/global").exists() {
        "#include <tunables/global>"
    } else {
        "@{PROC}=/proc/"
    };
    let inner: Vec<&str> = if dir.join("abstractions/base").exists() {
        vec!["#include <abstractions/base>"]
    } else {
        vec![]
    };
    let Some(body) = render(template, &[imports], &inner, "unconfined") else {
        return skip(format!(
            "/{dockerd}'s template has an action this builder does not render"
        ));
    };
    let made_from = format!("{package} {version}");
    let text = format!(
        "# Docker's default container profile, rendered by armada build from /{dockerd}'s\n\
         # own template (what dockerd would load at its start), so that it is precompiled\n\
         # and loaded at boot. Removed by /usr/local/lib/armada/docker-apparmor-stale.sh\n\
         # once the package below changes version; dockerd then makes its own.\n\
         {MADE_FROM} {made_from}\n{body}"
    );
    crate::build::stage::write_file(rootfs, PROFILE, text.as_bytes(), 0o644)?;
    Ok(Outcome {
        made_from,
        skipped: String::new(),
    })
}

/// The template constant inside a dockerd binary: from the line that starts its imports
/// to the `}` closing the profile.
pub fn template_in(binary: &[u8]) -> Option<&str> {
    let start = find(binary, b"\n{{range $value := .Imports}}\n", 0)?;
    let profile = find(binary, b"\nprofile {{.Name}} ", start)?;
    // The profile must follow its imports closely, or this is some other text.
    if profile - start > 200 {
        return None;
    }
    let end = find(binary, b"\n}\n", profile)? + 3;
    std::str::from_utf8(&binary[start..end]).ok()
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// Go text/template, for exactly the actions moby's template uses: `{{range $value :=
/// .Imports}}`/`.InnerImports` ... `{{$value}}` ... `{{end}}`, `{{.Name}}` and
/// `{{.DaemonProfile}}`. `None` on any other action.
pub fn render(template: &str, imports: &[&str], inner: &[&str], daemon: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        let close = after.find("}}")? + 2;
        let action = &after[..close];
        rest = &after[close..];
        match action {
            "{{.Name}}" => out.push_str(NAME),
            "{{.DaemonProfile}}" => out.push_str(daemon),
            "{{range $value := .Imports}}" | "{{range $value := .InnerImports}}" => {
                let end = rest.find("{{end}}")?;
                let body = &rest[..end];
                rest = &rest[end + "{{end}}".len()..];
                let items = if action.contains("Inner") {
                    inner
                } else {
                    imports
                };
                let parts: Vec<&str> = body.split("{{$value}}").collect();
                if parts.iter().any(|p| p.contains("{{")) {
                    return None;
                }
                for item in items {
                    out.push_str(&parts.join(item));
                }
            }
            _ => return None,
        }
    }
    out.push_str(rest);
    Some(out)
}

/// The dpkg package whose file list names `/PATH`.
fn owner(rootfs: &Path, path: &str) -> Option<String> {
    let want = format!("/{path}");
    let info = rootfs.join("var/lib/dpkg/info");
    let mut lists: Vec<_> = std::fs::read_dir(info)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "list"))
        .collect();
    lists.sort();
    lists.into_iter().find_map(|l| {
        let text = std::fs::read_to_string(&l).ok()?;
        text.lines().any(|x| x == want).then(|| {
            let stem = l.file_stem()?.to_string_lossy().into_owned();
            Some(stem.split(':').next().unwrap_or(&stem).to_string())
        })?
    })
}

/// A profile file in the image whose attachment matches dockerd.
fn confining_profile(rootfs: &Path, dockerd: &str) -> Result<Option<String>> {
    let dir = rootfs.join("etc/apparmor.d");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Ok(None);
    };
    let targets = [
        format!("/{dockerd}"),
        format!("/{}", dockerd.trim_start_matches("usr/")),
    ];
    let mut names: Vec<_> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    names.sort();
    for p in names {
        let Ok(text) = std::fs::read_to_string(&p) else {
            continue;
        };
        let Some(pattern) = super::apparmor::attachment(&text) else {
            continue;
        };
        let hit = super::apparmor::expand_braces(&pattern)
            .iter()
            .any(|alt| targets.iter().any(|t| super::apparmor::glob_path(alt, t)));
        if hit {
            return Ok(Some(p.display().to_string()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from Debian 13's docker.io 26.1.5+dfsg1-9+deb13u1+b1 (arm64)
    /// `/usr/sbin/dockerd` with [`template_in`] (moby `profiles/apparmor/template.go`).
    const TEMPLATE: &str = include_str!("../../tests/fixtures/dockerd-26.1.5-apparmor.template");

    #[test]
    fn renders_moby_template() {
        let p = render(
            TEMPLATE,
            &["#include <tunables/global>"],
            &["#include <abstractions/base>"],
            "unconfined",
        )
        .unwrap();
        assert!(p.starts_with("\n\n#include <tunables/global>\n\n\nprofile docker-default flags=(attach_disconnected,mediate_deleted) {\n\n  #include <abstractions/base>\n\n"));
        assert!(p.contains("  signal (receive) peer=unconfined,\n"));
        assert!(p.contains("  signal (send,receive) peer=docker-default,\n"));
        assert!(p.contains("ptrace (trace,read,tracedby,readby) peer=docker-default,\n}\n"));
        assert!(!p.contains("{{"));
        // No abstractions/base: the inner range renders nothing.
        let q = render(TEMPLATE, &["@{PROC}=/proc/"], &[], "unconfined").unwrap();
        assert!(q.contains("\n@{PROC}=/proc/\n"));
        assert!(!q.contains("abstractions"));
    }

    #[test]
    fn unknown_actions_are_not_rendered() {
        assert_eq!(
            render("{{if ge .Version 208096}}x{{end}}", &[], &[], "u"),
            None
        );
        assert_eq!(
            render(
                "{{range $value := .Imports}}{{.Name}}{{end}}",
                &["a"],
                &[],
                "u"
            ),
            None
        );
        assert_eq!(
            render("a {{.Name}} b", &[], &[], "u").as_deref(),
            Some("a docker-default b")
        );
    }

    #[test]
    fn template_found_in_binary_bytes() {
        let mut bin = b"\x00\x01...command.{{end}}\n".to_vec();
        bin.extend_from_slice(TEMPLATE.as_bytes());
        bin.extend_from_slice(b"-----BEGIN RSA TESTING KEY-----\n");
        assert_eq!(template_in(&bin), Some(TEMPLATE));
        assert_eq!(
            template_in(b"\n{{range $value := .Imports}}\nno profile"),
            None
        );
    }

    #[test]
    fn writes_profile_with_its_origin() {
        let root = std::env::temp_dir().join(format!("armada-docker-aa-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
        std::fs::create_dir_all(root.join("var/lib/dpkg/info")).unwrap();
        std::fs::create_dir_all(root.join("etc/apparmor.d/tunables")).unwrap();
        std::fs::write(root.join("etc/apparmor.d/tunables/global"), "").unwrap();
        let mut bin = b"ELF".to_vec();
        bin.extend_from_slice(TEMPLATE.as_bytes());
        std::fs::write(root.join("usr/sbin/dockerd"), &bin).unwrap();
        let mut pkgs = std::collections::BTreeMap::new();
        // Not owned by a package: skipped, with the reason.
        let o = write(&root, &pkgs).unwrap();
        assert!(
            o.made_from.is_empty() && o.skipped.contains("no dpkg package"),
            "{o:?}"
        );
        assert!(!root.join(PROFILE).exists());
        std::fs::write(
            root.join("var/lib/dpkg/info/docker.io.list"),
            "/usr\n/usr/sbin/dockerd\n",
        )
        .unwrap();
        pkgs.insert("docker.io".to_string(), "26.1.5+dfsg1-9".to_string());
        let o = write(&root, &pkgs).unwrap();
        assert_eq!(o.made_from, "docker.io 26.1.5+dfsg1-9");
        let text = std::fs::read_to_string(root.join(PROFILE)).unwrap();
        assert!(text.contains("\n# armada-made-from: docker.io 26.1.5+dfsg1-9\n"));
        assert!(text.contains("#include <tunables/global>") && !text.contains("abstractions/base"));
        // A profile attaching to dockerd: its name is unknown here, so no profile.
        std::fs::remove_file(root.join(PROFILE)).unwrap();
        std::fs::write(
            root.join("etc/apparmor.d/dockerd"),
            "profile dockerd /usr/{,s}bin/dockerd {\n}\n",
        )
        .unwrap();
        let o = write(&root, &pkgs).unwrap();
        assert!(o.skipped.contains("confines"), "{o:?}");
        assert!(!root.join(PROFILE).exists());
        std::fs::remove_dir_all(&root).unwrap();
        // No dockerd at all: nothing, silently.
        let none = write(&std::env::temp_dir().join("armada-no-such-root"), &pkgs).unwrap();
        assert!(none.made_from.is_empty() && none.skipped.is_empty());
    }
    /// The dpkg post-invoke hook keeps the profile while the package's version is the one
    /// it was made from and removes it (and its cache entry) once that changes.
    #[test]
    fn stale_hook_removes_profile_after_upgrade() {
        let hook = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../overlays/docker/usr/local/lib/armada/docker-apparmor-stale.sh");
        let root = std::env::temp_dir().join(format!("armada-docker-stale-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("etc/apparmor.d")).unwrap();
        std::fs::create_dir_all(root.join("var/cache/apparmor/abc123")).unwrap();
        let profile = root.join(PROFILE);
        let cached = root.join("var/cache/apparmor/abc123/docker-default");
        std::fs::write(
            &profile,
            format!("# x\n{MADE_FROM} docker.io 26.1.5+dfsg1-9\nprofile docker-default {{\n}}\n"),
        )
        .unwrap();
        std::fs::write(&cached, "bin").unwrap();
        let query = root.join("dpkg-query");
        let run = |answer: &str| {
            std::fs::write(&query, format!("#!/bin/sh\nprintf '%s' '{answer}'\n")).unwrap();
            std::fs::set_permissions(&query, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
            let st = std::process::Command::new("sh")
                .arg(&hook)
                .env("ARMADA_ROOT", &root)
                .env("ARMADA_DPKG_QUERY", &query)
                .status()
                .unwrap();
            assert!(st.success());
        };
        run("install ok installed 26.1.5+dfsg1-9");
        assert!(profile.exists() && cached.exists());
        // Unpacked but not configured yet: not the version it was made from either.
        run("install ok unpacked 26.1.5+dfsg1-9");
        assert!(!profile.exists() && !cached.exists());
        // No profile any more: nothing to do, still success.
        run("install ok installed 27.0");
        std::fs::remove_dir_all(&root).unwrap();
    }
}

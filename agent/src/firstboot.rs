//! `armada-agent firstboot`: applies `armada.toml` to the root filesystem. The image's
//! `armada-firstboot.service` runs it at every boot, before the network, ssh, Docker and
//! the agent ([`every_boot`]): it moves secrets off the FAT, then, when the file's
//! SHA-256 differs from the one recorded in [`APPLIED_FILE`], applies hostname, ssh
//! keys and the board settings of [`crate::settings`] (Wi-Fi, time zone, static
//! address), and records the hash and what changed (shown by `armada-agent status`).
//! An unchanged file costs one hash and a log line.
//!
//! Hostname: `etc/hostname`, the `127.0.1.1` line of `etc/hosts`, and, when the root is
//! the running system's `/`, the kernel's hostname. Keys: appended to root's
//! `root/.ssh/authorized_keys` (0600 in a 0700 folder), each key once.
//!
//! Secrets off the FAT ([`move_secrets`]): the FAT partition has no permissions and is
//! readable from any OS the card is put into, so the bootstrap token `armada flash`
//! wrote into `armada.toml` and a manager's cluster material (`armada-cluster.toml`) are
//! moved into 0600 files on the root filesystem and deleted from the FAT, each copy
//! synced before its FAT original goes. The agent then reads the token from
//! [`BOOTSTRAP_TOKEN_FILE`] ([`fill_token`]) until registration uses it up
//! ([`remove_used_token`]).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;
use protocol::config::{
    BootSecrets, FirstBootConfig, BOOTSTRAP_TOKEN_FILE, BOOT_SECRETS_FILE, MANAGER_CLUSTER_DIR,
};

use crate::state::write_file_atomic;

/// The record of the last `armada.toml` applied (relative to the root).
pub const APPLIED_FILE: &str = "var/lib/armada/settings-applied.json";

/// What [`APPLIED_FILE`] holds.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Applied {
    /// SHA-256 of `armada.toml` as applied (after the secrets left it), hex.
    pub sha256: String,
    pub applied_at_ms: u64,
    /// The config file it came from.
    pub config: String,
    /// What was changed then; empty when the system already matched.
    pub changes: Vec<String>,
}

/// Reads the record under `root`; `None` before the first boot applied anything.
pub fn read_applied(root: &Path) -> anyhow::Result<Option<Applied>> {
    let p = root.join(APPLIED_FILE);
    match fs::read_to_string(&p) {
        Ok(t) => Ok(Some(
            serde_json::from_str(&t).with_context(|| format!("parsing {}", p.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

/// The boot-time run: secrets off the FAT, then everything `armada.toml` sets when it
/// changed since the last boot that applied it. Returns the log lines.
pub fn every_boot(root: &Path, cfg_path: &Path) -> anyhow::Result<Vec<String>> {
    use sha2::Digest;
    let mut lines = move_secrets(root, cfg_path)?;
    lines.extend(crate::settings::take_wifi_secret(root, cfg_path)?);
    let text = fs::read(cfg_path).with_context(|| format!("reading {}", cfg_path.display()))?;
    let sha = hex::encode(sha2::Sha256::digest(&text));
    let prev = read_applied(root)?;
    if let Some(p) = prev.as_ref().filter(|p| p.sha256 == sha) {
        lines.push(format!(
            "{} unchanged since it was applied at {} (sha256 {}): nothing to apply",
            cfg_path.display(),
            crate::clock::utc(p.applied_at_ms),
            &sha[..12]
        ));
        return Ok(lines);
    }
    let mut cfg = FirstBootConfig::load(cfg_path)?;
    fill_token(root, &mut cfg)?;
    let mut changes = apply(root, &cfg)?;
    changes.extend(crate::settings::apply(root, &cfg)?);
    let record = Applied {
        sha256: sha.clone(),
        applied_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        config: cfg_path.display().to_string(),
        changes: changes.clone(),
    };
    let to = root.join(APPLIED_FILE);
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let json = serde_json::to_string_pretty(&record).context("encoding the applied record")?;
    write_file_atomic(&to, json.as_bytes(), 0o644)?;
    lines.extend(changes.iter().cloned());
    lines.push(format!(
        "{} {} (sha256 {}): {} change(s) applied",
        cfg_path.display(),
        if prev.is_some() {
            "changed"
        } else {
            "applied for the first time"
        },
        &sha[..12],
        changes.len()
    ));
    Ok(lines)
}

/// Moves the secrets `armada flash` left on the FAT (beside `cfg_path`) under `root`;
/// returns a line per move. Safe to run again: what is already moved is not on the FAT.
pub fn move_secrets(root: &Path, cfg_path: &Path) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    let boot = cfg_path.parent().unwrap_or(Path::new("/"));
    let bundle_path = boot.join(BOOT_SECRETS_FILE);
    if bundle_path.is_file() {
        let text = fs::read_to_string(&bundle_path)
            .with_context(|| format!("reading {}", bundle_path.display()))?;
        let bundle = BootSecrets::parse(&text, &bundle_path.display().to_string())?;
        let dest = root.join(MANAGER_CLUSTER_DIR);
        fs::create_dir_all(&dest).with_context(|| format!("creating {}", dest.display()))?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("setting mode 0700 on {}", dest.display()))?;
        for (name, content) in &bundle.files {
            let to = dest.join(name);
            write_file_atomic(&to, content.as_bytes(), 0o600)?;
            done.push(format!("wrote {} (0600)", to.display()));
        }
        crate::state::remove_file_durable(&bundle_path)
            .with_context(|| format!("deleting {} from the FAT", bundle_path.display()))?;
        done.push(format!("deleted {} from the FAT", bundle_path.display()));
    }
    let cfg = FirstBootConfig::load(cfg_path)?;
    if !cfg.manager.token.is_empty() {
        let to = root.join(BOOTSTRAP_TOKEN_FILE);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        write_file_atomic(&to, format!("{}\n", cfg.manager.token).as_bytes(), 0o600)?;
        crate::join::remove_token(cfg_path)?;
        done.push(format!(
            "moved the bootstrap token from {} to {} (0600)",
            cfg_path.display(),
            to.display()
        ));
    }
    Ok(done)
}

/// Fills an empty `manager.token` from the token first boot stored under `root`.
pub fn fill_token(root: &Path, cfg: &mut FirstBootConfig) -> anyhow::Result<()> {
    if !cfg.manager.token.is_empty() {
        return Ok(());
    }
    let p = root.join(BOOTSTRAP_TOKEN_FILE);
    match fs::read_to_string(&p) {
        Ok(t) => cfg.manager.token = t.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
    }
    Ok(())
}

/// After registration: deletes the stored token, and the one in `armada.toml` if the
/// operator put one there again; returns what was removed.
pub fn remove_used_token(root: &Path, cfg_path: &Path) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    let p = root.join(BOOTSTRAP_TOKEN_FILE);
    if crate::state::remove_file_durable(&p).with_context(|| format!("deleting {}", p.display()))? {
        done.push(format!("deleted the bootstrap token {}", p.display()));
    }
    if FirstBootConfig::load(cfg_path).is_ok_and(|c| !c.manager.token.is_empty()) {
        crate::join::remove_token(cfg_path)?;
        done.push(format!(
            "removed the bootstrap token from {}",
            cfg_path.display()
        ));
    }
    Ok(done)
}

/// Applies the config under `root`; returns a line per change made.
pub fn apply(root: &Path, cfg: &FirstBootConfig) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    if !cfg.hostname.is_empty() {
        let etc = root.join("etc");
        fs::create_dir_all(&etc).with_context(|| format!("creating {}", etc.display()))?;
        let hostname_path = etc.join("hostname");
        let current = fs::read_to_string(&hostname_path).unwrap_or_default();
        if current.trim() != cfg.hostname {
            write_file_atomic(
                &hostname_path,
                format!("{}\n", cfg.hostname).as_bytes(),
                0o644,
            )?;
            done.push(format!("wrote {}", hostname_path.display()));
        }
        let hosts_path = etc.join("hosts");
        let hosts = fs::read_to_string(&hosts_path).unwrap_or_default();
        let new_hosts = hosts_with_hostname(&hosts, &cfg.hostname);
        if new_hosts != hosts {
            write_file_atomic(&hosts_path, new_hosts.as_bytes(), 0o644)?;
            done.push(format!(
                "set the 127.0.1.1 line of {}",
                hosts_path.display()
            ));
        }
        if root == Path::new("/") {
            set_kernel_hostname(&cfg.hostname)?;
            done.push(format!("set the hostname to {}", cfg.hostname));
        }
    }
    if !cfg.ssh_authorized_keys.is_empty() {
        let ssh = root.join("root/.ssh");
        fs::create_dir_all(&ssh).with_context(|| format!("creating {}", ssh.display()))?;
        fs::set_permissions(&ssh, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("setting mode 0700 on {}", ssh.display()))?;
        let keys_path = ssh.join("authorized_keys");
        let existing = fs::read_to_string(&keys_path).unwrap_or_default();
        let (text, added) = merge_keys(&existing, &cfg.ssh_authorized_keys);
        if added > 0
            || fs::metadata(&keys_path)
                .map(|m| m.permissions().mode() & 0o777 != 0o600)
                .unwrap_or(true)
        {
            write_file_atomic(&keys_path, text.as_bytes(), 0o600)?;
            done.push(format!("added {added} key(s) to {}", keys_path.display()));
        }
    }
    Ok(done)
}

fn set_kernel_hostname(name: &str) -> anyhow::Result<()> {
    // SAFETY: the pointer and length describe `name`'s bytes, valid for the call.
    let rc = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("setting the hostname to {name}"));
    }
    Ok(())
}

/// `hosts` with its `127.0.1.1` line naming `hostname` (replaced, or added).
pub fn hosts_with_hostname(hosts: &str, hostname: &str) -> String {
    let wanted = format!("127.0.1.1\t{hostname}");
    let mut found = false;
    let mut out: Vec<String> = hosts
        .lines()
        .map(|l| {
            if l.split_whitespace().next() == Some("127.0.1.1") {
                found = true;
                wanted.clone()
            } else {
                l.to_string()
            }
        })
        .collect();
    if !found {
        if out.is_empty() {
            out.push("127.0.0.1\tlocalhost".to_string());
        }
        out.push(wanted);
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

/// `existing` plus each of `keys` not already there (compared by type and key body).
pub fn merge_keys(existing: &str, keys: &[String]) -> (String, usize) {
    let body = |line: &str| -> Option<(String, String)> {
        let mut parts = line.split_whitespace();
        Some((parts.next()?.to_string(), parts.next()?.to_string()))
    };
    let mut have: Vec<(String, String)> = existing.lines().filter_map(body).collect();
    let mut text = existing.to_string();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    let mut added = 0;
    for k in keys {
        let k = k.trim();
        let Some(b) = body(k) else { continue };
        if !have.contains(&b) {
            text.push_str(k);
            text.push('\n');
            have.push(b);
            added += 1;
        }
    }
    (text, added)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_line_is_replaced_or_added() {
        let debian = "127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n::1\tlocalhost ip6-localhost\n";
        let out = hosts_with_hostname(debian, "pine-01");
        assert_eq!(
            out,
            "127.0.0.1\tlocalhost\n127.0.1.1\tpine-01\n::1\tlocalhost ip6-localhost\n"
        );
        assert_eq!(
            hosts_with_hostname("", "a"),
            "127.0.0.1\tlocalhost\n127.0.1.1\ta\n"
        );
        assert_eq!(hosts_with_hostname(&out, "pine-01"), out, "idempotent");
    }

    #[test]
    fn keys_are_added_once() {
        let (t, n) = merge_keys(
            "ssh-ed25519 AAA old@host",
            &[
                "ssh-ed25519 AAA other-comment".into(),
                "ssh-rsa BBB x".into(),
            ],
        );
        assert_eq!(n, 1);
        assert_eq!(t, "ssh-ed25519 AAA old@host\nssh-rsa BBB x\n");
        assert_eq!(merge_keys(&t, &["ssh-rsa BBB x".into()]).1, 0);
    }

    const TOKEN: &str =
        "armada1.0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.s3cretS3cretS3cretS3cret";

    #[test]
    fn secrets_move_off_the_fat_into_0600_files() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let boot = tmp.path().join("boot");
        fs::create_dir_all(&boot).unwrap();
        let mut bundle = BootSecrets::default();
        bundle.files.insert("manager.key".into(), "KEY".into());
        bundle.files.insert("admin-token".into(), "ADMIN".into());
        fs::write(boot.join(BOOT_SECRETS_FILE), bundle.to_toml()).unwrap();
        fs::write(boot.join("config.txt"), "kept").unwrap();
        let cfg_path = boot.join("armada.toml");
        fs::write(
            &cfg_path,
            format!("# kept\nrole = \"manager\"\n\n[manager]\naddress = \"127.0.0.1:7443\"\ntoken = \"{TOKEN}\"\n"),
        )
        .unwrap();
        let done = move_secrets(&root, &cfg_path).unwrap();
        assert_eq!(done.len(), 4, "{done:?}");
        // Gone from the FAT, the rest of armada.toml kept.
        let on_fat: Vec<_> = fs::read_dir(&boot)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            on_fat.len(),
            2,
            "only armada.toml and config.txt are left: {on_fat:?}"
        );
        let left = fs::read_to_string(&cfg_path).unwrap();
        assert!(
            !left.contains("s3cret") && left.contains("# kept"),
            "{left}"
        );
        assert!(left.contains("127.0.0.1:7443"), "{left}");
        // On the root, 0600 in a 0700 folder.
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let cluster = root.join(MANAGER_CLUSTER_DIR);
        assert_eq!(
            fs::read_to_string(cluster.join("manager.key")).unwrap(),
            "KEY"
        );
        assert_eq!(mode(&cluster.join("manager.key")), 0o600);
        assert_eq!(mode(&cluster.join("admin-token")), 0o600);
        assert_eq!(mode(&cluster), 0o700);
        let tok = root.join(BOOTSTRAP_TOKEN_FILE);
        assert_eq!(mode(&tok), 0o600);
        // The agent reads the token from there...
        let mut cfg = FirstBootConfig::load(&cfg_path).unwrap();
        assert!(cfg.manager.token.is_empty());
        fill_token(&root, &mut cfg).unwrap();
        assert_eq!(cfg.manager.token, TOKEN);
        // ... a second first-boot run finds nothing to move ...
        assert!(move_secrets(&root, &cfg_path).unwrap().is_empty());
        // ... and registration uses it up.
        assert_eq!(remove_used_token(&root, &cfg_path).unwrap().len(), 1);
        assert!(!tok.exists());
        let mut cfg = FirstBootConfig::load(&cfg_path).unwrap();
        fill_token(&root, &mut cfg).unwrap();
        assert!(cfg.manager.token.is_empty());
    }

    #[test]
    fn every_boot_applies_only_a_changed_config() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let boot = tmp.path().join("boot");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(&boot).unwrap();
        fs::write(root.join("etc/hostname"), "debian\n").unwrap();
        let cfg_path = boot.join("armada.toml");
        fs::write(&cfg_path, "hostname = \"node-1\"\n[labels]\nrack = \"a\"\n").unwrap();
        let first = every_boot(&root, &cfg_path).unwrap();
        assert!(first.last().unwrap().contains("first time"), "{first:?}");
        assert_eq!(
            fs::read_to_string(root.join("etc/hostname")).unwrap(),
            "node-1\n"
        );
        let rec = read_applied(&root).unwrap().unwrap();
        assert!(
            rec.changes.iter().any(|c| c.contains("etc/hostname")),
            "{rec:?}"
        );
        // The next boot, same file: nothing done.
        let again = every_boot(&root, &cfg_path).unwrap();
        assert_eq!(again.len(), 1, "{again:?}");
        assert!(again[0].contains("unchanged"), "{again:?}");
        // The operator edits the card: the new hostname is applied at the next boot.
        fs::write(&cfg_path, "hostname = \"node-9\"\n").unwrap();
        let changed = every_boot(&root, &cfg_path).unwrap();
        assert!(changed.last().unwrap().contains("changed"), "{changed:?}");
        assert_eq!(
            fs::read_to_string(root.join("etc/hostname")).unwrap(),
            "node-9\n"
        );
        assert_ne!(read_applied(&root).unwrap().unwrap().sha256, rec.sha256);
        // A bad edit is an error, and the record stays the last good one.
        let good = read_applied(&root).unwrap().unwrap();
        fs::write(&cfg_path, "hostnme = \"x\"\n").unwrap();
        assert!(every_boot(&root, &cfg_path).is_err());
        assert_eq!(read_applied(&root).unwrap().unwrap(), good);
    }

    #[test]
    fn applies_to_a_root_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/hostname"), "debian\n").unwrap();
        fs::write(
            root.join("etc/hosts"),
            "127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n",
        )
        .unwrap();
        let cfg = FirstBootConfig {
            hostname: "rpi-03".into(),
            ssh_authorized_keys: vec!["ssh-ed25519 AAAAC3Nza op@laptop".into()],
            ..Default::default()
        };
        let done = apply(root, &cfg).unwrap();
        assert_eq!(done.len(), 3, "{done:?}");
        assert_eq!(
            fs::read_to_string(root.join("etc/hostname")).unwrap(),
            "rpi-03\n"
        );
        assert!(fs::read_to_string(root.join("etc/hosts"))
            .unwrap()
            .contains("127.0.1.1\trpi-03\n"));
        let keys = root.join("root/.ssh/authorized_keys");
        assert_eq!(
            fs::read_to_string(&keys).unwrap(),
            "ssh-ed25519 AAAAC3Nza op@laptop\n"
        );
        assert_eq!(
            fs::metadata(&keys).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(root.join("root/.ssh"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        assert!(
            apply(root, &cfg).unwrap().is_empty(),
            "a second run changes nothing"
        );
    }
}

//! `armada-agent firstboot`: applies `armada.toml`'s hostname and ssh keys to the root
//! filesystem. The image's first-boot unit runs it before the agent proper.
//!
//! Hostname: `etc/hostname`, the `127.0.1.1` line of `etc/hosts`, and, when the root is
//! the running system's `/`, the kernel's hostname. Keys: appended to root's
//! `root/.ssh/authorized_keys` (0600 in a 0700 folder), each key once.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;
use protocol::config::FirstBootConfig;

use crate::state::write_file_atomic;

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

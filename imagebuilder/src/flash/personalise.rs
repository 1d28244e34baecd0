//! Per-card settings in `armada.toml` on the card's FAT boot partition, written
//! in-process after the image (no mount), through the one schema in
//! `protocol::config` so the agent reads exactly what was written.
//!
//! Secrets reach a card only here, never an image: the bootstrap token (in
//! `armada.toml`) and, on a manager's card, the manager's cluster material
//! ([`MANAGER_FILES`], in `armada-cluster.toml` on the FAT). The board's first boot moves
//! both off the FAT into 0600 files. The CA private key never leaves the cluster folder.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use protocol::config::{
    BootSecrets, ConfigEdit, FirstBootConfig, BOOT_CONFIG_FILE, BOOT_SECRETS_FILE,
};
use protocol::wire::Role;

use crate::fatfile;

/// What to change on the card; `None`/empty fields leave the image's value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Personalisation {
    pub hostname: Option<String>,
    pub role: Option<Role>,
    pub labels: Vec<(String, String)>,
    /// Added to the image's keys (duplicates dropped).
    pub ssh_keys: Vec<String>,
    pub manager: Option<String>,
    /// The bootstrap token (a secret: never printed).
    pub token: Option<String>,
    /// The manager's cluster material (secrets: never printed), written to a manager's
    /// card only. Empty without `--cluster`.
    pub cluster_files: Vec<(String, Vec<u8>)>,
    /// The manager's own address, for the agent on a manager's card (`127.0.0.1:PORT`).
    pub local_manager: Option<String>,
    /// `[wifi]` (the secret is never printed).
    pub wifi: Option<protocol::config::WifiConfig>,
    pub timezone: Option<String>,
    /// `[network]` static address.
    pub network: Option<protocol::config::NetworkConfig>,
}

/// The files a manager's card gets from the cluster folder: (name, required). The one
/// list: a file the manager needs is added here. Never `ca.key`: the manager does not
/// sign anything, and the CA key stays in the operator's folder.
pub const MANAGER_FILES: &[(&str, bool)] = &[
    (crate::cluster::CA_CERT, true),
    (crate::cluster::MANAGER_CERT, true),
    (crate::cluster::MANAGER_KEY, true),
    (crate::cluster::TOKEN, true),
    (crate::cluster::ADMIN_TOKEN, true),
    // The HMAC key of node credentials: a manager rebuilt from the folder takes its
    // nodes back.
    (crate::cluster::CREDENTIAL_KEY, true),
    (crate::cluster::CLUSTER_TOML, false),
    // Nodes the operator removed stay removed on a manager card made again.
    ("revoked-nodes", false),
];

/// Reads [`MANAGER_FILES`] from `dir`.
pub fn read_manager_files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for (name, required) in MANAGER_FILES {
        let p = dir.join(name);
        match std::fs::read(&p) {
            Ok(data) => out.push((name.to_string(), data)),
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e)
                if *name == crate::cluster::CREDENTIAL_KEY
                    && e.kind() == std::io::ErrorKind::NotFound =>
            {
                bail!(
                    "{} is missing: the cluster folder predates node-credential keys; run `armada cluster upgrade {}` first",
                    p.display(),
                    dir.display()
                )
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "reading {} (a manager's card carries the cluster folder made by `armada cluster init`)",
                        p.display()
                    )
                })
            }
        }
    }
    Ok(out)
}

/// The manager's port from the cluster folder's `cluster.toml` (default otherwise).
fn manager_port(dir: &Path) -> Result<u16> {
    let p = dir.join(crate::cluster::CLUSTER_TOML);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(protocol::DEFAULT_MANAGER_PORT)
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
    };
    let v: toml::Value =
        toml::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
    match v.get("manager_port").and_then(|x| x.as_integer()) {
        Some(n) => u16::try_from(n)
            .with_context(|| format!("{}: manager_port {n} is not a port", p.display())),
        None => Ok(protocol::DEFAULT_MANAGER_PORT),
    }
}

impl Personalisation {
    pub fn is_empty(&self) -> bool {
        *self == Personalisation::default()
    }
}

/// The flags as given on the command line.
pub struct Inputs<'a> {
    pub hostname: Option<&'a str>,
    pub index: Option<u32>,
    pub role: Option<Role>,
    pub labels: &'a [String],
    pub ssh_key_files: &'a [PathBuf],
    pub manager: Option<&'a str>,
    pub cluster: Option<&'a Path>,
    pub wifi: Option<protocol::config::WifiConfig>,
    pub timezone: Option<&'a str>,
    pub network: Option<protocol::config::NetworkConfig>,
}

/// Reads the key and token files and checks every value, before anything is written.
pub fn from_inputs(i: &Inputs) -> Result<Personalisation> {
    let hostname = match i.hostname {
        Some(t) => Some(expand_hostname(t, i.index)?),
        None if i.index.is_some() => {
            bail!("--index needs --hostname with {{n}} in it, e.g. --hostname 'pine-{{nn}}'")
        }
        None => None,
    };
    if let Some(h) = &hostname {
        if !protocol::config::is_valid_hostname(h) {
            bail!("hostname `{h}` is not valid (letters, digits and '-', 1-63 characters, not starting or ending with '-')");
        }
    }
    let labels = i
        .labels
        .iter()
        .map(|l| parse_label(l))
        .collect::<Result<Vec<_>>>()?;
    let mut ssh_keys = Vec::new();
    for f in i.ssh_key_files {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading ssh key file {}", f.display()))?;
        let keys = parse_key_file(&text);
        if keys.is_empty() {
            bail!("ssh key file {} holds no public key", f.display());
        }
        for (n, k) in keys.iter().enumerate() {
            if let Err(why) = check_public_key(k) {
                bail!(
                    "ssh key file {}: key {} is not an ssh public key ({why}); give the .pub file, e.g. ~/.ssh/id_ed25519.pub",
                    f.display(),
                    n + 1
                );
            }
        }
        ssh_keys.extend(keys);
    }
    let (cluster_files, local_manager) = match i.cluster {
        Some(dir) => (
            read_manager_files(dir)?,
            Some(format!("127.0.0.1:{}", manager_port(dir)?)),
        ),
        None => (Vec::new(), None),
    };
    if i.role == Some(Role::Manager) && i.cluster.is_none() {
        bail!("a manager's card needs --cluster DIR: its certificate, key and tokens are written to the card at flash time, never into an image");
    }
    let token = match i.cluster {
        Some(dir) => {
            let path = dir.join(crate::cluster::TOKEN);
            let tokens = crate::cluster::read_tokens(&path).with_context(|| {
                format!("reading the bootstrap token of cluster {}", dir.display())
            })?;
            match tokens.into_iter().next() {
                Some(t) => Some(t.expose()),
                None => bail!(
                    "cluster {} has no bootstrap token (revoked?): `armada cluster token rotate {}` makes one",
                    dir.display(),
                    dir.display()
                ),
            }
        }
        None => None,
    };
    Ok(Personalisation {
        hostname,
        role: i.role,
        labels,
        ssh_keys,
        manager: i.manager.map(str::to_string),
        token,
        cluster_files,
        local_manager,
        wifi: i.wifi.clone(),
        timezone: i.timezone.map(str::to_string),
        network: i.network.clone(),
    })
}

/// `pine-{n}` with index 7 is `pine-7`; `pine-{nn}` is `pine-07` (as many digits as n's).
pub fn expand_hostname(template: &str, index: Option<u32>) -> Result<String> {
    let Some(open) = template.find('{') else {
        if index.is_some() {
            bail!("--index given but --hostname `{template}` has no {{n}} placeholder");
        }
        return Ok(template.to_string());
    };
    let close = template[open..]
        .find('}')
        .map(|c| open + c)
        .with_context(|| format!("hostname `{template}`: unclosed {{"))?;
    let inner = &template[open + 1..close];
    if inner.is_empty() || !inner.chars().all(|c| c == 'n') {
        bail!("hostname `{template}`: the placeholder must be {{n}}, {{nn}} or {{nnn}}");
    }
    let Some(n) = index else {
        bail!("hostname `{template}` has a placeholder: give the card's number with --index N");
    };
    let rest = &template[close + 1..];
    if rest.contains('{') {
        bail!("hostname `{template}`: only one placeholder is allowed");
    }
    Ok(format!(
        "{}{:0width$}{}",
        &template[..open],
        n,
        rest,
        width = inner.len()
    ))
}

fn parse_label(s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => bail!("label `{s}` is not key=value"),
    }
}

/// Public key lines of an `authorized_keys`-style file (blank and `#` lines skipped).
pub fn parse_key_file(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// Checks one `authorized_keys` line: an optional options field, a key type sshd
/// knows, and a base64 body that starts with that same type (the wire format repeats
/// it), so a private key or a truncated paste is caught at flash time, not at login.
pub fn check_public_key(line: &str) -> std::result::Result<(), String> {
    const TYPES: &[&str] = &[
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
        "ssh-dss",
    ];
    let fields: Vec<&str> = line.split_whitespace().collect();
    let Some(i) = fields.iter().position(|f| TYPES.contains(f)) else {
        return Err("no key type such as ssh-ed25519 or ssh-rsa".into());
    };
    let Some(body) = fields.get(i + 1) else {
        return Err(format!("no key data after {}", fields[i]));
    };
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| format!("the key data is not base64: {e}"))?;
    let ty = fields[i].as_bytes();
    if raw.len() < 4 + ty.len() || &raw[4..4 + ty.len()] != ty {
        return Err(format!("the key data is not a {} key", fields[i]));
    }
    Ok(())
}

/// Applies `p` to the text of an `armada.toml`; the result is validated by the schema.
pub fn apply(text: &str, file: &str, p: &Personalisation) -> Result<(String, FirstBootConfig)> {
    let current = FirstBootConfig::parse(text, file)?;
    let mut edit = ConfigEdit::parse(text, file)?;
    if let Some(h) = &p.hostname {
        edit.set_str("hostname", h);
    }
    if let Some(r) = p.role {
        edit.set_role(r);
    }
    for (k, v) in &p.labels {
        edit.set_label(k, v);
    }
    if !p.ssh_keys.is_empty() {
        let mut keys = current.ssh_authorized_keys.clone();
        for k in &p.ssh_keys {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
        edit.set_ssh_keys(&keys);
    }
    let role = p.role.unwrap_or(current.role);
    match (&p.manager, &p.local_manager) {
        (Some(m), _) => {
            edit.set_str("manager.address", m);
        }
        // The agent on a manager's board registers with the manager beside it.
        (None, Some(local)) if role == Role::Manager => {
            edit.set_str("manager.address", local);
        }
        _ => {}
    }
    if let Some(t) = &p.token {
        edit.set_str("manager.token", t);
    }
    if let Some(w) = &p.wifi {
        edit.set_str("wifi.country", &w.country)
            .set_str("wifi.ssid", &w.ssid)
            .remove("wifi.psk")
            .remove("wifi.passphrase")
            .remove("wifi.hidden");
        if !w.psk.is_empty() {
            edit.set_str("wifi.psk", &w.psk);
        }
        if !w.passphrase.is_empty() {
            edit.set_str("wifi.passphrase", &w.passphrase);
        }
        if w.hidden {
            edit.set_bool("wifi.hidden", true);
        }
    }
    if let Some(tz) = &p.timezone {
        edit.set_str("timezone", tz);
    }
    if let Some(n) = &p.network {
        edit.set_str("network.address", &n.address);
        if !n.gateway.is_empty() {
            edit.set_str("network.gateway", &n.gateway);
        }
        if !n.dns.is_empty() {
            edit.set_str_list("network.dns", &n.dns);
        }
    }
    Ok(edit.finish()?)
}

/// Checks, before anything is written, that a raw image has an `armada.toml` that
/// takes `p` (compressed images are checked on the card after writing); returns the
/// config the card will have.
pub fn check_image(image: &Path, p: &Personalisation) -> Result<FirstBootConfig> {
    let file = File::open(image).with_context(|| format!("opening image {}", image.display()))?;
    let part = fatfile::first_fat_partition_in(&file, image).with_context(|| {
        format!(
            "personalising needs the image's boot partition: is {} an armada image?",
            image.display()
        )
    })?;
    let text = fatfile::read_file_in(&file, image, part, BOOT_CONFIG_FILE).with_context(|| {
        format!("personalising needs {BOOT_CONFIG_FILE} on the image's boot partition")
    })?;
    let text = String::from_utf8(text)
        .with_context(|| format!("{BOOT_CONFIG_FILE} in {} is not UTF-8", image.display()))?;
    let (_, cfg) = apply(&text, &format!("{}:{BOOT_CONFIG_FILE}", image.display()), p)?;
    manager_files_for(&cfg, p)?;
    Ok(cfg)
}

/// The cluster files to put on a card whose resulting config is `cfg`: the manager's
/// material on a manager's card (refused without `--cluster`), nothing on a worker's.
fn manager_files_for<'a>(
    cfg: &FirstBootConfig,
    p: &'a Personalisation,
) -> Result<&'a [(String, Vec<u8>)]> {
    if cfg.role != Role::Manager {
        return Ok(&[]);
    }
    if p.cluster_files.is_empty() {
        bail!("this card's role is manager but no --cluster DIR was given: the manager's certificate, key and tokens come from the cluster folder at flash time");
    }
    Ok(&p.cluster_files)
}

/// Edits `armada.toml` on the FAT partition `part` of the open target, then reads it
/// back and parses it as the agent will.
pub fn personalise_card(
    file: &File,
    dev: &Path,
    part: fatfile::PartitionSpan,
    p: &Personalisation,
) -> Result<FirstBootConfig> {
    let text = fatfile::read_file_in(file, dev, part, BOOT_CONFIG_FILE).with_context(|| {
        format!("the image has no readable {BOOT_CONFIG_FILE} on its boot partition: is it an armada image?")
    })?;
    let text = String::from_utf8(text)
        .with_context(|| format!("{BOOT_CONFIG_FILE} on {} is not UTF-8", dev.display()))?;
    let name = format!("{}:{BOOT_CONFIG_FILE}", dev.display());
    let (new_text, cfg) = apply(&text, &name, p)?;
    let secrets = manager_files_for(&cfg, p)?;
    if !secrets.is_empty() {
        let mut bundle = BootSecrets::default();
        for (fname, data) in secrets {
            let text = String::from_utf8(data.clone())
                .with_context(|| format!("cluster file {fname} is not text"))?;
            bundle.files.insert(fname.clone(), text);
        }
        let bytes = bundle.to_toml().into_bytes();
        fatfile::write_file_in(file, dev, part, BOOT_SECRETS_FILE, &bytes)?;
        if fatfile::read_file_in(file, dev, part, BOOT_SECRETS_FILE)? != bytes {
            bail!(
                "{BOOT_SECRETS_FILE} read back from {} differs from what was written",
                dev.display()
            );
        }
    }
    fatfile::write_file_in(file, dev, part, BOOT_CONFIG_FILE, new_text.as_bytes())?;
    file.sync_all()
        .with_context(|| format!("syncing {}", dev.display()))?;
    let back = fatfile::read_file_in(file, dev, part, BOOT_CONFIG_FILE)?;
    if back != new_text.as_bytes() {
        bail!(
            "{BOOT_CONFIG_FILE} read back from {} differs from what was written",
            dev.display()
        );
    }
    let text = String::from_utf8(back)
        .with_context(|| format!("{BOOT_CONFIG_FILE} on {} is not UTF-8", dev.display()))?;
    Ok(FirstBootConfig::parse(&text, &name)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_templates() {
        assert_eq!(expand_hostname("pine-{n}", Some(7)).unwrap(), "pine-7");
        assert_eq!(expand_hostname("pine-{nn}", Some(7)).unwrap(), "pine-07");
        assert_eq!(expand_hostname("rpi{nnn}-a", Some(12)).unwrap(), "rpi012-a");
        assert_eq!(expand_hostname("plain", None).unwrap(), "plain");
        assert!(expand_hostname("pine-{n}", None)
            .unwrap_err()
            .to_string()
            .contains("--index"));
        assert!(expand_hostname("plain", Some(1))
            .unwrap_err()
            .to_string()
            .contains("no {n}"));
        assert!(expand_hostname("p-{x}", Some(1)).is_err());
        assert!(expand_hostname("p-{n}-{n}", Some(1)).is_err());
    }

    #[test]
    fn inputs_are_checked_before_writing() {
        let bad = Inputs {
            hostname: Some("bad_name"),
            index: None,
            role: None,
            labels: &[],
            ssh_key_files: &[],
            manager: None,
            cluster: None,
            wifi: None,
            timezone: None,
            network: None,
        };
        assert!(from_inputs(&bad)
            .unwrap_err()
            .to_string()
            .contains("not valid"));
        let labels = ["zone".to_string()];
        let bad = Inputs {
            hostname: None,
            labels: &labels,
            ..bad
        };
        assert!(from_inputs(&bad)
            .unwrap_err()
            .to_string()
            .contains("key=value"));
        let none = Inputs { labels: &[], ..bad };
        assert!(from_inputs(&none).unwrap().is_empty());
    }

    #[test]
    fn apply_keeps_comments_and_merges_keys() {
        let text = "# note\nhostname = \"\"\nssh_authorized_keys = [\"ssh-ed25519 AAAA old@x\"]\n\n[manager]\naddress = \"\"\n";
        let p = Personalisation {
            hostname: Some("pine-03".into()),
            role: Some(Role::Manager),
            labels: vec![("zone".into(), "shelf-2".into())],
            ssh_keys: vec!["ssh-ed25519 AAAA old@x".into(), "ssh-rsa BBBB new@y".into()],
            manager: Some("192.168.1.10:7443".into()),
            token: None,
            ..Default::default()
        };
        let (out, cfg) = apply(text, "armada.toml", &p).unwrap();
        assert!(out.starts_with("# note"));
        assert_eq!(cfg.hostname, "pine-03");
        assert_eq!(cfg.role, Role::Manager);
        assert_eq!(cfg.labels["zone"], "shelf-2");
        assert_eq!(
            cfg.ssh_authorized_keys,
            vec!["ssh-ed25519 AAAA old@x", "ssh-rsa BBBB new@y"]
        );
        assert_eq!(cfg.manager.address, "192.168.1.10:7443");
        let bad = Personalisation {
            token: Some("not-a-token".into()),
            ..Default::default()
        };
        assert!(apply(text, "armada.toml", &bad)
            .unwrap_err()
            .to_string()
            .contains("manager.token"));
    }

    #[test]
    fn manager_material_goes_only_on_a_managers_card() {
        let no_cluster = Inputs {
            hostname: None,
            index: None,
            role: Some(Role::Manager),
            labels: &[],
            ssh_key_files: &[],
            manager: None,
            cluster: None,
            wifi: None,
            timezone: None,
            network: None,
        };
        assert!(from_inputs(&no_cluster)
            .unwrap_err()
            .to_string()
            .contains("--cluster"));
        let p = Personalisation {
            cluster_files: vec![("manager.key".into(), b"k".to_vec())],
            local_manager: Some("127.0.0.1:7443".into()),
            ..Default::default()
        };
        let worker = "role = \"worker\"\n[manager]\naddress = \"10.1.2.3:7443\"\n";
        let (_, cfg) = apply(worker, "armada.toml", &p).unwrap();
        assert!(manager_files_for(&cfg, &p).unwrap().is_empty());
        assert_eq!(
            cfg.manager.address, "10.1.2.3:7443",
            "a worker keeps its manager"
        );
        let manager = Personalisation {
            role: Some(Role::Manager),
            ..p.clone()
        };
        let (_, cfg) = apply(worker, "armada.toml", &manager).unwrap();
        assert_eq!(manager_files_for(&cfg, &manager).unwrap().len(), 1);
        assert_eq!(
            cfg.manager.address, "127.0.0.1:7443",
            "a manager's agent registers locally"
        );
        let bare = Personalisation {
            role: Some(Role::Manager),
            ..Default::default()
        };
        let (_, cfg) = apply(worker, "armada.toml", &bare).unwrap();
        assert!(manager_files_for(&cfg, &bare).is_err());
        assert!(MANAGER_FILES
            .iter()
            .all(|(n, _)| *n != crate::cluster::CA_KEY));
    }

    #[test]
    fn public_keys_are_checked() {
        // A real ed25519 public key (made for this test, never used).
        let k = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF6Jh+qPUGi9FeaG2A55GWWVq51lz0l7Wt7T7TGalBOE op@laptop";
        assert!(check_public_key(k).is_ok());
        assert!(check_public_key(&format!("from=\"10.0.0.1\" {k}")).is_ok());
        assert!(check_public_key("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIGyz x")
            .unwrap_err()
            .contains("not a ssh-rsa"));
        assert!(check_public_key("-----BEGIN OPENSSH PRIVATE KEY-----").is_err());
        assert!(check_public_key("ssh-ed25519 !!!")
            .unwrap_err()
            .contains("base64"));
    }

    #[test]
    fn key_files_skip_comments() {
        assert_eq!(
            parse_key_file("# c\n\nssh-ed25519 AAAA a@b\n  ssh-rsa BBB c@d  \n"),
            vec!["ssh-ed25519 AAAA a@b", "ssh-rsa BBB c@d"]
        );
    }
}

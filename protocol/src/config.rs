//! The first-boot config, `armada.toml`, on the FAT boot partition.
//!
//! One schema, in one place: `armada build` writes it with the build's defaults,
//! `armada flash` personalises it per card, an operator may edit it from any OS, and the
//! agent reads it at every start. Unknown keys are errors that name the key and line, so
//! a typo (`hostnme`) is never silently ignored. Edits go through [`ConfigEdit`], which
//! keeps the operator's comments and layout.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::wire::Role;

/// Where the agent finds the file on a running board.
pub const BOOT_CONFIG_PATHS: &[&str] = &["/boot/firmware/armada.toml", "/boot/armada.toml"];
/// File name on the FAT partition.
pub const BOOT_CONFIG_FILE: &str = "armada.toml";
/// The file on the FAT partition where `armada flash --role manager --cluster` puts the
/// manager's cluster material ([`BootSecrets`]: one file, so the card's FAT gains one
/// directory entry); first boot writes each file it holds to [`MANAGER_CLUSTER_DIR`]
/// (0600) and deletes it from the FAT. Images never carry it.
pub const BOOT_SECRETS_FILE: &str = "armada-cluster.toml";
/// Where the manager's cluster material lives on the board (relative to the root).
pub const MANAGER_CLUSTER_DIR: &str = "etc/armada/cluster";
/// Where first boot keeps the bootstrap token it took out of `armada.toml` on the FAT
/// (relative to the root, 0600) until registration uses it up.
pub const BOOTSTRAP_TOKEN_FILE: &str = "etc/armada/bootstrap-token";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirstBootConfig {
    /// Hostname applied at first boot; empty keeps the image's default.
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub role: Role,
    /// Board name, set by `armada build`.
    #[serde(default)]
    pub board: String,
    #[serde(default)]
    pub manager: ManagerConfig,
    /// Operator labels, put on the swarm node as given.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Public keys for root's (and the admin user's) authorized_keys.
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    #[serde(default)]
    pub agent: AgentConfig,
    /// IANA time zone (`Europe/Berlin`); empty keeps the image's (UTC).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub timezone: String,
    /// Wi-Fi client settings; no `ssid` means no Wi-Fi.
    #[serde(default, skip_serializing_if = "WifiConfig::is_unset")]
    pub wifi: WifiConfig,
    /// A static address instead of DHCP; no `address` means DHCP.
    #[serde(default, skip_serializing_if = "NetworkConfig::is_unset")]
    pub network: NetworkConfig,
}

/// `[wifi]`: the network a board joins over its radio. The secret (`psk` or
/// `passphrase`) is moved off the FAT at the board's next boot, like the token.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WifiConfig {
    /// ISO 3166 country code (`DE`, `US`): the radio's regulatory domain, required.
    #[serde(default)]
    pub country: String,
    #[serde(default)]
    pub ssid: String,
    /// The pre-shared key as 64 hex digits (what `wpa_passphrase` prints).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub psk: String,
    /// The passphrase, 8-63 printable ASCII characters.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub passphrase: String,
    /// The network does not broadcast its name: probe for it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hidden: bool,
}

impl WifiConfig {
    pub fn is_unset(&self) -> bool {
        *self == WifiConfig::default()
    }
}

/// `[network]`: a static IPv4 address for the board.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// `192.168.1.50/24`.
    #[serde(default)]
    pub address: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// systemd-networkd `Name=` match; default: the wired interfaces (`eth* en*`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface: String,
}

impl NetworkConfig {
    pub fn is_unset(&self) -> bool {
        *self == NetworkConfig::default()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagerConfig {
    /// `host[:port]` of the manager's API; empty means discover it over mDNS.
    #[serde(default)]
    pub address: String,
    /// Bootstrap token; the agent removes it from this file once registered.
    #[serde(default)]
    pub token: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    #[serde(default = "default_interval")]
    pub interval_seconds: u32,
    /// Address of the Prometheus endpoint; empty disables it.
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: String,
    /// Reports kept in memory while the manager is unreachable (default one hour at 10 s).
    #[serde(default = "default_backlog")]
    pub backlog_reports: usize,
    /// Bytes of snapshot JSON kept in memory at most, whatever their count (200
    /// containers make a snapshot ~20 times larger than none).
    #[serde(default = "default_backlog_bytes")]
    pub backlog_bytes: usize,
    /// The cgroup subtree the agent looks for containers in: dockerd's `--cgroup-parent`
    /// as an absolute path (`/docker`, cgroupfs driver) or a systemd slice name
    /// (`system.slice`, systemd driver). Empty (the default): the whole hierarchy, right
    /// for a board with one engine; a machine with several engines (each with its own
    /// `--cgroup-parent`) gives each agent its own engine's. See [`cgroup_parent_dir`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cgroup_parent: String,
}

/// Upper limits of the backlog: a day at a 10 s interval, and a quarter of a Pi 3's RAM.
pub const MAX_BACKLOG_REPORTS: usize = 8640;
pub const MAX_BACKLOG_BYTES: usize = 256 << 20;

fn default_interval() -> u32 {
    10
}
fn default_metrics_listen() -> String {
    crate::DEFAULT_AGENT_METRICS_ADDR.to_string()
}
fn default_backlog() -> usize {
    360
}
fn default_backlog_bytes() -> usize {
    32 << 20
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            interval_seconds: default_interval(),
            metrics_listen: default_metrics_listen(),
            backlog_reports: default_backlog(),
            backlog_bytes: default_backlog_bytes(),
            cgroup_parent: String::new(),
        }
    }
}

/// The folder `agent.cgroup_parent` names, relative to a cgroup hierarchy's root (the v2
/// tree, or each v1 controller's), with `/` between components; `None` is the whole
/// hierarchy. An absolute path is taken as written (`/arm-cl-node1` -> `arm-cl-node1`);
/// a systemd slice name is expanded as systemd nests slices (`a-b.slice` ->
/// `a.slice/a-b.slice`, and `-.slice`, the root slice, is the whole hierarchy). The
/// error says what is wrong and what to write instead.
pub fn cgroup_parent_dir(value: &str) -> Result<Option<String>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`{}` holds a space or control character: cgroup folder names have none",
            value.escape_debug()
        ));
    }
    if let Some(abs) = value.strip_prefix('/') {
        let mut parts = Vec::new();
        for part in abs.split('/').filter(|p| !p.is_empty()) {
            if part == "." || part == ".." {
                return Err(format!(
                    "`{value}`: `{part}` is not allowed; write the folder's path from the hierarchy's root, as dockerd's --cgroup-parent (`/docker`)"
                ));
            }
            parts.push(part);
        }
        return Ok((!parts.is_empty()).then(|| parts.join("/")));
    }
    if let Some(unit) = value
        .strip_suffix(".slice")
        .filter(|u| !value.contains('/') && !u.is_empty())
    {
        if unit == "-" {
            return Ok(None);
        }
        // systemd.slice(5): the name's dashes are its parents; an empty part is invalid.
        if unit.split('-').any(str::is_empty) {
            return Err(format!(
                "`{value}` is not a valid systemd slice name (a `-` at either end or two in a row)"
            ));
        }
        let mut parts = Vec::new();
        let mut prefix = String::new();
        for piece in unit.split('-') {
            if !prefix.is_empty() {
                prefix.push('-');
            }
            prefix.push_str(piece);
            parts.push(format!("{prefix}.slice"));
        }
        return Ok(Some(parts.join("/")));
    }
    Err(format!(
        "`{value}` is neither an absolute cgroup path (`/{value}`, as dockerd's --cgroup-parent with the cgroupfs driver) nor a systemd slice name (`system.slice`, systemd driver): write one of those, or leave it empty for the whole hierarchy"
    ))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: `{key}`: {message}")]
    Invalid {
        file: String,
        key: String,
        message: String,
    },
}

/// The manager's cluster material as it crosses the FAT ([`BOOT_SECRETS_FILE`]): file
/// name to text content (PEM certificates and keys, tokens, `cluster.toml`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSecrets {
    pub files: BTreeMap<String, String>,
}

impl BootSecrets {
    pub fn to_toml(&self) -> String {
        let mut s = String::from(
            "# armada: the manager's cluster material, written by `armada flash --role manager`.\n\
             # First boot moves it to /etc/armada/cluster (0600) and deletes this file.\n",
        );
        s.push_str(&toml::to_string(self).unwrap_or_default());
        s
    }

    /// Parses `text` and checks every name is a plain file name; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let s: BootSecrets = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_string(),
            message: describe_toml_error(text, &e),
        })?;
        for name in s.files.keys() {
            if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\', '\0']) {
                return Err(ConfigError::Invalid {
                    file: file.to_string(),
                    key: format!("files.{name}"),
                    message: "not a plain file name".into(),
                });
            }
        }
        Ok(s)
    }
}

impl FirstBootConfig {
    /// Parses and validates `text`; `file` names it in errors (a path or `armada.toml`).
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let cfg: FirstBootConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_string(),
            message: describe_toml_error(text, &e),
        })?;
        cfg.validate(file)?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Parse {
            file: file.clone(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &file)
    }

    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            file: file.to_string(),
            key: key.to_string(),
            message,
        };
        if !self.hostname.is_empty() && !is_valid_hostname(&self.hostname) {
            return Err(invalid(
                "hostname",
                format!(
                    "`{}` is not a valid hostname (letters, digits and '-', 1-63 characters, not starting or ending with '-')",
                    self.hostname
                ),
            ));
        }
        if !self.manager.token.is_empty() {
            if let Err(e) = self.manager.token.parse::<crate::token::BootstrapToken>() {
                return Err(invalid("manager.token", e.to_string()));
            }
        }
        for key in self.labels.keys() {
            if key.is_empty() || key.starts_with("armada.") || key.contains(char::is_whitespace) {
                return Err(invalid(
                    &format!("labels.{key}"),
                    "label keys must be non-empty, without spaces, and not in the reserved `armada.` namespace".into(),
                ));
            }
        }
        for (i, k) in self.ssh_authorized_keys.iter().enumerate() {
            if k.lines().count() != 1 || k.split_whitespace().count() < 2 {
                return Err(invalid(
                    &format!("ssh_authorized_keys[{i}]"),
                    "expected one public key line such as `ssh-ed25519 AAAA... user@host`".into(),
                ));
            }
        }
        validate_wifi(&self.wifi).map_err(|(k, m)| invalid(&format!("wifi.{k}"), m))?;
        validate_network(&self.network).map_err(|(k, m)| invalid(&format!("network.{k}"), m))?;
        if !self.timezone.is_empty() && !is_valid_timezone(&self.timezone) {
            return Err(invalid(
                "timezone",
                format!(
                    "`{}` is not a time zone name such as Europe/Berlin or UTC",
                    self.timezone
                ),
            ));
        }
        if !(1..=3600).contains(&self.agent.interval_seconds) {
            return Err(invalid(
                "agent.interval_seconds",
                "must be between 1 and 3600".into(),
            ));
        }
        if !(1..=MAX_BACKLOG_REPORTS).contains(&self.agent.backlog_reports) {
            return Err(invalid(
                "agent.backlog_reports",
                format!(
                    "{} is out of range: must be between 1 and {MAX_BACKLOG_REPORTS} (a day at 10 s)",
                    self.agent.backlog_reports
                ),
            ));
        }
        if let Err(message) = cgroup_parent_dir(&self.agent.cgroup_parent) {
            return Err(invalid("agent.cgroup_parent", message));
        }
        if !(64 << 10..=MAX_BACKLOG_BYTES).contains(&self.agent.backlog_bytes) {
            return Err(invalid(
                "agent.backlog_bytes",
                format!(
                    "{} is out of range: must be between 65536 (64 KiB) and {MAX_BACKLOG_BYTES} (256 MiB)",
                    self.agent.backlog_bytes
                ),
            ));
        }
        Ok(())
    }

    /// The file as `armada build` writes it, with a comment per section.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string_pretty(self).unwrap_or_default();
        format!(
            "# armada first-boot config. Edit from any OS; read at every boot.\n\
             # Keys: hostname, role (worker|manager), board, [manager] address/token,\n\
             # [labels] key = \"value\", ssh_authorized_keys = [\"ssh-ed25519 ...\"], [agent],\n\
             # timezone = \"Europe/Berlin\", [wifi] country/ssid/passphrase|psk/hidden,\n\
             # [network] address = \"192.168.1.50/24\"/gateway/dns/interface. Changes apply at next boot.\n\n{body}"
        )
    }
}

/// Lossless edits of an existing `armada.toml` (comments and order kept).
pub struct ConfigEdit {
    doc: toml_edit::DocumentMut,
    file: String,
}

impl ConfigEdit {
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        // Validate against the schema first, so an edit never launders a bad file.
        FirstBootConfig::parse(text, file)?;
        let doc = text
            .parse::<toml_edit::DocumentMut>()
            .map_err(|e| ConfigError::Parse {
                file: file.to_string(),
                message: e.to_string(),
            })?;
        Ok(ConfigEdit {
            doc,
            file: file.to_string(),
        })
    }

    pub fn set_str(&mut self, dotted_key: &str, value: &str) -> &mut Self {
        let (table, key) = self.table_for(dotted_key);
        table[key] = toml_edit::value(value);
        self
    }

    pub fn set_role(&mut self, role: Role) -> &mut Self {
        self.set_str("role", &role.to_string())
    }

    pub fn set_label(&mut self, key: &str, value: &str) -> &mut Self {
        let labels = self.doc.entry("labels").or_insert(toml_edit::table());
        if let Some(t) = labels.as_table_like_mut() {
            t.insert(key, toml_edit::value(value));
        }
        self
    }

    pub fn set_ssh_keys(&mut self, keys: &[String]) -> &mut Self {
        let mut arr = toml_edit::Array::new();
        for k in keys {
            arr.push(k.as_str());
        }
        self.doc["ssh_authorized_keys"] = toml_edit::value(arr);
        self
    }

    /// Removes `dotted_key` (`wifi.psk`) if it is there.
    pub fn remove(&mut self, dotted_key: &str) -> &mut Self {
        match dotted_key.split_once('.') {
            Some((section, key)) => {
                if let Some(t) = self
                    .doc
                    .get_mut(section)
                    .and_then(|m| m.as_table_like_mut())
                {
                    t.remove(key);
                }
            }
            None => {
                self.doc.remove(dotted_key);
            }
        }
        self
    }

    /// Sets `dotted_key` to a list of strings.
    pub fn set_str_list(&mut self, dotted_key: &str, values: &[String]) -> &mut Self {
        let mut arr = toml_edit::Array::new();
        for v in values {
            arr.push(v.as_str());
        }
        let (table, key) = self.table_for(dotted_key);
        table[key] = toml_edit::value(arr);
        self
    }

    /// Sets a boolean `dotted_key`.
    pub fn set_bool(&mut self, dotted_key: &str, value: bool) -> &mut Self {
        let (table, key) = self.table_for(dotted_key);
        table[key] = toml_edit::value(value);
        self
    }

    /// Removes `manager.token`: done by the agent once it holds its own credential.
    pub fn remove_token(&mut self) -> &mut Self {
        if let Some(m) = self
            .doc
            .get_mut("manager")
            .and_then(|m| m.as_table_like_mut())
        {
            m.remove("token");
        }
        self
    }

    /// The edited text, validated against the schema again.
    pub fn finish(&self) -> Result<(String, FirstBootConfig), ConfigError> {
        let text = self.doc.to_string();
        let cfg = FirstBootConfig::parse(&text, &self.file)?;
        Ok((text, cfg))
    }

    fn table_for<'a>(&'a mut self, dotted_key: &'a str) -> (&'a mut toml_edit::Item, &'a str) {
        match dotted_key.split_once('.') {
            Some((section, key)) => {
                let item = self.doc.entry(section).or_insert(toml_edit::table());
                (item, key)
            }
            None => (self.doc.as_item_mut(), dotted_key),
        }
    }
}

/// A `[wifi]` section's problem as (key, message).
fn validate_wifi(w: &WifiConfig) -> Result<(), (&'static str, String)> {
    if w.ssid.is_empty() {
        if w.is_unset() || (w.psk.is_empty() && w.passphrase.is_empty() && !w.hidden) {
            // Only a country (kept for the regulatory domain) is fine.
            return check_country(&w.country, false);
        }
        return Err((
            "ssid",
            "a [wifi] secret without an ssid: give ssid = \"NAME\"".into(),
        ));
    }
    if w.ssid.len() > 32 || w.ssid.contains(['\n', '\r', '\0']) {
        return Err(("ssid", "an SSID is 1-32 bytes on one line".into()));
    }
    check_country(&w.country, true)?;
    if !w.psk.is_empty() && !w.passphrase.is_empty() {
        return Err(("psk", "give psk or passphrase, not both".into()));
    }
    let psk_ok = |k: &str| k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit());
    if !w.psk.is_empty() && !psk_ok(&w.psk) {
        return Err((
            "psk",
            "a PSK is 64 hex digits (use passphrase for the text form)".into(),
        ));
    }
    let passphrase_ok =
        |p: &str| (8..=63).contains(&p.len()) && p.bytes().all(|b| (32..=126).contains(&b));
    if !w.passphrase.is_empty() && !passphrase_ok(&w.passphrase) {
        return Err((
            "passphrase",
            "a WPA passphrase is 8-63 printable ASCII characters".into(),
        ));
    }
    Ok(())
}

fn check_country(c: &str, required: bool) -> Result<(), (&'static str, String)> {
    if c.is_empty() && !required {
        return Ok(());
    }
    if c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()) {
        return Ok(());
    }
    Err((
        "country",
        format!("`{c}`: the radio needs its two-letter country code (DE, US, GB...): it decides the channels and power allowed"),
    ))
}

/// A `[network]` section's problem as (key, message).
fn validate_network(n: &NetworkConfig) -> Result<(), (&'static str, String)> {
    if n.address.is_empty() {
        if n.is_unset() {
            return Ok(());
        }
        return Err((
            "address",
            "gateway, dns or interface without an address: give address = \"192.168.1.50/24\""
                .into(),
        ));
    }
    let ok = n.address.split_once('/').is_some_and(|(ip, len)| {
        ip.parse::<std::net::Ipv4Addr>().is_ok()
            && len.parse::<u8>().is_ok_and(|l| (1..=32).contains(&l))
    });
    if !ok {
        return Err((
            "address",
            format!(
                "`{}` is not an IPv4 address with a prefix length such as 192.168.1.50/24",
                n.address
            ),
        ));
    }
    if !n.gateway.is_empty() && n.gateway.parse::<std::net::Ipv4Addr>().is_err() {
        return Err(("gateway", format!("`{}` is not an IPv4 address", n.gateway)));
    }
    for d in &n.dns {
        if d.parse::<std::net::IpAddr>().is_err() {
            return Err(("dns", format!("`{d}` is not an IP address")));
        }
    }
    if n.interface.contains(['\n', '\r']) {
        return Err(("interface", "one line of interface names or globs".into()));
    }
    Ok(())
}

/// A name under /usr/share/zoneinfo: `Area/City` parts of letters, digits, `_+-`, no
/// `..`, not absolute.
pub fn is_valid_timezone(tz: &str) -> bool {
    !tz.is_empty()
        && tz.len() <= 64
        && !tz.starts_with('/')
        && tz.split('/').all(|p| {
            !p.is_empty()
                && p != ".."
                && p != "."
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_+-".contains(&b))
        })
}

/// RFC 1123 label: what `hostnamectl` accepts as a static hostname part.
pub fn is_valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 63
        && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !h.starts_with('-')
        && !h.ends_with('-')
}

/// "line 7, column 3: unknown field `hostnme`, expected one of ...".
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().to_string();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
            format!("line {line}, column {col}: {msg}")
        }
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{BootstrapToken, CaFingerprint};

    fn token() -> String {
        BootstrapToken::generate(CaFingerprint::of_der(b"ca")).expose()
    }

    #[test]
    fn boot_secrets_round_trip_and_refuse_paths() {
        let mut s = BootSecrets::default();
        s.files
            .insert("manager.key".into(), "-----BEGIN\nX\n".into());
        s.files.insert("token".into(), "armada1.x.y\n".into());
        let back = BootSecrets::parse(&s.to_toml(), "f").unwrap();
        assert_eq!(back, s);
        let bad = "[files]\n\"../etc/shadow\" = \"x\"\n";
        assert!(BootSecrets::parse(bad, "f")
            .unwrap_err()
            .to_string()
            .contains("plain file name"));
    }

    #[test]
    fn defaults_round_trip() {
        let cfg = FirstBootConfig {
            hostname: "pine-01".into(),
            board: "pine64".into(),
            manager: ManagerConfig {
                address: "10.1.0.1:7443".into(),
                token: token(),
            },
            ..Default::default()
        };
        let text = cfg.to_toml();
        let back = FirstBootConfig::parse(&text, "armada.toml").unwrap();
        assert_eq!(back, cfg);
        assert_eq!(back.agent.interval_seconds, 10);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let text = "hostname = \"a\"\n\n[manager]\nadress = \"x\"\n";
        let err = FirstBootConfig::parse(text, "/boot/armada.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/boot/armada.toml"), "{err}");
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("adress"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = FirstBootConfig::parse("hostname = \"-bad\"", "f")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`hostname`"), "{err}");
        let err = FirstBootConfig::parse("[manager]\ntoken = \"nope\"", "f")
            .unwrap_err()
            .to_string();
        assert!(err.contains("manager.token"), "{err}");
        let err = FirstBootConfig::parse("[labels]\n\"armada.board\" = \"x\"", "f")
            .unwrap_err()
            .to_string();
        assert!(err.contains("labels.armada.board"), "{err}");
        let err = FirstBootConfig::parse("role = \"boss\"", "f")
            .unwrap_err()
            .to_string();
        assert!(err.contains("boss"), "{err}");
    }

    #[test]
    fn the_backlog_is_bounded_in_count_and_bytes() {
        let ok = FirstBootConfig::parse(
            "[agent]\nbacklog_reports = 8640\nbacklog_bytes = 1048576",
            "f",
        )
        .unwrap();
        assert_eq!(ok.agent.backlog_reports, MAX_BACKLOG_REPORTS);
        assert_eq!(ok.agent.backlog_bytes, 1 << 20);
        for (text, key) in [
            ("[agent]\nbacklog_reports = 0", "`agent.backlog_reports`"),
            (
                "[agent]\nbacklog_reports = 1000000000",
                "`agent.backlog_reports`",
            ),
            ("[agent]\nbacklog_bytes = 1000", "`agent.backlog_bytes`"),
            (
                "[agent]\nbacklog_bytes = 4294967296",
                "`agent.backlog_bytes`",
            ),
        ] {
            let err = FirstBootConfig::parse(text, "/boot/firmware/armada.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{text}: {err}");
            assert!(err.contains("/boot/firmware/armada.toml"), "{err}");
            assert!(err.contains("must be between"), "{err}");
        }
        let err = FirstBootConfig::parse("[agent]\nbacklog_reports = -1", "f")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn cgroup_parent_is_a_path_or_a_slice() {
        for (value, dir) in [
            ("", None),
            ("/", None),
            ("-.slice", None),
            ("/arm-cl-node1", Some("arm-cl-node1")),
            ("//docker/", Some("docker")),
            ("/kubepods/burstable", Some("kubepods/burstable")),
            ("system.slice", Some("system.slice")),
            (
                "arm-st-node1.slice",
                Some("arm.slice/arm-st.slice/arm-st-node1.slice"),
            ),
        ] {
            assert_eq!(
                cgroup_parent_dir(value),
                Ok(dir.map(String::from)),
                "{value}"
            );
        }
        for (value, says) in [
            ("docker", "neither an absolute cgroup path"),
            ("a/b.slice", "neither an absolute cgroup path"),
            ("/a/../b", "`..` is not allowed"),
            ("/a/./b", "`.` is not allowed"),
            ("-a.slice", "not a valid systemd slice name"),
            ("a--b.slice", "not a valid systemd slice name"),
            ("/a b", "space or control character"),
        ] {
            let err = cgroup_parent_dir(value).unwrap_err();
            assert!(err.contains(says), "{value}: {err}");
        }
        let err =
            FirstBootConfig::parse("[agent]\ncgroup_parent = \"docker\"", "/boot/armada.toml")
                .unwrap_err()
                .to_string();
        assert!(err.contains("/boot/armada.toml"), "{err}");
        assert!(err.contains("`agent.cgroup_parent`"), "{err}");
        assert!(err.contains("`/docker`"), "{err}");
        let ok = FirstBootConfig::parse("[agent]\ncgroup_parent = \"/arm-st-node1\"", "f").unwrap();
        assert_eq!(ok.agent.cgroup_parent, "/arm-st-node1");
        // Round trip: written by to_toml only when set.
        assert_eq!(FirstBootConfig::parse(&ok.to_toml(), "f").unwrap(), ok);
        assert!(!FirstBootConfig::default()
            .to_toml()
            .contains("cgroup_parent"));
    }

    #[test]
    fn edits_keep_comments_and_remove_the_token() {
        let text = format!(
            "# operator's note\nhostname = \"old\"\n\n[manager]\naddress = \"m:7443\"\ntoken = \"{}\"\n",
            token()
        );
        let mut edit = ConfigEdit::parse(&text, "armada.toml").unwrap();
        edit.set_str("hostname", "pine-07")
            .set_label("zone", "shelf-2")
            .set_role(Role::Manager);
        edit.set_ssh_keys(&["ssh-ed25519 AAAAC3Nza user@host".into()]);
        let (out, cfg) = edit.finish().unwrap();
        assert!(out.contains("# operator's note"));
        assert_eq!(cfg.hostname, "pine-07");
        assert_eq!(cfg.labels["zone"], "shelf-2");
        assert_eq!(cfg.role, Role::Manager);
        assert_eq!(cfg.ssh_authorized_keys.len(), 1);
        assert!(!cfg.manager.token.is_empty());

        let mut edit = ConfigEdit::parse(&out, "armada.toml").unwrap();
        edit.remove_token();
        let (out2, cfg2) = edit.finish().unwrap();
        assert!(cfg2.manager.token.is_empty());
        assert!(!out2.contains("armada1."));
        assert_eq!(cfg2.manager.address, "m:7443");
    }

    #[test]
    fn an_edit_cannot_write_an_invalid_file() {
        let mut edit = ConfigEdit::parse("hostname = \"a\"", "f").unwrap();
        edit.set_str("hostname", "not a hostname");
        assert!(edit.finish().is_err());
    }
}

#[cfg(test)]
mod board_settings_tests {
    use super::*;

    fn check(text: &str) -> Result<FirstBootConfig, String> {
        FirstBootConfig::parse(text, "armada.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn wifi_needs_a_country_and_one_well_formed_secret() {
        let ok =
            check("[wifi]\ncountry = \"DE\"\nssid = \"shed\"\npassphrase = \"correct horse\"\n")
                .unwrap();
        assert_eq!(ok.wifi.ssid, "shed");
        assert!(
            check("[wifi]\nssid = \"shed\"\npassphrase = \"correct horse\"\n")
                .unwrap_err()
                .contains("wifi.country")
        );
        assert!(
            check("[wifi]\ncountry = \"DE\"\nssid = \"s\"\npassphrase = \"short\"\n")
                .unwrap_err()
                .contains("wifi.passphrase")
        );
        assert!(
            check("[wifi]\ncountry = \"DE\"\nssid = \"s\"\npsk = \"abc\"\n")
                .unwrap_err()
                .contains("64 hex")
        );
        assert!(check(&format!(
            "[wifi]\ncountry = \"DE\"\nssid = \"s\"\npsk = \"{}\"\npassphrase = \"12345678\"\n",
            "a".repeat(64)
        ))
        .unwrap_err()
        .contains("not both"));
        assert!(
            check("[wifi]\ncountry = \"DE\"\npassphrase = \"12345678\"\n")
                .unwrap_err()
                .contains("without an ssid")
        );
        // An open network, and a hidden one.
        assert!(check("[wifi]\ncountry = \"GB\"\nssid = \"cafe\"\nhidden = true\n").is_ok());
    }

    #[test]
    fn network_and_timezone_are_checked() {
        let c = check("timezone = \"Europe/Berlin\"\n[network]\naddress = \"192.168.1.50/24\"\ngateway = \"192.168.1.1\"\ndns = [\"192.168.1.1\", \"2001:db8::1\"]\n").unwrap();
        assert_eq!(c.network.gateway, "192.168.1.1");
        assert!(check("[network]\naddress = \"192.168.1.50\"\n")
            .unwrap_err()
            .contains("network.address"));
        assert!(check("[network]\ngateway = \"192.168.1.1\"\n")
            .unwrap_err()
            .contains("without an address"));
        assert!(
            check("[network]\naddress = \"10.1.1.1/24\"\ndns = [\"x\"]\n")
                .unwrap_err()
                .contains("network.dns")
        );
        assert!(check("timezone = \"../../etc/passwd\"\n")
            .unwrap_err()
            .contains("timezone"));
        assert!(check("timezone = \"UTC\"\n").is_ok());
    }

    #[test]
    fn edits_remove_and_set_keys() {
        let text = "# c\n[wifi]\ncountry = \"DE\"\nssid = \"s\"\npassphrase = \"12345678\"\n";
        let mut e = ConfigEdit::parse(text, "armada.toml").unwrap();
        e.remove("wifi.passphrase").set_bool("wifi.hidden", true);
        let (out, cfg) = e.finish().unwrap();
        assert!(out.starts_with("# c") && !out.contains("12345678"), "{out}");
        assert!(cfg.wifi.hidden && cfg.wifi.passphrase.is_empty());
    }
}

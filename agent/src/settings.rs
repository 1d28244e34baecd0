//! Board settings `armada.toml` carries beyond hostname and keys: Wi-Fi (for
//! wpa_supplicant), the time zone, a static address (for systemd-networkd). Each is a
//! pure render from the config to a file's text, and [`apply`] writes them under a root,
//! changing only what differs and removing what the config no longer asks for, so a
//! second run with the same config changes nothing.
//!
//! Wi-Fi: `etc/wpa_supplicant/wpa_supplicant-wlan0.conf` (0600), read by Debian's
//! `wpa_supplicant@wlan0.service`, which the image starts when a `wlan0` appears (a
//! udev rule; its armada drop-in runs it only when that file exists), and
//! `etc/systemd/network/30-armada-wlan.network` for DHCP on the radio. The secret leaves the FAT at the first boot that sees it
//! ([`take_wifi_secret`]) into [`WIFI_SECRET_FILE`] (0600); a later `armada.toml` with the
//! same SSID and no secret keeps using it.

use std::fs;
use std::path::Path;

use anyhow::Context;
use protocol::config::{FirstBootConfig, NetworkConfig, WifiConfig};
use serde::{Deserialize, Serialize};

use crate::state::write_file_atomic;

pub const WPA_CONF: &str = "etc/wpa_supplicant/wpa_supplicant-wlan0.conf";
pub const WLAN_NETWORK: &str = "etc/systemd/network/30-armada-wlan.network";
/// Sorted before the image's `20-armada-wired.network`, so it wins for wired links.
pub const STATIC_NETWORK: &str = "etc/systemd/network/10-armada-static.network";
/// Where the Wi-Fi secret taken off the FAT is kept (relative to the root, 0600).
pub const WIFI_SECRET_FILE: &str = "etc/armada/wifi-secret.json";

/// The secret of one network, as kept on the root filesystem.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WifiSecret {
    pub ssid: String,
    #[serde(default)]
    pub psk: String,
    #[serde(default)]
    pub passphrase: String,
}

/// The wpa_supplicant configuration for `w` (pure). The SSID is written in hex, so no
/// character of it needs quoting; a passphrase is quoted (wpa_supplicant takes the text
/// up to the last `"`), a PSK is bare hex.
pub fn wpa_supplicant_conf(w: &WifiConfig) -> String {
    let mut s = String::from(
        "# armada: from armada.toml [wifi]; rewritten at boot when armada.toml changes.\n\
         ctrl_interface=DIR=/run/wpa_supplicant GROUP=netdev\n\
         update_config=0\n",
    );
    s.push_str(&format!("country={}\n\nnetwork={{\n", w.country));
    s.push_str(&format!("\tssid={}\n", hex::encode(w.ssid.as_bytes())));
    if w.hidden {
        s.push_str("\tscan_ssid=1\n");
    }
    if !w.psk.is_empty() {
        s.push_str(&format!(
            "\tkey_mgmt=WPA-PSK\n\tpsk={}\n",
            w.psk.to_ascii_lowercase()
        ));
    } else if !w.passphrase.is_empty() {
        s.push_str(&format!("\tkey_mgmt=WPA-PSK\n\tpsk=\"{}\"\n", w.passphrase));
    } else {
        s.push_str("\tkey_mgmt=NONE\n");
    }
    s.push_str("}\n");
    s
}

/// DHCP on the radio, unless the static address is for it.
pub fn wlan_network() -> String {
    "# armada: DHCP on the Wi-Fi interface (armada.toml [wifi]).\n\
     [Match]\nName=wlan*\n\n[Network]\nDHCP=yes\nLinkLocalAddressing=ipv6\n"
        .to_string()
}

/// The systemd-networkd file for a static address (pure).
pub fn static_network(n: &NetworkConfig) -> String {
    let mut s = format!(
        "# armada: armada.toml [network]; removed again when the address is.\n\
         [Match]\nName={}\n\n[Network]\nAddress={}\n",
        if n.interface.is_empty() {
            "eth* en*"
        } else {
            &n.interface
        },
        n.address
    );
    if !n.gateway.is_empty() {
        s.push_str(&format!("Gateway={}\n", n.gateway));
    }
    for d in &n.dns {
        s.push_str(&format!("DNS={d}\n"));
    }
    s
}

/// Moves `[wifi]`'s psk or passphrase from `armada.toml` at `cfg_path` (on the FAT)
/// into [`WIFI_SECRET_FILE`] under `root`; returns what it did.
pub fn take_wifi_secret(root: &Path, cfg_path: &Path) -> anyhow::Result<Vec<String>> {
    let cfg = FirstBootConfig::load(cfg_path)?;
    let w = &cfg.wifi;
    if w.psk.is_empty() && w.passphrase.is_empty() {
        return Ok(vec![]);
    }
    let secret = WifiSecret {
        ssid: w.ssid.clone(),
        psk: w.psk.clone(),
        passphrase: w.passphrase.clone(),
    };
    let to = root.join(WIFI_SECRET_FILE);
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let text = serde_json::to_string(&secret).context("encoding the Wi-Fi secret")?;
    write_file_atomic(&to, text.as_bytes(), 0o600)?;
    let file_text =
        fs::read_to_string(cfg_path).with_context(|| format!("reading {}", cfg_path.display()))?;
    let name = cfg_path.display().to_string();
    let mut edit = protocol::config::ConfigEdit::parse(&file_text, &name)?;
    edit.remove("wifi.psk").remove("wifi.passphrase");
    let (new_text, _) = edit.finish()?;
    write_file_atomic(cfg_path, new_text.as_bytes(), 0o644)?;
    Ok(vec![format!(
        "moved the Wi-Fi secret of `{}` from {} to {} (0600)",
        w.ssid,
        cfg_path.display(),
        to.display()
    )])
}

/// `cfg.wifi` with the secret kept under `root` filled in when the FAT has none for
/// the same SSID.
pub fn wifi_with_secret(root: &Path, cfg: &FirstBootConfig) -> anyhow::Result<WifiConfig> {
    let mut w = cfg.wifi.clone();
    if w.ssid.is_empty() || !w.psk.is_empty() || !w.passphrase.is_empty() {
        return Ok(w);
    }
    let p = root.join(WIFI_SECRET_FILE);
    match fs::read_to_string(&p) {
        Ok(t) => {
            let s: WifiSecret =
                serde_json::from_str(&t).with_context(|| format!("parsing {}", p.display()))?;
            if s.ssid == w.ssid {
                w.psk = s.psk;
                w.passphrase = s.passphrase;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
    }
    Ok(w)
}

/// Writes (or removes) the Wi-Fi, time zone and static-address files under `root` to
/// match `cfg`; returns a line per change.
pub fn apply(root: &Path, cfg: &FirstBootConfig) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    // Wi-Fi.
    let wifi = wifi_with_secret(root, cfg)?;
    if wifi.ssid.is_empty() {
        remove(root, WPA_CONF, &mut done)?;
        remove(root, WLAN_NETWORK, &mut done)?;
    } else {
        put(
            root,
            WPA_CONF,
            &wpa_supplicant_conf(&wifi),
            0o600,
            &mut done,
        )?;
        put(root, WLAN_NETWORK, &wlan_network(), 0o644, &mut done)?;
        if let Some(d) = done.last_mut().filter(|l| l.contains(WLAN_NETWORK)) {
            d.push_str(&format!(
                " (Wi-Fi `{}`, country {})",
                wifi.ssid, wifi.country
            ));
        }
    }
    // Static address.
    if cfg.network.address.is_empty() {
        remove(root, STATIC_NETWORK, &mut done)?;
    } else {
        put(
            root,
            STATIC_NETWORK,
            &static_network(&cfg.network),
            0o644,
            &mut done,
        )?;
    }
    // Time zone.
    if !cfg.timezone.is_empty() {
        let zone = root.join("usr/share/zoneinfo").join(&cfg.timezone);
        if !zone.is_file() {
            anyhow::bail!(
                "time zone `{}` is not in {}: use a name from `timedatectl list-timezones`",
                cfg.timezone,
                root.join("usr/share/zoneinfo").display()
            );
        }
        let link = root.join("etc/localtime");
        let target = Path::new("/usr/share/zoneinfo").join(&cfg.timezone);
        if fs::read_link(&link).ok().as_deref() != Some(target.as_path()) {
            let tmp = root.join("etc/.localtime.armada");
            let _ = fs::remove_file(&tmp);
            std::os::unix::fs::symlink(&target, &tmp)
                .with_context(|| format!("linking {}", tmp.display()))?;
            fs::rename(&tmp, &link).with_context(|| format!("replacing {}", link.display()))?;
            done.push(format!("set the time zone to {}", cfg.timezone));
        }
        put(
            root,
            "etc/timezone",
            &format!("{}\n", cfg.timezone),
            0o644,
            &mut done,
        )?;
    }
    Ok(done)
}

fn put(
    root: &Path,
    rel: &str,
    text: &str,
    mode: u32,
    done: &mut Vec<String>,
) -> anyhow::Result<()> {
    let p = root.join(rel);
    if fs::read_to_string(&p).ok().as_deref() == Some(text) {
        return Ok(());
    }
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    write_file_atomic(&p, text.as_bytes(), mode)?;
    done.push(format!("wrote {}", p.display()));
    Ok(())
}

fn remove(root: &Path, rel: &str, done: &mut Vec<String>) -> anyhow::Result<()> {
    let p = root.join(rel);
    if crate::state::remove_file_durable(&p).with_context(|| format!("removing {}", p.display()))? {
        done.push(format!(
            "removed {} (no longer in armada.toml)",
            p.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wifi(pass: &str) -> WifiConfig {
        WifiConfig {
            country: "DE".into(),
            ssid: "shed \"5G\"".into(),
            passphrase: pass.into(),
            hidden: true,
            ..Default::default()
        }
    }

    #[test]
    fn wpa_conf_quotes_nothing_it_need_not() {
        let c = wpa_supplicant_conf(&wifi("correct horse"));
        assert!(c.contains("country=DE\n"), "{c}");
        assert!(
            c.contains(&format!("\tssid={}\n", hex::encode("shed \"5G\""))),
            "{c}"
        );
        assert!(
            c.contains("\tscan_ssid=1\n\tkey_mgmt=WPA-PSK\n\tpsk=\"correct horse\"\n"),
            "{c}"
        );
        let open = wpa_supplicant_conf(&WifiConfig {
            hidden: false,
            ..wifi("")
        });
        assert!(
            open.contains("key_mgmt=NONE") && !open.contains("scan_ssid"),
            "{open}"
        );
    }

    #[test]
    fn settings_apply_once_move_the_secret_and_go_when_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let boot = tmp.path().join("boot");
        fs::create_dir_all(&boot).unwrap();
        fs::create_dir_all(root.join("usr/share/zoneinfo/Europe")).unwrap();
        fs::write(root.join("usr/share/zoneinfo/Europe/Berlin"), "TZif").unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
        let cfg_path = boot.join("armada.toml");
        fs::write(
            &cfg_path,
            "# mine\ntimezone = \"Europe/Berlin\"\n[wifi]\ncountry = \"DE\"\nssid = \"shed\"\npassphrase = \"correct horse\"\n[network]\naddress = \"192.168.1.50/24\"\ngateway = \"192.168.1.1\"\n",
        )
        .unwrap();
        let moved = take_wifi_secret(&root, &cfg_path).unwrap();
        assert_eq!(moved.len(), 1, "{moved:?}");
        let left = fs::read_to_string(&cfg_path).unwrap();
        assert!(
            !left.contains("correct horse") && left.starts_with("# mine"),
            "{left}"
        );
        let cfg = FirstBootConfig::load(&cfg_path).unwrap();
        let done = apply(&root, &cfg).unwrap();
        assert_eq!(done.len(), 5, "{done:?}");
        let conf = fs::read_to_string(root.join(WPA_CONF)).unwrap();
        assert!(
            conf.contains("psk=\"correct horse\""),
            "the kept secret is used: {conf}"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| fs::metadata(root.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(WPA_CONF), 0o600);
        assert_eq!(mode(WIFI_SECRET_FILE), 0o600);
        assert!(fs::read_to_string(root.join(STATIC_NETWORK))
            .unwrap()
            .contains("Address=192.168.1.50/24\nGateway=192.168.1.1\n"));
        assert_eq!(
            fs::read_link(root.join("etc/localtime")).unwrap(),
            Path::new("/usr/share/zoneinfo/Europe/Berlin")
        );
        assert!(apply(&root, &cfg).unwrap().is_empty(), "idempotent");
        // The operator drops the static address and Wi-Fi: the files go.
        let plain = FirstBootConfig::default();
        let done = apply(&root, &plain).unwrap();
        assert_eq!(done.len(), 3, "{done:?}");
        assert!(!root.join(STATIC_NETWORK).exists() && !root.join(WPA_CONF).exists());
        let bad = FirstBootConfig {
            timezone: "Mars/Olympus".into(),
            ..Default::default()
        };
        assert!(apply(&root, &bad)
            .unwrap_err()
            .to_string()
            .contains("list-timezones"));
    }
}

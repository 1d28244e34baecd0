//! The Wi-Fi configuration armada writes for a board, read by wpa_supplicant's own
//! parser: `wpa_supplicant -ddK -c FILE` reads and checks the whole file before it
//! touches any interface, then fails on the made-up interface it is given (no radio
//! here). A file it cannot parse ends with "Failed to read or parse configuration".
//! What only a board with a radio proves: the association itself (driver, firmware,
//! regulatory domain, the access point accepting the key).

use std::process::Command;

use armada_agent::settings::wpa_supplicant_conf;
use protocol::config::WifiConfig;

/// wpa_supplicant's debug output for `conf`, or None (a loud skip outside CI) when the
/// supplicant is not installed.
fn parse(conf: &str) -> Option<String> {
    let found = ["/usr/sbin/wpa_supplicant", "/sbin/wpa_supplicant"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(bin) = found else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "CI=true and wpa_supplicant is missing (ci/host-deps.sh installs wpasupplicant)"
            );
        }
        eprintln!("SKIP wifi_config: wpa_supplicant not installed");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("wpa_supplicant-wlan0.conf");
    std::fs::write(&f, conf).unwrap();
    let o = Command::new(bin)
        .args(["-ddK", "-D", "nl80211", "-i", "armadanone0", "-c"])
        .arg(&f)
        .output()
        .unwrap();
    Some(format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    ))
}

fn accepted(out: &str, ssid: &str) {
    assert!(!out.contains("Failed to read or parse"), "{out}");
    assert!(out.contains("Priority group 0"), "{out}");
    assert!(out.contains(&format!("id=0 ssid='{ssid}'")), "{out}");
}

#[test]
fn wpa_supplicant_accepts_what_armada_writes() {
    let base = WifiConfig {
        country: "DE".into(),
        ssid: "shed".into(),
        passphrase: "correct horse battery".into(),
        ..Default::default()
    };
    let Some(out) = parse(&wpa_supplicant_conf(&base)) else {
        return;
    };
    accepted(&out, "shed");
    assert!(out.contains("country='DE'"), "{out}");
    assert!(
        out.contains("PSK (ASCII passphrase) - hexdump_ascii(len=21)"),
        "{out}"
    );

    // Quotes, backslashes and spaces in the passphrase and the SSID; hidden network.
    let odd = WifiConfig {
        ssid: "Caf\u{e9} \"5G\"".into(),
        passphrase: "a\"b\\c d e f".into(),
        hidden: true,
        ..base.clone()
    };
    let out = parse(&wpa_supplicant_conf(&odd)).unwrap();
    assert!(!out.contains("Failed to read or parse"), "{out}");
    assert!(out.contains("scan_ssid=1"), "{out}");
    assert!(
        out.contains("PSK (ASCII passphrase) - hexdump_ascii(len=11)"),
        "{out}"
    );
    assert!(
        out.contains("61 22 62 5c 63"),
        "the passphrase's bytes as given: {out}"
    );

    // A 64-hex PSK, and an open network.
    let psk = WifiConfig {
        passphrase: String::new(),
        psk: "0f".repeat(32),
        ..base.clone()
    };
    let out = parse(&wpa_supplicant_conf(&psk)).unwrap();
    accepted(&out, "shed");
    assert!(out.contains("PSK - hexdump(len=32)"), "{out}");
    let open = WifiConfig {
        passphrase: String::new(),
        ..base.clone()
    };
    let out = parse(&wpa_supplicant_conf(&open)).unwrap();
    accepted(&out, "shed");
    assert!(out.contains("key_mgmt: 0x4"), "{out}");

    // The check can fail: a passphrase the schema would refuse, written anyway.
    let short = WifiConfig {
        passphrase: "short".into(),
        ..base
    };
    let out = parse(&wpa_supplicant_conf(&short)).unwrap();
    assert!(
        out.contains("Failed to read or parse configuration"),
        "{out}"
    );
}

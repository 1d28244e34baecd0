//! The `--wifi-*` flags: the `[wifi]` section a card gets. The passphrase never comes
//! from an argument (it would sit in the shell history and in `ps`): it is read from
//! `--wifi-psk-file` or asked for, without echo, on the terminal.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use protocol::config::WifiConfig;

/// The flags as given.
pub struct Flags<'a> {
    pub ssid: Option<&'a str>,
    pub country: Option<&'a str>,
    pub psk_file: Option<&'a Path>,
    pub hidden: bool,
    pub open: bool,
}

/// `[wifi]` from the flags, or None when no Wi-Fi flag was given.
pub fn from_flags(f: &Flags) -> Result<Option<WifiConfig>> {
    let Some(ssid) = f.ssid else {
        if f.country.is_some() || f.psk_file.is_some() || f.hidden || f.open {
            bail!("--wifi-country, --wifi-psk-file, --wifi-hidden and --wifi-open need --wifi-ssid NAME");
        }
        return Ok(None);
    };
    let Some(country) = f.country else {
        bail!("--wifi-ssid needs --wifi-country CC (the two-letter country code, e.g. DE or US): the radio's allowed channels and power depend on it");
    };
    let secret = match (f.psk_file, f.open) {
        (Some(_), true) => {
            bail!("--wifi-open is for a network without a passphrase: drop --wifi-psk-file")
        }
        (Some(p), false) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading the Wi-Fi passphrase file {}", p.display()))?;
            let line = text.lines().next().unwrap_or("").to_string();
            if line.is_empty() {
                bail!("Wi-Fi passphrase file {} is empty", p.display());
            }
            line
        }
        (None, true) => String::new(),
        (None, false) => prompt(ssid)?,
    };
    let mut w = WifiConfig {
        country: country.to_ascii_uppercase(),
        ssid: ssid.to_string(),
        hidden: f.hidden,
        ..Default::default()
    };
    if secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit()) {
        w.psk = secret;
    } else {
        w.passphrase = secret;
    }
    Ok(Some(w))
}

/// Asks for the passphrase twice on the terminal, echo off.
fn prompt(ssid: &str) -> Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("--wifi-ssid: no terminal to ask the passphrase on; give --wifi-psk-file FILE (a passphrase is never taken as an argument), or --wifi-open for an open network");
    }
    let read = |q: &str| -> Result<String> {
        eprint!("{q}");
        let _ = std::io::stderr().flush();
        let _echo = EchoOff::new();
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        eprintln!();
        Ok(line.trim_end_matches(['\n', '\r']).to_string())
    };
    let a = read(&format!("Wi-Fi passphrase for `{ssid}`: "))?;
    let b = read("Again: ")?;
    if a != b {
        bail!("the two passphrases differ");
    }
    Ok(a)
}

/// Terminal echo off while it lives (restored on drop, also on error).
struct EchoOff(Option<libc::termios>);

impl EchoOff {
    fn new() -> Self {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a zeroed termios they fill in.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return EchoOff(None);
            }
            let old = t;
            t.c_lflag &= !libc::ECHO;
            libc::tcsetattr(0, libc::TCSANOW, &t);
            EchoOff(Some(old))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(old) = self.0 {
            // SAFETY: restores the attributes read in `new`.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, &old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags<'a>(
        ssid: Option<&'a str>,
        country: Option<&'a str>,
        file: Option<&'a Path>,
    ) -> Flags<'a> {
        Flags {
            ssid,
            country,
            psk_file: file,
            hidden: false,
            open: false,
        }
    }

    #[test]
    fn the_secret_comes_from_a_file_as_passphrase_or_psk() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pass");
        std::fs::write(&f, "correct horse\n").unwrap();
        let w = from_flags(&flags(Some("shed"), Some("de"), Some(&f)))
            .unwrap()
            .unwrap();
        assert_eq!(
            (w.country.as_str(), w.passphrase.as_str()),
            ("DE", "correct horse")
        );
        std::fs::write(&f, format!("{}\n", "ab".repeat(32))).unwrap();
        let w = from_flags(&flags(Some("shed"), Some("DE"), Some(&f)))
            .unwrap()
            .unwrap();
        assert_eq!(w.psk.len(), 64);
        assert!(w.passphrase.is_empty());
        assert!(from_flags(&flags(None, None, None)).unwrap().is_none());
        assert!(from_flags(&flags(Some("s"), None, Some(&f)))
            .unwrap_err()
            .to_string()
            .contains("--wifi-country"));
        assert!(from_flags(&flags(None, Some("DE"), None))
            .unwrap_err()
            .to_string()
            .contains("need --wifi-ssid"));
    }
}

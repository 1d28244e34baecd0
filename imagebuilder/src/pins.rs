//! Which file serves each `[downloads.NAME]` of a board config: a download verified
//! against its pinned sha256, or a file the user already has (`--download NAME=FILE`).
//!
//! A pin of all zeros means "nobody has checked this file yet" (the longsleep board's
//! files cannot be reached from armada's build machine). Such a download is refused
//! before any work, naming what to supply, rather than fetched and then failed on its
//! checksum. A user's own file is hashed and its sha256 printed, so it can be pinned;
//! where the board config does pin a hash, the user's file must match it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::board::Download;
use crate::progress::Ui;

/// `--download NAME=FILE`: use FILE for the board config's `[downloads.NAME]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalDownload {
    pub name: String,
    pub file: PathBuf,
}

impl std::str::FromStr for LocalDownload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('=') {
            Some((name, file)) if !name.is_empty() && !file.is_empty() => Ok(LocalDownload {
                name: name.to_string(),
                file: PathBuf::from(file),
            }),
            _ => Err(format!(
                "`{s}`: expected NAME=FILE, NAME being a [downloads.NAME] of the board config"
            )),
        }
    }
}

/// Whether a pin is the placeholder "not pinned yet" (all zeros, or empty).
pub fn is_unset(sha256: &str) -> bool {
    sha256.chars().all(|c| c == '0')
}

/// The checks made before any work: every `--download` names a download of the board,
/// and every download either has a real pin or a local file. Errors say what to supply.
pub fn check(
    downloads: &BTreeMap<String, Download>,
    locals: &[LocalDownload],
    board_file: &str,
) -> Result<(), String> {
    for l in locals {
        if !downloads.contains_key(&l.name) {
            let known: Vec<&str> = downloads.keys().map(String::as_str).collect();
            return Err(format!(
                "--download {}={}: board config {board_file} has no [downloads.{}] ({})",
                l.name,
                l.file.display(),
                l.name,
                if known.is_empty() {
                    "it downloads nothing".to_string()
                } else {
                    format!("its downloads: {}", known.join(", "))
                }
            ));
        }
        if !l.file.is_file() {
            return Err(format!(
                "--download {}={}: no such file",
                l.name,
                l.file.display()
            ));
        }
    }
    let unset: Vec<(&String, &Download)> = downloads
        .iter()
        .filter(|(name, d)| {
            let pin = d
                .sha256
                .as_ref()
                .map(|s| s.get_ref().as_str())
                .unwrap_or("");
            is_unset(pin) && !locals.iter().any(|l| &l.name == *name)
        })
        .collect();
    if unset.is_empty() {
        return Ok(());
    }
    let mut msg = format!(
        "board config {board_file}: {} not pinned (sha256 all zeros), so armada downloads nothing for {}. Supply the files you trust:\n",
        unset
            .iter()
            .map(|(n, _)| format!("downloads.{n}"))
            .collect::<Vec<_>>()
            .join(", "),
        if unset.len() == 1 { "it" } else { "them" }
    );
    for (name, d) in &unset {
        msg.push_str(&format!(
            "  --download {name}=FILE   (from {})\n",
            d.url.get_ref()
        ));
    }
    msg.push_str(
        "armada prints each file's sha256; or put `sha256sum FILE`'s hash in the board config's [downloads.NAME] sha256 to pin it.",
    );
    Err(msg)
}

/// Resolves every download to a file and its sha256: the user's file where given,
/// else the pinned download (from the cache or fetched and verified).
pub fn resolve(
    downloads: &BTreeMap<String, Download>,
    locals: &[LocalDownload],
    cache: &Path,
    board_file: &str,
    ui: &Ui,
) -> Result<BTreeMap<String, (PathBuf, String)>> {
    let mut out = BTreeMap::new();
    for (name, d) in downloads {
        let pin = d
            .sha256
            .as_ref()
            .map(|s| s.get_ref().to_ascii_lowercase())
            .unwrap_or_default();
        let resolved = match locals.iter().find(|l| &l.name == name) {
            Some(l) => {
                let have = crate::fetch::sha256_file(&l.file)
                    .with_context(|| format!("hashing --download {name}={}", l.file.display()))?;
                if !is_unset(&pin) && have != pin {
                    bail!(
                        "--download {name}={}: its sha256 is {have}, but board config {board_file} pins {pin} for downloads.{name}",
                        l.file.display()
                    );
                }
                // Printed whatever --quiet says: it is what the user pins next.
                println!(
                    "download {name}: {} sha256 {have}{}",
                    l.file.display(),
                    if is_unset(&pin) {
                        format!(" (pin it: sha256 = \"{have}\" in [downloads.{name}])")
                    } else {
                        " (matches the pin)".to_string()
                    }
                );
                let path = std::fs::canonicalize(&l.file)
                    .with_context(|| format!("resolving {}", l.file.display()))?;
                (path, have)
            }
            None => {
                let p = crate::fetch::fetch(d.url.get_ref(), &pin, cache, ui)
                    .with_context(|| format!("board config {board_file}: downloads.{name}"))?;
                (p, pin)
            }
        };
        out.insert(name.clone(), resolved);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn downloads(pins: &[(&str, &str)]) -> BTreeMap<String, Download> {
        let mut text = String::new();
        for (n, p) in pins {
            text.push_str(&format!(
                "[{n}]\nurl = \"https://example.invalid/{n}.bin\"\nsha256 = \"{p}\"\n"
            ));
        }
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn parses_name_equals_file() {
        let l: LocalDownload = "kernel=/tmp/linux.tar.xz".parse().unwrap();
        assert_eq!(l.name, "kernel");
        assert_eq!(l.file, PathBuf::from("/tmp/linux.tar.xz"));
        for bad in ["kernel", "=x", "kernel="] {
            assert!(bad.parse::<LocalDownload>().is_err(), "{bad}");
        }
    }

    #[test]
    fn unset_pins_are_refused_naming_what_to_supply() {
        let zero = "0".repeat(64);
        let d = downloads(&[
            ("boot0", &zero),
            ("kernel", &zero),
            ("ok", &"ab".repeat(32)),
        ]);
        let e = check(&d, &[], "b.toml").unwrap_err();
        assert!(
            e.contains("downloads.boot0, downloads.kernel not pinned"),
            "{e}"
        );
        assert!(e.contains("--download kernel=FILE"), "{e}");
        assert!(e.contains("https://example.invalid/boot0.bin"), "{e}");
        assert!(!e.contains("--download ok="), "{e}");
    }

    #[test]
    fn local_files_cover_unset_pins_and_must_exist_and_be_known() {
        let zero = "0".repeat(64);
        let d = downloads(&[("kernel", &zero)]);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k.tar.xz");
        std::fs::write(&f, b"kernel").unwrap();
        let ok = [LocalDownload {
            name: "kernel".into(),
            file: f.clone(),
        }];
        assert_eq!(check(&d, &ok, "b.toml"), Ok(()));
        let missing = [LocalDownload {
            name: "kernel".into(),
            file: dir.path().join("nope"),
        }];
        assert!(check(&d, &missing, "b.toml")
            .unwrap_err()
            .contains("no such file"));
        let unknown = [LocalDownload {
            name: "kernal".into(),
            file: f,
        }];
        let e = check(&d, &unknown, "b.toml").unwrap_err();
        assert!(
            e.contains("no [downloads.kernal]") && e.contains("kernel"),
            "{e}"
        );
    }

    #[test]
    fn a_local_file_must_match_a_real_pin() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("boot0.bin");
        std::fs::write(&f, b"boot0").unwrap();
        let have = crate::fetch::sha256_file(&f).unwrap();
        let ui = Ui::new(true);
        let local = [LocalDownload {
            name: "boot0".into(),
            file: f,
        }];
        let pinned = downloads(&[("boot0", &have)]);
        let r = resolve(&pinned, &local, dir.path(), "b.toml", &ui).unwrap();
        assert_eq!(r["boot0"].1, have);
        let unset = downloads(&[("boot0", &"0".repeat(64))]);
        assert_eq!(
            resolve(&unset, &local, dir.path(), "b.toml", &ui).unwrap()["boot0"].1,
            have
        );
        let other = downloads(&[("boot0", &"ab".repeat(32))]);
        let e = resolve(&other, &local, dir.path(), "b.toml", &ui)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&have) && e.contains(&"ab".repeat(32)), "{e}");
    }
}

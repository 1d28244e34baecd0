//! `armada imager-list`: a Raspberry Pi Imager os-list (`{"os_list": [...]}`) for images
//! `armada build` made, so Imager users can pick armada's images from a custom
//! repository (`rpi-imager --repo URL-or-file`).
//!
//! Each entry comes from an image's `.manifest.json` and the compressed image beside it:
//! `extract_size` and `extract_sha256` are the raw image's (the manifest's `raw_size` and
//! `raw_sha256`), `image_download_size` and `image_download_sha256` the compressed
//! file's (hashed here), `release_date` the build's `SOURCE_DATE_EPOCH` as a UTC date,
//! `devices` the board config's `imager_devices`. Images of boards without Imager
//! devices (Pine64) are left out, saying so. No `init_format`: Imager's own
//! customisation writes a `firstrun.sh` to the FAT and expects it mounted at `/boot`;
//! armada's cards are personalised by `armada.toml` (`armada flash`, or by editing it
//! on the card), so Imager's settings dialog is not offered.
//!
//! The fields and their types are those of Imager's os-list schema
//! (`doc/json-schema/os-list-schema.json` in its repository): required `name`,
//! `description`, `icon`, `url`, `extract_size`, `extract_sha256`,
//! `image_download_size`, `release_date`; [`check_entry`] enforces them.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::progress::Ui;

#[derive(clap::Args)]
#[command(after_help = "Example:\n  \
    armada imager-list --url-base https://example.org/armada/ out/*.manifest.json > os-list.json\n  \
    rpi-imager --repo ./os-list.json")]
pub struct ImagerListArgs {
    /// The images' manifests (`out/NAME.manifest.json`).
    #[arg(required = true)]
    pub manifests: Vec<PathBuf>,
    /// Where the compressed images will be downloaded from; each entry's url is this
    /// plus the image's file name. A local folder gives `file://` URLs.
    #[arg(long, value_name = "URL")]
    pub url_base: String,
    /// An icon URL for the entries.
    #[arg(long, value_name = "URL", default_value = "")]
    pub icon: String,
    /// Board configs, for each board's Imager device tags.
    #[arg(long, value_name = "DIR", default_value = "board-configs")]
    pub boards: PathBuf,
    /// Write here instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub fn run(args: ImagerListArgs, ui: &Ui) -> Result<()> {
    let mut entries = Vec::new();
    for m in &args.manifests {
        match entry_for(m, &args)? {
            Some(e) => entries.push(e),
            None => ui.info(&format!(
                "{}: its board has no imager_devices in {}: not a Raspberry Pi Imager board, left out",
                m.display(),
                args.boards.display()
            )),
        }
    }
    if entries.is_empty() {
        bail!("no image for a Raspberry Pi Imager board among the manifests given");
    }
    for e in &entries {
        check_entry(e)?;
    }
    let text = serde_json::to_string_pretty(&json!({ "os_list": entries }))? + "\n";
    match &args.out {
        Some(p) => std::fs::write(p, &text).with_context(|| format!("writing {}", p.display()))?,
        None => print!("{text}"),
    }
    Ok(())
}

/// The os-list entry for the image of manifest `path`; None if its board has no
/// Imager devices.
fn entry_for(path: &Path, args: &ImagerListArgs) -> Result<Option<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let m: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let s = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let board = s("board");
    let board_file = args.boards.join(format!("{board}.toml"));
    let cfg = crate::board::load(&board_file)
        .with_context(|| format!("{}: board `{board}`", path.display()))?;
    let devices = cfg.config.imager_devices.clone();
    if devices.is_empty() {
        return Ok(None);
    }
    let img = m.get("image").context("no `image` in the manifest")?;
    let file = img
        .get("file")
        .and_then(Value::as_str)
        .with_context(|| format!("{}: no image.file", path.display()))?;
    let raw_file = img.get("raw_file").and_then(Value::as_str).unwrap_or("");
    if file == raw_file {
        bail!("{}: the image was built with --compress none; Imager downloads .xz or .gz images: build it compressed", path.display());
    }
    let download = path.parent().unwrap_or(Path::new(".")).join(file);
    let (size, sha) = size_and_sha256(&download)?;
    let extract_size = img.get("raw_size").and_then(Value::as_u64).unwrap_or(0);
    let extract_sha = img.get("raw_sha256").and_then(Value::as_str).unwrap_or("");
    let epoch = m
        .get("source_date_epoch")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let role = s("role");
    let url = format!("{}/{file}", args.url_base.trim_end_matches('/'));
    Ok(Some(json!({
        "name": format!("armada {role} {} ({})", cfg.config.name, s("version")),
        "description": format!(
            "{}: Debian {} ({}), Docker {}, kernel {}. An armada Docker Swarm {role}; set hostname, keys, Wi-Fi and cluster with `armada flash` or in armada.toml on the card.",
            cfg.config.description, s("debian"), s("suite"), s("docker"), s("kernel")
        ),
        "icon": args.icon,
        "url": url,
        "extract_size": extract_size,
        "extract_sha256": extract_sha,
        "image_download_size": size,
        "image_download_sha256": sha,
        "release_date": utc_date(epoch),
        "devices": devices,
    })))
}

fn size_and_sha256(p: &Path) -> Result<(u64, String)> {
    let mut f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", p.display()))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, hex::encode(h.finalize())))
}

/// `YYYY-MM-DD` of a Unix time, UTC (civil-from-days, proleptic Gregorian).
pub fn utc_date(epoch: i64) -> String {
    let days = epoch.div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Checks an entry against Imager's os-list schema for an OS entry: the required keys
/// with their types, and what Imager does with the values (it aborts a write whose
/// image does not hash to `extract_sha256`, and reads .xz/.gz/.zip/.zst downloads).
pub fn check_entry(e: &Value) -> Result<()> {
    let name = e.get("name").and_then(Value::as_str).unwrap_or("?");
    let fail = |why: String| anyhow::anyhow!("os-list entry `{name}`: {why}");
    for k in [
        "name",
        "description",
        "icon",
        "url",
        "extract_sha256",
        "release_date",
    ] {
        if !e.get(k).is_some_and(Value::is_string) {
            return Err(fail(format!("`{k}` must be a string")));
        }
    }
    for k in ["extract_size", "image_download_size"] {
        let positive = e.get(k).and_then(Value::as_u64).is_some_and(|n| n > 0);
        if !positive {
            return Err(fail(format!("`{k}` must be a positive integer")));
        }
    }
    let hex64 = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    if !hex64(e.get("extract_sha256")) {
        return Err(fail("`extract_sha256` is not a SHA-256".into()));
    }
    if e.get("image_download_sha256").is_some() && !hex64(e.get("image_download_sha256")) {
        return Err(fail("`image_download_sha256` is not a SHA-256".into()));
    }
    let url = e["url"].as_str().unwrap_or("");
    if ![".xz", ".gz", ".zip", ".zst"]
        .iter()
        .any(|x| url.ends_with(x))
    {
        return Err(fail(format!(
            "url `{url}`: Imager downloads .xz, .gz, .zip or .zst"
        )));
    }
    let date = e["release_date"].as_str().unwrap_or("");
    let b = date.as_bytes();
    if !(b.len() == 10 && b[4] == b'-' && b[7] == b'-') {
        return Err(fail(format!("release_date `{date}` is not YYYY-MM-DD")));
    }
    match e.get("devices").and_then(Value::as_array) {
        Some(d) if !d.is_empty() && d.iter().all(Value::is_string) => Ok(()),
        _ => Err(fail(
            "`devices` must be a non-empty list of Imager device tags".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_days() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(1_700_000_000), "2023-11-14");
        assert_eq!(utc_date(951_782_400), "2000-02-29");
    }

    #[test]
    fn an_entry_from_a_manifest_passes_the_schema_checks() {
        let dir = tempfile::tempdir().unwrap();
        let xz = dir.path().join("rpi3-worker-0.1.0.img.xz");
        std::fs::write(&xz, b"not really xz, but bytes to hash").unwrap();
        let manifest = dir.path().join("rpi3-worker-0.1.0.manifest.json");
        std::fs::write(
            &manifest,
            json!({
                "board": "rpi3", "role": "worker", "version": "0.1.0", "debian": "13.8",
                "suite": "trixie", "docker": "26.1.5", "kernel": "6.12",
                "source_date_epoch": 1_700_000_000,
                "image": {"file": "rpi3-worker-0.1.0.img.xz", "raw_file": "rpi3-worker-0.1.0.img",
                          "raw_size": 2_147_483_648u64, "raw_sha256": "ab".repeat(32)}
            })
            .to_string(),
        )
        .unwrap();
        let args = ImagerListArgs {
            manifests: vec![manifest.clone()],
            url_base: "https://example.org/armada/".into(),
            icon: String::new(),
            boards: Path::new(env!("CARGO_MANIFEST_DIR")).join("../board-configs"),
            out: None,
        };
        let e = entry_for(&manifest, &args)
            .unwrap()
            .expect("rpi3 is an Imager board");
        check_entry(&e).unwrap();
        assert_eq!(
            e["url"],
            "https://example.org/armada/rpi3-worker-0.1.0.img.xz"
        );
        assert_eq!(e["extract_size"], 2_147_483_648u64);
        assert_eq!(e["image_download_size"], 32);
        assert_eq!(
            e["image_download_sha256"],
            hex::encode(Sha256::digest(b"not really xz, but bytes to hash"))
        );
        assert_eq!(e["release_date"], "2023-11-14");
        assert!(e["devices"]
            .as_array()
            .unwrap()
            .contains(&json!("pi3-64bit")));
        assert!(e.get("init_format").is_none());
        // The checks can fail.
        let mut bad = e.clone();
        bad["extract_size"] = json!("2 GB");
        assert!(check_entry(&bad)
            .unwrap_err()
            .to_string()
            .contains("extract_size"));
        let mut bad = e.clone();
        bad["url"] = json!("https://example.org/a.img");
        assert!(check_entry(&bad).is_err());
        let mut bad = e;
        bad.as_object_mut().unwrap().remove("icon");
        assert!(check_entry(&bad).is_err());
        // Pine64 is no Imager board.
        let mut m: Value =
            serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
        m["board"] = json!("pine64");
        std::fs::write(&manifest, m.to_string()).unwrap();
        assert!(entry_for(&manifest, &args).unwrap().is_none());
    }
}

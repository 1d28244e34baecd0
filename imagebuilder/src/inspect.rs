//! `armada inspect IMAGE` (issue 5): the partition table, each partition's filesystem,
//! raw blobs between the partition table and the first partition, the boot files,
//! `armada.toml` (token redacted) and the build manifest. Reads `.img`, `.img.xz` and
//! `.img.gz` (compressed ones are unpacked to a sparse temporary file first).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::fatfile::{self, PartitionSpan};

#[derive(clap::Args)]
pub struct InspectArgs {
    pub image: PathBuf,
}

/// What a partition's first bytes say it holds.
#[derive(Debug, PartialEq, Eq)]
pub enum FsInfo {
    Ext4 {
        label: String,
        uuid: String,
        size: u64,
    },
    Fat {
        kind: String,
        label: String,
        volume_id: u32,
    },
    Unknown,
}

/// Recognises ext2/3/4 and FAT from the first 2 KiB of a partition.
pub fn detect_fs(head: &[u8]) -> FsInfo {
    if head.len() >= 2048 && head[1024 + 0x38..1024 + 0x3a] == [0x53, 0xef] {
        let sb = &head[1024..2048];
        let label = String::from_utf8_lossy(&sb[0x78..0x88])
            .trim_end_matches('\0')
            .to_string();
        let u = hex::encode(&sb[0x68..0x78]);
        let uuid = format!(
            "{}-{}-{}-{}-{}",
            &u[0..8],
            &u[8..12],
            &u[12..16],
            &u[16..20],
            &u[20..32]
        );
        let blocks = u64::from(u32::from_le_bytes([sb[4], sb[5], sb[6], sb[7]]));
        let log = u32::from_le_bytes([sb[0x18], sb[0x19], sb[0x1a], sb[0x1b]]);
        return FsInfo::Ext4 {
            label,
            uuid,
            size: blocks << (10 + log.min(6)),
        };
    }
    if head.len() >= 512 && head[510] == 0x55 && head[511] == 0xaa {
        let (type_at, label_at, id_at) = if &head[0x52..0x57] == b"FAT32" {
            (0x52, 0x47, 0x43)
        } else {
            (0x36, 0x2b, 0x27)
        };
        if &head[type_at..type_at + 3] == b"FAT" {
            return FsInfo::Fat {
                kind: String::from_utf8_lossy(&head[type_at..type_at + 8])
                    .trim()
                    .to_string(),
                label: String::from_utf8_lossy(&head[label_at..label_at + 11])
                    .trim()
                    .to_string(),
                volume_id: u32::from_le_bytes([
                    head[id_at],
                    head[id_at + 1],
                    head[id_at + 2],
                    head[id_at + 3],
                ]),
            };
        }
    }
    FsInfo::Unknown
}

/// Names a blob by its magic.
pub fn blob_kind(head: &[u8]) -> &'static str {
    if head.len() >= 12 && &head[4..12] == b"eGON.BT0" {
        "Allwinner eGON boot0/SPL"
    } else if head.len() >= 4 && head[..4] == [0xd0, 0x0d, 0xfe, 0xed] {
        "FIT image (U-Boot + ATF)"
    } else if head.windows(6).any(|w| w == b"U-Boot") {
        "U-Boot"
    } else {
        "data"
    }
}

/// Runs of non-zero 4 KiB-aligned blocks in `[from, to)`: (start, end), each start moved
/// to the 1 KiB boundary at or before its first non-zero byte (blobs sit at KiB offsets).
pub fn nonzero_runs(file: &File, from: u64, to: u64) -> Result<Vec<(u64, u64)>> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let mut buf = vec![0u8; 4096];
    let mut pos = from;
    while pos < to {
        let block_end = ((pos / 4096) + 1) * 4096;
        let n = (block_end.min(to) - pos) as usize;
        file.read_exact_at(&mut buf[..n], pos)
            .context("reading the image")?;
        if let Some(first) = buf[..n].iter().position(|&b| b != 0) {
            match runs.last_mut() {
                Some(r) if r.1 == pos => r.1 = pos + n as u64,
                _ => {
                    let start = ((pos + first as u64) / 1024 * 1024).max(from);
                    runs.push((start, pos + n as u64));
                }
            }
        }
        pos += n as u64;
    }
    Ok(runs)
}

/// Splits runs where a known blob starts inside them (an SPL padded right up to the
/// FIT image after it reads as one run).
fn split_at_magic(file: &File, runs: Vec<(u64, u64)>) -> Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut head = [0u8; 12];
    for (s, e) in runs {
        let mut start = s;
        let mut o = (s / 1024 + 1) * 1024;
        while o + 12 <= e {
            file.read_exact_at(&mut head, o)
                .context("reading the image")?;
            if matches!(
                blob_kind(&head),
                "Allwinner eGON boot0/SPL" | "FIT image (U-Boot + ATF)"
            ) {
                out.push((start, o));
                start = o;
            }
            o += 1024;
        }
        out.push((start, e));
    }
    Ok(out)
}

/// A file removed when dropped.
struct TempImage(PathBuf);
impl Drop for TempImage {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn decompress_to_temp(path: &Path) -> Result<TempImage> {
    let name = path.to_string_lossy();
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader: Box<dyn Read> = if name.ends_with(".xz") {
        Box::new(liblzma::read::XzDecoder::new_multi_decoder(
            std::io::BufReader::new(f),
        ))
    } else {
        Box::new(flate2::read::GzDecoder::new(std::io::BufReader::new(f)))
    };
    let dir = std::env::var_os("TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let tmp_path = dir.join(format!(".armada-inspect-{}.img", std::process::id()));
    let guard = TempImage(tmp_path.clone());
    let mut tmp =
        File::create(&tmp_path).with_context(|| format!("creating {}", tmp_path.display()))?;
    let mut buf = vec![0u8; 1 << 16];
    let mut len = 0u64;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            let n = reader
                .read(&mut buf[filled..])
                .with_context(|| format!("decompressing {}", path.display()))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        // Holes stay holes.
        if buf[..filled].iter().all(|&b| b == 0) {
            tmp.seek(SeekFrom::Current(filled as i64))
                .context("writing the temporary image")?;
        } else {
            tmp.write_all(&buf[..filled])
                .context("writing the temporary image")?;
        }
        len += filled as u64;
    }
    tmp.set_len(len).context("writing the temporary image")?;
    Ok(guard)
}

pub fn run(args: InspectArgs) -> Result<()> {
    print!("{}", report(&args.image)?);
    Ok(())
}

/// The whole report as text.
pub fn report(image: &Path) -> Result<String> {
    let name = image.to_string_lossy();
    let _tmp;
    let raw: PathBuf = if name.ends_with(".xz") || name.ends_with(".gz") {
        let t = decompress_to_temp(image)?;
        let p = t.0.clone();
        _tmp = t;
        p
    } else {
        image.to_path_buf()
    };
    let mut file = File::open(&raw).with_context(|| format!("opening {}", image.display()))?;
    let size = file
        .metadata()
        .with_context(|| format!("reading {}", image.display()))?
        .len();
    let mut out = String::new();
    out.push_str(&format!(
        "image {} ({} bytes, {} MiB)\n",
        image.display(),
        size,
        size >> 20
    ));
    let mbr = mbrman::MBR::read_from(&mut file, 512)
        .with_context(|| format!("{}: no MBR partition table", image.display()))?;
    out.push_str(&format!(
        "\npartition table: MBR, disk signature {}\n",
        hex::encode(u32::from_le_bytes(mbr.header.disk_signature).to_be_bytes())
    ));
    out.push_str("  #  boot  type  start(bytes)    size(bytes)     filesystem\n");
    let mut first_start = size;
    let mut fat_span = None;
    for (i, p) in mbr.iter() {
        if !p.is_used() {
            continue;
        }
        let start = u64::from(p.starting_lba) * 512;
        let len = u64::from(p.sectors) * 512;
        first_start = first_start.min(start);
        let mut head = vec![0u8; 2048];
        let fs = if file.read_exact_at(&mut head, start).is_ok() {
            detect_fs(&head)
        } else {
            FsInfo::Unknown
        };
        let fs_text = match &fs {
            FsInfo::Ext4 { label, uuid, size } => {
                format!("ext4 label={label} uuid={uuid} fs-size={size}")
            }
            FsInfo::Fat {
                kind,
                label,
                volume_id,
            } => format!("{kind} label={label} volume-id={volume_id:08x}"),
            FsInfo::Unknown => "unknown".into(),
        };
        if matches!(fs, FsInfo::Fat { .. }) && fat_span.is_none() {
            fat_span = Some(PartitionSpan { offset: start, len });
        }
        out.push_str(&format!(
            "  {i}  {}     0x{:02x}  {start:<15} {len:<15} {fs_text}\n",
            if p.boot == mbrman::BOOT_ACTIVE {
                "*"
            } else {
                " "
            },
            p.sys
        ));
    }
    out.push_str("\nblobs between the partition table and the first partition:\n");
    let runs = nonzero_runs(&file, 512, first_start.min(size))?;
    if runs.is_empty() {
        out.push_str("  none\n");
    }
    for (s, e) in split_at_magic(&file, runs)? {
        let mut head = vec![0u8; ((e - s) as usize).min(4096)];
        file.read_exact_at(&mut head, s)
            .context("reading the image")?;
        out.push_str(&format!(
            "  at {s} ({} KiB): {} bytes, {}\n",
            s / 1024,
            e - s,
            blob_kind(&head)
        ));
    }
    let Some(span) = fat_span else {
        out.push_str("\nno FAT boot partition\n");
        return Ok(out);
    };
    out.push_str("\nboot files:\n");
    let mut stack = vec![String::new()];
    let mut lines = Vec::new();
    while let Some(dir) = stack.pop() {
        let entries = fatfile::list_dir(&raw, span, &dir)
            .with_context(|| format!("listing the boot partition of {}", image.display()))?;
        for e in entries {
            let path = if dir.is_empty() {
                e.name.clone()
            } else {
                format!("{dir}/{}", e.name)
            };
            if e.is_dir {
                stack.push(path.clone());
                lines.push(format!("  {path}/"));
            } else {
                lines.push(format!("  {path} ({} bytes)", e.size));
            }
        }
    }
    lines.sort();
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
    match fatfile::read_file(&raw, span, protocol::config::BOOT_CONFIG_FILE) {
        Ok(bytes) => {
            out.push_str("\narmada.toml:\n");
            for l in String::from_utf8_lossy(&bytes).lines() {
                let t = l.trim_start();
                if t.starts_with("token") && t.contains('=') && !t.ends_with("\"\"") {
                    out.push_str("  token = \"<set; redacted>\"\n");
                } else {
                    out.push_str(&format!("  {l}\n"));
                }
            }
        }
        Err(_) => out.push_str("\narmada.toml: not on the boot partition\n"),
    }
    match fatfile::read_file(&raw, span, "armada-manifest.json") {
        Ok(bytes) => {
            out.push_str("\nmanifest (armada-manifest.json on the boot partition):\n");
            let v: serde_json::Value =
                serde_json::from_slice(&bytes).context("parsing armada-manifest.json")?;
            for k in [
                "board",
                "role",
                "version",
                "source_date_epoch",
                "kernel",
                "docker",
                "agent",
                "manager",
                "input_hash",
                "builder",
            ] {
                if let Some(x) = v.get(k) {
                    let s = x
                        .as_str()
                        .map(String::from)
                        .unwrap_or_else(|| x.to_string());
                    if !s.is_empty() {
                        out.push_str(&format!("  {k}: {s}\n"));
                    }
                }
            }
            if let Some(p) = v.get("packages").and_then(|p| p.as_object()) {
                out.push_str(&format!("  packages: {}\n", p.len()));
            }
        }
        Err(_) => out.push_str("\nmanifest: not on the boot partition\n"),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_blob_kinds() {
        let mut spl = vec![0u8; 64];
        spl[4..12].copy_from_slice(b"eGON.BT0");
        assert_eq!(blob_kind(&spl), "Allwinner eGON boot0/SPL");
        assert_eq!(
            blob_kind(&[0xd0, 0x0d, 0xfe, 0xed, 0]),
            "FIT image (U-Boot + ATF)"
        );
        assert_eq!(blob_kind(b"xxU-Boot 2014"), "U-Boot");
        assert_eq!(blob_kind(b"abc"), "data");
    }

    #[test]
    fn unknown_fs() {
        assert_eq!(detect_fs(&[0u8; 2048]), FsInfo::Unknown);
    }
}

//! The card qemu boots: a copy-on-write qcow2 overlay on the image, so the image file is
//! never modified.
//!
//! `qemu-img create -f qcow2 -b IMAGE -F raw` makes the overlay; its virtual size may be
//! larger than the image (the guest then sees a bigger card, which first boot grows the
//! root partition into), and qemu's raspi3b SD model needs a power-of-two size. A
//! compressed image (`.xz`, `.gz`) is first unpacked next to the overlay.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// How an image file is compressed, from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Xz,
    Gzip,
}

pub fn detect_compression(path: &Path) -> Result<Compression> {
    let mut head = [0u8; 6];
    let mut f = File::open(path).with_context(|| format!("opening image {}", path.display()))?;
    let n = f
        .read(&mut head)
        .with_context(|| format!("reading the first bytes of {}", path.display()))?;
    Ok(if n >= 6 && head == [0xFD, b'7', b'z', b'X', b'Z', 0x00] {
        Compression::Xz
    } else if n >= 2 && head[..2] == [0x1f, 0x8b] {
        Compression::Gzip
    } else {
        Compression::None
    })
}

/// The raw image to boot: `image` itself, or `image` unpacked to `dest` if compressed.
pub fn raw_image(image: &Path, dest: &Path) -> Result<PathBuf> {
    let compression = detect_compression(image)?;
    if compression == Compression::None {
        return std::fs::canonicalize(image)
            .with_context(|| format!("resolving the path of {}", image.display()));
    }
    if dest.exists() {
        // A kept overlay's unpacked base from an earlier run.
        return Ok(dest.to_path_buf());
    }
    let input = BufReader::new(
        File::open(image).with_context(|| format!("opening image {}", image.display()))?,
    );
    let partial = dest.with_extension("partial");
    let mut out = File::create(&partial)
        .with_context(|| format!("creating {} to unpack the image into", partial.display()))?;
    let mut reader: Box<dyn Read> = if compression == Compression::Xz {
        Box::new(liblzma::read::XzDecoder::new_multi_decoder(input))
    } else {
        Box::new(flate2::read::MultiGzDecoder::new(input))
    };
    copy_sparse(&mut reader, &mut out)
        .with_context(|| format!("unpacking {} into {}", image.display(), partial.display()))?;
    out.flush()
        .with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, dest)
        .with_context(|| format!("renaming {} to {}", partial.display(), dest.display()))?;
    Ok(dest.to_path_buf())
}

/// Copies `r` to `w`, seeking over all-zero blocks so the unpacked image stays sparse.
fn copy_sparse(r: &mut dyn Read, w: &mut File) -> std::io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            let n = r.read(&mut buf[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        if buf[..filled].iter().all(|&b| b == 0) {
            w.seek(SeekFrom::Current(filled as i64))?;
        } else {
            w.write_all(&buf[..filled])?;
        }
        total += filled as u64;
        if filled < buf.len() {
            break;
        }
    }
    w.set_len(total)?;
    Ok(total)
}

/// What `qemu-img info` says about an existing overlay.
#[derive(Debug)]
pub struct OverlayInfo {
    pub virtual_size: u64,
    pub backing_file: Option<String>,
    pub format: String,
}

pub fn overlay_info(overlay: &Path) -> Result<OverlayInfo> {
    let out = Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(overlay)
        .output()
        .context("running qemu-img info (package qemu-utils)")?;
    if !out.status.success() {
        bail!(
            "qemu-img info {}: {}",
            overlay.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("reading qemu-img info of {}", overlay.display()))?;
    Ok(OverlayInfo {
        virtual_size: v["virtual-size"].as_u64().unwrap_or(0),
        backing_file: v["backing-filename"].as_str().map(str::to_string),
        format: v["format"].as_str().unwrap_or("").to_string(),
    })
}

/// Creates a qcow2 overlay of `size` bytes backed by the raw image `base`.
pub fn create_overlay(base: &Path, overlay: &Path, size: u64) -> Result<()> {
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(base)
        .arg(overlay)
        .arg(size.to_string())
        .output()
        .context("running qemu-img create (package qemu-utils)")?;
    if !out.status.success() {
        bail!(
            "qemu-img create {} on {}: {}",
            overlay.display(),
            base.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Grows an overlay's virtual size (never shrinks it).
pub fn resize_overlay(overlay: &Path, size: u64) -> Result<()> {
    let out = Command::new("qemu-img")
        .args(["resize", "-q", "-f", "qcow2"])
        .arg(overlay)
        .arg(size.to_string())
        .output()
        .context("running qemu-img resize (package qemu-utils)")?;
    if !out.status.success() {
        bail!(
            "qemu-img resize {} to {size} bytes: {}",
            overlay.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A folder removed (with its content) when dropped, unless kept.
pub struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl WorkDir {
    pub fn create(keep: bool) -> Result<Self> {
        let base = std::env::temp_dir();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = base.join(format!("armada-boot-{}-{nanos:08x}", std::process::id()));
        std::fs::create_dir(&path)
            .with_context(|| format!("creating work folder {}", path.display()))?;
        Ok(WorkDir { path, keep })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

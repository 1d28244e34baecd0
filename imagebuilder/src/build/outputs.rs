//! The build's outputs: the compressed image (multi-threaded xz or gzip), the `.bmap`,
//! the `.sha256` and the manifest, each written under a temporary name and renamed
//! only when all of them are complete.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::progress::Ui;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    Xz,
    Gz,
    None,
}

impl Compression {
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::Xz => ".xz",
            Compression::Gz => ".gz",
            Compression::None => "",
        }
    }
}

/// Files written under temporary names, renamed together by [`Pending::commit`] and
/// removed if dropped before that (a failed build leaves no final name behind).
#[derive(Default)]
pub struct Pending {
    files: Vec<(PathBuf, PathBuf)>,
    committed: bool,
}

impl Pending {
    /// A temporary path in the same folder as `final_path`.
    pub fn add(&mut self, final_path: &Path) -> PathBuf {
        let name = final_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = final_path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        self.files.push((tmp.clone(), final_path.to_path_buf()));
        tmp
    }
    /// The temporary path of `final_path`, if it is pending.
    pub fn tmp_of(&self, final_path: &Path) -> Option<PathBuf> {
        self.files
            .iter()
            .find(|(_, f)| f == final_path)
            .map(|(t, _)| t.clone())
    }
    /// Drops a temporary file from the set (it was removed on purpose).
    pub fn forget(&mut self, tmp: &Path) {
        self.files.retain(|(t, _)| t != tmp);
    }
    /// Renames every file to its final name, the images last.
    pub fn commit(mut self) -> Result<Vec<PathBuf>> {
        let mut done = Vec::new();
        let is_image = |f: &PathBuf| {
            f.to_string_lossy().contains(".img") && !f.to_string_lossy().ends_with(".bmap")
        };
        let order = self
            .files
            .iter()
            .filter(|(_, f)| !is_image(f))
            .chain(self.files.iter().filter(|(_, f)| is_image(f)));
        for (tmp, fin) in order {
            std::fs::rename(tmp, fin)
                .with_context(|| format!("renaming {} to {}", tmp.display(), fin.display()))?;
            done.push(fin.clone());
        }
        self.committed = true;
        Ok(done)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.committed {
            for (tmp, _) in &self.files {
                let _ = std::fs::remove_file(tmp);
            }
        }
    }
}

/// Compresses `raw` into `out`; returns (compressed bytes, seconds).
pub fn compress(
    raw: &Path,
    out: &Path,
    how: Compression,
    threads: u32,
    level: u32,
    ui: &Ui,
) -> Result<(u64, f64)> {
    let t0 = std::time::Instant::now();
    let size = std::fs::metadata(raw)
        .with_context(|| format!("reading {}", raw.display()))?
        .len();
    let mut input = File::open(raw).with_context(|| format!("opening {}", raw.display()))?;
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut bar = ui.bytes(
        &format!("compress ({how:?}, level {level}, {threads} threads)"),
        size,
    );
    let mut buf = vec![0u8; 1 << 20];
    let mut pump = |w: &mut dyn Write| -> Result<()> {
        loop {
            let n = input
                .read(&mut buf)
                .with_context(|| format!("reading {}", raw.display()))?;
            if n == 0 {
                break;
            }
            w.write_all(&buf[..n])
                .with_context(|| format!("writing {}", out.display()))?;
            bar.add(n as u64);
        }
        Ok(())
    };
    match how {
        Compression::Xz => {
            let stream = liblzma::stream::MtStreamBuilder::new()
                .threads(threads.max(1))
                .preset(level)
                .block_size(32 << 20)
                .check(liblzma::stream::Check::Crc64)
                .encoder()
                .context("starting the xz encoder")?;
            let mut w = liblzma::write::XzEncoder::new_stream(BufWriter::new(file), stream);
            pump(&mut w)?;
            let inner = w
                .finish()
                .with_context(|| format!("finishing {}", out.display()))?;
            inner
                .into_inner()
                .map_err(|e| e.into_error())
                .with_context(|| format!("writing {}", out.display()))?
                .sync_all()?;
        }
        Compression::Gz => {
            let mut w = flate2::write::GzEncoder::new(
                BufWriter::new(file),
                flate2::Compression::new(level.min(9)),
            );
            pump(&mut w)?;
            let inner = w
                .finish()
                .with_context(|| format!("finishing {}", out.display()))?;
            inner
                .into_inner()
                .map_err(|e| e.into_error())
                .with_context(|| format!("writing {}", out.display()))?
                .sync_all()?;
        }
        Compression::None => {}
    }
    bar.done();
    let len = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok((len, t0.elapsed().as_secs_f64()))
}

/// sha256 of a file, reading holes as zeros (what a reader of the image sees).
pub fn sha256_of(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(h.finalize()))
}

//! The image being flashed, read front to back: a raw `.img`, or an `.img.xz` /
//! `.img.gz` decompressed as it streams (never to a temporary file). The format comes
//! from the file's magic bytes, not its name.

use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Xz,
    Gzip,
}

impl Compression {
    /// From the first bytes of a file.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0xFD, b'7', b'z', b'X', b'Z', 0x00]) {
            Compression::Xz
        } else if head.starts_with(&[0x1F, 0x8B]) {
            Compression::Gzip
        } else {
            Compression::None
        }
    }
}

enum Stream {
    /// Raw image: positioned reads, holes skipped by seeking.
    Raw(File),
    Decoder(Box<dyn Read + Send>),
}

/// An image opened for one front-to-back pass.
pub struct Source {
    path: PathBuf,
    compression: Compression,
    stream: Stream,
    /// Uncompressed bytes consumed so far.
    pos: u64,
    /// Size of a raw image; unknown for compressed ones until the stream ends.
    raw_len: Option<u64>,
    scratch: Vec<u8>,
}

/// A multi-threaded xz decoder (one worker per core for images compressed in blocks,
/// as `xz -T0` and liblzma's parallel encoder write them; a single-block file decodes
/// on one). liblzma's threading memory limit defaults to 0, which silently means one
/// thread: allow a quarter of RAM, as xz's documentation suggests.
fn xz_decoder(path: &Path) -> Result<liblzma::stream::Stream> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    // SAFETY: sysconf has no preconditions.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let quarter = if pages > 0 && page > 0 {
        pages as u64 * page as u64 / 4
    } else {
        1 << 30
    };
    liblzma::stream::MtStreamBuilder::new()
        .threads(threads)
        .memlimit_threading(quarter)
        .memlimit_stop(u64::MAX)
        .decoder()
        .with_context(|| format!("setting up the xz decoder for {}", path.display()))
}

impl Source {
    pub fn open(path: &Path) -> Result<Source> {
        let file = File::open(path).with_context(|| format!("opening image {}", path.display()))?;
        let meta = file
            .metadata()
            .with_context(|| format!("reading size of image {}", path.display()))?;
        if meta.is_dir() {
            bail!("image {} is a directory", path.display());
        }
        let mut head = [0u8; 6];
        let n = file
            .read_at(&mut head, 0)
            .with_context(|| format!("reading image {}", path.display()))?;
        if n == 0 {
            bail!("image {} is empty", path.display());
        }
        let compression = Compression::sniff(&head[..n]);
        let (stream, raw_len) = match compression {
            Compression::None => (Stream::Raw(file), Some(meta.len())),
            Compression::Xz => {
                let input = BufReader::with_capacity(1 << 20, file);
                let decoder = liblzma::read::XzDecoder::new_stream(input, xz_decoder(path)?);
                (Stream::Decoder(Box::new(decoder)), None)
            }
            Compression::Gzip => {
                let input = BufReader::with_capacity(1 << 20, file);
                (
                    Stream::Decoder(Box::new(flate2::read::MultiGzDecoder::new(input))),
                    None,
                )
            }
        };
        Ok(Source {
            path: path.to_path_buf(),
            compression,
            stream,
            pos: 0,
            raw_len,
            scratch: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// The image's size when it is known without reading it (raw images).
    pub fn known_len(&self) -> Option<u64> {
        self.raw_len
    }

    /// Uncompressed bytes consumed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Fills `buf` from the stream; returns fewer bytes only at the end of the image.
    pub fn fill(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            let n = match &mut self.stream {
                Stream::Raw(f) => f.read_at(&mut buf[got..], self.pos),
                Stream::Decoder(d) => d.read(&mut buf[got..]),
            };
            match n {
                Ok(0) => break,
                Ok(n) => {
                    got += n;
                    self.pos += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.describe(e)),
            }
        }
        Ok(got)
    }

    /// Moves `n` bytes forward (a seek for raw images, decompress-and-drop otherwise);
    /// fails if the image ends first.
    pub fn skip(&mut self, n: u64) -> Result<()> {
        if let Stream::Raw(_) = self.stream {
            let len = self.raw_len.unwrap_or(0);
            if self.pos + n > len {
                bail!(
                    "image {} ends at byte {len}, before byte {}",
                    self.path.display(),
                    self.pos + n
                );
            }
            self.pos += n;
            return Ok(());
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.resize(1 << 20, 0);
        let target = self.pos + n;
        let mut left = n;
        while left > 0 {
            let want = left.min(scratch.len() as u64) as usize;
            let got = self.fill(&mut scratch[..want])?;
            if got < want {
                bail!(
                    "image {} ends at byte {}, before byte {target}",
                    self.path.display(),
                    self.pos
                );
            }
            left -= got as u64;
        }
        self.scratch = scratch;
        Ok(())
    }

    /// True when the image has no more bytes (for compressed images this reads to the
    /// end of the stream, which is also where xz and gzip check their integrity).
    pub fn at_end(&mut self) -> Result<bool> {
        if let Stream::Raw(_) = self.stream {
            return Ok(self.pos >= self.raw_len.unwrap_or(0));
        }
        let mut one = [0u8; 1];
        Ok(self.fill(&mut one)? == 0)
    }

    fn describe(&self, e: std::io::Error) -> anyhow::Error {
        let what = match self.compression {
            Compression::None => "reading",
            Compression::Xz => "decompressing (xz)",
            Compression::Gzip => "decompressing (gzip)",
        };
        let hint = match (self.compression, e.kind()) {
            (Compression::None, _) => "",
            (_, std::io::ErrorKind::UnexpectedEof) => ": the compressed file is truncated",
            _ => ": the compressed file is corrupt",
        };
        anyhow::Error::new(e).context(format!(
            "{what} image {} at uncompressed byte {}{hint}",
            self.path.display(),
            self.pos
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn data() -> Vec<u8> {
        (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn write_xz(p: &Path, d: &[u8]) {
        let mut e = liblzma::write::XzEncoder::new(File::create(p).unwrap(), 1);
        e.write_all(d).unwrap();
        e.finish().unwrap();
    }

    fn write_gz(p: &Path, d: &[u8]) {
        let mut e =
            flate2::write::GzEncoder::new(File::create(p).unwrap(), flate2::Compression::fast());
        e.write_all(d).unwrap();
        e.finish().unwrap();
    }

    fn read_all(p: &Path) -> Result<Vec<u8>> {
        let mut s = Source::open(p)?;
        let mut out = vec![0u8; 400_000];
        let n = s.fill(&mut out)?;
        out.truncate(n);
        assert!(s.at_end()?);
        Ok(out)
    }

    #[test]
    fn reads_raw_xz_and_gz_alike() {
        let dir = tempfile::tempdir().unwrap();
        let d = data();
        let (raw, xz, gz) = (
            dir.path().join("a.img"),
            dir.path().join("a.img.xz"),
            dir.path().join("a.img.gz"),
        );
        std::fs::write(&raw, &d).unwrap();
        write_xz(&xz, &d);
        write_gz(&gz, &d);
        for (p, c) in [
            (&raw, Compression::None),
            (&xz, Compression::Xz),
            (&gz, Compression::Gzip),
        ] {
            assert_eq!(Source::open(p).unwrap().compression(), c);
            assert_eq!(read_all(p).unwrap(), d, "{}", p.display());
            let mut s = Source::open(p).unwrap();
            s.skip(1000).unwrap();
            let mut b = [0u8; 10];
            s.fill(&mut b).unwrap();
            assert_eq!(&b, &d[1000..1010]);
            assert!(s
                .skip(1_000_000)
                .unwrap_err()
                .to_string()
                .contains("ends at byte"));
        }
    }

    #[test]
    fn truncated_and_corrupt_streams_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let d = data();
        for (name, writer) in [
            ("a.img.xz", write_xz as fn(&Path, &[u8])),
            ("a.img.gz", write_gz),
        ] {
            let p = dir.path().join(name);
            writer(&p, &d);
            let full = std::fs::read(&p).unwrap();
            std::fs::write(&p, &full[..full.len() - 20]).unwrap();
            let err = format!("{:#}", read_all(&p).unwrap_err());
            assert!(err.contains(name) && err.contains("truncated"), "{err}");
            let mut bad = full.clone();
            let mid = bad.len() / 2;
            bad[mid] ^= 0x55;
            bad[mid + 1] ^= 0x55;
            std::fs::write(&p, &bad).unwrap();
            let err = format!("{:#}", read_all(&p).unwrap_err());
            assert!(
                err.contains(name) && (err.contains("corrupt") || err.contains("truncated")),
                "{err}"
            );
        }
    }
}

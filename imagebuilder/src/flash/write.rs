//! Writing the image and reading it back.
//!
//! [`stream`] reads the image front to back on a reader thread (decompressing, and
//! checking each range against the bmap's checksum as it goes, like `bmaptool copy`)
//! while the calling thread hands each chunk to a sink: the target's `pwrite` when
//! flashing, nothing for `--verify-only`. It records, per written range, a SHA-256 and
//! a CRC-32 per block. [`verify`] drops the target's page cache and reads every range
//! back from the device, comparing against those records; the CRCs locate the first
//! bad block, so a mismatch names a byte offset rather than "somewhere in 1 GB".
//!
//! The partition table goes on last ([`erase_table`], [`holding_back_table`],
//! [`write_table`]): the card's old table is zeroed first, the image's first
//! [`TABLE_BYTES`] are kept in memory while the rest is written, verified and
//! personalised, and only then written and read back. A card pulled out, or a write
//! that fails, half way leaves a card with no partition table, which no board boots
//! and no OS mounts, instead of one that looks flashed.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

use super::source::Source;
use crate::bmap::{Bmap, ChecksumType};
use crate::progress::Bytes;

/// Bytes per read/write.
pub const CHUNK: usize = 4 << 20;
/// Granularity of the CRCs that locate a bad block.
pub const VERIFY_BLOCK: usize = 4096;
/// Without a bmap, the image is verified in segments of this size.
pub const SEGMENT: u64 = 64 << 20;

/// The bytes held back until the end: the MBR and, should an image carry one, a GPT's
/// primary header and partition entries (LBA 0-33). Partitions start well after it
/// (1 MiB on armada images, sector 63 on the oldest layouts).
pub const TABLE_BYTES: usize = 34 * 512;

/// Zeroes the target's first [`TABLE_BYTES`] and syncs them, before anything else is
/// written: from here until [`write_table`] the card has no partition table. Returns
/// the bytes that were there: where the image has a hole in that span they are put
/// back at the end, so the card ends up exactly as `bmaptool copy` leaves it.
pub fn erase_table(file: &File, dev: &Path) -> Result<[u8; TABLE_BYTES]> {
    let mut old = [0u8; TABLE_BYTES];
    // A fresh or short file reads short: what is not there is zeros.
    let mut got = 0;
    while got < TABLE_BYTES {
        match file.read_at(&mut old[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("reading the partition table of {}", dev.display()))
            }
        }
    }
    file.write_all_at(&[0u8; TABLE_BYTES], 0)
        .with_context(|| format!("erasing the partition table of {}", dev.display()))?;
    file.sync_data()
        .with_context(|| format!("syncing {}", dev.display()))?;
    Ok(old)
}

/// Wraps a sink so that bytes below [`TABLE_BYTES`] go into `held` (which starts as
/// the card's old bytes, kept where the image has holes) instead of the target.
pub fn holding_back_table<'a>(
    mut inner: impl FnMut(u64, &[u8]) -> Result<()> + 'a,
    held: &'a mut [u8; TABLE_BYTES],
) -> impl FnMut(u64, &[u8]) -> Result<()> + 'a {
    move |offset, data| {
        let table = TABLE_BYTES as u64;
        if offset >= table {
            return inner(offset, data);
        }
        let n = ((table - offset) as usize).min(data.len());
        held[offset as usize..offset as usize + n].copy_from_slice(&data[..n]);
        if n < data.len() {
            inner(table, &data[n..])?;
        }
        Ok(())
    }
}

/// Writes the held-back table, syncs, and reads it back from the device.
pub fn write_table(file: &File, dev: &Path, held: &[u8; TABLE_BYTES]) -> Result<()> {
    file.write_all_at(held, 0)
        .with_context(|| format!("writing the partition table of {}", dev.display()))?;
    drop_cache(file, dev)?;
    let mut back = [0u8; TABLE_BYTES];
    read_exact_at(file, &mut back, 0)
        .with_context(|| format!("reading back the partition table of {}", dev.display()))?;
    if back != *held {
        bail!(
            "verification failed: the partition table read back from {} differs from the image's; the card may be failing",
            dev.display()
        );
    }
    Ok(())
}

/// What to write.
pub enum Plan {
    /// Only the bmap's mapped ranges.
    Mapped(Bmap),
    /// Every byte of the image, to its end.
    Everything,
}

/// A written range and what reading it back must give.
#[derive(Clone, Debug)]
pub struct RangeDigest {
    pub offset: u64,
    pub len: u64,
    pub sha256: [u8; 32],
    pub block_crcs: Vec<u32>,
}

/// The result of one pass over the image.
pub struct Streamed {
    /// Bytes handed to the sink.
    pub bytes: u64,
    /// The image's full (uncompressed) size.
    pub image_size: u64,
    pub ranges: Vec<RangeDigest>,
}

enum Msg {
    Data {
        offset: u64,
        buf: Vec<u8>,
        len: usize,
    },
    Range(RangeDigest),
    Done {
        image_size: u64,
    },
    Failed(anyhow::Error),
}

/// Reads `source` according to `plan`, calling `sink(offset, bytes)` for every chunk
/// to be written, in order. Fails at the first bad byte of the image (corrupt or
/// truncated stream, bmap mismatch) or the first sink error.
pub fn stream(
    source: Source,
    plan: Plan,
    sink: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
    progress: &mut Bytes,
) -> Result<Streamed> {
    let (tx, rx) = sync_channel::<Msg>(4);
    let (free_tx, free_rx) = sync_channel::<Vec<u8>>(4);
    for _ in 0..3 {
        free_tx
            .send(vec![0u8; CHUNK])
            .map_err(|_| anyhow!("internal: buffer pool closed"))?;
    }
    let reader = std::thread::Builder::new()
        .name("flash-reader".into())
        .spawn(move || {
            let result = match plan {
                Plan::Mapped(bmap) => produce_mapped(source, &bmap, &tx, &free_rx),
                Plan::Everything => produce_everything(source, &tx, &free_rx),
            };
            if let Err(e) = result {
                let _ = tx.send(Msg::Failed(e));
            }
        })
        .context("starting the image reader thread")?;

    let result = consume(&rx, &free_tx, sink, progress);
    drop(rx);
    drop(free_tx);
    let _ = reader.join();
    result
}

fn consume(
    rx: &Receiver<Msg>,
    free: &SyncSender<Vec<u8>>,
    sink: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
    progress: &mut Bytes,
) -> Result<Streamed> {
    let mut bytes = 0u64;
    let mut ranges = Vec::new();
    loop {
        match rx.recv() {
            Ok(Msg::Data { offset, buf, len }) => {
                sink(offset, &buf[..len])?;
                bytes += len as u64;
                progress.add(len as u64);
                let _ = free.send(buf);
            }
            Ok(Msg::Range(d)) => ranges.push(d),
            Ok(Msg::Done { image_size }) => {
                return Ok(Streamed {
                    bytes,
                    image_size,
                    ranges,
                })
            }
            Ok(Msg::Failed(e)) => return Err(e),
            Err(_) => bail!("internal: the image reader stopped without a result"),
        }
    }
}

/// Running SHA-256 and per-block CRCs of one range.
struct RangeHash {
    offset: u64,
    len: u64,
    sha: Sha256,
    crcs: Vec<u32>,
}

impl RangeHash {
    fn new(offset: u64) -> Self {
        RangeHash {
            offset,
            len: 0,
            sha: Sha256::new(),
            crcs: Vec::new(),
        }
    }
    /// `data` starts on a block boundary relative to the range.
    fn update(&mut self, data: &[u8]) {
        self.sha.update(data);
        for block in data.chunks(VERIFY_BLOCK) {
            self.crcs.push(crc32(block));
        }
        self.len += data.len() as u64;
    }
    fn finish(self) -> RangeDigest {
        RangeDigest {
            offset: self.offset,
            len: self.len,
            sha256: self.sha.finalize().into(),
            block_crcs: self.crcs,
        }
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(data);
    c.sum()
}

fn take_buffer(free: &Receiver<Vec<u8>>) -> Result<Vec<u8>> {
    free.recv().map_err(|_| anyhow!("writing stopped"))
}

fn send(tx: &SyncSender<Msg>, m: Msg) -> Result<()> {
    tx.send(m).map_err(|_| anyhow!("writing stopped"))
}

fn produce_mapped(
    mut src: Source,
    bmap: &Bmap,
    tx: &SyncSender<Msg>,
    free: &Receiver<Vec<u8>>,
) -> Result<()> {
    let image = src.path().display().to_string();
    let smaller = |at: u64| {
        anyhow!(
            "image {image} is smaller than its bmap says: it ends at byte {at}, the bmap says {} bytes \
             (truncated image, or a bmap of another image)",
            bmap.image_size
        )
    };
    for (i, r) in bmap.mapped_ranges().into_iter().enumerate() {
        let pos = src.position();
        src.skip(r.offset - pos).map_err(|e| {
            if is_short(&e) {
                smaller(src.position())
            } else {
                e
            }
        })?;
        let mut hash = RangeHash::new(r.offset);
        let mut other = match bmap.checksum_type {
            ChecksumType::Sha256 => None,
            t => Some(t.hasher()),
        };
        let mut left = r.len;
        while left > 0 {
            let mut buf = take_buffer(free)?;
            let want = left.min(CHUNK as u64) as usize;
            let got = src.fill(&mut buf[..want])?;
            if got < want {
                return Err(smaller(src.position()));
            }
            hash.update(&buf[..got]);
            if let Some(h) = other.as_mut() {
                h.update(&buf[..got]);
            }
            let offset = r.offset + (r.len - left);
            send(
                tx,
                Msg::Data {
                    offset,
                    buf,
                    len: got,
                },
            )?;
            left -= got as u64;
        }
        let digest = hash.finish();
        if let Some(expected) = &r.checksum {
            let actual = match other {
                Some(h) => h.finish_hex(),
                None => hex::encode(digest.sha256),
            };
            if !actual.eq_ignore_ascii_case(expected) {
                let b = &bmap.ranges[i];
                bail!(
                    "the bmap does not match image {image}: blocks {}-{} (bytes {}..{}) have {} {actual}, the bmap says {expected}",
                    b.first,
                    b.last,
                    r.offset,
                    r.end(),
                    bmap.checksum_type.name()
                );
            }
        }
        send(tx, Msg::Range(digest))?;
    }
    let pos = src.position();
    src.skip(bmap.image_size - pos).map_err(|e| {
        if is_short(&e) {
            smaller(src.position())
        } else {
            e
        }
    })?;
    if !src.at_end()? {
        bail!(
            "image {image} is larger than its bmap says ({} bytes): the bmap belongs to another image",
            bmap.image_size
        );
    }
    send(
        tx,
        Msg::Done {
            image_size: bmap.image_size,
        },
    )
}

fn is_short(e: &anyhow::Error) -> bool {
    e.to_string().contains(" ends at byte ")
}

fn produce_everything(
    mut src: Source,
    tx: &SyncSender<Msg>,
    free: &Receiver<Vec<u8>>,
) -> Result<()> {
    loop {
        let mut hash = RangeHash::new(src.position());
        let mut eof = false;
        while hash.len < SEGMENT {
            let mut buf = take_buffer(free)?;
            let want = (SEGMENT - hash.len).min(CHUNK as u64) as usize;
            let got = src.fill(&mut buf[..want])?;
            if got > 0 {
                hash.update(&buf[..got]);
                send(
                    tx,
                    Msg::Data {
                        offset: hash.offset + hash.len - got as u64,
                        buf,
                        len: got,
                    },
                )?;
            }
            if got < want {
                eof = true;
                break;
            }
        }
        if hash.len > 0 {
            send(tx, Msg::Range(hash.finish()))?;
        }
        if eof {
            return send(
                tx,
                Msg::Done {
                    image_size: src.position(),
                },
            );
        }
    }
}

/// Writes each chunk at its offset; a write past the end of a device is reported as
/// the target being smaller than the image.
///
/// Writeback is started for each chunk as soon as it is written, and the sink waits for
/// the chunk written [`WRITEBACK_LAG`] chunks earlier (the `sync_file_range` pattern):
/// at most that many chunks are dirty, so the page cache never holds gigabytes for one
/// long final sync and the progress bar shows what the card really took (`bmaptool`
/// bounds its dirty data for the same reasons).
pub fn device_sink<'a>(file: &'a File, dev: &'a Path) -> impl FnMut(u64, &[u8]) -> Result<()> + 'a {
    let mut in_flight: std::collections::VecDeque<(u64, u64)> = std::collections::VecDeque::new();
    move |offset, data| {
        file.write_all_at(data, offset).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOSPC) || e.kind() == std::io::ErrorKind::WriteZero {
                anyhow!(
                    "target {} is smaller than the image: writing {} bytes at byte {offset} failed ({e})",
                    dev.display(),
                    data.len()
                )
            } else {
                anyhow::Error::new(e).context(format!("writing {} bytes at byte {offset} of {}", data.len(), dev.display()))
            }
        })?;
        sync_range(file, offset, data.len() as u64, libc::SYNC_FILE_RANGE_WRITE);
        in_flight.push_back((offset, data.len() as u64));
        if in_flight.len() > WRITEBACK_LAG {
            if let Some((o, l)) = in_flight.pop_front() {
                sync_range(
                    file,
                    o,
                    l,
                    libc::SYNC_FILE_RANGE_WAIT_BEFORE
                        | libc::SYNC_FILE_RANGE_WRITE
                        | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                );
            }
        }
        Ok(())
    }
}

/// Chunks written but not yet waited for.
pub const WRITEBACK_LAG: usize = 8;

/// A hint to the kernel; errors are ignored because the final fsync reports them.
fn sync_range(file: &File, offset: u64, len: u64, flags: libc::c_uint) {
    // SAFETY: plain syscall on a valid fd, no memory passed.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            flags,
        );
    }
}

/// Makes the next reads come from the device, not from the pages just written.
pub fn drop_cache(file: &File, dev: &Path) -> Result<()> {
    file.sync_all()
        .with_context(|| format!("syncing {}", dev.display()))?;
    // SAFETY: plain syscall on a valid fd.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc))
            .with_context(|| format!("dropping the page cache of {}", dev.display()));
    }
    Ok(())
}

/// Reads every range back from `file` and compares it with `ranges`. On a mismatch the
/// error names the first bad byte when `image` (a raw image) can show the expected
/// bytes, else the first bad block. `held` stands in for the device's first bytes
/// (the partition table not written yet; empty when it is).
pub fn verify(
    file: &File,
    dev: &Path,
    ranges: &[RangeDigest],
    image: Option<&File>,
    held: &[u8],
    progress: &mut Bytes,
) -> Result<u64> {
    drop_cache(file, dev)?;
    let mut buf = vec![0u8; CHUNK];
    let mut checked = 0u64;
    for r in ranges {
        let mut sha = Sha256::new();
        let mut first_bad: Option<u64> = None;
        let mut done = 0u64;
        while done < r.len {
            let n = (r.len - done).min(CHUNK as u64) as usize;
            let at = r.offset + done;
            read_exact_at(file, &mut buf[..n], at).with_context(|| {
                format!("reading back {n} bytes at byte {at} of {}", dev.display())
            })?;
            if (at as usize) < held.len() {
                let end = held.len().min(at as usize + n);
                buf[..end - at as usize].copy_from_slice(&held[at as usize..end]);
            }
            sha.update(&buf[..n]);
            if first_bad.is_none() {
                for (k, block) in buf[..n].chunks(VERIFY_BLOCK).enumerate() {
                    let idx = (done as usize / VERIFY_BLOCK) + k;
                    if r.block_crcs.get(idx) != Some(&crc32(block)) {
                        first_bad = Some(at + (k * VERIFY_BLOCK) as u64);
                        break;
                    }
                }
            }
            done += n as u64;
            progress.add(n as u64);
        }
        let digest: [u8; 32] = sha.finalize().into();
        if digest != r.sha256 || first_bad.is_some() {
            let block = first_bad.unwrap_or(r.offset);
            let exact = image.and_then(|img| {
                first_differing_byte(
                    file,
                    img,
                    block,
                    (r.offset + r.len).min(block + VERIFY_BLOCK as u64),
                )
            });
            let place = match exact {
                Some(b) => format!("byte {b}"),
                None => format!("the {VERIFY_BLOCK}-byte block at byte {block}"),
            };
            bail!(
                "verification failed: {} differs from the image at {place} (in the range {}..{} written); \
                 the card may be failing or something else wrote to it",
                dev.display(),
                r.offset,
                r.offset + r.len
            );
        }
        checked += r.len;
    }
    Ok(checked)
}

fn read_exact_at(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<()> {
    file.read_exact_at(buf, at).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            std::io::Error::new(e.kind(), "the target ends before the image does")
        } else {
            e
        }
    })
}

fn first_differing_byte(target: &File, image: &File, from: u64, to: u64) -> Option<u64> {
    let n = (to - from) as usize;
    let (mut a, mut b) = (vec![0u8; n], vec![0u8; n]);
    target.read_exact_at(&mut a, from).ok()?;
    image.read_exact_at(&mut b, from).ok()?;
    a.iter()
        .zip(&b)
        .position(|(x, y)| x != y)
        .map(|i| from + i as u64)
}

//! The write-ahead log: numbered segment files of framed records.
//!
//! A record is `[u32 length][u32 crc32][payload]` (little endian). A crash can leave a
//! torn record at the end of the segment that was being written; reading stops there.
//! That record was never acknowledged: acknowledgements wait for `fdatasync`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Largest record read back; anything larger is corruption.
const MAX_RECORD: usize = 64 << 20;

pub fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:016}.log"))
}

/// Segment numbers present in `dir`, ascending.
pub fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name
            .strip_suffix(".log")
            .and_then(|s| s.parse::<u64>().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Appends one framed record to `buf`.
pub fn frame(buf: &mut Vec<u8>, payload: &[u8]) {
    let mut crc = flate2::Crc::new();
    crc.update(payload);
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc.sum().to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Splits a segment's bytes into record payloads. Returns the payloads and, when the
/// data ends in a torn or corrupt record, the offset where reading stopped.
pub fn unframe(data: &[u8]) -> (Vec<&[u8]>, Option<usize>) {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        if data.len() - at < 8 {
            return (out, Some(at));
        }
        let len = u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize;
        let want = u32::from_le_bytes([data[at + 4], data[at + 5], data[at + 6], data[at + 7]]);
        if len > MAX_RECORD || data.len() - at - 8 < len {
            return (out, Some(at));
        }
        let payload = &data[at + 8..at + 8 + len];
        let mut crc = flate2::Crc::new();
        crc.update(payload);
        if crc.sum() != want {
            return (out, Some(at));
        }
        out.push(payload);
        at += 8 + len;
    }
    (out, None)
}

pub fn read_segment(path: &Path) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    Ok(data)
}

/// The segment being appended to.
pub struct Segment {
    pub number: u64,
    file: File,
    pub bytes: u64,
}

impl Segment {
    /// Creates segment `number` (it must not exist) and makes its name durable.
    pub fn create(dir: &Path, number: u64) -> io::Result<Segment> {
        let path = segment_path(dir, number);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        sync_dir(dir)?;
        Ok(Segment {
            number,
            file,
            bytes: 0,
        })
    }

    /// Writes framed records and waits until they are on disk.
    pub fn append_durable(&mut self, framed: &[u8]) -> io::Result<()> {
        self.file.write_all(framed)?;
        self.file.sync_data()?;
        self.bytes += framed.len() as u64;
        Ok(())
    }
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_and_corrupt_tails_stop_reading_at_the_last_good_record() {
        let mut buf = Vec::new();
        frame(&mut buf, b"one");
        frame(&mut buf, b"two");
        let good = buf.len();
        frame(&mut buf, b"three");
        let (recs, stop) = unframe(&buf);
        assert_eq!(recs, vec![&b"one"[..], b"two", b"three"]);
        assert_eq!(stop, None);
        // Torn: the last record is cut short.
        let (recs, stop) = unframe(&buf[..buf.len() - 2]);
        assert_eq!(recs.len(), 2);
        assert_eq!(stop, Some(good));
        // Corrupt: a flipped byte in the last payload.
        let mut bad = buf.clone();
        let n = bad.len();
        bad[n - 1] ^= 0xff;
        let (recs, stop) = unframe(&bad);
        assert_eq!(recs.len(), 2);
        assert_eq!(stop, Some(good));
    }

    #[test]
    fn segments_list_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        for n in [3, 1, 20] {
            let mut s = Segment::create(tmp.path(), n).unwrap();
            let mut b = Vec::new();
            frame(&mut b, b"x");
            s.append_durable(&b).unwrap();
        }
        std::fs::write(tmp.path().join("checkpoint.json"), "{}").unwrap();
        assert_eq!(list_segments(tmp.path()).unwrap(), vec![1, 3, 20]);
        assert!(
            Segment::create(tmp.path(), 3).is_err(),
            "never reopens an existing segment"
        );
    }
}

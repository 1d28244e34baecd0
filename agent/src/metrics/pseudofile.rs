//! Reading /proc, /sys and cgroup pseudo-files into one reused buffer, and the small
//! hand-written parsers every family shares.
//!
//! A collection cycle reads a few hundred tiny files; opening each into a fresh `String`
//! and splitting it into `Vec<&str>` would allocate for every one. Here a file lands in
//! a buffer that lives as long as the collector, and numbers are parsed straight from
//! its bytes.

use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rustc_hash::FxHashMap;

/// Why a source could not be read; its text is the warning's cause, so it names the
/// path and the operation.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("parsing {path}: {what}")]
    Parse { path: PathBuf, what: &'static str },
}

impl ReadError {
    /// True when the file or folder simply does not exist (an absent feature, not a fault).
    pub fn is_missing(&self) -> bool {
        matches!(self, ReadError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }

    /// True when the kernel has the file but the feature is off (PSI with `psi=0`
    /// answers EOPNOTSUPP).
    pub fn is_unsupported(&self) -> bool {
        matches!(self, ReadError::Io { source, .. } if source.raw_os_error() == Some(libc::EOPNOTSUPP))
    }

    pub fn parse(path: &Path, what: &'static str) -> Self {
        ReadError::Parse {
            path: path.to_path_buf(),
            what,
        }
    }
}

/// The read buffer's size between cycles. A larger file (a mount table of 100-200 KB
/// on a host with a few hundred containers) grows it for its read; it goes back to
/// this size at the end of the cycle, so the zero-filled growth is not resident for good
/// (the mount table is read again only when it changes).
const READ_BUF: usize = 64 * 1024;

/// Open files kept between cycles by `new()`: well under the usual 1024 limit. The
/// collector asks for more with `with_open_budget` (see `fdlimit`).
const DEFAULT_MAX_OPEN: usize = 512;

struct Kept {
    file: File,
    /// The cycle that last read it; files not read in a cycle are closed at its end.
    cycle: u64,
}

/// The per-container files, one [`Slots`] entry each. Within one container each name
/// is always read from the same folder (its cgroup folders are fixed for its life;
/// `dev` is `/proc/<pid>/net/dev`, whose slot the collector clears when the pid
/// changes), so the name alone says which file it is. The files read only once in a
/// while (the limits, `cgroup.procs`) are kept too: opened afresh through the path
/// map and closed after the cycle, they were 8 opens and closes per cycle at 20
/// containers (10% of a collection, most of it the path walk).
const SLOT_NAMES: [&str; 24] = [
    "cpuacct.usage",
    "cpuacct.stat",
    "cpu.stat",
    "memory.usage_in_bytes",
    "memory.stat",
    "memory.oom_control",
    "blkio.throttle.io_service_bytes",
    "blkio.throttle.io_serviced",
    "pids.current",
    "dev",
    "io.stat",
    "cpu.pressure",
    "memory.pressure",
    "io.pressure",
    "memory.current",
    "memory.swap.current",
    "memory.events",
    "cpu.cfs_period_us",
    "cpu.cfs_quota_us",
    "memory.limit_in_bytes",
    "pids.max",
    "cpu.max",
    "memory.max",
    "cgroup.procs",
];

fn slot_index(name: &str) -> Option<usize> {
    SLOT_NAMES.iter().position(|&n| n == name)
}

/// One container's kept-open files, owned by the container's record, so they close
/// when it goes and a read finds its file without building or hashing a path: at 200
/// containers the path map held ~2,000 keys of ~100 bytes (about 400 KiB with the
/// table) and hashed a path per read.
#[derive(Default)]
pub struct Slots {
    files: [Option<File>; SLOT_NAMES.len()],
    /// The reader's count of slot files, for its open-file budget.
    counter: Option<Arc<AtomicUsize>>,
}

impl Slots {
    fn put(&mut self, i: usize, file: File, counter: &Arc<AtomicUsize>) {
        let counter = self.counter.get_or_insert_with(|| counter.clone());
        if self.files[i].replace(file).is_none() {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn close(&mut self, i: usize) {
        if self.files[i].take().is_some() {
            if let Some(c) = &self.counter {
                c.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Files kept open.
    pub fn open(&self) -> usize {
        self.files.iter().filter(|f| f.is_some()).count()
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        let n = self.open();
        if let Some(c) = &self.counter {
            c.fetch_sub(n, Ordering::Relaxed);
        }
    }
}

/// A reusable read buffer, a reusable path buffer, and the files kept open.
///
/// A cycle reads the same few hundred pseudo-files as the last one. Keeping them open
/// and reading again from offset 0 (which makes the kernel generate fresh contents)
/// saves the path walk, the open and the close of every file; that was most of a
/// cycle's cost. Files not read during a cycle (a stopped container's) are closed at
/// its end, so nothing keeps a removed cgroup alive.
pub struct PseudoFile {
    buf: Vec<u8>,
    len: usize,
    path: PathBuf,
    /// Keyed by the path's bytes with FxHash: `Path`'s own `Hash` splits components and
    /// SipHash is built for hostile keys; both showed in profiles (~5% of a cycle at
    /// 200 containers), and these keys are paths the agent itself builds.
    open: FxHashMap<Box<[u8]>, Kept>,
    /// At most this many files are kept open (map and slots); reads beyond it open
    /// and close each time.
    max_open: usize,
    cycle: u64,
    /// The container being read keeps its files here (see [`PseudoFile::set_slots`]).
    slots: Option<Slots>,
    /// Files open in every container's [`Slots`].
    slot_open: Arc<AtomicUsize>,
}

impl Default for PseudoFile {
    fn default() -> Self {
        Self::new()
    }
}

impl PseudoFile {
    pub fn new() -> Self {
        Self::with_open_budget(DEFAULT_MAX_OPEN)
    }

    /// Keeps up to `max_open` files open between cycles. A cycle with 200 containers
    /// reads about 3,000 files; every one beyond the budget costs an open and a close
    /// per cycle, which is most of a cycle's CPU.
    pub fn with_open_budget(max_open: usize) -> Self {
        PseudoFile {
            buf: vec![0; READ_BUF],
            len: 0,
            path: PathBuf::with_capacity(256),
            open: FxHashMap::default(),
            max_open,
            cycle: 0,
            slots: None,
            slot_open: Arc::default(),
        }
    }

    /// Until [`take_slots`](Self::take_slots), reads of the files named in
    /// `SLOT_NAMES` use (and fill) `slots`: one container's files, read every cycle.
    pub fn set_slots(&mut self, slots: Slots) {
        self.slots = Some(slots);
    }

    /// Hands back the slots given to [`set_slots`](Self::set_slots).
    pub fn take_slots(&mut self) -> Slots {
        self.slots.take().unwrap_or_default()
    }

    /// Closes the current slots' file of that name (its folder changed).
    pub fn close_slot(&mut self, name: &str) {
        if let (Some(slots), Some(i)) = (self.slots.as_mut(), slot_index(name)) {
            slots.close(i);
        }
    }

    fn kept_open(&self) -> usize {
        self.open
            .len()
            .saturating_add(self.slot_open.load(Ordering::Relaxed))
    }

    /// Reads `dir/name` whole: read until a read returns 0. Use it for files of many
    /// records (`/proc/net/dev`, mounts, diskstats, vmstat, `cgroup.procs`), which the
    /// kernel hands out about a page per read. The returned bytes live until the next read.
    pub fn read_in(&mut self, dir: &Path, name: &str) -> Result<&[u8], ReadError> {
        self.read(dir, name, Records::Many)
    }

    /// Reads `dir/name`, a file the kernel generates in one piece: cgroup interface
    /// files (except `cgroup.procs`/`tasks`), sysfs attributes and the `single_open`
    /// files of /proc (`stat`, `meminfo`, `loadavg`, `uptime`, `pressure/*`). Their
    /// show() runs once into a buffer the kernel grows until the record fits, and the
    /// first read copies all of it when the caller's buffer is larger; so a first read
    /// shorter than the buffer is the whole file and the read that would return 0 is
    /// skipped (half the syscalls of a cycle). A read that fills the buffer goes on
    /// reading until 0, as [`read_in`](Self::read_in) does; `metrics_kernel.rs` checks
    /// the premise on the running kernel's files.
    pub fn read_record(&mut self, dir: &Path, name: &str) -> Result<&[u8], ReadError> {
        self.read(dir, name, Records::One)
    }

    fn read(&mut self, dir: &Path, name: &str, records: Records) -> Result<&[u8], ReadError> {
        if let (Some(slots), Some(i)) = (self.slots.as_mut(), slot_index(name)) {
            if let Some(f) = &slots.files[i] {
                match read_from_start(f, &mut self.buf, records) {
                    Ok(len) => {
                        self.len = len;
                        return Ok(&self.buf[..len]);
                    }
                    // Gone underneath us (a removed cgroup answers ENODEV): open afresh.
                    Err(_) => slots.close(i),
                }
            }
            set_path(&mut self.path, dir, name);
            let io_err = |path: &Path, source| ReadError::Io {
                path: path.to_path_buf(),
                source,
            };
            let file = File::open(&self.path).map_err(|e| io_err(&self.path, e))?;
            let len = read_from_start(&file, &mut self.buf, records)
                .map_err(|e| io_err(&self.path, e))?;
            let kept = self
                .open
                .len()
                .saturating_add(self.slot_open.load(Ordering::Relaxed));
            if kept < self.max_open {
                slots.put(i, file, &self.slot_open);
            }
            self.len = len;
            return Ok(&self.buf[..len]);
        }
        set_path(&mut self.path, dir, name);
        let key = self.path.as_os_str().as_bytes();
        if let Some(kept) = self.open.get_mut(key) {
            kept.cycle = self.cycle;
            match read_from_start(&kept.file, &mut self.buf, records) {
                Ok(len) => {
                    self.len = len;
                    return Ok(&self.buf[..len]);
                }
                Err(source) if no_value_now(&source) => {
                    return Err(ReadError::Io {
                        path: self.path.clone(),
                        source,
                    })
                }
                // Gone underneath us (a removed cgroup answers ENODEV): open afresh.
                Err(_) => {
                    self.open.remove(key);
                }
            }
        }
        let io_err = |path: &Path, source| ReadError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(&self.path).map_err(|e| io_err(&self.path, e))?;
        let read = read_from_start(&file, &mut self.buf, records);
        // A file whose read says "no value now" is kept too: it is read again next
        // cycle without the path walk and open (two per down link and cycle, 6% of a
        // 20-container collection on a host with two down interfaces).
        let keep = match &read {
            Ok(_) => true,
            Err(e) => no_value_now(e),
        };
        if keep && self.kept_open() < self.max_open {
            self.open.insert(
                self.path.as_os_str().as_bytes().into(),
                Kept {
                    file,
                    cycle: self.cycle,
                },
            );
        }
        match read {
            Ok(len) => {
                self.len = len;
                Ok(&self.buf[..len])
            }
            Err(e) => Err(io_err(&self.path, e)),
        }
    }

    /// Closes files no read touched since the last call; call once per cycle.
    pub fn end_cycle(&mut self) {
        if self.buf.len() > READ_BUF {
            self.buf.truncate(READ_BUF);
            self.buf.shrink_to_fit();
        }
        let cycle = self.cycle;
        self.open.retain(|_, k| k.cycle == cycle);
        // The map peaks in the cycles that read every container's limits; its table
        // would otherwise stay at that size for good.
        if self.open.capacity() > 64 && self.open.capacity() > self.open.len() * 4 {
            self.open.shrink_to(self.open.len() * 2);
        }
        self.cycle += 1;
    }

    /// Files currently kept open (map and slots).
    #[cfg(test)]
    pub fn open_files(&self) -> usize {
        self.kept_open()
    }

    /// The path of the last read that opened a file or missed the slots, for error
    /// messages.
    pub fn last_path(&self) -> &Path {
        &self.path
    }

    /// Reads `dir/name` (one record: a cgroup or sysfs value) and parses it as one
    /// unsigned number (`max` gives `None`).
    pub fn read_u64(&mut self, dir: &Path, name: &str) -> Result<Option<u64>, ReadError> {
        let bytes = self.read_record(dir, name)?;
        let text = trim(bytes);
        if text == b"max" {
            return Ok(None);
        }
        match parse_u64(text) {
            Some(v) => Ok(Some(v)),
            None => {
                // A slot's read leaves the path buffer as it was.
                set_path(&mut self.path, dir, name);
                Err(ReadError::parse(&self.path, "expected a number"))
            }
        }
    }

    /// Reads `dir/name` (one record) as one trimmed line of text.
    pub fn read_string(&mut self, dir: &Path, name: &str) -> Result<String, ReadError> {
        let bytes = self.read_record(dir, name)?;
        Ok(String::from_utf8_lossy(trim(bytes)).into_owned())
    }

    /// Reads a short `/proc/sys` value (`kernel/hostname`) as one trimmed line. The
    /// sysctl handler allocates and zeroes a kernel buffer as large as the read asked
    /// for: with the 64 KiB buffer that was 16 pages cleared per cycle (5% of a
    /// collection at 20 containers), so the first read asks for [`SMALL_READ`] bytes
    /// and only a value that fills them is read on.
    pub fn read_sysctl_string(&mut self, dir: &Path, name: &str) -> Result<String, ReadError> {
        let bytes = self.read(dir, name, Records::Small)?;
        Ok(String::from_utf8_lossy(trim(bytes)).into_owned())
    }
}

/// A read error of a file that is there but has no value at the moment: a sysfs
/// attribute of a down link (`carrier`, `speed`: EINVAL), one the driver does not
/// report (`speed` of `lo`, PSI with `psi=0`: EOPNOTSUPP). Reading the same open file
/// again later gives the value once there is one; a removed file answers ENODEV.
fn no_value_now(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)
    )
}

/// `dir/name` into `path`, reusing its allocation.
fn set_path(path: &mut PathBuf, dir: &Path, name: &str) {
    let os = path.as_mut_os_string();
    os.clear();
    os.push(dir.as_os_str());
    path.push(name);
}

/// Bytes asked for by the first read of a [`Records::Small`] file: a hostname is at
/// most 64.
const SMALL_READ: usize = 256;

/// How a pseudo-file hands out its contents (see [`PseudoFile::read_record`]).
#[derive(Clone, Copy, PartialEq)]
enum Records {
    /// One show() call: a first read shorter than the buffer is all of it.
    One,
    /// One short value whose handler allocates what the read asks for (`/proc/sys`):
    /// the first read asks for [`SMALL_READ`] bytes; one that fills them is read on
    /// as [`Records::One`].
    Small,
    /// Many records, about a page per read: only a read of 0 is the end.
    Many,
}

/// Reads a file from offset 0 into `buf` (grown when full) until a read returns 0, or,
/// for a one-record file, until a read leaves part of the buffer unfilled; returns the
/// length.
///
/// A short read does not mean the end of a many-record file: seq_file pseudo-files
/// (`/proc/net/dev`, `/proc/self/mounts`, `/proc/diskstats`) hand out at most about a
/// page per read, so stopping at the first short read silently cuts a 15 KB table after
/// its first 4 KB.
fn read_from_start(file: &File, buf: &mut Vec<u8>, records: Records) -> io::Result<usize> {
    let mut len = 0;
    loop {
        if len == buf.len() {
            let grown = buf.len().saturating_mul(2).max(4096);
            buf.resize(grown, 0);
        }
        let want = if records == Records::Small && len == 0 {
            SMALL_READ.min(buf.len())
        } else {
            buf.len()
        };
        match file.read_at(&mut buf[len..want], len as u64) {
            Ok(0) => return Ok(len),
            Ok(n) => {
                len += n;
                let short = len < want;
                if short && (records == Records::One || records == Records::Small) {
                    return Ok(len);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Strips ASCII whitespace at both ends.
pub fn trim(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b {
        if first.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = b {
        if last.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    b
}

/// Parses an unsigned decimal; `None` on anything else (including an empty field).
pub fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

/// Parses a signed decimal (hwmon and thermal values may be negative).
pub fn parse_i64(b: &[u8]) -> Option<i64> {
    match b {
        [b'-', rest @ ..] => parse_u64(rest)
            .and_then(|v| i64::try_from(v).ok())
            .map(|v| -v),
        _ => parse_u64(b).and_then(|v| i64::try_from(v).ok()),
    }
}

/// Parses a decimal with an optional fraction (`/proc/loadavg`, PSI averages).
/// `inf`, `nan` and overflowing exponents are refused: JSON cannot carry them, and one
/// would make the manager reject the whole report.
pub fn parse_f64(b: &[u8]) -> Option<f64> {
    let v: f64 = std::str::from_utf8(b).ok()?.parse().ok()?;
    v.is_finite().then_some(v)
}

/// Whitespace-separated fields of a line, without allocating.
pub fn fields(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|c| c.is_ascii_whitespace())
        .filter(|f| !f.is_empty())
}

/// Lines of a buffer (empty ones skipped).
pub fn lines(b: &[u8]) -> impl Iterator<Item = &[u8]> {
    Lines(b)
}

struct Lines<'a>(&'a [u8]);

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        while !self.0.is_empty() {
            let (line, rest) = match find_byte(self.0, b'\n') {
                Some(end) => (&self.0[..end], &self.0[end + 1..]),
                None => (self.0, &[][..]),
            };
            self.0 = rest;
            if !line.is_empty() {
                return Some(line);
            }
        }
        None
    }
}

/// Where `byte` first is in `hay`, eight bytes at a time: the files parsed are long
/// lines (net/dev, memory.stat, vmstat), and a byte loop at opt-level "s" cost ~4
/// instructions a byte (line splitting was ~20% of a collection's instructions).
pub fn find_byte(hay: &[u8], byte: u8) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let pattern = ONES.wrapping_mul(u64::from(byte));
    let mut words = hay.chunks_exact(8);
    let mut at = 0;
    for w in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        // A zero byte in `x` (a match) sets its high bit here; no match sets none.
        let x = u64::from_le_bytes(word) ^ pattern;
        if x.wrapping_sub(ONES) & !x & HIGHS != 0 {
            break;
        }
        at += 8;
    }
    hay[at..].iter().position(|&c| c == byte).map(|i| at + i)
}

/// `key value` lines (memory.stat, cpu.stat, vmstat): the value of `key`, if present.
pub fn keyed_u64(b: &[u8], key: &[u8]) -> Option<u64> {
    lines(b).find_map(|line| {
        let mut f = fields(line);
        (f.next()? == key)
            .then(|| f.next().and_then(parse_u64))
            .flatten()
    })
}

/// The values of several `key value` keys in one pass over the file (memory.stat has
/// ~35 lines and is asked for up to 8 keys: one scan per key was ~4% of a cycle).
/// Each slot is what [`keyed_u64`] would give for that key.
pub fn keyed_u64s<const N: usize>(b: &[u8], keys: [&[u8]; N]) -> [Option<u64>; N] {
    let mut out = [None; N];
    for line in lines(b) {
        let mut f = fields(line);
        let Some(key) = f.next() else { continue };
        if let Some(i) = keys.iter().position(|&k| k == key) {
            if out[i].is_none() {
                out[i] = f.next().and_then(parse_u64);
            }
        }
    }
    out
}

/// Lossy text of a field, for names.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_by_hand() {
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"12a"), None);
        assert_eq!(parse_i64(b"-4500"), Some(-4500));
        assert_eq!(parse_f64(b"0.52"), Some(0.52));
        for bad in [&b"inf"[..], b"NaN", b"-infinity", b"1e309"] {
            assert_eq!(parse_f64(bad), None, "{bad:?}");
        }
        assert_eq!(trim(b"  42\n"), b"42");
    }

    #[test]
    fn bytes_and_lines_are_found_as_a_byte_loop_finds_them() {
        let text = b"a\n\nbb ccc\nnet: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n\n\nlast";
        for start in 0..text.len() {
            let hay = &text[start..];
            for byte in [b'\n', b':', b'a', b'z', 0x80, 0] {
                assert_eq!(
                    find_byte(hay, byte),
                    hay.iter().position(|&c| c == byte),
                    "{byte} in {hay:?}"
                );
            }
            let want: Vec<&[u8]> = hay
                .split(|&c| c == b'\n')
                .filter(|l| !l.is_empty())
                .collect();
            assert_eq!(lines(hay).collect::<Vec<_>>(), want);
        }
        assert_eq!(find_byte(&[0xff; 64], 0x7f), None);
        assert_eq!(find_byte(&[0x80; 17], 0x80), Some(0));
    }

    /// What splitting every line into fields gives (the lines found word at a time).
    #[test]
    fn keyed_values_match_the_field_split() {
        fn by_fields(b: &[u8], key: &[u8]) -> Option<u64> {
            b.split(|&c| c == b'\n').find_map(|line| {
                let mut f = fields(line);
                (f.next()? == key)
                    .then(|| f.next().and_then(parse_u64))
                    .flatten()
            })
        }
        let text =
            b"rss 7\nrss_huge 1\n  rss 8\nrssx 9\nrss\nrss x\nrss\t10\n\ttotal_rss 11 12\nt 1\n";
        for key in [
            &b"rss"[..],
            b"rss_huge",
            b"total_rss",
            b"t",
            b"x",
            b"",
            b"rs",
        ] {
            for start in 0..text.len() {
                let hay = &text[start..];
                assert_eq!(
                    keyed_u64(hay, key),
                    by_fields(hay, key),
                    "{key:?} in {hay:?}"
                );
                assert_eq!(
                    keyed_u64s(hay, [key, b"t"])[0],
                    by_fields(hay, key),
                    "{key:?}"
                );
            }
        }
    }

    #[test]
    fn keyed_values_are_found_by_whole_key() {
        let text = b"total_rss 10\nrss 7\ninactive_file 3\n";
        assert_eq!(keyed_u64(text, b"rss"), Some(7));
        assert_eq!(keyed_u64(text, b"total_rss"), Some(10));
        assert_eq!(keyed_u64(text, b"file"), None);
        assert_eq!(
            keyed_u64s(text, [b"rss", b"file", b"total_rss"]),
            [Some(7), None, Some(10)]
        );
        let twice = b"rss x\nrss 5\nrss 6\n";
        assert_eq!(keyed_u64s(twice, [b"rss"]), [keyed_u64(twice, b"rss")]);
    }

    #[test]
    fn kept_files_are_read_afresh_and_closed_when_unused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("v"), "1\n").unwrap();
        let mut f = PseudoFile::new();
        assert_eq!(f.read_u64(dir.path(), "v").unwrap(), Some(1));
        assert_eq!(f.open_files(), 1);
        std::fs::write(dir.path().join("v"), "22\n").unwrap();
        assert_eq!(f.read_u64(dir.path(), "v").unwrap(), Some(22));
        f.end_cycle();
        assert_eq!(f.open_files(), 1, "read this cycle: kept");
        f.end_cycle();
        assert_eq!(f.open_files(), 0, "not read in the last cycle: closed");
    }

    #[test]
    fn slot_files_are_read_afresh_counted_and_closed_with_their_owner() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("cpuacct.usage"), "1\n").unwrap();
        std::fs::write(d.join("memory.stat"), "rss 5\n").unwrap();
        std::fs::write(d.join("notify_on_release"), "9\n").unwrap();
        let mut f = PseudoFile::with_open_budget(3);
        f.set_slots(Slots::default());
        assert_eq!(f.read_u64(d, "cpuacct.usage").unwrap(), Some(1));
        assert_eq!(f.read_record(d, "memory.stat").unwrap(), b"rss 5\n");
        // Not a slot name: the path map, closed after a cycle without a read.
        assert_eq!(f.read_u64(d, "notify_on_release").unwrap(), Some(9));
        assert_eq!(f.open_files(), 3);
        std::fs::write(d.join("cpuacct.usage"), "22\n").unwrap();
        assert_eq!(f.read_u64(d, "cpuacct.usage").unwrap(), Some(22));
        let a = f.take_slots();
        assert_eq!(a.open(), 2);
        f.end_cycle();
        f.end_cycle();
        assert_eq!(f.open_files(), 2, "the map's file closed, the slots' kept");
        // A second container: over the budget of 3, its file is read but not kept.
        std::fs::write(d.join("io.stat"), "x\n").unwrap();
        f.set_slots(Slots::default());
        f.read_u64(d, "cpuacct.usage").unwrap();
        assert!(f.read_record(d, "io.stat").is_ok());
        let b = f.take_slots();
        assert_eq!(b.open(), 1);
        assert_eq!(f.open_files(), 3);
        drop(a);
        assert_eq!(f.open_files(), 1, "dropping a container closes its files");
        // A bad number names the file even when read through a slot.
        let mut b = b;
        std::fs::write(d.join("cpuacct.usage"), "zz\n").unwrap();
        f.set_slots(std::mem::take(&mut b));
        let err = f.read_u64(d, "cpuacct.usage").unwrap_err();
        assert!(err.to_string().contains("cpuacct.usage"), "{err}");
        f.close_slot("cpuacct.usage");
        assert_eq!(f.take_slots().open(), 0);
        assert_eq!(f.open_files(), 0);
    }

    #[test]
    fn sysctl_values_are_whole_past_the_first_small_read() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let long = "h".repeat(SMALL_READ * 3 + 7);
        std::fs::write(d.join("long"), format!("{long}\n")).unwrap();
        std::fs::write(d.join("exact"), "e".repeat(SMALL_READ)).unwrap();
        std::fs::write(d.join("short"), "board-7\n").unwrap();
        let mut f = PseudoFile::new();
        assert_eq!(f.read_sysctl_string(d, "long").unwrap(), long);
        assert_eq!(
            f.read_sysctl_string(d, "exact").unwrap(),
            "e".repeat(SMALL_READ)
        );
        assert_eq!(f.read_sysctl_string(d, "short").unwrap(), "board-7");
        // The kernel's own: the same as uname's node name.
        let uts = nix::sys::utsname::uname().unwrap();
        assert_eq!(
            f.read_sysctl_string(Path::new("/proc/sys/kernel"), "hostname")
                .unwrap(),
            uts.nodename().to_string_lossy()
        );
    }

    /// A sysfs attribute without a value now (`lo` has no link speed: EOPNOTSUPP; a
    /// down link's `carrier`/`speed`: EINVAL) stays open: the next cycle reads it again
    /// without opening it, and it is closed like any file once no cycle reads it.
    #[test]
    fn a_file_without_a_value_now_stays_open() {
        let lo = Path::new("/sys/class/net/lo");
        let mut f = PseudoFile::new();
        for _ in 0..3 {
            match f.read_record(lo, "speed") {
                Ok(_) => {}
                Err(ReadError::Io { source, .. }) => assert!(no_value_now(&source), "{source}"),
                Err(e) => panic!("{e}"),
            }
            assert_eq!(f.open_files(), 1, "kept, not opened again");
            f.end_cycle();
        }
        f.end_cycle();
        assert_eq!(f.open_files(), 0, "closed once no cycle reads it");
    }

    #[test]
    fn big_files_grow_the_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let big = "x".repeat(200_000);
        std::fs::write(dir.path().join("big"), &big).unwrap();
        let mut f = PseudoFile::new();
        assert_eq!(f.read_in(dir.path(), "big").unwrap().len(), 200_000);
        assert!(f.buf.len() >= 200_000);
        f.end_cycle();
        assert_eq!(f.buf.len(), READ_BUF, "back to its size after the cycle");
        assert_eq!(f.read_in(dir.path(), "big").unwrap(), big.as_bytes());
    }

    #[test]
    fn missing_files_are_told_apart_from_faults() {
        let mut f = PseudoFile::new();
        let err = f
            .read_in(Path::new("/nonexistent-armada"), "x")
            .unwrap_err();
        assert!(err.is_missing());
        assert!(err.to_string().contains("/nonexistent-armada/x"), "{err}");
    }
}

//! Block maps (`.bmap`), the format of bmap-tools, version 2.0.
//!
//! A bmap lists the blocks of a raw image that hold data (the rest are holes, which
//! need not be written to a card), with a SHA-256 per range and a checksum of the bmap
//! file itself. [`create`] makes one from a sparse image the way `bmaptool create`
//! does: a block is mapped when the filesystem holding the image says it has data
//! (`SEEK_DATA`/`SEEK_HOLE`). Like bmaptool, blocks that hold only zeros but are
//! allocated stay mapped: bmaptool never reads block contents to decide, and the card
//! may not hold zeros where a hole is skipped. [`Bmap::write_xml`] writes the file
//! bmaptool writes (same elements, comments and checksum rule), so `bmaptool copy`
//! takes armada's bmaps and `armada flash` takes bmaptool's. [`Bmap::parse`] reads and
//! validates one.

// A shared API: `build`, `inspect`, `boot` and `flash` each use part of it.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256, Sha512};

/// Block size armada uses when it creates a bmap (what bmaptool gets on ext4 and tmpfs).
pub const BLOCK_SIZE: u64 = 4096;
/// The format version armada writes; it reads 2.x (and 1.4, which is the same format).
pub const FORMAT_VERSION: &str = "2.0";

#[derive(Debug, thiserror::Error)]
pub enum BmapError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("bmap {file}: {message}")]
    Invalid { file: String, message: String },
    #[error("cannot create a bmap for {path}: the image is empty")]
    EmptyImage { path: String },
}

pub type Result<T> = std::result::Result<T, BmapError>;

/// Checksum used for the ranges and the bmap file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumType {
    Sha256,
    Sha512,
}

impl ChecksumType {
    pub fn name(self) -> &'static str {
        match self {
            ChecksumType::Sha256 => "sha256",
            ChecksumType::Sha512 => "sha512",
        }
    }
    /// Length of the digest in hex characters.
    pub fn hex_len(self) -> usize {
        match self {
            ChecksumType::Sha256 => 64,
            ChecksumType::Sha512 => 128,
        }
    }
    pub fn hasher(self) -> RangeHasher {
        match self {
            ChecksumType::Sha256 => RangeHasher::Sha256(Sha256::new()),
            ChecksumType::Sha512 => RangeHasher::Sha512(Sha512::new()),
        }
    }
}

/// An incremental hash of the checksum type of a bmap.
pub enum RangeHasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl RangeHasher {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            RangeHasher::Sha256(h) => h.update(data),
            RangeHasher::Sha512(h) => h.update(data),
        }
    }
    /// Lower-case hex digest.
    pub fn finish_hex(self) -> String {
        match self {
            RangeHasher::Sha256(h) => hex::encode(h.finalize()),
            RangeHasher::Sha512(h) => hex::encode(h.finalize()),
        }
    }
}

/// A run of mapped blocks, `first..=last`, with the checksum of its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockRange {
    pub first: u64,
    pub last: u64,
    /// Lower-case hex; `None` when the bmap carries no checksum for this range.
    pub checksum: Option<String>,
}

/// A mapped range in bytes, clipped to the image size (the last block may be partial).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappedRange {
    pub offset: u64,
    pub len: u64,
    pub checksum: Option<String>,
}

impl MappedRange {
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bmap {
    pub version: String,
    pub image_size: u64,
    pub block_size: u64,
    pub blocks_count: u64,
    pub mapped_blocks: u64,
    pub checksum_type: ChecksumType,
    pub ranges: Vec<BlockRange>,
}

/// Makes the bmap of the raw image at `image` (SHA-256 per range).
pub fn create(image: &Path) -> Result<Bmap> {
    create_with_progress(image, &mut |_| {})
}

/// [`create`], calling `progress` with the bytes hashed so far.
pub fn create_with_progress(image: &Path, progress: &mut dyn FnMut(u64)) -> Result<Bmap> {
    let path = image.display().to_string();
    let io = |action: &'static str| {
        let path = path.clone();
        move |source| BmapError::Io {
            action,
            path,
            source,
        }
    };
    let mut file = File::open(image).map_err(io("opening image"))?;
    let image_size = file.metadata().map_err(io("reading size of image"))?.len();
    if image_size == 0 {
        return Err(BmapError::EmptyImage { path });
    }
    let extents =
        data_extents(&file, image_size).map_err(io("finding data extents (SEEK_DATA) in"))?;
    let blocks_count = image_size.div_ceil(BLOCK_SIZE);
    let block_runs = extents_to_blocks(&extents, BLOCK_SIZE, blocks_count);

    let mut ranges = Vec::with_capacity(block_runs.len());
    let mut buf = vec![0u8; 1 << 20];
    let mut hashed = 0u64;
    for (first, last) in block_runs {
        let start = first * BLOCK_SIZE;
        let end = ((last + 1) * BLOCK_SIZE).min(image_size);
        file.seek(SeekFrom::Start(start))
            .map_err(io("seeking in image"))?;
        let mut hasher = ChecksumType::Sha256.hasher();
        let mut left = end - start;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            file.read_exact(&mut buf[..n])
                .map_err(io("reading image"))?;
            hasher.update(&buf[..n]);
            left -= n as u64;
            hashed += n as u64;
            progress(hashed);
        }
        ranges.push(BlockRange {
            first,
            last,
            checksum: Some(hasher.finish_hex()),
        });
    }
    let mapped_blocks = ranges.iter().map(|r| r.last - r.first + 1).sum();
    Ok(Bmap {
        version: FORMAT_VERSION.to_string(),
        image_size,
        block_size: BLOCK_SIZE,
        blocks_count,
        mapped_blocks,
        checksum_type: ChecksumType::Sha256,
        ranges,
    })
}

/// Byte extents `[start, end)` holding data, from `SEEK_DATA`/`SEEK_HOLE`. A filesystem
/// without them (EINVAL) is treated as one extent covering the file, as bmaptool does.
fn data_extents(file: &File, size: u64) -> std::io::Result<Vec<(u64, u64)>> {
    let fd = file.as_raw_fd();
    let mut extents = Vec::new();
    let mut pos: u64 = 0;
    while pos < size {
        // SAFETY: lseek on a valid fd we own; no memory is passed.
        let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let err = std::io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::ENXIO) => Ok(extents),
                Some(libc::EINVAL) if extents.is_empty() => Ok(vec![(0, size)]),
                _ => Err(err),
            };
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let (data, hole) = (data as u64, (hole as u64).min(size));
        if hole <= data {
            break;
        }
        extents.push((data, hole));
        pos = hole;
    }
    Ok(extents)
}

/// Turns byte extents into merged, sorted inclusive block runs: a block is mapped when
/// any byte of it is in an extent.
pub fn extents_to_blocks(
    extents: &[(u64, u64)],
    block_size: u64,
    blocks_count: u64,
) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let mut sorted: Vec<(u64, u64)> = extents.iter().copied().filter(|(s, e)| e > s).collect();
    sorted.sort_unstable();
    for (start, end) in sorted {
        let first = start / block_size;
        let last = (end.div_ceil(block_size))
            .min(blocks_count)
            .saturating_sub(1);
        if first >= blocks_count || last < first {
            continue;
        }
        match runs.last_mut() {
            Some(prev) if first <= prev.1 + 1 => prev.1 = prev.1.max(last),
            _ => runs.push((first, last)),
        }
    }
    runs
}

/// Where `bmaptool` looks for the bmap of `image`: `a.img.xz.bmap`, `a.img.bmap`, `a.bmap`.
pub fn candidates_beside(image: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut base = image.to_path_buf();
    loop {
        let mut with = base.clone().into_os_string();
        with.push(".bmap");
        out.push(PathBuf::from(with));
        if base.extension().is_none() {
            break;
        }
        base = base.with_extension("");
    }
    out
}

/// The first existing bmap beside `image` (see [`candidates_beside`]).
pub fn find_beside(image: &Path) -> Option<PathBuf> {
    candidates_beside(image).into_iter().find(|p| p.is_file())
}

/// The bmap's name for an image output: `out/x.img.xz` -> `out/x.img.bmap`.
pub fn path_for(image: &Path) -> PathBuf {
    let name = image
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let stem = ["xz", "gz", "zst", "bz2"]
        .iter()
        .find_map(|ext| name.strip_suffix(&format!(".{ext}")))
        .unwrap_or(&name)
        .to_string();
    image.with_file_name(format!("{stem}.bmap"))
}

/// bmaptool's `human_size`, for the file's comments.
fn human_size(size: u64) -> String {
    if size == 1 {
        return "1 byte".into();
    }
    if size < 512 {
        return format!("{size} bytes");
    }
    let mut s = size as f64;
    for unit in ["KiB", "MiB", "GiB", "TiB"] {
        s /= 1024.0;
        if s < 1024.0 {
            return format!("{s:.1} {unit}");
        }
    }
    format!("{s:.1} EiB")
}

impl Bmap {
    /// A bmap that maps every block of an image of `image_size` bytes, without checksums
    /// (flashing without a bmap).
    pub fn full(image_size: u64) -> Bmap {
        let blocks_count = image_size.div_ceil(BLOCK_SIZE);
        let ranges = if blocks_count == 0 {
            vec![]
        } else {
            vec![BlockRange {
                first: 0,
                last: blocks_count - 1,
                checksum: None,
            }]
        };
        Bmap {
            version: FORMAT_VERSION.into(),
            image_size,
            block_size: BLOCK_SIZE,
            blocks_count,
            mapped_blocks: blocks_count,
            checksum_type: ChecksumType::Sha256,
            ranges,
        }
    }

    /// Mapped ranges in bytes, in order, the last one clipped to the image size.
    pub fn mapped_ranges(&self) -> Vec<MappedRange> {
        self.ranges
            .iter()
            .map(|r| {
                let offset = r.first * self.block_size;
                let end = ((r.last + 1) * self.block_size).min(self.image_size);
                MappedRange {
                    offset,
                    len: end - offset,
                    checksum: r.checksum.clone(),
                }
            })
            .collect()
    }

    /// Bytes that a bmap-aware copy writes.
    pub fn mapped_bytes(&self) -> u64 {
        self.mapped_ranges().iter().map(|r| r.len).sum()
    }

    /// Writes the bmap file as `bmaptool create` does, with its own checksum filled in.
    pub fn write_xml(&self, out: &mut impl Write) -> std::io::Result<()> {
        out.write_all(self.to_xml().as_bytes())
    }

    /// The bmap file's text (see [`Bmap::write_xml`]).
    pub fn to_xml(&self) -> String {
        let cs = self.checksum_type;
        let mapped_size = self.mapped_blocks * self.block_size;
        let percent = if self.blocks_count > 0 {
            self.mapped_blocks as f64 * 100.0 / self.blocks_count as f64
        } else {
            0.0
        };
        let mut x = String::new();
        x.push_str(
            "<?xml version=\"1.0\" ?>\n\
<!-- This file contains the block map for an image file, which is basically\n     \
a list of useful (mapped) block numbers in the image file. In other words,\n     \
it lists only those blocks which contain data (boot sector, partition\n     \
table, file-system metadata, files, directories, extents, etc). These\n     \
blocks have to be copied to the target device. The other blocks do not\n     \
contain any useful data and do not have to be copied to the target\n     \
device.\n\n     \
The block map an optimization which allows to copy or flash the image to\n     \
the image quicker than copying of flashing the entire image. This is\n     \
because with bmap less data is copied: <MappedBlocksCount> blocks instead\n     \
of <BlocksCount> blocks.\n\n     \
Besides the machine-readable data, this file contains useful commentaries\n     \
which contain human-readable information like image size, percentage of\n     \
mapped data, etc.\n\n     \
The 'version' attribute is the block map file format version in the\n     \
'major.minor' format. The version major number is increased whenever an\n     \
incompatible block map format change is made. The minor number changes\n     \
in case of minor backward-compatible changes. -->\n\n",
        );
        let _ = write!(
            x,
            "<bmap version=\"{}\">\n    <!-- Image size in bytes: {} -->\n    <ImageSize> {} </ImageSize>\n\n    \
<!-- Size of a block in bytes -->\n    <BlockSize> {} </BlockSize>\n\n    \
<!-- Count of blocks in the image file -->\n    <BlocksCount> {} </BlocksCount>\n\n    \
<!-- Count of mapped blocks: {} or {:.1}%   -->\n    <MappedBlocksCount> {} </MappedBlocksCount>\n\n    \
<!-- Type of checksum used in this file -->\n    <ChecksumType> {} </ChecksumType>\n\n    \
<!-- The checksum of this bmap file. When it is calculated, the value of\n         \
the checksum has be zero (all ASCII \"0\" symbols).  -->\n    <BmapFileChecksum> ",
            FORMAT_VERSION,
            human_size(self.image_size),
            self.image_size,
            self.block_size,
            self.blocks_count,
            human_size(mapped_size),
            percent,
            self.mapped_blocks,
            cs.name(),
        );
        let checksum_pos = x.len();
        x.push_str(&"0".repeat(cs.hex_len()));
        x.push_str(
            " </BmapFileChecksum>\n\n    \
<!-- The block map which consists of elements which may either be a\n         \
range of blocks or a single block. The 'chksum' attribute\n         \
(if present) is the checksum of this blocks range. -->\n    <BlockMap>\n",
        );
        for r in &self.ranges {
            let attr = r
                .checksum
                .as_ref()
                .map(|c| format!(" chksum=\"{c}\""))
                .unwrap_or_default();
            if r.first == r.last {
                let _ = writeln!(x, "        <Range{attr}> {} </Range>", r.first);
            } else {
                let _ = writeln!(x, "        <Range{attr}> {}-{} </Range>", r.first, r.last);
            }
        }
        x.push_str("    </BlockMap>\n</bmap>\n");
        let mut h = cs.hasher();
        h.update(x.as_bytes());
        let digest = h.finish_hex();
        x.replace_range(checksum_pos..checksum_pos + cs.hex_len(), &digest);
        x
    }

    /// Parses and validates a bmap file; `file_name` names it in errors.
    pub fn parse(text: &str, file_name: &str) -> Result<Bmap> {
        let invalid = |message: String| BmapError::Invalid {
            file: file_name.to_string(),
            message,
        };

        let root = find_open_tag(text, "bmap", 0)
            .ok_or_else(|| invalid("no <bmap> element: not a bmap file".into()))?;
        let version = attribute(root.attrs, "version")
            .ok_or_else(|| invalid("<bmap> has no version attribute".into()))?;
        let (major, minor) = version
            .split_once('.')
            .and_then(|(a, b)| Some((a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?)))
            .ok_or_else(|| invalid(format!("version `{version}` is not major.minor")))?;
        if !(major == 2 || (major == 1 && minor == 4)) {
            return Err(invalid(format!(
                "format version {version} is not supported (armada reads 2.x, as written by bmaptool 3.1 and later)"
            )));
        }

        let number = |tag: &str| -> Result<u64> {
            let el = element_text(text, tag, root.end)
                .ok_or_else(|| invalid(format!("no <{tag}> element")))?;
            el.text
                .trim()
                .parse::<u64>()
                .map_err(|_| invalid(format!("<{tag}> `{}` is not a number", el.text.trim())))
        };
        let image_size = number("ImageSize")?;
        let block_size = number("BlockSize")?;
        let blocks_count = number("BlocksCount")?;
        let mapped_blocks = number("MappedBlocksCount")?;
        if block_size == 0 || block_size % 512 != 0 {
            return Err(invalid(format!(
                "block size {block_size} is not a positive multiple of 512"
            )));
        }
        if blocks_count != image_size.div_ceil(block_size) {
            return Err(invalid(format!(
                "image size {image_size} bytes does not match {blocks_count} blocks of {block_size} bytes"
            )));
        }

        let cs_el = element_text(text, "ChecksumType", root.end)
            .ok_or_else(|| invalid("no <ChecksumType> element".into()))?;
        let checksum_type = match cs_el.text.trim() {
            "sha256" => ChecksumType::Sha256,
            "sha512" => ChecksumType::Sha512,
            other => {
                return Err(invalid(format!(
                    "checksum type `{other}` is not supported (sha256, sha512)"
                )))
            }
        };

        let file_cs = element_text(text, "BmapFileChecksum", root.end)
            .ok_or_else(|| invalid("no <BmapFileChecksum> element".into()))?;
        let stored = file_cs.text.trim();
        if stored.len() != checksum_type.hex_len() || !stored.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(invalid(format!(
                "<BmapFileChecksum> `{stored}` is not a {} digest",
                checksum_type.name()
            )));
        }
        // bmaptool's rule: hash the file with the stored digest replaced by ASCII zeros.
        let digest_at = file_cs.start + (file_cs.text.len() - file_cs.text.trim_start().len());
        let mut zeroed = text.as_bytes().to_vec();
        zeroed[digest_at..digest_at + stored.len()].fill(b'0');
        let mut h = checksum_type.hasher();
        h.update(&zeroed);
        let calculated = h.finish_hex();
        if !calculated.eq_ignore_ascii_case(stored) {
            return Err(invalid(format!(
                "the file's checksum does not match (calculated {calculated}, stored {stored}): the bmap is damaged or was edited"
            )));
        }

        let map = element_text(text, "BlockMap", root.end)
            .ok_or_else(|| invalid("no <BlockMap> element".into()))?;
        let mut ranges: Vec<BlockRange> = Vec::new();
        let mut pos = 0;
        while let Some(el) = find_open_tag(map.text, "Range", pos) {
            let close = map.text[el.end..]
                .find("</Range>")
                .ok_or_else(|| invalid("<Range> without </Range>".into()))?;
            let body = map.text[el.end..el.end + close].trim();
            pos = el.end + close + "</Range>".len();
            let parse_block = |s: &str| {
                s.trim()
                    .parse::<u64>()
                    .map_err(|_| invalid(format!("range `{body}` is not N or N-M")))
            };
            let (first, last) = match body.split_once('-') {
                Some((a, b)) => (parse_block(a)?, parse_block(b)?),
                None => {
                    let n = parse_block(body)?;
                    (n, n)
                }
            };
            if first > last {
                return Err(invalid(format!(
                    "range {first}-{last}: first block after last"
                )));
            }
            if last >= blocks_count {
                return Err(invalid(format!(
                    "range {first}-{last} ends outside the image ({blocks_count} blocks)"
                )));
            }
            if let Some(prev) = ranges.last() {
                if first <= prev.last {
                    return Err(invalid(format!(
                        "range {first}-{last} overlaps or precedes range {}-{}",
                        prev.first, prev.last
                    )));
                }
            }
            let checksum = match attribute(el.attrs, "chksum") {
                Some(c) => {
                    let c = c.trim().to_ascii_lowercase();
                    if c.len() != checksum_type.hex_len()
                        || !c.bytes().all(|b| b.is_ascii_hexdigit())
                    {
                        return Err(invalid(format!(
                            "range {first}-{last}: chksum `{c}` is not a {} digest",
                            checksum_type.name()
                        )));
                    }
                    Some(c)
                }
                None => None,
            };
            ranges.push(BlockRange {
                first,
                last,
                checksum,
            });
        }
        let counted: u64 = ranges.iter().map(|r| r.last - r.first + 1).sum();
        if counted != mapped_blocks {
            return Err(invalid(format!(
                "<MappedBlocksCount> says {mapped_blocks} blocks but the ranges hold {counted}"
            )));
        }
        Ok(Bmap {
            version: version.to_string(),
            image_size,
            block_size,
            blocks_count,
            mapped_blocks,
            checksum_type,
            ranges,
        })
    }

    /// Reads and parses the bmap file at `path`.
    pub fn load(path: &Path) -> Result<Bmap> {
        let text = std::fs::read_to_string(path).map_err(|source| BmapError::Io {
            action: "reading bmap",
            path: path.display().to_string(),
            source,
        })?;
        Bmap::parse(&text, &path.display().to_string())
    }
}

struct OpenTag<'a> {
    attrs: &'a str,
    /// Byte index just past the `>`.
    end: usize,
}

struct ElementText<'a> {
    text: &'a str,
    /// Byte index of `text` in the searched string.
    start: usize,
}

/// Finds `<name ...>` (not `<nameX`) at or after `from`, skipping comments.
fn find_open_tag<'a>(s: &'a str, name: &str, from: usize) -> Option<OpenTag<'a>> {
    let mut pos = from;
    loop {
        let lt = pos + s.get(pos..)?.find('<')?;
        let rest = &s[lt + 1..];
        if rest.starts_with("!--") {
            let close = rest.find("-->")?;
            pos = lt + 1 + close + 3;
            continue;
        }
        if let Some(after) = rest.strip_prefix(name) {
            if after.starts_with(|c: char| c == '>' || c.is_ascii_whitespace()) {
                let gt = after.find('>')?;
                return Some(OpenTag {
                    attrs: &after[..gt],
                    end: lt + 1 + name.len() + gt + 1,
                });
            }
        }
        pos = lt + 1;
    }
}

/// The text between `<name>` and `</name>`.
fn element_text<'a>(s: &'a str, name: &str, from: usize) -> Option<ElementText<'a>> {
    let open = find_open_tag(s, name, from)?;
    let close = s[open.end..].find(&format!("</{name}>"))?;
    Some(ElementText {
        text: &s[open.end..open.end + close],
        start: open.end,
    })
}

/// Value of `key="..."` (or single quotes) in a tag's attribute text.
fn attribute<'a>(attrs: &'a str, key: &str) -> Option<&'a str> {
    let mut rest = attrs;
    while let Some(i) = rest.find(key) {
        let before_ok = i == 0 || rest.as_bytes()[i - 1].is_ascii_whitespace();
        let after = rest[i + key.len()..].trim_start();
        if before_ok {
            if let Some(v) = after.strip_prefix('=') {
                let v = v.trim_start();
                let quote = v.chars().next()?;
                if quote == '"' || quote == '\'' {
                    let end = v[1..].find(quote)?;
                    return Some(&v[1..1 + end]);
                }
            }
        }
        rest = &rest[i + key.len()..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sparse image: data at 0..5000 (partial blocks), a hole, data near 1 MiB, and
    /// an allocated all-zero block, then a tail hole; size not a block multiple.
    fn sparse_image(dir: &Path) -> PathBuf {
        let p = dir.join("a.img");
        let f = File::create(&p).unwrap();
        f.set_len(3 * 1024 * 1024 + 100).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(&[0xAB; 5000], 0).unwrap();
        f.write_all_at(&[0xCD; 8192], 1024 * 1024).unwrap();
        f.write_all_at(&[0u8; 4096], 2 * 1024 * 1024).unwrap();
        f.sync_all().unwrap();
        p
    }

    #[test]
    fn create_maps_data_and_allocated_zeros_like_bmaptool() {
        let dir = tempfile::tempdir().unwrap();
        let img = sparse_image(dir.path());
        let b = create(&img).unwrap();
        assert_eq!(b.image_size, 3 * 1024 * 1024 + 100);
        assert_eq!(b.blocks_count, 769);
        // Ranges depend on the filesystem's allocation unit; each must cover our data.
        let covers = |off: u64| {
            b.mapped_ranges()
                .iter()
                .any(|r| r.offset <= off && off < r.end())
        };
        assert!(covers(0) && covers(4999));
        assert!(covers(1024 * 1024) && covers(1024 * 1024 + 8191));
        assert!(
            covers(2 * 1024 * 1024),
            "allocated zero block must stay mapped"
        );
        assert!(!covers(3 * 1024 * 1024 + 50), "tail hole mapped");
        assert!(b.mapped_blocks < b.blocks_count / 2);
        let data = std::fs::read(&img).unwrap();
        for r in b.mapped_ranges() {
            let want = hex::encode(Sha256::digest(&data[r.offset as usize..r.end() as usize]));
            assert_eq!(r.checksum.as_deref(), Some(want.as_str()));
        }
    }

    #[test]
    fn written_xml_parses_back_and_is_checksummed() {
        let dir = tempfile::tempdir().unwrap();
        let b = create(&sparse_image(dir.path())).unwrap();
        let xml = b.to_xml();
        let back = Bmap::parse(&xml, "a.bmap").unwrap();
        assert_eq!(back, b);
        // One changed digit anywhere breaks the file checksum.
        let tampered = xml.replacen("<BlocksCount> 769", "<BlocksCount> 768", 1);
        assert_ne!(tampered, xml);
        let err = Bmap::parse(&tampered, "a.bmap").unwrap_err().to_string();
        assert!(err.contains("a.bmap"), "{err}");
    }

    #[test]
    fn bmaptool_accepts_our_bmap() {
        if std::process::Command::new("bmaptool")
            .arg("--version")
            .output()
            .is_err()
        {
            crate::test_skip::required("bmaptool not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let img = sparse_image(dir.path());
        let b = create(&img).unwrap();
        let bmap_path = dir.path().join("a.bmap");
        b.write_xml(&mut File::create(&bmap_path).unwrap()).unwrap();
        let dest = dir.path().join("out.img");
        let st = std::process::Command::new("bmaptool")
            .args(["copy", "--bmap"])
            .arg(&bmap_path)
            .arg(&img)
            .arg(&dest)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        assert_eq!(std::fs::read(&img).unwrap(), std::fs::read(&dest).unwrap());
    }

    #[test]
    fn we_accept_bmaptools_bmap_and_agree_on_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let img = sparse_image(dir.path());
        let out = std::process::Command::new("bmaptool")
            .arg("create")
            .arg(&img)
            .output();
        let Ok(out) = out else {
            crate::test_skip::required("bmaptool not installed");
            return;
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let theirs = Bmap::parse(&String::from_utf8(out.stdout).unwrap(), "bmaptool.bmap").unwrap();
        let ours = create(&img).unwrap();
        assert_eq!(theirs.image_size, ours.image_size);
        if theirs.block_size == ours.block_size {
            assert_eq!(theirs.ranges, ours.ranges);
        }
    }

    fn sample() -> Bmap {
        Bmap {
            version: "2.0".into(),
            image_size: 10 * 4096,
            block_size: 4096,
            blocks_count: 10,
            mapped_blocks: 3,
            checksum_type: ChecksumType::Sha256,
            ranges: vec![
                BlockRange {
                    first: 0,
                    last: 1,
                    checksum: Some("a".repeat(64)),
                },
                BlockRange {
                    first: 5,
                    last: 5,
                    checksum: Some("b".repeat(64)),
                },
            ],
        }
    }

    #[test]
    fn validation_names_the_problem() {
        let check = |b: Bmap, want: &str| {
            let err = Bmap::parse(&b.to_xml(), "x.bmap").unwrap_err().to_string();
            assert!(err.contains(want), "{err} should mention {want}");
        };
        let mut b = sample();
        b.ranges[1] = BlockRange {
            first: 9,
            last: 10,
            checksum: None,
        };
        b.mapped_blocks = 4;
        check(b, "outside the image");
        let mut b = sample();
        b.blocks_count = 11;
        check(b, "does not match");
        let mut b = sample();
        b.mapped_blocks = 4;
        check(b, "MappedBlocksCount");
        let mut b = sample();
        b.ranges.swap(0, 1);
        check(b, "overlaps or precedes");
        let xml = sample()
            .to_xml()
            .replace("version=\"2.0\"", "version=\"3.0\"");
        assert!(Bmap::parse(&xml, "x")
            .unwrap_err()
            .to_string()
            .contains("not supported"));
        assert!(Bmap::parse("hello", "x")
            .unwrap_err()
            .to_string()
            .contains("not a bmap"));
    }

    #[test]
    fn mapped_ranges_clip_the_last_partial_block() {
        let mut b = Bmap::full(4096 * 2 + 10);
        assert_eq!(b.blocks_count, 3);
        assert_eq!(
            b.mapped_ranges(),
            vec![MappedRange {
                offset: 0,
                len: 8202,
                checksum: None
            }]
        );
        b.ranges = vec![BlockRange {
            first: 2,
            last: 2,
            checksum: None,
        }];
        assert_eq!(b.mapped_bytes(), 10);
    }

    #[test]
    fn extents_round_to_blocks_and_merge() {
        assert_eq!(
            extents_to_blocks(&[(100, 200), (4000, 4100), (20000, 30000)], 4096, 100),
            vec![(0, 1), (4, 7)]
        );
        assert_eq!(extents_to_blocks(&[(0, 1 << 40)], 4096, 3), vec![(0, 2)]);
        assert!(extents_to_blocks(&[], 4096, 3).is_empty());
    }

    #[test]
    fn bmap_names_follow_bmaptool() {
        let c = candidates_beside(Path::new("/o/a.img.xz"));
        assert_eq!(
            c,
            vec![
                PathBuf::from("/o/a.img.xz.bmap"),
                PathBuf::from("/o/a.img.bmap"),
                PathBuf::from("/o/a.bmap")
            ]
        );
        assert_eq!(
            path_for(Path::new("/o/a.img.xz")),
            PathBuf::from("/o/a.img.bmap")
        );
        assert_eq!(path_for(Path::new("a.img")), PathBuf::from("a.img.bmap"));
    }
}

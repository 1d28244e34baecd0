//! Block device IO from `/proc/diskstats`: reads, writes, bytes, busy time and the time
//! reads and writes took (latency = time / count) per whole device. The SD card's (`mmcblk0`) written bytes are its wear indicator. Partitions,
//! loop and ram devices are left out: their IO is already counted on the whole device
//! or is not disk IO at all.

use std::path::Path;

use protocol::snapshot::DiskIo;

use super::pseudofile::{fields, lines, parse_u64, text, PseudoFile, ReadError};

/// `/proc/diskstats` counts 512-byte sectors whatever the device's real sector size.
const SECTOR_BYTES: u64 = 512;

pub fn collect(root: &Path, file: &mut PseudoFile, out: &mut Vec<DiskIo>) -> Result<(), ReadError> {
    let bytes = file.read_in(root, "proc/diskstats")?;
    parse(bytes, out);
    Ok(())
}

pub fn parse(text_in: &[u8], out: &mut Vec<DiskIo>) {
    out.clear();
    for line in lines(text_in) {
        let mut f = fields(line).skip(2);
        let Some(name) = f.next() else { continue };
        if !is_whole_disk(name) {
            continue;
        }
        // reads merged sectors ms | writes merged sectors ms | in-flight io_ms weighted_ms
        // (then discards and flushes on newer kernels). Every kernel since 2.6 has the
        // first 11; a shorter or unparsable line is left out rather than zero-filled.
        let mut v = [0u64; 11];
        let mut n = 0;
        for (slot, field) in v.iter_mut().zip(&mut f) {
            let Some(x) = parse_u64(field) else { break };
            *slot = x;
            n += 1;
        }
        if n < v.len() {
            continue;
        }
        let (Some(read_bytes), Some(written_bytes)) = (
            v[2].checked_mul(SECTOR_BYTES),
            v[6].checked_mul(SECTOR_BYTES),
        ) else {
            continue;
        };
        let ms = |x: u64| x as f64 / 1000.0;
        out.push(DiskIo {
            device: text(name),
            reads: v[0],
            read_bytes,
            writes: v[4],
            written_bytes,
            io_time_seconds: ms(v[9]),
            read_time_seconds: Some(ms(v[3])),
            write_time_seconds: Some(ms(v[7])),
            io_time_weighted_seconds: Some(ms(v[10])),
            io_in_progress: Some(v[8]),
        });
    }
}

/// Whole devices only: not `loopN`, `ramN`, floppies, optical drives, nor partitions
/// such as `mmcblk0p2`, `sda1`, `nvme0n1p1`, `vda1`. `zramN` is kept: a Pi swaps there.
pub fn is_whole_disk(name: &[u8]) -> bool {
    let starts = |p: &[u8]| name.starts_with(p);
    if starts(b"loop") || starts(b"ram") || starts(b"fd") || starts(b"sr") {
        return false;
    }
    let digits_tail = |prefix_end: usize| {
        name.len() > prefix_end && name[prefix_end..].iter().all(u8::is_ascii_digit)
    };
    // mmcblk0p1, nvme0n1p1: a `p<digits>` after a digit
    if starts(b"mmcblk") || starts(b"nvme") {
        if let Some(p) = name.iter().rposition(|&c| c == b'p') {
            if p > 0 && name[p - 1].is_ascii_digit() && digits_tail(p + 1) {
                return false;
            }
        }
        return true;
    }
    // sda1, vdb2, hda3, xvda1: letters then digits
    for prefix in [&b"sd"[..], b"vd", b"hd", b"xvd"] {
        if starts(prefix) {
            let letters_end = prefix.len()
                + name[prefix.len()..]
                    .iter()
                    .take_while(|c| c.is_ascii_lowercase())
                    .count();
            return !digits_tail(letters_end);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_disks_only() {
        for yes in ["mmcblk0", "sda", "vda", "nvme0n1", "dm-0", "zram0", "md0"] {
            assert!(is_whole_disk(yes.as_bytes()), "{yes}");
        }
        for no in [
            "mmcblk0p2",
            "sda1",
            "vdb12",
            "nvme0n1p1",
            "loop3",
            "ram0",
            "xvda1",
        ] {
            assert!(!is_whole_disk(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn sectors_become_bytes() {
        let mut out = Vec::new();
        parse(b" 179       0 mmcblk0 4000 100 80000 3000 2000 50 160000 9000 0 12345 20000 0 0 0 0\n 179       1 mmcblk0p1 10 0 20 0 0 0 0 0 0 1 0\n", &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].device, "mmcblk0");
        assert_eq!(out[0].read_bytes, 80000 * 512);
        assert_eq!(out[0].written_bytes, 160000 * 512);
        assert_eq!(out[0].writes, 2000);
        assert_eq!(out[0].io_time_seconds, 12.345);
        assert_eq!(out[0].read_time_seconds, Some(3.0));
        assert_eq!(out[0].write_time_seconds, Some(9.0));
        assert_eq!(out[0].io_time_weighted_seconds, Some(20.0));
        assert_eq!(out[0].io_in_progress, Some(0));
    }

    #[test]
    fn short_or_garbled_lines_are_left_out_not_zero_filled() {
        let mut out = Vec::new();
        parse(b" 179 0 mmcblk0 4000 100 80000\n 8 0 sda 1 2 x 4 5 6 7 8 9 10 11\n 8 16 sdb 1 0 36028797018963968 0 0 0 0 0 0 0 0\n", &mut out);
        assert!(out.is_empty(), "{out:?}");
    }
}

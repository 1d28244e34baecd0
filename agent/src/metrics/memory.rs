//! `/proc/meminfo` (memory and swap, MemAvailable included) and the kernel's OOM-kill
//! counter from `/proc/vmstat`.

use std::path::Path;

use protocol::snapshot::Memory;

use super::pseudofile::{fields, keyed_u64, lines, parse_u64, PseudoFile, ReadError};

pub fn collect(root: &Path, file: &mut PseudoFile) -> Result<Memory, ReadError> {
    let bytes = file.read_in(root, "proc/meminfo")?;
    match parse(bytes) {
        Some(m) => Ok(m),
        None => Err(ReadError::parse(file.last_path(), "no MemTotal line")),
    }
}

/// Parses `/proc/meminfo` (values in kB); `None` without a MemTotal line.
pub fn parse(text: &[u8]) -> Option<Memory> {
    let mut m = Memory::default();
    let mut saw_total = false;
    for line in lines(text) {
        let mut f = fields(line);
        let (Some(key), Some(value)) = (f.next(), f.next().and_then(parse_u64)) else {
            continue;
        };
        let bytes = value * 1024;
        match key {
            b"MemTotal:" => {
                m.total_bytes = bytes;
                saw_total = true
            }
            b"MemFree:" => m.free_bytes = bytes,
            b"MemAvailable:" => m.available_bytes = Some(bytes),
            b"Buffers:" => m.buffers_bytes = bytes,
            b"Cached:" => m.cached_bytes = bytes,
            b"SwapTotal:" => m.swap_total_bytes = bytes,
            b"SwapFree:" => m.swap_free_bytes = bytes,
            _ => {}
        }
    }
    saw_total.then_some(m)
}

/// OOM kills since boot (`oom_kill` in `/proc/vmstat`, kernels 4.13+).
pub fn collect_oom_kills(root: &Path, file: &mut PseudoFile) -> Result<Option<u64>, ReadError> {
    let bytes = file.read_in(root, "proc/vmstat")?;
    Ok(keyed_u64(bytes, b"oom_kill"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kilobytes_into_bytes() {
        let m = parse(b"MemTotal:        1000 kB\nMemFree:  200 kB\nMemAvailable: 600 kB\nBuffers: 10 kB\nCached: 300 kB\nSwapCached: 1 kB\nSwapTotal: 50 kB\nSwapFree: 40 kB\n").unwrap();
        assert_eq!(m.total_bytes, 1_024_000);
        assert_eq!(m.available_bytes, Some(614_400));
        assert_eq!(m.cached_bytes, 307_200);
        assert_eq!(m.swap_free_bytes, 40_960);
    }

    #[test]
    fn old_kernels_without_memavailable_leave_it_absent() {
        let m = parse(b"MemTotal: 1000 kB\nMemFree: 200 kB\n").unwrap();
        assert_eq!(m.available_bytes, None);
        assert!(parse(b"garbage\n").is_none());
    }
}

//! `/proc/meminfo` (memory and swap, MemAvailable, and the lines that explain where a
//! small board's RAM went: shmem, slab, dirty, writeback, page tables, ...) and the
//! kernel's OOM-kill counter from `/proc/vmstat` (absent before 4.13, never zero).

use std::path::Path;

use protocol::snapshot::Memory;

use super::pseudofile::{fields, keyed_u64, lines, parse_u64, PseudoFile, ReadError};

pub fn collect(root: &Path, file: &mut PseudoFile) -> Result<Memory, ReadError> {
    let bytes = file.read_record(root, "proc/meminfo")?;
    match parse(bytes) {
        Some(m) => Ok(m),
        None => Err(ReadError::parse(file.last_path(), "no MemTotal line")),
    }
}

/// Parses `/proc/meminfo` (values in kB); `None` without a MemTotal line. A line whose
/// value overflows when turned into bytes is skipped (absent), never wrapped.
pub fn parse(text: &[u8]) -> Option<Memory> {
    let mut m = Memory::default();
    let mut saw_total = false;
    for line in lines(text) {
        let mut f = fields(line);
        let (Some(key), Some(value)) = (f.next(), f.next().and_then(parse_u64)) else {
            continue;
        };
        let Some(bytes) = value.checked_mul(1024) else {
            continue;
        };
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
            b"SwapCached:" => m.swap_cached_bytes = Some(bytes),
            b"Active:" => m.active_bytes = Some(bytes),
            b"Inactive:" => m.inactive_bytes = Some(bytes),
            b"Dirty:" => m.dirty_bytes = Some(bytes),
            b"Writeback:" => m.writeback_bytes = Some(bytes),
            b"AnonPages:" => m.anon_bytes = Some(bytes),
            b"Mapped:" => m.mapped_bytes = Some(bytes),
            b"Shmem:" => m.shmem_bytes = Some(bytes),
            b"Slab:" => m.slab_bytes = Some(bytes),
            b"SReclaimable:" => m.slab_reclaimable_bytes = Some(bytes),
            b"SUnreclaim:" => m.slab_unreclaimable_bytes = Some(bytes),
            b"KernelStack:" => m.kernel_stack_bytes = Some(bytes),
            b"PageTables:" => m.page_tables_bytes = Some(bytes),
            b"CommitLimit:" => m.commit_limit_bytes = Some(bytes),
            b"Committed_AS:" => m.committed_bytes = Some(bytes),
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
    fn wider_meminfo_lines_are_read_and_missing_ones_stay_absent() {
        let m = parse(b"MemTotal: 1000 kB\nShmem: 7 kB\nSlab: 20 kB\nSReclaimable: 15 kB\nSUnreclaim: 5 kB\nDirty: 3 kB\nWriteback: 0 kB\nCommitted_AS: 900 kB\n").unwrap();
        assert_eq!(m.shmem_bytes, Some(7 * 1024));
        assert_eq!(m.slab_bytes, Some(20 * 1024));
        assert_eq!(m.slab_unreclaimable_bytes, Some(5 * 1024));
        assert_eq!(m.writeback_bytes, Some(0), "a real zero stays a zero");
        assert_eq!(m.committed_bytes, Some(900 * 1024));
        assert_eq!(m.page_tables_bytes, None, "no PageTables line: absent");
    }

    #[test]
    fn kilobytes_that_overflow_bytes_are_skipped() {
        let m = parse(b"MemTotal: 1000 kB\nShmem: 18446744073709551615 kB\n").unwrap();
        assert_eq!(m.shmem_bytes, None);
    }

    #[test]
    fn old_kernels_without_memavailable_leave_it_absent() {
        let m = parse(b"MemTotal: 1000 kB\nMemFree: 200 kB\n").unwrap();
        assert_eq!(m.available_bytes, None);
        assert!(parse(b"garbage\n").is_none());
    }
}

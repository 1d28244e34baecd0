//! Process count: the numeric entries of `/proc` (one `getdents` pass, no file reads).
//! Threads come from `/proc/loadavg` (see `load`), so neither walks every process.

use std::fs;
use std::path::Path;

use super::pseudofile::ReadError;

pub fn count(root: &Path) -> Result<u64, ReadError> {
    let proc_dir = root.join("proc");
    let entries = fs::read_dir(&proc_dir).map_err(|source| ReadError::Io {
        path: proc_dir,
        source,
    })?;
    Ok(entries
        .filter_map(Result::ok)
        .filter(|e| is_pid(e.file_name().as_encoded_bytes()))
        .count() as u64)
}

fn is_pid(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_numeric_entries_are_processes() {
        assert!(is_pid(b"1234"));
        assert!(!is_pid(b"self"));
        assert!(!is_pid(b""));
    }
}

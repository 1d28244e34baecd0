//! `/proc/loadavg` (load averages and the kernel's count of threads) and `/proc/uptime`.

use std::path::Path;

use protocol::snapshot::LoadAverage;

use super::pseudofile::{fields, parse_f64, parse_u64, PseudoFile, ReadError};

/// Load averages and the number of scheduling entities (threads) in the system.
#[derive(Debug, PartialEq)]
pub struct Load {
    pub average: LoadAverage,
    pub threads: Option<u64>,
}

pub fn collect(root: &Path, file: &mut PseudoFile) -> Result<Load, ReadError> {
    let bytes = file.read_record(root, "proc/loadavg")?;
    match parse(bytes) {
        Some(l) => Ok(l),
        None => Err(ReadError::parse(
            file.last_path(),
            "expected three load averages",
        )),
    }
}

/// Parses `0.52 0.58 0.59 3/1234 5678`.
pub fn parse(text: &[u8]) -> Option<Load> {
    let mut f = fields(text);
    let one = parse_f64(f.next()?)?;
    let five = parse_f64(f.next()?)?;
    let fifteen = parse_f64(f.next()?)?;
    let threads = f
        .next()
        .and_then(|rt| rt.split(|&c| c == b'/').nth(1))
        .and_then(parse_u64);
    Some(Load {
        average: LoadAverage { one, five, fifteen },
        threads,
    })
}

/// Seconds since boot, the first field of `/proc/uptime`.
pub fn collect_uptime(root: &Path, file: &mut PseudoFile) -> Result<f64, ReadError> {
    let bytes = file.read_record(root, "proc/uptime")?;
    let seconds = fields(bytes).next().and_then(parse_f64);
    match seconds {
        Some(v) => Ok(v),
        None => Err(ReadError::parse(file.last_path(), "expected seconds")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_averages_and_thread_count() {
        let l = parse(b"0.52 0.58 1.59 3/1234 5678\n").unwrap();
        assert_eq!(l.average.fifteen, 1.59);
        assert_eq!(l.threads, Some(1234));
        assert!(parse(b"0.5\n").is_none());
    }
}

//! Pending package updates: `/var/lib/armada/pending-updates`, one `package version`
//! per line, written by the image's update timer. No file means the timer never ran:
//! the family is absent (not "0 updates").

use std::path::Path;
use std::time::UNIX_EPOCH;

use protocol::snapshot::PendingUpdates;

use super::pseudofile::{fields, lines, text, PseudoFile, ReadError};

/// Where the timer writes its list, relative to the root.
pub const PENDING_UPDATES: &str = "var/lib/armada/pending-updates";
/// Packages named one by one; beyond that only the count (a fresh image can lag by
/// hundreds, and each is a series).
pub const MAX_LISTED: usize = 200;

pub fn collect(root: &Path, file: &mut PseudoFile) -> Result<Option<PendingUpdates>, ReadError> {
    let bytes = match file.read_in(root, PENDING_UPDATES) {
        Ok(b) => b,
        Err(e) if e.is_missing() => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut u = parse(bytes);
    u.checked_at_seconds = std::fs::metadata(root.join(PENDING_UPDATES))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64());
    Ok(Some(u))
}

/// Parses the list; a line without a version counts, with version `unknown`. Blank
/// lines and `#` comments are skipped.
pub fn parse(b: &[u8]) -> PendingUpdates {
    let mut u = PendingUpdates::default();
    for line in lines(b) {
        let mut f = fields(line);
        let Some(package) = f.next() else { continue };
        if package.starts_with(b"#") {
            continue;
        }
        u.count = u.count.saturating_add(1);
        if u.packages.len() < MAX_LISTED {
            let version = f.next().map(text).unwrap_or_else(|| "unknown".into());
            u.packages.push((text(package), version));
        }
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_version_lines() {
        let u = parse(b"# written by armada-updates.timer\nlibc6 2.36-9+deb12u13\n\nopenssl 3.0.18-1~deb12u1\nodd\n");
        assert_eq!(u.count, 3);
        assert_eq!(u.packages[0], ("libc6".into(), "2.36-9+deb12u13".into()));
        assert_eq!(u.packages[2], ("odd".into(), "unknown".into()));
    }

    #[test]
    fn no_file_is_no_family_and_an_empty_file_is_zero() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = PseudoFile::new();
        assert_eq!(collect(dir.path(), &mut f).unwrap(), None);
        let at = dir.path().join(PENDING_UPDATES);
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::fs::write(&at, "").unwrap();
        let u = collect(dir.path(), &mut f).unwrap().expect("file present");
        assert_eq!(u.count, 0);
        assert!(u.checked_at_seconds.unwrap() > 1e9);
    }

    #[test]
    fn the_list_is_capped_but_counted() {
        let text: String = (0..500).map(|i| format!("p{i} 1.{i}\n")).collect();
        let u = parse(text.as_bytes());
        assert_eq!(u.count, 500);
        assert_eq!(u.packages.len(), MAX_LISTED);
    }
}

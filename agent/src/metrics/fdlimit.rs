//! How many pseudo-files the collector may keep open between cycles.
//!
//! With 200 containers a cycle reads about 3,000 cgroup and `/proc` files. Opening a
//! cgroup file walks kernfs and allocates its seq_file, which costs several times the
//! read itself, so every file should stay open. The usual soft RLIMIT_NOFILE is 1024
//! (systemd's default for services) while the hard limit is far higher; the soft
//! limit is raised toward the hard one once, and the collector may use half of what
//! results, leaving the rest for sockets, the Docker connection and the journal.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// The soft limit asked for: enough for about 1,000 containers' files plus headroom.
const WANTED_SOFT: u64 = 32 * 1024;
/// Never fewer than this many kept files, even with a limit of 1024 that cannot be raised.
const MIN_BUDGET: usize = 256;

/// Raises the soft RLIMIT_NOFILE toward `WANTED_SOFT` (bounded by the hard limit) and
/// returns how many files the collector may keep open. Failing to raise is not an
/// error: the budget follows the limit there is.
pub fn open_file_budget() -> usize {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return MIN_BUDGET;
    };
    let target = WANTED_SOFT.min(hard);
    let soft = if target > soft && setrlimit(Resource::RLIMIT_NOFILE, target, hard).is_ok() {
        target
    } else {
        soft
    };
    budget_for(soft)
}

/// Half the soft limit, at least `MIN_BUDGET`.
fn budget_for(soft: u64) -> usize {
    usize::try_from(soft / 2)
        .unwrap_or(usize::MAX)
        .max(MIN_BUDGET)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_half_the_soft_limit_with_a_floor() {
        assert_eq!(budget_for(1024), 512);
        assert_eq!(budget_for(32 * 1024), 16 * 1024);
        assert_eq!(budget_for(100), MIN_BUDGET);
    }

    #[test]
    fn raising_never_lowers_the_limit() {
        let (before, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let budget = open_file_budget();
        let (after, hard_after) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert!(after >= before, "soft limit went from {before} to {after}");
        assert_eq!(hard, hard_after, "the hard limit must not change");
        assert!(budget as u64 <= after.max(2 * MIN_BUDGET as u64));
        assert!(after >= WANTED_SOFT.min(hard) || after == before);
    }
}

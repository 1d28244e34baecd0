//! Giving memory back once the containers have gone.
//!
//! A board that ran a few hundred containers and then lost them (a drained node, a
//! stack removed) keeps the agent's high-water heap: the per-container records and the
//! engine's cache keep their capacity, and the allocator keeps the freed chunks of every
//! snapshot and report buffer in its arenas. Measured on the stress bench (330 containers
//! a node, x86 release agents): RSS 8.4 MiB before, 14.9 at the peak, 13.3 with no
//! container left. So when a cycle sees at most half the containers of the peak since
//! the last release, the collector shrinks what it keeps and asks the allocator to hand
//! its free pages back (glibc's `malloc_trim`; the boards' static build is glibc too).

/// Blocks this large or larger get their own mapping, given back when freed (glibc's
/// `M_MMAP_THRESHOLD`).
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
const MMAP_THRESHOLD: libc::c_int = 64 * 1024;

/// Fewer containers than this at the peak are not worth a release.
const MIN_PEAK: usize = 8;

/// Watches the container count cycle after cycle.
#[derive(Debug, Default)]
pub struct Release {
    peak: usize,
}

impl Release {
    /// Called once a cycle with the containers it found. True when the count fell to at
    /// most half of the peak since the last release (a peak of at least [`MIN_PEAK`]):
    /// then the caller shrinks what it keeps and calls [`trim`]. The peak starts again
    /// from this count.
    pub fn due(&mut self, containers: usize) -> bool {
        self.peak = self.peak.max(containers);
        if self.peak >= MIN_PEAK && containers.saturating_mul(2) <= self.peak {
            self.peak = containers;
            return true;
        }
        false
    }
}

/// Fixes the allocator's mmap threshold at [`MMAP_THRESHOLD`]. glibc starts at 128 KiB
/// and raises it to the size of each mapped block freed (up to 32 MiB): after the first
/// engine list or exposition of a few hundred KiB, every later buffer that size (the
/// exposition, the container list, the snapshot's containers) is carved from the heap,
/// and the copies left by its growth stay resident as holes. Fixed, they are mapped
/// and unmapped whole. Measured at 200 containers (1,000 cycles, three runs each, RSS at
/// the last): 7,792-7,996 KiB before, 7,672-7,688 KiB with 64 KiB. Idempotent.
pub fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt has no preconditions; an unknown or refused value is ignored.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Hands the allocator's free pages back to the kernel, in every arena.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only releases memory that is free.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_is_due_when_the_count_halves_from_a_peak_worth_it() {
        let mut r = Release::default();
        // Growing, then shrinking by less than half: nothing.
        for n in [0, 10, 100, 330, 300, 166] {
            assert!(!r.due(n), "{n} of a 330 peak");
        }
        // Half of 330 or fewer: due once, and the peak starts again from there.
        assert!(r.due(165));
        assert!(!r.due(100));
        assert!(r.due(82), "half of the new peak 165");
        assert!(!r.due(82));
    }

    #[test]
    fn a_small_peak_never_asks_for_a_release() {
        let mut r = Release::default();
        for n in [7, 0, 7, 1, 0] {
            assert!(!r.due(n), "{n}");
        }
        assert!(!r.due(8));
        assert!(r.due(4));
        // From a peak of 4 (below the minimum) nothing is due even at 0.
        assert!(!r.due(0));
    }

    #[test]
    fn a_drain_from_hundreds_releases_a_few_times_down_to_a_handful() {
        let mut r = Release::default();
        assert!(!r.due(330));
        let releases: Vec<usize> = (0..=330).rev().filter(|&n| r.due(n)).collect();
        assert_eq!(releases, vec![165, 82, 41, 20, 10, 5]);
    }

    #[test]
    fn trim_can_be_called_at_any_time() {
        let v: Vec<u8> = vec![1; 4 << 20];
        drop(v);
        trim();
        trim();
    }
}

//! The kernel clock discipline read with `adjtimex(2)` in read-only mode (no privilege
//! needed), like node_exporter's timex collector, and clock steps: the wall clock moving
//! against `CLOCK_BOOTTIME` between two cycles. Boards have no RTC; a step (by
//! `sync-clock`, an NTP client, an operator) moves every timestamp around it.

use protocol::snapshot::ClockState;

/// A jump of the wall clock against the boot clock larger than this is a step; NTP
/// slewing moves it at most 500 ppm, 5 ms in a 10 s interval.
const STEP_SECONDS: f64 = 0.5;

/// `STA_UNSYNC` of `struct timex` status: the clock is not synchronised.
const STA_UNSYNC: i32 = 0x0040;
/// `STA_NANO`: `offset` is in nanoseconds rather than microseconds.
const STA_NANO: i32 = 0x2000;

/// What lasts between cycles: the last wall-minus-boot difference, and steps seen.
#[derive(Default)]
pub struct StepWatch {
    last_wall_minus_boot: Option<f64>,
    steps: u64,
    last_step: Option<f64>,
}

impl StepWatch {
    /// Notes this cycle's wall-minus-boot difference; returns (steps, last step).
    pub fn observe(&mut self, wall_minus_boot: f64) -> (u64, Option<f64>) {
        if let Some(last) = self.last_wall_minus_boot {
            let jump = wall_minus_boot - last;
            if jump.abs() > STEP_SECONDS {
                self.steps = self.steps.saturating_add(1);
                self.last_step = Some(jump);
            }
        }
        self.last_wall_minus_boot = Some(wall_minus_boot);
        (self.steps, self.last_step)
    }
}

/// The raw fields of `struct timex` this module uses.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timex {
    pub status: i32,
    pub offset: i64,
    pub freq: i64,
    pub maxerror: i64,
    pub esterror: i64,
}

/// Reads the kernel's clock state; `None` if the call fails (seccomp, old libc).
pub fn read() -> Option<Timex> {
    // SAFETY: a zeroed timex with modes 0 asks for nothing to be set; the kernel only
    // writes into the struct we own.
    let mut t: libc::timex = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::adjtimex(&mut t) };
    if rc < 0 {
        return None;
    }
    Some(Timex {
        status: t.status,
        offset: t.offset as i64,
        freq: t.freq as i64,
        maxerror: t.maxerror as i64,
        esterror: t.esterror as i64,
    })
}

/// Wall clock minus boot clock, in seconds; `None` if either clock cannot be read.
pub fn wall_minus_boot() -> Option<f64> {
    let now = |id| nix::time::clock_gettime(id).ok();
    let wall = now(nix::time::ClockId::CLOCK_REALTIME)?;
    let boot = now(nix::time::ClockId::CLOCK_BOOTTIME)?;
    let secs = |t: nix::sys::time::TimeSpec| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9;
    Some(secs(wall) - secs(boot))
}

/// The snapshot's clock state from raw `adjtimex` fields and the steps seen.
pub fn decode(t: Timex, steps: (u64, Option<f64>)) -> ClockState {
    let offset_unit = if t.status & STA_NANO != 0 { 1e9 } else { 1e6 };
    ClockState {
        synced: t.status & STA_UNSYNC == 0,
        offset_seconds: t.offset as f64 / offset_unit,
        max_error_seconds: t.maxerror as f64 / 1e6,
        estimated_error_seconds: t.esterror as f64 / 1e6,
        // freq is ppm with a 16-bit fraction.
        frequency_adjustment_ratio: t.freq as f64 / 65536.0 / 1e6,
        status: i64::from(t.status),
        steps_total: steps.0,
        last_step_seconds: steps.1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsync_bit_and_units() {
        let c = decode(
            Timex {
                status: STA_UNSYNC,
                offset: 1500,
                freq: 65536 * 12,
                maxerror: 16_000_000,
                esterror: 250,
            },
            (0, None),
        );
        assert!(!c.synced);
        assert_eq!(c.offset_seconds, 0.0015, "µs without STA_NANO");
        assert_eq!(c.max_error_seconds, 16.0);
        assert!((c.frequency_adjustment_ratio - 12e-6).abs() < 1e-15);
        let n = decode(
            Timex {
                status: STA_NANO,
                offset: 1500,
                ..Default::default()
            },
            (0, None),
        );
        assert!(n.synced);
        assert_eq!(n.offset_seconds, 1.5e-6);
    }

    #[test]
    fn steps_are_jumps_of_wall_against_boot_clock() {
        let mut w = StepWatch::default();
        assert_eq!(w.observe(1000.0), (0, None));
        assert_eq!(w.observe(1000.004), (0, None), "slewing is not a step");
        assert_eq!(w.observe(4600.0), (1, Some(3599.996)));
        let (n, last) = w.observe(4599.0);
        assert_eq!(n, 2);
        assert!(
            (last.unwrap() + 1.0).abs() < 1e-9,
            "backwards steps count too"
        );
    }

    #[test]
    fn this_kernel_answers_adjtimex() {
        let t = read().expect("adjtimex in read-only mode needs no privilege");
        assert!(t.maxerror >= 0);
        assert!(wall_minus_boot().unwrap() > 1e9, "wall clock is after 2001");
    }
}

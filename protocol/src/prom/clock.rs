//! The kernel clock discipline from `adjtimex` (node_timex_*) and clock steps the agent
//! saw: boards have no RTC, so a clock that jumps is worth seeing.

use super::{b, Kind::*, Renderer};

pub(super) fn render(r: &mut Renderer<'_, '_>) {
    r.family(
        "armada_clock_synced",
        Gauge,
        "Kernel clock synchronised by an NTP client (STA_UNSYNC clear): 1, else 0.",
        |s, e| e.opt(&[], s.host.clock.as_ref().map(|c| b(c.synced))),
    );
    r.family(
        "armada_clock_offset_seconds",
        Gauge,
        "Offset the kernel is still slewing away (adjtimex offset).",
        |s, e| e.opt(&[], s.host.clock.as_ref().map(|c| c.offset_seconds)),
    );
    r.family(
        "armada_clock_max_error_seconds",
        Gauge,
        "Maximum error of the clock (adjtimex maxerror).",
        |s, e| e.opt(&[], s.host.clock.as_ref().map(|c| c.max_error_seconds)),
    );
    r.family(
        "armada_clock_estimated_error_seconds",
        Gauge,
        "Estimated error of the clock (adjtimex esterror).",
        |s, e| {
            e.opt(
                &[],
                s.host.clock.as_ref().map(|c| c.estimated_error_seconds),
            )
        },
    );
    r.family(
        "armada_clock_frequency_adjustment_ratio",
        Gauge,
        "Frequency correction applied to the clock, as a ratio.",
        |s, e| {
            e.opt(
                &[],
                s.host.clock.as_ref().map(|c| c.frequency_adjustment_ratio),
            )
        },
    );
    r.family(
        "armada_clock_status",
        Gauge,
        "Raw status bits of the kernel clock (struct timex status).",
        |s, e| e.opt(&[], s.host.clock.as_ref().map(|c| c.status as f64)),
    );
    r.family(
        "armada_clock_steps_total",
        Counter,
        "Wall-clock jumps of more than 0.5 s seen since the agent started.",
        |s, e| e.opt(&[], s.host.clock.as_ref().map(|c| c.steps_total as f64)),
    );
    r.family(
        "armada_clock_last_step_seconds",
        Gauge,
        "Size of the last wall-clock jump seen (negative: backwards).",
        |s, e| e.opt(&[], s.host.clock.as_ref().and_then(|c| c.last_step_seconds)),
    );
}

//! `armada_cpu_seconds_total`: CPU time per core and mode (node_cpu_seconds_total).

use std::fmt::Write;

use super::{Kind::Counter, Renderer};

pub(super) fn render(r: &mut Renderer<'_, '_>) {
    let mut num = String::new();
    r.family(
        "armada_cpu_seconds_total",
        Counter,
        "CPU time spent per core and mode.",
        |s, e| {
            for c in s.host.cpu.iter() {
                let Some(n) = c.cpu else { continue };
                num.clear();
                let _ = write!(num, "{n}");
                for (mode, v) in [
                    ("user", c.user),
                    ("nice", c.nice),
                    ("system", c.system),
                    ("idle", c.idle),
                    ("iowait", c.iowait),
                    ("irq", c.irq),
                    ("softirq", c.softirq),
                    ("steal", c.steal),
                ] {
                    e.sample(&[("cpu", &num), ("mode", mode)], v);
                }
            }
        },
    );
}

//! Pressure stall information (`/proc/pressure/{cpu,memory,io}`, kernels 4.20+ built
//! with PSI). Averages are converted from percent to ratios, totals from µs to seconds.

use std::path::Path;

use protocol::snapshot::Pressure;

use super::pseudofile::{fields, lines, parse_f64, parse_u64, PseudoFile, ReadError};

pub const RESOURCES: [&str; 3] = ["cpu", "memory", "io"];

/// Reads every resource the kernel has into `out`. A kernel without PSI has no
/// `/proc/pressure`: that is `Ok` with nothing added.
pub fn collect(
    root: &Path,
    file: &mut PseudoFile,
    out: &mut Vec<Pressure>,
) -> Result<(), ReadError> {
    out.clear();
    let dir = root.join("proc/pressure");
    for resource in RESOURCES {
        match file.read_record(&dir, resource) {
            Ok(bytes) => {
                if let Some(p) = parse(resource, bytes) {
                    out.push(p);
                }
            }
            // PSI compiled in but disabled (psi=0) answers EOPNOTSUPP: absent, not a fault.
            Err(e) if e.is_missing() || e.is_unsupported() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Parses `some avg10=0.00 avg60=0.00 avg300=0.00 total=0` and the optional `full` line.
pub fn parse(resource: &str, text: &[u8]) -> Option<Pressure> {
    let mut p = Pressure {
        resource: resource.to_string(),
        ..Default::default()
    };
    let mut saw_some = false;
    for line in lines(text) {
        let mut f = fields(line);
        let kind = f.next()?;
        let (mut a10, mut a60, mut a300, mut total) = (None, None, None, None);
        for kv in f {
            let Some(eq) = kv.iter().position(|&c| c == b'=') else {
                continue;
            };
            let (k, v) = (&kv[..eq], &kv[eq + 1..]);
            match k {
                b"avg10" => a10 = parse_f64(v).map(percent_to_ratio),
                b"avg60" => a60 = parse_f64(v).map(percent_to_ratio),
                b"avg300" => a300 = parse_f64(v).map(percent_to_ratio),
                b"total" => total = parse_u64(v).map(|us| us as f64 / 1e6),
                _ => {}
            }
        }
        match kind {
            b"some" => {
                saw_some = true;
                p.some_avg10 = a10.unwrap_or(0.0);
                p.some_avg60 = a60.unwrap_or(0.0);
                p.some_avg300 = a300.unwrap_or(0.0);
                p.some_total_seconds = total.unwrap_or(0.0);
            }
            b"full" => {
                p.full_avg10 = a10;
                p.full_avg60 = a60;
                p.full_avg300 = a300;
                p.full_total_seconds = total;
            }
            _ => {}
        }
    }
    saw_some.then_some(p)
}

/// `86.55` (percent, two decimals) to `0.8655` without binary noise in the output.
fn percent_to_ratio(percent: f64) -> f64 {
    (percent * 100.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_some_and_full_lines() {
        let p = parse(
            "memory",
            b"some avg10=1.50 avg60=0.25 avg300=0.00 total=2500000\nfull avg10=0.50 avg60=0.00 avg300=0.00 total=1000000\n",
        )
        .unwrap();
        assert_eq!(p.some_avg10, 0.015);
        assert_eq!(p.some_total_seconds, 2.5);
        assert_eq!(p.full_total_seconds, Some(1.0));
        assert_eq!(p.full_avg10, Some(0.005));
    }

    #[test]
    fn cpu_pressure_on_old_kernels_has_no_full_line() {
        let p = parse("cpu", b"some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n").unwrap();
        assert_eq!(p.full_total_seconds, None);
    }
}

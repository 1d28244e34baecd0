//! Prometheus text exposition (format 0.0.4) of snapshots.
//!
//! One function serves both the agent's `/metrics` (one snapshot, no extra labels) and
//! the manager's federation (every node's latest snapshot, each with `node`/`hostname`
//! labels): families are written once each, with their HELP and TYPE lines, and the
//! samples of every snapshot below them. A family no snapshot has is left out.
//!
//! Names follow Prometheus conventions: `armada_` prefix, base units (seconds, bytes,
//! celsius, volts, hertz, ratios), `_total` on counters, labels for dimensions. Each
//! family's node_exporter or cAdvisor equivalent is listed in `agent/METRICS.md`.
//!
//! Layout (one module per family, like the agent's collectors):
//! - this file: the renderer (HELP/TYPE once per family, label escaping, values).
//! - `cpu`, `system` (load, uptime, processes, kernel counters), `memory`, `pressure`,
//!   `disk`, `filesystem`, `network` (counters and link state), `clock`.
//! - `containers`: per-container CPU, memory, IO, pids, network and PSI.
//! - `board`: thermal zones, hwmon, Raspberry Pi flags, cpufreq, cooling, cgroup, ext4.
//! - `agent`: the collection itself (warnings, per-collector duration and success) and
//!   pending package updates.

use std::fmt::Write;

mod agent;
mod board;
mod clock;
mod containers;
mod cpu;
mod disk;
mod filesystem;
mod memory;
mod network;
mod pressure;
mod system;

use crate::snapshot::Snapshot;

/// A snapshot and the labels to put on each of its samples.
pub struct LabelledSnapshot<'a> {
    pub labels: &'a [(&'a str, &'a str)],
    pub snapshot: &'a Snapshot,
}

/// Appends the exposition of `snapshots` to `out`.
pub fn render(snapshots: &[LabelledSnapshot<'_>], out: &mut String) {
    render_families(&mut Renderer {
        out,
        snapshots,
        flush: None,
    });
}

/// Like [`render`], but hands `out` to `flush` whenever it holds `chunk` bytes or more
/// at a snapshot boundary (and once at the end), so that a federation of thousands of
/// nodes is sent while it is rendered instead of being built whole in memory: `flush`
/// takes what it wants out of the string (e.g. `std::mem::take`) and leaves the rest.
/// The concatenation of what `flush` is given equals what [`render`] writes.
pub fn render_chunked(
    snapshots: &[LabelledSnapshot<'_>],
    out: &mut String,
    chunk: usize,
    flush: &mut dyn FnMut(&mut String),
) {
    let mut r = Renderer {
        out,
        snapshots,
        flush: Some((chunk, flush)),
    };
    render_families(&mut r);
    if let Some((_, f)) = r.flush {
        if !r.out.is_empty() {
            f(r.out);
        }
    }
}

fn render_families(r: &mut Renderer<'_, '_>) {
    cpu::render(r);
    system::render_load(r);
    memory::render(r);
    pressure::render(r);
    disk::render(r);
    filesystem::render(r);
    network::render(r);
    system::render(r);
    memory::render_oom(r);
    clock::render(r);
    containers::render(r);
    board::render(r);
    agent::render(r);
}

pub(crate) enum Kind {
    Counter,
    Gauge,
}

pub(crate) struct Renderer<'o, 's> {
    out: &'o mut String,
    snapshots: &'s [LabelledSnapshot<'s>],
    /// Chunk size and where full chunks go ([`render_chunked`]).
    flush: Option<(usize, Flush<'o>)>,
}

/// Where [`render_chunked`] hands its full chunks.
type Flush<'o> = &'o mut dyn FnMut(&mut String);

/// Writes the samples of one family for one snapshot.
pub(crate) struct Samples<'a> {
    out: &'a mut String,
    name: &'static str,
    base: &'a [(&'a str, &'a str)],
    wrote: bool,
}

impl Samples<'_> {
    pub(crate) fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        self.sample_after("", labels, value);
    }

    pub(crate) fn opt(&mut self, labels: &[(&str, &str)], value: Option<f64>) {
        if let Some(v) = value {
            self.sample(labels, v);
        }
    }

    /// Like [`sample`](Self::sample), with labels already written out by
    /// [`write_labels`] (`written`) between the snapshot's labels and `labels`.
    pub(crate) fn sample_after(&mut self, written: &str, labels: &[(&str, &str)], value: f64) {
        self.wrote = true;
        let out = &mut *self.out;
        out.push_str(self.name);
        let mut first = true;
        for (k, v) in self.base {
            push_label(out, &mut first, k, v);
        }
        if !written.is_empty() {
            out.push(if first { '{' } else { ',' });
            first = false;
            out.push_str(written);
        }
        for (k, v) in labels {
            push_label(out, &mut first, k, v);
        }
        if !first {
            out.push('}');
        }
        out.push(' ');
        write_value(out, value);
        out.push('\n');
    }

    pub(crate) fn opt_after(&mut self, written: &str, labels: &[(&str, &str)], value: Option<f64>) {
        if let Some(v) = value {
            self.sample_after(written, labels, v);
        }
    }
}

/// `k="v"` pairs, escaped and comma-separated, for [`Samples::sample_after`]: labels
/// that many samples share (a container's id, name and image) are escaped once.
pub(crate) fn write_labels(out: &mut String, labels: &[(&str, &str)]) {
    let mut first = true;
    for (k, v) in labels {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        escape_label(out, v);
        out.push('"');
    }
}

/// One `k="v"`, opening the braces before the first.
fn push_label(out: &mut String, first: &mut bool, k: &str, v: &str) {
    out.push(if *first { '{' } else { ',' });
    *first = false;
    out.push_str(k);
    out.push_str("=\"");
    escape_label(out, v);
    out.push('"');
}

impl Renderer<'_, '_> {
    /// One family: header, then each snapshot's samples; dropped when none wrote any.
    pub(crate) fn family(
        &mut self,
        name: &'static str,
        kind: Kind,
        help: &str,
        mut each: impl FnMut(&Snapshot, &mut Samples<'_>),
    ) {
        self.family_indexed(name, kind, help, |_, s, e| each(s, e));
    }

    /// Like [`family`](Self::family), also giving each snapshot's index in the
    /// rendered list (to find what was prepared for it).
    pub(crate) fn family_indexed(
        &mut self,
        name: &'static str,
        kind: Kind,
        help: &str,
        mut each: impl FnMut(usize, &Snapshot, &mut Samples<'_>),
    ) {
        let start = self.out.len();
        let kind = match kind {
            Kind::Counter => " counter\n",
            Kind::Gauge => " gauge\n",
        };
        // Pushed piece by piece, without the formatting machinery of `write!`.
        for piece in ["# HELP ", name, " "] {
            self.out.push_str(piece);
        }
        escape_help(self.out, help);
        for piece in ["\n# TYPE ", name, kind] {
            self.out.push_str(piece);
        }
        let mut any = false;
        for (i, ls) in self.snapshots.iter().enumerate() {
            let mut s = Samples {
                out: self.out,
                name,
                base: ls.labels,
                wrote: false,
            };
            each(i, ls.snapshot, &mut s);
            any |= s.wrote;
            // Only once the family has a sample: its header is then kept for sure, and
            // the truncation below never reaches into a flushed chunk.
            if any {
                if let Some((chunk, flush)) = self.flush.as_mut() {
                    if self.out.len() >= *chunk {
                        flush(self.out);
                    }
                }
            }
        }
        if !any {
            self.out.truncate(start);
        }
    }
}

fn escape_label(out: &mut String, v: &str) {
    // Almost every value (ids, names, images) has nothing to escape: copied whole
    // instead of a push per char. `contains` on bytes is core's word-at-a-time memchr,
    // several times cheaper than a byte loop at opt-level "s".
    let b = v.as_bytes();
    if !b.contains(&b'\\') && !b.contains(&b'"') && !b.contains(&b'\n') {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(out: &mut String, v: &str) {
    let b = v.as_bytes();
    if !b.contains(&b'\\') && !b.contains(&b'\n') {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        write_integer(out, v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

/// `n` in decimal, as `{}` writes it, without the formatting machinery (most samples
/// are integers: bytes, counts, ticks).
fn write_integer(out: &mut String, n: i64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        out.push('-');
    }
    out.extend(digits[at..].iter().map(|&d| char::from(d)));
}

pub(crate) fn b(v: bool) -> f64 {
    if v {
        1.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::*;

    fn sample() -> Snapshot {
        Snapshot {
            hostname: "pi-1".into(),
            host: HostMetrics {
                cpu: vec![
                    CpuTimes {
                        cpu: None,
                        user: 3.0,
                        ..Default::default()
                    },
                    CpuTimes {
                        cpu: Some(0),
                        user: 1.5,
                        idle: 10.0,
                        ..Default::default()
                    },
                ],
                memory: Some(Memory {
                    total_bytes: 1 << 30,
                    available_bytes: None,
                    ..Default::default()
                }),
                ..Default::default()
            },
            containers: vec![ContainerMetrics {
                id: "abc".into(),
                name: "we\"ird\\name".into(),
                image: "busybox".into(),
                service: Some("web".into()),
                cpu: Some(ContainerCpu {
                    usage_seconds: 2.25,
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn families_appear_once_with_node_labels_per_snapshot() {
        let (a, b) = (sample(), sample());
        let mut out = String::new();
        render(
            &[
                LabelledSnapshot {
                    labels: &[("node", "n1")],
                    snapshot: &a,
                },
                LabelledSnapshot {
                    labels: &[("node", "n2")],
                    snapshot: &b,
                },
            ],
            &mut out,
        );
        assert_eq!(
            out.matches("# TYPE armada_cpu_seconds_total counter")
                .count(),
            1
        );
        assert!(
            out.contains("armada_cpu_seconds_total{node=\"n1\",cpu=\"0\",mode=\"user\"} 1.5\n"),
            "{out}"
        );
        assert!(out.contains("armada_cpu_seconds_total{node=\"n2\",cpu=\"0\",mode=\"idle\"} 10\n"));
        assert!(out.contains("armada_memory_total_bytes{node=\"n1\"} 1073741824\n"));
        assert!(
            !out.contains("armada_memory_available_bytes"),
            "absent values leave the family out"
        );
        assert!(out.contains(
            "armada_container_cpu_usage_seconds_total{node=\"n2\",container_id=\"abc\",container=\"we\\\"ird\\\\name\",image=\"busybox\",service=\"web\"} 2.25\n"
        ), "{out}");
        assert!(!out.contains("armada_thermal_zone_celsius"));
    }

    #[test]
    fn chunked_output_equals_the_whole_render_and_respects_the_chunk_size() {
        let snaps: Vec<Snapshot> = (0..40).map(|_| sample()).collect();
        let ids: Vec<String> = (0..40).map(|i| format!("n{i}")).collect();
        let labels: Vec<[(&str, &str); 1]> = ids.iter().map(|i| [("node", i.as_str())]).collect();
        let labelled: Vec<LabelledSnapshot<'_>> = snaps
            .iter()
            .zip(&labels)
            .map(|(s, l)| LabelledSnapshot {
                labels: l,
                snapshot: s,
            })
            .collect();
        let mut whole = String::new();
        render(&labelled, &mut whole);
        for chunk in [1, 500, 4096, 1 << 30] {
            let mut parts: Vec<String> = Vec::new();
            let mut out = String::new();
            render_chunked(&labelled, &mut out, chunk, &mut |o: &mut String| {
                parts.push(std::mem::take(o))
            });
            assert!(out.is_empty(), "everything was flushed");
            assert_eq!(parts.concat(), whole, "chunk {chunk}");
            if chunk == 4096 {
                assert!(parts.len() > 2, "{} parts", parts.len());
                // A part is at most the chunk plus one snapshot's samples of one family.
                let most = parts.iter().map(String::len).max().unwrap_or(0);
                assert!(most < 4096 + 2048, "a part of {most} bytes");
            }
        }
    }

    #[test]
    fn values_and_labels_are_written_as_the_formatter_would() {
        for v in [
            0.0,
            -0.0,
            1.0,
            -1.0,
            9.0,
            10.0,
            1234567.0,
            -98765.0,
            999_999_999_999_999.0,
            1e15,
            -1e15,
            2.25,
            1e-7,
            f64::MAX,
        ] {
            let mut out = String::new();
            write_value(&mut out, v);
            let want = if v.fract() == 0.0 && v.abs() < 1e15 {
                format!("{}", v as i64)
            } else {
                format!("{v}")
            };
            assert_eq!(out, want, "{v}");
        }
        for (v, want) in [
            ("plain-name_1.2:tag", "plain-name_1.2:tag"),
            ("a\"b", "a\\\"b"),
            ("back\\slash\nline", "back\\\\slash\\nline"),
            ("", ""),
            ("ünï", "ünï"),
        ] {
            let mut out = String::new();
            escape_label(&mut out, v);
            assert_eq!(out, want);
        }
    }

    #[test]
    fn without_labels_no_braces() {
        let a = sample();
        let mut out = String::new();
        render(
            &[LabelledSnapshot {
                labels: &[],
                snapshot: &a,
            }],
            &mut out,
        );
        assert!(out.contains("\narmada_memory_total_bytes 1073741824\n"));
        assert!(out.starts_with("# HELP armada_cpu_seconds_total "));
        for line in out.lines().filter(|l| l.starts_with("# TYPE")) {
            let name = line.split(' ').nth(2).unwrap();
            assert!(
                out.contains(&format!("# HELP {name} ")),
                "{name} lacks HELP"
            );
        }
    }
}

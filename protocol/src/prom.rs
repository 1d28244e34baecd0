//! Prometheus text exposition (format 0.0.4) of snapshots.
//!
//! One function serves both the agent's `/metrics` (one snapshot, no extra labels) and
//! the manager's federation (every node's latest snapshot, each with `node`/`hostname`
//! labels): families are written once each, with their HELP and TYPE lines, and the
//! samples of every snapshot below them.

use crate::snapshot::Snapshot;

/// A snapshot and the labels to put on each of its samples.
pub struct LabelledSnapshot<'a> {
    pub labels: &'a [(&'a str, &'a str)],
    pub snapshot: &'a Snapshot,
}

/// Appends the exposition of `snapshots` to `out`.
pub fn render(snapshots: &[LabelledSnapshot<'_>], out: &mut String) {
    // Filled in by the metrics work (issue 3); see the module docs for the contract.
    let _ = (snapshots, out);
}

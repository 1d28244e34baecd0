//! Decoding a report body (gzip'd or plain JSON [`protocol::wire::ReportBatch`]) into what the store
//! keeps: per snapshot its identity and a summary point, plus the JSON of the newest.
//!
//! The same function runs when a request arrives and when the log is replayed, so a
//! replay reaches exactly the state the live manager had.

use std::io::Read;
use std::sync::Arc;

use protocol::snapshot::{CpuTimes, LoadAverage, Memory, Snapshot};
use protocol::validate::{from_slice_checked, CheckedError};
use serde::de::IgnoredAny;

/// Largest report body accepted on the wire (compressed).
pub const MAX_REPORT_BODY: usize = 4 << 20;
/// Largest report once decompressed: a gzip bomb stops here.
pub const MAX_DECODED_REPORT: usize = 32 << 20;
/// Most snapshots in one batch (an hour at 1 s, or ten hours at 10 s).
pub const MAX_SNAPSHOTS_PER_BATCH: usize = 3600;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyEncoding {
    Json = 0,
    Gzip = 1,
}

impl BodyEncoding {
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(BodyEncoding::Json),
            1 => Some(BodyEncoding::Gzip),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReportError {
    #[error("report is larger than {MAX_DECODED_REPORT} bytes once decompressed")]
    TooLarge,
    #[error("report is not valid gzip: {0}")]
    BadGzip(String),
    #[error("report is not a valid ReportBatch: {0}")]
    BadJson(String),
    #[error("report uses protocol {got}, this manager speaks protocol {want}")]
    Protocol { got: u32, want: u32 },
    #[error("report carries {0} snapshots; at most {MAX_SNAPSHOTS_PER_BATCH} per batch")]
    TooManySnapshots(usize),
    #[error("report refused: {0}")]
    Invalid(#[from] protocol::validate::Invalid),
}

/// What the store needs of one snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotDigest {
    pub instance: String,
    pub seq: u64,
    pub collected_at_ms: u64,
    /// (busy, total) CPU seconds of the all-CPU line, for a busy share between reports.
    pub cpu_times: Option<(f64, f64)>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub temperature_celsius: Option<f64>,
    pub containers: u32,
    pub load1: Option<f64>,
    /// Used share of the fullest filesystem.
    pub fs_used_ratio_max: Option<f64>,
    /// The counters a rate is made of, between this snapshot and the one before.
    pub counters: Counters,
    /// Each container's cumulative CPU seconds, by id key ([`super::container_cpu`]).
    pub container_cpu: Vec<(u64, f64)>,
}

/// Cumulative counters of one snapshot: network bytes received/transmitted over every
/// interface but `lo` (absent when the snapshot lists no interface) and bytes written
/// to every disk (absent when it lists no disk).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counters {
    pub t_ms: u64,
    pub net: Option<(u64, u64)>,
    pub disk_written: Option<u64>,
}

/// Bytes per second between two counters; absent when either is, when time did not
/// advance, or when a counter went down (an agent or board restart, a wrap).
fn rate(now: Option<u64>, before: Option<u64>, dt_ms: u64) -> Option<f32> {
    match (now, before) {
        (Some(n), Some(b)) if n >= b && dt_ms > 0 => {
            Some(((n - b) as f64 * 1000.0 / dt_ms as f64) as f32)
        }
        _ => None,
    }
}

/// Rates from `before` to `now`: (rx, tx, disk written), bytes per second.
pub fn rates(now: &Counters, before: Option<&Counters>) -> (Option<f32>, Option<f32>, Option<f32>) {
    let Some(b) = before.filter(|b| b.t_ms < now.t_ms) else {
        return (None, None, None);
    };
    let dt = now.t_ms - b.t_ms;
    (
        rate(now.net.map(|n| n.0), b.net.map(|n| n.0), dt),
        rate(now.net.map(|n| n.1), b.net.map(|n| n.1), dt),
        rate(now.disk_written, b.disk_written, dt),
    )
}

/// The counters of a stored snapshot's JSON (the node's latest, after a restart: the
/// next report's rates are made against it); `None` when it does not parse.
pub fn counters_of_json(json: &str) -> Option<Counters> {
    #[derive(serde::Deserialize)]
    struct C {
        collected_at_ms: u64,
        host: LeanHost,
    }
    let c: C = serde_json::from_str(json).ok()?;
    Some(c.host.counters(c.collected_at_ms))
}

fn net_totals<'a>(it: impl Iterator<Item = (&'a str, u64, u64)>) -> Option<(u64, u64)> {
    let mut any = false;
    let mut sum = (0u64, 0u64);
    for (interface, rx, tx) in it {
        any = true;
        if interface != "lo" {
            sum = (sum.0.saturating_add(rx), sum.1.saturating_add(tx));
        }
    }
    any.then_some(sum)
}

fn disk_written(it: impl Iterator<Item = u64>) -> Option<u64> {
    it.reduce(|a, b| a.saturating_add(b))
}

/// used / (used + available to users) of the fullest filesystem, like `df`'s Use%.
fn fs_used_max(it: impl Iterator<Item = (u64, u64, u64)>) -> Option<f64> {
    it.filter_map(|(size, free, avail)| {
        let used = size.saturating_sub(free);
        let denom = used.saturating_add(avail);
        (size > 0 && denom > 0).then(|| used as f64 / denom as f64)
    })
    .reduce(f64::max)
}

#[derive(Clone, Debug)]
pub struct DecodedReport {
    pub snapshots: Vec<SnapshotDigest>,
    pub dropped_total: u64,
    /// Length of the batch's largest snapshot as JSON (each one is held to the stored
    /// snapshot cap, not only the newest: an older one's figures are stored too).
    pub largest_snapshot: Option<usize>,
    /// JSON of the batch's last snapshot: the node's latest, when it is new.
    pub last_json: Option<Arc<str>>,
    /// `last_json` as the store keeps it (zlib, [`super::queries::SnapshotPacker`]),
    /// compressed here, on the request's thread: done by the one writer, it was most of
    /// the writer's time per report while every queued report waited.
    pub last_packed: Option<Vec<u8>>,
}

pub fn decode(encoding: BodyEncoding, body: &[u8]) -> Result<DecodedReport, ReportError> {
    let json: std::borrow::Cow<[u8]> = match encoding {
        BodyEncoding::Json => {
            if body.len() > MAX_DECODED_REPORT {
                return Err(ReportError::TooLarge);
            }
            body.into()
        }
        BodyEncoding::Gzip => {
            // The gzip trailer's ISIZE (length mod 2^32) sizes the buffer once instead of
            // growing it by copies; it is a hint only, capped by the bomb limit.
            let hint = body
                .len()
                .checked_sub(4)
                .and_then(|at| body.get(at..))
                .and_then(|t| <[u8; 4]>::try_from(t).ok())
                .map(|t| u32::from_le_bytes(t) as usize)
                .unwrap_or(0);
            let cap = if hint > 0 { hint + 1 } else { body.len() * 4 };
            let mut out = Vec::with_capacity(cap.min(MAX_DECODED_REPORT + 1));
            flate2::read::MultiGzDecoder::new(body)
                .take(MAX_DECODED_REPORT as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| ReportError::BadGzip(e.to_string()))?;
            if out.len() > MAX_DECODED_REPORT {
                return Err(ReportError::TooLarge);
            }
            out.into()
        }
    };
    // Every number of the whole batch, known fields or not, is checked before anything
    // sums them, by the parses themselves (`from_slice_checked`): the batch is scanned
    // once (its own fields checked, each snapshot left as a raw slice), then each
    // snapshot is parsed from its slice with its numbers checked on the way. Each byte
    // is read twice, not three times (a separate `check_json` pass was the third).
    let batch: RawBatch = from_slice_checked(&json).map_err(|e| refused(None, e))?;
    if batch.protocol != protocol::PROTOCOL_VERSION {
        return Err(ReportError::Protocol {
            got: batch.protocol,
            want: protocol::PROTOCOL_VERSION,
        });
    }
    if batch.snapshots.len() > MAX_SNAPSHOTS_PER_BATCH {
        return Err(ReportError::TooManySnapshots(batch.snapshots.len()));
    }
    // Only the newest snapshot is kept as JSON, so only it is parsed as a whole
    // `Snapshot` (validated for later readers); the older ones of a backlog batch give
    // just their digest, read by a lean view that skips the other fields unallocated
    // (their numbers are still read and checked).
    let mut snapshots = Vec::with_capacity(batch.snapshots.len());
    let last = batch.snapshots.len().saturating_sub(1);
    for (i, raw) in batch.snapshots.iter().enumerate() {
        let text = raw.get().as_bytes();
        if i == last {
            let s: Snapshot = from_slice_checked(text).map_err(|e| refused(Some(i), e))?;
            snapshots.push(digest(&s));
        } else {
            let s: LeanSnapshot = from_slice_checked(text).map_err(|e| refused(Some(i), e))?;
            snapshots.push(s.digest());
        }
    }
    let last_json: Option<Arc<str>> = batch.snapshots.last().map(|r| Arc::from(r.get()));
    // Compressing into memory does not fail; were it to, the writer compresses again
    // (and stops if that fails too) rather than storing a blob that would not inflate.
    let last_packed = last_json
        .as_deref()
        .and_then(|j| super::queries::pack_on_this_thread(j).ok());
    Ok(DecodedReport {
        snapshots,
        dropped_total: batch.dropped_total,
        largest_snapshot: batch.snapshots.iter().map(|r| r.get().len()).max(),
        // Copied once, into the allocation the store and its readers share.
        last_json,
        last_packed,
    })
}

/// A refusal of the batch (`at` None) or of its snapshot `at`, with the path from the
/// batch's root.
fn refused(at: Option<usize>, e: CheckedError) -> ReportError {
    match (e, at) {
        (CheckedError::Invalid(mut bad), Some(i)) => {
            bad.path = format!(
                "$.snapshots[{i}]{}",
                bad.path.strip_prefix('$').unwrap_or(&bad.path)
            );
            ReportError::Invalid(bad)
        }
        (CheckedError::Invalid(bad), None) => ReportError::Invalid(bad),
        (CheckedError::Json(e), Some(i)) => ReportError::BadJson(format!("snapshot {i}: {e}")),
        (CheckedError::Json(e), None) => ReportError::BadJson(e.to_string()),
    }
}

/// `protocol::wire::ReportBatch` with each snapshot left as raw JSON.
#[derive(serde::Deserialize)]
struct RawBatch<'a> {
    protocol: u32,
    #[serde(borrow)]
    snapshots: Vec<&'a serde_json::value::RawValue>,
    #[serde(default)]
    dropped_total: u64,
}

/// What [`digest`] reads of a [`Snapshot`]; the required fields it does not read are
/// still required (and skipped), so a lean read refuses what a full one would miss.
#[derive(serde::Deserialize)]
struct LeanSnapshot {
    instance: String,
    seq: u64,
    collected_at_ms: u64,
    #[allow(dead_code)]
    hostname: IgnoredAny,
    host: LeanHost,
    #[serde(default)]
    containers: Vec<LeanContainer>,
    health: LeanHealth,
}

#[derive(serde::Deserialize)]
struct LeanContainer {
    id: String,
    #[allow(dead_code)]
    name: IgnoredAny,
    #[allow(dead_code)]
    image: IgnoredAny,
    cpu: Option<LeanContainerCpu>,
}

#[derive(serde::Deserialize)]
struct LeanContainerCpu {
    usage_seconds: f64,
}

#[derive(serde::Deserialize)]
struct LeanHost {
    #[serde(default)]
    cpu: Vec<CpuTimes>,
    memory: Option<Memory>,
    load: Option<LoadAverage>,
    #[serde(default)]
    disks: Vec<LeanDisk>,
    #[serde(default)]
    filesystems: Vec<LeanFs>,
    #[serde(default)]
    network: Vec<LeanNet>,
}

#[derive(serde::Deserialize)]
struct LeanDisk {
    written_bytes: u64,
}

#[derive(serde::Deserialize)]
struct LeanFs {
    size_bytes: u64,
    free_bytes: u64,
    avail_bytes: u64,
}

#[derive(serde::Deserialize)]
struct LeanNet {
    interface: String,
    rx_bytes: u64,
    tx_bytes: u64,
}

impl LeanHost {
    fn counters(&self, t_ms: u64) -> Counters {
        Counters {
            t_ms,
            net: net_totals(
                self.network
                    .iter()
                    .map(|n| (n.interface.as_str(), n.rx_bytes, n.tx_bytes)),
            ),
            disk_written: disk_written(self.disks.iter().map(|d| d.written_bytes)),
        }
    }
}

#[derive(serde::Deserialize)]
struct LeanHealth {
    #[serde(default)]
    thermal: Vec<LeanZone>,
}

#[derive(serde::Deserialize)]
struct LeanZone {
    celsius: f64,
}

impl LeanSnapshot {
    fn digest(self) -> SnapshotDigest {
        let (used, total) = memory_used_total(self.host.memory.as_ref());
        let counters = self.host.counters(self.collected_at_ms);
        SnapshotDigest {
            load1: self.host.load.as_ref().map(|l| l.one),
            fs_used_ratio_max: fs_used_max(
                self.host
                    .filesystems
                    .iter()
                    .map(|f| (f.size_bytes, f.free_bytes, f.avail_bytes)),
            ),
            counters,
            instance: self.instance,
            seq: self.seq,
            collected_at_ms: self.collected_at_ms,
            cpu_times: cpu_busy_total(&self.host.cpu),
            memory_used_bytes: used,
            memory_total_bytes: total,
            temperature_celsius: self
                .health
                .thermal
                .iter()
                .map(|z| z.celsius)
                .reduce(f64::max),
            containers: self.containers.len() as u32,
            container_cpu: super::container_cpu::counters(
                self.containers
                    .iter()
                    .map(|c| (c.id.as_str(), c.cpu.as_ref().map(|c| c.usage_seconds))),
            ),
        }
    }
}

/// (busy, total) CPU seconds of the all-CPU line.
fn cpu_busy_total(cpu: &[CpuTimes]) -> Option<(f64, f64)> {
    cpu.iter().find(|c| c.cpu.is_none()).map(|t| {
        let idle = t.idle + t.iowait;
        let total = t.user + t.nice + t.system + t.irq + t.softirq + t.steal + idle;
        (total - idle, total)
    })
}

fn memory_used_total(memory: Option<&Memory>) -> (Option<u64>, Option<u64>) {
    match memory {
        Some(m) => {
            let free = m.available_bytes.unwrap_or(
                // Integers are not bounded by validation: no overflow on any input.
                m.free_bytes
                    .saturating_add(m.buffers_bytes)
                    .saturating_add(m.cached_bytes),
            );
            (
                Some(m.total_bytes.saturating_sub(free)),
                Some(m.total_bytes),
            )
        }
        None => (None, None),
    }
}

pub fn digest(s: &Snapshot) -> SnapshotDigest {
    let (used, total) = memory_used_total(s.host.memory.as_ref());
    let h = &s.host;
    SnapshotDigest {
        load1: h.load.as_ref().map(|l| l.one),
        fs_used_ratio_max: fs_used_max(
            h.filesystems
                .iter()
                .map(|f| (f.size_bytes, f.free_bytes, f.avail_bytes)),
        ),
        counters: Counters {
            t_ms: s.collected_at_ms,
            net: net_totals(
                h.network
                    .iter()
                    .map(|n| (n.interface.as_str(), n.rx_bytes, n.tx_bytes)),
            ),
            disk_written: disk_written(h.disks.iter().map(|d| d.written_bytes)),
        },
        instance: s.instance.clone(),
        seq: s.seq,
        collected_at_ms: s.collected_at_ms,
        cpu_times: cpu_busy_total(&s.host.cpu),
        memory_used_bytes: used,
        memory_total_bytes: total,
        temperature_celsius: s.max_temperature(),
        containers: s.containers.len() as u32,
        container_cpu: super::container_cpu::counters(
            s.containers
                .iter()
                .map(|c| (c.id.as_str(), c.cpu.as_ref().map(|c| c.usage_seconds))),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::wire::ReportBatch;
    use std::io::Write;

    fn batch_json(n: usize) -> Vec<u8> {
        let snaps: Vec<Snapshot> = (0..n)
            .map(|i| Snapshot {
                instance: "i1".into(),
                seq: i as u64,
                ..Default::default()
            })
            .collect();
        serde_json::to_vec(&ReportBatch {
            protocol: protocol::PROTOCOL_VERSION,
            snapshots: snaps,
            dropped_total: 3,
        })
        .unwrap()
    }

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_and_plain_decode_the_same() {
        let j = batch_json(3);
        let a = decode(BodyEncoding::Json, &j).unwrap();
        let b = decode(BodyEncoding::Gzip, &gzip(&j)).unwrap();
        assert_eq!(a.snapshots, b.snapshots);
        assert_eq!(a.snapshots.len(), 3);
        assert_eq!(a.dropped_total, 3);
        assert!(a.last_json.unwrap().contains("\"seq\":2"));
    }

    #[test]
    fn synthetic_snapshot_digests_like_a_board() {
        let s = crate::sim::snapshot("pine-01", "i", 5, 1000);
        let d = digest(&s);
        assert_eq!(d.containers, 3);
        assert_eq!(d.memory_used_bytes, Some((2 << 30) - (1300 << 20)));
        assert_eq!(d.temperature_celsius, Some(50.0));
        let json = serde_json::to_vec(&s).unwrap();
        assert!(json.len() > 1000 && json.len() < 8000, "{}", json.len());
    }

    #[test]
    fn lean_and_full_digests_agree() {
        let s = crate::sim::snapshot("host-1", "inst", 5, 1_700_000_000_000);
        let json = serde_json::to_string(&s).unwrap();
        let lean: LeanSnapshot = serde_json::from_str(&json).unwrap();
        let d = lean.digest();
        assert_eq!(d, digest(&s));
        assert!(d.memory_used_bytes.is_some() && d.temperature_celsius == Some(50.0));
        assert_eq!(d.containers, 3);
        let no_host = json.replace("\"host\":", "\"hosts\":");
        assert!(serde_json::from_str::<LeanSnapshot>(&no_host).is_err());
    }

    #[test]
    fn counters_rates_and_resets() {
        let snap = |t: u64, rx: u64, written: u64| {
            let mut s = crate::sim::snapshot("h", "i", 1, t);
            s.host.load = Some(LoadAverage {
                one: 0.5,
                five: 0.4,
                fifteen: 0.3,
            });
            s.host.disks = vec![protocol::snapshot::DiskIo {
                written_bytes: written,
                ..Default::default()
            }];
            s.host.filesystems = [(100, 50, 40), (100, 10, 10)]
                .iter()
                .map(
                    |&(size_bytes, free_bytes, avail_bytes)| protocol::snapshot::Filesystem {
                        size_bytes,
                        free_bytes,
                        avail_bytes,
                        ..Default::default()
                    },
                )
                .collect();
            s.host.network = vec![
                protocol::snapshot::NetDev {
                    interface: "lo".into(),
                    rx_bytes: 999_999,
                    tx_bytes: 999_999,
                    ..Default::default()
                },
                protocol::snapshot::NetDev {
                    interface: "eth0".into(),
                    rx_bytes: rx,
                    ..Default::default()
                },
            ];
            s
        };
        let a = digest(&snap(10_000, 1_000, 0));
        assert_eq!(a.load1, Some(0.5));
        assert!((a.fs_used_ratio_max.unwrap() - 0.9).abs() < 1e-9);
        assert_eq!(
            rates(&a.counters, None),
            (None, None, None),
            "nothing to diff"
        );
        let b = digest(&snap(20_000, 11_000, 4_096));
        assert_eq!(
            rates(&b.counters, Some(&a.counters)),
            (Some(1_000.0), Some(0.0), Some(409.6)),
            "lo left out"
        );
        let c = digest(&snap(30_000, 5, 4_096));
        assert_eq!(
            rates(&c.counters, Some(&b.counters)).0,
            None,
            "a counter that went down gives no rate"
        );
        assert_eq!(
            rates(&a.counters, Some(&b.counters)),
            (None, None, None),
            "time back"
        );
        // The lean read and the stored-JSON read agree with the full one.
        let json = serde_json::to_string(&snap(20_000, 11_000, 4_096)).unwrap();
        let lean: LeanSnapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(lean.digest(), b);
        assert_eq!(counters_of_json(&json), Some(b.counters));
        assert_eq!(counters_of_json("{}"), None);
        // No interface, no disk: absent, not zero.
        let mut bare = snap(40_000, 0, 0);
        bare.host.network.clear();
        bare.host.disks.clear();
        let d = digest(&bare);
        assert_eq!(d.counters.net, None);
        assert_eq!(rates(&d.counters, Some(&c.counters)), (None, None, None));
    }

    #[test]
    fn every_number_of_every_snapshot_is_checked_in_the_parse() {
        let snap = |seq: u64| {
            serde_json::to_value(crate::sim::snapshot("h", "i", seq, 1_700_000_000_000 + seq))
                .unwrap()
        };
        let body = |snaps: Vec<serde_json::Value>, extra: &str| {
            let s = serde_json::to_string(&snaps).unwrap();
            format!(r#"{{"protocol":1,"snapshots":{s}{extra}}}"#).into_bytes()
        };
        let invalid = |b: &[u8]| match decode(BodyEncoding::Json, b) {
            Err(ReportError::Invalid(e)) => e,
            other => panic!("{other:?}"),
        };
        let ok = decode(BodyEncoding::Json, &body(vec![snap(1), snap(2)], "")).unwrap();
        assert_eq!(ok.snapshots.len(), 2);
        // A field no type knows, in an older snapshot (read by the lean view).
        let mut older = snap(1);
        older["host"]["future"] = serde_json::json!({"deep": [1.0, 1e300]});
        let e = invalid(&body(vec![older, snap(2)], ""));
        assert_eq!(e.path, "$.snapshots[0].host.future.deep[1]");
        // A figure of `Snapshot` the lean view does not read, and one it reads, in an
        // older snapshot: refused as surely as in the newest.
        let mut older = snap(1);
        older["host"]["uptime_seconds"] = serde_json::json!(1e308);
        assert_eq!(
            invalid(&body(vec![older, snap(2)], "")).path,
            "$.snapshots[0].host.uptime_seconds"
        );
        let mut older = snap(1);
        older["host"]["cpu"][0]["steal"] = serde_json::json!(1e308);
        assert_eq!(
            invalid(&body(vec![older, snap(2)], "")).path,
            "$.snapshots[0].host.cpu[0].steal"
        );
        // A temperature in the newest, and a number beside the snapshots.
        let mut newest = snap(2);
        newest["health"]["thermal"][0]["celsius"] = serde_json::json!(1e39);
        let e = invalid(&body(vec![snap(1), newest], ""));
        assert_eq!(e.path, "$.snapshots[1].health.thermal[0].celsius");
        let e = invalid(&body(vec![snap(1)], r#","future_total":-1e300"#));
        assert_eq!(e.path, "$.future_total");
        // Text that is not JSON is refused as such.
        assert!(matches!(
            decode(BodyEncoding::Json, b"{\"protocol\":1,\"snapshots\":[{]}"),
            Err(ReportError::BadJson(_))
        ));
    }

    #[test]
    fn the_largest_snapshot_of_a_batch_is_measured_not_only_the_newest() {
        let mut big = crate::sim::snapshot("h", "i", 1, 1);
        big.warnings = vec!["x".repeat(50_000)];
        let small = crate::sim::snapshot("h", "i", 2, 2);
        let j = serde_json::to_vec(&ReportBatch {
            protocol: 1,
            snapshots: vec![big.clone(), small.clone()],
            dropped_total: 0,
        })
        .unwrap();
        let d = decode(BodyEncoding::Json, &j).unwrap();
        let big_len = serde_json::to_string(&big).unwrap().len();
        assert_eq!(d.largest_snapshot, Some(big_len));
        assert_eq!(
            d.last_json.as_deref().map(str::len),
            Some(serde_json::to_string(&small).unwrap().len()),
            "the newest is the small one"
        );
        let empty = decode(BodyEncoding::Json, br#"{"protocol":1,"snapshots":[]}"#).unwrap();
        assert_eq!((empty.largest_snapshot, empty.last_json), (None, None));
    }

    #[test]
    fn bombs_garbage_and_other_protocols_are_refused() {
        let zeros = vec![b' '; MAX_DECODED_REPORT + 10];
        assert_eq!(
            decode(BodyEncoding::Gzip, &gzip(&zeros)).unwrap_err(),
            ReportError::TooLarge
        );
        assert!(matches!(
            decode(BodyEncoding::Gzip, b"not gzip").unwrap_err(),
            ReportError::BadGzip(_)
        ));
        assert!(matches!(
            decode(BodyEncoding::Json, b"{\"protocol\":1}").unwrap_err(),
            ReportError::BadJson(_)
        ));
        let mut s = crate::sim::snapshot("h", "i", 1, 1);
        s.host.cpu[0].user = 1e308;
        s.host.cpu[0].nice = 1e308;
        let j = serde_json::to_vec(&ReportBatch {
            protocol: 1,
            snapshots: vec![s],
            dropped_total: 0,
        })
        .unwrap();
        assert!(matches!(
            decode(BodyEncoding::Json, &j).unwrap_err(),
            ReportError::Invalid(_)
        ));
        let other = br#"{"protocol":99,"snapshots":[]}"#;
        assert_eq!(
            decode(BodyEncoding::Json, other).unwrap_err(),
            ReportError::Protocol { got: 99, want: 1 }
        );
    }
}

//! Pushing snapshots to the manager.
//!
//! Every interval the collector takes a snapshot and puts it in a bounded in-memory
//! [`Backlog`]; the delivery task sends the backlog, oldest first, as gzip'd
//! [`ReportBatch`]es with the node credential, and drops from the backlog only what the
//! manager acknowledged. While the manager is away the backlog grows up to its bound
//! (default 360 = one hour at 10 s), then drops the oldest and counts the drops.
//! A snapshot the manager refuses as too large even alone (413) is dropped and counted
//! at once (`armada_agent_snapshots_refused_total`): it would never be accepted.
//! Nothing is written to disk per report.

use std::collections::VecDeque;
use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flate2::write::GzEncoder;
use flate2::Compression;
use protocol::snapshot::Snapshot;
use protocol::token::NodeCredential;
use protocol::wire::{ReportAck, ReportBatch, CODE_REREGISTER, CODE_REVOKED, PATH_REPORT};
use tokio::sync::Notify;

use crate::register::{error_body, error_chain, ManagerAddress};
use crate::retry::Backoff;
use crate::status::{ErrorKind, RefusedReason, StatusBoard};

/// Most snapshots in one request; halved when the manager says a body is too large.
pub const MAX_BATCH: usize = 30;

/// Where snapshots come from (the metrics collector; a fake in tests).
pub trait SnapshotSource {
    fn collect(&mut self, instance: &str, seq: u64) -> impl Future<Output = Snapshot>;
}

/// Snapshots not yet acknowledged by the manager, oldest first: at most `cap` of them
/// and at most `cap_bytes` of their JSON (200 containers make a snapshot ~20 times
/// larger than none, so a count alone does not bound the memory).
#[derive(Debug)]
pub struct Backlog {
    items: VecDeque<(Snapshot, usize)>,
    cap: usize,
    cap_bytes: usize,
    bytes: usize,
    dropped_total: u64,
}

impl Backlog {
    pub fn new(cap: usize, cap_bytes: usize) -> Self {
        let cap = cap.max(1);
        Backlog {
            items: VecDeque::with_capacity(cap.min(1024)),
            cap,
            cap_bytes: cap_bytes.max(1),
            bytes: 0,
            dropped_total: 0,
        }
    }

    /// Adds the newest snapshot, dropping (and counting) the oldest while either bound
    /// is passed. The newest is always kept, even alone over the byte bound.
    pub fn push(&mut self, s: Snapshot) {
        let size = json_size(&s);
        while !self.items.is_empty()
            && (self.items.len() >= self.cap || self.bytes.saturating_add(size) > self.cap_bytes)
        {
            self.discard_oldest();
        }
        self.bytes = self.bytes.saturating_add(size);
        self.items.push_back((s, size));
    }

    /// Copies of the `n` oldest snapshots.
    pub fn oldest(&self, n: usize) -> Vec<Snapshot> {
        self.items.iter().take(n).map(|(s, _)| s.clone()).collect()
    }

    /// Forgets the snapshots with these `(instance, seq)` keys (delivered ones, or one
    /// the manager refused for good) and returns their JSON bytes. By key, not by
    /// count: the oldest may have been dropped while the request was in flight.
    pub fn remove(&mut self, keys: &[(String, u64)]) -> usize {
        let mut freed = 0usize;
        self.items.retain(|(s, size)| {
            let done = keys.iter().any(|(i, q)| *i == s.instance && *q == s.seq);
            if done {
                freed = freed.saturating_add(*size);
            }
            !done
        });
        self.bytes = self.bytes.saturating_sub(freed);
        freed
    }

    /// Drops the oldest snapshot (the backlog is full), counted.
    fn discard_oldest(&mut self) {
        if let Some((_, size)) = self.items.pop_front() {
            self.bytes = self.bytes.saturating_sub(size);
            self.dropped_total += 1;
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// JSON bytes of the snapshots kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }
}

/// The length of a snapshot's JSON, counted without keeping it.
fn json_size(s: &Snapshot) -> usize {
    struct Count(usize);
    impl Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(b.len());
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Serialising plain data into a counter cannot fail; 0 would only under-count.
    let _ = serde_json::to_writer(&mut c, s);
    c.0
}

/// Counters shown on the agent's own `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct DeliveryStats {
    pub delivered_total: u64,
    pub failed_attempts_total: u64,
    pub last_success_ms: Option<u64>,
}

/// State shared between the collector, the delivery task and the `/metrics` endpoint.
pub struct Shared {
    pub backlog: Mutex<Backlog>,
    /// The control plane's state, for `/metrics` and `armada-agent status`.
    pub status: StatusBoard,
    pub latest: Mutex<Option<Snapshot>>,
    pub stats: Mutex<DeliveryStats>,
    pub new_snapshot: Notify,
    /// The collection interval in ms: the config's until the manager names its own.
    interval_ms: AtomicU64,
    /// Rung when the interval changes, so the collector does not sleep out the old one.
    interval_changed: Notify,
}

impl Shared {
    pub fn new(backlog_cap: usize, backlog_cap_bytes: usize) -> Arc<Self> {
        Arc::new(Shared {
            backlog: Mutex::new(Backlog::new(backlog_cap, backlog_cap_bytes)),
            status: StatusBoard::default(),
            latest: Mutex::new(None),
            stats: Mutex::new(DeliveryStats::default()),
            new_snapshot: Notify::new(),
            interval_ms: AtomicU64::new(10_000),
            interval_changed: Notify::new(),
        })
    }

    pub fn set_interval(&self, every: Duration) {
        let ms = (every.as_millis() as u64).max(100);
        if self.interval_ms.swap(ms, Ordering::Relaxed) != ms {
            self.interval_changed.notify_one();
        }
    }

    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.load(Ordering::Relaxed))
    }
}

/// Locks, recovering from a panicked holder (the data is plain and stays consistent).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("the manager is unreachable: {0}")]
    Unreachable(String),
    #[error(
        "the manager no longer knows this node (409 reregister): it lost its state; \
         registering again with the node credential"
    )]
    Reregister,
    #[error("the manager says this node was removed (401 revoked): {0}; delivery stopped")]
    Revoked(String),
    #[error(
        "the manager refused this node's credential (401): {0}; retrying slowly \
         (re-register the node with a fresh bootstrap token if it was removed)"
    )]
    CredentialRefused(String),
    #[error("the manager refused the batch ({status}): {message}")]
    Rejected { status: u16, message: String },
}

/// What the delivery loop hands back to the control plane.
#[derive(Debug, PartialEq, Eq)]
pub enum DeliveryEnd {
    /// Register again with the credential (contract: 409 `reregister`).
    Reregister,
    /// The operator removed this node: stop delivering for good.
    Revoked(String),
}

/// How one non-2xx answer to `POST /v1/report` is handled.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 413 for a batch of several: split it, at once (no pause), so one oversized
    /// snapshot does not sink its neighbours.
    Split,
    /// 413 for one snapshot alone: it will never be accepted; drop it (counted), at once.
    TooLarge,
    /// The oldest snapshot is malformed for this manager (400, 422): drop it, then pause.
    DropOldest,
    /// Anything else: keep the backlog and pause.
    Pause,
}

/// Sorts a refused batch of `n` snapshots by its status (pure, so the policy is tested
/// directly).
pub fn refusal(status: u16, n: usize) -> Refusal {
    match status {
        413 if n > 1 => Refusal::Split,
        413 => Refusal::TooLarge,
        400 | 422 => Refusal::DropOldest,
        _ => Refusal::Pause,
    }
}

/// gzip'd JSON of a batch.
pub fn encode_batch(batch: &ReportBatch) -> std::io::Result<Vec<u8>> {
    let json = serde_json::to_vec(batch).map_err(std::io::Error::other)?;
    let mut gz = GzEncoder::new(Vec::with_capacity(json.len() / 4), Compression::default());
    gz.write_all(&json)?;
    gz.finish()
}

/// One `POST /v1/report`.
pub async fn deliver_batch(
    client: &reqwest::Client,
    manager: &ManagerAddress,
    credential: &NodeCredential,
    batch: &ReportBatch,
) -> Result<ReportAck, DeliveryError> {
    let body = encode_batch(batch).map_err(|e| DeliveryError::Rejected {
        status: 0,
        message: e.to_string(),
    })?;
    let resp = client
        .post(format!("{}{PATH_REPORT}", manager.base_url()))
        .bearer_auth(credential.expose())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::CONTENT_ENCODING, "gzip")
        .body(body)
        .send()
        .await
        .map_err(|e| DeliveryError::Unreachable(error_chain(&e)))?;
    let status = resp.status().as_u16();
    crate::register::step_clock_from_reply(resp.headers());
    if (200..=299).contains(&status) {
        return resp
            .json::<ReportAck>()
            .await
            .map_err(|e| DeliveryError::Unreachable(error_chain(&e)));
    }
    let (message, code) = error_body(resp).await;
    Err(match (status, code.as_deref()) {
        (409, Some(CODE_REREGISTER)) => DeliveryError::Reregister,
        (401, Some(CODE_REVOKED)) => DeliveryError::Revoked(message),
        (401, _) => DeliveryError::CredentialRefused(message),
        (408 | 429 | 500.., _) => DeliveryError::Unreachable(format!("HTTP {status}: {message}")),
        _ => DeliveryError::Rejected { status, message },
    })
}

/// Collects a snapshot every interval (read from `shared` each time), forever.
pub async fn collect_loop<S: SnapshotSource>(mut source: S, shared: Arc<Shared>, instance: String) {
    let mut next = tokio::time::Instant::now();
    let mut last: Option<tokio::time::Instant> = None;
    let mut seq = 0u64;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = shared.interval_changed.notified() => {
                // The manager's interval (named at registration) counts from the last
                // collection: a shorter one applies now, not once the config's default
                // has run out (a 10-s wait looked "stale" to a manager expecting 2 s).
                if let Some(l) = last {
                    next = (l + shared.interval()).max(tokio::time::Instant::now());
                }
                continue;
            }
        }
        last = Some(tokio::time::Instant::now());
        let snap = source.collect(&instance, seq).await;
        seq += 1;
        *lock(&shared.latest) = Some(snap.clone());
        lock(&shared.backlog).push(snap);
        shared.new_snapshot.notify_one();
        // On schedule without drift; after a stall, start afresh instead of bursting.
        next += shared.interval();
        let now = tokio::time::Instant::now();
        if next < now {
            next = now;
        }
    }
}

/// Longest pause after a refused credential or batch: slow enough not to hammer a
/// manager that refuses us, fast enough to notice an operator's fix.
pub const REFUSED_PAUSE_CAP: Duration = Duration::from_secs(300);

/// Delivers the backlog, oldest first, whenever there is something to send. Every
/// non-2xx answer pauses with backoff but 413: a batch too large is split at once, and
/// a snapshot too large alone is dropped (counted) at once, so the newer ones flow.
/// Returns only when the control plane must act (re-register, or stop: revoked).
pub async fn deliver_loop(
    client: &reqwest::Client,
    manager: &ManagerAddress,
    credential: &NodeCredential,
    shared: &Shared,
) -> DeliveryEnd {
    let mut batch_size = MAX_BATCH;
    let mut away = Backoff::new(Duration::from_secs(1), Duration::from_secs(2));
    let mut refused = Backoff::new(Duration::from_secs(2), REFUSED_PAUSE_CAP);
    let mut split_said = false;
    let status = &shared.status;
    loop {
        let (snapshots, dropped_total) = {
            let b = lock(&shared.backlog);
            (b.oldest(batch_size), b.dropped_total())
        };
        if snapshots.is_empty() {
            shared.new_snapshot.notified().await;
            continue;
        }
        let keys: Vec<(String, u64)> = snapshots
            .iter()
            .map(|s| (s.instance.clone(), s.seq))
            .collect();
        let n = snapshots.len();
        let batch = ReportBatch {
            protocol: protocol::PROTOCOL_VERSION,
            snapshots,
            dropped_total,
        };
        let result = deliver_batch(client, manager, credential, &batch).await;
        let err = match result {
            Ok(ack) => {
                lock(&shared.backlog).remove(&keys);
                let now = now_ms();
                {
                    let mut st = lock(&shared.stats);
                    st.delivered_total += n as u64;
                    st.last_success_ms = Some(now);
                }
                if away.failures() > 0 || refused.failures() > 0 {
                    tracing::info!(
                        "the manager is back: delivered {n} snapshots ({} new, {} duplicates)",
                        ack.accepted,
                        ack.duplicates
                    );
                }
                away.reset();
                refused.reset();
                status.update(|s| s.last_delivery_ms = Some(now));
                status.clear(ErrorKind::Delivery);
                status.clear(ErrorKind::Credential);
                batch_size = (batch_size * 2).min(MAX_BATCH);
                continue;
            }
            Err(e) => e,
        };
        match err {
            DeliveryError::Reregister => {
                tracing::warn!("{err}");
                return DeliveryEnd::Reregister;
            }
            DeliveryError::Revoked(message) => return DeliveryEnd::Revoked(message),
            DeliveryError::CredentialRefused(_) => {
                lock(&shared.stats).failed_attempts_total += 1;
                status.fail(ErrorKind::Credential, err.to_string());
                let delay = refused.next_delay();
                tracing::error!("{err}; next attempt in {:.0}s", delay.as_secs_f64());
                tokio::time::sleep(delay).await;
            }
            DeliveryError::Rejected {
                status: code,
                ref message,
            } => {
                lock(&shared.stats).failed_attempts_total += 1;
                match refusal(code, n) {
                    Refusal::Split => {
                        // Split at once: the manager answers 413 for the batch as a
                        // whole, so its smaller halves may well pass.
                        batch_size = (n / 2).max(1);
                        if !split_said {
                            split_said = true;
                            tracing::warn!(
                                "the manager found a batch of {n} snapshots too large ({message}); \
                                 sending fewer at a time (said once)"
                            );
                        }
                        continue;
                    }
                    Refusal::TooLarge => {
                        // Alone and still too large: it will never be accepted, and
                        // retrying it would hold up every newer one. Dropped, counted,
                        // and the next one is sent at once.
                        let bytes = lock(&shared.backlog).remove(&keys);
                        let seq = keys.first().map(|k| k.1).unwrap_or_default();
                        if status.refused(RefusedReason::TooLarge, bytes, message) {
                            tracing::warn!(
                                "the manager refused snapshot {seq} as too large ({bytes} bytes \
                                 of JSON; {message}); dropped it. Later snapshots it refuses so \
                                 are dropped too, counted in armada_agent_snapshots_refused_total \
                                 and `armada-agent status`, and not logged again"
                            );
                        }
                        continue;
                    }
                    Refusal::DropOldest => {
                        // A snapshot the manager cannot take would block every later one.
                        status.fail(ErrorKind::Delivery, err.to_string());
                        let bytes = lock(&shared.backlog).remove(&keys[..1]);
                        status.refused(RefusedReason::Malformed, bytes, message);
                        tracing::error!(
                            "the manager refused a snapshot ({code}: {message}); dropping it"
                        );
                    }
                    Refusal::Pause => status.fail(ErrorKind::Delivery, err.to_string()),
                }
                let delay = refused.next_delay();
                tracing::warn!(
                    "{err}; {} snapshots kept in memory, next attempt in {:.1}s",
                    lock(&shared.backlog).len(),
                    delay.as_secs_f64()
                );
                tokio::time::sleep(delay).await;
            }
            DeliveryError::Unreachable(ref reason) => {
                lock(&shared.stats).failed_attempts_total += 1;
                status.fail(ErrorKind::Delivery, err.to_string());
                away.set_cap(shared.interval().max(Duration::from_secs(2)));
                let failures = away.failures();
                let delay = away.next_delay();
                if failures == 0 || failures % 30 == 0 {
                    let backlog = lock(&shared.backlog).len();
                    tracing::warn!(
                        "reporting: {reason}; {backlog} snapshots kept in memory, retrying"
                    );
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(seq: u64) -> Snapshot {
        Snapshot {
            instance: "i1".into(),
            seq,
            ..Default::default()
        }
    }

    #[test]
    fn backlog_keeps_the_newest_and_counts_drops() {
        let mut b = Backlog::new(3, usize::MAX);
        for i in 0..5 {
            b.push(snap(i));
        }
        assert_eq!(b.len(), 3);
        assert_eq!(b.dropped_total(), 2);
        let seqs: Vec<u64> = b.oldest(10).iter().map(|s| s.seq).collect();
        assert_eq!(seqs, vec![2, 3, 4], "oldest first, the two oldest dropped");
    }

    #[test]
    fn delivered_snapshots_are_removed_by_key_even_after_drops() {
        let mut b = Backlog::new(3, usize::MAX);
        for i in 0..3 {
            b.push(snap(i));
        }
        let in_flight: Vec<(String, u64)> = b
            .oldest(2)
            .iter()
            .map(|s| (s.instance.clone(), s.seq))
            .collect();
        // While the request is in flight, a new snapshot pushes the oldest out.
        b.push(snap(3));
        assert!(b.remove(&in_flight) > 0);
        let seqs: Vec<u64> = b.oldest(10).iter().map(|s| s.seq).collect();
        assert_eq!(seqs, vec![2, 3]);
        b.discard_oldest();
        assert_eq!(b.dropped_total(), 2);
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn the_backlog_is_bounded_by_bytes_too() {
        let one = json_size(&snap(0));
        assert!(one > 0);
        let mut b = Backlog::new(100, one * 3);
        for i in 0..10 {
            b.push(snap(i));
        }
        assert_eq!(b.len(), 3, "three fit in the byte bound");
        assert!(b.bytes() <= one * 3 + 3, "{} bytes", b.bytes());
        assert_eq!(b.dropped_total(), 7);
        let keys: Vec<(String, u64)> = b
            .oldest(2)
            .iter()
            .map(|s| (s.instance.clone(), s.seq))
            .collect();
        b.remove(&keys);
        assert_eq!(b.len(), 1);
        assert!(b.bytes() <= one + 1);
        let mut tiny = Backlog::new(100, 1);
        tiny.push(snap(1));
        tiny.push(snap(2));
        assert_eq!(
            tiny.len(),
            1,
            "the newest is kept even alone over the bound"
        );
        assert_eq!(tiny.oldest(1)[0].seq, 2);
    }

    #[test]
    fn too_large_splits_or_drops_malformed_drops_and_the_rest_pauses() {
        assert_eq!(refusal(413, 30), Refusal::Split);
        assert_eq!(refusal(413, 2), Refusal::Split);
        assert_eq!(refusal(413, 1), Refusal::TooLarge);
        assert_eq!(refusal(400, 5), Refusal::DropOldest);
        assert_eq!(refusal(422, 1), Refusal::DropOldest);
        for status in [403, 404, 405, 409, 410] {
            assert_eq!(refusal(status, 3), Refusal::Pause, "{status}");
        }
    }

    struct Counting;
    impl SnapshotSource for Counting {
        async fn collect(&mut self, instance: &str, seq: u64) -> Snapshot {
            Snapshot {
                instance: instance.into(),
                seq,
                ..Default::default()
            }
        }
    }

    #[tokio::test]
    async fn collection_follows_the_interval_into_a_bounded_backlog() {
        let shared = Shared::new(4, usize::MAX);
        shared.set_interval(Duration::from_millis(100));
        let run = collect_loop(Counting, shared.clone(), "i9".into());
        let _ = tokio::time::timeout(Duration::from_millis(750), run).await;
        let b = lock(&shared.backlog);
        let seqs: Vec<u64> = b.oldest(10).iter().map(|s| s.seq).collect();
        assert_eq!(b.len(), 4, "{seqs:?}");
        assert!(
            b.dropped_total() >= 3,
            "about 8 taken, 4 kept: {}",
            b.dropped_total()
        );
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
        assert_eq!(
            lock(&shared.latest).as_ref().map(|s| s.seq),
            seqs.last().copied()
        );
    }

    #[tokio::test]
    async fn a_new_interval_counts_from_the_last_collection() {
        let shared = Shared::new(16, usize::MAX);
        shared.set_interval(Duration::from_secs(2));
        let run = tokio::spawn(collect_loop(Counting, shared.clone(), "i8".into()));
        let t0 = std::time::Instant::now();
        while lock(&shared.backlog).is_empty() && t0.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(lock(&shared.backlog).len(), 1, "the first snapshot at once");
        // The manager names 100 ms: the next one must not wait out the 2 s.
        shared.set_interval(Duration::from_millis(100));
        let t1 = std::time::Instant::now();
        while lock(&shared.backlog).len() < 2 && t1.elapsed() < Duration::from_millis(1500) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let waited = t1.elapsed();
        run.abort();
        assert_eq!(
            lock(&shared.backlog).len(),
            2,
            "no second snapshot in {waited:?}"
        );
        assert!(waited < Duration::from_millis(1500), "{waited:?}");
    }

    #[test]
    fn batches_are_gzip_json() {
        let batch = ReportBatch {
            protocol: 1,
            snapshots: vec![snap(7)],
            dropped_total: 4,
        };
        let gz = encode_batch(&batch).unwrap();
        assert_eq!(&gz[..2], &[0x1f, 0x8b]);
        let mut json = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut json)
            .unwrap();
        let back: ReportBatch = serde_json::from_str(&json).unwrap();
        assert_eq!(back.snapshots[0].seq, 7);
        assert_eq!(back.dropped_total, 4);
    }
}

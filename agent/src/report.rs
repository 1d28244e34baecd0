//! Pushing snapshots to the manager.
//!
//! Every interval the collector takes a snapshot and puts it in a bounded in-memory
//! [`Backlog`]; the delivery task sends the backlog, oldest first, as gzip'd
//! [`ReportBatch`]es with the node credential, and drops from the backlog only what the
//! manager acknowledged. While the manager is away the backlog grows up to its bound
//! (default 360 = one hour at 10 s), then drops the oldest and counts the drops.
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
use protocol::wire::{ReportAck, ReportBatch, PATH_REPORT};
use tokio::sync::Notify;

use crate::register::{error_chain, error_message, ManagerAddress};
use crate::retry::Backoff;

/// Most snapshots in one request; halved when the manager says a body is too large.
pub const MAX_BATCH: usize = 30;

/// Where snapshots come from (the metrics collector; a fake in tests).
pub trait SnapshotSource {
    fn collect(&mut self, instance: &str, seq: u64) -> impl Future<Output = Snapshot>;
}

/// Snapshots not yet acknowledged by the manager, oldest first, at most `cap`.
#[derive(Debug)]
pub struct Backlog {
    items: VecDeque<Snapshot>,
    cap: usize,
    dropped_total: u64,
}

impl Backlog {
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        Backlog {
            items: VecDeque::with_capacity(cap.min(1024)),
            cap,
            dropped_total: 0,
        }
    }

    /// Adds the newest snapshot, dropping (and counting) the oldest when full.
    pub fn push(&mut self, s: Snapshot) {
        while self.items.len() >= self.cap {
            self.items.pop_front();
            self.dropped_total += 1;
        }
        self.items.push_back(s);
    }

    /// Copies of the `n` oldest snapshots.
    pub fn oldest(&self, n: usize) -> Vec<Snapshot> {
        self.items.iter().take(n).cloned().collect()
    }

    /// Forgets the snapshots with these `(instance, seq)` keys (delivered ones). By key,
    /// not by count: the oldest may have been dropped while the request was in flight.
    pub fn remove_delivered(&mut self, delivered: &[(String, u64)]) {
        self.items.retain(|s| {
            !delivered
                .iter()
                .any(|(i, q)| *i == s.instance && *q == s.seq)
        });
    }

    /// Drops the oldest snapshot on purpose (the manager refused it as malformed).
    pub fn discard_oldest(&mut self) {
        if self.items.pop_front().is_some() {
            self.dropped_total += 1;
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }
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
    pub latest: Mutex<Option<Snapshot>>,
    pub stats: Mutex<DeliveryStats>,
    pub new_snapshot: Notify,
    /// The collection interval in ms: the config's until the manager names its own.
    interval_ms: AtomicU64,
}

impl Shared {
    pub fn new(backlog_cap: usize) -> Arc<Self> {
        Arc::new(Shared {
            backlog: Mutex::new(Backlog::new(backlog_cap)),
            latest: Mutex::new(None),
            stats: Mutex::new(DeliveryStats::default()),
            new_snapshot: Notify::new(),
            interval_ms: AtomicU64::new(10_000),
        })
    }

    pub fn set_interval(&self, every: Duration) {
        self.interval_ms
            .store((every.as_millis() as u64).max(100), Ordering::Relaxed);
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
        "the manager refused this node's credential (401): the node was removed or the manager lost it; \
         re-register it with a fresh bootstrap token"
    )]
    CredentialRefused,
    #[error("the manager refused the batch ({status}): {message}")]
    Rejected { status: u16, message: String },
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
    match status {
        200..=299 => resp
            .json::<ReportAck>()
            .await
            .map_err(|e| DeliveryError::Unreachable(error_chain(&e))),
        401 => Err(DeliveryError::CredentialRefused),
        408 | 429 | 500.. => Err(DeliveryError::Unreachable(format!(
            "HTTP {status}: {}",
            error_message(resp).await
        ))),
        _ => Err(DeliveryError::Rejected {
            status,
            message: error_message(resp).await,
        }),
    }
}

/// Collects a snapshot every interval (read from `shared` each time), forever.
pub async fn collect_loop<S: SnapshotSource>(mut source: S, shared: Arc<Shared>, instance: String) {
    let mut next = tokio::time::Instant::now();
    let mut seq = 0u64;
    loop {
        tokio::time::sleep_until(next).await;
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

/// Delivers the backlog, oldest first, whenever there is something to send. Returns
/// only when the credential is refused (nothing else can be done with it).
pub async fn deliver_loop(
    client: reqwest::Client,
    manager: ManagerAddress,
    credential: NodeCredential,
    shared: Arc<Shared>,
) -> DeliveryError {
    let mut batch_size = MAX_BATCH;
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(2));
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
        match deliver_batch(&client, &manager, &credential, &batch).await {
            Ok(ack) => {
                lock(&shared.backlog).remove_delivered(&keys);
                let mut st = lock(&shared.stats);
                st.delivered_total += n as u64;
                st.last_success_ms = Some(now_ms());
                if backoff.failures() > 0 {
                    tracing::info!(
                        "the manager is back: delivered {n} snapshots ({} new, {} duplicates)",
                        ack.accepted,
                        ack.duplicates
                    );
                }
                backoff.reset();
                batch_size = (batch_size * 2).min(MAX_BATCH);
            }
            Err(DeliveryError::CredentialRefused) => return DeliveryError::CredentialRefused,
            Err(DeliveryError::Rejected {
                status: 413,
                message,
            }) if batch_size > 1 => {
                batch_size = (batch_size / 2).max(1);
                tracing::warn!("the manager found a batch of {n} too large ({message}); sending {batch_size} at a time");
            }
            Err(DeliveryError::Rejected { status, message }) => {
                // A snapshot the manager cannot take would block every later one.
                tracing::error!(
                    "the manager refused a snapshot ({status}: {message}); dropping it"
                );
                lock(&shared.backlog).discard_oldest();
            }
            Err(DeliveryError::Unreachable(reason)) => {
                lock(&shared.stats).failed_attempts_total += 1;
                let backlog = lock(&shared.backlog).len();
                backoff.set_cap(shared.interval().max(Duration::from_secs(2)));
                let failures = backoff.failures();
                let delay = backoff.next_delay();
                if failures == 0 || failures % 30 == 0 {
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
        let mut b = Backlog::new(3);
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
        let mut b = Backlog::new(3);
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
        b.remove_delivered(&in_flight);
        let seqs: Vec<u64> = b.oldest(10).iter().map(|s| s.seq).collect();
        assert_eq!(seqs, vec![2, 3]);
        b.discard_oldest();
        assert_eq!(b.dropped_total(), 2);
        assert_eq!(b.len(), 1);
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
        let shared = Shared::new(4);
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

//! The manager's own metrics (lock-free counters, one latency histogram) and the
//! Prometheus text of `GET /metrics`: these, then every node's latest snapshot through
//! `protocol::prom::render` with `node`, `hostname` and `board` labels.
//!
//! Layout:
//! - [`Counter`], [`Histogram`], [`METRICS`]: the manager's own figures.
//! - [`render_own`]: their text.
//! - [`render_federation`]: runs the (long) federation render on its one thread, at the
//!   lowest CPU priority, one scrape at a time; [`stream_federation`] does so with the
//!   text sent to the scraper in chunks while it is rendered.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for Counter {
    fn default() -> Self {
        Self::new()
    }
}

/// Upper bounds in seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

pub struct Histogram {
    buckets: [AtomicU64; 12],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub const fn new() -> Self {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; 12],
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: std::time::Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| s <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Smallest bucket bound under which at least `q` of the observations fall.
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        let count = self.count.load(Ordering::Relaxed);
        if count == 0 {
            return None;
        }
        let want = (q * count as f64).ceil() as u64;
        let mut cum = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            cum += b.load(Ordering::Relaxed);
            if cum >= want {
                return Some(LATENCY_BUCKETS[i]);
            }
        }
        Some(f64::INFINITY)
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            cum += b.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cum}", LATENCY_BUCKETS[i]);
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

pub struct Metrics {
    /// (route, status code) -> requests.
    pub requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    pub unauthorized: Counter,
    pub registrations_new: Counter,
    pub registrations_existing: Counter,
    pub registrations_refused: Counter,
    pub snapshots_ingested: Counter,
    pub snapshots_duplicate: Counter,
    pub agent_backlog_dropped: Counter,
    pub ingest_latency: Histogram,
    pub store_commits: Counter,
    /// write + fdatasync of one group commit.
    pub store_commit_latency: Histogram,
    pub labels_applied: Counter,
    pub label_failures: Counter,
}

pub static METRICS: Metrics = Metrics {
    requests: Mutex::new(BTreeMap::new()),
    unauthorized: Counter::new(),
    registrations_new: Counter::new(),
    registrations_existing: Counter::new(),
    registrations_refused: Counter::new(),
    snapshots_ingested: Counter::new(),
    snapshots_duplicate: Counter::new(),
    agent_backlog_dropped: Counter::new(),
    ingest_latency: Histogram::new(),
    store_commits: Counter::new(),
    store_commit_latency: Histogram::new(),
    labels_applied: Counter::new(),
    label_failures: Counter::new(),
};

impl Metrics {
    pub fn count_request(&self, route: &'static str, code: u16) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((route, code)).or_insert(0) += 1;
        }
    }
}

fn counter(out: &mut String, name: &str, help: &str, samples: &[(&str, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (labels, v) in samples {
        let _ = writeln!(out, "{name}{labels} {v}");
    }
}

/// The manager's own families; `nodes_by_status` feeds the `armada_manager_nodes` gauge.
pub fn render_own(m: &Metrics, nodes_by_status: &[(&str, u64)], out: &mut String) {
    let requests: Vec<(String, u64)> = m
        .requests
        .lock()
        .map(|r| {
            r.iter()
                .map(|((route, code), v)| (format!("{{route=\"{route}\",code=\"{code}\"}}"), *v))
                .collect()
        })
        .unwrap_or_default();
    let requests: Vec<(&str, u64)> = requests.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    counter(
        out,
        "armada_manager_http_requests_total",
        "HTTP requests answered, by route and status code.",
        &requests,
    );
    counter(
        out,
        "armada_manager_unauthorized_requests_total",
        "Requests refused with 401 (missing, wrong or revoked credential or token).",
        &[("", m.unauthorized.get())],
    );
    counter(
        out,
        "armada_manager_registrations_total",
        "Registrations by result.",
        &[
            ("{result=\"new\"}", m.registrations_new.get()),
            ("{result=\"existing\"}", m.registrations_existing.get()),
            ("{result=\"hostname_taken\"}", m.registrations_refused.get()),
        ],
    );
    counter(
        out,
        "armada_manager_snapshots_ingested_total",
        "Snapshots stored durably.",
        &[("", m.snapshots_ingested.get())],
    );
    counter(
        out,
        "armada_manager_snapshots_duplicate_total",
        "Snapshots received again (retried deliveries), not stored twice.",
        &[("", m.snapshots_duplicate.get())],
    );
    counter(
        out,
        "armada_manager_store_commits_total",
        "Group commits (one fdatasync each) of the store's log.",
        &[("", m.store_commits.get())],
    );
    counter(
        out,
        "armada_manager_swarm_label_updates_total",
        "Swarm node label updates by result.",
        &[
            ("{result=\"ok\"}", m.labels_applied.get()),
            ("{result=\"error\"}", m.label_failures.get()),
        ],
    );
    m.ingest_latency.render(
        "armada_manager_ingest_latency_seconds",
        "Time from receiving a report to acknowledging it (decode, durable store).",
        out,
    );
    m.store_commit_latency.render(
        "armada_manager_store_commit_seconds",
        "Time to write and fdatasync one group commit of the store's log.",
        out,
    );
    let _ = writeln!(
        out,
        "# HELP armada_manager_nodes Registered nodes by status.\n# TYPE armada_manager_nodes gauge"
    );
    for (status, n) in nodes_by_status {
        let _ = writeln!(out, "armada_manager_nodes{{status=\"{status}\"}} {n}");
    }
}

/// Why a federation render did not finish.
#[derive(Debug, thiserror::Error)]
#[error("the /metrics render thread {0}")]
pub struct RenderError(&'static str);

type RenderJob = Box<dyn FnOnce() + Send>;

/// Bytes of federation text rendered before they are handed to the scraper's
/// connection ([`stream_federation`]).
pub const FEDERATION_CHUNK: usize = 256 << 10;

/// How long the render thread waits for a scraper to take one chunk before it gives the
/// scrape up (a client that stops reading must not hold the one render thread).
const CHUNK_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `render` on the federation render thread and waits for what it returns.
///
/// Why a thread of its own, niced to 19: parsing and rendering 10,000 snapshots takes
/// seconds of CPU on a board, and on tokio's blocking pool it competed as an equal with
/// the async workers and the store's writer, so reports and health checks waited for
/// CPU (p99 of `/v1/report` 398 ms during back-to-back scrapes at 10,000 nodes). At
/// nice 19 the scheduler gives it only what they leave: the scrape gets slower, the
/// report path does not. One thread also means one render at a time: a second scrape
/// waits in the queue instead of doubling the memory and the CPU taken.
pub async fn render_federation<F, T>(render: F) -> Result<T, RenderError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (reply, answer) = tokio::sync::oneshot::channel();
    queue_render(Box::new(move || {
        let _ = reply.send(render());
    }))
    .await?;
    answer
        .await
        .map_err(|_| RenderError("failed while rendering"))
}

/// Runs `render` on the federation render thread (see [`render_federation`]) and
/// answers at once with a response body that carries its text as it is rendered:
/// `render` gets a `flush` to hand each chunk of about [`FEDERATION_CHUNK`] bytes to
/// (it takes the string's contents). At 10,000 nodes the whole text is hundreds of
/// MiB; sent in chunks, the manager never holds more than a few of them, and the
/// scraper reads while the rest renders. A scraper that takes no chunk for
/// [`CHUNK_SEND_TIMEOUT`] loses its scrape; a render that stops before its end makes
/// the body end in an error (the connection is cut), never in a text that looks whole.
///
/// `gzip` (the scraper sent `Accept-Encoding: gzip`, as Prometheus does): the text is
/// compressed on the render thread, at its low priority, fastest level. The body is
/// then about a tenth of the text, so a tenth of the TLS encryption on the async
/// workers, which run at normal priority beside the reports (and of the bytes on the
/// network and of the scraper's decryption).
pub async fn stream_federation<F>(gzip: bool, render: F) -> Result<axum::body::Body, RenderError>
where
    F: FnOnce(&mut dyn FnMut(&mut String)) + Send + 'static,
{
    enum Chunk {
        Text(axum::body::Bytes),
        End,
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(2);
    let runtime = tokio::runtime::Handle::current();
    let send = move |c: Chunk| {
        // The timer is made inside block_on: it needs the runtime's context.
        runtime
            .block_on(async { tokio::time::timeout(CHUNK_SEND_TIMEOUT, tx.send(c)).await })
            .is_ok_and(|sent| sent.is_ok())
    };
    queue_render(Box::new(move || {
        use std::io::Write as _;
        let mut open = true;
        let packed_chunk = FEDERATION_CHUNK / 4;
        let mut z = gzip.then(|| {
            flate2::write::GzEncoder::new(
                Vec::with_capacity(packed_chunk * 5 / 4),
                flate2::Compression::fast(),
            )
        });
        let mut flush = |out: &mut String| {
            if !open {
                out.clear();
                return;
            }
            match &mut z {
                None => {
                    let text =
                        std::mem::replace(out, String::with_capacity(FEDERATION_CHUNK * 5 / 4));
                    open = send(Chunk::Text(text.into()));
                }
                Some(z) => {
                    // Into a Vec: cannot fail.
                    let _ = z.write_all(out.as_bytes());
                    out.clear();
                    if z.get_ref().len() >= packed_chunk {
                        let packed = std::mem::replace(
                            z.get_mut(),
                            Vec::with_capacity(packed_chunk * 5 / 4),
                        );
                        open = send(Chunk::Text(packed.into()));
                    }
                }
            }
        };
        render(&mut flush);
        if let (true, Some(z)) = (open, z) {
            open = match z.finish() {
                Ok(rest) => rest.is_empty() || send(Chunk::Text(rest.into())),
                Err(_) => false,
            };
        }
        if open {
            send(Chunk::End);
        }
    }))
    .await?;
    let chunks = futures_util::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Some(Chunk::Text(b)) => Some((Ok(b), Some(rx))),
            Some(Chunk::End) => None,
            None => Some((
                Err(std::io::Error::other(
                    "the /metrics render stopped before its end",
                )),
                None,
            )),
        }
    });
    Ok(axum::body::Body::from_stream(chunks))
}

/// Hands `job` to the render thread (started on first use); waits (off the async
/// workers) while its queue of 16 is full.
async fn queue_render(job: RenderJob) -> Result<(), RenderError> {
    static QUEUE: std::sync::OnceLock<Option<std::sync::mpsc::SyncSender<RenderJob>>> =
        std::sync::OnceLock::new();
    let queue = QUEUE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<RenderJob>(16);
        std::thread::Builder::new()
            .name("metrics-render".into())
            .spawn(move || {
                lower_this_threads_priority();
                while let Ok(job) = rx.recv() {
                    // A render that panics fails its own scrape (its reply or body is
                    // dropped unfinished), never every later one.
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                        tracing::error!("a /metrics render panicked; its scrape failed");
                    }
                }
            })
            .map_err(|e| tracing::error!("starting the /metrics render thread: {e}"))
            .ok()
            .map(|_| tx)
    });
    let queue = queue
        .as_ref()
        .ok_or(RenderError("could not be started"))?
        .clone();
    tokio::task::spawn_blocking(move || queue.send(job))
        .await
        .map_err(|_| RenderError("queue could not be reached"))?
        .map_err(|_| RenderError("has stopped"))
}

/// Nice 19 for the calling thread only (Linux: a thread id is a `PRIO_PROCESS` target).
fn lower_this_threads_priority() {
    // SAFETY: gettid and setpriority take plain integers and touch no memory of ours.
    let rc = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19)
    };
    if rc != 0 {
        tracing::warn!(
            "lowering the /metrics render thread's priority: {}; scrapes compete with reports for CPU",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn histogram_quantiles_and_text() {
        let h = Histogram::new();
        for _ in 0..98 {
            h.observe(Duration::from_micros(800));
        }
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(10));
        assert_eq!(h.quantile_bound(0.5), Some(0.001));
        assert_eq!(h.quantile_bound(0.99), Some(0.05));
        assert_eq!(h.quantile_bound(1.0), Some(f64::INFINITY));
        let mut s = String::new();
        h.render("x_seconds", "help", &mut s);
        assert!(s.contains("x_seconds_bucket{le=\"+Inf\"} 100"), "{s}");
        assert!(s.contains("x_seconds_bucket{le=\"0.001\"} 98"), "{s}");
        assert!(s.contains("x_seconds_count 100"));
    }

    /// The streamed body is the concatenation of the flushed chunks; a render that panics
    /// ends its body in an error (never a shorter text that looks whole) and the next
    /// scrape is served; a scraper that drops its body does not hold the render thread.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn federation_streams_its_chunks_and_a_failed_render_is_an_error() {
        let body = stream_federation(false, |flush| {
            for i in 0..3 {
                let mut s = format!("chunk {i}\n");
                flush(&mut s);
                assert!(s.is_empty(), "flush takes the text");
            }
        })
        .await
        .unwrap();
        let text = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        assert_eq!(&text[..], b"chunk 0\nchunk 1\nchunk 2\n");

        // gzip'd: one gzip stream of the same text, over several body chunks when it
        // is long; a render that breaks still ends the body in an error.
        let line = |i: usize| format!("sample{{n=\"{i}\"}} {}\n", i * 7919 % 1000);
        let body = stream_federation(true, move |flush| {
            for c in 0..40 {
                let mut s: String = (0..4000).map(|i| line(c * 4000 + i)).collect();
                flush(&mut s);
                assert!(s.is_empty(), "flush takes the text");
            }
        })
        .await
        .unwrap();
        let packed = axum::body::to_bytes(body, 64 << 20).await.unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&packed[..]), &mut text)
            .unwrap();
        let want: String = (0..160_000).map(line).collect();
        assert_eq!(text.len(), want.len());
        assert!(text == want, "the same text");
        assert!(
            packed.len() * 4 < want.len(),
            "{} of {}",
            packed.len(),
            want.len()
        );
        let body = stream_federation(true, |flush| {
            flush(&mut "x".repeat(1 << 20));
            panic!("a render that breaks");
        })
        .await
        .unwrap();
        assert!(axum::body::to_bytes(body, 64 << 20).await.is_err());

        let body = stream_federation(false, |flush| {
            flush(&mut "half of it\n".to_string());
            panic!("a render that breaks");
        })
        .await
        .unwrap();
        assert!(axum::body::to_bytes(body, 1 << 20).await.is_err());

        // Nobody reads this one: its render gives up (or finishes) and the thread goes on.
        let dropped = stream_federation(false, |flush| {
            for _ in 0..8 {
                flush(&mut "x".repeat(1 << 16));
            }
        })
        .await
        .unwrap();
        drop(dropped);
        let body = stream_federation(false, |flush| flush(&mut "after\n".to_string()))
            .await
            .unwrap();
        let text =
            tokio::time::timeout(Duration::from_secs(10), axum::body::to_bytes(body, 1 << 20))
                .await
                .expect("the render thread went on")
                .unwrap();
        assert_eq!(&text[..], b"after\n");
    }

    /// The render runs on one thread, niced to 19, and renders one scrape at a time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn federation_renders_on_one_low_priority_thread() {
        let running = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let jobs: Vec<_> = (0..4)
            .map(|i| {
                let running = running.clone();
                tokio::spawn(render_federation(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                    // SAFETY: getpriority of the calling thread; plain integers.
                    let nice = unsafe {
                        libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t)
                    };
                    let name = std::thread::current().name().unwrap_or("").to_string();
                    format!("{i} {now} {nice} {name}")
                }))
            })
            .collect();
        for (i, job) in jobs.into_iter().enumerate() {
            let out = job.await.unwrap().unwrap();
            assert_eq!(out, format!("{i} 0 19 metrics-render"), "{out}");
        }
    }
}

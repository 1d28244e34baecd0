//! Load generator for armada-manager, on loopback only: `ci/bench-manager.sh` runs it.
//!
//! - `burst --nodes N`: N new nodes register at once, each over its own new TLS
//!   connection; prints registrations per second and latency percentiles.
//! - `ingest --nodes N --interval S --duration D`: registers N nodes, then each sends
//!   one gzip'd report every S seconds (phases spread evenly) for D seconds; prints the
//!   achieved rate and latency percentiles.
//! - `max --nodes N --concurrency C --batch B --duration D`: C requests in flight,
//!   round-robin over N nodes, B snapshots per request, as fast as the manager acks.
//!
//! Every loop is bounded by a count or a deadline. Snapshots are `src/sim.rs`
//! (a Pine64-like board with 3 containers, ~3 KiB of JSON, ~1 KiB gzip'd).

// Synthetic snapshots: shared with the tests, not part of the library's API.
#[path = "../src/sim.rs"]
mod sim;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use protocol::wire::{NodeFacts, RegisterRequest, RegisterResponse, Role};

#[derive(Parser, Clone)]
struct Cli {
    /// The manager, on loopback.
    #[arg(long)]
    url: String,
    /// Cluster folder: ca.pem and token are read from it.
    #[arg(long)]
    cluster_dir: PathBuf,
    /// The manager's PID: its CPU time over the measured window is reported per snapshot.
    #[arg(long)]
    manager_pid: Option<u32>,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Clone)]
enum Mode {
    Burst {
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        /// Hostname prefix (a new one per run gives new nodes).
        #[arg(long, default_value = "burst")]
        prefix: String,
    },
    Ingest {
        #[arg(long, default_value_t = 10_000)]
        nodes: usize,
        #[arg(long, default_value_t = 10.0)]
        interval: f64,
        #[arg(long, default_value_t = 30)]
        duration: u64,
        #[arg(long, default_value_t = 256)]
        max_in_flight: usize,
        #[arg(long, default_value = "sim")]
        prefix: String,
        /// Meanwhile, full federation scrapes of `/metrics` back to back (admin token),
        /// and a `/v1/health` probe every 20 ms whose latency is reported.
        #[arg(long)]
        scrape: bool,
    },
    /// Opens N TLS connections, one request on each, and holds them open (as N agents
    /// with keep-alive connections would), to measure the manager's memory per connection.
    Idle {
        #[arg(long, default_value_t = 5000)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        hold: u64,
    },
    Max {
        #[arg(long, default_value_t = 10_000)]
        nodes: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        #[arg(long, default_value_t = 20)]
        duration: u64,
        #[arg(long, default_value = "sim")]
        prefix: String,
    },
}

struct Node {
    hostname: String,
    credential: String,
    seq: AtomicU64,
    /// The node's snapshot JSON split around its `"seq":` value.
    head: String,
    tail: String,
    /// Bodies compressed before the measured window (`max`), sent oldest first so the
    /// window measures the manager rather than this process's gzip.
    ready: std::sync::Mutex<std::collections::VecDeque<Vec<u8>>>,
}

/// Memory the `max` phase may spend on bodies compressed ahead of the window.
const PREPARED_BUDGET: usize = 256 << 20;

impl Node {
    /// The next body to send: a prepared one if any is left, else compressed now.
    fn take_body(&self, n: usize) -> Vec<u8> {
        let prepared = self.ready.lock().ok().and_then(|mut q| q.pop_front());
        prepared.unwrap_or_else(|| self.next_body(n))
    }

    /// Compresses `count` bodies of `n` snapshots ahead of time.
    fn prepare(&self, n: usize, count: usize) {
        let bodies: Vec<Vec<u8>> = (0..count).map(|_| self.next_body(n)).collect();
        if let Ok(mut q) = self.ready.lock() {
            q.extend(bodies);
        }
    }

    /// A gzip'd batch of `n` new snapshots.
    fn next_body(&self, n: usize) -> Vec<u8> {
        let first = self.seq.fetch_add(n as u64, Ordering::Relaxed);
        let mut json = String::with_capacity((self.head.len() + self.tail.len() + 24) * n + 64);
        json.push_str("{\"protocol\":1,\"dropped_total\":0,\"snapshots\":[");
        for i in 0..n as u64 {
            if i > 0 {
                json.push(',');
            }
            json.push_str(&self.head);
            json.push_str(&(first + i).to_string());
            json.push_str(&self.tail);
        }
        json.push_str("]}");
        let mut e = flate2::write::GzEncoder::new(
            Vec::with_capacity(json.len() / 3),
            flate2::Compression::fast(),
        );
        let _ = e.write_all(json.as_bytes());
        e.finish().unwrap_or_default()
    }
}

fn facts(hostname: &str) -> NodeFacts {
    NodeFacts {
        hostname: hostname.into(),
        board: "pine64".into(),
        role: Role::Worker,
        machine_id: format!("machine-{hostname}"),
        arch: "aarch64".into(),
        kernel: "6.1.0".into(),
        cpus: 4,
        memory_bytes: 2 << 30,
        docker_version: Some("20.10.24".into()),
        agent_version: "loadgen".into(),
        engine_id: None,
    }
}

fn client(cli: &Cli, pooled: bool) -> Result<reqwest::Client> {
    let ca = std::fs::read(cli.cluster_dir.join("ca.pem")).context("reading ca.pem")?;
    let mut b = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca)?])
        .timeout(Duration::from_secs(60));
    if !pooled {
        b = b.pool_max_idle_per_host(0);
    }
    Ok(b.build()?)
}

fn token(cli: &Cli) -> Result<String> {
    let text = std::fs::read_to_string(cli.cluster_dir.join("token")).context("reading token")?;
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with("armada1."))
        .map(String::from)
        .context("no bootstrap token in the token file")
}

async fn register_one(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    hostname: &str,
) -> Result<RegisterResponse> {
    let req = RegisterRequest {
        protocol: protocol::PROTOCOL_VERSION,
        token: token.into(),
        credential: None,
        facts: facts(hostname),
        labels: Default::default(),
        swarm: None,
    };
    let r = http
        .post(format!("{url}/v1/register"))
        .json(&req)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!(
            "register {hostname}: HTTP {}: {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
    }
    Ok(r.json().await?)
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

/// "manager CPU ..." for the window that started at `cpu0` and stored `snapshots`.
fn manager_cpu(cli: &Cli, cpu0: Option<f64>, snapshots: usize) -> String {
    let (Some(pid), Some(c0)) = (cli.manager_pid, cpu0) else {
        return String::new();
    };
    let Some(c1) = cpu_seconds(pid) else {
        return String::new();
    };
    let used = c1 - c0;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    if snapshots == 0 || used <= 0.0 {
        return String::new();
    }
    format!(
        "\n  manager CPU {used:.2} s for {snapshots} snapshots = {:.0} us/snapshot -> {:.0} snapshots/s if the manager had the {cores} cores to itself",
        used / snapshots as f64 * 1e6,
        snapshots as f64 / used * cores
    )
}

/// The 99th percentile in ms (0 without samples).
fn p99_ms(v: &[u64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1] as f64 / 1000.0
}

/// (count, microseconds each, bytes of the last, whether it came gzip'd).
type Scrapes = (usize, Vec<u64>, u64, bool);

/// Full `/metrics` scrapes back to back until `end`: (count, seconds each, bytes of the
/// last). On a thread and runtime of its own, and the body is counted chunk by chunk,
/// not kept: a scrape is hundreds of MiB of TLS to decrypt, and on the one worker that
/// sends the reports it delayed them, which the report latencies then counted as the
/// manager's (a Prometheus server is another process, too).
fn scrape_thread(cli: &Cli, end: Instant) -> std::thread::JoinHandle<Result<Scrapes>> {
    let cli = cli.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let http = client(&cli, true)?;
            let admin = std::fs::read_to_string(cli.cluster_dir.join("admin-token"))
                .context("reading admin-token")?;
            let mut took = Vec::new();
            let mut last_len = 0;
            let mut gzipped = false;
            while Instant::now() < end {
                let t = Instant::now();
                // As Prometheus asks (a manager that does not gzip answers plain text).
                let mut r = http
                    .get(format!("{}/metrics", cli.url))
                    .bearer_auth(admin.trim())
                    .header(reqwest::header::ACCEPT_ENCODING, "gzip")
                    .send()
                    .await?;
                let status = r.status();
                // Counted as sent (not inflated): the bytes on the wire.
                gzipped = r
                    .headers()
                    .get(reqwest::header::CONTENT_ENCODING)
                    .is_some_and(|v| v == "gzip");
                let mut len = 0u64;
                while let Some(c) = r.chunk().await? {
                    len += c.len() as u64;
                }
                if status != 200 || len == 0 {
                    bail!("/metrics: HTTP {status}, {len} bytes");
                }
                last_len = len;
                took.push(t.elapsed().as_micros() as u64);
            }
            Ok::<_, anyhow::Error>((took.len(), took, last_len, gzipped))
        })
    })
}

/// The manager's own histogram of report latency (`armada_manager_ingest_latency_seconds`:
/// from the request's body read to its durable ack), bucket counts by upper bound.
async fn manager_ingest_buckets(cli: &Cli) -> Result<Vec<(f64, u64)>> {
    let http = client(cli, true)?;
    let admin = std::fs::read_to_string(cli.cluster_dir.join("admin-token"))
        .context("reading admin-token")?;
    let text = http
        .get(format!("{}/metrics?federate=false", cli.url))
        .bearer_auth(admin.trim())
        .send()
        .await?
        .text()
        .await?;
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("armada_manager_ingest_latency_seconds_bucket{le=\"")
        else {
            continue;
        };
        let Some((le, n)) = rest.split_once("\"} ") else {
            continue;
        };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse()?
        };
        out.push((le, n.trim().parse()?));
    }
    Ok(out)
}

/// " manager_p99_le_ms=X": the smallest bucket bound of the manager's own histogram
/// under which 99 % of the window's reports fall (empty when unknown).
fn manager_p99(before: &[(f64, u64)], after: &[(f64, u64)]) -> String {
    if before.len() != after.len() || after.is_empty() {
        return String::new();
    }
    let d: Vec<(f64, u64)> = after
        .iter()
        .zip(before)
        .map(|((le, a), (_, b))| (*le, a.saturating_sub(*b)))
        .collect();
    let total = d.last().map_or(0, |x| x.1);
    if total == 0 {
        return String::new();
    }
    let want = (total as f64 * 0.99).ceil() as u64;
    d.iter()
        .find(|(_, cum)| *cum >= want)
        .map(|(le, _)| format!(" manager_p99_le_ms={}", le * 1000.0))
        .unwrap_or_default()
}

/// `/v1/health` every 20 ms until `end`, with a node's credential: latencies in us.
async fn health_probe(cli: &Cli, node: Arc<Node>, end: Instant) -> Result<Vec<u64>> {
    let http = client(cli, true)?;
    let mut lat = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while Instant::now() < end {
        tick.tick().await;
        let t = Instant::now();
        let r = http
            .get(format!("{}/v1/health", cli.url))
            .bearer_auth(&node.credential)
            .send()
            .await?;
        let _ = r.bytes().await?;
        lat.push(t.elapsed().as_micros() as u64);
    }
    Ok(lat)
}

fn percentiles(mut v: Vec<u64>) -> String {
    if v.is_empty() {
        return "no samples".into();
    }
    v.sort_unstable();
    let p =
        |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1] as f64 / 1000.0;
    format!(
        "p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        p(0.5),
        p(0.9),
        p(0.99),
        p(1.0)
    )
}

/// Registers `n` nodes (pooled connections, 64 at a time) and prepares their templates.
async fn setup_nodes(cli: &Cli, n: usize, prefix: &str) -> Result<Vec<Arc<Node>>> {
    let http = client(cli, true)?;
    let token = token(cli)?;
    let t0 = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (http, token, url, next, prefix) = (
            http.clone(),
            token.clone(),
            cli.url.clone(),
            next.clone(),
            prefix.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(out);
                }
                let hostname = format!("{prefix}-{i:05}");
                let r = register_one(&http, &url, &token, &hostname).await?;
                let snap = sim::snapshot(
                    &hostname,
                    &format!("lg{}-{}", std::process::id(), r.node_id),
                    0,
                    armada_manager::now_ms(),
                );
                let json = serde_json::to_string(&snap)?;
                let at = json.find("\"seq\":0,").context("seq in snapshot JSON")? + 6;
                out.push(Arc::new(Node {
                    hostname,
                    credential: r.credential,
                    seq: AtomicU64::new(1),
                    head: json[..at].to_string(),
                    tail: json[at + 1..].to_string(),
                    ready: Default::default(),
                }));
            }
        }));
    }
    let mut nodes = Vec::with_capacity(n);
    for t in tasks {
        nodes.extend(t.await??);
    }
    nodes.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    eprintln!(
        "[loadgen] {n} nodes registered in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(nodes)
}

async fn send_report(http: &reqwest::Client, url: &str, node: &Node, batch: usize) -> Result<u64> {
    let body = node.take_body(batch);
    let t = Instant::now();
    let r = http
        .post(format!("{url}/v1/report"))
        .bearer_auth(&node.credential)
        .header("Content-Encoding", "gzip")
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = r.status();
    let _ = r.bytes().await?;
    if status != 200 {
        bail!("report from {}: HTTP {status}", node.hostname);
    }
    Ok(t.elapsed().as_micros() as u64)
}

async fn burst(cli: &Cli, n: usize, prefix: &str) -> Result<()> {
    // No pooling: each registration is a new node's first TLS connection.
    let http = client(cli, false)?;
    let token = token(cli)?;
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (http, token, url) = (http.clone(), token.clone(), cli.url.clone());
            let hostname = format!("{prefix}-{i:05}");
            tokio::spawn(async move {
                let t = Instant::now();
                register_one(&http, &url, &token, &hostname)
                    .await
                    .map(|_| t.elapsed().as_micros() as u64)
            })
        })
        .collect();
    let mut lat = Vec::with_capacity(n);
    let mut errors = 0;
    for t in tasks {
        match t.await? {
            Ok(us) => lat.push(us),
            Err(e) => {
                if errors == 0 {
                    eprintln!("[loadgen] first error: {e:#}");
                }
                errors += 1;
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "burst: {} registrations of new nodes in {secs:.2} s = {:.0} registrations/s; {}; errors {errors}",
        lat.len(),
        lat.len() as f64 / secs,
        percentiles(lat)
    );
    Ok(())
}

async fn ingest(
    cli: &Cli,
    n: usize,
    interval: f64,
    duration: u64,
    max_in_flight: usize,
    prefix: &str,
    scrape: bool,
) -> Result<()> {
    let nodes = setup_nodes(cli, n, prefix).await?;
    let http = client(cli, true)?;
    let sem = Arc::new(tokio::sync::Semaphore::new(max_in_flight));
    let lat = Arc::new(std::sync::Mutex::new(Vec::new()));
    let errors = Arc::new(AtomicU64::new(0));
    let skipped = Arc::new(AtomicU64::new(0));
    let rate = n as f64 / interval;
    let buckets0 = manager_ingest_buckets(cli).await.unwrap_or_default();
    let cpu0 = cli.manager_pid.and_then(cpu_seconds);
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(duration);
    let side = scrape.then(|| {
        let (c2, node) = (cli.clone(), nodes[0].clone());
        (
            scrape_thread(cli, end),
            tokio::spawn(async move { health_probe(&c2, node, end).await }),
        )
    });
    let mut issued = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut handles = Vec::new();
    while Instant::now() < end {
        tick.tick().await;
        let due = (t0.elapsed().as_secs_f64() * rate) as u64;
        while issued < due {
            let node = nodes[(issued as usize) % n].clone();
            issued += 1;
            let Ok(permit) = sem.clone().try_acquire_owned() else {
                // The manager is not keeping up: count it instead of queueing forever.
                skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let (http, url, lat, errors) =
                (http.clone(), cli.url.clone(), lat.clone(), errors.clone());
            handles.push(tokio::spawn(async move {
                match send_report(&http, &url, &node, 1).await {
                    Ok(us) => lat.lock().map(|mut l| l.push(us)).unwrap_or(()),
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                drop(permit);
            }));
        }
        handles.retain(|h| !h.is_finished());
    }
    for h in handles {
        let _ = h.await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let lat = std::mem::take(&mut *lat.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    let cpu = manager_cpu(cli, cpu0, lat.len());
    let mut health_p99 = String::new();
    if let Some((scrapes, health)) = side {
        let (count, took, bytes, gzipped) = scrapes
            .join()
            .map_err(|_| anyhow::anyhow!("the scrape thread panicked"))??;
        let health = health.await??;
        println!(
            "during {count} full /metrics scrapes back to back (each {}, {:.0} MiB{}): /v1/health {}",
            percentiles(took),
            bytes as f64 / (1 << 20) as f64,
            if gzipped { " gzip'd" } else { "" },
            percentiles(health.clone())
        );
        health_p99 = format!(" scrapes={count} health_p99_ms={:.1}", p99_ms(&health));
    }
    let buckets1 = manager_ingest_buckets(cli).await.unwrap_or_default();
    println!(
        "summary acked={} p99_ms={:.1}{health_p99}{}",
        lat.len(),
        p99_ms(&lat),
        manager_p99(&buckets0, &buckets1)
    );
    println!(
        "ingest: {n} nodes every {interval} s for {duration} s: {} reports acked = {:.0} reports/s (target {rate:.0}); {}; errors {}, skipped (over {max_in_flight} in flight) {}{cpu}",
        lat.len(),
        lat.len() as f64 / secs,
        percentiles(lat),
        errors.load(Ordering::Relaxed),
        skipped.load(Ordering::Relaxed)
    );
    Ok(())
}

async fn max(
    cli: &Cli,
    n: usize,
    concurrency: usize,
    batch: usize,
    duration: u64,
    prefix: &str,
) -> Result<()> {
    let nodes = Arc::new(setup_nodes(cli, n, prefix).await?);
    // Enough prepared bodies for the window at up to ~50,000 snapshots/s, within budget.
    let t_prep = Instant::now();
    let body_len = nodes
        .first()
        .map(|x| x.next_body(batch).len())
        .unwrap_or(1)
        .max(1);
    let want = (50_000 * duration as usize / batch).div_ceil(n.max(1));
    let per_node = want.min(PREPARED_BUDGET / (n.max(1) * body_len)).max(1);
    for node in nodes.iter() {
        node.prepare(batch, per_node);
    }
    eprintln!(
        "[loadgen] {per_node} bodies of ~{body_len} bytes per node compressed ahead in {:.1} s",
        t_prep.elapsed().as_secs_f64()
    );
    let http = client(cli, true)?;
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let cpu0 = cli.manager_pid.and_then(cpu_seconds);
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(duration);
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, url, nodes, next, errors) = (
                http.clone(),
                cli.url.clone(),
                nodes.clone(),
                next.clone(),
                errors.clone(),
            );
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < end {
                    let node = &nodes[next.fetch_add(1, Ordering::Relaxed) % nodes.len()];
                    match send_report(&http, &url, node, batch).await {
                        Ok(us) => lat.push(us),
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = manager_cpu(cli, cpu0, lat.len() * batch);
    println!(
        "summary acked={} p99_ms={:.1} reports_per_s={:.0}",
        lat.len() * batch,
        p99_ms(&lat),
        (lat.len() * batch) as f64 / secs
    );
    println!(
        "max: {n} nodes, {concurrency} in flight, {batch} snapshots/request, {duration} s: {:.0} requests/s = {:.0} reports/s; {}; errors {}{cpu}",
        lat.len() as f64 / secs,
        (lat.len() * batch) as f64 / secs,
        percentiles(lat),
        errors.load(Ordering::Relaxed)
    );
    Ok(())
}

async fn idle(cli: &Cli, n: usize, hold: u64) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = std::fs::read(cli.cluster_dir.join("ca.pem")).context("reading ca.pem")?;
    let admin = std::fs::read_to_string(cli.cluster_dir.join("admin-token"))
        .context("reading admin-token")?;
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject;
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(c?)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let hostport = cli
        .url
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    let host = hostport
        .rsplit_once(':')
        .map(|(h, _)| h.to_string())
        .context("host:port in --url")?;
    let request = format!(
        "GET /v1/health HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\n\r\n",
        admin.trim()
    );
    let t0 = Instant::now();
    let mut open = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(64) {
        let mut tasks = Vec::new();
        for _ in chunk {
            let (connector, hostport, host, request) = (
                connector.clone(),
                hostport.clone(),
                host.clone(),
                request.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let tcp = tokio::net::TcpStream::connect(&hostport).await?;
                let name = rustls_pki_types::ServerName::try_from(host)?;
                let mut tls = connector.connect(name, tcp).await?;
                tls.write_all(request.as_bytes()).await?;
                let mut buf = [0u8; 1024];
                let got = tls.read(&mut buf).await?;
                if !buf[..got].starts_with(b"HTTP/1.1 200") {
                    bail!(
                        "unexpected answer: {}",
                        String::from_utf8_lossy(&buf[..got])
                    );
                }
                Ok::<_, anyhow::Error>(tls)
            }));
        }
        for t in tasks {
            open.push(t.await??);
        }
    }
    println!(
        "idle: {} TLS connections opened in {:.1} s (one request each), held {hold} s",
        open.len(),
        t0.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(hold)).await;
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if !(cli.url.starts_with("https://127.")
        || cli.url.starts_with("https://localhost")
        || cli.url.starts_with("https://[::1]"))
    {
        bail!("--url must be a loopback address (got {})", cli.url);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async {
        match &cli.mode {
            Mode::Burst { nodes, prefix } => burst(&cli, *nodes, prefix).await,
            Mode::Ingest {
                nodes,
                interval,
                duration,
                max_in_flight,
                prefix,
                scrape,
            } => {
                ingest(
                    &cli,
                    *nodes,
                    *interval,
                    *duration,
                    *max_in_flight,
                    prefix,
                    *scrape,
                )
                .await
            }
            Mode::Idle { connections, hold } => idle(&cli, *connections, *hold).await,
            Mode::Max {
                nodes,
                concurrency,
                batch,
                duration,
                prefix,
            } => max(&cli, *nodes, *concurrency, *batch, *duration, prefix).await,
        }
    })
}

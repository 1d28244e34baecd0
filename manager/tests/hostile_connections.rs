//! Hostile connections against the real manager binary on 127.0.0.1 (issue #10): a
//! flood of idle TLS connections plus clients trickling 3 MiB bodies, slowloris, and
//! a manager held at a 300-fd limit. Each test prints what it did and what it saw.
//! The three run one at a time (they measure memory and time) and each is bounded: at
//! most a few hundred connections, every wait capped.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The longest any attacker connection is watched.
const WATCH: Duration = Duration::from_secs(45);

async fn tls_open(tls: &TlsConnector, addr: SocketAddr) -> Option<TlsStream<TcpStream>> {
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tcp = tokio::time::timeout(Duration::from_secs(20), TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    tokio::time::timeout(Duration::from_secs(20), tls.connect(name, tcp))
        .await
        .ok()?
        .ok()
}

/// Reads until the server closes (EOF or error); returns what it sent, or `None` if
/// still open after [`WATCH`].
async fn until_closed<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = tokio::time::Instant::now() + WATCH;
    loop {
        match tokio::time::timeout_at(end, r.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => {
                if got.len() < 4096 {
                    got.extend_from_slice(&buf[..n]);
                }
            }
        }
    }
}

fn secs(d: &[Duration]) -> String {
    let mut v: Vec<f64> = d.iter().map(|d| d.as_secs_f64()).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return "none".into();
    }
    format!(
        "median {:.1} s, max {:.1} s over {}",
        v[v.len() / 2],
        v[v.len() - 1],
        v.len()
    )
}

/// One admin `GET /v1/nodes` on a new connection: its status and latency.
async fn admin_get(c: &TestCluster, url: &str) -> (u16, Duration) {
    let http = client(c);
    let t = Instant::now();
    let status = match http
        .get(format!("{url}/v1/nodes"))
        .bearer_auth(&c.admin)
        .timeout(Duration::from_secs(15))
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    };
    (status, t.elapsed())
}

/// Opens `n` idle TLS connections (16 handshakes at a time); each task returns how long
/// the server kept it open after the handshake (`None`: still open, or never opened).
fn idle_flood(
    set: &mut JoinSet<Option<Duration>>,
    n: usize,
    tls: &TlsConnector,
    addr: SocketAddr,
) -> Arc<std::sync::atomic::AtomicUsize> {
    let opened = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(16));
    for _ in 0..n {
        let (tls, gate, opened) = (tls.clone(), gate.clone(), opened.clone());
        set.spawn(async move {
            let permit = gate.acquire_owned().await.ok()?;
            let mut s = tls_open(&tls, addr).await?;
            drop(permit);
            opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let t = Instant::now();
            until_closed(&mut s).await?;
            Some(t.elapsed())
        });
    }
    opened
}

struct Trickle {
    status_line: String,
    /// Headers sent to the first response byte (None: no response).
    answered_after: Option<Duration>,
    /// Body bytes sent before the answer came.
    sent_before_answer: usize,
    /// Headers sent to the server's close.
    closed_after: Option<Duration>,
}

/// POST /v1/report announcing a 3 MiB body, then 4 KiB every 100 ms.
async fn trickle(tls: TlsConnector, addr: SocketAddr, bearer: Option<String>) -> Option<Trickle> {
    let s = tls_open(&tls, addr).await?;
    let (mut r, mut w) = tokio::io::split(s);
    let auth = bearer
        .map(|b| format!("Authorization: Bearer {b}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST /v1/report HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n",
        3 << 20
    );
    w.write_all(head.as_bytes()).await.ok()?;
    let t = Instant::now();
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sent_w = sent.clone();
    let writer = tokio::spawn(async move {
        let chunk = vec![b' '; 4096];
        for _ in 0..(3 << 20) / 4096 {
            if w.write_all(&chunk).await.is_err() {
                return;
            }
            sent_w.fetch_add(chunk.len(), std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut first = [0u8; 64];
    let end = tokio::time::Instant::now() + WATCH;
    let (status_line, answered_after, sent_before_answer) =
        match tokio::time::timeout_at(end, r.read(&mut first)).await {
            Ok(Ok(n)) if n > 0 => {
                let line = String::from_utf8_lossy(&first[..n])
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                (
                    line,
                    Some(t.elapsed()),
                    sent.load(std::sync::atomic::Ordering::Relaxed),
                )
            }
            _ => (
                String::new(),
                None,
                sent.load(std::sync::atomic::Ordering::Relaxed),
            ),
        };
    let closed_after = until_closed(&mut r).await.map(|_| t.elapsed());
    writer.abort();
    Some(Trickle {
        status_line,
        answered_after,
        sent_before_answer,
        closed_after,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tls_flood_and_trickled_bodies_leave_the_admin_served() {
    let _one_at_a_time = SERIAL.lock().await;
    raise_own_fd_limit();
    let tmp = tempfile::tempdir().unwrap();
    let c = make_cluster(&tmp.path().join("cluster"));
    let m = spawn_manager(&c, &tmp.path().join("state"), &[], None);
    let http = client(&c);
    let node = register(&http, &m.url, &c.token, facts("pine-01", "m1")).await;
    let r = post_report(&http, &m.url, &node.credential, batch("pine-01", "i", 0..3)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(admin_get(&c, &m.url).await.0, 200);
    let base = m.rss_bytes();
    println!(
        "[flood] manager pid {} at {}: RSS {} MiB before the flood",
        m.pid(),
        m.url,
        base >> 20
    );

    let tls = tls_connector(&c);
    let mut idle = JoinSet::new();
    let opened = idle_flood(&mut idle, 300, &tls, m.addr);
    let mut tricklers = JoinSet::new();
    for i in 0..48 {
        // 40 without a credential (answered 401 from the headers), 8 with a node's
        // (their body is read, slowly, until the body timeout cuts it).
        let bearer = (i >= 40).then(|| node.credential.clone());
        tricklers.spawn(trickle(tls.clone(), m.addr, bearer));
    }
    // Memory, sampled while the flood lasts.
    let pid_rss = {
        let pid = m.pid();
        move || {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("VmRSS:"))
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|v| v.parse::<u64>().ok())
                })
                .map(|kb| kb * 1024)
                .unwrap_or(0)
        }
    };
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        tokio::spawn(async move {
            let mut max = 0u64;
            for _ in 0..400 {
                if !sampling.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                max = max.max(pid_rss());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            max
        })
    };
    // Wait until the idle connections are up (bounded), then the admin asks.
    let t = Instant::now();
    while opened.load(std::sync::atomic::Ordering::Relaxed) < 300
        && t.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let up = opened.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "[flood] {up} idle TLS connections open after {:.1} s, 48 tricklers sending; manager holds {} fds",
        t.elapsed().as_secs_f64(),
        m.open_fds()
    );
    let mut admin = Vec::new();
    for _ in 0..5 {
        admin.push(admin_get(&c, &m.url).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("[flood] admin GET /v1/nodes during the flood: {admin:?}");

    let mut idle_closed = Vec::new();
    let mut idle_open = 0;
    while let Some(r) = idle.join_next().await {
        match r.unwrap() {
            Some(d) => idle_closed.push(d),
            None => idle_open += 1,
        }
    }
    let (mut unauth, mut auth) = (Vec::new(), Vec::new());
    let mut i = 0;
    while let Some(r) = tricklers.join_next().await {
        let tr = r.unwrap().expect("a trickler connected");
        if tr.status_line.contains(" 401") {
            unauth.push(tr);
        } else {
            auth.push(tr);
        }
        i += 1;
    }
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.await.unwrap();
    println!(
        "[flood] idle connections closed by the server after their handshake: {} ({} still open after {} s)",
        secs(&idle_closed),
        idle_open,
        WATCH.as_secs()
    );
    let answered: Vec<Duration> = unauth.iter().filter_map(|t| t.answered_after).collect();
    let closed: Vec<Duration> = unauth.iter().filter_map(|t| t.closed_after).collect();
    println!(
        "[flood] unauthenticated tricklers: {} answered 401 after {} having sent at most {} body bytes; closed after {}",
        unauth.len(),
        secs(&answered),
        unauth.iter().map(|t| t.sent_before_answer).max().unwrap_or(0),
        secs(&closed)
    );
    let closed_auth: Vec<Duration> = auth.iter().filter_map(|t| t.closed_after).collect();
    println!(
        "[flood] tricklers with a node credential: {} (status lines {:?}) closed after {}",
        auth.len(),
        auth.iter()
            .map(|t| t.status_line.clone())
            .collect::<std::collections::BTreeSet<_>>(),
        secs(&closed_auth)
    );
    println!(
        "[flood] manager RSS: {} MiB before, peak {} MiB (+{} MiB), {} MiB after",
        base >> 20,
        peak >> 20,
        peak.saturating_sub(base) >> 20,
        m.rss_bytes() >> 20
    );

    assert_eq!(i, 48);
    assert!(up >= 290, "the idle connections were opened ({up})");
    assert!(
        admin
            .iter()
            .all(|(s, d)| *s == 200 && *d < Duration::from_secs(5)),
        "the admin is served during the flood: {admin:?}"
    );
    assert_eq!(unauth.len(), 40, "every unauthenticated trickler got 401");
    assert!(
        unauth.iter().all(
            |t| t.answered_after.is_some_and(|d| d < Duration::from_secs(5))
                && t.sent_before_answer < (1 << 20)
        ),
        "401 from the headers, before the body was read"
    );
    assert_eq!(idle_open, 0, "every idle connection was closed");
    assert!(idle_closed.iter().all(|d| *d <= Duration::from_secs(30)));
    for t in unauth.iter().chain(&auth) {
        assert!(
            t.closed_after.is_some_and(|d| d <= Duration::from_secs(30)),
            "a trickler was closed within 30 s ({:?})",
            t.closed_after
        );
    }
    assert!(
        peak.saturating_sub(base) <= 64 << 20,
        "RSS grew by at most 64 MiB ({} MiB)",
        peak.saturating_sub(base) >> 20
    );
    assert_eq!(admin_get(&c, &m.url).await.0, 200, "served after the flood");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed() {
    let _one_at_a_time = SERIAL.lock().await;
    raise_own_fd_limit();
    let tmp = tempfile::tempdir().unwrap();
    let c = make_cluster(&tmp.path().join("cluster"));
    let m = spawn_manager(&c, &tmp.path().join("state"), &[], None);
    let tls = tls_connector(&c);
    let gate = Arc::new(Semaphore::new(16));
    let mut set = JoinSet::new();
    let t0 = Instant::now();
    for _ in 0..500 {
        let (tls, gate) = (tls.clone(), gate.clone());
        let addr = m.addr;
        set.spawn(async move {
            let permit = gate.acquire_owned().await.ok()?;
            let s = tls_open(&tls, addr).await?;
            drop(permit);
            let (mut r, mut w) = tokio::io::split(s);
            w.write_all(b"GET /v1/nodes HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
                .await
                .ok()?;
            let t = Instant::now();
            // One header byte a second, at most 60: the head never ends.
            let writer = tokio::spawn(async move {
                for _ in 0..60 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if w.write_all(b"a").await.is_err() {
                        return;
                    }
                }
            });
            let got = until_closed(&mut r).await;
            writer.abort();
            Some((t.elapsed(), got?))
        });
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let admin = admin_get(&c, &m.url).await;
    println!(
        "[slowloris] 500 connections dribbling a header byte a second; after {:.1} s the manager holds {} fds; admin GET /v1/nodes: {admin:?}",
        t0.elapsed().as_secs_f64(),
        m.open_fds()
    );
    let mut closed = Vec::new();
    let mut failed = 0;
    while let Some(r) = set.join_next().await {
        match r.unwrap() {
            Some((d, _)) => closed.push(d),
            None => failed += 1,
        }
    }
    println!(
        "[slowloris] closed by the server after their first header byte: {}; {failed} not opened or still open after {} s",
        secs(&closed),
        WATCH.as_secs()
    );
    assert_eq!(
        admin.0, 200,
        "the admin is served among the slowloris connections"
    );
    assert_eq!(closed.len(), 500, "every slowloris connection was closed");
    assert!(closed.iter().all(|d| *d <= Duration::from_secs(30)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_a_300_fd_limit_the_admin_still_gets_in() {
    let _one_at_a_time = SERIAL.lock().await;
    raise_own_fd_limit();
    let tmp = tempfile::tempdir().unwrap();
    let c = make_cluster(&tmp.path().join("cluster"));
    let m = spawn_manager(&c, &tmp.path().join("state"), &[], Some(300));
    let limit = std::fs::read_to_string(format!("/proc/{}/limits", m.pid())).unwrap();
    let line = limit
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_string();
    println!("[fd-limit] manager pid {}: {line}", m.pid());
    assert!(line.split_whitespace().any(|w| w == "300"), "{line}");

    // 400 idle TLS connections: more than the process could hold.
    let tls = tls_connector(&c);
    let mut set = JoinSet::new();
    let opened = idle_flood(&mut set, 400, &tls, m.addr);
    let t = Instant::now();
    while opened.load(std::sync::atomic::Ordering::Relaxed) < 400
        && t.elapsed() < Duration::from_secs(8)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fds = m.open_fds();
    let mut admin = Vec::new();
    for _ in 0..3 {
        admin.push(admin_get(&c, &m.url).await);
    }
    println!(
        "[fd-limit] {} attacker handshakes completed, manager holds {fds} fds; admin GET /v1/nodes: {admin:?}",
        opened.load(std::sync::atomic::Ordering::Relaxed)
    );
    let http = client(&c);
    let node = register(&http, &m.url, &c.token, facts("pine-02", "m2")).await;
    let r = post_report(&http, &m.url, &node.credential, batch("pine-02", "i", 0..1)).await;
    println!(
        "[fd-limit] a node registers and reports among them: {}",
        r.status()
    );
    set.abort_all();
    assert!(fds < 300, "the manager stays below its fd limit ({fds})");
    assert!(
        admin
            .iter()
            .all(|(s, d)| *s == 200 && *d < Duration::from_secs(5)),
        "the admin is served at the fd limit: {admin:?}"
    );
    assert_eq!(r.status(), 200);
}

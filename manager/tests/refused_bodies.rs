//! A body refused as too large still gets its 413 to the client, over TLS, whatever its
//! size (schemathesis' coverage phase found a 100,000-byte body answered by a closed
//! connection: the manager closed with the unread body in its receive buffer, so the
//! kernel sent a reset that destroyed the 413 before the client read it). And the
//! lingering close that fixes it stays bounded: a client that keeps sending is cut
//! after about 1 MiB or 2 s.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The head of a POST to the cockpit's scale endpoint (bodies at most 4 KiB).
fn scale_head(admin: &str, content_length: usize) -> String {
    format!(
        "POST /v1/services/web/scale HTTP/1.1\r\nhost: 127.0.0.1\r\n\
         authorization: Bearer {admin}\r\ncontent-type: application/json\r\n\
         content-length: {content_length}\r\n\r\n"
    )
}

/// What the client saw: the bytes it read before EOF or an error, how many body
/// bytes it could write, and the read error if any.
struct Seen {
    read: Vec<u8>,
    written: usize,
    read_error: Option<std::io::Error>,
    closed_after: Duration,
}

/// Like Python requests: sends the whole head and body first (chunks of 16 KiB,
/// stopping at the first write error), then reads the answer until it is complete, EOF
/// or an error.
/// `pause` between chunks makes a slow sender.
async fn post(c: &TestCluster, url: &str, head: &str, body_len: usize, pause: Duration) -> Seen {
    let addr: std::net::SocketAddr = url.trim_start_matches("https://").parse().unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tls_connector(c).connect(name, tcp).await.unwrap();
    let started = Instant::now();
    tls.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'x'; 16 << 10];
    let mut written = 0;
    while written < body_len {
        let n = chunk.len().min(body_len - written);
        let w = tokio::time::timeout(Duration::from_secs(10), tls.write_all(&chunk[..n])).await;
        match w {
            Ok(Ok(())) => written += n,
            Ok(Err(_)) => break,
            Err(_) => panic!("writing the body stalled for 10 s after {written} bytes"),
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    let _ = tls.flush().await;
    let mut read = Vec::new();
    let mut buf = vec![0u8; 16 << 10];
    let mut read_error = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => {
                read.extend_from_slice(&buf[..n]);
                // A small refused body may be read whole and the connection kept.
                if complete(&read) {
                    break;
                }
            }
            Ok(Err(e)) => {
                read_error = Some(e);
                break;
            }
            Err(_) => panic!("no answer nor close in 10 s"),
        }
    }
    Seen {
        read,
        written,
        read_error,
        closed_after: started.elapsed(),
    }
}

/// Whether `raw` holds a whole response (head and its Content-Length of body).
fn complete(raw: &[u8]) -> bool {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    len.is_some_and(|n| raw.len() >= end + 4 + n)
}

/// The status and JSON body of the one response in `raw`.
fn answer(raw: &[u8]) -> Option<(u16, serde_json::Value)> {
    let text = std::str::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    Some((status, serde_json::from_str(body).ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_gets_its_413_json_at_every_size() {
    let tmp = tempfile::tempdir().unwrap();
    let c = make_cluster(&tmp.path().join("cluster"));
    let m = start(config(&c, &tmp.path().join("state"))).await;
    let t0 = Instant::now();
    // Several sizes, each several times: whether the reset beat the 413 was a race.
    for size in [5_000usize, 20_000, 100_000, 300_000, 1_000_000] {
        for round in 0..3 {
            // 2 ms between 16 KiB chunks: a client a little slower than the manager,
            // still sending when the 413 goes out (as Python's requests was).
            let pause = Duration::from_millis(2);
            let s = post(&c, &m.url, &scale_head(&c.admin, size), size, pause).await;
            let got = answer(&s.read);
            println!(
                "[drain] {size} bytes, round {round}: wrote {} body bytes, read {} bytes, \
                 read error {:?}, status {:?}, closed after {:?}",
                s.written,
                s.read.len(),
                s.read_error.as_ref().map(|e| e.kind()),
                got.as_ref().map(|g| g.0),
                s.closed_after
            );
            let (status, body) = got.unwrap_or_else(|| {
                panic!(
                    "{size} bytes: no complete answer read ({} bytes, read error {:?}): {:?}",
                    s.read.len(),
                    s.read_error,
                    String::from_utf8_lossy(&s.read)
                )
            });
            assert_eq!(status, 413, "{size} bytes");
            // A client that sends its whole body before reading (most HTTP/1.1 clients)
            // gives up at a failed write and never reads the 413.
            assert_eq!(
                s.written, size,
                "{size} bytes: the manager closed while the client was still sending"
            );
            let msg = body["error"].as_str().unwrap_or_default();
            assert!(msg.contains("too large"), "{size} bytes: {body}");
        }
    }
    println!("[drain] 15 refused bodies in {:?}", t0.elapsed());
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lingering_close_is_bounded_in_bytes_and_time() {
    let tmp = tempfile::tempdir().unwrap();
    let c = make_cluster(&tmp.path().join("cluster"));
    let m = start(config(&c, &tmp.path().join("state"))).await;

    // A fast sender of 64 MiB: the manager stops reading after about 1 MiB and closes,
    // so the client's writes fail long before the end (socket buffers hold a few MiB).
    let size = 64 << 20;
    let s = post(
        &c,
        &m.url,
        &scale_head(&c.admin, size),
        size,
        Duration::ZERO,
    )
    .await;
    println!(
        "[drain] fast 64 MiB sender: wrote {} body bytes, read {} bytes, closed after {:?}",
        s.written,
        s.read.len(),
        s.closed_after
    );
    assert!(
        s.written < 32 << 20,
        "the manager read {} bytes of a refused body: the drain is not bounded in bytes",
        s.written
    );

    // A slow sender (16 KiB every 50 ms, 320 KiB/s): the drain is cut at 2 s, well
    // before the 20 s body deadline or the 10 MiB declared.
    let size = 10 << 20;
    let s = post(
        &c,
        &m.url,
        &scale_head(&c.admin, size),
        size,
        Duration::from_millis(50),
    )
    .await;
    println!(
        "[drain] slow sender: wrote {} body bytes, read {} bytes, status {:?}, closed after {:?}",
        s.written,
        s.read.len(),
        answer(&s.read).map(|a| a.0),
        s.closed_after
    );
    assert!(
        s.closed_after < Duration::from_secs(6),
        "a slow sender held the lingering close for {:?}",
        s.closed_after
    );
    assert!(s.written < size, "the whole slow body was read");
    m.stop().await;
}

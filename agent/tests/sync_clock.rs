//! `armada-agent sync-clock` end to end against loopback: an unreachable manager (a
//! bounded failure with a clear message), an HTTPS manager stand-in whose `Date` is
//! right or behind (TLS pinned through the token's fingerprint and through the stored
//! CA), and a manager node (floor only). None of these steps the clock: the host's
//! clock is never touched by a test (CI runs as root); stepping forward is covered by
//! the decision tests in `src/clock.rs` and by the boot test in qemu.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "0123456789abcdef0123";

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_armada-agent"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("running armada-agent")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

struct Pki {
    ca_pem: String,
    ca_fingerprint: String,
    ca: CertificateDer<'static>,
    leaf: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

fn new_pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "test CA");
    ca.not_before = rcgen::date_time_ymd(2000, 1, 1);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, &ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    leaf.not_before = rcgen::date_time_ymd(2000, 1, 1);
    let leaf = leaf.signed_by(&key, &issuer).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        ca_fingerprint: hex::encode(sha2::Sha256::digest(ca_cert.der().as_ref())),
        ca: ca_cert.der().clone(),
        leaf: leaf.der().clone(),
        key: PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    }
}

/// An HTTP date `offset_s` seconds from now.
fn http_date(offset_s: i64) -> String {
    let now = SystemTime::now();
    let at = if offset_s >= 0 {
        now + Duration::from_secs(offset_s.unsigned_abs())
    } else {
        now - Duration::from_secs(offset_s.unsigned_abs())
    };
    httpdate::fmt_http_date(at)
}

/// A manager stand-in on loopback (presenting its chain with the CA, as the manager
/// does): answers `GET /v1/ca` with the CA and a `Date` that
/// is `offset_s` from now, for a few connections, on a thread of its own.
fn serve(pki: &Pki, offset_s: i64) -> u16 {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pki.leaf.clone(), pki.ca.clone()], pki.key.clone_key())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = pki.ca_pem.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            for _ in 0..4 {
                let Ok(Ok((tcp, _))) =
                    tokio::time::timeout(Duration::from_secs(30), listener.accept()).await
                else {
                    return;
                };
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let mut buf = [0u8; 4096];
                    let _ = tls.read(&mut buf).await;
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ndate: {}\r\ncontent-length: {}\r\n\
                         connection: close\r\n\r\n{body}",
                        http_date(offset_s),
                        body.len()
                    );
                    let _ = tls.write_all(reply.as_bytes()).await;
                    let _ = tls.shutdown().await;
                }
            }
        });
    });
    port
}

fn write_config(dir: &Path, body: &str) -> String {
    let cfg = dir.join("armada.toml");
    fs::write(&cfg, body).unwrap();
    cfg.to_str().unwrap().to_string()
}

fn floor_mtime(state: &Path) -> Option<SystemTime> {
    fs::metadata(state.join("clock"))
        .ok()
        .map(|m| m.modified().unwrap())
}

#[test]
fn an_unreachable_manager_fails_within_the_timeout_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    // A port nobody listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let token = format!("armada1.{}.{SECRET}", "ab".repeat(32));
    let cfg = write_config(
        tmp.path(),
        &format!("[manager]\naddress = \"127.0.0.1:{port}\"\ntoken = \"{token}\"\n"),
    );
    let state = tmp.path().join("state");
    let t0 = Instant::now();
    let out = agent(&[
        "sync-clock",
        "--config",
        &cfg,
        "--state-dir",
        p(&state),
        "--timeout",
        "3",
    ]);
    let took = t0.elapsed();
    assert!(!out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains(&format!(
            "could not read the clock of the manager at 127.0.0.1:{port} within 3s"
        )),
        "{t}"
    );
    assert!(t.contains("attempts"), "{t}");
    assert!(!t.contains(SECRET), "the token leaked: {t}");
    assert!(took < Duration::from_secs(6), "took {took:?}");
    assert!(took >= Duration::from_secs(2), "gave up early: {took:?}");
    assert_eq!(floor_mtime(&state), None, "a failed sync moved the floor");
}

#[test]
fn a_manager_with_the_same_time_leaves_the_clock_and_raises_the_floor() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = new_pki();
    let port = serve(&pki, 0);
    let token = format!("armada1.{}.{SECRET}", pki.ca_fingerprint);
    let cfg = write_config(
        tmp.path(),
        &format!("[manager]\naddress = \"127.0.0.1:{port}\"\ntoken = \"{token}\"\n"),
    );
    let state = tmp.path().join("state");
    let out = agent(&[
        "sync-clock",
        "--config",
        &cfg,
        "--state-dir",
        p(&state),
        "--timeout",
        "10",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("clock already right: ")
            && t.contains(&format!("the manager at 127.0.0.1:{port} says")),
        "{t}"
    );
    assert_eq!(t.lines().count(), 1, "one line: {t}");
    let floor = floor_mtime(&state).expect("the floor file was not written");
    assert!(
        SystemTime::now().duration_since(floor).unwrap() < Duration::from_secs(30),
        "{floor:?}"
    );
}

#[test]
fn a_registered_node_trusts_its_stored_ca_and_never_steps_back() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = new_pki();
    // The manager is an hour behind: this clock is ahead and stays.
    let port = serve(&pki, -3600);
    let state = tmp.path().join("state");
    fs::create_dir_all(&state).unwrap();
    fs::write(state.join("ca.pem"), &pki.ca_pem).unwrap();
    fs::write(
        state.join("registration.json"),
        format!(
            "{{\"manager\":\"127.0.0.1:{port}\",\"swarm_join_token\":\"t\",\
             \"swarm_managers\":[],\"report_interval_seconds\":10}}"
        ),
    )
    .unwrap();
    fs::write(
        state.join("credential"),
        format!("armadanode1.n1.{SECRET}\n"),
    )
    .unwrap();
    // No armada.toml at all: a registered node needs none.
    let out = agent(&[
        "sync-clock",
        "--config",
        p(&tmp.path().join("missing.toml")),
        "--state-dir",
        p(&state),
        "--timeout",
        "10",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("ahead of the manager") && t.contains("never stepped back"),
        "{t}"
    );
    let secs: f64 = t
        .split("clock ")
        .nth(1)
        .and_then(|r| r.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no offset in {t}"));
    assert!((3590.0..3610.0).contains(&secs), "{t}");

    // Another CA at the same address: refused, within the timeout.
    let other = new_pki();
    let port2 = serve(&other, 0);
    let reg = fs::read_to_string(state.join("registration.json"))
        .unwrap()
        .replace(&port.to_string(), &port2.to_string());
    fs::write(state.join("registration.json"), reg).unwrap();
    let out = agent(&[
        "sync-clock",
        "--config",
        p(&tmp.path().join("missing.toml")),
        "--state-dir",
        p(&state),
        "--timeout",
        "2",
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("could not read the clock"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_token_for_another_ca_is_refused_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = new_pki();
    let port = serve(&pki, 0);
    let token = format!("armada1.{}.{SECRET}", "cd".repeat(32));
    let cfg = write_config(
        tmp.path(),
        &format!("[manager]\naddress = \"127.0.0.1:{port}\"\ntoken = \"{token}\"\n"),
    );
    let t0 = Instant::now();
    let out = agent(&[
        "sync-clock",
        "--config",
        &cfg,
        "--state-dir",
        p(&tmp.path().join("state")),
        "--timeout",
        "20",
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("does not hold the CA pinned by the bootstrap token"),
        "{}",
        text(&out)
    );
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
}

#[test]
fn a_manager_node_uses_the_floor_only() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), "role = \"manager\"\n");
    let state = tmp.path().join("state");
    fs::create_dir_all(&state).unwrap();
    // A floor in the past: no step, and it is moved up to now.
    let old = SystemTime::now() - Duration::from_secs(86_400);
    let f = fs::File::create(state.join("clock")).unwrap();
    f.set_modified(old).unwrap();
    drop(f);
    let t0 = Instant::now();
    let out = agent(&["sync-clock", "--config", &cfg, "--state-dir", p(&state)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("floor only"), "{}", text(&out));
    assert!(!text(&out).contains("stepped"), "{}", text(&out));
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(floor_mtime(&state).unwrap() > old + Duration::from_secs(86_000));
}

#[test]
fn an_unregistered_node_without_a_token_says_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), "[manager]\naddress = \"127.0.0.1:9\"\n");
    let out = agent(&[
        "sync-clock",
        "--config",
        &cfg,
        "--state-dir",
        p(&tmp.path().join("state")),
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("no manager.token"), "{}", text(&out));
}

//! Shared test helpers: a cluster folder like `armada cluster init` writes (made here
//! with rcgen: the manager's tests cannot call the `armada` binary), an in-process or
//! child-process manager on 127.0.0.1, and HTTPS clients pinned to the test CA.
#![allow(dead_code)]

// Synthetic snapshots (not part of the library's API).
#[path = "../../src/sim.rs"]
pub mod sim;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use armada_manager::server::{serve, ServeConfig};
use protocol::token::{BootstrapToken, CaFingerprint};
use protocol::wire::{NodeFacts, RegisterRequest, RegisterResponse, ReportBatch, Role};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

pub struct TestCluster {
    pub dir: PathBuf,
    pub token: String,
    pub admin: String,
    pub ca_pem: String,
    pub fingerprint: CaFingerprint,
}

/// A CA (not before 2000-01-01), a server chain for localhost/127.0.0.1, tokens.
pub fn make_cluster(dir: &Path) -> TestCluster {
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.not_before = rcgen::date_time_ymd(2000, 1, 1);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let fingerprint = CaFingerprint::of_der(ca_cert.der());
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    leaf.not_before = rcgen::date_time_ymd(2000, 1, 1);
    let leaf_cert = leaf.signed_by(&key, &Issuer::new(ca, &ca_key)).unwrap();
    let token = BootstrapToken::generate(fingerprint.clone()).expose();
    let admin = "test-admin-token-0123456789abcdef".to_string();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(
        dir.join("manager.pem"),
        format!("{}{}", leaf_cert.pem(), ca_cert.pem()),
    )
    .unwrap();
    std::fs::write(dir.join("manager.key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("token"), format!("{token}\n")).unwrap();
    std::fs::write(dir.join("admin-token"), format!("{admin}\n")).unwrap();
    std::fs::write(
        dir.join("credential-key"),
        protocol::token::CredentialKey::generate().to_file_text(),
    )
    .unwrap();
    TestCluster {
        dir: dir.into(),
        token,
        admin,
        ca_pem: ca_cert.pem(),
        fingerprint,
    }
}

pub fn client(c: &TestCluster) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(c.ca_pem.as_bytes()).unwrap()])
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

pub struct InProcess {
    pub url: String,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcess {
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

pub fn config(c: &TestCluster, state: &Path) -> ServeConfig {
    ServeConfig {
        cluster_dir: c.dir.clone(),
        state_dir: state.into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        docker_host: None,
        swarm_advertise_addr: None,
        stale_after_intervals: 3,
        down_after: Duration::from_secs(60),
        report_interval_seconds: 10,
        checkpoint_interval: Duration::from_secs(600),
        config_file: None,
        // Tests register many nodes from 127.0.0.1; the rate limit has its own test.
        limits: armada_manager::limits::Limits {
            register_per_minute: 0,
            ..Default::default()
        },
    }
}

/// Runs `serve` in this test's runtime (which must be multi-threaded).
pub async fn start(cfg: ServeConfig) -> InProcess {
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel::<SocketAddr>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        serve(
            cfg,
            move |a| {
                let _ = addr_tx.send(a);
            },
            async move {
                let _ = stop_rx.await;
            },
        )
        .await
    });
    let addr = tokio::time::timeout(Duration::from_secs(20), addr_rx)
        .await
        .unwrap()
        .unwrap();
    InProcess {
        url: format!("https://127.0.0.1:{}", addr.port()),
        stop: Some(stop_tx),
        task,
    }
}

/// The manager binary as a child process; returns it and its URL.
pub fn spawn_binary(c: &TestCluster, state: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_armada-manager"))
        .args([
            "serve",
            "--no-swarm",
            "--listen",
            "127.0.0.1:0",
            // Tests register many nodes from 127.0.0.1; the rate limit has its own test.
            "--register-per-minute",
            "0",
            "--cluster-dir",
        ])
        .arg(&c.dir)
        .arg("--state-dir")
        .arg(state)
        .env("ARMADA_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_string();
    assert!(url.starts_with("https://127.0.0.1:"), "{line}");
    (child, url)
}

pub fn facts(hostname: &str, machine_id: &str) -> NodeFacts {
    NodeFacts {
        hostname: hostname.into(),
        board: "pine64".into(),
        role: Role::Worker,
        machine_id: machine_id.into(),
        arch: "aarch64".into(),
        kernel: "6.1.0".into(),
        cpus: 4,
        memory_bytes: 2 << 30,
        docker_version: Some("20.10.24".into()),
        agent_version: "0.1.0".into(),
        engine_id: None,
    }
}

pub async fn register_raw(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    f: NodeFacts,
) -> reqwest::Response {
    let req = RegisterRequest {
        protocol: protocol::PROTOCOL_VERSION,
        token: token.into(),
        credential: None,
        facts: f,
        labels: Default::default(),
        swarm: None,
    };
    http.post(format!("{url}/v1/register"))
        .json(&req)
        .send()
        .await
        .unwrap()
}

pub async fn register(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    f: NodeFacts,
) -> RegisterResponse {
    let r = register_raw(http, url, token, f).await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    r.json().await.unwrap()
}

pub fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

pub fn batch(hostname: &str, instance: &str, seqs: std::ops::Range<u64>) -> Vec<u8> {
    let snaps = seqs
        .map(|s| sim::snapshot(hostname, instance, s, 1_700_000_000_000 + s * 10_000))
        .collect();
    gzip(
        &serde_json::to_vec(&ReportBatch {
            protocol: protocol::PROTOCOL_VERSION,
            snapshots: snaps,
            dropped_total: 0,
        })
        .unwrap(),
    )
}

pub async fn post_report(
    http: &reqwest::Client,
    url: &str,
    cred: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    http.post(format!("{url}/v1/report"))
        .bearer_auth(cred)
        .header("Content-Encoding", "gzip")
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// `GET {url}{path}` with the admin token, as JSON (panics on a transport error or a
/// body that is not JSON; the status is not checked).
pub async fn admin_json(
    http: &reqwest::Client,
    url: &str,
    admin: &str,
    path: &str,
) -> serde_json::Value {
    http.get(format!("{url}{path}"))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The manager binary as a child process, killed (by its PID) when dropped.
pub struct Manager {
    pub child: Child,
    pub url: String,
    pub addr: SocketAddr,
}

impl Manager {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the manager process, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kb: u64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap();
        kb * 1024
    }

    /// Open file descriptors of the manager process.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `armada-manager serve --no-swarm` with `extra` flags; `nofile` sets its open-file
/// limit (soft and hard) before exec, as `prlimit --nofile=N` would.
pub fn spawn_manager(
    c: &TestCluster,
    state: &Path,
    extra: &[&str],
    nofile: Option<u64>,
) -> Manager {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_armada-manager"));
    cmd.args([
        "serve",
        "--no-swarm",
        "--listen",
        "127.0.0.1:0",
        "--cluster-dir",
    ])
    .arg(&c.dir)
    .arg("--state-dir")
    .arg(state)
    .args(extra)
    .env("ARMADA_LOG", "warn")
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    if let Some(n) = nofile {
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: n as libc::rlim_t,
                    rlim_max: n as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_string();
    assert!(url.starts_with("https://127.0.0.1:"), "{line}");
    let addr = url.trim_start_matches("https://").parse().unwrap();
    Manager { child, url, addr }
}

/// A raw TLS connector that trusts only the test CA (for hand-made requests).
pub fn tls_connector(c: &TestCluster) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(c.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(
        rustls::crypto::aws_lc_rs::default_provider().into(),
    )
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
}

/// Raises this test process's open-file limit to its hard maximum (floods need sockets).
pub fn raise_own_fd_limit() {
    armada_manager::server::raise_open_file_limit();
}

//! Delivery against a real manager (in process, on loopback, TLS with a test CA) whose
//! stored-snapshot cap is lowered to 8 KiB: snapshots it refuses as too large (413) are
//! dropped and counted at once, without a pause, and their neighbours and every newer
//! snapshot are delivered.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use armada_agent::register::ManagerAddress;
use armada_agent::report::{self, lock, Shared};
use armada_manager::server::{serve, ServeConfig};
use protocol::snapshot::{ContainerMetrics, Snapshot};
use protocol::token::{BootstrapToken, CaFingerprint, NodeCredential};
use protocol::wire::{NodeFacts, RegisterRequest, RegisterResponse, Role};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

const CAP: usize = 8 << 10;
const ADMIN: &str = "test-admin-token-0123456789abcdef";

/// A cluster folder as `armada cluster init` writes it; returns (token, CA PEM).
/// Sends a request that must succeed and reads its JSON answer.
async fn ok_json<T: serde::de::DeserializeOwned>(req: reqwest::RequestBuilder) -> T {
    req.send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn make_cluster(dir: &Path) -> (String, String) {
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
    let token = BootstrapToken::generate(fingerprint).expose();
    let w = |name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();
    w("ca.pem", ca_cert.pem());
    w(
        "manager.pem",
        format!("{}{}", leaf_cert.pem(), ca_cert.pem()),
    );
    w("manager.key", key.serialize_pem());
    w("token", format!("{token}\n"));
    w("admin-token", format!("{ADMIN}\n"));
    w(
        "credential-key",
        protocol::token::CredentialKey::generate().to_file_text(),
    );
    (token, ca_cert.pem())
}

/// A snapshot with `containers` containers: 0 is about 1 KiB of JSON, 100 about 25.
fn snapshot(seq: u64, containers: usize) -> Snapshot {
    Snapshot {
        instance: "refused-test".into(),
        seq,
        collected_at_ms: report::now_ms(),
        hostname: "board-1".into(),
        containers: (0..containers)
            .map(|i| ContainerMetrics {
                id: format!("{i:064x}"),
                name: format!("service-{i}.1.abcdefghijklmnopqrstuvwxy"),
                image: "some/image:1.2.3".into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_too_large_are_dropped_at_once_and_the_rest_delivered() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = tmp.path().join("cluster");
    std::fs::create_dir_all(&cluster).unwrap();
    let (token, ca_pem) = make_cluster(&cluster);
    let cfg = ServeConfig {
        cluster_dir: cluster,
        state_dir: tmp.path().join("state"),
        listen: "127.0.0.1:0".parse().unwrap(),
        docker_host: None,
        swarm_advertise_addr: None,
        stale_after_intervals: 3,
        down_after: Duration::from_secs(60),
        report_interval_seconds: 10,
        checkpoint_interval: Duration::from_secs(600),
        config_file: None,
        limits: armada_manager::limits::Limits {
            register_per_minute: 0,
            max_stored_snapshot: CAP,
            ..Default::default()
        },
    };
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel::<SocketAddr>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let manager_task = tokio::spawn(async move {
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
    let port = tokio::time::timeout(Duration::from_secs(20), addr_rx)
        .await
        .unwrap()
        .unwrap()
        .port();
    let url = format!("https://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let reg: RegisterResponse = ok_json(http.post(format!("{url}/v1/register")).json(
        &RegisterRequest {
            protocol: protocol::PROTOCOL_VERSION,
            token,
            credential: None,
            facts: NodeFacts {
                hostname: "board-1".into(),
                board: "pine64".into(),
                role: Role::Worker,
                machine_id: "0123456789abcdef0123456789abcdef".into(),
                arch: "aarch64".into(),
                kernel: "6.1.0".into(),
                cpus: 4,
                memory_bytes: 2 << 30,
                docker_version: None,
                agent_version: "0.1.0".into(),
                engine_id: None,
            },
            labels: Default::default(),
            swarm: None,
        },
    ))
    .await;
    let credential: NodeCredential = reg.credential.parse().unwrap();

    let big = 100;
    assert!(serde_json::to_vec(&snapshot(0, big)).unwrap().len() > CAP);
    assert!(serde_json::to_vec(&snapshot(0, 2)).unwrap().len() < CAP);
    // Oldest first: small, small, BIG, small, BIG. The batch of all five is refused
    // (the manager checks the newest), split, and each big one ends up alone.
    let shared = Shared::new(100, 32 << 20);
    for (seq, n) in [(0, 2), (1, 2), (2, big), (3, 2), (4, big)] {
        lock(&shared.backlog).push(snapshot(seq, n));
    }
    let manager = ManagerAddress {
        host: "127.0.0.1".into(),
        port,
    };
    let deliver = {
        let shared = shared.clone();
        let http = http.clone();
        tokio::spawn(
            async move { report::deliver_loop(&http, &manager, &credential, &shared).await },
        )
    };
    let t0 = Instant::now();
    // Without a pause: a refusal used to wait 2 s, then 4, 8, ... up to 300 s.
    wait_for(
        "the backlog delivered or dropped",
        Duration::from_secs(10),
        || lock(&shared.backlog).is_empty(),
    )
    .await;
    let took = t0.elapsed();
    let status = shared.status.get();
    assert_eq!(status.refused["too_large"].total, 2, "{status:?}");
    assert!(status.refused["too_large"].last_bytes > CAP as u64);
    assert!(
        status.refused["too_large"]
            .last_message
            .contains(&format!("at most {CAP} are stored per")),
        "{status:?}"
    );
    assert_eq!(lock(&shared.stats).delivered_total, 3);
    assert_eq!(
        lock(&shared.backlog).dropped_total(),
        0,
        "none was lost to the bound"
    );
    assert!(
        status.active_errors().next().is_none(),
        "a too-large snapshot is not a delivery error: {status:?}"
    );

    // A newer one goes through at once, and a newer big one is dropped too.
    lock(&shared.backlog).push(snapshot(5, 2));
    shared.new_snapshot.notify_one();
    wait_for("snapshot 5 delivered", Duration::from_secs(5), || {
        lock(&shared.stats).delivered_total == 4
    })
    .await;
    lock(&shared.backlog).push(snapshot(6, big));
    shared.new_snapshot.notify_one();
    wait_for("snapshot 6 dropped", Duration::from_secs(5), || {
        shared
            .status
            .get()
            .refused
            .get("too_large")
            .is_some_and(|r| r.total == 3)
    })
    .await;
    assert!(lock(&shared.backlog).is_empty());
    eprintln!("backlog of 5 settled in {took:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}: a pause?");

    // The manager holds the newest small one, and what was delivered.
    let detail: serde_json::Value = ok_json(
        http.get(format!("{url}/v1/nodes/{}", reg.node_id))
            .bearer_auth(ADMIN),
    )
    .await;
    assert_eq!(detail["latest"]["seq"], 5, "{detail}");
    assert_eq!(detail["reports_total"], 4, "{detail}");

    // And the agent's own /metrics says so.
    let text = armada_agent::serve::exposition(&shared);
    assert!(
        text.contains("armada_agent_snapshots_refused_total{reason=\"too_large\"} 3\n"),
        "{text}"
    );
    deliver.abort();
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), manager_task).await;
}

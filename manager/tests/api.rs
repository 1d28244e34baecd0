//! The manager's API end to end over real HTTPS on 127.0.0.1 (in-process server, no
//! Docker engine): registration semantics, refusals, bodies, reports, token rotation,
//! federation checked by promtool, the dashboard page.

mod common;

use std::time::Duration;

use common::*;
use protocol::token::BootstrapToken;
use protocol::wire::{NodeSummary, ReportAck};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_same_machine_conflict_and_removal() {
    let tmp = tempfile::tempdir().unwrap();
    let c = make_cluster(&tmp.path().join("cluster"));
    let m = start(config(&c, &tmp.path().join("state"))).await;
    let http = client(&c);

    let first = register(&http, &m.url, &c.token, facts("pine-01", "machine-a")).await;
    assert!(first.node_id.starts_with("n-"));
    assert!(first
        .credential
        .starts_with(&format!("armadanode2.{}.", first.node_id)));
    assert_eq!(first.report_interval_seconds, 10);
    assert!(first.swarm_join_token.is_empty(), "no engine in this test");

    // The same machine again (reboot, reflash): same node, new credential.
    let again = register(&http, &m.url, &c.token, facts("pine-01", "machine-a")).await;
    assert_eq!(again.node_id, first.node_id);
    assert_ne!(again.credential, first.credential);
    let health = |cred: String| {
        let http = http.clone();
        let url = m.url.clone();
        async move {
            http.get(format!("{url}/v1/health"))
                .bearer_auth(cred)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(health(again.credential.clone()).await, 200);
    assert_eq!(
        health(first.credential.clone()).await,
        401,
        "the replaced credential is refused"
    );

    // Another machine claiming the hostname: 409 naming the node.
    let r = register_raw(&http, &m.url, &c.token, facts("pine-01", "machine-b")).await;
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains(&first.node_id));

    // The operator removes it: its credential is refused, the hostname is free.
    let del = http
        .delete(format!("{}/v1/nodes/{}", m.url, first.node_id))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 200);
    assert_eq!(health(again.credential.clone()).await, 401);
    let r = post_report(
        &http,
        &m.url,
        &again.credential,
        batch("pine-01", "i", 0..1),
    )
    .await;
    assert_eq!(r.status(), 401);
    let body: protocol::wire::ErrorBody = r.json().await.unwrap();
    assert_eq!(body.code.as_deref(), Some("revoked"), "{}", body.error);
    let other = register(&http, &m.url, &c.token, facts("pine-01", "machine-b")).await;
    assert_ne!(other.node_id, first.node_id);
    let del = http
        .delete(format!("{}/v1/nodes/{}", m.url, first.node_id))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 404);
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_bodies_are_4xx_and_the_manager_lives_on() {
    let tmp = tempfile::tempdir().unwrap();
    let c = make_cluster(&tmp.path().join("cluster"));
    let m = start(config(&c, &tmp.path().join("state"))).await;
    let http = client(&c);
    let node = register(&http, &m.url, &c.token, facts("pine-03", "m3")).await;
    let cred = &node.credential;

    // The manager answers 413 from Content-Length before reading the body and closes;
    // the client may still be sending and see the connection reset instead.
    let sent = http
        .post(format!("{}/v1/report", m.url))
        .bearer_auth(cred)
        .header("Content-Encoding", "gzip")
        .body(vec![b'x'; 5 << 20])
        .send()
        .await;
    if let Ok(r) = sent {
        assert_eq!(r.status(), 413);
    }
    // A gzip bomb: 40 MiB of spaces in a few KiB.
    let bomb = gzip(&vec![b' '; 40 << 20]);
    assert!(bomb.len() < 1 << 20);
    assert_eq!(post_report(&http, &m.url, cred, bomb).await.status(), 413);
    assert_eq!(
        post_report(&http, &m.url, cred, b"not gzip".to_vec())
            .await
            .status(),
        400
    );
    assert_eq!(
        post_report(
            &http,
            &m.url,
            cred,
            gzip(b"{\"protocol\":1,\"snapshots\":[{}]}")
        )
        .await
        .status(),
        400
    );
    let r = post_report(
        &http,
        &m.url,
        cred,
        gzip(b"{\"protocol\":7,\"snapshots\":[]}"),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("protocol 7"));
    // Just over the 64 KiB limit (a far larger body may see the connection closed
    // while the client is still sending, which is the client's error, not ours).
    let r = http
        .post(format!("{}/v1/register", m.url))
        .body(vec![b' '; 100 << 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = http
        .post(format!("{}/v1/register", m.url))
        .body("{\"token\":")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: protocol::wire::ErrorBody = r.json().await.unwrap();
    assert!(body.error.contains("malformed JSON"), "{}", body.error);
    let r = http
        .post(format!("{}/v1/joined", m.url))
        .bearer_auth(cred)
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let mut bad = facts("-bad-", "m");
    bad.machine_id = "m".into();
    assert_eq!(
        register_raw(&http, &m.url, &c.token, bad).await.status(),
        400
    );

    let ok = http
        .get(format!("{}/v1/health", m.url))
        .bearer_auth(cred)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "ok");
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_dedupe_show_in_nodes_and_federate_for_promtool() {
    let tmp = tempfile::tempdir().unwrap();
    let c = make_cluster(&tmp.path().join("cluster"));
    let m = start(config(&c, &tmp.path().join("state"))).await;
    let http = client(&c);
    let a = register(&http, &m.url, &c.token, facts("pine-04", "m4")).await;
    let b = register(&http, &m.url, &c.token, facts("pine-05", "m5")).await;

    let ack: ReportAck = post_report(&http, &m.url, &a.credential, batch("pine-04", "i1", 0..5))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!((ack.accepted, ack.duplicates), (5, 0));
    let ack: ReportAck = post_report(&http, &m.url, &a.credential, batch("pine-04", "i1", 3..8))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!((ack.accepted, ack.duplicates), (3, 2));
    post_report(&http, &m.url, &b.credential, batch("pine-05", "i9", 0..1)).await;

    let nodes: Vec<NodeSummary> = http
        .get(format!("{}/v1/nodes", m.url))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(nodes.len(), 2);
    let n = &nodes[0];
    assert_eq!(n.hostname, "pine-04");
    assert_eq!(serde_json::to_value(n.status).unwrap(), "up");
    assert_eq!(n.containers, Some(3));
    assert_eq!(n.temperature_celsius, Some(52.0));
    assert!(n.cpu_busy_ratio.unwrap() > 0.0 && n.cpu_busy_ratio.unwrap() < 1.0);

    let detail: serde_json::Value = http
        .get(format!("{}/v1/nodes/{}", m.url, a.node_id))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detail["reports_total"], 8);
    assert_eq!(detail["latest"]["seq"], 7);
    assert_eq!(detail["history"][0]["points"].as_array().unwrap().len(), 8);

    // A node that never reported: counted as registered, and no samples of its own.
    register(&http, &m.url, &c.token, facts("pine-00", "m0")).await;
    let text = http
        .get(format!("{}/metrics", m.url))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("armada_manager_snapshots_ingested_total 9"),
        "{text}"
    );
    assert!(text.contains("armada_manager_nodes{status=\"up\"} 2"));
    assert!(text.contains("armada_manager_nodes{status=\"registered\"} 1"));
    assert!(
        text.contains("hostname=\"pine-05\""),
        "node labels on federated samples"
    );
    assert!(
        !text.contains("hostname=\"pine-00\""),
        "no snapshot, no samples"
    );
    // Each family's samples go in hostname order (sorted after the store's lock is
    // released): pine-04's come before pine-05's in every family both have.
    let mut families = 0;
    for family in text.split("\n# TYPE ").skip(1) {
        let (p4, p5) = (
            family.find("hostname=\"pine-04\""),
            family.find("hostname=\"pine-05\""),
        );
        if let (Some(p4), Some(p5)) = (p4, p5) {
            assert!(p4 < p5, "hostname order in {family}");
            families += 1;
        }
    }
    assert!(families > 5, "{families} families with both nodes");
    // A scraper that accepts gzip (Prometheus does) gets the same text gzip'd.
    for (accept, gzipped) in [
        ("gzip", true),
        ("deflate, gzip;q=0.5", true),
        ("gzip;q=0", false),
    ] {
        let r = http
            .get(format!("{}/metrics", m.url))
            .bearer_auth(&c.admin)
            .header("accept-encoding", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let encoding = r
            .headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(encoding.as_deref(), gzipped.then_some("gzip"), "{accept}");
        let raw = r.bytes().await.unwrap();
        let again = if gzipped {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&raw[..]), &mut s)
                .unwrap();
            assert!(
                raw.len() * 3 < s.len(),
                "{} bytes for {}",
                raw.len(),
                s.len()
            );
            s
        } else {
            String::from_utf8(raw.to_vec()).unwrap()
        };
        // The nodes' own samples are the same (the manager's figures, the alert
        // engine's view included, may move between two scrapes).
        let nodes = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| l.contains("hostname=\"pine-") && !l.starts_with("armada_manager_"))
                .map(String::from)
                .collect()
        };
        assert!(nodes(&text).len() > 10, "{text}");
        assert_eq!(nodes(&again), nodes(&text), "{accept}");
        assert!(again.ends_with('\n'), "the whole text");
    }
    let own = http
        .get(format!("{}/metrics?federate=false", m.url))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(own.contains("armada_manager_snapshots_ingested_total 9"));
    assert!(
        !own.contains("hostname=\"pine-05\""),
        "no node samples without federation"
    );
    let path = tmp.path().join("metrics.txt");
    std::fs::write(&path, &text).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&path).unwrap())
        .output()
        .expect("promtool (package prometheus, ci/host-deps.sh) runs");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let page = http.get(format!("{}/", m.url)).send().await.unwrap();
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page.text().await.unwrap().contains("/dashboard.js"));
    let script = http
        .get(format!("{}/dashboard.js", m.url))
        .send()
        .await
        .unwrap();
    assert!(script.text().await.unwrap().contains("/v1/nodes"));
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_rotation_and_revocation_spare_joined_nodes() {
    let tmp = tempfile::tempdir().unwrap();
    let c = make_cluster(&tmp.path().join("cluster"));
    let m = start(config(&c, &tmp.path().join("state"))).await;
    let http = client(&c);
    let joined = register(&http, &m.url, &c.token, facts("pine-06", "m6")).await;

    let new = BootstrapToken::generate(c.fingerprint.clone()).expose();
    std::fs::write(c.dir.join("token.tmp"), format!("{new}\n")).unwrap();
    std::fs::rename(c.dir.join("token.tmp"), c.dir.join("token")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = register_raw(&http, &m.url, &c.token, facts("pine-07", "m7")).await;
        if r.status() == 401 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "old token still accepted after 10 s"
        );
        // Registering with the old token may still succeed just before the reload.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    register(&http, &m.url, &new, facts("pine-08", "m8")).await;

    std::fs::write(c.dir.join("token.tmp"), "# revoked\n").unwrap();
    std::fs::rename(c.dir.join("token.tmp"), c.dir.join("token")).unwrap();
    // SIGHUP-free path: the 2 s poll picks it up.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    assert_eq!(
        register_raw(&http, &m.url, &new, facts("pine-09", "m9"))
            .await
            .status(),
        401
    );

    let r = post_report(
        &http,
        &m.url,
        &joined.credential,
        batch("pine-06", "i", 0..2),
    )
    .await;
    assert_eq!(
        r.status(),
        200,
        "a joined node keeps working after rotate and revoke"
    );
    m.stop().await;
}

/// `PUT /v1/labels`: a node's changed label set replaces the stored one (no engine here:
/// stored only, no swarm node named), needs the node's own credential, is checked like a
/// registration's, and is in the store after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_label_set_replaces_the_stored_one_and_survives_a_restart() {
    use protocol::wire::{NodeLabels, NodeLabelsReply, PATH_LABELS};
    let tmp = tempfile::tempdir().unwrap();
    let c = make_cluster(&tmp.path().join("cluster"));
    let state = tmp.path().join("state");
    let m = start(config(&c, &state)).await;
    let http = client(&c);
    let node = register(&http, &m.url, &c.token, facts("pine-01", "machine-a")).await;
    let labels = |pairs: &[(&str, &str)]| NodeLabels {
        labels: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let put = |bearer: String, body: NodeLabels| {
        let http = http.clone();
        let url = m.url.clone();
        async move {
            http.put(format!("{url}{PATH_LABELS}"))
                .bearer_auth(bearer)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let stored = |url: String| {
        let http = http.clone();
        let admin = c.admin.clone();
        let id = node.node_id.clone();
        async move {
            let nodes: Vec<NodeSummary> = http
                .get(format!("{url}/v1/nodes"))
                .bearer_auth(admin)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            nodes
                .into_iter()
                .find(|n| n.node_id == id)
                .map(|n| n.labels)
                .unwrap()
        }
    };
    assert!(stored(m.url.clone()).await.is_empty());

    let want = labels(&[("zone", "shelf-2"), ("rack", "a")]);
    let r = put(node.credential.clone(), want.clone()).await;
    assert_eq!(r.status(), 200);
    let reply: NodeLabelsReply = r.json().await.unwrap();
    assert_eq!(reply.node_id, node.node_id);
    assert_eq!(reply.labels, want.labels);
    assert_eq!(
        reply.swarm_node_id, None,
        "never joined: nothing put on a swarm node"
    );
    assert_eq!(stored(m.url.clone()).await, want.labels);

    // The admin token is not a node; a reserved key is refused; neither changes a thing.
    assert_eq!(
        put(c.admin.clone(), labels(&[("zone", "x")]))
            .await
            .status(),
        403
    );
    assert_eq!(
        put(node.credential.clone(), labels(&[("armada.board", "fake")]))
            .await
            .status(),
        400
    );
    assert_eq!(
        put("armadanode2.n-0.x.y".into(), want.clone())
            .await
            .status(),
        401
    );
    assert_eq!(stored(m.url.clone()).await, want.labels);

    // Dropping a key is a change too; the new set is durable.
    let fewer = labels(&[("zone", "shelf-3")]);
    assert_eq!(
        put(node.credential.clone(), fewer.clone()).await.status(),
        200
    );
    m.stop().await;
    let m = start(config(&c, &state)).await;
    assert_eq!(stored(m.url.clone()).await, fewer.labels);
    m.stop().await;
}

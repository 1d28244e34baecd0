//! A manager SIGKILLed mid-stream loses no registered node and no acknowledged report
//! (the SQLite store: every acknowledged report was in a fsynced WAL commit).
//!
//! The real binary runs as a child process; 24 nodes push batches concurrently and
//! the test records every acknowledged (node, seq). The child gets SIGKILL while
//! requests are in flight, restarts on the same state folder, and then every
//! registered node's credential still works and every acknowledged snapshot is already
//! stored: re-sending all of them is answered "duplicate", never "accepted".

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use protocol::wire::ReportAck;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let c = make_cluster(&tmp.path().join("cluster"));
    let state = tmp.path().join("state");
    let (mut child, url) = spawn_binary(&c, &state);
    let http = client(&c);

    let mut nodes = Vec::new();
    for i in 0..24 {
        let r = register(
            &http,
            &url,
            &c.token,
            facts(&format!("node-{i:02}"), &format!("machine-{i}")),
        )
        .await;
        nodes.push((format!("node-{i:02}"), r.node_id, r.credential));
    }
    // Highest acknowledged seq per node.
    let acked: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let stop_at = Instant::now() + Duration::from_secs(20);
    let mut tasks = Vec::new();
    for (host, id, cred) in nodes.clone() {
        let (http, url, acked) = (http.clone(), url.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let mut seq = 0u64;
            while Instant::now() < stop_at {
                let body = batch(&host, "inst-1", seq..seq + 3);
                let resp = http
                    .post(format!("{url}/v1/report"))
                    .bearer_auth(&cred)
                    .header("Content-Encoding", "gzip")
                    .body(body)
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status() == 200 => {
                        let ack: ReportAck = match r.json().await {
                            Ok(a) => a,
                            Err(_) => break, // killed between headers and body: not acknowledged
                        };
                        assert_eq!(ack.accepted, 3);
                        acked.lock().unwrap().insert(id.clone(), seq + 2);
                        seq += 3;
                    }
                    _ => break, // the manager is gone
                }
            }
        }));
    }
    // Let the stream run, then SIGKILL with requests in flight.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = acked.lock().unwrap().values().map(|s| s + 1).sum::<u64>();
    assert!(
        before > 100,
        "the stream was flowing before the kill ({before} snapshots)"
    );
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = child.wait();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let total: u64 = acked.values().map(|s| s + 1).sum();
    eprintln!(
        "acknowledged before SIGKILL: {total} snapshots from {} nodes",
        acked.len()
    );

    let (mut child, url) = spawn_binary(&c, &state);
    for (host, id, cred) in &nodes {
        let h = http
            .get(format!("{url}/v1/health"))
            .bearer_auth(cred)
            .send()
            .await
            .unwrap();
        assert_eq!(h.status(), 200, "node {id} lost its registration");
        let Some(&max) = acked.get(id) else { continue };
        let r = post_report(&http, &url, cred, batch(host, "inst-1", 0..max + 1)).await;
        let ack: ReportAck = r.json().await.unwrap();
        assert_eq!(
            ack.accepted, 0,
            "node {id}: acknowledged snapshots were missing after restart"
        );
        assert_eq!(ack.duplicates as u64, max + 1);
    }
    let detail = admin_json(&http, &url, &c.admin, &format!("/v1/nodes/{}", nodes[0].1)).await;
    assert!(
        detail["reports_total"].as_u64().unwrap() > acked[&nodes[0].1],
        "reports_total counts every acknowledged snapshot"
    );
    // A clean stop exits 0 after closing the store (its WAL checkpointed away).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(state.join("manager.db").exists());
    let wal = state.join("manager.db-wal");
    assert!(
        !wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0,
        "a clean close leaves no WAL to replay"
    );
}

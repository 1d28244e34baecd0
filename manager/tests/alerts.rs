//! Alerts end to end in one process: a real manager (TLS, store, SQLite alert store)
//! with a manager.toml naming three receivers on a loopback HTTP listener this test
//! runs (generic webhook, Alertmanager v4, ntfy). A node reports under-voltage and a
//! hot SoC: both alerts reach every receiver, once; a receiver that fails at first
//! gets them after retries, and its failures show in the API and /metrics; the manager
//! restarted while they fire sends no second "firing"; the node recovers: one
//! "resolved" each. The secret in a receiver URL never shows in the API.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use common::*;
use protocol::snapshot::{BoardHealth, HwmonSensor, Snapshot, ThermalZone};
use protocol::wire::ReportBatch;

#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: String,
}

#[derive(Clone, Default)]
struct Sink {
    got: Arc<Mutex<Vec<Received>>>,
    /// Requests to /am answered 500 before it starts accepting.
    am_failures_left: Arc<Mutex<u32>>,
}

async fn receive(State(s): State<Sink>, uri: Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
    let path = uri.path().to_string();
    if path == "/am" {
        let mut left = s.am_failures_left.lock().unwrap();
        if *left > 0 {
            *left -= 1;
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
    }
    s.got.lock().unwrap().push(Received {
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    StatusCode::OK
}

async fn start_sink(sink: Sink) -> u16 {
    let app = axum::Router::new()
        .fallback(axum::routing::post(receive))
        .with_state(sink);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await });
    port
}

fn snapshot(host: &str, seq: u64, hot: bool) -> Snapshot {
    Snapshot {
        instance: "alerts-test".into(),
        seq,
        collected_at_ms: armada_manager::now_ms(),
        hostname: host.into(),
        health: BoardHealth {
            thermal: vec![ThermalZone {
                zone: "thermal_zone0".into(),
                kind: "cpu-thermal".into(),
                celsius: if hot { 91.0 } else { 45.0 },
            }],
            hwmon: vec![HwmonSensor {
                chip: "rpi_volt".into(),
                sensor: "in0".into(),
                label: None,
                value: None,
                alarm: Some(hot),
            }],
            under_voltage: Some(hot),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn body(s: Snapshot) -> Vec<u8> {
    gzip(
        &serde_json::to_vec(&ReportBatch {
            protocol: protocol::PROTOCOL_VERSION,
            snapshots: vec![s],
            dropped_total: 0,
        })
        .unwrap(),
    )
}

/// (path, alertname, status, id) of every delivery so far.
fn deliveries(sink: &Sink) -> Vec<(String, String, String, String)> {
    sink.got
        .lock()
        .unwrap()
        .iter()
        .map(|r| match r.path.as_str() {
            "/generic" => {
                let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
                (
                    r.path.clone(),
                    v["alert"]["alertname"].as_str().unwrap().to_string(),
                    v["status"].as_str().unwrap().to_string(),
                    v["alert"]["id"].as_str().unwrap().to_string(),
                )
            }
            "/am" => {
                let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
                assert_eq!(v["version"], "4");
                let a = &v["alerts"][0];
                (
                    r.path.clone(),
                    a["labels"]["alertname"].as_str().unwrap().to_string(),
                    a["status"].as_str().unwrap().to_string(),
                    a["fingerprint"].as_str().unwrap().to_string(),
                )
            }
            _ => {
                let title = r.headers["title"].to_str().unwrap().to_string();
                let (status, name) = title.split_once(' ').unwrap();
                let id = r
                    .body
                    .rsplit("(alert ")
                    .next()
                    .unwrap()
                    .trim_end_matches(')');
                (
                    "/ntfy/armada".into(),
                    name.to_string(),
                    status.to_lowercase(),
                    id.to_string(),
                )
            }
        })
        .collect()
}

fn count(d: &[(String, String, String, String)], path: &str, name: &str, status: &str) -> usize {
    d.iter()
        .filter(|(p, n, s, _)| p == path && n == name && s == status)
        .count()
}

async fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        if f() {
            println!("{what}: after {:.1} s", t0.elapsed().as_secs_f64());
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within {secs} s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_fire_once_survive_a_restart_and_resolve_once() {
    let tmp = tempfile::tempdir().unwrap();
    let c = make_cluster(&tmp.path().join("cluster"));
    let state = tmp.path().join("state");
    let sink = Sink::default();
    *sink.am_failures_left.lock().unwrap() = 2;
    let port = start_sink(sink.clone()).await;
    let config_path = tmp.path().join("manager.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"
[alerts]
interval = "1s"
startup_grace = "3s"

[alerts.rules.temperature]
threshold = 80.0
for = "2s"

[[receivers]]
name = "generic"
kind = "webhook"
url = "http://127.0.0.1:{port}/generic"

[[receivers]]
name = "am"
kind = "alertmanager"
url = "http://127.0.0.1:{port}/am"

[[receivers]]
name = "ntfy"
kind = "ntfy"
url = "http://127.0.0.1:{port}/ntfy/armada?auth=s3cr3t-t0ken"
"#
        ),
    )
    .unwrap();
    let mut cfg = config(&c, &state);
    cfg.config_file = Some(config_path.clone());
    let m = start(cfg.clone()).await;
    let http = client(&c);
    let node = register(&http, &m.url, &c.token, facts("pine-al", "m-al")).await;
    let t_report = Instant::now();
    let r = post_report(
        &http,
        &m.url,
        &node.credential,
        body(snapshot("pine-al", 1, true)),
    )
    .await;
    assert_eq!(r.status(), 200);

    let names = ["ArmadaUnderVoltage", "ArmadaHighTemperature"];
    let paths = ["/generic", "/am", "/ntfy/armada"];
    wait_for("both alerts firing at all three receivers", 30, || {
        let d = deliveries(&sink);
        names
            .iter()
            .all(|n| paths.iter().all(|p| count(&d, p, n, "firing") == 1))
    })
    .await;
    println!(
        "report -> last firing delivered: {:.1} s (temperature has for = 2s)",
        t_report.elapsed().as_secs_f64()
    );
    // The same id everywhere, and it is the one the API shows.
    let report: serde_json::Value = http
        .get(format!("{}/v1/alerts", m.url))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = report.to_string();
    assert!(!text.contains("s3cr3t"), "receiver secret leaked: {text}");
    let ids: BTreeMap<String, String> = report["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["labels"]["alertname"].as_str().unwrap().to_string(),
                a["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (_, n, _, id) in deliveries(&sink) {
        assert_eq!(ids[&n], id, "{n}");
    }
    let am = report["receivers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "am")
        .unwrap();
    assert!(am["failed_attempts"].as_u64().unwrap() >= 2, "{am}");
    assert_eq!(am["last_error"], "HTTP 500 Internal Server Error");
    let metrics = http
        .get(format!("{}/metrics?federate=false", m.url))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("alertname=\"ArmadaUnderVoltage\"")
            && metrics.contains("alertstate=\"firing\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("armada_alert_notifications_total{receiver=\"am\",result=\"failed\"} 2"),
        "{metrics}"
    );

    // Restart while both fire; the node keeps saying the same.
    m.stop().await;
    let m = start(cfg.clone()).await;
    for seq in 2..8 {
        post_report(
            &http,
            &m.url,
            &node.credential,
            body(snapshot("pine-al", seq, true)),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    let d = deliveries(&sink);
    for n in names {
        for p in paths {
            assert_eq!(
                count(&d, p, n, "firing"),
                1,
                "{p} {n}: a second firing after the restart"
            );
        }
    }
    println!(
        "after the restart: still {} deliveries, no second firing",
        d.len()
    );

    // Recovery: one resolved each.
    post_report(
        &http,
        &m.url,
        &node.credential,
        body(snapshot("pine-al", 9, false)),
    )
    .await;
    wait_for("both alerts resolved at all three receivers", 30, || {
        let d = deliveries(&sink);
        names
            .iter()
            .all(|n| paths.iter().all(|p| count(&d, p, n, "resolved") == 1))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let d = deliveries(&sink);
    assert_eq!(
        d.len(),
        12,
        "2 alerts x 3 receivers x (firing + resolved): {d:?}"
    );
    // ntfy got its headers.
    let got = sink.got.lock().unwrap().clone();
    let ntfy = got.iter().find(|r| r.path == "/ntfy/armada").unwrap();
    assert!(ntfy.headers.contains_key("priority") && ntfy.headers.contains_key("tags"));
    // The events history has every transition.
    let ev: Vec<serde_json::Value> = http
        .get(format!("{}/v1/alerts/events", m.url))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let resolved = ev.iter().filter(|e| e["to"] == "resolved").count();
    assert_eq!(resolved, 2, "{ev:?}");
    m.stop().await;
}

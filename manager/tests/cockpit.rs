//! The cockpit API against a real manager on 127.0.0.1 (in process, no engine: the
//! engine half runs in the cluster tier, ci/schemathesis-test.sh): the session cookie
//! and its CSRF token, expiry, logout, the end of every session on admin-token
//! rotation, node credentials kept out, and the cluster view from the store.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn session_cookie(r: &reqwest::Response) -> (String, String) {
    let set = r
        .headers()
        .get("set-cookie")
        .expect("Set-Cookie on a session")
        .to_str()
        .unwrap()
        .to_string();
    let value = set
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("armada_session=")
        .unwrap()
        .to_string();
    (value, set)
}

async fn open(http: &reqwest::Client, url: &str, token: &str) -> reqwest::Response {
    http.post(format!("{url}/v1/session"))
        .json(&serde_json::json!({ "token": token }))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_cookie_csrf_logout_and_rotation() {
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let c = make_cluster(&tmp.path().join("cluster"));
    let m = start(config(&c, &tmp.path().join("state"))).await;
    let http = client(&c);
    let url = &m.url;

    // Wrong token: 401, no cookie.
    let r = open(&http, url, "not-the-admin-token").await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    // A node credential is not the admin token either.
    let reg = register(&http, url, &c.token, facts("pine-01", "m1")).await;
    assert_eq!(open(&http, url, &reg.credential).await.status(), 401);

    let r = open(&http, url, &c.admin).await;
    assert_eq!(r.status(), 200);
    let (cookie, set) = session_cookie(&r);
    for attr in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=43200",
    ] {
        assert!(set.contains(attr), "{attr} missing in {set}");
    }
    assert_eq!(cookie.len(), 64, "256 random bits");
    let body: Value = r.json().await.unwrap();
    let csrf = body["csrf"].as_str().unwrap().to_string();
    assert_ne!(csrf, cookie);
    let expires = body["expires_ms"].as_u64().unwrap();
    let now = armada_manager::now_ms();
    assert!(expires > now + 11 * 3600 * 1000 && expires <= now + 12 * 3600 * 1000);

    let with_cookie =
        |req: reqwest::RequestBuilder, v: &str| req.header("cookie", format!("armada_session={v}"));
    // The cookie authenticates reads.
    let r = with_cookie(http.get(format!("{url}/v1/session")), &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["csrf"], csrf.as_str());
    let r = with_cookie(http.get(format!("{url}/v1/cluster")), &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let view: Value = r.json().await.unwrap();
    assert_eq!(view["nodes"].as_array().unwrap().len(), 1);
    assert_eq!(view["nodes"][0]["hostname"], "pine-01");
    assert_eq!(view["nodes"][0]["node_id"], reg.node_id.as_str());
    assert!(view["nodes"][0]["availability"].is_null(), "no engine here");
    assert!(view["tasks"].as_array().unwrap().is_empty());
    // A made-up cookie is no session.
    let r = with_cookie(http.get(format!("{url}/v1/nodes")), &"0".repeat(64))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // A state change by cookie needs the CSRF header.
    let r = with_cookie(http.delete(format!("{url}/v1/session")), &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["code"], "csrf");
    let r = with_cookie(http.delete(format!("{url}/v1/session")), &cookie)
        .header("x-armada-csrf", "f".repeat(64))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "another session's token");
    // The same change by bearer token needs none.
    let r = http
        .delete(format!("{url}/v1/nodes/no-such-node"))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Logout with the token: 204, cookie cleared, session forgotten.
    let r = with_cookie(http.delete(format!("{url}/v1/session")), &cookie)
        .header("x-armada-csrf", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let cleared = r.headers()["set-cookie"].to_str().unwrap();
    assert!(cleared.starts_with("armada_session=;") && cleared.contains("Max-Age=0"));
    let r = with_cookie(http.get(format!("{url}/v1/session")), &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Node credentials never reach admin endpoints (cookie or not).
    for p in ["/v1/cluster", "/v1/services", "/v1/tasks", "/v1/session"] {
        let r = http
            .get(format!("{url}{p}"))
            .bearer_auth(&reg.credential)
            .send()
            .await
            .unwrap();
        assert!(
            r.status() == 403 || r.status() == 401,
            "{p}: {}",
            r.status()
        );
    }

    // Rotation of the admin token ends every session.
    let (cookie2, _) = session_cookie(&open(&http, url, &c.admin).await);
    let ok = |v: String| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            http.get(format!("{url}/v1/cluster"))
                .header("cookie", format!("armada_session={v}"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(ok(cookie2.clone()).await, 200);
    let tmpfile = c.dir.join("admin-token.tmp");
    std::fs::write(&tmpfile, "rotated-admin-token-fedcba9876543210\n").unwrap();
    std::fs::rename(&tmpfile, c.dir.join("admin-token")).unwrap();
    let t = Instant::now();
    let mut ended = None;
    while t.elapsed() < Duration::from_secs(10) {
        if ok(cookie2.clone()).await == 401 {
            ended = Some(t.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ended = ended.expect("the session outlived the admin token's rotation");
    println!("session ended {ended:?} after the admin token was rotated");
    assert_eq!(open(&http, url, &c.admin).await.status(), 401, "old token");
    assert_eq!(
        open(&http, url, "rotated-admin-token-fedcba9876543210")
            .await
            .status(),
        200
    );
    m.stop().await;
    println!("cockpit session test: {:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_and_openings_are_rate_limited() {
    let tmp = tempfile::tempdir().unwrap();
    let c = make_cluster(&tmp.path().join("cluster"));
    let mut cfg = config(&c, &tmp.path().join("state"));
    cfg.limits.session_ttl = Duration::from_secs(2);
    cfg.limits.register_burst = 5;
    cfg.limits.register_per_minute = 6;
    let m = start(cfg).await;
    let http = client(&c);
    let url = &m.url;
    let r = open(&http, url, &c.admin).await;
    let (cookie, set) = session_cookie(&r);
    assert!(set.contains("Max-Age=2"));
    let get = || {
        http.get(format!("{url}/v1/session"))
            .header("cookie", format!("armada_session={cookie}"))
            .send()
    };
    assert_eq!(get().await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(get().await.unwrap().status(), 401, "expired");

    // Guessing the admin token through /v1/session is rate limited (burst 5, one
    // session opened above).
    let mut codes = Vec::new();
    for _ in 0..8 {
        codes.push(open(&http, url, "guess").await.status().as_u16());
    }
    assert_eq!(&codes[..4], &[401; 4], "{codes:?}");
    assert!(codes[4..].iter().all(|c| *c == 429), "{codes:?}");
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_containers_events_audit_and_bounds() {
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let c = make_cluster(&tmp.path().join("cluster"));
    let state = tmp.path().join("state");
    let m = start(config(&c, &state)).await;
    let http = client(&c);
    let url = &m.url;
    let get = |p: String| {
        let (http, url, admin) = (http.clone(), url.clone(), c.admin.clone());
        async move {
            let r = http
                .get(format!("{url}{p}"))
                .bearer_auth(admin)
                .send()
                .await
                .unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let reg = register(&http, url, &c.token, facts("pine-01", "m1")).await;
    let id = reg.node_id.clone();
    let r = post_report(&http, url, &reg.credential, batch("pine-01", "i1", 0..20)).await;
    assert_eq!(r.status(), 200);

    // History over the reports' time (the simulation's clock), from the raw tier.
    let from = 1_700_000_000_000u64;
    let (s, h) = get(format!(
        "/v1/nodes/{id}/history?from_ms={from}&to_ms={}",
        from + 200_000
    ))
    .await;
    assert_eq!(s, 200, "{h}");
    assert_eq!(h["step_s"], 10, "raw tier at the 10 s report interval");
    let cpu = h["series"]["cpu_busy_ratio"].as_array().unwrap();
    assert!(cpu.len() >= 19, "{cpu:?}");
    assert!(cpu.iter().any(|p| p[1].is_number()), "points have values");
    for k in [
        "memory_used_bytes",
        "memory_total_bytes",
        "temperature_celsius",
        "load1",
        "net_rx_bytes_per_s",
        "net_tx_bytes_per_s",
        "disk_write_bytes_per_s",
        "fs_used_ratio_max",
    ] {
        assert!(h["series"][k].is_array(), "series {k} missing");
    }
    let (s, h) = get(format!("/v1/nodes/{id}/history?range=7d")).await;
    assert_eq!(s, 200, "{h}");
    for bad in [
        "range=2w",
        "from_ms=5&to_ms=5",
        "from_ms=0&to_ms=999999999999",
        "step_s=0",
        "step_s=86401",
        "from_ms=-1",
    ] {
        let (s, e) = get(format!("/v1/nodes/{id}/history?{bad}")).await;
        assert_eq!(s, 400, "{bad}: {e}");
        assert!(e["error"].is_string());
    }
    assert_eq!(get("/v1/nodes/nope/history".into()).await.0, 404);

    // Containers of the latest snapshot.
    let (s, cs) = get(format!("/v1/nodes/{id}/containers")).await;
    assert_eq!(s, 200);
    let cs = cs.as_array().unwrap();
    assert_eq!(cs.len(), 3, "the simulated snapshot has 3 containers");
    assert!(cs
        .iter()
        .all(|c| c["memory_bytes"].is_u64() && c["name"].is_string()));
    // Each simulated container uses 1 CPU-second per 10 s report: 0.1 CPU, from the
    // last (fully parsed) snapshot against the one before it (read lean).
    for c in cs {
        let r = c["cpu_ratio"]
            .as_f64()
            .unwrap_or_else(|| panic!("no cpu_ratio: {c}"));
        assert!((r - 0.1).abs() < 1e-4, "{c}");
    }

    // Node detail carries uptime and clock where the snapshot has them.
    let (s, d) = get(format!("/v1/nodes/{id}")).await;
    assert_eq!(s, 200);
    assert!(d.get("uptime_s").is_some() && d.get("clock").is_some());

    // Actions are audited, failed ones too; removal is an event.
    let r = http
        .post(format!("{url}/v1/nodes/{id}/availability"))
        .bearer_auth(&c.admin)
        .json(&serde_json::json!({"availability": "drain"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "not in a swarm");
    let r = http
        .post(format!("{url}/v1/nodes/{id}/availability"))
        .bearer_auth(&c.admin)
        .json(&serde_json::json!({"availability": "sideways"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .post(format!("{url}/v1/services/web/scale"))
        .bearer_auth(&c.admin)
        .json(&serde_json::json!({"replicas": 1001}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "at most 1000 replicas");
    let r = http
        .post(format!("{url}/v1/services/web/scale"))
        .bearer_auth(&c.admin)
        .header("content-type", "application/json")
        .body(format!(
            "{{\"replicas\": 1, \"pad\": \"{}\"}}",
            "x".repeat(8 << 10)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413, "bodies are bounded");
    let r = http
        .post(format!("{url}/v1/services/..%2Fcontainers/rebalance"))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "no path games towards the engine");
    let r = http
        .delete(format!("{url}/v1/nodes/{id}"))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let (s, a) = get("/v1/audit?limit=10".into()).await;
    assert_eq!(s, 200);
    let a = a.as_array().unwrap();
    let actions: Vec<(&str, &str)> = a
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [("remove", "ok"), ("availability", "error")],
        "newest first; the refused scale/rebalance never reached an action"
    );
    assert_eq!(a[1]["actor"], "admin-token");
    assert_eq!(a[1]["params"]["availability"], "drain");
    assert!(a[1]["error"].as_str().unwrap().contains("not joined"));

    let (s, ev) = get("/v1/events?limit=50".into()).await;
    assert_eq!(s, 200);
    let kinds: Vec<&str> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "node_removed",
            "admin_action",
            "admin_action",
            "node_registered"
        ],
        "newest first"
    );
    let (s, ev) = get("/v1/events?kind=node_registered,node_removed&limit=1".into()).await;
    assert_eq!(s, 200);
    assert_eq!(ev["events"][0]["kind"], "node_removed");
    assert_eq!(ev["events"][0]["hostname"], "pine-01");
    let next = ev["next_before_seq"].as_i64().unwrap();
    let (_, ev) = get(format!(
        "/v1/events?kind=node_registered,node_removed&limit=1&before_seq={next}"
    ))
    .await;
    assert_eq!(ev["events"][0]["kind"], "node_registered");
    assert!(ev["next_before_seq"].is_null());
    for bad in [
        "limit=0",
        "limit=501",
        "kind=bogus",
        "before_seq=0",
        "limit=x",
    ] {
        let (s, e) = get(format!("/v1/events?{bad}")).await;
        assert_eq!(s, 400, "{bad}: {e}");
    }
    assert_eq!(get("/v1/audit?limit=501".into()).await.0, 400);
    m.stop().await;

    // Durable: a new manager on the same state dir still has them.
    let m = start(config(&c, &state)).await;
    let r = http
        .get(format!("{}/v1/events", m.url))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap();
    let ev: Value = r.json().await.unwrap();
    assert_eq!(ev["events"].as_array().unwrap().len(), 4);
    assert!(state.join("cockpit.sqlite").exists());
    // Node credentials never reach these (the node was removed: register another).
    let reg2 = register(&http, &m.url, &c.token, facts("pine-02", "m2")).await;
    for p in [
        "/v1/events",
        "/v1/audit",
        "/v1/nodes/x/history",
        "/v1/nodes/x/containers",
    ] {
        let r = http
            .get(format!("{}{p}", m.url))
            .bearer_auth(&reg2.credential)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{p}");
    }
    let r = http
        .post(format!("{}/v1/services/x/rebalance", m.url))
        .bearer_auth(&reg2.credential)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    m.stop().await;
    println!("cockpit history/events test: {:?}", t0.elapsed());
}

/// Load, network and disk-write rates and the fullest filesystem are charted from the
/// store's durable tiers: every report of a batch has its point, a rate needs the
/// report before (the first has none), and after a manager restart the same figures
/// are served and the next report's rate is made against the stored latest snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_figures_are_durable_and_rates_span_a_restart() {
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let c = make_cluster(&tmp.path().join("cluster"));
    let state = tmp.path().join("state");
    let http = client(&c);
    let get = |url: String| {
        let (http, admin) = (http.clone(), c.admin.clone());
        async move {
            let r = http.get(url).bearer_auth(admin).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let from = 1_700_000_000_000u64;
    let range = |url: &str, id: &str| {
        format!(
            "{url}/v1/nodes/{id}/history?from_ms={from}&to_ms={}",
            from + 400_000
        )
    };
    let m = start(config(&c, &state)).await;
    let reg = register(&http, &m.url, &c.token, facts("pine-01", "m1")).await;
    let id = reg.node_id.clone();
    let r = post_report(
        &http,
        &m.url,
        &reg.credential,
        batch("pine-01", "i1", 0..20),
    )
    .await;
    assert_eq!(r.status(), 200);
    let before = get(range(&m.url, &id)).await;
    assert_eq!(before["step_s"], 10);
    let series = |h: &Value, k: &str| -> Vec<Option<f64>> {
        h["series"][k]
            .as_array()
            .unwrap_or_else(|| panic!("series {k} missing: {h}"))
            .iter()
            .map(|p| p[1].as_f64())
            .collect()
    };
    // The simulated board receives 150,000 bytes and writes 40,960 per 10 s report.
    let rx = series(&before, "net_rx_bytes_per_s");
    assert_eq!(rx.len(), 20, "{rx:?}");
    assert_eq!(rx[0], None, "no rate from the first report");
    for v in &rx[1..] {
        let v = v.expect("a rate for every later report");
        assert!((v / 15_000.0 - 1.0).abs() < 0.005, "{v}");
    }
    let disk = series(&before, "disk_write_bytes_per_s");
    assert!(
        disk[1..]
            .iter()
            .all(|v| v.is_some_and(|v| (v / 4096.0 - 1.0).abs() < 0.005)),
        "{disk:?}"
    );
    for k in ["load1", "fs_used_ratio_max", "net_tx_bytes_per_s"] {
        let s = series(&before, k);
        assert!(s[1..].iter().all(Option::is_some), "{k}: {s:?}");
    }
    m.stop().await;

    let m = start(config(&c, &state)).await;
    let after = get(range(&m.url, &id)).await;
    assert_eq!(
        after["series"], before["series"],
        "the same after a restart"
    );
    let r = post_report(
        &http,
        &m.url,
        &reg.credential,
        batch("pine-01", "i1", 20..21),
    )
    .await;
    assert_eq!(r.status(), 200);
    let next = get(range(&m.url, &id)).await;
    let rx = series(&next, "net_rx_bytes_per_s");
    assert_eq!(rx.len(), 21);
    let last = rx[20].expect("the first report after a restart has a rate");
    assert!((last / 15_000.0 - 1.0).abs() < 0.005, "{last}");
    // So do the containers' CPU figures: the points are taken again from the stored
    // latest snapshot.
    let cs = get(format!("{}/v1/nodes/{id}/containers", m.url)).await;
    let ratios: Vec<Option<f64>> = cs
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cpu_ratio"].as_f64())
        .collect();
    assert_eq!(ratios.len(), 3, "{cs}");
    assert!(
        ratios
            .iter()
            .all(|r| r.is_some_and(|r| (r - 0.1).abs() < 1e-4)),
        "the first report after a restart has container CPU rates: {ratios:?}"
    );
    m.stop().await;
    println!("cockpit durable history test: {:?}", t0.elapsed());
}

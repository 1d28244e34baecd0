//! Hostile input against the real manager binary on 127.0.0.1 (issue #10): an
//! oversized snapshot, a registration burst from one address, the node cap, terminal
//! escapes in node-supplied strings printed by `armada-manager nodes`, errors that must
//! be JSON (404, 405, rejections), and the security headers. Each test prints what it
//! did and what it saw.

mod common;

use common::*;
use protocol::wire::{ErrorBody, ReportBatch};

async fn error_body(r: reqwest::Response) -> (u16, String, reqwest::header::HeaderMap) {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = r.text().await.unwrap();
    assert!(
        ct.starts_with("application/json"),
        "HTTP {status} answered {ct:?}: {text:?}"
    );
    let e: ErrorBody = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("HTTP {status}: not an ErrorBody ({e}): {text}"));
    (status, e.error, headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_snapshot_is_413_and_not_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let c = make_cluster(&tmp.path().join("cluster"));
    let m = spawn_manager(&c, &tmp.path().join("state"), &[], None);
    let http = client(&c);
    let node = register(&http, &m.url, &c.token, facts("pine-01", "m1")).await;
    let mut snap = common::sim::snapshot("pine-01", "i", 1, 1_700_000_000_000);
    // 1.2 MiB of warnings: small on the wire once gzip'd, large once decoded.
    snap.warnings = vec!["x".repeat(1200 << 10)];
    let body = gzip(
        &serde_json::to_vec(&ReportBatch {
            protocol: protocol::PROTOCOL_VERSION,
            snapshots: vec![snap],
            dropped_total: 0,
        })
        .unwrap(),
    );
    let wire = body.len();
    let r = post_report(&http, &m.url, &node.credential, body).await;
    let (status, msg, _) = error_body(r).await;
    println!("[413] a snapshot of 1.2 MiB decoded ({wire} bytes gzip'd): HTTP {status}: {msg}");
    assert_eq!(status, 413);
    assert!(msg.contains("at most"), "{msg}");

    let ok = post_report(&http, &m.url, &node.credential, batch("pine-01", "i", 2..3)).await;
    println!(
        "[413] an ordinary snapshot afterwards: HTTP {}",
        ok.status()
    );
    assert_eq!(ok.status(), 200);
    let detail = admin_json(
        &http,
        &m.url,
        &c.admin,
        &format!("/v1/nodes/{}", node.node_id),
    )
    .await;
    assert_eq!(
        detail["latest"]["seq"], 2,
        "the oversized one was not stored"
    );

    // The cap holds for every snapshot of a batch, not only its newest: [huge, small]
    // was accepted on the small one's size, with the huge one's figures stored.
    let mut huge = common::sim::snapshot("pine-01", "i", 3, 1_700_000_030_000);
    huge.warnings = vec!["x".repeat(1200 << 10)];
    let small = common::sim::snapshot("pine-01", "i", 4, 1_700_000_040_000);
    let body = gzip(
        &serde_json::to_vec(&ReportBatch {
            protocol: protocol::PROTOCOL_VERSION,
            snapshots: vec![huge, small],
            dropped_total: 0,
        })
        .unwrap(),
    );
    let r = post_report(&http, &m.url, &node.credential, body).await;
    let (status, msg, _) = error_body(r).await;
    println!("[413] a batch [1.2 MiB, ordinary]: HTTP {status}: {msg}");
    assert_eq!(status, 413);
    assert!(msg.contains("at most"), "{msg}");
    let detail = admin_json(
        &http,
        &m.url,
        &c.admin,
        &format!("/v1/nodes/{}", node.node_id),
    )
    .await;
    assert_eq!(
        detail["latest"]["seq"], 2,
        "nothing of that batch was stored"
    );
    assert_eq!(detail["reports_total"], 1, "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_burst_from_one_address_is_429() {
    let tmp = tempfile::tempdir().unwrap();
    let c = make_cluster(&tmp.path().join("cluster"));
    let m = spawn_manager(
        &c,
        &tmp.path().join("state"),
        &["--register-burst", "10", "--register-per-minute", "6"],
        None,
    );
    let http = client(&c);
    let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
    let mut last_429 = None;
    // 30 attempts at once: valid ones and ones with a wrong token both count.
    for i in 0..30 {
        let token = if i % 2 == 0 {
            c.token.clone()
        } else {
            "armada1.zz.wrong".into()
        };
        let r = register_raw(
            &http,
            &m.url,
            &token,
            facts(&format!("b-{i}"), &format!("mb{i}")),
        )
        .await;
        *statuses.entry(r.status().as_u16()).or_default() += 1;
        if r.status() == 429 {
            last_429 = Some(error_body(r).await);
        }
    }
    println!(
        "[429] 30 registration attempts from 127.0.0.1 (burst 10, 6/min): statuses {statuses:?}"
    );
    let (_, msg, headers) = last_429.expect("some attempts were refused with 429");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    println!("[429] the refusal: Retry-After {retry}: {msg}");
    assert_eq!(statuses.get(&429), Some(&20));
    assert_eq!(statuses.get(&200), Some(&5));
    assert_eq!(statuses.get(&401), Some(&5));
    assert!((1..=10).contains(&retry), "{retry}");
    // Other paths are not limited.
    let r = http
        .get(format!("{}/v1/nodes", m.url))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_cap_refuses_new_machines_only() {
    let tmp = tempfile::tempdir().unwrap();
    let c = make_cluster(&tmp.path().join("cluster"));
    let m = spawn_manager(&c, &tmp.path().join("state"), &["--max-nodes", "3"], None);
    let http = client(&c);
    for i in 0..3 {
        register(
            &http,
            &m.url,
            &c.token,
            facts(&format!("cap-{i}"), &format!("mc{i}")),
        )
        .await;
    }
    let r = register_raw(&http, &m.url, &c.token, facts("cap-3", "mc3")).await;
    let (status, msg, _) = error_body(r).await;
    println!("[node cap] a 4th machine with --max-nodes 3: HTTP {status}: {msg}");
    assert_eq!(status, 507);
    let again = register_raw(&http, &m.url, &c.token, facts("cap-1", "mc1")).await;
    println!(
        "[node cap] a registered machine again: HTTP {}",
        again.status()
    );
    assert_eq!(again.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_terminal_escapes_as_text() {
    let tmp = tempfile::tempdir().unwrap();
    let c = make_cluster(&tmp.path().join("cluster"));
    let m = spawn_manager(&c, &tmp.path().join("state"), &[], None);
    let http = client(&c);
    let mut f = facts("evil-01", "me");
    f.board = "\x1b]0;pwned\x07\x1b[2J".into();
    register(&http, &m.url, &c.token, f).await;
    let run = |json: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_armada-manager"));
        cmd.args(["nodes", "--url", &m.url, "--cluster-dir"])
            .arg(&c.dir);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    for json in [false, true] {
        let out = run(json);
        let text = String::from_utf8_lossy(&out);
        println!(
            "[cli] armada-manager nodes{} with board \"\\x1b]0;pwned\\x07\\x1b[2J\":\n{text}",
            if json { " --json" } else { "" }
        );
        let raw: Vec<u8> = out
            .iter()
            .copied()
            .filter(|b| *b < 0x20 && *b != b'\n' || *b == 0x7f)
            .collect();
        assert!(
            raw.is_empty(),
            "control bytes reached the terminal: {raw:?}"
        );
        if json {
            assert!(text.contains(r"\u001b]0;pwned\u0007\u001b[2J"), "{text}");
        } else {
            assert!(text.contains(r"\x1b]0;pwned\x07\x1b[2J"), "{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_the_json_error_body() {
    let tmp = tempfile::tempdir().unwrap();
    let c = make_cluster(&tmp.path().join("cluster"));
    let m = spawn_manager(&c, &tmp.path().join("state"), &[], None);
    let http = client(&c);
    let node = register(&http, &m.url, &c.token, facts("pine-03", "m3")).await;
    let u = |p: &str| format!("{}{p}", m.url);
    let cases: Vec<(&str, reqwest::RequestBuilder, u16)> = vec![
        (
            "unknown path, admin",
            http.get(u("/nope")).bearer_auth(&c.admin),
            404,
        ),
        ("unknown path, nobody", http.get(u("/nope")), 401),
        ("POST on GET-only /v1/ca", http.post(u("/v1/ca")), 405),
        (
            "GET on POST-only /v1/report",
            http.get(u("/v1/report")).bearer_auth(&node.credential),
            405,
        ),
        (
            "PUT on /v1/nodes",
            http.put(u("/v1/nodes")).bearer_auth(&c.admin),
            405,
        ),
        (
            "bad query",
            http.get(u("/metrics?federate=maybe")).bearer_auth(&c.admin),
            400,
        ),
        (
            "malformed registration",
            http.post(u("/v1/register")).body("{"),
            400,
        ),
        (
            "unknown node",
            http.get(u("/v1/nodes/n-nope")).bearer_auth(&c.admin),
            404,
        ),
        (
            "node credential on admin path",
            http.get(u("/v1/nodes")).bearer_auth(&node.credential),
            403,
        ),
        ("no credential", http.get(u("/v1/health")), 401),
    ];
    for (what, req, want) in cases {
        let (status, msg, headers) = error_body(req.send().await.unwrap()).await;
        println!("[json errors] {what}: HTTP {status}: {msg}");
        assert_eq!(status, want, "{what}");
        assert_eq!(headers["cache-control"], "no-store", "{what}");
        if status == 405 {
            assert!(headers.contains_key("allow"), "{what}: 405 keeps Allow");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_api_carry_the_security_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let c = make_cluster(&tmp.path().join("cluster"));
    let m = spawn_manager(&c, &tmp.path().join("state"), &[], None);
    let http = client(&c);
    let page = http.get(format!("{}/", m.url)).send().await.unwrap();
    let h = page.headers().clone();
    let html = page.text().await.unwrap();
    let csp = h["content-security-policy"].to_str().unwrap().to_string();
    println!("[headers] GET /: Content-Security-Policy: {csp}");
    for (k, v) in [
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("x-content-type-options", "nosniff"),
    ] {
        println!("[headers] GET /: {k}: {:?}", h.get(k));
        assert_eq!(h[k], v);
    }
    assert!(csp.contains("default-src 'none'"));
    assert!(csp.contains("script-src 'self'"));
    assert!(csp.contains("frame-ancestors 'none'"));
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
    assert!(!csp.contains("http"), "no external origin allowed");
    // The page holds no inline script the policy would have to allow.
    let lower = html.to_lowercase();
    for (i, _) in lower.match_indices("<script") {
        let tag_end = i + lower[i..].find('>').unwrap();
        assert!(lower[i..tag_end].contains(" src="), "inline script at {i}");
        assert!(
            lower[tag_end..].starts_with("></script>"),
            "inline script body at {i}"
        );
    }
    for asset in ["/dashboard.js", "/dashboard.css"] {
        let r = http.get(format!("{}{asset}", m.url)).send().await.unwrap();
        println!(
            "[headers] GET {asset}: {} {:?}",
            r.status(),
            r.headers().get("content-type")
        );
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    }

    let api = http
        .get(format!("{}/v1/nodes", m.url))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap();
    let h = api.headers();
    println!(
        "[headers] GET /v1/nodes: cache-control {:?}, content-security-policy {:?}, x-frame-options {:?}",
        h.get("cache-control"),
        h.get("content-security-policy"),
        h.get("x-frame-options")
    );
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    assert!(h["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    let ca = http.get(format!("{}/v1/ca", m.url)).send().await.unwrap();
    assert_eq!(ca.headers()["cache-control"], "no-store");
}

//! The served OpenAPI document and the router agree: every route the source declares
//! (api.rs, the cockpit's handlers, the dashboard's page) is described with its
//! methods, and every described path and method is answered by a real manager (not
//! its 404 fallback, not 405). The answers' shapes are schemathesis' job
//! (ci/schemathesis-test.sh, cluster tier).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use serde_json::Value;

/// The value of every path constant the routers use, by the name the source uses.
fn constants() -> BTreeMap<&'static str, &'static str> {
    use armada_manager::cockpit::handlers as ck;
    use protocol::wire::*;
    [
        ("PATH_CA", PATH_CA),
        ("PATH_HEALTH", PATH_HEALTH),
        ("PATH_REGISTER", PATH_REGISTER),
        ("PATH_JOINED", PATH_JOINED),
        ("PATH_LABELS", PATH_LABELS),
        ("PATH_REPORT", PATH_REPORT),
        ("PATH_NODES", PATH_NODES),
        ("PATH_METRICS", PATH_METRICS),
        (
            "crate::alerts::PATH_ALERTS",
            armada_manager::alerts::PATH_ALERTS,
        ),
        (
            "crate::alerts::PATH_ALERT_EVENTS",
            armada_manager::alerts::PATH_ALERT_EVENTS,
        ),
        ("PATH_SESSION", ck::PATH_SESSION),
        ("PATH_CLUSTER", ck::PATH_CLUSTER),
        ("PATH_SERVICES", ck::PATH_SERVICES),
        ("PATH_TASKS", ck::PATH_TASKS),
        ("PATH_EVENTS", ck::PATH_EVENTS),
        ("PATH_AUDIT", ck::PATH_AUDIT),
        (
            "super::openapi::PATH",
            armada_manager::cockpit::openapi::PATH,
        ),
        ("PATH_SCRIPT", armada_manager::dashboard::PATH_SCRIPT),
        ("PATH_STYLE", armada_manager::dashboard::PATH_STYLE),
    ]
    .into_iter()
    .collect()
}

/// `(path, methods)` of every `.route(PATH, ...)` in a source file.
fn routes_in(src: &str) -> Vec<(String, BTreeSet<String>)> {
    let consts = constants();
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(i) = rest.find(".route(") {
        rest = &rest[i + ".route(".len()..];
        let mut depth = 1;
        let mut end = rest.len();
        for (j, ch) in rest.char_indices() {
            match ch {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = j;
                        break;
                    }
                }
                _ => {}
            }
        }
        let call = &rest[..end];
        let (first, handlers) = call.split_once(',').expect("route(path, handler)");
        let first = first.trim();
        if first == "path" {
            // The dashboard's asset table (`dashboard::ASSETS`): files, not API.
            for (p, _, _) in armada_manager::dashboard::ASSETS {
                assert!(is_asset(p), "dashboard asset {p} is not a static file");
            }
            rest = &rest[end..];
            continue;
        }
        let path = if let Some(lit) = first.strip_prefix('"') {
            lit.trim_end_matches('"').to_string()
        } else {
            consts
                .get(first)
                .unwrap_or_else(|| panic!("route constant `{first}`: add it to this test's table"))
                .to_string()
        };
        let mut methods = BTreeSet::new();
        for m in ["get", "post", "put", "delete", "patch"] {
            let h = handlers.replace(char::is_whitespace, "");
            if h.starts_with(&format!("{m}("))
                || h.contains(&format!(".{m}("))
                || h.contains(&format!("::{m}("))
            {
                methods.insert(m.to_string());
            }
        }
        assert!(!methods.is_empty(), "no method found in route({call})");
        out.push((path, methods));
        rest = &rest[end..];
    }
    out
}

fn document() -> Value {
    serde_json::from_str(armada_manager::cockpit::openapi::DOCUMENT).expect("openapi.json parses")
}

/// The page's own static files (scripts, styles, images) are served but not described.
fn is_asset(p: &str) -> bool {
    [".js", ".css", ".svg", ".png", ".ico", ".map"]
        .iter()
        .any(|e| p.ends_with(e))
}

#[test]
fn every_route_in_the_source_is_in_the_document() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/");
    let mut seen = 0;
    for file in ["api.rs", "cockpit/handlers.rs", "dashboard.rs"] {
        let src = std::fs::read_to_string(format!("{dir}{file}")).unwrap();
        for (path, methods) in routes_in(&src) {
            if is_asset(&path) {
                continue;
            }
            seen += 1;
            let item = paths
                .get(&path)
                .unwrap_or_else(|| panic!("{file}: route {path} is not in manager/openapi.json"));
            for m in &methods {
                assert!(
                    item.get(m).is_some(),
                    "{file}: {} {path} is not in manager/openapi.json",
                    m.to_uppercase()
                );
            }
        }
    }
    assert!(
        seen >= 26,
        "only {seen} routes found: is the parser still right?"
    );
    // Every operation names its answers, and every error is the ErrorBody.
    for (p, item) in paths {
        for (m, op) in item.as_object().unwrap() {
            if m == "parameters" {
                continue;
            }
            assert!(
                op["responses"]["default"]["$ref"] == "#/components/responses/Error",
                "{m} {p}: no default error response"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_routed() {
    let tmp = tempfile::tempdir().unwrap();
    let c = make_cluster(&tmp.path().join("cluster"));
    let m = start(config(&c, &tmp.path().join("state"))).await;
    let http = client(&c);
    // Public, and the same document as the file.
    let r = http
        .get(format!("{}/v1/openapi.json", m.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), document());

    let doc = document();
    let mut n = 0;
    for (p, item) in doc["paths"].as_object().unwrap() {
        for m_name in item.as_object().unwrap().keys() {
            if m_name == "parameters" {
                continue;
            }
            let method = reqwest::Method::from_bytes(m_name.to_uppercase().as_bytes()).unwrap();
            let url = format!("{}{}", m.url, p.replace("{id}", "no-such-id"));
            let r = http
                .request(method, &url)
                .bearer_auth(&c.admin)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            assert_ne!(status, 405, "{m_name} {p}: {body}");
            assert!(
                !(status == 404 && body.contains("no such path")),
                "{m_name} {p} is documented but not routed"
            );
            assert!(
                status < 500 || status == 503,
                "{m_name} {p}: {status} {body}"
            );
            n += 1;
        }
    }
    println!("{n} documented operations answered");
    m.stop().await;
}

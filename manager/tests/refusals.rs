//! Refusals: wrong token, another CA's token, garbage, missing or wrong bearer, forged
//! node credential, each a 401 counted in `/metrics`. Its own test binary (process):
//! the counters are process-wide.

mod common;

use common::*;
use protocol::token::BootstrapToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_401_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let c = make_cluster(&tmp.path().join("cluster"));
    let m = start(config(&c, &tmp.path().join("state"))).await;
    let http = client(&c);
    let node = register(&http, &m.url, &c.token, facts("pine-02", "m2")).await;

    // Wrong secret for our CA.
    let wrong = BootstrapToken::generate(c.fingerprint.clone()).expose();
    let r = register_raw(&http, &m.url, &wrong, facts("x1", "mx")).await;
    assert_eq!(r.status(), 401);
    // A token of another cluster (other CA fingerprint), the message says so.
    let other_ca = make_cluster(&tmp.path().join("other"));
    let r = register_raw(&http, &m.url, &other_ca.token, facts("x2", "my")).await;
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("another cluster"));
    // Garbage token, missing and wrong bearer, node credential where admin is needed.
    assert_eq!(
        register_raw(&http, &m.url, "armada1.zz.short", facts("x3", "mz"))
            .await
            .status(),
        401
    );
    assert_eq!(
        http.get(format!("{}/v1/nodes", m.url))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        http.get(format!("{}/v1/health", m.url))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let r = http
        .get(format!("{}/v1/nodes", m.url))
        .bearer_auth("not-the-admin-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = http
        .get(format!("{}/v1/nodes", m.url))
        .bearer_auth(&node.credential)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let forged = format!("armadanode1.{}.{}", node.node_id, "0".repeat(48));
    assert_eq!(
        post_report(&http, &m.url, &forged, batch("pine-02", "i", 0..1))
            .await
            .status(),
        401
    );
    // /v1/ca is public and is the CA the token pins.
    let ca = http
        .get(format!("{}/v1/ca", m.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(ca, c.ca_pem);

    let metrics = http
        .get(format!("{}/metrics", m.url))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("armada_manager_unauthorized_requests_total "))
        .unwrap();
    let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(n, 7, "{metrics}");
    m.stop().await;
}

//! Trust after faults, against a real manager on loopback (no Docker engine here; the
//! swarm half is in ci/readoption-test.sh): a manager started from the same cluster
//! folder on an EMPTY state dir re-adopts every node from its credential, a removed
//! node stays removed, forged credentials learn nothing, `"role":"manager"` buys a
//! worker's place, the admin token rotates without a restart, and an old cluster
//! folder without `credential-key` is refused with the way out.

mod common;

use std::time::{Duration, Instant};

use common::*;
use protocol::token::{CredentialKey, NodeCredential};
use protocol::wire::{ErrorBody, NodeSummary, RegisterRequest, RegisterResponse, Role};

async fn register_with_credential(
    http: &reqwest::Client,
    url: &str,
    credential: &str,
    hostname: &str,
    machine_id: &str,
) -> reqwest::Response {
    let mut labels = std::collections::BTreeMap::new();
    labels.insert("zone".to_string(), format!("shelf-{hostname}"));
    let req = RegisterRequest {
        protocol: protocol::PROTOCOL_VERSION,
        token: String::new(),
        credential: Some(credential.to_string()),
        facts: facts(hostname, machine_id),
        labels,
        swarm: None,
    };
    http.post(format!("{url}/v1/register"))
        .json(&req)
        .send()
        .await
        .unwrap()
}

async fn error_of(r: reqwest::Response) -> (u16, ErrorBody) {
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn nodes(http: &reqwest::Client, url: &str, admin: &str) -> Vec<NodeSummary> {
    let r = http
        .get(format!("{url}/v1/nodes"))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_state_dir_readopts_every_node_but_not_a_removed_one() {
    let tmp = tempfile::tempdir().unwrap();
    let c = make_cluster(&tmp.path().join("cluster"));
    let state = tmp.path().join("state");
    let m = start(config(&c, &state)).await;
    let http = client(&c);

    const N: usize = 6;
    let mut regs: Vec<(String, RegisterResponse)> = Vec::new();
    for i in 0..N {
        let host = format!("pine-{i:02}");
        let r = register(&http, &m.url, &c.token, facts(&host, &format!("m-{i}"))).await;
        let ok = post_report(&http, &m.url, &r.credential, batch(&host, "i1", 0..2)).await;
        assert_eq!(ok.status(), 200);
        regs.push((host, r));
    }
    // The operator removes one node before the state is lost.
    let (gone_host, gone) = regs.pop().unwrap();
    let del = http
        .delete(format!("{}/v1/nodes/{}", m.url, gone.node_id))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 200);
    m.stop().await;

    // The manager's card died: same cluster folder, EMPTY state dir.
    std::fs::remove_dir_all(&state).unwrap();
    let t0 = Instant::now();
    let m = start(config(&c, &state)).await;
    assert!(nodes(&http, &m.url, &c.admin).await.is_empty());

    let mut readopted = 0;
    for (host, r) in &regs {
        // The next report: 409 reregister, with a JSON body the agent acts on.
        let rep = post_report(&http, &m.url, &r.credential, batch(host, "i1", 2..3)).await;
        let (status, body) = error_of(rep).await;
        assert_eq!(status, 409, "{}", body.error);
        assert_eq!(body.code.as_deref(), Some("reregister"), "{}", body.error);

        let i = host.trim_start_matches("pine-").parse::<usize>().unwrap();
        let again =
            register_with_credential(&http, &m.url, &r.credential, host, &format!("m-{i}")).await;
        assert_eq!(again.status(), 200, "{:?}", again.text().await);
        let again: RegisterResponse = again.json().await.unwrap();
        assert_eq!(
            again.node_id, r.node_id,
            "the same node id, from the credential"
        );
        let ok = post_report(&http, &m.url, &again.credential, batch(host, "i1", 2..3)).await;
        assert_eq!(ok.status(), 200);
        readopted += 1;
    }
    let list = nodes(&http, &m.url, &c.admin).await;
    assert_eq!(list.len(), N - 1);
    for (host, r) in &regs {
        let n = list.iter().find(|n| n.node_id == r.node_id).unwrap();
        assert_eq!(&n.hostname, host);
        assert_eq!(n.labels["zone"], format!("shelf-{host}"));
    }
    println!(
        "state dir deleted: {readopted}/{} nodes re-adopted with their node ids, hostnames and labels in {:.2} s",
        N - 1,
        t0.elapsed().as_secs_f64()
    );

    // The removed node: revoked at its next report and at registration, both.
    let rep = post_report(
        &http,
        &m.url,
        &gone.credential,
        batch(&gone_host, "i1", 2..3),
    )
    .await;
    let (status, body) = error_of(rep).await;
    assert_eq!(
        (status, body.code.as_deref()),
        (401, Some("revoked")),
        "{}",
        body.error
    );
    let r = register_with_credential(&http, &m.url, &gone.credential, &gone_host, "m-5").await;
    let (status, body) = error_of(r).await;
    assert_eq!(
        (status, body.code.as_deref()),
        (401, Some("revoked")),
        "{}",
        body.error
    );
    assert_eq!(nodes(&http, &m.url, &c.admin).await.len(), N - 1);
    println!(
        "removed node {}: refused with 401 revoked after the state dir was lost",
        gone.node_id
    );
    let revoked = std::fs::read_to_string(c.dir.join("revoked-nodes")).unwrap();
    assert!(revoked.contains(&gone.node_id), "{revoked}");
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_superseded_credentials_learn_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let c = make_cluster(&tmp.path().join("cluster"));
    let m = start(config(&c, &tmp.path().join("state"))).await;
    let http = client(&c);
    let first = register(&http, &m.url, &c.token, facts("pine-01", "m1")).await;

    // Another cluster's key, and an unsigned credential for an id we never issued.
    let foreign = CredentialKey::generate()
        .sign(&NodeCredential::generate("n-0000aaaabbbb"))
        .expose();
    let unsigned = NodeCredential::generate("n-0000aaaabbbb").expose();
    for cred in [&foreign, &unsigned] {
        let rep = post_report(&http, &m.url, cred, batch("x", "i", 0..1)).await;
        let (status, body) = error_of(rep).await;
        assert_eq!((status, body.code), (401, None), "{}", body.error);
        let r = register_with_credential(&http, &m.url, cred, "pine-09", "m9").await;
        let (status, body) = error_of(r).await;
        assert_eq!((status, body.code), (401, None), "{}", body.error);
    }
    assert_eq!(nodes(&http, &m.url, &c.admin).await.len(), 1);

    // A credential replaced by a later registration: refused, not "reregister".
    let second = register(&http, &m.url, &c.token, facts("pine-01", "m1")).await;
    assert_eq!(second.node_id, first.node_id);
    let rep = post_report(
        &http,
        &m.url,
        &first.credential,
        batch("pine-01", "i", 0..1),
    )
    .await;
    let (status, body) = error_of(rep).await;
    assert_eq!((status, body.code), (401, None), "{}", body.error);

    // A credential cannot take over another machine's hostname.
    let other = register(&http, &m.url, &c.token, facts("pine-02", "m2")).await;
    let r = register_with_credential(&http, &m.url, &other.credential, "pine-01", "m2").await;
    assert_eq!(r.status(), 409);
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_manager_in_a_registration_is_answered_as_a_worker() {
    let tmp = tempfile::tempdir().unwrap();
    let c = make_cluster(&tmp.path().join("cluster"));
    let m = start(config(&c, &tmp.path().join("state"))).await;
    let http = client(&c);
    let mut f = facts("pine-07", "m7");
    f.role = Role::Manager;
    let r = register(&http, &m.url, &c.token, f).await;
    let list = nodes(&http, &m.url, &c.admin).await;
    let n = list.iter().find(|n| n.node_id == r.node_id).unwrap();
    assert_eq!(n.role, Role::Worker, "recorded as what it was granted");
    assert!(
        r.swarm_join_token.is_empty(),
        "no engine in this test; the real-swarm check is ci/readoption-test.sh"
    );
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_rotates_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let c = make_cluster(&tmp.path().join("cluster"));
    let m = start(config(&c, &tmp.path().join("state"))).await;
    let http = client(&c);
    let status = |tok: String| {
        let (http, url) = (http.clone(), m.url.clone());
        async move {
            http.get(format!("{url}/v1/nodes"))
                .bearer_auth(tok)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status(c.admin.clone()).await, 200);
    // What `armada cluster token rotate-admin` does: a new file by rename.
    let new_admin = "rotated-admin-token-fedcba9876543210".to_string();
    let tmpfile = c.dir.join("admin-token.tmp");
    std::fs::write(&tmpfile, format!("{new_admin}\n")).unwrap();
    std::fs::rename(&tmpfile, c.dir.join("admin-token")).unwrap();
    let t0 = Instant::now();
    let mut picked = None;
    while t0.elapsed() < Duration::from_secs(10) {
        if status(new_admin.clone()).await == 200 {
            picked = Some(t0.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let picked = picked.expect("the rotated admin token is accepted within 10 s");
    assert_eq!(
        status(c.admin.clone()).await,
        401,
        "the old admin token is refused"
    );
    println!(
        "rotate-admin: new token accepted after {:.1} s, old one refused",
        picked.as_secs_f64()
    );
    // A broken file keeps the current token rather than locking the operator out.
    std::fs::write(&tmpfile, "short\n").unwrap();
    std::fs::rename(&tmpfile, c.dir.join("admin-token")).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(status(new_admin.clone()).await, 200);
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_folder_without_credential_key_is_refused_with_the_way_out() {
    let tmp = tempfile::tempdir().unwrap();
    let c = make_cluster(&tmp.path().join("cluster"));
    std::fs::remove_file(c.dir.join("credential-key")).unwrap();
    let (addr_tx, _addr_rx) = tokio::sync::oneshot::channel();
    let err = armada_manager::server::serve(
        config(&c, &tmp.path().join("state")),
        move |a| {
            let _ = addr_tx.send(a);
        },
        std::future::pending(),
    )
    .await
    .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("credential-key") && text.contains("armada cluster upgrade"),
        "{text}"
    );
}

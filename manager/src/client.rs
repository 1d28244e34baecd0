//! `armada-manager nodes [remove|promote|demote|label ID]`: the operator's view and
//! actions, through the running
//! manager's API (HTTPS pinned to the cluster folder's `ca.pem`, admin token from its
//! `admin-token`). The store belongs to the running manager; nothing here opens it.
//!
//! Every string a node or the manager supplied goes through [`printable`] before it
//! reaches the terminal: a `board` of `"\x1b]0;pwned\x07"` must print as those
//! characters, not retitle the operator's window.

use std::borrow::Cow;
use std::fmt::Write as _;

use std::path::Path;

use anyhow::{bail, Context, Result};
use protocol::wire::{ErrorBody, NodeSummary, PATH_NODES};

pub fn http_client(cluster_dir: &Path) -> Result<(reqwest::Client, String)> {
    let ca_path = cluster_dir.join(crate::cluster::CA_CERT);
    let ca = std::fs::read(&ca_path).with_context(|| format!("reading {}", ca_path.display()))?;
    let cert = reqwest::Certificate::from_pem(&ca)
        .with_context(|| format!("parsing {}", ca_path.display()))?;
    let admin_path = cluster_dir.join(crate::cluster::ADMIN_TOKEN);
    let admin = std::fs::read_to_string(&admin_path)
        .with_context(|| format!("reading {}", admin_path.display()))?
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or_default()
        .to_string();
    let client = reqwest::Client::builder()
        .tls_certs_only([cert])
        .timeout(std::time::Duration::from_secs(15))
        .build()
        .context("building the HTTPS client")?;
    Ok((client, admin))
}

async fn check(resp: reqwest::Response, what: &str) -> Result<reqwest::Response> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let msg = resp
        .json::<ErrorBody>()
        .await
        .map(|e| e.error)
        .unwrap_or_default();
    bail!("{what}: HTTP {status}: {}", printable(&msg))
}

pub async fn list(url: &str, cluster_dir: &Path) -> Result<Vec<NodeSummary>> {
    let (client, admin) = http_client(cluster_dir)?;
    let what = format!("GET {url}{PATH_NODES}");
    let resp = client
        .get(format!("{url}{PATH_NODES}"))
        .bearer_auth(admin)
        .send()
        .await
        .with_context(|| what.clone())?;
    check(resp, &what)
        .await?
        .json()
        .await
        .with_context(|| format!("{what}: reading the reply"))
}

pub async fn remove(url: &str, cluster_dir: &Path, id: &str) -> Result<()> {
    let (client, admin) = http_client(cluster_dir)?;
    let what = format!("DELETE {url}{PATH_NODES}/{id}");
    let resp = client
        .delete(format!("{url}{PATH_NODES}/{id}"))
        .bearer_auth(admin)
        .send()
        .await
        .with_context(|| what.clone())?;
    check(resp, &what).await?;
    Ok(())
}

/// `POST` (or `PUT` with a body) to an admin path under `/v1/nodes/{id}`; the reply.
async fn node_action(
    url: &str,
    cluster_dir: &Path,
    id: &str,
    action: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value> {
    let (client, admin) = http_client(cluster_dir)?;
    let target = format!("{url}{PATH_NODES}/{id}/{action}");
    let (req, what) = match body {
        Some(b) => (client.put(&target).json(&b), format!("PUT {target}")),
        None => (client.post(&target), format!("POST {target}")),
    };
    let resp = req
        .bearer_auth(admin)
        .send()
        .await
        .with_context(|| what.clone())?;
    check(resp, &what)
        .await?
        .json()
        .await
        .with_context(|| format!("{what}: reading the reply"))
}

/// Makes the node a swarm manager (`promote`) or a worker again (`demote`).
pub async fn set_role(url: &str, cluster_dir: &Path, id: &str, manager: bool) -> Result<()> {
    let action = if manager { "promote" } else { "demote" };
    node_action(url, cluster_dir, id, action, None).await?;
    Ok(())
}

/// Sets (`KEY=VALUE`) and removes (`KEY`) operator labels; returns the node's labels.
pub async fn label(
    url: &str,
    cluster_dir: &Path,
    id: &str,
    set: &[String],
    remove: &[String],
) -> Result<std::collections::BTreeMap<String, String>> {
    let mut pairs = std::collections::BTreeMap::new();
    for kv in set {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("label `{kv}`: expected KEY=VALUE"))?;
        pairs.insert(k.to_string(), v.to_string());
    }
    let reply = node_action(
        url,
        cluster_dir,
        id,
        "labels",
        Some(serde_json::json!({ "set": pairs, "remove": remove })),
    )
    .await?;
    serde_json::from_value(reply["labels"].clone()).context("reading the labels in the reply")
}

/// Characters that move the cursor, change the terminal or reorder text on screen:
/// C0 and C1 controls, DEL, and the Unicode bidi and invisible format characters.
fn is_unsafe_on_a_terminal(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// `s` safe to print on a terminal: unsafe characters as `\xNN` or `\u{NNNN}`, and a
/// backslash doubled so the escapes cannot be forged. Pure.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c == '\\' || is_unsafe_on_a_terminal(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if is_unsafe_on_a_terminal(c) && (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_unsafe_on_a_terminal(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// JSON text safe to print: serde_json already writes C0 controls as `\u00XX`; DEL, C1
/// and format characters it leaves raw, so they become `\uXXXX` escapes here (still
/// the same JSON value).
pub fn json_printable(json: &str) -> Cow<'_, str> {
    if !json.chars().any(is_unsafe_on_a_terminal) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        if is_unsafe_on_a_terminal(c) && c != '\n' {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// The table `armada-manager nodes` prints. Pure.
pub fn table(nodes: &[NodeSummary], now_ms: u64) -> String {
    let header = [
        "NODE",
        "HOSTNAME",
        "STATUS",
        "SWARM",
        "BOARD",
        "ROLE",
        "CPU",
        "MEMORY",
        "TEMP",
        "CTRS",
        "LAST REPORT",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for n in nodes {
        let mem = match (n.memory_used_bytes, n.memory_total_bytes) {
            (Some(u), Some(t)) => format!("{}/{} MiB", u >> 20, t >> 20),
            _ => "-".into(),
        };
        rows.push(vec![
            printable(&n.node_id).into_owned(),
            printable(&n.hostname).into_owned(),
            serde_json::to_value(n.status)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            n.swarm_state
                .as_deref()
                .map(|s| printable(s).into_owned())
                .unwrap_or_else(|| "-".into()),
            printable(&n.board).into_owned(),
            n.role.to_string(),
            opt(n.cpu_busy_ratio.map(|c| format!("{:.0}%", c * 100.0))),
            mem,
            opt(n.temperature_celsius.map(|t| format!("{t:.1}C"))),
            opt(n.containers),
            opt(n
                .last_report_ms
                .map(|t| format!("{}s ago", now_ms.saturating_sub(t) / 1000))),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::wire::{NodeStatus, Role};

    #[test]
    fn table_aligns_columns() {
        let n = NodeSummary {
            node_id: "n-1".into(),
            hostname: "pine-01".into(),
            board: "pine64".into(),
            role: Role::Worker,
            arch: "aarch64".into(),
            status: NodeStatus::Stale,
            swarm_node_id: None,
            swarm_state: Some("ready".into()),
            labels: Default::default(),
            registered_at_ms: 0,
            last_report_ms: Some(1_000),
            containers: Some(3),
            cpu_busy_ratio: Some(0.25),
            memory_used_bytes: Some(512 << 20),
            memory_total_bytes: Some(2048 << 20),
            temperature_celsius: None,
        };
        let t = table(&[n], 41_000);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[1].contains("stale")
                && lines[1].contains("25%")
                && lines[1].contains("512/2048 MiB")
        );
        assert!(lines[1].contains("40s ago"));
        assert_eq!(lines[0].find("HOSTNAME"), lines[1].find("pine-01"));
    }

    #[test]
    fn terminal_escapes_print_as_text() {
        let hostile = "\x1b]0;pwned\x07\x1b[2J";
        assert_eq!(printable(hostile), "\\x1b]0;pwned\\x07\\x1b[2J");
        assert_eq!(
            printable("a\\x1b"),
            "a\\\\x1b",
            "a literal backslash is doubled"
        );
        assert_eq!(printable("\u{9b}31m\u{202e}\x7f"), "\\x9b31m\\u{202e}\\x7f");
        assert!(matches!(printable("pine-01 ü"), Cow::Borrowed(_)));
        let json =
            serde_json::to_string(&serde_json::json!({ "b": "\x1b\u{9b}\u{202e}" })).unwrap();
        let safe = json_printable(&json);
        assert!(!safe.chars().any(is_unsafe_on_a_terminal));
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back["b"], "\x1b\u{9b}\u{202e}", "still the same JSON value");
    }
}

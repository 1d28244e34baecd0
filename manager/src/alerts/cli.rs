//! `armada-manager alerts [events] [--json]`: the operator's view of alerts, through the
//! running manager's API (the store belongs to the running manager).

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::durable::EventRow;
use super::state::AlertState;
use super::{AlertsReport, PATH_ALERTS, PATH_ALERT_EVENTS};

async fn get<T: serde::de::DeserializeOwned>(
    url: &str,
    cluster_dir: &Path,
    path: &str,
) -> Result<T> {
    let (client, admin) = crate::client::http_client(cluster_dir)?;
    let what = format!("GET {url}{path}");
    let resp = client
        .get(format!("{url}{path}"))
        .bearer_auth(admin)
        .send()
        .await
        .with_context(|| what.clone())?;
    if !resp.status().is_success() {
        let status = resp.status();
        let msg = resp
            .json::<protocol::wire::ErrorBody>()
            .await
            .map(|e| e.error)
            .unwrap_or_default();
        bail!("{what}: HTTP {status}: {msg}");
    }
    resp.json()
        .await
        .with_context(|| format!("{what}: reading the reply"))
}

pub async fn report(url: &str, cluster_dir: &Path) -> Result<AlertsReport> {
    get(url, cluster_dir, PATH_ALERTS).await
}

pub async fn events(url: &str, cluster_dir: &Path, since: i64) -> Result<Vec<EventRow>> {
    get(
        url,
        cluster_dir,
        &format!("{PATH_ALERT_EVENTS}?since={since}&limit=1000"),
    )
    .await
}

fn ago(now_ms: u64, t: u64) -> String {
    let s = now_ms.saturating_sub(t) / 1000;
    match s {
        0..=119 => format!("{s}s ago"),
        120..=7199 => format!("{}m ago", s / 60),
        _ => format!("{}h ago", s / 3600),
    }
}

fn columns(rows: Vec<Vec<String>>) -> String {
    let n = rows.first().map_or(0, |r| r.len());
    let widths: Vec<usize> = (0..n)
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

/// What `armada-manager alerts` prints. Pure.
pub fn table(r: &AlertsReport, now_ms: u64) -> String {
    let mut rows = vec![[
        "ID", "STATE", "SEVERITY", "ALERT", "HOSTNAME", "SINCE", "SUMMARY",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect::<Vec<_>>()];
    for a in &r.alerts {
        let since = match a.state {
            AlertState::Resolved => a.resolved_at_ms.unwrap_or(a.active_since_ms),
            AlertState::Firing => a.fired_at_ms.unwrap_or(a.active_since_ms),
            AlertState::Pending => a.active_since_ms,
        };
        let state = if a.silenced && a.state != AlertState::Resolved {
            format!("{} (silenced)", a.state.as_str())
        } else {
            a.state.as_str().to_string()
        };
        rows.push(vec![
            a.id.clone(),
            state,
            a.severity.as_str().to_string(),
            a.labels.get("alertname").cloned().unwrap_or_default(),
            a.labels
                .get("hostname")
                .cloned()
                .unwrap_or_else(|| "-".into()),
            ago(now_ms, since),
            a.summary.clone(),
        ]);
    }
    let mut out = if r.alerts.is_empty() {
        "no alerts\n".to_string()
    } else {
        columns(rows)
    };
    if !r.receivers.is_empty() {
        out.push('\n');
        let mut rows = vec![[
            "RECEIVER",
            "KIND",
            "URL",
            "DELIVERED",
            "FAILED",
            "QUEUED",
            "LAST ERROR",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()];
        for x in &r.receivers {
            rows.push(vec![
                x.name.clone(),
                serde_json::to_value(x.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                x.url.clone(),
                x.stats.delivered.to_string(),
                x.stats.failed_attempts.to_string(),
                x.stats.queued.to_string(),
                match (&x.stats.last_error, x.stats.last_error_ms) {
                    (Some(e), Some(t)) => format!("{} ({e})", ago(now_ms, t)),
                    _ => "-".into(),
                },
            ]);
        }
        out.push_str(&columns(rows));
    }
    for s in &r.silences {
        let m: Vec<String> = s.matchers.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!(
            "silence {{{}}} until {}{}\n",
            m.join(","),
            crate::config::rfc3339(s.ends_at_ms),
            if s.comment.is_empty() {
                String::new()
            } else {
                format!(": {}", s.comment)
            }
        ));
    }
    out
}

/// What `armada-manager alerts events` prints. Pure.
pub fn events_table(ev: &[EventRow]) -> String {
    let mut rows = vec![["SEQ", "AT", "ALERT", "ID", "CHANGE", "SUMMARY"]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()];
    for e in ev {
        let t = &e.transition;
        rows.push(vec![
            e.seq.to_string(),
            crate::config::rfc3339(t.at_ms),
            t.alertname.clone(),
            t.alert_id.clone(),
            format!(
                "{} -> {}",
                t.from.map_or("new", |f| f.as_str()),
                t.to.as_str()
            ),
            t.summary.clone(),
        ]);
    }
    columns(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::rules::Severity;
    use crate::alerts::state::Alert;
    use std::collections::BTreeMap;

    #[test]
    fn table_lists_alerts_and_receivers() {
        let r = AlertsReport {
            alerts: vec![Alert {
                id: "abcdef0123456789".into(),
                rule: "node_down".into(),
                state: AlertState::Firing,
                severity: Severity::Critical,
                labels: BTreeMap::from([
                    ("alertname".to_string(), "ArmadaNodeDown".to_string()),
                    ("hostname".to_string(), "pine-01".to_string()),
                ]),
                summary: "pine-01 is down".into(),
                value: None,
                active_since_ms: 0,
                fired_at_ms: Some(10_000),
                resolved_at_ms: None,
                notified: true,
                silenced: false,
            }],
            receivers: vec![super::super::ReceiverView {
                name: "ops".into(),
                kind: crate::config::ReceiverKind::Ntfy,
                url: "http://127.0.0.1:1/t?REDACTED".into(),
                stats: Default::default(),
            }],
            silences: vec![],
            config_file: None,
            evaluated_at_ms: None,
            given_up_total: 0,
        };
        let t = table(&r, 70_000);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[1].contains("firing")
                && lines[1].contains("ArmadaNodeDown")
                && lines[1].contains("60s ago"),
            "{t}"
        );
        assert_eq!(lines[0].find("HOSTNAME"), lines[1].find("pine-01"));
        assert!(t.contains("ntfy") && t.contains("REDACTED"), "{t}");
    }
}

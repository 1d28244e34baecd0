//! Delivery to receivers: the three payloads, retries with backoff, and URL redaction.
//!
//! Payloads are pure functions of (receiver, notification) so tests check them
//! directly. Only [`send`] does I/O. A receiver URL may carry a secret (userinfo, a
//! token in the query, as ntfy and Slack-style hooks do): it is only ever shown through
//! [`redact`], and reqwest errors are stripped of their URL before they are shown.

use std::time::Duration;

use serde_json::{json, Value};

use super::state::{AlertState, Notification};
use crate::config::{rfc3339, Receiver, ReceiverKind};

/// First retry after this, doubling per attempt up to [`BACKOFF_MAX`].
pub const BACKOFF_FIRST: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A notification still undelivered after this long is dropped (and counted).
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Delay before attempt `attempts + 1`, after `attempts` failures.
pub fn backoff(attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(20);
    BACKOFF_FIRST.saturating_mul(1u32 << exp).min(BACKOFF_MAX)
}

/// The URL without userinfo and with its query replaced: safe for logs and the API.
pub fn redact(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    if !u.username().is_empty() || u.password().is_some() {
        let _ = u.set_username("REDACTED");
        let _ = u.set_password(None);
    }
    if u.query().is_some() {
        u.set_query(Some("REDACTED"));
    }
    u.set_fragment(None);
    u.to_string()
}

/// [`redact`] for a string that may not even parse: keeps scheme and host at most.
pub fn redact_str(s: &str) -> String {
    if let Ok(u) = reqwest::Url::parse(s) {
        return redact(&u);
    }
    let (scheme, rest) = s.split_once("://").unwrap_or(("", s));
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host: String = host.chars().take_while(|c| !"/?#".contains(*c)).collect();
    format!("{scheme}://{host}/…")
}

/// Whether a receiver wants this alert (its matchers against labels + severity).
pub fn routes_to(r: &Receiver, n: &Notification) -> bool {
    r.matchers.iter().all(|(k, v)| {
        if k == "severity" {
            n.alert.severity.as_str() == v
        } else {
            n.alert.labels.get(k) == Some(v)
        }
    })
}

fn status(n: &Notification) -> &'static str {
    match n.alert.state {
        AlertState::Resolved => "resolved",
        _ => "firing",
    }
}

/// armada's own JSON: the alert as the API shows it, plus the status.
pub fn generic_payload(receiver: &str, n: &Notification) -> Value {
    let a = &n.alert;
    json!({
        "version": "armada-alerts/1",
        "receiver": receiver,
        "status": status(n),
        "alert": {
            "id": a.id,
            "alertname": a.labels.get("alertname"),
            "state": a.state.as_str(),
            "severity": a.severity.as_str(),
            "labels": a.labels,
            "summary": a.summary,
            "value": a.value,
            "starts_at": a.fired_at_ms.map(rfc3339),
            "active_since": rfc3339(a.active_since_ms),
            "ends_at": a.resolved_at_ms.map(rfc3339),
        }
    })
}

/// Alertmanager's webhook payload (version 4), one alert per message.
pub fn alertmanager_payload(receiver: &str, n: &Notification) -> Value {
    let a = &n.alert;
    let mut labels = a.labels.clone();
    labels.insert("severity".into(), a.severity.as_str().into());
    let annotations = json!({ "summary": a.summary, "value": a.value.map(|v| v.to_string()) });
    let alertname = a.labels.get("alertname").cloned().unwrap_or_default();
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{alertname}\"}}"),
        "truncatedAlerts": 0,
        "status": status(n),
        "receiver": receiver,
        "groupLabels": { "alertname": alertname },
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "",
        "alerts": [{
            "status": status(n),
            "labels": labels,
            "annotations": annotations,
            "startsAt": rfc3339(a.fired_at_ms.unwrap_or(a.active_since_ms)),
            // Alertmanager's zero time for "not ended".
            "endsAt": a.resolved_at_ms.map(rfc3339).unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            "generatorURL": "",
            "fingerprint": a.id,
        }]
    })
}

/// ntfy: (body, headers).
pub fn ntfy_message(n: &Notification) -> (String, Vec<(&'static str, String)>) {
    let a = &n.alert;
    let name = a.labels.get("alertname").cloned().unwrap_or_default();
    let resolved = a.state == AlertState::Resolved;
    let title = format!("{} {name}", if resolved { "RESOLVED" } else { "FIRING" });
    // ntfy priorities: 5 urgent, 4 high, 3 default.
    let priority = match (resolved, a.severity) {
        (true, _) => "3",
        (false, super::rules::Severity::Critical) => "5",
        (false, super::rules::Severity::Warning) => "4",
        (false, super::rules::Severity::Info) => "3",
    };
    let tags = if resolved {
        "white_check_mark".to_string()
    } else {
        format!("warning,{}", a.severity.as_str())
    };
    (
        format!("{} (alert {})", a.summary, a.id),
        vec![
            ("Title", title),
            ("Priority", priority.to_string()),
            ("Tags", tags),
        ],
    )
}

/// POSTs one notification; `Err` carries a message safe to show (no URL secret).
pub async fn send(client: &reqwest::Client, r: &Receiver, n: &Notification) -> Result<(), String> {
    let req = client.post(r.url.clone()).timeout(r.timeout);
    let req = match r.kind {
        ReceiverKind::Webhook => req.json(&generic_payload(&r.name, n)),
        ReceiverKind::Alertmanager => req.json(&alertmanager_payload(&r.name, n)),
        ReceiverKind::Ntfy => {
            let (body, headers) = ntfy_message(n);
            headers
                .into_iter()
                .fold(req.body(body), |req, (k, v)| req.header(k, v))
        }
    };
    match req.send().await {
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(resp) => Err(format!("HTTP {}", resp.status())),
        Err(e) => {
            let e = e.without_url();
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            Err(msg)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::rules::Severity;
    use crate::alerts::state::Alert;
    use std::collections::BTreeMap;

    fn n(state: AlertState) -> Notification {
        Notification {
            alert: Alert {
                id: "0123456789abcdef".into(),
                rule: "node_down".into(),
                state,
                severity: Severity::Critical,
                labels: BTreeMap::from([
                    ("alertname".to_string(), "ArmadaNodeDown".to_string()),
                    ("hostname".to_string(), "pine-01".to_string()),
                ]),
                summary: "pine-01 is down".into(),
                value: None,
                active_since_ms: 1_796_126_400_000,
                fired_at_ms: Some(1_796_126_400_000),
                resolved_at_ms: (state == AlertState::Resolved).then_some(1_796_126_460_000),
                notified: true,
                silenced: false,
            },
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(30), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn redaction_hides_userinfo_and_query() {
        let u = reqwest::Url::parse("https://bob:hunter2@hooks.example:8443/x/y?token=s3cret#frag")
            .unwrap();
        let r = redact(&u);
        assert!(
            !r.contains("hunter2") && !r.contains("s3cret") && !r.contains("bob"),
            "{r}"
        );
        assert!(
            r.starts_with("https://REDACTED@hooks.example:8443/x/y?REDACTED"),
            "{r}"
        );
        let plain = reqwest::Url::parse("http://127.0.0.1:9/hook").unwrap();
        assert_eq!(redact(&plain), "http://127.0.0.1:9/hook");
        let s = redact_str("http://u:pw@[bad/x?t=1");
        assert!(!s.contains("pw") && !s.contains("t=1"), "{s}");
    }

    #[test]
    fn alertmanager_payload_has_the_v4_shape() {
        let p = alertmanager_payload("ops", &n(AlertState::Firing));
        assert_eq!(p["version"], "4");
        assert_eq!(p["status"], "firing");
        assert_eq!(p["receiver"], "ops");
        let a = &p["alerts"][0];
        assert_eq!(a["fingerprint"], "0123456789abcdef");
        assert_eq!(a["labels"]["alertname"], "ArmadaNodeDown");
        assert_eq!(a["labels"]["severity"], "critical");
        assert_eq!(a["startsAt"], "2026-12-01T12:00:00Z");
        assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(a["annotations"]["summary"], "pine-01 is down");
        let p = alertmanager_payload("ops", &n(AlertState::Resolved));
        assert_eq!(p["status"], "resolved");
        assert_eq!(p["alerts"][0]["endsAt"], "2026-12-01T12:01:00Z");
    }

    #[test]
    fn generic_payload_carries_id_and_status() {
        let p = generic_payload("ops", &n(AlertState::Resolved));
        assert_eq!(p["status"], "resolved");
        assert_eq!(p["alert"]["id"], "0123456789abcdef");
        assert_eq!(p["alert"]["labels"]["hostname"], "pine-01");
        assert_eq!(p["alert"]["ends_at"], "2026-12-01T12:01:00Z");
    }

    #[test]
    fn ntfy_headers() {
        let (body, h) = ntfy_message(&n(AlertState::Firing));
        assert!(body.contains("pine-01 is down") && body.contains("0123456789abcdef"));
        let get = |k: &str| {
            h.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(get("Title"), "FIRING ArmadaNodeDown");
        assert_eq!(get("Priority"), "5");
        assert!(get("Tags").contains("warning"));
        let (_, h) = ntfy_message(&n(AlertState::Resolved));
        assert!(h
            .iter()
            .any(|(k, v)| *k == "Title" && v.starts_with("RESOLVED")));
    }

    #[test]
    fn routing_by_matchers_and_severity() {
        let mut r = Receiver {
            name: "ops".into(),
            kind: ReceiverKind::Webhook,
            url: reqwest::Url::parse("http://127.0.0.1:1/").unwrap(),
            timeout: Duration::from_secs(1),
            matchers: BTreeMap::new(),
        };
        assert!(routes_to(&r, &n(AlertState::Firing)));
        r.matchers.insert("severity".into(), "warning".into());
        assert!(!routes_to(&r, &n(AlertState::Firing)));
        r.matchers.insert("severity".into(), "critical".into());
        r.matchers.insert("hostname".into(), "pine-01".into());
        assert!(routes_to(&r, &n(AlertState::Firing)));
    }
}

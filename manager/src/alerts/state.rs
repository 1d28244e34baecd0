//! The alert state machine: conditions in, alerts and notifications out. Pure.
//!
//! An alert's id is a hash of its identifying labels (`alertname` and the node,
//! mountpoint, container... that the rule added), so the same problem is one alert
//! however often it is evaluated, across restarts, and on every receiver (the id is the
//! Alertmanager `fingerprint` a receiver dedupes on).
//!
//! pending (condition holds, not yet for `for`) -> firing -> resolved (condition gone).
//! A condition that goes away while pending leaves nothing behind. A silenced alert
//! goes on changing state but is not notified; if it still fires when the silence ends
//! it is notified then, and its resolution is notified only if its firing was.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::rules::{Condition, Severity};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Pending,
    Firing,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: String,
    pub rule: String,
    pub state: AlertState,
    pub severity: Severity,
    pub labels: BTreeMap<String, String>,
    pub summary: String,
    pub value: Option<f64>,
    /// When the condition started to hold (ms since the epoch, manager clock).
    pub active_since_ms: u64,
    pub fired_at_ms: Option<u64>,
    pub resolved_at_ms: Option<u64>,
    /// The firing was handed to the receivers (so its resolution must be too).
    pub notified: bool,
    /// A silence matches it (as of the last evaluation).
    pub silenced: bool,
}

/// What a receiver is told: the alert as it was at the transition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub alert: Alert,
}

/// A change worth recording in the event history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub alert_id: String,
    pub alertname: String,
    pub from: Option<AlertState>,
    pub to: AlertState,
    pub at_ms: u64,
    pub labels: BTreeMap<String, String>,
    pub summary: String,
}

/// The stable id: SHA-256 over the sorted identifying labels, 16 hex digits.
pub fn alert_id(labels: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for (k, v) in labels {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..8])
}

/// What one evaluation changed.
#[derive(Debug, Default)]
pub struct StepOutcome {
    pub notifications: Vec<Notification>,
    pub transitions: Vec<Transition>,
    /// Ids of alerts changed (to write) and removed (to delete).
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

/// Knobs of a step that are not per rule.
pub struct StepPolicy<'a> {
    /// `for` of a rule key.
    pub for_ms: &'a dyn Fn(&str) -> u64,
    /// True when a silence matches these labels now.
    pub silenced: &'a dyn Fn(&BTreeMap<String, String>) -> bool,
    /// While true (just after start, before the swarm and the nodes have been heard
    /// from again) an absent condition does not resolve a firing alert.
    pub hold_resolutions: bool,
    /// Resolved alerts are forgotten after this long.
    pub resolved_retention_ms: u64,
}

/// Applies the conditions that hold at `now_ms` to `alerts`.
pub fn step(
    alerts: &mut BTreeMap<String, Alert>,
    conditions: Vec<Condition>,
    now_ms: u64,
    policy: &StepPolicy,
) -> StepOutcome {
    let mut out = StepOutcome::default();
    let mut seen = std::collections::BTreeSet::new();
    for c in conditions {
        let id = alert_id(&c.labels);
        if !seen.insert(id.clone()) {
            continue; // the same labels twice in one evaluation: one alert
        }
        let for_ms = (policy.for_ms)(c.rule);
        let silenced = (policy.silenced)(&c.labels);
        let alertname = c.labels.get("alertname").cloned().unwrap_or_default();
        let a = match alerts.get_mut(&id) {
            Some(a) if a.state != AlertState::Resolved => a,
            previous => {
                let from = previous.map(|a| a.state);
                let a = Alert {
                    id: id.clone(),
                    rule: c.rule.to_string(),
                    state: AlertState::Pending,
                    severity: c.severity,
                    labels: c.labels.clone(),
                    summary: c.summary.clone(),
                    value: c.value,
                    active_since_ms: now_ms,
                    fired_at_ms: None,
                    resolved_at_ms: None,
                    notified: false,
                    silenced,
                };
                out.transitions.push(Transition {
                    alert_id: id.clone(),
                    alertname: alertname.clone(),
                    from,
                    to: AlertState::Pending,
                    at_ms: now_ms,
                    labels: c.labels.clone(),
                    summary: c.summary.clone(),
                });
                alerts.insert(id.clone(), a);
                out.changed.push(id.clone());
                match alerts.get_mut(&id) {
                    Some(a) => a,
                    None => continue,
                }
            }
        };
        let mut changed = a.summary != c.summary
            || a.value != c.value
            || a.silenced != silenced
            || a.severity != c.severity;
        a.summary = c.summary;
        a.value = c.value;
        a.severity = c.severity;
        a.silenced = silenced;
        if a.state == AlertState::Pending && now_ms.saturating_sub(a.active_since_ms) >= for_ms {
            a.state = AlertState::Firing;
            a.fired_at_ms = Some(now_ms);
            changed = true;
            out.transitions.push(Transition {
                alert_id: id.clone(),
                alertname: alertname.clone(),
                from: Some(AlertState::Pending),
                to: AlertState::Firing,
                at_ms: now_ms,
                labels: a.labels.clone(),
                summary: a.summary.clone(),
            });
        }
        if a.state == AlertState::Firing && !a.notified && !a.silenced {
            a.notified = true;
            changed = true;
            out.notifications.push(Notification { alert: a.clone() });
        }
        if changed && !out.changed.contains(&id) {
            out.changed.push(id);
        }
    }
    let gone: Vec<String> = alerts
        .iter()
        .filter(|(id, a)| a.state != AlertState::Resolved && !seen.contains(*id))
        .map(|(id, _)| id.clone())
        .collect();
    for id in gone {
        let Some(a) = alerts.get_mut(&id) else {
            continue;
        };
        match a.state {
            AlertState::Pending => {
                alerts.remove(&id);
                out.removed.push(id);
            }
            AlertState::Firing if policy.hold_resolutions => {}
            AlertState::Firing => {
                a.state = AlertState::Resolved;
                a.resolved_at_ms = Some(now_ms);
                out.transitions.push(Transition {
                    alert_id: id.clone(),
                    alertname: a.labels.get("alertname").cloned().unwrap_or_default(),
                    from: Some(AlertState::Firing),
                    to: AlertState::Resolved,
                    at_ms: now_ms,
                    labels: a.labels.clone(),
                    summary: a.summary.clone(),
                });
                if a.notified {
                    out.notifications.push(Notification { alert: a.clone() });
                }
                out.changed.push(id);
            }
            AlertState::Resolved => {}
        }
    }
    let expired: Vec<String> = alerts
        .iter()
        .filter(|(_, a)| {
            a.state == AlertState::Resolved
                && a.resolved_at_ms
                    .is_some_and(|t| now_ms.saturating_sub(t) > policy.resolved_retention_ms)
        })
        .map(|(id, _)| id.clone())
        .collect();
    for id in expired {
        alerts.remove(&id);
        out.removed.push(id);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(name: &str, host: &str) -> Condition {
        let mut labels = BTreeMap::new();
        labels.insert("alertname".to_string(), name.to_string());
        labels.insert("hostname".to_string(), host.to_string());
        Condition {
            rule: "temperature",
            labels,
            severity: Severity::Warning,
            summary: format!("{host} hot"),
            value: Some(80.0),
        }
    }

    fn policy<'a>(
        for_ms: &'a dyn Fn(&str) -> u64,
        silenced: &'a dyn Fn(&BTreeMap<String, String>) -> bool,
    ) -> StepPolicy<'a> {
        StepPolicy {
            for_ms,
            silenced,
            hold_resolutions: false,
            resolved_retention_ms: 3_600_000,
        }
    }

    #[test]
    fn id_is_stable_and_depends_on_every_label() {
        let a = cond("ArmadaHighTemperature", "a").labels;
        assert_eq!(alert_id(&a), alert_id(&a.clone()));
        assert_eq!(alert_id(&a).len(), 16);
        let b = cond("ArmadaHighTemperature", "b").labels;
        assert_ne!(alert_id(&a), alert_id(&b));
        // "ab" + "c" must not collide with "a" + "bc".
        let mut x = BTreeMap::new();
        x.insert("ab".to_string(), "c".to_string());
        let mut y = BTreeMap::new();
        y.insert("a".to_string(), "bc".to_string());
        assert_ne!(alert_id(&x), alert_id(&y));
    }

    #[test]
    fn pending_then_firing_after_for_then_resolved_once() {
        let mut alerts = BTreeMap::new();
        let f = |_: &str| 60_000;
        let s = |_: &BTreeMap<String, String>| false;
        let p = policy(&f, &s);
        let o = step(&mut alerts, vec![cond("T", "a")], 0, &p);
        assert!(o.notifications.is_empty());
        let a = alerts.values().next().unwrap();
        assert_eq!(a.state, AlertState::Pending);
        let o = step(&mut alerts, vec![cond("T", "a")], 59_999, &p);
        assert!(o.notifications.is_empty());
        let o = step(&mut alerts, vec![cond("T", "a")], 60_000, &p);
        assert_eq!(o.notifications.len(), 1);
        assert_eq!(o.notifications[0].alert.state, AlertState::Firing);
        // Deduplicated: still firing, nothing new to say.
        for t in [70_000, 80_000] {
            let o = step(&mut alerts, vec![cond("T", "a")], t, &p);
            assert!(o.notifications.is_empty());
        }
        let o = step(&mut alerts, vec![], 90_000, &p);
        assert_eq!(o.notifications.len(), 1);
        assert_eq!(o.notifications[0].alert.state, AlertState::Resolved);
        assert_eq!(o.notifications[0].alert.resolved_at_ms, Some(90_000));
        let o = step(&mut alerts, vec![], 100_000, &p);
        assert!(o.notifications.is_empty());
        // It comes back: a new pending episode with the same id.
        let id = alert_id(&cond("T", "a").labels);
        step(&mut alerts, vec![cond("T", "a")], 110_000, &p);
        assert_eq!(alerts[&id].state, AlertState::Pending);
        assert_eq!(alerts[&id].active_since_ms, 110_000);
    }

    #[test]
    fn a_short_blip_never_fires() {
        let mut alerts = BTreeMap::new();
        let f = |_: &str| 60_000;
        let s = |_: &BTreeMap<String, String>| false;
        let p = policy(&f, &s);
        step(&mut alerts, vec![cond("T", "a")], 0, &p);
        let o = step(&mut alerts, vec![], 30_000, &p);
        assert!(o.notifications.is_empty());
        assert!(alerts.is_empty());
        assert_eq!(o.removed.len(), 1);
    }

    #[test]
    fn for_zero_fires_at_once() {
        let mut alerts = BTreeMap::new();
        let f = |_: &str| 0;
        let s = |_: &BTreeMap<String, String>| false;
        let o = step(&mut alerts, vec![cond("T", "a")], 5, &policy(&f, &s));
        assert_eq!(o.notifications.len(), 1);
        assert_eq!(o.transitions.len(), 2, "pending then firing, both recorded");
    }

    #[test]
    fn silenced_alerts_are_not_notified_until_the_silence_ends() {
        let mut alerts = BTreeMap::new();
        let f = |_: &str| 0;
        let on = |_: &BTreeMap<String, String>| true;
        let off = |_: &BTreeMap<String, String>| false;
        let o = step(&mut alerts, vec![cond("T", "a")], 0, &policy(&f, &on));
        assert!(o.notifications.is_empty());
        assert!(alerts.values().next().unwrap().silenced);
        assert_eq!(alerts.values().next().unwrap().state, AlertState::Firing);
        // Resolved while silenced and never notified: nothing to resolve at receivers.
        let o = step(&mut alerts, vec![], 1, &policy(&f, &on));
        assert!(o.notifications.is_empty());
        // Firing again, silenced, then the silence ends while it still fires.
        step(&mut alerts, vec![cond("T", "a")], 2, &policy(&f, &on));
        let o = step(&mut alerts, vec![cond("T", "a")], 3, &policy(&f, &off));
        assert_eq!(o.notifications.len(), 1);
        let o = step(&mut alerts, vec![], 4, &policy(&f, &on));
        assert_eq!(
            o.notifications.len(),
            1,
            "its firing was told, so its end is too"
        );
    }

    #[test]
    fn held_resolutions_keep_firing_alerts_through_a_restart() {
        let mut alerts = BTreeMap::new();
        let f = |_: &str| 0;
        let s = |_: &BTreeMap<String, String>| false;
        step(&mut alerts, vec![cond("T", "a")], 0, &policy(&f, &s));
        let mut p = policy(&f, &s);
        p.hold_resolutions = true;
        let o = step(&mut alerts, vec![], 10, &p);
        assert!(o.notifications.is_empty());
        assert_eq!(alerts.values().next().unwrap().state, AlertState::Firing);
        // Seen again while held: nothing new (no second firing).
        let o = step(&mut alerts, vec![cond("T", "a")], 20, &p);
        assert!(o.notifications.is_empty());
    }

    #[test]
    fn resolved_alerts_are_forgotten_after_retention() {
        let mut alerts = BTreeMap::new();
        let f = |_: &str| 0;
        let s = |_: &BTreeMap<String, String>| false;
        let p = policy(&f, &s);
        step(&mut alerts, vec![cond("T", "a")], 0, &p);
        step(&mut alerts, vec![], 1, &p);
        step(&mut alerts, vec![], 1 + p.resolved_retention_ms, &p);
        assert_eq!(alerts.len(), 1);
        let o = step(&mut alerts, vec![], 2 + p.resolved_retention_ms, &p);
        assert!(alerts.is_empty());
        assert_eq!(o.removed.len(), 1);
    }
}

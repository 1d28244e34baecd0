//! The node's own labels after registration: `[labels]` of armada.toml is compared at
//! every start with the set the manager last acknowledged (`labels.json` in the state
//! folder, written at registration and here); a different set is sent through
//! `PUT /v1/labels`, so an edited armada.toml reaches the manager and the swarm node
//! without a new registration. The manager decides what lands on the swarm node
//! (operator-owned keys keep the operator's value, dropped keys are taken off); its
//! answer is recorded and `armada-agent status` shows it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use protocol::config::FirstBootConfig;
use protocol::token::NodeCredential;
use protocol::wire::{NodeLabels, NodeLabelsReply, PATH_LABELS};

use crate::register::{error_chain, error_message, ManagerAddress};
use crate::report::Shared;
use crate::retry::Backoff;
use crate::state::{LabelsSent, StateDir};
use crate::status::ErrorKind;

/// Pause between attempts while the manager is away.
const AWAY_CAP: Duration = Duration::from_secs(60);
/// Pause between attempts after a refusal (an operator has to act).
const REFUSED_CAP: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    #[error("sending the labels to the manager at {manager}: {message}")]
    Away { manager: String, message: String },
    #[error("the manager at {manager} answered {status} to {PATH_LABELS}: {message}")]
    Refused {
        manager: String,
        status: u16,
        message: String,
    },
}

/// True when `labels` must be sent: nothing was acknowledged yet, or another set was.
pub fn pending(labels: &BTreeMap<String, String>, sent: Option<&LabelsSent>) -> bool {
    sent.map(|s| &s.labels != labels).unwrap_or(true)
}

/// What registration acknowledged: the labels it carried.
pub fn registered(labels: &BTreeMap<String, String>) -> LabelsSent {
    LabelsSent {
        labels: labels.clone(),
        acknowledged_ms: crate::report::now_ms(),
        via: "registration".into(),
        ..Default::default()
    }
}

pub use protocol::wire::format_labels;

/// One line for the log and for `armada-agent status`.
pub fn describe(sent: &LabelsSent) -> String {
    let mut s = format!(
        "{} (acknowledged {} via {})",
        format_labels(&sent.labels),
        crate::clock::utc(sent.acknowledged_ms),
        sent.via
    );
    match &sent.swarm_node_id {
        Some(sid) => s.push_str(&format!("; on swarm node {sid}")),
        None if sent.via != "registration" => s.push_str("; put on the swarm node when it joins"),
        None => {}
    }
    if !sent.operator_keys.is_empty() {
        s.push_str(&format!(
            "; the operator's value kept for {}",
            sent.operator_keys.join(", ")
        ));
    }
    if !sent.removed.is_empty() {
        s.push_str(&format!("; removed {}", sent.removed.join(", ")));
    }
    s
}

/// `PUT /v1/labels` once.
pub async fn send(
    client: &reqwest::Client,
    manager: &ManagerAddress,
    credential: &NodeCredential,
    labels: &BTreeMap<String, String>,
) -> Result<NodeLabelsReply, LabelsError> {
    let away = |message: String| LabelsError::Away {
        manager: manager.to_string(),
        message,
    };
    let resp = client
        .put(format!("{}{PATH_LABELS}", manager.base_url()))
        .bearer_auth(credential.expose())
        .json(&NodeLabels {
            labels: labels.clone(),
        })
        .send()
        .await
        .map_err(|e| away(error_chain(&e)))?;
    let status = resp.status();
    if status.is_success() {
        return resp
            .json()
            .await
            .map_err(|e| away(format!("reading the reply: {}", error_chain(&e))));
    }
    let message = error_message(resp).await;
    if status.is_server_error() {
        return Err(away(format!("{status}: {message}")));
    }
    Err(LabelsError::Refused {
        manager: manager.to_string(),
        status: status.as_u16(),
        message,
    })
}

/// Sends armada.toml's labels when they differ from the acknowledged set, retrying with
/// backoff until the manager takes them (ended by the caller on a re-registration,
/// which carries the labels itself).
pub async fn sync_until_done(
    cfg_path: PathBuf,
    client: reqwest::Client,
    manager: ManagerAddress,
    credential: NodeCredential,
    state: StateDir,
    shared: Arc<Shared>,
) {
    let status = &shared.status;
    let mut away = Backoff::new(Duration::from_secs(1), AWAY_CAP);
    let mut refused = Backoff::new(Duration::from_secs(5), REFUSED_CAP);
    loop {
        let labels = match FirstBootConfig::load(&cfg_path) {
            Ok(cfg) => cfg.labels,
            Err(e) => {
                let msg = format!("{e:#}: the labels are not sent until it parses");
                tracing::error!("{msg}");
                status.fail(ErrorKind::Labels, msg);
                tokio::time::sleep(refused.next_delay()).await;
                continue;
            }
        };
        let sent = state.labels_sent();
        if !pending(&labels, sent.as_ref()) {
            if let Some(s) = &sent {
                tracing::info!("labels unchanged: {}", describe(s));
            }
            status.clear(ErrorKind::Labels);
            return;
        }
        tracing::info!(
            "armada.toml's labels ({}) differ from the ones the manager acknowledged ({}): sending them",
            format_labels(&labels),
            sent.as_ref()
                .map(|s| format_labels(&s.labels))
                .unwrap_or_else(|| "none recorded".into())
        );
        let delay = match send(&client, &manager, &credential, &labels).await {
            Ok(reply) => {
                let record = LabelsSent {
                    labels: reply.labels,
                    acknowledged_ms: crate::report::now_ms(),
                    via: PATH_LABELS.into(),
                    swarm_node_id: reply.swarm_node_id,
                    operator_keys: reply.operator_keys,
                    removed: reply.removed,
                };
                tracing::info!("labels sent to the manager: {}", describe(&record));
                if let Err(e) = state.save_labels_sent(&record) {
                    // The manager has them; they are sent again at the next start.
                    tracing::warn!("{e:#}");
                }
                status.clear(ErrorKind::Labels);
                return;
            }
            Err(e @ LabelsError::Away { .. }) => {
                let d = away.next_delay();
                tracing::warn!("{e}; retrying in {:.1}s", d.as_secs_f64());
                status.fail(ErrorKind::Labels, e.to_string());
                d
            }
            Err(e @ LabelsError::Refused { .. }) => {
                let d = refused.next_delay();
                tracing::error!("{e}; retrying in {:.1}s", d.as_secs_f64());
                status.fail(ErrorKind::Labels, e.to_string());
                d
            }
        };
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_changed_set_is_pending_an_acknowledged_one_is_not() {
        let zone1 = labels(&[("zone", "shelf-1")]);
        assert!(pending(&zone1, None), "nothing recorded: send");
        let sent = registered(&zone1);
        assert_eq!(sent.via, "registration");
        assert!(!pending(&zone1, Some(&sent)));
        assert!(pending(&labels(&[("zone", "shelf-2")]), Some(&sent)));
        assert!(pending(
            &labels(&[("zone", "shelf-1"), ("rack", "a")]),
            Some(&sent)
        ));
        assert!(pending(&BTreeMap::new(), Some(&sent)), "all removed");
    }

    #[test]
    fn the_description_says_what_the_manager_did() {
        let sent = LabelsSent {
            labels: labels(&[("zone", "shelf-2"), ("rack", "b")]),
            acknowledged_ms: 1_700_000_000_000,
            via: PATH_LABELS.into(),
            swarm_node_id: Some("abc123".into()),
            operator_keys: vec!["rack".into()],
            removed: vec!["old".into()],
        };
        let d = describe(&sent);
        assert!(d.starts_with("rack=b, zone=shelf-2 (acknowledged "), "{d}");
        assert!(d.contains("via /v1/labels"), "{d}");
        assert!(d.contains("on swarm node abc123"), "{d}");
        assert!(d.contains("the operator's value kept for rack"), "{d}");
        assert!(d.contains("removed old"), "{d}");
        let unjoined = LabelsSent {
            swarm_node_id: None,
            ..sent
        };
        assert!(describe(&unjoined).contains("when it joins"));
        assert_eq!(format_labels(&BTreeMap::new()), "none");
    }
}

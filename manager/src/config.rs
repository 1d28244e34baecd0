//! The manager's config file, `manager.toml` (`armada-manager serve --config FILE`):
//! the `[alerts]` section (evaluation interval, rule overrides, silences) and the
//! `[[receivers]]` that alerts are delivered to. Every key is optional; a missing file
//! given explicitly is an error, no `--config` means the built-in defaults.
//!
//! Errors name the file, the key and its line. The file is read again on SIGHUP; a bad
//! file then keeps the running config (and says why in the log).
//!
//! ```toml
//! [alerts]
//! interval = "5s"            # how often rules are evaluated
//! startup_grace = "30s"      # after start, firing alerts are not resolved before this
//! resolved_retention = "24h" # resolved alerts stay visible this long
//!
//! [alerts.rules.temperature] # any built-in rule key (see `armada-manager alerts rules`)
//! threshold = 80.0
//! for = "1m"
//! severity = "critical"
//! nodes = { zone = "shelf-1" }   # only nodes with these labels
//!
//! [[alerts.silences]]            # a maintenance window: alerts matching are not sent
//! matchers = { hostname = "pine-01" }
//! starts_at = "2026-12-01T10:00:00Z"   # optional
//! ends_at = "2026-12-01T12:00:00Z"
//! comment = "moving the shelf"
//!
//! [[receivers]]
//! name = "ops"
//! kind = "alertmanager"          # webhook | alertmanager | ntfy
//! url = "https://hooks.example/alerts"
//! timeout = "10s"
//! matchers = { severity = "critical" }   # optional: only these alerts
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::alerts::rules::{self, Rule, Severity};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: line {line}: `{key}`: {message}")]
    Invalid {
        file: String,
        key: String,
        line: usize,
        message: String,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    #[serde(default)]
    alerts: AlertsToml,
    #[serde(default)]
    receivers: Vec<ReceiverToml>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertsToml {
    interval: Option<String>,
    startup_grace: Option<String>,
    resolved_retention: Option<String>,
    #[serde(default)]
    rules: BTreeMap<String, RuleToml>,
    #[serde(default)]
    silences: Vec<SilenceToml>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleToml {
    enabled: Option<bool>,
    #[serde(rename = "for")]
    for_: Option<String>,
    severity: Option<Severity>,
    threshold: Option<f64>,
    count: Option<u32>,
    window: Option<String>,
    #[serde(default)]
    nodes: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SilenceToml {
    #[serde(default)]
    matchers: BTreeMap<String, String>,
    starts_at: Option<String>,
    ends_at: String,
    #[serde(default)]
    comment: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiverToml {
    name: String,
    kind: ReceiverKind,
    url: String,
    timeout: Option<String>,
    #[serde(default)]
    matchers: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiverKind {
    /// armada's own JSON, one alert per request.
    Webhook,
    /// Alertmanager's webhook payload (`version: "4"`), one alert per request.
    Alertmanager,
    /// ntfy: the message as the body, Title/Priority/Tags headers, POSTed to the topic URL.
    Ntfy,
}

/// A silence or maintenance window.
#[derive(Clone, Debug, PartialEq, serde::Serialize, Deserialize)]
pub struct Silence {
    /// Alert labels that must all match (`alertname`, `hostname`, `node`, `board`, ...).
    pub matchers: BTreeMap<String, String>,
    pub starts_at_ms: Option<u64>,
    pub ends_at_ms: u64,
    pub comment: String,
}

impl Silence {
    pub fn matches(&self, labels: &BTreeMap<String, String>, now_ms: u64) -> bool {
        self.starts_at_ms.is_none_or(|s| now_ms >= s)
            && now_ms < self.ends_at_ms
            && self.matchers.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Receiver {
    pub name: String,
    pub kind: ReceiverKind,
    pub url: reqwest::Url,
    pub timeout: Duration,
    /// Alert labels (plus `severity`) that must all match; empty: every alert.
    pub matchers: BTreeMap<String, String>,
}

/// The alert settings in force.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertSettings {
    pub interval: Duration,
    pub startup_grace: Duration,
    pub resolved_retention: Duration,
    pub rules: Vec<Rule>,
    pub silences: Vec<Silence>,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            interval: Duration::from_secs(5),
            startup_grace: Duration::from_secs(30),
            resolved_retention: Duration::from_secs(24 * 3600),
            rules: rules::default_rules(),
            silences: Vec::new(),
        }
    }
}

/// `manager.toml`, checked and resolved against the built-in defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ManagerConfig {
    /// Where it came from (`None`: built-in defaults).
    pub file: Option<PathBuf>,
    pub alerts: AlertSettings,
    pub receivers: Vec<Receiver>,
}

impl ManagerConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        let mut cfg = Self::parse(&text, &file)?;
        cfg.file = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// Parses and checks `text`; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let raw: FileToml = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_string(),
            message: describe_toml_error(text, &e),
        })?;
        let invalid = |section: &str, key: &str, message: String| ConfigError::Invalid {
            file: file.to_string(),
            key: if section.is_empty() {
                key.to_string()
            } else {
                format!("{section}.{key}")
            },
            line: line_of(text, section, key),
            message,
        };
        let duration = |section: &str, key: &str, v: &Option<String>, default: Duration| match v {
            None => Ok(default),
            Some(s) => humantime::parse_duration(s).map_err(|e| {
                invalid(
                    section,
                    key,
                    format!("`{s}` is not a duration such as \"30s\", \"5m\", \"1h\": {e}"),
                )
            }),
        };
        let mut alerts = AlertSettings::default();
        let a = &raw.alerts;
        alerts.interval = duration("alerts", "interval", &a.interval, alerts.interval)?;
        if alerts.interval < Duration::from_secs(1) || alerts.interval > Duration::from_secs(3600) {
            return Err(invalid(
                "alerts",
                "interval",
                "must be between 1s and 1h".into(),
            ));
        }
        alerts.startup_grace = duration(
            "alerts",
            "startup_grace",
            &a.startup_grace,
            alerts.startup_grace,
        )?;
        alerts.resolved_retention = duration(
            "alerts",
            "resolved_retention",
            &a.resolved_retention,
            alerts.resolved_retention,
        )?;
        for (key, over) in &a.rules {
            let section = format!("alerts.rules.{key}");
            let Some(b) = rules::built_in(key) else {
                let known: Vec<_> = rules::BUILT_IN.iter().map(|r| r.key).collect();
                return Err(invalid(
                    "alerts.rules",
                    key,
                    format!("no such rule; the rules are: {}", known.join(", ")),
                ));
            };
            let Some(r) = alerts.rules.iter_mut().find(|r| r.key == b.key) else {
                continue;
            };
            if let Some(e) = over.enabled {
                r.enabled = e;
            }
            if let Some(s) = over.severity {
                r.severity = s;
            }
            r.for_ms = duration(&section, "for", &over.for_, Duration::from_millis(r.for_ms))?
                .as_millis() as u64;
            if let Some(t) = over.threshold {
                if !b.params.threshold {
                    return Err(invalid(
                        &section,
                        "threshold",
                        format!("rule `{key}` has no threshold"),
                    ));
                }
                if !t.is_finite() || t < 0.0 {
                    return Err(invalid(
                        &section,
                        "threshold",
                        "must be a finite number >= 0".into(),
                    ));
                }
                if (key.ends_with("_full") || key.ends_with("_low")) && t > 1.0 {
                    {
                        return Err(invalid(
                            &section,
                            "threshold",
                            format!("is a ratio between 0 and 1 (0.9 for 90%), not {t}"),
                        ));
                    }
                }
                r.threshold = t;
            }
            if let Some(c) = over.count {
                if !b.params.count {
                    return Err(invalid(
                        &section,
                        "count",
                        format!("rule `{key}` has no count"),
                    ));
                }
                if c == 0 {
                    return Err(invalid(&section, "count", "must be at least 1".into()));
                }
                r.count = c;
            }
            if over.window.is_some() {
                if !b.params.window {
                    return Err(invalid(
                        &section,
                        "window",
                        format!("rule `{key}` has no window"),
                    ));
                }
                r.window_ms =
                    duration(&section, "window", &over.window, Duration::ZERO)?.as_millis() as u64;
                if r.window_ms == 0 {
                    return Err(invalid(&section, "window", "must be longer than 0s".into()));
                }
            }
            r.nodes = over.nodes.clone();
        }
        for (i, s) in a.silences.iter().enumerate() {
            let section = "alerts.silences";
            let ends = timestamp(&s.ends_at)
                .map_err(|m| invalid(section, "ends_at", format!("silence {}: {m}", i + 1)))?;
            let starts = match &s.starts_at {
                None => None,
                Some(t) => Some(timestamp(t).map_err(|m| {
                    invalid(section, "starts_at", format!("silence {}: {m}", i + 1))
                })?),
            };
            if starts.is_some_and(|st| st >= ends) {
                return Err(invalid(
                    section,
                    "ends_at",
                    format!("silence {}: ends before it starts", i + 1),
                ));
            }
            if s.matchers.is_empty() {
                return Err(invalid(
                    section,
                    "matchers",
                    format!("silence {}: needs at least one matcher (a silence of everything is `enabled = false` on each rule)", i + 1),
                ));
            }
            alerts.silences.push(Silence {
                matchers: s.matchers.clone(),
                starts_at_ms: starts,
                ends_at_ms: ends,
                comment: s.comment.clone(),
            });
        }
        let mut receivers = Vec::new();
        for r in &raw.receivers {
            let bad = |key: &str, m: String| {
                invalid("receivers", key, format!("receiver `{}`: {m}", r.name))
            };
            if r.name.is_empty()
                || r.name.len() > 64
                || !r
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(bad(
                    "name",
                    "names are 1-64 letters, digits, `-` or `_`".into(),
                ));
            }
            if receivers.iter().any(|x: &Receiver| x.name == r.name) {
                return Err(bad("name", "a second receiver with this name".into()));
            }
            // The URL may carry a secret: errors show it redacted.
            let url = reqwest::Url::parse(&r.url).map_err(|e| {
                bad(
                    "url",
                    format!(
                        "`{}` is not a URL: {e}",
                        crate::alerts::delivery::redact_str(&r.url)
                    ),
                )
            })?;
            if url.scheme() != "http" && url.scheme() != "https" {
                return Err(bad("url", "only http:// and https:// URLs".into()));
            }
            let timeout = duration("receivers", "timeout", &r.timeout, Duration::from_secs(10))?;
            if timeout.is_zero() || timeout > Duration::from_secs(120) {
                return Err(bad("timeout", "must be between 1ms and 120s".into()));
            }
            receivers.push(Receiver {
                name: r.name.clone(),
                kind: r.kind,
                url,
                timeout,
                matchers: r.matchers.clone(),
            });
        }
        Ok(ManagerConfig {
            file: None,
            alerts,
            receivers,
        })
    }
}

/// RFC 3339 (`2026-12-01T12:00:00Z`) to ms since the epoch.
fn timestamp(s: &str) -> Result<u64, String> {
    let t = humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("`{s}` is not a time such as \"2026-12-01T12:00:00Z\": {e}"))?;
    Ok(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64)
}

/// ms since the epoch to RFC 3339 with seconds.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
        .to_string()
}

/// The line of `key` inside `[section]` (or the section header, or 1): for errors about
/// values that parsed but make no sense.
fn line_of(text: &str, section: &str, key: &str) -> usize {
    let mut in_section = section.is_empty();
    let mut section_line = None;
    let array_header = format!("[[{section}]]");
    let header = format!("[{section}]");
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.starts_with('[') {
            let own = l == header || l == array_header;
            if own {
                section_line.get_or_insert(i + 1);
            }
            in_section = own;
            continue;
        }
        if in_section {
            let k = l.split('=').next().unwrap_or("").trim().trim_matches('"');
            if k == key {
                return i + 1;
            }
        }
    }
    // `[alerts.rules]` keys are table names: `[alerts.rules.KEY]`.
    let sub = format!("[{section}.{key}]");
    if let Some(i) = text.lines().position(|l| l.trim() == sub) {
        return i + 1;
    }
    section_line.unwrap_or(1)
}

/// "line 7, column 3: unknown field `thresold`, expected one of ...".
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim_end().to_string();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {col}: {msg}")
        }
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        let c = ManagerConfig::parse("", "manager.toml").unwrap();
        assert_eq!(c.alerts, AlertSettings::default());
        assert!(c.receivers.is_empty());
    }

    #[test]
    fn overrides_apply_to_their_rule() {
        let text = r#"
[alerts]
interval = "2s"

[alerts.rules.temperature]
threshold = 80.5
for = "10s"
severity = "critical"
nodes = { zone = "shelf-1" }

[alerts.rules.container_restart_loop]
count = 5
window = "10m"

[alerts.rules.node_stale]
enabled = false

[[alerts.silences]]
matchers = { hostname = "pine-01" }
ends_at = "2026-12-01T12:00:00Z"

[[receivers]]
name = "ops"
kind = "ntfy"
url = "http://127.0.0.1:8080/armada"
"#;
        let c = ManagerConfig::parse(text, "manager.toml").unwrap();
        assert_eq!(c.alerts.interval, Duration::from_secs(2));
        let t = c
            .alerts
            .rules
            .iter()
            .find(|r| r.key == "temperature")
            .unwrap();
        assert_eq!(
            (t.threshold, t.for_ms, t.severity),
            (80.5, 10_000, Severity::Critical)
        );
        assert_eq!(t.nodes["zone"], "shelf-1");
        let r = c
            .alerts
            .rules
            .iter()
            .find(|r| r.key == "container_restart_loop")
            .unwrap();
        assert_eq!((r.count, r.window_ms), (5, 600_000));
        assert!(
            !c.alerts
                .rules
                .iter()
                .find(|r| r.key == "node_stale")
                .unwrap()
                .enabled
        );
        // Untouched rules keep their defaults.
        let d = c
            .alerts
            .rules
            .iter()
            .find(|r| r.key == "memory_low")
            .unwrap();
        assert_eq!(d.threshold, 0.10);
        assert_eq!(c.alerts.silences[0].ends_at_ms, 1_796_126_400_000);
        assert_eq!(c.receivers[0].kind, ReceiverKind::Ntfy);
    }

    #[test]
    fn unknown_key_names_file_key_and_line() {
        let text = "[alerts]\ninterval = \"5s\"\n\n[alerts.rules.temperature]\nthresold = 3\n";
        let e = ManagerConfig::parse(text, "/etc/armada/manager.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/etc/armada/manager.toml"), "{e}");
        assert!(e.contains("line 5"), "{e}");
        assert!(e.contains("thresold"), "{e}");
    }

    #[test]
    fn bad_values_name_key_and_line() {
        let cases = [
            ("[alerts]\ninterval = \"soon\"\n", "alerts.interval", 2),
            (
                "[alerts.rules.nonsense]\nfor = \"1m\"\n",
                "alerts.rules.nonsense",
                1,
            ),
            (
                "\n[alerts.rules.node_down]\nthreshold = 3.0\n",
                "alerts.rules.node_down.threshold",
                3,
            ),
            (
                "[alerts.rules.filesystem_full]\n\nthreshold = 90\n",
                "alerts.rules.filesystem_full.threshold",
                3,
            ),
            (
                "[alerts.rules.container_restart_loop]\ncount = 0\n",
                "alerts.rules.container_restart_loop.count",
                2,
            ),
            (
                "[[alerts.silences]]\nmatchers = { hostname = \"a\" }\nends_at = \"tomorrow\"\n",
                "alerts.silences.ends_at",
                3,
            ),
            (
                "[[receivers]]\nname = \"x\"\nkind = \"webhook\"\nurl = \"ftp://h/x\"\n",
                "receivers.url",
                4,
            ),
        ];
        for (text, key, line) in cases {
            let e = ManagerConfig::parse(text, "m.toml")
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("`{key}`")), "{key}: {e}");
            assert!(e.contains(&format!("line {line}")), "{key}: {e}");
            assert!(e.starts_with("m.toml"), "{e}");
        }
    }

    #[test]
    fn a_bad_url_is_shown_without_its_secret() {
        let text = "[[receivers]]\nname = \"x\"\nkind = \"webhook\"\nurl = \"http://user:hunter2@[bad/x?token=s3cret\"\n";
        let e = ManagerConfig::parse(text, "m.toml")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2") && !e.contains("s3cret"), "{e}");
    }

    #[test]
    fn silences_cover_their_window_and_labels() {
        let mut m = BTreeMap::new();
        m.insert("hostname".to_string(), "a".to_string());
        let s = Silence {
            matchers: m.clone(),
            starts_at_ms: Some(100),
            ends_at_ms: 200,
            comment: String::new(),
        };
        let mut labels = m.clone();
        labels.insert("alertname".into(), "ArmadaNodeDown".into());
        assert!(!s.matches(&labels, 99));
        assert!(s.matches(&labels, 100));
        assert!(s.matches(&labels, 199));
        assert!(!s.matches(&labels, 200), "over at its end time");
        labels.insert("hostname".into(), "b".into());
        assert!(!s.matches(&labels, 150));
    }
}

//! Registration: trading the bootstrap token for the node's own credential.
//!
//! The agent posts its facts and the token to `POST /v1/register` over TLS pinned to
//! the token's CA ([`crate::pinning`]); after a manager lost its state, the same request
//! carries the node credential instead ([`reregister_once`]). Unreachable managers are
//! retried soon; a refused token, a pin mismatch or a hostname owned by another machine
//! are "final" ([`RegisterError::is_final`]): retried slowly by [`crate::join`], shown
//! in the agent's status, never a reason to stop monitoring.
//!
//! Also here: the manager address (`host[:port]`) and the clock step for boards that
//! boot without a real-time clock.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use protocol::token::{BootstrapToken, NodeCredential};
use protocol::wire::{
    EngineSwarm, ErrorBody, NodeFacts, RegisterRequest, RegisterResponse, PATH_CA, PATH_REGISTER,
};

use crate::pinning::{check_ca_pem, PinnedCaVerifier};

/// First retry delay and the cap of the exponential backoff.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
pub const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// A local clock further behind the manager's than this is stepped.
pub const CLOCK_STEP_THRESHOLD_MS: u64 = 60_000;

/// The manager's API address, `host[:port]` (IPv6 in brackets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagerAddress {
    pub host: String,
    pub port: u16,
}

impl FromStr for ManagerAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad = |why: &str| format!("manager address `{s}`: {why} (expected host[:port])");
        if s.is_empty() {
            return Err(bad("empty"));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or_else(|| bad("unclosed `[`"))?;
            match after {
                "" => (h.to_string(), None),
                p => (
                    h.to_string(),
                    Some(p.strip_prefix(':').ok_or_else(|| bad("junk after `]`"))?),
                ),
            }
        } else if s.matches(':').count() > 1 {
            (s.to_string(), None) // a bare IPv6 address
        } else {
            match s.split_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (s.to_string(), None),
            }
        };
        if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
            return Err(bad("bad host"));
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| bad("bad port"))?,
            None => protocol::DEFAULT_MANAGER_PORT,
        };
        Ok(ManagerAddress { host, port })
    }
}

impl fmt::Display for ManagerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl ManagerAddress {
    pub fn base_url(&self) -> String {
        format!("https://{self}")
    }
}

/// Why a registration attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("the manager at {manager} is not reachable yet: {reason}")]
    Unreachable { manager: String, reason: String },
    #[error(
        "the manager at {manager} does not hold the CA pinned by the bootstrap token (fingerprint {pin}): \
         wrong address, a token from another cluster, or someone in the middle; not registering"
    )]
    PinMismatch { manager: String, pin: String },
    #[error("the manager at {manager} refused the registration ({status}): {message}")]
    Refused {
        manager: String,
        status: u16,
        message: String,
    },
}

impl RegisterError {
    /// Retrying helps only when the manager was away or overloaded.
    pub fn is_final(&self) -> bool {
        !matches!(self, RegisterError::Unreachable { .. })
    }
}

/// Full result of a registration: the reply and the verified CA certificate.
pub struct Registered {
    pub response: RegisterResponse,
    pub ca_pem: String,
}

/// One registration attempt.
pub async fn register_once(
    client: &reqwest::Client,
    verifier: &Arc<PinnedCaVerifier>,
    manager: &ManagerAddress,
    token: &BootstrapToken,
    facts: &NodeFacts,
    labels: &std::collections::BTreeMap<String, String>,
    swarm: Option<EngineSwarm>,
) -> Result<Registered, RegisterError> {
    let base = manager.base_url();
    let unreachable = |e: reqwest::Error| {
        if verifier.mismatch_seen() {
            RegisterError::PinMismatch {
                manager: manager.to_string(),
                pin: verifier.pin().to_string(),
            }
        } else {
            RegisterError::Unreachable {
                manager: manager.to_string(),
                reason: error_chain(&e),
            }
        }
    };
    let req = RegisterRequest {
        protocol: protocol::PROTOCOL_VERSION,
        token: token.expose(),
        credential: None,
        facts: facts.clone(),
        labels: labels.clone(),
        swarm,
    };
    let response = post_register(client, manager, &req, &unreachable).await?;

    // The CA to keep as the only root from now on, checked against the pin once more.
    let resp = client
        .get(format!("{base}{PATH_CA}"))
        .send()
        .await
        .map_err(unreachable)?;
    let status = resp.status();
    if !status.is_success() {
        let message = error_message(resp).await;
        return Err(classify_status(
            manager,
            status.as_u16(),
            format!("fetching the CA: {message}"),
        ));
    }
    let ca_pem = resp.text().await.map_err(unreachable)?;
    check_ca_pem(&ca_pem, verifier.pin()).map_err(|e| RegisterError::Refused {
        manager: manager.to_string(),
        status: status.as_u16(),
        message: format!("{e:#}"),
    })?;
    Ok(Registered { response, ca_pem })
}

/// Registers again with the node's credential instead of the bootstrap token (the
/// manager lost its state and answered a report with `409 reregister`), over the client
/// already pinned to the stored CA.
pub async fn reregister_once(
    client: &reqwest::Client,
    manager: &ManagerAddress,
    credential: &NodeCredential,
    facts: &NodeFacts,
    labels: &std::collections::BTreeMap<String, String>,
    swarm: Option<EngineSwarm>,
) -> Result<RegisterResponse, RegisterError> {
    let req = RegisterRequest {
        protocol: protocol::PROTOCOL_VERSION,
        token: String::new(),
        credential: Some(credential.expose()),
        facts: facts.clone(),
        labels: labels.clone(),
        swarm,
    };
    let unreachable = |e: reqwest::Error| RegisterError::Unreachable {
        manager: manager.to_string(),
        reason: error_chain(&e),
    };
    post_register(client, manager, &req, unreachable).await
}

async fn post_register(
    client: &reqwest::Client,
    manager: &ManagerAddress,
    req: &RegisterRequest,
    unreachable: impl Fn(reqwest::Error) -> RegisterError,
) -> Result<RegisterResponse, RegisterError> {
    let resp = client
        .post(format!("{}{PATH_REGISTER}", manager.base_url()))
        .json(req)
        .send()
        .await
        .map_err(&unreachable)?;
    let status = resp.status();
    step_clock_from_reply(resp.headers());
    if !status.is_success() {
        let message = error_message(resp).await;
        return Err(classify_status(manager, status.as_u16(), message));
    }
    resp.json().await.map_err(|e| RegisterError::Refused {
        manager: manager.to_string(),
        status: status.as_u16(),
        message: format!("unreadable reply: {}", error_chain(&e)),
    })
}

/// 5xx and 429 are worth retrying; any other refusal is final.
fn classify_status(manager: &ManagerAddress, status: u16, message: String) -> RegisterError {
    if status >= 500 || status == 429 || status == 408 {
        RegisterError::Unreachable {
            manager: manager.to_string(),
            reason: format!("HTTP {status}: {message}"),
        }
    } else {
        RegisterError::Refused {
            manager: manager.to_string(),
            status,
            message,
        }
    }
}

/// The time to step the local clock to, when it lags the manager's by more than the
/// threshold (boards without an RTC start in the past). A clock ahead is left alone.
pub fn clock_correction(local_ms: u64, server_ms: u64) -> Option<u64> {
    (server_ms > local_ms.saturating_add(CLOCK_STEP_THRESHOLD_MS)).then_some(server_ms)
}

/// Steps the system clock to the manager's when it lags; logs what it did.
pub fn maybe_step_clock(server_time_ms: u64) {
    let local_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let Some(target) = clock_correction(local_ms, server_time_ms) else {
        return;
    };
    let ts = nix::sys::time::TimeSpec::from(Duration::from_millis(target));
    match nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, ts) {
        Ok(()) => tracing::info!(
            "stepped the clock forward by {:.1}s to the manager's time (no RTC on this board)",
            (target - local_ms) as f64 / 1000.0
        ),
        Err(e) => {
            // Said once per run: every reply would repeat it.
            static WARNED: std::sync::atomic::AtomicBool =
                std::sync::atomic::AtomicBool::new(false);
            if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(
                    "the clock is {:.1}s behind the manager's but could not be stepped: {e}",
                    (target - local_ms) as f64 / 1000.0
                );
            }
        }
    }
}

/// An HTTP `Date` header in ms since the epoch: every manager reply carries the
/// manager's clock, so a board that rebooted without an RTC can step its clock long
/// after registration.
pub fn http_date_ms(s: &str) -> Option<u64> {
    let t = httpdate::parse_http_date(s).ok()?;
    let d = t.duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(d.as_millis()).ok()
}

/// Steps the clock from a reply's `Date` header when it lags (see [`maybe_step_clock`]).
pub fn step_clock_from_reply(headers: &reqwest::header::HeaderMap) {
    if let Some(ms) = headers
        .get(reqwest::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(http_date_ms)
    {
        maybe_step_clock(ms);
    }
}

/// The `error` of a JSON error body, or the raw text.
pub async fn error_message(resp: reqwest::Response) -> String {
    error_body(resp).await.0
}

/// The `error` and `code` of a JSON error body, or the raw text and no code.
pub async fn error_body(resp: reqwest::Response) -> (String, Option<String>) {
    let text = resp.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(b) => (b.error, b.code),
        Err(_) => (text.chars().take(300).collect(), None),
    }
}

/// "a: b: c" from an error and its sources.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manager_addresses_parse_with_default_port() {
        let a: ManagerAddress = "172.30.1.1".parse().unwrap();
        assert_eq!(
            a,
            ManagerAddress {
                host: "172.30.1.1".into(),
                port: protocol::DEFAULT_MANAGER_PORT
            }
        );
        let a: ManagerAddress = "mgr.local:8443".parse().unwrap();
        assert_eq!((a.host.as_str(), a.port), ("mgr.local", 8443));
        let a: ManagerAddress = "[fd00::1]:9000".parse().unwrap();
        assert_eq!((a.host.as_str(), a.port), ("fd00::1", 9000));
        assert_eq!(a.base_url(), "https://[fd00::1]:9000");
        let a: ManagerAddress = "fd00::1".parse().unwrap();
        assert_eq!(a.port, protocol::DEFAULT_MANAGER_PORT);
        for bad in [
            "",
            "host:0",
            "host:x",
            "host:70000",
            "[fd00::1",
            "[::1]x",
            "a b",
        ] {
            assert!(bad.parse::<ManagerAddress>().is_err(), "{bad}");
        }
    }

    #[test]
    fn clock_is_stepped_only_when_far_behind() {
        let server = 1_800_000_000_000;
        assert_eq!(clock_correction(server - 3_600_000, server), Some(server));
        assert_eq!(clock_correction(0, server), Some(server));
        assert_eq!(clock_correction(server - 30_000, server), None);
        assert_eq!(clock_correction(server + 3_600_000, server), None);
    }

    #[test]
    fn http_dates_parse_to_epoch_ms() {
        assert_eq!(
            http_date_ms("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777_000)
        );
        assert_eq!(
            http_date_ms("Wed, 25 Nov 2026 13:12:15 GMT"),
            Some(1_795_612_335_000)
        );
        assert_eq!(http_date_ms("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(http_date_ms("Sun, 06 Nov 1994 08:49:37 CET"), None);
        assert_eq!(http_date_ms("Wed, 31 Dec 1969 23:59:59 GMT"), None);
        assert_eq!(http_date_ms("Sun, 06 Foo 1994 08:49:37 GMT"), None);
        assert_eq!(http_date_ms("garbage"), None);
    }

    #[test]
    fn only_unavailability_is_retried() {
        let m: ManagerAddress = "m".parse().unwrap();
        assert!(!classify_status(&m, 503, "busy".into()).is_final());
        assert!(!classify_status(&m, 429, "slow down".into()).is_final());
        assert!(classify_status(&m, 401, "bad token".into()).is_final());
        assert!(classify_status(&m, 409, "hostname taken".into()).is_final());
        let e = RegisterError::PinMismatch {
            manager: "m:1".into(),
            pin: "ab".into(),
        };
        assert!(e.is_final());
        assert!(e.to_string().contains("pinned"));
    }
}

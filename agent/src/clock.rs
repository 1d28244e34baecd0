//! The clock of a board without an RTC, set before the agent (and Docker) start.
//!
//! Docker checks its swarm certificates against the local clock, and a board that lost
//! power starts in the past (systemd's build-time floor): its swarm goes to ERROR and the
//! node never comes back. `armada-agent sync-clock` runs once per boot, from
//! `armada-clock-swarm.service` (ordered before `docker.service`) once the engine holds
//! swarm certificates, else from `armada-clock.service` (before the agent only: at a
//! first boot Docker has nothing to check, and need not wait), and only ever steps the
//! clock forward, from two sources:
//!
//! - the floor: the mtime of `clock` in the state folder (`/var/lib/armada/clock`),
//!   touched at the end of each sync and every few minutes by the running agent
//!   ([`keep_floor`]), so a board with no manager in reach still starts no earlier than
//!   it last ran;
//! - the manager: the `Date` header of `GET /v1/ca`, over TLS pinned exactly like every
//!   other request ([`crate::pinning`]: the stored CA once registered, the token's CA
//!   fingerprint before), stepped to when the local clock lags by more than
//!   [`CLOCK_STEP_THRESHOLD_MS`].
//!
//! The decisions ([`floor_correction`], [`judge`]) are pure; the rest reads and sets the
//! system clock and the floor file.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use protocol::config::FirstBootConfig;
use protocol::token::{BootstrapToken, CaFingerprint};
use protocol::wire::{Role, PATH_CA};

use crate::mdns;
use crate::pinning;
use crate::register::{
    clock_correction, error_chain, http_date_ms, ManagerAddress, CLOCK_STEP_THRESHOLD_MS,
};
use crate::retry::Backoff;
use crate::state::StateDir;

/// The floor file's name in the state folder.
pub const FLOOR_FILE: &str = "clock";
/// How often the running agent moves the floor up (a metadata-only write).
pub const FLOOR_TOUCH_EVERY: Duration = Duration::from_secs(300);
/// The running agent's first touch, once it had a chance to step the clock.
const FLOOR_FIRST_TOUCH: Duration = Duration::from_secs(60);
/// First and longest pause between two attempts to reach the manager. Short: at a first
/// boot this runs before the board has its DHCP address (network-online.target does not
/// wait for it), each failed attempt is a quick "unreachable" on the LAN, and the agent
/// and (after a power cut) Docker wait for this unit. With an 8 s cap the answer came
/// ~7 s after the address under qemu's virt (issue 12). At most ~60 attempts in 40 s.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_CAP: Duration = Duration::from_secs(1);
/// Time given to one mDNS query when the manager has no address.
const DISCOVER_WAIT: Duration = Duration::from_secs(5);

/// The time to step to from the floor: the floor itself when the clock is behind it.
pub fn floor_correction(local_ms: u64, floor_ms: Option<u64>) -> Option<u64> {
    floor_ms.filter(|&f| f > local_ms)
}

/// The local clock compared with the manager's.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Behind by more than the threshold: step forward to the manager's time.
    Step { to_ms: u64, behind_ms: u64 },
    /// Within the threshold either way.
    Right,
    /// Ahead by more than the threshold: left alone (never stepped backwards).
    Ahead { ahead_ms: u64 },
}

/// Decides what to do with the local clock given the manager's.
pub fn judge(local_ms: u64, server_ms: u64) -> Verdict {
    if let Some(to_ms) = clock_correction(local_ms, server_ms) {
        return Verdict::Step {
            to_ms,
            behind_ms: to_ms - local_ms,
        };
    }
    if local_ms > server_ms.saturating_add(CLOCK_STEP_THRESHOLD_MS) {
        Verdict::Ahead {
            ahead_ms: local_ms - server_ms,
        }
    } else {
        Verdict::Right
    }
}

/// Milliseconds since the epoch of a time (0 before the epoch).
pub fn ms_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn now_ms() -> u64 {
    ms_of(SystemTime::now())
}

/// `Wed, 25 Nov 2026 14:32:07 GMT` for a time in ms since the epoch (for the log).
pub fn utc(ms: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(ms))
}

/// The floor file of a state folder.
pub fn floor_path(state_dir: &Path) -> PathBuf {
    state_dir.join(FLOOR_FILE)
}

/// The floor (the file's mtime), `None` when there is no file yet.
pub fn read_floor(path: &Path) -> anyhow::Result<Option<u64>> {
    match fs::metadata(path) {
        Ok(md) => {
            let m = md
                .modified()
                .with_context(|| format!("reading the mtime of {}", path.display()))?;
            Ok(Some(ms_of(m)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Moves the floor up to `now` (creating the file, empty, if needed); never lowers it.
/// Returns whether the mtime changed.
pub fn touch_floor(path: &Path, now: SystemTime) -> anyhow::Result<bool> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let opened = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path);
    let file = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let f = fs::OpenOptions::new()
                .write(true)
                .open(path)
                .with_context(|| format!("opening the clock floor {}", path.display()))?;
            let current = f
                .metadata()
                .and_then(|m| m.modified())
                .with_context(|| format!("reading the mtime of {}", path.display()))?;
            if now <= current {
                return Ok(false);
            }
            f
        }
        Err(e) => {
            return Err(e).with_context(|| format!("creating the clock floor {}", path.display()))
        }
    };
    file.set_modified(now)
        .with_context(|| format!("setting the mtime of the clock floor {}", path.display()))?;
    Ok(true)
}

/// Steps the system clock (CLOCK_REALTIME) to `ms` since the epoch.
pub fn step_clock(ms: u64) -> anyhow::Result<()> {
    let ts = nix::sys::time::TimeSpec::from(Duration::from_millis(ms));
    nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, ts).with_context(|| {
        format!(
            "stepping the clock to {} (needs root with CAP_SYS_TIME)",
            utc(ms)
        )
    })
}

/// Run by the agent: moves the floor up a minute after start, then every
/// [`FLOOR_TOUCH_EVERY`]. A failure is logged once and does not stop the agent.
pub async fn keep_floor(state_dir: PathBuf) {
    let path = floor_path(&state_dir);
    let mut wait = FLOOR_FIRST_TOUCH;
    let mut warned = false;
    loop {
        tokio::time::sleep(wait).await;
        wait = FLOOR_TOUCH_EVERY;
        if let Err(e) = touch_floor(&path, SystemTime::now()) {
            if !warned {
                tracing::warn!("{e:#}");
                warned = true;
            }
        }
    }
}

/// How to trust the manager: the stored CA, or the token's fingerprint before
/// registration.
enum Trust {
    Ca(String),
    Pin(CaFingerprint),
}

/// Where and how to ask the manager for the time.
struct Target {
    /// `None`: find it over mDNS.
    manager: Option<ManagerAddress>,
    /// A known address for the manager's name (found over mDNS before).
    resolve: Option<SocketAddr>,
    trust: Trust,
}

/// One attempt's failure.
enum AttemptError {
    Retry(String),
    Final(anyhow::Error),
}

/// `armada-agent sync-clock`: the floor first, then the manager's `Date`, within
/// `timeout`; prints what it did (one line, two when the floor was used). An error when
/// the manager could not be read.
pub async fn sync_clock(
    state_dir: &Path,
    config: anyhow::Result<(PathBuf, FirstBootConfig)>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let floor_file = floor_path(state_dir);
    let before = now_ms();
    if let Some(to) = floor_correction(before, read_floor(&floor_file)?) {
        step_clock(to)?;
        println!(
            "clock stepped forward {:.1}s to the floor {} ({})",
            (to - before) as f64 / 1000.0,
            utc(to),
            floor_file.display()
        );
    }

    // A manager node's own manager starts after Docker, so after this: nothing to ask.
    if let Ok((_, cfg)) = &config {
        if cfg.role == Role::Manager {
            println!(
                "this node runs the manager, the cluster's clock: left at {} (floor only)",
                utc(now_ms())
            );
            touch_floor(&floor_file, SystemTime::now())?;
            return Ok(());
        }
    }
    let stored = StateDir::new(state_dir).load()?;
    let target = match stored {
        Some(reg) => {
            let manager: ManagerAddress = reg
                .info
                .manager
                .parse()
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("{}: manager", state_dir.display()))?;
            Target {
                manager: Some(manager),
                resolve: reg.info.discovered_addr.filter(|_| reg.info.discovered),
                trust: Trust::Ca(reg.ca_pem),
            }
        }
        None => {
            let (path, cfg) = config.with_context(|| {
                format!(
                    "this node is not registered ({} holds no credential), so the manager's \
                     address and CA come from armada.toml",
                    state_dir.display()
                )
            })?;
            if cfg.manager.token.is_empty() {
                anyhow::bail!(
                    "this node is not registered and {} has no manager.token: no CA to check \
                     the manager's clock against",
                    path.display()
                );
            }
            let token: BootstrapToken = cfg
                .manager
                .token
                .parse()
                .with_context(|| format!("{}: manager.token", path.display()))?;
            let manager = if cfg.manager.address.is_empty() {
                None
            } else {
                Some(
                    cfg.manager
                        .address
                        .parse::<ManagerAddress>()
                        .map_err(anyhow::Error::msg)
                        .with_context(|| format!("{}: manager.address", path.display()))?,
                )
            };
            Target {
                manager,
                resolve: None,
                trust: Trust::Pin(token.ca),
            }
        }
    };

    let (manager, server_ms, local_ms) = ask_with_retry(&target, timeout).await?;
    match judge(local_ms, server_ms) {
        Verdict::Step { to_ms, behind_ms } => {
            step_clock(to_ms)?;
            println!(
                "clock stepped forward {:.1}s to {} (the manager at {manager})",
                behind_ms as f64 / 1000.0,
                utc(to_ms)
            );
        }
        Verdict::Right => println!(
            "clock already right: {} (the manager at {manager} says {})",
            utc(local_ms),
            utc(server_ms)
        ),
        Verdict::Ahead { ahead_ms } => println!(
            "clock {:.1}s ahead of the manager at {manager}: left alone (never stepped back)",
            ahead_ms as f64 / 1000.0
        ),
    }
    touch_floor(&floor_file, SystemTime::now())?;
    Ok(())
}

/// Asks until the manager answers or `timeout` is spent; returns the manager, its time
/// and the local time when the answer came.
async fn ask_with_retry(
    target: &Target,
    timeout: Duration,
) -> anyhow::Result<(ManagerAddress, u64, u64)> {
    let start = tokio::time::Instant::now();
    let deadline = start + timeout;
    let name = target
        .manager
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_else(|| format!("{} (mDNS)", mdns::MANAGER_NAME));
    let mut attempt = 0u32;
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_CAP);
    let mut last = String::from("no attempt fit in the timeout");
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        attempt += 1;
        match tokio::time::timeout(left, ask_once(target, left)).await {
            Ok(Ok(found)) => return Ok(found),
            Ok(Err(AttemptError::Final(e))) => return Err(e),
            Ok(Err(AttemptError::Retry(why))) => {
                if attempt == 1 {
                    eprintln!("the manager at {name} is not reachable yet ({why}): retrying");
                }
                last = why
            }
            Err(_) => last = "no answer before the timeout".into(),
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let pause = backoff.next_delay().min(left);
        tokio::time::sleep(pause).await;
    }
    anyhow::bail!(
        "could not read the clock of the manager at {name} within {}s ({attempt} attempts, \
         last: {last}); the clock stays at {}",
        timeout.as_secs(),
        utc(now_ms())
    )
}

/// One `GET /v1/ca`; any status will do, the `Date` of an authenticated reply is what
/// counts.
async fn ask_once(
    target: &Target,
    left: Duration,
) -> Result<(ManagerAddress, u64, u64), AttemptError> {
    let (manager, resolve) = match &target.manager {
        Some(m) => (m.clone(), target.resolve),
        None => {
            let found = mdns::find_manager(DISCOVER_WAIT.min(left), protocol::DEFAULT_MANAGER_PORT)
                .await
                .map_err(|e| AttemptError::Retry(format!("{e:#}")))?;
            let m = ManagerAddress {
                host: mdns::MANAGER_NAME.to_string(),
                port: found.addr.port(),
            };
            (m, Some(found.addr))
        }
    };
    let resolve = resolve.map(|a| (mdns::MANAGER_NAME, a));
    let (client, verifier) = match &target.trust {
        Trust::Ca(pem) => (
            pinning::client_for_ca(pem, resolve).map_err(AttemptError::Final)?,
            None,
        ),
        Trust::Pin(pin) => {
            let v = Arc::new(pinning::PinnedCaVerifier::new(pin.clone()));
            (
                pinning::client_for_pin(v.clone(), resolve).map_err(AttemptError::Final)?,
                Some(v),
            )
        }
    };
    let resp = match client
        .get(format!("{}{PATH_CA}", manager.base_url()))
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => {
            if let Some(v) = verifier.filter(|v| v.mismatch_seen()) {
                return Err(AttemptError::Final(anyhow::anyhow!(
                    "the manager at {manager} does not hold the CA pinned by the bootstrap \
                     token (fingerprint {}): not trusting its clock",
                    v.pin()
                )));
            }
            return Err(AttemptError::Retry(error_chain(&e)));
        }
    };
    let local_ms = now_ms();
    let server_ms = resp
        .headers()
        .get(reqwest::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(http_date_ms)
        .ok_or_else(|| {
            AttemptError::Retry(format!(
                "the reply of the manager at {manager} (HTTP {}) has no readable Date header",
                resp.status().as_u16()
            ))
        })?;
    Ok((manager, server_ms, local_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_800_000_000_000;

    #[test]
    fn the_floor_only_moves_the_clock_forward() {
        assert_eq!(floor_correction(T - 3_600_000, Some(T)), Some(T));
        assert_eq!(floor_correction(T - 1, Some(T)), Some(T));
        assert_eq!(floor_correction(T, Some(T)), None);
        assert_eq!(floor_correction(T + 5_000, Some(T)), None);
        assert_eq!(floor_correction(T, None), None);
    }

    #[test]
    fn the_manager_is_followed_only_forward_and_past_the_threshold() {
        assert_eq!(
            judge(T - 86_400_000, T),
            Verdict::Step {
                to_ms: T,
                behind_ms: 86_400_000
            }
        );
        assert_eq!(
            judge(T - CLOCK_STEP_THRESHOLD_MS - 1, T),
            Verdict::Step {
                to_ms: T,
                behind_ms: CLOCK_STEP_THRESHOLD_MS + 1
            }
        );
        assert_eq!(judge(T - 30_000, T), Verdict::Right);
        assert_eq!(judge(T + 30_000, T), Verdict::Right);
        assert_eq!(judge(T, T), Verdict::Right);
        assert_eq!(
            judge(T + 3_600_000, T),
            Verdict::Ahead {
                ahead_ms: 3_600_000
            }
        );
    }

    #[test]
    fn utc_formats_like_the_http_date_it_came_from() {
        let ms = http_date_ms("Wed, 25 Nov 2026 13:12:15 GMT").unwrap();
        assert_eq!(utc(ms), "Wed, 25 Nov 2026 13:12:15 GMT");
        assert_eq!(utc(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        let ms = http_date_ms("Tue, 29 Feb 2028 23:59:59 GMT").unwrap();
        assert_eq!(utc(ms + 999), "Tue, 29 Feb 2028 23:59:59 GMT");
    }

    #[test]
    fn touching_the_floor_raises_it_and_never_lowers_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = floor_path(&dir.path().join("state"));
        assert_eq!(read_floor(&path).unwrap(), None);
        let t1 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert!(touch_floor(&path, t1).unwrap());
        assert_eq!(read_floor(&path).unwrap(), Some(1_700_000_000_000));
        // An earlier clock (a board that started in the past) leaves it where it was.
        let earlier = t1 - Duration::from_secs(3600);
        assert!(!touch_floor(&path, earlier).unwrap());
        assert_eq!(read_floor(&path).unwrap(), Some(1_700_000_000_000));
        let later = t1 + Duration::from_secs(300);
        assert!(touch_floor(&path, later).unwrap());
        assert_eq!(read_floor(&path).unwrap(), Some(1_700_000_300_000));
        // And a floor read back decides a step for a clock behind it.
        let floor = read_floor(&path).unwrap();
        assert_eq!(
            floor_correction(1_600_000_000_000, floor),
            Some(1_700_000_300_000)
        );
        assert_eq!(fs::metadata(&path).unwrap().len(), 0);
    }
}

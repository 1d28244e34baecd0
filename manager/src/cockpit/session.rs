//! Operator sessions: the admin token exchanged once for an HttpOnly cookie, so the
//! dashboard never keeps the token in script-readable storage.
//!
//! - A session is a random 256-bit cookie value; only its SHA-256 is kept, in memory
//!   (a manager restart logs everyone out). Each has its own random CSRF token and an
//!   expiry ([`crate::limits::Limits::session_ttl`]).
//! - A session remembers the hash of the admin token it was opened with: once the
//!   token is rotated (`armada cluster token rotate-admin`) the hash differs and every
//!   session opened before is refused and forgotten.
//! - At most [`crate::limits::Limits::max_sessions`]; opening one more forgets the
//!   expired ones, then the oldest.
//! - CSRF: a state-changing request authenticated by the cookie must carry
//!   `X-Armada-CSRF` equal to the session's token (checked in [`crate::gate`]).
//!   SameSite=Strict already keeps other sites' forms out; the header is the second
//!   lock, and it needs script on our own origin to read it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use protocol::token::{constant_time_eq, sha256_hex};

/// The cookie's name.
pub const COOKIE: &str = "armada_session";
/// The CSRF header a cookie-authenticated state change must carry.
pub const CSRF_HEADER: &str = "x-armada-csrf";

#[derive(Clone, Debug)]
pub struct Session {
    pub csrf: String,
    pub expires_ms: u64,
    pub created_ms: u64,
    /// The admin token's hash when the session was opened.
    admin_hash: String,
}

impl Session {
    /// True when `header` is this session's CSRF token (constant time).
    pub fn csrf_ok(&self, header: Option<&str>) -> bool {
        header.is_some_and(|h| constant_time_eq(h.trim().as_bytes(), self.csrf.as_bytes()))
    }

    /// A short, non-secret name for the audit log: the first hex digits of the CSRF
    /// token's hash (neither the cookie nor the token itself).
    pub fn audit_name(&self) -> String {
        format!("session:{}", &sha256_hex(self.csrf.as_bytes())[..8])
    }
}

pub struct Sessions {
    ttl: Duration,
    max: usize,
    by_hash: Mutex<HashMap<String, Session>>,
}

fn random_hex() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

impl Sessions {
    pub fn new(ttl: Duration, max: usize) -> Self {
        Sessions {
            ttl,
            max: max.max(1),
            by_hash: Mutex::new(HashMap::new()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Opens a session for the bearer of the admin token whose hash is `admin_hash`:
    /// returns the cookie value (shown once, never kept) and the session.
    pub fn open(&self, admin_hash: &str, now_ms: u64) -> (String, Session) {
        let cookie = random_hex();
        let s = Session {
            csrf: random_hex(),
            expires_ms: now_ms.saturating_add(self.ttl.as_millis() as u64),
            created_ms: now_ms,
            admin_hash: admin_hash.to_string(),
        };
        let mut map = self.by_hash.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.max {
            map.retain(|_, v| v.expires_ms > now_ms && v.admin_hash == admin_hash);
        }
        while map.len() >= self.max {
            let Some(oldest) = map
                .iter()
                .min_by_key(|(_, v)| v.created_ms)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            map.remove(&oldest);
        }
        map.insert(sha256_hex(cookie.as_bytes()), s.clone());
        (cookie, s)
    }

    /// The live session of a cookie value: unknown, expired, or opened with an admin
    /// token that is no longer the current one (`admin_hash`) is `None` (and forgotten).
    pub fn get(&self, cookie: &str, admin_hash: &str, now_ms: u64) -> Option<Session> {
        let key = sha256_hex(cookie.as_bytes());
        let mut map = self.by_hash.lock().unwrap_or_else(|p| p.into_inner());
        let s = map.get(&key)?;
        if s.expires_ms <= now_ms
            || !constant_time_eq(s.admin_hash.as_bytes(), admin_hash.as_bytes())
        {
            map.remove(&key);
            return None;
        }
        Some(s.clone())
    }

    /// Ends the session of a cookie value (logout). True when there was one.
    pub fn end(&self, cookie: &str) -> bool {
        let key = sha256_hex(cookie.as_bytes());
        let mut map = self.by_hash.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&key).is_some()
    }

    /// Forgets expired sessions and those of a rotated admin token.
    pub fn sweep(&self, admin_hash: &str, now_ms: u64) {
        let mut map = self.by_hash.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, v| v.expires_ms > now_ms && v.admin_hash == admin_hash);
    }

    pub fn len(&self) -> usize {
        self.by_hash.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The session cookie's value among a request's `Cookie` headers.
pub fn cookie_value(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// `Set-Cookie` opening a session.
pub fn set_cookie(value: &str, ttl: Duration) -> String {
    format!(
        "{COOKIE}={value}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={}",
        ttl.as_secs()
    )
}

/// `Set-Cookie` clearing it.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_end_and_die_with_the_admin_token() {
        let s = Sessions::new(Duration::from_secs(10), 8);
        let (c, sess) = s.open("H1", 1_000);
        assert_eq!(sess.expires_ms, 11_000);
        assert!(s.get(&c, "H1", 10_999).is_some());
        assert!(s.get(&c, "H1", 11_000).is_none(), "expired");
        assert!(s.get(&c, "H1", 2_000).is_none(), "forgotten once expired");

        let (c, _) = s.open("H1", 1_000);
        assert!(s.get(&c, "H2", 2_000).is_none(), "rotated admin token");
        assert!(s.get(&c, "H1", 2_000).is_none(), "and forgotten");

        let (c, _) = s.open("H1", 1_000);
        assert!(s.get("not-it", "H1", 2_000).is_none());
        assert!(s.end(&c));
        assert!(!s.end(&c));
        assert!(s.get(&c, "H1", 2_000).is_none());
    }

    #[test]
    fn csrf_and_the_cap() {
        let s = Sessions::new(Duration::from_secs(10), 2);
        let (a, sa) = s.open("H", 1);
        let (_b, sb) = s.open("H", 2);
        assert_ne!(sa.csrf, sb.csrf);
        assert!(sa.csrf_ok(Some(&sa.csrf)));
        assert!(!sa.csrf_ok(Some(&sb.csrf)));
        assert!(!sa.csrf_ok(None));
        let (_c, _) = s.open("H", 3);
        assert_eq!(s.len(), 2);
        assert!(s.get(&a, "H", 4).is_none(), "the oldest made room");
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = axum::http::HeaderMap::new();
        h.append("cookie", "a=1; armada_session=abc ; b=2".parse().unwrap());
        assert_eq!(cookie_value(&h).as_deref(), Some("abc"));
        let mut h = axum::http::HeaderMap::new();
        h.append("cookie", "armada_sessionx=1".parse().unwrap());
        assert_eq!(cookie_value(&h), None);
        assert!(set_cookie("v", Duration::from_secs(60))
            .contains("HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=60"));
    }
}

//! The gate every request passes before its handler runs, judged from the request head
//! alone (no body byte is read here):
//!
//! - Credentials first: outside the public paths (the dashboard's files, `/v1/ca`,
//!   `/v1/register`), a request without a valid admin token or node credential is
//!   answered 401 before its body is read, so an unauthenticated client cannot make
//!   the manager buffer a report. A path is protected unless it is listed public here.
//! - A valid credential marks the connection proven (see [`crate::connections`]).
//! - Registration attempts, and session openings (`POST /v1/session`, which takes the
//!   admin token in its body), are rate limited per source address (IPv6 by /64),
//!   answered 429 with `Retry-After`.
//! - A state change (any method but GET/HEAD/OPTIONS) authenticated by the session
//!   cookie must carry the session's CSRF token in `X-Armada-CSRF`, else 403
//!   `{"code":"csrf"}`. A bearer token is no ambient credential: no CSRF check.
//!
//! The node cap and the stored snapshot cap need the body: [`Gate::check_new_node`]
//! and [`Gate::check_stored_snapshot`] are called by the handlers.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use protocol::wire::{PATH_CA, PATH_REGISTER};
use tokio::time::Instant;

use crate::api::{ApiError, AppState};
use crate::auth::Caller;
use crate::connections::{Conn, Proof};
use crate::limits::Limits;

/// Sources tracked at most; beyond it, full buckets (sources quiet for a while) are
/// forgotten first, then the whole table, so memory stays bounded under a spread flood.
const MAX_SOURCES: usize = 16_384;

/// The connection a request came on (an extension set by the server).
#[derive(Clone)]
pub struct ConnHandle(pub Arc<Conn>);

pub struct Gate {
    pub limits: Limits,
    register: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Paths anyone may call without a credential in the headers.
pub fn is_public(path: &str) -> bool {
    crate::dashboard::is_dashboard_path(path)
        || path == PATH_CA
        || path == PATH_REGISTER
        || path == crate::cockpit::openapi::PATH
}

/// IPv4 as is, IPv6 by its /64: one host usually holds a whole /64.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Gate {
    pub fn new(limits: Limits) -> Self {
        Gate {
            limits,
            register: Mutex::new(HashMap::new()),
        }
    }

    /// One registration attempt from `ip` at `now`: `Err(wait)` when over the rate.
    pub fn register_attempt(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let per_minute = self.limits.register_per_minute;
        if per_minute == 0 {
            return Ok(());
        }
        let burst = f64::from(self.limits.register_burst.max(1));
        let per_sec = f64::from(per_minute) / 60.0;
        let mut map = self.register.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_SOURCES && !map.contains_key(&source_key(ip)) {
            map.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * per_sec < burst);
            if map.len() >= MAX_SOURCES {
                map.clear();
            }
        }
        let b = map.entry(source_key(ip)).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * per_sec).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / per_sec))
        }
    }

    /// Refuses a new machine when `registered` nodes already fill the cap (507: the
    /// agent retries; the operator removes nodes or raises `--max-nodes`).
    pub fn check_new_node(&self, registered: usize) -> Result<(), ApiError> {
        if registered >= self.limits.max_nodes {
            return Err(ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                format!(
                    "this manager holds its maximum of {} nodes; remove nodes (`armada-manager nodes remove ID`) or start it with a larger --max-nodes",
                    self.limits.max_nodes
                ),
            ));
        }
        Ok(())
    }

    /// Refuses a report with a snapshot larger than the cap once decoded (413).
    pub fn check_stored_snapshot(&self, decoded_len: usize) -> Result<(), ApiError> {
        if decoded_len > self.limits.max_stored_snapshot {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "a snapshot of this report is {decoded_len} bytes decoded; at most {} are stored per snapshot",
                    self.limits.max_stored_snapshot
                ),
            ));
        }
        Ok(())
    }
}

fn too_many(wait: Duration) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut r = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!("too many registration attempts from this address; retry in {secs} s"),
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// The middleware (see the module doc).
pub async fn check(State(s): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let opens_session =
        path == crate::cockpit::handlers::PATH_SESSION && req.method() == axum::http::Method::POST;
    if path == PATH_REGISTER || opens_session {
        if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>() {
            if let Err(wait) = s.gate.register_attempt(peer.ip(), Instant::now()) {
                return too_many(wait);
            }
        }
        return next.run(req).await;
    }
    if is_public(path) {
        return next.run(req).await;
    }
    let (caller, via) = match s.authenticate(req.headers()) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    if let crate::api::Via::Session(sess) = &via {
        let safe = matches!(
            *req.method(),
            axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
        );
        let header = req
            .headers()
            .get(crate::cockpit::session::CSRF_HEADER)
            .and_then(|v| v.to_str().ok());
        if !safe && !sess.csrf_ok(header) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "a change made with the session cookie needs its CSRF token in the X-Armada-CSRF header (GET /v1/session gives it)",
            )
            .with_code("csrf")
            .into_response();
        }
    }
    if let Some(ConnHandle(conn)) = req.extensions().get::<ConnHandle>() {
        conn.prove(match caller {
            Caller::Admin => Proof::Admin,
            Caller::Node(_) => Proof::Node,
        });
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_rate_is_per_source_with_a_burst() {
        let g = Gate::new(Limits {
            register_burst: 3,
            register_per_minute: 60,
            ..Limits::default()
        });
        let t = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            g.register_attempt(a, t).unwrap();
        }
        let wait = g.register_attempt(a, t).unwrap_err();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::ZERO);
        g.register_attempt(b, t).unwrap();
        g.register_attempt(a, t + Duration::from_millis(1100))
            .unwrap();
        assert!(g
            .register_attempt(a, t + Duration::from_millis(1100))
            .is_err());
    }

    #[test]
    fn ipv6_sources_count_by_slash_64() {
        let g = Gate::new(Limits {
            register_burst: 1,
            register_per_minute: 1,
            ..Limits::default()
        });
        let t = Instant::now();
        g.register_attempt("2001:db8::1".parse().unwrap(), t)
            .unwrap();
        assert!(g
            .register_attempt("2001:db8::ffff:2".parse().unwrap(), t)
            .is_err());
        g.register_attempt("2001:db8:0:1::1".parse().unwrap(), t)
            .unwrap();
    }

    #[test]
    fn no_limit_when_the_rate_is_zero() {
        let g = Gate::new(Limits {
            register_per_minute: 0,
            ..Limits::default()
        });
        let t = Instant::now();
        for _ in 0..1000 {
            g.register_attempt("192.0.2.1".parse().unwrap(), t).unwrap();
        }
    }

    #[test]
    fn caps_answer_with_their_status() {
        let g = Gate::new(Limits {
            max_nodes: 2,
            max_stored_snapshot: 10,
            ..Limits::default()
        });
        assert!(g.check_new_node(1).is_ok());
        assert!(g.check_new_node(2).is_err());
        assert!(g.check_stored_snapshot(10).is_ok());
        assert!(g.check_stored_snapshot(11).is_err());
    }
}

//! The manager's bounds in one place: connection timeouts and caps, registration rate,
//! node count, stored snapshot size. [`Limits::default`] is what `serve` runs with;
//! `armada-manager serve` flags override some of them.
//!
//! Why these numbers: an agent reports every 10 s over one keep-alive connection, so a
//! connection that proved a credential may idle a minute; one that did not has 10 s to
//! send a request. A report body of at most 4 MiB gets 20 s, which is 200 KiB/s, far
//! slower than any board's link; a trickled body is cut there.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Limits {
    /// From TCP accept to a finished TLS handshake.
    pub handshake: Duration,
    /// From the first byte of a request to the end of its headers.
    pub request_headers: Duration,
    /// From the end of a request's headers to the end of its body.
    pub request_body: Duration,
    /// Idle between requests, on a connection that has shown a valid credential.
    pub idle_keep_alive: Duration,
    /// Idle before the first authenticated request (TLS done, nothing or only
    /// unauthenticated requests sent).
    pub idle_unproven: Duration,
    /// Open connections at most (TLS handshakes included); lowered at accept time to
    /// what the open-file limit leaves after [`Limits::fd_headroom`].
    pub max_connections: usize,
    /// Connection slots that node credentials may never take: the admin always gets in.
    pub admin_reserve: usize,
    /// File descriptors kept for the store, the engine socket, logs.
    pub fd_headroom: usize,
    /// Registered nodes at most; a new machine beyond it is refused with 507.
    pub max_nodes: usize,
    /// Registration attempts per source address: bucket size...
    pub register_burst: u32,
    /// ...and refill per minute (0: no limit, for load tests).
    pub register_per_minute: u32,
    /// A node's stored latest snapshot, decoded JSON bytes, at most (413 beyond).
    /// 1 MiB: a container costs about 1.4 KiB of snapshot, so a node may run about 700
    /// (the seed's 1,000-container stress on three or four boards is 250-330 a node;
    /// 256 KiB stopped at about 200, and that node's figures froze).
    pub max_stored_snapshot: usize,
    /// An operator session's life (the cookie's Max-Age): a working day.
    pub session_ttl: Duration,
    /// Sessions held at most (in memory); the oldest makes room.
    pub max_sessions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake: Duration::from_secs(10),
            request_headers: Duration::from_secs(10),
            request_body: Duration::from_secs(20),
            idle_keep_alive: Duration::from_secs(60),
            idle_unproven: Duration::from_secs(10),
            max_connections: 16_384,
            admin_reserve: 16,
            fd_headroom: 64,
            max_nodes: 50_000,
            register_burst: 20,
            register_per_minute: 30,
            max_stored_snapshot: 1 << 20,
            session_ttl: Duration::from_secs(12 * 3600),
            max_sessions: 256,
        }
    }
}

impl Limits {
    /// The connection cap under an open-file limit of `nofile`.
    pub fn connection_cap(&self, nofile: Option<u64>) -> usize {
        let by_fds = nofile
            .map(|n| (n as usize).saturating_sub(self.fd_headroom))
            .unwrap_or(usize::MAX);
        self.max_connections.min(by_fds).max(self.admin_reserve + 1)
    }
}

/// The current soft open-file limit (it may change under a running process: prlimit).
pub fn open_file_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we pass; nothing else.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_follows_the_open_file_limit_and_keeps_the_reserve() {
        let l = Limits::default();
        assert_eq!(l.connection_cap(None), 16_384);
        assert_eq!(l.connection_cap(Some(1 << 20)), 16_384);
        assert_eq!(l.connection_cap(Some(300)), 236);
        assert_eq!(
            l.connection_cap(Some(10)),
            17,
            "never below the admin reserve"
        );
    }
}

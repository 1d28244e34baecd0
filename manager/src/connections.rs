//! Every open connection, what it is doing and when it must be closed.
//!
//! The cap: at most [`Limits::connection_cap`] connections are open (TLS handshakes
//! included), always below the open-file limit. A connection is *proven* once a request
//! on it showed a valid credential (the gate says so). When the cap is reached, a new
//! connection evicts the oldest unproven one (idle ones first), so a flood of
//! connections that never authenticate only ever displaces itself. Node-proven
//! connections may take at most `cap - admin_reserve` slots, so there is always an
//! unproven slot to evict for the admin; admin-proven connections are never evicted.
//! When every slot is proven, a new connection is closed at once.
//!
//! The clock: [`deadline`] says when a connection must be closed, from what it is doing
//! (handshake, waiting for a request, reading headers, reading a body, idle). The
//! serve loop sleeps until then; every change wakes it to look again.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};

use axum::body::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::limits::Limits;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proof {
    None,
    Node,
    Admin,
}

/// What one connection is doing; the input of [`deadline`].
#[derive(Clone, Debug)]
pub struct Activity {
    pub accepted: Instant,
    pub tls_done: bool,
    /// Requests handed to the router whose response is not produced yet.
    pub in_flight: u32,
    /// Since the last response (or the handshake).
    pub idle_since: Instant,
    /// First byte of a request that has not reached the router yet.
    pub head_started: Option<Instant>,
    /// A request whose body has not been read to its end.
    pub body_since: Option<Instant>,
    pub proof: Proof,
    pub evicted: bool,
}

/// When this connection must be closed; `None`: not while a handler runs.
pub fn deadline(a: &Activity, l: &Limits) -> Option<Instant> {
    if !a.tls_done {
        return Some(a.accepted + l.handshake);
    }
    if let Some(t) = a.body_since {
        return Some(t + l.request_body);
    }
    if a.in_flight > 0 {
        return None;
    }
    if let Some(t) = a.head_started {
        return Some(t + l.request_headers);
    }
    let idle = match a.proof {
        Proof::None => l.idle_unproven,
        Proof::Node | Proof::Admin => l.idle_keep_alive,
    };
    Some(a.idle_since + idle)
}

pub struct Registry {
    limits: Limits,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    /// By accept order: the first unproven entry is the oldest.
    open: BTreeMap<u64, Weak<Conn>>,
    node_proven: usize,
}

pub struct Conn {
    id: u64,
    registry: Arc<Registry>,
    activity: Mutex<Activity>,
    /// Wakes the connection's task to look at its deadline (or its eviction) again.
    pub wake: Notify,
}

/// Counts of open connections, for logs and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counts {
    pub open: usize,
    pub node_proven: usize,
    pub cap: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves plain counters: keep using them.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Registry {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Registry {
            limits,
            inner: Mutex::new(Inner::default()),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn cap(&self) -> usize {
        self.limits.connection_cap(crate::limits::open_file_limit())
    }

    pub fn counts(&self) -> Counts {
        let g = lock(&self.inner);
        Counts {
            open: g.open.len(),
            node_proven: g.node_proven,
            cap: self.cap(),
        }
    }

    /// A slot for a new connection, evicting the oldest unproven one at the cap;
    /// `None`: every slot is proven, close the new connection.
    pub fn admit(self: &Arc<Self>) -> Option<Arc<Conn>> {
        let cap = self.cap();
        // Strong references taken under the lock are dropped after it: dropping the last
        // one runs `Conn::drop`, which takes the lock.
        let mut held = Vec::new();
        let mut g = lock(&self.inner);
        while g.open.len() >= cap {
            let Some(victim) = pick_victim(&g.open, &mut held) else {
                drop(g);
                return None;
            };
            if let Some(c) = g.open.remove(&victim).and_then(|w| w.upgrade()) {
                let mut a = lock(&c.activity);
                a.evicted = true;
                if a.proof == Proof::Node {
                    g.node_proven -= 1;
                    a.proof = Proof::None;
                }
                drop(a);
                c.wake.notify_one();
                held.push(c);
            }
        }
        let id = g.next_id;
        g.next_id += 1;
        let now = Instant::now();
        let conn = Arc::new(Conn {
            id,
            registry: self.clone(),
            activity: Mutex::new(Activity {
                accepted: now,
                tls_done: false,
                in_flight: 0,
                idle_since: now,
                head_started: None,
                body_since: None,
                proof: Proof::None,
                evicted: false,
            }),
            wake: Notify::new(),
        });
        g.open.insert(id, Arc::downgrade(&conn));
        drop(g);
        drop(held);
        Some(conn)
    }
}

/// The oldest unproven connection, one without a request in the router first.
/// Every connection it looks at goes to `held` (see `admit`).
fn pick_victim(open: &BTreeMap<u64, Weak<Conn>>, held: &mut Vec<Arc<Conn>>) -> Option<u64> {
    let mut busy = None;
    for (id, w) in open {
        let Some(c) = w.upgrade() else {
            return Some(*id);
        };
        let a = lock(&c.activity);
        let (proof, in_flight) = (a.proof, a.in_flight);
        drop(a);
        held.push(c);
        if proof != Proof::None {
            continue;
        }
        if in_flight == 0 {
            return Some(*id);
        }
        busy.get_or_insert(*id);
    }
    busy
}

impl Conn {
    pub fn limits(&self) -> &Limits {
        &self.registry.limits
    }

    pub fn activity(&self) -> Activity {
        lock(&self.activity).clone()
    }

    pub fn deadline(&self) -> Option<Instant> {
        deadline(&lock(&self.activity), &self.registry.limits)
    }

    pub fn evicted(&self) -> bool {
        lock(&self.activity).evicted
    }

    fn update(&self, f: impl FnOnce(&mut Activity)) {
        f(&mut lock(&self.activity));
        self.wake.notify_one();
    }

    pub fn tls_done(&self) {
        self.update(|a| {
            a.tls_done = true;
            a.idle_since = Instant::now();
        });
    }

    /// A request reached the router (its head is read).
    pub fn request_started(&self, has_body: bool) {
        let now = Instant::now();
        self.update(|a| {
            a.in_flight += 1;
            a.head_started = None;
            if has_body {
                a.body_since = Some(now);
            }
        });
    }

    /// The router produced the response.
    pub fn request_done(&self) {
        self.update(|a| {
            a.in_flight = a.in_flight.saturating_sub(1);
            a.idle_since = Instant::now();
        });
    }

    fn body_done(&self) {
        self.update(|a| a.body_since = None);
    }

    fn bytes_read(&self) {
        let mut a = lock(&self.activity);
        if a.tls_done && a.in_flight == 0 && a.body_since.is_none() && a.head_started.is_none() {
            a.head_started = Some(Instant::now());
            drop(a);
            self.wake.notify_one();
        }
    }

    /// A request on this connection showed a valid credential.
    pub fn prove(&self, proof: Proof) {
        let mut g = lock(&self.registry.inner);
        let cap = self.registry.cap();
        let mut a = lock(&self.activity);
        if a.evicted || a.proof == Proof::Admin || a.proof == proof {
            return;
        }
        match proof {
            Proof::None => {}
            Proof::Admin => {
                if a.proof == Proof::Node {
                    g.node_proven -= 1;
                }
                a.proof = Proof::Admin;
            }
            Proof::Node => {
                // Past this, nodes stay evictable: the reserve is the admin's.
                if g.node_proven + self.registry.limits.admin_reserve < cap {
                    g.node_proven += 1;
                    a.proof = Proof::Node;
                }
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let mut g = lock(&self.registry.inner);
        if g.open.remove(&self.id).is_some() && lock(&self.activity).proof == Proof::Node {
            g.node_proven -= 1;
        }
    }
}

/// The connection's byte stream, telling its [`Conn`] when a request head starts.
pub struct Watched<T> {
    pub inner: T,
    pub conn: Arc<Conn>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.conn.bytes_read();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A request body that tells its [`Conn`] when it has been read to the end.
pub struct WatchedBody<B> {
    inner: B,
    conn: Option<Arc<Conn>>,
}

impl<B: Body> WatchedBody<B> {
    pub fn new(inner: B, conn: Arc<Conn>) -> Self {
        let conn = (!inner.is_end_stream()).then_some(conn);
        WatchedBody { inner, conn }
    }

    fn done(&mut self) {
        if let Some(c) = self.conn.take() {
            c.body_done();
        }
    }
}

impl<B> Body for WatchedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.done(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.done(),
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(max: usize) -> Limits {
        Limits {
            max_connections: max,
            admin_reserve: 2,
            ..Limits::default()
        }
    }

    fn fresh(now: Instant) -> Activity {
        Activity {
            accepted: now,
            tls_done: true,
            in_flight: 0,
            idle_since: now,
            head_started: None,
            body_since: None,
            proof: Proof::None,
            evicted: false,
        }
    }

    #[test]
    fn deadlines_follow_what_the_connection_does() {
        let l = Limits::default();
        let t = Instant::now();
        let s = Duration::from_secs;
        let mut a = fresh(t);
        a.tls_done = false;
        assert_eq!(deadline(&a, &l), Some(t + s(10)), "handshake");
        a.tls_done = true;
        assert_eq!(deadline(&a, &l), Some(t + s(10)), "unproven idle");
        a.proof = Proof::Node;
        assert_eq!(deadline(&a, &l), Some(t + s(60)), "keep-alive");
        a.head_started = Some(t + s(30));
        assert_eq!(deadline(&a, &l), Some(t + s(40)), "headers");
        a.head_started = None;
        a.in_flight = 1;
        assert_eq!(deadline(&a, &l), None, "a handler runs");
        a.body_since = Some(t + s(1));
        assert_eq!(deadline(&a, &l), Some(t + s(21)), "body");
        a.in_flight = 0;
        assert_eq!(
            deadline(&a, &l),
            Some(t + s(21)),
            "an unread body after the answer"
        );
    }

    #[tokio::test]
    async fn at_the_cap_the_oldest_unproven_connection_goes() {
        let r = Registry::new(limits(4));
        let a = r.admit().unwrap();
        let b = r.admit().unwrap();
        let c = r.admit().unwrap();
        let d = r.admit().unwrap();
        for x in [&a, &b, &c, &d] {
            x.tls_done();
        }
        a.prove(Proof::Node);
        b.prove(Proof::Node);
        assert_eq!(r.counts().node_proven, 2);
        c.prove(Proof::Node);
        assert_eq!(
            r.counts().node_proven,
            2,
            "the last two slots stay evictable for the admin"
        );
        let e = r.admit().unwrap();
        assert!(c.evicted() && !a.evicted() && !b.evicted() && !d.evicted());
        e.tls_done();
        e.prove(Proof::Admin);
        let f = r.admit().unwrap();
        assert!(d.evicted());
        f.prove(Proof::Admin);
        assert!(
            r.admit().is_none(),
            "every slot proven: the newcomer is refused"
        );
        drop(a);
        assert_eq!(r.counts().node_proven, 1);
        assert_eq!(r.counts().open, 3, "c and d evicted, a closed");
        let g = r.admit();
        assert!(g.is_some());
    }

    #[tokio::test]
    async fn an_idle_unproven_connection_goes_before_a_busy_one() {
        let r = Registry::new(limits(3));
        let a = r.admit().unwrap();
        let b = r.admit().unwrap();
        let _c = r.admit().unwrap();
        a.request_started(true);
        let _d = r.admit().unwrap();
        assert!(!a.evicted() && b.evicted());
    }
}

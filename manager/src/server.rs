//! `armada-manager serve`: the TLS listener, the connections, background loops and
//! graceful shutdown.
//!
//! Each accepted connection gets a slot from [`Registry`] (the cap, with eviction of
//! unauthenticated connections; see [`crate::connections`]) and its own task: TLS
//! handshake, then hyper's HTTP/1 connection with a timer, watched until the deadline
//! of what it is doing (handshake, headers, body, idle) passes. axum::serve applies no
//! timeout at all, so the connections are served here through hyper directly.
//! When hyper is done with a connection, a bounded lingering close (at most 1 MiB and
//! 2 s of what the client still sends, discarded) lets an early answer such as a 413
//! reach a client that is still sending its body.
//! SIGTERM or SIGINT stops accepting, lets requests in flight finish (at most 5 s),
//! closes the store (WAL checkpointed) and returns, with an error if it was not
//! closed cleanly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::api::{self, AppState};
use crate::cluster::{self, TokenFile};
use crate::connections::{Conn, Registry, Watched, WatchedBody};
use crate::gate::{ConnHandle, Gate};
use crate::limits::Limits;
use crate::store::state::StatusPolicy;
use crate::store::{Store, StoreConfig};
use crate::swarm::{SwarmLink, POLL_SECONDS};

#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub cluster_dir: PathBuf,
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    /// `None` runs without an engine (registration replies carry no join token).
    pub docker_host: Option<String>,
    pub swarm_advertise_addr: Option<String>,
    pub stale_after_intervals: u32,
    pub down_after: Duration,
    pub report_interval_seconds: u32,
    pub checkpoint_interval: Duration,
    /// `manager.toml` (alerts, receivers); `None`: built-in defaults.
    pub config_file: Option<PathBuf>,
    /// Timeouts, connection and node caps, registration rate.
    pub limits: Limits,
}

/// Raises the open-file limit to its hard maximum: every node may hold a keep-alive
/// connection, and the usual soft limit of 1024 would refuse the 1025th board.
pub fn raise_open_file_limit() -> Option<libc::rlim_t> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit fill or read the struct we pass; nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return None;
            }
        }
    }
    Some(lim.rlim_cur)
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot listen for SIGTERM/SIGINT");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Runs the manager until `stop` resolves. `on_listen` gets the bound address.
pub async fn serve(
    cfg: ServeConfig,
    on_listen: impl FnOnce(SocketAddr),
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    if let Some(n) = raise_open_file_limit() {
        tracing::info!("open-file limit {n} (about that many nodes can keep a connection open)");
    }
    let manager_config = crate::alerts::load_config(cfg.config_file.as_ref())?;
    let files = Arc::new(cluster::load(&cfg.cluster_dir)?);
    let tokens = TokenFile::new(&cfg.cluster_dir, files.fingerprint.clone());
    files.clone().watch(tokens.clone());
    let tls = files.tls.clone();
    let mut store_cfg = StoreConfig::new(cfg.state_dir.clone());
    store_cfg.checkpoint_interval = cfg.checkpoint_interval;
    let (store, opened) = tokio::task::block_in_place(|| Store::open(store_cfg))
        .with_context(|| format!("opening the store in {}", cfg.state_dir.display()))?;
    tracing::info!(
        "store {}: {} nodes, {} commits; integrity_check {:?} (beside the row load), load {:?}",
        cfg.state_dir.display(),
        opened.nodes,
        opened.commits,
        opened.integrity_check,
        opened.load
    );
    let store = Arc::new(store);
    let swarm = Arc::new(match &cfg.docker_host {
        Some(h) => SwarmLink::new(h, cfg.swarm_advertise_addr.clone())?,
        None => SwarmLink::disabled(),
    });
    let alerts = tokio::task::block_in_place(|| {
        crate::alerts::AlertService::open(&cfg.state_dir, manager_config, crate::now_ms())
    })
    .context("opening the alert store")?;
    let cockpit = tokio::task::block_in_place(|| {
        crate::cockpit::Cockpit::open(swarm.clone(), &cfg.limits, &cfg.state_dir)
    })
    .context("opening the cockpit's event log")?;
    let state = Arc::new(AppState {
        store: store.clone(),
        alerts: Arc::new(alerts),
        cluster: files,
        tokens,
        swarm: swarm.clone(),
        policy: StatusPolicy {
            stale_after_intervals: cfg.stale_after_intervals,
            down_after_ms: cfg.down_after.as_millis() as u64,
        },
        report_interval_seconds: cfg.report_interval_seconds,
        gate: Gate::new(cfg.limits.clone()),
        cockpit: Arc::new(cockpit),
    });
    let alert_tasks = crate::alerts::spawn(state.clone());
    crate::cockpit::watch::spawn(state.clone());
    let cockpit = state.cockpit.clone();
    if swarm.enabled() {
        tokio::spawn(swarm_loop(swarm.clone(), store.clone()));
    }
    tokio::spawn(return_freed_memory());

    let tcp = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("listening on {}", cfg.listen))?;
    let local = tcp
        .local_addr()
        .with_context(|| format!("the address bound for {}", cfg.listen))?;
    let registry = Registry::new(cfg.limits.clone());
    tracing::info!(
        "at most {} connections (open-file limit {:?}), {} of them kept for the admin",
        registry.counts().cap,
        crate::limits::open_file_limit(),
        cfg.limits.admin_reserve
    );
    on_listen(local);
    accept_loop(
        tcp,
        TlsAcceptor::from(tls),
        api::router(state),
        registry,
        stop,
    )
    .await;
    alert_tasks.stop().await;
    cockpit.stop();
    // Never claim a clean stop after a failure: the exit code says it too.
    store
        .shutdown()
        .await
        .context("closing the store: it was NOT closed cleanly (its WAL is replayed and checked at the next start)")?;
    tracing::info!("stopped; store closed cleanly");
    Ok(())
}

/// Accepts until `stop`, then lets connections finish their requests for at most 5 s.
async fn accept_loop(
    tcp: TcpListener,
    tls: TlsAcceptor,
    app: Router,
    registry: Arc<Registry>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // Every connection task holds a sender: `recv` returns None once all have ended.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let mut warned_full: Option<tokio::time::Instant> = None;
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stop => break,
            r = tcp.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off, don't spin.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(conn) = registry.admit() else {
            // Every slot holds an authenticated connection: refuse this one at once.
            if warned_full.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                let c = registry.counts();
                tracing::warn!(
                    "connection cap reached ({} open, {} by nodes): refusing new connections",
                    c.open,
                    c.node_proven
                );
                warned_full = Some(tokio::time::Instant::now());
            }
            drop(stream);
            continue;
        };
        tokio::spawn(connection(
            stream,
            peer,
            conn,
            tls.clone(),
            app.clone(),
            shutdown_rx.clone(),
            alive_tx.clone(),
        ));
    }
    tracing::info!("stopping: finishing requests in flight");
    drop(tcp);
    let _ = shutdown_tx.send(true);
    drop(alive_tx);
    let _ = tokio::time::timeout(Duration::from_secs(5), alive_rx.recv()).await;
}

/// Resolves once the connection's deadline has passed or it was evicted.
async fn closing_time(conn: &Conn) -> &'static str {
    loop {
        if conn.evicted() {
            return "evicted at the connection cap";
        }
        let deadline = conn.deadline();
        if deadline.is_some_and(|d| d <= tokio::time::Instant::now()) {
            return "timed out";
        }
        match deadline {
            Some(d) => tokio::select! {
                _ = tokio::time::sleep_until(d) => {}
                _ = conn.wake.notified() => {}
            },
            None => conn.wake.notified().await,
        }
    }
}

/// Counts a request in flight on its connection until the router's answer is ready.
struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_done();
    }
}

/// One connection: TLS handshake, then HTTP/1 requests until its deadline passes.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    conn: Arc<Conn>,
    tls: TlsAcceptor,
    app: Router,
    mut shutdown: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
) {
    let _ = stream.set_nodelay(true);
    let tls = tokio::select! {
        r = tls.accept(stream) => match r {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!("TLS handshake with {peer}: {e}");
                return;
            }
        },
        why = closing_time(&conn) => {
            tracing::debug!("TLS handshake with {peer}: {why}");
            return;
        }
        _ = shutdown.changed() => return,
    };
    conn.tls_done();
    let limits = conn.limits().clone();
    let svc_conn = conn.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let conn = svc_conn.clone();
        let app = app.clone();
        // Boxed so the connection is Unpin: `poll_without_shutdown` needs it, to get the
        // stream back for the lingering close.
        Box::pin(async move {
            conn.request_started(!req.body().is_end_stream());
            let in_flight = InFlight(conn.clone());
            let (mut parts, body) = req.into_parts();
            parts.extensions.insert(ConnectInfo(peer));
            parts.extensions.insert(ConnHandle(conn.clone()));
            let body = axum::body::Body::new(WatchedBody::new(body, conn));
            let resp = app.oneshot(hyper::Request::from_parts(parts, body)).await;
            drop(in_flight);
            resp
        })
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        // hyper's own clock runs from the moment it waits for a request head; ours
        // (closing_time) is finer. This one is a backstop.
        .header_read_timeout(limits.idle_keep_alive + limits.request_headers)
        .max_buf_size(64 << 10);
    let served = http.serve_connection(
        TokioIo::new(Watched {
            inner: tls,
            conn: conn.clone(),
        }),
        service,
    );
    let mut served = served;
    tokio::select! {
        r = std::future::poll_fn(|cx| served.poll_without_shutdown(cx)) => {
            if let Err(e) = r {
                tracing::debug!("connection from {peer}: {e}");
                return;
            }
        }
        why = closing_time(&conn) => {
            tracing::debug!("closing the connection from {peer}: {why}");
            return;
        }
        _ = shutdown.changed() => {
            std::pin::Pin::new(&mut served).graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), served).await;
            return;
        }
    }
    // hyper is done with the connection (the client closed, or hyper closes it, as
    // after an answer to a body it did not read, like a 413).
    let parts = served.into_parts();
    let already = parts.read_buf.len();
    let tls = parts.io.into_inner().inner;
    tokio::select! {
        r = lingering_close(tls, already) => {
            if let Err(e) = r {
                tracing::debug!("closing the connection from {peer}: {e}");
            }
        }
        why = closing_time(&conn) => tracing::debug!("closing the connection from {peer}: {why}"),
        _ = shutdown.changed() => {}
    }
}

/// Bytes of an unread request body discarded after the answer, at most...
const LINGER_BYTES: usize = 1 << 20;
/// ...and for at most this long (the connection keeps its slot, counted in the cap).
const LINGER_TIME: Duration = Duration::from_secs(2);

/// Ends the TLS session (close_notify, then FIN), then reads and discards what the
/// client still sends, up to [`LINGER_BYTES`] and [`LINGER_TIME`], before closing.
/// Why: closing a socket with unread bytes in its receive buffer makes the kernel send
/// a reset; a client still sending its body (most clients send it whole before reading)
/// then fails on a write and never reads the answer, a 413 for instance. nginx's
/// lingering_close does the same.
async fn lingering_close(
    mut tls: tokio_rustls::server::TlsStream<TcpStream>,
    already: usize,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let until = tokio::time::Instant::now() + LINGER_TIME;
    tokio::time::timeout_at(until, tls.shutdown())
        .await
        .map_err(|_| std::io::Error::other("TLS close_notify not sent in 2 s"))??;
    // The raw socket: what follows is discarded, no need to decrypt it.
    let (mut tcp, _) = tls.into_inner();
    let mut buf = [0u8; 16 << 10];
    let mut left = LINGER_BYTES.saturating_sub(already);
    while left > 0 {
        match tokio::time::timeout_at(until, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => left = left.saturating_sub(n),
            Ok(Err(e)) => return Err(e),
        }
    }
    Ok(())
}

/// Hands freed heap back to the system every 30 s: a federation scrape of thousands of
/// nodes builds a large text once, and glibc keeps such memory mapped otherwise.
async fn return_freed_memory() {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tick.tick().await;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only releases free heap pages; it touches no live memory.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// Initialises or reads the swarm, then polls node states and re-applies missing labels.
async fn swarm_loop(swarm: Arc<SwarmLink>, store: Arc<Store>) {
    let mut warned = false;
    loop {
        match swarm.refresh().await {
            Ok(j) => {
                tracing::info!("swarm ready: managers {}", j.managers.join(", "));
                break;
            }
            Err(e) => {
                if !warned {
                    tracing::warn!("{e}; retrying every {POLL_SECONDS} s");
                    warned = true;
                }
                tokio::time::sleep(Duration::from_secs(POLL_SECONDS)).await;
            }
        }
    }
    let mut tick = tokio::time::interval(Duration::from_secs(POLL_SECONDS));
    loop {
        tick.tick().await;
        if let Err(e) = swarm.refresh().await {
            tracing::warn!("refreshing swarm join information: {e}");
        }
        if let Err(e) = swarm.poll_nodes().await {
            tracing::warn!("polling swarm nodes: {e}");
            continue;
        }
        let records: Vec<_> = store
            .read()
            .nodes
            .values()
            .map(|e| e.record.clone())
            .collect();
        for (sid, want) in swarm.needs_labels(&records) {
            if let Err(e) = swarm.label(&sid, &want).await {
                tracing::warn!("labelling swarm node {sid}: {e}");
            }
        }
    }
}

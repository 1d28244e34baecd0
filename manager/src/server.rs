//! `armada-manager serve`: the TLS listener, background loops and graceful shutdown.
//!
//! TLS handshakes run in their own tasks (a slow or silent client never holds up the
//! accept loop) and finished streams are handed to axum through a channel. SIGTERM or
//! SIGINT stops accepting, lets requests in flight finish (at most 5 s), closes the
//! store (WAL checkpointed) and returns, with an error if it was not closed cleanly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::api::{self, AppState};
use crate::cluster::{self, TokenFile};
use crate::store::state::StatusPolicy;
use crate::store::{Store, StoreConfig};
use crate::swarm::{SwarmLink, POLL_SECONDS};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
}

/// Accepted TLS connections, handshakes done.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub async fn bind(addr: SocketAddr, tls: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let tcp = TcpListener::bind(addr).await?;
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(tls);
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            while !tx.is_closed() {
                let (stream, peer) = match tcp.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, don't spin.
                        tracing::warn!("accepting a connection on {local}: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!("TLS handshake with {peer}: {e}"),
                        Err(_) => tracing::debug!("TLS handshake with {peer} timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { rx, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(x) => x,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
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
        "store {}: {} nodes, {} commits; quick_check {:?}, load {:?}",
        cfg.state_dir.display(),
        opened.nodes,
        opened.commits,
        opened.quick_check,
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
    });
    let alert_tasks = crate::alerts::spawn(state.clone());
    if swarm.enabled() {
        tokio::spawn(swarm_loop(swarm.clone(), store.clone()));
    }
    tokio::spawn(return_freed_memory());

    let listener = TlsListener::bind(cfg.listen, tls)
        .await
        .with_context(|| format!("listening on {}", cfg.listen))?;
    on_listen(listener.local);
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, api::router(state)).with_graceful_shutdown(async move {
        stop.await;
        let _ = stopped_tx.send(());
    });
    let server = tokio::spawn(async move { server.await });
    // Requests in flight get 5 s once the stop signal has come.
    let _ = stopped_rx.await;
    tracing::info!("stopping: finishing requests in flight");
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    alert_tasks.stop().await;
    // Never claim a clean stop after a failure: the exit code says it too.
    store
        .shutdown()
        .await
        .context("closing the store: it was NOT closed cleanly (its WAL is replayed and checked at the next start)")?;
    tracing::info!("stopped; store closed cleanly");
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

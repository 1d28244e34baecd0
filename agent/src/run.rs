//! `armada-agent run`: metrics collection and `/metrics` from the first interval, with
//! the control plane (registration, swarm join, delivery) beside them. Nothing waits on
//! the Docker engine or the manager before collection starts, and no control-plane
//! failure ends the process (see [`crate::join`]).

use std::time::Duration;

use anyhow::Context;

use crate::cli::{load_config, RunArgs};
use crate::state::StateDir;
use crate::{clock, join, metrics, report, serve, swarm};

/// Every call of the control plane to the engine: a swarm join with a bad token takes
/// ~10 s to be refused.
const CONTROL_ENGINE_TIMEOUT_S: u64 = 60;

/// Runs until SIGTERM or Ctrl-C.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let (cfg_path, cfg) = load_config(&args.cfg)?;
    // Validated with the file; said again here so a bad value names its key.
    let cgroup_parent = protocol::config::cgroup_parent_dir(&cfg.agent.cgroup_parent)
        .map_err(|e| anyhow::anyhow!("{}: `agent.cgroup_parent`: {e}", cfg_path.display()))?;
    let state = StateDir::new(&args.state_dir);
    // The engine may be down, absent or hung: nothing is asked of it here.
    let engine = swarm::Engine::new(&args.docker_host, CONTROL_ENGINE_TIMEOUT_S)?;
    let names_engine =
        swarm::Engine::new(&args.docker_host, metrics::containers::ENGINE_TIMEOUT_S)?;

    // Metrics from the start: served at once, and kept in the backlog while the node
    // registers (the manager may boot after the workers).
    let interval_s = match state.load() {
        Ok(stored) => stored
            .map(|r| r.info.report_interval_seconds)
            .filter(|&s| s > 0),
        Err(_) => None, // said by the control plane, which retries it
    }
    .unwrap_or(cfg.agent.interval_seconds);
    let shared = report::Shared::new(cfg.agent.backlog_reports, cfg.agent.backlog_bytes);
    shared.set_interval(Duration::from_secs(u64::from(interval_s.max(1))));
    shared.status.mirror_to(&args.status_file);
    if !cfg.agent.metrics_listen.is_empty() {
        let listener = serve::bind(&cfg.agent.metrics_listen).await?;
        tracing::info!(
            "serving Prometheus metrics on http://{}/metrics",
            cfg.agent.metrics_listen
        );
        tokio::spawn(serve::serve(listener, shared.clone()));
    }
    // The clock floor sync-clock starts from after a power cut.
    tokio::spawn(clock::keep_floor(args.state_dir.clone()));
    let instance = hex::encode(rand::random::<[u8; 8]>());
    tracing::info!(
        "collecting every {}s as instance {instance} (backlog of {} snapshots / {} bytes in memory)",
        shared.interval().as_secs(),
        cfg.agent.backlog_reports,
        cfg.agent.backlog_bytes
    );
    if let Some(dir) = &cgroup_parent {
        tracing::info!("containers only from the cgroup subtree /{dir} (agent.cgroup_parent)");
    }
    let source = MetricsSource::new(args.cfg.root.clone(), names_engine, cgroup_parent);
    // The collector runs in this task (select! below), not a spawned one.
    let collect = report::collect_loop(source, shared.clone(), instance);

    let control = async {
        join::run(join::ControlPlane {
            cfg_path,
            root: args.cfg.root.clone(),
            state,
            engine,
            shared: shared.clone(),
        })
        .await;
        // Revoked: nothing more to deliver; monitoring goes on.
        std::future::pending::<()>().await
    };

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = collect => Ok(()),
        _ = control => Ok(()),
        _ = term.recv() => { tracing::info!("SIGTERM: stopping"); Ok(()) }
        _ = tokio::signal::ctrl_c() => { tracing::info!("interrupted: stopping"); Ok(()) }
    }
}

/// The metrics collector as the report loop's snapshot source. Without an engine
/// socket at start it collects without container names, and takes a collector that
/// names them once the socket appears (looked for every [`ENGINE_LOOK_EVERY`]).
struct MetricsSource {
    collector: metrics::Collector,
    root: std::path::PathBuf,
    engine: Option<swarm::Engine>,
    next_look: tokio::time::Instant,
    warned: bool,
    cgroup_parent: Option<String>,
}

const ENGINE_LOOK_EVERY: Duration = Duration::from_secs(10);

impl MetricsSource {
    fn new(root: std::path::PathBuf, engine: swarm::Engine, cgroup_parent: Option<String>) -> Self {
        let mut collector = metrics::Collector::new(root.clone(), None);
        collector.set_container_cgroup_parent(cgroup_parent.as_deref());
        let mut source = MetricsSource {
            collector,
            root,
            engine: Some(engine),
            next_look: tokio::time::Instant::now(),
            warned: false,
            cgroup_parent,
        };
        source.look_for_engine();
        source
    }

    fn look_for_engine(&mut self) {
        let Some(engine) = &self.engine else { return };
        if tokio::time::Instant::now() < self.next_look {
            return;
        }
        match engine.client() {
            Ok(docker) => {
                self.collector = metrics::Collector::new(self.root.clone(), Some(docker));
                self.collector
                    .set_container_cgroup_parent(self.cgroup_parent.as_deref());
                self.engine = None;
            }
            Err(e) => {
                if !self.warned {
                    tracing::warn!("{e:#}: containers are named by id until the engine is up");
                    self.warned = true;
                }
                self.next_look = tokio::time::Instant::now() + ENGINE_LOOK_EVERY;
            }
        }
    }
}

impl report::SnapshotSource for MetricsSource {
    async fn collect(&mut self, instance: &str, seq: u64) -> protocol::snapshot::Snapshot {
        self.look_for_engine();
        self.collector.collect(instance, seq).await
    }
}

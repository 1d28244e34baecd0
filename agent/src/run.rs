//! `armada-agent run`: metrics collection and `/metrics` from the start, with the
//! control plane (registration, swarm join, delivery) beside them.

use std::time::Duration;

use anyhow::Context;

use crate::cli::{load_config, RunArgs};
use crate::state::StateDir;
use crate::{clock, join, metrics, report, serve, swarm};

/// Runs until SIGTERM or Ctrl-C.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let (cfg_path, cfg) = load_config(&args.cfg)?;
    let state = StateDir::new(&args.state_dir);
    let stored = state.load()?;
    // Check what registration needs before waiting on anything.
    let inputs = match &stored {
        Some(_) => None,
        None => Some(join::registration_inputs(&cfg_path, &cfg, &state)?),
    };
    let docker = swarm::connect_with_wait(&args.docker_host, Duration::from_secs(120)).await?;

    // Metrics from the start: served at once, and kept in the backlog while the node
    // registers (the manager may boot after the workers).
    let interval_s = stored
        .as_ref()
        .map(|r| r.info.report_interval_seconds)
        .filter(|&s| s > 0)
        .unwrap_or(cfg.agent.interval_seconds);
    let shared = report::Shared::new(cfg.agent.backlog_reports);
    shared.set_interval(Duration::from_secs(u64::from(interval_s.max(1))));
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
    let source = MetricsSource(metrics::Collector::new(
        args.cfg.root.clone(),
        Some(docker.clone()),
    ));
    // The collector runs in this task (select! below), not a spawned one.
    let collect = report::collect_loop(source, shared.clone(), instance.clone());

    let report = async {
        let (client, manager, reg) = join::join_cluster(
            &cfg_path,
            &cfg,
            &args.cfg.root,
            &state,
            stored,
            inputs,
            &docker,
        )
        .await?;
        if reg.info.report_interval_seconds > 0 {
            shared.set_interval(Duration::from_secs(u64::from(
                reg.info.report_interval_seconds,
            )));
        }
        tracing::info!(
            "reporting to {manager} every {}s as instance {instance} (backlog of {} in memory)",
            shared.interval().as_secs(),
            cfg.agent.backlog_reports
        );
        let err =
            report::deliver_loop(client, manager, reg.credential.clone(), shared.clone()).await;
        Err::<(), anyhow::Error>(err.into())
    };

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = collect => Ok(()),
        r = report => r,
        _ = term.recv() => { tracing::info!("SIGTERM: stopping"); Ok(()) }
        _ = tokio::signal::ctrl_c() => { tracing::info!("interrupted: stopping"); Ok(()) }
    }
}

/// The metrics collector as the report loop's snapshot source.
struct MetricsSource(metrics::Collector);

impl report::SnapshotSource for MetricsSource {
    async fn collect(&mut self, instance: &str, seq: u64) -> protocol::snapshot::Snapshot {
        self.0.collect(instance, seq).await
    }
}

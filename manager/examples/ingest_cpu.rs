//! The CPU one report costs the manager past HTTP and TLS: its gzip'd body decoded as
//! `/v1/report` does (inflate, checked JSON parse) and stored (decision, rows, zlib of
//! the latest snapshot, SQLite, fsync'd commit), one request at a time, so each group
//! commit holds one request and an instruction count is the same run after run:
//!   valgrind --tool=callgrind target/release/examples/ingest_cpu NODES ROUNDS BATCH
//! NODES registered nodes each send ROUNDS requests of BATCH snapshots (bodies made
//! before the measured part begins); it prints what it did. Two runs whose ROUNDS
//! differ, subtracted, give the instructions per request without the set-up.

// Synthetic snapshots: shared with the tests, not part of the library's API.
#[path = "../src/sim.rs"]
mod sim;

use std::io::Write;

use anyhow::{bail, Context, Result};
use armada_manager::store::report::{decode, BodyEncoding};
use armada_manager::store::{Registration, Store, StoreConfig};
use protocol::wire::{NodeFacts, ReportBatch, Role};

fn facts(hostname: &str) -> NodeFacts {
    NodeFacts {
        hostname: hostname.into(),
        board: "pine64".into(),
        role: Role::Worker,
        machine_id: format!("machine-{hostname}"),
        arch: "aarch64".into(),
        kernel: "6.1.0".into(),
        cpus: 4,
        memory_bytes: 2 << 30,
        docker_version: Some("20.10.24".into()),
        agent_version: "ingest_cpu".into(),
        engine_id: None,
    }
}

/// A gzip'd batch of `batch` snapshots of `hostname`, numbered from `seq`.
fn body(hostname: &str, seq: u64, batch: u64) -> Result<Vec<u8>> {
    let snapshots = (seq..seq + batch)
        .map(|s| {
            sim::snapshot(
                hostname,
                &format!("i-{hostname}"),
                s,
                1_000_000 + s * 10_000,
            )
        })
        .collect();
    let json = serde_json::to_vec(&ReportBatch {
        protocol: protocol::PROTOCOL_VERSION,
        snapshots,
        dropped_total: 0,
    })?;
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(&json)?;
    Ok(z.finish()?)
}

fn main() -> Result<()> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse::<u64>().context("NODES ROUNDS BATCH are numbers"))
        .collect::<Result<_>>()?;
    let [nodes, rounds, batch] = args[..] else {
        bail!("usage: ingest_cpu NODES ROUNDS BATCH");
    };
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (store, _) = Store::open(StoreConfig::new(dir.path().to_path_buf()))?;
        let mut ids = Vec::new();
        for n in 0..nodes {
            let host = format!("node-{n:05}");
            match store.register(facts(&host), Default::default(), 10).await? {
                Registration::Registered { node_id, .. } => ids.push((node_id, host)),
                Registration::HostnameTaken { .. } => bail!("{host} taken"),
            }
        }
        let mut bodies = Vec::new();
        for r in 0..rounds {
            for (id, host) in &ids {
                bodies.push((id, body(host, r * batch, batch)?));
            }
        }
        let t0 = std::time::Instant::now();
        for (id, b) in bodies {
            let decoded = decode(BodyEncoding::Gzip, &b)?;
            let outcome = store
                .report(id, BodyEncoding::Gzip, b.into(), decoded)
                .await?
                .context("node unknown")?;
            if outcome.accepted as u64 != batch {
                bail!("{} of {batch} accepted", outcome.accepted);
            }
        }
        let took = t0.elapsed();
        store.shutdown().await?;
        println!(
            "{nodes} nodes x {rounds} requests of {batch} snapshots: {:.1} us per request (wall)",
            took.as_secs_f64() * 1e6 / (nodes * rounds) as f64
        );
        Ok(())
    })
}

//! Metrics collection: host, per-container and board-health families, each a small
//! parser from files under a root path (`/` on a board, a fixture tree in tests).
//!
//! `Collector` holds what lasts between cycles (read buffers, discovered sensors and
//! cgroup folders, the container-name cache, the open `/dev/vcio`) so that a cycle reads
//! files into reused buffers and allocates little beyond the snapshot it returns.
//! Missing or unreadable sources become one logged warning per cause and an absent
//! metric; nothing here panics on input.
//!
//! Layout (one module per family):
//! - `pseudofile`: reused read buffer, files kept open between cycles, hand-written
//!   number parsing; `fdlimit`: how many files may stay open (raises RLIMIT_NOFILE).
//! - `cpu` (`/proc/stat`), `load` (loadavg, uptime), `memory` (meminfo, vmstat),
//!   `processes`, `pressure` (PSI), `disk` (diskstats, latency), `filesystem` (mounts,
//!   statvfs, read-only state, ext4 lifetime writes), `network` (`net/dev`), `link`
//!   (operstate, carrier, speed), `timex` (kernel clock state, clock steps).
//! - `cgroup/` (version detection, discovery, v1, v2, per-container PSI) and
//!   `containers` (Docker names).
//! - `thermal`, `cooling`, `hwmon`, `cpufreq`, `rpi` (firmware throttled bits via
//!   `/dev/vcio`; absent on the mainline kernel, see agent/METRICS.md).
//! - `updates`: pending package updates listed by the image's update timer.
//!
//! Every collector's duration and success is in the snapshot (`collectors`).

pub mod cgroup;
pub mod containers;
pub mod cooling;
pub mod cpu;
pub mod cpufreq;
pub mod disk;
pub mod fdlimit;
pub mod filesystem;
pub mod heap;
pub mod hwmon;
pub mod link;
pub mod load;
pub mod memory;
pub mod network;
pub mod pressure;
pub mod processes;
pub mod pseudofile;
pub mod rpi;
pub mod thermal;
pub mod timex;
pub mod updates;

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use protocol::snapshot::{BoardHealth, CollectorRun, HostMetrics, Snapshot};

use pseudofile::{PseudoFile, ReadError};

/// The warning when the memory controller is off.
pub const MEMORY_CGROUP_DISABLED: &str = "memory cgroup controller is disabled (kernel command line lacks cgroup_enable=memory): container memory is not reported";

/// Distinct warning causes remembered as already logged (a forgotten one is logged
/// again if it comes back).
const MAX_LOGGED_CAUSES: usize = 256;

/// Warnings of one cycle, each logged only the first time its cause is seen.
#[derive(Default)]
struct Warnings {
    logged: HashSet<String>,
    /// `logged` in insertion order: the oldest cause is forgotten past
    /// [`MAX_LOGGED_CAUSES`] (container churn makes new causes forever).
    logged_order: std::collections::VecDeque<String>,
    cycle: Vec<String>,
    /// Notes taken since start: a collector that added none succeeded.
    noted: u64,
}

impl Warnings {
    fn note(&mut self, cause: String) {
        self.noted = self.noted.wrapping_add(1);
        if !self.logged.contains(&cause) {
            tracing::warn!("{cause}");
            if self.logged_order.len() >= MAX_LOGGED_CAUSES {
                if let Some(oldest) = self.logged_order.pop_front() {
                    self.logged.remove(&oldest);
                }
            }
            self.logged.insert(cause.clone());
            self.logged_order.push_back(cause.clone());
        }
        if !self.cycle.contains(&cause) {
            self.cycle.push(cause);
        }
    }

    fn error(&mut self, e: impl Display) {
        self.note(e.to_string())
    }
}

/// Each collector's duration and success in the current cycle, and when each last
/// succeeded (node_exporter's `node_scrape_collector_*`).
#[derive(Default)]
struct Runs {
    cycle: Vec<CollectorRun>,
    last_success: HashMap<&'static str, f64>,
    /// This cycle's wall-clock time, seconds since the epoch.
    now: f64,
}

/// When a collector started, and the warnings noted until then.
#[derive(Clone, Copy)]
struct Started {
    at: Instant,
    noted: u64,
}

impl Runs {
    fn begin(w: &Warnings) -> Started {
        Started {
            at: Instant::now(),
            noted: w.noted,
        }
    }

    fn end(&mut self, name: &'static str, started: Started, w: &Warnings) {
        let success = w.noted == started.noted;
        if success {
            self.last_success.insert(name, self.now);
        }
        self.cycle.push(CollectorRun {
            collector: name.to_string(),
            duration_seconds: started.at.elapsed().as_secs_f64(),
            success,
            last_success_seconds: self.last_success.get(name).copied(),
        });
    }
}

/// Cycles between two counts of the processes: the count walks every `/proc/<pid>`
/// entry, and the kernel's readdir of `/proc` steps through every pid, threads
/// included, instantiating a dentry per process: ~0.5 ms with 300 processes, ~2.8 ms
/// CPU on a host with 2,000 processes and 15,000 threads (session 6's profile: 37% of
/// a 20-container collection at every 4th cycle, more than all container files
/// together). Forks (`/proc/stat`) and threads (`loadavg`) are read every cycle and
/// answer "is something forking away"; the process count is a slow gauge, taken every
/// 12th cycle (as the limits: 2 minutes at the default 10 s) and reported from the
/// last count in between.
const PROCESSES_EVERY: u64 = 12;

/// Sources found once and kept: a vanished entry triggers a new search.
#[derive(Default)]
struct Discovered {
    thermal: Option<Vec<thermal::Zone>>,
    cooling: Option<Vec<cooling::Device>>,
    hwmon: Option<Vec<hwmon::Sensor>>,
    cpufreq: Option<Vec<(u32, PathBuf)>>,
    ext4: Option<Vec<(String, PathBuf)>>,
    mounts: filesystem::MountTable,
    cgroup: Option<Result<cgroup::Layout, String>>,
    vcio: Option<Option<rpi::Vcio>>,
}

/// Collects snapshots of one machine, cycle after cycle.
pub struct Collector {
    root: PathBuf,
    file: PseudoFile,
    ticks_per_second: f64,
    warnings: Warnings,
    runs: Runs,
    found: Discovered,
    steps: timex::StepWatch,
    containers: containers::Containers,
    /// Cycles collected so far, and the last process count with its cycle.
    cycle: u64,
    processes: Option<(u64, u64)>,
    release: heap::Release,
}

impl Collector {
    /// `root` is `/` on a real machine; `docker` names containers when given.
    pub fn new(root: PathBuf, docker: Option<bollard::Docker>) -> Self {
        heap::configure();
        // SAFETY: sysconf has no preconditions.
        let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Collector {
            root,
            file: PseudoFile::with_open_budget(fdlimit::open_file_budget()),
            ticks_per_second: if tck > 0 { tck as f64 } else { 100.0 },
            warnings: Warnings::default(),
            runs: Runs::default(),
            found: Discovered::default(),
            steps: timex::StepWatch::default(),
            containers: containers::Containers::new(docker),
            cycle: 0,
            processes: None,
            release: heap::Release::default(),
        }
    }

    /// How long container names are cached before the engine is listed again; the
    /// default is 30 s, and a start or stop seen in the cgroup tree relists at once.
    pub fn set_container_list_interval(&mut self, every: std::time::Duration) {
        self.containers.set_list_interval(every);
    }

    /// Containers only from this cgroup subtree (`agent.cgroup_parent`, already turned
    /// into a folder by [`protocol::config::cgroup_parent_dir`]); `None`: everywhere.
    pub fn set_container_cgroup_parent(&mut self, dir: Option<&str>) {
        self.containers.set_cgroup_parent(dir);
    }

    /// One snapshot. Never fails: what cannot be read is absent and named in `warnings`.
    pub async fn collect(&mut self, instance: &str, seq: u64) -> Snapshot {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut snap = Snapshot {
            instance: instance.to_string(),
            seq,
            collected_at_ms: u64::try_from(now.as_millis()).unwrap_or(u64::MAX),
            ..Default::default()
        };
        self.runs.now = now.as_secs_f64();
        let root = self.root.clone();
        snap.hostname = match self
            .file
            .read_sysctl_string(&root, "proc/sys/kernel/hostname")
        {
            Ok(h) => h,
            Err(e) => {
                self.warnings.error(e);
                String::new()
            }
        };
        self.collect_host(&root, &mut snap.host);
        self.collect_health(&root, &mut snap.health);
        if let Some(Ok(layout)) = &self.found.cgroup {
            let started = Runs::begin(&self.warnings);
            let warnings = &mut self.warnings;
            let mut warn = |cause: String| warnings.note(cause);
            self.containers
                .collect(
                    &root,
                    layout,
                    &mut self.file,
                    self.ticks_per_second,
                    &mut warn,
                    &mut snap.containers,
                )
                .await;
            self.runs.end("containers", started, &self.warnings);
        }
        let started = Runs::begin(&self.warnings);
        snap.updates = updates::collect(&root, &mut self.file)
            .map_err(|e| self.warnings.error(e))
            .ok()
            .flatten();
        self.runs.end("updates", started, &self.warnings);
        self.file.end_cycle();
        if self.release.due(snap.containers.len()) {
            self.containers.shrink();
            heap::trim();
        }
        self.cycle = self.cycle.wrapping_add(1);
        snap.warnings = std::mem::take(&mut self.warnings.cycle);
        snap.collectors = std::mem::take(&mut self.runs.cycle);
        snap
    }

    fn collect_host(&mut self, root: &Path, host: &mut HostMetrics) {
        let (file, w, runs) = (&mut self.file, &mut self.warnings, &mut self.runs);

        let t = Runs::begin(w);
        match cpu::collect(root, file, self.ticks_per_second, &mut host.cpu) {
            Ok(k) => {
                host.boot_time_seconds = k.boot_time_seconds;
                host.context_switches_total = k.context_switches_total;
                host.forks_total = k.forks_total;
                host.procs_running = k.procs_running;
                host.procs_blocked = k.procs_blocked;
            }
            Err(e) => w.error(e),
        }
        runs.end("cpu", t, w);

        let t = Runs::begin(w);
        match load::collect(root, file) {
            Ok(l) => {
                host.load = Some(l.average);
                host.threads = l.threads;
            }
            Err(e) => w.error(e),
        }
        host.uptime_seconds = load::collect_uptime(root, file)
            .map_err(|e| w.error(e))
            .ok();
        runs.end("loadavg", t, w);

        let t = Runs::begin(w);
        host.memory = memory::collect(root, file).map_err(|e| w.error(e)).ok();
        runs.end("meminfo", t, w);

        let t = Runs::begin(w);
        host.oom_kills_total = memory::collect_oom_kills(root, file)
            .map_err(|e| w.error(e))
            .ok()
            .flatten();
        runs.end("vmstat", t, w);

        let t = Runs::begin(w);
        host.processes = match self.processes {
            Some((count, at)) if self.cycle.wrapping_sub(at) < PROCESSES_EVERY => Some(count),
            _ => {
                let counted = processes::count(root).map_err(|e| w.error(e)).ok();
                self.processes = counted.map(|n| (n, self.cycle));
                counted
            }
        };
        runs.end("processes", t, w);

        let t = Runs::begin(w);
        if let Err(e) = pressure::collect(root, file, &mut host.pressure) {
            w.error(e);
        }
        runs.end("pressure", t, w);

        let t = Runs::begin(w);
        if let Err(e) = disk::collect(root, file, &mut host.disks) {
            w.error(e);
        }
        runs.end("diskstats", t, w);

        let t = Runs::begin(w);
        if let Err(e) =
            filesystem::collect(root, file, &mut self.found.mounts, &mut host.filesystems)
        {
            w.error(e);
        }
        runs.end("filesystem", t, w);

        let t = Runs::begin(w);
        if let Err(e) = network::collect(root, file, &mut host.network) {
            w.error(e);
        }
        runs.end("netdev", t, w);

        let t = Runs::begin(w);
        link::collect(root, file, &host.network, &mut host.links, &mut |e| {
            w.error(e)
        });
        runs.end("netclass", t, w);

        // The kernel clock is the machine's own, whatever the root: fixture trees get
        // none, so that their output stays the same on every machine.
        let t = Runs::begin(w);
        host.clock = if root == Path::new("/") {
            let steps = timex::wall_minus_boot()
                .map(|d| self.steps.observe(d))
                .unwrap_or_default();
            match timex::read() {
                Some(t) => Some(timex::decode(t, steps)),
                None => {
                    w.note("reading the kernel clock with adjtimex failed".to_string());
                    None
                }
            }
        } else {
            None
        };
        runs.end("timex", t, w);
    }

    fn collect_health(&mut self, root: &Path, health: &mut BoardHealth) {
        let (file, w, found, runs) = (
            &mut self.file,
            &mut self.warnings,
            &mut self.found,
            &mut self.runs,
        );

        let t = Runs::begin(w);
        let zones = found
            .thermal
            .get_or_insert_with(|| thermal::discover(root, file));
        if !thermal::read(zones, file, &mut health.thermal, &mut |e| w.error(e)) {
            found.thermal = None;
        }
        let devices = found
            .cooling
            .get_or_insert_with(|| cooling::discover(root, file));
        if !cooling::read(devices, file, &mut health.cooling, &mut |e| w.error(e)) {
            found.cooling = None;
        }
        runs.end("thermal_zone", t, w);

        let t = Runs::begin(w);
        let sensors = found
            .hwmon
            .get_or_insert_with(|| hwmon::discover(root, file));
        if !hwmon::read(sensors, file, &mut health.hwmon, &mut |e| w.error(e)) {
            found.hwmon = None;
        }
        health.under_voltage = hwmon::rpi_under_voltage(&health.hwmon);
        runs.end("hwmon", t, w);

        let t = Runs::begin(w);
        let cpus = found.cpufreq.get_or_insert_with(|| cpufreq::discover(root));
        if !cpufreq::read(cpus, file, &mut health.cpu_frequency, &mut |e| w.error(e)) {
            found.cpufreq = None;
        }
        runs.end("cpufreq", t, w);

        let t = Runs::begin(w);
        let ext4 = found
            .ext4
            .get_or_insert_with(|| filesystem::ext4_devices(root));
        health.ext4_lifetime_written.clear();
        for (dev, dir) in ext4.iter() {
            match filesystem::ext4_lifetime_written(dir, file) {
                Ok(b) => health.ext4_lifetime_written.push((dev.clone(), b)),
                Err(e) => w.error(e),
            }
        }
        runs.end("ext4", t, w);

        let t = Runs::begin(w);
        let vcio = found
            .vcio
            .get_or_insert_with(|| match rpi::Vcio::open(root) {
                None => None,
                Some(Ok(v)) => Some(v),
                Some(Err(e)) => {
                    w.error(ReadError::Io {
                        path: root.join("dev/vcio"),
                        source: e,
                    });
                    None
                }
            });
        if let Some(v) = vcio {
            match v.throttled() {
                Ok(t) => health.throttled = Some(t),
                Err(e) => w.note(format!(
                    "asking the firmware for GET_THROTTLED through /dev/vcio: {e}"
                )),
            }
        }
        runs.end("rpi", t, w);

        let t = Runs::begin(w);
        let layout = found
            .cgroup
            .get_or_insert_with(|| cgroup::detect(root, file).map_err(|e| e.to_string()));
        let memory_disabled = match layout {
            Ok(l) => {
                health.cgroup_version = Some(l.version.number());
                health.memory_cgroup_enabled = Some(l.memory_enabled);
                !l.memory_enabled
            }
            Err(e) => {
                w.note(e.clone());
                false
            }
        };
        runs.end("cgroup", t, w);
        // A kernel setting, not a failed read: told once per cycle, outside the timing.
        if memory_disabled {
            w.note(MEMORY_CGROUP_DISABLED.to_string());
        }
    }
}

#[derive(clap::Args)]
pub struct MetricsArgs {
    /// Print one snapshot and exit.
    #[arg(long)]
    pub once: bool,
    /// Print the snapshot as JSON (the type the manager receives) instead of Prometheus text.
    #[arg(long)]
    pub json: bool,
    /// Read /proc, /sys and cgroups under this folder instead of /.
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Docker Engine socket used to name containers (`unix:///path`); defaults to
    /// $DOCKER_HOST, else /var/run/docker.sock when it exists.
    #[arg(long)]
    pub docker_host: Option<String>,
    /// Do not ask any Docker Engine: containers are named by cgroup id only.
    #[arg(long, conflicts_with = "docker_host")]
    pub no_docker: bool,
    /// Look for containers only in this cgroup subtree, as armada.toml's
    /// `agent.cgroup_parent` (`/docker`, `system.slice`); default: the whole hierarchy.
    #[arg(long, default_value = "")]
    pub cgroup_parent: String,
    /// Collect this many times back to back and print the last (benchmarking).
    #[arg(long, hide = true, default_value_t = 1)]
    pub cycles: u64,
    /// Ask the Docker Engine for the container list every cycle (benchmarking the worst case).
    #[arg(long, hide = true)]
    pub list_every_cycle: bool,
    /// After the cycles, print the process's CPU time and RSS to stderr (benchmarking).
    #[arg(long, hide = true)]
    pub stats: bool,
    /// Pause between cycles, as the running agent's interval does (benchmarking churn).
    #[arg(long, hide = true, default_value_t = 0)]
    pub interval_ms: u64,
    /// Also print open fds and RSS to stderr every this many cycles (0: never).
    #[arg(long, hide = true, default_value_t = 0)]
    pub stats_every: u64,
}

pub fn run_cli(args: MetricsArgs) -> anyhow::Result<()> {
    if !args.once {
        anyhow::bail!("`armada-agent metrics` prints one snapshot: pass --once (the running agent serves /metrics)");
    }
    let docker = if args.no_docker {
        None
    } else {
        let host = args
            .docker_host
            .clone()
            .or_else(|| std::env::var("DOCKER_HOST").ok())
            .or_else(|| {
                Path::new("/var/run/docker.sock")
                    .exists()
                    .then(|| "unix:///var/run/docker.sock".to_string())
            });
        match host {
            Some(h) => Some(
                containers::connect_docker(&h)
                    .with_context(|| format!("connecting to the Docker Engine at {h}"))?,
            ),
            None => None,
        }
    };
    let cgroup_parent = protocol::config::cgroup_parent_dir(&args.cgroup_parent)
        .map_err(|e| anyhow::anyhow!("--cgroup-parent: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let cycles = args.cycles.max(1);
    // Benchmark cycles render the exposition too, as a scrape of /metrics would; the
    // final print reuses that buffer, so `--stats` measures one exposition held, as the
    // running agent holds one per scrape (a second copy was ~500 KiB at 200 containers).
    let mut text = String::new();
    let (snap, stats) = runtime.block_on(async {
        let mut collector = Collector::new(args.root.clone(), docker);
        collector.set_container_cgroup_parent(cgroup_parent.as_deref());
        if args.list_every_cycle {
            collector.set_container_list_interval(std::time::Duration::ZERO);
        }
        let mut snap = collector.collect("cli", 0).await;
        let after_first = ProcessStats::read();
        for seq in 1..cycles {
            if args.interval_ms > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(args.interval_ms)).await;
            }
            snap = collector.collect("cli", seq).await;
            if args.stats_every > 0 && seq % args.stats_every == 0 {
                if let Some(now) = ProcessStats::read() {
                    eprintln!(
                        "cycle={seq} containers={} fds={} rss_kib={}",
                        snap.containers.len(),
                        now.fds,
                        now.rss_kib
                    );
                }
            }
            if !args.json {
                text.clear();
                protocol::prom::render(
                    &[protocol::prom::LabelledSnapshot {
                        labels: &[],
                        snapshot: &snap,
                    }],
                    &mut text,
                );
            }
        }
        (snap, after_first)
    });
    let mut out = text;
    out.clear();
    if args.json {
        out = serde_json::to_string_pretty(&snap).context("encoding the snapshot as JSON")?;
        out.push('\n');
    } else {
        protocol::prom::render(
            &[protocol::prom::LabelledSnapshot {
                labels: &[],
                snapshot: &snap,
            }],
            &mut out,
        );
    }
    std::io::stdout()
        .lock()
        .write_all(out.as_bytes())
        .context("writing the snapshot to stdout")?;
    if args.stats {
        let end = ProcessStats::read();
        if let (Some(first), Some(end)) = (stats, end) {
            let per_cycle_ms = if cycles > 1 {
                (end.cpu_seconds - first.cpu_seconds) * 1000.0 / (cycles - 1) as f64
            } else {
                end.cpu_seconds * 1000.0
            };
            eprintln!(
                "cycles={cycles} containers={} cpu_ms_per_cycle={per_cycle_ms:.3} cpu_seconds_total={:.3} rss_kib={} hwm_kib={} fds={}",
                snap.containers.len(),
                end.cpu_seconds,
                end.rss_kib,
                end.hwm_kib,
                end.fds
            );
        }
    }
    Ok(())
}

/// This process's CPU time and memory, for `--stats`.
struct ProcessStats {
    cpu_seconds: f64,
    rss_kib: u64,
    hwm_kib: u64,
    fds: usize,
}

impl ProcessStats {
    fn read() -> Option<ProcessStats> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        };
        // SAFETY: getrusage writes one plain struct that we own.
        let usage = unsafe {
            let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
            if libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr()) != 0 {
                return None;
            }
            u.assume_init()
        };
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Some(ProcessStats {
            cpu_seconds: secs(usage.ru_utime) + secs(usage.ru_stime),
            rss_kib: kib("VmRSS:")?,
            hwm_kib: kib("VmHWM:")?,
            fds: std::fs::read_dir("/proc/self/fd").ok()?.count(),
        })
    }
}

#[cfg(test)]
mod warnings_tests {
    use super::*;

    #[test]
    fn the_logged_causes_are_bounded() {
        let mut w = Warnings::default();
        for i in 0..(MAX_LOGGED_CAUSES * 4) {
            w.note(format!("container {i} vanished"));
        }
        assert_eq!(w.logged.len(), MAX_LOGGED_CAUSES);
        assert_eq!(w.logged_order.len(), MAX_LOGGED_CAUSES);
        assert!(w
            .logged
            .contains(&format!("container {} vanished", MAX_LOGGED_CAUSES * 4 - 1)));
        assert!(!w.logged.contains("container 0 vanished"));
    }
}

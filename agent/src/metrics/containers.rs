//! Containers: which ones run from the cgroup tree (every cycle, a few `getdents`),
//! what they use from their cgroups, their traffic from their own network namespace
//! (`/proc/<pid>/net/dev`), and who they are (name, image, swarm service, state, health,
//! restart count, start time) from a cache the Docker engine fills in the background.
//! Never the Docker stats API: it costs seconds per container.
//!
//! A collection never waits on the engine: with no engine, a dead one or one that
//! accepts and never answers, every container found in the cgroup tree is still
//! reported, named by id until the cache knows it. The cache is refreshed by its own
//! task ([`refresh_loop`]): a container list (bounded by [`ENGINE_TIMEOUT_S`]) when the
//! cgroup tree shows a start or stop and at least every `list_every`; an inspect (for the
//! restart count and start time) of each new container, of each whose state or health
//! changed, of each whose cgroup folder was made anew (a restart), and of all every
//! [`REINSPECT_EVERY`].
//!
//! A container that crash-loops under `--restart=always` is "running" at every list, so
//! its restart count would wait for [`REINSPECT_EVERY`]. But every restart makes a new
//! cgroup folder (the engine's runtime deletes the old one when the task exits): the
//! collector notes each folder's inode, and a folder with a new inode (or seen anew, after
//! a cycle without it) for an id the cache already inspected puts that id on the cache's
//! `recheck` list and rings the cache's task. Kernfs gives every cgroup its own inode
//! number (not reused at once), so a changed inode is a new cgroup. The inodes come
//! with the directory entries of the parent folders listed every cycle anyway (see
//! below): no `stat` per container.
//!
//! Between two runs such a container has no cgroup at all (the engine's back-off grows
//! to a minute): the engine lists it as `restarting`, and it is reported so, from the
//! cache alone (no cgroup figures: absent, never zero), while the last list worked. Its
//! 2-s runs can fall between two cycles and two lists (restarting at both), so while
//! one is reported the collector rings the cache's task every cycle, and every list
//! inspects each restarting container again: its restart count is one cycle old at most.
//! A container the engine lists as running that the cgroup tree we know does not show
//! (it started in a folder not watched yet, or it exited since the list) has the tree
//! walked and the engine listed again at the next cycle.
//!
//! Between walks, the folders watched each cycle are those that held containers at the
//! last walk and every folder right under the hierarchy's root, even empty ones, plus
//! the root's own list of folders: the engine's parent (`/docker`, `--cgroup-parent=/x`,
//! systemd's `system.slice`) is one of those, so the first container of an engine, or of
//! a second engine sharing the tree, is found at the next cycle, not at the next 30-s
//! walk (a node that had no container when the agent started used to wait that long).

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::query_parameters::ListContainersOptions;
use bollard::{ClientVersion, Docker};
use protocol::snapshot::{ContainerMetrics, NetDev};
use tokio::sync::Notify;

use super::cgroup::{self, discover, ContainerDirs, Layout};
use super::network;
use super::pseudofile::{PseudoFile, ReadError, Slots};

/// The cache is refreshed at least this often even when nothing seems to change.
const LIST_EVERY: Duration = Duration::from_secs(30);
/// Every container is inspected again this often (restart count, start time).
pub const REINSPECT_EVERY: Duration = Duration::from_secs(300);
/// Bound of every engine call of the cache.
pub const ENGINE_TIMEOUT_S: u64 = 5;
/// Docker API version asked for: Debian 12's engine (20.10) speaks up to 1.41, and newer
/// engines still accept it.
const API_VERSION: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};

const SERVICE_LABEL: &str = "com.docker.swarm.service.name";
const TASK_LABEL: &str = "com.docker.swarm.task.name";

/// Milliseconds the first collection may wait for the cache's first list; 0 (the
/// running agent) never waits. `armada-agent metrics --once` sets it: a one-shot print
/// has no later cycle to show the names in.
static FIRST_LIST_WAIT_MS: AtomicU64 = AtomicU64::new(0);

/// Lets the first collection of this process wait up to `wait` for container names.
pub fn set_first_list_wait(wait: Duration) {
    FIRST_LIST_WAIT_MS.store(
        u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
}

/// Connects to an engine at `unix:///path` (or a bare path) without touching it yet.
pub fn connect_docker(host: &str) -> Result<Docker, bollard::errors::Error> {
    Docker::connect_with_unix(host, ENGINE_TIMEOUT_S, &API_VERSION)
}

/// What the engine says about one container.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EngineView {
    pub name: String,
    pub image: String,
    pub service: Option<String>,
    pub task: Option<String>,
    pub host_network: bool,
    /// `running`, `paused`, `restarting`, ...
    pub state: Option<String>,
    /// `healthy`, `unhealthy`, `starting`; `None` without a health check.
    pub health: Option<String>,
    pub restart_count: Option<u64>,
    pub started_at_seconds: Option<f64>,
    inspected_at: Option<Instant>,
}

/// The engine's view of every running container, by id.
#[derive(Default)]
pub struct EngineCache {
    pub by_id: HashMap<String, EngineView>,
    pub listed: bool,
    /// Whether the last list worked: a container that has no cgroup (restarting) is
    /// reported only from a current view.
    pub list_ok: bool,
    pub last_error: Option<String>,
    /// Ids whose cgroup folder was made anew since their last inspect (a restart): the
    /// next refresh inspects them. Filled by the collector, emptied by a list that worked.
    pub recheck: HashSet<String>,
}

/// The background side: the cache, and the bell the collector rings on a change.
struct Engine {
    docker: Docker,
    cache: Arc<Mutex<EngineCache>>,
    wake: Arc<Notify>,
    first_list: Arc<Notify>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Known {
    id: String,
    dirs: ContainerDirs,
    /// The pid whose `net/dev` we read, and that file's folder.
    net: Option<(u32, PathBuf)>,
    /// Limits as last read, and the cycle that read them (`None`: never).
    limits: cgroup::Limits,
    limits_at: Option<u64>,
    /// The cycle that last read `cgroup.procs` for `net`'s pid.
    pid_at: Option<u64>,
    /// Inode of the cgroup folder at the last look (`None`: not looked at yet), from
    /// its parent's listing. A new inode under the same path is a new cgroup: the
    /// container restarted.
    dir_ino: Option<u64>,
    /// The files read every cycle, kept open; they close when the container goes.
    files: Slots,
    /// When the tree first showed it: a folder the engine does not list as running has
    /// the engine asked again each cycle for [`ASK_WHILE_UNLISTED`] after this.
    seen_at: Instant,
}

impl Known {
    /// Whether a once-in-a-while read is due: never done, or [`cgroup::LIMITS_EVERY`]
    /// cycles old.
    fn due(at: Option<u64>, cycle: u64) -> bool {
        at.is_none_or(|at| cycle.wrapping_sub(at) >= cgroup::LIMITS_EVERY)
    }
}

pub struct Containers {
    engine: Option<Engine>,
    list_every: Duration,
    known: Vec<Known>,
    /// Absolute cgroup folders watched between walks: those that held containers at the
    /// last walk, and every folder right under the root.
    parents: Vec<PathBuf>,
    /// The hierarchy root of the last walk, and the sorted names of the folders right
    /// under it then: a new one (an engine's parent made for its first container) is a
    /// change.
    top: Option<PathBuf>,
    top_dirs: Vec<String>,
    scratch_dirs: Vec<String>,
    /// Sorted container ids those folders held at the last look, each with its
    /// folder's inode (restart detection).
    parent_ids: Vec<(String, u64)>,
    walked_at: Option<Instant>,
    scratch_ids: Vec<(String, u64)>,
    net_scratch: Vec<NetDev>,
    /// Ids this cycle found in a new cgroup folder, for the cache's `recheck`.
    restarted: Vec<String>,
    cycles: u64,
    /// The subtree walked (`agent.cgroup_parent`), relative to the hierarchy's root;
    /// `None`: all of it.
    scope: Option<PathBuf>,
    /// `scope` as an absolute folder (known after the first walk): always watched, even
    /// before it exists, so the engine's first container in it is seen at the next
    /// cycle, not at the next periodic walk.
    scope_dir: Option<PathBuf>,
    /// Cycles in a row in which the engine ran containers the scoped tree did not show.
    unseen_cycles: u32,
}

/// Cycles in a row the engine may run containers the scoped tree does not show before
/// the snapshot says so (a container started just after a walk is found at the next).
const UNSEEN_WARN_AFTER: u32 = 3;

/// How long after a container's cgroup appears the engine is asked again each cycle
/// while its list does not show it running (it is being started, or it exited and its
/// cgroup is not removed yet). After that the periodic list (`list_every`) is enough: a
/// cgroup that outlives its container for good must not make a list of every cycle.
const ASK_WHILE_UNLISTED: Duration = Duration::from_secs(60);

impl Containers {
    pub fn new(docker: Option<Docker>) -> Self {
        Containers {
            engine: docker.map(|docker| Engine {
                docker,
                cache: Arc::new(Mutex::new(EngineCache::default())),
                wake: Arc::new(Notify::new()),
                first_list: Arc::new(Notify::new()),
                task: None,
            }),
            list_every: LIST_EVERY,
            known: Vec::new(),
            parents: Vec::new(),
            top: None,
            top_dirs: Vec::new(),
            scratch_dirs: Vec::new(),
            parent_ids: Vec::new(),
            walked_at: None,
            scratch_ids: Vec::new(),
            net_scratch: Vec::new(),
            restarted: Vec::new(),
            cycles: 0,
            scope: None,
            scope_dir: None,
            unseen_cycles: 0,
        }
    }

    /// Looks for containers only below `dir` (relative to the hierarchy's root, as
    /// [`protocol::config::cgroup_parent_dir`] gives it): the engine's `--cgroup-parent`,
    /// so that on a machine with several engines each agent reports its own engine's
    /// containers only. `None` (the default) walks the whole hierarchy.
    pub fn set_cgroup_parent(&mut self, dir: Option<&str>) {
        self.scope = dir.map(PathBuf::from);
        self.scope_dir = None;
        self.parents.clear();
        self.walked_at = None;
    }

    /// Gives back the capacity the records grew to at a peak of containers (see
    /// [`super::heap`]).
    pub fn shrink(&mut self) {
        self.known.shrink_to_fit();
        self.parents.shrink_to_fit();
        self.parent_ids.shrink_to_fit();
        self.scratch_ids = Vec::new();
        self.scratch_dirs = Vec::new();
        self.net_scratch = Vec::new();
        self.restarted = Vec::new();
        if let Some(engine) = &self.engine {
            let mut cache = lock(&engine.cache);
            cache.by_id.shrink_to_fit();
            cache.recheck.shrink_to_fit();
        }
    }

    /// How long the engine's view is kept before it is asked again (default 30 s); a
    /// start or stop seen in the cgroup tree asks at once.
    pub fn set_list_interval(&mut self, every: Duration) {
        self.list_every = every;
    }

    /// One cycle: find the containers in the cgroup tree, read each one's cgroup, and
    /// name them from the engine's cache. Never waits on the engine (see the module doc).
    pub async fn collect(
        &mut self,
        root: &Path,
        layout: &Layout,
        file: &mut PseudoFile,
        ticks_per_second: f64,
        warn: &mut (dyn FnMut(String) + Send),
        out: &mut Vec<ContainerMetrics>,
    ) {
        out.clear();
        self.cycles += 1;
        let mut changed = self.cgroups_changed();
        let stale = self
            .walked_at
            .is_none_or(|t| t.elapsed() >= self.list_every.max(Duration::from_secs(1)));
        if changed || stale {
            // A walk that finds other containers than the last one is a change too.
            changed |= self.rediscover(layout);
        }
        // Sized once: pushing into an empty Vec doubled it up to 256 slots of ~1 KiB at
        // 200 containers, copying it at each step (the old and new blocks held at once).
        out.reserve_exact(self.known.len());
        if let Some(engine) = &mut self.engine {
            if engine.task.is_none() {
                engine.task = Some(tokio::spawn(refresh_loop(
                    engine.docker.clone(),
                    engine.cache.clone(),
                    engine.wake.clone(),
                    engine.first_list.clone(),
                    self.list_every,
                )));
                let wait = Duration::from_millis(FIRST_LIST_WAIT_MS.load(Ordering::Relaxed));
                if !wait.is_zero() {
                    let _ = tokio::time::timeout(wait, engine.first_list.notified()).await;
                }
            } else if changed || self.list_every.is_zero() {
                engine.wake.notify_one();
            }
            if let Some(e) = lock(&engine.cache).last_error.take() {
                warn(e);
            }
        }

        let cache = self.engine.as_ref().map(|e| e.cache.clone());
        let cache = cache.as_ref().map(|c| lock(c));
        let mut gone = false;
        let mut ask = false;
        let cycle = self.cycles;
        self.restarted.clear();
        for k in &mut self.known {
            if let Some(c) = &cache {
                // The engine answers and does not list it: not a running container
                // (see `not_running`); asked again while young.
                if not_running(c, &k.id) {
                    ask |= k.seen_at.elapsed() < ASK_WHILE_UNLISTED;
                    continue;
                }
                // Only worth it with an engine to ask.
                if let Some(id) = restarted(k, &self.parent_ids, c) {
                    self.restarted.push(id);
                }
            }
            let mut warn_read = |e: ReadError| warn(e.to_string());
            let refresh_limits = Known::due(k.limits_at, cycle);
            if refresh_limits {
                k.limits_at = Some(cycle);
            }
            file.set_slots(std::mem::take(&mut k.files));
            let usage = cgroup::read(
                &k.dirs,
                file,
                ticks_per_second,
                layout.memory_enabled,
                &mut k.limits,
                refresh_limits,
                &mut warn_read,
            );
            let usage = match usage {
                Ok(u) => u,
                Err(cgroup::Gone) => {
                    k.files = file.take_slots();
                    gone = true;
                    continue;
                }
            };
            let view = cache.as_ref().and_then(|c| c.by_id.get(&k.id));
            let mut m = ContainerMetrics {
                id: k.id.clone(),
                name: view.map(|v| v.name.clone()).unwrap_or_default(),
                image: view.map(|v| v.image.clone()).unwrap_or_default(),
                service: view.and_then(|v| v.service.clone()),
                task: view.and_then(|v| v.task.clone()),
                state: view.and_then(|v| v.state.clone()),
                health: view.and_then(|v| v.health.clone()),
                restart_count: view.and_then(|v| v.restart_count),
                started_at_seconds: view.and_then(|v| v.started_at_seconds),
                cpu: usage.cpu,
                memory: usage.memory,
                io: usage.io,
                pids: usage.pids,
                network: Vec::new(),
                pressure: usage.pressure,
            };
            if !view.is_some_and(|v| v.host_network) {
                read_network(root, k, cycle, file, &mut self.net_scratch, &mut warn_read);
                m.network.append(&mut self.net_scratch);
            }
            k.files = file.take_slots();
            out.push(m);
        }
        let mut unseen = 0usize;
        if let Some(c) = cache.as_ref().filter(|c| c.list_ok) {
            let seen: HashSet<&str> = out.iter().map(|m| m.id.as_str()).collect();
            let mut extra = Vec::new();
            for (id, v) in c.by_id.iter().filter(|(id, _)| !seen.contains(id.as_str())) {
                match v.state.as_deref() {
                    // Between two runs of a restart loop: no cgroup, but the engine has
                    // it; have its restart count asked again before the next cycle.
                    Some("restarting") => {
                        extra.push(restarting(id, v));
                        ask = true;
                    }
                    // Running for the engine, not in the tree we know (started in a
                    // folder not watched yet, or gone since the list): walk again next
                    // cycle and have the engine asked.
                    Some("running") => {
                        self.walked_at = None;
                        ask = true;
                        unseen += 1;
                    }
                    _ => {}
                }
            }
            out.append(&mut extra);
        }
        drop(cache);
        // Only a subtree that shows none of them points at a wrong setting: while the
        // engine removes hundreds, its list lags the tree by many cycles.
        self.unseen_cycles = if unseen > 0 && out.is_empty() {
            self.unseen_cycles.saturating_add(1)
        } else {
            0
        };
        if let Some(scope) = self
            .scope
            .as_ref()
            .filter(|_| self.unseen_cycles >= UNSEEN_WARN_AFTER)
        {
            // A wrong `agent.cgroup_parent` would otherwise be a silent zero.
            warn(format!(
                "the engine runs {unseen} container(s) that are not under the cgroup folder {} (armada.toml agent.cgroup_parent): they are not reported; set it to the engine's --cgroup-parent",
                discover::walk_root(layout).join(scope).display()
            ));
        }
        if ask {
            if let Some(e) = &self.engine {
                e.wake.notify_one();
            }
        }
        if !self.restarted.is_empty() {
            if let Some(e) = &self.engine {
                lock(&e.cache).recheck.extend(self.restarted.drain(..));
                e.wake.notify_one();
            }
        }
        if gone {
            // A container stopped: look again next cycle, and have the engine asked.
            self.walked_at = None;
            if let Some(e) = &self.engine {
                e.wake.notify_one();
            }
        }
        // Ids are unique, so the order is total: an unstable sort gives the same order
        // without the stable sort's scratch copy (half the Vec, ~100 KiB at 200).
        out.sort_unstable_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    }

    /// Whether the root now holds other folders, or the watched parent folders another
    /// set of containers, than at the last look (one `getdents` per folder).
    fn cgroups_changed(&mut self) -> bool {
        let Some(top) = &self.top else {
            return false; // never walked: the first walk is due anyway
        };
        self.scratch_dirs.clear();
        if discover::dirs_in(top, &mut self.scratch_dirs).is_ok() {
            self.scratch_dirs.sort_unstable();
            if self.scratch_dirs != self.top_dirs {
                return true;
            }
        }
        if self.parents.is_empty() {
            return false;
        }
        self.scratch_ids.clear();
        for p in &self.parents {
            match discover::ids_in(p, &mut self.scratch_ids) {
                Ok(()) => {}
                // The scope folder the engine has not made yet holds no containers.
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound
                        && self.scope_dir.as_ref() == Some(p) => {}
                // A vanished parent (e.g. a removed --cgroup-parent) is a change too.
                Err(_) => {
                    self.parents.clear();
                    return true;
                }
            }
        }
        self.scratch_ids.sort_unstable();
        let same = self
            .scratch_ids
            .iter()
            .map(|(id, _)| id)
            .eq(self.parent_ids.iter().map(|(id, _)| id));
        // Kept either way: the inodes are this cycle's (a restart keeps the id).
        std::mem::swap(&mut self.scratch_ids, &mut self.parent_ids);
        !same
    }

    /// Walks the hierarchy: every container-like cgroup is a container (kept ones keep
    /// their network pid). Returns whether the set of ids changed.
    fn rediscover(&mut self, layout: &Layout) -> bool {
        let top = discover::walk_root(layout);
        let found = match &self.scope {
            None => discover::find_all(&top),
            // Paths stay relative to the hierarchy's root (each v1 controller has its
            // own copy of the subtree).
            Some(scope) => {
                self.scope_dir = Some(top.join(scope));
                let mut found = discover::find_all(&top.join(scope));
                for f in &mut found {
                    f.rel = scope.join(&f.rel);
                }
                found
            }
        };
        self.walked_at = Some(Instant::now());
        // A scoped collector watches its own subtree's folders, not every engine's.
        let watch = self.scope_dir.clone().unwrap_or_else(|| top.clone());
        self.set_parents(&top, &watch, found.iter());
        let mut old: HashMap<String, Known> =
            self.known.drain(..).map(|k| (k.id.clone(), k)).collect();
        let before = old.len();
        self.known = found
            .into_iter()
            .map(|f| {
                let dirs = ContainerDirs::at(layout, &f.rel);
                match old.remove(&f.id) {
                    // The same container in the same place keeps what it learnt.
                    Some(k) if k.dirs == dirs => k,
                    _ => Known {
                        dirs,
                        net: None,
                        limits: cgroup::Limits::default(),
                        limits_at: None,
                        pid_at: None,
                        dir_ino: None,
                        files: Slots::default(),
                        seen_at: Instant::now(),
                        id: f.id,
                    },
                }
            })
            .collect();
        let kept = before - old.len();
        kept != before || kept != self.known.len()
    }

    /// Remembers the folders holding the containers we report, and what they hold now.
    /// `top` is the hierarchy's root (`found` is relative to it); `watch` the folder
    /// whose own folders are watched too: the root, or the `cgroup_parent` subtree.
    fn set_parents<'f>(
        &mut self,
        top: &Path,
        watch: &Path,
        found: impl Iterator<Item = &'f discover::Found>,
    ) {
        // A folder that held containers stays watched while it exists: the only
        // container of a --cgroup-parent that crash-loops leaves it empty between runs.
        self.parents.retain(|p| p.is_dir());
        if let Some(d) = self
            .scope_dir
            .as_ref()
            .filter(|d| !self.parents.contains(d))
        {
            self.parents.push(d.clone());
        }
        for f in found {
            let parent = top.join(f.rel.parent().unwrap_or(Path::new("")));
            if !self.parents.contains(&parent) {
                self.parents.push(parent);
            }
        }
        // The folders right under the root are watched too, even empty: an engine's
        // parent is one of them, and its first container must not wait for a walk.
        self.top_dirs.clear();
        let _ = discover::dirs_in(watch, &mut self.top_dirs);
        self.top_dirs.sort_unstable();
        for d in &self.top_dirs {
            let p = watch.join(d);
            if !self.parents.contains(&p) {
                self.parents.push(p);
            }
        }
        self.top = Some(watch.to_path_buf());
        self.parent_ids.clear();
        for p in &self.parents {
            let _ = discover::ids_in(p, &mut self.parent_ids);
        }
        self.parent_ids.sort_unstable();
    }
}

/// Whether the engine says a container of the cgroup tree is not running: its last list
/// worked and does not have it. Its cgroup is there while it is not running for the
/// engine in two windows: from `runc create` (which makes the cgroup and runs the
/// prestart hooks, network setup included) until the task is started and the engine
/// counts it running (seconds under load: the 1,000-container swarm bench saw the
/// manager's count one above the engine's for 4-8 s), and from its exit until its
/// cgroup is removed. The engine's running count is what the operator compares with,
/// so such a folder is not reported; with no engine, or one that does not answer
/// (no list yet, or the last one failed), every container of the tree is.
fn not_running(cache: &EngineCache, id: &str) -> bool {
    cache.list_ok && !cache.by_id.contains_key(id)
}

/// A container the engine lists as restarting: no process, so no cgroup figures.
fn restarting(id: &str, v: &EngineView) -> ContainerMetrics {
    ContainerMetrics {
        id: id.to_string(),
        name: v.name.clone(),
        image: v.image.clone(),
        service: v.service.clone(),
        task: v.task.clone(),
        state: v.state.clone(),
        health: v.health.clone(),
        restart_count: v.restart_count,
        started_at_seconds: v.started_at_seconds,
        ..ContainerMetrics::default()
    }
}

/// Notes the inode of `k`'s cgroup folder (from `listed`, this cycle's sorted listing of
/// the watched folders); returns its id when that folder is new (first look, or another
/// inode) while the cache already inspected the container: it restarted, and its
/// restart count is stale. A folder that cannot be stat'ed (gone this instant) is left
/// to the cgroup read, which reports it gone.
fn restarted(k: &mut Known, listed: &[(String, u64)], cache: &EngineCache) -> Option<String> {
    let ino = match listed.binary_search_by(|(id, _)| id.as_str().cmp(k.id.as_str())) {
        Ok(i) => listed[i].1,
        // Not in a watched folder's listing (none should be missing): ask the folder.
        Err(_) => std::fs::symlink_metadata(k.dirs.procs_dir()).ok()?.ino(),
    };
    let before = k.dir_ino.replace(ino);
    if before == Some(ino) {
        return None;
    }
    let inspected = cache
        .by_id
        .get(&k.id)
        .is_some_and(|v| v.inspected_at.is_some());
    inspected.then(|| k.id.clone())
}

/// The cache's task: list (and inspect what needs it) now, then whenever the collector
/// rings or `every` has passed. Each engine call is bounded; a failure is one warning
/// per distinct cause, and the old view is kept meanwhile.
async fn refresh_loop(
    docker: Docker,
    cache: Arc<Mutex<EngineCache>>,
    wake: Arc<Notify>,
    first_list: Arc<Notify>,
    every: Duration,
) {
    let bound = Duration::from_secs(ENGINE_TIMEOUT_S);
    let mut last_cause: Option<String> = None;
    let mut full_at = Instant::now();
    loop {
        let full = full_at.elapsed() >= REINSPECT_EVERY;
        if full {
            full_at = Instant::now();
        }
        match refresh_once(&docker, &cache, bound, full).await {
            Ok(()) => last_cause = None,
            Err(cause) => {
                if last_cause.as_ref() != Some(&cause) {
                    lock(&cache).last_error = Some(cause.clone());
                    last_cause = Some(cause);
                }
            }
        }
        first_list.notify_waiters();
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(every.max(Duration::from_secs(1))) => {}
        }
        // At most one refresh a second, however often the collector rings.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One list, and the inspects it calls for.
async fn refresh_once(
    docker: &Docker,
    cache: &Mutex<EngineCache>,
    bound: Duration,
    full: bool,
) -> Result<(), String> {
    let listed = tokio::time::timeout(
        bound,
        docker.list_containers(Some(ListContainersOptions::default())),
    )
    .await
    .map_err(|_| {
        format!(
            "listing containers on the Docker engine: no answer within {}s (containers are named by id meanwhile)",
            bound.as_secs()
        )
    })
    .and_then(|r| r.map_err(|e| format!("listing containers on the Docker engine: {e}")));
    let listed = match listed {
        Ok(listed) => listed,
        Err(e) => {
            lock(cache).list_ok = false;
            return Err(e);
        }
    };
    let mut fresh: HashMap<String, EngineView> = HashMap::with_capacity(listed.len());
    let mut to_inspect = Vec::new();
    {
        let mut old = lock(cache);
        // Taken only once the list worked: with the engine away, they wait for it.
        let recheck = std::mem::take(&mut old.recheck);
        for s in listed {
            let Some(id) = s.id else { continue };
            let labels = s.labels.unwrap_or_default();
            let prev = old.by_id.get(&id);
            let mut view = EngineView {
                name: s
                    .names
                    .and_then(|n| n.into_iter().next())
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_default(),
                image: s.image.unwrap_or_default(),
                service: labels.get(SERVICE_LABEL).cloned(),
                task: labels.get(TASK_LABEL).cloned(),
                host_network: s.host_config.and_then(|h| h.network_mode).as_deref() == Some("host"),
                state: s.state.map(|st| st.to_string()).filter(|st| !st.is_empty()),
                health: s.status.as_deref().and_then(health_of_status),
                restart_count: prev.and_then(|p| p.restart_count),
                started_at_seconds: prev.and_then(|p| p.started_at_seconds),
                inspected_at: prev.and_then(|p| p.inspected_at),
            };
            let moved = prev.is_none_or(|p| p.state != view.state || p.health != view.health);
            // A restarting container may have run in between: its count is asked again.
            let restarting = view.state.as_deref() == Some("restarting");
            if full || moved || restarting || view.inspected_at.is_none() || recheck.contains(&id) {
                view.inspected_at = None;
                to_inspect.push(id.clone());
            }
            fresh.insert(id, view);
        }
    }
    let mut first_error = None;
    for id in &to_inspect {
        match tokio::time::timeout(bound, docker.inspect_container(id, None)).await {
            Ok(Ok(info)) => {
                if let Some(v) = fresh.get_mut(id) {
                    v.restart_count = info.restart_count.and_then(|n| u64::try_from(n).ok());
                    let state = info.state.unwrap_or_default();
                    v.started_at_seconds =
                        state.started_at.as_deref().and_then(parse_rfc3339_seconds);
                    if let Some(h) = state.health.and_then(|h| h.status) {
                        v.health = Some(h.to_string()).filter(|h| !h.is_empty() && h != "none");
                    }
                    v.inspected_at = Some(Instant::now());
                }
            }
            // Gone between the list and the inspect: the next list drops it.
            Ok(Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            })) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert_with(|| format!("inspecting container {id}: {e}"));
            }
            Err(_) => {
                first_error.get_or_insert_with(|| {
                    format!(
                        "inspecting container {id}: no answer within {}s",
                        bound.as_secs()
                    )
                });
                break;
            }
        }
    }
    let mut c = lock(cache);
    c.by_id = fresh;
    c.listed = true;
    c.list_ok = true;
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The health in a container list's `Status` ("Up 3 minutes (healthy)").
pub fn health_of_status(status: &str) -> Option<String> {
    let inner = status.rsplit_once('(')?.1.strip_suffix(')')?;
    match inner {
        "healthy" | "unhealthy" => Some(inner.to_string()),
        "health: starting" => Some("starting".to_string()),
        _ => None,
    }
}

/// `2026-12-01T09:39:34.123456789Z` (the engine's StartedAt) in seconds since the
/// epoch; `None` for the engine's zero time (`0001-01-01T00:00:00Z`) and anything
/// unreadable.
pub fn parse_rfc3339_seconds(s: &str) -> Option<f64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    let secs = t.unix_timestamp();
    (secs > 0).then(|| secs as f64 + f64::from(t.nanosecond()) / 1e9)
}

/// Reads the container's `net/dev` through one of its processes, skipping `lo`.
///
/// The process is looked up in `cgroup.procs` when the container is first seen, every
/// [`cgroup::LIMITS_EVERY`] cycles, and at once when its `net/dev` cannot be read (it
/// exited). In between, the kept-open `net/dev` stays bound to the network namespace
/// it was opened in (the seq_file takes the namespace at open), which is the
/// container's whatever becomes of that pid.
fn read_network(
    root: &Path,
    k: &mut Known,
    cycle: u64,
    file: &mut PseudoFile,
    scratch: &mut Vec<NetDev>,
    warn: &mut dyn FnMut(ReadError),
) {
    scratch.clear();
    for attempt in 0..2 {
        if attempt > 0 || k.net.is_none() || Known::due(k.pid_at, cycle) {
            k.pid_at = Some(cycle);
            let pid = match cgroup::first_pid(k.dirs.procs_dir(), file) {
                Ok(Some(pid)) => pid,
                Ok(None) => {
                    k.net = None;
                    return;
                }
                Err(e) => return warn(e),
            };
            if k.net.as_ref().is_none_or(|(p, _)| *p != pid) {
                k.net = Some((pid, root.join(format!("proc/{pid}/net"))));
                // The kept `dev` is the old pid's.
                file.close_slot("dev");
            } else if attempt > 0 {
                // The same pid and still unreadable: nothing better to try.
                return;
            }
        }
        let Some((_, dir)) = k.net.as_ref() else {
            return;
        };
        match file.read_in(dir, "dev") {
            Ok(bytes) => return network::parse(bytes, false, scratch),
            // The process exited: look for another one now.
            Err(e) if e.is_missing() => continue,
            Err(e) => return warn(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::cgroup::{Layout, Version};

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn add_container(base: &Path, id: &str, usage_usec: u64) {
        add_container_in(base, "sw", id, usage_usec);
    }

    /// A systemd-style container cgroup under `sys/fs/cgroup/<parent>`.
    fn add_container_in(base: &Path, parent: &str, id: &str, usage_usec: u64) {
        let dir = base
            .join("sys/fs/cgroup")
            .join(parent)
            .join(format!("docker-{id}.scope"));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in [
            ("io.stat", ""),
            ("pids.current", "1\n"),
            ("cgroup.procs", ""),
        ] {
            std::fs::write(dir.join(name), text).unwrap();
        }
        std::fs::write(
            dir.join("cpu.stat"),
            format!("usage_usec {usage_usec}\nuser_usec 0\nsystem_usec 0\n"),
        )
        .unwrap();
    }

    #[test]
    fn health_and_start_time_are_read_from_the_engine_formats() {
        assert_eq!(
            health_of_status("Up 3 minutes (healthy)").as_deref(),
            Some("healthy")
        );
        assert_eq!(
            health_of_status("Up 1 second (health: starting)").as_deref(),
            Some("starting")
        );
        assert_eq!(
            health_of_status("Up 2 hours (unhealthy)").as_deref(),
            Some("unhealthy")
        );
        assert_eq!(health_of_status("Up 2 hours (Paused)"), None);
        assert_eq!(health_of_status("Up 2 hours"), None);
        assert_eq!(
            parse_rfc3339_seconds("2026-12-01T09:39:34.25Z"),
            Some(1_796_117_974.25)
        );
        assert_eq!(
            parse_rfc3339_seconds("2026-12-01T10:39:34+01:00"),
            Some(1_796_117_974.0)
        );
        assert_eq!(parse_rfc3339_seconds("0001-01-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_seconds("yesterday"), None);
    }

    /// An engine socket that accepts and never answers: the cgroup tree is still read,
    /// the snapshot takes no longer than without an engine.
    #[tokio::test(flavor = "current_thread")]
    async fn a_hung_engine_never_holds_a_collection_up() {
        let root = tempfile::tempdir().unwrap();
        let layout = Layout {
            version: Version::V2,
            base: root.path().join("sys/fs/cgroup"),
            memory_enabled: false,
        };
        add_container(root.path(), A, 1_000_000);
        add_container(root.path(), B, 2_000_000);
        let sock = root.path().join("hung.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        // Accepted connections are kept open and never read or answered.
        let held = std::thread::spawn(move || {
            let mut conns = Vec::new();
            for c in listener.incoming().take(8) {
                conns.push(c);
            }
            std::thread::sleep(Duration::from_secs(30));
        });
        let hung = connect_docker(sock.to_str().unwrap()).unwrap();
        let mut with = Containers::new(Some(hung));
        let mut without = Containers::new(None);
        let mut file = PseudoFile::new();
        let mut out = Vec::new();
        let mut warnings = Vec::new();
        for round in 0..3 {
            let t = Instant::now();
            with.collect(
                root.path(),
                &layout,
                &mut file,
                100.0,
                &mut |w| warnings.push(w),
                &mut out,
            )
            .await;
            let hung_took = t.elapsed();
            let ids: Vec<&str> = out.iter().map(|m| m.id.as_str()).collect();
            assert_eq!(
                ids,
                [A, B],
                "round {round}: every container of the cgroup tree"
            );
            assert!(out.iter().all(|m| m.state.is_none() && m.name.is_empty()));
            let t = Instant::now();
            without
                .collect(
                    root.path(),
                    &layout,
                    &mut file,
                    100.0,
                    &mut |w| warnings.push(w),
                    &mut out,
                )
                .await;
            let none_took = t.elapsed();
            assert!(
                hung_took < none_took * 5 + Duration::from_millis(20),
                "round {round}: {hung_took:?} with a hung engine, {none_took:?} without"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(held);
    }

    /// Limits are read when a container is first seen and every LIMITS_EVERY cycles,
    /// and reported from the last read in between.
    #[tokio::test(flavor = "current_thread")]
    async fn limits_are_read_once_in_a_while_and_reported_every_cycle() {
        let root = tempfile::tempdir().unwrap();
        let layout = Layout {
            version: Version::V2,
            base: root.path().join("sys/fs/cgroup"),
            memory_enabled: false,
        };
        add_container(root.path(), A, 1_000_000);
        let dir = root
            .path()
            .join(format!("sys/fs/cgroup/sw/docker-{A}.scope"));
        std::fs::write(dir.join("pids.max"), "10\n").unwrap();
        let mut c = Containers::new(None);
        let mut file = PseudoFile::new();
        let mut out = Vec::new();
        let mut max_seen = Vec::new();
        for cycle in 0..cgroup::LIMITS_EVERY + 1 {
            if cycle == 1 {
                std::fs::write(dir.join("pids.max"), "20\n").unwrap();
            }
            c.collect(
                root.path(),
                &layout,
                &mut file,
                100.0,
                &mut |_| {},
                &mut out,
            )
            .await;
            file.end_cycle();
            max_seen.push(out[0].pids.as_ref().and_then(|p| p.max));
        }
        let stale = usize::try_from(cgroup::LIMITS_EVERY).unwrap();
        assert!(
            max_seen[..stale].iter().all(|m| *m == Some(10)),
            "{max_seen:?}"
        );
        assert_eq!(
            max_seen[stale],
            Some(20),
            "re-read after LIMITS_EVERY cycles"
        );
    }

    /// A restart makes a new cgroup folder under the same path, and the list still says
    /// "running": the id goes on the cache's recheck list (inspected at the next
    /// refresh), both when the folder is replaced between two cycles and when a cycle saw
    /// it gone. An unchanged folder, or one the cache never inspected, is not rechecked.
    #[tokio::test(flavor = "current_thread")]
    async fn a_container_whose_cgroup_is_made_anew_is_inspected_again() {
        let root = tempfile::tempdir().unwrap();
        let layout = Layout {
            version: Version::V2,
            base: root.path().join("sys/fs/cgroup"),
            memory_enabled: false,
        };
        let dir_of = |id: &str| {
            root.path()
                .join(format!("sys/fs/cgroup/sw/docker-{id}.scope"))
        };
        add_container(root.path(), A, 1_000_000);
        add_container(root.path(), B, 1_000_000);
        // A socket nobody listens on (refused): lists fail, so the recheck list stays for
        // the test to read.
        let sock = root.path().join("refused.sock");
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        let absent = connect_docker(sock.to_str().unwrap()).unwrap();
        let mut c = Containers::new(Some(absent));
        let mut file = PseudoFile::new();
        let mut out = Vec::new();
        let mut collect = async |c: &mut Containers| {
            c.collect(
                root.path(),
                &layout,
                &mut file,
                100.0,
                &mut |_| {},
                &mut out,
            )
            .await;
            file.end_cycle();
            out.iter().map(|m| m.id.clone()).collect::<Vec<_>>()
        };
        let cache = c.engine.as_ref().unwrap().cache.clone();
        let recheck = |cache: &Mutex<EngineCache>| {
            let mut ids: Vec<String> = lock(cache).recheck.drain().collect();
            ids.sort();
            ids
        };

        assert_eq!(collect(&mut c).await, [A, B]);
        assert!(
            recheck(&cache).is_empty(),
            "not inspected yet: nothing to recheck"
        );
        {
            let mut cc = lock(&cache);
            for id in [A, B] {
                let view = EngineView {
                    state: Some("running".into()),
                    restart_count: Some(0),
                    inspected_at: Some(Instant::now()),
                    ..EngineView::default()
                };
                cc.by_id.insert(id.to_string(), view);
            }
        }
        assert_eq!(collect(&mut c).await, [A, B]);
        assert!(
            recheck(&cache).is_empty(),
            "same folders: nothing to recheck"
        );

        // Replaced between two cycles (the new folder made before the old one goes, so
        // the filesystem cannot hand the old inode back).
        let old = root.path().join("old-a");
        std::fs::rename(dir_of(A), &old).unwrap();
        add_container(root.path(), A, 10_000);
        std::fs::remove_dir_all(&old).unwrap();
        assert_eq!(collect(&mut c).await, [A, B]);
        assert_eq!(recheck(&cache), [A], "A's folder replaced: A rechecked");
        assert_eq!(collect(&mut c).await, [A, B]);
        assert!(recheck(&cache).is_empty(), "once per new folder");

        // Gone for a cycle (a longer restart back-off), then back.
        std::fs::remove_dir_all(dir_of(B)).unwrap();
        assert_eq!(collect(&mut c).await, [A]);
        assert_eq!(collect(&mut c).await, [A]);
        add_container(root.path(), B, 10_000);
        assert_eq!(collect(&mut c).await, [A, B]);
        assert_eq!(recheck(&cache), [B], "B back in a new folder: B rechecked");
    }

    /// Between two runs of a restart loop the container has no cgroup: it is reported
    /// from the engine's view (state, restart count; no cgroup figures), but only while
    /// the last list worked, and never twice.
    #[tokio::test(flavor = "current_thread")]
    async fn a_restarting_container_is_reported_from_a_current_engine_view() {
        let root = tempfile::tempdir().unwrap();
        let layout = Layout {
            version: Version::V2,
            base: root.path().join("sys/fs/cgroup"),
            memory_enabled: false,
        };
        add_container(root.path(), A, 1_000_000);
        let sock = root.path().join("refused.sock");
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        let mut c = Containers::new(Some(connect_docker(sock.to_str().unwrap()).unwrap()));
        // The cache is filled by the test alone: no refresh task.
        c.engine.as_mut().unwrap().task = Some(tokio::spawn(std::future::pending()));
        let cache = c.engine.as_ref().unwrap().cache.clone();
        let view = |name: &str, state: &str, restarts: u64| EngineView {
            name: name.into(),
            state: Some(state.into()),
            restart_count: Some(restarts),
            inspected_at: Some(Instant::now()),
            ..EngineView::default()
        };
        {
            let mut cc = lock(&cache);
            cc.by_id.insert(A.into(), view("a", "restarting", 4));
            cc.by_id.insert(B.into(), view("crashy", "restarting", 7));
            cc.list_ok = true;
        }
        let mut file = PseudoFile::new();
        let mut out = Vec::new();
        c.collect(
            root.path(),
            &layout,
            &mut file,
            100.0,
            &mut |_| {},
            &mut out,
        )
        .await;
        let seen: Vec<_> = out
            .iter()
            .map(|m| (m.name.as_str(), m.restart_count, m.cpu.is_some()))
            .collect();
        assert_eq!(
            seen,
            [("a", Some(4), true), ("crashy", Some(7), false)],
            "A from its cgroup (once), B from the engine alone"
        );
        assert_eq!(out[1].state.as_deref(), Some("restarting"));
        assert!(out[1].memory.is_none() && out[1].pids.is_none() && out[1].network.is_empty());
        let wake = c.engine.as_ref().unwrap().wake.clone();
        let rung = |wake: Arc<Notify>| async move {
            tokio::time::timeout(Duration::from_millis(20), wake.notified())
                .await
                .is_ok()
        };
        assert!(
            rung(wake.clone()).await,
            "a restarting container has the engine asked again"
        );

        lock(&cache).list_ok = false;
        c.collect(
            root.path(),
            &layout,
            &mut file,
            100.0,
            &mut |_| {},
            &mut out,
        )
        .await;
        let ids: Vec<&str> = out.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, [A], "no current list: only what the cgroup tree shows");
        assert!(!rung(wake).await, "nothing restarting reported: no ring");
    }

    /// A cgroup the engine does not list as running (runc made it and the start is
    /// pending, or the container exited and its cgroup is not removed yet) is not
    /// reported while the engine answers, so the count is the engine's running count;
    /// the engine is asked again each cycle while that cgroup is young, and the
    /// container is reported once listed. With no current list every cgroup is.
    #[tokio::test(flavor = "current_thread")]
    async fn a_cgroup_the_engine_does_not_list_as_running_is_not_counted() {
        let root = tempfile::tempdir().unwrap();
        let layout = Layout {
            version: Version::V2,
            base: root.path().join("sys/fs/cgroup"),
            memory_enabled: false,
        };
        add_container(root.path(), A, 1_000_000);
        add_container(root.path(), B, 1_000_000);
        let sock = root.path().join("refused.sock");
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        let mut c = Containers::new(Some(connect_docker(sock.to_str().unwrap()).unwrap()));
        // The cache is filled by the test alone: no refresh task.
        c.engine.as_mut().unwrap().task = Some(tokio::spawn(std::future::pending()));
        let cache = c.engine.as_ref().unwrap().cache.clone();
        let wake = c.engine.as_ref().unwrap().wake.clone();
        let running = |name: &str| EngineView {
            name: name.into(),
            state: Some("running".into()),
            ..EngineView::default()
        };
        {
            let mut cc = lock(&cache);
            cc.by_id.insert(A.into(), running("a-up"));
            cc.list_ok = true;
        }
        let mut file = PseudoFile::new();
        let mut out = Vec::new();
        let mut collect = async |c: &mut Containers| {
            c.collect(
                root.path(),
                &layout,
                &mut file,
                100.0,
                &mut |_| {},
                &mut out,
            )
            .await;
            file.end_cycle();
            out.clone()
        };
        let ids = |out: &[ContainerMetrics]| out.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
        let rung = |wake: Arc<Notify>| async move {
            tokio::time::timeout(Duration::from_millis(20), wake.notified())
                .await
                .is_ok()
        };
        assert_eq!(
            ids(&collect(&mut c).await),
            [A],
            "B is not running for the engine"
        );
        assert!(rung(wake.clone()).await, "the engine is asked again");
        assert_eq!(ids(&collect(&mut c).await), [A]);
        assert!(
            rung(wake.clone()).await,
            "and again while B's cgroup is young"
        );
        // An old one (a cgroup that outlived its container for good) waits for the
        // periodic list.
        for k in c.known.iter_mut().filter(|k| k.id == B) {
            k.seen_at = Instant::now()
                .checked_sub(ASK_WHILE_UNLISTED)
                .unwrap_or(k.seen_at);
        }
        assert_eq!(ids(&collect(&mut c).await), [A]);
        assert!(
            !rung(wake.clone()).await,
            "no list every cycle for an old one"
        );

        // Started: the next list has it.
        lock(&cache).by_id.insert(B.into(), running("b-late"));
        let out = collect(&mut c).await;
        assert_eq!(ids(&out), [A, B]);
        assert_eq!(out[1].name, "b-late");
        assert!(out[1].cpu.is_some(), "read from its cgroup");
        assert!(!rung(wake.clone()).await, "nothing left to ask");

        // The engine stops answering: every cgroup of the tree is reported.
        {
            let mut cc = lock(&cache);
            cc.by_id.remove(B);
            cc.list_ok = false;
        }
        let mut all = ids(&collect(&mut c).await);
        all.sort();
        assert_eq!(all, [A, B]);
    }

    /// With `agent.cgroup_parent` set, only that subtree is walked: another engine's
    /// containers elsewhere are not reported. A container the engine runs that the
    /// subtree never shows (a wrong setting) is said in a warning naming the key, after
    /// [`UNSEEN_WARN_AFTER`] cycles, not at the first (a start just after a walk).
    #[tokio::test(flavor = "current_thread")]
    async fn a_cgroup_parent_scopes_discovery_and_a_wrong_one_is_said() {
        let root = tempfile::tempdir().unwrap();
        let layout = Layout {
            version: Version::V2,
            base: root.path().join("sys/fs/cgroup"),
            memory_enabled: false,
        };
        add_container(root.path(), A, 1_000_000);
        // B belongs to another engine, under its own parent.
        let other = root.path().join(format!("sys/fs/cgroup/other/{B}"));
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("cpu.stat"), "usage_usec 5\n").unwrap();
        let sock = root.path().join("refused.sock");
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        let mut c = Containers::new(Some(connect_docker(sock.to_str().unwrap()).unwrap()));
        c.set_cgroup_parent(Some("sw"));
        // The cache is filled by the test alone: no refresh task.
        c.engine.as_mut().unwrap().task = Some(tokio::spawn(std::future::pending()));
        let cache = c.engine.as_ref().unwrap().cache.clone();
        {
            let mut cc = lock(&cache);
            cc.by_id.insert(
                A.into(),
                EngineView {
                    name: "mine".into(),
                    state: Some("running".into()),
                    ..EngineView::default()
                },
            );
            cc.list_ok = true;
        }
        let mut file = PseudoFile::new();
        let mut out = Vec::new();
        let mut warnings = Vec::new();
        for _ in 0..UNSEEN_WARN_AFTER + 1 {
            c.collect(
                root.path(),
                &layout,
                &mut file,
                100.0,
                &mut |w| warnings.push(w),
                &mut out,
            )
            .await;
            file.end_cycle();
            let ids: Vec<&str> = out.iter().map(|m| m.id.as_str()).collect();
            assert_eq!(ids, [A], "only the subtree's container");
            assert_eq!(out[0].name, "mine");
        }
        assert!(warnings.is_empty(), "{warnings:?}");

        // The engine runs one the subtree does not hold while A is shown: no warning
        // (a lagging list, as during a mass removal).
        lock(&cache).by_id.insert(
            B.into(),
            EngineView {
                state: Some("running".into()),
                ..EngineView::default()
            },
        );
        for _ in 0..UNSEEN_WARN_AFTER + 1 {
            c.collect(
                root.path(),
                &layout,
                &mut file,
                100.0,
                &mut |w| warnings.push(w),
                &mut out,
            )
            .await;
            file.end_cycle();
            assert_eq!(out.len(), 1, "B is not reported from another subtree");
        }
        assert!(warnings.is_empty(), "{warnings:?}");
        // The subtree shows none of what the engine runs (a wrong setting): said after
        // a few cycles.
        std::fs::remove_dir_all(
            root.path()
                .join(format!("sys/fs/cgroup/sw/docker-{A}.scope")),
        )
        .unwrap();
        let mut said_at = None;
        for cycle in 1..=UNSEEN_WARN_AFTER + 1 {
            c.collect(
                root.path(),
                &layout,
                &mut file,
                100.0,
                &mut |w| warnings.push(w),
                &mut out,
            )
            .await;
            file.end_cycle();
            assert!(out.is_empty(), "{out:?}");
            if said_at.is_none() && !warnings.is_empty() {
                said_at = Some(cycle);
            }
        }
        assert_eq!(said_at, Some(UNSEEN_WARN_AFTER), "{warnings:?}");
        assert!(
            warnings[0].contains("agent.cgroup_parent") && warnings[0].contains("sw"),
            "{}",
            warnings[0]
        );
    }

    /// A scoped collector watches its own subtree only: another engine's new parent
    /// folder or containers elsewhere in the tree are no change for it (no walk, no
    /// engine list), its own subtree's are.
    #[tokio::test(flavor = "current_thread")]
    async fn other_engines_churn_is_no_change_for_a_scoped_collector() {
        let root = tempfile::tempdir().unwrap();
        let layout = Layout {
            version: Version::V2,
            base: root.path().join("sys/fs/cgroup"),
            memory_enabled: false,
        };
        add_container(root.path(), A, 1_000_000);
        let mut c = Containers::new(None);
        c.set_cgroup_parent(Some("sw"));
        let mut file = PseudoFile::new();
        let mut out = Vec::new();
        c.collect(
            root.path(),
            &layout,
            &mut file,
            100.0,
            &mut |_| {},
            &mut out,
        )
        .await;
        assert!(!c.cgroups_changed());
        add_container_in(root.path(), "other-engine", B, 5);
        assert!(
            !c.cgroups_changed(),
            "another engine's first container is not ours"
        );
        add_container_in(root.path(), "sw", B, 5);
        assert!(c.cgroups_changed(), "a container in our subtree is");
    }

    /// The engine makes its --cgroup-parent folder with its first container: a scoped
    /// collector watches the folder before it exists and sees that container at the
    /// next cycle, not at the next periodic walk (30 s later).
    #[tokio::test(flavor = "current_thread")]
    async fn the_first_container_of_a_scope_not_made_yet_is_seen_at_the_next_cycle() {
        let root = tempfile::tempdir().unwrap();
        let layout = Layout {
            version: Version::V2,
            base: root.path().join("sys/fs/cgroup"),
            memory_enabled: false,
        };
        std::fs::create_dir_all(root.path().join("sys/fs/cgroup")).unwrap();
        let mut c = Containers::new(None);
        c.set_cgroup_parent(Some("sw"));
        let mut file = PseudoFile::new();
        let mut out = Vec::new();
        let mut warnings = Vec::new();
        for round in 0..3 {
            if round == 1 {
                add_container(root.path(), A, 1_000_000);
            }
            c.collect(
                root.path(),
                &layout,
                &mut file,
                100.0,
                &mut |w| warnings.push(w),
                &mut out,
            )
            .await;
            file.end_cycle();
            let want: &[&str] = if round == 0 { &[] } else { &[A] };
            let ids: Vec<&str> = out.iter().map(|m| m.id.as_str()).collect();
            assert_eq!(ids, want, "round {round}");
        }
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn containers_starting_and_stopping_are_seen_without_an_engine() {
        let root = tempfile::tempdir().unwrap();
        let layout = Layout {
            version: Version::V2,
            base: root.path().join("sys/fs/cgroup"),
            memory_enabled: false,
        };
        add_container(root.path(), A, 1_000_000);
        let mut c = Containers::new(None);
        let mut file = PseudoFile::new();
        let mut warnings = Vec::new();
        let mut out = Vec::new();
        let ids =
            |out: &Vec<ContainerMetrics>| out.iter().map(|m| m.id.clone()).collect::<Vec<_>>();

        c.collect(
            root.path(),
            &layout,
            &mut file,
            100.0,
            &mut |w| warnings.push(w),
            &mut out,
        )
        .await;
        assert_eq!(ids(&out), [A]);
        assert_eq!(out[0].cpu.as_ref().map(|c| c.usage_seconds), Some(1.0));

        add_container(root.path(), B, 2_000_000);
        c.collect(
            root.path(),
            &layout,
            &mut file,
            100.0,
            &mut |w| warnings.push(w),
            &mut out,
        )
        .await;
        assert_eq!(
            ids(&out),
            [A, B],
            "a new container under a known parent is picked up next cycle"
        );

        std::fs::remove_dir_all(
            root.path()
                .join(format!("sys/fs/cgroup/sw/docker-{A}.scope")),
        )
        .unwrap();
        c.collect(
            root.path(),
            &layout,
            &mut file,
            100.0,
            &mut |w| warnings.push(w),
            &mut out,
        )
        .await;
        assert_eq!(
            ids(&out),
            [B],
            "a removed container disappears without a warning"
        );
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_first_container_of_an_engine_is_found_at_the_next_cycle() {
        // The agent started on a node with no container: its walk found none. The
        // engine's parent folder is then made for its first container (or exists,
        // empty); a second engine sharing the tree does the same elsewhere. Each must
        // be found at the next cycle, not at the next walk (30 s later).
        const C: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
        let root = tempfile::tempdir().unwrap();
        let base = root.path().join("sys/fs/cgroup");
        std::fs::create_dir_all(base.join("init.scope")).unwrap();
        std::fs::create_dir_all(base.join("empty-parent")).unwrap();
        let layout = Layout {
            version: Version::V2,
            base,
            memory_enabled: false,
        };
        let mut c = Containers::new(None);
        let mut file = PseudoFile::new();
        let mut warnings = Vec::new();
        let mut out = Vec::new();
        let mut cycle = async |c: &mut Containers, out: &mut Vec<ContainerMetrics>| {
            c.collect(
                root.path(),
                &layout,
                &mut file,
                100.0,
                &mut |w| warnings.push(w),
                out,
            )
            .await;
            out.iter().map(|m| m.id.clone()).collect::<Vec<_>>()
        };
        assert!(cycle(&mut c, &mut out).await.is_empty(), "no container yet");

        add_container_in(root.path(), "engine-one", A, 1_000_000);
        assert_eq!(
            cycle(&mut c, &mut out).await,
            [A],
            "a container in a folder made after the walk is found at the next cycle"
        );

        add_container_in(root.path(), "empty-parent", B, 1_000_000);
        assert_eq!(
            cycle(&mut c, &mut out).await,
            [A, B],
            "a container in a folder that was empty at the walk is found at the next cycle"
        );

        add_container_in(root.path(), "engine-two", C, 1_000_000);
        assert_eq!(
            cycle(&mut c, &mut out).await,
            [A, B, C],
            "a second engine's first container is found while the first one's are known"
        );
        assert_eq!(
            cycle(&mut c, &mut out).await,
            [A, B, C],
            "and nothing changes without a change"
        );
        assert!(warnings.is_empty(), "{warnings:?}");
    }
}

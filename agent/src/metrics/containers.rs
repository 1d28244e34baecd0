//! Containers: who they are from the Docker Engine (one list call, cached between
//! cycles), what they use from their cgroups, and their traffic from their own network
//! namespace (`/proc/<pid>/net/dev`). Never the Docker stats API: it costs seconds per
//! container.
//!
//! Each cycle lists only the few cgroup folders known to hold containers; the engine is
//! asked again when that shows a change, or when the cache is older than `LIST_EVERY`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::query_parameters::ListContainersOptions;
use bollard::{ClientVersion, Docker};
use protocol::snapshot::{ContainerMetrics, NetDev};

use super::cgroup::{self, discover, ContainerDirs, Layout};
use super::network;
use super::pseudofile::{PseudoFile, ReadError};

/// The cache of names is refreshed at least this often even when nothing seems to change.
const LIST_EVERY: Duration = Duration::from_secs(30);
/// Docker API version asked for: Debian 12's engine (20.10) speaks up to 1.41, and newer
/// engines still accept it.
const API_VERSION: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};

const SERVICE_LABEL: &str = "com.docker.swarm.service.name";
const TASK_LABEL: &str = "com.docker.swarm.task.name";

/// Connects to an engine at `unix:///path` (or a bare path) without touching it yet.
pub fn connect_docker(host: &str) -> Result<Docker, bollard::errors::Error> {
    Docker::connect_with_unix(host, 10, &API_VERSION)
}

struct Known {
    id: String,
    name: String,
    image: String,
    service: Option<String>,
    task: Option<String>,
    host_network: bool,
    dirs: Option<ContainerDirs>,
    /// The pid whose `net/dev` we read, and that file's folder.
    net: Option<(u32, PathBuf)>,
}

pub struct Containers {
    docker: Option<Docker>,
    list_every: Duration,
    known: Vec<Known>,
    listed_at: Option<Instant>,
    /// Absolute cgroup folders that held containers at the last walk.
    parents: Vec<PathBuf>,
    /// Sorted container ids those folders held at the last look.
    parent_ids: Vec<String>,
    walked_at: Option<Instant>,
    scratch_ids: Vec<String>,
    net_scratch: Vec<NetDev>,
}

impl Containers {
    pub fn new(docker: Option<Docker>) -> Self {
        Containers {
            docker,
            list_every: LIST_EVERY,
            known: Vec::new(),
            listed_at: None,
            parents: Vec::new(),
            parent_ids: Vec::new(),
            walked_at: None,
            scratch_ids: Vec::new(),
            net_scratch: Vec::new(),
        }
    }

    /// How long names are cached before the engine is asked again (default 30 s).
    pub fn set_list_interval(&mut self, every: Duration) {
        self.list_every = every;
    }

    /// One cycle: refresh names when needed, then read every container's cgroup.
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
        let changed = self.cgroups_changed();
        let stale = self
            .listed_at
            .is_none_or(|t| t.elapsed() >= self.list_every);
        if self.docker.is_some() && (changed || stale) {
            self.refresh_list(warn).await;
        } else if self.docker.is_none()
            && (changed
                || self
                    .walked_at
                    .is_none_or(|t| t.elapsed() >= self.list_every))
        {
            self.adopt_cgroups_only(layout);
        }
        if self.known.iter().any(|k| k.dirs.is_none()) && self.needs_walk() {
            self.locate(layout, warn);
        }

        let mut gone = false;
        for k in &mut self.known {
            let Some(dirs) = &k.dirs else { continue };
            let mut warn_read = |e: ReadError| warn(e.to_string());
            let usage = match cgroup::read(
                dirs,
                file,
                ticks_per_second,
                layout.memory_enabled,
                &mut warn_read,
            ) {
                Ok(u) => u,
                Err(cgroup::Gone) => {
                    k.dirs = None;
                    gone = true;
                    continue;
                }
            };
            let mut m = ContainerMetrics {
                id: k.id.clone(),
                name: k.name.clone(),
                image: k.image.clone(),
                service: k.service.clone(),
                task: k.task.clone(),
                cpu: usage.cpu,
                memory: usage.memory,
                io: usage.io,
                pids: usage.pids,
                network: Vec::new(),
                pressure: usage.pressure,
            };
            if !k.host_network {
                read_network(
                    root,
                    dirs,
                    &mut k.net,
                    file,
                    &mut self.net_scratch,
                    &mut warn_read,
                );
                m.network.append(&mut self.net_scratch);
            }
            out.push(m);
        }
        if gone {
            // A container stopped: ask the engine again next cycle.
            self.listed_at = None;
            self.known.retain(|k| k.dirs.is_some());
        }
    }

    /// Whether the known parent folders now hold a different set of containers than
    /// at the last look (one `getdents` per parent folder).
    fn cgroups_changed(&mut self) -> bool {
        if self.parents.is_empty() {
            return false;
        }
        self.scratch_ids.clear();
        for p in &self.parents {
            // A vanished parent (e.g. a removed --cgroup-parent) is a change too.
            if discover::ids_in(p, &mut self.scratch_ids).is_err() {
                self.parents.clear();
                return true;
            }
        }
        self.scratch_ids.sort_unstable();
        if self.scratch_ids == self.parent_ids {
            return false;
        }
        std::mem::swap(&mut self.scratch_ids, &mut self.parent_ids);
        true
    }

    fn needs_walk(&self) -> bool {
        // After a list call new containers may be unlocated: walk at most every few
        // seconds so an unlocatable container does not cost a walk per cycle.
        self.walked_at
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
            || self
                .listed_at
                .is_some_and(|l| self.walked_at.is_some_and(|w| l > w))
    }

    async fn refresh_list(&mut self, warn: &mut (dyn FnMut(String) + Send)) {
        let Some(docker) = &self.docker else { return };
        let listed = docker
            .list_containers(Some(ListContainersOptions::default()))
            .await;
        self.listed_at = Some(Instant::now());
        let summaries = match listed {
            Ok(s) => s,
            Err(e) => {
                warn(format!("listing containers on the Docker engine: {e}"));
                return;
            }
        };
        let mut old: HashMap<String, Known> =
            self.known.drain(..).map(|k| (k.id.clone(), k)).collect();
        for s in summaries {
            let Some(id) = s.id else { continue };
            let prev = old.remove(&id);
            let labels = s.labels.unwrap_or_default();
            let name = s
                .names
                .and_then(|n| n.into_iter().next())
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_default();
            let host_network =
                s.host_config.and_then(|h| h.network_mode).as_deref() == Some("host");
            let (dirs, net) = prev.map(|p| (p.dirs, p.net)).unwrap_or((None, None));
            self.known.push(Known {
                id,
                name,
                image: s.image.unwrap_or_default(),
                service: labels.get(SERVICE_LABEL).cloned(),
                task: labels.get(TASK_LABEL).cloned(),
                host_network,
                dirs,
                net,
            });
        }
        self.known
            .sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    }

    /// Without an engine: every container-like cgroup is a container, named by its id.
    fn adopt_cgroups_only(&mut self, layout: &Layout) {
        let top = discover::walk_root(layout);
        let found = discover::find_all(&top);
        self.walked_at = Some(Instant::now());
        self.set_parents(&top, found.iter());
        self.known = found
            .into_iter()
            .map(|f| Known {
                name: String::new(),
                image: String::new(),
                service: None,
                task: None,
                host_network: false,
                dirs: Some(ContainerDirs::at(layout, &f.rel)),
                net: None,
                id: f.id,
            })
            .collect();
    }

    /// Walks the hierarchy once and gives every listed container its cgroup folders.
    fn locate(&mut self, layout: &Layout, warn: &mut dyn FnMut(String)) {
        let top = discover::walk_root(layout);
        let found = discover::find_all(&top);
        self.walked_at = Some(Instant::now());
        for k in self.known.iter_mut().filter(|k| k.dirs.is_none()) {
            match found.iter().find(|f| f.id == k.id) {
                Some(f) => k.dirs = Some(ContainerDirs::at(layout, &f.rel)),
                None => warn(format!(
                    "no cgroup found under {} for container {}",
                    top.display(),
                    &k.id[..k.id.len().min(12)]
                )),
            }
        }
        let known = &self.known;
        let ours: Vec<&discover::Found> = found
            .iter()
            .filter(|f| known.iter().any(|k| k.id == f.id))
            .collect();
        self.set_parents(&top, ours.into_iter());
    }

    /// Remembers the folders holding the containers we report, and what they hold now.
    fn set_parents<'f>(&mut self, top: &Path, found: impl Iterator<Item = &'f discover::Found>) {
        self.parents.clear();
        for f in found {
            let parent = top.join(f.rel.parent().unwrap_or(Path::new("")));
            if !self.parents.contains(&parent) {
                self.parents.push(parent);
            }
        }
        self.parent_ids.clear();
        for p in &self.parents {
            let _ = discover::ids_in(p, &mut self.parent_ids);
        }
        self.parent_ids.sort_unstable();
    }
}

/// Reads the container's `net/dev` through one of its processes, skipping `lo`.
fn read_network(
    root: &Path,
    dirs: &ContainerDirs,
    net: &mut Option<(u32, PathBuf)>,
    file: &mut PseudoFile,
    scratch: &mut Vec<NetDev>,
    warn: &mut dyn FnMut(ReadError),
) {
    scratch.clear();
    let pid = match cgroup::first_pid(dirs.procs_dir(), file) {
        Ok(Some(pid)) => pid,
        Ok(None) => return,
        Err(e) => return warn(e),
    };
    if net.as_ref().is_none_or(|(p, _)| *p != pid) {
        *net = Some((pid, root.join(format!("proc/{pid}/net"))));
    }
    let Some((_, dir)) = net.as_ref() else { return };
    match file.read_in(dir, "dev") {
        Ok(bytes) => network::parse(bytes, false, scratch),
        // The process may have exited between the two reads: next cycle picks another.
        Err(e) if e.is_missing() => {}
        Err(e) => warn(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::cgroup::{Layout, Version};

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn add_container(base: &Path, id: &str, usage_usec: u64) {
        let dir = base
            .join("sys/fs/cgroup/sw")
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
}

//! The read shapes of the cockpit (`/v1/cluster`, `/v1/services`, `/v1/tasks`), made
//! from the store's nodes and one [`EngineView`]. Pure functions: the handlers gather,
//! these shape, the tests feed them literals.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{Service, Task, TaskState};
use protocol::wire::{NodeStatus, NodeSummary, Role};
use serde::{Deserialize, Serialize};

use super::engine::EngineView;
use crate::alerts::rules::NodeView;

/// Failed tasks stay in the views this long after they failed.
pub const FAILED_TASK_WINDOW_MS: u64 = 15 * 60 * 1000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    pub id: String,
    pub service_id: String,
    pub service_name: Option<String>,
    /// Replicated services' slot; `null` for global ones.
    pub slot: Option<i64>,
    /// `null` while the scheduler has not placed it.
    pub swarm_node_id: Option<String>,
    /// The armada node of that swarm node; `null` for a swarm node armada does not know.
    pub node_id: Option<String>,
    pub state: String,
    pub desired_state: String,
    pub image: Option<String>,
    pub error: Option<String>,
    pub updated_ms: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Badges {
    pub temperature_celsius: Option<f64>,
    pub under_voltage_now: Option<bool>,
    pub under_voltage_since_boot: Option<bool>,
    pub fs_used_ratio_max: Option<f64>,
    pub fs_read_only: Option<bool>,
}

/// A node of the cluster view: [`NodeSummary`]'s fields (`null` for a swarm node that
/// never registered with armada) plus the swarm's view of it and its health badges.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterNode {
    pub node_id: Option<String>,
    pub hostname: String,
    pub board: Option<String>,
    pub role: Option<Role>,
    pub arch: Option<String>,
    pub status: Option<NodeStatus>,
    pub swarm_node_id: Option<String>,
    pub swarm_state: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub registered_at_ms: Option<u64>,
    pub last_report_ms: Option<u64>,
    pub containers: Option<u32>,
    pub cpu_busy_ratio: Option<f64>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub temperature_celsius: Option<f64>,
    pub availability: Option<String>,
    pub swarm_role: Option<String>,
    pub leader: Option<bool>,
    pub badges: Badges,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceRef {
    pub id: String,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    pub generated_ms: u64,
    pub nodes: Vec<ClusterNode>,
    pub services: Vec<ServiceRef>,
    pub tasks: Vec<TaskView>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceView {
    pub id: String,
    pub name: String,
    pub image: Option<String>,
    /// `replicated`, `global`, or the job modes' `replicated-job` / `global-job`.
    pub mode: String,
    pub replicas_desired: Option<u64>,
    pub replicas_running: u64,
    pub constraints: Vec<String>,
    pub update_state: Option<String>,
    pub update_message: Option<String>,
    /// Hostnames of the nodes its running tasks are on, sorted, once each.
    pub nodes: Vec<String>,
    pub failed_tasks: Vec<TaskView>,
}

/// The health badges from the alert rules' view of a node's latest snapshot (so the
/// page and the alerts read a snapshot the same way).
pub fn badges(v: &NodeView) -> Badges {
    let read_only = v.filesystems.iter().filter_map(|f| f.read_only);
    let mut any = false;
    let mut ro = false;
    for r in read_only {
        any = true;
        ro |= r;
    }
    Badges {
        temperature_celsius: v.max_temperature_celsius,
        under_voltage_now: v.under_voltage_now,
        under_voltage_since_boot: v.under_voltage_since_boot,
        fs_used_ratio_max: v
            .filesystems
            .iter()
            .filter_map(|f| f.used_ratio)
            .reduce(f64::max),
        fs_read_only: any.then_some(ro),
    }
}

/// Milliseconds of an engine timestamp (RFC 3339, nanoseconds allowed).
pub fn engine_ms(t: Option<&str>) -> Option<u64> {
    let t = t?;
    let st = humantime::parse_rfc3339_weak(t.trim_end_matches('Z'))
        .or_else(|_| humantime::parse_rfc3339(t))
        .ok()?;
    st.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as u64)
        .filter(|ms| *ms > 0)
}

/// An image reference without its pinned digest (`busybox:1.36@sha256:...`).
fn short_image(i: &str) -> String {
    i.split('@').next().unwrap_or(i).to_string()
}

/// Names the views need: services by id, armada ids and hostnames by swarm node id.
pub struct Names {
    pub service_names: HashMap<String, String>,
    pub armada_of_swarm: HashMap<String, String>,
    pub hostname_of_swarm: HashMap<String, String>,
}

impl Names {
    pub fn new(engine: &EngineView, armada_of_swarm: HashMap<String, String>) -> Self {
        Names {
            service_names: engine
                .services
                .iter()
                .filter_map(|s| Some((s.id.clone()?, s.spec.as_ref()?.name.clone()?)))
                .collect(),
            armada_of_swarm,
            hostname_of_swarm: engine
                .nodes
                .iter()
                .filter_map(|n| Some((n.id.clone()?, n.description.as_ref()?.hostname.clone()?)))
                .collect(),
        }
    }
}

fn state_name(s: Option<TaskState>) -> String {
    s.map(|s| s.to_string()).unwrap_or_else(|| "unknown".into())
}

pub fn task_view(t: &Task, names: &Names) -> Option<TaskView> {
    let id = t.id.clone()?;
    let service_id = t.service_id.clone().unwrap_or_default();
    let status = t.status.as_ref();
    let err = status.and_then(|s| s.err.clone()).filter(|e| !e.is_empty());
    Some(TaskView {
        service_name: names.service_names.get(&service_id).cloned(),
        service_id,
        id,
        slot: t.slot,
        swarm_node_id: t.node_id.clone().filter(|n| !n.is_empty()),
        node_id: t
            .node_id
            .as_ref()
            .and_then(|n| names.armada_of_swarm.get(n).cloned()),
        state: state_name(status.and_then(|s| s.state)),
        desired_state: state_name(t.desired_state),
        image: t
            .spec
            .as_ref()
            .and_then(|s| s.container_spec.as_ref())
            .and_then(|c| c.image.as_deref())
            .map(short_image),
        error: err,
        updated_ms: engine_ms(
            status
                .and_then(|s| s.timestamp.as_deref())
                .or(t.updated_at.as_deref()),
        ),
    })
}

fn failed(t: &TaskView, now_ms: u64) -> bool {
    matches!(t.state.as_str(), "failed" | "rejected")
        && t.updated_ms
            .is_some_and(|u| u.saturating_add(FAILED_TASK_WINDOW_MS) >= now_ms)
}

/// The tasks worth showing: those meant to run, and those that failed lately.
pub fn shown_tasks(engine: &EngineView, names: &Names, now_ms: u64) -> Vec<TaskView> {
    let mut v: Vec<TaskView> = engine
        .tasks
        .iter()
        .filter_map(|t| task_view(t, names))
        .filter(|t| t.desired_state == "running" || failed(t, now_ms))
        .collect();
    v.sort_by(|a, b| {
        (&a.service_name, a.slot, &a.swarm_node_id, &a.id).cmp(&(
            &b.service_name,
            b.slot,
            &b.swarm_node_id,
            &b.id,
        ))
    });
    v
}

fn service_mode(s: &Service) -> (String, Option<u64>) {
    let m = s.spec.as_ref().and_then(|s| s.mode.as_ref());
    match m {
        Some(m) if m.global.is_some() => ("global".into(), None),
        Some(m) if m.replicated_job.is_some() => ("replicated-job".into(), None),
        Some(m) if m.global_job.is_some() => ("global-job".into(), None),
        Some(m) => (
            "replicated".into(),
            m.replicated
                .as_ref()
                .and_then(|r| r.replicas)
                .and_then(|r| u64::try_from(r).ok()),
        ),
        None => ("replicated".into(), None),
    }
}

pub fn service_view(
    s: &Service,
    tasks: &[TaskView],
    names: &Names,
    now_ms: u64,
) -> Option<ServiceView> {
    let id = s.id.clone()?;
    let spec = s.spec.as_ref();
    let template = spec.and_then(|s| s.task_template.as_ref());
    let mine: Vec<&TaskView> = tasks.iter().filter(|t| t.service_id == id).collect();
    let running: Vec<&&TaskView> = mine
        .iter()
        .filter(|t| t.state == "running" && t.desired_state == "running")
        .collect();
    let mut nodes: Vec<String> = running
        .iter()
        .filter_map(|t| t.swarm_node_id.as_ref())
        .map(|sid| {
            names
                .hostname_of_swarm
                .get(sid)
                .cloned()
                .unwrap_or_else(|| sid.clone())
        })
        .collect();
    nodes.sort();
    nodes.dedup();
    let (mode, replicas_desired) = service_mode(s);
    let update = s.update_status.as_ref();
    Some(ServiceView {
        name: spec
            .and_then(|s| s.name.clone())
            .unwrap_or_else(|| id.clone()),
        id,
        image: template
            .and_then(|t| t.container_spec.as_ref())
            .and_then(|c| c.image.as_deref())
            .map(short_image),
        mode,
        replicas_desired,
        replicas_running: running.len() as u64,
        constraints: template
            .and_then(|t| t.placement.as_ref())
            .and_then(|p| p.constraints.clone())
            .unwrap_or_default(),
        update_state: update
            .and_then(|u| u.state)
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty()),
        update_message: update
            .and_then(|u| u.message.clone())
            .filter(|m| !m.is_empty()),
        nodes,
        failed_tasks: mine
            .into_iter()
            .filter(|t| failed(t, now_ms))
            .cloned()
            .collect(),
    })
}

pub fn services(
    engine: &EngineView,
    tasks: &[TaskView],
    names: &Names,
    now_ms: u64,
) -> Vec<ServiceView> {
    let mut v: Vec<ServiceView> = engine
        .services
        .iter()
        .filter_map(|s| service_view(s, tasks, names, now_ms))
        .collect();
    v.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    v
}

/// The swarm's facts about one node.
#[derive(Clone, Debug, Default)]
pub struct SwarmFacts {
    pub hostname: Option<String>,
    pub state: Option<String>,
    pub availability: Option<String>,
    pub role: Option<String>,
    pub leader: Option<bool>,
}

pub fn swarm_facts(engine: &EngineView) -> HashMap<String, SwarmFacts> {
    engine
        .nodes
        .iter()
        .filter_map(|n| {
            let id = n.id.clone()?;
            let spec = n.spec.as_ref();
            Some((
                id,
                SwarmFacts {
                    hostname: n.description.as_ref().and_then(|d| d.hostname.clone()),
                    state: n
                        .status
                        .as_ref()
                        .and_then(|s| s.state)
                        .map(|s| s.to_string()),
                    availability: spec
                        .and_then(|s| s.availability)
                        .map(|a| a.to_string())
                        .filter(|a| !a.is_empty()),
                    role: spec
                        .and_then(|s| s.role)
                        .map(|r| r.to_string())
                        .filter(|r| !r.is_empty()),
                    leader: Some(
                        n.manager_status
                            .as_ref()
                            .and_then(|m| m.leader)
                            .unwrap_or(false),
                    ),
                },
            ))
        })
        .collect()
}

/// A registered node in the cluster view.
pub fn cluster_node(sum: NodeSummary, swarm: Option<&SwarmFacts>, badges: Badges) -> ClusterNode {
    let f = swarm.cloned().unwrap_or_default();
    ClusterNode {
        node_id: Some(sum.node_id),
        hostname: sum.hostname,
        board: Some(sum.board),
        role: Some(sum.role),
        arch: Some(sum.arch),
        status: Some(sum.status),
        swarm_node_id: sum.swarm_node_id,
        swarm_state: sum.swarm_state.or(f.state),
        labels: sum.labels,
        registered_at_ms: Some(sum.registered_at_ms),
        last_report_ms: sum.last_report_ms,
        containers: sum.containers,
        cpu_busy_ratio: sum.cpu_busy_ratio,
        memory_used_bytes: sum.memory_used_bytes,
        memory_total_bytes: sum.memory_total_bytes,
        temperature_celsius: sum.temperature_celsius,
        availability: f.availability,
        swarm_role: f.role,
        leader: f.leader,
        badges,
    }
}

/// A swarm node that never registered with armada.
pub fn swarm_only_node(swarm_node_id: &str, f: &SwarmFacts) -> ClusterNode {
    ClusterNode {
        node_id: None,
        hostname: f
            .hostname
            .clone()
            .unwrap_or_else(|| swarm_node_id.to_string()),
        board: None,
        role: None,
        arch: None,
        status: None,
        swarm_node_id: Some(swarm_node_id.to_string()),
        swarm_state: f.state.clone(),
        labels: BTreeMap::new(),
        registered_at_ms: None,
        last_report_ms: None,
        containers: None,
        cpu_busy_ratio: None,
        memory_used_bytes: None,
        memory_total_bytes: None,
        temperature_celsius: None,
        availability: f.availability.clone(),
        swarm_role: f.role.clone(),
        leader: f.leader,
        badges: Badges::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{
        ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, TaskSpec, TaskSpecContainerSpec,
        TaskSpecPlacement, TaskStatus,
    };

    fn task(
        id: &str,
        svc: &str,
        node: &str,
        state: TaskState,
        desired: TaskState,
        at: &str,
    ) -> Task {
        Task {
            id: Some(id.into()),
            service_id: Some(svc.into()),
            node_id: Some(node.into()),
            slot: Some(1),
            desired_state: Some(desired),
            status: Some(TaskStatus {
                state: Some(state),
                timestamp: Some(at.into()),
                err: (state == TaskState::FAILED).then(|| "task: non-zero exit (1)".into()),
                ..Default::default()
            }),
            spec: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some("busybox:1.36@sha256:abc".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn engine_times_parse_with_nanoseconds() {
        assert_eq!(engine_ms(Some("1970-01-01T00:00:01.5Z")), Some(1500));
        assert_eq!(
            engine_ms(Some("2026-12-01T13:00:00.123456789Z")),
            Some(1_796_130_000_123)
        );
        assert_eq!(engine_ms(Some("0001-01-01T00:00:00Z")), None);
        assert_eq!(engine_ms(Some("junk")), None);
        assert_eq!(engine_ms(None), None);
    }

    #[test]
    fn tasks_and_services_from_the_engine() {
        let now = engine_ms(Some("2026-12-01T13:00:00Z")).unwrap();
        let engine = EngineView {
            at_ms: now,
            nodes: vec![bollard::models::Node {
                id: Some("sw1".into()),
                description: Some(bollard::models::NodeDescription {
                    hostname: Some("pine-01".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            services: vec![Service {
                id: Some("svc1".into()),
                spec: Some(ServiceSpec {
                    name: Some("web".into()),
                    mode: Some(ServiceSpecMode {
                        replicated: Some(ServiceSpecModeReplicated { replicas: Some(3) }),
                        ..Default::default()
                    }),
                    task_template: Some(TaskSpec {
                        container_spec: Some(TaskSpecContainerSpec {
                            image: Some("nginx:1@sha256:00".into()),
                            ..Default::default()
                        }),
                        placement: Some(TaskSpecPlacement {
                            constraints: Some(vec!["node.labels.zone==a".into()]),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            tasks: vec![
                task(
                    "t1",
                    "svc1",
                    "sw1",
                    TaskState::RUNNING,
                    TaskState::RUNNING,
                    "2026-12-01T12:59:00Z",
                ),
                task(
                    "t2",
                    "svc1",
                    "sw2",
                    TaskState::FAILED,
                    TaskState::SHUTDOWN,
                    "2026-12-01T12:50:00Z",
                ),
                task(
                    "t3",
                    "svc1",
                    "sw1",
                    TaskState::FAILED,
                    TaskState::SHUTDOWN,
                    "2026-12-01T12:40:00Z",
                ),
                task(
                    "t4",
                    "svc1",
                    "sw1",
                    TaskState::SHUTDOWN,
                    TaskState::SHUTDOWN,
                    "2026-12-01T12:58:00Z",
                ),
                task(
                    "t5",
                    "svc1",
                    "sw1",
                    TaskState::PREPARING,
                    TaskState::RUNNING,
                    "2026-12-01T12:59:30Z",
                ),
            ],
        };
        let names = Names::new(&engine, [("sw1".to_string(), "n-1".to_string())].into());
        let tasks = shown_tasks(&engine, &names, now);
        let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(
            ids,
            ["t1", "t5", "t2"],
            "running, starting, failed 10 min ago; not 20 min ago nor shut down"
        );
        let t1 = &tasks[0];
        assert_eq!(t1.node_id.as_deref(), Some("n-1"));
        assert_eq!(t1.service_name.as_deref(), Some("web"));
        assert_eq!(t1.image.as_deref(), Some("busybox:1.36"));
        assert_eq!(t1.error, None);
        assert_eq!(tasks[2].node_id, None, "sw2 is not an armada node");
        assert!(tasks[2].error.as_deref().unwrap().contains("non-zero"));

        let svcs = services(&engine, &tasks, &names, now);
        assert_eq!(svcs.len(), 1);
        let s = &svcs[0];
        assert_eq!(s.name, "web");
        assert_eq!(s.mode, "replicated");
        assert_eq!(s.replicas_desired, Some(3));
        assert_eq!(s.replicas_running, 1, "t5 is not running yet");
        assert_eq!(s.nodes, ["pine-01"]);
        assert_eq!(s.constraints, ["node.labels.zone==a"]);
        assert_eq!(s.image.as_deref(), Some("nginx:1"));
        assert_eq!(s.failed_tasks.len(), 1);
        assert_eq!(s.failed_tasks[0].id, "t2");
    }

    #[test]
    fn badges_take_the_worst_filesystem() {
        use crate::alerts::rules::FsView;
        let v = NodeView {
            max_temperature_celsius: Some(71.5),
            under_voltage_now: Some(false),
            filesystems: vec![
                FsView {
                    used_ratio: Some(0.4),
                    read_only: Some(false),
                    ..Default::default()
                },
                FsView {
                    used_ratio: Some(0.9),
                    read_only: Some(true),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let b = badges(&v);
        assert_eq!(b.temperature_celsius, Some(71.5));
        assert_eq!(b.fs_used_ratio_max, Some(0.9));
        assert_eq!(b.fs_read_only, Some(true));
        assert_eq!(b.under_voltage_since_boot, None);
        assert_eq!(badges(&NodeView::default()), Badges::default());
    }
}

//! The swarm as the cockpit shows and steers it: the engine's node, service and task
//! lists, cached for [`CACHE_TTL`] so a page polled by several operators (or a
//! 1,000-node cluster view) costs the engine three list calls per TTL, not per request.
//! One refresh at a time; the others wait for it and share its answer.
//!
//! Actions (availability, scale, force update) read the object's current version and
//! write its spec back with it, retrying on "update out of sequence", then drop the
//! cache so the next view shows the change. Only the manager talks to the engine, over
//! its unix socket ([`crate::swarm::SwarmLink`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::models::{Node, NodeSpecAvailabilityEnum, Service, Task};
use bollard::query_parameters::UpdateServiceOptions;

use crate::swarm::{is_not_found, is_out_of_sequence, SwarmError, SwarmLink};

/// How long one read of the engine's lists is served.
pub const CACHE_TTL: Duration = Duration::from_secs(2);
/// Attempts of a versioned update before giving up.
const UPDATE_ATTEMPTS: u32 = 8;

/// One read of the engine's lists.
#[derive(Debug, Default)]
pub struct EngineView {
    pub at_ms: u64,
    pub nodes: Vec<Node>,
    pub services: Vec<Service>,
    pub tasks: Vec<Task>,
}

pub struct Engine {
    swarm: Arc<SwarmLink>,
    cache: tokio::sync::Mutex<Option<(Instant, Arc<EngineView>)>>,
}

/// Node availability as the API spells it.
pub fn parse_availability(s: &str) -> Option<NodeSpecAvailabilityEnum> {
    match s {
        "active" => Some(NodeSpecAvailabilityEnum::ACTIVE),
        "drain" => Some(NodeSpecAvailabilityEnum::DRAIN),
        "pause" => Some(NodeSpecAvailabilityEnum::PAUSE),
        _ => None,
    }
}

impl Engine {
    pub fn new(swarm: Arc<SwarmLink>) -> Self {
        Engine {
            swarm,
            cache: tokio::sync::Mutex::new(None),
        }
    }

    pub fn enabled(&self) -> bool {
        self.swarm.enabled()
    }

    /// The lists, at most [`CACHE_TTL`] old. Without an engine (`--no-swarm`): empty.
    pub async fn view(&self) -> Result<Arc<EngineView>, SwarmError> {
        let mut c = self.cache.lock().await;
        if let Some((at, v)) = c.as_ref() {
            if at.elapsed() < CACHE_TTL {
                return Ok(v.clone());
            }
        }
        let v = Arc::new(self.read().await?);
        *c = Some((Instant::now(), v.clone()));
        Ok(v)
    }

    /// Drops the cached lists (after an action, so the next view shows it).
    pub async fn invalidate(&self) {
        *self.cache.lock().await = None;
    }

    async fn read(&self) -> Result<EngineView, SwarmError> {
        if !self.enabled() {
            return Ok(EngineView {
                at_ms: crate::now_ms(),
                ..Default::default()
            });
        }
        let d = self.swarm.client().await?;
        let (nodes, services, tasks) = tokio::join!(
            d.list_nodes(None),
            d.list_services(None),
            d.list_tasks(None)
        );
        let e = |e| self.swarm.engine_error(e);
        Ok(EngineView {
            at_ms: crate::now_ms(),
            nodes: nodes.map_err(e)?,
            services: services.map_err(e)?,
            tasks: tasks.map_err(e)?,
        })
    }

    /// Sets a swarm node's availability (drain moves its tasks elsewhere).
    pub async fn set_availability(
        &self,
        swarm_node_id: &str,
        availability: NodeSpecAvailabilityEnum,
    ) -> Result<(), SwarmError> {
        self.swarm
            .update_spec(swarm_node_id, |spec| spec.availability = Some(availability))
            .await?;
        self.invalidate().await;
        Ok(())
    }

    /// Changes a service's spec with the version read just before.
    async fn update_service(
        &self,
        service_id: &str,
        change: impl Fn(&mut bollard::models::ServiceSpec) -> Result<(), String>,
    ) -> Result<Result<(), String>, SwarmError> {
        let d = self.swarm.client().await?;
        let mut last = String::new();
        for attempt in 0..UPDATE_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
            }
            let svc = match d.inspect_service(service_id, None).await {
                Ok(s) => s,
                Err(e) if is_not_found(&e) => return Ok(Err(format!("no service {service_id}"))),
                Err(e) => return Err(self.swarm.engine_error(e)),
            };
            let version = svc.version.and_then(|v| v.index).unwrap_or(0);
            let mut spec = svc.spec.unwrap_or_default();
            if let Err(refusal) = change(&mut spec) {
                return Ok(Err(refusal));
            }
            let opts = UpdateServiceOptions {
                version: version as i32,
                ..Default::default()
            };
            match d.update_service(service_id, spec, opts, None).await {
                Ok(_) => {
                    self.invalidate().await;
                    return Ok(Ok(()));
                }
                Err(e) if is_out_of_sequence(&e) => last = e.to_string(),
                Err(e) => return Err(self.swarm.engine_error(e)),
            }
        }
        Err(self.swarm.engine_error(format!(
            "updating service {service_id} did not settle after {UPDATE_ATTEMPTS} attempts: {last}"
        )))
    }

    /// Sets a replicated service's replica count. `Ok(Err(why))`: refused (unknown or
    /// global service).
    pub async fn scale(
        &self,
        service_id: &str,
        replicas: u32,
    ) -> Result<Result<(), String>, SwarmError> {
        self.update_service(service_id, |spec| {
            let replicated = spec
                .mode
                .as_mut()
                .and_then(|m| m.replicated.as_mut())
                .ok_or_else(|| {
                    format!("service {service_id} is not replicated (global services run one task per node)")
                })?;
            replicated.replicas = Some(i64::from(replicas));
            Ok(())
        })
        .await
    }

    /// Forces a rolling update without a spec change (`docker service update --force`):
    /// the scheduler places every task again, spreading them over nodes that came back.
    pub async fn force_update(&self, service_id: &str) -> Result<Result<(), String>, SwarmError> {
        self.update_service(service_id, |spec| {
            let t = spec.task_template.get_or_insert_with(Default::default);
            t.force_update = Some(t.force_update.unwrap_or(0).wrapping_add(1));
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn availability_names() {
        assert_eq!(
            parse_availability("drain"),
            Some(NodeSpecAvailabilityEnum::DRAIN)
        );
        assert_eq!(
            parse_availability("active"),
            Some(NodeSpecAvailabilityEnum::ACTIVE)
        );
        assert_eq!(
            parse_availability("pause"),
            Some(NodeSpecAvailabilityEnum::PAUSE)
        );
        assert_eq!(parse_availability("Drain"), None);
        assert_eq!(parse_availability(""), None);
    }
}

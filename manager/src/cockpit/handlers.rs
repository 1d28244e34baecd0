//! The cockpit's HTTP handlers. All of them are admin-only (the gate lets nothing
//! through without the admin token or a live session cookie, and each handler checks
//! that the caller is the admin, not a node), but `POST /v1/session`, which takes the
//! admin token in its body.
//!
//! | path | method | body / query |
//! |---|---|---|
//! | `/v1/session` | POST `{"token"}`, GET, DELETE | |
//! | `/v1/cluster` | GET | |
//! | `/v1/services` | GET | |
//! | `/v1/tasks` | GET | `service`, `node` |
//! | `/v1/nodes/{id}/history` | GET | `range` or `from_ms`,`to_ms`; `step_s` |
//! | `/v1/nodes/{id}/containers` | GET | |
//! | `/v1/nodes/{id}/availability` | POST `{"availability"}` | |
//! | `/v1/services/{id}/scale` | POST `{"replicas"}` | |
//! | `/v1/services/{id}/rebalance` | POST | |
//! | `/v1/events` | GET | `kind`, `node`, `limit`, `before_seq` |
//! | `/v1/audit` | GET | `limit` |
//! | `/v1/openapi.json` | GET (public) | |
//!
//! Every action writes an audit entry and an `admin_action` event, whether it worked
//! or not. Ids from the path reach the engine only after they were found in its own
//! lists, so no caller-made string becomes part of an engine URL.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::Path;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use protocol::token::{constant_time_eq, sha256_hex};
use serde::{Deserialize, Serialize};

use super::session;
use super::views::{self, ClusterView, ServiceView, TaskView};
use crate::api::{ApiError, AppState};

type Shared = Arc<AppState>;

pub const PATH_SESSION: &str = "/v1/session";
pub const PATH_CLUSTER: &str = "/v1/cluster";
pub const PATH_SERVICES: &str = "/v1/services";
pub const PATH_TASKS: &str = "/v1/tasks";
pub const PATH_EVENTS: &str = "/v1/events";
pub const PATH_AUDIT: &str = "/v1/audit";

/// Largest body of a cockpit request (a token, a replica count, an availability).
pub const MAX_COCKPIT_BODY: usize = 4 << 10;
/// Longest id accepted in a query or path (swarm ids are 25, armada ids shorter).
pub const MAX_ID: usize = 128;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route(
            PATH_SESSION,
            get(session_get)
                .post(session_open)
                .delete(session_end)
                .layer(DefaultBodyLimit::max(MAX_COCKPIT_BODY)),
        )
        .route(PATH_CLUSTER, get(cluster))
        .route(PATH_SERVICES, get(services))
        .route(PATH_TASKS, get(tasks))
        .route("/v1/nodes/{id}/history", get(history))
        .route("/v1/nodes/{id}/containers", get(containers))
        .route(
            "/v1/nodes/{id}/availability",
            post(availability).layer(DefaultBodyLimit::max(MAX_COCKPIT_BODY)),
        )
        .route(
            "/v1/services/{id}/scale",
            post(scale).layer(DefaultBodyLimit::max(MAX_COCKPIT_BODY)),
        )
        .route(
            "/v1/services/{id}/rebalance",
            post(rebalance).layer(DefaultBodyLimit::max(MAX_COCKPIT_BODY)),
        )
        .route(PATH_EVENTS, get(events))
        .route(PATH_AUDIT, get(audit))
        .route(super::openapi::PATH, get(super::openapi::serve))
}

fn body(b: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    b.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body too large (at most {MAX_COCKPIT_BODY} bytes)"),
            )
        } else {
            ApiError::new(r.status(), r.body_text())
        }
    })
}

fn json_body<T: serde::de::DeserializeOwned>(
    b: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let b = body(b)?;
    serde_json::from_slice(&b)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("malformed JSON body: {e}")))
}

/// `POST /v1/session` and `GET /v1/session`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SessionInfo {
    pub csrf: String,
    pub expires_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    pub token: String,
}

async fn session_open(
    State(s): State<Shared>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: SessionRequest = json_body(b)?;
    let admin_hash = s.cluster.admin_token_hash();
    if req.token.is_empty()
        || !constant_time_eq(
            sha256_hex(req.token.trim().as_bytes()).as_bytes(),
            admin_hash.as_bytes(),
        )
    {
        crate::metrics::METRICS.unauthorized.inc();
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "not the admin token (the cluster folder's admin-token)",
        ));
    }
    let (cookie, sess) = s.cockpit.sessions.open(&admin_hash, crate::now_ms());
    tracing::info!("operator session opened ({})", sess.audit_name());
    let mut r = Json(SessionInfo {
        csrf: sess.csrf,
        expires_ms: sess.expires_ms,
    })
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(&cookie, s.cockpit.sessions.ttl())) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}

async fn session_get(
    State(s): State<Shared>,
    headers: HeaderMap,
) -> Result<Json<SessionInfo>, ApiError> {
    let sess = session::cookie_value(&headers)
        .and_then(|c| {
            s.cockpit
                .sessions
                .get(&c, &s.cluster.admin_token_hash(), crate::now_ms())
        })
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "no live session: sign in again"))?;
    Ok(Json(SessionInfo {
        csrf: sess.csrf,
        expires_ms: sess.expires_ms,
    }))
}

async fn session_end(State(s): State<Shared>, headers: HeaderMap) -> Result<Response, ApiError> {
    s.admin(&headers)?;
    if let Some(c) = session::cookie_value(&headers) {
        if s.cockpit.sessions.end(&c) {
            tracing::info!("operator session ended (logout)");
        }
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}

/// The engine's lists, or 503 naming the engine.
async fn engine_view(s: &AppState) -> Result<Arc<super::engine::EngineView>, ApiError> {
    s.cockpit
        .engine
        .view()
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e))
}

/// A node's latest snapshot and the time of the report that brought it.
type Latest = (u64, Arc<str>);

/// Armada ids by swarm node id, from the store.
pub(crate) fn armada_of_swarm(s: &AppState) -> HashMap<String, String> {
    let st = s.store.read();
    st.nodes
        .values()
        .filter_map(|e| Some((e.record.swarm_node_id.clone()?, e.record.node_id.clone())))
        .collect()
}

async fn cluster(
    State(s): State<Shared>,
    headers: HeaderMap,
) -> Result<Json<ClusterView>, ApiError> {
    s.admin(&headers)?;
    let engine = engine_view(&s).await?;
    let now = crate::now_ms();
    let s2 = s.clone();
    let view = tokio::task::spawn_blocking(move || {
        let s = s2;
        let facts = views::swarm_facts(&engine);
        // Cheap copies under the store's lock; snapshots are parsed after it.
        let copied: Vec<(protocol::wire::NodeSummary, Option<Latest>)> = {
            let st = s.store.read();
            st.node_ids_by_hostname()
                .into_iter()
                .map(|e| {
                    let latest = e
                        .latest_json
                        .clone()
                        .map(|j| (e.last_report_ms.unwrap_or(0), j));
                    (s.summary(e, now), latest)
                })
                .collect()
        };
        let armada: HashMap<String, String> = copied
            .iter()
            .filter_map(|(sum, _)| Some((sum.swarm_node_id.clone()?, sum.node_id.clone())))
            .collect();
        let ids: std::collections::HashSet<&str> =
            copied.iter().map(|(sum, _)| sum.node_id.as_str()).collect();
        s.cockpit.retain_badges(|id| ids.contains(id));
        let mut nodes: Vec<views::ClusterNode> = copied
            .iter()
            .map(|(sum, latest)| {
                let badges = latest
                    .as_ref()
                    .map(|(at, j)| s.cockpit.badges(&sum.node_id, *at, j))
                    .unwrap_or_default();
                let f = sum.swarm_node_id.as_ref().and_then(|sid| facts.get(sid));
                views::cluster_node(sum.clone(), f, badges)
            })
            .collect();
        let mut others: Vec<views::ClusterNode> = facts
            .iter()
            .filter(|(sid, _)| !armada.contains_key(*sid))
            .map(|(sid, f)| views::swarm_only_node(sid, f))
            .collect();
        others.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        nodes.extend(others);
        let names = views::Names::new(&engine, armada);
        let mut services: Vec<views::ServiceRef> = names
            .service_names
            .iter()
            .map(|(id, name)| views::ServiceRef {
                id: id.clone(),
                name: name.clone(),
            })
            .collect();
        services.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        ClusterView {
            generated_ms: now,
            nodes,
            services,
            tasks: views::shown_tasks(&engine, &names, now),
        }
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cluster view: {e}"),
        )
    })?;
    Ok(Json(view))
}

async fn services(
    State(s): State<Shared>,
    headers: HeaderMap,
) -> Result<Json<Vec<ServiceView>>, ApiError> {
    s.admin(&headers)?;
    let engine = engine_view(&s).await?;
    let now = crate::now_ms();
    let names = views::Names::new(&engine, armada_of_swarm(&s));
    let tasks = views::shown_tasks(&engine, &names, now);
    Ok(Json(views::services(&engine, &tasks, &names, now)))
}

#[derive(Debug, Deserialize)]
pub struct TasksQuery {
    pub service: Option<String>,
    pub node: Option<String>,
}

fn bounded_id(what: &str, v: Option<String>) -> Result<Option<String>, ApiError> {
    match v {
        Some(v) if v.is_empty() || v.len() > MAX_ID => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("`{what}` must be 1-{MAX_ID} characters"),
        )),
        v => Ok(v),
    }
}

async fn tasks(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<TasksQuery>,
) -> Result<Json<Vec<TaskView>>, ApiError> {
    s.admin(&headers)?;
    let service = bounded_id("service", q.service)?;
    let node = bounded_id("node", q.node)?;
    let engine = engine_view(&s).await?;
    let now = crate::now_ms();
    let names = views::Names::new(&engine, armada_of_swarm(&s));
    Ok(Json(
        views::shown_tasks(&engine, &names, now)
            .into_iter()
            .filter(|t| {
                service
                    .as_ref()
                    .is_none_or(|x| &t.service_id == x || t.service_name.as_ref() == Some(x))
            })
            .filter(|t| node.as_ref().is_none_or(|x| t.node_id.as_ref() == Some(x)))
            .collect(),
    ))
}

/// The metrics label of a cockpit path (bounded: ids are folded into `{id}`).
pub fn route_label(path: &str) -> Option<&'static str> {
    match path {
        PATH_SESSION => Some(PATH_SESSION),
        PATH_CLUSTER => Some(PATH_CLUSTER),
        PATH_SERVICES => Some(PATH_SERVICES),
        PATH_TASKS => Some(PATH_TASKS),
        PATH_EVENTS => Some(PATH_EVENTS),
        PATH_AUDIT => Some(PATH_AUDIT),
        super::openapi::PATH => Some(super::openapi::PATH),
        p if p.starts_with("/v1/nodes/") && p.ends_with("/history") => {
            Some("/v1/nodes/{id}/history")
        }
        p if p.starts_with("/v1/nodes/") && p.ends_with("/containers") => {
            Some("/v1/nodes/{id}/containers")
        }
        p if p.starts_with("/v1/nodes/") && p.ends_with("/availability") => {
            Some("/v1/nodes/{id}/availability")
        }
        p if p.starts_with("/v1/services/") && p.ends_with("/scale") => {
            Some("/v1/services/{id}/scale")
        }
        p if p.starts_with("/v1/services/") && p.ends_with("/rebalance") => {
            Some("/v1/services/{id}/rebalance")
        }
        _ => None,
    }
}

fn not_found(what: &str, id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no {what} {id}"))
}

async fn history(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<super::series::HistoryQuery>,
) -> Result<Json<super::series::HistoryView>, ApiError> {
    s.admin(&headers)?;
    let now = crate::now_ms();
    let w =
        super::series::window(&q, now).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    let (tiers, total, interval) = {
        let st = s.store.read();
        let e = st.nodes.get(&id).ok_or_else(|| not_found("node", &id))?;
        (
            e.history.view(),
            e.latest.as_ref().and_then(|l| l.memory_total_bytes),
            u64::from(e.record.report_interval_seconds.max(1)),
        )
    };
    Ok(Json(super::series::build(&tiers, total, w, interval)))
}

/// `GET /v1/nodes/{id}/containers`: one row per container of the latest snapshot.
#[derive(Debug, Serialize, Deserialize)]
pub struct ContainerRow {
    pub id: String,
    pub name: String,
    pub service: Option<String>,
    pub state: Option<String>,
    pub health: Option<String>,
    /// CPU seconds per second between the node's last two snapshots (1.0 = one CPU
    /// busy; `store::container_cpu`); `null` for a container first seen, restarted or
    /// without a CPU figure.
    pub cpu_ratio: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub restarts: Option<u64>,
    pub oom_kills: Option<u64>,
    pub started_ms: Option<u64>,
}

async fn containers(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Vec<ContainerRow>>, ApiError> {
    s.admin(&headers)?;
    let (latest, cpu) = {
        let st = s.store.read();
        let e = st.nodes.get(&id).ok_or_else(|| not_found("node", &id))?;
        (e.latest_json.clone(), e.container_cpu.clone())
    };
    let Some(json) = latest else {
        return Ok(Json(Vec::new()));
    };
    let snap: protocol::snapshot::Snapshot = serde_json::from_str(&json).map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("node {id}'s stored snapshot does not parse: {e}"),
        )
    })?;
    let t_ms = snap.collected_at_ms;
    let mut rows: Vec<ContainerRow> = snap
        .containers
        .into_iter()
        .map(|c| ContainerRow {
            cpu_ratio: cpu.ratio(t_ms, &c.id),
            id: c.id,
            name: c.name,
            service: c.service,
            state: c.state,
            health: c.health,
            memory_bytes: c.memory.as_ref().map(|m| m.usage_bytes),
            restarts: c.restart_count,
            oom_kills: c.memory.as_ref().and_then(|m| m.oom_kills),
            started_ms: c
                .started_at_seconds
                .filter(|t| t.is_finite() && *t > 0.0)
                .map(|t| (t * 1000.0) as u64),
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(rows))
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    pub kind: Option<String>,
    pub node: Option<String>,
    pub limit: Option<u32>,
    pub before_seq: Option<i64>,
}

fn limit(l: Option<u32>) -> Result<u32, ApiError> {
    match l {
        None => Ok(100),
        Some(n) if (1..=super::events::MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("limit must be 1-{}", super::events::MAX_LIMIT),
        )),
    }
}

fn blocking_err(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("cockpit events: {e}"),
    )
}

async fn events(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Result<Json<super::events::EventPage>, ApiError> {
    s.admin(&headers)?;
    let limit = limit(q.limit)?;
    let node = bounded_id("node", q.node)?;
    let mut kinds = Vec::new();
    for k in q
        .kind
        .iter()
        .flat_map(|k| k.split(','))
        .map(str::trim)
        .filter(|k| !k.is_empty())
    {
        if !super::events::KINDS.contains(&k) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "unknown event kind (the kinds: {})",
                    super::events::KINDS.join(", ")
                ),
            ));
        }
        if !kinds.iter().any(|x: &String| x == k) {
            kinds.push(k.to_string());
        }
    }
    if q.before_seq.is_some_and(|b| b < 1) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "before_seq must be at least 1",
        ));
    }
    let log = s.cockpit.events.clone();
    let page =
        tokio::task::spawn_blocking(move || log.page(&kinds, node.as_deref(), limit, q.before_seq))
            .await
            .map_err(blocking_err)?
            .map_err(blocking_err)?;
    Ok(Json(page))
}

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    pub limit: Option<u32>,
}

async fn audit(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Vec<super::events::AuditEntry>>, ApiError> {
    s.admin(&headers)?;
    let limit = limit(q.limit)?;
    let log = s.cockpit.events.clone();
    let rows = tokio::task::spawn_blocking(move || log.audit_list(limit))
        .await
        .map_err(blocking_err)?
        .map_err(blocking_err)?;
    Ok(Json(rows))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AvailabilityRequest {
    pub availability: String,
}

fn engine_error(e: crate::swarm::SwarmError) -> ApiError {
    match e {
        crate::swarm::SwarmError::UnknownSwarmNode(_) => ApiError::new(StatusCode::NOT_FOUND, e),
        e => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// The cluster view's node `id` as the engine sees it now.
async fn cluster_node_of(s: &Shared, id: &str) -> Result<views::ClusterNode, ApiError> {
    let engine = engine_view(s).await?;
    let facts = views::swarm_facts(&engine);
    let now = crate::now_ms();
    let (sum, latest) = {
        let st = s.store.read();
        let e = st.nodes.get(id).ok_or_else(|| not_found("node", id))?;
        (
            s.summary(e, now),
            e.latest_json
                .clone()
                .map(|j| (e.last_report_ms.unwrap_or(0), j)),
        )
    };
    let badges = latest
        .map(|(at, j)| s.cockpit.badges(&sum.node_id, at, &j))
        .unwrap_or_default();
    let f = sum.swarm_node_id.as_ref().and_then(|sid| facts.get(sid));
    Ok(views::cluster_node(sum.clone(), f, badges))
}

async fn availability(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<views::ClusterNode>, ApiError> {
    let via = s.admin_via(&headers)?;
    let req: AvailabilityRequest = json_body(b)?;
    let Some(avail) = super::engine::parse_availability(&req.availability) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "availability must be `active`, `drain` or `pause`",
        ));
    };
    let params = serde_json::json!({ "availability": req.availability });
    let sid = {
        let st = s.store.read();
        let e = st.nodes.get(&id).ok_or_else(|| not_found("node", &id))?;
        e.record.swarm_node_id.clone()
    };
    let result = match sid {
        None => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("node {id} has not joined the swarm yet"),
        )),
        Some(sid) => s
            .cockpit
            .engine
            .set_availability(&sid, avail)
            .await
            .map_err(engine_error),
    };
    s.cockpit
        .audit(
            via.actor(),
            "availability",
            &id,
            params,
            result.as_ref().err().map(|e| e.message().to_string()),
        )
        .await;
    result?;
    tracing::info!("node {id} set to {} by {}", req.availability, via.actor());
    Ok(Json(cluster_node_of(&s, &id).await?))
}

/// A service name or id: letters, digits, `_`, `.`, `-` (what the engine allows).
fn service_ref(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "a service is named by its id or name: 1-128 letters, digits, `_`, `.` or `-`",
        ))
    }
}

/// The engine's id of the service named or numbered `r`, from its own list.
async fn resolve_service(s: &Shared, r: &str) -> Result<String, ApiError> {
    service_ref(r)?;
    let engine = engine_view(s).await?;
    engine
        .services
        .iter()
        .find(|sv| {
            sv.id.as_deref() == Some(r)
                || sv.spec.as_ref().and_then(|sp| sp.name.as_deref()) == Some(r)
        })
        .and_then(|sv| sv.id.clone())
        .ok_or_else(|| not_found("service", r))
}

async fn service_now(s: &Shared, id: &str) -> Result<ServiceView, ApiError> {
    let engine = engine_view(s).await?;
    let now = crate::now_ms();
    let names = views::Names::new(&engine, armada_of_swarm(s));
    let tasks = views::shown_tasks(&engine, &names, now);
    engine
        .services
        .iter()
        .find(|sv| sv.id.as_deref() == Some(id))
        .and_then(|sv| views::service_view(sv, &tasks, &names, now))
        .ok_or_else(|| not_found("service", id))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    pub replicas: u32,
}

/// Most replicas one scale action may ask for.
pub const MAX_REPLICAS: u32 = 1000;

async fn service_action(
    s: Shared,
    headers: HeaderMap,
    r: String,
    action: &'static str,
    replicas: Option<u32>,
) -> Result<Json<ServiceView>, ApiError> {
    let via = s.admin_via(&headers)?;
    // Malformed input is refused before it is an action (and so before the audit).
    service_ref(&r)?;
    let params = match replicas {
        Some(n) => serde_json::json!({ "replicas": n }),
        None => serde_json::json!({}),
    };
    let id = match resolve_service(&s, &r).await {
        Ok(id) => id,
        Err(e) => {
            s.cockpit
                .audit(
                    via.actor(),
                    action,
                    &r,
                    params,
                    Some(e.message().to_string()),
                )
                .await;
            return Err(e);
        }
    };
    let outcome = match replicas {
        Some(n) => s.cockpit.engine.scale(&id, n).await,
        None => s.cockpit.engine.force_update(&id).await,
    };
    let result = match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(refusal)) => Err(ApiError::new(StatusCode::CONFLICT, refusal)),
        Err(e) => Err(engine_error(e)),
    };
    s.cockpit
        .audit(
            via.actor(),
            action,
            &id,
            params,
            result.as_ref().err().map(|e| e.message().to_string()),
        )
        .await;
    result?;
    tracing::info!("service {id}: {action} by {}", via.actor());
    Ok(Json(service_now(&s, &id).await?))
}

async fn scale(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(r): Path<String>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<ServiceView>, ApiError> {
    s.admin(&headers)?;
    let req: ScaleRequest = json_body(b)?;
    if req.replicas > MAX_REPLICAS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("replicas must be 0-{MAX_REPLICAS}"),
        ));
    }
    service_action(s, headers, r, "scale", Some(req.replicas)).await
}

async fn rebalance(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(r): Path<String>,
) -> Result<Json<ServiceView>, ApiError> {
    service_action(s, headers, r, "rebalance", None).await
}

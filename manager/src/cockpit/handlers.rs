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

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
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
fn armada_of_swarm(s: &AppState) -> HashMap<String, String> {
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
        _ => None,
    }
}

//! The HTTP API. Paths and bodies are `protocol::wire`'s; every error is an
//! [`ErrorBody`] with a 4xx/5xx status: 400 malformed, 401 unauthenticated (counted),
//! 404 unknown node, 409 hostname or swarm node taken, 413 too large, 503 engine or
//! store unavailable.
//!
//! | path | method | who |
//! |---|---|---|
//! | `/` | GET | anyone (static page; it asks for the admin token) |
//! | `/v1/ca` | GET | anyone (public CA certificate) |
//! | `/v1/register` | POST | bootstrap token in the body |
//! | `/v1/health` | GET | admin or node |
//! | `/v1/joined`, `/v1/report` | POST | node credential |
//! | `/v1/nodes`, `/v1/nodes/{id}`, `/metrics` | GET | admin |
//!
//! `/metrics?federate=false` leaves out the nodes' snapshots: at thousands of nodes the
//! federation text is large (about 15 KiB per node) and built in memory.
//! | `/v1/nodes/{id}` | DELETE | admin |
//!
//! `GET /v1/nodes/{id}` returns [`NodeDetail`]: the summary, facts, the latest snapshot
//! and the history tiers. Re-registering the same hostname and machine-id returns the
//! same node id with a new credential (the old one stops working).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use protocol::wire::{
    ErrorBody, JoinedRequest, NodeFacts, NodeStatus, NodeSummary, RegisterRequest,
    RegisterResponse, ReportAck, PATH_CA, PATH_HEALTH, PATH_JOINED, PATH_METRICS, PATH_NODES,
    PATH_REGISTER, PATH_REPORT,
};
use serde::{Deserialize, Serialize};

use crate::auth::{self, Caller};
use crate::cluster::{ClusterFiles, TokenFile};
use crate::metrics::METRICS;
use crate::store::history::TierView;
use crate::store::report::{self, BodyEncoding, ReportError};
use crate::store::state::{self, NodeEntry, StatusPolicy};
use crate::store::{Registration, Store};
use crate::swarm::{self, SwarmLink};

/// Largest registration or joined body.
pub const MAX_SMALL_BODY: usize = 64 << 10;

pub struct AppState {
    pub store: Arc<Store>,
    pub cluster: Arc<ClusterFiles>,
    pub tokens: Arc<TokenFile>,
    pub swarm: Arc<SwarmLink>,
    pub policy: StatusPolicy,
    pub report_interval_seconds: u32,
}

type Shared = Arc<AppState>;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl ToString) -> Self {
        ApiError {
            status,
            message: message.to_string(),
            retry_after: None,
        }
    }
    fn bad_request(m: impl ToString) -> Self {
        Self::new(StatusCode::BAD_REQUEST, m)
    }
    fn unauthorized(m: impl ToString) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, m)
    }
    fn unavailable(m: impl ToString) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, m)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(ErrorBody {
                error: self.message,
                code: None,
            }),
        )
            .into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        let mut a = ApiError::unavailable(format!("store: {e}"));
        if e.is_full() {
            // Agents keep their backlog and retry; ingest resumes once space returns.
            a.retry_after = Some(STORE_FULL_RETRY_SECONDS);
        }
        a
    }
}

/// Retry-After of a 503 while the store's disk is full.
pub const STORE_FULL_RETRY_SECONDS: u32 = 30;

/// A body, or 413/400 for one too large or unreadable.
fn body(b: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    b.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
        } else {
            ApiError::new(r.status(), r.body_text())
        }
    })
}

fn json<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(b)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))
}

impl AppState {
    fn caller(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let token = auth::bearer(
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
        );
        let st = self.store.read();
        auth::identify(token, &self.cluster.admin_token_hash, |id| {
            st.nodes.get(id).map(|e| e.record.credential_hash.clone())
        })
        .map_err(ApiError::unauthorized)
    }

    fn admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        match self.caller(headers)? {
            Caller::Admin => Ok(()),
            Caller::Node(_) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "this needs the admin token",
            )),
        }
    }

    fn node(&self, headers: &HeaderMap) -> Result<String, ApiError> {
        match self.caller(headers)? {
            Caller::Node(id) => Ok(id),
            Caller::Admin => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "this needs a node credential",
            )),
        }
    }

    fn summary(&self, e: &NodeEntry, now: u64) -> NodeSummary {
        let swarm_state = e
            .record
            .swarm_node_id
            .as_deref()
            .and_then(|s| self.swarm.node_state(s));
        state::summary(e, now, swarm_state, self.policy)
    }
}

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route(PATH_CA, get(ca))
        .route(PATH_HEALTH, get(health))
        .route(
            PATH_REGISTER,
            post(register).layer(DefaultBodyLimit::max(MAX_SMALL_BODY)),
        )
        .route(
            PATH_JOINED,
            post(joined).layer(DefaultBodyLimit::max(MAX_SMALL_BODY)),
        )
        .route(
            PATH_REPORT,
            post(report).layer(DefaultBodyLimit::max(report::MAX_REPORT_BODY)),
        )
        .route(PATH_NODES, get(nodes))
        .route("/v1/nodes/{id}", get(node_detail).delete(remove_node))
        .route(PATH_METRICS, get(metrics))
        .layer(axum::middleware::from_fn(count_requests))
        .with_state(state)
}

fn route_label(path: &str) -> &'static str {
    match path {
        "/" => "/",
        PATH_CA => PATH_CA,
        PATH_HEALTH => PATH_HEALTH,
        PATH_REGISTER => PATH_REGISTER,
        PATH_JOINED => PATH_JOINED,
        PATH_REPORT => PATH_REPORT,
        PATH_NODES => PATH_NODES,
        PATH_METRICS => PATH_METRICS,
        p if p.starts_with("/v1/nodes/") => "/v1/nodes/{id}",
        _ => "other",
    }
}

async fn count_requests(req: Request, next: Next) -> Response {
    let route = route_label(req.uri().path());
    let resp = next.run(req).await;
    let code = resp.status().as_u16();
    if code == 401 {
        METRICS.unauthorized.inc();
    }
    METRICS.count_request(route, code);
    resp
}

async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        crate::dashboard::INDEX_HTML,
    )
        .into_response()
}

async fn ca(State(s): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        s.cluster.ca_pem.clone(),
    )
        .into_response()
}

async fn health(State(s): State<Shared>, headers: HeaderMap) -> Result<&'static str, ApiError> {
    s.caller(&headers)?;
    Ok("ok")
}

fn validate_facts(f: &NodeFacts) -> Result<(), ApiError> {
    if !protocol::config::is_valid_hostname(&f.hostname) {
        return Err(ApiError::bad_request(format!(
            "facts.hostname `{}` is not a valid hostname",
            f.hostname
        )));
    }
    if f.machine_id.trim().is_empty() || f.machine_id.len() > 128 {
        return Err(ApiError::bad_request(
            "facts.machine_id must be 1-128 characters",
        ));
    }
    if f.board.len() > 64 || f.arch.len() > 64 || f.kernel.len() > 256 {
        return Err(ApiError::bad_request(
            "facts.board/arch/kernel are too long",
        ));
    }
    Ok(())
}

fn validate_labels(labels: &std::collections::BTreeMap<String, String>) -> Result<(), ApiError> {
    if labels.len() > 64 {
        return Err(ApiError::bad_request("at most 64 labels"));
    }
    for (k, v) in labels {
        if k.is_empty()
            || k.starts_with("armada.")
            || k.contains(char::is_whitespace)
            || k.len() > 128
            || v.len() > 256
        {
            return Err(ApiError::bad_request(format!(
                "label `{k}`: keys must be non-empty, without spaces, at most 128 characters and not in the reserved `armada.` namespace"
            )));
        }
    }
    Ok(())
}

async fn register(
    State(s): State<Shared>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<RegisterResponse>, ApiError> {
    let b = body(b)?;
    let req: RegisterRequest = json(&b)?;
    // The token first: nothing else is revealed to a caller without it.
    auth::check_bootstrap(&req.token, &s.cluster.fingerprint, &s.tokens.accepted())
        .map_err(ApiError::unauthorized)?;
    if req.protocol != protocol::PROTOCOL_VERSION {
        return Err(ApiError::bad_request(format!(
            "the agent speaks protocol {}, this manager speaks protocol {}",
            req.protocol,
            protocol::PROTOCOL_VERSION
        )));
    }
    validate_facts(&req.facts)?;
    validate_labels(&req.labels)?;
    let join = s
        .swarm
        .join_info()
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let role = req.facts.role;
    let hostname = req.facts.hostname.clone();
    match s
        .store
        .register(req.facts, req.labels, s.report_interval_seconds)
        .await?
    {
        Registration::HostnameTaken { node_id } => {
            METRICS.registrations_refused.inc();
            Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "hostname `{hostname}` belongs to node {node_id} of another machine; the operator must remove it first (`armada-manager nodes remove {node_id}`)"
                ),
            ))
        }
        Registration::Registered {
            node_id,
            credential,
            existing,
        } => {
            if existing {
                METRICS.registrations_existing.inc();
            } else {
                METRICS.registrations_new.inc();
            }
            tracing::info!(
                "{} node {node_id} ({hostname})",
                if existing {
                    "re-registered"
                } else {
                    "registered"
                }
            );
            Ok(Json(RegisterResponse {
                node_id,
                credential,
                swarm_join_token: match role {
                    protocol::wire::Role::Manager => join.manager_token,
                    protocol::wire::Role::Worker => join.worker_token,
                },
                swarm_managers: join.managers,
                server_time_ms: crate::now_ms(),
                report_interval_seconds: s.report_interval_seconds,
                swarm_cluster_id: None,
            }))
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct JoinedReply {
    pub node_id: String,
    pub swarm_node_id: String,
    pub labels: std::collections::BTreeMap<String, String>,
}

async fn joined(
    State(s): State<Shared>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<JoinedReply>, ApiError> {
    let node_id = s.node(&headers)?;
    let req: JoinedRequest = json(&body(b)?)?;
    let sid = req.swarm_node_id.trim().to_string();
    if sid.is_empty() || sid.len() > 64 || !sid.bytes().all(|c| c.is_ascii_alphanumeric()) {
        return Err(ApiError::bad_request(
            "swarm_node_id must be the engine's alphanumeric Swarm.NodeID",
        ));
    }
    // Check the claim and label first; record it only once the engine knows the node,
    // so a wrong id never replaces a good one.
    let record = {
        let st = s.store.read();
        st.check_joined(&node_id, &sid)
            .map_err(|e| ApiError::new(StatusCode::CONFLICT, e))?;
        let mut r = st
            .nodes
            .get(&node_id)
            .map(|e| e.record.clone())
            .ok_or_else(|| ApiError::unauthorized("the node was removed"))?;
        r.swarm_node_id = Some(sid.clone());
        r
    };
    let want = swarm::wanted_labels(&record);
    s.swarm.label(&sid, &want).await.map_err(|e| match e {
        swarm::SwarmError::UnknownSwarmNode(_) => ApiError::new(StatusCode::NOT_FOUND, e),
        e => ApiError::unavailable(e),
    })?;
    s.store
        .joined(&node_id, &sid)
        .await?
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, e))?;
    tracing::info!("node {node_id} joined the swarm as {sid}; labelled");
    Ok(Json(JoinedReply {
        node_id,
        swarm_node_id: sid,
        labels: want,
    }))
}

async fn report(
    State(s): State<Shared>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<ReportAck>, ApiError> {
    let t0 = Instant::now();
    let node_id = s.node(&headers)?;
    let b = body(b)?;
    let encoding = match headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
    {
        None | Some("identity") => BodyEncoding::Json,
        Some(v) if v.eq_ignore_ascii_case("gzip") => BodyEncoding::Gzip,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Encoding `{other}`: only gzip or none"),
            ))
        }
    };
    let decoded = report::decode(encoding, &b).map_err(|e| match e {
        ReportError::TooLarge | ReportError::TooManySnapshots(_) => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e)
        }
        e => ApiError::bad_request(e),
    })?;
    if decoded.snapshots.is_empty() {
        return Ok(Json(ReportAck {
            accepted: 0,
            duplicates: 0,
        }));
    }
    let outcome = s
        .store
        .report(&node_id, encoding, b, decoded)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the node was removed"))?;
    METRICS.snapshots_ingested.add(outcome.accepted as u64);
    METRICS.snapshots_duplicate.add(outcome.duplicates as u64);
    METRICS.ingest_latency.observe(t0.elapsed());
    Ok(Json(ReportAck {
        accepted: outcome.accepted,
        duplicates: outcome.duplicates,
    }))
}

async fn nodes(
    State(s): State<Shared>,
    headers: HeaderMap,
) -> Result<Json<Vec<NodeSummary>>, ApiError> {
    s.admin(&headers)?;
    let now = crate::now_ms();
    let st = s.store.read();
    Ok(Json(
        st.node_ids_by_hostname()
            .into_iter()
            .map(|e| s.summary(e, now))
            .collect(),
    ))
}

/// `GET /v1/nodes/{id}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct NodeDetail {
    pub summary: NodeSummary,
    pub facts: NodeFacts,
    pub reports_total: u64,
    /// Snapshots the agent dropped from its backlog, as it last said.
    pub agent_dropped_total: u64,
    pub latest: Option<serde_json::Value>,
    pub history: Vec<TierView>,
}

async fn node_detail(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<NodeDetail>, ApiError> {
    s.admin(&headers)?;
    let st = s.store.read();
    let e = st
        .nodes
        .get(&id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no node {id}")))?;
    Ok(Json(NodeDetail {
        summary: s.summary(e, crate::now_ms()),
        facts: e.record.facts.clone(),
        reports_total: e.reports_total,
        agent_dropped_total: e.agent_dropped_total,
        latest: e
            .latest_json
            .as_deref()
            .and_then(|j| serde_json::from_str(j).ok()),
        history: e.history.view(),
    }))
}

async fn remove_node(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    s.admin(&headers)?;
    if s.store.remove(&id).await? {
        tracing::info!("node {id} removed by the operator");
        Ok(Json(serde_json::json!({ "removed": id })))
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no node {id}"),
        ))
    }
}

#[derive(Debug, Deserialize)]
pub struct MetricsQuery {
    /// `false`: only the manager's own families (cheap at any cluster size).
    pub federate: Option<bool>,
}

async fn metrics(
    State(s): State<Shared>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<MetricsQuery>,
) -> Result<Response, ApiError> {
    s.admin(&headers)?;
    let federate = q.federate.unwrap_or(true);
    let now = crate::now_ms();
    let mut out = String::with_capacity(64 << 10);
    let mut counts = [("registered", 0u64), ("up", 0), ("stale", 0), ("down", 0)];
    // Only cheap copies under the lock (the JSON is shared, not copied): parsing and
    // rendering thousands of snapshots happen after it is released, so reports and
    // health checks never wait for a federation scrape.
    let copied: Vec<(String, String, String, Arc<str>)> = {
        let st = s.store.read();
        for e in st.nodes.values() {
            let idx = match s.summary(e, now).status {
                NodeStatus::Registered => 0,
                NodeStatus::Up => 1,
                NodeStatus::Stale => 2,
                NodeStatus::Down => 3,
            };
            counts[idx].1 += 1;
        }
        st.node_ids_by_hostname()
            .into_iter()
            .filter(|_| federate)
            .filter_map(|e| {
                Some((
                    e.record.node_id.clone(),
                    e.record.facts.hostname.clone(),
                    e.record.facts.board.clone(),
                    e.latest_json.clone()?,
                ))
            })
            .collect()
    };
    // Off the async workers: at thousands of nodes this takes a good part of a second.
    let out = tokio::task::spawn_blocking(move || {
        let parsed: Vec<(String, String, String, protocol::snapshot::Snapshot)> = copied
            .into_iter()
            .filter_map(|(id, h, b, json)| Some((id, h, b, serde_json::from_str(&json).ok()?)))
            .collect();
        crate::metrics::render_own(&METRICS, &counts, &mut out);
        let labels: Vec<[(&str, &str); 3]> = parsed
            .iter()
            .map(|(id, h, b, _)| {
                [
                    ("node", id.as_str()),
                    ("hostname", h.as_str()),
                    ("board", b.as_str()),
                ]
            })
            .collect();
        let labelled: Vec<protocol::prom::LabelledSnapshot> = parsed
            .iter()
            .zip(&labels)
            .map(|((_, _, _, snap), l)| protocol::prom::LabelledSnapshot {
                labels: l,
                snapshot: snap,
            })
            .collect();
        protocol::prom::render(&labelled, &mut out);
        out
    })
    .await
    .map_err(|e| ApiError::unavailable(format!("rendering /metrics: {e}")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}

//! The HTTP API. Paths and bodies are `protocol::wire`'s; every error is an
//! [`ErrorBody`] with a 4xx/5xx status: 400 malformed, 401 unauthenticated (counted),
//! 404 unknown node, 409 hostname or swarm node taken, 413 too large, 503 engine or
//! store unavailable. Two carry a `code` the agent acts on: `409 reregister` (a genuine
//! credential of a node this manager no longer knows: register again with it) and
//! `401 revoked` (the operator removed the node).
//!
//! | path | method | who |
//! |---|---|---|
//! | `/` | GET | anyone (static page; it asks for the admin token) |
//! | `/v1/ca` | GET | anyone (public CA certificate) |
//! | `/v1/register` | POST | bootstrap token in the body |
//! | `/v1/health` | GET | admin or node |
//! | `/v1/joined`, `/v1/report` | POST | node credential |
//! | `/v1/labels` | PUT [`NodeLabels`] | node credential |
//! | `/v1/nodes`, `/v1/nodes/{id}`, `/metrics` | GET | admin |
//! | `/v1/alerts`, `/v1/alerts/events` | GET | admin |
//!
//! `/metrics?federate=false` leaves out the nodes' snapshots: at thousands of nodes the
//! federation text is large (about 15 KiB per node) and built in memory. It is gzip'd
//! (on the render thread) for a scraper that sends `Accept-Encoding: gzip`.
//! | `/v1/nodes/{id}` | DELETE | admin |
//! | `/v1/nodes/{id}/promote`, `/v1/nodes/{id}/demote` | POST | admin |
//! | `/v1/nodes/{id}/labels` | PUT [`LabelChange`] | admin |
//!
//! Registration by credential (after `409 reregister`) re-adopts the node under the id
//! its credential names, with the facts and labels it sends, and ties it back to its
//! swarm node (the one labelled with its `armada.node-id`, or the only one with its
//! hostname). A node in the revocation list, or one whose engine says it is in this
//! swarm under a node ID the swarm no longer has (`docker node rm`), is refused with
//! `401 revoked`. The bootstrap token buys only the worker join token: a registration
//! saying `"role": "manager"` is answered as a worker and logged.
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
    ErrorBody, JoinedRequest, NodeFacts, NodeLabels, NodeLabelsReply, NodeStatus, NodeSummary,
    RegisterRequest, RegisterResponse, ReportAck, PATH_CA, PATH_HEALTH, PATH_JOINED, PATH_LABELS,
    PATH_METRICS, PATH_NODES, PATH_REGISTER, PATH_REPORT,
};
use serde::{Deserialize, Serialize};

use crate::auth::{self, AuthError, Caller, NodeBearer};
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
    pub alerts: Arc<crate::alerts::AlertService>,
    pub cluster: Arc<ClusterFiles>,
    pub tokens: Arc<TokenFile>,
    pub swarm: Arc<SwarmLink>,
    pub policy: StatusPolicy,
    pub report_interval_seconds: u32,
    /// Rate limits and caps judged before and in the handlers.
    pub gate: crate::gate::Gate,
    /// Sessions, the engine's lists and actions, events and audit (issue #13).
    pub cockpit: Arc<crate::cockpit::Cockpit>,
}

/// How a request proved who it is.
#[derive(Clone, Debug)]
pub enum Via {
    /// `Authorization: Bearer`: no ambient credential, so no CSRF check.
    Bearer,
    /// The session cookie; state changes must carry the session's CSRF token.
    Session(crate::cockpit::session::Session),
}

impl Via {
    /// Who did it, for the audit log (never a secret).
    pub fn actor(&self) -> String {
        match self {
            Via::Bearer => "admin-token".to_string(),
            Via::Session(s) => s.audit_name(),
        }
    }
}

type Shared = Arc<AppState>;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u32>,
    /// `ErrorBody.code`: `reregister`, `revoked`.
    code: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl ToString) -> Self {
        ApiError {
            status,
            message: message.to_string(),
            retry_after: None,
            code: None,
        }
    }
    /// The message the caller gets.
    pub fn message(&self) -> &str {
        &self.message
    }
    pub(crate) fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
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
                code: self.code.map(str::to_string),
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

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unknown(_) => {
                ApiError::new(StatusCode::CONFLICT, e).with_code(protocol::wire::CODE_REREGISTER)
            }
            AuthError::Revoked(_) => {
                ApiError::unauthorized(e).with_code(protocol::wire::CODE_REVOKED)
            }
            AuthError::Missing | AuthError::Invalid => ApiError::unauthorized(e),
        }
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
    /// The caller and how it proved itself: a bearer token when the request has an
    /// `Authorization` header (it wins), else the session cookie.
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Result<(Caller, Via), ApiError> {
        if headers.get(header::AUTHORIZATION).is_none() {
            if let Some(c) = crate::cockpit::session::cookie_value(headers) {
                if let Some(sess) =
                    self.cockpit
                        .sessions
                        .get(&c, &self.cluster.admin_token_hash(), crate::now_ms())
                {
                    return Ok((Caller::Admin, Via::Session(sess)));
                }
                return Err(ApiError::unauthorized(
                    "the session has ended (expired, logged out, admin token rotated or manager restarted): sign in again",
                ));
            }
        }
        Ok((self.bearer_caller(headers)?, Via::Bearer))
    }

    pub(crate) fn caller(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        self.authenticate(headers).map(|(c, _)| c)
    }

    fn bearer_caller(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let token = auth::bearer(
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
        );
        let st = self.store.read();
        let c = &self.cluster;
        Ok(auth::identify(
            token,
            &c.admin_token_hash(),
            &c.credential_key,
            |id| c.revoked.contains(id) || st.revoked.contains_key(id),
            |id| st.nodes.get(id).map(|e| e.record.credential_hash.clone()),
        )?)
    }

    pub(crate) fn admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        self.admin_via(headers).map(|_| ())
    }

    /// The admin, and how they proved it (for the audit log's actor).
    pub(crate) fn admin_via(&self, headers: &HeaderMap) -> Result<Via, ApiError> {
        match self.authenticate(headers)? {
            (Caller::Admin, via) => Ok(via),
            (Caller::Node(_), _) => Err(ApiError::new(
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

    /// A node's status, as [`Self::summary`] gives it, without copying the rest.
    fn status(&self, e: &NodeEntry, now: u64) -> NodeStatus {
        let swarm_state = e
            .record
            .swarm_node_id
            .as_deref()
            .and_then(|s| self.swarm.node_state(s));
        state::node_status(
            now,
            e.record.report_interval_seconds,
            e.last_report_ms,
            swarm_state.as_deref(),
            self.policy,
        )
    }

    pub(crate) fn summary(&self, e: &NodeEntry, now: u64) -> NodeSummary {
        let sid = e.record.swarm_node_id.as_deref();
        let swarm_state = sid.and_then(|s| self.swarm.node_state(s));
        let mut sum = state::summary(e, now, swarm_state, self.policy);
        // The role the swarm gives it (the operator promotes), not the one it asked for.
        if let Some(role) = sid.and_then(|s| self.swarm.node_role(s)) {
            sum.role = role;
        }
        sum
    }
}

pub fn router(state: Shared) -> Router {
    Router::new()
        .merge(crate::dashboard::routes())
        .merge(crate::cockpit::routes())
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
            PATH_LABELS,
            axum::routing::put(node_labels).layer(DefaultBodyLimit::max(MAX_SMALL_BODY)),
        )
        .route(
            PATH_REPORT,
            post(report).layer(DefaultBodyLimit::max(report::MAX_REPORT_BODY)),
        )
        .route(PATH_NODES, get(nodes))
        .route("/v1/nodes/{id}", get(node_detail).delete(remove_node))
        .route("/v1/nodes/{id}/promote", post(promote))
        .route("/v1/nodes/{id}/demote", post(demote))
        .route(
            "/v1/nodes/{id}/labels",
            axum::routing::put(set_labels).layer(DefaultBodyLimit::max(MAX_SMALL_BODY)),
        )
        .route(PATH_METRICS, get(metrics))
        .route(crate::alerts::PATH_ALERTS, get(alerts))
        .route(crate::alerts::PATH_ALERT_EVENTS, get(alert_events))
        .fallback(crate::headers::not_found)
        // Credentials before any body byte is read; then counting; then hygiene
        // (JSON errors, security headers) over every answer, 404 and 405 included.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::gate::check,
        ))
        .layer(axum::middleware::from_fn(count_requests))
        .layer(axum::middleware::from_fn(crate::headers::hygiene))
        .with_state(state)
}

fn route_label(path: &str) -> &'static str {
    match path {
        "/" => "/",
        PATH_CA => PATH_CA,
        PATH_HEALTH => PATH_HEALTH,
        PATH_REGISTER => PATH_REGISTER,
        PATH_JOINED => PATH_JOINED,
        PATH_LABELS => PATH_LABELS,
        PATH_REPORT => PATH_REPORT,
        PATH_NODES => PATH_NODES,
        PATH_METRICS => PATH_METRICS,
        crate::alerts::PATH_ALERTS => crate::alerts::PATH_ALERTS,
        crate::alerts::PATH_ALERT_EVENTS => crate::alerts::PATH_ALERT_EVENTS,
        p => match crate::cockpit::handlers::route_label(p) {
            Some(l) => l,
            None if p.starts_with("/v1/nodes/") => "/v1/nodes/{id}",
            None => "other",
        },
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
    if let Some(e) = &f.engine_id {
        if e.is_empty()
            || e.len() > 128
            || !e
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b":-".contains(&b))
        {
            return Err(ApiError::bad_request(
                "facts.engine_id must be the engine's ID (1-128 characters: letters, digits, `:` and `-`)",
            ));
        }
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
    // The proof first: nothing else is revealed to a caller without it. A credential
    // names the node it re-adopts; the bootstrap token makes or finds one.
    let readopt = match req.credential.as_deref().filter(|c| !c.trim().is_empty()) {
        Some(c) => {
            let st = s.store.read();
            let k = &s.cluster;
            match auth::check_node(
                c,
                &k.credential_key,
                |id| k.revoked.contains(id) || st.revoked.contains_key(id),
                |id| st.nodes.get(id).map(|e| e.record.credential_hash.clone()),
            )? {
                NodeBearer::Known(id) => Some((id, true)),
                NodeBearer::Unknown(id) => Some((id, false)),
            }
        }
        None => {
            auth::check_bootstrap(&req.token, &s.cluster.fingerprint, &s.tokens.accepted())
                .map_err(ApiError::unauthorized)?;
            None
        }
    };
    if req.protocol != protocol::PROTOCOL_VERSION {
        return Err(ApiError::bad_request(format!(
            "the agent speaks protocol {}, this manager speaks protocol {}",
            req.protocol,
            protocol::PROTOCOL_VERSION
        )));
    }
    validate_facts(&req.facts)?;
    validate_labels(&req.labels)?;
    if !matches!(readopt, Some((_, true))) {
        let st = s.store.read();
        if matches!(st.decide_register(&req.facts), state::RegisterDecision::New) {
            s.gate.check_new_node(st.nodes.len())?;
        }
    }
    let mut facts = req.facts;
    let hostname = facts.hostname.clone();
    if facts.role == protocol::wire::Role::Manager {
        // Whoever reads a worker card's token must not become a swarm manager.
        tracing::warn!(
            "registration of `{hostname}` asked for role manager: answered as a worker \
             (swarm managers are made by the operator: `armada-manager nodes promote ID`)"
        );
        facts.role = protocol::wire::Role::Worker;
    }
    if let Some(engine) = &facts.engine_id {
        let st = s.store.read();
        if let Some(other) = st.nodes.values().find(|e| {
            e.record.facts.engine_id.as_deref() == Some(engine.as_str())
                && e.record.facts.hostname != hostname
                && readopt.as_ref().map(|(id, _)| id) != Some(&e.record.node_id)
        }) {
            METRICS.registrations_refused.inc();
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "engine ID {engine} is already registered as node {} (`{}`): two cards share one Docker engine key (/etc/docker/key.json), or one pretends to be the other",
                    other.record.node_id, other.record.facts.hostname
                ),
            ));
        }
    }
    let join = s
        .swarm
        .join_info()
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    // A node the operator took out of this swarm (`docker node rm`) is not re-adopted.
    if let (Some((id, false)), Some(es)) = (&readopt, &req.swarm) {
        let same_swarm = es.cluster_id.as_deref() == Some(join.cluster_id.as_str())
            && !join.cluster_id.is_empty();
        if same_swarm
            && s.swarm
                .inspect(&es.node_id)
                .await
                .map_err(|e| ApiError::unavailable(e.to_string()))?
                .is_none()
        {
            if let Err(e) = s.cluster.revoked.add(id, &hostname, crate::now_ms()) {
                tracing::warn!("recording the revocation of {id}: {e}");
            }
            tracing::warn!(
                "node {id} (`{hostname}`) was removed from the swarm (swarm node {} is gone): not re-adopted, revoked",
                es.node_id
            );
            return Err(ApiError::unauthorized(format!(
                "node {id} was removed from the swarm; flash the card again to bring it back"
            ))
            .with_code(protocol::wire::CODE_REVOKED));
        }
    }
    let wanted_id = readopt.as_ref().map(|(id, _)| id.clone());
    let engine_id = facts.engine_id.clone();
    match s
        .store
        .register_as(wanted_id, facts, req.labels, s.report_interval_seconds)
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
            let readopted = !existing && readopt.is_some();
            if existing {
                METRICS.registrations_existing.inc();
            } else {
                METRICS.registrations_new.inc();
            }
            tracing::info!(
                "{} node {node_id} ({hostname})",
                if readopted {
                    "re-adopted (from its credential)"
                } else if existing {
                    "re-registered"
                } else {
                    "registered"
                }
            );
            let credential = credential
                .parse::<protocol::token::NodeCredential>()
                .map(|c| s.cluster.credential_key.sign(&c).expose())
                .map_err(|e| {
                    ApiError::unavailable(format!("the store made a bad credential: {e}"))
                })?;
            if !existing && readopt.is_none() {
                s.cockpit
                    .record(vec![crate::cockpit::events::NewEvent {
                        at_ms: crate::now_ms(),
                        kind: "node_registered",
                        node_id: Some(node_id.clone()),
                        hostname: Some(hostname.clone()),
                        message: format!("{hostname} registered as node {node_id}"),
                        ..Default::default()
                    }])
                    .await;
            }
            if readopted {
                let who = swarm::Claimant {
                    node_id: &node_id,
                    hostname: &hostname,
                    engine_id: engine_id.as_deref(),
                };
                tie_swarm_node(&s, who, req.swarm.as_ref(), &join).await;
            }
            Ok(Json(RegisterResponse {
                node_id,
                credential,
                swarm_join_token: join.worker_token,
                swarm_managers: join.managers,
                server_time_ms: crate::now_ms(),
                report_interval_seconds: s.report_interval_seconds,
                swarm_cluster_id: (!join.cluster_id.is_empty()).then_some(join.cluster_id),
                swarm_manager_node_ids: join.manager_node_ids,
            }))
        }
    }
}

/// After a re-adoption: finds the node's swarm node in this swarm (the one its engine
/// names, or the one labelled or named for it), records it and puts its labels back.
/// Nothing found (the swarm is new): the agent joins and says so through `/v1/joined`.
async fn tie_swarm_node(
    s: &Shared,
    who: swarm::Claimant<'_>,
    engine: Option<&protocol::wire::EngineSwarm>,
    join: &swarm::JoinInfo,
) {
    let node_id = who.node_id;
    let named = engine
        .filter(|e| e.cluster_id.as_deref() == Some(join.cluster_id.as_str()))
        .map(|e| e.node_id.clone());
    let Some(sid) = named.or_else(|| s.swarm.find_for(who, join)) else {
        return;
    };
    match s.swarm.inspect(&sid).await {
        Ok(Some(view)) => {
            if let Err(e) = swarm::check_claim(&sid, &view, join, who) {
                tracing::warn!("re-adopting {node_id}: {e}");
                return;
            }
        }
        Ok(None) => return,
        Err(e) => {
            tracing::warn!("re-adopting {node_id}: {e}");
            return;
        }
    }
    let record = match s.store.joined(node_id, &sid).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::warn!("re-adopting {node_id}: {e}");
            return;
        }
        Err(e) => {
            tracing::warn!("re-adopting {node_id}: {e}");
            return;
        }
    };
    let want = swarm::wanted_labels(&record);
    match s.swarm.label(&sid, &want).await {
        Ok(_) => tracing::info!("re-adopted node {node_id} is swarm node {sid} again; labelled"),
        Err(e) => tracing::warn!("labelling re-adopted swarm node {sid}: {e}"),
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
    if s.swarm.enabled() {
        let join = s
            .swarm
            .join_info()
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        let view = s
            .swarm
            .inspect(&sid)
            .await
            .map_err(ApiError::unavailable)?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("swarm node {sid} is not known to the manager's engine"),
                )
            })?;
        let who = swarm::Claimant {
            node_id: &node_id,
            hostname: &record.facts.hostname,
            engine_id: record.facts.engine_id.as_deref(),
        };
        swarm::check_claim(&sid, &view, &join, who).map_err(|e| {
            tracing::warn!("node {node_id} tried to claim swarm node {sid}: {e}");
            ApiError::new(StatusCode::FORBIDDEN, e)
        })?;
    }
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
    s.cockpit
        .record(vec![crate::cockpit::events::NewEvent {
            at_ms: crate::now_ms(),
            kind: "node_joined",
            node_id: Some(node_id.clone()),
            hostname: Some(record.facts.hostname.clone()),
            message: format!("{} joined the swarm as {sid}", record.facts.hostname),
            dedupe: Some(format!("joined:{node_id}:{sid}")),
            ..Default::default()
        }])
        .await;
    Ok(Json(JoinedReply {
        node_id,
        swarm_node_id: sid,
        labels: want,
    }))
}

/// `PUT /v1/labels`: the node's own label set, changed in its armada.toml since it
/// registered. Stored, then put on its swarm node when it has joined: only the swarm
/// node the store ties to it, and only while that node still passes the claim check
/// (its hostname, not another registration's, the manager's own only for the agent on
/// the manager's engine). Operator-owned keys keep the operator's value; keys the node
/// dropped are taken off.
async fn node_labels(
    State(s): State<Shared>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<NodeLabelsReply>, ApiError> {
    let node_id = s.node(&headers)?;
    let req: NodeLabels = json(&body(b)?)?;
    validate_labels(&req.labels)?;
    let record = s
        .store
        .read()
        .nodes
        .get(&node_id)
        .map(|e| e.record.clone())
        .ok_or_else(|| ApiError::unauthorized("the node was removed"))?;
    // The claim is checked before anything is stored: a refused node changes nothing.
    let mut view = None;
    if let (Some(sid), true) = (record.swarm_node_id.as_deref(), s.swarm.enabled()) {
        let join = s
            .swarm
            .join_info()
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        if let Some(v) = s.swarm.inspect(sid).await.map_err(ApiError::unavailable)? {
            let who = swarm::Claimant {
                node_id: &node_id,
                hostname: &record.facts.hostname,
                engine_id: record.facts.engine_id.as_deref(),
            };
            swarm::check_claim(sid, &v, &join, who).map_err(|e| {
                tracing::warn!("node {node_id} tried to label swarm node {sid}: {e}");
                ApiError::new(StatusCode::FORBIDDEN, e)
            })?;
            view = Some((sid.to_string(), v));
        }
    }
    let stored = s
        .store
        .set_labels(&node_id, req.labels)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the node was removed"))?;
    let mut reply = NodeLabelsReply {
        node_id: node_id.clone(),
        labels: stored.labels.clone(),
        ..Default::default()
    };
    if let Some((sid, v)) = view {
        let owned = swarm::operator_keys(&v.labels);
        reply.operator_keys = stored
            .labels
            .keys()
            .filter(|k| owned.contains(k))
            .cloned()
            .collect();
        // Stored already: on an engine error the poll puts them on, and the agent asks again.
        reply.removed = s
            .swarm
            .label(&sid, &swarm::wanted_labels(&stored))
            .await
            .map_err(|e| match e {
                swarm::SwarmError::UnknownSwarmNode(_) => ApiError::new(StatusCode::NOT_FOUND, e),
                e => ApiError::unavailable(e),
            })?;
        reply.swarm_node_id = Some(sid);
    }
    tracing::info!(
        "node {node_id} ({}) sent its labels: {}{}",
        stored.facts.hostname,
        protocol::wire::format_labels(&stored.labels),
        match &reply.swarm_node_id {
            Some(sid) => format!("; put on swarm node {sid}"),
            None => "; put on its swarm node once it joins".into(),
        }
    );
    Ok(Json(reply))
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
    // Every snapshot of the batch, not only the newest: an older one's figures are
    // stored too (a batch [huge, small] must not pass on the small one's size).
    if let Some(largest) = decoded.largest_snapshot {
        s.gate.check_stored_snapshot(largest)?;
    }
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
    /// Seconds since the board booted, from the latest snapshot.
    #[serde(default)]
    pub uptime_s: Option<f64>,
    /// The board's clock, from the latest snapshot.
    #[serde(default)]
    pub clock: Option<ClockSummary>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ClockSummary {
    pub synced: bool,
    pub offset_s: f64,
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
    let latest: Option<serde_json::Value> = e
        .latest_json
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok());
    let host = latest.as_ref().map(|l| &l["host"]);
    let clock = host.and_then(|h| {
        let c = &h["clock"];
        Some(ClockSummary {
            synced: c["synced"].as_bool()?,
            offset_s: c["offset_seconds"].as_f64()?,
        })
    });
    Ok(Json(NodeDetail {
        summary: s.summary(e, crate::now_ms()),
        facts: e.record.facts.clone(),
        reports_total: e.reports_total,
        agent_dropped_total: e.agent_dropped_total,
        uptime_s: host.and_then(|h| h["uptime_seconds"].as_f64()),
        clock,
        latest,
        history: e.history.view(),
    }))
}

/// Removes a node: out of the store, into the revocation list beside the cluster
/// material (so no later manager re-adopts it), and out of the swarm.
async fn remove_node(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let via = s.admin_via(&headers)?;
    let r = remove_node_inner(&s, &id).await;
    s.cockpit
        .audit(
            via.actor(),
            "remove",
            &id,
            serde_json::json!({}),
            r.as_ref().err().map(|e| e.message().to_string()),
        )
        .await;
    if let Ok(Json(v)) = &r {
        let host = v["hostname"].as_str().map(str::to_string);
        s.cockpit
            .record(vec![crate::cockpit::events::NewEvent {
                at_ms: crate::now_ms(),
                kind: "node_removed",
                node_id: Some(id.clone()),
                message: format!(
                    "{} (node {id}) removed and revoked by {}",
                    host.as_deref().unwrap_or("?"),
                    via.actor()
                ),
                hostname: host,
                ..Default::default()
            }])
            .await;
    }
    r
}

async fn remove_node_inner(s: &Shared, id: &str) -> Result<Json<serde_json::Value>, ApiError> {
    let id = id.to_string();
    let known = s.store.read().nodes.get(&id).map(|e| {
        (
            e.record.facts.hostname.clone(),
            e.record.swarm_node_id.clone(),
        )
    });
    let Some((hostname, sid)) = known else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no node {id}"),
        ));
    };
    let revocation = s.cluster.revoked.add(&id, &hostname, crate::now_ms());
    if !s.store.remove(&id).await? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no node {id}"),
        ));
    }
    let mut warnings = Vec::new();
    if let Err(e) = &revocation {
        warnings.push(format!(
            "the revocation is not in {} ({e}): a manager started on an empty state dir could re-adopt this node",
            s.cluster.revoked.path().display()
        ));
    }
    if let Some(sid) = &sid {
        if let Err(e) = s.swarm.remove_node(sid).await {
            warnings.push(format!(
                "swarm node {sid} is still in the swarm ({e}): `docker node rm --force {sid}`"
            ));
        }
    }
    for w in &warnings {
        tracing::warn!("removing node {id}: {w}");
    }
    tracing::info!("node {id} ({hostname}) removed and revoked by the operator");
    Ok(Json(serde_json::json!({
        "removed": id,
        "hostname": hostname,
        "swarm_node_id": sid,
        "revocation_file": s.cluster.revoked.path(),
        "warnings": warnings,
    })))
}

/// The swarm node of a registered node, or 404/409.
fn swarm_node_of(s: &AppState, id: &str) -> Result<String, ApiError> {
    let st = s.store.read();
    let e = st
        .nodes
        .get(id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no node {id}")))?;
    e.record.swarm_node_id.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            format!("node {id} has not joined the swarm yet"),
        )
    })
}

fn swarm_error(e: swarm::SwarmError) -> ApiError {
    match e {
        swarm::SwarmError::UnknownSwarmNode(_) => ApiError::new(StatusCode::NOT_FOUND, e),
        e => ApiError::unavailable(e),
    }
}

async fn set_role(
    s: Shared,
    headers: HeaderMap,
    id: String,
    manager: bool,
) -> Result<Json<serde_json::Value>, ApiError> {
    let via = s.admin_via(&headers)?;
    let role = if manager { "manager" } else { "worker" };
    let r = async {
        let sid = swarm_node_of(&s, &id)?;
        s.swarm.set_role(&sid, manager).await.map_err(swarm_error)?;
        Ok::<_, ApiError>(sid)
    }
    .await;
    s.cockpit
        .audit(
            via.actor(),
            if manager { "promote" } else { "demote" },
            &id,
            serde_json::json!({}),
            r.as_ref().err().map(|e| e.message().to_string()),
        )
        .await;
    let sid = r?;
    tracing::info!("node {id} (swarm node {sid}) made a swarm {role} by the operator");
    Ok(Json(
        serde_json::json!({ "node_id": id, "swarm_node_id": sid, "role": role }),
    ))
}

async fn promote(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    set_role(s, headers, id, true).await
}

async fn demote(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    set_role(s, headers, id, false).await
}

/// `PUT /v1/nodes/{id}/labels`: operator labels, which win over the node's own.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct LabelChange {
    #[serde(default)]
    pub set: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

async fn set_labels(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let via = s.admin_via(&headers)?;
    let change: LabelChange = json(&body(b)?)?;
    let params = serde_json::json!({ "set": change.set, "remove": change.remove });
    let r = set_labels_inner(&s, &id, change).await;
    s.cockpit
        .audit(
            via.actor(),
            "labels",
            &id,
            params,
            r.as_ref().err().map(|e| e.message().to_string()),
        )
        .await;
    r
}

async fn set_labels_inner(
    s: &Shared,
    id: &str,
    change: LabelChange,
) -> Result<Json<serde_json::Value>, ApiError> {
    validate_labels(&change.set)?;
    let removed: std::collections::BTreeMap<String, String> = change
        .remove
        .iter()
        .map(|k| (k.clone(), String::new()))
        .collect();
    validate_labels(&removed)?;
    let sid = swarm_node_of(s, id)?;
    let labels = s
        .swarm
        .set_operator_labels(&sid, &change.set, &change.remove)
        .await
        .map_err(swarm_error)?;
    tracing::info!("operator labels on node {id} (swarm node {sid}) changed");
    Ok(Json(
        serde_json::json!({ "node_id": id, "swarm_node_id": sid, "labels": labels }),
    ))
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
    let mut counts = [("registered", 0u64), ("up", 0), ("stale", 0), ("down", 0)];
    // Only cheap copies under the lock (the JSON is shared, not copied), and nothing
    // else: the store's writer waits for this read lock before it can apply a group of
    // reports, and every request's credential check waits behind the writer. Parsing,
    // sorting and rendering happen after it is released. (It was a whole node summary
    // per node for the status counts, and the sort, under the lock.)
    let mut copied: Vec<(String, String, String, Arc<str>)> = {
        let st = s.store.read();
        let mut copied = Vec::with_capacity(if federate { st.nodes.len() } else { 0 });
        for e in st.nodes.values() {
            let idx = match s.status(e, now) {
                NodeStatus::Registered => 0,
                NodeStatus::Up => 1,
                NodeStatus::Stale => 2,
                NodeStatus::Down => 3,
            };
            counts[idx].1 += 1;
            if let Some(json) = e.latest_json.as_ref().filter(|_| federate) {
                copied.push((
                    e.record.node_id.clone(),
                    e.record.facts.hostname.clone(),
                    e.record.facts.board.clone(),
                    json.clone(),
                ));
            }
        }
        copied
    };
    // Hostname order, as `node_ids_by_hostname` gives it (a stable sort of the same map
    // order: equal hostnames keep their order).
    copied.sort_by(|a, b| a.1.cmp(&b.1));
    // Off the async workers, on a low-priority thread of its own (see
    // `metrics::render_federation`): at thousands of nodes this takes seconds of CPU.
    let alerts = s.alerts.clone();
    let gzip = accepts_gzip(&headers);
    let body =
        crate::metrics::stream_federation(gzip, move |flush| {
            let mut out = String::with_capacity(crate::metrics::FEDERATION_CHUNK * 5 / 4);
            crate::metrics::render_own(&METRICS, &counts, &mut out);
            alerts.render_metrics(&mut out);
            // Every snapshot is parsed before the first family: a family's samples of
            // every node go together. The text itself goes out chunk by chunk.
            // Sized once: a parsed snapshot is ~2 KB inline, so a vector grown by doubling
            // (filter_map gives no exact size) held ~1.5 copies of 20 MB at 10,000 nodes.
            let mut parsed: Vec<(String, String, String, protocol::snapshot::Snapshot)> =
                Vec::with_capacity(copied.len());
            parsed.extend(copied.into_iter().filter_map(|(id, h, b, json)| {
                Some((id, h, b, serde_json::from_str(&json).ok()?))
            }));
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
            protocol::prom::render_chunked(
                &labelled,
                &mut out,
                crate::metrics::FEDERATION_CHUNK,
                flush,
            );
        })
        .await
        .map_err(|e| ApiError::unavailable(format!("rendering /metrics: {e}")))?;
    let mut r = (
        [
            (
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            (header::VARY, "Accept-Encoding"),
        ],
        body,
    )
        .into_response();
    if gzip {
        r.headers_mut().insert(
            header::CONTENT_ENCODING,
            header::HeaderValue::from_static("gzip"),
        );
    }
    Ok(r)
}

/// True when `Accept-Encoding` lists gzip without `q=0`.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            coding.eq_ignore_ascii_case("gzip") && !refused
        })
}

async fn alerts(
    State(s): State<Shared>,
    headers: HeaderMap,
) -> Result<Json<crate::alerts::AlertsReport>, ApiError> {
    s.admin(&headers)?;
    let a = s.alerts.clone();
    let r = tokio::task::spawn_blocking(move || a.report())
        .await
        .map_err(|e| ApiError::unavailable(format!("alerts: {e}")))?
        .map_err(|e| ApiError::unavailable(format!("alerts: {e}")))?;
    Ok(Json(r))
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    pub since: Option<i64>,
    pub limit: Option<u32>,
}

async fn alert_events(
    State(s): State<Shared>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<EventsQuery>,
) -> Result<Json<Vec<crate::alerts::durable::EventRow>>, ApiError> {
    s.admin(&headers)?;
    let a = s.alerts.clone();
    let r =
        tokio::task::spawn_blocking(move || a.events(q.since.unwrap_or(0), q.limit.unwrap_or(200)))
            .await
            .map_err(|e| ApiError::unavailable(format!("alerts: {e}")))?
            .map_err(|e| ApiError::unavailable(format!("alerts: {e}")))?;
    Ok(Json(r))
}

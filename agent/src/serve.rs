//! The agent's Prometheus endpoint (`GET /metrics` on `agent.metrics_listen`).
//!
//! It renders the latest snapshot (the one the collector took last; it never collects
//! on request, so a scrape costs no extra reads of `/proc` and `/sys`) with
//! `protocol::prom::render`, followed by the agent's own families: delivery counters,
//! the control plane's status ([`crate::status::render`]: registered, swarm, revoked,
//! last delivery, last error per kind) and the engine's view of each container.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use anyhow::Context;
use hyper::body::{Body, Bytes, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use protocol::prom::{render, LabelledSnapshot};

use crate::report::{lock, Shared};

/// A whole response body in one frame (hyper ships no body type of its own).
pub struct FullBody(Option<Bytes>);

impl Body for FullBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.take().map(|b| Ok(Frame::data(b))))
    }
    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.0.as_ref().map(|b| b.len() as u64).unwrap_or(0))
    }
}

fn respond(status: StatusCode, content_type: &str, text: String) -> Response<FullBody> {
    let mut resp = Response::new(FullBody(Some(Bytes::from(text))));
    *resp.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

/// The text `/metrics` serves.
pub fn exposition(shared: &Shared) -> String {
    let mut out = String::new();
    if let Some(snap) = lock(&shared.latest).as_ref() {
        render(
            &[LabelledSnapshot {
                labels: &[],
                snapshot: snap,
            }],
            &mut out,
        );
    }
    let (backlog, dropped, backlog_bytes) = {
        let b = lock(&shared.backlog);
        (b.len(), b.dropped_total(), b.bytes())
    };
    let stats = lock(&shared.stats).clone();
    let mut family = |name: &str, kind: &str, help: &str, value: String| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    };
    family(
        "armada_agent_backlog_snapshots",
        "gauge",
        "Snapshots kept in memory, not yet acknowledged by the manager.",
        backlog.to_string(),
    );
    family(
        "armada_agent_backlog_dropped_total",
        "counter",
        "Snapshots dropped because the backlog was full.",
        dropped.to_string(),
    );
    family(
        "armada_agent_reports_delivered_total",
        "counter",
        "Snapshots the manager acknowledged.",
        stats.delivered_total.to_string(),
    );
    family(
        "armada_agent_report_failures_total",
        "counter",
        "Report deliveries that failed (manager unreachable or refusing).",
        stats.failed_attempts_total.to_string(),
    );
    family(
        "armada_agent_backlog_bytes",
        "gauge",
        "JSON bytes of the snapshots kept in memory.",
        backlog_bytes.to_string(),
    );
    crate::status::render(&shared.status.get(), &mut out);
    if let Some(snap) = lock(&shared.latest).as_ref() {
        container_engine_families(snap, &mut out);
    }
    out
}

/// What the engine says about each container (state, health, restarts, start time),
/// with the identifying labels of the other `armada_container_*` families.
fn container_engine_families(snap: &protocol::snapshot::Snapshot, out: &mut String) {
    let labels = |c: &protocol::snapshot::ContainerMetrics, extra: &str| {
        let mut l = format!(
            "container_id=\"{}\",container=\"{}\",image=\"{}\"",
            escape(&c.id),
            escape(&c.name),
            escape(&c.image)
        );
        if let Some(s) = &c.service {
            let _ = write!(l, ",service=\"{}\"", escape(s));
        }
        if let Some(t) = &c.task {
            let _ = write!(l, ",task=\"{}\"", escape(t));
        }
        l.push_str(extra);
        l
    };
    type Value = fn(&protocol::snapshot::ContainerMetrics) -> Option<(String, String)>;
    let families: [(&str, &str, &str, Value); 4] = [
        (
            "armada_container_state",
            "gauge",
            "1 for the container's state as the engine reports it (docker ps STATUS).",
            |c| {
                c.state
                    .as_ref()
                    .map(|s| (format!(",state=\"{}\"", escape(s)), "1".into()))
            },
        ),
        (
            "armada_container_health_status",
            "gauge",
            "1 for the container's health check status (healthy, unhealthy, starting).",
            |c| {
                c.health
                    .as_ref()
                    .map(|h| (format!(",health=\"{}\"", escape(h)), "1".into()))
            },
        ),
        (
            "armada_container_restarts_total",
            "counter",
            "Restarts by the engine's restart policy (docker inspect RestartCount).",
            |c| c.restart_count.map(|n| (String::new(), n.to_string())),
        ),
        (
            "armada_container_start_time_seconds",
            "gauge",
            "When the container last started, seconds since the epoch (cAdvisor container_start_time_seconds).",
            |c| c.started_at_seconds.map(|t| (String::new(), format!("{t:.3}"))),
        ),
    ];
    for (name, kind, help, value) in families {
        let mut header = false;
        for c in &snap.containers {
            let Some((extra, v)) = value(c) else { continue };
            if !header {
                let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
                header = true;
            }
            let _ = writeln!(out, "{name}{{{}}} {v}", labels(c, &extra));
        }
    }
}

/// A label value in the text format: backslash, quote and newline escaped.
fn escape(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return std::borrow::Cow::Borrowed(v);
    }
    std::borrow::Cow::Owned(
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n"),
    )
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<FullBody>, Infallible> {
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            exposition(&shared),
        ),
        (&Method::GET, "/") => respond(
            StatusCode::OK,
            "text/plain",
            "armada-agent: see /metrics\n".into(),
        ),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    })
}

/// Binds `listen` and serves until the process ends.
pub async fn bind(listen: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the metrics endpoint on {listen}"))
}

pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("metrics endpoint: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(req, shared.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::snapshot::Snapshot;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn serves_the_agent_counters_over_http() {
        let shared = Shared::new(2, usize::MAX);
        for seq in 0..3 {
            lock(&shared.backlog).push(Snapshot {
                seq,
                ..Default::default()
            });
        }
        let listener = bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, shared.clone()));
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut text = String::new();
        c.read_to_string(&mut text).await.unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(
            text.contains("armada_agent_backlog_snapshots 2\n"),
            "{text}"
        );
        assert!(
            text.contains("armada_agent_backlog_dropped_total 1\n"),
            "{text}"
        );
        assert!(text.contains("armada_agent_registered 0\n"), "{text}");
    }

    #[test]
    fn the_engine_view_of_containers_is_exported_when_known() {
        let shared = Shared::new(2, usize::MAX);
        *lock(&shared.latest) = Some(Snapshot {
            containers: vec![
                protocol::snapshot::ContainerMetrics {
                    id: "abc".into(),
                    name: "web.1".into(),
                    image: "nginx".into(),
                    service: Some("web".into()),
                    state: Some("running".into()),
                    health: Some("unhealthy".into()),
                    restart_count: Some(3),
                    started_at_seconds: Some(1_764_581_974.5),
                    ..Default::default()
                },
                protocol::snapshot::ContainerMetrics {
                    id: "def".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        shared
            .status
            .fail(crate::status::ErrorKind::Swarm, "foreign swarm");
        let text = exposition(&shared);
        let l = r#"container_id="abc",container="web.1",image="nginx",service="web""#;
        assert!(
            text.contains(&format!(
                "armada_container_state{{{l},state=\"running\"}} 1\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "armada_container_health_status{{{l},health=\"unhealthy\"}} 1\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("armada_container_restarts_total{{{l}}} 3\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "armada_container_start_time_seconds{{{l}}} 1764581974.500\n"
            )),
            "{text}"
        );
        assert!(
            !text.contains(r#"container_id="def""#),
            "a container the engine never described has no engine families: {text}"
        );
        assert!(
            text.contains("armada_agent_last_error{kind=\"swarm\"} 1\n"),
            "{text}"
        );
        assert_eq!(
            text.matches("# TYPE armada_container_state gauge").count(),
            1
        );
    }
}

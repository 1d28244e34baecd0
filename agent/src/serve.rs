//! The agent's Prometheus endpoint (`GET /metrics` on `agent.metrics_listen`).
//!
//! It renders the latest snapshot (the one the collector took last; it never collects
//! on request, so a scrape costs no extra reads of `/proc` and `/sys`) with
//! `protocol::prom::render`, followed by the agent's own delivery counters.

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
    let (backlog, dropped) = {
        let b = lock(&shared.backlog);
        (b.len(), b.dropped_total())
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
        "Report deliveries that failed because the manager was unreachable.",
        stats.failed_attempts_total.to_string(),
    );
    out
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
        let shared = Shared::new(2);
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
    }
}

//! Response hygiene, applied to every answer the router gives: security headers, and
//! errors as the JSON [`ErrorBody`] whatever produced them (axum's own 404, 405 and
//! extractor rejections answer in plain text or with an empty body otherwise).
//!
//! - API answers get `Cache-Control: no-store` (they carry node data and credentials)
//!   and a `Content-Security-Policy` that allows nothing, so a JSON body opened in a
//!   browser can never run or load anything.
//! - The dashboard's page gets [`DASHBOARD_CSP`]: its script and style are files of the
//!   same origin, nothing inline, nothing external, no framing.
//! - Everyone gets `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY` and
//!   `Referrer-Policy: no-referrer`.

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use protocol::wire::ErrorBody;

/// The dashboard page's policy: same-origin script, style and fetches only.
pub const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";
/// Every other answer: a document that may do nothing at all.
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'; sandbox";

/// The longest non-JSON error body carried over into the JSON message.
const MAX_ERROR_TEXT: usize = 1024;

/// The middleware: adds the headers and rewrites non-JSON error bodies.
pub async fn hygiene(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let resp = if resp.status().is_client_error() || resp.status().is_server_error() {
        json_error(resp).await
    } else {
        resp
    };
    secure(resp)
}

/// The headers every answer carries; the handler's own Cache-Control and CSP win.
pub fn secure(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(API_CSP));
    resp
}

fn is_json(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// An error answer as an [`ErrorBody`]: a JSON one is kept, another one's text (or the
/// status's reason when it has none) becomes the message. Its other headers stay
/// (`Allow` of a 405, `Retry-After`, `WWW-Authenticate`).
async fn json_error(resp: Response) -> Response {
    if is_json(&resp) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, MAX_ERROR_TEXT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        parts
            .status
            .canonical_reason()
            .unwrap_or("error")
            .to_lowercase()
    } else {
        text
    };
    let json = Json(ErrorBody {
        error: message,
        code: None,
    })
    .into_response();
    let (json_parts, json_body) = json.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (k, v) in json_parts.headers.iter() {
        parts.headers.insert(k, v.clone());
    }
    Response::from_parts(parts, json_body)
}

/// The router's fallback: an unknown path is a JSON 404.
pub async fn not_found(req: Request) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no such path: {}", req.uri().path()),
    )
}

/// A JSON error answer built here (not through a handler's `ApiError`).
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(ErrorBody {
            error: message.into(),
            code: None,
        }),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn empty(status: StatusCode) -> Response {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = status;
        r
    }

    #[tokio::test]
    async fn plain_and_empty_errors_become_json_and_keep_their_headers() {
        let mut r = empty(StatusCode::METHOD_NOT_ALLOWED);
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET,HEAD"));
        let r = json_error(r).await;
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()[header::ALLOW], "GET,HEAD");
        assert!(is_json(&r));
        let b = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let e: ErrorBody = serde_json::from_slice(&b).unwrap();
        assert_eq!(e.error, "method not allowed");

        let r = (
            StatusCode::BAD_REQUEST,
            "Failed to deserialize query string",
        )
            .into_response();
        let r = json_error(r).await;
        let b = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let e: ErrorBody = serde_json::from_slice(&b).unwrap();
        assert_eq!(e.error, "Failed to deserialize query string");
    }

    #[test]
    fn secure_keeps_a_handler_policy_and_adds_the_rest() {
        let mut r = empty(StatusCode::OK);
        r.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(DASHBOARD_CSP),
        );
        let r = secure(r);
        assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], DASHBOARD_CSP);
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(r.headers()[header::REFERRER_POLICY], "no-referrer");
        assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }
}

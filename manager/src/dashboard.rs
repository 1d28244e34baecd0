//! The dashboard: one static page, its script and its style sheet, embedded in the
//! binary and served without authentication (they hold no data). The page asks once for
//! the admin token (or takes it from a `#token=...` fragment, which never reaches the
//! server), keeps it in the browser's localStorage and polls `GET /v1/nodes` every 5 s.
//!
//! Script and style are separate same-origin files, never inline, so the page runs
//! under [`crate::headers::DASHBOARD_CSP`] (`script-src 'self'`, no `'unsafe-inline'`):
//! a node-supplied string that slipped past the page's escaping still could not run.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::headers::DASHBOARD_CSP;

pub const INDEX_HTML: &str = include_str!("dashboard.html");
pub const SCRIPT_JS: &str = include_str!("dashboard.js");
pub const STYLE_CSS: &str = include_str!("dashboard.css");

pub const PATH_SCRIPT: &str = "/dashboard.js";
pub const PATH_STYLE: &str = "/dashboard.css";

/// `/`, `/dashboard.js`, `/dashboard.css`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route(PATH_SCRIPT, get(script))
        .route(PATH_STYLE, get(style))
}

/// Paths anyone may fetch.
pub fn is_dashboard_path(path: &str) -> bool {
    matches!(path, "/" | PATH_SCRIPT | PATH_STYLE)
}

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, DASHBOARD_CSP),
        ],
        INDEX_HTML,
    )
        .into_response()
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        SCRIPT_JS,
    )
        .into_response()
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        STYLE_CSS,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_polls_the_nodes_api_with_a_bearer_token() {
        assert!(SCRIPT_JS.contains("/v1/nodes"));
        assert!(SCRIPT_JS.contains("Bearer"));
        for f in [INDEX_HTML, SCRIPT_JS, STYLE_CSS] {
            assert!(!f.contains("http://"), "no external resources");
            assert!(!f.contains("https://"), "no external resources");
        }
    }

    /// ` onclick=`-like attributes: ` on` then letters then `=`.
    fn has_event_handler(html: &str) -> bool {
        html.match_indices(" on").any(|(i, _)| {
            let rest = &html[i + 3..];
            let letters = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
            letters > 0 && rest[letters..].starts_with('=')
        })
    }

    #[test]
    fn page_has_nothing_inline_that_the_policy_would_block() {
        let lower = INDEX_HTML.to_lowercase();
        assert!(lower.contains(&format!("<script src=\"{PATH_SCRIPT}\"></script>")));
        assert_eq!(lower.matches("<script").count(), 1, "one external script");
        assert!(!lower.contains("<style"), "no inline style element");
        assert!(!lower.contains(" style="), "no style attribute");
        assert!(!has_event_handler(&lower), "no inline event handler");
        assert!(!lower.contains("javascript:"));
        assert!(
            !SCRIPT_JS.contains("style=\""),
            "no style attribute in generated markup"
        );
        assert!(!SCRIPT_JS.contains("eval("));
    }
}

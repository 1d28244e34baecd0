//! The dashboard (the operator's cockpit): a static page, its style sheet and its plain
//! JavaScript modules, all from `manager/web/`, embedded in the binary and served
//! without authentication (they hold no data; every figure comes from the API).
//!
//! Layout:
//! - `web/index.html` at `/`, `web/dashboard.css`, `web/dashboard.js` (the entry
//!   module: session, hash router, header counts);
//! - `web/ui/*.js` at `/ui/*.js`: one module per view (`cluster`, `node`, `services`,
//!   `events`) plus `api` (fetch with the session cookie and the CSRF header),
//!   `charts` (SVG line charts), `dialog` (the confirmation of admin actions), `util`.
//!
//! The page logs in by exchanging the admin token for the HttpOnly session cookie
//! (`POST /v1/session`); the CSRF value lives in the module's memory only, never in
//! localStorage. Script and style are same-origin files, never inline, so the page runs
//! under [`crate::headers::DASHBOARD_CSP`] (`script-src 'self'`, no `'unsafe-inline'`):
//! a node-supplied string that slipped past the page's escaping still could not run.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::headers::DASHBOARD_CSP;

pub const INDEX_HTML: &str = include_str!("../web/index.html");
pub const PATH_SCRIPT: &str = "/dashboard.js";
pub const PATH_STYLE: &str = "/dashboard.css";

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every file the page loads besides `/`: (path, content type, body).
pub const ASSETS: &[(&str, &str, &str)] = &[
    (PATH_SCRIPT, JS, include_str!("../web/dashboard.js")),
    (PATH_STYLE, CSS, include_str!("../web/dashboard.css")),
    ("/ui/api.js", JS, include_str!("../web/ui/api.js")),
    ("/ui/charts.js", JS, include_str!("../web/ui/charts.js")),
    ("/ui/cluster.js", JS, include_str!("../web/ui/cluster.js")),
    ("/ui/dialog.js", JS, include_str!("../web/ui/dialog.js")),
    ("/ui/events.js", JS, include_str!("../web/ui/events.js")),
    ("/ui/node.js", JS, include_str!("../web/ui/node.js")),
    ("/ui/services.js", JS, include_str!("../web/ui/services.js")),
    ("/ui/util.js", JS, include_str!("../web/ui/util.js")),
];

/// The page's own weight budget (issue #13): all assets together.
pub const MAX_ASSET_BYTES: usize = 300 * 1024;

/// `/` and every file of [`ASSETS`].
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut r = Router::new().route("/", get(index));
    for &(path, kind, body) in ASSETS {
        r = r.route(path, get(move || asset(kind, body)));
    }
    r
}

/// Paths anyone may fetch.
pub fn is_dashboard_path(path: &str) -> bool {
    path == "/" || ASSETS.iter().any(|(p, _, _)| *p == path)
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

async fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            // Revalidated each load: a manager upgrade is seen at once.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_files() -> impl Iterator<Item = (&'static str, &'static str)> {
        std::iter::once(("/", INDEX_HTML)).chain(ASSETS.iter().map(|&(p, _, b)| (p, b)))
    }

    #[test]
    fn assets_stay_within_the_weight_budget() {
        let total: usize = all_files().map(|(_, b)| b.len()).sum();
        println!(
            "dashboard assets: {total} bytes in {} files",
            ASSETS.len() + 1
        );
        assert!(
            total <= MAX_ASSET_BYTES,
            "{total} bytes > {MAX_ASSET_BYTES}"
        );
    }

    #[test]
    fn page_uses_the_session_cookie_and_csrf_never_local_storage() {
        let api = ASSETS.iter().find(|a| a.0 == "/ui/api.js").map(|a| a.2);
        let api = api.unwrap_or_default();
        assert!(api.contains("X-Armada-CSRF"));
        assert!(api.contains("credentials: \"same-origin\""));
        for (path, body) in all_files() {
            assert!(!body.contains("localStorage"), "{path} uses localStorage");
            assert!(
                !body.contains("sessionStorage"),
                "{path} uses sessionStorage"
            );
            assert!(!body.contains("Bearer"), "{path} sends the token itself");
        }
    }

    #[test]
    fn no_external_resources_and_every_import_is_served() {
        for (path, body) in all_files() {
            assert!(!body.contains("http://"), "{path}: external resource");
            assert!(!body.contains("https://"), "{path}: external resource");
            // `from "./x.js"` / `from "/ui/x.js"`: the target must be one of ASSETS.
            for (i, _) in body.match_indices(" from \"") {
                let rest = &body[i + 7..];
                let spec = &rest[..rest.find('"').unwrap_or(0)];
                let abs = match spec.strip_prefix("./") {
                    Some(name) => format!("/ui/{name}"),
                    None => spec.to_string(),
                };
                assert!(is_dashboard_path(&abs), "{path} imports {spec}, not served");
            }
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
        assert!(lower.contains(&format!(
            "<script type=\"module\" src=\"{PATH_SCRIPT}\"></script>"
        )));
        assert_eq!(lower.matches("<script").count(), 1, "one external script");
        assert!(!lower.contains("<style"), "no inline style element");
        assert!(!lower.contains(" style="), "no style attribute");
        assert!(!has_event_handler(&lower), "no inline event handler");
        assert!(!lower.contains("javascript:"));
        for (path, body) in ASSETS.iter().map(|&(p, _, b)| (p, b)) {
            assert!(
                !body.contains("style=\""),
                "{path}: style attribute in markup"
            );
            assert!(!body.contains("eval("), "{path}: eval");
            assert!(!body.contains("new Function"), "{path}: new Function");
            assert!(!has_event_handler(body), "{path}: inline handler in markup");
        }
    }

    #[test]
    fn every_asset_is_public_and_nothing_else_is() {
        for (p, _, _) in ASSETS {
            assert!(is_dashboard_path(p));
        }
        assert!(is_dashboard_path("/"));
        assert!(!is_dashboard_path("/ui/"));
        assert!(!is_dashboard_path("/ui/secret.js"));
        assert!(!is_dashboard_path("/v1/nodes"));
    }
}

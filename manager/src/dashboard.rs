//! The dashboard: one static page embedded in the binary, served at `/` without
//! authentication (it holds no data). It asks once for the admin token (or takes it
//! from a `#token=...` fragment, which never reaches the server), keeps it in the
//! browser's localStorage and polls `GET /v1/nodes` every 5 s.

pub const INDEX_HTML: &str = include_str!("dashboard.html");

#[cfg(test)]
mod tests {
    #[test]
    fn page_polls_the_nodes_api_with_a_bearer_token() {
        assert!(super::INDEX_HTML.contains("/v1/nodes"));
        assert!(super::INDEX_HTML.contains("Bearer"));
        assert!(
            !super::INDEX_HTML.contains("http://"),
            "no external resources"
        );
    }
}

//! `GET /v1/openapi.json`: the OpenAPI 3 description of the whole API, the checked-in
//! `manager/openapi.json`, served as is.
//!
//! Hand-written rather than generated (utoipa): the wire types live in `protocol`,
//! shared with the agent, which would need the derive too, and every handler an
//! annotation; a file plus tests that hold it to the router (every route is in it, see
//! `tests/cockpit_openapi.rs`) and to the answers (schemathesis in the cluster tier,
//! `ci/schemathesis-test.sh`) costs less and keeps the document readable.
//!
//! Public, like `/v1/ca`: it describes the API of a public repository, carries no
//! data of this cluster, and a client needs it before it has a credential.

use axum::http::header;
use axum::response::{IntoResponse, Response};

pub const PATH: &str = "/v1/openapi.json";

/// The document.
pub const DOCUMENT: &str = include_str!("../../openapi.json");

pub async fn serve() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT).into_response()
}

//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` and the types' `ToSchema` derives.
//! `docs/openapi.json` is this document, committed; a test fails when they differ (`TIDINGS_BLESS=1` rewrites it).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{ErrorBody, ErrorDetail, channels, messages};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "tidings",
        description = "The HTTP API of tidings, a durable outbound-message queue on PostgreSQL. Bearer tokens with scopes `produce` (enqueue, read a message by id), `read` (list, channels, stats) and `admin` (implies read; cancel, retry, reschedule, pause, resume).",
        license(name = "MIT OR Apache-2.0"),
    ),
    paths(
        messages::enqueue_one,
        messages::enqueue_batch,
        messages::list,
        messages::get_one,
        channels::list,
        channels::stats,
        crate::api::ui::timeline::timeline,
        messages::cancel_one,
        messages::retry_one,
        messages::reschedule_one,
        messages::cancel_bulk,
        messages::retry_bulk,
        messages::reschedule_bulk,
        channels::pause,
        channels::resume,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&BearerAuth),
    tags(
        (name = "messages", description = "Enqueue, read and list messages"),
        (name = "channels", description = "Channels and statistics"),
        (name = "actions", description = "Operator actions (scope admin); each writes an event `operator_<action>` naming the token"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as pretty JSON with a trailing newline (what `docs/openapi.json` holds).
pub fn json() -> String {
    let mut doc = ApiDoc::openapi();
    // The crate's version is not part of the API's contract: keep the committed file stable across releases.
    doc.info.version = "1".into();
    let mut text = doc.to_pretty_json().expect("the document serializes");
    text.push('\n');
    text
}

/// `GET /v1/openapi.json`. No token needed: the document is public.
pub async fn document() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        json(),
    )
}

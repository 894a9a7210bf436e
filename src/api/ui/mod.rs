//! The dashboard at `/` of `tidings serve`: one HTML shell, one script and one stylesheet, hand-written and
//! embedded in the binary (no build step, no CDN). The page is a client of the `/v1` API only, authenticated by the
//! session cookie of [`session`]; it routes on the client (`/`, `/messages?…`, `/messages/{id}`, `/login`), and the
//! server answers every one of those paths with the same shell.
//!
//! # Layout
//!
//! - [`assets`]: the embedded files, served under a content hash so a cache never serves a stale one.
//! - [`session`]: login, logout and the in-memory sessions with their CSRF tokens.
//! - [`timeline`]: `GET /v1/stats/timeline`, the chart's per-minute counts.

use axum::Router;
use axum::routing::{get, post};

use crate::api::AppState;

pub mod assets;
pub mod session;
pub mod timeline;

/// The dashboard's routes, merged into the API's router.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(assets::page))
        .route("/login", get(assets::page))
        .route("/messages", get(assets::page))
        .route("/messages/{id}", get(assets::page))
        .route("/ui/assets/{file}", get(assets::asset))
        .route("/ui/session", post(session::login))
        .route("/ui/logout", post(session::logout))
        .route("/ui/me", get(session::me))
        .route("/v1/stats/timeline", get(timeline::timeline))
}

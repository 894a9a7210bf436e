//! The HTTP API of `tidings serve`: JSON under `/v1` for producers (enqueue with `Idempotency-Key`, read a message)
//! and operators (list, channels, stats), bearer tokens with scopes, described by the OpenAPI 3.1 document at
//! `/v1/openapi.json` (generated from these types, committed as `docs/openapi.json`).
//!
//! # Layout
//!
//! - [`auth`]: tokens from the environment, constant-time matching, scopes.
//! - [`messages`]: enqueue, read one, list.
//! - [`channels`]: channels and stats.
//! - [`openapi`]: the document.
//!
//! Handlers are thin: every read and write goes through a [`Store`] function. Every error is a JSON
//! [`ErrorBody`] with a 4xx status naming the field and the rule; a 500 means the database failed.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::provider::credentials::Env;
use crate::store::Store;

pub mod auth;
pub mod batcher;
pub mod channels;
pub mod messages;
pub mod openapi;
pub mod ui;

pub use auth::{Caller, Tokens};

/// What every handler shares. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// The configured tokens.
    pub tokens: Tokens,
    /// The dashboard's sessions.
    pub sessions: crate::api::ui::session::Sessions,
    /// Group commit of single-message enqueues.
    pub batcher: batcher::EnqueueBatcher,
}

/// The error answer: `{"error": {"code", "field", "rule", "index"}}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable word: `invalid` (422), `bad_request`, `unauthorized`, `forbidden`, `not_found`, `conflict`,
    /// `payload_too_large`, `method_not_allowed`, `internal`.
    pub code: String,
    /// The field, header or query parameter at fault, as a JSON path into the message for `invalid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The rule it broke, in words.
    pub rule: String,
    /// The message's position in a batch (0-based).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}

/// An error answered as JSON.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    /// An error with `status`, a `code` word, the field at fault and the rule.
    pub fn new(status: StatusCode, code: &str, field: Option<&str>, rule: String) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                error: ErrorDetail {
                    code: code.into(),
                    field: field.map(str::to_owned),
                    rule,
                    index: None,
                },
            },
        }
    }

    /// 400 naming `field`.
    pub fn bad_request(field: &str, rule: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            Some(field),
            rule.into(),
        )
    }

    /// 422 from the SQL validation.
    pub fn invalid(field: String, rule: String, index: Option<usize>) -> Self {
        let mut e = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", None, rule);
        e.body.error.field = Some(field);
        e.body.error.index = index;
        e
    }

    /// 404.
    pub fn not_found(rule: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", None, rule.into())
    }

    /// 409.
    pub fn conflict(field: Option<&str>, rule: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", field, rule.into())
    }

    /// The status (tests).
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The rule broken, in words (the CLI reports a filter error of [`messages::ListFilter`] under its flag).
    pub fn rule(&self) -> &str {
        &self.body.error.rule
    }

    /// A body that could not be read: too large (413) or cut off (400).
    pub fn from_body(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                Some("body"),
                "is larger than api.max_body".into(),
            )
        } else {
            Self::bad_request("body", rejection.body_text())
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        // The database failed (not the request): logged in full, answered without internals.
        tracing::error!(error = %e, "api request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            None,
            "the database could not answer; retry later".into(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// The `/v1` routes over `state`, with bodies limited to `max_body` bytes.
pub fn router(state: AppState, max_body: usize) -> Router {
    Router::new()
        .route(
            "/v1/messages",
            post(messages::enqueue_one).get(messages::list),
        )
        .route("/v1/messages/batch", post(messages::enqueue_batch))
        .route("/v1/messages/{id}", get(messages::get_one))
        .route("/v1/messages/{id}/cancel", post(messages::cancel_one))
        .route("/v1/messages/{id}/retry", post(messages::retry_one))
        .route(
            "/v1/messages/{id}/reschedule",
            post(messages::reschedule_one),
        )
        .route("/v1/messages/cancel", post(messages::cancel_bulk))
        .route("/v1/messages/retry", post(messages::retry_bulk))
        .route("/v1/messages/reschedule", post(messages::reschedule_bulk))
        .route("/v1/channels/{name}/pause", post(channels::pause))
        .route("/v1/channels/{name}/resume", post(channels::resume))
        .route("/v1/channels", get(channels::list))
        .route("/v1/stats", get(channels::stats))
        .route("/v1/openapi.json", get(openapi::document))
        .merge(crate::api::ui::router())
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                None,
                "this endpoint does not take that method".into(),
            )
        })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Reads the tokens through `env` and checks the listen address: without any token the API only listens on
/// loopback.
pub fn tokens(config: &Config, env: Env) -> Result<Tokens> {
    let tokens = Tokens::from_config(&config.api, env)?;
    if tokens.is_empty() && !config.api.listen.ip().is_loopback() {
        return Err(Error::Config(format!(
            "api.tokens: no token is configured, so the API refuses to listen on the non-loopback address {}",
            config.api.listen
        )));
    }
    Ok(tokens)
}

/// Binds `config.api.listen` and serves the API until `shutdown`; returns the bound address once listening and the
/// task serving it (it also deletes idempotency keys older than 24 h, hourly).
pub async fn start(
    config: &Config,
    store: Store,
    env: Env<'_>,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let tokens = tokens(config, env)?;
    let listener = tokio::net::TcpListener::bind(config.api.listen).await?;
    let addr = listener.local_addr()?;
    let app = router(
        AppState {
            store: store.clone(),
            tokens,
            sessions: Default::default(),
            batcher: batcher::EnqueueBatcher::start(store.clone()),
        },
        config.api.max_body,
    );
    let handle = tokio::spawn(async move {
        let pruner = tokio::spawn(prune_keys(store, shutdown.clone()));
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "api listener failed");
        }
        pruner.abort();
    });
    Ok((addr, handle))
}

/// `tidings serve`: checks the database is migrated, then serves the API until `shutdown`.
pub async fn serve(config: Config, store: Store, shutdown: CancellationToken) -> Result<()> {
    if !store.migrations_current().await? {
        return Err(Error::Config(
            "the database is not migrated to this version: run `tidings migrate` first".into(),
        ));
    }
    // Enqueue refuses a callback_url outside [callbacks] allowed_hosts: the API's view of them is the config's.
    store.callback_hosts_sync(&config).await?;
    let (addr, handle) = start(&config, store, &|var| std::env::var(var).ok(), shutdown).await?;
    tracing::info!(%addr, tokens = config.api.tokens.len(), "serving the HTTP API on /v1");
    tracing::info!(url = %format!("http://{addr}/"), "serving the dashboard");
    handle
        .await
        .map_err(|e| Error::Other(format!("api task: {e}")))
}

async fn prune_keys(store: Store, shutdown: CancellationToken) {
    loop {
        match store.api_idempotency_prune().await {
            Ok(n) if n > 0 => tracing::info!(deleted = n, "expired idempotency keys deleted"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "idempotency key clean-up failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Parses a query string into pairs, refusing keys outside `allowed` and repeated keys (400 naming the key).
pub fn query_pairs<'a>(
    raw: Option<&str>,
    allowed: &[&'a str],
) -> std::result::Result<Vec<(&'a str, String)>, ApiError> {
    let mut out: Vec<(&'a str, String)> = Vec::new();
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let Some(key) = allowed.iter().find(|a| **a == k) else {
            return Err(ApiError::bad_request(
                &k,
                format!("unknown query parameter (known: {})", allowed.join(", ")),
            ));
        };
        if out.iter().any(|(seen, _)| seen == key) {
            return Err(ApiError::bad_request(key, "given more than once"));
        }
        out.push((key, v.into_owned()));
    }
    Ok(out)
}

/// Parses a JSON body into `T`: 400 when it is not JSON, 422 naming the rule when it has the wrong shape.
pub fn parse_body<T: serde::de::DeserializeOwned>(
    body: std::result::Result<axum::body::Bytes, BytesRejection>,
) -> std::result::Result<T, ApiError> {
    let body = body.map_err(ApiError::from_body)?;
    serde_json::from_slice(&body).map_err(|e| {
        if e.is_data() {
            ApiError::invalid("body".into(), e.to_string(), None)
        } else {
            ApiError::bad_request("body", format!("must be JSON: {e}"))
        }
    })
}

impl From<crate::operator::Refusal> for ApiError {
    fn from(r: crate::operator::Refusal) -> Self {
        use crate::operator::Refusal;
        match r {
            Refusal::Invalid { field, rule } => ApiError::invalid(field.into(), rule, None),
            Refusal::NotFound(rule) => ApiError::not_found(rule),
            Refusal::Conflict { field, rule } => ApiError::conflict(field, rule),
        }
    }
}

//! The worker's inbound HTTP listener: `/metrics`, `/healthz`, `/readyz` and `POST /receipts/{channel}`.
//!
//! # Receipts
//!
//! `POST /receipts/{channel}` hands a provider's delivery receipt to [`Receipts::apply`] (see
//! [`crate::receipts`] for the headers, the signature scheme and the body) and maps its answer, each with a
//! one-line JSON body:
//!
//! | answer | when |
//! | --- | --- |
//! | 200 `{"message_id", "status", "changed": true}` | the message moved `sent` → `delivered` / `delivery_failed` (one event row) |
//! | 200 `{"message_id", "status", "changed": false}` | already final (a duplicate, or a late receipt contradicting the first): nothing written |
//! | 200 `{"ignored": "<status>"}` | an intermediate status (`accepted`, `sent`, …): acknowledged, nothing written |
//! | 400 `{"error": "<field>: <rule>"}` | the body is not a receipt |
//! | 401 `{"error": "<header>: <rule>"}` | a signature header is missing, malformed or wrong, or the timestamp is stale |
//! | 404 `{"error": …}` | unknown channel, a channel without `receipt_secret_env`, or no such message on the channel |
//! | 409 `{"error": …}` + `Retry-After` | the message is not `sent` yet (still `accepted`/`scheduled`/`processing`): the provider should retry |
//! | 413 `{"error": …}` | the body is over 64 KiB |
//! | 503 `{"error": …}` | the database did not answer: the provider should retry |

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use serde_json::{Value, json};
use tidings_client::Status;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::metrics::Metrics;
use crate::receipts::{self, MAX_RECEIPT_BODY, ReceiptAnswer, ReceiptRequest, Receipts};
use crate::store::Store;

/// What a 409 asks the provider to wait before retrying, in seconds.
const RETRY_AFTER_SECS: u64 = 5;

#[derive(Clone)]
struct AppState {
    store: Store,
    metrics: Metrics,
    receipts: Receipts,
}

/// The routes, for tests that serve them on their own listener.
pub(crate) fn router(store: Store, metrics: Metrics, receipts: Receipts) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route(
            "/receipts/{channel}",
            post(receipt).layer(DefaultBodyLimit::max(MAX_RECEIPT_BODY)),
        )
        .with_state(AppState {
            store,
            metrics,
            receipts,
        })
}

/// Serves the routes on `listen` until `stop`; returns the bound address once listening.
pub async fn serve(
    listen: SocketAddr,
    store: Store,
    metrics: Metrics,
    receipts: Receipts,
    stop: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = router(store, metrics, receipts);
    let handle = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "http listener failed");
        }
    });
    Ok((addr, handle))
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// 200 when the database answers and every migration is applied; 503 (with the reason) otherwise.
async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let check = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        state.store.migrations_current(),
    )
    .await;
    match check {
        Ok(Ok(true)) => (StatusCode::OK, "ready\n".to_owned()),
        Ok(Ok(false)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "migrations pending: run `tidings migrate`\n".to_owned(),
        ),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("database unavailable: {e}\n"),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "database did not answer within 2s\n".to_owned(),
        ),
    }
}

/// A one-line JSON answer.
fn answer(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn refuse(status: StatusCode, error: impl std::fmt::Display) -> Response {
    answer(status, json!({ "error": error.to_string() }))
}

/// `POST /receipts/{channel}`: see the module docs for the answers.
async fn receipt(
    State(state): State<AppState>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body: must be at most {MAX_RECEIPT_BODY} bytes"),
            );
        }
        Err(rejection) => {
            return refuse(
                rejection.status(),
                format!("body: {}", rejection.body_text()),
            );
        }
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let answer_of = state
        .receipts
        .apply(
            &state.store,
            &state.metrics,
            &ReceiptRequest {
                channel: &channel,
                timestamp: header(receipts::TIMESTAMP_HEADER),
                signature: header(receipts::SIGNATURE_HEADER),
                body: &body,
                now: Utc::now(),
            },
        )
        .await;
    match answer_of {
        ReceiptAnswer::Applied {
            message_id,
            status,
            changed,
        } => answer(
            StatusCode::OK,
            json!({ "message_id": message_id, "status": status, "changed": changed }),
        ),
        ReceiptAnswer::NotYet { message_id, status } => {
            let why = if status == Status::Sent {
                format!("message {message_id} changed meanwhile: retry later")
            } else {
                format!("message {message_id} is {status}, not sent yet: retry later")
            };
            let mut response = refuse(StatusCode::CONFLICT, why);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, RETRY_AFTER_SECS.into());
            response
        }
        ReceiptAnswer::Ignored { status } => answer(StatusCode::OK, json!({ "ignored": status })),
        ReceiptAnswer::BadBody(e) => refuse(StatusCode::BAD_REQUEST, e),
        ReceiptAnswer::Unauthorized(e) => refuse(StatusCode::UNAUTHORIZED, e),
        ReceiptAnswer::NotFound(e) => refuse(StatusCode::NOT_FOUND, e),
        ReceiptAnswer::Unavailable => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "database unavailable: retry later",
        ),
    }
}

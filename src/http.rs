//! The worker's HTTP listener: `/metrics`, `/healthz`, `/readyz` and `POST /receipts/{channel}`.
//!
//! # Receipts
//!
//! `POST /receipts/{channel}` takes a provider's delivery receipt for a message of `channel` (see
//! [`crate::receipts`] for the headers, the signature scheme and the body). A channel takes receipts only when
//! its config names the environment variable holding the shared secret (`receipt_secret_env`); the variable is
//! read once at startup. The answers, each with a one-line JSON body:
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
//!
//! A channel without a secret answers 404, like an unknown one: from outside, "does not take receipts" and "does
//! not exist" look the same, and a receipt is never accepted unsigned.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::Config;
use crate::error::Result;
use crate::metrics::Metrics;
use crate::provider::credentials::{self, Env, Secret};
use crate::receipts::{self, ReceiptBody, ReceiptStatus};
use crate::store::{ReceiptParams, Store};

/// Largest receipt body accepted.
pub const MAX_RECEIPT_BODY: usize = 64 * 1024;

/// What a 409 asks the provider to wait before retrying, in seconds.
const RETRY_AFTER_SECS: u64 = 5;

/// The channel setting naming the environment variable that holds a channel's receipt secret.
pub const RECEIPT_SECRET_SETTING: &str = "receipt_secret_env";

/// The receipt secret of every channel that takes receipts, read once at startup. Cheap to clone.
#[derive(Clone, Default)]
pub struct ReceiptSecrets(Arc<BTreeMap<String, Secret>>);

impl std::fmt::Debug for ReceiptSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl ReceiptSecrets {
    /// Reads the secret of every channel with `receipt_secret_env` through `env`. A named variable that is
    /// missing or empty is a config error naming the setting and the variable (never the value).
    pub fn from_config(config: &Config, env: Env) -> Result<Self> {
        let mut secrets = BTreeMap::new();
        for (name, channel) in &config.channels {
            if channel.settings.contains_key(RECEIPT_SECRET_SETTING) {
                let secret = credentials::from_env(name, channel, RECEIPT_SECRET_SETTING, env)?;
                secrets.insert(name.clone(), secret);
            }
        }
        Ok(ReceiptSecrets(Arc::new(secrets)))
    }

    /// Builds the set directly (tests).
    pub fn from_map(secrets: BTreeMap<String, Secret>) -> Self {
        ReceiptSecrets(Arc::new(secrets))
    }

    /// The channels that take receipts.
    pub fn channels(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }

    fn get(&self, channel: &str) -> Option<&Secret> {
        self.0.get(channel)
    }
}

#[derive(Clone)]
struct AppState {
    store: Store,
    metrics: Metrics,
    receipts: ReceiptSecrets,
}

/// The routes, for tests that serve them on their own listener.
pub fn router(store: Store, metrics: Metrics, receipts: ReceiptSecrets) -> Router {
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
    receipts: ReceiptSecrets,
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
    let Some(secret) = state.receipts.get(&channel) else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("channel {channel:?} does not take receipts"),
        );
    };
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
    let (Some(timestamp), Some(signature)) = (
        header(receipts::TIMESTAMP_HEADER),
        header(receipts::SIGNATURE_HEADER),
    ) else {
        let missing = if header(receipts::TIMESTAMP_HEADER).is_none() {
            receipts::TIMESTAMP_HEADER
        } else {
            receipts::SIGNATURE_HEADER
        };
        return refuse(StatusCode::UNAUTHORIZED, format!("{missing}: is required"));
    };
    if let Err(e) = receipts::verify(
        secret.expose().as_bytes(),
        timestamp,
        signature,
        &body,
        Utc::now(),
    ) {
        tracing::debug!(%channel, error = %e, "receipt refused");
        return refuse(StatusCode::UNAUTHORIZED, e);
    }
    let receipt = match receipts::parse(&body) {
        Ok(ReceiptBody::Receipt(r)) => r,
        Ok(ReceiptBody::Ignored { status }) => {
            return answer(StatusCode::OK, json!({ "ignored": status }));
        }
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e),
    };
    let (status, reason) = match receipt.status {
        ReceiptStatus::Delivered => ("delivered", "receipt_delivered"),
        ReceiptStatus::DeliveryFailed => ("delivery_failed", "receipt_delivery_failed"),
    };
    // The reference we send is our message id; any other reference is not one of ours.
    let message_id = receipt
        .reference
        .as_deref()
        .and_then(|r| Uuid::parse_str(r.trim()).ok());
    let params = ReceiptParams {
        channel: &channel,
        message_id,
        provider_message_id: receipt.provider_message_id.as_deref(),
        status,
        reason,
        detail: json!({
            "provider_message_id": receipt.provider_message_id,
            "provider_reason": receipt.reason,
            "provider_at": receipt.at,
        }),
        last_error: receipt.reason.as_deref(),
    };
    let applied = match state.store.message_receipt(&params).await {
        Ok(Some(applied)) => applied,
        Ok(None) => {
            return refuse(
                StatusCode::NOT_FOUND,
                format!("no message of channel {channel:?} matches this receipt's id or reference"),
            );
        }
        Err(e) => {
            tracing::warn!(%channel, error = %e, "receipt not recorded");
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "database unavailable: retry later",
            );
        }
    };
    if applied.changed {
        state
            .metrics
            .transitions
            .with_label_values(&[channel.as_str(), status, reason])
            .inc();
        tracing::debug!(%channel, id = %applied.id, status, "receipt recorded");
    }
    match applied.status.as_str() {
        // `sent` unchanged: another receipt for the same message changed it meanwhile.
        "accepted" | "scheduled" | "processing" | "sent" => {
            let why = if applied.status == "sent" {
                format!("message {} changed meanwhile: retry later", applied.id)
            } else {
                format!(
                    "message {} is {}, not sent yet: retry later",
                    applied.id, applied.status
                )
            };
            let mut response = refuse(StatusCode::CONFLICT, why);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, RETRY_AFTER_SECS.into());
            response
        }
        _ => answer(
            StatusCode::OK,
            json!({ "message_id": applied.id, "status": applied.status, "changed": applied.changed }),
        ),
    }
}

//! `GET /v1/stats/timeline?window=1h`: sent, failed and deferred messages per minute, for the dashboard's chart.

use axum::Json;
use axum::extract::{RawQuery, State};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;
use utoipa::ToSchema;

use crate::api::auth::Need;
use crate::api::{ApiError, AppState, Caller, ErrorBody, query_pairs};

/// One minute.
#[derive(Debug, Serialize, ToSchema)]
pub struct MinuteView {
    /// The minute's start.
    pub minute: DateTime<Utc>,
    /// Messages the provider accepted.
    pub sent: i64,
    /// Messages that reached a final failure status.
    pub failed: i64,
    /// Messages deferred (retry, quiet hours, 429 pause).
    pub deferred: i64,
}

/// The timeline.
#[derive(Debug, Serialize, ToSchema)]
pub struct Timeline {
    /// The window in seconds.
    pub window_seconds: u64,
    /// Minutes with at least one change, oldest first (absent minutes had none).
    pub minutes: Vec<MinuteView>,
}

/// Sent, failed and deferred per minute over the last `window` (`1h`, the default, or `24h`). Scope `read`.
#[utoipa::path(
    get, path = "/v1/stats/timeline", tag = "channels",
    params(("window" = Option<String>, Query, description = "`1h` (default) or `24h`")),
    responses(
        (status = 200, description = "The timeline", body = Timeline),
        (status = 400, description = "A bad window or unknown query parameter", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Token without scope read", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn timeline(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<Timeline>, ApiError> {
    caller.require(Need::Read)?;
    let mut window = Duration::from_secs(3600);
    for (_, value) in query_pairs(query.as_deref(), &["window"])? {
        window = match value.as_str() {
            "1h" => Duration::from_secs(3600),
            "24h" => Duration::from_secs(24 * 3600),
            _ => return Err(ApiError::bad_request("window", "must be 1h or 24h")),
        };
    }
    let minutes = state
        .store
        .stats_timeline(window)
        .await?
        .into_iter()
        .map(|m| MinuteView {
            minute: m.minute,
            sent: m.sent,
            failed: m.failed,
            deferred: m.deferred,
        })
        .collect();
    Ok(Json(Timeline {
        window_seconds: window.as_secs(),
        minutes,
    }))
}

//! `/v1/channels` and `/v1/stats`: what operators watch. Counts come from the index-backed statistics queries
//! (live statuses, and status changes of the last 24 h from the per-minute rollup); nothing here counts the whole
//! history.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::Need;
use super::{ApiError, AppState, Caller, ErrorBody, parse_body, query_pairs};
use crate::operator;

/// Waiting messages counted exactly on a request, at most (about 40 ms of index reads); past it, estimated.
const LIVE_COUNT_CAP: i64 = 200_000;

/// A channel: its counts, pause and rate limit.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelView {
    /// Name.
    pub name: String,
    /// Provider kind.
    pub kind: String,
    /// Live messages by status (`accepted`, `scheduled`, `processing`).
    pub live: BTreeMap<String, i64>,
    /// True when `live` is an estimate: over 200,000 messages wait, and counting them on every request would
    /// cost more than the page (the estimate is ANALYZE's, as fresh as the last analyze of the table).
    pub live_estimated: bool,
    /// Status changes in the last 24 h, by status (an enqueue counts as accepted or scheduled).
    pub last_24h: BTreeMap<String, i64>,
    /// Seconds since its oldest due message became due (null when none is due).
    pub oldest_due_seconds: Option<f64>,
    /// True while a pause (after a 429, or an operator's) is in force.
    pub paused: bool,
    /// Paused until (null when not paused).
    pub paused_until: Option<DateTime<Utc>>,
    /// Why it is paused.
    pub pause_reason: Option<String>,
    /// Pool-wide rate limit in requests per second (null: unlimited).
    pub rate_per_sec: Option<f64>,
}

/// Every channel.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelList {
    /// The channels, by name.
    pub items: Vec<ChannelView>,
}

/// Messages of one channel in one status.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusCountView {
    /// Channel.
    pub channel: String,
    /// Status.
    pub status: String,
    /// Messages.
    pub count: i64,
}

/// A paused channel.
#[derive(Debug, Serialize, ToSchema)]
pub struct PausedView {
    /// Channel.
    pub channel: String,
    /// Until when.
    pub paused_until: DateTime<Utc>,
    /// Why.
    pub reason: Option<String>,
}

/// A recent failure.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecentErrorView {
    /// When.
    pub at: DateTime<Utc>,
    /// Channel.
    pub channel: String,
    /// Message.
    pub message_id: Uuid,
    /// The status it moved to.
    pub status: String,
    /// Why.
    pub reason: String,
    /// Provider answer and the like.
    #[schema(value_type = Option<Object>)]
    pub detail: Option<Value>,
}

/// What `tidings stats --json` prints.
#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    /// Live messages by channel and status.
    pub live: Vec<StatusCountView>,
    /// True when `live` is an estimate (see `ChannelView.live_estimated`).
    pub live_estimated: bool,
    /// Status changes in the last 24 h by channel and status (an enqueue counts as accepted or scheduled).
    pub last_24h: Vec<StatusCountView>,
    /// Per channel, seconds since its oldest due message became due.
    pub oldest_due_seconds: BTreeMap<String, f64>,
    /// Channels paused now.
    pub paused: Vec<PausedView>,
    /// The 10 most recent failures.
    pub last_errors: Vec<RecentErrorView>,
}

const DAY: Duration = Duration::from_secs(24 * 3600);

/// Every channel with its counts by status, pause and rate limit. Scope `read`.
#[utoipa::path(
    get, path = "/v1/channels", tag = "channels",
    responses(
        (status = 200, description = "The channels", body = ChannelList),
        (status = 400, description = "A query parameter (none is taken)", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Token without scope read", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<ChannelList>, ApiError> {
    caller.require(Need::Read)?;
    query_pairs(query.as_deref(), &[])?;
    Ok(Json(ChannelList {
        items: views(&state).await?,
    }))
}

async fn views(state: &AppState) -> Result<Vec<ChannelView>, ApiError> {
    let store = &state.store;
    // Independent reads, on separate connections at once: the answer takes the slowest, not their sum.
    let (channels, live, recent, oldest) = tokio::try_join!(
        store.channel_list(),
        store.stats_live_bounded(LIVE_COUNT_CAP),
        store.stats_recent(DAY),
        store.stats_oldest_due()
    )?;
    let (live, live_estimated) = live;
    let oldest: BTreeMap<String, f64> = oldest.into_iter().collect();
    let counts = |rows: &[crate::store::StatusCount], name: &str| -> BTreeMap<String, i64> {
        rows.iter()
            .filter(|r| r.channel == name)
            .map(|r| (r.status.clone(), r.count))
            .collect()
    };
    Ok(channels
        .into_iter()
        .map(|c| ChannelView {
            live: counts(&live, &c.name),
            live_estimated,
            last_24h: counts(&recent, &c.name),
            oldest_due_seconds: oldest.get(&c.name).copied(),
            paused: c.paused_until.is_some(),
            paused_until: c.paused_until,
            pause_reason: c.pause_reason,
            rate_per_sec: c.rate_per_sec,
            name: c.name,
            kind: c.kind,
        })
        .collect())
}

/// Live counts, the last 24 h, oldest due age, paused channels and the last errors (`tidings stats --json`).
/// Scope `read`.
#[utoipa::path(
    get, path = "/v1/stats", tag = "channels",
    responses(
        (status = 200, description = "The statistics", body = Stats),
        (status = 400, description = "A query parameter (none is taken)", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Token without scope read", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn stats(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<Stats>, ApiError> {
    caller.require(Need::Read)?;
    query_pairs(query.as_deref(), &[])?;
    let store = &state.store;
    let view = |rows: Vec<crate::store::StatusCount>| {
        rows.into_iter()
            .map(|r| StatusCountView {
                channel: r.channel,
                status: r.status,
                count: r.count,
            })
            .collect()
    };
    // Independent reads, on separate connections at once: the answer takes the slowest, not their sum.
    let (live, recent, oldest, paused, errors) = tokio::try_join!(
        store.stats_live_bounded(LIVE_COUNT_CAP),
        store.stats_recent(DAY),
        store.stats_oldest_due(),
        store.channel_paused(),
        store.stats_last_errors(10)
    )?;
    let (live, live_estimated) = live;
    Ok(Json(Stats {
        live: view(live),
        live_estimated,
        last_24h: view(recent),
        oldest_due_seconds: oldest.into_iter().collect(),
        paused: paused
            .into_iter()
            .map(|p| PausedView {
                channel: p.channel,
                paused_until: p.paused_until,
                reason: p.reason,
            })
            .collect(),
        last_errors: errors
            .into_iter()
            .map(|e| RecentErrorView {
                at: e.at,
                channel: e.channel,
                message_id: e.message_id,
                status: e.status,
                reason: e.reason,
                detail: e.detail,
            })
            .collect(),
    }))
}

/// `POST /v1/channels/{name}/pause`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseBody {
    /// Until when (RFC 3339; in the future, at most 30 days ahead).
    pub until: DateTime<Utc>,
    /// Why (1 to 200 characters); shown with the pause.
    pub reason: String,
}

/// Pause a channel for every worker (like a 429's pause, replacing any in force). Scope `admin`.
#[utoipa::path(
    post, path = "/v1/channels/{name}/pause", tag = "actions",
    params(("name" = String, Path, description = "Channel name")),
    request_body = PauseBody,
    responses(
        (status = 200, description = "Paused", body = ChannelView),
        (status = 400, description = "Not JSON", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Token without scope admin", body = ErrorBody),
        (status = 404, description = "No such channel", body = ErrorBody),
        (status = 413, description = "Body over api.max_body", body = ErrorBody),
        (status = 422, description = "Bad until or reason", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ChannelView>, ApiError> {
    caller.require(Need::Admin)?;
    let body: PauseBody = parse_body(body)?;
    operator::pause(&state.store, &name, body.until, &body.reason, &caller.name).await??;
    one(&state, &name).await
}

/// End a channel's pause (a 429's or an operator's). Scope `admin`.
#[utoipa::path(
    post, path = "/v1/channels/{name}/resume", tag = "actions",
    params(("name" = String, Path, description = "Channel name")),
    responses(
        (status = 200, description = "Resumed", body = ChannelView),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Token without scope admin", body = ErrorBody),
        (status = 404, description = "No such channel", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<ChannelView>, ApiError> {
    caller.require(Need::Admin)?;
    operator::resume(&state.store, &name, &caller.name).await??;
    one(&state, &name).await
}

async fn one(state: &AppState, name: &str) -> Result<Json<ChannelView>, ApiError> {
    views(state)
        .await?
        .into_iter()
        .find(|c| c.name == name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no channel {name}")))
}

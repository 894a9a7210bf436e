//! `/v1/messages`: enqueue (one, or a batch, with `Idempotency-Key`), read one with its events, list with keyset
//! pagination.
//!
//! Enqueue never validates a message itself: the body goes to `tidings.enqueue_many` as the JSON text it arrived
//! as (one validation path, numbers byte for byte), and its SQLSTATE 22023 `field: rule` becomes a 422.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::Need;
use super::{ApiError, AppState, Caller, ErrorBody, parse_body, query_pairs};
use crate::operator;
use crate::store::{
    EnqueueApiOutcome, EnqueueApiParams, MessageAction, MessageListParams, MessageRow,
};

/// Most messages in one `POST /v1/messages/batch`.
pub const MAX_BATCH: usize = 10_000;
/// Default page size of `GET /v1/messages`.
pub const DEFAULT_LIMIT: i64 = 50;
/// Largest page size of `GET /v1/messages`.
pub const MAX_LIMIT: i64 = 500;

/// A message to enqueue: the parameters of `tidings.enqueue`, with the same defaults and rules (the README lists
/// the recipient and content shapes of each channel kind).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMessageBody {
    /// Channel name (a `[channels.NAME]` of the config).
    pub channel: String,
    /// Who receives it; the shape depends on the channel's kind (`{"phone": "+31612345678"}` for SMS).
    #[schema(value_type = Object)]
    pub recipient: Value,
    /// What is sent; the shape depends on the channel's kind.
    #[schema(value_type = Object)]
    pub content: Value,
    /// RFC 3339 time to send at; in the past or within 10 minutes means now; at most 35 days ahead.
    #[schema(nullable)]
    pub scheduled_for: Option<DateTime<Utc>>,
    /// Seconds the message stays sendable (default 129600, 600 for `2fa`), 1 to 2592000.
    #[schema(nullable, minimum = 1, maximum = 2592000)]
    pub validity: Option<u32>,
    /// `transactional` (default), `promotional`, `conversational`, `marketing` or `2fa`.
    #[schema(nullable)]
    pub use_case: Option<String>,
    /// Skip the channel's quiet hours.
    #[schema(nullable)]
    pub ignore_quiet_hours: Option<bool>,
    /// Count against the channel's frequency cap (marketing only).
    #[schema(nullable)]
    pub cap_frequency: Option<bool>,
    /// 0 (first, default) to 9 (last).
    #[schema(nullable, minimum = 0, maximum = 9)]
    pub priority: Option<u8>,
    /// Up to 10 tags of 1 to 100 characters (stored lower-case).
    #[schema(nullable)]
    pub tags: Option<Vec<String>>,
    /// Producer idempotency key, unique per channel: a repeat returns the first message's id.
    #[schema(nullable)]
    pub reference: Option<String>,
    /// Where to POST status callbacks for this message (instead of its channel's): an http(s) URL of at most
    /// 2048 characters whose host is in `[callbacks] allowed_hosts`.
    #[schema(nullable, max_length = 2048)]
    pub callback_url: Option<String>,
    /// Up to 3 next steps on other channels, each sent when the previous message of the chain ends as its `on`
    /// says ("WhatsApp, else SMS"). Each step becomes its own message, linked by `chain_id`.
    #[schema(nullable, max_items = 3)]
    pub fallback: Option<Vec<FallbackStepBody>>,
    /// The producer's W3C trace context (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`): the worker's
    /// span of each attempt links to it. Without it, the request's `traceparent` header is used.
    #[schema(nullable)]
    pub traceparent: Option<String>,
    /// The W3C `tracestate` going with `traceparent` (at most 512 printable ASCII characters).
    #[schema(nullable)]
    pub tracestate: Option<String>,
}

/// One step of a fallback chain.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FallbackStepBody {
    /// Channel name; not one the chain already uses.
    pub channel: String,
    /// Who receives it; defaults to the first message's recipient, which must then have what this channel
    /// needs (e.g. a `phone` for SMS).
    #[schema(value_type = Option<Object>, nullable)]
    pub recipient: Option<Value>,
    /// What is sent, in this channel's shape.
    #[schema(value_type = Object)]
    pub content: Value,
    /// Outcomes of the previous message that send this step: `rejected`, `sending_failed`, `expired`,
    /// `undelivered` (no `delivered` receipt within `after` seconds of `sent`; channels with receipts only).
    #[schema(min_items = 1)]
    pub on: Vec<String>,
    /// Seconds to wait for a `delivered` receipt; required with (and only with) `undelivered`.
    #[schema(nullable, minimum = 1, maximum = 2592000)]
    pub after: Option<u32>,
}

/// `POST /v1/messages/batch`: up to 10,000 messages, enqueued all or nothing.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    /// The messages.
    #[schema(min_items = 1, max_items = 10000)]
    pub messages: Vec<NewMessageBody>,
}

/// The id of the enqueued message (or of the earlier one with the same `reference`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Enqueued {
    /// Message id.
    pub id: Uuid,
}

/// The ids of a batch, in input order.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnqueuedBatch {
    /// Message ids.
    pub ids: Vec<Uuid>,
}

/// A message (the recipient masked unless revealed).
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageView {
    /// Id (UUIDv7; also the provider idempotency key).
    pub id: Uuid,
    /// Channel.
    pub channel: String,
    /// `accepted`, `scheduled`, `processing`, `sent`, `delivered`, `delivery_failed`, `sending_failed`,
    /// `rejected`, `expired` or `canceled`.
    pub status: String,
    /// Use case.
    pub use_case: String,
    /// 0 first, 9 last.
    pub priority: i16,
    /// Recipient; every value but `timezone` masked unless an admin asked `?reveal=recipient`.
    #[schema(value_type = Object)]
    pub recipient: Value,
    /// Tags.
    pub tags: Vec<String>,
    /// Producer reference.
    pub reference: Option<String>,
    /// Attempts spent.
    pub attempts: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// The provider's id, once sent.
    pub provider_message_id: Option<String>,
    /// The last error.
    pub last_error: Option<String>,
    /// Requested send time.
    pub scheduled_for: Option<DateTime<Utc>>,
    /// Next moment a worker may take it.
    pub run_at: DateTime<Utc>,
    /// Never sent after this.
    pub expires_at: DateTime<Utc>,
    /// Enqueued at.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl MessageView {
    fn new(r: MessageRow, reveal: bool) -> Self {
        MessageView {
            recipient: crate::mask::mask_recipient_value(&r.recipient, reveal),
            id: r.id,
            channel: r.channel,
            status: r.status,
            use_case: r.use_case,
            priority: r.priority,
            tags: r.tags,
            reference: r.reference,
            attempts: r.attempts,
            max_attempts: r.max_attempts,
            provider_message_id: r.provider_message_id,
            last_error: r.last_error,
            scheduled_for: r.scheduled_for,
            run_at: r.run_at,
            expires_at: r.expires_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// One status change.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    /// When.
    pub at: DateTime<Utc>,
    /// The status it moved to.
    pub status: String,
    /// Why (`enqueued`, `provider_accepted`, `quiet_hours`, `rate_limited`, `operator_cancel`, …).
    pub reason: String,
    /// The attempt it belongs to.
    pub attempt: Option<i32>,
    /// When that attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// HTTP status, provider answer, deferral target, … (the recipient's number masked unless revealed).
    #[schema(value_type = Option<Object>)]
    pub detail: Option<Value>,
}

/// A message with its content and full timeline.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageDetail {
    /// The message.
    #[serde(flatten)]
    pub message: MessageView,
    /// What is sent.
    #[schema(value_type = Object)]
    pub content: Value,
    /// Every status change, oldest first.
    pub events: Vec<EventView>,
    /// The status callbacks of this message, in transition order (empty when it asked for none).
    pub callbacks: Vec<CallbackView>,
    /// The first message's id when the message belongs to a fallback chain.
    pub chain_id: Option<Uuid>,
    /// The chain's messages so far, in step order (empty outside a chain).
    pub chain: Vec<ChainLinkView>,
}

/// One status callback of a message.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallbackView {
    /// The `webhook-id` of its POSTs (the same on every retry).
    pub id: Uuid,
    /// The status it tells (`sent`, `delivered`, `delivery_failed`, `sending_failed`, `rejected`, `expired`,
    /// `canceled`).
    pub status: String,
    /// The host (and port) it is POSTed to; the rest of the URL is not shown.
    pub host: String,
    /// POSTs started.
    pub attempts: i32,
    /// When the transition happened.
    pub at: DateTime<Utc>,
    /// When the receiver answered 2xx.
    pub delivered_at: Option<DateTime<Utc>>,
    /// When retries stopped (`[callbacks] max_age` after the transition).
    pub given_up_at: Option<DateTime<Utc>>,
    /// The last failure: `http_<status>`, `timeout`, `connect` or `transport`.
    pub last_error: Option<String>,
    /// Next attempt, while neither delivered nor given up.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

impl CallbackView {
    fn new(c: crate::store::MessageCallback) -> Self {
        let host = url::Url::parse(&c.url)
            .ok()
            .and_then(|u| {
                u.host_str()
                    .map(|h| u.port().map_or(h.to_owned(), |p| format!("{h}:{p}")))
            })
            .unwrap_or_default();
        let pending = c.delivered_at.is_none() && c.given_up_at.is_none();
        CallbackView {
            id: c.id,
            status: c.status,
            host,
            attempts: c.attempts,
            at: c.at,
            delivered_at: c.delivered_at,
            given_up_at: c.given_up_at,
            last_error: c.last_error,
            next_attempt_at: pending.then_some(c.run_at),
        }
    }
}

/// One message of a fallback chain.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChainLinkView {
    /// Its id.
    pub id: Uuid,
    /// Its channel.
    pub channel: String,
    /// Its status.
    pub status: String,
    /// 0 for the first message, then 1 to 3.
    pub step: i16,
    /// What created the step (`rejected`, `sending_failed`, `expired`, `undelivered`); null for the first.
    pub trigger: Option<String>,
}

/// A page of messages, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessagePage {
    /// The messages.
    pub items: Vec<MessageView>,
    /// Pass as `cursor` for the next (older) page; null on the last page. A filter without an index (channel,
    /// use case, a status other than failures or waiting ones, alone) walks at most 20,000 messages per page: a
    /// page may then hold fewer items than `limit`, even none, and still have a `next_cursor`.
    pub next_cursor: Option<String>,
    /// Set when this page's walk stopped at its budget: messages created since this instant were searched.
    pub searched_back_to: Option<DateTime<Utc>>,
}

/// The filters of `GET /v1/messages` (for the document; the handler reads the raw query to name unknown keys).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Comma-separated statuses.
    pub status: Option<String>,
    /// Channel name.
    pub channel: Option<String>,
    /// A tag.
    pub tag: Option<String>,
    /// Use case.
    pub use_case: Option<String>,
    /// Producer reference.
    pub reference: Option<String>,
    /// Recipient phone number, exact (a 10-digit US number and its +1 form are the same number).
    pub recipient: Option<String>,
    /// The provider's message id (as in a delivery receipt).
    pub provider_message_id: Option<String>,
    /// Created at or after (RFC 3339, millisecond precision).
    pub created_after: Option<DateTime<Utc>>,
    /// Created before (RFC 3339, millisecond precision).
    pub created_before: Option<DateTime<Utc>>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// `recipient`: show recipients unmasked (admin only).
    pub reveal: Option<String>,
}

/// `?reveal=` of `GET /v1/messages/{id}`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RevealQuery {
    /// `recipient`: show the recipient unmasked (admin only).
    pub reveal: Option<String>,
}

/// Enqueue one message.
#[utoipa::path(
    post, path = "/v1/messages", tag = "messages",
    request_body = NewMessageBody,
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe key (1-255 visible ASCII characters), kept 24 h per token"),
        ("traceparent" = Option<String>, Header, description = "W3C trace context of the producer's request; stored with every message that has no traceparent of its own, and refused (422) when malformed"),
        ("tracestate" = Option<String>, Header, description = "W3C tracestate going with the traceparent header"),
    ),
    responses(
        (status = 201, description = "Enqueued", body = Enqueued),
        (status = 200, description = "Replayed: the same Idempotency-Key with the same body", body = Enqueued,
         headers(("Idempotent-Replayed" = String, description = "true"))),
        (status = 400, description = "Not JSON, or a bad header", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Token without scope produce", body = ErrorBody),
        (status = 409, description = "The Idempotency-Key was used with another body", body = ErrorBody),
        (status = 413, description = "Body over api.max_body", body = ErrorBody),
        (status = 422, description = "Refused by tidings.enqueue's validation", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn enqueue_one(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require(Need::Produce)?;
    let body = body.map_err(ApiError::from_body)?;
    let key = idempotency_key(&headers)?;
    let raw: &RawValue = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("body", format!("must be JSON: {e}")))?;
    if !raw.get().starts_with('{') {
        return Err(ApiError::invalid(
            "message".into(),
            "must be a JSON object".into(),
            None,
        ));
    }
    let trace = trace_members(&headers);
    let message = with_trace(raw.get(), trace.as_deref());
    let answer = match key {
        // Without a key, with whatever other single messages arrive meanwhile (one commit for all).
        None => answer(state.batcher.enqueue(message.into_owned()).await?)?,
        Some(_) => {
            let json = format!("[{message}]");
            enqueue(&state, &caller, key, "/v1/messages", &body, &json).await?
        }
    };
    Ok(match answer {
        (replayed, ids, None) => respond(replayed, Enqueued { id: ids[0] }),
        (_, _, Some((field, rule, _))) => return Err(ApiError::invalid(field, rule, None)),
    })
}

/// Enqueue up to 10,000 messages, all or nothing.
#[utoipa::path(
    post, path = "/v1/messages/batch", tag = "messages",
    request_body = BatchBody,
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe key (1-255 visible ASCII characters), kept 24 h per token"),
        ("traceparent" = Option<String>, Header, description = "W3C trace context of the producer's request; stored with every message that has no traceparent of its own, and refused (422) when malformed"),
        ("tracestate" = Option<String>, Header, description = "W3C tracestate going with the traceparent header"),
    ),
    responses(
        (status = 201, description = "Enqueued", body = EnqueuedBatch),
        (status = 200, description = "Replayed: the same Idempotency-Key with the same body", body = EnqueuedBatch,
         headers(("Idempotent-Replayed" = String, description = "true"))),
        (status = 400, description = "Not JSON, or a bad header", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Token without scope produce", body = ErrorBody),
        (status = 409, description = "The Idempotency-Key was used with another body", body = ErrorBody),
        (status = 413, description = "Body over api.max_body", body = ErrorBody),
        (status = 422, description = "Refused by validation; `index` names the message", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn enqueue_batch(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require(Need::Produce)?;
    let body = body.map_err(ApiError::from_body)?;
    let key = idempotency_key(&headers)?;
    let wrapper: BTreeMap<String, &RawValue> = serde_json::from_slice(&body).map_err(|e| {
        if e.is_data() {
            ApiError::invalid(
                "body".into(),
                "must be an object {\"messages\": [...]}".into(),
                None,
            )
        } else {
            ApiError::bad_request("body", format!("must be JSON: {e}"))
        }
    })?;
    if let Some(unknown) = wrapper.keys().find(|k| *k != "messages") {
        return Err(ApiError::invalid(
            unknown.clone(),
            "unknown field".into(),
            None,
        ));
    }
    let messages: Vec<&RawValue> = wrapper
        .get("messages")
        .ok_or_else(|| ApiError::invalid("messages".into(), "is required".into(), None))
        .and_then(|raw| {
            serde_json::from_str(raw.get()).map_err(|_| {
                ApiError::invalid(
                    "messages".into(),
                    "must be an array of messages".into(),
                    None,
                )
            })
        })?;
    if messages.is_empty() || messages.len() > MAX_BATCH {
        return Err(ApiError::invalid(
            "messages".into(),
            format!("must hold 1 to {MAX_BATCH} messages"),
            None,
        ));
    }
    let trace = trace_members(&headers);
    let mut json = String::with_capacity(body.len() + 2);
    json.push('[');
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str(&with_trace(m.get(), trace.as_deref()));
    }
    json.push(']');
    let single = messages.len() == 1;
    let answer = enqueue(&state, &caller, key, "/v1/messages/batch", &body, &json).await?;
    Ok(match answer {
        (replayed, ids, None) => respond(replayed, EnqueuedBatch { ids }),
        (_, _, Some((field, rule, index))) => {
            // The SQL function names no position in a batch of one.
            let index = index.or_else(|| (single && field != "messages").then_some(0));
            return Err(ApiError::invalid(field, rule, index));
        }
    })
}

type Answer = (bool, Vec<Uuid>, Option<(String, String, Option<usize>)>);

async fn enqueue(
    state: &AppState,
    caller: &Caller,
    key: Option<&str>,
    route: &str,
    body: &[u8],
    json: &str,
) -> Result<Answer, ApiError> {
    let hash: Option<[u8; 32]> = key.map(|_| {
        let mut h = Sha256::new();
        h.update(route.as_bytes());
        h.update(b"\n");
        h.update(body);
        h.finalize().into()
    });
    let params = EnqueueApiParams {
        messages_json: json,
        idempotency: key.zip(hash).map(|(k, h)| (caller.name.as_str(), k, h)),
    };
    answer(state.store.message_enqueue_api(&params).await?)
}

/// What an enqueue came to, as the handlers answer it.
fn answer(outcome: EnqueueApiOutcome) -> Result<Answer, ApiError> {
    match outcome {
        EnqueueApiOutcome::Inserted(ids) => Ok((false, ids, None)),
        EnqueueApiOutcome::Replayed(ids) => Ok((true, ids, None)),
        EnqueueApiOutcome::KeyReused => Err(ApiError::conflict(
            Some("Idempotency-Key"),
            "was used with a different request body in the last 24 hours",
        )),
        EnqueueApiOutcome::Invalid { field, rule, index } => {
            Ok((false, Vec::new(), Some((field, rule, index))))
        }
    }
}

fn respond(replayed: bool, body: impl Serialize) -> Response {
    if replayed {
        let mut r = (StatusCode::OK, Json(body)).into_response();
        r.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
        r
    } else {
        (StatusCode::CREATED, Json(body)).into_response()
    }
}

/// The request's W3C `traceparent` / `tracestate` headers as JSON members (`"traceparent":"…","tracestate":"…"`),
/// or `None` without a `traceparent` header. Passed on as sent: `tidings.enqueue_many` validates them like the
/// body fields (one validation path), so a malformed header is a 422 naming `traceparent`. Repeated headers are
/// joined with commas (a repeated `traceparent` is then refused; a repeated `tracestate` is one list).
fn trace_members(headers: &HeaderMap) -> Option<String> {
    let joined = |name: &str| {
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    };
    let traceparent = joined("traceparent")?;
    let quote = |v: String| Value::String(v).to_string();
    let mut members = format!("\"traceparent\":{}", quote(traceparent));
    if let Some(tracestate) = joined("tracestate") {
        members.push_str(&format!(",\"tracestate\":{}", quote(tracestate)));
    }
    Some(members)
}

/// `message` (a JSON object's text) with the request's trace members added, unless it carries a `traceparent`
/// of its own (then neither header applies: a message's trace context comes from one place). Anything that is
/// not an object is left for the SQL function to refuse.
fn with_trace<'a>(message: &'a str, trace: Option<&str>) -> std::borrow::Cow<'a, str> {
    use std::borrow::Cow;
    let Some(trace) = trace else {
        return Cow::Borrowed(message);
    };
    let own = serde_json::from_str::<BTreeMap<String, &RawValue>>(message)
        .map(|keys| keys.contains_key("traceparent"))
        .unwrap_or(true);
    let Some(rest) = message.trim_start().strip_prefix('{').filter(|_| !own) else {
        return Cow::Borrowed(message);
    };
    let sep = if rest.trim_start().starts_with('}') {
        ""
    } else {
        ","
    };
    Cow::Owned(format!("{{{trace}{sep}{rest}"))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(k)
            if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| (0x21..0x7f).contains(&b)) =>
        {
            Ok(Some(k))
        }
        _ => Err(ApiError::bad_request(
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters",
        )),
    }
}

/// One message with its content and events. Scope `produce` or `read`.
#[utoipa::path(
    get, path = "/v1/messages/{id}", tag = "messages",
    params(("id" = Uuid, Path, description = "Message id"), RevealQuery),
    responses(
        (status = 200, description = "The message", body = MessageDetail),
        (status = 400, description = "Bad id or query parameter", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "reveal without scope admin", body = ErrorBody),
        (status = 404, description = "No such message (or pruned)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<MessageDetail>, ApiError> {
    caller.require(Need::ReadOne)?;
    let id: Uuid = id
        .parse()
        .map_err(|_| ApiError::bad_request("id", "must be a UUID"))?;
    let mut reveal = false;
    for (key, value) in query_pairs(query.as_deref(), &["reveal"])? {
        reveal = parse_reveal(key, &value, &caller)?;
    }
    let Some((row, content)) = state.store.message_read(id).await? else {
        return Err(ApiError::not_found(format!("no message {id}")));
    };
    let events = state.store.message_events(id).await?;
    let callbacks = state.store.callback_list(id).await?;
    let recipient = row.recipient.clone();
    let events = events
        .into_iter()
        .map(|e| {
            let mut detail = e.detail;
            if let Some(d) = detail.as_mut()
                && !reveal
            {
                crate::mask::mask_in(d, &recipient);
            }
            EventView {
                at: e.at,
                status: e.status.as_str().to_owned(),
                reason: e.reason,
                attempt: e.attempt,
                started_at: e.started_at,
                detail,
            }
        })
        .collect();
    let chain = state.store.message_chain(id).await?;
    Ok(Json(MessageDetail {
        message: MessageView::new(row, reveal),
        content,
        events,
        callbacks: callbacks.into_iter().map(CallbackView::new).collect(),
        chain_id: chain.first().map(|c| c.chain_id),
        chain: chain
            .into_iter()
            .map(|c| ChainLinkView {
                id: c.id,
                channel: c.channel,
                status: c.status,
                step: c.step,
                trigger: c.trigger,
            })
            .collect(),
    }))
}

fn parse_reveal(key: &str, value: &str, caller: &Caller) -> Result<bool, ApiError> {
    if value != "recipient" {
        return Err(ApiError::bad_request(key, "the only value is recipient"));
    }
    if !caller.is_admin() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            Some(key),
            "revealing recipients needs a token with scope admin".into(),
        ));
    }
    Ok(true)
}

/// The filters of a list request, validated.
#[derive(Debug, Default)]
pub struct ListFilter {
    statuses: Option<Vec<String>>,
    channel: Option<String>,
    tag: Option<String>,
    use_case: Option<String>,
    reference: Option<String>,
    recipient: Option<Vec<String>>,
    provider_message_id: Option<String>,
    min_id: Option<Uuid>,
    max_id: Option<Uuid>,
}

/// The filter keys of `GET /v1/messages` (and of the bulk actions).
pub const FILTER_KEYS: &[&str] = &[
    "status",
    "channel",
    "tag",
    "use_case",
    "reference",
    "recipient",
    "provider_message_id",
    "created_after",
    "created_before",
];

impl ListFilter {
    /// Sets filter `key` from its text, or a 400 naming it.
    pub fn set(&mut self, key: &str, value: String) -> Result<(), ApiError> {
        let nonempty = |v: String| {
            if v.is_empty() {
                Err(ApiError::bad_request(key, "must not be empty"))
            } else {
                Ok(v)
            }
        };
        match key {
            "status" => {
                let mut statuses = Vec::new();
                for s in value.split(',') {
                    if !tidings_client::Status::ALL.iter().any(|k| k.as_str() == s) {
                        return Err(ApiError::bad_request(
                            key,
                            format!(
                                "{s:?} is not a status (one of accepted, scheduled, processing, sent, delivered, delivery_failed, sending_failed, rejected, expired, canceled)"
                            ),
                        ));
                    }
                    statuses.push(s.to_owned());
                }
                self.statuses = Some(statuses);
            }
            "channel" => self.channel = Some(nonempty(value)?),
            "tag" => self.tag = Some(nonempty(value)?.to_lowercase()),
            "use_case" => {
                if !crate::USE_CASES.contains(&value.as_str()) {
                    return Err(ApiError::bad_request(
                        key,
                        format!("must be one of {}", crate::USE_CASES.join(", ")),
                    ));
                }
                self.use_case = Some(value);
            }
            "reference" => self.reference = Some(nonempty(value)?),
            "provider_message_id" => self.provider_message_id = Some(nonempty(value)?),
            "recipient" => {
                let phone = nonempty(value)?;
                // The forms tidings.recipient_key treats as one number: a 10-digit US number and its +1 form.
                let us = |p: &str| {
                    p.len() == 10
                        && p.as_bytes()[0] >= b'2'
                        && p.bytes().all(|b| b.is_ascii_digit())
                };
                let mut phones = vec![phone.clone()];
                if let Some(national) = phone.strip_prefix("+1").filter(|n| us(n)) {
                    phones.push(national.to_owned());
                } else if us(&phone) {
                    phones.push(format!("+1{phone}"));
                }
                self.recipient = Some(phones);
            }
            "created_after" | "created_before" => {
                let at = DateTime::parse_from_rfc3339(&value)
                    .map_err(|_| ApiError::bad_request(key, "must be an RFC 3339 timestamp"))?;
                let id = id_floor(at.with_timezone(&Utc))
                    .ok_or_else(|| ApiError::bad_request(key, "must be after 1970"))?;
                if key == "created_after" {
                    self.min_id = Some(id);
                } else {
                    self.max_id = Some(id);
                }
            }
            _ => return Err(ApiError::bad_request(key, "unknown filter")),
        }
        Ok(())
    }

    /// The store's parameters for this filter.
    pub fn params(&self) -> MessageListParams<'_> {
        MessageListParams {
            before_id: None,
            min_id: self.min_id,
            max_id: self.max_id,
            statuses: self.statuses.as_deref(),
            channel: self.channel.as_deref(),
            tag: self.tag.as_deref(),
            use_case: self.use_case.as_deref(),
            reference: self.reference.as_deref(),
            recipient: self.recipient.as_deref(),
            provider_message_id: self.provider_message_id.as_deref(),
            limit: DEFAULT_LIMIT,
        }
    }
}

/// The smallest UUIDv7 of `at`'s millisecond: ids compare by their leading 48-bit Unix milliseconds.
fn id_floor(at: DateTime<Utc>) -> Option<Uuid> {
    let ms = u64::try_from(at.timestamp_millis()).ok()?;
    if ms >= 1 << 48 {
        return None;
    }
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    Some(Uuid::from_bytes(bytes))
}

/// The creation instant of a UUIDv7 (its leading 48-bit Unix milliseconds).
fn id_time(id: Uuid) -> Option<DateTime<Utc>> {
    let b = id.as_bytes();
    let ms = b[..6]
        .iter()
        .fold(0i64, |ms, byte| ms << 8 | i64::from(*byte));
    DateTime::from_timestamp_millis(ms)
}

const CURSOR_VERSION: u8 = 1;

fn encode_cursor(id: Uuid) -> String {
    let mut bytes = [0u8; 17];
    bytes[0] = CURSOR_VERSION;
    bytes[1..].copy_from_slice(id.as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

fn decode_cursor(cursor: &str) -> Option<Uuid> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    match bytes.split_first() {
        Some((&CURSOR_VERSION, id)) if id.len() == 16 => Uuid::from_slice(id).ok(),
        _ => None,
    }
}

/// Messages newest first, filtered, one page at a time. Scope `read`.
#[utoipa::path(
    get, path = "/v1/messages", tag = "messages",
    params(ListQuery),
    responses(
        (status = 200, description = "A page", body = MessagePage),
        (status = 400, description = "Unknown or bad query parameter", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Token without scope read, or reveal without admin", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<MessagePage>, ApiError> {
    caller.require(Need::Read)?;
    let mut allowed: Vec<&str> = FILTER_KEYS.to_vec();
    allowed.extend(["cursor", "limit", "reveal"]);
    let mut filter = ListFilter::default();
    let mut before_id = None;
    let mut limit = DEFAULT_LIMIT;
    let mut reveal = false;
    for (key, value) in query_pairs(query.as_deref(), &allowed)? {
        match key {
            "cursor" => {
                before_id = Some(decode_cursor(&value).ok_or_else(|| {
                    ApiError::bad_request(key, "is not a cursor this API returned")
                })?)
            }
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            key,
                            format!("must be a number from 1 to {MAX_LIMIT}"),
                        )
                    })?
            }
            "reveal" => reveal = parse_reveal(key, &value, &caller)?,
            _ => filter.set(key, value)?,
        }
    }
    let mut params = filter.params();
    params.before_id = before_id;
    // One more than the page, to know whether there is a next one.
    params.limit = limit + 1;
    let page = state.store.message_list(&params).await?;
    let mut rows = page.rows;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let (next_cursor, searched_back_to) = match (more, page.resume_below) {
        (true, _) => (rows.last().map(|r| encode_cursor(r.id)), None),
        // The walk stopped at its budget before the page was full: go on below where it stopped.
        (false, Some(floor)) => (Some(encode_cursor(floor)), id_time(floor)),
        (false, None) => (None, None),
    };
    Ok(Json(MessagePage {
        items: rows
            .into_iter()
            .map(|r| MessageView::new(r, reveal))
            .collect(),
        next_cursor,
        searched_back_to,
    }))
}

/// `POST /v1/messages/{id}/reschedule`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RescheduleBody {
    /// The new send time (RFC 3339); within 10 minutes means now; at most 35 days ahead.
    pub scheduled_for: DateTime<Utc>,
}

/// `POST /v1/messages/cancel|retry|reschedule`: a dry run, or the real call with the dry run's count.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkBody {
    /// The filter keys of `GET /v1/messages` (`status`, `channel`, `tag`, `use_case`, `reference`, `recipient`,
    /// `created_after`, `created_before`), as strings.
    pub filter: BTreeMap<String, String>,
    /// Only count what would change.
    #[serde(default)]
    pub dry_run: bool,
    /// Required unless `dry_run`: the count the dry run answered. When it no longer matches: 409, nothing changed.
    pub expect_count: Option<i64>,
    /// For reschedule only: the new send time.
    pub scheduled_for: Option<DateTime<Utc>>,
}

/// The answer of a bulk action.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkCount {
    /// Messages the action would change (dry run) or changed.
    pub count: i64,
}

async fn act_one(
    state: &AppState,
    caller: &Caller,
    id: &str,
    action: MessageAction,
) -> Result<Json<MessageView>, ApiError> {
    caller.require(Need::Admin)?;
    let id: Uuid = id
        .parse()
        .map_err(|_| ApiError::bad_request("id", "must be a UUID"))?;
    operator::act_one(&state.store, id, action, &caller.name).await??;
    let (row, _) = state
        .store
        .message_read(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no message {id}")))?;
    Ok(Json(MessageView::new(row, false)))
}

/// Cancel a waiting (accepted or scheduled) message. Scope `admin`.
#[utoipa::path(
    post, path = "/v1/messages/{id}/cancel", tag = "actions",
    params(("id" = Uuid, Path, description = "Message id")),
    responses(
        (status = 200, description = "Canceled", body = MessageView),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Token without scope admin", body = ErrorBody),
        (status = 404, description = "No such message", body = ErrorBody),
        (status = 409, description = "Its status does not allow it", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn cancel_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<MessageView>, ApiError> {
    act_one(&state, &caller, &id, MessageAction::Cancel).await
}

/// Retry a failed (sending_failed, rejected, expired) message whose validity allows it. Scope `admin`.
#[utoipa::path(
    post, path = "/v1/messages/{id}/retry", tag = "actions",
    params(("id" = Uuid, Path, description = "Message id")),
    responses(
        (status = 200, description = "Due again", body = MessageView),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Token without scope admin", body = ErrorBody),
        (status = 404, description = "No such message", body = ErrorBody),
        (status = 409, description = "Its status or validity does not allow it", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn retry_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<MessageView>, ApiError> {
    act_one(&state, &caller, &id, MessageAction::Retry).await
}

/// Move a waiting message to another time. Scope `admin`.
#[utoipa::path(
    post, path = "/v1/messages/{id}/reschedule", tag = "actions",
    params(("id" = Uuid, Path, description = "Message id")),
    request_body = RescheduleBody,
    responses(
        (status = 200, description = "Rescheduled", body = MessageView),
        (status = 400, description = "Bad id or not JSON", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Token without scope admin", body = ErrorBody),
        (status = 404, description = "No such message", body = ErrorBody),
        (status = 409, description = "Its status does not allow it", body = ErrorBody),
        (status = 413, description = "Body over api.max_body", body = ErrorBody),
        (status = 422, description = "Bad body", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn reschedule_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<MessageView>, ApiError> {
    caller.require(Need::Admin)?;
    let body: RescheduleBody = parse_body(body)?;
    act_one(
        &state,
        &caller,
        &id,
        MessageAction::Reschedule(body.scheduled_for),
    )
    .await
}

async fn act_bulk(
    state: &AppState,
    caller: &Caller,
    body: Result<Bytes, BytesRejection>,
    reschedule: bool,
    action: fn(Option<DateTime<Utc>>) -> MessageAction,
) -> Result<Json<BulkCount>, ApiError> {
    caller.require(Need::Admin)?;
    let body: BulkBody = parse_body(body)?;
    if reschedule != body.scheduled_for.is_some() {
        let rule = if reschedule {
            "is required"
        } else {
            "is only for reschedule"
        };
        return Err(ApiError::invalid("scheduled_for".into(), rule.into(), None));
    }
    let mut filter = ListFilter::default();
    for (key, value) in body.filter {
        if !FILTER_KEYS.contains(&key.as_str()) {
            return Err(ApiError::invalid(
                format!("filter.{key}"),
                "unknown filter".into(),
                None,
            ));
        }
        filter
            .set(&key, value)
            .map_err(|e| ApiError::invalid(format!("filter.{key}"), e.body.error.rule, None))?;
    }
    let bulk = operator::act_bulk(
        &state.store,
        filter.params(),
        action(body.scheduled_for),
        body.dry_run,
        body.expect_count,
        &caller.name,
    )
    .await??;
    let count = match bulk {
        operator::Bulk::WouldChange(n) | operator::Bulk::Changed(n) => n,
    };
    Ok(Json(BulkCount { count }))
}

macro_rules! bulk_doc {
    ($what:literal) => {
        concat!(
            $what,
            " every message the filter matches (only those whose status allows it). Send `dry_run: true` first; ",
            "then the same filter with `expect_count` set to its count. Scope `admin`."
        )
    };
}

#[doc = bulk_doc!("Cancel")]
#[utoipa::path(
    post, path = "/v1/messages/cancel", tag = "actions", request_body = BulkBody,
    responses(
        (status = 200, description = "Counted (dry run) or canceled", body = BulkCount),
        (status = 400, description = "Not JSON", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Token without scope admin", body = ErrorBody),
        (status = 409, description = "The count no longer matches expect_count: nothing changed", body = ErrorBody),
        (status = 413, description = "Body over api.max_body", body = ErrorBody),
        (status = 422, description = "Bad filter or body", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn cancel_bulk(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<BulkCount>, ApiError> {
    act_bulk(&state, &caller, body, false, |_| MessageAction::Cancel).await
}

#[doc = bulk_doc!("Retry")]
#[utoipa::path(
    post, path = "/v1/messages/retry", tag = "actions", request_body = BulkBody,
    responses(
        (status = 200, description = "Counted (dry run) or made due again", body = BulkCount),
        (status = 400, description = "Not JSON", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Token without scope admin", body = ErrorBody),
        (status = 409, description = "The count no longer matches expect_count: nothing changed", body = ErrorBody),
        (status = 413, description = "Body over api.max_body", body = ErrorBody),
        (status = 422, description = "Bad filter or body", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn retry_bulk(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<BulkCount>, ApiError> {
    act_bulk(&state, &caller, body, false, |_| MessageAction::Retry).await
}

#[doc = bulk_doc!("Reschedule")]
#[utoipa::path(
    post, path = "/v1/messages/reschedule", tag = "actions", request_body = BulkBody,
    responses(
        (status = 200, description = "Counted (dry run) or rescheduled", body = BulkCount),
        (status = 400, description = "Not JSON", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Token without scope admin", body = ErrorBody),
        (status = 409, description = "The count no longer matches expect_count: nothing changed", body = ErrorBody),
        (status = 413, description = "Body over api.max_body", body = ErrorBody),
        (status = 422, description = "Bad filter or body", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn reschedule_bulk(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<BulkCount>, ApiError> {
    act_bulk(&state, &caller, body, true, |at| {
        MessageAction::Reschedule(at.unwrap_or_default())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_headers_go_to_messages_without_their_own() {
        let mut headers = HeaderMap::new();
        assert_eq!(trace_members(&headers), None);
        headers.insert("traceparent", HeaderValue::from_static("00-ab-cd-01"));
        headers.append("tracestate", HeaderValue::from_static("a=1"));
        headers.append("tracestate", HeaderValue::from_static("b=2"));
        let trace = trace_members(&headers).unwrap();
        assert_eq!(
            trace,
            r#""traceparent":"00-ab-cd-01","tracestate":"a=1,b=2""#
        );
        let t = Some(trace.as_str());
        let parsed = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        assert_eq!(
            parsed(&with_trace(r#"{"channel":"sms"}"#, t)),
            serde_json::json!({"traceparent": "00-ab-cd-01", "tracestate": "a=1,b=2", "channel": "sms"})
        );
        assert_eq!(
            parsed(&with_trace(" { } ", t))["traceparent"],
            "00-ab-cd-01"
        );
        // A message's own traceparent wins, and the header's tracestate is not mixed into it.
        let own = r#"{"channel":"sms","traceparent":"00-ef-01-00"}"#;
        assert_eq!(with_trace(own, t), own);
        assert_eq!(with_trace("[1]", t), "[1]");
        assert_eq!(with_trace(own, None), own);
    }

    #[test]
    fn cursor_round_trips_and_refuses_garbage() {
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(id)), Some(id));
        assert_eq!(decode_cursor("not a cursor"), None);
        assert_eq!(decode_cursor(&URL_SAFE_NO_PAD.encode([2u8; 17])), None);
        assert_eq!(decode_cursor(""), None);
    }

    #[test]
    fn id_floor_orders_with_uuid_v7() {
        let at = Utc::now();
        let floor = id_floor(at).unwrap();
        let id = Uuid::now_v7();
        assert!(floor <= id);
        assert!(id_floor(at + chrono::Duration::seconds(1)).unwrap() > id);
    }
}

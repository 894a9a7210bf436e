//! The sandbox: a local HTTP server that answers every provider kind's requests, so the demo, the tests and the
//! benchmarks produce real HTTP traffic without reaching a provider.
//!
//! # Routes
//!
//! | route | kind | answer |
//! | --- | --- | --- |
//! | `POST /workspaces/{ws}/channels/{ch}/messages` | `bird_sms` (`sandbox` when `ws` is `sandbox`) | 202, a Bird message (`id`, `status: accepted`, `reference`, …) |
//! | `GET /api/get-customer-thread-details?customerThreadId=…` | `instaply_whatsapp` | 200; the window is open unless the thread id starts with `closed` |
//! | `POST /api/send-message-to-customer-thread` | `instaply_whatsapp` | 200; free `text` to a closed-window thread is refused (below) |
//! | `POST /api/update-thread-status` | `instaply_whatsapp` | 200 |
//! | `POST /rest/login` | `insider_push` | 200, `{access_token, expires_in}` |
//! | `POST /rest/push/sendInstant` | `insider_push` | 200, `{code: 0, data: {trackingId}}` |
//! | `POST /messages/send_to_customer` | `instant_app` | 200 |
//! | `POST /webhook` | `webhook` | 200 (any JSON) |
//! | `GET /_sandbox/requests` | — | the request log, a JSON array |
//!
//! A free-text send to a thread whose window is closed is answered `400` with
//! `{"error": "messaging_window_closed", "message": …}`. Instaply documents no error shape for this case; a 4xx
//! is what a "only templates are allowed now" refusal looks like on any messaging API, and the adapter does not
//! depend on the body: on a refused free-text send it asks for the thread details again and falls back to the
//! template when the window is now closed.
//!
//! # Idempotency id in the log
//!
//! Each logged request carries the id a retry of the same message would repeat: Bird's `reference`, Insider's
//! `trackingId`, the webhook's `webhook-id` header (else the body's `id`), and for the instant app and Instaply,
//! whose APIs have no idempotency field, the `Idempotency-Key` header the adapters send with the message id.
//!
//! # Fault injection
//!
//! Per request, before answering: with probability `hang` it never answers (the client's timeout fires), with
//! `fail_5xx` it answers 503, with `fail_429` it answers 429 with `Retry-After: {retry_after_secs}`; every
//! answer waits `latency` first. Hung requests are logged with status 0.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use uuid::Uuid;

use crate::error::{Error, Result};

/// How the sandbox misbehaves. The default answers at once and never fails.
#[derive(Debug, Clone, Default)]
pub struct SandboxOptions {
    /// Wait this long before every answer.
    pub latency: Duration,
    /// Probability (0 to 1) of answering 429 with `Retry-After`.
    pub fail_429: f64,
    /// The `Retry-After` of injected 429s, in seconds.
    pub retry_after_secs: u64,
    /// Probability (0 to 1) of answering 503.
    pub fail_5xx: f64,
    /// Probability (0 to 1) of never answering.
    pub hang: f64,
    /// Also append every logged request to this file, one JSON object per line.
    pub log_file: Option<PathBuf>,
}

/// One request that reached the sandbox.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxRequest {
    /// The provider kind the route belongs to (`bird_sms`, `sandbox`, `instaply_whatsapp`, `insider_push`,
    /// `instant_app`, `webhook`).
    pub kind: &'static str,
    /// Which call of that kind (`send`, `thread_details`, `update_thread_status`, `login`).
    pub route: &'static str,
    /// The id a retry of the same message repeats (see the module docs), when the request carried one.
    pub idempotency_id: Option<String>,
    /// The HTTP status answered; 0 for a request that was left hanging.
    pub status: u16,
    /// When it arrived.
    pub at: DateTime<Utc>,
}

/// A running sandbox server.
pub struct Sandbox {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    options: RwLock<SandboxOptions>,
    log: Mutex<Vec<SandboxRequest>>,
    log_file: Mutex<Option<(PathBuf, std::fs::File)>>,
    shutdown: watch::Receiver<bool>,
}

impl Sandbox {
    /// Binds `listen` (`127.0.0.1:0` picks a free port) and serves until [`stop`](Self::stop).
    pub async fn start(listen: SocketAddr, options: SandboxOptions) -> Result<Sandbox> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            options: RwLock::new(SandboxOptions::default()),
            log: Mutex::new(Vec::new()),
            log_file: Mutex::new(None),
            shutdown: shutdown_rx.clone(),
        });
        shared.set_options(options)?;
        let app = router(shared.clone());
        let mut stop_rx = shutdown_rx;
        let task = tokio::spawn(async move {
            let stopped = async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
            {
                tracing::warn!(error = %e, "sandbox server stopped with an error");
            }
        });
        tracing::info!(%addr, "sandbox listening");
        Ok(Sandbox {
            addr,
            shared,
            shutdown,
            task,
        })
    }

    /// `http://IP:PORT`, the `base_url` to give channels.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A snapshot of the request log, oldest first.
    pub fn requests(&self) -> Vec<SandboxRequest> {
        self.shared.log.lock().expect("sandbox log lock").clone()
    }

    /// Changes fault injection (and the log file) while running; requests already waiting keep their fate.
    /// A log file that cannot be opened is reported in the server's log and skipped.
    pub fn set_options(&self, options: SandboxOptions) {
        if let Err(e) = self.shared.set_options(options) {
            tracing::warn!(error = %e, "sandbox: log file not opened");
        }
    }

    /// Stops the server: hanging requests are released, in-flight answers get a moment to finish.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

impl Shared {
    fn set_options(&self, options: SandboxOptions) -> Result<()> {
        {
            let mut file = self.log_file.lock().expect("sandbox log file lock");
            let same = matches!((&*file, &options.log_file), (Some((a, _)), Some(b)) if a == b);
            if !same {
                *file = match &options.log_file {
                    None => None,
                    Some(path) => {
                        let f = std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(path)
                            .map_err(|e| Error::Other(format!("{}: {e}", path.display())))?;
                        Some((path.clone(), f))
                    }
                };
            }
        }
        *self.options.write().expect("sandbox options lock") = options;
        Ok(())
    }

    fn record(&self, kind: &'static str, route: &'static str, id: Option<String>, status: u16) {
        let entry = SandboxRequest {
            kind,
            route,
            idempotency_id: id,
            status,
            at: Utc::now(),
        };
        if let Some((_, file)) = &mut *self.log_file.lock().expect("sandbox log file lock")
            && let Ok(mut line) = serde_json::to_vec(&entry)
        {
            line.push(b'\n');
            if let Err(e) = file.write_all(&line) {
                tracing::warn!(error = %e, "sandbox: cannot append to the log file");
            }
        }
        self.log.lock().expect("sandbox log lock").push(entry);
    }

    /// Applies latency and the injected faults. `Some` is the answer to give instead of the route's own.
    async fn inject(
        &self,
        kind: &'static str,
        route: &'static str,
        id: &Option<String>,
    ) -> Option<Response> {
        let options = self.options.read().expect("sandbox options lock").clone();
        // One draw, split into bands, so the given rates hold as long as they sum to at most 1.
        let draw: f64 = rand::random();
        if draw < options.hang {
            self.record(kind, route, id.clone(), 0);
            let mut stop = self.shutdown.clone();
            let _ = stop.wait_for(|stop| *stop).await;
            return Some(StatusCode::SERVICE_UNAVAILABLE.into_response());
        }
        if !options.latency.is_zero() {
            tokio::time::sleep(options.latency).await;
        }
        if draw < options.hang + options.fail_5xx {
            self.record(kind, route, id.clone(), 503);
            let body =
                json!({ "error": "service_unavailable", "message": "sandbox: injected 503" });
            return Some((StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response());
        }
        if draw < options.hang + options.fail_5xx + options.fail_429 {
            self.record(kind, route, id.clone(), 429);
            let body = json!({ "error": "too_many_requests", "message": "sandbox: injected 429" });
            let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(options.retry_after_secs),
            );
            return Some(response);
        }
        None
    }

    /// Logs the route's own answer and returns it.
    fn answer(
        &self,
        kind: &'static str,
        route: &'static str,
        id: Option<String>,
        status: StatusCode,
        body: Value,
    ) -> Response {
        self.record(kind, route, id, status.as_u16());
        (status, axum::Json(body)).into_response()
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/workspaces/{ws}/channels/{ch}/messages", post(bird_send))
        .route(
            "/api/get-customer-thread-details",
            get(instaply_thread_details),
        )
        .route("/api/send-message-to-customer-thread", post(instaply_send))
        .route("/api/update-thread-status", post(instaply_update_status))
        .route("/rest/login", post(insider_login))
        .route("/rest/push/sendInstant", post(insider_send))
        .route("/messages/send_to_customer", post(instant_app_send))
        .route("/webhook", post(webhook))
        .route("/_sandbox/requests", get(requests))
        .with_state(shared)
}

type AppState = State<Arc<Shared>>;

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn str_field(body: &Value, key: &str) -> Option<String> {
    match body.get(key) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

fn bad_request(message: &str) -> Value {
    json!({ "error": "bad_request", "message": message })
}

/// Parses a JSON body; `Err` is the logged 400 to return.
fn parse_json(
    shared: &Shared,
    kind: &'static str,
    route: &'static str,
    id: &Option<String>,
    body: &Bytes,
) -> Result<Value, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(shared.answer(
            kind,
            route,
            id.clone(),
            StatusCode::BAD_REQUEST,
            bad_request(&format!("body is not JSON: {e}")),
        ))
    })
}

async fn bird_send(
    State(shared): AppState,
    Path((ws, ch)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let kind = if ws == "sandbox" {
        "sandbox"
    } else {
        "bird_sms"
    };
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let id = parsed.as_ref().and_then(|b| str_field(b, "reference"));
    if let Some(r) = shared.inject(kind, "send", &id).await {
        return r;
    }
    let Some(body) = parsed else {
        return shared.answer(
            kind,
            "send",
            id,
            StatusCode::BAD_REQUEST,
            bad_request("body is not JSON"),
        );
    };
    let receiver = &body["receiver"]["contacts"][0]["identifierValue"];
    if !receiver.is_string() {
        return shared.answer(
            kind,
            "send",
            id,
            StatusCode::UNPROCESSABLE_ENTITY,
            bad_request("receiver.contacts[0].identifierValue is required"),
        );
    }
    if body.get("body").is_some() == body.get("template").is_some() {
        return shared.answer(
            kind,
            "send",
            id,
            StatusCode::UNPROCESSABLE_ENTITY,
            bad_request("exactly one of body or template is required"),
        );
    }
    let now = Utc::now();
    let answer = json!({
        "id": Uuid::now_v7(),
        "channelId": ch,
        "status": "accepted",
        "reference": body.get("reference"),
        "receiver": body["receiver"],
        "direction": "outgoing",
        "tags": body.get("tags"),
        "lastStatusAt": now,
        "createdAt": now,
        "updatedAt": now,
    });
    shared.answer(kind, "send", id, StatusCode::ACCEPTED, answer)
}

const INSTAPLY: &str = "instaply_whatsapp";

fn window_open(thread: &str) -> bool {
    !thread.starts_with("closed")
}

async fn instaply_thread_details(
    State(shared): AppState,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let id = header_str(&headers, "idempotency-key");
    if let Some(r) = shared.inject(INSTAPLY, "thread_details", &id).await {
        return r;
    }
    let Some(thread) = query.get("customerThreadId") else {
        return shared.answer(
            INSTAPLY,
            "thread_details",
            id,
            StatusCode::BAD_REQUEST,
            bad_request("customerThreadId is required"),
        );
    };
    let answer = json!({
        "customerChannel": "WHATSAPP",
        "status": "waiting",
        "isMessagingWindowOpen": window_open(thread),
    });
    shared.answer(INSTAPLY, "thread_details", id, StatusCode::OK, answer)
}

async fn instaply_send(State(shared): AppState, headers: HeaderMap, body: Bytes) -> Response {
    let id = header_str(&headers, "idempotency-key");
    if let Some(r) = shared.inject(INSTAPLY, "send", &id).await {
        return r;
    }
    let body = match parse_json(&shared, INSTAPLY, "send", &id, &body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let Some(thread) = str_field(&body, "customerThreadId") else {
        return shared.answer(
            INSTAPLY,
            "send",
            id,
            StatusCode::BAD_REQUEST,
            bad_request("customerThreadId is required"),
        );
    };
    let text = body.get("text").is_some();
    let template = body.get("contentSid").is_some();
    if text == template {
        return shared.answer(
            INSTAPLY,
            "send",
            id,
            StatusCode::BAD_REQUEST,
            bad_request("exactly one of text or contentSid must be provided"),
        );
    }
    if text && !window_open(&thread) {
        let refusal = json!({
            "error": "messaging_window_closed",
            "message": "the messaging window of this thread is closed: only templates (contentSid) can be sent",
        });
        return shared.answer(INSTAPLY, "send", id, StatusCode::BAD_REQUEST, refusal);
    }
    let answer = json!({ "messageId": rand::random::<u32>(), "customerThreadId": thread });
    shared.answer(INSTAPLY, "send", id, StatusCode::OK, answer)
}

async fn instaply_update_status(
    State(shared): AppState,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id = header_str(&headers, "idempotency-key");
    if let Some(r) = shared.inject(INSTAPLY, "update_thread_status", &id).await {
        return r;
    }
    let body = match parse_json(&shared, INSTAPLY, "update_thread_status", &id, &body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let status = body["status"].as_str().unwrap_or_default();
    if !["waiting", "replied", "resolved"].contains(&status)
        || body.get("customerThreadId").is_none()
    {
        return shared.answer(
            INSTAPLY,
            "update_thread_status",
            id,
            StatusCode::BAD_REQUEST,
            bad_request("customerThreadId and status (waiting, replied, resolved) are required"),
        );
    }
    shared.answer(
        INSTAPLY,
        "update_thread_status",
        id,
        StatusCode::OK,
        json!({}),
    )
}

const INSIDER: &str = "insider_push";

async fn insider_login(State(shared): AppState) -> Response {
    if let Some(r) = shared.inject(INSIDER, "login", &None).await {
        return r;
    }
    let answer =
        json!({ "access_token": format!("sandbox-{}", Uuid::now_v7()), "expires_in": 3600 });
    shared.answer(INSIDER, "login", None, StatusCode::OK, answer)
}

async fn insider_send(State(shared): AppState, body: Bytes) -> Response {
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let id = parsed.as_ref().and_then(|b| str_field(b, "trackingId"));
    if let Some(r) = shared.inject(INSIDER, "send", &id).await {
        return r;
    }
    let Some(body) = parsed else {
        return shared.answer(
            INSIDER,
            "send",
            id,
            StatusCode::BAD_REQUEST,
            bad_request("body is not JSON"),
        );
    };
    let problem = if body.get("content").is_some() == body.get("multiLangContent").is_some() {
        Some("exactly one of content or multiLangContent is required")
    } else if body.get("segmentId").is_some() == body.get("tableId").is_some() {
        Some("exactly one of segmentId or tableId is required")
    } else if !body["applicationIds"].is_array() {
        Some("applicationIds must be an array")
    } else {
        None
    };
    if let Some(problem) = problem {
        return shared.answer(
            INSIDER,
            "send",
            id,
            StatusCode::BAD_REQUEST,
            bad_request(problem),
        );
    }
    let tracking = id.clone().unwrap_or_else(|| Uuid::now_v7().to_string());
    let answer = json!({ "code": 0, "message": "Success", "data": { "trackingId": tracking } });
    shared.answer(INSIDER, "send", id, StatusCode::OK, answer)
}

async fn instant_app_send(State(shared): AppState, headers: HeaderMap, body: Bytes) -> Response {
    const KIND: &str = "instant_app";
    let id = header_str(&headers, "idempotency-key");
    if let Some(r) = shared.inject(KIND, "send", &id).await {
        return r;
    }
    let body = match parse_json(&shared, KIND, "send", &id, &body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let key = body["customerChannelKey"].as_str().unwrap_or_default();
    let ten_digits = key.len() == 10 && key.bytes().all(|b| b.is_ascii_digit());
    let problem = if !ten_digits {
        Some("customerChannelKey must be a 10-digit phone number")
    } else if !body["message"].is_string() {
        Some("message is required")
    } else if !body["instantAppSchemaApiId"].is_string() || !body["orgChannelApiId"].is_string() {
        Some("instantAppSchemaApiId and orgChannelApiId are required")
    } else {
        None
    };
    if let Some(problem) = problem {
        return shared.answer(
            KIND,
            "send",
            id,
            StatusCode::BAD_REQUEST,
            bad_request(problem),
        );
    }
    let answer = json!({ "id": Uuid::now_v7(), "status": "queued" });
    shared.answer(KIND, "send", id, StatusCode::OK, answer)
}

async fn webhook(State(shared): AppState, headers: HeaderMap, body: Bytes) -> Response {
    const KIND: &str = "webhook";
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let id = header_str(&headers, "webhook-id")
        .or_else(|| parsed.as_ref().and_then(|b| str_field(b, "id")));
    if let Some(r) = shared.inject(KIND, "send", &id).await {
        return r;
    }
    if parsed.is_none() {
        return shared.answer(
            KIND,
            "send",
            id,
            StatusCode::BAD_REQUEST,
            bad_request("body is not JSON"),
        );
    }
    let answer = json!({ "id": Uuid::now_v7(), "received": id });
    shared.answer(KIND, "send", id, StatusCode::OK, answer)
}

async fn requests(State(shared): AppState) -> Response {
    let log = shared.log.lock().expect("sandbox log lock").clone();
    axum::Json(log).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn logs_bird_sends_and_injects_429() {
        let file = std::env::temp_dir().join(format!("tidings-sandbox-{}.jsonl", Uuid::now_v7()));
        let options = SandboxOptions {
            log_file: Some(file.clone()),
            ..Default::default()
        };
        let sandbox = Sandbox::start(([127, 0, 0, 1], 0).into(), options)
            .await
            .unwrap();
        let client = reqwest::Client::new();
        let url = format!("{}/workspaces/w/channels/c/messages", sandbox.base_url());
        let body = json!({
            "receiver": { "contacts": [ { "identifierValue": "+31612345678" } ] },
            "body": { "type": "text", "text": { "text": "hi" } },
            "reference": "ref-1",
        });
        let r = client.post(&url).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 202);
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["status"], "accepted");
        assert_eq!(answer["reference"], "ref-1");

        sandbox.set_options(SandboxOptions {
            fail_429: 1.0,
            retry_after_secs: 7,
            log_file: Some(file.clone()),
            ..Default::default()
        });
        let r = client.post(&url).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "7");

        let log: Vec<Value> = client
            .get(format!("{}/_sandbox/requests", sandbox.base_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(log.len(), 2);
        let statuses: Vec<u16> = sandbox.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [202, 429]);
        assert!(
            sandbox
                .requests()
                .iter()
                .all(|r| r.kind == "bird_sms" && r.idempotency_id.as_deref() == Some("ref-1"))
        );
        sandbox.stop().await;
        let lines: Vec<Value> = std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        std::fs::remove_file(&file).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["status"], 429);
        assert_eq!(lines[1]["idempotency_id"], "ref-1");
    }
}

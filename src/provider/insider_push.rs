//! `kind = "insider_push"`: a push broadcast through SendInstantPush (seed 004).
//!
//! Where the field names come from (the seed lost them) is told in `docs/channels.md`.
//!
//! This adapter sends our message id as `trackingId` (the idempotency key, and the provider message id unless
//! the answer names another), never `scheduleDate` (tidings schedules; the claim happens when it is due), and
//! maps the content key `onlyLastEngaged` to `useOnlyEngagedTokens`. Errors go through the shared table; the
//! seed's meanings of 401 (not authenticated, re-login), 403 (API user not allowed), 404 (template id not found:
//! permanent) and 429 are added to the detail. With login credentials, a 401 drops the cached token and the
//! send is tried once more with a fresh one, in the same attempt.
//!
//! Settings: either `access_token_env` (a ready token) or `userkey_env` and `password_env` (an API user; the
//! adapter logs in and renews the token before `expires_in`); `base_url` defaults to `https://api.dengage.com`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::time::Instant;
use uuid::Uuid;

use super::credentials::{self, Env, Secret};
use super::{Accepted, Provider, SendError, SendResult, http};
use crate::config::ChannelConfig;
use crate::error::{Error, Result};
use crate::lazy_json;
use crate::message::Message;

/// The API host of the public reference.
pub(crate) const DEFAULT_BASE_URL: &str = "https://api.dengage.com";

/// Renew a login token this long before the provider says it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);

/// Adapter for `kind = "insider_push"`.
#[derive(Debug)]
pub(crate) struct InsiderPush {
    client: reqwest::Client,
    login_url: reqwest::Url,
    send_url: reqwest::Url,
    timeout: Duration,
    auth: Auth,
}

#[derive(Debug)]
enum Auth {
    Token(Secret),
    Login {
        userkey: Secret,
        password: Secret,
        token: tokio::sync::Mutex<Option<(Secret, Instant)>>,
    },
}

impl InsiderPush {
    /// Reads the settings and the credentials; errors name the setting.
    pub(crate) fn new(
        name: &str,
        config: &ChannelConfig,
        client: &reqwest::Client,
        env: Env,
    ) -> Result<Self> {
        let has = |k: &str| config.settings.contains_key(k);
        let auth = match (
            has("access_token_env"),
            has("userkey_env") || has("password_env"),
        ) {
            (true, false) => Auth::Token(credentials::from_env(
                name,
                config,
                "access_token_env",
                env,
            )?),
            (false, true) => Auth::Login {
                userkey: credentials::from_env(name, config, "userkey_env", env)?,
                password: credentials::from_env(name, config, "password_env", env)?,
                token: tokio::sync::Mutex::new(None),
            },
            _ => {
                return Err(Error::Config(format!(
                    "channels.{name}: kind insider_push needs either access_token_env or both userkey_env and password_env"
                )));
            }
        };
        let base = http::base_url(config, DEFAULT_BASE_URL);
        Ok(InsiderPush {
            client: client.clone(),
            login_url: http::endpoint(name, &format!("{base}/rest/login"))?,
            send_url: http::endpoint(name, &format!("{base}/rest/push/sendInstant"))?,
            timeout: config.timeout,
            auth,
        })
    }

    /// The bearer token: the configured one, or a cached login token (logging in when there is none).
    async fn token(&self, deadline: Instant) -> Result<Secret, SendError> {
        let (userkey, password, cache) = match &self.auth {
            Auth::Token(token) => return Ok(token.clone()),
            Auth::Login {
                userkey,
                password,
                token,
            } => (userkey, password, token),
        };
        // Held across the login so a burst of sends logs in once.
        let mut cached = cache.lock().await;
        if let Some((token, until)) = &*cached
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let request = self
            .client
            .post(self.login_url.clone())
            .json(&json!({ "userkey": userkey.expose(), "password": password.expose() }));
        let response = http::execute_until(request, deadline)
            .await
            .map_err(|e| at_stage(e, "login"))?;
        let Some(token) = response.json.get("access_token").and_then(Value::as_str) else {
            return Err(SendError::Transient {
                reason: "login_failed".to_owned(),
                detail: json!({ "stage": "login", "http_status": response.status, "error": "no access_token in the answer" }),
            });
        };
        let lifetime = response
            .json
            .get("expires_in")
            .and_then(Value::as_u64)
            .map_or(Duration::from_secs(3600), Duration::from_secs);
        // Checked: `Instant + Duration` panics past the clock's range, and a provider may answer any number.
        // Such an answer is the provider's fault and may be fixed by the next login: retried, never a panic.
        let Some(until) = Instant::now().checked_add(lifetime.saturating_sub(TOKEN_MARGIN)) else {
            return Err(SendError::Transient {
                reason: "login_failed".to_owned(),
                detail: json!({
                    "stage": "login",
                    "http_status": response.status,
                    "error": "expires_in is out of range",
                }),
            });
        };
        let token = Secret::new(token);
        *cached = Some((token.clone(), until));
        Ok(token)
    }

    async fn forget_token(&self) {
        if let Auth::Login { token, .. } = &self.auth {
            *token.lock().await = None;
        }
    }

    async fn post(
        &self,
        body: &RequestBody<'_>,
        token: &Secret,
        deadline: Instant,
    ) -> Result<http::Response, SendError> {
        let request = self
            .client
            .post(self.send_url.clone())
            .header(reqwest::header::AUTHORIZATION, token.header("Bearer "))
            .json(body);
        http::execute_until(request, deadline).await
    }

    async fn attempt(&self, message: &Message) -> (SendResult, Option<Secret>) {
        let body = match request_body(message) {
            Ok(b) => b,
            Err(e) => return (Err(e), None),
        };
        let deadline = http::deadline(self.timeout);
        let mut token = match self.token(deadline).await {
            Ok(t) => t,
            Err(e) => return (Err(e), None),
        };
        let mut result = self.post(&body, &token, deadline).await;
        if matches!(&result, Err(e) if http_status(e) == Some(401))
            && matches!(self.auth, Auth::Login { .. })
        {
            // "Not authenticated. Please re-login." The token expired early or was revoked: once more, fresh.
            self.forget_token().await;
            token = match self.token(deadline).await {
                Ok(t) => t,
                Err(e) => return (Err(e), Some(token)),
            };
            result = self.post(&body, &token, deadline).await;
        }
        let result = match result {
            Ok(response) => accepted(message, &response),
            Err(e) => Err(with_meaning(e)),
        };
        (result, Some(token))
    }
}

/// The SendInstantPush body of one message. `content` / `multiLangContent` are the content's members as stored
/// (see [`crate::lazy_json`]), so they reach the provider exactly as enqueued.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RequestBody<'a> {
    application_ids: &'a [Value],
    tracking_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    segment_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    table_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    multi_lang_content: Option<&'a RawValue>,
    /// `useOnlyEngagedTokens`: the API's name for the content key `onlyLastEngaged`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    use_only_engaged_tokens: bool,
}

/// The SendInstantPush body for `message`, or why its content cannot make one.
pub(crate) fn request_body(message: &Message) -> Result<RequestBody<'_>, SendError> {
    let invalid = |m: &str| SendError::permanent("invalid_content", m);
    let r = message
        .recipient
        .value()
        .map_err(|why| SendError::unreadable("recipient", why))?;
    let c = message
        .content
        .fields()
        .map_err(|why| SendError::unreadable("content", &why))?;
    let application_ids = match r.get("applicationIds") {
        Some(Value::Array(ids)) if !ids.is_empty() && ids.iter().all(Value::is_string) => ids,
        _ => {
            return Err(invalid(
                "recipient.applicationIds: must be a non-empty array of application ids",
            ));
        }
    };
    let (segment_id, table_id) = match (r.get("segmentId"), r.get("tableId")) {
        (Some(Value::String(s)), None) => (Some(s.as_str()), None),
        (None, Some(Value::String(t))) => (None, Some(t.as_str())),
        _ => {
            return Err(invalid(
                "recipient: must have exactly one of segmentId or tableId (a UUID string)",
            ));
        }
    };
    let (content, multi_lang_content) = match (c.raw("content"), c.raw("multiLangContent")) {
        (Some(v), None) if lazy_json::is_object(v) => (Some(v), None),
        (None, Some(v)) if lazy_json::is_object(v) => (None, Some(v)),
        _ => {
            return Err(invalid(
                "content: must have exactly one of content or multiLangContent (an object)",
            ));
        }
    };
    let use_only_engaged_tokens = match c.raw("onlyLastEngaged").map(RawValue::get) {
        None | Some("null" | "false") => false,
        Some("true") => true,
        Some(_) => return Err(invalid("content.onlyLastEngaged: must be true or false")),
    };
    Ok(RequestBody {
        application_ids,
        tracking_id: message.id,
        segment_id,
        table_id,
        content,
        multi_lang_content,
        use_only_engaged_tokens,
    })
}

fn accepted(message: &Message, response: &http::Response) -> SendResult {
    let json = &response.json;
    if let Some(code) = json.get("code").and_then(Value::as_i64)
        && code != 0
    {
        return Err(SendError::Permanent {
            reason: "provider_rejected".to_owned(),
            detail: json!({ "http_status": response.status, "code": code, "provider_reason": http::bounded(json.get("message")) }),
        });
    }
    let tracking = json
        .pointer("/data/trackingId")
        .or_else(|| json.get("trackingId"))
        .and_then(Value::as_str)
        .map_or_else(|| message.id.to_string(), str::to_owned);
    Ok(Accepted {
        provider_message_id: Some(tracking),
        detail: json!({ "http_status": response.status, "transaction_id": http::bounded(json.get("transactionId")) }),
    })
}

fn http_status(error: &SendError) -> Option<u64> {
    error.detail().get("http_status").and_then(Value::as_u64)
}

/// Adds the seed's meaning of the statuses it lists (the class comes from the shared table).
fn with_meaning(mut error: SendError) -> SendError {
    let meaning = match http_status(&error) {
        Some(401) => "not authenticated: re-login",
        Some(403) => "the API user is not authorized to use this API",
        Some(404) => "the template id was not found",
        Some(429) => "too many requests",
        _ => return error,
    };
    let detail = error.detail_mut();
    if detail.is_object() {
        detail["meaning"] = json!(meaning);
    }
    error
}

fn at_stage(mut error: SendError, stage: &str) -> SendError {
    let detail = error.detail_mut();
    if detail.is_object() {
        detail["stage"] = json!(stage);
    }
    error
}

impl Provider for InsiderPush {
    fn send<'a>(&'a self, message: &'a Message, _now: DateTime<Utc>) -> BoxFuture<'a, SendResult> {
        Box::pin(async move {
            let (result, token) = self.attempt(message).await;
            result.map_err(|e| {
                let mut secrets: Vec<&Secret> = match &self.auth {
                    Auth::Token(t) => vec![t],
                    Auth::Login {
                        userkey, password, ..
                    } => vec![userkey, password],
                };
                secrets.extend(token.as_ref());
                credentials::scrub_recipient(credentials::redact(e, &secrets), &message.recipient)
            })
        })
    }
}

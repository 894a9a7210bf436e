//! `kind = "bird_sms"`: Bird's Channels API, SMS/MMS (seed 002).
//!
//! `POST {base_url}/workspaces/{workspace_id}/channels/{channel_id}/messages` with
//! `Authorization: AccessKey <key>`. The body carries the receiver's phone number, exactly one of `body` or
//! `template` (the content as enqueued), our message id as `reference` (so a retry is recognisable), the tags, the
//! remaining validity in seconds, and `ignoreQuietHours` / `capFrequency` only when the message sets them.
//!
//! Settings: `workspace_id`, `channel_id`, `access_key_env` (name of the environment variable holding the access
//! key); `base_url` defaults to `https://api.bird.com`.

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use uuid::Uuid;

use super::credentials::{self, Env, Secret};
use super::{Accepted, Provider, SendError, SendResult, http};
use crate::config::ChannelConfig;
use crate::error::Result;
use crate::message::Message;

/// Bird's public API host.
pub(crate) const DEFAULT_BASE_URL: &str = "https://api.bird.com";

/// Adapter for `kind = "bird_sms"`.
#[derive(Debug)]
pub(crate) struct BirdSms {
    client: reqwest::Client,
    url: reqwest::Url,
    access_key: Secret,
    timeout: std::time::Duration,
}

impl BirdSms {
    /// Reads the settings and the access key; errors name the setting.
    pub(crate) fn new(
        name: &str,
        config: &ChannelConfig,
        client: &reqwest::Client,
        env: Env,
    ) -> Result<Self> {
        let workspace = config.setting_str(name, "workspace_id")?;
        let channel = config.setting_str(name, "channel_id")?;
        let access_key = credentials::from_env(name, config, "access_key_env", env)?;
        Ok(BirdSms {
            client: client.clone(),
            url: http::endpoint(
                name,
                &format!(
                    "{}/workspaces/{workspace}/channels/{channel}/messages",
                    http::base_url(config, DEFAULT_BASE_URL)
                ),
            )?,
            access_key,
            timeout: config.timeout,
        })
    }
}

/// The request body of one message: the content's `body` or `template` as its stored text (see
/// [`crate::lazy_json`]), so template parameters and content reach Bird exactly as enqueued.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RequestBody<'a> {
    receiver: Receiver<'a>,
    reference: Uuid,
    validity: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    template: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    tags: &'a [String],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    ignore_quiet_hours: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    cap_frequency: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<Value>,
}

#[derive(Debug, Serialize)]
struct Receiver<'a> {
    contacts: [Contact<'a>; 1],
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Contact<'a> {
    identifier_value: &'a str,
}

/// The request body for `message` at `now`, or why the content cannot make one.
pub(crate) fn request_body(
    message: &Message,
    now: DateTime<Utc>,
) -> Result<RequestBody<'_>, SendError> {
    let recipient = message
        .recipient
        .value()
        .map_err(|why| SendError::unreadable("recipient", why))?;
    let phone = recipient
        .get("phone")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            SendError::permanent(
                "invalid_content",
                "recipient.phone: must be a phone number string",
            )
        })?;
    let content = message
        .content
        .fields()
        .map_err(|why| SendError::unreadable("content", &why))?;
    let (body, template) = match (content.raw("body"), content.raw("template")) {
        (Some(b), None) => (Some(b), None),
        (None, Some(t)) => (None, Some(t)),
        _ => {
            return Err(SendError::permanent(
                "invalid_content",
                "content: must have exactly one of body or template",
            ));
        }
    };
    Ok(RequestBody {
        receiver: Receiver {
            contacts: [Contact {
                identifier_value: phone,
            }],
        },
        reference: message.id,
        // The policy never sends an expired message; at least 1 keeps the field valid at the very edge.
        validity: message.remaining_validity(now).max(1),
        body,
        template,
        tags: &message.tags,
        ignore_quiet_hours: message.ignore_quiet_hours,
        cap_frequency: message.cap_frequency,
        // Bird accepts capFrequency only for a marketing message, which it reads from meta.
        meta: message
            .cap_frequency
            .then(|| json!({ "extraInformation": { "useCase": message.use_case } })),
    })
}

/// Reads Bird's answer: `id` is the provider message id; a 2xx whose `status` is `rejected` is a refusal.
pub(crate) fn accepted(response: &http::Response) -> SendResult {
    let status = response.json.get("status").and_then(Value::as_str);
    if status == Some("rejected") {
        return Err(SendError::Permanent {
            reason: "provider_rejected".to_owned(),
            detail: json!({
                "http_status": response.status,
                "provider_status": "rejected",
                "provider_reason": http::bounded(response.json.get("reason")),
                "failure": http::bounded(response.json.get("failure")),
                "details": http::bounded(response.json.get("details")),
            }),
        });
    }
    Ok(Accepted {
        provider_message_id: response
            .json
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned),
        detail: json!({ "http_status": response.status, "provider_status": status }),
    })
}

impl Provider for BirdSms {
    fn send<'a>(&'a self, message: &'a Message, now: DateTime<Utc>) -> BoxFuture<'a, SendResult> {
        Box::pin(async move {
            let body = request_body(message, now)?;
            let request = self
                .client
                .post(self.url.clone())
                .header(
                    reqwest::header::AUTHORIZATION,
                    self.access_key.header("AccessKey "),
                )
                .json(&body);
            let result = match http::execute(request, self.timeout).await {
                Ok(response) => accepted(&response),
                Err(e) => Err(e),
            };
            result.map_err(|e| {
                credentials::scrub_recipient(
                    credentials::redact(e, &[&self.access_key]),
                    &message.recipient,
                )
            })
        })
    }
}

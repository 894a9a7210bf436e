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
use serde_json::{Value, json};

use super::credentials::{self, Env, Secret};
use super::{Accepted, Provider, SendError, SendResult, http};
use crate::config::ChannelConfig;
use crate::error::Result;
use crate::message::Message;

/// Bird's public API host.
pub const DEFAULT_BASE_URL: &str = "https://api.bird.com";

/// Adapter for `kind = "bird_sms"`.
#[derive(Debug)]
pub struct BirdSms {
    client: reqwest::Client,
    url: reqwest::Url,
    access_key: Secret,
    timeout: std::time::Duration,
}

impl BirdSms {
    /// Reads the settings and the access key; errors name the setting.
    pub fn new(
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

/// The request body for `message` at `now`, or why the content cannot make one.
pub fn request_body(message: &Message, now: DateTime<Utc>) -> Result<Value, SendError> {
    let phone = message
        .recipient
        .get("phone")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            SendError::permanent(
                "invalid_content",
                "recipient.phone: must be a phone number string",
            )
        })?;
    let mut body = json!({
        "receiver": { "contacts": [ { "identifierValue": phone } ] },
        "reference": message.id,
        // The policy never sends an expired message; at least 1 keeps the field valid at the very edge.
        "validity": message.remaining_validity(now).max(1),
    });
    match (message.content.get("body"), message.content.get("template")) {
        (Some(b), None) => body["body"] = b.clone(),
        (None, Some(t)) => body["template"] = t.clone(),
        _ => {
            return Err(SendError::permanent(
                "invalid_content",
                "content: must have exactly one of body or template",
            ));
        }
    }
    if !message.tags.is_empty() {
        body["tags"] = json!(message.tags);
    }
    if message.ignore_quiet_hours {
        body["ignoreQuietHours"] = json!(true);
    }
    if message.cap_frequency {
        // Bird accepts capFrequency only for a marketing message, which it reads from meta.
        body["capFrequency"] = json!(true);
        body["meta"] = json!({ "extraInformation": { "useCase": message.use_case } });
    }
    Ok(body)
}

/// Reads Bird's answer: `id` is the provider message id; a 2xx whose `status` is `rejected` is a refusal.
pub fn accepted(response: &http::Response) -> SendResult {
    let status = response.json.get("status").and_then(Value::as_str);
    if status == Some("rejected") {
        return Err(SendError::Permanent {
            reason: "provider_rejected".to_owned(),
            detail: json!({
                "http_status": response.status,
                "provider_status": "rejected",
                "provider_reason": response.json.get("reason"),
                "failure": response.json.get("failure"),
                "details": response.json.get("details"),
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
    fn kind(&self) -> &'static str {
        "bird_sms"
    }

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
            let result = match http::execute(request, self.timeout, now).await {
                Ok(response) => accepted(&response),
                Err(e) => Err(e),
            };
            result.map_err(|e| credentials::redact(e, &[&self.access_key]))
        })
    }
}

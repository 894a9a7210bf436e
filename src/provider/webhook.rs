//! `kind = "webhook"`: a signed JSON POST for in-house gateways.
//!
//! `POST {base_url}` with `{id, channel, recipient, content, use_case, tags, attempt}`, signed the Standard
//! Webhooks way: `webhook-id` (the message id, the same on every retry, so the receiver can deduplicate),
//! `webhook-timestamp` (unix seconds of the attempt) and `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "{id}.{timestamp}.{body}">`. The secret is read from the environment variable named by `secret_env`; a
//! `whsec_`-prefixed value is base64 after the prefix (as Standard Webhooks issues them), any other value is used
//! as its bytes. An answer's `id` (or `provider_message_id`), when a string, is kept as the provider message id.
//! With traces on, the request carries the attempt span's W3C `traceparent`, so the gateway's own spans join
//! the attempt's trace.
//!
//! Settings: `base_url` (required), `secret_env`.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::Sha256;

use super::credentials::{self, Env, Secret};
use super::{Accepted, Provider, SendResult, http};
use crate::config::ChannelConfig;
use crate::error::{Error, Result};
use crate::lazy_json::LazyJson;
use crate::message::Message;

/// Adapter for `kind = "webhook"`.
#[derive(Debug)]
pub(crate) struct Webhook {
    client: reqwest::Client,
    url: reqwest::Url,
    secret: Secret,
    key: SigningKey,
    timeout: Duration,
}

/// The HMAC key bytes, kept out of `Debug` (also the key of the status callbacks, `crate::callbacks`).
pub(crate) struct SigningKey(pub(crate) Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

impl Webhook {
    /// Reads the settings and the secret; errors name the setting.
    pub(crate) fn new(
        name: &str,
        config: &ChannelConfig,
        client: &reqwest::Client,
        env: Env,
    ) -> Result<Self> {
        let url = config.base_url.as_deref().ok_or_else(|| {
            Error::Config(format!(
                "channels.{name}.base_url: is required for kind webhook"
            ))
        })?;
        let secret = credentials::from_env(name, config, "secret_env", env)?;
        let key = signing_key(secret.expose()).ok_or_else(|| {
            Error::Config(format!(
                "channels.{name}.secret_env: a whsec_ secret must be base64 after the prefix"
            ))
        })?;
        Ok(Webhook {
            client: client.clone(),
            url: http::endpoint(name, url)?,
            key: SigningKey(key),
            secret,
            timeout: config.timeout,
        })
    }
}

/// The HMAC key of a secret: base64-decoded after `whsec_`, else the bytes as given. `None`: bad base64.
pub fn signing_key(secret: &str) -> Option<Vec<u8>> {
    match secret.strip_prefix("whsec_") {
        Some(encoded) => BASE64.decode(encoded).ok(),
        None => Some(secret.as_bytes().to_vec()),
    }
}

/// `v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// The JSON body of one attempt. Recipient and content are their stored text (see [`crate::lazy_json`]): the
/// gateway receives them exactly as enqueued, numbers included.
#[derive(Debug, Serialize)]
pub(crate) struct RequestBody<'a> {
    id: uuid::Uuid,
    channel: &'a str,
    recipient: &'a LazyJson,
    content: &'a LazyJson,
    use_case: &'a str,
    tags: &'a [String],
    attempt: i32,
}

/// The JSON body of one attempt.
pub(crate) fn request_body(message: &Message) -> RequestBody<'_> {
    RequestBody {
        id: message.id,
        channel: &message.channel,
        recipient: &message.recipient,
        content: &message.content,
        use_case: &message.use_case,
        tags: &message.tags,
        attempt: message.attempt(),
    }
}

impl Provider for Webhook {
    fn send<'a>(&'a self, message: &'a Message, now: DateTime<Utc>) -> BoxFuture<'a, SendResult> {
        Box::pin(async move {
            // Serialised once: the signature covers exactly the bytes sent.
            let body = serde_json::to_vec(&request_body(message)).map_err(|e| {
                super::SendError::permanent("invalid_content", format!("cannot serialise: {e}"))
            })?;
            let id = message.id.to_string();
            let timestamp = now.timestamp();
            let mut request = self
                .client
                .post(self.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("webhook-id", &id)
                .header("webhook-timestamp", timestamp.to_string())
                .header(
                    "webhook-signature",
                    sign(&self.key.0, &id, timestamp, &body),
                )
                .body(body);
            if let Some(traceparent) = crate::telemetry::current_traceparent() {
                request = request.header("traceparent", traceparent);
            }
            match http::execute(request, self.timeout).await {
                Ok(response) => Ok(Accepted {
                    provider_message_id: ["id", "provider_message_id"]
                        .iter()
                        .find_map(|k| response.json.get(*k).and_then(Value::as_str))
                        .map(str::to_owned),
                    detail: json!({ "http_status": response.status }),
                }),
                Err(e) => Err(credentials::scrub_recipient(
                    credentials::redact(e, &[&self.secret]),
                    &message.recipient,
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_vector() {
        // The example of the Standard Webhooks reference libraries.
        let key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(signing_key("whsec_not base64!").is_none());
        assert_eq!(signing_key("plain").unwrap(), b"plain");
    }
}

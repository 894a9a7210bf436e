//! `kind = "instant_app"`: an "instant app" link by text message, `POST /messages/send_to_customer` (seed 000).
//!
//! Body: `message` (with the channel's opt-out suffix appended, after a space, unless the message already
//! contains it), `instantAppSchemaApiId` and `instantAppParameters` from the content, `orgChannelApiId` (the
//! sending number) from the channel, and `customerChannelKey`: the recipient's 10-digit US number (`+1` and 10
//! digits is cut to the 10 digits the seed asks for). `customerChannelId` is left out, as the seed allows.
//!
//! Authentication: the seed shows a Swagger page ("Try it out", a generated curl), which implies an API key sent
//! in a header; neither its name nor its form is in the seed. The header name is a setting (`api_key_header`,
//! default `X-API-Key`) with an optional value prefix (`api_key_prefix`, e.g. `"Bearer "`). The API has no
//! idempotency field: the message id goes in an `Idempotency-Key` header (ignored by a server that does not know
//! it; the sandbox logs it).
//!
//! Settings: `base_url` (required: the seed names no host), `org_channel_api_id`, `api_key_env`,
//! `api_key_header`, `api_key_prefix`, `opt_out_suffix` (e.g. `"STOP2END"`, none by default).

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use reqwest::header::HeaderName;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::credentials::{self, Env, Secret};
use super::{Accepted, Provider, SendError, SendResult, http};
use crate::config::ChannelConfig;
use crate::error::{Error, Result};
use crate::lazy_json;
use crate::message::Message;

/// Adapter for `kind = "instant_app"`.
#[derive(Debug)]
pub(crate) struct InstantApp {
    client: reqwest::Client,
    url: reqwest::Url,
    org_channel_api_id: String,
    opt_out_suffix: Option<String>,
    api_key: Secret,
    api_key_header: HeaderName,
    api_key_prefix: String,
    timeout: Duration,
}

impl InstantApp {
    /// Reads the settings and the API key; errors name the setting.
    pub(crate) fn new(
        name: &str,
        config: &ChannelConfig,
        client: &reqwest::Client,
        env: Env,
    ) -> Result<Self> {
        let base = config.base_url.as_deref().ok_or_else(|| {
            Error::Config(format!(
                "channels.{name}.base_url: is required for kind instant_app"
            ))
        })?;
        let optional = |key: &str| -> Result<Option<String>> {
            match config.settings.get(key) {
                None => Ok(None),
                Some(_) => config.setting_str(name, key).map(|s| Some(s.to_owned())),
            }
        };
        let header = optional("api_key_header")?.unwrap_or_else(|| "X-API-Key".to_owned());
        let api_key_header = HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
            Error::Config(format!(
                "channels.{name}.api_key_header: {header:?} is not an HTTP header name"
            ))
        })?;
        Ok(InstantApp {
            client: client.clone(),
            url: http::endpoint(
                name,
                &format!("{}/messages/send_to_customer", base.trim_end_matches('/')),
            )?,
            org_channel_api_id: config.setting_str(name, "org_channel_api_id")?.to_owned(),
            opt_out_suffix: optional("opt_out_suffix")?.filter(|s| !s.trim().is_empty()),
            api_key: credentials::from_env(name, config, "api_key_env", env)?,
            api_key_header,
            api_key_prefix: optional("api_key_prefix")?.unwrap_or_default(),
            timeout: config.timeout,
        })
    }

    /// The request body for `message`, or why its content cannot make one. `instantAppParameters` is the
    /// content's member as stored (see [`crate::lazy_json`]): it reaches the provider exactly as enqueued.
    pub(crate) fn request_body<'a>(
        &'a self,
        message: &'a Message,
    ) -> Result<RequestBody<'a>, SendError> {
        let invalid = |m: &str| SendError::permanent("invalid_content", m);
        let recipient = message
            .recipient
            .value()
            .map_err(|why| SendError::unreadable("recipient", why))?;
        let content = message
            .content
            .fields()
            .map_err(|why| SendError::unreadable("content", &why))?;
        let phone = recipient
            .get("phone")
            .and_then(Value::as_str)
            .and_then(ten_digits)
            .ok_or_else(|| {
                invalid("recipient.phone: must be a 10-digit US number or +1 followed by 10 digits")
            })?;
        let text = content
            .string("message")
            .ok()
            .flatten()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid("content.message: must be a non-empty string"))?;
        let schema = content
            .string("instantAppSchemaApiId")
            .ok()
            .flatten()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid("content.instantAppSchemaApiId: must be a non-empty string"))?;
        let parameters = match content.present("instantAppParameters") {
            None => None,
            Some(p) if lazy_json::is_object(p) => Some(p),
            Some(_) => return Err(invalid("content.instantAppParameters: must be an object")),
        };
        Ok(RequestBody {
            message: with_suffix(&text, self.opt_out_suffix.as_deref()),
            instant_app_schema_api_id: schema,
            org_channel_api_id: &self.org_channel_api_id,
            customer_channel_key: phone,
            instant_app_parameters: parameters.unwrap_or(empty_object()),
        })
    }
}

/// The request body of one message.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RequestBody<'a> {
    message: String,
    instant_app_schema_api_id: String,
    org_channel_api_id: &'a str,
    customer_channel_key: String,
    instant_app_parameters: &'a RawValue,
}

/// `{}`: the parameters of a message that has none.
fn empty_object() -> &'static RawValue {
    static EMPTY: std::sync::OnceLock<Box<RawValue>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| RawValue::from_string("{}".to_owned()).expect("valid JSON"))
}

/// `2125550123` or `+12125550123` as the ten digits; anything else is `None`.
pub(crate) fn ten_digits(phone: &str) -> Option<String> {
    let digits = phone.strip_prefix("+1").unwrap_or(phone);
    (digits.len() == 10 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.to_owned())
}

/// Appends the opt-out suffix after a space, unless the text already carries it.
pub(crate) fn with_suffix(text: &str, suffix: Option<&str>) -> String {
    match suffix {
        Some(suffix) if !text.contains(suffix) => format!("{} {suffix}", text.trim_end()),
        _ => text.to_owned(),
    }
}

impl Provider for InstantApp {
    fn send<'a>(&'a self, message: &'a Message, _now: DateTime<Utc>) -> BoxFuture<'a, SendResult> {
        Box::pin(async move {
            let body = self.request_body(message)?;
            let request = self
                .client
                .post(self.url.clone())
                .header(
                    self.api_key_header.clone(),
                    self.api_key.header(&self.api_key_prefix),
                )
                .header("Idempotency-Key", message.id.to_string())
                .json(&body);
            match http::execute(request, self.timeout).await {
                Ok(response) => Ok(Accepted {
                    provider_message_id: ["id", "messageId", "messageApiId"].iter().find_map(|k| {
                        match response.json.get(*k) {
                            Some(Value::String(s)) => Some(s.clone()),
                            Some(Value::Number(n)) => Some(n.to_string()),
                            _ => None,
                        }
                    }),
                    detail: json!({ "http_status": response.status }),
                }),
                Err(e) => Err(credentials::scrub_recipient(
                    credentials::redact(e, &[&self.api_key]),
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
    fn phone_and_suffix() {
        assert_eq!(ten_digits("+12125550123").as_deref(), Some("2125550123"));
        assert_eq!(ten_digits("2125550123").as_deref(), Some("2125550123"));
        assert_eq!(ten_digits("+442125550123"), None);
        assert_eq!(ten_digits("212555012"), None);
        assert_eq!(with_suffix("Hi!", Some("STOP2END")), "Hi! STOP2END");
        assert_eq!(
            with_suffix("Hi! STOP2END", Some("STOP2END")),
            "Hi! STOP2END"
        );
        assert_eq!(with_suffix("Hi!", None), "Hi!");
    }
}

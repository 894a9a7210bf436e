//! The `sandbox` channel kind: Bird requests (seed 002, built by [`super::bird_sms`]) to the local sandbox server
//! (`tidings sandbox`), or, with `mode = "noop"`, no request at all (benchmarks measure the queue alone).

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use super::{Accepted, Provider, SendResult, http};
use crate::config::ChannelConfig;
use crate::error::{Error, Result};
use crate::message::Message;

/// Adapter for `kind = "sandbox"`.
pub(crate) struct SandboxProvider {
    target: Target,
}

enum Target {
    Noop,
    Http {
        client: reqwest::Client,
        url: reqwest::Url,
        timeout: Duration,
    },
}

impl SandboxProvider {
    /// Reads `mode` (`http`, the default, or `noop`) and, for `http`, `base_url`.
    pub(crate) fn new(
        name: &str,
        config: &ChannelConfig,
        client: &reqwest::Client,
    ) -> Result<Self> {
        let mode = match config.settings.get("mode") {
            None => "http",
            Some(_) => config.setting_str(name, "mode")?,
        };
        let target = match mode {
            "noop" => Target::Noop,
            "http" => {
                let base = config.base_url.as_deref().ok_or_else(|| {
                    Error::Config(format!(
                        "channels.{name}.base_url: is required for kind sandbox in mode http"
                    ))
                })?;
                Target::Http {
                    client: client.clone(),
                    url: http::endpoint(
                        name,
                        &format!(
                            "{}/workspaces/sandbox/channels/{name}/messages",
                            base.trim_end_matches('/')
                        ),
                    )?,
                    timeout: config.timeout,
                }
            }
            other => {
                return Err(Error::Config(format!(
                    "channels.{name}.mode: {other:?} is not one of http, noop"
                )));
            }
        };
        Ok(SandboxProvider { target })
    }
}

impl Provider for SandboxProvider {
    fn send<'a>(&'a self, message: &'a Message, now: DateTime<Utc>) -> BoxFuture<'a, SendResult> {
        Box::pin(async move {
            let (client, url, timeout) = match &self.target {
                Target::Noop => {
                    return Ok(Accepted {
                        provider_message_id: None,
                        detail: serde_json::Value::Null,
                    });
                }
                Target::Http {
                    client,
                    url,
                    timeout,
                } => (client, url, *timeout),
            };
            // The same request a Bird channel sends (seed 002), so sandbox traffic looks like real traffic.
            let body = super::bird_sms::request_body(message, now)?;
            let result = match http::execute(client.post(url.clone()).json(&body), timeout).await {
                Ok(response) => super::bird_sms::accepted(&response),
                Err(e) => Err(e),
            };
            result.map_err(|e| super::credentials::scrub_recipient(e, &message.recipient))
        })
    }
}

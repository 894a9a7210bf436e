//! Providers: one adapter per provider API, all behind [`Provider`].
//!
//! An adapter turns a claimed [`Message`] into the provider's HTTP request(s) and classifies the answer into
//! [`Accepted`] or a [`SendError`]. It never decides retries itself: the shared classification in [`http`] maps
//! HTTP answers to errors, and the policy ([`crate::policy::after_send_error`]) turns errors into outcomes.
//! Adapters never log or return a credential.

pub mod bird_sms;
pub mod credentials;
pub mod http;
pub mod insider_push;
pub mod instant_app;
pub mod instaply_whatsapp;
pub mod sandbox;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde_json::Value;

use crate::config::{ChannelConfig, Config};
use crate::error::{Error, Result};
use crate::message::Message;

/// The provider took the message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Accepted {
    /// The provider's id for the message, stored as `provider_message_id` (receipts match on it).
    pub provider_message_id: Option<String>,
    /// Facts worth keeping in the `sent` event (HTTP status, provider status, fallback used, …).
    pub detail: Value,
}

/// The provider did not take the message.
#[derive(Debug, Clone, PartialEq)]
pub enum SendError {
    /// 429: slow down. Retried without spending an attempt, after `retry_after` (if the provider said) and
    /// the channel is paused for every worker until then.
    RateLimited {
        /// When the provider allows the next request, from `Retry-After` (already clamped).
        retry_after: Option<DateTime<Utc>>,
        /// HTTP status, headers of interest, body excerpt.
        detail: Value,
    },
    /// 408, 425, 5xx, timeouts, connection errors: retried with backoff, spending an attempt.
    Transient {
        /// Stable snake_case reason (`http_503`, `timeout`, `connect`).
        reason: String,
        /// HTTP status, body excerpt, error text.
        detail: Value,
    },
    /// Other 4xx, or the provider refused the message itself: ends `sending_failed`.
    Permanent {
        /// Stable snake_case reason (`http_400`, `provider_rejected`, `invalid_content`).
        reason: String,
        /// HTTP status, the provider's error.
        detail: Value,
    },
    /// Refused for a policy reason found at send time: ends `rejected` (e.g. `window_closed`).
    Rejected {
        /// Stable snake_case reason.
        reason: String,
        /// Facts behind the refusal.
        detail: Value,
    },
}

impl SendError {
    /// The reason word recorded in the event.
    pub fn reason(&self) -> &str {
        match self {
            SendError::RateLimited { .. } => "rate_limited",
            SendError::Transient { reason, .. }
            | SendError::Permanent { reason, .. }
            | SendError::Rejected { reason, .. } => reason,
        }
    }

    /// The detail recorded in the event.
    pub fn detail(&self) -> &Value {
        match self {
            SendError::RateLimited { detail, .. }
            | SendError::Transient { detail, .. }
            | SendError::Permanent { detail, .. }
            | SendError::Rejected { detail, .. } => detail,
        }
    }

    /// The detail, to add facts to.
    pub fn detail_mut(&mut self) -> &mut Value {
        match self {
            SendError::RateLimited { detail, .. }
            | SendError::Transient { detail, .. }
            | SendError::Permanent { detail, .. }
            | SendError::Rejected { detail, .. } => detail,
        }
    }

    /// A `Permanent` error with a reason and a human-readable explanation.
    pub fn permanent(reason: &str, message: impl Into<String>) -> Self {
        SendError::Permanent {
            reason: reason.to_owned(),
            detail: serde_json::json!({ "error": message.into() }),
        }
    }

    /// `unreadable_content`: the message's `field` (`recipient` or `content`) is stored JSON the worker cannot
    /// parse (too deep, a number out of range). Permanent: the stored text will not change. The detail names the
    /// parser's error and position, never the content.
    pub fn unreadable(field: &str, why: &crate::lazy_json::Unreadable) -> Self {
        SendError::Permanent {
            reason: "unreadable_content".to_owned(),
            detail: serde_json::json!({
                "field": field, "error": why.error, "line": why.line, "column": why.column,
            }),
        }
    }
}

/// What [`Provider::send`] returns.
pub type SendResult = Result<Accepted, SendError>;

/// One provider API. Implementations are cheap to share (`Arc`) and safe to call concurrently.
pub trait Provider: Send + Sync {
    /// The channel kind this adapter serves (`bird_sms`, …).
    fn kind(&self) -> &'static str;

    /// Sends one message. `now` is the instant the attempt started (for remaining validity and the like).
    /// The message id is the idempotency key: a retry of the same message sends the same id.
    fn send<'a>(&'a self, message: &'a Message, now: DateTime<Utc>) -> BoxFuture<'a, SendResult>;
}

/// The adapters of every configured channel, by channel name.
pub type Providers = BTreeMap<String, Arc<dyn Provider>>;

/// Builds the adapter of every channel in the config. Fails on an unknown kind or a bad adapter setting.
pub fn build_all(config: &Config) -> Result<Providers> {
    let client = http::client()?;
    config
        .channels
        .iter()
        .map(|(name, ch)| Ok((name.clone(), build(name, ch, &client)?)))
        .collect()
}

/// Builds one channel's adapter, reading credentials from the process environment.
pub fn build(
    name: &str,
    channel: &ChannelConfig,
    client: &reqwest::Client,
) -> Result<Arc<dyn Provider>> {
    build_with(name, channel, client, &|var| std::env::var(var).ok())
}

/// Builds one channel's adapter, reading credentials through `env` (tests pass a map instead of mutating the
/// process environment).
pub fn build_with(
    name: &str,
    channel: &ChannelConfig,
    client: &reqwest::Client,
    env: credentials::Env,
) -> Result<Arc<dyn Provider>> {
    if let Some(url) = &channel.base_url
        && crate::config::insecure_http(url)
    {
        // Only reachable with allow_insecure_http = true (config validation refuses it otherwise).
        tracing::warn!(
            channel = name,
            "channels.{name}.base_url is plain http to a host that is not loopback (allow_insecure_http = true): credentials and messages cross the network in cleartext"
        );
    }
    match channel.kind.as_str() {
        "sandbox" => Ok(Arc::new(sandbox::SandboxProvider::new(
            name, channel, client,
        )?)),
        "bird_sms" => Ok(Arc::new(bird_sms::BirdSms::new(
            name, channel, client, env,
        )?)),
        "instaply_whatsapp" => Ok(Arc::new(instaply_whatsapp::InstaplyWhatsapp::new(
            name, channel, client, env,
        )?)),
        "insider_push" => Ok(Arc::new(insider_push::InsiderPush::new(
            name, channel, client, env,
        )?)),
        "instant_app" => Ok(Arc::new(instant_app::InstantApp::new(
            name, channel, client, env,
        )?)),
        "webhook" => Ok(Arc::new(webhook::Webhook::new(name, channel, client, env)?)),
        other => Err(Error::Config(format!(
            "channels.{name}.kind: unknown kind {other:?} (one of {})",
            KINDS.join(", ")
        ))),
    }
}

/// Every channel kind tidings knows.
pub const KINDS: &[&str] = &[
    "bird_sms",
    "instaply_whatsapp",
    "insider_push",
    "instant_app",
    "webhook",
    "sandbox",
];

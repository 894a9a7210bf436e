//! Providers: one adapter per provider API, all behind [`Provider`].
//!
//! An adapter turns a claimed [`Message`] into the provider's HTTP request(s) and classifies the answer into
//! [`Accepted`] or a [`SendError`]. It never decides retries itself: the shared classification in [`http`] maps
//! HTTP answers to errors (its retry table is the one place an HTTP status gets its meaning), and the policy
//! ([`crate::policy::after_send_error`]) turns errors into outcomes.
//! Adapters never log or return a credential.

pub(crate) mod bird_sms;
pub(crate) mod credentials;
pub mod http;
pub(crate) mod insider_push;
pub(crate) mod instant_app;
pub(crate) mod instaply_whatsapp;
pub(crate) mod retry;
pub(crate) mod sandbox;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use crate::config::{ChannelConfig, Config};
use crate::error::{Error, Result};
use crate::message::Message;
pub use crate::outcome::{Accepted, SendError, SendResult};

/// One provider API. Implementations are cheap to share (`Arc`) and safe to call concurrently.
pub trait Provider: Send + Sync {
    /// Sends one message. `now` is the instant the attempt started (for remaining validity and the like).
    /// The message id is the idempotency key: a retry of the same message sends the same id.
    fn send<'a>(&'a self, message: &'a Message, now: DateTime<Utc>) -> BoxFuture<'a, SendResult>;
}

/// The adapters of every configured channel, by channel name.
pub type Providers = BTreeMap<String, Arc<dyn Provider>>;

/// Builds the adapter of every channel in the config, reading credentials from the process environment. Fails
/// on an unknown kind or a bad adapter setting.
pub fn build_all(config: &Config) -> Result<Providers> {
    build_all_with(config, &|var| std::env::var(var).ok())
}

/// Like [`build_all`], reading credentials through `env`.
pub(crate) fn build_all_with(config: &Config, env: credentials::Env) -> Result<Providers> {
    let client = http::client()?;
    config
        .channels
        .iter()
        .map(|(name, ch)| Ok((name.clone(), build_with(name, ch, &client, env)?)))
        .collect()
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
pub(crate) const KINDS: &[&str] = &[
    "bird_sms",
    "instaply_whatsapp",
    "insider_push",
    "instant_app",
    "webhook",
    "sandbox",
];

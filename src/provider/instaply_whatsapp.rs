//! `kind = "instaply_whatsapp"`: WhatsApp through Instaply's API (seed 001), with the template fallback.
//!
//! One attempt:
//!
//! 1. `GET {base_url}/api/get-customer-thread-details?customerThreadId=…` tells whether the thread's messaging
//!    window is open (`isMessagingWindowOpen`; anything but `true` counts as closed, the side WhatsApp's rules
//!    are safe on). The answer is cached per thread for `thread_cache_secs` (default 5 s, at most
//!    10 000 threads), and concurrent sends to one thread share one lookup, so a burst costs one request.
//! 2. `POST {base_url}/api/send-message-to-customer-thread` with exactly one of `text` or `contentSid`: the free
//!    text while the window is open, else the message's `contentSid` (its fallback template). Closed and no
//!    template: [`SendError::Rejected`] `window_closed`, nothing sent. A message with only a `contentSid` sends
//!    the template whatever the window.
//! 3. If the free-text send is refused with a 4xx (other than 401/404), the window may have closed since the
//!    lookup: the thread is looked up again, bypassing the cache, and if it is now closed the template goes out
//!    at once, in the same attempt. Instaply documents no error shape for that refusal, so the second lookup,
//!    not the error body, decides.
//! 4. With `updateThreadStatus` in the content, `POST {base_url}/api/update-thread-status` after the send. The
//!    message is already sent then, so a failure here is recorded in the `sent` event's detail, not retried
//!    (a retry would send the message twice).
//!
//! All requests carry the `token` header and, since Instaply has no idempotency field, an `Idempotency-Key`
//! header with the message id (ignored by a server that does not know it; the sandbox logs it). The whole
//! attempt stays within the channel's `timeout`.
//!
//! Settings: `token_env` (name of the environment variable holding the API key), `thread_cache_secs`
//! (default 5, 0 disables the cache); `base_url` defaults to `https://me.instaply.com`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::credentials::{self, Env, Secret};
use super::{Accepted, Provider, SendError, SendResult, http};
use crate::config::ChannelConfig;
use crate::error::{Error, Result};
use crate::lazy_json::{Fields, LazyJson};
use crate::message::Message;

/// Instaply's public API host.
pub(crate) const DEFAULT_BASE_URL: &str = "https://me.instaply.com";

/// Most threads whose window state is cached at once.
const THREAD_CACHE_MAX: usize = 10_000;

/// Adapter for `kind = "instaply_whatsapp"`.
#[derive(Debug)]
pub(crate) struct InstaplyWhatsapp {
    client: reqwest::Client,
    thread_details_url: reqwest::Url,
    send_url: reqwest::Url,
    update_status_url: reqwest::Url,
    token: Secret,
    timeout: Duration,
    threads: ThreadCache,
}

impl InstaplyWhatsapp {
    /// Reads the settings and the API key; errors name the setting.
    pub(crate) fn new(
        name: &str,
        config: &ChannelConfig,
        client: &reqwest::Client,
        env: Env,
    ) -> Result<Self> {
        let token = credentials::from_env(name, config, "token_env", env)?;
        let ttl = match config.settings.get("thread_cache_secs") {
            None => Duration::from_secs(5),
            Some(toml::Value::Integer(n)) if (0..=3600).contains(n) => {
                Duration::from_secs(*n as u64)
            }
            Some(_) => {
                return Err(Error::Config(format!(
                    "channels.{name}.thread_cache_secs: must be a whole number of seconds from 0 to 3600"
                )));
            }
        };
        let base = http::base_url(config, DEFAULT_BASE_URL);
        let at = |path: &str| http::endpoint(name, &format!("{base}{path}"));
        Ok(InstaplyWhatsapp {
            client: client.clone(),
            thread_details_url: at("/api/get-customer-thread-details")?,
            send_url: at("/api/send-message-to-customer-thread")?,
            update_status_url: at("/api/update-thread-status")?,
            token,
            timeout: config.timeout,
            threads: ThreadCache::new(ttl, THREAD_CACHE_MAX),
        })
    }

    fn request(
        &self,
        request: reqwest::RequestBuilder,
        message: &Message,
    ) -> reqwest::RequestBuilder {
        request
            .header("token", self.token.header(""))
            .header("Idempotency-Key", message.id.to_string())
    }

    /// Whether the thread's window is open: from the cache unless `fresh`.
    async fn window_open(
        &self,
        thread: &str,
        message: &Message,
        deadline: Instant,
        fresh: bool,
    ) -> Result<bool, SendError> {
        if fresh {
            self.threads.invalidate(thread);
        }
        let cell = self.threads.cell(thread);
        let open = cell
            .get_or_try_init(|| async {
                let mut url = self.thread_details_url.clone();
                url.query_pairs_mut()
                    .append_pair("customerThreadId", thread);
                let request = self.client.get(url);
                let response =
                    http::execute_until(self.request(request, message), deadline).await?;
                Ok::<bool, SendError>(
                    response.json.get("isMessagingWindowOpen") == Some(&Value::Bool(true)),
                )
            })
            .await?;
        Ok(*open)
    }

    async fn send_one(
        &self,
        thread: &str,
        field: &str,
        value: &str,
        message: &Message,
        deadline: Instant,
    ) -> Result<http::Response, SendError> {
        let body = json!({ field: value, "customerThreadId": thread, "internal": false });
        let request = self.client.post(self.send_url.clone()).json(&body);
        http::execute_until(self.request(request, message), deadline).await
    }

    async fn attempt(&self, message: &Message) -> SendResult {
        let deadline = http::deadline(self.timeout);
        let thread = thread_id(&message.recipient)?;
        let content = message
            .content
            .fields()
            .map_err(|why| SendError::unreadable("content", &why))?;
        let text = text_field(&content, "text")?;
        let template = text_field(&content, "contentSid")?;
        let update_status = text_field(&content, "updateThreadStatus")?;
        let (text, template, update_status) = (
            text.as_deref(),
            template.as_deref(),
            update_status.as_deref(),
        );
        let (response, sent_as, fallback) = match (text, template) {
            // Only a template: allowed in or out of the window, no lookup needed.
            (None, Some(sid)) => (
                self.send_one(&thread, "contentSid", sid, message, deadline)
                    .await?,
                "template",
                false,
            ),
            (Some(text), template) => {
                if self.window_open(&thread, message, deadline, false).await? {
                    match self
                        .send_one(&thread, "text", text, message, deadline)
                        .await
                    {
                        Ok(r) => (r, "text", false),
                        Err(refusal) if may_be_window_refusal(&refusal) => {
                            // The window may have closed since the lookup: ask again, bypassing the cache.
                            if self.window_open(&thread, message, deadline, true).await? {
                                return Err(refusal);
                            }
                            let Some(sid) = template else {
                                return Err(window_closed(&thread, Some(refusal.detail().clone())));
                            };
                            let r = self
                                .send_one(&thread, "contentSid", sid, message, deadline)
                                .await?;
                            (r, "template", true)
                        }
                        Err(e) => return Err(e),
                    }
                } else {
                    let Some(sid) = template else {
                        return Err(window_closed(&thread, None));
                    };
                    let r = self
                        .send_one(&thread, "contentSid", sid, message, deadline)
                        .await?;
                    (r, "template", true)
                }
            }
            (None, None) => {
                return Err(SendError::permanent(
                    "invalid_content",
                    "content: must have text, contentSid, or both",
                ));
            }
        };

        let mut detail = json!({
            "http_status": response.status,
            "sent_as": sent_as,
            "fallback_template": fallback,
        });
        if let Some(status) = update_status {
            detail["thread_status"] = self.update_status(&thread, status, message, deadline).await;
        }
        let provider_message_id =
            ["messageId", "id"]
                .iter()
                .find_map(|k| match response.json.get(*k) {
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(Value::Number(n)) => Some(n.to_string()),
                    _ => None,
                });
        Ok(Accepted {
            provider_message_id,
            detail,
        })
    }

    /// Sets the thread status after a send; the outcome goes in the `sent` event, never into a retry.
    async fn update_status(
        &self,
        thread: &str,
        status: &str,
        message: &Message,
        deadline: Instant,
    ) -> Value {
        let request = self
            .client
            .post(self.update_status_url.clone())
            .json(&json!({ "customerThreadId": thread, "status": status }));
        match http::execute_until(self.request(request, message), deadline).await {
            Ok(_) => json!({ "status": status, "updated": true }),
            Err(e) => {
                let e = credentials::scrub_recipient(
                    credentials::redact(e, &[&self.token]),
                    &message.recipient,
                );
                json!({ "status": status, "updated": false, "reason": e.reason(), "error": e.detail() })
            }
        }
    }
}

impl Provider for InstaplyWhatsapp {
    fn send<'a>(&'a self, message: &'a Message, _now: DateTime<Utc>) -> BoxFuture<'a, SendResult> {
        Box::pin(async move {
            self.attempt(message).await.map_err(|e| {
                credentials::scrub_recipient(
                    credentials::redact(e, &[&self.token]),
                    &message.recipient,
                )
            })
        })
    }
}

/// The thread id as a string; a numeric id keeps its digits as stored (no round trip through `f64`).
fn thread_id(recipient: &LazyJson) -> Result<String, SendError> {
    let invalid = || {
        SendError::permanent(
            "invalid_content",
            "recipient.customerThreadId: must be a thread id",
        )
    };
    let value = recipient
        .value()
        .map_err(|why| SendError::unreadable("recipient", why))?;
    match value.get("customerThreadId") {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(_)) => recipient
            .fields()
            .ok()
            .and_then(|f| f.raw("customerThreadId"))
            .map(|raw| raw.get().to_owned())
            .ok_or_else(invalid),
        _ => Err(invalid()),
    }
}

fn text_field(content: &Fields<'_>, key: &str) -> Result<Option<String>, SendError> {
    match content.string(key) {
        Ok(None) => Ok(None),
        Ok(Some(s)) if !s.is_empty() => Ok(Some(s)),
        _ => Err(SendError::permanent(
            "invalid_content",
            format!("content.{key}: must be a non-empty string"),
        )),
    }
}

/// A refusal of a free-text send that a closed window could explain (auth and unknown-thread errors cannot).
fn may_be_window_refusal(error: &SendError) -> bool {
    match error {
        SendError::Permanent { detail, .. } => matches!(
            detail.get("http_status").and_then(Value::as_u64),
            Some(s) if (400..500).contains(&s) && s != 401 && s != 404
        ),
        _ => false,
    }
}

fn window_closed(thread: &str, refusal: Option<Value>) -> SendError {
    let mut detail = json!({
        "customerThreadId": thread,
        "error": "the messaging window is closed and the message has no fallback template (contentSid)",
    });
    if let Some(refusal) = refusal {
        detail["refused_text"] = refusal;
    }
    SendError::Rejected {
        reason: "window_closed".to_owned(),
        detail,
    }
}

/// When the lookup started, and its (shared) answer.
type CacheEntry = (Instant, Arc<OnceCell<bool>>);

/// Window state per thread for a short time. Concurrent callers for one thread share one cell, so one lookup
/// serves them all; a failed lookup leaves the cell empty for the next caller to retry.
#[derive(Debug)]
struct ThreadCache {
    ttl: Duration,
    max: usize,
    entries: Mutex<HashMap<String, CacheEntry>>,
}

impl ThreadCache {
    fn new(ttl: Duration, max: usize) -> Self {
        ThreadCache {
            ttl,
            max,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn cell(&self, thread: &str) -> Arc<OnceCell<bool>> {
        if self.ttl.is_zero() {
            return Arc::new(OnceCell::new());
        }
        let now = Instant::now();
        let mut entries = self.entries.lock().expect("thread cache lock");
        if let Some((at, cell)) = entries.get(thread)
            && now.duration_since(*at) < self.ttl
        {
            return cell.clone();
        }
        if entries.len() >= self.max {
            entries.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
            if entries.len() >= self.max {
                entries.clear();
            }
        }
        let cell = Arc::new(OnceCell::new());
        entries.insert(thread.to_owned(), (now, cell.clone()));
        cell
    }

    fn invalidate(&self, thread: &str) {
        self.entries
            .lock()
            .expect("thread cache lock")
            .remove(thread);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_is_bounded_and_expires() {
        let cache = ThreadCache::new(Duration::from_secs(60), 2);
        let a = cache.cell("a");
        assert!(Arc::ptr_eq(&a, &cache.cell("a")));
        cache.cell("b");
        cache.cell("c"); // full: cleared, then c inserted
        assert!(cache.entries.lock().unwrap().len() <= 2);
        cache.invalidate("c");
        assert!(!cache.entries.lock().unwrap().contains_key("c"));
        let off = ThreadCache::new(Duration::ZERO, 2);
        assert!(!Arc::ptr_eq(&off.cell("a"), &off.cell("a")));
    }

    #[test]
    fn only_plausible_refusals_trigger_a_second_lookup() {
        let e = |s: u16| SendError::Permanent {
            reason: format!("http_{s}"),
            detail: json!({ "http_status": s }),
        };
        assert!(may_be_window_refusal(&e(400)));
        assert!(may_be_window_refusal(&e(422)));
        assert!(!may_be_window_refusal(&e(401)));
        assert!(!may_be_window_refusal(&e(404)));
    }
}

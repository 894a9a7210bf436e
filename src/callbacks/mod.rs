//! Status callbacks: the worker's deliverer of `tidings.callback_outbox` (migration 0011).
//!
//! A transition of a message that asked for callbacks (its own `callback_url`, or its channel's) is written to the
//! outbox by the database, in the transition's transaction. The [`Deliverer`] claims due rows (SKIP LOCKED, under
//! a lease; in order per message, see `store/queries/callback_claim.sql`), POSTs each as
//! `{"type": "message.<status>", "timestamp", "data": {...}}` signed the Standard Webhooks way with the same
//! signing as the `webhook` channel (`webhook-id` is the outbox row id, the same on every retry), and records the
//! answer: 2xx is delivered; anything else, a timeout or a connection error is retried with exponential backoff
//! and full jitter until `[callbacks] max_age` after the transition, then given up.
//!
//! Its slots (`[callbacks] concurrency`) are its own: a receiver that is down or hangs holds callback slots only,
//! never a sending slot. Recipient and content are never in a callback.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::policy::Backoff;
use crate::provider::webhook::{SigningKey, sign, signing_key};
use crate::shutdown::Shutdown;
use crate::store::{CallbackResult, CallbackRow, Store};

/// How often the outbox gauges are sampled.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// The callback deliverer of one worker process.
pub(crate) struct Deliverer {
    store: Store,
    metrics: Metrics,
    client: reqwest::Client,
    key: Arc<SigningKey>,
    concurrency: usize,
    timeout: Duration,
    lease: Duration,
    max_age: Duration,
    backoff: Backoff,
    poll_interval: Duration,
}

/// The JSON body of a callback.
#[derive(Debug, Serialize)]
pub(crate) struct Payload<'a> {
    /// `message.<status>`.
    #[serde(rename = "type")]
    kind: String,
    /// When the transition happened.
    timestamp: DateTime<Utc>,
    data: PayloadData<'a>,
}

#[derive(Debug, Serialize)]
struct PayloadData<'a> {
    id: Uuid,
    channel: &'a str,
    status: &'a str,
    reason: &'a str,
    attempt: Option<i32>,
    provider_message_id: Option<&'a str>,
    reference: Option<&'a str>,
    tags: &'a [String],
    at: DateTime<Utc>,
}

/// The body of the callback `row` stands for.
pub(crate) fn payload(row: &CallbackRow) -> Payload<'_> {
    Payload {
        kind: format!("message.{}", row.status),
        timestamp: row.at,
        data: PayloadData {
            id: row.message_id,
            channel: &row.channel,
            status: &row.status,
            reason: &row.reason,
            attempt: row.message_attempt,
            provider_message_id: row.provider_message_id.as_deref(),
            reference: row.reference.as_deref(),
            tags: &row.tags,
            at: row.at,
        },
    }
}

/// What a failed POST leads to: a retry after the jittered backoff (`unit` uniform in [0, 1]), or, when that
/// retry would come more than `max_age` after the transition, giving up. Pure: `now` and `unit` are parameters.
pub(crate) fn after_failure(
    row: &CallbackRow,
    error: String,
    now: DateTime<Utc>,
    backoff: &Backoff,
    max_age: Duration,
    unit: f64,
) -> CallbackResult {
    let delay = backoff.delay(row.attempts.max(1) as u32, unit);
    let next = chrono::Duration::from_std(delay)
        .ok()
        .and_then(|d| now.checked_add_signed(d));
    let limit = chrono::Duration::from_std(max_age)
        .ok()
        .and_then(|d| row.at.checked_add_signed(d));
    match (next, limit) {
        (Some(next), Some(limit)) if next <= limit => CallbackResult::Retry { at: next, error },
        _ => CallbackResult::GivenUp { error },
    }
}

impl Deliverer {
    /// The deliverer `[callbacks]` describes, or None when no callback can be sent (no allowed host, no
    /// channel `callback_url`). Reads the signing secret through `env`; a missing or bad one is a config error
    /// naming `callbacks.secret_env` and the variable, never the value.
    pub(crate) fn from_config(
        config: &Config,
        store: Store,
        metrics: Metrics,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Deliverer>> {
        if !config.callbacks_wanted() {
            return Ok(None);
        }
        let c = &config.callbacks;
        // Config validation made it required once callbacks are wanted.
        let var = c.secret_env.as_deref().unwrap_or_default();
        let secret = env(var).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
            Error::Config(format!(
                "callbacks.secret_env: environment variable {var} is not set or empty"
            ))
        })?;
        let key = signing_key(secret.trim()).ok_or_else(|| {
            Error::Config(format!(
                "callbacks.secret_env: environment variable {var} holds a whsec_ secret that is not base64 after the prefix"
            ))
        })?;
        let client = reqwest::Client::builder()
            .connect_timeout(c.timeout.min(Duration::from_secs(5)))
            // A redirect could lead anywhere, past the allowed hosts: a 3xx is a failed attempt.
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("tidings/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Other(format!("callback http client: {e}")))?;
        Ok(Some(Deliverer {
            store,
            metrics,
            client,
            key: Arc::new(SigningKey(key)),
            concurrency: c.concurrency,
            timeout: c.timeout,
            // Longer than any POST may take, so a live worker never loses its claim.
            lease: c.timeout * 2,
            max_age: c.max_age,
            backoff: Backoff {
                base: c.backoff.base,
                cap: c.backoff.cap,
            },
            poll_interval: c.poll_interval,
        }))
    }

    /// Delivers until `shutdown.stop`; in-flight POSTs may finish until `shutdown.abort`, then what is still held
    /// is handed back for another worker.
    pub(crate) async fn run(self, shutdown: Shutdown) {
        let this = Arc::new(self);
        let lease_id = Uuid::now_v7();
        let slots = Arc::new(Semaphore::new(this.concurrency));
        let mut tasks = JoinSet::new();
        let mut sample = tokio::time::interval(SAMPLE_INTERVAL);
        sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(
            concurrency = this.concurrency,
            "status callbacks: delivering"
        );
        loop {
            let free = slots.available_permits();
            let mut full = false;
            if free > 0 {
                match this
                    .store
                    .callback_claim(free as i64, lease_id, this.lease)
                    .await
                {
                    Ok(rows) => {
                        full = rows.len() == free;
                        for row in rows {
                            let permit = slots.clone().try_acquire_owned().expect("a free slot");
                            let deliverer = this.clone();
                            tasks.spawn(async move {
                                deliverer.deliver(row, lease_id).await;
                                drop(permit);
                            });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "claiming callbacks failed"),
                }
            }
            tokio::select! {
                _ = shutdown.stop.cancelled() => break,
                // A slot came free, or a message's next callback may have become due: look again at once.
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = tokio::time::sleep(this.poll_interval), if !full => {}
                _ = sample.tick() => this.sample().await,
            }
        }
        tokio::select! {
            _ = async { while tasks.join_next().await.is_some() {} } => {}
            _ = shutdown.abort.cancelled() => {
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
            }
        }
        match this.store.callback_release(lease_id).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(released = n, "status callbacks handed back"),
            Err(e) => {
                tracing::warn!(error = %e, "handing back callbacks failed; their lease ends by itself")
            }
        }
    }

    /// POSTs one callback and records the answer.
    async fn deliver(&self, row: CallbackRow, lease_id: Uuid) {
        let result = match self.post(&row).await {
            Ok(()) => {
                self.metrics
                    .callback_deliveries
                    .with_label_values(&[&row.status])
                    .inc();
                CallbackResult::Delivered
            }
            Err(error) => {
                self.metrics
                    .callback_failures
                    .with_label_values(&[&error])
                    .inc();
                let result = after_failure(
                    &row,
                    error,
                    Utc::now(),
                    &self.backoff,
                    self.max_age,
                    rand::random::<f64>(),
                );
                if let CallbackResult::GivenUp { error } = &result {
                    self.metrics.callback_given_up.inc();
                    tracing::warn!(callback = %row.id, message = %row.message_id, %error, attempts = row.attempts,
                                   "status callback given up after [callbacks] max_age");
                }
                result
            }
        };
        // A failed write leaves the row leased: it is due again when the lease ends (at least once).
        if let Err(e) = self.store.callback_complete(&row, lease_id, &result).await {
            tracing::warn!(error = %e, callback = %row.id, "recording a callback failed");
        }
    }

    /// One signed POST; the error class on anything but a 2xx.
    async fn post(&self, row: &CallbackRow) -> std::result::Result<(), String> {
        // Serialised once: the signature covers exactly the bytes sent.
        let body = serde_json::to_vec(&payload(row)).map_err(|_| "serialise".to_owned())?;
        let id = row.id.to_string();
        let timestamp = Utc::now().timestamp();
        let signature = sign(&self.key.0, &id, timestamp, &body);
        let answer = self
            .client
            .post(&row.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .timeout(self.timeout)
            .send()
            .await;
        match answer {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("http_{}", r.status().as_u16())),
            Err(e) if e.is_timeout() => Err("timeout".into()),
            Err(e) if e.is_connect() => Err("connect".into()),
            Err(_) => Err("transport".into()),
        }
    }

    /// Refreshes the outbox gauges.
    async fn sample(&self) {
        if let Ok((pending, oldest)) = self.store.callback_stats().await {
            self.metrics.callback_outbox_pending.set(pending);
            self.metrics.callback_outbox_oldest.set(oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(at: DateTime<Utc>, attempts: i32) -> CallbackRow {
        CallbackRow {
            id: Uuid::nil(),
            message_id: Uuid::nil(),
            url: "https://hooks.example.com/x".into(),
            channel: "sms".into(),
            status: "sent".into(),
            reason: "provider_accepted".into(),
            message_attempt: Some(1),
            at,
            provider_message_id: Some("p-1".into()),
            reference: None,
            tags: vec!["a".into()],
            attempts,
        }
    }

    const B: Backoff = Backoff {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(600),
    };

    #[test]
    fn retries_with_jitter_until_max_age_then_gives_up() {
        let at = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let day = Duration::from_secs(86_400);
        // Third attempt failed: up to 4 s later, scaled by the jitter unit.
        let r = after_failure(&row(at, 3), "http_500".into(), at, &B, day, 0.5);
        assert_eq!(
            r,
            CallbackResult::Retry {
                at: at + chrono::Duration::seconds(2),
                error: "http_500".into()
            }
        );
        // Capped at 10 minutes however many attempts.
        let r = after_failure(&row(at, 40), "timeout".into(), at, &B, day, 1.0);
        assert_eq!(
            r,
            CallbackResult::Retry {
                at: at + chrono::Duration::seconds(600),
                error: "timeout".into()
            }
        );
        // A retry that would land after max_age: given up.
        let late = at + chrono::Duration::seconds(86_400 - 100);
        let r = after_failure(&row(at, 40), "connect".into(), late, &B, day, 1.0);
        assert_eq!(
            r,
            CallbackResult::GivenUp {
                error: "connect".into()
            }
        );
        // ...but not with a jitter that lands inside it.
        let r = after_failure(&row(at, 40), "connect".into(), late, &B, day, 0.1);
        assert!(matches!(r, CallbackResult::Retry { .. }));
    }

    #[test]
    fn the_body_names_no_recipient_and_no_content() {
        let at = Utc::now();
        let r = row(at, 1);
        let body = serde_json::to_value(payload(&r)).unwrap();
        assert_eq!(body["type"], "message.sent");
        let data = body["data"].as_object().unwrap();
        let mut keys: Vec<&str> = data.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "at",
                "attempt",
                "channel",
                "id",
                "provider_message_id",
                "reason",
                "reference",
                "status",
                "tags"
            ]
        );
    }
}

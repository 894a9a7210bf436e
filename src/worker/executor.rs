//! The executor: runs one claimed message — policy, then provider, then an [`Outcome`] for the completer.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use futures::FutureExt;
use serde_json::json;
use tidings_client::Status;
use tracing::Instrument;

use crate::message::Message;
use crate::metrics::Metrics;
use crate::outcome::Outcome;
use crate::policy::{self, ChannelPolicy, Decision};
use crate::provider::{Provider, SendError};
use crate::shutdown::Shutdown;
use crate::store::{Completion, Store};

/// Everything an executor needs for one channel.
pub struct ChannelRuntime {
    /// The channel's adapter.
    pub provider: Arc<dyn Provider>,
    /// The channel's policy.
    pub policy: ChannelPolicy,
    /// Per-request timeout (a second guard around the adapter's own).
    pub timeout: std::time::Duration,
    /// The channel kind (frequency caps and opt-outs count per kind).
    pub kind: String,
    /// `[channels.NAME.frequency_cap]`: at most `max` per `per`.
    pub frequency_cap: Option<(u32, std::time::Duration)>,
    /// `tidings_send_duration_seconds{channel, outcome="sent"}`, resolved once (the common case).
    pub sent_duration: prometheus::Histogram,
}

/// Shared by all executor tasks of a worker.
pub struct Executor {
    /// Channel runtimes by name.
    pub channels: std::collections::BTreeMap<String, ChannelRuntime>,
    /// For pausing a channel after a 429.
    pub store: Store,
    /// Metrics.
    pub metrics: Metrics,
    /// Shutdown stages.
    pub shutdown: Shutdown,
}

impl Executor {
    /// Runs one message to an outcome. Never panics outward: an adapter panic becomes `sending_failed`.
    pub async fn run(&self, message: Message) -> Completion {
        let started_at = Utc::now();
        let span = tracing::info_span!("attempt", message_id = %message.id, channel = %message.channel,
            attempt = message.attempt());
        let outcome = async {
            tokio::select! {
                biased;
                outcome = self.attempt(&message, started_at) => outcome,
                // The grace period is over: give the message back untouched (it may have reached the
                // provider; the next attempt reuses the same idempotency key).
                _ = self.shutdown.abort.cancelled() => Outcome::Released,
            }
        }
        .instrument(span)
        .await;
        Completion {
            id: message.id,
            lease_id: message.lease_id,
            channel: message.channel,
            started_at,
            outcome,
        }
    }

    async fn attempt(&self, message: &Message, now: chrono::DateTime<Utc>) -> Outcome {
        let Some(channel) = self.channels.get(&message.channel) else {
            // Claims only name configured channels, so this is a bug; keep the message, say so.
            tracing::error!(channel = %message.channel, "claimed a message of an unconfigured channel");
            return Outcome::Released;
        };
        match policy::decide(message, &channel.policy, now) {
            Decision::Send => {}
            Decision::Defer { until, reason } => return policy::defer(message, until, reason),
            Decision::Finish(outcome) => return outcome,
        }
        if let Some((max, per)) = channel.frequency_cap
            && message.cap_frequency
            && message.use_case == "marketing"
        {
            match self
                .store
                .frequency_admit(&channel.kind, &message.recipient, message.id, max, per)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    return Outcome::finished(
                        Status::Rejected,
                        "frequency_capped",
                        json!({ "max": max, "per_seconds": per.as_secs() }),
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "frequency cap check failed; retrying shortly");
                    return policy::defer(
                        message,
                        now + chrono::Duration::seconds(1),
                        "frequency_check_failed",
                    );
                }
            }
        }
        let clock = Instant::now();
        // `send` is called inside the guarded future: an adapter that panics before returning its future
        // (while building the request) is caught too, instead of killing the task and stranding the message in
        // `processing` until its lease expires (and then again on every retry).
        let call =
            AssertUnwindSafe(async { channel.provider.send(message, now).await }).catch_unwind();
        let result =
            match tokio::time::timeout(channel.timeout + std::time::Duration::from_secs(1), call)
                .await
            {
                Ok(Ok(result)) => result,
                Ok(Err(panic)) => {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    tracing::error!(panic = %what, "provider adapter panicked");
                    return Outcome::Finished {
                        status: Status::SendingFailed,
                        reason: "adapter_panicked".into(),
                        spend_attempt: true,
                        detail: json!({ "panic": what }),
                    };
                }
                Err(_) => Err(SendError::Transient {
                    reason: "timeout".into(),
                    detail: json!({ "error": "no answer within the channel timeout" }),
                }),
            };
        let elapsed = clock.elapsed().as_secs_f64();
        let outcome = match result {
            Ok(accepted) => Outcome::Sent {
                provider_message_id: accepted.provider_message_id,
                detail: accepted.detail,
            },
            Err(error) => {
                if let SendError::RateLimited { .. } = &error {
                    self.pause_channel(message, &channel.policy, &error, now)
                        .await;
                }
                let outcome =
                    policy::after_send_error(message, &channel.policy, &error, now, rand::random());
                tracing::info!(
                    reason = error.reason(),
                    next = outcome.status().as_str(),
                    "send failed"
                );
                outcome
            }
        };
        let code = match &outcome {
            Outcome::Sent { detail, .. } => detail.get("http_status").map(|s| s.to_string()),
            Outcome::Retry { detail, reason, .. } | Outcome::Finished { detail, reason, .. } => {
                detail
                    .get("http_status")
                    .map(|s| s.to_string())
                    .or_else(|| Some(reason.clone()))
            }
            Outcome::Released => None,
        };
        if let Some(code) = code {
            self.metrics
                .provider_requests
                .with_label_values(&[&message.channel, &code])
                .inc();
        }
        match outcome.status() {
            Status::Sent => channel.sent_duration.observe(elapsed),
            other => self
                .metrics
                .send_duration
                .with_label_values(&[&message.channel, other.as_str()])
                .observe(elapsed),
        }
        outcome
    }

    /// A 429 pauses the whole channel, for every worker on every host, until the deferral target.
    async fn pause_channel(
        &self,
        message: &Message,
        policy: &ChannelPolicy,
        error: &SendError,
        now: chrono::DateTime<Utc>,
    ) {
        // The pause lasts until Retry-After (or the first backoff step when the provider gave none).
        let until = match error {
            SendError::RateLimited {
                retry_after: Some(at),
                ..
            } => *at,
            _ => now + policy.backoff.upper(1),
        };
        if let Err(e) = self
            .store
            .channel_pause(&message.channel, until, "rate_limited")
            .await
        {
            tracing::warn!(error = %e, "could not record the channel pause");
        }
    }
}

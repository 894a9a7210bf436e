//! The executor: runs one claimed message to an [`Outcome`] for the completer. It carries out what the policy
//! decides: [`policy::decide`] before the call (send, count against the cap first, defer, finish), the provider
//! call itself (guarded against panics and overruns), and [`policy::after_send_error`] after a failed call
//! (retry or give up, and for a 429 the pool-wide channel pause).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use opentelemetry::trace::SpanContext;
use serde_json::json;
use tidings_client::Status;
use tracing::Instrument;

use super::pauses::LocalPauses;
use crate::message::Message;
use crate::metrics::Metrics;
use crate::outcome::{Outcome, SendError, SendResult};
use crate::policy::{self, ChannelPolicy, Decision};
use crate::provider::Provider;
use crate::shutdown::Shutdown;
use crate::store::{Completion, Store};
use crate::telemetry::{self, Telemetry};

/// Everything an executor needs for one channel.
pub(crate) struct ChannelRuntime {
    /// The channel's adapter.
    pub(crate) provider: Arc<dyn Provider>,
    /// The channel's policy.
    pub(crate) policy: ChannelPolicy,
    /// Per-request timeout (a second guard around the adapter's own).
    pub(crate) timeout: std::time::Duration,
    /// The channel kind (frequency caps and opt-outs count per kind).
    pub(crate) kind: String,
    /// `tidings_send_duration_seconds{channel, outcome="sent"}`, resolved once (the common case).
    pub(crate) sent_duration: prometheus::Histogram,
}

/// Shared by all executor tasks of a worker.
pub(crate) struct Executor {
    /// Channel runtimes by name.
    pub(crate) channels: std::collections::BTreeMap<String, ChannelRuntime>,
    /// For the frequency-cap counter and the channel pause after a 429.
    pub(crate) store: Store,
    /// Metrics.
    pub(crate) metrics: Metrics,
    /// Shutdown stages.
    pub(crate) shutdown: Shutdown,
    /// The pauses this process heard of itself (the producers consult them before claiming).
    pub(crate) pauses: LocalPauses,
    /// Trace spans, when traces are on (`None`: no span is built).
    pub(crate) telemetry: Option<Telemetry>,
}

impl Executor {
    /// Runs one message to an outcome. Never panics outward: an adapter panic becomes `sending_failed`.
    /// Builds no trace span: with traces off this is the whole per-message path.
    pub(crate) async fn run(&self, message: Message) -> Completion {
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

    /// [`Executor::run`] within an attempt span (when traces are on), linked to `claim`, the span of the claim
    /// that took the message when it was kept. The span is the current context while the attempt runs, so an
    /// adapter can pass it on ([`telemetry::current_traceparent`]); it ends with the outcome.
    ///
    /// An entry point of its own rather than `Option`s threaded through [`Executor::run`]: with traces off the
    /// producer calls `run`, whose future then holds no span context, link or wrapper (moving them with every
    /// message was most of what traces cost a worker with traces off).
    pub(crate) async fn run_traced(
        &self,
        message: Message,
        claim: Option<SpanContext>,
    ) -> Completion {
        use opentelemetry::context::FutureExt as _;
        let Some(telemetry) = &self.telemetry else {
            return self.run(message).await;
        };
        let kind = self
            .channels
            .get(&message.channel)
            .map_or("", |c| c.kind.as_str());
        let cx = telemetry.attempt(&message, kind, claim.as_ref());
        let completion = self.run(message).with_context(cx.clone()).await;
        telemetry::attempted(&cx, &completion.outcome);
        completion
    }

    /// Policy, then the provider, then the policy again on a failure.
    async fn attempt(&self, message: &Message, now: DateTime<Utc>) -> Outcome {
        let Some(channel) = self.channels.get(&message.channel) else {
            // Claims only name configured channels, so this is a bug; keep the message, say so.
            tracing::error!(channel = %message.channel, "claimed a message of an unconfigured channel");
            return Outcome::Released;
        };
        match policy::decide(message, &channel.policy, now) {
            Decision::Send => {}
            Decision::AdmitThenSend(cap) => {
                match self
                    .store
                    .frequency_admit(
                        &channel.kind,
                        &message.recipient,
                        message.id,
                        cap.max,
                        cap.per,
                    )
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => return policy::frequency_capped(cap),
                    Err(e) => {
                        tracing::warn!(error = %e, "frequency cap check failed; retrying shortly");
                        return policy::frequency_check_failed(message, now);
                    }
                }
            }
            Decision::Defer { until, reason } => return policy::defer(message, until, reason),
            Decision::Finish(outcome) => return outcome,
        }
        let clock = Instant::now();
        let result = match self.call(channel, message, now).await {
            Ok(result) => result,
            Err(panicked) => return panicked,
        };
        let elapsed = clock.elapsed().as_secs_f64();
        let outcome = match result {
            Ok(accepted) => Outcome::Sent {
                provider_message_id: accepted.provider_message_id,
                detail: accepted.detail,
            },
            Err(error) => {
                // Retry-After and the backoff count from the answer, not from the start of the attempt.
                let decided = policy::after_send_error(
                    message,
                    &channel.policy,
                    &error,
                    Utc::now(),
                    rand::random(),
                );
                if let Some(until) = decided.pause_channel_until {
                    // This process stops claiming for the channel now; the others once the row is written.
                    self.pauses.pause(&message.channel, until);
                    match self
                        .store
                        .channel_pause(&message.channel, until, error.reason())
                        .await
                    {
                        Ok(()) => self.pauses.handed_over(&message.channel, until),
                        Err(e) => tracing::warn!(error = %e, "could not record the channel pause"),
                    }
                }
                tracing::info!(
                    reason = error.reason(),
                    next = decided.outcome.status().as_str(),
                    "send failed"
                );
                decided.outcome
            }
        };
        self.observe(channel, message, &outcome, elapsed);
        outcome
    }

    /// Calls the adapter within the channel's timeout (plus a second's grace). `Err` is the outcome of an adapter
    /// that panicked; a timeout is a transient error like any other.
    async fn call(
        &self,
        channel: &ChannelRuntime,
        message: &Message,
        now: DateTime<Utc>,
    ) -> Result<SendResult, Outcome> {
        // `send` is called inside the guarded future: an adapter that panics before returning its future
        // (while building the request) is caught too, instead of killing the task and stranding the message in
        // `processing` until its lease expires (and then again on every retry).
        let call =
            AssertUnwindSafe(async { channel.provider.send(message, now).await }).catch_unwind();
        match tokio::time::timeout(channel.timeout + std::time::Duration::from_secs(1), call).await
        {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(panic)) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(panic = %what, "provider adapter panicked");
                Err(Outcome::Finished {
                    status: Status::SendingFailed,
                    reason: "adapter_panicked".into(),
                    spend_attempt: true,
                    detail: json!({ "panic": what }),
                })
            }
            Err(_) => Ok(Err(SendError::Transient {
                reason: "timeout".into(),
                detail: json!({ "error": "no answer within the channel timeout" }),
            })),
        }
    }

    /// `tidings_provider_requests_total{channel, code}` and `tidings_send_duration_seconds{channel, outcome}`.
    fn observe(
        &self,
        channel: &ChannelRuntime,
        message: &Message,
        outcome: &Outcome,
        elapsed: f64,
    ) {
        let code = match outcome {
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
    }
}

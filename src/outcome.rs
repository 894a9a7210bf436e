//! What an attempt ends in: the status change the completer writes, with its event.

use chrono::{DateTime, Utc};
use serde_json::Value;
use tidings_client::Status;

/// The result of handling one claimed message.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// `sent`: the provider accepted it.
    Sent {
        /// The provider's id, for receipts.
        provider_message_id: Option<String>,
        /// HTTP status and the like.
        detail: Value,
    },
    /// `scheduled` again until `at`: retry backoff, 429 pause, quiet hours, rate limit.
    Retry {
        /// When it may be claimed again.
        at: DateTime<Utc>,
        /// `quiet_hours`, `rate_limited`, `http_503`, `timeout`, …
        reason: String,
        /// False for deferrals and 429s, which spend no attempt.
        spend_attempt: bool,
        /// The error or the deferral's facts.
        detail: Value,
    },
    /// A terminal status other than `sent`: `sending_failed`, `rejected` or `expired`.
    Finished {
        /// `SendingFailed`, `Rejected` or `Expired`.
        status: Status,
        /// `attempts_exhausted`, `http_400`, `frequency_capped`, `opted_out`, `window_closed`, `validity_passed`, …
        reason: String,
        /// Whether this attempt counts (a provider was called).
        spend_attempt: bool,
        /// The error or the policy's facts.
        detail: Value,
    },
    /// Back to `accepted` untouched (worker shutting down before it could send).
    Released,
}

impl Outcome {
    /// The status the message moves to.
    pub fn status(&self) -> Status {
        match self {
            Outcome::Sent { .. } => Status::Sent,
            Outcome::Retry { .. } => Status::Scheduled,
            Outcome::Finished { status, .. } => *status,
            Outcome::Released => Status::Accepted,
        }
    }

    /// The event's reason.
    pub fn reason(&self) -> &str {
        match self {
            Outcome::Sent { .. } => "provider_accepted",
            Outcome::Retry { reason, .. } | Outcome::Finished { reason, .. } => reason,
            Outcome::Released => "released",
        }
    }

    /// Whether the attempt counts against `max_attempts`.
    pub fn spends_attempt(&self) -> bool {
        match self {
            Outcome::Sent { .. } => true,
            Outcome::Retry { spend_attempt, .. } | Outcome::Finished { spend_attempt, .. } => {
                *spend_attempt
            }
            Outcome::Released => false,
        }
    }

    /// A terminal outcome decided by policy before any provider call.
    pub fn finished(status: Status, reason: &str, detail: Value) -> Self {
        Outcome::Finished {
            status,
            reason: reason.to_owned(),
            spend_attempt: false,
            detail,
        }
    }
}

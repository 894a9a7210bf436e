//! What a provider call answers ([`Accepted`] or a classified [`SendError`]) and what an attempt ends in (an
//! [`Outcome`]: the status change the completer writes, with its event). Leaf types shared by the provider
//! adapters, the policy and the worker.

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

/// What `Provider::send` returns.
pub type SendResult = Result<Accepted, SendError>;

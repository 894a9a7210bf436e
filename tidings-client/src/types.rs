//! Rows read back from tidings: status, state and history. Shared with the worker crate.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A message's status (the `tidings.message_status` enum). See the README's state diagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "tidings.message_status", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Due, waiting for a worker.
    Accepted,
    /// Waiting for its `run_at`: a future `scheduled_for`, quiet hours, a retry backoff or a channel pause.
    Scheduled,
    /// Claimed by a worker that holds its lease.
    Processing,
    /// The provider accepted it.
    Sent,
    /// The provider's receipt says it was delivered.
    Delivered,
    /// The provider's receipt says it was not delivered.
    DeliveryFailed,
    /// A permanent provider error, or every attempt spent.
    SendingFailed,
    /// Refused by policy (frequency cap, opt-out, closed messaging window without a template, …).
    Rejected,
    /// Its validity ran out before it could be sent.
    Expired,
    /// Canceled by the producer before it was sent.
    Canceled,
}

impl Status {
    /// Every status, in lifecycle order.
    pub const ALL: [Status; 10] = [
        Status::Accepted,
        Status::Scheduled,
        Status::Processing,
        Status::Sent,
        Status::Delivered,
        Status::DeliveryFailed,
        Status::SendingFailed,
        Status::Rejected,
        Status::Expired,
        Status::Canceled,
    ];

    /// The name used in SQL, JSON and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Accepted => "accepted",
            Status::Scheduled => "scheduled",
            Status::Processing => "processing",
            Status::Sent => "sent",
            Status::Delivered => "delivered",
            Status::DeliveryFailed => "delivery_failed",
            Status::SendingFailed => "sending_failed",
            Status::Rejected => "rejected",
            Status::Expired => "expired",
            Status::Canceled => "canceled",
        }
    }

    /// The status named `name` in SQL, JSON and metrics labels, if any.
    pub fn parse(name: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// True when no worker will touch the message again (receipts may still move `sent` on).
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            Status::Accepted | Status::Scheduled | Status::Processing
        )
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message's current state, without its recipient or content.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct MessageStatus {
    /// The message id (also the provider idempotency key).
    pub id: Uuid,
    /// The channel it goes out on.
    pub channel: String,
    /// Current status.
    pub status: Status,
    /// Attempts spent so far.
    pub attempts: i32,
    /// When it may next be claimed.
    pub run_at: DateTime<Utc>,
    /// It is never handed to a provider after this instant.
    pub expires_at: DateTime<Utc>,
    /// The provider's id for it, once sent.
    pub provider_message_id: Option<String>,
    /// The last error, if any attempt failed.
    pub last_error: Option<String>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// The id of the first message of its fallback chain (itself for the first); `None` outside a chain.
    pub chain_id: Option<Uuid>,
    /// Every message of its fallback chain so far, in step order; `None` outside a chain.
    #[sqlx(json(nullable))]
    pub chain: Option<Vec<ChainLink>>,
}

/// One message of a fallback chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainLink {
    /// The message's id.
    pub id: Uuid,
    /// Its channel.
    pub channel: String,
    /// Its current status.
    pub status: Status,
    /// 0 for the first message, then 1, 2, 3.
    pub step: i16,
    /// What created the step (`rejected`, `sending_failed`, `expired`, `undelivered`); `None` for the first.
    pub trigger: Option<String>,
}

/// One status change of a message.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Event {
    /// When the change happened.
    pub at: DateTime<Utc>,
    /// The status it moved to.
    pub status: Status,
    /// Why, as a stable snake_case word (`enqueued`, `provider_accepted`, `quiet_hours`, `lease_expired`, …).
    pub reason: String,
    /// The attempt number the change belongs to, when it came from an attempt.
    pub attempt: Option<i32>,
    /// When that attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// Extra facts: HTTP status, provider error, deferral target, …
    pub detail: Option<serde_json::Value>,
    /// The message it happened to (for a fallback chain, the history covers every message of the chain).
    pub message: Uuid,
    /// That message's channel.
    pub channel: Option<String>,
}

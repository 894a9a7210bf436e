//! A claimed message: what the worker knows of a message while it holds the lease.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::lazy_json::LazyJson;

/// A message claimed by a worker (one row of the claim's `RETURNING`).
#[derive(Debug, Clone)]
pub struct Message {
    /// Message id; also the provider idempotency key.
    pub id: Uuid,
    /// Channel name (a key of `[channels]` in the config).
    pub channel: String,
    /// Recipient, in the channel kind's shape (parsed on first read).
    pub recipient: LazyJson,
    /// Content, in the channel kind's shape (parsed on first read).
    pub content: LazyJson,
    /// `transactional`, `promotional`, `conversational`, `marketing` or `2fa`.
    pub use_case: String,
    /// 0 (first) to 9 (last).
    pub priority: i16,
    /// The instant the producer asked for, if any.
    pub scheduled_for: Option<DateTime<Utc>>,
    /// The instant it became due (for the dispatch-lag metric).
    pub run_at: DateTime<Utc>,
    /// Never handed to a provider after this instant.
    pub expires_at: DateTime<Utc>,
    /// Skip the channel's quiet hours.
    pub ignore_quiet_hours: bool,
    /// Apply the channel's frequency cap.
    pub cap_frequency: bool,
    /// Lower-cased tags.
    pub tags: Vec<String>,
    /// Attempts spent before this one.
    pub attempts: i32,
    /// Attempts allowed in all.
    pub max_attempts: i32,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// The lease this worker holds on it.
    pub lease_id: Uuid,
    /// The recipient is on the opt-out list for this channel kind (checked at claim).
    pub suppressed: bool,
    /// The producer's W3C `traceparent` at enqueue, if it gave one (attempt spans link to it).
    pub traceparent: Option<String>,
    /// The producer's W3C `tracestate`, if any.
    pub tracestate: Option<String>,
}

/// By position, in the order of the `RETURNING` list of `queries/message_claim.sql`, followed by
/// `queries/message_claim_trace.sql`'s when the claim carries the trace context (keep them in step; every
/// claim test fails at once if they are not): looking the columns up by name hashes each name for each row, on
/// the hottest path. Types are still checked column by column.
impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for Message {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> sqlx::Result<Self> {
        use sqlx::Row;
        let traced = row.len() > 17;
        Ok(Message {
            id: row.try_get(0)?,
            channel: row.try_get(1)?,
            recipient: row.try_get(2)?,
            content: row.try_get(3)?,
            use_case: row.try_get(4)?,
            priority: row.try_get(5)?,
            scheduled_for: row.try_get(6)?,
            run_at: row.try_get(7)?,
            expires_at: row.try_get(8)?,
            ignore_quiet_hours: row.try_get(9)?,
            cap_frequency: row.try_get(10)?,
            tags: row.try_get(11)?,
            attempts: row.try_get(12)?,
            max_attempts: row.try_get(13)?,
            created_at: row.try_get(14)?,
            lease_id: row.try_get(15)?,
            suppressed: row.try_get(16)?,
            // Present only when the claim asked for them (`Store::message_claim`, traces on).
            traceparent: if traced { row.try_get(17)? } else { None },
            tracestate: if traced { row.try_get(18)? } else { None },
        })
    }
}

impl Message {
    /// The number of the attempt being made now (1-based).
    pub(crate) fn attempt(&self) -> i32 {
        self.attempts + 1
    }

    /// A due message on its first attempt, as a claim would return it, valid for `valid_for` from `now`: the
    /// one place tests and benchmarks build messages, so a new field is added here only.
    #[doc(hidden)]
    pub fn example(
        channel: &str,
        use_case: &str,
        recipient: Value,
        content: Value,
        now: DateTime<Utc>,
        valid_for: chrono::Duration,
    ) -> Message {
        Message {
            id: Uuid::now_v7(),
            channel: channel.to_owned(),
            recipient: recipient.into(),
            content: content.into(),
            use_case: use_case.to_owned(),
            priority: 0,
            scheduled_for: None,
            run_at: now,
            expires_at: now + valid_for,
            ignore_quiet_hours: false,
            cap_frequency: false,
            tags: Vec::new(),
            attempts: 0,
            max_attempts: 10,
            created_at: now,
            lease_id: Uuid::now_v7(),
            suppressed: false,
            traceparent: None,
            tracestate: None,
        }
    }

    /// Seconds of validity left at `now` (never negative).
    pub(crate) fn remaining_validity(&self, now: DateTime<Utc>) -> i64 {
        (self.expires_at - now).num_seconds().max(0)
    }
}

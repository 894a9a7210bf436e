//! What the HTTP API reads and writes outside the worker's hot path: idempotent enqueue, the message list and one
//! message, the channels. Handlers call only these functions (one params struct per call), so the history can
//! move to partitions without touching them.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{FromRow, Row};
use uuid::Uuid;

use super::Store;
use crate::error::Result;

/// Parameters of [`Store::message_enqueue_api`].
#[derive(Debug, Clone)]
pub struct EnqueueApiParams<'a> {
    /// The messages as a JSON array, as text (handed to `tidings.enqueue_many` unchanged).
    pub messages_json: &'a str,
    /// `(token name, Idempotency-Key, SHA-256 of route and body)`, when the request carried a key.
    pub idempotency: Option<(&'a str, &'a str, [u8; 32])>,
}

/// What an enqueue through the API came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnqueueApiOutcome {
    /// Enqueued now; the ids in input order.
    Inserted(Vec<Uuid>),
    /// The key was seen with the same body: the first call's ids, nothing inserted.
    Replayed(Vec<Uuid>),
    /// The key was seen with another body: nothing inserted.
    KeyReused,
    /// `tidings.enqueue_many` refused the batch (SQLSTATE 22023): nothing inserted.
    Invalid {
        /// The field, as a JSON path into the message.
        field: String,
        /// The rule it broke.
        rule: String,
        /// Position in the batch, when the SQL function named one.
        index: Option<usize>,
    },
}

/// Parameters of [`Store::message_list`]. Every filter is optional.
#[derive(Debug, Clone, Default)]
pub struct MessageListParams<'a> {
    /// Only ids below this one (the cursor: the last id of the previous page).
    pub before_id: Option<Uuid>,
    /// Only ids at or above this one (created at or after its instant).
    pub min_id: Option<Uuid>,
    /// Only ids below this one (created before its instant).
    pub max_id: Option<Uuid>,
    /// Only these statuses.
    pub statuses: Option<&'a [String]>,
    /// Only this channel.
    pub channel: Option<&'a str>,
    /// Only messages with this tag.
    pub tag: Option<&'a str>,
    /// Only this use case.
    pub use_case: Option<&'a str>,
    /// Only this producer reference.
    pub reference: Option<&'a str>,
    /// Only recipients with one of these phone numbers (exact).
    pub recipient: Option<&'a [String]>,
    /// Only the message with this provider message id.
    pub provider_message_id: Option<&'a str>,
    /// Most rows.
    pub limit: i64,
}

/// One message of a fallback chain.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChainRow {
    /// The chain's id (its first message's).
    pub chain_id: Uuid,
    /// The message's id.
    pub id: Uuid,
    /// Its channel.
    pub channel: String,
    /// Its status name.
    pub status: String,
    /// 0 for the first message, then 1 to 3.
    pub step: i16,
    /// What created the step; None for the first.
    pub trigger: Option<String>,
}

/// A message as the API lists it (content only in [`Store::message_read`]).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MessageRow {
    /// Id (UUIDv7).
    pub id: Uuid,
    /// Channel.
    pub channel: String,
    /// Status name.
    pub status: String,
    /// Use case.
    pub use_case: String,
    /// Priority, 0 first.
    pub priority: i16,
    /// Recipient (unmasked: the API masks it).
    pub recipient: Value,
    /// Tags.
    pub tags: Vec<String>,
    /// Producer reference.
    pub reference: Option<String>,
    /// Attempts spent.
    pub attempts: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// The provider's id, once sent.
    pub provider_message_id: Option<String>,
    /// The last error.
    pub last_error: Option<String>,
    /// Requested send time.
    pub scheduled_for: Option<DateTime<Utc>>,
    /// Next moment it may be claimed.
    pub run_at: DateTime<Utc>,
    /// Never sent after this.
    pub expires_at: DateTime<Utc>,
    /// Enqueued at.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A channel with its shared state.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChannelRow {
    /// Name.
    pub name: String,
    /// Provider kind.
    pub kind: String,
    /// Configured pool-wide rate limit (requests per second).
    pub rate_per_sec: Option<f64>,
    /// Paused until (only while in force).
    pub paused_until: Option<DateTime<Utc>>,
    /// Why it is paused.
    pub pause_reason: Option<String>,
}

/// How many messages one page of the list walks at most when no filter has an index (about 20 ms).
pub const LIST_SCAN_BUDGET: i64 = 20_000;

/// One page of [`Store::message_list`].
#[derive(Debug, Clone)]
pub struct MessageListPage {
    /// The messages, newest first.
    pub rows: Vec<MessageRow>,
    /// Set when the walk stopped at its budget: older messages may still match, below this id.
    pub resume_below: Option<Uuid>,
}

/// The statuses of the partial index `messages_failed`.
const FAILURE_STATUSES: [&str; 5] = [
    "sending_failed",
    "rejected",
    "expired",
    "delivery_failed",
    "canceled",
];

impl Store {
    /// Enqueues a batch through `tidings.enqueue_many`, all or nothing. With an idempotency key, the key is taken
    /// and the answer stored in the same transaction as the messages, so concurrent requests with one key insert
    /// once: the others wait for the first and replay its answer.
    pub async fn message_enqueue_api(
        &self,
        params: &EnqueueApiParams<'_>,
    ) -> Result<EnqueueApiOutcome> {
        let Some((token, key, hash)) = params.idempotency else {
            return enqueue(&self.pool, params.messages_json).await;
        };
        let mut tx = self.pool.begin().await?;
        let taken: Option<bool> =
            sqlx::query_scalar(include_str!("queries/api_idempotency_take.sql"))
                .bind(token)
                .bind(key)
                .bind(&hash[..])
                .fetch_optional(&mut *tx)
                .await?;
        if taken.is_none() {
            let row = sqlx::query(include_str!("queries/api_idempotency_get.sql"))
                .bind(token)
                .bind(key)
                .fetch_one(&mut *tx)
                .await?;
            let stored: Vec<u8> = row.try_get(0)?;
            let ids: Option<Vec<Uuid>> = row.try_get(1)?;
            return Ok(match ids {
                Some(ids) if stored == hash => EnqueueApiOutcome::Replayed(ids),
                _ => EnqueueApiOutcome::KeyReused,
            });
        }
        let outcome = enqueue(&mut *tx, params.messages_json).await?;
        if let EnqueueApiOutcome::Inserted(ids) = &outcome {
            sqlx::query(include_str!("queries/api_idempotency_answer.sql"))
                .bind(token)
                .bind(key)
                .bind(ids)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        // Anything else rolls back: the key stays free for a corrected request.
        Ok(outcome)
    }

    /// Deletes idempotency keys older than 24 h; returns how many.
    pub async fn api_idempotency_prune(&self) -> Result<u64> {
        Ok(
            sqlx::query(include_str!("queries/api_idempotency_prune.sql"))
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    /// One page of messages, newest first: at most `limit` rows. With a filter that has an index, the page is
    /// whole (`queries/message_list.sql`); without one, at most [`LIST_SCAN_BUDGET`] messages are walked
    /// (`queries/message_list_scan.sql`), and when the walk stopped there, `resume_below` says where the next page
    /// goes on, even if this one holds fewer than `limit` rows, or none.
    pub async fn message_list(&self, p: &MessageListParams<'_>) -> Result<MessageListPage> {
        let all_in = |set: &[&str]| {
            p.statuses
                .is_some_and(|s| s.iter().all(|s| set.contains(&s.as_str())))
        };
        let failed_only = all_in(&FAILURE_STATUSES);
        let waiting_only = all_in(&["accepted", "scheduled"]);
        let indexed = failed_only
            || waiting_only
            || p.tag.is_some()
            || p.reference.is_some()
            || p.recipient.is_some()
            || p.provider_message_id.is_some();
        let narrowing = p.statuses.is_some() || p.channel.is_some() || p.use_case.is_some();
        if indexed || !narrowing {
            let rows = sqlx::query_as(include_str!("queries/message_list.sql"))
                .bind(p.before_id)
                .bind(p.min_id)
                .bind(p.max_id)
                .bind(p.statuses)
                .bind(p.channel)
                .bind(p.tag)
                .bind(p.use_case)
                .bind(p.reference)
                .bind(p.recipient)
                .bind(p.limit)
                .bind(failed_only)
                .bind(p.provider_message_id)
                .bind(waiting_only)
                // Planned with the values each time (unnamed statement), so absent filters fold away and the
                // planner picks the index of the filters present; a cached generic plan would fit none of them.
                .persistent(false)
                .fetch_all(&self.pool)
                .await?;
            return Ok(MessageListPage {
                rows,
                resume_below: None,
            });
        }
        let found = sqlx::query(include_str!("queries/message_list_scan.sql"))
            .bind(p.before_id)
            .bind(p.min_id)
            .bind(p.max_id)
            .bind(p.statuses)
            .bind(p.channel)
            .bind(p.use_case)
            .bind(p.limit)
            .bind(LIST_SCAN_BUDGET)
            .persistent(false)
            .fetch_all(&self.pool)
            .await?;
        let mut page = MessageListPage {
            rows: Vec::with_capacity(found.len()),
            resume_below: None,
        };
        for row in &found {
            let scanned: i64 = row.try_get("scanned")?;
            if scanned == LIST_SCAN_BUDGET {
                page.resume_below = row.try_get("scan_floor")?;
            }
            if row.try_get::<Option<Uuid>, _>("id")?.is_some() {
                page.rows.push(MessageRow::from_row(row)?);
            }
        }
        Ok(page)
    }

    /// One message and its content, or None.
    pub async fn message_read(&self, id: Uuid) -> Result<Option<(MessageRow, Value)>> {
        let row = sqlx::query(include_str!("queries/message_read.sql"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let content: Value = row.try_get("content")?;
        Ok(Some((sqlx::FromRow::from_row(&row)?, content)))
    }

    /// The fallback chain message `id` belongs to, in step order; empty outside a chain.
    pub async fn message_chain(&self, id: Uuid) -> Result<Vec<ChainRow>> {
        Ok(sqlx::query_as(include_str!("queries/message_chain.sql"))
            .bind(id)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Every configured channel with its pause and rate limit.
    pub async fn channel_list(&self) -> Result<Vec<ChannelRow>> {
        Ok(sqlx::query_as(include_str!("queries/channel_list.sql"))
            .fetch_all(&self.pool)
            .await?)
    }
}

async fn enqueue<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    messages_json: &str,
) -> Result<EnqueueApiOutcome> {
    let result: std::result::Result<Vec<Uuid>, sqlx::Error> =
        sqlx::query_scalar(include_str!("queries/api_enqueue.sql"))
            .bind(messages_json)
            .fetch_all(executor)
            .await;
    match result.map_err(tidings_client::Error::from_db) {
        Ok(ids) => Ok(EnqueueApiOutcome::Inserted(ids)),
        Err(tidings_client::Error::Invalid { field, rule, index }) => {
            Ok(EnqueueApiOutcome::Invalid { field, rule, index })
        }
        // Any other data exception (SQLSTATE class 22) is the input's fault too: a `\u0000` jsonb cannot hold
        // (22P05), a number out of range, … Refused like a validation failure, never a 500.
        Err(tidings_client::Error::Database(sqlx::Error::Database(db)))
            if db.code().is_some_and(|c| c.starts_with("22")) =>
        {
            Ok(EnqueueApiOutcome::Invalid {
                field: "body".into(),
                rule: db.message().to_owned(),
                index: None,
            })
        }
        Err(tidings_client::Error::Database(e)) => Err(e.into()),
        Err(e) => Err(crate::Error::Other(e.to_string())),
    }
}

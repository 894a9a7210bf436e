//! The callback outbox: claim, complete, release, the gauges and a message's callbacks.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Store;
use crate::config::Config;
use crate::error::Result;

/// A claimed callback: where it goes and what it says.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CallbackRow {
    /// The outbox row id: the `webhook-id` of every POST of this callback.
    pub id: Uuid,
    /// The message.
    pub message_id: Uuid,
    /// Where to POST.
    pub url: String,
    /// The message's channel.
    pub channel: String,
    /// The status it moved to.
    pub status: String,
    /// Why.
    pub reason: String,
    /// The message's attempt the transition belongs to.
    pub message_attempt: Option<i32>,
    /// When the transition happened.
    pub at: DateTime<Utc>,
    /// The provider's id, as of the transition.
    pub provider_message_id: Option<String>,
    /// The producer's reference.
    pub reference: Option<String>,
    /// The message's tags.
    pub tags: Vec<String>,
    /// POSTs started, this one included.
    pub attempts: i32,
}

/// How a claimed callback went, for [`Store::callback_complete`].
#[derive(Debug, Clone, PartialEq)]
pub enum CallbackResult {
    /// A 2xx answer.
    Delivered,
    /// Failed (`error`); due again at `at`.
    Retry {
        /// Next attempt.
        at: DateTime<Utc>,
        /// `http_<status>`, `timeout`, `connect` or `transport`.
        error: String,
    },
    /// Failed (`error`), and the next attempt would come after `[callbacks] max_age`.
    GivenUp {
        /// The last failure.
        error: String,
    },
}

/// One callback of a message, as `GET /v1/messages/{id}` shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MessageCallback {
    /// The webhook-id.
    pub id: Uuid,
    /// The status the callback tells.
    pub status: String,
    /// The full URL (callers show its host only).
    pub url: String,
    /// POSTs started.
    pub attempts: i32,
    /// When the transition happened.
    pub at: DateTime<Utc>,
    /// When a 2xx came back.
    pub delivered_at: Option<DateTime<Utc>>,
    /// When retries stopped.
    pub given_up_at: Option<DateTime<Utc>>,
    /// The last failure.
    pub last_error: Option<String>,
    /// A worker is POSTing it now.
    pub in_flight: bool,
    /// Next attempt (pending rows).
    pub run_at: DateTime<Utc>,
}

impl Store {
    /// Makes `tidings.callback_hosts` the config's `[callbacks] allowed_hosts`.
    pub async fn callback_hosts_sync(&self, config: &Config) -> Result<()> {
        sqlx::query(include_str!("queries/callback_hosts_sync.sql"))
            .bind(config.callback_hosts())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Claims up to `limit` due callbacks under `lease_id` for `lease` (see `queries/callback_claim.sql`).
    pub async fn callback_claim(
        &self,
        limit: i64,
        lease_id: Uuid,
        lease: Duration,
    ) -> Result<Vec<CallbackRow>> {
        Ok(sqlx::query_as(include_str!("queries/callback_claim.sql"))
            .bind(limit)
            .bind(lease_id)
            .bind(lease.as_millis() as f64)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Records how a claimed callback went; false when the claim was no longer ours.
    pub async fn callback_complete(
        &self,
        row: &CallbackRow,
        lease_id: Uuid,
        result: &CallbackResult,
    ) -> Result<bool> {
        let (kind, at, error) = match result {
            CallbackResult::Delivered => ("delivered", None, None),
            CallbackResult::Retry { at, error } => ("retry", Some(*at), Some(error.as_str())),
            CallbackResult::GivenUp { error } => ("given_up", None, Some(error.as_str())),
        };
        Ok(sqlx::query(include_str!("queries/callback_complete.sql"))
            .bind(row.id)
            .bind(lease_id)
            .bind(row.attempts)
            .bind(kind)
            .bind(at)
            .bind(error)
            .execute(&self.pool)
            .await?
            .rows_affected()
            == 1)
    }

    /// Hands back every callback still held under `lease_id`; returns how many.
    pub async fn callback_release(&self, lease_id: Uuid) -> Result<u64> {
        Ok(sqlx::query(include_str!("queries/callback_release.sql"))
            .bind(lease_id)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// Pending callbacks, and seconds since the transition of the oldest of them.
    pub async fn callback_stats(&self) -> Result<(i64, f64)> {
        Ok(sqlx::query_as(include_str!("queries/callback_stats.sql"))
            .fetch_one(&self.pool)
            .await?)
    }

    /// The callbacks of a message, in transition order.
    pub async fn callback_list(&self, message_id: Uuid) -> Result<Vec<MessageCallback>> {
        Ok(sqlx::query_as(include_str!("queries/callback_list.sql"))
            .bind(message_id)
            .fetch_all(&self.pool)
            .await?)
    }
}

//! Operator actions on messages and channels (cancel, retry, reschedule; pause, resume), by id or by the list's
//! filter, each change with its event in the same statement. Called by [`crate::operator`] only.

use chrono::{DateTime, Utc};

use super::{MessageListParams, Store};
use crate::error::Result;

/// What an operator does to the messages a filter matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageAction {
    /// Waiting (accepted, scheduled) → canceled.
    Cancel,
    /// Failed (sending_failed, rejected, expired) and still valid → accepted.
    Retry,
    /// Waiting → due at the given time.
    Reschedule(DateTime<Utc>),
}

/// Parameters of [`Store::message_act`].
#[derive(Debug, Clone)]
pub struct MessageActParams<'a> {
    /// The action.
    pub action: MessageAction,
    /// Only this message (with or without the filter).
    pub id: Option<uuid::Uuid>,
    /// The filter (its `before_id` and `limit` are not used).
    pub filter: MessageListParams<'a>,
    /// Count only.
    pub dry_run: bool,
    /// Change nothing unless exactly this many match.
    pub expect_count: Option<i64>,
    /// Who acts (a token's name), written into each event's detail.
    pub by: &'a str,
}

impl Store {
    /// Applies an operator action; returns (matched, changed). Nothing changes on a dry run or when
    /// `expect_count` differs from the matched count.
    pub async fn message_act(&self, p: &MessageActParams<'_>) -> Result<(i64, i64)> {
        let sql = match p.action {
            MessageAction::Cancel => include_str!("queries/operator_cancel.sql"),
            MessageAction::Retry => include_str!("queries/operator_retry.sql"),
            MessageAction::Reschedule(_) => include_str!("queries/operator_reschedule.sql"),
        };
        let f = &p.filter;
        let q = sqlx::query_as(sql)
            .bind(p.id)
            .bind(f.min_id)
            .bind(f.max_id)
            .bind(f.statuses)
            .bind(f.channel)
            .bind(f.tag)
            .bind(f.use_case)
            .bind(f.reference)
            .bind(f.recipient)
            .bind(p.dry_run)
            .bind(p.expect_count)
            .bind(p.by)
            .bind(match p.action {
                MessageAction::Reschedule(at) => Some(at),
                _ => None,
            })
            .bind(f.provider_message_id);
        // Planned with its values, like message_list (absent filters fold away).
        Ok(q.persistent(false).fetch_one(&self.pool).await?)
    }

    /// An operator's pause of `channel` until `until`, replacing any pause in force; false when no such channel.
    pub async fn channel_pause_manual(
        &self,
        channel: &str,
        until: DateTime<Utc>,
        reason: &str,
    ) -> Result<bool> {
        let found: Option<String> =
            sqlx::query_scalar(include_str!("queries/channel_pause_manual.sql"))
                .bind(channel)
                .bind(until)
                .bind(reason)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    /// Ends any pause of `channel`; false when no such channel.
    pub async fn channel_resume(&self, channel: &str) -> Result<bool> {
        let found: Option<String> = sqlx::query_scalar(include_str!("queries/channel_resume.sql"))
            .bind(channel)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }
}

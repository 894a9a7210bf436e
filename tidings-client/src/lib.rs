//! Enqueue outbound messages into [tidings](https://example.invalid/tidings) from your own transactions.
//!
//! Every call goes through the SQL API the migrations install (`tidings.enqueue_many`, `tidings.cancel`,
//! `tidings.status`, `tidings.events`), so the database does the one and only validation, and a message enqueued
//! inside a transaction that rolls back was never queued.
//!
//! ```no_run
//! # async fn demo(pool: sqlx::PgPool) -> Result<(), tidings_client::Error> {
//! use tidings_client::NewMessage;
//! let mut tx = pool.begin().await?;
//! // ... your own writes ...
//! let id = NewMessage::sms("sms", "+31612345678")
//!     .text("Your parcel arrives today")
//!     .reference("order-1234-shipped")
//!     .enqueue(&mut *tx)
//!     .await?;
//! tx.commit().await?;
//! # let _ = id; Ok(()) }
//! ```
#![warn(missing_docs)]

mod message;
mod types;

pub use message::{Fallback, NewMessage, Trigger, UseCase};
pub use types::{ChainLink, Event, MessageStatus, Status};

use sqlx::PgExecutor;
use uuid::Uuid;

/// What can go wrong when talking to tidings.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database refused the message: `field` broke `rule` (SQLSTATE 22023).
    #[error("invalid {field}: {rule}{}", index.map(|i| format!(" (message {i} of the batch)")).unwrap_or_default())]
    Invalid {
        /// The field, as a JSON path into the message (`content.body.text.text`, `scheduled_for`, …).
        field: String,
        /// The rule it broke, in words.
        rule: String,
        /// Position in the batch, for [`enqueue_many`] with more than one message.
        index: Option<usize>,
    },
    /// Any other database error.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The SQLSTATE tidings raises for bad input.
pub const INVALID_PARAMETER_VALUE: &str = "22023";

impl Error {
    /// Maps a database error raised by `tidings.enqueue*` into [`Error::Invalid`] when it is a validation failure.
    pub fn from_db(err: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &err
            && db.code().as_deref() == Some(INVALID_PARAMETER_VALUE)
        {
            return parse_invalid(db.message()).unwrap_or(Error::Database(err));
        }
        Error::Database(err)
    }
}

/// Parses `messages[3].content: must …` or `content: must …`.
fn parse_invalid(message: &str) -> Option<Error> {
    let (path, rule) = message.split_once(": ")?;
    let (index, field) = match path.strip_prefix("messages[") {
        Some(rest) => {
            let (n, field) = rest.split_once("].")?;
            (Some(n.parse().ok()?), field)
        }
        None => (None, path),
    };
    Some(Error::Invalid {
        field: field.to_owned(),
        rule: rule.to_owned(),
        index,
    })
}

/// Enqueues many messages in one statement (all or nothing) and returns their ids in input order.
///
/// Much faster than one call per message: the batch is validated and inserted set-based. Batches of
/// 1,000–10,000 work well; the SQL function refuses more than 100,000 per call.
pub async fn enqueue_many<'e>(
    executor: impl PgExecutor<'e>,
    messages: &[NewMessage],
) -> Result<Vec<Uuid>, Error> {
    if messages.is_empty() {
        return Ok(Vec::new());
    }
    // Serialised straight to JSON text (no intermediate value tree); PostgreSQL parses it once as jsonb.
    let payload = serde_json::to_string(messages).expect("messages serialize to JSON");
    sqlx::query_scalar::<_, Uuid>("SELECT tidings.enqueue_many($1::text::jsonb)")
        .bind(payload)
        .fetch_all(executor)
        .await
        .map_err(Error::from_db)
}

/// Enqueues a JSON array of messages already in the SQL shape (the keys of `tidings.enqueue`), as read from
/// a JSON-lines file. Same semantics as [`enqueue_many`].
pub async fn enqueue_json<'e>(
    executor: impl PgExecutor<'e>,
    messages: serde_json::Value,
) -> Result<Vec<Uuid>, Error> {
    sqlx::query_scalar::<_, Uuid>("SELECT tidings.enqueue_many($1)")
        .bind(messages)
        .fetch_all(executor)
        .await
        .map_err(Error::from_db)
}

/// Cancels a message no worker holds yet. `Ok(false)` when it is already processing or finished.
pub async fn cancel<'e>(executor: impl PgExecutor<'e>, id: Uuid) -> Result<bool, Error> {
    Ok(sqlx::query_scalar("SELECT tidings.cancel($1)")
        .bind(id)
        .fetch_one(executor)
        .await?)
}

/// A message's current state, or `None` when there is no such message (or it was pruned).
pub async fn status<'e>(
    executor: impl PgExecutor<'e>,
    id: Uuid,
) -> Result<Option<MessageStatus>, Error> {
    Ok(sqlx::query_as("SELECT * FROM tidings.status($1)")
        .bind(id)
        .fetch_optional(executor)
        .await?)
}

/// A message's status history, oldest first.
pub async fn events<'e>(executor: impl PgExecutor<'e>, id: Uuid) -> Result<Vec<Event>, Error> {
    Ok(sqlx::query_as("SELECT * FROM tidings.events($1)")
        .bind(id)
        .fetch_all(executor)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_and_batch_validation_messages() {
        match parse_invalid("content: must have exactly one of body or template") {
            Some(Error::Invalid { field, rule, index }) => {
                assert_eq!(field, "content");
                assert_eq!(rule, "must have exactly one of body or template");
                assert_eq!(index, None);
            }
            other => panic!("unexpected {other:?}"),
        }
        match parse_invalid("messages[12].recipient.phone: must be an E.164 phone number") {
            Some(Error::Invalid { field, index, .. }) => {
                assert_eq!(field, "recipient.phone");
                assert_eq!(index, Some(12));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(parse_invalid("no separator here").is_none());
    }
}

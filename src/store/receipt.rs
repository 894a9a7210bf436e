//! Delivery receipts: the one store function that moves a `sent` message on to its final delivery status.

use serde_json::Value;
use sqlx::Row;
use tidings_client::Status;
use uuid::Uuid;

use super::Store;
use crate::error::Result;

/// Parameters of [`Store::message_receipt`].
#[derive(Debug, Clone)]
pub(crate) struct ReceiptParams<'a> {
    /// The channel the receipt was signed for; only its messages can match.
    pub(crate) channel: &'a str,
    /// Our message id (the `reference` the adapter sent), when the receipt carries one.
    pub(crate) message_id: Option<Uuid>,
    /// The provider's message id, when the receipt carries one.
    pub(crate) provider_message_id: Option<&'a str>,
    /// `Delivered` or `DeliveryFailed`.
    pub(crate) status: Status,
    /// The event's reason (`receipt_delivered`, `receipt_delivery_failed`).
    pub(crate) reason: &'a str,
    /// The event's detail (the provider's reason and timestamp).
    pub(crate) detail: Value,
    /// Written to `last_error` when the message changes (failures); None keeps it.
    pub(crate) last_error: Option<&'a str>,
}

/// What [`Store::message_receipt`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReceiptApplied {
    /// The matched message.
    pub(crate) id: Uuid,
    /// Its status after the call.
    pub(crate) status: Status,
    /// True when this call moved it from `sent` (and wrote the event).
    pub(crate) changed: bool,
}

impl Store {
    /// Applies a delivery receipt (see `queries/message_receipt.sql`). `None`: no such message on the channel.
    ///
    /// A `sent` message that already moved to the history (a receipt later than `[worker] history_after`) is
    /// brought back to the hot table first, so the transition runs as any other does (its event, callbacks,
    /// a fallback step waiting for the receipt). A receipt that matched a `sent` message which the mover took
    /// away between the match and the update (it then changes nothing and still reads `sent`) is applied again.
    pub(crate) async fn message_receipt(
        &self,
        params: &ReceiptParams<'_>,
    ) -> Result<Option<ReceiptApplied>> {
        for _ in 0..3 {
            let applied = self.message_receipt_hot(params).await?;
            let raced = matches!(&applied, Some(a) if !a.changed && a.status == Status::Sent);
            if !raced && applied.is_some() {
                return Ok(applied);
            }
            let archived: Option<Uuid> =
                sqlx::query_scalar(include_str!("queries/history_receipt_target.sql"))
                    .bind(params.channel)
                    .bind(params.message_id)
                    .bind(params.provider_message_id)
                    .fetch_optional(&self.pool)
                    .await?;
            match archived {
                Some(id) => {
                    self.history_restore(&[id]).await?;
                }
                None if raced => continue,
                None => return Ok(applied),
            }
        }
        self.message_receipt_hot(params).await
    }

    /// The receipt's statement on the hot table.
    async fn message_receipt_hot(
        &self,
        params: &ReceiptParams<'_>,
    ) -> Result<Option<ReceiptApplied>> {
        let row = sqlx::query(include_str!("queries/message_receipt.sql"))
            .bind(params.channel)
            .bind(params.message_id)
            .bind(params.provider_message_id)
            .bind(params.status.as_str())
            .bind(params.reason)
            .bind(&params.detail)
            .bind(params.last_error)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(ReceiptApplied {
                id: r.try_get(0)?,
                status: status_of(r.try_get(1)?)?,
                changed: r.try_get(2)?,
            })
        })
        .transpose()
    }
}

/// A status read back as text (the query returns `status::text`).
fn status_of(text: String) -> Result<Status> {
    Status::parse(&text)
        .ok_or_else(|| crate::Error::Other(format!("unknown status {text:?} in tidings.messages")))
}

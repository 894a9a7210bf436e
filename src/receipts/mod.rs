//! Delivery receipts, in one room: the channels' secrets, the signature check, the body, and the state change
//! `sent` → `delivered` / `delivery_failed` with its event.
//!
//! [`verify`] holds the pure part (signature, freshness, body parsing); [`Receipts::apply`] runs a receipt from
//! its raw headers and body to a [`ReceiptAnswer`]; the HTTP handler (`POST /receipts/{channel}` in
//! [`crate::server`]) only maps that answer to a status code and a one-line JSON body.
//!
//! A channel takes receipts only when its config names the environment variable holding the shared secret
//! (`receipt_secret_env`); the variable is read once at startup. A channel without a secret is answered like an
//! unknown one: from outside, "does not take receipts" and "does not exist" look the same, and a receipt is never
//! accepted unsigned.

mod verify;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::json;
use tidings_client::Status;
use uuid::Uuid;

use crate::config::Config;
use crate::error::Result;
use crate::metrics::Metrics;
use crate::provider::credentials::{self, Env, Secret};
use crate::store::{ReceiptParams, Store};
pub use verify::{
    MAX_AGE, MAX_AHEAD, Receipt, ReceiptBody, ReceiptError, ReceiptStatus, SIGNATURE_HEADER,
    TIMESTAMP_HEADER, parse, sign, verify,
};

/// Largest receipt body accepted.
pub const MAX_RECEIPT_BODY: usize = 64 * 1024;

/// The channel setting naming the environment variable that holds a channel's receipt secret.
pub(crate) const RECEIPT_SECRET_SETTING: &str = "receipt_secret_env";

/// The receipt secret of every channel that takes receipts, read once at startup. Cheap to clone.
#[derive(Clone, Default)]
pub struct Receipts(Arc<BTreeMap<String, Secret>>);

impl std::fmt::Debug for Receipts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// What became of one receipt. The HTTP handler turns each into one status code.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ReceiptAnswer {
    /// The message is final: `changed` when this receipt moved it from `sent` (one event row), false for a
    /// duplicate or a late receipt contradicting the first (nothing written).
    Applied {
        /// The matched message.
        message_id: Uuid,
        /// Its status now.
        status: Status,
        /// Whether this receipt changed it.
        changed: bool,
    },
    /// The message is not final yet (still `accepted` / `scheduled` / `processing`, or a concurrent receipt
    /// moved it meanwhile): the provider should retry later.
    NotYet {
        /// The matched message.
        message_id: Uuid,
        /// Its status now.
        status: Status,
    },
    /// An intermediate status (`accepted`, `sent`, …): acknowledged, nothing written.
    Ignored {
        /// The status as the provider wrote it.
        status: String,
    },
    /// The body is not a receipt (`field: rule`).
    BadBody(ReceiptError),
    /// A signature header is missing, malformed or wrong, or the timestamp is stale (`header: rule`).
    Unauthorized(String),
    /// Unknown channel, a channel without a secret, or no such message on the channel.
    NotFound(String),
    /// The database did not answer; the provider should retry.
    Unavailable,
}

/// One receipt as it arrived.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReceiptRequest<'a> {
    /// The channel it was posted for.
    pub(crate) channel: &'a str,
    /// The raw [`TIMESTAMP_HEADER`] value, if present.
    pub(crate) timestamp: Option<&'a str>,
    /// The raw [`SIGNATURE_HEADER`] value, if present.
    pub(crate) signature: Option<&'a str>,
    /// The raw body.
    pub(crate) body: &'a [u8],
    /// When it arrived (the freshness window counts from here).
    pub(crate) now: DateTime<Utc>,
}

impl Receipts {
    /// Reads the secret of every channel with `receipt_secret_env` through `env`. A named variable that is
    /// missing or empty is a config error naming the setting and the variable (never the value).
    pub fn from_config(config: &Config, env: Env) -> Result<Self> {
        let mut secrets = BTreeMap::new();
        for (name, channel) in &config.channels {
            if channel.settings.contains_key(RECEIPT_SECRET_SETTING) {
                let secret = credentials::from_env(name, channel, RECEIPT_SECRET_SETTING, env)?;
                secrets.insert(name.clone(), secret);
            }
        }
        Ok(Receipts(Arc::new(secrets)))
    }

    /// The channels that take receipts.
    pub(crate) fn channels(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }

    /// Runs one receipt: signature, body, then the guarded state change and its event in one statement.
    pub(crate) async fn apply(
        &self,
        store: &Store,
        metrics: &Metrics,
        request: &ReceiptRequest<'_>,
    ) -> ReceiptAnswer {
        let ReceiptRequest {
            channel,
            timestamp,
            signature,
            body,
            now,
        } = *request;
        let Some(secret) = self.0.get(channel) else {
            return ReceiptAnswer::NotFound(format!("channel {channel:?} does not take receipts"));
        };
        let (timestamp, signature) = match (timestamp, signature) {
            (Some(t), Some(s)) => (t, s),
            (None, _) => {
                return ReceiptAnswer::Unauthorized(format!("{TIMESTAMP_HEADER}: is required"));
            }
            (_, None) => {
                return ReceiptAnswer::Unauthorized(format!("{SIGNATURE_HEADER}: is required"));
            }
        };
        if let Err(e) = verify(secret.expose().as_bytes(), timestamp, signature, body, now) {
            tracing::debug!(%channel, error = %e, "receipt refused");
            return ReceiptAnswer::Unauthorized(e.to_string());
        }
        let receipt = match parse(body) {
            Ok(ReceiptBody::Receipt(r)) => r,
            Ok(ReceiptBody::Ignored { status }) => return ReceiptAnswer::Ignored { status },
            Err(e) => return ReceiptAnswer::BadBody(e),
        };
        let (status, reason) = match receipt.status {
            ReceiptStatus::Delivered => (Status::Delivered, "receipt_delivered"),
            ReceiptStatus::DeliveryFailed => (Status::DeliveryFailed, "receipt_delivery_failed"),
        };
        // The reference we send is our message id; any other reference is not one of ours.
        let message_id = receipt
            .reference
            .as_deref()
            .and_then(|r| Uuid::parse_str(r.trim()).ok());
        let params = ReceiptParams {
            channel,
            message_id,
            provider_message_id: receipt.provider_message_id.as_deref(),
            status,
            reason,
            detail: json!({
                "provider_message_id": receipt.provider_message_id,
                "provider_reason": receipt.reason,
                "provider_at": receipt.at,
            }),
            last_error: receipt.reason.as_deref(),
        };
        let applied = match store.message_receipt(&params).await {
            Ok(Some(applied)) => applied,
            Ok(None) => {
                return ReceiptAnswer::NotFound(format!(
                    "no message of channel {channel:?} matches this receipt's id or reference"
                ));
            }
            Err(e) => {
                tracing::warn!(%channel, error = %e, "receipt not recorded");
                return ReceiptAnswer::Unavailable;
            }
        };
        if applied.changed {
            metrics
                .transitions
                .with_label_values(&[channel, status.as_str(), reason])
                .inc();
            tracing::debug!(%channel, id = %applied.id, %status, "receipt recorded");
        }
        // `sent` unchanged: another receipt for the same message changed it meanwhile.
        if applied.status.is_final() && applied.status != Status::Sent {
            ReceiptAnswer::Applied {
                message_id: applied.id,
                status: applied.status,
                changed: applied.changed,
            }
        } else {
            ReceiptAnswer::NotYet {
                message_id: applied.id,
                status: applied.status,
            }
        }
    }
}

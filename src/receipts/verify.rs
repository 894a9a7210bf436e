//! A receipt's signature check and body parsing. Pure: no I/O, time is a parameter.
//!
//! [`super::Receipts::apply`] reads two headers, [`TIMESTAMP_HEADER`] and [`SIGNATURE_HEADER`], calls [`verify`]
//! with the channel's secret and then [`parse`]:
//!
//! - `x-tidings-timestamp`: unix seconds when the sender signed;
//! - `x-tidings-signature`: HMAC-SHA256 with the channel secret over `"{timestamp}.{body}"`, as lowercase hex
//!   or base64, optionally prefixed `sha256=`; several signatures separated by spaces are accepted (any one
//!   matching is enough), so a secret can be rotated without dropping receipts. [`sign`] makes one.
//!
//! A timestamp more than 5 minutes old or more than 1 minute ahead of `now` is refused, so a captured callback
//! cannot be replayed later. Comparison is constant-time (`hmac`'s `verify_slice`).
//!
//! The body is a Bird message (seed 002: `id`, `reference`, `status`, `reason`, `failure`, `lastStatusAt`), either
//! bare or wrapped in a webhook envelope's `payload`. `delivered` is [`ReceiptStatus::Delivered`];
//! `delivery_failed`, and also `sending_failed` and `rejected` reported after the provider first accepted the
//! message, are [`ReceiptStatus::DeliveryFailed`] (otherwise such a message would stay `sent` forever); every
//! other status (`accepted`, `processing`, `scheduled`, `sent`, `deleted`, unknown ones) is
//! [`ReceiptBody::Ignored`].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// Header carrying the signing time (unix seconds).
pub const TIMESTAMP_HEADER: &str = "x-tidings-timestamp";
/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-tidings-signature";
/// Oldest signature accepted.
pub const MAX_AGE: Duration = Duration::minutes(5);
/// Furthest in the future a signature may be dated (clock skew).
pub const MAX_AHEAD: Duration = Duration::minutes(1);

/// What a receipt says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptStatus {
    /// The provider delivered the message.
    Delivered,
    /// The provider could not deliver it.
    DeliveryFailed,
}

/// A receipt that changes a message's status.
#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    /// The provider's message id (matches `provider_message_id`).
    pub provider_message_id: Option<String>,
    /// The `reference` we sent (our message id).
    pub reference: Option<String>,
    /// Delivered or failed.
    pub status: ReceiptStatus,
    /// The provider's reason, for failures.
    pub reason: Option<String>,
    /// When the provider says the status changed.
    pub at: Option<DateTime<Utc>>,
}

/// A parsed callback body.
#[derive(Debug, Clone, PartialEq)]
pub enum ReceiptBody {
    /// A final delivery status.
    Receipt(Receipt),
    /// An intermediate or unknown status, acknowledged and dropped.
    Ignored {
        /// The status as the provider wrote it.
        status: String,
    },
}

/// Why a callback was refused. Field names are JSON paths into the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// The body is not a JSON object.
    #[error("body: {0}")]
    NotJson(String),
    /// A field is missing or has the wrong shape.
    #[error("{field}: {rule}")]
    InvalidField {
        /// The field (`status`, `payload.lastStatusAt`, …).
        field: String,
        /// The rule it broke.
        rule: &'static str,
    },
    /// The timestamp header is not unix seconds.
    #[error("{TIMESTAMP_HEADER}: must be unix seconds")]
    BadTimestamp,
    /// The timestamp is outside the replay window.
    #[error(
        "{TIMESTAMP_HEADER}: outside the accepted window (at most 5 minutes old, 1 minute ahead)"
    )]
    Stale,
    /// The signature header is not hex or base64.
    #[error("{SIGNATURE_HEADER}: must be hex or base64 HMAC-SHA256")]
    MalformedSignature,
    /// No signature matches.
    #[error("{SIGNATURE_HEADER}: does not match")]
    BadSignature,
}

/// Checks a callback's signature and freshness.
pub fn verify(
    secret: &[u8],
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), ReceiptError> {
    let secs: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| ReceiptError::BadTimestamp)?;
    let at = DateTime::from_timestamp(secs, 0).ok_or(ReceiptError::BadTimestamp)?;
    if at < now - MAX_AGE || at > now + MAX_AHEAD {
        return Err(ReceiptError::Stale);
    }
    let mut malformed = true;
    for candidate in signature.split_whitespace() {
        let Some(expected) = decode_signature(candidate) else {
            continue;
        };
        malformed = false;
        if mac(secret, timestamp.trim(), body)
            .verify_slice(&expected)
            .is_ok()
        {
            return Ok(());
        }
    }
    Err(if malformed {
        ReceiptError::MalformedSignature
    } else {
        ReceiptError::BadSignature
    })
}

/// The signature header value for a body (`sha256=<hex>`), for senders and tests.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let digest = mac(secret, timestamp, body).finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

fn decode_signature(text: &str) -> Option<Vec<u8>> {
    let text = text.strip_prefix("sha256=").unwrap_or(text);
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return (0..64)
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
            .collect();
    }
    let bytes = BASE64
        .decode(text)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
        .ok()?;
    (bytes.len() == 32).then_some(bytes)
}

/// Parses a callback body.
pub fn parse(body: &[u8]) -> Result<ReceiptBody, ReceiptError> {
    let json: Value =
        serde_json::from_slice(body).map_err(|e| ReceiptError::NotJson(e.to_string()))?;
    let (message, prefix) = match json.get("payload") {
        Some(payload @ Value::Object(_)) => (payload, "payload."),
        _ => (&json, ""),
    };
    if !message.is_object() {
        return Err(ReceiptError::NotJson("must be a JSON object".into()));
    }
    let field = |name: &str| format!("{prefix}{name}");
    let string = |name: &str| -> Result<Option<String>, ReceiptError> {
        match message.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ReceiptError::InvalidField {
                field: field(name),
                rule: "must be a string",
            }),
        }
    };
    let status = string("status")?.ok_or_else(|| ReceiptError::InvalidField {
        field: field("status"),
        rule: "is required",
    })?;
    let status_kind = match status.as_str() {
        "delivered" => ReceiptStatus::Delivered,
        "delivery_failed" | "sending_failed" | "rejected" => ReceiptStatus::DeliveryFailed,
        _ => return Ok(ReceiptBody::Ignored { status }),
    };
    let provider_message_id = string("id")?;
    let reference = string("reference")?;
    if provider_message_id.is_none() && reference.is_none() {
        return Err(ReceiptError::InvalidField {
            field: field("id"),
            rule: "a receipt needs id or reference",
        });
    }
    let at = match (string("lastStatusAt")?, string("updatedAt")?) {
        (Some(t), _) => Some(timestamp(&t, field("lastStatusAt"))?),
        (None, Some(t)) => Some(timestamp(&t, field("updatedAt"))?),
        (None, None) => None,
    };
    let reason = match status_kind {
        ReceiptStatus::Delivered => None,
        ReceiptStatus::DeliveryFailed => string("reason")?
            .or_else(|| {
                message
                    .pointer("/failure/description")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .or(string("details")?)
            .or(Some(status)),
    };
    Ok(ReceiptBody::Receipt(Receipt {
        provider_message_id,
        reference,
        status: status_kind,
        reason,
        at,
    }))
}

fn timestamp(text: &str, field: String) -> Result<DateTime<Utc>, ReceiptError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ReceiptError::InvalidField {
            field,
            rule: "must be an RFC 3339 timestamp",
        })
}

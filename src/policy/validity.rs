//! Validity: a message is never handed to a provider at or after `expires_at`, and a deferral that would land
//! there expires it at once.

use chrono::{DateTime, Utc};
use serde_json::json;
use tidings_client::Status;

use crate::outcome::Outcome;

/// True when a message valid until `expires_at` may no longer be sent at `at`.
pub(crate) fn is_expired(expires_at: DateTime<Utc>, at: DateTime<Utc>) -> bool {
    at >= expires_at
}

/// The outcome of a message found expired.
pub(crate) fn expired(expires_at: DateTime<Utc>) -> Outcome {
    Outcome::finished(
        Status::Expired,
        "validity_passed",
        json!({ "expires_at": expires_at }),
    )
}

/// The outcome of a deferral (`cause`) to `until` that would land after `expires_at`.
pub(crate) fn expired_before(
    expires_at: DateTime<Utc>,
    until: DateTime<Utc>,
    cause: &str,
) -> Outcome {
    Outcome::finished(
        Status::Expired,
        "validity_passed",
        json!({ "expires_at": expires_at, "deferred_until": until, "deferred_for": cause }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_inclusive() {
        let t: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        assert!(!is_expired(t, t - chrono::Duration::milliseconds(1)));
        assert!(is_expired(t, t));
        assert!(is_expired(t, t + chrono::Duration::seconds(1)));
    }
}

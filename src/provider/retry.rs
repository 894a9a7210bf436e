//! The retry table: how an HTTP status is treated, shared by every provider, and `Retry-After` parsing.

use chrono::{DateTime, Duration, Utc};

/// Longest wait a `Retry-After` may ask for; longer (absurd) values are clamped to it.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::hours(1);

/// How an HTTP status is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// 429: wait for `Retry-After`, pause the channel, spend no attempt.
    RateLimited,
    /// 408, 425, 5xx (and transport failures): retry with backoff, spending an attempt.
    Transient,
    /// Every other non-2xx status: give up (`sending_failed`).
    Permanent,
}

/// The one table. 2xx never reaches it.
pub(crate) fn classify_status(status: u16) -> Class {
    match status {
        429 => Class::RateLimited,
        408 | 425 | 500..=599 => Class::Transient,
        _ => Class::Permanent,
    }
}

/// Parses `Retry-After` (delta-seconds or an HTTP-date). A date in the past means now; values beyond
/// [`MAX_RETRY_AFTER`] are clamped; anything unreadable is `None` (the caller falls back to its backoff).
pub(crate) fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let value = value.trim();
    let at = if let Ok(secs) = value.parse::<u64>() {
        now + Duration::seconds(secs.min(MAX_RETRY_AFTER.num_seconds() as u64) as i64)
    } else {
        let date: DateTime<Utc> = httpdate::parse_http_date(value).ok()?.into();
        date.max(now)
    };
    Some(at.min(now + MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        for (status, class) in [
            (429, Class::RateLimited),
            (408, Class::Transient),
            (425, Class::Transient),
            (500, Class::Transient),
            (503, Class::Transient),
            (599, Class::Transient),
            (400, Class::Permanent),
            (401, Class::Permanent),
            (403, Class::Permanent),
            (404, Class::Permanent),
            (409, Class::Permanent),
            (422, Class::Permanent),
            (302, Class::Permanent),
        ] {
            assert_eq!(classify_status(status), class, "status {status}");
        }
    }

    #[test]
    fn retry_after_forms() {
        let now: DateTime<Utc> = "2026-03-29T01:00:00Z".parse().unwrap();
        assert_eq!(
            parse_retry_after("2", now),
            Some(now + Duration::seconds(2))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(now));
        assert_eq!(
            parse_retry_after("Sun, 29 Mar 2026 01:00:30 GMT", now),
            Some(now + Duration::seconds(30))
        );
        // A past date means now.
        assert_eq!(
            parse_retry_after("Sun, 29 Mar 2026 00:00:00 GMT", now),
            Some(now)
        );
        // Absurd values are clamped.
        assert_eq!(
            parse_retry_after("999999999", now),
            Some(now + MAX_RETRY_AFTER)
        );
        assert_eq!(
            parse_retry_after("Fri, 01 Jan 2100 00:00:00 GMT", now),
            Some(now + MAX_RETRY_AFTER)
        );
        assert_eq!(parse_retry_after("-3", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }
}

//! Delivery policy: pure, synchronous decisions with time as a parameter. A leaf: no I/O, no config parsing, no
//! provider code; it sees a claimed [`Message`], the channel's [`ChannelPolicy`] and the provider's answer as a
//! [`SendError`] value, and returns every decision as a value the executor carries out.
//!
//! - [`decide`], before a provider is called: send, check the frequency cap first, defer (quiet hours), expire
//!   or reject (opt-out);
//! - [`defer`]: a deferral as an outcome, or expiry when it would land at or after `expires_at`;
//! - [`frequency_capped`] / [`frequency_check_failed`]: the outcomes of the shared cap counter's answer;
//! - [`after_send_error`], after a failed call: retry (with backoff) or give up, and for a 429 the pause of the
//!   whole channel, both from one computation.
//!
//! The rules that need shared state (the frequency-cap counter, opt-outs, the channel-wide pause and rate limit)
//! are counted in SQL by the store; the policy says when to consult them and what their answers mean. One rule
//! per file:
//!
//! - [`validity`]: never hand a message to a provider at or after `expires_at`;
//! - [`quiet_hours`]: hold marketing-type messages during the channel's local-time window;
//! - [`timezone`]: the recipient's candidate time zones (explicit zone, phone country, channel default);
//! - [`backoff`]: exponential backoff with full jitter.

pub(crate) mod backoff;
pub(crate) mod quiet_hours;
pub(crate) mod timezone;
pub(crate) mod validity;

use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::json;
use tidings_client::Status;

use crate::message::Message;
use crate::outcome::{Outcome, SendError};
pub(crate) use backoff::Backoff;
pub(crate) use quiet_hours::QuietHours;

/// The use case frequency caps apply to (DESIGN §4: marketing only).
pub(crate) const CAPPED_USE_CASE: &str = "marketing";

/// A setting the policy cannot be built from; the text names the setting and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct InvalidSetting(pub String);

/// A channel's policy, built once from its config (`ChannelConfig::build_policy`). The default holds nothing
/// back: no quiet hours, no cap, backoff from 1 s up to 1 h.
#[derive(Debug, Clone)]
pub struct ChannelPolicy {
    /// Retry backoff.
    pub(crate) backoff: Backoff,
    /// `[channels.NAME.quiet_hours]`, if any.
    pub(crate) quiet_hours: Option<QuietHours>,
    /// `default_timezone`: the zone of recipients with neither a known zone nor a phone country.
    pub(crate) default_timezone: Option<Tz>,
    /// `[channels.NAME.frequency_cap]`, if any.
    pub(crate) frequency_cap: Option<FrequencyCap>,
}

impl Default for ChannelPolicy {
    fn default() -> Self {
        ChannelPolicy {
            backoff: Backoff {
                base: Duration::from_secs(1),
                cap: Duration::from_secs(3600),
            },
            quiet_hours: None,
            default_timezone: None,
            frequency_cap: None,
        }
    }
}

/// At most `max` capped messages per recipient per `per`, per channel kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrequencyCap {
    /// Messages allowed in the period.
    pub(crate) max: u32,
    /// The period.
    pub(crate) per: Duration,
}

/// What to do with a claimed message before calling its provider.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Call the provider now.
    Send,
    /// Count the message against the recipient's frequency cap first (a shared counter); send when admitted,
    /// else [`frequency_capped`].
    AdmitThenSend(FrequencyCap),
    /// Do not send yet and do not spend an attempt: wait until `until` (the executor applies [`defer`], which
    /// expires the message instead when `until` is at or after `expires_at`).
    Defer {
        /// When to try again.
        until: DateTime<Utc>,
        /// Why (`quiet_hours`, …).
        reason: &'static str,
    },
    /// Finish without sending.
    Finish(Outcome),
}

/// The decision for `message` at `now`: expired messages finish; opted-out recipients are rejected; messages
/// inside their recipient's quiet hours wait for the window's end; capped marketing messages are counted first;
/// everything else is sent.
pub fn decide(message: &Message, policy: &ChannelPolicy, now: DateTime<Utc>) -> Decision {
    if validity::is_expired(message.expires_at, now) {
        return Decision::Finish(validity::expired(message.expires_at));
    }
    // Opt-outs are looked up at claim (`suppressed`), so a STOP that arrived after enqueue still wins.
    if message.suppressed {
        return Decision::Finish(Outcome::finished(
            Status::Rejected,
            "opted_out",
            serde_json::Value::Null,
        ));
    }
    // The use case is checked first: exempt messages never pay for time zone resolution.
    if let Some(window) = &policy.quiet_hours
        && !message.ignore_quiet_hours
        && window.applies_to(&message.use_case)
    {
        let zones = timezone::candidate_zones(&message.recipient, policy.default_timezone);
        if let Some(until) = quiet_hours::next_allowed(now, &zones, window) {
            return Decision::Defer {
                until,
                reason: "quiet_hours",
            };
        }
    }
    if let Some(cap) = policy.frequency_cap
        && message.cap_frequency
        && message.use_case == CAPPED_USE_CASE
    {
        return Decision::AdmitThenSend(cap);
    }
    Decision::Send
}

/// The outcome of a message the shared counter found over its recipient's cap.
pub(crate) fn frequency_capped(cap: FrequencyCap) -> Outcome {
    Outcome::finished(
        Status::Rejected,
        "frequency_capped",
        json!({ "max": cap.max, "per_seconds": cap.per.as_secs() }),
    )
}

/// The outcome when the cap counter could not be consulted: try again in a second (no attempt spent).
pub(crate) fn frequency_check_failed(message: &Message, now: DateTime<Utc>) -> Outcome {
    defer(
        message,
        now + chrono::Duration::seconds(1),
        "frequency_check_failed",
    )
}

/// After a failed send: the message's outcome, and for a 429 the pause of the whole channel.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AfterError {
    /// What the message becomes.
    pub(crate) outcome: Outcome,
    /// `Some(until)` for a 429: no worker of the pool sends on this channel before `until`.
    pub(crate) pause_channel_until: Option<DateTime<Utc>>,
}

/// Turns a deferral into an outcome: deferrals that would land at or after `expires_at` expire now instead.
pub(crate) fn defer(message: &Message, until: DateTime<Utc>, reason: &str) -> Outcome {
    if validity::is_expired(message.expires_at, until) {
        return validity::expired_before(message.expires_at, until, reason);
    }
    Outcome::Retry {
        at: until,
        reason: reason.to_owned(),
        spend_attempt: false,
        detail: json!({ "until": until }),
    }
}

/// What follows a failed send. `now` is when the answer arrived (a `Retry-After` counts from there, and so does
/// the backoff); `unit` is a uniform random number in `[0, 1]` for the jitter.
pub(crate) fn after_send_error(
    message: &Message,
    policy: &ChannelPolicy,
    error: &SendError,
    now: DateTime<Utc>,
    unit: f64,
) -> AfterError {
    let attempt = message.attempt();
    let outcome = match error {
        SendError::RateLimited {
            retry_after,
            detail,
        } => {
            // One computation for both: the channel pauses until Retry-After (or the first backoff step when the
            // provider gave none); the message waits for the later of that and its own backoff, spending no
            // attempt.
            let pause_until = retry_after.unwrap_or(now + policy.backoff.upper(1));
            let backoff = now + policy.backoff.delay(attempt.max(1) as u32, unit);
            let at = retry_after.map_or(backoff, |r| r.max(backoff));
            let outcome = if validity::is_expired(message.expires_at, at) {
                validity::expired_before(message.expires_at, at, "rate_limited")
            } else {
                Outcome::Retry {
                    at,
                    reason: "rate_limited".into(),
                    spend_attempt: false,
                    detail: detail.clone(),
                }
            };
            return AfterError {
                outcome,
                pause_channel_until: Some(pause_until),
            };
        }
        SendError::Transient { reason, detail } => {
            let at = now + policy.backoff.delay(attempt as u32, unit);
            if attempt >= message.max_attempts {
                Outcome::Finished {
                    status: Status::SendingFailed,
                    reason: "attempts_exhausted".into(),
                    spend_attempt: true,
                    detail: json!({ "last_error": reason, "detail": detail }),
                }
            } else if validity::is_expired(message.expires_at, at) {
                Outcome::Finished {
                    status: Status::Expired,
                    reason: "validity_passed".into(),
                    spend_attempt: true,
                    detail: json!({ "expires_at": message.expires_at, "retry_at": at, "last_error": reason, "detail": detail }),
                }
            } else {
                Outcome::Retry {
                    at,
                    reason: reason.clone(),
                    spend_attempt: true,
                    detail: detail.clone(),
                }
            }
        }
        SendError::Permanent { reason, detail } => Outcome::Finished {
            status: Status::SendingFailed,
            reason: reason.clone(),
            spend_attempt: true,
            detail: detail.clone(),
        },
        SendError::Rejected { reason, detail } => Outcome::Finished {
            status: Status::Rejected,
            reason: reason.clone(),
            spend_attempt: true,
            detail: detail.clone(),
        },
    };
    AfterError {
        outcome,
        pause_channel_until: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ChannelConfig;
    use chrono::TimeDelta;
    use proptest::prelude::*;
    use serde_json::Value;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn policy(extra: &str) -> ChannelPolicy {
        let config: ChannelConfig =
            toml::from_str(&format!("kind = \"sandbox\"\n{extra}")).unwrap();
        config.build_policy("sms").unwrap()
    }

    const QUIET: &str = "default_timezone = \"Europe/Paris\"
[quiet_hours]
start = \"21:00\"
end = \"08:00\"
[backoff]
base = \"10s\"
cap = \"1h\"";

    fn message(use_case: &str, recipient: Value, now: DateTime<Utc>) -> Message {
        Message::example(
            "sms",
            use_case,
            recipient,
            json!({ "text": "hi" }),
            now,
            TimeDelta::hours(36),
        )
    }

    fn quiet_until(until: &str) -> Decision {
        Decision::Defer {
            until: utc(until),
            reason: "quiet_hours",
        }
    }

    #[test]
    fn from_config_errors_name_the_key() {
        let err = |extra: &str| {
            let config: ChannelConfig =
                toml::from_str(&format!("kind = \"sandbox\"\n{extra}")).unwrap();
            config.build_policy("sms").unwrap_err().to_string()
        };
        assert!(
            err("default_timezone = \"Europe/Pariss\"").contains("channels.sms.default_timezone")
        );
        assert!(
            err("[quiet_hours]\nstart = \"9pm\"\nend = \"08:00\"")
                .contains("channels.sms.quiet_hours.start: must be HH:MM")
        );
        let p = policy(QUIET);
        assert_eq!(p.default_timezone, Some(chrono_tz::Europe::Paris));
        assert!(p.quiet_hours.is_some());
        assert!(policy("").quiet_hours.is_none());
    }

    #[test]
    fn an_opted_out_recipient_is_rejected_before_quiet_hours_are_considered() {
        let p = policy(QUIET);
        let night_in_paris = utc("2026-01-15T22:00:00Z");
        let mut m = message(
            "marketing",
            json!({ "phone": "+33612345678" }),
            night_in_paris,
        );
        m.suppressed = true;
        match decide(&m, &p, night_in_paris) {
            Decision::Finish(outcome) => {
                assert_eq!(outcome.status(), Status::Rejected);
                assert_eq!(outcome.reason(), "opted_out");
                assert!(!outcome.spends_attempt());
            }
            other => panic!("{other:?}"),
        }
        // Expiry still comes first.
        assert_eq!(
            decide(&m, &p, m.expires_at),
            Decision::Finish(validity::expired(m.expires_at))
        );
    }

    #[test]
    fn decide_table() {
        let p = policy(QUIET);
        // 2026-01-15T22:00Z: 23:00 in Paris, 17:00 in New York, 12:00 in Honolulu.
        let night_in_paris = utc("2026-01-15T22:00:00Z");
        let fr = json!({ "phone": "+33612345678" });
        let us = json!({ "phone": "+12125550123" });
        let cases: Vec<(&str, Message, Decision)> = vec![
            (
                "marketing to France at 23:00 waits for 08:00",
                message("marketing", fr.clone(), night_in_paris),
                quiet_until("2026-01-16T07:00:00Z"),
            ),
            (
                "promotional too",
                message("promotional", fr.clone(), night_in_paris),
                quiet_until("2026-01-16T07:00:00Z"),
            ),
            (
                "transactional is exempt",
                message("transactional", fr.clone(), night_in_paris),
                Decision::Send,
            ),
            (
                "2fa is exempt",
                message("2fa", fr.clone(), night_in_paris),
                Decision::Send,
            ),
            (
                "conversational is not in applies_to",
                message("conversational", fr.clone(), night_in_paris),
                Decision::Send,
            ),
            (
                "ignore_quiet_hours",
                Message {
                    ignore_quiet_hours: true,
                    ..message("marketing", fr.clone(), night_in_paris)
                },
                Decision::Send,
            ),
            (
                "+1 number: 17:00 in New York but 12:00 in Honolulu, fine everywhere",
                message("marketing", us.clone(), night_in_paris),
                Decision::Send,
            ),
            (
                "+1 number at 09:00 in New York: Honolulu (04:00) still sleeps until 18:00Z",
                message("marketing", us.clone(), utc("2026-01-15T14:00:00Z")),
                quiet_until("2026-01-15T18:00:00Z"),
            ),
            (
                "an explicit zone beats the phone's country",
                message(
                    "marketing",
                    json!({ "phone": "+12125550123", "timezone": "America/New_York" }),
                    utc("2026-01-15T14:00:00Z"),
                ),
                Decision::Send,
            ),
            (
                "an invalid explicit zone falls back to the phone",
                message(
                    "marketing",
                    json!({ "phone": "+12125550123", "timezone": "America/Gotham" }),
                    utc("2026-01-15T14:00:00Z"),
                ),
                quiet_until("2026-01-15T18:00:00Z"),
            ),
            (
                "Australian number: Perth (06:00) sleeps until 08:00 AWST",
                message(
                    "marketing",
                    json!({ "phone": "+61412345678" }),
                    utc("2026-01-15T22:00:00Z"),
                ),
                quiet_until("2026-01-16T00:00:00Z"),
            ),
            (
                "no zone, no phone: the channel's default zone",
                message(
                    "marketing",
                    json!({ "email": "a@example.com" }),
                    night_in_paris,
                ),
                quiet_until("2026-01-16T07:00:00Z"),
            ),
            (
                "expired beats quiet hours",
                Message {
                    expires_at: night_in_paris,
                    ..message("marketing", fr.clone(), night_in_paris)
                },
                Decision::Finish(validity::expired(night_in_paris)),
            ),
        ];
        for (name, m, expected) in cases {
            assert_eq!(decide(&m, &p, m.run_at), expected, "{name}");
        }
        // Without a default zone, UTC.
        let utc_policy = policy("[quiet_hours]\nstart = \"21:00\"\nend = \"08:00\"");
        let m = message("marketing", json!({}), utc("2026-01-15T21:30:00Z"));
        assert_eq!(
            decide(&m, &utc_policy, m.run_at),
            quiet_until("2026-01-16T08:00:00Z")
        );
        // A channel without quiet hours sends.
        let m = message("marketing", fr, night_in_paris);
        assert_eq!(decide(&m, &policy(""), night_in_paris), Decision::Send);
    }

    #[test]
    fn quiet_hours_deferral_past_expiry_expires() {
        let p = policy(QUIET);
        let now = utc("2026-01-15T22:00:00Z");
        let m = Message {
            expires_at: utc("2026-01-16T07:00:00Z"), // exactly the window's end
            ..message("marketing", json!({ "phone": "+33612345678" }), now)
        };
        let Decision::Defer { until, reason } = decide(&m, &p, now) else {
            panic!("not deferred");
        };
        let outcome = defer(&m, until, reason);
        assert_eq!(outcome.status(), tidings_client::Status::Expired);
        assert_eq!(outcome.reason(), "validity_passed");
        assert!(!outcome.spends_attempt());
        let m = Message {
            expires_at: until + TimeDelta::milliseconds(1),
            ..m
        };
        let outcome = defer(&m, until, reason);
        assert_eq!(
            outcome,
            Outcome::Retry {
                at: until,
                reason: "quiet_hours".into(),
                spend_attempt: false,
                detail: json!({ "until": until }),
            }
        );
    }

    fn transient() -> SendError {
        SendError::Transient {
            reason: "http_503".into(),
            detail: json!({ "status": 503 }),
        }
    }

    fn rate_limited(retry_after: Option<DateTime<Utc>>) -> SendError {
        SendError::RateLimited {
            retry_after,
            detail: json!({ "status": 429 }),
        }
    }

    #[test]
    fn after_send_error_table() {
        // backoff base 10 s: the first retry's delay is at most 10 s; unit 1.0 takes the maximum.
        let p = policy(QUIET);
        let now = utc("2026-01-15T12:00:00Z");
        let m = |attempts: i32, expires_in_ms: i64| Message {
            attempts,
            max_attempts: 3,
            expires_at: now + TimeDelta::milliseconds(expires_in_ms),
            ..message("transactional", json!({}), now)
        };
        let secs = |s: i64| now + TimeDelta::seconds(s);
        let retry = |at, reason: &str, spend_attempt, detail| Outcome::Retry {
            at,
            reason: reason.into(),
            spend_attempt,
            detail,
        };
        let cases: Vec<(&str, Message, SendError, f64, Outcome)> = vec![
            (
                "transient: backoff, attempt spent",
                m(0, 3_600_000),
                transient(),
                1.0,
                retry(secs(10), "http_503", true, json!({ "status": 503 })),
            ),
            (
                "transient: second attempt doubles the bound",
                m(1, 3_600_000),
                transient(),
                0.5,
                retry(secs(10), "http_503", true, json!({ "status": 503 })),
            ),
            (
                "transient: retry landing exactly at expires_at expires",
                m(0, 10_000),
                transient(),
                1.0,
                Outcome::Finished {
                    status: Status::Expired,
                    reason: "validity_passed".into(),
                    spend_attempt: true,
                    detail: json!({ "expires_at": secs(10), "retry_at": secs(10), "last_error": "http_503", "detail": { "status": 503 } }),
                },
            ),
            (
                "transient: a millisecond before expires_at still retries",
                m(0, 10_001),
                transient(),
                1.0,
                retry(secs(10), "http_503", true, json!({ "status": 503 })),
            ),
            (
                "transient: attempts exhausted exactly at max (third of three)",
                m(2, 3_600_000),
                transient(),
                1.0,
                Outcome::Finished {
                    status: Status::SendingFailed,
                    reason: "attempts_exhausted".into(),
                    spend_attempt: true,
                    detail: json!({ "last_error": "http_503", "detail": { "status": 503 } }),
                },
            ),
            (
                "429 without Retry-After: backoff, no attempt spent",
                m(0, 3_600_000),
                rate_limited(None),
                1.0,
                retry(secs(10), "rate_limited", false, json!({ "status": 429 })),
            ),
            (
                "429 with Retry-After earlier than the backoff: the backoff",
                m(0, 3_600_000),
                rate_limited(Some(secs(2))),
                1.0,
                retry(secs(10), "rate_limited", false, json!({ "status": 429 })),
            ),
            (
                "429 with Retry-After later than the backoff: Retry-After",
                m(0, 3_600_000),
                rate_limited(Some(secs(30))),
                1.0,
                retry(secs(30), "rate_limited", false, json!({ "status": 429 })),
            ),
            (
                "429 at max attempts spends nothing and retries (attempt 3's backoff, 40 s, beats 30 s)",
                m(2, 3_600_000),
                rate_limited(Some(secs(30))),
                1.0,
                retry(secs(40), "rate_limited", false, json!({ "status": 429 })),
            ),
            (
                "429 whose Retry-After is exactly expires_at expires, without spending an attempt",
                m(0, 30_000),
                rate_limited(Some(secs(30))),
                1.0,
                Outcome::Finished {
                    status: Status::Expired,
                    reason: "validity_passed".into(),
                    spend_attempt: false,
                    detail: json!({ "expires_at": secs(30), "deferred_until": secs(30), "deferred_for": "rate_limited" }),
                },
            ),
            (
                "permanent",
                m(0, 3_600_000),
                SendError::permanent("http_400", "bad"),
                1.0,
                Outcome::Finished {
                    status: Status::SendingFailed,
                    reason: "http_400".into(),
                    spend_attempt: true,
                    detail: json!({ "error": "bad" }),
                },
            ),
            (
                "rejected",
                m(0, 3_600_000),
                SendError::Rejected {
                    reason: "window_closed".into(),
                    detail: json!({}),
                },
                1.0,
                Outcome::Finished {
                    status: Status::Rejected,
                    reason: "window_closed".into(),
                    spend_attempt: true,
                    detail: json!({}),
                },
            ),
        ];
        for (name, m, error, unit, expected) in cases {
            assert_eq!(
                after_send_error(&m, &p, &error, now, unit).outcome,
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn a_429_pauses_the_channel_and_defers_the_message_from_one_computation() {
        let p = policy(QUIET); // backoff base 10 s
        let now = utc("2026-01-15T12:00:00Z");
        let m = message("transactional", json!({}), now);
        let secs = |s: i64| now + TimeDelta::seconds(s);
        // Retry-After 30 s: the channel pauses until then, and the message waits at least as long.
        let decided = after_send_error(&m, &p, &rate_limited(Some(secs(30))), now, 0.5);
        assert_eq!(decided.pause_channel_until, Some(secs(30)));
        let Outcome::Retry { at, .. } = decided.outcome else {
            panic!("{decided:?}");
        };
        assert_eq!(at, secs(30));
        // No Retry-After: the channel pauses for the first backoff step, whatever the jitter drew.
        for unit in [0.0, 0.3, 1.0] {
            let decided = after_send_error(&m, &p, &rate_limited(None), now, unit);
            assert_eq!(decided.pause_channel_until, Some(secs(10)), "unit {unit}");
        }
        // An expiring 429 still pauses the channel (the provider asked the whole channel to wait).
        let short = Message {
            expires_at: secs(5),
            ..m.clone()
        };
        let decided = after_send_error(&short, &p, &rate_limited(Some(secs(30))), now, 0.5);
        assert_eq!(decided.outcome.status(), Status::Expired);
        assert_eq!(decided.pause_channel_until, Some(secs(30)));
        // Nothing else pauses the channel.
        for error in [
            transient(),
            SendError::permanent("http_400", "bad"),
            SendError::Rejected {
                reason: "window_closed".into(),
                detail: json!({}),
            },
        ] {
            assert_eq!(
                after_send_error(&m, &p, &error, now, 0.5).pause_channel_until,
                None,
                "{error:?}"
            );
        }
    }

    #[test]
    fn only_capped_marketing_messages_consult_the_frequency_counter() {
        let p = policy("[frequency_cap]\nmax = 2\nper = \"1h\"");
        let cap = p.frequency_cap.unwrap();
        assert_eq!(cap.max, 2);
        let now = utc("2026-01-15T12:00:00Z");
        let capped = |use_case: &str, flag: bool| Message {
            cap_frequency: flag,
            ..message(use_case, json!({ "phone": "+33612345678" }), now)
        };
        assert_eq!(
            decide(&capped("marketing", true), &p, now),
            Decision::AdmitThenSend(cap)
        );
        assert_eq!(decide(&capped("marketing", false), &p, now), Decision::Send);
        assert_eq!(
            decide(&capped("transactional", true), &p, now),
            Decision::Send
        );
        assert_eq!(
            decide(&capped("marketing", true), &policy(""), now),
            Decision::Send
        );
        let refused = frequency_capped(cap);
        assert_eq!(refused.status(), Status::Rejected);
        assert_eq!(refused.reason(), "frequency_capped");
        assert!(!refused.spends_attempt());
        let m = capped("marketing", true);
        assert_eq!(
            frequency_check_failed(&m, now),
            Outcome::Retry {
                at: now + TimeDelta::seconds(1),
                reason: "frequency_check_failed".into(),
                spend_attempt: false,
                detail: json!({ "until": now + TimeDelta::seconds(1) }),
            }
        );
    }

    // ---- properties ----

    fn arb_policy() -> impl Strategy<Value = ChannelPolicy> {
        // Windows up to 12 h, so that every multi-zone country keeps some instant allowed everywhere.
        (0u32..24 * 60, 1u32..12 * 60, 0u8..0x80, any::<bool>()).prop_map(
            |(start, len, days, default)| {
                let t = |m: u32| format!("{:02}:{:02}", (m / 60) % 24, m % 60);
                let days: Vec<String> = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
                    .iter()
                    .enumerate()
                    .filter(|(n, _)| days & (1 << n) != 0)
                    .map(|(_, d)| format!("{d:?}"))
                    .collect();
                let default = if default {
                    "default_timezone = \"Asia/Tokyo\""
                } else {
                    ""
                };
                policy(&format!(
                    "{default}\n[quiet_hours]\nstart = \"{}\"\nend = \"{}\"\ndays = [{}]",
                    t(start),
                    t(start + len),
                    days.join(", ")
                ))
            },
        )
    }

    fn arb_recipient() -> impl Strategy<Value = Value> {
        prop::sample::select(vec![
            json!({ "phone": "+12125550123" }),
            json!({ "phone": "+61412345678" }),
            json!({ "phone": "+5511987654321" }),
            json!({ "phone": "+79123456789" }),
            json!({ "phone": "+33612345678" }),
            json!({ "phone": "+12125550123", "timezone": "Europe/Paris" }),
            json!({ "phone": "+61412345678", "timezone": "Not/AZone" }),
            json!({ "timezone": "America/St_Johns" }),
            json!({ "phone": "+80012345678" }),
            json!({}),
        ])
    }

    fn arb_now() -> impl Strategy<Value = DateTime<Utc>> {
        (1_767_225_600i64..1_830_297_600).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Never `Send` inside the recipient's quiet window (in any candidate zone) unless exempt, and a
        /// quiet-hours deferral is always to a later instant, for a held message.
        #[test]
        fn never_sent_inside_quiet_hours(
            p in arb_policy(),
            recipient in arb_recipient(),
            use_case in prop::sample::select(crate::USE_CASES.to_vec()),
            ignore in any::<bool>(),
            now in arb_now(),
        ) {
            let m = Message { ignore_quiet_hours: ignore, ..message(use_case, recipient.clone(), now) };
            let window = p.quiet_hours.as_ref().unwrap();
            let held = !ignore && window.applies_to(use_case);
            let zones = timezone::candidate_zones(&recipient, p.default_timezone);
            let quiet_somewhere = zones.iter().any(|tz| quiet_hours::next_allowed(now, &[*tz], window).is_some());
            match decide(&m, &p, now) {
                Decision::Send => prop_assert!(!held || !quiet_somewhere, "sent at {} to {}", now, recipient),
                Decision::Defer { until, reason } => {
                    prop_assert!(held);
                    prop_assert_eq!(reason, "quiet_hours");
                    prop_assert!(until > now);
                }
                Decision::Finish(o) => prop_assert!(false, "finished: {:?}", o),
                Decision::AdmitThenSend(cap) => prop_assert!(false, "no cap configured: {:?}", cap),
            }
            if ["transactional", "2fa"].contains(&use_case) {
                prop_assert_eq!(decide(&m, &p, now), Decision::Send);
            }
        }

        /// Never `Send` at or after `expires_at`.
        #[test]
        fn never_sent_when_expired(
            p in arb_policy(),
            recipient in arb_recipient(),
            use_case in prop::sample::select(crate::USE_CASES.to_vec()),
            now in arb_now(),
            expires_in in -100_000i64..100_000,
        ) {
            let m = Message {
                expires_at: now + TimeDelta::seconds(expires_in),
                ..message(use_case, recipient, now)
            };
            let decision = decide(&m, &p, now);
            if expires_in <= 0 {
                prop_assert_eq!(decision, Decision::Finish(validity::expired(m.expires_at)));
            } else if let Decision::Finish(o) = decision {
                prop_assert!(false, "finished before expiry: {:?}", o);
            }
        }

        /// Deferrals (quiet hours, any reason) and 429s never spend an attempt, expired or not.
        #[test]
        fn deferrals_never_spend_attempts(
            now in arb_now(),
            until_in in -100_000i64..200_000,
            retry_after_in in proptest::option::of(0i64..3600),
            attempts in 0i32..20,
            max_attempts in 1i32..20,
            expires_in in 1i64..100_000,
            unit in 0.0f64..=1.0,
        ) {
            let p = policy(QUIET);
            let m = Message {
                attempts,
                max_attempts,
                expires_at: now + TimeDelta::seconds(expires_in),
                ..message("marketing", json!({}), now)
            };
            let until = now + TimeDelta::seconds(until_in);
            let deferred = defer(&m, until, "quiet_hours");
            prop_assert!(!deferred.spends_attempt());
            prop_assert_eq!(deferred.status() == tidings_client::Status::Expired, until >= m.expires_at);
            let error = rate_limited(retry_after_in.map(|s| now + TimeDelta::seconds(s)));
            let o = after_send_error(&m, &p, &error, now, unit).outcome;
            prop_assert!(!o.spends_attempt());
            if let Outcome::Retry { at, .. } = o {
                prop_assert!(at < m.expires_at && at >= now);
            }
        }
    }
}

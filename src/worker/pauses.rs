//! The channel pauses this process has heard of itself. A 429 pauses its channel for the whole pool through
//! `tidings.channel_state` (every claim of every worker skips it); the executor that got the 429 also records the
//! pause here, before that write, so this process's own producers stop claiming for the channel at once instead
//! of after the database round trip. Other processes learn of it from the database. Once the row is written the
//! local record is dropped, so the row alone rules from then on (an operator's resume included).

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

/// Channel → paused until, for this process.
#[derive(Debug, Default)]
pub(crate) struct LocalPauses(Mutex<HashMap<String, DateTime<Utc>>>);

impl LocalPauses {
    /// Records that `channel` may not be claimed before `until` (a later pause wins).
    pub(crate) fn pause(&self, channel: &str, until: DateTime<Utc>) {
        let mut pauses = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let entry = pauses.entry(channel.to_owned()).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// Forgets the pause to `until` once the database holds it (a later pause recorded meanwhile stays): from
    /// then on the shared row rules, so an operator's resume takes effect here too.
    pub(crate) fn handed_over(&self, channel: &str, until: DateTime<Utc>) {
        let mut pauses = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if pauses.get(channel) == Some(&until) {
            pauses.remove(channel);
        }
    }

    /// Whether `channel` is paused at `now`.
    pub(crate) fn is_paused(&self, channel: &str, now: DateTime<Utc>) -> bool {
        let pauses = self.0.lock().unwrap_or_else(|e| e.into_inner());
        pauses.get(channel).is_some_and(|until| *until > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_holds_until_its_end_and_the_later_one_wins() {
        let p = LocalPauses::default();
        let t: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let s = |n: i64| t + chrono::Duration::seconds(n);
        assert!(!p.is_paused("sms", t));
        p.pause("sms", s(10));
        p.pause("sms", s(5));
        assert!(p.is_paused("sms", s(9)));
        assert!(!p.is_paused("sms", s(10)));
        assert!(!p.is_paused("push", s(1)));
        // Handing over a pause that a later one replaced keeps the later one.
        p.handed_over("sms", s(5));
        assert!(p.is_paused("sms", s(9)));
        p.handed_over("sms", s(10));
        assert!(!p.is_paused("sms", s(1)));
    }
}

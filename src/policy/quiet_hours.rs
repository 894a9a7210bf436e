//! Quiet hours: a channel's local-time window (`21:00`–`08:00`, optionally only on some days) during which
//! marketing-type messages wait, in the recipient's time zone(s).
//!
//! # Semantics
//!
//! - The window of a day `D` (a local date in one zone) runs from `start` on `D` to `end` on `D`, or on
//!   `D + 1` when `end` is not after `start` (the window crosses midnight). `days` lists the days a window
//!   *starts* on: with `days = ["fri"]` and `21:00`–`08:00`, Friday 21:00 to Saturday 08:00 is quiet and
//!   Saturday evening is not. No `days` means every day.
//! - Local times are turned into instants exactly, DST included:
//!   - a `start` or `end` that does not exist that day (spring-forward gap) is the first instant after the
//!     gap: a window ending at 02:30 in Europe/Paris on 2026-03-29 ends at 03:00 CEST;
//!   - a `start` or `end` that happens twice (fall-back overlap) gives the longer window: it starts at the
//!     *first* occurrence of `start` and ends at the *second* occurrence of `end`. Quiet hours protect the
//!     recipient, so the window is the smallest stretch of time containing every instant whose wall clock
//!     reads inside it, never a shorter one (a window ending at 01:30 in New York on 2026-11-01 ends at
//!     01:30 EST, not at 01:30 EDT an hour earlier, after which the clocks would read 01:00–01:30 again).
//! - With several candidate zones (a country's), an instant is allowed only when it is allowed in every
//!   zone: the quiet time is the union of every zone's windows, and [`next_allowed`] returns the end of the
//!   stretch of that union containing `now`.
//! - `transactional` and `2fa` are always exempt; `applies_to` picks the other use cases (default
//!   `marketing`, `promotional`). A message's `ignore_quiet_hours` skips the window (checked by the caller).
//!
//! # Cost
//!
//! The union of windows of a zone set is computed for a few days around `now` (a few hundred
//! `chrono-tz` look-ups for the 29 US zones) and memoized per zone set and UTC day, so the hot path is one
//! hash look-up and a binary search.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, TimeZone, Utc,
    Weekday,
};
use chrono_tz::Tz;

use super::InvalidSetting;

/// Use cases never held by quiet hours.
pub(crate) const EXEMPT_USE_CASES: &[&str] = &["transactional", "2fa"];

/// Start dates (after the UTC date of `now`) whose windows are computed at first.
const DAYS_AHEAD: u64 = 2;

/// How far ahead an instant allowed in every zone is looked for before giving up on the zone set (more
/// than a week, so that `days` patterns are covered).
const HORIZON_DAYS: u64 = 9;

/// Zone sets remembered per window before the memo is emptied.
const MEMO_CAPACITY: usize = 1024;

/// `[channels.NAME.quiet_hours]`, validated.
#[derive(Clone)]
pub(crate) struct QuietHours {
    start: NaiveTime,
    end: NaiveTime,
    /// Bit `n` (Monday = 0): a window starts on that weekday.
    days: u8,
    /// Bit `n`: `crate::USE_CASES[n]` is held.
    applies_to: u8,
    memo: Memo,
}

impl fmt::Debug for QuietHours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuietHours")
            .field("start", &self.start)
            .field("end", &self.end)
            .field("days", &format_args!("{:07b}", self.days))
            .field("applies_to", &format_args!("{:05b}", self.applies_to))
            .finish_non_exhaustive()
    }
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const EVERY_DAY: u8 = 0b111_1111;

impl QuietHours {
    /// A validated window from its settings: `start` and `end` as `"HH:MM"`, the `days` it starts on, the use
    /// cases it `applies_to`. Errors name the setting under `table` (e.g. `channels.sms.quiet_hours`).
    pub(crate) fn new(
        table: &str,
        start: &str,
        end: &str,
        days: &[String],
        applies_to: &[String],
    ) -> Result<Self, InvalidSetting> {
        let key = |k: &str| format!("{table}.{k}");
        let time = |k: &str, value: &str| {
            parse_hh_mm(value).ok_or_else(|| {
                InvalidSetting(format!(
                    "{}: must be HH:MM (00:00 to 23:59), not {value:?}",
                    key(k)
                ))
            })
        };
        let start_at = time("start", start)?;
        let end_at = time("end", end)?;
        if start_at == end_at {
            return Err(InvalidSetting(format!(
                "{}: must differ from start ({start}); a window is shorter than a day",
                key("end"),
            )));
        }
        let mut day_bits = 0;
        for (i, day) in days.iter().enumerate() {
            let n = DAY_NAMES
                .iter()
                .position(|name| day.trim().eq_ignore_ascii_case(name))
                .ok_or_else(|| {
                    InvalidSetting(format!(
                        "{}[{i}]: {day:?} is not a day (one of {})",
                        key("days"),
                        DAY_NAMES.join(", ")
                    ))
                })?;
            day_bits |= 1 << n;
        }
        let mut use_case_bits = 0;
        for use_case in applies_to {
            if EXEMPT_USE_CASES.contains(&use_case.as_str()) {
                return Err(InvalidSetting(format!(
                    "{}: {use_case} messages are always exempt from quiet hours",
                    key("applies_to")
                )));
            }
            let n = use_case_bit(use_case).ok_or_else(|| {
                InvalidSetting(format!(
                    "{}: unknown use case {use_case:?} (one of {})",
                    key("applies_to"),
                    crate::USE_CASES.join(", ")
                ))
            })?;
            use_case_bits |= 1 << n;
        }
        Ok(QuietHours {
            start: start_at,
            end: end_at,
            days: if day_bits == 0 { EVERY_DAY } else { day_bits },
            applies_to: use_case_bits,
            memo: Memo::default(),
        })
    }

    /// Whether messages of `use_case` are held (never for [`EXEMPT_USE_CASES`]).
    pub(crate) fn applies_to(&self, use_case: &str) -> bool {
        !EXEMPT_USE_CASES.contains(&use_case)
            && use_case_bit(use_case).is_some_and(|n| self.applies_to & (1 << n) != 0)
    }

    /// Local start time of the window.
    #[cfg(test)]
    fn start(&self) -> NaiveTime {
        self.start
    }

    /// Local end time of the window (not after `start`: the next day).
    #[cfg(test)]
    fn end(&self) -> NaiveTime {
        self.end
    }

    /// Whether a window starts on `day`.
    pub(crate) fn starts_on(&self, day: Weekday) -> bool {
        self.days & (1 << day.num_days_from_monday()) != 0
    }

    /// The window starting on local date `day` in `tz`, as instants (empty when DST swallows it whole).
    fn window(&self, tz: Tz, day: NaiveDate) -> Option<Interval> {
        if !self.starts_on(day.weekday()) {
            return None;
        }
        let end_day = if self.end > self.start {
            day
        } else {
            day.succ_opt()?
        };
        let start = first_instant(tz, day.and_time(self.start));
        let end = last_instant(tz, end_day.and_time(self.end));
        (start < end).then_some(Interval { start, end })
    }
}

fn use_case_bit(use_case: &str) -> Option<usize> {
    crate::USE_CASES.iter().position(|u| *u == use_case)
}

/// `"HH:MM"`, two digits each.
fn parse_hh_mm(value: &str) -> Option<NaiveTime> {
    let b = value.as_bytes();
    let digit = |i: usize| b[i].is_ascii_digit().then(|| u32::from(b[i] - b'0'));
    if b.len() != 5 || b[2] != b':' {
        return None;
    }
    let hour = digit(0)? * 10 + digit(1)?;
    let minute = digit(3)? * 10 + digit(4)?;
    NaiveTime::from_hms_opt(hour, minute, 0)
}

/// `None` when `now` is allowed in every zone of `zones`; otherwise the first instant after `now` that is
/// allowed in every zone (the end of the stretch of quiet time containing `now`).
///
/// When no instant within nine days is allowed in every zone (a window too long for a country spanning
/// many hours), the zone set is given up and only its first zone counts (`zone1970.tab` lists the most
/// populous first where geography allows), so that the message still goes out at a decent hour somewhere.
/// An empty `zones` holds nothing.
pub(crate) fn next_allowed(
    now: DateTime<Utc>,
    zones: &[Tz],
    window: &QuietHours,
) -> Option<DateTime<Utc>> {
    if zones.is_empty() {
        return None;
    }
    let day = now.date_naive();
    let timeline = window.memo.get(zones, day).unwrap_or_else(|| {
        let timeline = Arc::new(Timeline::new(zones, window, day, DAYS_AHEAD));
        window.memo.put(zones, timeline.clone());
        timeline
    });
    match timeline.quiet_until(now) {
        None => None,
        Some(end) if end < timeline.known_until => Some(end),
        // The quiet stretch runs past the computed days: look further, uncached (rare: long windows over
        // zones many hours apart).
        Some(_) => {
            for ahead in (DAYS_AHEAD + 2..=HORIZON_DAYS).step_by(2) {
                let timeline = Timeline::new(zones, window, day, ahead);
                match timeline.quiet_until(now) {
                    Some(end) if end >= timeline.known_until => continue,
                    found => return found,
                }
            }
            if zones.len() > 1 {
                next_allowed(now, &zones[..1], window)
            } else {
                // A single zone always has an allowed instant within two days; unreachable in practice.
                Some(timeline.known_until)
            }
        }
    }
}

/// A half-open stretch of time `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Interval {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

/// The quiet time of a zone set around one UTC day: the union of the windows of every zone.
#[derive(Debug)]
struct Timeline {
    /// The UTC date this timeline answers for.
    day: NaiveDate,
    /// Sorted, disjoint, non-touching stretches.
    quiet: Vec<Interval>,
    /// Every window not computed starts at or after this instant.
    known_until: DateTime<Utc>,
}

impl Timeline {
    /// The windows starting on local dates from three days before `day` to `ahead` days after it. A window
    /// starting earlier ends before `day` begins anywhere (local dates are within a day of the UTC date).
    fn new(zones: &[Tz], window: &QuietHours, day: NaiveDate, ahead: u64) -> Self {
        let first = day - chrono::Days::new(3);
        let last = day + chrono::Days::new(ahead);
        let mut windows: Vec<Interval> = zones
            .iter()
            .flat_map(|&tz| {
                first
                    .iter_days()
                    .take_while(move |d| *d <= last)
                    .filter_map(move |d| window.window(tz, d))
            })
            .collect();
        windows.sort_unstable_by_key(|w| w.start);
        let mut quiet: Vec<Interval> = Vec::with_capacity(windows.len());
        for w in windows {
            match quiet.last_mut() {
                Some(prev) if w.start <= prev.end => prev.end = prev.end.max(w.end),
                _ => quiet.push(w),
            }
        }
        // first_instant is monotonic in local time, and a later window starts at or after midnight.
        let midnight = (last + chrono::Days::new(1)).and_time(NaiveTime::MIN);
        let known_until = zones
            .iter()
            .map(|&tz| first_instant(tz, midnight))
            .min()
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        Timeline {
            day,
            quiet,
            known_until,
        }
    }

    /// The end of the quiet stretch containing `at`, if any.
    fn quiet_until(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let i = self.quiet.partition_point(|q| q.start <= at);
        let q = self.quiet.get(i.checked_sub(1)?)?;
        (at < q.end).then_some(q.end)
    }
}

/// The first instant the wall clock of `tz` reads `local`; the end of the gap when it never does.
fn first_instant(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.to_utc(),
        LocalResult::Ambiguous(a, b) => a.min(b).to_utc(),
        LocalResult::None => after_gap(tz, local),
    }
}

/// The last instant the wall clock of `tz` reads `local`; the end of the gap when it never does.
fn last_instant(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.to_utc(),
        LocalResult::Ambiguous(a, b) => a.max(b).to_utc(),
        LocalResult::None => after_gap(tz, local),
    }
}

/// The first instant after the DST gap (or other forward jump) that swallows `local`.
fn after_gap(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    chrono_tz::GapInfo::new(&local, &tz)
        .and_then(|gap| gap.end)
        .map(|t| t.to_utc())
        .or_else(|| {
            // chrono-tz knows every gap it can produce; this is a belt-and-braces minute scan.
            (1..=48 * 60).find_map(|m| {
                tz.from_local_datetime(&(local + TimeDelta::minutes(m)))
                    .earliest()
                    .map(|t| t.to_utc())
            })
        })
        .unwrap_or_else(|| local.and_utc())
}

/// Timelines of the zone sets seen recently, shared by the clones of one [`QuietHours`].
#[derive(Clone, Default)]
struct Memo(Arc<RwLock<Timelines>>);

/// The latest timeline of each zone set.
type Timelines = HashMap<Box<[Tz]>, Arc<Timeline>>;

impl Memo {
    fn get(&self, zones: &[Tz], day: NaiveDate) -> Option<Arc<Timeline>> {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        map.get(zones).filter(|t| t.day == day).cloned()
    }

    fn put(&self, zones: &[Tz], timeline: Arc<Timeline>) {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MEMO_CAPACITY && !map.contains_key(zones) {
            map.clear();
        }
        map.insert(zones.into(), timeline);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Offset;
    use chrono_tz::{America, Australia, Europe, Pacific};
    use proptest::prelude::*;

    use crate::policy::timezone::country_zones;

    fn window(start: &str, end: &str, days: &[&str]) -> QuietHours {
        QuietHours::new(
            "channels.sms.quiet_hours",
            start,
            end,
            &days.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            &["marketing".into(), "promotional".into()],
        )
        .unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// Checks `next_allowed` for each `(now, expected)`, with a fresh memo and a shared one.
    fn check(zones: &[Tz], w: &QuietHours, cases: &[(&str, Option<&str>)]) {
        for &(now, expected) in cases {
            let fresh = w.clone_without_memo();
            let got = next_allowed(utc(now), zones, &fresh);
            assert_eq!(got, expected.map(utc), "now {now} in {zones:?}");
            assert_eq!(next_allowed(utc(now), zones, w), got, "memoized, now {now}");
        }
    }

    impl QuietHours {
        fn clone_without_memo(&self) -> Self {
            QuietHours {
                memo: Memo::default(),
                ..self.clone()
            }
        }
    }

    #[test]
    fn config_errors_name_the_key() {
        let err = |start: &str, end: &str, days: &[&str], applies_to: &[&str]| {
            QuietHours::new(
                "channels.sms.quiet_hours",
                start,
                end,
                &days.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
                &applies_to.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            )
            .unwrap_err()
            .to_string()
        };
        let m = ["marketing"];
        for bad in [
            "9:00", "24:00", "21:60", "21-00", "", "21:00:00", "ab:cd", " 21:00", "+1:00",
        ] {
            assert!(
                err(bad, "08:00", &[], &m)
                    .contains("channels.sms.quiet_hours.start: must be HH:MM"),
                "{bad:?}"
            );
            assert!(
                err("21:00", bad, &[], &m).contains("channels.sms.quiet_hours.end: must be HH:MM"),
                "{bad:?}"
            );
        }
        assert!(
            err("21:00", "21:00", &[], &m).contains("channels.sms.quiet_hours.end: must differ")
        );
        assert!(
            err("21:00", "08:00", &["mon", "funday"], &m)
                .contains("channels.sms.quiet_hours.days[1]: \"funday\" is not a day")
        );
        assert!(
            err("21:00", "08:00", &[], &["weekly"])
                .contains("channels.sms.quiet_hours.applies_to: unknown use case \"weekly\"")
        );
        for exempt in EXEMPT_USE_CASES {
            assert!(
                err("21:00", "08:00", &[], &[exempt])
                    .contains("channels.sms.quiet_hours.applies_to: ")
            );
        }
    }

    #[test]
    fn config_accepted() {
        let w = window("21:00", "08:00", &["Mon", " fri "]);
        assert_eq!(w.start(), NaiveTime::from_hms_opt(21, 0, 0).unwrap());
        assert_eq!(w.end(), NaiveTime::from_hms_opt(8, 0, 0).unwrap());
        assert!(w.starts_on(Weekday::Mon) && w.starts_on(Weekday::Fri));
        assert!(!w.starts_on(Weekday::Sat));
        let every = window("00:00", "23:59", &[]);
        assert!(
            [Weekday::Mon, Weekday::Sun]
                .iter()
                .all(|d| every.starts_on(*d))
        );
        assert!(w.applies_to("marketing") && w.applies_to("promotional"));
        for other in ["transactional", "2fa", "conversational", "unknown"] {
            assert!(!w.applies_to(other), "{other}");
        }
    }

    #[test]
    fn simple_windows_in_utc() {
        let z = [Tz::UTC];
        // Crossing midnight, every day.
        check(
            &z,
            &window("21:00", "08:00", &[]),
            &[
                ("2026-06-10T20:59:59Z", None),
                ("2026-06-10T21:00:00Z", Some("2026-06-11T08:00:00Z")),
                ("2026-06-10T23:59:59Z", Some("2026-06-11T08:00:00Z")),
                ("2026-06-11T00:00:00Z", Some("2026-06-11T08:00:00Z")),
                ("2026-06-11T07:59:59.999Z", Some("2026-06-11T08:00:00Z")),
                ("2026-06-11T08:00:00Z", None),
                ("2026-06-11T12:00:00Z", None),
            ],
        );
        // Same-day window.
        check(
            &z,
            &window("12:00", "14:00", &[]),
            &[
                ("2026-06-10T11:59:59Z", None),
                ("2026-06-10T12:00:00Z", Some("2026-06-10T14:00:00Z")),
                ("2026-06-10T14:00:00Z", None),
            ],
        );
        // Ending at midnight.
        check(
            &z,
            &window("22:00", "00:00", &[]),
            &[
                ("2026-06-10T22:30:00Z", Some("2026-06-11T00:00:00Z")),
                ("2026-06-11T00:00:00Z", None),
            ],
        );
    }

    #[test]
    fn days_are_the_days_a_window_starts_on() {
        // 2026-06-12 is a Friday.
        check(
            &[Tz::UTC],
            &window("21:00", "08:00", &["fri"]),
            &[
                ("2026-06-11T23:00:00Z", None), // Thursday night
                ("2026-06-12T20:59:00Z", None), // Friday evening
                ("2026-06-12T21:00:00Z", Some("2026-06-13T08:00:00Z")), // Friday night
                ("2026-06-13T03:00:00Z", Some("2026-06-13T08:00:00Z")), // started on Friday
                ("2026-06-13T08:00:00Z", None),
                ("2026-06-13T22:00:00Z", None), // Saturday night
                ("2026-06-14T03:00:00Z", None),
                ("2026-06-19T22:00:00Z", Some("2026-06-20T08:00:00Z")), // next Friday
            ],
        );
        check(
            &[Tz::UTC],
            &window("12:00", "14:00", &["mon", "wed"]),
            &[
                ("2026-06-15T13:00:00Z", Some("2026-06-15T14:00:00Z")), // Monday
                ("2026-06-16T13:00:00Z", None),                         // Tuesday
                ("2026-06-17T12:00:00Z", Some("2026-06-17T14:00:00Z")), // Wednesday
            ],
        );
    }

    #[test]
    fn paris_dst_nights_2026() {
        let w = window("22:00", "07:00", &[]);
        let z = [Europe::Paris];
        check(
            &z,
            &w,
            &[
                // Spring forward, Sunday 2026-03-29 02:00 CET -> 03:00 CEST (01:00 UTC): a 8-hour night.
                ("2026-03-28T20:59:59Z", None), // 21:59:59 CET
                ("2026-03-28T21:00:00Z", Some("2026-03-29T05:00:00Z")), // 22:00 CET -> 07:00 CEST
                ("2026-03-29T00:59:59Z", Some("2026-03-29T05:00:00Z")), // 01:59:59 CET
                ("2026-03-29T01:00:00Z", Some("2026-03-29T05:00:00Z")), // 03:00 CEST
                ("2026-03-29T04:59:59Z", Some("2026-03-29T05:00:00Z")),
                ("2026-03-29T05:00:00Z", None), // 07:00 CEST
                ("2026-03-29T19:59:59Z", None), // 21:59:59 CEST
                ("2026-03-29T20:00:00Z", Some("2026-03-30T05:00:00Z")),
                // Fall back, Sunday 2026-10-25 03:00 CEST -> 02:00 CET (01:00 UTC): a 10-hour night.
                ("2026-10-24T19:59:59Z", None), // 21:59:59 CEST
                ("2026-10-24T20:00:00Z", Some("2026-10-25T06:00:00Z")), // 22:00 CEST -> 07:00 CET
                ("2026-10-25T00:30:00Z", Some("2026-10-25T06:00:00Z")), // 02:30 CEST
                ("2026-10-25T01:30:00Z", Some("2026-10-25T06:00:00Z")), // 02:30 CET
                ("2026-10-25T05:59:59Z", Some("2026-10-25T06:00:00Z")),
                ("2026-10-25T06:00:00Z", None), // 07:00 CET
                ("2026-10-25T20:59:59Z", None), // 21:59:59 CET
                ("2026-10-25T21:00:00Z", Some("2026-10-26T06:00:00Z")),
            ],
        );
    }

    #[test]
    fn new_york_dst_nights_2026() {
        let w = window("22:00", "07:00", &[]);
        let z = [America::New_York];
        check(
            &z,
            &w,
            &[
                // Spring forward, Sunday 2026-03-08 02:00 EST -> 03:00 EDT (07:00 UTC).
                ("2026-03-08T02:59:59Z", None), // 21:59:59 EST
                ("2026-03-08T03:00:00Z", Some("2026-03-08T11:00:00Z")), // 22:00 EST -> 07:00 EDT
                ("2026-03-08T06:59:59Z", Some("2026-03-08T11:00:00Z")), // 01:59:59 EST
                ("2026-03-08T07:00:00Z", Some("2026-03-08T11:00:00Z")), // 03:00 EDT
                ("2026-03-08T11:00:00Z", None),
                ("2026-03-09T02:00:00Z", Some("2026-03-09T11:00:00Z")), // 22:00 EDT
                // Fall back, Sunday 2026-11-01 02:00 EDT -> 01:00 EST (06:00 UTC).
                ("2026-11-01T01:59:59Z", None), // 21:59:59 EDT
                ("2026-11-01T02:00:00Z", Some("2026-11-01T12:00:00Z")), // 22:00 EDT -> 07:00 EST
                ("2026-11-01T05:30:00Z", Some("2026-11-01T12:00:00Z")), // 01:30 EDT
                ("2026-11-01T06:30:00Z", Some("2026-11-01T12:00:00Z")), // 01:30 EST
                ("2026-11-01T12:00:00Z", None),
                ("2026-11-02T03:00:00Z", Some("2026-11-02T12:00:00Z")), // 22:00 EST
            ],
        );
    }

    #[test]
    fn gap_ends_land_on_the_first_instant_after_the_gap() {
        // 02:30 does not exist in Paris on 2026-03-29: the window ends at 03:00 CEST (01:00 UTC).
        check(
            &[Europe::Paris],
            &window("22:00", "02:30", &[]),
            &[
                ("2026-03-29T00:59:59Z", Some("2026-03-29T01:00:00Z")),
                ("2026-03-29T01:00:00Z", None),
                ("2026-03-30T00:29:59Z", Some("2026-03-30T00:30:00Z")), // next night: 02:30 CEST
            ],
        );
        // A window starting in the gap starts at 03:00 CEST.
        check(
            &[Europe::Paris],
            &window("02:30", "06:00", &[]),
            &[
                ("2026-03-29T00:59:59Z", None), // 01:59:59 CET
                ("2026-03-29T01:00:00Z", Some("2026-03-29T04:00:00Z")),
            ],
        );
        // A window entirely inside the gap vanishes that night.
        check(
            &[Europe::Paris],
            &window("02:10", "02:50", &[]),
            &[
                ("2026-03-29T00:59:59Z", None),
                ("2026-03-29T01:00:00Z", None),
                ("2026-03-30T00:20:00Z", Some("2026-03-30T00:50:00Z")),
            ],
        );
    }

    #[test]
    fn overlaps_give_the_longer_window() {
        // 02:30 happens twice in Paris on 2026-10-25 (00:30 UTC in CEST, 01:30 UTC in CET): the window
        // ends at the second one, even though the clock read 02:30 an hour before.
        check(
            &[Europe::Paris],
            &window("22:00", "02:30", &[]),
            &[
                ("2026-10-25T00:29:59Z", Some("2026-10-25T01:30:00Z")),
                ("2026-10-25T00:45:00Z", Some("2026-10-25T01:30:00Z")), // 02:45 CEST
                ("2026-10-25T01:15:00Z", Some("2026-10-25T01:30:00Z")), // 02:15 CET
                ("2026-10-25T01:30:00Z", None),
            ],
        );
        // A window starting at 02:30 starts at the first one.
        check(
            &[Europe::Paris],
            &window("02:30", "06:00", &[]),
            &[
                ("2026-10-25T00:29:59Z", None),
                ("2026-10-25T00:30:00Z", Some("2026-10-25T05:00:00Z")),
                ("2026-10-25T01:30:00Z", Some("2026-10-25T05:00:00Z")),
            ],
        );
        // New York, 01:30 on 2026-11-01: 05:30 UTC (EDT) then 06:30 UTC (EST).
        check(
            &[America::New_York],
            &window("22:00", "01:30", &[]),
            &[
                ("2026-11-01T05:45:00Z", Some("2026-11-01T06:30:00Z")),
                ("2026-11-01T06:30:00Z", None),
            ],
        );
    }

    #[test]
    fn us_number_waits_for_every_us_zone() {
        let us = country_zones(*b"US").unwrap();
        let w = window("21:00", "08:00", &[]);
        // In January: EST -5 … HST -10. Allowed in all only from 08:00 HST (18:00 UTC) to 21:00 EST
        // (02:00 UTC).
        check(
            &us,
            &w,
            &[
                ("2026-01-15T14:00:00Z", Some("2026-01-15T18:00:00Z")), // 09:00 EST, 04:00 HST
                ("2026-01-15T17:59:59Z", Some("2026-01-15T18:00:00Z")),
                ("2026-01-15T18:00:00Z", None),
                ("2026-01-16T01:59:59Z", None), // 20:59:59 EST
                // 21:00 EST: the windows of every zone chain into one, ending at 08:00 HST.
                ("2026-01-16T02:00:00Z", Some("2026-01-16T18:00:00Z")),
                ("2026-01-16T10:00:00Z", Some("2026-01-16T18:00:00Z")),
            ],
        );
        // On the New York spring-forward night the chain still ends at 08:00 HST (18:00 UTC).
        check(
            &us,
            &w,
            &[("2026-03-08T06:30:00Z", Some("2026-03-08T18:00:00Z"))],
        );
        // In July: EDT -4 … HST -10: from 18:00 UTC to 01:00 UTC.
        check(
            &us,
            &w,
            &[
                ("2026-07-15T00:59:59Z", None),
                ("2026-07-15T01:00:00Z", Some("2026-07-15T18:00:00Z")),
            ],
        );
        assert!(us.contains(&Pacific::Honolulu));
    }

    #[test]
    fn australian_number_waits_for_every_australian_zone() {
        let au = country_zones(*b"AU").unwrap();
        let w = window("21:00", "08:00", &[]);
        // In January (southern summer): Sydney/Lord Howe +11 … Perth +8. Allowed in all from 08:00 AWST
        // (00:00 UTC) to 21:00 AEDT (10:00 UTC).
        check(
            &au,
            &w,
            &[
                ("2026-01-15T09:59:59Z", None),
                ("2026-01-15T10:00:00Z", Some("2026-01-16T00:00:00Z")),
                ("2026-01-15T23:00:00Z", Some("2026-01-16T00:00:00Z")),
                ("2026-01-16T00:00:00Z", None),
            ],
        );
        // Sydney alone would have allowed 07:00 AEDT.
        check(&[Australia::Sydney], &w, &[("2026-01-15T21:00:00Z", None)]);
    }

    #[test]
    fn impossible_zone_sets_fall_back_to_the_first_zone() {
        // Russia spans UTC+2 to UTC+12: a 16-hour window leaves no instant allowed everywhere.
        let ru = country_zones(*b"RU").unwrap();
        let w = window("18:00", "10:00", &[]);
        let now = utc("2026-01-15T12:00:00Z"); // 14:00 in Kaliningrad: allowed there.
        assert_eq!(ru[0], Europe::Kaliningrad);
        assert_eq!(next_allowed(now, &ru, &w), None);
        let now = utc("2026-01-15T17:00:00Z"); // 19:00 in Kaliningrad
        assert_eq!(
            next_allowed(now, &ru, &w),
            Some(utc("2026-01-16T08:00:00Z")) // 10:00 in Kaliningrad
        );
    }

    #[test]
    fn no_zones_hold_nothing() {
        assert_eq!(
            next_allowed(
                utc("2026-01-15T23:00:00Z"),
                &[],
                &window("21:00", "08:00", &[])
            ),
            None
        );
    }

    // ---- properties ----

    fn sample_zone_sets() -> Vec<Vec<Tz>> {
        let mut sets: Vec<Vec<Tz>> = [
            Europe::Paris,
            Europe::London,
            America::New_York,
            America::Los_Angeles,
            America::Santiago,
            America::St_Johns,
            Australia::Sydney,
            Australia::Lord_Howe,
            Australia::Adelaide,
            chrono_tz::Asia::Kolkata,
            chrono_tz::Asia::Kathmandu,
            chrono_tz::Asia::Tehran,
            chrono_tz::Africa::Casablanca,
            Pacific::Chatham,
            Pacific::Apia,
            Tz::UTC,
        ]
        .into_iter()
        .map(|tz| vec![tz])
        .collect();
        for country in [*b"US", *b"AU", *b"BR", *b"RU", *b"CA", *b"MX"] {
            sets.push(country_zones(country).unwrap().to_vec());
        }
        sets
    }

    /// A window and whether it is short enough (≤ 12 h) for every sample zone set to allow some instant.
    fn arb_window() -> impl Strategy<Value = QuietHours> {
        (0u32..24 * 60, 1u32..12 * 60, 0u8..=EVERY_DAY).prop_map(|(start, len, days)| {
            let t = |m: u32| format!("{:02}:{:02}", (m / 60) % 24, m % 60);
            let days: Vec<&str> = (0..7)
                .filter(|n| days & (1 << n) != 0)
                .map(|n| DAY_NAMES[n])
                .collect();
            window(&t(start), &t(start + len), &days)
        })
    }

    fn arb_instant() -> impl Strategy<Value = DateTime<Utc>> {
        // 2026-01-01 .. 2028-01-01, to the second, with a bias towards DST change nights.
        let plain =
            (1_767_225_600i64..1_830_297_600).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap());
        let dst_nights = prop::sample::select(vec![
            "2026-03-08T00:00:00Z",
            "2026-03-29T00:00:00Z",
            "2026-04-05T00:00:00Z",
            "2026-10-04T00:00:00Z",
            "2026-10-25T00:00:00Z",
            "2026-11-01T00:00:00Z",
        ])
        .prop_flat_map(|night| {
            (0i64..36 * 3600)
                .prop_map(move |s| utc(night) - TimeDelta::hours(6) + TimeDelta::seconds(s))
        });
        prop_oneof![plain, dst_nights]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// The result is after `now`, allowed in every zone, and everything between is quiet somewhere.
        #[test]
        fn next_allowed_is_the_first_instant_allowed_everywhere(
            zones in prop::sample::select(sample_zone_sets()),
            w in arb_window(),
            now in arb_instant(),
            frac in 0.0f64..1.0,
        ) {
            if let Some(at) = next_allowed(now, &zones, &w) {
                prop_assert!(at > now);
                for &tz in &zones {
                    prop_assert_eq!(next_allowed(at, &[tz], &w), None, "{} quiet at {}", tz, at);
                }
                let between = now + TimeDelta::milliseconds(((at - now).num_milliseconds() as f64 * frac) as i64);
                prop_assert!(next_allowed(between, &zones, &w).is_some(), "{} allowed before {}", between, at);
            }
        }

        /// Away from offset changes, quiet means the wall clock reads inside a window that started on a
        /// listed day.
        #[test]
        fn matches_the_wall_clock_away_from_offset_changes(
            zones in prop::sample::select(sample_zone_sets()),
            w in arb_window(),
            now in arb_instant(),
        ) {
            let tz = zones[0];
            let offset = |t: DateTime<Utc>| t.with_timezone(&tz).offset().fix();
            let steady = [-30i64, 30].iter().all(|h| offset(now + TimeDelta::hours(*h)) == offset(now));
            prop_assume!(steady);
            let local = now.with_timezone(&tz).naive_local();
            let time = local.time();
            let crosses = w.end <= w.start;
            let wall_quiet = if crosses {
                (time >= w.start && w.starts_on(local.weekday()))
                    || (time < w.end && w.starts_on(local.weekday().pred()))
            } else {
                time >= w.start && time < w.end && w.starts_on(local.weekday())
            };
            prop_assert_eq!(next_allowed(now, &[tz], &w).is_some(), wall_quiet, "{} at {}", tz, local);
        }
    }
}

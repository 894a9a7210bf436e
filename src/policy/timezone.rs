//! The recipient's candidate time zones, for quiet hours.
//!
//! In order: the explicit `recipient.timezone` (an IANA name); else every zone of the country of
//! `recipient.phone` (E.164); else the channel's `default_timezone`; else UTC. A country with several zones
//! (US, Australia, Brazil, Russia, …) yields all of them, and quiet hours then allow a send only when it is
//! allowed in every one.
//!
//! # Where the country → zones mapping comes from
//!
//! From the tz database's own `zone1970.tab` (the maintained table tzdb publishes for exactly this purpose),
//! embedded verbatim as `zone1970.tab` beside this file. We found no maintained crate that exposes it:
//! `chrono-tz` (0.10) neither ships nor compiles the table, `tzdb`/`jiff` ship compiled zones only, and the
//! one crate that embeds it (`timezone-data`, 0.2) is a young single-author crate that would add a second
//! 2.5 MB copy of the whole tz database for this one table. A build script reading the system's tzdata was
//! ruled out too: builds would then depend on the build machine's tzdata release. The copy here is the tzdata release
//! `chrono-tz` compiles in ([`chrono_tz::IANA_TZDB_VERSION`]); a test fails when the two drift apart, so
//! whoever bumps `chrono-tz` refreshes the table too (from any tzdata release, e.g. Debian's
//! `/usr/share/zoneinfo/zone1970.tab`).
//!
//! # Cost
//!
//! Nothing here runs for use cases exempt from quiet hours (the caller checks the use case first). The
//! table is parsed once per process. Phone numbers whose calling code belongs to a single region (most of
//! the world) are resolved from the calling code alone, without the `phonenumber` parser; only shared
//! calling codes (`+1`, `+7`, `+44`, …) need the full parse (region patterns are regular expressions behind
//! a global lock in `phonenumber`), and those results are memoized in a bounded process-wide map.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::{LazyLock, RwLock};

use chrono_tz::Tz;
use serde_json::Value;

/// The tzdata release of the embedded `zone1970.tab` (the test below holds it equal to chrono-tz's).
#[cfg(test)]
const ZONE1970_TAB_VERSION: &str = "2025b";

const ZONE1970_TAB: &str = include_str!("zone1970.tab");

/// Most entries kept by the memo of shared-calling-code numbers before it is emptied.
const PHONE_MEMO_CAPACITY: usize = 1 << 16;

/// An ISO 3166-1 alpha-2 country code, upper case (`*b"US"`).
pub(crate) type Country = [u8; 2];

/// The candidate zones of a recipient: one explicit zone, or every zone of a country. Derefs to `[Tz]`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Zones {
    /// A single zone: the recipient's own, the channel's default, or UTC.
    One([Tz; 1]),
    /// Every zone of a country, from `zone1970.tab`, in the table's order.
    Country {
        /// Its zones (never empty).
        zones: &'static [Tz],
    },
}

impl Zones {
    /// A single zone.
    pub(crate) fn one(tz: Tz) -> Self {
        Zones::One([tz])
    }
}

impl Deref for Zones {
    type Target = [Tz];

    fn deref(&self) -> &[Tz] {
        match self {
            Zones::One(tz) => tz,
            Zones::Country { zones, .. } => zones,
        }
    }
}

impl PartialEq for Zones {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Zones {}

impl Hash for Zones {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (**self).hash(state);
    }
}

/// The candidate zones of `recipient` (a channel-kind recipient object with optional `timezone` and
/// `phone` strings). An unknown explicit zone is ignored, as is a phone number whose country cannot be
/// told; `default` is the channel's `default_timezone`.
pub(crate) fn candidate_zones(recipient: &Value, default: Option<Tz>) -> Zones {
    let field = |key: &str| recipient.get(key).and_then(Value::as_str);
    if let Some(tz) = field("timezone").and_then(|name| name.trim().parse::<Tz>().ok()) {
        return Zones::one(tz);
    }
    if let Some(zones) = field("phone")
        .and_then(phone_country)
        .and_then(country_zones)
    {
        return zones;
    }
    Zones::one(default.unwrap_or(Tz::UTC))
}

/// The zones of a country (`*b"US"`), or `None` when `zone1970.tab` does not list it.
pub(crate) fn country_zones(code: Country) -> Option<Zones> {
    COUNTRY_ZONES.get(&code).map(|zones| Zones::Country {
        zones: zones.as_ref(),
    })
}

/// The country of an E.164 number (`+14155550100`), or `None` when it is not E.164 or its region cannot
/// be told (non-geographic codes such as `+800`, numbers matching no region of a shared code).
pub(crate) fn phone_country(phone: &str) -> Option<Country> {
    let digits = phone.trim().strip_prefix('+')?;
    // E.164: at most 15 digits, country code included.
    if !(2..=15).contains(&digits.len())
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || digits.starts_with('0')
    {
        return None;
    }
    // Calling codes are prefix-free (ITU-T E.164), so the first 1-3 digits that name one are it.
    let calling = (1..=digits.len().min(3))
        .find_map(|n| CALLING_CODES.get(&digits[..n].parse::<u16>().ok()?))?;
    match calling {
        Calling::Region(code) => Some(*code),
        Calling::NonGeographic => None,
        Calling::Shared => parse_shared(digits),
    }
}

/// What a calling code tells about the region.
#[derive(Debug)]
enum Calling {
    /// One region (`+33` → FR).
    Region(Country),
    /// Several regions (`+1`, `+7`, `+44`, …): the national number decides.
    Shared,
    /// A non-geographic code (`+800`, `+882`, …).
    NonGeographic,
}

/// Calling code → region, from `phonenumber`'s metadata, built once.
static CALLING_CODES: LazyLock<HashMap<u16, Calling>> = LazyLock::new(|| {
    let mut regions: HashMap<u16, Vec<&str>> = HashMap::new();
    for meta in phonenumber::metadata::DATABASE.iter() {
        regions
            .entry(meta.country_code())
            .or_default()
            .push(meta.id());
    }
    regions
        .into_iter()
        .map(|(code, ids)| {
            let calling = match ids.as_slice() {
                [id] => country_code(id).map_or(Calling::NonGeographic, Calling::Region),
                _ => Calling::Shared,
            };
            (code, calling)
        })
        .collect()
});

/// `"US"` → `*b"US"`; `None` for `"001"` (non-geographic) and anything else that is not two letters.
fn country_code(id: &str) -> Option<Country> {
    match id.as_bytes() {
        &[a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => Some([a, b]),
        _ => None,
    }
}

/// Memo of [`parse_shared`]: E.164 digits → country.
static PHONE_MEMO: LazyLock<RwLock<HashMap<Box<str>, Option<Country>>>> =
    LazyLock::new(Default::default);

/// The region of a number under a shared calling code, by `phonenumber`'s full parse (memoized).
fn parse_shared(digits: &str) -> Option<Country> {
    if let Some(hit) = PHONE_MEMO
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(digits)
    {
        return *hit;
    }
    let country = phonenumber::parse(None, format!("+{digits}"))
        .ok()
        .and_then(|number| number.country().id())
        .and_then(|id| country_code(id.as_ref()));
    let mut memo = PHONE_MEMO.write().unwrap_or_else(|e| e.into_inner());
    if memo.len() >= PHONE_MEMO_CAPACITY {
        // Emptying is cheaper and simpler than an LRU; the memo refills with the numbers in use.
        memo.clear();
    }
    memo.insert(digits.into(), country);
    country
}

/// Country → zones, parsed once from `zone1970.tab`.
static COUNTRY_ZONES: LazyLock<HashMap<Country, Box<[Tz]>>> = LazyLock::new(|| {
    let mut map: HashMap<Country, Vec<Tz>> = HashMap::new();
    for (countries, tz) in zone1970_rows() {
        // A zone chrono-tz does not know would be a version skew; the tests catch it, production skips it.
        let Ok(tz) = tz.parse::<Tz>() else { continue };
        for code in countries.split(',').filter_map(country_code) {
            map.entry(code).or_default().push(tz);
        }
    }
    map.into_iter()
        .map(|(code, zones)| (code, zones.into_boxed_slice()))
        .collect()
});

/// The `(countries, zone name)` columns of every row of `zone1970.tab`.
fn zone1970_rows() -> impl Iterator<Item = (&'static str, &'static str)> {
    ZONE1970_TAB
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let mut cols = line.split('\t');
            let countries = cols.next()?;
            let _coordinates = cols.next()?;
            Some((countries, cols.next()?))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{America, Asia, Australia, Europe};
    use serde_json::json;

    fn zones_of(recipient: Value, default: Option<Tz>) -> Vec<Tz> {
        candidate_zones(&recipient, default).to_vec()
    }

    #[test]
    fn embedded_table_matches_chrono_tz() {
        assert_eq!(
            ZONE1970_TAB_VERSION,
            chrono_tz::IANA_TZDB_VERSION,
            "chrono-tz was bumped: refresh src/policy/zone1970.tab from the same tzdata release"
        );
        let rows: Vec<_> = zone1970_rows().collect();
        assert!(rows.len() > 300, "{} rows", rows.len());
        for (countries, name) in rows {
            assert!(name.parse::<Tz>().is_ok(), "{name} unknown to chrono-tz");
            for code in countries.split(',') {
                assert!(
                    country_code(code).is_some(),
                    "bad country {code:?} for {name}"
                );
            }
        }
    }

    #[test]
    fn country_zones_from_the_table() {
        let us = country_zones(*b"US").unwrap();
        assert_eq!(us[0], America::New_York);
        for tz in [
            America::Chicago,
            America::Denver,
            America::Phoenix,
            America::Los_Angeles,
        ] {
            assert!(us.contains(&tz), "{tz}");
        }
        assert!(us.contains(&chrono_tz::Pacific::Honolulu));
        let au = country_zones(*b"AU").unwrap();
        for tz in [
            Australia::Sydney,
            Australia::Perth,
            Australia::Adelaide,
            Australia::Lord_Howe,
        ] {
            assert!(au.contains(&tz), "{tz}");
        }
        assert!(country_zones(*b"RU").unwrap().len() > 15);
        assert!(country_zones(*b"BR").unwrap().contains(&America::Sao_Paulo));
        // Rows shared by several countries count for each.
        assert_eq!(country_zones(*b"FR").unwrap().to_vec(), [Europe::Paris]);
        assert_eq!(country_zones(*b"MC").unwrap().to_vec(), [Europe::Paris]);
        assert!(country_zones(*b"ZZ").is_none());
    }

    #[test]
    fn phone_country_by_calling_code_and_region() {
        for (phone, country) in [
            ("+33612345678", Some(*b"FR")),
            ("+4915112345678", Some(*b"DE")),
            ("+61412345678", Some(*b"AU")),
            ("+5511987654321", Some(*b"BR")),
            ("+79123456789", Some(*b"RU")),
            ("+77012345678", Some(*b"KZ")), // shared +7, told apart by the national number
            ("+12125550123", Some(*b"US")),
            ("+14165550123", Some(*b"CA")),
            ("+18765551234", Some(*b"JM")),
            ("+442079460958", Some(*b"GB")),
            ("+441481256789", Some(*b"GG")), // +44 shared with Guernsey
            (" +33612345678 ", Some(*b"FR")),
            ("+80012345678", None), // non-geographic
            ("33612345678", None),  // not E.164
            ("+33 6 12 34 56 78", None),
            ("+1", None),
            ("+1234567890123456", None), // 16 digits
            ("+", None),
            ("+0133612345678", None), // no calling code starts with 0
            ("+33", Some(*b"FR")),    // too short to be a number, but the country is known
            ("+99", None),            // no calling code (and shorter than the longest one)
        ] {
            assert_eq!(phone_country(phone), country, "{phone:?}");
            // The memoized answer is the same.
            assert_eq!(phone_country(phone), country, "{phone:?} (memo)");
        }
    }

    #[test]
    fn candidate_zones_in_order() {
        let paris = Some(Europe::Paris);
        // Explicit zone first, even with a phone of another country.
        assert_eq!(
            zones_of(
                json!({"timezone": "Asia/Tokyo", "phone": "+12125550123"}),
                paris
            ),
            [Asia::Tokyo]
        );
        // An unknown explicit zone falls back to the phone's country.
        assert_eq!(
            zones_of(
                json!({"timezone": "Mars/Olympus", "phone": "+33612345678"}),
                None
            ),
            [Europe::Paris]
        );
        assert_eq!(
            zones_of(json!({"timezone": 7, "phone": "+33612345678"}), None),
            [Europe::Paris]
        );
        // A +1 US number without a zone: every US zone.
        let us = zones_of(json!({"phone": "+12125550123"}), paris);
        assert_eq!(us, country_zones(*b"US").unwrap().to_vec());
        assert!(us.len() > 20);
        // An Australian number: every Australian zone.
        assert_eq!(
            zones_of(json!({"phone": "+61412345678"}), None),
            country_zones(*b"AU").unwrap().to_vec()
        );
        // No usable phone: the channel's default, else UTC.
        assert_eq!(
            zones_of(json!({"phone": "+80012345678"}), paris),
            [Europe::Paris]
        );
        assert_eq!(
            zones_of(json!({"email": "a@example.com"}), paris),
            [Europe::Paris]
        );
        assert_eq!(zones_of(json!({}), None), [Tz::UTC]);
        assert_eq!(zones_of(json!("not an object"), None), [Tz::UTC]);
    }
}

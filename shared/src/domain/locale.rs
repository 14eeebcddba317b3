//! How people are spoken to: the language of pages and emails, and the time zone their times are in.

use super::InvalidValue;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A language pages and emails are written in. The people behind the connections are mostly in the
/// Netherlands and Belgium, so Dutch, with English for everyone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Locale {
    Dutch,
    English,
}

impl Locale {
    pub const ALL: [Locale; 2] = [Locale::Dutch, Locale::English];

    /// Reads a language tag: `nl`, `nl-NL`, `nl-BE`, `en`, `en-GB`, ... (case-insensitive). Only the
    /// primary language counts: Flemish readers get the same Dutch as readers in the Netherlands.
    pub fn parse(tag: &str) -> Result<Self, InvalidValue> {
        let tag = tag.trim();
        let primary = tag.split(['-', '_']).next().unwrap_or_default();
        match primary.to_ascii_lowercase().as_str() {
            "nl" => Ok(Self::Dutch),
            "en" => Ok(Self::English),
            _ => Err(InvalidValue::new(
                "locale",
                format!(
                    "{tag:?} is not a language the pages and emails are written in: use \"nl\" \
                     (Dutch) or \"en\" (English)"
                ),
            )),
        }
    }

    /// The first language of an HTTP `Accept-Language` header that pages are written in, by the
    /// header's preference weights (`q`); `None` when it names none of them.
    pub fn from_accept_language(header: &str) -> Option<Self> {
        let mut offered: Vec<(f32, usize, Self)> = header
            .split(',')
            .enumerate()
            .filter_map(|(position, item)| {
                let mut parts = item.split(';');
                let locale = Self::parse(parts.next()?).ok()?;
                let weight = parts
                    .filter_map(|p| p.trim().strip_prefix("q="))
                    .find_map(|q| q.trim().parse::<f32>().ok())
                    .unwrap_or(1.0);
                (weight > 0.0).then_some((weight, position, locale))
            })
            .collect();
        // Highest weight first; among equal weights, the order the browser wrote them in.
        offered.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        offered.first().map(|&(_, _, locale)| locale)
    }

    /// The tag stored and shown: `nl` or `en`.
    pub fn tag(self) -> &'static str {
        match self {
            Self::Dutch => "nl",
            Self::English => "en",
        }
    }
}

impl fmt::Display for Locale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tag())
    }
}

impl FromStr for Locale {
    type Err = InvalidValue;
    fn from_str(value: &str) -> Result<Self, InvalidValue> {
        Self::parse(value)
    }
}

impl TryFrom<String> for Locale {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, InvalidValue> {
        Self::parse(&value)
    }
}

impl From<Locale> for String {
    fn from(locale: Locale) -> String {
        locale.tag().to_owned()
    }
}

/// An IANA time zone (`Europe/Amsterdam`, `Europe/Brussels`, `UTC`), in which a person's times are
/// shown, summer time included. Held by its canonical name; the rules come from the tz database
/// compiled into the binary (jiff's compressed bundle), so Lambda needs no zoneinfo of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub struct TimeZone(&'static str);

// By hand: a derived impl would borrow the `&'static str` from the input and so demand 'static input.
impl<'de> Deserialize<'de> for TimeZone {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Self::parse(&name).map_err(serde::de::Error::custom)
    }
}

/// A moment as a clock in one time zone shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTime {
    pub year: i16,
    pub month: i8,
    pub day: i8,
    pub hour: i8,
    pub minute: i8,
    /// The zone's abbreviation at that moment ("CET", "CEST"), or its offset ("-03") where the tz
    /// database has no letters for it.
    pub abbreviation: String,
}

impl TimeZone {
    pub const UTC: TimeZone = TimeZone("UTC");

    /// Reads an IANA zone name, as the tz database spells it (case-insensitive).
    pub fn parse(name: &str) -> Result<Self, InvalidValue> {
        let name = name.trim();
        zone_names()
            .iter()
            .find(|known| known.eq_ignore_ascii_case(name))
            .map(|known| Self(known))
            .ok_or_else(|| {
                InvalidValue::new(
                    "time zone",
                    format!(
                        "{name:?} is not an IANA time zone name: use one like \"Europe/Amsterdam\" \
                         or \"Europe/Brussels\""
                    ),
                )
            })
    }

    pub fn name(self) -> &'static str {
        self.0
    }

    /// `at` on a clock in this zone.
    pub fn local(self, at: chrono::DateTime<chrono::Utc>) -> LocalTime {
        // Every name held was found in the same database, and every chrono time is within jiff's
        // range; UTC stands in should either ever fail, rather than failing an email or a page.
        let zone = jiff::tz::db()
            .get(self.0)
            .unwrap_or(jiff::tz::TimeZone::UTC);
        let instant =
            jiff::Timestamp::from_second(at.timestamp()).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let local = instant.to_zoned(zone);
        LocalTime {
            year: local.year(),
            month: local.month(),
            day: local.day(),
            hour: local.hour(),
            minute: local.minute(),
            abbreviation: local.strftime("%Z").to_string(),
        }
    }
}

/// Every zone name of the compiled-in tz database, read once: a few hundred short names.
fn zone_names() -> &'static [&'static str] {
    static NAMES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        jiff::tz::db()
            .available()
            .map(|name| &*Box::leak(name.as_str().to_owned().into_boxed_str()))
            .chain(["UTC"])
            .collect()
    })
}

impl fmt::Display for TimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TimeZone {
    type Err = InvalidValue;
    fn from_str(value: &str) -> Result<Self, InvalidValue> {
        Self::parse(value)
    }
}

impl TryFrom<String> for TimeZone {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, InvalidValue> {
        Self::parse(&value)
    }
}

impl From<TimeZone> for String {
    fn from(zone: TimeZone) -> String {
        zone.name().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone as _, Utc};

    #[test]
    fn language_tags_are_read_by_their_primary_language() {
        for (tag, locale) in [
            ("nl", Locale::Dutch),
            ("nl-BE", Locale::Dutch),
            ("NL_nl", Locale::Dutch),
            ("en", Locale::English),
            ("en-GB", Locale::English),
        ] {
            assert_eq!(Locale::parse(tag), Ok(locale), "{tag}");
        }
        let refused = Locale::parse("fr-BE").unwrap_err();
        assert!(refused.message.contains("\"nl\""), "{refused}");
    }

    #[test]
    fn accept_language_takes_the_preferred_language_pages_are_written_in() {
        assert_eq!(
            Locale::from_accept_language("fr-BE,fr;q=0.9,nl;q=0.8,en;q=0.7"),
            Some(Locale::Dutch)
        );
        assert_eq!(
            Locale::from_accept_language("en;q=0.5, nl-NL;q=0.6"),
            Some(Locale::Dutch)
        );
        assert_eq!(
            Locale::from_accept_language("en-US,en;q=0.9"),
            Some(Locale::English)
        );
        assert_eq!(
            Locale::from_accept_language("nl;q=0, en"),
            Some(Locale::English)
        );
        assert_eq!(Locale::from_accept_language("de-DE, fr"), None);
        assert_eq!(Locale::from_accept_language(""), None);
    }

    #[test]
    fn time_zones_are_iana_names_and_keep_summer_time() {
        let amsterdam = TimeZone::parse("europe/amsterdam").unwrap();
        assert_eq!(amsterdam.name(), "Europe/Amsterdam");
        let summer = Utc.with_ymd_and_hms(2026, 7, 1, 10, 0, 0).unwrap();
        let winter = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
        let clock = |l: LocalTime| format!("{:02}:{:02} {}", l.hour, l.minute, l.abbreviation);
        assert_eq!(clock(amsterdam.local(summer)), "12:00 CEST");
        assert_eq!(clock(amsterdam.local(winter)), "11:00 CET");
        assert_eq!(TimeZone::parse("utc"), Ok(TimeZone::UTC));
        let refused = TimeZone::parse("CET+1").unwrap_err();
        assert!(refused.message.contains("Europe/Amsterdam"), "{refused}");
    }

    #[test]
    fn both_round_trip_through_json_as_their_names() {
        let json =
            serde_json::to_string(&(Locale::Dutch, TimeZone::parse("Europe/Brussels").unwrap()))
                .unwrap();
        assert_eq!(json, r#"["nl","Europe/Brussels"]"#);
        let back: (Locale, TimeZone) = serde_json::from_str(&json).unwrap();
        assert_eq!(back.1.name(), "Europe/Brussels");
        assert!(serde_json::from_str::<Locale>(r#""xx""#).is_err());
    }
}

//! The words people read on pages and in emails: one catalogue per language, in Fluent files under
//! `shared/locales/<language>/` (compiled in), so wording is changed in one place and translated as a
//! whole. Every file holds the same messages in every language; a test fails when one is missing.

use crate::domain::{Locale, TimeZone};
use chrono::{DateTime, Utc};
use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentResource};
use std::sync::OnceLock;

pub use fluent_bundle::FluentValue as WordValue;

/// The catalogue files, by name, in English and in Dutch.
const CATALOGUE: &[(&str, &str, &str)] = &[
    (
        "common.ftl",
        include_str!("../locales/en/common.ftl"),
        include_str!("../locales/nl/common.ftl"),
    ),
    (
        "emails.ftl",
        include_str!("../locales/en/emails.ftl"),
        include_str!("../locales/nl/emails.ftl"),
    ),
    (
        "pages.ftl",
        include_str!("../locales/en/pages.ftl"),
        include_str!("../locales/nl/pages.ftl"),
    ),
];

/// The words of one language.
pub struct Words {
    locale: Locale,
    bundle: FluentBundle<FluentResource>,
}

impl std::fmt::Debug for Words {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Words")
            .field("locale", &self.locale)
            .finish()
    }
}

/// The words of `locale`.
pub fn words(locale: Locale) -> &'static Words {
    static DUTCH: OnceLock<Words> = OnceLock::new();
    static ENGLISH: OnceLock<Words> = OnceLock::new();
    let cell = match locale {
        Locale::Dutch => &DUTCH,
        Locale::English => &ENGLISH,
    };
    cell.get_or_init(|| Words::load(locale))
}

impl Words {
    fn load(locale: Locale) -> Self {
        let language = locale
            .tag()
            .parse()
            .expect("a locale's tag is a valid language identifier");
        let mut bundle = FluentBundle::new_concurrent(vec![language]);
        // Unicode isolation marks around inserted values would show up in plain-text email and in
        // attribute values; the inserted values here are names and numbers, not right-to-left text.
        bundle.set_use_isolating(false);
        for (file, source) in sources(locale) {
            let resource = FluentResource::try_new(source.to_owned())
                .unwrap_or_else(|(_, errors)| panic!("{locale}/{file} does not parse: {errors:?}"));
            bundle
                .add_resource(resource)
                .unwrap_or_else(|errors| panic!("{locale}/{file} repeats a message: {errors:?}"));
        }
        Self { locale, bundle }
    }

    pub fn locale(&self) -> Locale {
        self.locale
    }

    /// The message `key`, without arguments.
    pub fn text(&self, key: &str) -> String {
        self.text_with(key, &[])
    }

    /// The message `key` with its arguments filled in. A message missing in this language falls back
    /// to English (a test keeps the languages in step, so this only guards against a release built
    /// with a gap); one missing everywhere yields its key and an error in the log.
    pub fn text_with(&self, key: &str, args: &[(&str, WordValue<'_>)]) -> String {
        let mut fluent_args = FluentArgs::new();
        for (name, value) in args {
            fluent_args.set(*name, value.clone());
        }
        if let Some(text) = self.format(key, &fluent_args) {
            return text;
        }
        if self.locale != Locale::English {
            if let Some(text) = words(Locale::English).format(key, &fluent_args) {
                tracing::error!(key, locale = %self.locale, "message missing in this language; English used");
                return text;
            }
        }
        tracing::error!(key, "message missing from the catalogue");
        key.to_owned()
    }

    fn format(&self, key: &str, args: &FluentArgs<'_>) -> Option<String> {
        let pattern = self.bundle.get_message(key)?.value()?;
        let mut errors = Vec::new();
        let text = self.bundle.format_pattern(pattern, Some(args), &mut errors);
        if !errors.is_empty() {
            tracing::error!(key, locale = %self.locale, ?errors, "message formatted with errors");
        }
        Some(text.into_owned())
    }

    /// `at` as a person reads it in this language, in `zone`, with the zone shown:
    /// "1 December 2026, 15:05 CET" / "1 december 2026 om 15:05 CET".
    pub fn moment(&self, at: DateTime<Utc>, zone: TimeZone) -> String {
        let local = zone.local(at);
        // Zones without a letter abbreviation (the tz database gives "-03" for them) are named instead.
        let zone_shown = if local.abbreviation.chars().all(|c| c.is_ascii_alphabetic()) {
            local.abbreviation
        } else {
            zone.name().to_owned()
        };
        let month = self.text(&format!("month-{}", local.month));
        self.text_with(
            "moment",
            &[
                ("day", WordValue::from(local.day)),
                ("month", WordValue::from(month)),
                ("year", WordValue::from(local.year)),
                (
                    "time",
                    WordValue::from(format!("{:02}:{:02}", local.hour, local.minute)),
                ),
                ("zone", WordValue::from(zone_shown)),
            ],
        )
    }
}

fn sources(locale: Locale) -> impl Iterator<Item = (&'static str, &'static str)> {
    CATALOGUE.iter().map(move |&(file, english, dutch)| {
        let source = match locale {
            Locale::English => english,
            Locale::Dutch => dutch,
        };
        (file, source)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;
    use fluent_syntax::ast::Entry;
    use std::collections::BTreeSet;

    /// The message ids of one catalogue file, with their attributes as `id.attribute`.
    fn message_ids(source: &'static str) -> BTreeSet<String> {
        let resource = FluentResource::try_new(source.to_owned()).expect("parses");
        let mut ids = BTreeSet::new();
        for entry in resource.entries() {
            if let Entry::Message(message) = entry {
                ids.insert(message.id.name.to_owned());
                for attribute in &message.attributes {
                    ids.insert(format!("{}.{}", message.id.name, attribute.id.name));
                }
            }
        }
        ids
    }

    #[test]
    fn every_message_exists_in_every_language() {
        for &(file, english, dutch) in CATALOGUE {
            let (english, dutch) = (message_ids(english), message_ids(dutch));
            let only_english: Vec<_> = english.difference(&dutch).collect();
            let only_dutch: Vec<_> = dutch.difference(&english).collect();
            assert!(
                only_english.is_empty() && only_dutch.is_empty(),
                "{file}: missing in Dutch {only_english:?}, missing in English {only_dutch:?}"
            );
        }
    }

    #[test]
    fn every_catalogue_loads_in_both_languages() {
        for locale in Locale::ALL {
            assert_eq!(words(locale).locale(), locale);
            assert!(!words(locale).text("service-name").is_empty());
        }
    }

    #[test]
    fn a_moment_is_written_in_the_language_and_zone_of_its_reader() {
        let at = Utc.with_ymd_and_hms(2026, 7, 1, 13, 5, 0).unwrap();
        let amsterdam = TimeZone::parse("Europe/Amsterdam").unwrap();
        assert_eq!(
            words(Locale::Dutch).moment(at, amsterdam),
            "1 juli 2026 om 15:05 CEST"
        );
        assert_eq!(
            words(Locale::English).moment(at, TimeZone::UTC),
            "1 July 2026, 13:05 UTC"
        );
        let sao_paulo = TimeZone::parse("America/Sao_Paulo").unwrap();
        assert_eq!(
            words(Locale::English).moment(at, sao_paulo),
            "1 July 2026, 10:05 America/Sao_Paulo"
        );
    }

    #[test]
    fn a_missing_message_falls_back_to_english_then_to_its_key() {
        assert_eq!(
            words(Locale::Dutch).text("no-such-message"),
            "no-such-message"
        );
    }
}

//! How a tenant's emails look to its customers: its logo and its accent colour.

use super::InvalidValue;
use serde::{Deserialize, Serialize};
use std::fmt;
use url::Url;

/// A tenant's look in the emails sent on its behalf. Both parts are optional: without them the emails
/// use the broker's own colour and show the tenant's name only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Branding {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_url: Option<LogoUrl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accent_colour: Option<AccentColour>,
}

impl Branding {
    /// `None` when neither part is set, so a tenant without branding stores nothing.
    pub fn new(logo_url: Option<LogoUrl>, accent_colour: Option<AccentColour>) -> Option<Self> {
        (logo_url.is_some() || accent_colour.is_some()).then_some(Self {
            logo_url,
            accent_colour,
        })
    }
}

/// The address of a tenant's logo, loaded by the reader's mail client: https only (a mail client
/// warns about or blocks plain-http images), and without credentials, which every reader would see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LogoUrl(Url);

impl LogoUrl {
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        let invalid = |why: String| InvalidValue::new("logo URL", why);
        let url = Url::parse(value.trim())
            .map_err(|e| invalid(format!("the logo URL is not a URL ({e})")))?;
        if url.scheme() != "https" {
            return Err(invalid(
                "the logo URL must start with https://: mail clients block images over plain http"
                    .into(),
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            let host = url.host_str().unwrap_or_default();
            return Err(invalid(format!(
                "the logo URL on {host} carries a user name or password: every reader of the email would see it"
            )));
        }
        if url.as_str().len() > 2048 {
            return Err(invalid(
                "the logo URL is longer than 2048 characters".into(),
            ));
        }
        Ok(Self(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl TryFrom<String> for LogoUrl {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, InvalidValue> {
        Self::parse(&value)
    }
}

impl From<LogoUrl> for String {
    fn from(url: LogoUrl) -> String {
        url.0.into()
    }
}

/// A colour for the button and the band at the top of an email, written `#rrggbb`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccentColour([u8; 3]);

/// Text on a light accent: near-black rather than pure black, as in the body text.
const DARK_TEXT: AccentColour = AccentColour([0x1a, 0x1a, 0x1a]);
const WHITE_TEXT: AccentColour = AccentColour([0xff, 0xff, 0xff]);

impl AccentColour {
    /// The broker's own colour, for tenants that chose none: a dark blue white text reads well on.
    pub const DEFAULT: AccentColour = AccentColour([0x1d, 0x4f, 0x91]);

    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        let value = value.trim();
        let hex = value
            .strip_prefix('#')
            .filter(|h| h.len() == 6 && h.chars().all(|c| c.is_ascii_hexdigit()))
            .ok_or_else(|| {
                InvalidValue::new(
                    "accent colour",
                    format!(
                        "{value:?} is not a colour: write it as # and six hex digits, e.g. #1d4f91"
                    ),
                )
            })?;
        let channel = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).expect("checked as hex");
        Ok(Self([channel(0), channel(2), channel(4)]))
    }

    /// The colour of text on this accent: white or near-black, whichever contrasts more (WCAG 2
    /// contrast ratio), so a tenant's light yellow still gets a readable button.
    pub fn text_colour(self) -> AccentColour {
        if contrast(self, WHITE_TEXT) >= contrast(self, DARK_TEXT) {
            WHITE_TEXT
        } else {
            DARK_TEXT
        }
    }

    /// WCAG 2 relative luminance, 0 (black) to 1 (white).
    fn luminance(self) -> f64 {
        let linear = |c: u8| {
            let c = f64::from(c) / 255.0;
            if c <= 0.04045 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        };
        let [r, g, b] = self.0;
        0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b)
    }
}

/// WCAG 2 contrast ratio between two colours, 1 to 21.
pub fn contrast(a: AccentColour, b: AccentColour) -> f64 {
    let (la, lb) = (a.luminance(), b.luminance());
    (la.max(lb) + 0.05) / (la.min(lb) + 0.05)
}

impl fmt::Display for AccentColour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [r, g, b] = self.0;
        write!(f, "#{r:02x}{g:02x}{b:02x}")
    }
}

impl TryFrom<String> for AccentColour {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, InvalidValue> {
        Self::parse(&value)
    }
}

impl From<AccentColour> for String {
    fn from(colour: AccentColour) -> String {
        colour.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logo_is_loaded_over_https_without_credentials() {
        assert!(LogoUrl::parse("https://cdn.example.com/logo.png").is_ok());
        let refused = |v: &str| LogoUrl::parse(v).unwrap_err().message;
        assert!(refused("http://cdn.example.com/logo.png").contains("https://"));
        assert!(refused("javascript:alert(1)").contains("https://"));
        let with_password = refused("https://u:hunter2@cdn.example.com/logo.png");
        assert!(with_password.contains("cdn.example.com"));
        assert!(!with_password.contains("hunter2"));
        assert!(refused("logo.png").contains("not a URL"));
    }

    #[test]
    fn an_accent_colour_is_six_hex_digits_and_round_trips() {
        let colour = AccentColour::parse(" #1D4f91 ").unwrap();
        assert_eq!(colour.to_string(), "#1d4f91");
        for bad in ["1d4f91", "#1d4f9", "#1d4f9g", "#1d4f911", "red", "#fff"] {
            assert!(AccentColour::parse(bad).is_err(), "{bad}");
        }
        let json = serde_json::to_string(&colour).unwrap();
        assert_eq!(json, "\"#1d4f91\"");
        assert_eq!(serde_json::from_str::<AccentColour>(&json).unwrap(), colour);
        assert!(serde_json::from_str::<AccentColour>("\"#zzzzzz\"").is_err());
    }

    #[test]
    fn text_on_the_accent_is_white_on_dark_colours_and_dark_on_light_ones() {
        for (accent, text) in [
            ("#1d4f91", "#ffffff"),
            ("#000000", "#ffffff"),
            ("#c0392b", "#ffffff"),
            ("#ffff00", "#1a1a1a"),
            ("#f5f5f5", "#1a1a1a"),
            ("#7fdbff", "#1a1a1a"),
        ] {
            let accent = AccentColour::parse(accent).unwrap();
            assert_eq!(accent.text_colour().to_string(), text, "on {accent}");
        }
        // Whatever the accent, the chosen text keeps at least the contrast of large text (3:1).
        for grey in (0..=255u8).step_by(5) {
            for hue in [[grey, 0, 0], [0, grey, 0], [0, 0, grey], [grey, grey, grey]] {
                let accent = AccentColour(hue);
                assert!(contrast(accent, accent.text_colour()) >= 3.0, "{accent}");
            }
        }
    }
}

//! The notifier's configuration, from the environment.

use crate::domain::EmailAddress;
use chrono::Duration;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("{name}: {why}")]
    Invalid { name: &'static str, why: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifySettings {
    /// `BROKER_SENDER`: the From address (verified in SES).
    pub sender: EmailAddress,
    /// `BROKER_REPLY_TO`: where replies go, if not to the sender.
    pub reply_to: Option<EmailAddress>,
    /// `BROKER_NOTIFY_LEAD_DAYS` (comma-separated days, default `7,1`): warn this long before a
    /// connection stops working.
    pub lead_times: Vec<Duration>,
    /// `BROKER_NOTIFY_REMINDER_DAYS` (default 3): remind at most this often while unresolved.
    pub reminder_every: Duration,
    /// `BROKER_NOTIFY_MAX_REMINDERS` (default 10, 0 for none): reminders after a connection came to
    /// need a person, every `reminder_every`, before the broker stops repeating itself (the
    /// connection stays listed as needing a reconnect).
    pub max_reminders: u32,
    /// `BROKER_NOTIFY_RECOVERY` (default `true`): send "it works again" when a connection recovers.
    pub recovery_emails: bool,
    /// Sending attempts per notice before it is recorded as failed.
    pub max_attempts: u32,
    /// A claim older than this is presumed dead (the function's timeout is 300 s).
    pub stale_after: Duration,
    /// `BROKER_OUTBOX_DIR` (default `<BROKER_DATA_DIR>/outbox`): local mode's mail folder.
    pub outbox_dir: PathBuf,
}

impl NotifySettings {
    pub const DEFAULT_SENDER: &'static str = "connection-broker@localhost.localdomain";

    pub fn new(sender: EmailAddress) -> Self {
        Self {
            sender,
            reply_to: None,
            lead_times: vec![Duration::days(7), Duration::days(1)],
            reminder_every: Duration::days(3),
            max_reminders: 10,
            recovery_emails: true,
            max_attempts: 5,
            stale_after: Duration::minutes(15),
            outbox_dir: PathBuf::from(".broker/outbox"),
        }
    }

    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let invalid = |name: &'static str, why: String| SettingsError::Invalid { name, why };
        let sender = EmailAddress::parse(
            &get("BROKER_SENDER").unwrap_or_else(|| Self::DEFAULT_SENDER.to_string()),
        )
        .map_err(|why| invalid("BROKER_SENDER", why.into()))?;
        let mut settings = Self::new(sender);
        if let Some(reply_to) = get("BROKER_REPLY_TO") {
            settings.reply_to = Some(
                EmailAddress::parse(&reply_to)
                    .map_err(|why| invalid("BROKER_REPLY_TO", why.into()))?,
            );
        }
        if let Some(leads) = get("BROKER_NOTIFY_LEAD_DAYS") {
            let parsed: Result<Vec<Duration>, String> = leads
                .split(',')
                .map(|d| match d.trim().parse::<u32>() {
                    Ok(days @ 1..=365) => Ok(Duration::days(i64::from(days))),
                    _ => Err(format!(
                        "{d:?} is not a whole number of days from 1 to 365; write e.g. 7,1"
                    )),
                })
                .collect();
            settings.lead_times = parsed.map_err(|why| invalid("BROKER_NOTIFY_LEAD_DAYS", why))?;
        }
        if let Some(days) = get("BROKER_NOTIFY_REMINDER_DAYS") {
            match days.trim().parse::<u32>() {
                Ok(d @ 1..=365) => settings.reminder_every = Duration::days(i64::from(d)),
                _ => {
                    return Err(invalid(
                        "BROKER_NOTIFY_REMINDER_DAYS",
                        format!("{days:?} is not a whole number of days from 1 to 365"),
                    ))
                }
            }
        }
        if let Some(count) = get("BROKER_NOTIFY_MAX_REMINDERS") {
            settings.max_reminders = match count.trim().parse::<u32>() {
                Ok(n @ 0..=1000) => n,
                _ => {
                    return Err(invalid(
                        "BROKER_NOTIFY_MAX_REMINDERS",
                        format!("{count:?} is not a whole number from 0 to 1000"),
                    ))
                }
            };
        }
        if let Some(flag) = get("BROKER_NOTIFY_RECOVERY") {
            settings.recovery_emails = match flag.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" => false,
                _ => {
                    return Err(invalid(
                        "BROKER_NOTIFY_RECOVERY",
                        format!("{flag:?} is not true or false"),
                    ))
                }
            };
        }
        settings.outbox_dir = match get("BROKER_OUTBOX_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => PathBuf::from(get("BROKER_DATA_DIR").unwrap_or_else(|| ".broker".into()))
                .join("outbox"),
        };
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(env: &[(&str, &str)]) -> Result<NotifySettings, SettingsError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        NotifySettings::from_lookup(|k| env.get(k).cloned())
    }

    #[test]
    fn defaults_and_overrides() {
        let s = from(&[]).unwrap();
        assert_eq!(s.lead_times, vec![Duration::days(7), Duration::days(1)]);
        assert_eq!(s.reminder_every, Duration::days(3));
        assert!(s.recovery_emails);
        assert_eq!(s.max_reminders, 10);
        let s = from(&[
            ("BROKER_SENDER", "broker@example.com"),
            ("BROKER_REPLY_TO", "help@example.com"),
            ("BROKER_NOTIFY_LEAD_DAYS", "14, 2"),
            ("BROKER_NOTIFY_RECOVERY", "off"),
            ("BROKER_NOTIFY_MAX_REMINDERS", "0"),
        ])
        .unwrap();
        assert_eq!(s.max_reminders, 0);
        assert_eq!(s.lead_times, vec![Duration::days(14), Duration::days(2)]);
        assert!(!s.recovery_emails);
        assert_eq!(s.reply_to.unwrap().as_str(), "help@example.com");
        let err = from(&[("BROKER_SENDER", "not an address")]).unwrap_err();
        assert!(err.to_string().starts_with("BROKER_SENDER:"), "{err}");
        assert!(from(&[("BROKER_NOTIFY_LEAD_DAYS", "7,x")]).is_err());
        let err = from(&[("BROKER_NOTIFY_MAX_REMINDERS", "-1")]).unwrap_err();
        assert!(
            err.to_string().starts_with("BROKER_NOTIFY_MAX_REMINDERS:"),
            "{err}"
        );
    }
}

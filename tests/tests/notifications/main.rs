//! The expiry notifier end to end: the outbox on both stores, SES through moto (sent mail read back
//! from moto's `/moto-api/data.json`, where SES v2 raw sends are recorded under `ses` → `RawMessage`),
//! and the local outbox folder.

use async_trait::async_trait;
use broker_core::adapters::{OutboxMailer, SesMailer};
use broker_core::backend::Backend as CoreBackend;
use broker_core::connect::resolve_link;
use broker_core::context::BrokerContext;
use broker_core::domain::*;
use broker_core::ids::{AppId, TenantId, WriteId};
use broker_core::notify::*;
use broker_core::ports::Fence;
use broker_core::providers::{Catalogue, Providers};
use broker_core::refresh::EngineSettings;
use broker_core::secret::{AccessToken, LegacyAccessSecret, LegacyAccessToken, RefreshToken};
use broker_core::{Clock, CredentialKeeper, ManualClock};
use broker_tests::backends::{self, shared_moto, Backend};
use broker_tests::moto::unique_name;
use chrono::{DateTime, Duration, TimeZone, Utc};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use url::Url;

mod delivery;
mod email_content;
mod reminders;
mod sweep;

const ACCESS_VALUE: &str = "ACCESS-TOKEN-VALUE-never-in-mail";
const REFRESH_VALUE: &str = "REFRESH-TOKEN-VALUE-never-in-mail";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, 6, 0, 0).unwrap()
}

struct World {
    ctx: BrokerContext,
    clock: ManualClock,
    tenant: TenantId,
    recipient: String,
}

async fn world(backend: Backend) -> World {
    let clock = ManualClock::starting_at(t0());
    let clock_dyn: Arc<dyn Clock> = Arc::new(clock.clone());
    let providers = Providers::new(
        Catalogue::built_in(),
        broker_tests::provider_http(),
        clock_dyn.clone(),
    );
    let ctx = BrokerContext::new(
        CoreBackend {
            store: backend.store.clone(),
            vault: backend.vault.clone(),
        },
        providers,
        clock_dyn,
        Url::parse("https://broker.example.com/").unwrap(),
        EngineSettings::default(),
    );
    let tenant = TenantId::parse(unique_name("acme")).unwrap();
    ctx.backend
        .store
        .insert_tenant(&Tenant::new(tenant.clone(), "Acme Integrations", t0()).unwrap())
        .await
        .unwrap();
    let app = OAuthApp {
        tenant: tenant.clone(),
        id: AppId::parse("acumatica").unwrap(),
        settings: ProviderSettings::Acumatica {
            instance_url: ServiceUrl::parse("https://acme.acumatica.com").unwrap(),
            tenant: "AcmeCo".into(),
            refresh_tokens: None,
            instance_per_connection: false,
        },
        client_id: "00000000-0000-0000-0000-000000000000@AcmeCo".into(),
        redirect_uri: RedirectUri::parse("https://broker.example.com/oauth/callback").unwrap(),
        scopes: vec![],
        created_at: t0(),
    };
    ctx.backend.store.put_app(&app).await.unwrap();
    World {
        ctx,
        clock,
        tenant,
        recipient: format!("{}@example.com", unique_name("finance")),
    }
}

impl World {
    /// A connected Acumatica connection with tokens in the vault, its refresh token ending at `ends`.
    async fn connected(&self, ends: DateTime<Utc>) -> Connection {
        let now = self.clock.now();
        let mut c = Connection::new(
            self.tenant.clone(),
            AppId::parse("acumatica").unwrap(),
            ProviderKind::Acumatica,
            Recipients::parse(&[self.recipient.as_str(), "ops@example.com"]).unwrap(),
            now,
        );
        c.display_name = Some("Acme production".into());
        c.context = Some(ProviderContext::Acumatica {
            instance_url: ServiceUrl::parse("https://acme.acumatica.com").unwrap(),
            tenant: "AcmeCo".into(),
        });
        let pointer = CredentialsPointer {
            slot: VaultSlot::A,
            write: WriteId::generate(),
        };
        self.ctx
            .backend
            .vault
            .put_credentials(
                &c.tenant,
                &c.id,
                pointer.slot,
                &pointer.write,
                &Credentials::OAuth2(TokenSet {
                    access_token: AccessToken::new(ACCESS_VALUE),
                    refresh_token: Some(RefreshToken::new(REFRESH_VALUE)),
                    access_expires_at: now + Duration::hours(1),
                    refresh_expires_at: Some(ends),
                    scope: None,
                    received_at: now,
                }),
            )
            .await
            .unwrap();
        c.credentials = Some(pointer);
        c.refresh_expires_at = Some(ends);
        c.next_refresh_at = Some(now + Duration::days(7));
        let t = authorized_by_integration(&mut c, now);
        self.ctx
            .backend
            .store
            .insert_connection(&c, &[t])
            .await
            .unwrap();
        c
    }

    /// What the refresh engine does when a person is needed: the event and a fenced save.
    async fn reconnect_needed(&self, c: &Connection) -> Connection {
        self.waits_for_person(c, broker_tests::world::grant_revoked())
            .await
    }

    /// A status only a person can end, as the refresh engine records it.
    async fn waits_for_person(&self, c: &Connection, event: StatusEvent) -> Connection {
        let mut c = self.stored(c).await;
        let now = self.clock.now();
        let t = broker_tests::world::waits_for_person(&mut c, event, "token-refresh", now);
        self.ctx
            .backend
            .store
            .save_connection(&c, Fence::Version, &[t])
            .await
            .unwrap()
    }

    async fn stored(&self, c: &Connection) -> Connection {
        self.ctx
            .backend
            .store
            .get_connection(&c.id)
            .await
            .unwrap()
            .unwrap()
    }

    async fn unsettled(&self) -> Vec<NoticeKey> {
        self.ctx.backend.store.unsettled_notices(100).await.unwrap()
    }
}

// ----- SES through moto ------------------------------------------------------------------------

const SENDER: &str = "broker@example.com";

async fn ses_mailer() -> Arc<dyn Mailer> {
    let config = shared_moto().sdk_config().await;
    let client = SesMailer::client(&config);
    // moto refuses mail from an unverified sender, like SES outside the sandbox does.
    let _ = client
        .create_email_identity()
        .email_identity(SENDER)
        .send()
        .await;
    Arc::new(SesMailer::new(client))
}

fn settings() -> NotifySettings {
    let mut s = NotifySettings::new(EmailAddress::parse(SENDER).unwrap());
    s.reply_to = Some(EmailAddress::parse("support@example.com").unwrap());
    s
}

/// The raw messages moto recorded for `recipient`.
async fn moto_mail_to(recipient: &str) -> Vec<String> {
    shared_moto().raw_mail_to(recipient).await
}

/// A message's headers and decoded text and HTML parts.
struct Parsed {
    /// The header block unfolded (RFC 5322 section 2.2.3), with the subject decoded, so each header
    /// reads as one line.
    headers: String,
    text: String,
    html: String,
}

/// Parses with mail-parser, independently of the builder that made the message; a multipart/
/// alternative of a text and an HTML part, neither in base64.
fn parse(raw: &str) -> Parsed {
    use mail_parser::{MessageParser, MimeHeaders};
    let message = MessageParser::default()
        .parse(raw.as_bytes())
        .expect("a MIME message");
    assert!(message
        .content_type()
        .is_some_and(|t| t.ctype() == "multipart" && t.subtype() == Some("alternative")));
    assert_eq!(
        message.parts.len(),
        3,
        "multipart/alternative with text and html"
    );
    for (part, subtype) in message.parts[1..].iter().zip(["plain", "html"]) {
        let content_type = part.content_type().expect("a content type");
        assert_eq!(
            (content_type.ctype(), content_type.subtype()),
            ("text", Some(subtype))
        );
        assert_ne!(
            part.content_transfer_encoding()
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("base64"),
            "a part people may read as it travels"
        );
    }
    let (head, _) = raw
        .split_once("\r\n\r\n")
        .expect("headers end with an empty line");
    let subject = message.subject().expect("a subject");
    let headers = head
        .replace("\r\n ", " ")
        .replace("\r\n\t", " ")
        .lines()
        .map(|line| {
            if line.starts_with("Subject: ") {
                format!("Subject: {subject}")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n");
    Parsed {
        headers,
        text: message.body_text(0).expect("a text part").into_owned(),
        html: message.body_html(0).expect("an HTML part").into_owned(),
    }
}

fn link_token(text: &str) -> String {
    let start = text
        .find("https://broker.example.com/connect/")
        .expect("a reconnect link");
    text[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_start_matches("https://broker.example.com/connect/")
        .to_string()
}

/// Refuses every message, like SES with a throttled or suspended account.
struct Refusing(AtomicUsize);

#[async_trait]
impl Mailer for Refusing {
    async fn send(&self, _: &Email) -> Result<(), MailError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(MailError::NotSent(
            "Throttling: Maximum sending rate exceeded".into(),
        ))
    }
}

/// A person of the integration authorizes the connection.
fn authorized_by_integration(c: &mut Connection, now: DateTime<Utc>) -> StatusTransition {
    c.apply(
        StatusEvent::Authorized,
        Actor::EndUser("integration".into()),
        now,
    )
    .unwrap()
}

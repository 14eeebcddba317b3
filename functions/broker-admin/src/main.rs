//! `broker-admin`: the operators' command line. It works on whatever backend the environment selects
//! (the embedded store by default; DynamoDB + Secrets Manager with `BROKER_TABLE`).

use broker_core::api::{AppRules, ProviderFields};
use broker_core::backend::{Backend, BackendConfig};
use broker_core::context::{parse_public_url, BrokerContext};
use broker_core::domain::*;
use broker_core::ids::{AppId, ConnectionId, TenantId};
use broker_core::ports::PageRequest;
use broker_core::providers::{AddressPolicy, Catalogue, HostCheck};
use broker_core::secret::ClientSecret;
use chrono::Utc;
use clap::{Args, Parser, Subcommand};
use std::io::Read;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "broker-admin",
    about = "Administer the connection broker: tenants, API keys, OAuth app registrations, connections.",
    long_about = "Administer the connection broker: tenants, API keys, OAuth app registrations, connections.\n\n\
        The backend comes from the environment: with BROKER_TABLE set, DynamoDB and Secrets Manager (standard \
        AWS configuration applies); otherwise the embedded store in BROKER_DATA_DIR (default .broker).\n\
        Secrets are never taken from the command line: client secrets are read from standard input or a file."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: the size of the largest variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Tenants: the customers of the broker.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// OAuth app registrations at Twinfield, Exact Online, Acumatica or a generic provider.
    #[command(subcommand)]
    App(AppCommand),
    /// Integration API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Connections and their status history.
    #[command(subcommand)]
    Connection(ConnectionCommand),
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant.
    Create {
        /// Lowercase letters, digits and '-', e.g. `acme`.
        id: String,
        /// The name shown to people in pages and emails.
        #[arg(long)]
        name: String,
        /// A logo shown at the top of the emails sent on its behalf: an https URL of an image about
        /// 40 pixels high.
        #[arg(long, value_name = "URL")]
        logo_url: Option<String>,
        /// The colour of the button and the band at the top of its emails, as #rrggbb. The button's
        /// text is white or dark, whichever reads better on it.
        #[arg(long, value_name = "#RRGGBB")]
        accent_colour: Option<String>,
        /// The language of its connections' pages and emails where a connection names none: nl or en.
        #[arg(long)]
        locale: Option<String>,
        /// The IANA time zone its people read times in, e.g. Europe/Amsterdam.
        #[arg(long)]
        time_zone: Option<String>,
        /// An origin its connections' return URLs may point at, e.g. https://app.example.com
        /// (repeatable). Without one, connections cannot carry a return URL.
        #[arg(long = "return-origin")]
        return_origins: Vec<String>,
    },
    /// Show a tenant.
    Show { id: String },
}

#[allow(clippy::large_enum_variant)] // parsed once per run, as `Command`
#[derive(Subcommand)]
enum AppCommand {
    /// Register (or replace) an OAuth app. The client secret is read from standard input, or from
    /// --client-secret-file.
    Register(RegisterApp),
    /// List a tenant's app registrations.
    List {
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Args)]
struct RegisterApp {
    #[arg(long)]
    tenant: String,
    /// The app's id within the tenant, e.g. `exact-nl`.
    #[arg(long)]
    id: String,
    /// twinfield, exact, acumatica or generic.
    #[arg(long)]
    provider: String,
    /// Exact Online country: nl, be, de, co.uk, com, fr, es.
    #[arg(long)]
    country: Option<String>,
    /// Acumatica instance URL, e.g. https://acme.acumatica.com.
    #[arg(long)]
    instance_url: Option<String>,
    /// Acumatica tenant (company login name).
    #[arg(long)]
    acumatica_tenant: Option<String>,
    /// The Acumatica connected application's Refresh Tokens mode, when not absolute 30 days:
    /// `sliding:15` (sliding, infinite), `sliding:15:90` (sliding, at most 90 days) or `absolute:N`.
    #[arg(long)]
    acumatica_refresh_tokens: Option<String>,
    /// Generic provider definition name in the provider catalogue.
    #[arg(long)]
    definition: Option<String>,
    #[arg(long)]
    client_id: String,
    /// The redirect URI registered at the provider: the broker's `/oauth/callback` URL, exactly.
    #[arg(long)]
    redirect_uri: String,
    /// A scope to request instead of the provider's defaults (repeatable).
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// Read the client secret from this file instead of standard input.
    #[arg(long)]
    client_secret_file: Option<std::path::PathBuf>,
    /// Accept an instance URL on this machine (loopback), for local runs on the embedded store.
    /// Private and link-local addresses are refused regardless, and with BROKER_TABLE set (AWS)
    /// this flag is refused: the functions there call public addresses only.
    #[arg(long)]
    allow_loopback: bool,
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create an API key. It is printed once and never stored in readable form.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value = "")]
        label: String,
        /// Allow only session exchange (no creating, listing or disconnecting connections).
        #[arg(long)]
        session_only: bool,
        /// Limit the key to this connection (repeatable).
        #[arg(long = "connection")]
        connections: Vec<String>,
        /// Also allow registering, changing and deleting the tenant's OAuth apps (/v1/apps). Only
        /// for a key without --session-only or --connection limits.
        #[arg(long)]
        manage_apps: bool,
    },
    /// List a tenant's keys (prefixes only).
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Revoke a key by its prefix.
    Revoke {
        #[arg(long)]
        tenant: String,
        prefix: String,
    },
}

#[derive(Subcommand)]
enum ConnectionCommand {
    /// List a tenant's connections with their status.
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Show one connection and its status history.
    Show {
        #[arg(long)]
        tenant: String,
        id: String,
    },
}

/// An error for a person: what went wrong and what to do.
struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let backend = Backend::connect(&BackendConfig::from_env()).await?;
    match cli.command {
        Command::Tenant(command) => tenant(&backend, command).await,
        Command::App(command) => app(&backend, command).await,
        Command::Key(command) => key(&backend, command).await,
        Command::Connection(command) => connection(&backend, command).await,
    }
}

fn tenant_id(value: &str) -> Result<TenantId, Failure> {
    Ok(TenantId::parse(value)?)
}

async fn existing_tenant(backend: &Backend, value: &str) -> Result<TenantId, Failure> {
    let id = tenant_id(value)?;
    match backend.store.get_tenant(&id).await? {
        Some(_) => Ok(id),
        None => Err(Failure(format!("tenant {id} does not exist: create it with `broker-admin tenant create {id} --name ...`"))),
    }
}

async fn tenant(backend: &Backend, command: TenantCommand) -> Result<(), Failure> {
    match command {
        TenantCommand::Create {
            id,
            name,
            logo_url,
            accent_colour,
            locale,
            time_zone,
            return_origins,
        } => {
            let mut tenant = Tenant::new(tenant_id(&id)?, &name, Utc::now())?;
            tenant.branding = Branding::new(
                logo_url.as_deref().map(LogoUrl::parse).transpose()?,
                accent_colour
                    .as_deref()
                    .map(AccentColour::parse)
                    .transpose()?,
            );
            tenant.locale = locale.as_deref().map(Locale::parse).transpose()?;
            tenant.time_zone = time_zone.as_deref().map(TimeZone::parse).transpose()?;
            tenant.return_origins = return_origins
                .iter()
                .map(|o| ReturnOrigin::parse(o))
                .collect::<Result<_, _>>()?;
            backend.store.insert_tenant(&tenant).await?;
            println!("created tenant {} ({})", tenant.id, tenant.display_name);
        }
        TenantCommand::Show { id } => {
            let id = tenant_id(&id)?;
            let tenant = backend
                .store
                .get_tenant(&id)
                .await?
                .ok_or_else(|| Failure(format!("tenant {id} does not exist")))?;
            println!(
                "{}\t{}\tcreated {}",
                tenant.id,
                tenant.display_name,
                tenant.created_at.to_rfc3339()
            );
            if let Some(branding) = &tenant.branding {
                if let Some(logo) = &branding.logo_url {
                    println!("logo\t{}", logo.as_str());
                }
                if let Some(colour) = branding.accent_colour {
                    println!("accent colour\t{colour}");
                }
            }
            for origin in &tenant.return_origins {
                println!("return origin\t{origin}");
            }
        }
    }
    Ok(())
}

fn provider_settings(args: &RegisterApp) -> Result<ProviderSettings, Failure> {
    let provider = match args.provider.as_str() {
        "twinfield" => ProviderKind::Twinfield,
        "exact" | "exact-online" => ProviderKind::ExactOnline,
        "acumatica" => ProviderKind::Acumatica,
        "generic" => ProviderKind::Generic,
        other => {
            return Err(Failure(format!(
                "unknown provider {other:?}: use twinfield, exact, acumatica or generic"
            )))
        }
    };
    let fields = ProviderFields {
        country: args.country.clone(),
        instance_url: args.instance_url.clone(),
        acumatica_tenant: args.acumatica_tenant.clone(),
        acumatica_refresh_tokens: args
            .acumatica_refresh_tokens
            .as_deref()
            .map(AcumaticaRefreshTokens::parse)
            .transpose()
            .map_err(|e| Failure(format!("--acumatica-refresh-tokens: {e}")))?,
        definition: args.definition.clone(),
    };
    // The shared rules name fields as the API does; each is the flag of the same name here.
    fields.settings(provider).map_err(|e| {
        Failure(format!(
            "{e} (on the command line: --{{field}} with '-' for '_')"
        ))
    })
}

/// Public addresses only, unless the operator asks for loopback on a store only local runs read.
fn address_policy(args: &RegisterApp) -> Result<AddressPolicy, Failure> {
    if !args.allow_loopback {
        return Ok(AddressPolicy::PublicOnly);
    }
    match BackendConfig::from_env() {
        BackendConfig::Embedded { .. } => Ok(AddressPolicy::AllowLoopback),
        BackendConfig::Aws { .. } => Err(Failure(
            "--allow-loopback is for local runs on the embedded store: with BROKER_TABLE set the \
             app is for the functions on AWS, which never call loopback addresses. Give the \
             provider's public https URL instead"
                .into(),
        )),
    }
}

fn read_client_secret(file: Option<&std::path::Path>) -> Result<ClientSecret, Failure> {
    let mut raw = String::new();
    match file {
        Some(path) => {
            raw = std::fs::read_to_string(path)
                .map_err(|e| Failure(format!("cannot read {}: {e}", path.display())))?
        }
        None => {
            eprintln!("reading the client secret from standard input…");
            std::io::stdin().read_to_string(&mut raw)?;
        }
    }
    let secret = raw.trim();
    if secret.is_empty() {
        return Err(Failure(
            "the client secret is empty: pipe it in, or pass --client-secret-file".into(),
        ));
    }
    Ok(ClientSecret::new(secret))
}

async fn app(backend: &Backend, command: AppCommand) -> Result<(), Failure> {
    match command {
        AppCommand::Register(args) => {
            let policy = address_policy(&args)?;
            let tenant = existing_tenant(backend, &args.tenant).await?;
            let app = OAuthApp {
                tenant: tenant.clone(),
                id: AppId::parse(args.id.clone())?,
                settings: provider_settings(&args)?,
                client_id: args.client_id.trim().to_string(),
                redirect_uri: RedirectUri::parse(&args.redirect_uri)?,
                scopes: args.scopes.clone(),
                created_at: Utc::now(),
            };
            // The same rules as the integration API's `POST /v1/apps`, against the catalogue and
            // public URL the functions run with (BROKER_CATALOGUE_FILE, BROKER_PUBLIC_URL).
            let catalogue = Catalogue::from_env()?;
            let public_url = std::env::var("BROKER_PUBLIC_URL")
                .unwrap_or_else(|_| BrokerContext::DEFAULT_PUBLIC_URL.into());
            let rules = AppRules::new(&catalogue, &parse_public_url(&public_url)?, policy);
            match rules.check(&app).await {
                Ok(HostCheck::Allowed) => {}
                Ok(HostCheck::Unresolved { detail }) => eprintln!(
                    "warning: {detail}; registering it anyway (every call checks its addresses again)"
                ),
                Err(refused) => return Err(Failure(refused.to_string())),
            }
            let secret = read_client_secret(args.client_secret_file.as_deref())?;
            // Secret first: an app record without its secret would fail every token call.
            backend
                .vault
                .put_client_secret(&tenant, &app.id, &secret)
                .await?;
            backend.store.put_app(&app).await?;
            println!(
                "registered app {} ({}) for tenant {tenant}",
                app.id,
                app.provider().display_name()
            );
        }
        AppCommand::List { tenant } => {
            let tenant = existing_tenant(backend, &tenant).await?;
            for app in backend.store.list_apps(&tenant).await? {
                println!(
                    "{}\t{}\t{}\t{}",
                    app.id,
                    app.provider().display_name(),
                    app.client_id,
                    app.redirect_uri.as_str()
                );
            }
        }
    }
    Ok(())
}

async fn key(backend: &Backend, command: KeyCommand) -> Result<(), Failure> {
    match command {
        KeyCommand::Create {
            tenant,
            label,
            session_only,
            connections,
            manage_apps,
        } => {
            if manage_apps && (session_only || !connections.is_empty()) {
                return Err(Failure(
                    "--manage-apps needs a key that reaches the whole tenant: leave out --session-only and --connection, or make a separate key for managing apps".into(),
                ));
            }
            let tenant = existing_tenant(backend, &tenant).await?;
            let connections = connections
                .into_iter()
                .map(ConnectionId::parse)
                .collect::<Result<Vec<_>, _>>()?;
            let scope = ApiKeyScope {
                session_only,
                connections: (!connections.is_empty()).then_some(connections),
                manage_apps,
            };
            let key = ApiKeyRecord::generate(tenant, &label, scope, Utc::now());
            backend.store.insert_api_key(&key.record).await?;
            eprintln!(
                "API key {} created. Store it now: it is shown only this once.",
                key.record.prefix.as_str()
            );
            println!("{}", key.plaintext.expose());
        }
        KeyCommand::List { tenant } => {
            let tenant = existing_tenant(backend, &tenant).await?;
            for key in backend.store.list_api_keys(&tenant).await? {
                let state = key.revoked_at.map_or("active".to_string(), |at| {
                    format!("revoked {}", at.to_rfc3339())
                });
                println!("{}\t{}\t{}", key.prefix.as_str(), key.label, state);
            }
        }
        KeyCommand::Revoke { tenant, prefix } => {
            let tenant = existing_tenant(backend, &tenant).await?;
            let prefix = ApiKeyPrefix::parse(&prefix)?;
            if !backend
                .store
                .revoke_api_key(&tenant, &prefix, Utc::now())
                .await?
            {
                return Err(Failure(format!(
                    "tenant {tenant} has no key {}: see `broker-admin key list --tenant {tenant}`",
                    prefix.as_str()
                )));
            }
            println!("revoked {}", prefix.as_str());
        }
    }
    Ok(())
}

async fn connection(backend: &Backend, command: ConnectionCommand) -> Result<(), Failure> {
    match command {
        ConnectionCommand::List { tenant } => {
            let tenant = existing_tenant(backend, &tenant).await?;
            let mut cursor = None;
            loop {
                let page = backend
                    .store
                    .list_connections(&tenant, PageRequest::after(200, cursor))
                    .await?;
                for c in &page.items {
                    let place = c
                        .context
                        .as_ref()
                        .map(|ctx| ctx.describe())
                        .unwrap_or_default();
                    println!(
                        "{}\t{}\t{}\t{}",
                        c.id,
                        c.provider.display_name(),
                        c.status().kind(),
                        place
                    );
                }
                cursor = page.next_cursor;
                if cursor.is_none() {
                    break;
                }
            }
        }
        ConnectionCommand::Show { tenant, id } => {
            let tenant = existing_tenant(backend, &tenant).await?;
            let id = ConnectionId::parse(id)?;
            let c = backend
                .store
                .get_tenant_connection(&tenant, &id)
                .await?
                .ok_or_else(|| Failure(format!("tenant {tenant} has no connection {id}")))?;
            println!(
                "connection {}\nprovider   {}\nstatus     {}",
                c.id,
                c.provider.display_name(),
                c.status().kind()
            );
            if let ConnectionStatus::ReconnectRequired { reason } = &c.status() {
                println!("why        {}", reason.explain());
            }
            if let Some(context) = &c.context {
                println!("where      {}", context.describe());
            }
            let time =
                |t: Option<chrono::DateTime<Utc>>| t.map_or("-".to_string(), |t| t.to_rfc3339());
            println!(
                "access until {}\nrefresh until {}\nnext refresh {}",
                time(c.access_expires_at),
                time(c.refresh_expires_at),
                time(c.next_refresh_at)
            );
            println!("history (newest first):");
            print_history(backend, &id).await?;
        }
    }
    Ok(())
}

/// A connection's whole history, newest first: the list `GET /v1/connections/{id}/events` pages
/// through.
async fn print_history(backend: &Backend, id: &ConnectionId) -> Result<(), Failure> {
    use broker_core::history::{connection_history, describe_fields, HistoryEvent, MAX_LIMIT};
    let actor = |a: &Actor| match a {
        Actor::System(who) => format!("system {who}"),
        Actor::ApiKey(prefix) => format!("API key {prefix}"),
        Actor::Operator(who) => format!("operator {who}"),
        Actor::EndUser(who) => format!("user {who}"),
    };
    let mut cursor = None;
    loop {
        let page =
            connection_history(backend.store.as_ref(), id, MAX_LIMIT, cursor.as_deref()).await?;
        for event in &page.events {
            let at = event.at().to_rfc3339();
            match event {
                HistoryEvent::Transition(t) => println!(
                    "  {at}  status {} -> {}  {}  ({})",
                    t.from,
                    t.to,
                    t.reason,
                    actor(&t.actor)
                ),
                HistoryEvent::Notice(n) => println!(
                    "  {at}  notice {}: {}{}{}",
                    n.notice,
                    n.state,
                    n.recipients
                        .map_or(String::new(), |r| format!(" to {r} recipient(s)")),
                    n.detail
                        .as_ref()
                        .map_or(String::new(), |d| format!(" ({d})"))
                ),
                HistoryEvent::Change(c) => println!(
                    "  {at}  changed by {}: {}",
                    actor(&c.actor),
                    describe_fields(&c.fields)
                ),
                HistoryEvent::Sessions(s) => println!(
                    "  {at}  {} token(s) handed out to API key {} ({} .. {})",
                    s.count,
                    s.key_prefix,
                    s.first.to_rfc3339(),
                    s.last.to_rfc3339()
                ),
            }
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(()),
        }
    }
}

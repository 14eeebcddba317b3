//! `app register` and `app list`.

use crate::cli::{AppCommand, RegisterApp};
use crate::output::{when, Failure, Output, Table};
use crate::store::{Admin, AtStore};
use broker_core::api::{AppRules, ProviderFields};
use broker_core::backend::BackendConfig;
use broker_core::context::{parse_public_url, BrokerContext};
use broker_core::domain::*;
use broker_core::ids::AppId;
use broker_core::providers::{AddressPolicy, Catalogue, HostCheck};
use broker_core::secret::ClientSecret;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::io::Read;

/// An app registration as `app list --json` prints it. The client secret is write-only: it is in
/// the vault, never here.
#[derive(Serialize)]
struct AppView<'a> {
    id: &'a str,
    /// `provider` and that provider's own fields, as the store keeps them.
    #[serde(flatten)]
    settings: &'a ProviderSettings,
    client_id: &'a str,
    redirect_uri: &'a str,
    scopes: &'a [String],
    created_at: DateTime<Utc>,
}

/// What sets one app apart from another of its provider: its country, instance or definition.
fn details(settings: &ProviderSettings) -> String {
    match settings {
        ProviderSettings::Twinfield => "-".into(),
        ProviderSettings::ExactOnline { country } => format!("country {}", country.tld()),
        ProviderSettings::Acumatica {
            instance_url,
            tenant,
            ..
        } => format!("{} ({tenant})", instance_url),
        ProviderSettings::Generic { definition } => format!("definition {definition}"),
    }
}

pub async fn run(admin: &Admin, command: AppCommand, out: &mut Output) -> Result<(), Failure> {
    match command {
        AppCommand::Register(args) => register(admin, args, out).await,
        AppCommand::List { tenant, json } => {
            let tenant = crate::existing_tenant(admin, &tenant).await?;
            let apps = admin
                .backend
                .store
                .list_apps(&tenant)
                .await
                .at(&admin.location)?;
            if json {
                let views: Vec<AppView> = apps
                    .iter()
                    .map(|app| AppView {
                        id: app.id.as_str(),
                        settings: &app.settings,
                        client_id: &app.client_id,
                        redirect_uri: app.redirect_uri.as_str(),
                        scopes: &app.scopes,
                        created_at: app.created_at,
                    })
                    .collect();
                return out.json(&views);
            }
            let mut table = Table::new(&[
                "ID",
                "PROVIDER",
                "DETAILS",
                "CLIENT ID",
                "REDIRECT URI",
                "CREATED",
            ]);
            for app in &apps {
                table.row(vec![
                    app.id.to_string(),
                    app.provider().display_name().into(),
                    details(&app.settings),
                    app.client_id.clone(),
                    app.redirect_uri.as_str().into(),
                    when(app.created_at),
                ]);
            }
            if table.is_empty() {
                eprintln!(
                    "tenant {tenant} has no apps: register one with `broker-admin app register`"
                );
            }
            out.table(&table)
        }
    }
}

async fn register(admin: &Admin, args: RegisterApp, out: &mut Output) -> Result<(), Failure> {
    let policy = address_policy(&args)?;
    let tenant = crate::existing_tenant(admin, &args.tenant).await?;
    let app = OAuthApp {
        tenant: tenant.clone(),
        id: AppId::parse(args.id.clone())?,
        settings: provider_settings(&args)?,
        client_id: args.client_id.trim().to_string(),
        redirect_uri: RedirectUri::parse(&args.redirect_uri)?,
        scopes: args.scopes.clone(),
        created_at: Utc::now(),
    };
    // The same rules as the integration API's `POST /v1/apps`, against the catalogue and public
    // URL the functions run with (BROKER_CATALOGUE_FILE, BROKER_PUBLIC_URL).
    let catalogue = Catalogue::from_env()?;
    let public_url = std::env::var("BROKER_PUBLIC_URL")
        .unwrap_or_else(|_| BrokerContext::DEFAULT_PUBLIC_URL.into());
    let rules = AppRules::new(&catalogue, &parse_public_url(&public_url)?, policy);
    match rules.check(&app).await {
        Ok(HostCheck::Allowed) => {}
        Ok(HostCheck::Unresolved { detail }) => eprintln!(
            "warning: {detail}; registering it anyway (every call checks its addresses again)"
        ),
        Err(refused) => return Err(Failure::refused(refused.to_string())),
    }
    let secret = read_client_secret(args.client_secret_file.as_deref())?;
    // Secret first: an app record without its secret would fail every token call.
    admin
        .backend
        .vault
        .put_client_secret(&tenant, &app.id, &secret)
        .await
        .at(&admin.location)?;
    admin
        .backend
        .store
        .put_app(&app)
        .await
        .at(&admin.location)?;
    out.line(format!(
        "registered app {} ({}) for tenant {tenant}",
        app.id,
        app.provider().display_name()
    ))
}

fn provider_settings(args: &RegisterApp) -> Result<ProviderSettings, Failure> {
    let provider = match args.provider.as_str() {
        "twinfield" => ProviderKind::Twinfield,
        "exact" | "exact-online" => ProviderKind::ExactOnline,
        "acumatica" => ProviderKind::Acumatica,
        "generic" => ProviderKind::Generic,
        other => {
            return Err(Failure::refused(format!(
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
            .map_err(|e| Failure::refused(format!("--acumatica-refresh-tokens: {e}")))?,
        definition: args.definition.clone(),
    };
    // The shared rules name fields as the API does; each is the flag of the same name here.
    fields.settings(provider).map_err(|e| {
        Failure::refused(format!(
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
        BackendConfig::Aws { .. } => Err(Failure::refused(
            "--allow-loopback is for local runs on the embedded store: with BROKER_TABLE set the \
             app is for the functions on AWS, which never call loopback addresses. Give the \
             provider's public https URL instead",
        )),
    }
}

fn read_client_secret(file: Option<&std::path::Path>) -> Result<ClientSecret, Failure> {
    let mut raw = String::new();
    match file {
        Some(path) => {
            raw = std::fs::read_to_string(path)
                .map_err(|e| Failure::refused(format!("cannot read {}: {e}", path.display())))?
        }
        None => {
            eprintln!("reading the client secret from standard input…");
            std::io::stdin().read_to_string(&mut raw)?;
        }
    }
    let secret = raw.trim();
    if secret.is_empty() {
        return Err(Failure::refused(
            "the client secret is empty: pipe it in, or pass --client-secret-file",
        ));
    }
    Ok(ClientSecret::new(secret))
}

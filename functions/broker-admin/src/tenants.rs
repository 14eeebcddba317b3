//! `tenant create` and `tenant show`.

use crate::cli::TenantCommand;
use crate::output::{when, Failure, Output};
use crate::store::{Admin, AtStore};
use broker_core::domain::*;
use broker_core::ids::TenantId;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// A tenant as `tenant show --json` prints it.
#[derive(Serialize)]
struct TenantView {
    id: String,
    name: String,
    created_at: DateTime<Utc>,
    logo_url: Option<String>,
    accent_colour: Option<String>,
    locale: Option<String>,
    time_zone: Option<String>,
    return_origins: Vec<String>,
}

impl TenantView {
    fn of(tenant: &Tenant) -> Self {
        let branding = tenant.branding.as_ref();
        TenantView {
            id: tenant.id.to_string(),
            name: tenant.display_name.clone(),
            created_at: tenant.created_at,
            logo_url: branding
                .and_then(|b| b.logo_url.as_ref())
                .map(|l| l.as_str().to_string()),
            accent_colour: branding
                .and_then(|b| b.accent_colour)
                .map(|c| c.to_string()),
            locale: tenant.locale.as_ref().map(|l| l.to_string()),
            time_zone: tenant.time_zone.as_ref().map(|z| z.to_string()),
            return_origins: tenant
                .return_origins
                .iter()
                .map(|o| o.to_string())
                .collect(),
        }
    }
}

pub async fn run(admin: &Admin, command: TenantCommand, out: &mut Output) -> Result<(), Failure> {
    let store = &admin.backend.store;
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
            let mut tenant = Tenant::new(TenantId::parse(&id)?, &name, Utc::now())?;
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
            store.insert_tenant(&tenant).await.at(&admin.location)?;
            out.line(format!(
                "created tenant {} ({})",
                tenant.id, tenant.display_name
            ))?;
        }
        TenantCommand::Show { id, json } => {
            let id = TenantId::parse(&id)?;
            let tenant = store
                .get_tenant(&id)
                .await
                .at(&admin.location)?
                .ok_or_else(|| {
                    Failure::refused(format!(
                        "tenant {id} does not exist in {}: create it with `broker-admin tenant \
                         create {id} --name ...`",
                        admin.location
                    ))
                })?;
            let view = TenantView::of(&tenant);
            if json {
                return out.json(&view);
            }
            let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
            out.field("tenant", &view.id)?;
            out.field("name", &view.name)?;
            out.field("created", when(view.created_at))?;
            out.field("logo", or_dash(&view.logo_url))?;
            out.field("accent colour", or_dash(&view.accent_colour))?;
            out.field("language", or_dash(&view.locale))?;
            out.field("time zone", or_dash(&view.time_zone))?;
            if view.return_origins.is_empty() {
                out.field(
                    "return origins",
                    "none (connections cannot carry a return URL)",
                )?;
            }
            for origin in &view.return_origins {
                out.field("return origin", origin)?;
            }
        }
    }
    Ok(())
}

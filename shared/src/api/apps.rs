//! The tenant's OAuth app registrations (`/v1/apps`): register, read, change, rotate the client
//! secret, delete. Only a key granted `manage_apps` may. The client secret is write-only: it goes to
//! the vault and no answer carries it.

use super::app_rules::{AppRefused, AppRules, ProviderFields};
use super::problem::{ApiError, ProblemKind};
use super::service::{Caller, IntegrationApi};
use crate::domain::{ConnectionStatus, OAuthApp, ProviderKind, RedirectUri};
use crate::ids::{AppId, ConnectionId};
use crate::ports::PageRequest;
use crate::providers::HostCheck;
use crate::secret::ClientSecret;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `POST /v1/apps`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewApp {
    /// The app's id within the tenant, e.g. `acumatica-acme`.
    pub id: String,
    pub provider: ProviderKind,
    #[serde(flatten)]
    pub fields: ProviderFields,
    /// Acumatica: each customer names their own instance and tenant on the connection page before
    /// authorizing; `instance_url` and `acumatica_tenant` are then the registration's example.
    #[serde(default)]
    pub acumatica_instance_per_connection: bool,
    pub client_id: String,
    pub client_secret: ClientSecret,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The broker's callback URL when left out (the only one accepted).
    #[serde(default)]
    pub redirect_uri: Option<String>,
}

/// `PATCH /v1/apps/{id}`: what is given changes, the rest stays. The provider cannot change.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppChanges {
    #[serde(default)]
    pub provider: Option<ProviderKind>,
    #[serde(flatten)]
    pub fields: ProviderFields,
    #[serde(default)]
    pub acumatica_instance_per_connection: Option<bool>,
    #[serde(default)]
    pub client_id: Option<String>,
    /// A new client secret: rotating it at the provider is followed by this.
    #[serde(default)]
    pub client_secret: Option<ClientSecret>,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    #[serde(default)]
    pub redirect_uri: Option<String>,
}

/// An app registration as the API shows it: everything but the client secret.
#[derive(Debug, Clone, Serialize)]
pub struct AppView {
    pub id: String,
    pub provider: ProviderKind,
    #[serde(flatten)]
    pub fields: ProviderFields,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub acumatica_instance_per_connection: bool,
    pub client_id: String,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    /// Whether the vault holds its client secret (without one, every token call fails).
    pub client_secret_set: bool,
    pub created_at: DateTime<Utc>,
    /// What was accepted but deserves a look (an instance URL that does not resolve yet).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl AppView {
    fn of(app: &OAuthApp, client_secret_set: bool) -> Self {
        Self {
            id: app.id.to_string(),
            provider: app.provider(),
            fields: ProviderFields::of(&app.settings),
            acumatica_instance_per_connection: app.settings.instance_per_connection(),
            client_id: app.client_id.clone(),
            redirect_uri: app.redirect_uri.as_str().to_string(),
            scopes: app.scopes.clone(),
            client_secret_set,
            created_at: app.created_at,
            warnings: Vec::new(),
        }
    }
}

/// `GET /v1/apps`.
#[derive(Debug, Clone, Serialize)]
pub struct AppList {
    pub apps: Vec<AppView>,
}

/// How many of the connections that hold an app back a refused delete names.
const CONNECTIONS_NAMED: usize = 5;

impl From<AppRefused> for ApiError {
    fn from(refused: AppRefused) -> Self {
        ApiError::new(ProblemKind::ValidationFailed, refused.0)
    }
}

fn app_not_found() -> ApiError {
    ApiError::new(
        ProblemKind::NotFound,
        "your tenant has no app registration by that id: list them with GET /v1/apps",
    )
}

fn nonempty_secret(secret: &ClientSecret) -> Result<(), ApiError> {
    if secret.expose().trim().is_empty() {
        return Err(ApiError::new(
            ProblemKind::ValidationFailed,
            "client_secret is empty: copy the secret from the provider's app registration",
        ));
    }
    Ok(())
}

impl Caller {
    /// Apps hold the credentials every connection of the tenant authorizes with: only a key granted
    /// exactly that, and reaching the whole tenant, may change them.
    pub(super) fn require_app_management(&self) -> Result<(), ApiError> {
        let scope = &self.key.scope;
        let refusal = if !scope.manage_apps {
            "this API key may not manage app registrations: use a key with the manage_apps scope (broker-admin key create --manage-apps)"
        } else if scope.session_only {
            "this API key is limited to session requests: managing app registrations needs a key without that limit, with the manage_apps scope"
        } else if scope.connections.is_some() {
            "this API key is limited to some connections: managing app registrations needs a key that reaches the whole tenant, with the manage_apps scope"
        } else {
            return Ok(());
        };
        Err(ApiError::new(ProblemKind::Forbidden, refusal))
    }
}

impl IntegrationApi {
    /// An app of the caller's tenant; another tenant's does not exist.
    async fn app_for(&self, caller: &Caller, id: &str) -> Result<OAuthApp, ApiError> {
        let id = AppId::parse(id.trim()).map_err(|_| app_not_found())?;
        self.ctx
            .backend
            .store
            .get_app(caller.tenant(), &id)
            .await
            .map_err(|e| ApiError::internal("the app registration could not be read", e))?
            .ok_or_else(app_not_found)
    }

    async fn secret_set(&self, app: &OAuthApp) -> Result<bool, ApiError> {
        let secret = self
            .ctx
            .backend
            .vault
            .get_client_secret(&app.tenant, &app.id)
            .await
            .map_err(|e| ApiError::internal("the app's client secret could not be checked", e))?;
        Ok(secret.is_some())
    }

    /// Checks `app`, then stores it, the secret first: an app record without its secret would fail
    /// every token call.
    async fn keep_app(
        &self,
        app: &OAuthApp,
        secret: Option<&ClientSecret>,
    ) -> Result<AppView, ApiError> {
        let check = AppRules::of(&self.ctx).check(app).await?;
        let store = &self.ctx.backend;
        if let Some(secret) = secret {
            store
                .vault
                .put_client_secret(&app.tenant, &app.id, secret)
                .await
                .map_err(|e| {
                    ApiError::internal("the app's client secret could not be stored", e)
                })?;
        }
        store
            .store
            .put_app(app)
            .await
            .map_err(|e| ApiError::internal("the app registration could not be stored", e))?;
        let mut view = AppView::of(app, true);
        if let HostCheck::Unresolved { detail } = check {
            view.warnings
                .push(format!("{detail}; every call checks its addresses again"));
        }
        Ok(view)
    }

    pub async fn register_app(
        &self,
        caller: &Caller,
        request: NewApp,
    ) -> Result<AppView, ApiError> {
        caller.require_app_management()?;
        let invalid = |detail: String| ApiError::new(ProblemKind::ValidationFailed, detail);
        let id = AppId::parse(request.id.trim()).map_err(|e| invalid(format!("id: {e}")))?;
        nonempty_secret(&request.client_secret)?;
        let redirect_uri = match request.redirect_uri.as_deref() {
            Some(uri) => RedirectUri::parse(uri.trim()),
            None => RedirectUri::parse(AppRules::of(&self.ctx).callback_url.as_str()),
        }
        .map_err(|e| invalid(e.message))?;
        let app = OAuthApp {
            tenant: caller.tenant().clone(),
            id,
            settings: request
                .fields
                .settings(request.provider)?
                .with_instance_per_connection(request.acumatica_instance_per_connection)
                .map_err(AppRefused::from)?,
            client_id: request.client_id.trim().to_string(),
            redirect_uri,
            scopes: request.scopes,
            created_at: self.ctx.clock.now(),
        };
        let existing = self
            .ctx
            .backend
            .store
            .get_app(&app.tenant, &app.id)
            .await
            .map_err(|e| ApiError::internal("the app registration could not be read", e))?;
        if existing.is_some() {
            return Err(ApiError::new(
                ProblemKind::AppExists,
                format!(
                    "your tenant already has an app {:?}: change it with PATCH /v1/apps/{}, or register this one under another id",
                    app.id.as_str(),
                    app.id
                ),
            ));
        }
        let view = self.keep_app(&app, Some(&request.client_secret)).await?;
        tracing::info!(key_prefix = caller.prefix(), app = %app.id, provider = ?app.provider(), "app registered");
        Ok(view)
    }

    pub async fn get_app(&self, caller: &Caller, id: &str) -> Result<AppView, ApiError> {
        caller.require_app_management()?;
        let app = self.app_for(caller, id).await?;
        Ok(AppView::of(&app, self.secret_set(&app).await?))
    }

    pub async fn list_apps(&self, caller: &Caller) -> Result<AppList, ApiError> {
        caller.require_app_management()?;
        let apps = self
            .ctx
            .backend
            .store
            .list_apps(caller.tenant())
            .await
            .map_err(|e| ApiError::internal("the app registrations could not be listed", e))?;
        let mut views = Vec::with_capacity(apps.len());
        for app in &apps {
            views.push(AppView::of(app, self.secret_set(app).await?));
        }
        Ok(AppList { apps: views })
    }

    /// Changes what is given and checks the result as a new registration would be checked.
    pub async fn update_app(
        &self,
        caller: &Caller,
        id: &str,
        changes: AppChanges,
    ) -> Result<AppView, ApiError> {
        caller.require_app_management()?;
        let mut app = self.app_for(caller, id).await?;
        let invalid = |detail: String| ApiError::new(ProblemKind::ValidationFailed, detail);
        if let Some(provider) = changes.provider.filter(|p| *p != app.provider()) {
            return Err(invalid(format!(
                "app {} is for {}, and an app's provider cannot change to {}: register a new app for it",
                app.id,
                app.provider().display_name(),
                provider.display_name()
            )));
        }
        // The fields do not carry the per-customer choice: it is kept unless changed, so a change
        // of, say, the refresh-token mode never sends connections to the registration's example.
        let per_connection = changes
            .acumatica_instance_per_connection
            .unwrap_or(app.settings.instance_per_connection());
        app.settings = ProviderFields::of(&app.settings)
            .overlaid(changes.fields)
            .settings(app.provider())?
            .with_instance_per_connection(per_connection)
            .map_err(AppRefused::from)?;
        if let Some(client_id) = changes.client_id {
            app.client_id = client_id.trim().to_string();
        }
        if let Some(scopes) = changes.scopes {
            app.scopes = scopes;
        }
        if let Some(uri) = changes.redirect_uri {
            app.redirect_uri = RedirectUri::parse(uri.trim()).map_err(|e| invalid(e.message))?;
        }
        if let Some(secret) = &changes.client_secret {
            nonempty_secret(secret)?;
        }
        let mut view = self.keep_app(&app, changes.client_secret.as_ref()).await?;
        if changes.client_secret.is_none() {
            view.client_secret_set = self.secret_set(&app).await?;
        }
        tracing::info!(key_prefix = caller.prefix(), app = %app.id, secret_rotated = changes.client_secret.is_some(), "app changed");
        Ok(view)
    }

    /// Deletes an app no connection needs any more: while one that is not disconnected uses it, the
    /// delete is refused (its next refresh would fail for want of the app). The secret goes first, so
    /// that a failure half way leaves a record to delete again rather than a secret nobody can find.
    pub async fn delete_app(&self, caller: &Caller, id: &str) -> Result<(), ApiError> {
        caller.require_app_management()?;
        let app = self.app_for(caller, id).await?;
        let users = self.connections_using(caller, &app).await?;
        if !users.is_empty() {
            let named: Vec<&str> = users
                .iter()
                .take(CONNECTIONS_NAMED)
                .map(|c| c.as_str())
                .collect();
            let more = users.len().saturating_sub(CONNECTIONS_NAMED);
            return Err(ApiError::new(
                ProblemKind::AppInUse,
                format!(
                    "app {} is used by {} connection(s) that are not disconnected ({}{}): disconnect them (DELETE /v1/connections/{{id}}) first, then delete the app",
                    app.id,
                    users.len(),
                    named.join(", "),
                    if more > 0 { format!(" and {more} more") } else { String::new() }
                ),
            ));
        }
        let backend = &self.ctx.backend;
        backend
            .vault
            .delete_client_secret(&app.tenant, &app.id)
            .await
            .map_err(|e| ApiError::internal("the app's client secret could not be deleted", e))?;
        backend
            .store
            .delete_app(&app.tenant, &app.id)
            .await
            .map_err(|e| ApiError::internal("the app registration could not be deleted", e))?;
        tracing::info!(key_prefix = caller.prefix(), app = %app.id, "app deleted");
        Ok(())
    }

    /// The tenant's connections through `app` that are not disconnected.
    async fn connections_using(
        &self,
        caller: &Caller,
        app: &OAuthApp,
    ) -> Result<Vec<ConnectionId>, ApiError> {
        let mut users = Vec::new();
        let mut cursor = None;
        loop {
            let page = self
                .ctx
                .backend
                .store
                .list_connections(caller.tenant(), PageRequest::after(200, cursor))
                .await
                .map_err(|e| ApiError::internal("the app's connections could not be listed", e))?;
            users.extend(
                page.items
                    .iter()
                    .filter(|c| c.app == app.id && c.status() != ConnectionStatus::Disconnected)
                    .map(|c| c.id.clone()),
            );
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(users),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_body_refuses_unknown_fields_and_never_shows_its_secret() {
        let body = serde_json::json!({
            "id": "acu", "provider": "acumatica", "instance_url": "https://acme.acumatica.com",
            "acumatica_tenant": "Company", "client_id": "x@Company", "client_secret": "SENTINEL-secret"
        });
        let parsed: NewApp = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(parsed.fields.acumatica_tenant.as_deref(), Some("Company"));
        assert!(!format!("{parsed:?}").contains("SENTINEL"));
        let mut misspelt = body;
        misspelt["instance_uri"] = "https://acme.acumatica.com".into();
        let refused = serde_json::from_value::<NewApp>(misspelt).unwrap_err();
        assert!(refused.to_string().contains("instance_uri"), "{refused}");
        let refused =
            serde_json::from_value::<AppChanges>(serde_json::json!({"secret": "x"})).unwrap_err();
        assert!(refused.to_string().contains("unknown field"), "{refused}");
    }
}

//! The customer's choice of division after an Exact Online authorization that grants several, for a
//! connection the integration created without naming one.
//!
//! The tokens never wait on the person: the callback stores them (vault first, as always) with the
//! connection bound provisionally (`CurrentDivision` when granted, else the lowest granted code) and a
//! [`DivisionChoice`] on the record. The success page then offers the granted divisions in a form
//! carrying a single-use value; the choice is accepted once, from the browser that authorized (a
//! cookie whose hash the record holds), within [`DIVISION_CHOICE_LIFETIME`], and written under the
//! refresh lease so a refresh in flight cannot be overwritten. Only the binding changes.

use super::browser::is_local_http;
use super::{BrowserCookies, ConnectError, ConnectFailure, ConnectFlow, SetCookies};
use crate::domain::{
    new_one_time_secret, Connection, DivisionChoice, ExactDivision, OneTimeKey, ProviderContext,
    ProviderKind,
};
use crate::ids::{ConnectionId, LeaseOwner};
use crate::ports::{Fence, LeaseAttempt};
use crate::secret::OneTimeSecret;
use chrono::{DateTime, Duration, Utc};
use std::fmt;
use subtle::ConstantTimeEq;
use url::Url;

pub use super::browser::DIVISION_COOKIE;

/// How long the page's offer stands. The connection works meanwhile, in the provisional division.
pub const DIVISION_CHOICE_LIFETIME: Duration = Duration::minutes(15);

/// The offer the success page shows.
#[derive(Debug, Clone)]
pub struct DivisionOffer {
    /// Where the form posts to.
    pub action: Url,
    pub connection: ConnectionId,
    /// The form's single-use value (only its hash is stored).
    pub ticket: OneTimeSecret,
    /// Binds the offer to this browser.
    pub cookies: SetCookies,
    /// The provisional binding.
    pub bound: i64,
    pub granted: Vec<ExactDivision>,
}

/// The form's fields, as posted.
#[derive(Clone, Default, serde::Deserialize)]
pub struct DivisionForm {
    #[serde(default)]
    pub connection: String,
    #[serde(default)]
    pub ticket: String,
    #[serde(default)]
    pub division: String,
}

impl fmt::Debug for DivisionForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DivisionForm")
            .field("connection", &self.connection)
            .field("ticket", &"[redacted]")
            .field("division", &self.division)
            .finish()
    }
}

/// A choice made.
#[derive(Debug, Clone)]
pub struct DivisionChosen {
    pub connection: ConnectionId,
    pub display_name: Option<String>,
    pub context: ProviderContext,
    pub audience: super::Audience,
}

impl ConnectFlow {
    /// An offer when the binding of a first authorization was a guess among several granted
    /// divisions: the record to store with the connection, and what the page shows.
    pub(super) fn division_offer(
        &self,
        before: &Connection,
        context: &ProviderContext,
        now: DateTime<Utc>,
    ) -> Option<(DivisionChoice, DivisionOffer)> {
        let ProviderContext::ExactOnline {
            division,
            divisions,
            ..
        } = context
        else {
            return None;
        };
        if before.context.is_some() || before.requested_division.is_some() || divisions.len() < 2 {
            return None;
        }
        let (ticket, ticket_key) = new_one_time_secret();
        let (binding, binding_key) = new_one_time_secret();
        let action = self.ctx.public_url("connect/division");
        let secure = if is_local_http(&self.ctx.public_base_url) {
            ""
        } else {
            "; Secure"
        };
        // Strict: the choice is posted from the broker's own page, never from another site.
        let cookie = format!(
            "{DIVISION_COOKIE}={}; Path={}; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
            binding.expose(),
            action.path(),
            DIVISION_CHOICE_LIFETIME.num_seconds()
        );
        let choice = DivisionChoice {
            ticket: ticket_key,
            browser_binding: binding_key,
            expires_at: now + DIVISION_CHOICE_LIFETIME,
        };
        let offer = DivisionOffer {
            action,
            connection: before.id.clone(),
            ticket,
            cookies: SetCookies(vec![cookie]),
            bound: *division,
            granted: divisions.clone(),
        };
        Some((choice, offer))
    }

    /// `Set-Cookie` values that remove the choice's cookie.
    pub fn clearing_division_cookie(&self) -> SetCookies {
        let path = self.ctx.public_url("connect/division").path().to_string();
        SetCookies(vec![format!(
            "{DIVISION_COOKIE}=; Path={path}; Max-Age=0; HttpOnly; SameSite=Strict"
        )])
    }

    /// The customer chose a division on the page after the authorization.
    pub async fn choose_division(
        &self,
        form: &DivisionForm,
        cookies: &BrowserCookies,
    ) -> Result<DivisionChosen, ConnectFailure> {
        let (id, choice, bound, chosen) = self.open_choice(form, cookies).await?;
        let saved = self.record_choice(&id, &choice, chosen).await?;
        tracing::info!(
            connection = %id.as_str(),
            from = bound,
            division = chosen,
            "division chosen"
        );
        let tenant = self.ctx.backend.store.get_tenant(&saved.tenant).await?;
        let audience = super::Audience::of(&saved, tenant.as_ref());
        let context = saved
            .context
            .ok_or_else(|| fail(ConnectError::DivisionChoiceUnknown))?;
        Ok(DivisionChosen {
            connection: saved.id,
            display_name: saved.display_name,
            context,
            audience,
        })
    }

    /// The choice the form answers, if it is still open, this browser's, and names a granted
    /// division: the connection, the open choice, the division bound so far and the chosen one.
    async fn open_choice(
        &self,
        form: &DivisionForm,
        cookies: &BrowserCookies,
    ) -> Result<(ConnectionId, DivisionChoice, i64, i64), ConnectFailure> {
        let id = ConnectionId::parse(form.connection.trim()).map_err(|_| {
            fail(ConnectError::MalformedRequest(
                "it names no connection".into(),
            ))
        })?;
        let connection = self
            .ctx
            .backend
            .store
            .get_connection(&id)
            .await?
            .ok_or_else(|| fail(ConnectError::DivisionChoiceUnknown))?;
        let Some(choice) = connection.division_choice.clone() else {
            return Err(fail(ConnectError::DivisionChoiceUnknown));
        };
        if !matches_key(&form.ticket, &choice.ticket) {
            return Err(fail(ConnectError::DivisionChoiceUnknown));
        }
        let Some(ProviderContext::ExactOnline {
            division: bound,
            divisions,
            ..
        }) = &connection.context
        else {
            return Err(fail(ConnectError::DivisionChoiceUnknown));
        };
        if self.ctx.clock.now() >= choice.expires_at {
            return Err(fail(ConnectError::DivisionChoiceClosed { bound: *bound }));
        }
        let same_browser = cookies
            .division
            .as_ref()
            .is_some_and(|b| matches_key(b.expose(), &choice.browser_binding));
        if !same_browser {
            tracing::info!(connection = %id.as_str(), reason = "wrong_browser", "division choice refused");
            return Err(fail(ConnectError::WrongBrowser));
        }
        let chosen = form
            .division
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|d| divisions.iter().any(|g| g.code == *d))
            .ok_or_else(|| {
                fail(ConnectError::MalformedRequest(
                    "the chosen division is not one this authorization gives access to".into(),
                ))
            })?;
        Ok((id, choice, *bound, chosen))
    }

    /// Binds the connection to the chosen division and closes the choice, under the refresh lease: a
    /// refresh in flight keeps its fenced writes, and of two posts of one form exactly one finds the
    /// choice still open.
    async fn record_choice(
        &self,
        id: &ConnectionId,
        choice: &DivisionChoice,
        chosen: i64,
    ) -> Result<Connection, ConnectFailure> {
        let store = &self.ctx.backend.store;
        let now = self.ctx.clock.now();
        let owner = LeaseOwner::generate();
        let mut leased = match store
            .acquire_lease(id, &owner, now, Duration::seconds(30))
            .await?
        {
            LeaseAttempt::Acquired(c) => c,
            LeaseAttempt::Busy { .. } => return Err(fail(ConnectError::Conflict)),
            LeaseAttempt::Missing => return Err(fail(ConnectError::DivisionChoiceUnknown)),
        };
        let result = async {
            if leased.division_choice.as_ref() != Some(choice) {
                return Err(fail(ConnectError::DivisionChoiceUnknown));
            }
            if let Some(ProviderContext::ExactOnline { division, .. }) = &mut leased.context {
                *division = chosen;
            }
            leased.division_choice = None;
            leased.updated_at = now;
            store
                .save_connection(&leased, Fence::LeaseReleased(&owner), &[])
                .await
                .map_err(|e| fail(e.into()))
        }
        .await;
        if result.is_err() {
            if let Err(e) = store.release_lease(id, &owner).await {
                tracing::warn!(connection = %id.as_str(), error = %e, "could not release the lease; it will expire");
            }
        }
        result
    }
}

/// A refused division choice: only Exact Online connections offer one, and nothing is offered again.
fn fail(error: ConnectError) -> ConnectFailure {
    ConnectFailure {
        error,
        provider: Some(ProviderKind::ExactOnline),
        try_again: None,
        state_consumed: false,
        audience: None,
    }
}

fn matches_key(presented: &str, stored: &OneTimeKey) -> bool {
    let presented = presented.trim();
    if presented.is_empty() || presented.len() > 128 {
        return false;
    }
    let key = OneTimeKey::of(&OneTimeSecret::new(presented));
    bool::from(key.as_str().as_bytes().ct_eq(stored.as_str().as_bytes()))
}

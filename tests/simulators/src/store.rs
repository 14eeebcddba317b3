//! The OAuth state common to the three providers: pending consents, authorization codes, grants and
//! the tokens issued under them. Provider modules decide the rules; this module only keeps records,
//! so rules like "Exact refresh tokens are single use" live next to the provider they belong to.

use crate::accounts::Provider;
use crate::util::{pkce_s256, random_token, token_hash};
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use std::collections::HashMap;

/// A validated authorization request, waiting for consent or turned into a code.
#[derive(Debug, Clone)]
pub(crate) struct AuthRequest {
    pub provider: Provider,
    /// Country for Exact, instance for Acumatica, empty for Twinfield.
    pub location: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub state: String,
    pub scope: String,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct CodeRecord {
    pub request: AuthRequest,
    pub user: String,
    pub expires_at: DateTime<Utc>,
    pub used: bool,
}

/// An `authorization_code` token request, as the token endpoint received it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CodeExchange<'a> {
    pub provider: Provider,
    pub location: &'a str,
    pub client_id: &'a str,
    pub code: &'a str,
    pub redirect_uri: Option<&'a str>,
    pub verifier: Option<&'a str>,
}

impl<'a> CodeExchange<'a> {
    pub fn from_form(
        provider: Provider,
        location: &'a str,
        client_id: &'a str,
        form: &'a HashMap<String, String>,
    ) -> Self {
        let field = |k: &str| form.get(k).map(String::as_str);
        Self {
            provider,
            location,
            client_id,
            code: field("code").unwrap_or_default(),
            redirect_uri: field("redirect_uri"),
            verifier: field("code_verifier"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CodeError {
    Unknown,
    Used,
    Expired,
    ClientMismatch,
    RedirectMismatch,
    VerifierMissing,
    VerifierMismatch,
}

impl CodeError {
    pub fn describe(self) -> &'static str {
        match self {
            CodeError::Unknown => "The authorization code is unknown.",
            CodeError::Used => "The authorization code has already been used.",
            CodeError::Expired => "The authorization code has expired.",
            CodeError::ClientMismatch => "The authorization code was issued to another client.",
            CodeError::RedirectMismatch => {
                "The redirect_uri does not match the one of the authorization request."
            }
            CodeError::VerifierMissing => {
                "code_verifier is required: the authorization request carried a code_challenge."
            }
            CodeError::VerifierMismatch => "code_verifier does not match the code_challenge.",
        }
    }
}

/// One user's authorization of one client: the thing a revocation ends.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub provider: Provider,
    pub location: String,
    pub client_id: String,
    pub user: String,
    pub scope: String,
    pub first_issued_at: DateTime<Utc>,
    /// When the latest access token was issued (Exact's 570-second rule).
    pub last_issued_at: DateTime<Utc>,
    pub revoked: bool,
    /// Exact Online's division scoping: the divisions the user's consent gave this app, when the
    /// user restricted it (`None`: every division the user can reach).
    pub division_scope: Option<Vec<i64>>,
}

#[derive(Debug, Clone)]
pub(crate) struct AccessRecord {
    pub grant_id: u64,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub(crate) struct RefreshRecord {
    pub grant_id: u64,
    pub expires_at: DateTime<Utc>,
    /// Set when a rotating provider exchanged it for a new one.
    pub spent_at: Option<DateTime<Utc>>,
    pub presentations: u32,
}

/// A currently valid access token, as reported by inspection.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AccessTokenInfo {
    pub token: String,
    pub provider: Provider,
    pub location: String,
    pub client_id: String,
    pub user: String,
    pub scope: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Default)]
pub(crate) struct OAuthStore {
    pub pending: HashMap<String, (AuthRequest, DateTime<Utc>)>,
    pub codes: HashMap<String, CodeRecord>,
    pub grants: HashMap<u64, Grant>,
    next_grant: u64,
    pub access: HashMap<String, AccessRecord>,
    pub refresh: HashMap<String, RefreshRecord>,
}

impl OAuthStore {
    pub fn add_pending(&mut self, request: AuthRequest, now: DateTime<Utc>) -> String {
        // Abandoned consent pages would otherwise pile up in a long-running sandbox.
        self.pending
            .retain(|_, (_, at)| now - *at < Duration::hours(1));
        let id = random_token("req_");
        self.pending.insert(id.clone(), (request, now));
        id
    }

    pub fn issue_code(
        &mut self,
        request: AuthRequest,
        user: String,
        expires_at: DateTime<Utc>,
    ) -> String {
        let code = random_token(&format!("{}_code_", request.provider.as_str()));
        self.codes.insert(
            code.clone(),
            CodeRecord {
                request,
                user,
                expires_at,
                used: false,
            },
        );
        code
    }

    /// Checks and spends a code. A code is spent on its first presentation even when the rest of
    /// the request fails, as IdentityServer does, so a retry can never succeed with it.
    pub fn redeem_code(
        &mut self,
        ask: &CodeExchange<'_>,
        now: DateTime<Utc>,
    ) -> Result<CodeRecord, CodeError> {
        let CodeExchange {
            provider,
            location,
            client_id,
            code,
            redirect_uri,
            verifier,
        } = *ask;
        let record = self.codes.get_mut(code).ok_or(CodeError::Unknown)?;
        let r = &record.request;
        if r.provider != provider || r.location != location {
            return Err(CodeError::Unknown);
        }
        if record.used {
            return Err(CodeError::Used);
        }
        record.used = true;
        if now >= record.expires_at {
            return Err(CodeError::Expired);
        }
        if r.client_id != client_id {
            return Err(CodeError::ClientMismatch);
        }
        if redirect_uri != Some(r.redirect_uri.as_str()) {
            return Err(CodeError::RedirectMismatch);
        }
        if let Some(challenge) = &r.code_challenge {
            let verifier = verifier.ok_or(CodeError::VerifierMissing)?;
            if &pkce_s256(verifier) != challenge {
                return Err(CodeError::VerifierMismatch);
            }
        }
        Ok(record.clone())
    }

    pub fn new_grant(&mut self, code: &CodeRecord, now: DateTime<Utc>) -> u64 {
        self.next_grant += 1;
        let r = &code.request;
        let grant = Grant {
            provider: r.provider,
            location: r.location.clone(),
            client_id: r.client_id.clone(),
            user: code.user.clone(),
            scope: r.scope.clone(),
            first_issued_at: now,
            last_issued_at: now,
            revoked: false,
            division_scope: None,
        };
        self.grants.insert(self.next_grant, grant);
        self.next_grant
    }

    pub fn issue_access(
        &mut self,
        grant_id: u64,
        now: DateTime<Utc>,
        lifetime: Duration,
    ) -> String {
        let grant = self.grants.get_mut(&grant_id).expect("grant exists");
        grant.last_issued_at = now;
        let token = random_token(&format!("{}_at_", grant.provider.as_str()));
        self.access.insert(
            token.clone(),
            AccessRecord {
                grant_id,
                issued_at: now,
                expires_at: now + lifetime,
            },
        );
        token
    }

    pub fn issue_refresh(&mut self, grant_id: u64, expires_at: DateTime<Utc>) -> String {
        let provider = self.grants[&grant_id].provider;
        let token = random_token(&format!("{}_rt_", provider.as_str()));
        let record = RefreshRecord {
            grant_id,
            expires_at,
            spent_at: None,
            presentations: 0,
        };
        self.refresh.insert(token.clone(), record);
        token
    }

    /// Looks a refresh token up and counts the presentation (only tokens ever issued are counted).
    pub fn present_refresh(
        &mut self,
        provider: Provider,
        token: &str,
    ) -> Option<(RefreshRecord, Grant)> {
        let record = self.refresh.get_mut(token)?;
        let grant = self.grants.get(&record.grant_id)?;
        if grant.provider != provider {
            return None;
        }
        record.presentations += 1;
        Some((record.clone(), grant.clone()))
    }

    /// The grant behind a bearer token, if the token is live and the grant not revoked.
    pub fn live_access(&self, token: &str, now: DateTime<Utc>) -> Option<&Grant> {
        let record = self.access.get(token)?;
        let grant = self.grants.get(&record.grant_id)?;
        (now < record.expires_at && !grant.revoked).then_some(grant)
    }

    pub fn access_record(&self, token: &str) -> Option<&AccessRecord> {
        self.access.get(token)
    }

    pub fn revoke(&mut self, provider: Provider, user: &str, client_id: Option<&str>) -> usize {
        let mut count = 0;
        for grant in self.grants.values_mut() {
            let matches = grant.provider == provider
                && grant.user == user
                && client_id.is_none_or(|c| c == grant.client_id)
                && !grant.revoked;
            if matches {
                grant.revoked = true;
                count += 1;
            }
        }
        count
    }

    pub fn valid_access_tokens(&self, now: DateTime<Utc>) -> Vec<AccessTokenInfo> {
        let mut list: Vec<AccessTokenInfo> = self
            .access
            .iter()
            .filter_map(|(token, record)| {
                let grant = self.live_access(token, now)?;
                Some(AccessTokenInfo {
                    token: token.clone(),
                    provider: grant.provider,
                    location: grant.location.clone(),
                    client_id: grant.client_id.clone(),
                    user: grant.user.clone(),
                    scope: grant.scope.clone(),
                    expires_at: record.expires_at,
                })
            })
            .collect();
        list.sort_by_key(|i| i.expires_at);
        list
    }

    pub fn presentations(&self) -> HashMap<String, u32> {
        self.refresh
            .iter()
            .map(|(t, r)| (token_hash(t), r.presentations))
            .collect()
    }
}

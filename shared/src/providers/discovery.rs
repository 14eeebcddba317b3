//! After authorization: where the connection's data lives and who authorized it.

use super::catalogue::DiscoveryStep;
use super::error::{tidy, ErrorClass, Operation, ProviderError, Redactor};
use super::id_token::IdTokenClaims;
use super::oauth::{Authorized, OAuthClient};
use crate::domain::{ExactDivision, Identity, ProviderContext, ProviderSettings, ServiceUrl};
use crate::secret::AccessToken;
use serde_json::{Map, Value};
use url::Url;

/// What the discovery step found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    pub context: ProviderContext,
    /// Who authorized, when the provider tells.
    pub identity: Option<Identity>,
}

/// How many pages of `system/Divisions` to read (Exact pages at 60 rows: 3,000 divisions), so a
/// provider answering `__next` for ever cannot hold a sign-in.
const MAX_DIVISION_PAGES: usize = 50;

impl OAuthClient {
    /// Runs the definition's discovery step with the freshly exchanged tokens.
    pub async fn discover(&self, authorized: &Authorized) -> Result<Discovered, ProviderError> {
        self.discover_for(authorized, &[]).await
    }

    /// Discovery for a connection that already knows divisions (Exact Online: the bound one, or the
    /// one the integration named): `system/Divisions` is tried through them when `CurrentDivision`
    /// is refused.
    pub async fn discover_for(
        &self,
        authorized: &Authorized,
        division_hints: &[i64],
    ) -> Result<Discovered, ProviderError> {
        let access = &authorized.tokens.access_token;
        let id_claims = authorized.id_token.as_ref();
        match self.provider.definition.discovery {
            DiscoveryStep::TwinfieldAccessTokenValidation => {
                let claims = self.twinfield_claims(access).await?;
                let cluster = |url: &str| self.provider.reported_service_url(url);
                let mut found = twinfield_discovery(&claims, &cluster)
                    .map_err(|why| self.discovery_error(ErrorClass::Unexpected, why))?;
                if let (Some(identity), Some(name)) =
                    (&mut found.identity, id_claims.and_then(|c| c.name.clone()))
                {
                    identity.display_name = Some(name);
                }
                Ok(found)
            }
            DiscoveryStep::ExactCurrentMe => {
                let url = self
                    .provider
                    .endpoints
                    .current_user
                    .clone()
                    .expect("validated: exact definitions have current_user");
                let me = self
                    .get_json(Operation::Discovery, url, Some(access), &redactor(access))
                    .await?;
                let base_url = self.provider.base_url.clone().ok_or_else(|| {
                    self.discovery_error(
                        ErrorClass::Unexpected,
                        "the Exact Online definition has no base_url".into(),
                    )
                })?;
                let mut found = exact_discovery(&me, base_url.clone())
                    .map_err(|why| self.discovery_error(ErrorClass::Unexpected, why))?;
                if let ProviderContext::ExactOnline {
                    division,
                    divisions,
                    ..
                } = &mut found.context
                {
                    *divisions = self
                        .exact_granted_divisions(access, &base_url, *division, division_hints)
                        .await?;
                }
                Ok(found)
            }
            DiscoveryStep::Acumatica => {
                let ProviderSettings::Acumatica {
                    tenant,
                    instance_url,
                    ..
                } = &self.provider.settings
                else {
                    return Err(
                        self.discovery_error(ErrorClass::Unexpected, "not an Acumatica app".into())
                    );
                };
                let instance_url = self
                    .provider
                    .base_url
                    .clone()
                    .unwrap_or_else(|| instance_url.clone());
                let identity = self
                    .userinfo_identity(access)
                    .await?
                    .or_else(|| identity_from_id_token(id_claims));
                Ok(Discovered {
                    context: ProviderContext::Acumatica {
                        instance_url,
                        tenant: tenant.clone(),
                    },
                    identity,
                })
            }
            DiscoveryStep::Userinfo => {
                let identity = self
                    .userinfo_identity(access)
                    .await?
                    .or_else(|| identity_from_id_token(id_claims));
                Ok(Discovered {
                    context: ProviderContext::Generic { account: None },
                    identity,
                })
            }
            DiscoveryStep::None => Ok(Discovered {
                context: ProviderContext::Generic { account: None },
                identity: identity_from_id_token(id_claims),
            }),
        }
    }

    /// The divisions the authorization grants: Exact's `system/Divisions`, which lists only those
    /// (division scoping). Its URL names a division; whether Exact checks that one is not settled
    /// (see the simulator's `exact_api` module), so it is asked through `CurrentDivision` first and,
    /// when that is refused (403), through each division the connection already knows. Refused
    /// through all of them: an empty list, which binding turns into a clear refusal.
    async fn exact_granted_divisions(
        &self,
        access: &AccessToken,
        base_url: &ServiceUrl,
        current: i64,
        hints: &[i64],
    ) -> Result<Vec<ExactDivision>, ProviderError> {
        let mut tried = Vec::new();
        for through in std::iter::once(current).chain(hints.iter().copied()) {
            if tried.contains(&through) {
                continue;
            }
            tried.push(through);
            let first = format!(
                "{}/api/v1/{through}/system/Divisions?$select=Code,Description",
                base_url.base()
            );
            let mut next = Some(Url::parse(&first).map_err(|e| {
                self.discovery_error(ErrorClass::Unexpected, format!("system/Divisions URL: {e}"))
            })?);
            let mut granted = Vec::new();
            let mut pages = 0;
            while let Some(url) = next.take() {
                pages += 1;
                let page = match self
                    .get_json(Operation::Discovery, url, Some(access), &redactor(access))
                    .await
                {
                    Ok(page) => page,
                    Err(e) if e.status == Some(403) && pages == 1 => {
                        tracing::info!(
                            provider = ?self.kind(),
                            division = through,
                            "system/Divisions refused through this division; trying the next known one"
                        );
                        break;
                    }
                    Err(e) => return Err(e),
                };
                let (rows, more) = exact_divisions_page(&page)
                    .map_err(|why| self.discovery_error(ErrorClass::Unexpected, why))?;
                granted.extend(rows);
                // Only follow a next page on the same origin: the access token goes with it.
                next = match more {
                    Some(link) if pages < MAX_DIVISION_PAGES => Some(
                        Url::parse(&self.provider.rewrite(&link))
                            .ok()
                            .filter(|u| u.origin() == base_url.as_url().origin())
                            .ok_or_else(|| {
                                self.discovery_error(
                                    ErrorClass::Unexpected,
                                    "system/Divisions names a next page on another host".into(),
                                )
                            })?,
                    ),
                    _ => None,
                };
                if next.is_none() {
                    granted.sort_by_key(|d: &ExactDivision| d.code);
                    granted.dedup_by_key(|d| d.code);
                    return Ok(granted);
                }
            }
        }
        Ok(Vec::new())
    }

    fn discovery_error(&self, class: ErrorClass, detail: String) -> ProviderError {
        ProviderError::new(class, self.kind(), Operation::Discovery, detail)
    }

    async fn twinfield_claims(
        &self,
        access: &AccessToken,
    ) -> Result<Map<String, Value>, ProviderError> {
        let mut url = self
            .provider
            .endpoints
            .token_validation
            .clone()
            .expect("validated: twinfield definitions have token_validation");
        url.query_pairs_mut().append_pair("token", access.expose());
        self.get_json(Operation::Discovery, url, None, &redactor(access))
            .await
    }

    /// Identity from the userinfo endpoint. A refusal (4xx) or an unusable answer means "not available";
    /// an outage or rate limit is an error, so the caller can try again.
    async fn userinfo_identity(
        &self,
        access: &AccessToken,
    ) -> Result<Option<Identity>, ProviderError> {
        let Some(url) = self.endpoints().await?.userinfo.clone() else {
            return Ok(None);
        };
        match self
            .get_json(Operation::Discovery, url, Some(access), &redactor(access))
            .await
        {
            Ok(claims) => Ok(identity_from_userinfo(&claims)),
            Err(e)
                if matches!(
                    e.class,
                    ErrorClass::ProviderUnavailable | ErrorClass::RateLimited
                ) =>
            {
                Err(e)
            }
            Err(e) => {
                tracing::info!(provider = ?self.kind(), error = %e, "userinfo gave no identity");
                Ok(None)
            }
        }
    }
}

fn redactor(access: &AccessToken) -> Redactor {
    let mut r = Redactor::default();
    r.add(access.expose());
    r
}

fn text(claims: &Map<String, Value>, key: &str) -> Option<String> {
    match claims.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(tidy(s, 500)),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Twinfield's `accesstokenvalidation` claims: cluster, organisation and user. `cluster` checks the
/// reported cluster URL against the allow-list and applies the base-URL overrides.
pub fn twinfield_discovery(
    claims: &Map<String, Value>,
    cluster: &dyn Fn(&str) -> Result<ServiceUrl, String>,
) -> Result<Discovered, String> {
    let reported =
        text(claims, "twf.clusterUrl").ok_or("the token validation has no twf.clusterUrl")?;
    let cluster_url = cluster(&reported).map_err(|e| format!("twf.clusterUrl: {e}"))?;
    let organisation_code = text(claims, "twf.organisationCode")
        .ok_or("the token validation has no twf.organisationCode")?;
    let organisation_id = text(claims, "twf.organisationId");
    let identity =
        text(claims, "twf.organisationUserCode").and_then(|code| Identity::new(code).ok());
    Ok(Discovered {
        context: ProviderContext::Twinfield {
            cluster_url,
            organisation_code,
            organisation_id,
        },
        identity,
    })
}

/// Exact Online's `current/Me`: `{"d":{"results":[{"CurrentDivision":…,"UserID":…,"FullName":…}]}}`.
pub fn exact_discovery(
    me: &Map<String, Value>,
    base_url: ServiceUrl,
) -> Result<Discovered, String> {
    let d = me
        .get("d")
        .and_then(Value::as_object)
        .ok_or("current/Me has no \"d\" object")?;
    let user = match d.get("results") {
        Some(Value::Array(results)) => results
            .first()
            .and_then(Value::as_object)
            .ok_or("current/Me has no results")?,
        _ => d,
    };
    let division = match user.get("CurrentDivision") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|d| *d > 0)
    .ok_or("current/Me has no CurrentDivision")?;
    let identity = text(user, "UserID")
        .and_then(|id| Identity::new(id).ok())
        .map(|mut identity| {
            identity.display_name = text(user, "FullName").or_else(|| text(user, "UserName"));
            identity
        });
    Ok(Discovered {
        context: ProviderContext::ExactOnline {
            base_url,
            division,
            user_id: identity.as_ref().map(|i| i.subject.clone()),
            // Filled from system/Divisions by the caller.
            divisions: Vec::new(),
        },
        identity,
    })
}

/// One page of Exact's `system/Divisions`: `{"d":{"results":[{"Code":…,"Description":…}],"__next":…}}`
/// (or `{"d":[…]}`), and the next page's URL when there is one.
pub fn exact_divisions_page(
    page: &Map<String, Value>,
) -> Result<(Vec<ExactDivision>, Option<String>), String> {
    let d = page.get("d").ok_or("system/Divisions has no \"d\"")?;
    let (rows, next) = match d {
        Value::Array(rows) => (rows, None),
        Value::Object(d) => match d.get("results") {
            Some(Value::Array(rows)) => (rows, d.get("__next").and_then(Value::as_str)),
            _ => return Err("system/Divisions has no results".into()),
        },
        _ => return Err("system/Divisions has no results".into()),
    };
    let divisions = rows
        .iter()
        .filter_map(Value::as_object)
        .filter_map(|row| {
            let code = match row.get("Code")? {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            }
            .filter(|c| *c > 0)?;
            Some(ExactDivision {
                code,
                name: text(row, "Description"),
            })
        })
        .collect();
    Ok((divisions, next.map(str::to_string)))
}

/// An OpenID Connect userinfo answer: `sub`, and a name for people.
pub fn identity_from_userinfo(claims: &Map<String, Value>) -> Option<Identity> {
    let mut identity = Identity::new(text(claims, "sub")?).ok()?;
    identity.display_name = text(claims, "name")
        .or_else(|| text(claims, "preferred_username"))
        .or_else(|| text(claims, "email"));
    Some(identity)
}

fn identity_from_id_token(claims: Option<&IdTokenClaims>) -> Option<Identity> {
    let claims = claims?;
    let mut identity = Identity::new(claims.subject.clone()?).ok()?;
    identity.display_name = claims
        .name
        .clone()
        .or_else(|| claims.preferred_username.clone())
        .or_else(|| claims.email.clone());
    Some(identity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn twinfield_claims_give_cluster_organisation_and_user() {
        let claims = object(json!({
            "nbf": "1717400000", "exp": "1717403600", "scope": ["openid", "twf.user"],
            "twf.clusterUrl": "https://accounting.twinfield.com",
            "twf.organisationCode": "ORG1", "twf.organisationId": "5b5d7c4e", "twf.organisationUserCode": "USER1"
        }));
        let rewrite = |u: &str| {
            ServiceUrl::parse(
                &u.replace("https://accounting.twinfield.com", "http://127.0.0.1:1/c"),
            )
            .map_err(String::from)
        };
        let found = twinfield_discovery(&claims, &rewrite).unwrap();
        assert_eq!(
            found.context,
            ProviderContext::Twinfield {
                cluster_url: ServiceUrl::parse("http://127.0.0.1:1/c").unwrap(),
                organisation_code: "ORG1".into(),
                organisation_id: Some("5b5d7c4e".into()),
            }
        );
        assert_eq!(found.identity.unwrap().subject, "USER1");
        let as_is = |u: &str| ServiceUrl::parse(u).map_err(String::from);
        assert!(
            twinfield_discovery(&object(json!({"twf.organisationCode": "X"})), &as_is).is_err()
        );
        let hostile = object(
            json!({"twf.clusterUrl": "http://evil.example.com", "twf.organisationCode": "X"}),
        );
        assert!(twinfield_discovery(&hostile, &as_is)
            .unwrap_err()
            .contains("https"));
        // The built-in definition's allow-list: only https hosts under twinfield.com.
        let twinfield = crate::providers::Catalogue::built_in()
            .resolve(&crate::domain::ProviderSettings::Twinfield)
            .unwrap();
        let checked = |u: &str| twinfield.reported_service_url(u);
        for refused in [
            "https://evil.example.com",
            "https://accounting.twinfield.com.evil.example",
            "http://accounting.twinfield.com",
        ] {
            let claims = object(json!({"twf.clusterUrl": refused, "twf.organisationCode": "X"}));
            let why = twinfield_discovery(&claims, &checked).unwrap_err();
            assert!(why.contains("not an allowed address"), "{refused}: {why}");
        }
        let fine = object(
            json!({"twf.clusterUrl": "https://api.accounting.twinfield.com", "twf.organisationCode": "X"}),
        );
        assert!(twinfield_discovery(&fine, &checked).is_ok());
    }

    #[test]
    fn exact_me_gives_division_and_user() {
        let base = ServiceUrl::parse("https://start.exactonline.nl").unwrap();
        let me = object(
            json!({"d": {"results": [{"CurrentDivision": 12345, "UserID": "b0a1", "FullName": "Ann"}]}}),
        );
        let found = exact_discovery(&me, base.clone()).unwrap();
        assert_eq!(
            found.context,
            ProviderContext::ExactOnline {
                base_url: base.clone(),
                division: 12345,
                user_id: Some("b0a1".into()),
                divisions: vec![],
            }
        );
        assert_eq!(found.identity.unwrap().display_name.as_deref(), Some("Ann"));
        assert!(exact_discovery(&object(json!({"d": {"results": []}})), base.clone()).is_err());
        assert!(exact_discovery(
            &object(json!({"d": {"results": [{"CurrentDivision": "x"}]}})),
            base
        )
        .is_err());
    }

    #[test]
    fn exact_divisions_pages_give_codes_names_and_the_next_page() {
        let page = object(json!({"d": {"results": [
            {"Code": 300, "Description": "Bakery"}, {"Code": "200"}, {"Code": 0}, {"Description": "x"}
        ], "__next": "https://start.exactonline.nl/api/v1/1/system/Divisions?$skiptoken=2"}}));
        let (rows, next) = exact_divisions_page(&page).unwrap();
        assert_eq!(
            rows,
            vec![
                ExactDivision {
                    code: 300,
                    name: Some("Bakery".into())
                },
                ExactDivision {
                    code: 200,
                    name: None
                },
            ]
        );
        assert!(next.unwrap().ends_with("$skiptoken=2"));
        let (rows, next) = exact_divisions_page(&object(json!({"d": [{"Code": 7}]}))).unwrap();
        assert_eq!((rows.len(), next), (1, None));
        assert!(exact_divisions_page(&object(json!({"d": {}}))).is_err());
    }
}

//! Whether a new authorization may become a connection's, and what the connection is then bound to.
//!
//! For Twinfield, Acumatica and generic providers a reconnect must land on the same organisation,
//! tenant or account ([`ProviderContext::organisation_key`]). A generic provider names no organisation,
//! so there the account that authorized (the ID token's or userinfo's `sub`, under the app's one
//! issuer) is what a reconnect must match, unless the connection allows a change of user.
//!
//! Exact Online is different. `current/Me`'s `CurrentDivision` is only the administration the user
//! last opened in Exact's web UI, and since Exact's division scoping a user may restrict an
//! authorization to a list of divisions that need not include it. Comparing `CurrentDivision` would
//! refuse an accountant who merely switched administration in the browser. So an Exact connection is
//! bound to the Exact user (`UserID`) and to one division the authorization grants:
//! - a reconnect by another Exact user is refused;
//! - the bound division is the previous binding, else the one the integration named on creation,
//!   else `CurrentDivision` when it is granted, else the lowest granted code; a bound or named
//!   division the authorization does not grant is refused;
//! - a different `CurrentDivision` alone is never a reason to refuse.

use super::{Connection, Identity, ProviderContext};

/// Why an authorization cannot become the connection's. Nothing is stored when it is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindingRefusal {
    /// Another organisation, tenant or account than the connection's.
    OtherOrganisation { expected: String, actual: String },
    /// Exact Online: authorized by another Exact user than the connection's.
    OtherUser { expected: String, actual: String },
    /// Exact Online: the authorization does not grant the division the connection is bound to (or
    /// the integration named).
    DivisionNotGranted { division: i64, granted: Vec<i64> },
    /// Exact Online: Exact did not list any division this authorization grants.
    GrantsUnknown { current_division: i64 },
}

/// Checks a discovered context (and who authorized) against the connection, and returns the context
/// to store: for Exact Online with its division bound.
pub fn bind_authorization(
    connection: &Connection,
    discovered: ProviderContext,
    identity: Option<&Identity>,
) -> Result<ProviderContext, BindingRefusal> {
    let ProviderContext::ExactOnline {
        base_url,
        division: current_division,
        user_id,
        divisions,
    } = discovered
    else {
        if let Some(expected) = connection.context.as_ref() {
            if let Some(key) = expected.organisation_key() {
                if discovered.organisation_key().as_deref() != Some(key.as_str()) {
                    return Err(BindingRefusal::OtherOrganisation {
                        expected: expected.describe(),
                        actual: discovered.describe(),
                    });
                }
            }
        }
        if let ProviderContext::Generic { .. } = discovered {
            check_same_account(connection, identity)?;
        }
        return Ok(discovered);
    };

    let previous = match &connection.context {
        Some(ProviderContext::ExactOnline {
            division, user_id, ..
        }) => Some((*division, user_id.clone())),
        _ => None,
    };
    if let Some((_, recorded)) = &previous {
        // Records stored before the user id was kept: who authorized them stands in.
        let expected = recorded
            .clone()
            .or_else(|| connection.authorized_by.as_ref().map(|i| i.subject.clone()));
        if let Some(expected) = expected {
            let same = user_id
                .as_deref()
                .is_some_and(|u| u.trim().eq_ignore_ascii_case(expected.trim()));
            if !same {
                return Err(BindingRefusal::OtherUser {
                    expected: match &connection.authorized_by {
                        Some(who) if who.subject.eq_ignore_ascii_case(&expected) => who.describe(),
                        _ => expected,
                    },
                    actual: identity
                        .map(Identity::describe)
                        .or(user_id)
                        .unwrap_or_else(|| "an unidentified user".into()),
                });
            }
        }
    }
    if divisions.is_empty() {
        return Err(BindingRefusal::GrantsUnknown { current_division });
    }
    let granted = |code: i64| divisions.iter().any(|d| d.code == code);
    let wanted = previous
        .map(|(division, _)| division)
        .or(connection.requested_division);
    let division = match wanted {
        Some(code) if granted(code) => code,
        Some(code) => {
            return Err(BindingRefusal::DivisionNotGranted {
                division: code,
                granted: divisions.iter().map(|d| d.code).collect(),
            })
        }
        None if granted(current_division) => current_division,
        None => divisions
            .iter()
            .map(|d| d.code)
            .min()
            .expect("checked: not empty"),
    };
    Ok(ProviderContext::ExactOnline {
        base_url,
        division,
        user_id,
        divisions,
    })
}

/// A generic provider's reconnect: the account that connected, unless the connection allows another.
fn check_same_account(
    connection: &Connection,
    identity: Option<&Identity>,
) -> Result<(), BindingRefusal> {
    let Some(previous) = connection.authorized_by.as_ref() else {
        return Ok(()); // first authorization, or nothing was recorded to compare with
    };
    if connection.allow_user_change || identity.is_some_and(|who| who.same_person(previous)) {
        return Ok(());
    }
    Err(BindingRefusal::OtherUser {
        expected: previous.describe(),
        actual: identity
            .map(Identity::describe)
            .unwrap_or_else(|| "an unidentified account".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ExactDivision, ServiceUrl};

    use chrono::Utc;

    fn connection() -> Connection {
        crate::fixtures::acme_connection(Utc::now())
    }

    fn exact(current: i64, user: Option<&str>, granted: &[i64]) -> ProviderContext {
        ProviderContext::ExactOnline {
            base_url: ServiceUrl::parse("https://start.exactonline.nl").unwrap(),
            division: current,
            user_id: user.map(str::to_string),
            divisions: granted
                .iter()
                .map(|&code| ExactDivision { code, name: None })
                .collect(),
        }
    }

    fn bound(context: &ProviderContext) -> i64 {
        match context {
            ProviderContext::ExactOnline { division, .. } => *division,
            _ => panic!("not exact"),
        }
    }

    #[test]
    fn first_connect_binds_the_named_then_current_then_lowest_granted_division() {
        let mut c = connection();
        // CurrentDivision granted: bound to it.
        let ctx = bind_authorization(&c, exact(200, Some("u1"), &[300, 200]), None).unwrap();
        assert_eq!(bound(&ctx), 200);
        // CurrentDivision not among the granted ones: the lowest granted code.
        let ctx = bind_authorization(&c, exact(999, Some("u1"), &[300, 200]), None).unwrap();
        assert_eq!(bound(&ctx), 200);
        // The integration named one: that one, whatever the browser had open.
        c.requested_division = Some(300);
        let ctx = bind_authorization(&c, exact(200, Some("u1"), &[300, 200]), None).unwrap();
        assert_eq!(bound(&ctx), 300);
        // Named but not granted: refused.
        c.requested_division = Some(400);
        assert_eq!(
            bind_authorization(&c, exact(200, Some("u1"), &[300, 200]), None).unwrap_err(),
            BindingRefusal::DivisionNotGranted {
                division: 400,
                granted: vec![300, 200]
            }
        );
        // Nothing granted, or nothing listed: refused rather than guessed.
        c.requested_division = None;
        assert_eq!(
            bind_authorization(&c, exact(200, Some("u1"), &[]), None).unwrap_err(),
            BindingRefusal::GrantsUnknown {
                current_division: 200
            }
        );
    }

    #[test]
    fn reconnect_keeps_the_division_and_refuses_only_another_user_or_a_lost_grant() {
        let mut c = connection();
        c.context = Some(exact(300, Some("U1"), &[300, 200]));
        // Another CurrentDivision is no reason to refuse; the binding stays.
        let ctx = bind_authorization(&c, exact(200, Some("u1"), &[200, 300]), None).unwrap();
        assert_eq!(bound(&ctx), 300);
        // Another Exact user.
        let who = Identity::new("u2").unwrap();
        assert!(matches!(
            bind_authorization(&c, exact(300, Some("u2"), &[300]), Some(&who)),
            Err(BindingRefusal::OtherUser { .. })
        ));
        // The bound division is no longer granted.
        assert_eq!(
            bind_authorization(&c, exact(300, Some("u1"), &[200]), None).unwrap_err(),
            BindingRefusal::DivisionNotGranted {
                division: 300,
                granted: vec![200]
            }
        );
        // A record stored before the user id was kept: who authorized it stands in.
        c.context = Some(exact(300, None, &[]));
        c.authorized_by = Some(Identity::new("u1").unwrap());
        assert_eq!(
            bound(&bind_authorization(&c, exact(200, Some("U1"), &[200, 300]), None).unwrap()),
            300
        );
        assert!(matches!(
            bind_authorization(&c, exact(300, Some("u2"), &[300]), None),
            Err(BindingRefusal::OtherUser { .. })
        ));
    }

    #[test]
    fn other_providers_compare_the_organisation() {
        let mut c = connection();
        let twinfield = |code: &str| ProviderContext::Twinfield {
            cluster_url: ServiceUrl::parse("https://accounting.twinfield.com").unwrap(),
            organisation_code: code.into(),
            organisation_id: None,
        };
        c.context = Some(twinfield("ORG1"));
        assert!(bind_authorization(&c, twinfield("org1"), None).is_ok());
        assert!(matches!(
            bind_authorization(&c, twinfield("ORG2"), None),
            Err(BindingRefusal::OtherOrganisation { .. })
        ));
    }

    #[test]
    fn contexts_stored_before_the_division_list_still_load() {
        let old = r#"{"provider":"exact_online","base_url":"https://start.exactonline.nl","division":12345}"#;
        let ctx: ProviderContext = serde_json::from_str(old).unwrap();
        assert_eq!(bound(&ctx), 12345);
        assert!(
            matches!(ctx, ProviderContext::ExactOnline { ref divisions, user_id: None, .. } if divisions.is_empty())
        );
    }
}

//! What each function's role may do to which secrets and items, checked against the names the vault
//! really writes; and IAM's matching itself.

use super::*;

#[test]
fn each_function_role_has_exactly_the_data_permissions_its_function_uses() {
    let template = Template::load();
    let functions: Vec<String> = template.functions().into_keys().collect();
    assert_eq!(functions, {
        let mut f = FUNCTIONS.map(String::from).to_vec();
        f.sort();
        f
    });
    let mut roles = BTreeSet::new();
    for binary in FUNCTIONS {
        let role = template.role_of(binary);
        assert!(
            roles.insert(role.clone()),
            "{role} is shared by two functions"
        );
        let actual = grants_of(&template, &role);
        let expected = expected_grants(binary);
        let extra: Vec<_> = actual.difference(&expected).collect();
        let missing: Vec<_> = expected.difference(&actual).collect();
        assert!(
            extra.is_empty() && missing.is_empty(),
            "{binary} ({role}):\n  granted but not needed: {extra:#?}\n  needed but not granted: {missing:#?}"
        );
    }
}

#[test]
fn secrets_are_told_apart_by_name_and_each_role_reaches_only_its_own() {
    let template = Template::load();
    let deployment = Deployment::example();
    let (tokens, apps) = example_secret_names(&deployment);
    let role = |binary: &str| template.role_of(binary);
    for binary in FUNCTIONS {
        let role = role(binary);
        // Registering apps is broker-admin's and, for keys with the manage_apps scope, the API's.
        let manages_apps = binary == "session-exchange";
        for app in &apps {
            for action in SECRET_WRITES {
                let allowed = manages_apps
                    && ![
                        "secretsmanager:UpdateSecret",
                        "secretsmanager:PutResourcePolicy",
                    ]
                    .contains(action);
                assert_eq!(
                    deployment.may(&template, &role, action, app),
                    allowed,
                    "{binary} {action} on the client secret {app}"
                );
            }
        }
        for secret in tokens.iter().chain(&apps) {
            assert_eq!(
                deployment.may(&template, &role, "secretsmanager:DeleteSecret", secret),
                (binary != "expiry-notifier" && tokens.contains(secret))
                    || (manages_apps && apps.contains(secret)),
                "{binary} DeleteSecret on {secret}: functions that write tokens delete tokens; the API deletes client secrets"
            );
        }
    }
    let may = |binary: &str, action: &str, secret: &String| {
        deployment.may(&template, &role(binary), action, secret)
    };
    for token in &tokens {
        assert!(
            !may("oauth-callback", "secretsmanager:GetSecretValue", token),
            "the internet-facing oauth-callback may read the token {token}"
        );
        assert!(may(
            "oauth-callback",
            "secretsmanager:PutSecretValue",
            token
        ));
        assert!(may("oauth-callback", "secretsmanager:CreateSecret", token));
        assert!(may("token-refresh", "secretsmanager:GetSecretValue", token));
        assert!(may(
            "session-exchange",
            "secretsmanager:GetSecretValue",
            token
        ));
        assert!(!may(
            "expiry-notifier",
            "secretsmanager:GetSecretValue",
            token
        ));
    }
    for app in &apps {
        for binary in ["oauth-callback", "session-exchange", "token-refresh"] {
            assert!(
                may(binary, "secretsmanager:GetSecretValue", app),
                "{binary} reads {app}"
            );
        }
        assert!(!may(
            "expiry-notifier",
            "secretsmanager:GetSecretValue",
            app
        ));
    }
    // Another stage's secrets are out of reach.
    let other = Deployment {
        stage: "prod2".into(),
        ..Deployment::example()
    };
    let (other_tokens, other_apps) = example_secret_names(&other);
    for binary in FUNCTIONS {
        for secret in other_tokens.iter().chain(&other_apps) {
            assert!(
                !deployment.may(
                    &template,
                    &role(binary),
                    "secretsmanager:GetSecretValue",
                    secret
                ),
                "{binary} reads {secret} of another stage"
            );
        }
    }
}

/// The operators' role writes client secrets (as the API does for keys that may manage apps), and it
/// cannot touch a token.
#[test]
fn only_the_operator_role_registers_client_secrets_and_it_reaches_no_token() {
    let template = Template::load();
    let deployment = Deployment::example();
    let (tokens, apps) = example_secret_names(&deployment);
    for app in &apps {
        assert!(deployment.may(
            &template,
            "OperatorRole",
            "secretsmanager:CreateSecret",
            app
        ));
        assert!(deployment.may(
            &template,
            "OperatorRole",
            "secretsmanager:PutSecretValue",
            app
        ));
        assert!(!deployment.may(
            &template,
            "OperatorRole",
            "secretsmanager:DeleteSecret",
            app
        ));
    }
    for token in &tokens {
        for action in SECRET_WRITES
            .iter()
            .chain(&["secretsmanager:GetSecretValue"])
        {
            assert!(
                !deployment.may(&template, "OperatorRole", action, token),
                "the operator role may {action} the token {token}"
            );
        }
    }
}

#[test]
fn no_wildcard_actions_and_star_resources_only_where_aws_requires_them() {
    let template = Template::load();
    let roles: Vec<String> = template
        .resources_of_type("AWS::IAM::Role")
        .map(|(name, _)| name)
        .collect();
    assert!(roles.len() >= FUNCTIONS.len());
    for role in &roles {
        for statement in template.statements_of(role) {
            for action in &statement.actions {
                assert!(
                    !action.contains(['*', '?']),
                    "{role} {}: wildcard action {action}",
                    statement.sid
                );
            }
            if statement.resources.iter().any(|r| r == "*") {
                for action in &statement.actions {
                    assert!(
                        STAR_RESOURCE_ACTIONS.iter().any(|(a, _)| a == action),
                        "{role} {}: {action} on Resource \"*\"; only actions without resource-level \
                         permissions may be",
                        statement.sid
                    );
                }
            }
        }
    }
}

/// The names the Secrets Manager vault really writes (on moto, ids chosen to collide with the path
/// words) are reached by the policies exactly as intended: a rename in the adapter that the
/// template does not follow fails here.
#[tokio::test(flavor = "multi_thread")]
async fn secret_names_the_vault_writes_are_told_apart_by_the_policies() {
    let template = Template::load();
    let config = shared_moto().sdk_config().await;
    let client = aws_sdk_secretsmanager::Client::new(&config);
    let stage = broker_tests::moto::unique_name("iam")
        .to_ascii_lowercase()
        .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "-");
    let vault = SecretsManagerVault::new(
        client.clone(),
        VaultNaming {
            prefix: format!("connection-broker/{stage}"),
            kms_key_id: None,
        },
    );
    let tenant = TenantId::parse("apps").unwrap();
    let app = AppId::parse("connections").unwrap();
    let connection = ConnectionId::generate();
    let now = chrono::Utc::now();
    let credentials = Credentials::OAuth2(TokenSet {
        access_token: AccessToken::new("access"),
        access_expires_at: now + chrono::Duration::seconds(600),
        refresh_token: Some(RefreshToken::new("refresh")),
        refresh_expires_at: None,
        scope: None,
        received_at: now,
    });
    for slot in [VaultSlot::A, VaultSlot::B] {
        vault
            .put_credentials(
                &tenant,
                &connection,
                slot,
                &WriteId::generate(),
                &credentials,
            )
            .await
            .expect("writing a token to moto");
    }
    vault
        .put_client_secret(&tenant, &app, &ClientSecret::new("s3cret"))
        .await
        .expect("writing a client secret to moto");

    let listed = client
        .list_secrets()
        .max_results(100)
        .send()
        .await
        .expect("listing moto's secrets");
    let arns: Vec<String> = listed
        .secret_list()
        .iter()
        .filter(|s| {
            s.name()
                .is_some_and(|n| n.starts_with(&format!("connection-broker/{stage}/")))
        })
        .filter_map(|s| s.arn().map(str::to_string))
        .collect();
    assert_eq!(
        arns.len(),
        3,
        "two token slots and one client secret: {arns:?}"
    );
    let parts: Vec<&str> = arns[0].split(':').collect();
    let deployment = Deployment {
        partition: "aws",
        region: parts[3].to_string(),
        account: parts[4].to_string(),
        stage,
    };
    let (tokens, apps): (Vec<&String>, Vec<&String>) = arns
        .iter()
        .partition(|arn| arn.contains(connection.as_str()));
    assert_eq!((tokens.len(), apps.len()), (2, 1), "{arns:?}");
    let may = |binary: &str, action: &str, arn: &str| {
        deployment.may(&template, &template.role_of(binary), action, arn)
    };
    for token in tokens {
        assert!(
            may("token-refresh", "secretsmanager:GetSecretValue", token),
            "{token}"
        );
        assert!(
            may("token-refresh", "secretsmanager:PutSecretValue", token),
            "{token}"
        );
        assert!(
            may("session-exchange", "secretsmanager:DeleteSecret", token),
            "{token}"
        );
        assert!(
            !may("oauth-callback", "secretsmanager:GetSecretValue", token),
            "{token}"
        );
        assert!(!deployment.may(
            &template,
            "OperatorRole",
            "secretsmanager:PutSecretValue",
            token
        ));
    }
    let app_secret = apps[0];
    for binary in ["oauth-callback", "session-exchange", "token-refresh"] {
        assert!(
            may(binary, "secretsmanager:GetSecretValue", app_secret),
            "{binary}: {app_secret}"
        );
        // Only the API manages apps (keys with the manage_apps scope).
        let manages_apps = binary == "session-exchange";
        for action in [
            "secretsmanager:PutSecretValue",
            "secretsmanager:DeleteSecret",
        ] {
            assert_eq!(
                may(binary, action, app_secret),
                manages_apps,
                "{binary} {action}: {app_secret}"
            );
        }
    }
    assert!(deployment.may(
        &template,
        "OperatorRole",
        "secretsmanager:PutSecretValue",
        app_secret
    ));
}

#[test]
fn iam_matching_follows_iam() {
    assert!(iam_match("a*", "a"));
    assert!(iam_match("a*", "a/b/c"));
    assert!(iam_match("t/*/x", "t/1/2/x"));
    assert!(!iam_match("t/*/x", "t/x"));
    assert!(iam_match("s-??????", "s-AbC1eF"));
    assert!(!iam_match("s-??????", "s-AbC1e"));
    assert!(!iam_match("abc", "abcd"));
    assert!(iam_match("*", ""));
}

//! Who may use and delete the KMS keys, who may publish to the alarm topic, and every function's
//! concurrency bounded by a parameter.

use super::*;

#[test]
fn key_policies_give_use_to_the_roles_only_and_deletion_to_no_one() {
    let template = Template::load();
    let roles: BTreeSet<String> = template
        .resources_of_type("AWS::IAM::Role")
        .map(|(name, _)| format!("${{{name}.Arn}}"))
        .collect();
    let keys: Vec<String> = template
        .resources_of_type("AWS::KMS::Key")
        .map(|(name, _)| name)
        .collect();
    for expected in ["Key", "EscrowKey"] {
        assert!(
            keys.iter().any(|k| k == expected),
            "no {expected} in {TEMPLATE}"
        );
    }
    for key in &keys {
        let policy = template.key_policy(key);
        assert!(!policy.is_empty(), "{key} has no key policy");
        for statement in &policy {
            let what = format!("{key} {}", statement.sid);
            assert!(
                !statement.grants_action("kms:ScheduleKeyDeletion"),
                "{what}: kms:ScheduleKeyDeletion is break-glass, not in the key policy"
            );
            let uses: Vec<&&str> = KEY_USE_ACTIONS
                .iter()
                .filter(|a| statement.grants_action(a))
                .collect();
            for principal in &statement.aws_principals {
                if principal.ends_with(":root") {
                    assert!(
                        uses.is_empty(),
                        "{what}: the account root may use the key ({uses:?}); name the roles"
                    );
                    let grant_for_a_service = statement.condition("kms:GrantIsForAWSResource")
                        == Some(&vec!["true".to_string()]);
                    assert!(
                        !statement.grants_action("kms:CreateGrant") || grant_for_a_service,
                        "{what}: the account root may grant itself the key (kms:CreateGrant)"
                    );
                    for action in &statement.actions {
                        let admin = KEY_ADMIN_ACTIONS
                            .iter()
                            .any(|pattern| iam_match(pattern, action));
                        assert!(
                            admin || (action == "kms:CreateGrant" && grant_for_a_service),
                            "{what}: the account root may {action}"
                        );
                    }
                } else {
                    assert!(
                        roles.contains(principal),
                        "{what}: principal {principal} is not a role of the template"
                    );
                }
            }
            if !uses.is_empty() && !statement.aws_principals.is_empty() {
                assert!(
                    statement.condition("kms:ViaService").is_some()
                        || statement
                            .conditions
                            .keys()
                            .any(|(_, k)| k.starts_with("kms:EncryptionContext:")),
                    "{what}: use of the key without a kms:ViaService or encryption context condition"
                );
                assert!(
                    statement.condition("kms:CallerAccount").is_some(),
                    "{what}: use of the key without kms:CallerAccount"
                );
            }
        }
    }
    // No IAM policy of the template gives ScheduleKeyDeletion either.
    for (role, _) in template.resources_of_type("AWS::IAM::Role") {
        for statement in template.statements_of(&role) {
            assert!(
                !statement.grants_action("kms:ScheduleKeyDeletion"),
                "{role}"
            );
        }
    }
}

#[test]
fn the_escrow_key_is_usable_by_the_two_refreshing_roles_only() {
    let template = Template::load();
    let users: BTreeSet<String> = template
        .key_policy("EscrowKey")
        .iter()
        .filter(|s| KEY_USE_ACTIONS.iter().any(|a| s.grants_action(a)))
        .flat_map(|s| s.aws_principals.clone())
        .collect();
    let expected: BTreeSet<String> = ["session-exchange", "token-refresh"]
        .iter()
        .map(|f| format!("${{{}.Arn}}", template.role_of(f)))
        .collect();
    assert_eq!(users, expected);
}

#[test]
fn only_this_accounts_alarms_of_this_stage_may_publish_to_the_alarm_topic() {
    let template = Template::load();
    let topics: Vec<String> = template
        .resources_of_type("AWS::SNS::Topic")
        .map(|(name, _)| name)
        .collect();
    assert!(!topics.is_empty(), "no alarm topic in {TEMPLATE}");
    let deployment = Deployment::example();
    let alarm_arn = |name: &str| {
        format!(
            "arn:aws:cloudwatch:{}:{}:alarm:{name}",
            deployment.region, deployment.account
        )
    };
    for topic in &topics {
        let policies: Vec<Vec<Statement>> = template
            .resources_of_type("AWS::SNS::TopicPolicy")
            .filter(|(_, p)| {
                strings(p["Properties"].get("Topics")).contains(&format!("${{{topic}}}"))
            })
            .map(|(_, p)| statements(&p["Properties"]["PolicyDocument"]))
            .collect();
        assert_eq!(policies.len(), 1, "{topic} needs exactly one topic policy");
        let publishers: Vec<&Statement> = policies[0]
            .iter()
            .filter(|s| s.grants_action("sns:Publish"))
            .collect();
        assert!(!publishers.is_empty(), "{topic}: nobody may publish");
        for statement in publishers {
            assert_eq!(statement.service_principals, ["cloudwatch.amazonaws.com"]);
            assert!(statement.aws_principals.is_empty());
            assert_eq!(
                statement.condition("aws:SourceAccount"),
                Some(&vec!["${AWS::AccountId}".to_string()]),
                "{topic} {}",
                statement.sid
            );
            let source = statement
                .condition("aws:SourceArn")
                .unwrap_or_else(|| panic!("{topic} {}: no aws:SourceArn", statement.sid));
            let matches = |arn: &str| {
                source
                    .iter()
                    .any(|p| iam_match(&deployment.resolve(p), arn))
            };
            // Every alarm of the template is named within the pattern, and nothing else is.
            for (name, alarm) in template.resources_of_type("AWS::CloudWatch::Alarm") {
                let alarm_name = deployment.resolve(&text(&alarm["Properties"]["AlarmName"]));
                assert!(
                    matches(&alarm_arn(&alarm_name)),
                    "{name} ({alarm_name}) could not publish"
                );
            }
            assert!(!matches(&alarm_arn("someone-elses-alarm")));
            assert!(!matches(&alarm_arn(
                "connection-broker-prod2-oauth-callback-errors"
            )));
        }
    }
}

#[test]
fn every_function_has_reserved_concurrency_sized_by_a_parameter() {
    let template = Template::load();
    for (binary, function) in template.functions() {
        let reserved = function["Properties"]
            .get("ReservedConcurrentExecutions")
            .unwrap_or_else(|| panic!("{binary} has no ReservedConcurrentExecutions"));
        let parameter = text(reserved);
        let name = parameter
            .strip_prefix("${")
            .and_then(|p| p.strip_suffix('}'))
            .unwrap_or_else(|| {
                panic!("{binary}'s reserved concurrency is fixed ({parameter}), not a parameter")
            });
        let declared = template
            .parameters
            .get(name)
            .unwrap_or_else(|| panic!("{binary}: no parameter {name}"));
        assert_eq!(declared["Type"].as_str(), Some("Number"), "{name}");
        let default = declared["Default"].as_u64().unwrap_or(0);
        assert!(default >= 1, "{name} needs a default of at least 1");
        assert!(
            declared["MinValue"].as_u64().unwrap_or(0) >= 1,
            "{name}: 0 would stop the function"
        );
        assert!(
            declared["Description"]
                .as_str()
                .is_some_and(|d| d.split_whitespace().count() >= 8),
            "{name} needs a description that says how to size it"
        );
    }
}

/// The refresh's internal concurrency is a parameter too, described together with the function's.
#[test]
fn the_refresh_runs_concurrency_is_set_beside_its_reserved_concurrency() {
    let template = Template::load();
    let function = template.functions()["token-refresh"];
    let variable =
        &function["Properties"]["Environment"]["Variables"]["BROKER_REFRESH_CONCURRENCY"];
    assert_eq!(text(variable), "${RefreshConcurrency}");
    let reserved = &template.parameters[&Value::from("TokenRefreshReservedConcurrency")];
    assert!(reserved["Description"]
        .as_str()
        .is_some_and(|d| d.contains("RefreshConcurrency")));
}

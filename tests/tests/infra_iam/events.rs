//! Status-change events in the template: the stack's own bus, put on by the notifier only and only on
//! that bus; the dispatch schedule the notifier recognises; and webhook signing secrets, as the vault
//! names them, written by the API and read by the notifier, each only that.

use super::*;
use broker_core::ids::WebhookId;
use broker_core::secret::WebhookSecret;

#[test]
fn only_the_notifier_puts_events_and_only_on_the_stacks_own_bus() {
    let template = Template::load();
    let buses: Vec<String> = template
        .resources_of_type("AWS::Events::EventBus")
        .map(|(name, _)| name)
        .collect();
    assert_eq!(buses, ["EventBus"], "one bus, the stack's own");
    for binary in FUNCTIONS {
        let role = template.role_of(binary);
        let putting: Vec<Statement> = template
            .statements_of(&role)
            .into_iter()
            .filter(|s| s.actions.iter().any(|a| a.starts_with("events:")))
            .collect();
        if binary != "expiry-notifier" {
            assert!(
                putting.is_empty(),
                "{binary} may use EventBridge: {putting:?}"
            );
            continue;
        }
        assert_eq!(putting.len(), 1, "{putting:?}");
        assert_eq!(putting[0].actions, ["events:PutEvents"]);
        assert_eq!(putting[0].resources, ["${EventBus.Arn}"]);
    }
    let notifier = template.functions()["expiry-notifier"];
    let properties = &notifier["Properties"];
    assert_eq!(
        text(&properties["Environment"]["Variables"]["BROKER_EVENT_BUS"]),
        "${EventBus}"
    );
    // The every-minute schedule sends the input the handler reads as the event dispatch.
    let dispatch = &properties["Events"]["EventDispatch"]["Properties"];
    assert_eq!(text(&dispatch["Schedule"]), "rate(1 minute)");
    let input: serde_json::Value = serde_json::from_str(&text(&dispatch["Input"])).unwrap();
    assert_eq!(
        expiry_notifier::classify(&input).unwrap(),
        expiry_notifier::Trigger::Events
    );
}

/// The names the Secrets Manager vault really writes for a webhook (on moto), against the policies.
#[tokio::test(flavor = "multi_thread")]
async fn webhook_signing_secrets_are_written_by_the_api_and_read_by_the_notifier_only() {
    let template = Template::load();
    let config = shared_moto().sdk_config().await;
    let client = aws_sdk_secretsmanager::Client::new(&config);
    let stage = broker_tests::moto::unique_name("hooks")
        .to_ascii_lowercase()
        .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "-");
    let vault = SecretsManagerVault::new(
        client.clone(),
        VaultNaming {
            prefix: format!("connection-broker/{stage}"),
            kms_key_id: None,
        },
    );
    // A tenant named like the path words, so a policy that matched on them would be caught.
    let tenant = TenantId::parse("apps").unwrap();
    let webhook = WebhookId::generate();
    vault
        .put_webhook_secret(&tenant, &webhook, &WebhookSecret::new("whsec_x"))
        .await
        .expect("writing a signing secret to moto");
    let back = vault.get_webhook_secret(&tenant, &webhook).await.unwrap();
    assert_eq!(back.unwrap().expose(), "whsec_x");
    let listed = client.list_secrets().max_results(100).send().await.unwrap();
    let arns: Vec<String> = listed
        .secret_list()
        .iter()
        .filter(|s| {
            s.name()
                .is_some_and(|n| n.starts_with(&format!("connection-broker/{stage}/")))
        })
        .filter_map(|s| s.arn().map(str::to_string))
        .collect();
    assert_eq!(arns.len(), 1, "{arns:?}");
    let deployment = Deployment {
        stage: stage.clone(),
        ..Deployment::example()
    };
    // moto's ARNs name its own region and account; the policies are checked for this deployment's.
    let name = arns[0].split(":secret:").nth(1).unwrap();
    let secret = deployment.secret_arn(name);
    for binary in FUNCTIONS {
        let role = template.role_of(binary);
        let may = |action: &str| deployment.may(&template, &role, action, &secret);
        let expected_read = binary == "expiry-notifier";
        let expected_write = binary == "session-exchange";
        assert_eq!(
            may("secretsmanager:GetSecretValue"),
            expected_read,
            "{binary} reads {name}"
        );
        for action in [
            "secretsmanager:CreateSecret",
            "secretsmanager:PutSecretValue",
            "secretsmanager:DeleteSecret",
        ] {
            assert_eq!(may(action), expected_write, "{binary} {action} on {name}");
        }
        for action in [
            "secretsmanager:UpdateSecret",
            "secretsmanager:PutResourcePolicy",
        ] {
            assert!(!may(action), "{binary} {action} on {name}");
        }
    }
    vault
        .delete_webhook_secret(&tenant, &webhook)
        .await
        .unwrap();
    assert!(vault
        .get_webhook_secret(&tenant, &webhook)
        .await
        .unwrap()
        .is_none());
}

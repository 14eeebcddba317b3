//! Least privilege in the deployment template (`infra/template.yaml`), read as CloudFormation reads it:
//! what each function's role may do to which secrets, items and keys; who may use the KMS keys; who
//! may publish to the alarm topic; and that every function's concurrency is bounded by a parameter.
//!
//! IAM's own matching is reproduced here (`*` any run of characters, `/` included; `?` one
//! character), so the checks ask what a role may do to a secret name, not only how its policy is
//! spelled; `secret_names_the_vault_writes_are_told_apart_by_the_policies` feeds it the names the
//! Secrets Manager vault really writes (on moto).

use broker_core::adapters::secrets_manager::{SecretsManagerVault, VaultNaming};
use broker_core::domain::{Credentials, TokenSet, VaultSlot};
use broker_core::ids::{AppId, ConnectionId, TenantId, WriteId};
use broker_core::ports::TokenVault;
use broker_core::secret::{AccessToken, ClientSecret, RefreshToken};
use broker_tests::backends::shared_moto;
use broker_tests::tools::workspace_root;
use serde_norway::{Mapping, Value};
use std::collections::{BTreeMap, BTreeSet};

const TEMPLATE: &str = "infra/template.yaml";

/// Actions AWS authorises only on `Resource: "*"` (no resource-level permissions), each with why a
/// role needs it.
const STAR_RESOURCE_ACTIONS: &[(&str, &str)] = &[
    ("xray:PutTraceSegments", "active tracing sends segments"),
    (
        "xray:PutTelemetryRecords",
        "active tracing reports its health",
    ),
];

/// What an administrator of a key may do: manage it, never use it for data.
const KEY_ADMIN_ACTIONS: &[&str] = &[
    "kms:CreateAlias",
    "kms:Describe*",
    "kms:Enable*",
    "kms:List*",
    "kms:Put*",
    "kms:Update*",
    "kms:Revoke*",
    "kms:Disable*",
    "kms:Get*",
    "kms:Delete*",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:CancelKeyDeletion",
    "kms:RotateKeyOnDemand",
];

/// Operations that turn data into ciphertext or back.
const KEY_USE_ACTIONS: &[&str] = &[
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:GenerateDataKeyPair",
];

/// Secrets Manager operations that change a secret.
const SECRET_WRITES: &[&str] = &[
    "secretsmanager:CreateSecret",
    "secretsmanager:PutSecretValue",
    "secretsmanager:UpdateSecret",
    "secretsmanager:DeleteSecret",
    "secretsmanager:TagResource",
    "secretsmanager:RestoreSecret",
    "secretsmanager:PutResourcePolicy",
];

// ---------------------------------------------------------------------------------------------
// Reading the template
// ---------------------------------------------------------------------------------------------

struct Template {
    resources: Mapping,
    parameters: Mapping,
}

impl Template {
    fn load() -> Self {
        Self::parse(
            &std::fs::read_to_string(workspace_root().join(TEMPLATE))
                .expect("reading the template"),
        )
    }

    fn parse(text: &str) -> Self {
        let root: Value = serde_norway::from_str(text).expect("the template is YAML");
        let section = |name: &str| {
            root.get(name)
                .and_then(Value::as_mapping)
                .cloned()
                .unwrap_or_default()
        };
        Self {
            resources: section("Resources"),
            parameters: section("Parameters"),
        }
    }

    fn resources_of_type<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = (String, &'a Value)> {
        self.resources
            .iter()
            .filter(move |(_, resource)| resource.get("Type").and_then(Value::as_str) == Some(kind))
            .map(|(name, resource)| (name.as_str().unwrap_or_default().to_string(), resource))
    }

    fn resource(&self, name: &str) -> &Value {
        self.resources
            .get(name)
            .unwrap_or_else(|| panic!("no resource {name} in {TEMPLATE}"))
    }

    /// The functions by their binary (`Metadata.BuildProperties.Binary`), each with its resource.
    fn functions(&self) -> BTreeMap<String, &Value> {
        self.resources_of_type("AWS::Serverless::Function")
            .chain(self.resources_of_type("AWS::Lambda::Function"))
            .map(|(name, function)| {
                let binary = function
                    .get("Metadata")
                    .and_then(|m| m.get("BuildProperties"))
                    .and_then(|b| b.get("Binary"))
                    .and_then(Value::as_str)
                    .map_or(name, str::to_string);
                (binary, function)
            })
            .collect()
    }

    /// The role a function runs with (`Role: !GetAtt <Role>.Arn`).
    fn role_of(&self, binary: &str) -> String {
        let function = self.functions()[binary];
        let role = text(&function["Properties"]["Role"]);
        role.strip_prefix("${")
            .and_then(|r| r.strip_suffix(".Arn}"))
            .unwrap_or_else(|| panic!("{binary}'s Role is not a role of the template: {role}"))
            .to_string()
    }

    /// Every statement the role is given: its inline `Policies` and every AWS::IAM::Policy,
    /// AWS::IAM::RolePolicy or AWS::IAM::ManagedPolicy of the template attached to it.
    fn statements_of(&self, role: &str) -> Vec<Statement> {
        let role_resource = self.resource(role);
        assert!(
            role_resource["Properties"]
                .get("ManagedPolicyArns")
                .is_none(),
            "{role} has managed policies from outside the template, which cannot be checked here"
        );
        let mut documents = Vec::new();
        if let Some(policies) = role_resource["Properties"]
            .get("Policies")
            .and_then(Value::as_sequence)
        {
            documents.extend(policies.iter().map(|p| &p["PolicyDocument"]));
        }
        for kind in [
            "AWS::IAM::Policy",
            "AWS::IAM::RolePolicy",
            "AWS::IAM::ManagedPolicy",
        ] {
            for (_, policy) in self.resources_of_type(kind) {
                let properties = &policy["Properties"];
                let roles: Vec<String> = match properties.get("Roles") {
                    Some(Value::Sequence(roles)) => roles.iter().map(text).collect(),
                    _ => properties.get("RoleName").map(text).into_iter().collect(),
                };
                if roles.iter().any(|r| r == &format!("${{{role}}}")) {
                    documents.push(&properties["PolicyDocument"]);
                }
            }
        }
        documents.into_iter().flat_map(statements).collect()
    }

    fn key_policy(&self, key: &str) -> Vec<Statement> {
        statements(&self.resource(key)["Properties"]["KeyPolicy"])
    }
}

/// A CloudFormation value as text: `!Ref X` is `${X}`, `!GetAtt X.Arn` is `${X.Arn}`, `!Sub` keeps its
/// `${...}` (with the variables of its list form put in), other functions print as `!Name`.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Tagged(tagged) => function_text(&tagged.tag.to_string(), &tagged.value),
        Value::Mapping(m) if m.len() == 1 => {
            let (name, argument) = m.iter().next().unwrap();
            match name.as_str() {
                Some("Ref") => function_text("!Ref", argument),
                Some(f) if f.starts_with("Fn::") => {
                    function_text(&format!("!{}", &f[4..]), argument)
                }
                _ => format!("{value:?}"),
            }
        }
        _ => format!("{value:?}"),
    }
}

fn function_text(tag: &str, argument: &Value) -> String {
    match (tag, argument) {
        ("!Ref", a) => format!("${{{}}}", text(a)),
        ("!GetAtt", Value::Sequence(parts)) => format!(
            "${{{}}}",
            parts.iter().map(text).collect::<Vec<_>>().join(".")
        ),
        ("!GetAtt", a) => format!("${{{}}}", text(a)),
        ("!Sub", Value::Sequence(parts)) => {
            let mut out = text(&parts[0]);
            if let Some(Value::Mapping(vars)) = parts.get(1) {
                for (name, value) in vars {
                    out = out.replace(&format!("${{{}}}", text(name)), &text(value));
                }
            }
            out
        }
        ("!Sub", a) => text(a),
        (other, _) => other.to_string(),
    }
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        None => Vec::new(),
        Some(Value::Sequence(items)) => items.iter().map(text).collect(),
        Some(one) => vec![text(one)],
    }
}

#[derive(Debug, Clone)]
struct Statement {
    sid: String,
    allow: bool,
    actions: Vec<String>,
    resources: Vec<String>,
    /// `Principal.AWS` and `Principal.Service`, as text.
    aws_principals: Vec<String>,
    service_principals: Vec<String>,
    /// `(operator, key) -> values`, e.g. `("StringEquals", "kms:ViaService") -> [...]`.
    conditions: BTreeMap<(String, String), Vec<String>>,
}

impl Statement {
    fn condition(&self, key: &str) -> Option<&Vec<String>> {
        self.conditions
            .iter()
            .find(|((_, k), _)| k == key)
            .map(|(_, v)| v)
    }

    fn grants_action(&self, action: &str) -> bool {
        self.allow && self.actions.iter().any(|a| iam_match(a, action))
    }
}

fn statements(document: &Value) -> Vec<Statement> {
    let list = match document.get("Statement") {
        Some(Value::Sequence(list)) => list.clone(),
        Some(one) => vec![one.clone()],
        None => Vec::new(),
    };
    list.iter()
        .map(|s| {
            let principal = s.get("Principal");
            let mut conditions = BTreeMap::new();
            if let Some(Value::Mapping(operators)) = s.get("Condition") {
                for (operator, keys) in operators {
                    if let Value::Mapping(keys) = keys {
                        for (key, values) in keys {
                            conditions.insert((text(operator), text(key)), strings(Some(values)));
                        }
                    }
                }
            }
            Statement {
                sid: s.get("Sid").map(text).unwrap_or_default(),
                allow: s.get("Effect").map(text).as_deref() == Some("Allow"),
                actions: strings(s.get("Action")),
                resources: strings(s.get("Resource")),
                aws_principals: strings(principal.and_then(|p| p.get("AWS"))),
                service_principals: strings(principal.and_then(|p| p.get("Service"))),
                conditions,
            }
        })
        .collect()
}

/// IAM's wildcard match, case-sensitive as for ARNs: `*` is any run of characters (a `/` too), `?` is
/// one character. (Action names match case-insensitively in IAM; this template spells them as AWS
/// documents them, so exact case is enough and stricter.)
fn iam_match(pattern: &str, value: &str) -> bool {
    let (p, v): (Vec<char>, Vec<char>) = (pattern.chars().collect(), value.chars().collect());
    // matched[j]: the pattern so far matches the first j characters of the value.
    let mut matched = vec![false; v.len() + 1];
    matched[0] = true;
    for &c in &p {
        let mut next = vec![false; v.len() + 1];
        for j in 0..=v.len() {
            next[j] = match c {
                '*' => matched[j] || (j > 0 && next[j - 1]),
                '?' => j > 0 && matched[j - 1],
                c => j > 0 && matched[j - 1] && v[j - 1] == c,
            };
        }
        matched = next;
    }
    matched[v.len()]
}

// ---------------------------------------------------------------------------------------------
// A deployment to check against: the template's names with one stage, region and account put in
// ---------------------------------------------------------------------------------------------

struct Deployment {
    partition: &'static str,
    region: String,
    account: String,
    stage: String,
}

impl Deployment {
    fn example() -> Self {
        Self {
            partition: "aws",
            region: "eu-west-1".into(),
            account: "123456789012".into(),
            stage: "prod".into(),
        }
    }

    fn resolve(&self, pattern: &str) -> String {
        pattern
            .replace("${AWS::Partition}", self.partition)
            .replace("${AWS::Region}", &self.region)
            .replace("${AWS::AccountId}", &self.account)
            .replace("${Stage}", &self.stage)
    }

    fn secret_arn(&self, name: &str) -> String {
        format!(
            "arn:{}:secretsmanager:{}:{}:secret:{name}",
            self.partition, self.region, self.account
        )
    }

    fn prefix(&self) -> String {
        format!("connection-broker/{}", self.stage)
    }

    /// Whether `role` may do `action` on `resource` (an ARN of this deployment).
    fn may(&self, template: &Template, role: &str, action: &str, resource: &str) -> bool {
        template.statements_of(role).iter().any(|s| {
            s.grants_action(action)
                && s.resources
                    .iter()
                    .any(|r| iam_match(&self.resolve(r), resource))
        })
    }
}

/// Token and client-secret names as the vault writes them (see the adapter's module documentation),
/// with ids chosen to collide with the path words: a tenant called `apps`, an app called `connections`.
fn example_secret_names(deployment: &Deployment) -> (Vec<String>, Vec<String>) {
    let prefix = deployment.prefix();
    let connection = "con_abcdefghijklmnopqrstuvwxyz";
    let mut tokens = Vec::new();
    let mut apps = Vec::new();
    for tenant in ["acme", "apps", "connections"] {
        for slot in ["a", "b"] {
            tokens.push(format!(
                "{prefix}/tenants/{tenant}/connections/{connection}/{slot}"
            ));
        }
        for app in ["exact-nl", "connections", "apps", "a"] {
            apps.push(format!(
                "{prefix}/tenants/{tenant}/apps/{app}/client_secret"
            ));
        }
    }
    // As ARNs: with the random suffix a secret has, and bare (a request for one not created yet).
    let arns = |names: Vec<String>| {
        names
            .into_iter()
            .flat_map(|n| {
                [
                    deployment.secret_arn(&format!("{n}-AbC1eF")),
                    deployment.secret_arn(&n),
                ]
            })
            .collect()
    };
    (arns(tokens), arns(apps))
}

const FUNCTIONS: [&str; 4] = [
    "oauth-callback",
    "session-exchange",
    "token-refresh",
    "expiry-notifier",
];

/// What a role may do, as `action resource[ condition]` lines for the services that hold the
/// broker's data (Secrets Manager, DynamoDB, KMS), with the template's long prefixes shortened:
/// `secret:` for the stage's secrets, `${Table.Arn}` and `${Key.Arn}` as they are.
fn grants_of(template: &Template, role: &str) -> BTreeSet<String> {
    let secret_prefix = "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:connection-broker/${Stage}/";
    let mut grants = BTreeSet::new();
    for statement in template.statements_of(role) {
        assert!(
            statement.allow,
            "{role} {}: only Allow statements are expected (a Deny here would need its own check)",
            statement.sid
        );
        for action in &statement.actions {
            if !["secretsmanager:", "dynamodb:", "kms:"]
                .iter()
                .any(|service| action.starts_with(service))
            {
                continue;
            }
            let condition = ["kms:ViaService", "kms:EncryptionContext:broker:connection"]
                .iter()
                .find_map(|key| {
                    statement
                        .condition(key)
                        .map(|v| format!(" {key}={}", v.join(",")))
                })
                .unwrap_or_default();
            for resource in &statement.resources {
                let resource = resource.replace(secret_prefix, "secret:");
                grants.insert(format!("{action} {resource}{condition}"));
            }
        }
    }
    grants
}

fn lines(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

const TOKENS_A: &str = "secret:tenants/*/connections/con_*/a*";
const TOKENS_B: &str = "secret:tenants/*/connections/con_*/b*";
const CLIENT_SECRETS: &str = "secret:tenants/*/apps/*/client_secret*";

fn expected_grants(binary: &str) -> BTreeSet<String> {
    let via_secrets = "kms:ViaService=secretsmanager.${AWS::Region}.amazonaws.com";
    let via_dynamodb = "kms:ViaService=dynamodb.${AWS::Region}.amazonaws.com";
    let via_sqs = "kms:ViaService=sqs.${AWS::Region}.amazonaws.com";
    let escrow = "kms:EncryptionContext:broker:connection=con_*";
    let table_key = format!(
        "kms:Decrypt ${{Key.Arn}} {via_dynamodb}
         kms:Encrypt ${{Key.Arn}} {via_dynamodb}
         kms:GenerateDataKey ${{Key.Arn}} {via_dynamodb}
         kms:DescribeKey ${{Key.Arn}} {via_dynamodb}"
    );
    let secrets_key = format!(
        "kms:Decrypt ${{Key.Arn}} {via_secrets}
         kms:GenerateDataKey ${{Key.Arn}} {via_secrets}"
    );
    let escrow_key = format!(
        "kms:GenerateDataKey ${{EscrowKey.Arn}} {escrow}
         kms:Decrypt ${{EscrowKey.Arn}} {escrow}"
    );
    let queue_key = format!(
        "kms:Decrypt ${{Key.Arn}} {via_sqs}
         kms:GenerateDataKey ${{Key.Arn}} {via_sqs}"
    );
    let write_tokens = format!(
        "secretsmanager:PutSecretValue {TOKENS_A}
         secretsmanager:PutSecretValue {TOKENS_B}
         secretsmanager:CreateSecret {TOKENS_A}
         secretsmanager:CreateSecret {TOKENS_B}
         secretsmanager:TagResource {TOKENS_A}
         secretsmanager:TagResource {TOKENS_B}"
    );
    let read_tokens = format!(
        "secretsmanager:GetSecretValue {TOKENS_A}
         secretsmanager:GetSecretValue {TOKENS_B}"
    );
    let read_client_secrets = format!("secretsmanager:GetSecretValue {CLIENT_SECRETS}");
    // Registering, rotating and deleting apps through the API (session-exchange): client secrets
    // only, and no UpdateSecret or resource policy.
    let manage_client_secrets = format!(
        "secretsmanager:PutSecretValue {CLIENT_SECRETS}
         secretsmanager:CreateSecret {CLIENT_SECRETS}
         secretsmanager:TagResource {CLIENT_SECRETS}
         secretsmanager:RestoreSecret {CLIENT_SECRETS}
         secretsmanager:DeleteSecret {CLIENT_SECRETS}"
    );
    // Disconnecting (session-exchange), and removing tokens a write landed after a disconnect (every
    // function that writes tokens): tokens only, never a client secret.
    let delete_tokens = format!(
        "secretsmanager:DeleteSecret {TOKENS_A}
         secretsmanager:DeleteSecret {TOKENS_B}"
    );
    let items = "dynamodb:GetItem ${Table.Arn}
         dynamodb:PutItem ${Table.Arn}
         dynamodb:UpdateItem ${Table.Arn}";
    lines(&match binary {
        // Completes authorizations: reads the app's client secret, writes tokens, never reads one.
        // DeleteItem consumes the one-time OAuth state; no listing, so no Query.
        "oauth-callback" => format!(
            "{items}
             dynamodb:DeleteItem ${{Table.Arn}}
             {read_client_secrets}
             {write_tokens}
             {delete_tokens}
             {secrets_key}
             {table_key}"
        ),
        // The API: hands out, refreshes, imports and deletes (disconnect) tokens; lists a tenant's
        // connections (gsi1); lists (Query on the table) and deletes app registrations.
        "session-exchange" => format!(
            "{items}
             dynamodb:Query ${{Table.Arn}}/index/gsi1
             dynamodb:Query ${{Table.Arn}}
             dynamodb:DeleteItem ${{Table.Arn}}
             {read_client_secrets}
             {manage_client_secrets}
             {read_tokens}
             {write_tokens}
             {delete_tokens}
             {secrets_key}
             {table_key}
             {escrow_key}"
        ),
        // The scheduled refresh: the due index (gsi2); reads and writes tokens, and deletes only
        // those it wrote after losing a race to a disconnect.
        "token-refresh" => format!(
            "{items}
             dynamodb:Query ${{Table.Arn}}/index/gsi2
             {read_client_secrets}
             {read_tokens}
             {write_tokens}
             {delete_tokens}
             {secrets_key}
             {table_key}
             {escrow_key}
             {queue_key}"
        ),
        // Metadata only: the due index (gsi2) and the table's stream; no secret.
        "expiry-notifier" => format!(
            "{items}
             dynamodb:Query ${{Table.Arn}}/index/gsi2
             dynamodb:DescribeStream ${{Table.Arn}}/stream/*
             dynamodb:GetRecords ${{Table.Arn}}/stream/*
             dynamodb:GetShardIterator ${{Table.Arn}}/stream/*
             dynamodb:ListStreams ${{Table.Arn}}/stream/*
             {table_key}
             {queue_key}"
        ),
        other => panic!("no expectation for function {other}"),
    })
}

// ---------------------------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------------------------

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

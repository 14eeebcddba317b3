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

mod events;
mod keys_and_concurrency;
mod permissions;

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
const WEBHOOK_SECRETS: &str = "secret:tenants/*/webhooks/whk_*/signing_secret*";

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
             secretsmanager:PutSecretValue {WEBHOOK_SECRETS}
             secretsmanager:CreateSecret {WEBHOOK_SECRETS}
             secretsmanager:TagResource {WEBHOOK_SECRETS}
             secretsmanager:DeleteSecret {WEBHOOK_SECRETS}
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
        // Metadata: the due index (gsi2), the event outbox (gsi1), webhook records (Query on the
        // table) and the table's stream; of the secrets, only webhook signing secrets, read.
        "expiry-notifier" => format!(
            "{items}
             dynamodb:Query ${{Table.Arn}}/index/gsi2
             dynamodb:Query ${{Table.Arn}}/index/gsi1
             dynamodb:Query ${{Table.Arn}}
             secretsmanager:GetSecretValue {WEBHOOK_SECRETS}
             kms:Decrypt ${{Key.Arn}} {via_secrets}
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

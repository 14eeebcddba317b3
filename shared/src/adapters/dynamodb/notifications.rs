//! [`NotificationStore`] on the table. A notice is an item with `notice_state` (`pending`, `sending`,
//! `settled`), `attempts` (N), `claimed_at` (time key, while `sending`) and `outcome` (JSON, once
//! settled): either a status transition item (`CONN#<id>` / `TRANSITION#...`, marked when it is written
//! in the connection write's transaction, see [`mark_for_notice`]) or a warning item (`CONN#<id>` /
//! `NOTICE#<name>`, `data` = the subject). While unsettled it carries `gsi2pk = NOTIFY`, `gsi2sk =
//! <time>#<id>`, the outbox index; settling removes them. Every state change is an `UpdateItem`
//! conditioned on the state read, so of concurrent claimants exactly one succeeds, and a retried
//! update whose first attempt landed is recognised by reading the item back.

use super::errors::unavailable;
use super::keys::*;
use super::records::*;
use super::stream::{notice_key, table_keys};
use super::{DynamoStore, Item};
use crate::domain::StatusTransition;
use crate::ids::ConnectionId;
use crate::notify::{
    notice_kind_of, Claim, NoticeKey, NoticeOutcome, NoticeRecord, NoticeState, NoticeSubject,
    Release,
};
use crate::ports::{NotificationStore, StoreError};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use chrono::{DateTime, Utc};

const NOTIFY_PK: &str = "NOTIFY";
const NOTICE_SK_PREFIX: &str = "NOTICE#";
const NOTICE_STATE: &str = "notice_state";
const ATTEMPTS: &str = "attempts";
const CLAIMED_AT: &str = "claimed_at";
const OUTCOME: &str = "outcome";
/// A random value per claim call: a retried claim recognises its own landed write by it (claim times
/// alone do not tell two claimants apart when their clocks agree).
const CLAIM_TOKEN: &str = "claim_token";

fn notify_sk(at: DateTime<Utc>, id: &ConnectionId) -> String {
    format!("{}#{id}", time_key(at))
}

/// Makes a transition item its own outbox entry when the transition needs an email.
pub(super) fn mark_for_notice(item: &mut Item, id: &ConnectionId, transition: &StatusTransition) {
    if notice_kind_of(transition).is_some() {
        item.insert(NOTICE_STATE.into(), s("pending"));
        item.insert(ATTEMPTS.into(), n("0"));
        item.insert(GSI2_PK.into(), s(NOTIFY_PK));
        item.insert(GSI2_SK.into(), s(notify_sk(transition.at, id)));
    }
}

fn decode_notice(key: &NoticeKey, item: &Item) -> Result<Option<NoticeRecord>, StoreError> {
    let what = describe(item);
    let Some(state) = item.get(NOTICE_STATE).and_then(|v| v.as_s().ok()) else {
        return Ok(None);
    };
    let pk = string_attr(item, PK, &what)?;
    let sk = string_attr(item, SK, &what)?;
    let connection = connection_id_of_pk(pk)
        .ok_or_else(|| StoreError::Corrupt(format!("{what}: not a connection's notice")))?;
    let subject = if sk.starts_with(TRANSITION_SK_PREFIX) {
        NoticeSubject::Transition(decode_transition(item)?)
    } else {
        decode_data::<NoticeSubject>(item)?
    };
    let state = match state.as_str() {
        "pending" => NoticeState::Pending,
        "sending" => NoticeState::Sending {
            claimed_at: parse_time_key(string_attr(item, CLAIMED_AT, &what)?)
                .ok_or_else(|| StoreError::Corrupt(format!("{what}: claimed_at is not a time")))?,
        },
        "settled" => NoticeState::Settled(
            serde_json::from_str::<NoticeOutcome>(string_attr(item, OUTCOME, &what)?)
                .map_err(|e| StoreError::Corrupt(json_failure(&what, &e)))?,
        ),
        _ => return Err(StoreError::Corrupt(format!("{what}: unknown notice state"))),
    };
    let attempts = match item.get(ATTEMPTS) {
        Some(AttributeValue::N(v)) => v.parse().unwrap_or(0),
        _ => 0,
    };
    Ok(Some(NoticeRecord {
        key: key.clone(),
        connection,
        subject,
        state,
        attempts,
    }))
}

impl DynamoStore {
    fn notice_item_key(key: &NoticeKey) -> Result<(String, String), StoreError> {
        table_keys(key)
            .map(|(pk, sk)| (pk.to_string(), sk.to_string()))
            .ok_or_else(|| StoreError::NotFound(format!("notice {key}")))
    }
}

fn is_condition_failure<E, R>(error: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    matches!(error, aws_sdk_dynamodb::error::SdkError::ServiceError(e)
        if e.err().code() == Some("ConditionalCheckFailedException"))
}

#[async_trait]
impl NotificationStore for DynamoStore {
    async fn unsettled_notices(&self, limit: u32) -> Result<Vec<NoticeKey>, StoreError> {
        let out = self
            .index_query(GSI2, GSI2_PK, NOTIFY_PK.to_string())
            .limit(i32::try_from(limit.clamp(1, 1000)).unwrap_or(1000))
            .send()
            .await
            .map_err(|e| unavailable("Query (notification outbox)", &e))?;
        out.items
            .unwrap_or_default()
            .iter()
            .map(|item| {
                let what = describe(item);
                Ok(notice_key(
                    string_attr(item, PK, &what)?,
                    string_attr(item, SK, &what)?,
                ))
            })
            .collect()
    }

    async fn get_notice(&self, key: &NoticeKey) -> Result<Option<NoticeRecord>, StoreError> {
        let Some((pk, sk)) = table_keys(key) else {
            return Ok(None);
        };
        match self
            .get_item(pk.to_string(), sk, "GetItem (notice)")
            .await?
        {
            Some(item) => decode_notice(key, &item),
            None => Ok(None),
        }
    }

    async fn create_notice(
        &self,
        connection: &ConnectionId,
        name: &str,
        subject: &NoticeSubject,
    ) -> Result<bool, StoreError> {
        let (pk, sk) = (
            connection_pk(connection),
            format!("{NOTICE_SK_PREFIX}{name}"),
        );
        let key = notice_key(&pk, &sk);
        let item = Item::from([
            (PK.to_string(), s(pk)),
            (SK.to_string(), s(sk)),
            (ENTITY.to_string(), s("notice")),
            (DATA.to_string(), s(encode_data(subject, "notice")?)),
            (NOTICE_STATE.to_string(), s("pending")),
            (ATTEMPTS.to_string(), n("0")),
            (GSI2_PK.to_string(), s(NOTIFY_PK)),
            (
                GSI2_SK.to_string(),
                s(notify_sk(subject.created_at(), connection)),
            ),
        ]);
        match self
            .put_new(item, "PutItem (notice)", || format!("notice {key}"))
            .await
        {
            Ok(()) => Ok(true),
            Err(StoreError::AlreadyExists(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn claim_notice(
        &self,
        key: &NoticeKey,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<Claim, StoreError> {
        let Some((pk, sk)) = table_keys(key) else {
            return Ok(Claim::Missing);
        };
        let now_key = time_key(now);
        let token = crate::notify::mailer::message_token();
        let updated = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(pk.to_string(), sk)))
            .update_expression("SET #state = :sending, #claimed = :now, #token = :token")
            .condition_expression("#state = :pending")
            .expression_attribute_names("#state", NOTICE_STATE)
            .expression_attribute_names("#claimed", CLAIMED_AT)
            .expression_attribute_names("#token", CLAIM_TOKEN)
            .expression_attribute_values(":token", s(token.as_str()))
            .expression_attribute_values(":sending", s("sending"))
            .expression_attribute_values(":pending", s("pending"))
            .expression_attribute_values(":now", s(now_key.as_str()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match updated {
            Ok(out) => {
                let item = out.attributes.unwrap_or_default();
                return match decode_notice(key, &item)? {
                    Some(record) => Ok(Claim::Claimed(record)),
                    None => Err(StoreError::Corrupt(format!(
                        "{}: not a notice",
                        describe(&item)
                    ))),
                };
            }
            Err(e) if is_condition_failure(&e) => {}
            Err(e) => return Err(unavailable("UpdateItem (claim notice)", &e)),
        }
        let Some((pk, sk)) = table_keys(key) else {
            return Ok(Claim::Missing);
        };
        let Some(item) = self
            .get_item(pk.to_string(), sk, "GetItem (notice)")
            .await?
        else {
            return Ok(Claim::Missing);
        };
        let Some(record) = decode_notice(key, &item)? else {
            return Ok(Claim::Missing);
        };
        let ours = item.get(CLAIM_TOKEN).and_then(|v| v.as_s().ok()) == Some(&token);
        Ok(match record.state.clone() {
            // Our own claim, landed by an attempt whose answer was lost and retried by the SDK.
            NoticeState::Sending { .. } if ours => Claim::Claimed(record),
            NoticeState::Sending { claimed_at } if claimed_at < stale_before => {
                Claim::Stale { claimed_at }
            }
            NoticeState::Sending { .. } => Claim::Busy,
            NoticeState::Settled(outcome) => Claim::Settled(outcome),
            // The condition failed, yet it reads pending: a concurrent release; let the next run claim.
            NoticeState::Pending => Claim::Busy,
        })
    }

    async fn release_notice(
        &self,
        key: &NoticeKey,
        claimed_at: DateTime<Utc>,
        release: &Release,
    ) -> Result<(), StoreError> {
        let (pk, sk) = Self::notice_item_key(key)?;
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(pk, &sk)))
            .condition_expression("#state = :sending AND #claimed = :claimed")
            .expression_attribute_names("#state", NOTICE_STATE)
            .expression_attribute_names("#claimed", CLAIMED_AT)
            .expression_attribute_names("#token", CLAIM_TOKEN)
            .expression_attribute_values(":sending", s("sending"))
            .expression_attribute_values(":claimed", s(time_key(claimed_at)));
        request = match release {
            Release::Settle(outcome) => {
                let encoded = serde_json::to_string(outcome)
                    .map_err(|e| StoreError::Corrupt(json_failure("notice outcome", &e)))?;
                let request = request
                    .expression_attribute_names("#outcome", OUTCOME)
                    .expression_attribute_names("#gsi2pk", GSI2_PK)
                    .expression_attribute_names("#gsi2sk", GSI2_SK)
                    .expression_attribute_values(":settled", s("settled"))
                    .expression_attribute_values(":outcome", s(encoded));
                match outcome {
                    // A failure records its attempts; other outcomes leave the count as it is.
                    NoticeOutcome::Failed { attempts, .. } => request
                        .update_expression(
                            "SET #state = :settled, #outcome = :outcome, #attempts = :attempts \
                             REMOVE #claimed, #token, #gsi2pk, #gsi2sk",
                        )
                        .expression_attribute_names("#attempts", ATTEMPTS)
                        .expression_attribute_values(":attempts", n(attempts.to_string())),
                    _ => request.update_expression(
                        "SET #state = :settled, #outcome = :outcome \
                         REMOVE #claimed, #token, #gsi2pk, #gsi2sk",
                    ),
                }
            }
            Release::Retry { attempts } => request
                .update_expression(
                    "SET #state = :pending, #attempts = :attempts REMOVE #claimed, #token",
                )
                .expression_attribute_names("#attempts", ATTEMPTS)
                .expression_attribute_values(":pending", s("pending"))
                .expression_attribute_values(":attempts", n(attempts.to_string())),
        };
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => {
                // A retried release whose first attempt landed finds its own result.
                let landed = match (self.get_notice(key).await?, release) {
                    (Some(r), Release::Settle(outcome)) => {
                        r.state == NoticeState::Settled(outcome.clone())
                    }
                    (Some(r), Release::Retry { attempts }) => {
                        r.state == NoticeState::Pending && r.attempts == *attempts
                    }
                    (None, _) => false,
                };
                if landed {
                    Ok(())
                } else {
                    Err(StoreError::Conflict)
                }
            }
            Err(e) => Err(unavailable("UpdateItem (release notice)", &e)),
        }
    }
}

//! The notification outbox and the usage counters, in memory.

use super::*;

#[async_trait]
impl NotificationStore for MemoryStore {
    async fn unsettled_notices(&self, limit: u32) -> Result<Vec<NoticeKey>, StoreError> {
        let state = self.state();
        let mut unsettled: Vec<_> = state
            .notices
            .iter()
            .filter(|(_, n)| !matches!(n.state, NoticeState::Settled(_)))
            .map(|(key, n)| (n.subject.created_at(), key.clone()))
            .collect();
        unsettled.sort();
        Ok(unsettled
            .into_iter()
            .take(limit as usize)
            .map(|(_, key)| NoticeKey::new(key))
            .collect())
    }

    async fn get_notice(&self, key: &NoticeKey) -> Result<Option<NoticeRecord>, StoreError> {
        Ok(self
            .state()
            .notices
            .get(key.as_str())
            .map(|n| n.record(key.as_str())))
    }

    async fn create_notice(
        &self,
        connection: &ConnectionId,
        name: &str,
        subject: &NoticeSubject,
    ) -> Result<bool, StoreError> {
        let key = format!("warning:{connection}:{name}");
        let mut state = self.state();
        if state.notices.contains_key(&key) {
            return Ok(false);
        }
        state.notices.insert(
            key,
            Notice {
                connection: connection.clone(),
                subject: subject.clone(),
                state: NoticeState::Pending,
                attempts: 0,
            },
        );
        Ok(true)
    }

    async fn claim_notice(
        &self,
        key: &NoticeKey,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<Claim, StoreError> {
        let mut state = self.state();
        let Some(notice) = state.notices.get_mut(key.as_str()) else {
            return Ok(Claim::Missing);
        };
        Ok(match notice.state.clone() {
            NoticeState::Pending => {
                notice.state = NoticeState::Sending { claimed_at: now };
                Claim::Claimed(notice.record(key.as_str()))
            }
            NoticeState::Sending { claimed_at } if claimed_at < stale_before => {
                Claim::Stale { claimed_at }
            }
            NoticeState::Sending { .. } => Claim::Busy,
            NoticeState::Settled(outcome) => Claim::Settled(outcome),
        })
    }

    async fn release_notice(
        &self,
        key: &NoticeKey,
        claimed_at: DateTime<Utc>,
        release: &Release,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let notice = state
            .notices
            .get_mut(key.as_str())
            .filter(|n| n.state == NoticeState::Sending { claimed_at })
            .ok_or(StoreError::Conflict)?;
        match release {
            Release::Settle(outcome) => {
                if let NoticeOutcome::Failed { attempts, .. } = outcome {
                    notice.attempts = *attempts;
                }
                notice.state = NoticeState::Settled(outcome.clone());
            }
            Release::Retry { attempts } => {
                notice.attempts = *attempts;
                notice.state = NoticeState::Pending;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl UsageStore for MemoryStore {
    async fn take_unit(
        &self,
        key: &UsageKey,
        window: UsageWindow,
        limit: u32,
    ) -> Result<UsageTake, StoreError> {
        let mut state = self.state();
        let used = state.usage.entry((key.clone(), window.start)).or_insert(0);
        Ok(if *used < limit {
            *used += 1;
            UsageTake::Granted { used: *used }
        } else {
            UsageTake::Refused { used: *used }
        })
    }

    async fn units_used(&self, key: &UsageKey, window: UsageWindow) -> Result<u32, StoreError> {
        Ok(self
            .state()
            .usage
            .get(&(key.clone(), window.start))
            .copied()
            .unwrap_or(0))
    }
}

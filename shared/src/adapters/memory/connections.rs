//! Connections, their leases and the schedule indexes, in memory.

use super::*;

#[async_trait]
impl ConnectionStore for MemoryStore {
    async fn insert_connection(
        &self,
        connection: &Connection,
        transitions: &[StatusTransition],
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        if state.connections.contains_key(&connection.id) {
            return Err(StoreError::AlreadyExists(format!(
                "connection {}",
                connection.id
            )));
        }
        state
            .connections
            .insert(connection.id.clone(), connection.clone());
        state.add_transitions(&connection.id, transitions);
        Ok(())
    }

    async fn get_connection(&self, id: &ConnectionId) -> Result<Option<Connection>, StoreError> {
        Ok(self.state().connections.get(id).cloned())
    }

    async fn save_connection(
        &self,
        connection: &Connection,
        fence: Fence<'_>,
        transitions: &[StatusTransition],
    ) -> Result<Connection, StoreError> {
        if self.take_fault(|f| &mut f.connection_saves) {
            return Err(StoreError::Unavailable(
                "saving a connection: the in-memory store was told to fail this write".into(),
            ));
        }
        let mut state = self.state();
        let Some(stored) = state.connections.get(&connection.id) else {
            return Err(StoreError::NotFound(format!(
                "connection {}",
                connection.id
            )));
        };
        let fenced = fence
            .owner()
            .is_some_and(|owner| stored_lease(stored).map(|l| &l.owner) != Some(owner));
        if stored.tenant != connection.tenant
            || stored_version(stored) != stored_version(connection)
            || fenced
        {
            return Err(StoreError::Conflict);
        }
        let lease = match fence {
            Fence::LeaseReleased(_) => None,
            _ => stored_lease(stored).cloned(),
        };
        let saved = with_store_fields(connection.clone(), next_version(stored)?, lease);
        state
            .connections
            .insert(connection.id.clone(), saved.clone());
        state.add_transitions(&connection.id, transitions);
        Ok(saved)
    }

    async fn acquire_lease(
        &self,
        id: &ConnectionId,
        owner: &LeaseOwner,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<LeaseAttempt, StoreError> {
        let expires_at = now.checked_add_signed(ttl).ok_or_else(|| {
            StoreError::Unavailable(format!(
                "taking a refresh lease: a lease of {ttl} from {now} ends out of range"
            ))
        })?;
        let mut state = self.state();
        let Some(stored) = state.connections.get_mut(id) else {
            return Ok(LeaseAttempt::Missing);
        };
        if let Some(held) = stored_lease(stored).filter(|l| l.expires_at > now) {
            return Ok(LeaseAttempt::Busy {
                until: held.expires_at,
            });
        }
        let lease = Lease {
            owner: owner.clone(),
            expires_at,
        };
        let taken = with_store_fields(stored.clone(), next_version(stored)?, Some(lease));
        *stored = taken.clone();
        Ok(LeaseAttempt::Acquired(taken))
    }

    async fn release_lease(&self, id: &ConnectionId, owner: &LeaseOwner) -> Result<(), StoreError> {
        let mut state = self.state();
        if let Some(stored) = state.connections.get_mut(id) {
            if stored_lease(stored).is_some_and(|l| &l.owner == owner) {
                let version = stored_version(stored);
                *stored = with_store_fields(stored.clone(), version, None);
            }
        }
        Ok(())
    }

    async fn list_connections(
        &self,
        tenant: &TenantId,
        page: PageRequest,
    ) -> Result<Page<Connection>, StoreError> {
        let after = Cursor::of_request(&page, |cursor| match cursor {
            Cursor::Connections {
                tenant: t,
                created_at,
                id,
            } if &t == tenant => Some((created_at, id)),
            _ => None,
        })?;
        let sorted: BTreeMap<_, _> = self
            .state()
            .connections
            .values()
            .filter(|c| &c.tenant == tenant)
            .map(|c| ((c.created_at, c.id.clone()), c.clone()))
            .collect();
        Ok(page_after(sorted, after, &page, |(created_at, id)| {
            Cursor::Connections {
                tenant: tenant.clone(),
                created_at: *created_at,
                id: id.clone(),
            }
        }))
    }

    async fn due_for_refresh(
        &self,
        due_by: DateTime<Utc>,
        page: PageRequest,
    ) -> Result<Page<DueConnection>, StoreError> {
        let after = Cursor::of_request(&page, |cursor| match cursor {
            Cursor::Due { at, id } => Some((at, id)),
            _ => None,
        })?;
        let sorted: BTreeMap<_, _> = self
            .state()
            .connections
            .values()
            .filter_map(|c| match c.schedule_entry() {
                Some(ScheduleEntry::Due(at)) if at <= due_by => Some((
                    (at, c.id.clone()),
                    DueConnection {
                        id: c.id.clone(),
                        tenant: c.tenant.clone(),
                        next_refresh_at: at,
                    },
                )),
                _ => None,
            })
            .collect();
        Ok(page_after(sorted, after, &page, |(at, id)| Cursor::Due {
            at: *at,
            id: id.clone(),
        }))
    }

    async fn awaiting_person(
        &self,
        page: PageRequest,
    ) -> Result<Page<AwaitingConnection>, StoreError> {
        let after = Cursor::of_request(&page, |cursor| match cursor {
            Cursor::Awaiting { since, id } => Some((since, id)),
            _ => None,
        })?;
        let sorted: BTreeMap<_, _> = self
            .state()
            .connections
            .values()
            .filter_map(|c| match c.schedule_entry() {
                Some(ScheduleEntry::Awaiting(since)) => Some((
                    (since, c.id.clone()),
                    AwaitingConnection {
                        id: c.id.clone(),
                        tenant: c.tenant.clone(),
                        since,
                    },
                )),
                _ => None,
            })
            .collect();
        Ok(page_after(sorted, after, &page, |(since, id)| {
            Cursor::Awaiting {
                since: *since,
                id: id.clone(),
            }
        }))
    }

    async fn list_transitions(
        &self,
        id: &ConnectionId,
        page: PageRequest,
    ) -> Result<Page<StatusTransition>, StoreError> {
        let after = Cursor::of_request(&page, |cursor| match cursor {
            Cursor::Transitions {
                connection,
                at,
                seq,
            } if &connection == id => Some((at, seq)),
            _ => None,
        })?;
        let sorted: BTreeMap<_, _> = self
            .state()
            .transitions
            .get(id)
            .into_iter()
            .flatten()
            .map(|(seq, t)| ((t.at, *seq), t.clone()))
            .collect();
        Ok(page_after(sorted, after, &page, |(at, seq)| {
            Cursor::Transitions {
                connection: id.clone(),
                at: *at,
                seq: *seq,
            }
        }))
    }
}

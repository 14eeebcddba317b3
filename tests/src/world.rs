//! Steps the scenario worlds of several test files take the same way: storing what a callback stores
//! when a person authorizes, and reading a connection back with its tokens.

use broker_core::backend::Backend as Stores;
use broker_core::domain::{Connection, Credentials, StatusTransition, TokenSet};
use broker_core::ids::ConnectionId;
use broker_core::ports::Fence;
use broker_core::CredentialKeeper;

/// Writes `tokens` to the connection's next vault slot and saves it with `transition`, fenced by its
/// version, as the callback does after an authorization.
pub async fn store_authorized(
    stores: &Stores,
    connection: Connection,
    tokens: TokenSet,
    transition: StatusTransition,
) -> Connection {
    let keeper = CredentialKeeper::new(stores.store.clone(), stores.vault.clone());
    let target = CredentialKeeper::next_target(&connection);
    keeper
        .commit(
            connection,
            target,
            &Credentials::OAuth2(tokens),
            Fence::Version,
            &[transition],
        )
        .await
        .unwrap()
}

/// The connection as stored, and the tokens its credentials pointer leads to.
pub async fn stored_with_tokens(
    stores: &Stores,
    id: &ConnectionId,
) -> (Connection, Option<TokenSet>) {
    let connection = stores.store.get_connection(id).await.unwrap().unwrap();
    let keeper = CredentialKeeper::new(stores.store.clone(), stores.vault.clone());
    let tokens = keeper
        .current(&connection)
        .await
        .unwrap()
        .and_then(|c| c.token_set().cloned());
    (connection, tokens)
}

//! Errors of the simulator's own API (setup and admin calls), not the providers' protocol errors.

#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    #[error("could not bind the simulator's listener: {0}")]
    Bind(#[from] std::io::Error),
    #[error("unknown Twinfield organisation {0:?}: add it with add_twinfield_organisation first")]
    UnknownOrganisation(String),
    #[error("unknown Twinfield user {0:?}: add it with add_twinfield_user first")]
    UnknownUser(String),
    #[error("unknown Acumatica instance {0:?}: add it with add_acumatica_instance first")]
    UnknownInstance(String),
    #[error("unknown Acumatica tenant {0:?} on that instance")]
    UnknownTenant(String),
    #[error("Acumatica client ids look like <GUID>@<Tenant>; got {0:?}")]
    InvalidClientId(String),
    #[error("unknown client {0:?}: register it first")]
    UnknownClient(String),
    #[error("unknown Exact Online country {0:?}: use one of nl, be, de, co.uk, com, fr, es")]
    UnknownCountry(String),
}

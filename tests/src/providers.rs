//! The provider side of a test world: the built-in catalogue aimed at the simulators.

use broker_core::providers::Catalogue;
use provider_simulators::Control;

/// The built-in definitions, unchanged, aimed at the simulators (Twinfield's login service and every
/// Exact Online country; Acumatica and generic providers are reached through their registered URLs).
pub fn catalogue_aimed_at(sim: &Control) -> Catalogue {
    let mut catalogue = Catalogue::built_in();
    catalogue
        .aim_at_sandbox(&sim.twinfield_login_base(), |country| {
            sim.exact_base(country.tld())
        })
        .expect("the simulators' addresses are valid base URLs");
    catalogue
}

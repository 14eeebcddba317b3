//! The command line's grammar: every command, argument and its help.

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "broker-admin",
    version,
    about = "Administer the connection broker: tenants, API keys, OAuth app registrations, connections.",
    long_about = "Administer the connection broker: tenants, API keys, OAuth app registrations, connections.\n\n\
        The backend comes from the environment: with BROKER_TABLE set, DynamoDB and Secrets Manager (standard \
        AWS configuration applies); otherwise the embedded store in BROKER_DATA_DIR (default .broker).\n\
        Secrets are never taken from the command line: client secrets are read from standard input or a file."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per run: the size of the largest variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum Command {
    /// Tenants: the customers of the broker.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// OAuth app registrations at Twinfield, Exact Online, Acumatica or a generic provider.
    #[command(subcommand)]
    App(AppCommand),
    /// Integration API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Connections and their status history.
    #[command(subcommand)]
    Connection(ConnectionCommand),
}

#[derive(Subcommand)]
pub enum TenantCommand {
    /// Create a tenant.
    Create {
        /// Lowercase letters, digits and '-', e.g. `acme`.
        id: String,
        /// The name shown to people in pages and emails.
        #[arg(long)]
        name: String,
        /// A logo shown at the top of the emails sent on its behalf: an https URL of an image about
        /// 40 pixels high.
        #[arg(long, value_name = "URL")]
        logo_url: Option<String>,
        /// The colour of the button and the band at the top of its emails, as #rrggbb. The button's
        /// text is white or dark, whichever reads better on it.
        #[arg(long, value_name = "#RRGGBB")]
        accent_colour: Option<String>,
        /// The language of its connections' pages and emails where a connection names none: nl or en.
        #[arg(long)]
        locale: Option<String>,
        /// The IANA time zone its people read times in, e.g. Europe/Amsterdam.
        #[arg(long)]
        time_zone: Option<String>,
        /// An origin its connections' return URLs may point at, e.g. https://app.example.com
        /// (repeatable). Without one, connections cannot carry a return URL.
        #[arg(long = "return-origin")]
        return_origins: Vec<String>,
    },
    /// Show a tenant: its name, branding, language, time zone and return origins.
    Show {
        /// The tenant's id.
        id: String,
        /// Print JSON (stable field names) instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[allow(clippy::large_enum_variant)] // parsed once per run, as `Command`
#[derive(Subcommand)]
pub enum AppCommand {
    /// Register (or replace) an OAuth app. The client secret is read from standard input, or from
    /// --client-secret-file.
    Register(RegisterApp),
    /// List a tenant's app registrations (never their client secrets).
    List {
        /// The tenant, by its id (see `tenant create`).
        #[arg(long)]
        tenant: String,
        /// Print JSON (stable field names) instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct RegisterApp {
    /// The tenant the app belongs to, by its id.
    #[arg(long)]
    pub tenant: String,
    /// The app's id within the tenant, e.g. `exact-nl`.
    #[arg(long)]
    pub id: String,
    /// twinfield, exact, acumatica or generic.
    #[arg(long)]
    pub provider: String,
    /// Exact Online country: nl, be, de, co.uk, com, fr, es.
    #[arg(long)]
    pub country: Option<String>,
    /// Acumatica instance URL, e.g. https://acme.acumatica.com.
    #[arg(long)]
    pub instance_url: Option<String>,
    /// Acumatica tenant (company login name).
    #[arg(long)]
    pub acumatica_tenant: Option<String>,
    /// The Acumatica connected application's Refresh Tokens mode, when not absolute 30 days:
    /// `sliding:15` (sliding, infinite), `sliding:15:90` (sliding, at most 90 days) or `absolute:N`.
    #[arg(long)]
    pub acumatica_refresh_tokens: Option<String>,
    /// Generic provider definition name in the provider catalogue.
    #[arg(long)]
    pub definition: Option<String>,
    /// The client id the provider issued for the app.
    #[arg(long)]
    pub client_id: String,
    /// The redirect URI registered at the provider: the broker's `/oauth/callback` URL, exactly.
    #[arg(long)]
    pub redirect_uri: String,
    /// A scope to request instead of the provider's defaults (repeatable).
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    /// Read the client secret from this file instead of standard input.
    #[arg(long)]
    pub client_secret_file: Option<std::path::PathBuf>,
    /// Accept an instance URL on this machine (loopback), for local runs on the embedded store.
    /// Private and link-local addresses are refused regardless, and with BROKER_TABLE set (AWS)
    /// this flag is refused: the functions there call public addresses only.
    #[arg(long)]
    pub allow_loopback: bool,
}

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Create an API key. It is printed once and never stored in readable form.
    Create {
        /// The tenant the key works for, by its id.
        #[arg(long)]
        tenant: String,
        /// A name for people: which integration holds the key, e.g. `ci` or `erp-sync`.
        #[arg(long, default_value = "")]
        label: String,
        /// Allow only session exchange (no creating, listing or disconnecting connections).
        #[arg(long)]
        session_only: bool,
        /// Limit the key to this connection of the tenant, by its id (repeatable).
        #[arg(long = "connection")]
        connections: Vec<String>,
        /// Also allow registering, changing and deleting the tenant's OAuth apps (/v1/apps). Only
        /// for a key without --session-only or --connection limits.
        #[arg(long)]
        manage_apps: bool,
    },
    /// List a tenant's keys: prefix, label, scope, created and revoked (never the key itself).
    List {
        /// The tenant, by its id (see `tenant create`).
        #[arg(long)]
        tenant: String,
        /// Print JSON (stable field names) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by its prefix.
    Revoke {
        /// The tenant, by its id (see `tenant create`).
        #[arg(long)]
        tenant: String,
        /// The key's prefix, as `key list` shows it.
        prefix: String,
    },
}

#[derive(Subcommand)]
pub enum ConnectionCommand {
    /// List a tenant's connections: id, name, provider, status and where.
    List {
        /// The tenant, by its id (see `tenant create`).
        #[arg(long)]
        tenant: String,
        /// Print JSON (stable field names) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one connection: status and why, who authorized it, recipients, expiries, and its history
    /// newest first (who, when, why; the notices sent).
    Show {
        /// The tenant, by its id (see `tenant create`).
        #[arg(long)]
        tenant: String,
        /// The connection's id, as `connection list` shows it.
        id: String,
        /// Print JSON (stable field names) instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Every command and every argument says what it is for in `--help`.
    #[test]
    fn every_command_and_argument_has_help() {
        fn check(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", command.get_name());
            if command.get_about().is_none() {
                missing.push(path.clone());
            }
            for arg in command.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                check(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        check(&Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "without help: {missing:?}");
    }
}

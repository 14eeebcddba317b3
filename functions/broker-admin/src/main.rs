//! `broker-admin`: the operators' command line. It works on whatever backend the environment selects
//! (the embedded store by default; DynamoDB + Secrets Manager with `BROKER_TABLE`).

mod apps;
mod cli;
mod connections;
mod keys;
mod output;
mod store;
mod tenants;

use broker_core::backend::BackendConfig;
use broker_core::ids::TenantId;
use clap::Parser;
use cli::{Cli, Command, TenantCommand};
use output::{Failure, Output};
use std::process::ExitCode;
use store::{Admin, AtStore, Opening};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = Output::stdout();
    match run(cli, &mut out).await.and_then(|()| out.flush()) {
        Ok(()) | Err(Failure::OutputClosed) => ExitCode::SUCCESS,
        Err(Failure::Refused(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, out: &mut Output) -> Result<(), Failure> {
    let opening = match cli.command {
        Command::Tenant(TenantCommand::Create { .. }) => Opening::MayCreate,
        _ => Opening::Existing,
    };
    let admin = Admin::open(&BackendConfig::from_env(), opening).await?;
    match cli.command {
        Command::Tenant(command) => tenants::run(&admin, command, out).await,
        Command::App(command) => apps::run(&admin, command, out).await,
        Command::Key(command) => keys::run(&admin, command, out).await,
        Command::Connection(command) => connections::run(&admin, command, out).await,
    }
}

/// The tenant named on the command line, which must exist in the store.
async fn existing_tenant(admin: &Admin, value: &str) -> Result<TenantId, Failure> {
    let id = TenantId::parse(value)?;
    match admin
        .backend
        .store
        .get_tenant(&id)
        .await
        .at(&admin.location)?
    {
        Some(_) => Ok(id),
        None => Err(Failure::refused(format!(
            "tenant {id} does not exist in {}: create it with `broker-admin tenant create {id} \
             --name ...`, or point BROKER_DATA_DIR (or BROKER_TABLE) at the store that has it",
            admin.location
        ))),
    }
}

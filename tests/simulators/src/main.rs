//! `provider-simulators`: serves the three simulators on loopback with one demo client per
//! provider, so a person can click through the flows or a broker in another process can use them.
//!
//! Flags: `--port N` (default 0: any free port), `--auto-consent`, `--redirect-uri URI` (repeatable;
//! default `http://localhost:8080/callback`), `--client-id ID`, `--client-secret SECRET`,
//! `--acumatica-tenant NAME` (default `Company`). Everything else is configurable at `/_sim/...`.

use provider_simulators::{
    AcumaticaClientRegistration, AcumaticaRefreshPolicy, ClientRegistration, Simulator,
    SimulatorConfig,
};
use std::net::SocketAddr;

struct Flags {
    port: u16,
    auto_consent: bool,
    redirect_uris: Vec<String>,
    client_id: String,
    client_secret: String,
    tenant: String,
}

fn parse_flags() -> Result<Flags, String> {
    let mut flags = Flags {
        port: 0,
        auto_consent: false,
        redirect_uris: Vec::new(),
        client_id: "demo-client".into(),
        client_secret: "demo-secret".into(),
        tenant: "Company".into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--port" => flags.port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--auto-consent" => flags.auto_consent = true,
            "--redirect-uri" => flags.redirect_uris.push(value()?),
            "--client-id" => flags.client_id = value()?,
            "--client-secret" => flags.client_secret = value()?,
            "--acumatica-tenant" => flags.tenant = value()?,
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if flags.redirect_uris.is_empty() {
        flags
            .redirect_uris
            .push("http://localhost:8080/callback".into());
    }
    Ok(flags)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Logs go to stderr so the first line of stdout is the base URL, for scripts to read.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let flags = match parse_flags() {
        Ok(f) => f,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("error: {message}");
            }
            eprintln!(
                "usage: provider-simulators [--port N] [--auto-consent] [--redirect-uri URI]... \
                 [--client-id ID] [--client-secret SECRET] [--acumatica-tenant NAME]"
            );
            std::process::exit(2);
        }
    };
    let mut config = SimulatorConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], flags.port)),
        ..Default::default()
    };
    config.knobs.auto_consent = flags.auto_consent;
    let sim = Simulator::start(config).await?;

    let client = ClientRegistration {
        client_id: flags.client_id.clone(),
        client_secret: flags.client_secret.clone(),
        redirect_uris: flags.redirect_uris.clone(),
    };
    sim.register_twinfield_client(client.clone());
    sim.register_exact_client(client);
    // Acumatica client ids carry the tenant; a fixed GUID keeps the demo URL stable across runs.
    let acumatica_id = format!("00000000-0000-4000-8000-000000000001@{}", flags.tenant);
    sim.register_acumatica_client(
        "demo",
        AcumaticaClientRegistration {
            client_id: acumatica_id.clone(),
            client_secret: flags.client_secret.clone(),
            redirect_uris: flags.redirect_uris.clone(),
            refresh_policy: AcumaticaRefreshPolicy::default(),
            rotate_refresh_tokens: true,
        },
    )?;

    let redirect =
        url::form_urlencoded::byte_serialize(flags.redirect_uris[0].as_bytes()).collect::<String>();
    let id = &flags.client_id;
    println!("{}", sim.base_url());
    println!("Twinfield login host: {}", sim.twinfield_login_base());
    println!(
        "  try: {}/auth/authentication/connect/authorize?client_id={id}&redirect_uri={redirect}&response_type=code&scope=openid+twf.user+twf.organisation+twf.organisationUser+offline_access&state=s&nonce=n",
        sim.twinfield_login_base()
    );
    println!("Exact Online (nl): {}", sim.exact_base("nl"));
    println!("  try: {}/api/oauth2/auth?client_id={id}&redirect_uri={redirect}&response_type=code&state=s", sim.exact_base("nl"));
    println!("Acumatica instance: {}", sim.acumatica_instance_url("demo"));
    println!(
        "  try: {}/identity/connect/authorize?client_id={}&redirect_uri={redirect}&response_type=code&scope=api+offline_access&state=s",
        sim.acumatica_instance_url("demo"),
        url::form_urlencoded::byte_serialize(acumatica_id.as_bytes()).collect::<String>()
    );
    println!("Client secret for all three: {}", flags.client_secret);

    tokio::signal::ctrl_c().await?;
    sim.shutdown();
    Ok(())
}

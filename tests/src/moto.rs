//! moto server: the real AWS-compatible APIs (DynamoDB, Secrets Manager, SES) the adapters are tested
//! against, reached by the real aws-sdk clients through `endpoint_url`.

use crate::tools::{free_port, install_once, run, tools_dir, wait_for_port, Service};
use anyhow::Result;
use aws_config::{Region, SdkConfig};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const MOTO_SPEC: &str = "moto[server]>=5,<6";

fn venv() -> PathBuf {
    tools_dir().join("venv")
}

/// Creates `.tools/venv` with moto, once per machine.
pub fn install() -> Result<()> {
    install_once("moto", || {
        let venv = venv();
        if !venv.join("bin/python").exists() {
            run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
        }
        run(Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            MOTO_SPEC,
        ]))
    })
}

/// moto's server handles each request on its own thread and checks conditions in Python without a
/// lock, so under load two conditional writes can both succeed — which real DynamoDB never allows.
/// Serving one request at a time makes moto's conditional writes atomic, as AWS's are; the lease and
/// single-use-state races in the contract suite depend on it.
const SERIALISED_SERVER: &str = r#"
import sys, threading
from moto.moto_server import werkzeug_app
from moto import server
_lock = threading.Lock()
_call = werkzeug_app.DomainDispatcherApplication.__call__
def _serialised(self, environ, start_response):
    with _lock:
        return list(_call(self, environ, start_response))
werkzeug_app.DomainDispatcherApplication.__call__ = _serialised
sys.argv[0] = "moto_server"
server.main(sys.argv[1:])
"#;

/// A running moto server on a free loopback port.
pub struct Moto {
    _service: Service,
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> Result<Self> {
        install()?;
        let port = free_port();
        let program = venv().join("bin/python");
        let args = [
            "-c",
            SERIALISED_SERVER,
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ]
        .map(String::from);
        let mut service = Service::spawn("moto", &program, &args, &[])?;
        wait_for_port(
            port,
            service.child(),
            Duration::from_secs(60),
            "moto_server",
        )?;
        Ok(Self {
            _service: service,
            endpoint: format!("http://127.0.0.1:{port}"),
        })
    }

    /// SDK configuration pointing every client at this server, with throwaway credentials.
    pub async fn sdk_config(&self) -> SdkConfig {
        sdk_config_at(&self.endpoint, broker_core::backend::aws_config_loader()).await
    }
}

/// `loader`'s SDK configuration aimed at `endpoint` (moto, or a proxy in front of it), with
/// throwaway credentials in moto's region.
pub async fn sdk_config_at(endpoint: &str, loader: aws_config::ConfigLoader) -> SdkConfig {
    loader
        .endpoint_url(endpoint)
        .region(Region::new("eu-west-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "moto",
        ))
        .load()
        .await
}

/// A name no other test in this process has used (tables and secret prefixes are per test).
pub fn unique_name(base: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{base}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl Moto {
    /// The raw messages sent through SES to `recipient`, as moto recorded them (its
    /// `/moto-api/data.json` keeps SES v2 raw sends under `ses` → `RawMessage`).
    pub async fn raw_mail_to(&self, recipient: &str) -> Vec<String> {
        let url = format!("{}/moto-api/data.json", self.endpoint);
        let data: serde_json::Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        data["ses"]["RawMessage"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|m| {
                m["destinations"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(|a| a.as_str() == Some(recipient)))
            })
            .map(|m| m["raw_data"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

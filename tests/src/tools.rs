//! Installing and running the helper tools the tests need, under `<workspace>/.tools/`.

use anyhow::{bail, Context, Result};
use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The workspace root (the folder with the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `<workspace>/.tools`, ignored by git.
pub fn tools_dir() -> PathBuf {
    let dir = workspace_root().join(".tools");
    fs::create_dir_all(&dir).expect("cannot create .tools/");
    dir
}

/// Runs `install` once per machine, even when several test processes start at the same time: an
/// exclusive file lock serialises them and a marker file records success.
pub fn install_once(name: &str, install: impl FnOnce() -> Result<()>) -> Result<()> {
    let marker = tools_dir().join(format!("{name}.installed"));
    with_lock(name, || {
        if !marker.exists() {
            eprintln!(
                "[harness] installing {name} into {} (first run only)",
                tools_dir().display()
            );
            install().with_context(|| format!("installing {name}"))?;
            fs::write(&marker, b"ok")?;
        }
        Ok(())
    })
}

/// Runs `work` holding the exclusive lock `<.tools>/<name>.lock`, which every thread and process of
/// the test run that names it takes in turn: for work on something several installs share.
pub fn with_lock<T>(name: &str, work: impl FnOnce() -> Result<T>) -> Result<T> {
    let lock = File::create(tools_dir().join(format!("{name}.lock")))
        .context("creating the install lock")?;
    lock.lock().context("taking the install lock")?;
    let result = work();
    lock.unlock().ok();
    result
}

/// Runs a command to completion, failing with its output when it fails.
pub fn run(command: &mut Command) -> Result<()> {
    let output = command
        .output()
        .with_context(|| format!("starting {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed with {}\n--- stdout\n{}\n--- stderr\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// A free TCP port on 127.0.0.1 (the OS picks; the tiny race with another process is acceptable for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// Waits until something accepts TCP connections on the port, or the child exits, or time runs out.
pub fn wait_for_port(port: u16, child: &mut Child, within: Duration, what: &str) -> Result<()> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited with {status} before listening on port {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not listen on port {port} within {within:?}")
}

/// A child process that is stopped when this handle drops, and also when the test process dies:
/// it runs under a small guard that watches its parent and stops the child when the parent is gone.
pub struct Service {
    child: Child,
    pub name: String,
}

impl Service {
    /// Starts `program args…` under the guard. Output goes to `.tools/logs/<name>.log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        envs: &[(&str, String)],
    ) -> Result<Self> {
        let logs = tools_dir().join("logs");
        fs::create_dir_all(&logs)?;
        let log = File::create(logs.join(format!("{name}-{}.log", std::process::id())))?;
        // The guard: start the service, then poll until our parent (the test process) is gone.
        let guard = r#"
import os, signal, subprocess, sys, time
parent = os.getppid()
child = subprocess.Popen(sys.argv[1:])
def stop(*_):
    child.terminate()
    try: child.wait(5)
    except Exception: child.kill()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
while child.poll() is None:
    if os.getppid() != parent: stop()
    time.sleep(0.3)
sys.exit(child.returncode)
"#;
        let mut command = Command::new("python3");
        command.arg("-c").arg(guard).arg(program).args(args);
        for (key, value) in envs {
            command.env(key, value);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self {
            child,
            name: name.to_string(),
        })
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // SIGTERM to the guard, which stops the service.
        unsafe_free_kill(self.child.id());
        let _ = self.child.wait();
    }
}

fn unsafe_free_kill(pid: u32) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}

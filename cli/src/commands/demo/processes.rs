//! The demo's relay and sentinel as real processes (`tb-relay`, `tb-sentinel` with the
//! simulated TEE), found next to the `trustbridge` executable, logging to files in the
//! work directory, and stopped with SIGTERM (then SIGKILL) when the demo ends.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A child process that is stopped when dropped.
pub(crate) struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `binary` (next to this executable) with `args`, stderr to `log`.
    pub(crate) fn spawn(name: &'static str, args: &[String], log: &Path) -> Result<Self> {
        let binary = sibling(name)?;
        let file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let child = Command::new(&binary)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        Ok(Self {
            name,
            child,
            log: log.to_owned(),
        })
    }

    /// Fails (with the end of its log) if the process has exited.
    pub(crate) fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); the end of its log ({}):\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log)
            );
        }
        Ok(())
    }

    /// SIGTERM, up to five seconds to exit, then SIGKILL.
    pub(crate) fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        // std has no SIGTERM; `kill` is POSIX and always there.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last lines of a log file.
pub(crate) fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// A binary installed next to `trustbridge`.
fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the trustbridge executable")?;
    let path = exe
        .parent()
        .map(|d| d.join(name))
        .context("the trustbridge executable has no directory")?;
    if !path.is_file() {
        bail!(
            "{name} is not next to trustbridge ({}). Build everything the demo runs with \
             `scripts/demo` (or: cargo build --release -p trustbridge-cli -p trustbridge-relay \
             && cargo build --release -p trustbridge-enclave --features simulated-tee --bin tb-sentinel)",
            path.display()
        );
    }
    Ok(path)
}

/// `GET path` over a Unix socket (the sentinel's own listener): status and body.
pub(crate) fn get_unix(sock: &Path, path: &str) -> Option<(u16, String)> {
    let mut s = UnixStream::connect(sock).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: sentinel\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.take(1 << 20).read_to_string(&mut resp).ok()?;
    let status = resp.split_whitespace().nth(1)?.parse().ok()?;
    Some((
        status,
        resp.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned(),
    ))
}

/// A free TCP port on 127.0.0.1 (bound, then released for a child to bind).
pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")
        .context("no free port on 127.0.0.1")?
        .local_addr()?
        .port())
}

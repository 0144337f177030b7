//! End-to-end tests that run TrustBridge's binaries as real processes (broker, relay,
//! sentinel, CLI). The tests live in `tests/tests/`; this library finds the binaries.
#![forbid(unsafe_code)]
#![allow(clippy::panic, clippy::unwrap_used)] // test support: failures fail the test

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

/// The path of workspace binary `name` (built by `cargo test --workspace`, or
/// `cargo build --workspace`), next to the running test executable.
///
/// # Panics
/// When the binary has not been built.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
    let path = dir.join(name);
    if !path.is_file() {
        panic!(
            "{} not found: run `cargo build --workspace` (or `cargo test --workspace`) first",
            path.display()
        );
    }
    path
}

/// A child process killed (and reaped) on drop.
#[derive(Debug)]
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs workspace binary `bin` with `args` to completion (RUST_LOG cleared).
pub fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(binary(bin))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// Asserts success and returns stdout.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A path as an owned string, for argument lists.
pub fn s(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A daemon under test (killed and reaped on drop), its stderr read as it comes.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    name: String,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Starts `command` (RUST_LOG cleared, stderr piped), called `name` in failures.
    pub fn spawn(name: &str, mut command: Command) -> Self {
        let mut child = command
            .env_remove("RUST_LOG")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut sink = sink.lock().unwrap();
                sink.push_str(&line);
                sink.push('\n');
            }
        });
        Self {
            child,
            name: name.to_owned(),
            stderr,
            reader: Some(reader),
        }
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits (at most 30 s) until its stderr says `text`.
    pub fn wait_for(&self, text: &str) {
        let start = std::time::Instant::now();
        while !self.stderr.lock().unwrap().contains(text) {
            if start.elapsed() > std::time::Duration::from_secs(30) {
                panic!(
                    "{} never said {text:?}: {}",
                    self.name,
                    self.stderr.lock().unwrap()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Sends it SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Its exit status within `limit`, and all it wrote on stderr.
    pub fn exit_within(
        &mut self,
        limit: std::time::Duration,
    ) -> (std::process::ExitStatus, String) {
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                if let Some(reader) = self.reader.take() {
                    reader.join().unwrap();
                }
                return (status, self.stderr.lock().unwrap().clone());
            }
            if start.elapsed() > limit {
                panic!(
                    "{} still running {limit:?} after the signal: {}",
                    self.name,
                    self.stderr.lock().unwrap()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

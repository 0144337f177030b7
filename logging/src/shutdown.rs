//! The daemons' stop signal: SIGINT (Ctrl-C) or SIGTERM, whichever comes first.

use std::future::Future;

use tokio::signal::unix::{SignalKind, signal};

/// A future that resolves at the first SIGINT or SIGTERM the process receives after this
/// call. Both handlers are installed here, before anything awaits, so a signal that comes
/// while the daemon is still starting is not lost (nor does it kill the process outright);
/// a handler that cannot be installed is an error rather than a daemon that cannot be
/// stopped cleanly. Must be called inside a Tokio runtime.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code
    use std::time::Duration;

    use super::shutdown_signal;

    fn send(signal: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    #[tokio::test]
    async fn either_signal_stops_and_neither_is_needed_twice() {
        for name in ["TERM", "INT"] {
            let stop = shutdown_signal().unwrap();
            send(name);
            tokio::time::timeout(Duration::from_secs(10), stop)
                .await
                .unwrap_or_else(|_| panic!("SIG{name} did not resolve the stop signal"));
        }
        // Without a signal it waits.
        let stop = shutdown_signal().unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(50), stop)
                .await
                .is_err()
        );
    }
}

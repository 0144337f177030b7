//! The daemons' stop signal: SIGINT (Ctrl-C) or SIGTERM, whichever comes first, and the
//! drain that follows it ([`serve_until_stopped`]): new requests refused, those in flight
//! given a bounded time to finish, a second signal to stop at once.

use std::future::Future;
use std::num::NonZeroU64;
use std::pin::Pin;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// How long requests in flight get to finish after the stop signal, unless a daemon's
/// `--drain-secs` says otherwise.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(30);

/// [`DEFAULT_DRAIN`] in whole seconds, the default of the daemons' `--drain-secs`. The
/// daemons' time and count options are `NonZero` types, so `--drain-secs 0` is a usage
/// error (clap, or the config file's parser, names the option) rather than a value
/// quietly raised to one second.
#[allow(
    clippy::panic,
    reason = "evaluated at compile time: DEFAULT_DRAIN is a whole, non-zero number of seconds"
)]
pub const DEFAULT_DRAIN_SECS: NonZeroU64 = match NonZeroU64::new(DEFAULT_DRAIN.as_secs()) {
    Some(secs) => secs,
    None => panic!("DEFAULT_DRAIN is at least one second"),
};

/// The drain after a stop signal was cut short: requests still in flight were dropped (the
/// daemon should exit with an error status, so its supervisor knows).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Cut {
    /// The drain time ran out.
    #[error("stopped with requests still in flight after the drain time ({0:?})")]
    DrainTime(Duration),
    /// A second SIGINT or SIGTERM came.
    #[error("stopped at a second signal with requests still in flight")]
    SecondSignal,
}

/// What tells a server to stop taking requests (for `with_graceful_shutdown`).
pub type StopTaking = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The process's SIGINT and SIGTERM, caught from [`stop_signals`] on: the default action
/// (terminating at once) no longer applies, and each signal is seen by [`Self::recv`], one
/// after another, none lost in between.
#[derive(Debug)]
pub struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    /// The next SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Catches SIGINT and SIGTERM from now on. Both handlers are installed here, before
/// anything awaits, so a signal that comes while the daemon is still starting is not lost
/// (nor does it kill the process outright); a handler that cannot be installed is an error
/// rather than a daemon that cannot be stopped cleanly. Must be called inside a Tokio
/// runtime.
pub fn stop_signals() -> std::io::Result<StopSignals> {
    Ok(StopSignals {
        interrupt: signal(SignalKind::interrupt())?,
        terminate: signal(SignalKind::terminate())?,
    })
}

/// Runs a server until the first of `signals`, then lets it drain. `serve` gets the
/// future that tells the server to stop taking requests and returns the server's own
/// future, which ends once what was in flight has finished. The drain lasts at most
/// `limit`; a second signal ends it at once; either is a [`Cut`]. A server that ends by
/// itself, signal or not, returns its output.
pub async fn serve_until_stopped<S: Future>(
    mut signals: StopSignals,
    limit: Duration,
    serve: impl FnOnce(StopTaking) -> S,
) -> Result<S::Output, Cut> {
    let (begin, begun) = tokio::sync::oneshot::channel::<()>();
    let served = serve(Box::pin(async move {
        let _ = begun.await;
    }));
    tokio::pin!(served);
    tokio::select! {
        out = &mut served => return Ok(out),
        () = signals.recv() => {}
    }
    tracing::info!(
        drain = ?limit,
        "stopping: new requests refused, those in flight finishing"
    );
    let _ = begin.send(());
    tokio::select! {
        out = tokio::time::timeout(limit, &mut served) => out.map_err(|_| Cut::DrainTime(limit)),
        () = signals.recv() => Err(Cut::SecondSignal),
    }
}

/// A future that resolves at the first SIGINT or SIGTERM the process receives after this
/// call ([`stop_signals`], received once).
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    let mut signals = stop_signals()?;
    Ok(async move { signals.recv().await })
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

    /// Signals go to the whole test process: one test at a time sends them.
    static SIGNALS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    #[tokio::test]
    async fn either_signal_stops_and_neither_is_needed_twice() {
        let _one = SIGNALS.lock().await;
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

    /// A server that, once told to stop, says so on `told` and takes `work` to finish
    /// what is in flight.
    fn server(
        work: Duration,
        told: tokio::sync::oneshot::Sender<()>,
    ) -> impl FnOnce(super::StopTaking) -> std::pin::Pin<Box<dyn Future<Output = &'static str> + Send>>
    {
        move |stop_taking| {
            Box::pin(async move {
                stop_taking.await;
                let _ = told.send(());
                tokio::time::sleep(work).await;
                "drained"
            })
        }
    }

    use std::future::Future;

    #[tokio::test]
    async fn a_drain_finishes_runs_out_or_is_cut_by_a_second_signal() {
        use super::{Cut, serve_until_stopped, stop_signals};
        use tokio::sync::oneshot::channel;
        let _one = SIGNALS.lock().await;
        // A server that ends by itself.
        let out = serve_until_stopped(stop_signals().unwrap(), Duration::from_secs(5), |_| async {
            "done"
        })
        .await;
        assert_eq!(out.unwrap(), "done");
        // Told to stop at the signal, it finishes what is in flight.
        let (told, _) = channel();
        let signals = stop_signals().unwrap();
        let served = tokio::spawn(serve_until_stopped(
            signals,
            Duration::from_secs(5),
            server(Duration::from_millis(100), told),
        ));
        send("TERM");
        assert_eq!(served.await.unwrap().unwrap(), "drained");
        // Its drain time runs out.
        let (told, _) = channel();
        let signals = stop_signals().unwrap();
        let served = tokio::spawn(serve_until_stopped(
            signals,
            Duration::from_millis(200),
            server(Duration::from_secs(60), told),
        ));
        send("INT");
        let err = served.await.unwrap().unwrap_err();
        assert_eq!(
            err.to_string(),
            Cut::DrainTime(Duration::from_millis(200)).to_string()
        );
        assert!(err.to_string().contains("(200ms)"), "{err}");
        // A second signal stops it at once, whenever it comes.
        let (told, stopping) = channel();
        let signals = stop_signals().unwrap();
        let started = std::time::Instant::now();
        let served = tokio::spawn(serve_until_stopped(
            signals,
            Duration::from_secs(60),
            server(Duration::from_secs(60), told),
        ));
        send("TERM");
        stopping.await.unwrap();
        send("TERM");
        let err = tokio::time::timeout(Duration::from_secs(10), served)
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, Cut::SecondSignal), "{err}");
        assert!(started.elapsed() < Duration::from_secs(30));
    }
}

//! `trustbridge proxy`: a local, verifying, OpenAI-compatible endpoint in front of a
//! remote sentinel.

use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use trustbridge_client::openai_proxy::serve;
use trustbridge_client::{Client, ClientConfig, ClientPolicy};
use trustbridge_logging::{DEFAULT_DRAIN_SECS, serve_until_stopped, stop_signals};

/// Serve an OpenAI-compatible API on this machine that talks to a remote sentinel only
/// through verified, end-to-end encrypted sessions.
///
/// Before the first request the proxy fetches the sentinel's attestation bundle from the
/// relay and verifies it against the client policy (platform, measurements, TCB, the
/// pinned key broker and provider, the model); again whenever the sentinel's evidence
/// changes. Every request is encrypted to the key that evidence binds (Oblivious HTTP,
/// RFC 9458), so the relay sees only ciphertext. An answer is returned only when its
/// receipt verifies: signed by the key the evidence binds, over exactly the request sent
/// and the response received, with this request's nonce, and chaining with every receipt
/// seen before. Otherwise the client gets HTTP 502 with an OpenAI-shaped error of type
/// `trustbridge_verification_failed` naming the check.
///
/// Point any OpenAI SDK at it (`base_url = http://127.0.0.1:8080/v1`); no API key is
/// needed, and the one an SDK sends is not forwarded. `GET /trustbridge/status` shows
/// what was verified and when.
#[derive(Debug, clap::Args)]
pub(crate) struct ProxyArgs {
    /// The relay's public address, http://HOST:PORT.
    #[arg(long, value_name = "URL")]
    relay: String,
    /// The client policy (TOML): the key broker the sentinel must pin, accepted
    /// measurement sets, models; see docs/CLIENT.md.
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// Where to serve the API (keep it on loopback: anything that reaches it can use the
    /// session).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Keep every verified receipt (DIR/<receipt key id>/<sequence>.cose, with its salt
    /// in .salt) and each attestation bundle they refer to (DIR/bundles/), for
    /// `tb-verify receipt` later.
    #[arg(long, value_name = "DIR")]
    receipts: Option<PathBuf>,
    /// Time for one answer, in seconds.
    #[arg(long, value_name = "SECS", default_value = "300")]
    timeout_secs: NonZeroU64,
    /// At SIGINT or SIGTERM: seconds the requests in flight may take to finish before the
    /// proxy stops anyway, with an error status (a second signal stops it at once). New
    /// requests are refused from the first signal.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_DRAIN_SECS)]
    drain_secs: NonZeroU64,
}

/// Reads and validates a client policy file.
pub(crate) fn read_policy(path: &Path) -> Result<ClientPolicy> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the client policy {}", path.display()))?;
    ClientPolicy::from_toml(&text).with_context(|| format!("{}", path.display()))
}

pub(crate) fn run(args: ProxyArgs) -> Result<()> {
    let policy = read_policy(&args.policy)?;
    let mut config = ClientConfig::new(args.relay.clone(), policy);
    config.timeout = Duration::from_secs(args.timeout_secs.get());
    let client = Arc::new(Client::new(config)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let drain = Duration::from_secs(args.drain_secs.get());
    let result = runtime.block_on(async move {
        // First: a signal from here on (the verification below included) stops it cleanly.
        let mut stop = stop_signals().context("cannot catch SIGINT and SIGTERM")?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        // Verify before serving: a policy that refuses the sentinel is reported now, not
        // at the first request (which would retry it). A signal while the verification
        // waits on the relay stops the proxy at once.
        let verified = tokio::select! {
            verified = client.session() => verified,
            () = stop.recv() => {
                eprintln!("trustbridge proxy stopped before serving");
                return Ok(());
            }
        };
        match verified {
            Ok(s) => eprintln!(
                "sentinel verified: {} evidence, model {}",
                s.verified().bundle.platform,
                hex::encode(s.verified().model)
            ),
            Err(e) => eprintln!("warning: {e:#} (requests will retry the verification)"),
        }
        eprintln!(
            "trustbridge proxy on http://{} (OpenAI base URL http://{}/v1), relay {}",
            args.listen,
            args.listen,
            client.relay()
        );
        // Requests in flight get --drain-secs to finish; a drain cut short is an error.
        serve_until_stopped(stop, drain, |stop_taking| {
            serve(client, listener, args.receipts, stop_taking)
        })
        .await?
        .context("the proxy server failed")
    });
    // Blocking work still running after a cut drain (a receipt being stored)
    // does not hold the exit up for long.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

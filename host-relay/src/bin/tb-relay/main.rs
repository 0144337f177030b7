//! `tb-relay`: the untrusted TrustBridge host relay. It holds no keys.
//!
//! - Ingress (`--ingress`): clients' requests are forwarded to the sentinel (`--sentinel`);
//!   with `--receipt-log`, the receipts the sentinel hands over are kept and served at
//!   `GET /receipts?after=SEQ`.
//! - Egress (`--egress-listen`): the sentinel's only way out, a CONNECT proxy to the
//!   `--egress-allow` destinations.
//! - Bundles (`--bundle-listen`): the sealed bundle in `--bundle-dir`, with range requests;
//!   with `--bundle-source`, first mirrored there from S3, Azure Blob or HTTP(S).
//!
//! It can be restarted at any time: the sentinel retries and resumes. At SIGINT or SIGTERM
//! it stops taking requests and lets those in flight finish (at most `--drain-secs`; a
//! second signal stops it at once, with an error status), so an answer under way, and its
//! receipt for the log, is not cut.
#![forbid(unsafe_code)]

use std::future::IntoFuture;
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use trustbridge_logging::{DEFAULT_DRAIN_SECS, LogFormat, serve_until_stopped, stop_signals};
use trustbridge_relay::bundles::BundleServer;
use trustbridge_relay::egress::{AllowList, EgressConfig, serve_egress};
use trustbridge_relay::ingress::{self, IngressConfig};
use trustbridge_relay::mirror::{MirrorConfig, mirror};
use trustbridge_relay::receipt_log::ReceiptLog;
use trustbridge_relay::source::BundleSource;
use trustbridge_transport::{Endpoint, Listener};

/// The TrustBridge host relay: forwards ciphertext, serves sealed bundles, and lets the
/// sentinel reach only allow-listed destinations. Holds no keys.
#[derive(Debug, Parser)]
#[command(name = "tb-relay", version, max_term_width = 100)]
struct Args {
    /// Where clients connect.
    #[arg(
        long,
        env = "TB_RELAY_INGRESS",
        value_name = "ENDPOINT",
        default_value = "tcp://0.0.0.0:8443"
    )]
    ingress: Endpoint,
    /// The sentinel's endpoint.
    #[arg(
        long,
        env = "TB_SENTINEL",
        value_name = "ENDPOINT",
        default_value = "vsock://16:8000"
    )]
    sentinel: Endpoint,
    /// Where the sentinel's egress connections arrive.
    #[arg(
        long,
        env = "TB_RELAY_EGRESS_LISTEN",
        value_name = "ENDPOINT",
        default_value = "vsock://-1:8001"
    )]
    egress_listen: Endpoint,
    /// An allowed egress destination HOST:PORT (repeatable; comma-separated in the
    /// environment variable). Nothing else is reachable.
    #[arg(
        long = "egress-allow",
        env = "TB_RELAY_EGRESS_ALLOW",
        value_name = "HOST:PORT",
        value_delimiter = ','
    )]
    egress_allow: Vec<String>,
    /// Most concurrent egress tunnels.
    #[arg(long, env = "TB_RELAY_EGRESS_MAX", default_value_t = 64)]
    egress_max_connections: usize,
    /// Where the sentinel fetches the sealed bundle.
    #[arg(
        long,
        env = "TB_RELAY_BUNDLE_LISTEN",
        value_name = "ENDPOINT",
        default_value = "vsock://-1:8002"
    )]
    bundle_listen: Endpoint,
    /// The sealed bundle directory (with --bundle-source: where the bundle is mirrored).
    #[arg(long, env = "TB_RELAY_BUNDLE_DIR", value_name = "DIR")]
    bundle_dir: PathBuf,
    /// Mirror the bundle from here first: s3://BUCKET/PREFIX, az://CONTAINER/PREFIX,
    /// https://HOST/PREFIX (credentials from the AWS_* / AZURE_* environment). Until the
    /// mirror is complete the bundle endpoint answers 503; a restart resumes it.
    #[arg(
        long,
        env = "TB_RELAY_BUNDLE_SOURCE",
        hide_env_values = true,
        value_name = "URL"
    )]
    bundle_source: Option<String>,
    /// A store setting KEY=VALUE for --bundle-source (endpoint, region, allow_http, ...;
    /// repeatable, comma-separated in the variable).
    #[arg(
        long = "bundle-option",
        env = "TB_RELAY_BUNDLE_OPTIONS",
        hide_env_values = true,
        value_name = "KEY=VALUE",
        value_delimiter = ','
    )]
    bundle_options: Vec<String>,
    /// Chunks downloaded in parallel by the mirror.
    #[arg(long, env = "TB_DOWNLOAD_CONCURRENCY", default_value = "8")]
    download_concurrency: NonZeroUsize,
    /// Mirror chunk size in bytes (default 16 MiB).
    #[arg(long, env = "TB_DOWNLOAD_CHUNK_BYTES", default_value = "16777216")]
    download_chunk_bytes: NonZeroU64,
    /// The public receipt log: every receipt the sentinel signs is appended here (JSON
    /// lines, fsync'd) and served at GET /receipts?after=SEQ. Without it no log is kept.
    #[arg(long, env = "TB_RELAY_RECEIPT_LOG", value_name = "FILE")]
    receipt_log: Option<PathBuf>,
    /// Largest client request body forwarded (then 413).
    #[arg(long, env = "TB_RELAY_MAX_REQUEST_BYTES", default_value_t = 2 << 20)]
    max_request_bytes: u64,
    /// Client requests forwarded at once (then 503 with retry-after).
    #[arg(long, env = "TB_RELAY_MAX_CONCURRENT_REQUESTS", default_value = "256")]
    max_concurrent_requests: NonZeroUsize,
    /// Seconds the sentinel has to begin an answer (then 504).
    #[arg(long, env = "TB_RELAY_REQUEST_TIMEOUT_SECS", default_value = "300")]
    request_timeout_secs: NonZeroU64,
    /// At SIGINT or SIGTERM: how long the requests in flight may take to finish before the
    /// relay stops anyway (a second signal stops it at once). New requests are refused from
    /// the first signal.
    #[arg(long, env = "TB_RELAY_DRAIN_SECS", default_value_t = DEFAULT_DRAIN_SECS)]
    drain_secs: NonZeroU64,
    /// Log format on stderr; RUST_LOG selects what is logged (default info).
    #[arg(long, env = "TB_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

/// mimalloc: the request path allocates and frees many small buffers, and glibc's malloc
/// and free were 9% of it (`cargo bench -p trustbridge-enclave --bench session`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = trustbridge_logging::init(args.log_format) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<()> {
    let allow = AllowList::parse(&args.egress_allow)?;
    let source = args
        .bundle_source
        .as_deref()
        .map(|url| BundleSource::open(url, &args.bundle_options))
        .transpose()?;
    if source.is_some() {
        std::fs::create_dir_all(&args.bundle_dir)
            .with_context(|| format!("cannot create {}", args.bundle_dir.display()))?;
    } else if !args.bundle_dir.is_dir() {
        anyhow::bail!(
            "--bundle-dir {} is not a directory",
            args.bundle_dir.display()
        );
    }
    let bundle_server = match source {
        Some(_) => BundleServer::not_ready_yet(&args.bundle_dir),
        None => BundleServer::new(&args.bundle_dir),
    }
    .with_context(|| format!("cannot serve {}", args.bundle_dir.display()))?;
    let mirror_config = MirrorConfig {
        concurrency: args.download_concurrency.get(),
        chunk_bytes: args.download_chunk_bytes.get(),
    };
    let log = args
        .receipt_log
        .as_deref()
        .map(ReceiptLog::open)
        .transpose()?
        .map(Arc::new);
    let ingress_config = IngressConfig {
        log,
        max_request_bytes: args.max_request_bytes,
        max_concurrent: args.max_concurrent_requests.get(),
        timeout: Duration::from_secs(args.request_timeout_secs.get()),
        ..IngressConfig::new(args.sentinel.clone())
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let drain = Duration::from_secs(args.drain_secs.get());
    let result = runtime.block_on(async move {
        // First: a signal from here on stops the relay cleanly.
        let stop = stop_signals().context("cannot catch SIGINT and SIGTERM")?;
        let ingress_l = Listener::bind(&args.ingress).await.with_context(|| format!("cannot listen on {}", args.ingress))?;
        let egress_l = Listener::bind(&args.egress_listen).await.with_context(|| format!("cannot listen on {}", args.egress_listen))?;
        let bundle_l = Listener::bind(&args.bundle_listen).await.with_context(|| format!("cannot listen on {}", args.bundle_listen))?;
        tracing::info!(ingress = %args.ingress, sentinel = %args.sentinel, egress = %args.egress_listen, allow = ?args.egress_allow, bundles = %args.bundle_listen, "tb-relay starting");
        let mut config = EgressConfig::new(allow);
        config.max_connections = args.egress_max_connections;
        let egress = tokio::spawn(serve_egress(egress_l, config));
        let bundles = tokio::spawn(bundle_server.clone().serve(bundle_l));
        let served = serve_until_stopped(stop, drain, |stop_taking| async move {
            let (router, lingering) = ingress::lingering_router(ingress_config);
            let mut ingress = tokio::spawn(async move {
                axum::serve(ingress_l, router)
                    .with_graceful_shutdown(stop_taking)
                    .into_future()
                    .await?;
                // Streamed answers whose clients left are still read for their receipts.
                lingering.finished().await;
                Ok::<(), std::io::Error>(())
            });
            // Mirroring stops with the ingress; only its failure ends the relay.
            let mirrored = async {
                if let Some(source) = source {
                    tracing::info!(source = %source.url, dir = %args.bundle_dir.display(), "mirroring the bundle");
                    let report = mirror(&source, &args.bundle_dir, mirror_config)
                        .await
                        .with_context(|| format!("cannot mirror {}", source.url))?;
                    tracing::info!(?report, "bundle mirrored; serving it");
                    bundle_server.mark_ready();
                }
                std::future::pending::<Result<()>>().await
            };
            tokio::select! {
                r = egress => r?.context("egress"),
                r = bundles => r?.context("bundles"),
                r = &mut ingress => r?.context("ingress"),
                r = mirrored => r,
            }
        })
        .await;
        // A drain cut short is an error exit, so a supervisor knows answers were cut.
        served??;
        tracing::info!("tb-relay stopped");
        Ok(())
    });
    // Blocking work still running after a stop (an attestation report, a log append)
    // does not hold the exit up for long.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

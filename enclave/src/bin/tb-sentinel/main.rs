//! `tb-sentinel`: the TrustBridge sentinel inside the TEE.
//!
//! Boots to Ready (attest, release the data key through the relay's egress, hydrate the
//! sealed bundle through the relay, decrypt in memory) and serves the health API on
//! `--listen`. Every option can come from its `TB_*` environment variable.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use trustbridge_enclave::attestation::{
    AttestationProvider, Probe, SimulatedPlatform, SimulatedProvider, TeeChoice, detect,
};
use trustbridge_enclave::authorize::KmsTarget;
use trustbridge_enclave::boot::Backoff;
use trustbridge_enclave::hydrate::HydrateConfig;
use trustbridge_enclave::sentinel::{Sentinel, SentinelConfig};
use trustbridge_transport::{Endpoint, Listener};
use trustbridge_verifier::simulated::SimulatedTee;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Tee {
    /// Probe /dev/nsm, then configfs-tsm.
    Auto,
    /// AWS Nitro Enclaves (NSM).
    Nitro,
    /// AMD SEV-SNP (configfs-tsm).
    Snp,
    /// The simulated TEE (development only; needs --sim-ca).
    Simulated,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// The TrustBridge sentinel: attests, obtains the model key, decrypts the model in memory,
/// and reports its state on /health, /readiness and /status.
#[derive(Debug, Parser)]
#[command(name = "tb-sentinel", version, max_term_width = 100)]
struct Args {
    /// Where to serve (the relay's ingress forwards here).
    #[arg(
        long,
        env = "TB_LISTEN",
        value_name = "ENDPOINT",
        default_value = "vsock://-1:8000"
    )]
    listen: Endpoint,
    /// The relay's egress endpoint (the sentinel's only way out).
    #[arg(
        long,
        env = "TB_RELAY_EGRESS",
        value_name = "ENDPOINT",
        default_value = "vsock://3:8001"
    )]
    relay_egress: Endpoint,
    /// The relay's bundle endpoint.
    #[arg(
        long,
        env = "TB_RELAY_BUNDLES",
        value_name = "ENDPOINT",
        default_value = "vsock://3:8002"
    )]
    relay_bundles: Endpoint,
    /// The key broker, as the relay's egress allow-list names it (http://HOST:PORT).
    #[arg(long, env = "TB_KMS_URL", value_name = "URL")]
    kms_url: KmsTarget,
    /// The asset to serve.
    #[arg(long, env = "TB_ASSET_ID", value_name = "ID")]
    asset_id: String,
    /// The contract to release it under.
    #[arg(long, env = "TB_CONTRACT_ID", value_name = "ID")]
    contract_id: String,
    /// The TEE.
    #[arg(long, env = "TB_TEE", value_enum, default_value = "auto")]
    tee: Tee,
    /// The simulation CA (with --tee simulated).
    #[arg(long, env = "TB_SIM_CA", value_name = "DIR")]
    sim_ca: Option<PathBuf>,
    /// Evidence format of the simulated TEE.
    #[arg(long, env = "TB_SIM_PLATFORM", default_value = "nitro", value_parser = ["nitro", "snp"])]
    sim_platform: String,
    /// Parallel download requests.
    #[arg(long, env = "TB_DOWNLOAD_CONCURRENCY", default_value_t = 8)]
    download_concurrency: usize,
    /// Download chunk size in bytes, rounded down to whole sealed segments (at least one).
    #[arg(long, env = "TB_DOWNLOAD_CHUNK_BYTES", default_value_t = 16 << 20)]
    download_chunk_bytes: u64,
    /// First retry delay in milliseconds (doubling, at most 30 s).
    #[arg(long, env = "TB_RETRY_INITIAL_MS", default_value_t = 500)]
    retry_initial_ms: u64,
    /// Attempts before a transient failure becomes fatal.
    #[arg(long, env = "TB_RETRY_ATTEMPTS", default_value_t = 10)]
    retry_attempts: u32,
    /// Log format on stderr.
    #[arg(long, env = "TB_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

fn provider(args: &Args) -> Result<Arc<dyn AttestationProvider>> {
    Ok(match args.tee {
        Tee::Simulated => {
            let dir = args
                .sim_ca
                .as_ref()
                .context("--tee simulated needs --sim-ca (TB_SIM_CA)")?;
            let tee = SimulatedTee::load(dir)
                .with_context(|| format!("cannot load the simulation CA {}", dir.display()))?;
            let platform = if args.sim_platform == "snp" {
                SimulatedPlatform::Snp
            } else {
                SimulatedPlatform::Nitro
            };
            Arc::new(SimulatedProvider::new(tee, platform))
        }
        Tee::Auto | Tee::Nitro | Tee::Snp => {
            let choice = match args.tee {
                Tee::Nitro => TeeChoice::Nitro,
                Tee::Snp => TeeChoice::Snp,
                _ => TeeChoice::Auto,
            };
            Arc::from(detect(&choice, &Probe::system())?)
        }
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
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
    if args.download_concurrency == 0 || args.download_chunk_bytes == 0 {
        bail!("download concurrency and chunk size must be positive");
    }
    let provider = provider(&args)?;
    let backoff = Backoff {
        initial: Duration::from_millis(args.retry_initial_ms),
        max: Duration::from_secs(30),
        attempts: args.retry_attempts,
    };
    let config = SentinelConfig {
        asset: args.asset_id.clone(),
        contract: args.contract_id.clone(),
        kms: args.kms_url.clone(),
        egress: args.relay_egress.clone(),
        bundles: args.relay_bundles.clone(),
        hydrate: HydrateConfig {
            concurrency: args.download_concurrency,
            chunk_bytes: args.download_chunk_bytes,
            backoff,
        },
        backoff,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = Listener::bind(&args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
        let sentinel = Sentinel::new(config);
        tracing::info!(listen = %args.listen, provider = provider.name(), asset = %args.asset_id, "tb-sentinel starting");
        tokio::spawn(sentinel.clone().boot(provider));
        axum::serve(listener, sentinel.router()).await.context("serving the health API")
    })
}

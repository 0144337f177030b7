//! `tb-sentinel`: the TrustBridge sentinel inside the TEE.
//!
//! Boots to Ready (attest, release the data key through the relay's egress, hydrate the
//! sealed bundle through the relay, decrypt in memory) and serves the health API on
//! `--listen`. Every option can come from its `TB_*` environment variable or from a TOML
//! file (`--config`), in that order of precedence after the command line.

#![forbid(unsafe_code)]

mod config;

use std::future::IntoFuture;
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
#[cfg(feature = "azure-vtpm")]
use trustbridge_enclave::attestation::azure_vtpm;
use trustbridge_enclave::attestation::{AttestationProvider, Probe, TeeChoice, detect};
use trustbridge_enclave::authorize::{BrokerKey, EgressLimits, KmsTarget, Pins};
use trustbridge_enclave::boot::Backoff;
use trustbridge_enclave::engine::EngineChoice;
use trustbridge_enclave::engine::builtin::BuiltInLimits;
use trustbridge_enclave::engine::runtime::RuntimeUrl;
use trustbridge_enclave::gateway::GatewayConfig;
use trustbridge_enclave::gateway::attestation::AttestationConfig;
use trustbridge_enclave::hydrate::HydrateConfig;
use trustbridge_enclave::output::{ModelOutput, SwapPolicy};
use trustbridge_enclave::sentinel::{Reauthorization, Sentinel, SentinelConfig};
use trustbridge_logging::{DEFAULT_DRAIN_SECS, LogFormat, serve_until_stopped, stop_signals};
use trustbridge_protocol::bundle::ProviderPublicKey;
use trustbridge_transport::{Endpoint, Listener};

#[derive(Clone, Copy, Debug, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum Tee {
    /// Probe /dev/nsm, then an Azure vTPM (when built in), configfs-tsm, /dev/sev-guest.
    Auto,
    /// AWS Nitro Enclaves (NSM).
    Nitro,
    /// AMD SEV-SNP (configfs-tsm, else /dev/sev-guest on kernels before 6.7).
    Snp,
    /// An Azure confidential VM: SEV-SNP through the vTPM (a tb-sentinel built with
    /// --features azure-vtpm).
    Azure,
    /// The simulated TEE (development only; needs --sim-ca).
    Simulated,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum EngineKind {
    /// The built-in engine (candle on CPU): the model's chat model (a .gguf file) and
    /// embeddings model (model.safetensors, tokenizer.json, config.json), loaded from the
    /// decrypted memory. Needs --model-output memory.
    Builtin,
    /// An external runtime at --runtime-url (vLLM's OpenAI server in a confidential GPU
    /// VM), given the model through --model-output tmpfs:DIR or fifo:DIR.
    Runtime,
}

#[derive(Clone, Copy, Debug, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum SimPlatform {
    /// Nitro-shaped attestation documents.
    Nitro,
    /// SEV-SNP-shaped reports.
    Snp,
}

/// The TrustBridge sentinel: attests, obtains the model key, decrypts the model in memory,
/// reports its state on /health, /readiness and /status, and answers clients through its
/// Oblivious HTTP gateway (/.well-known/ohttp-gateway), each answer with a signed receipt.
///
/// Each option is taken from the command line, else its TB_* variable, else the --config
/// file (same names, with underscores: kms_url = "http://..."), else its default.
#[derive(Debug, Parser)]
#[command(name = "tb-sentinel", version, max_term_width = 100)]
struct Args {
    /// A TOML file with any of the options below.
    #[arg(long, env = "TB_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
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
    /// Required.
    #[arg(long, env = "TB_KMS_URL", value_name = "URL")]
    kms_url: Option<KmsTarget>,
    /// The key broker's identity key (64 hex characters; `tb-kms identity` prints it).
    /// Required: the sentinel trusts only answers this key signs, so a relay that answers
    /// in the broker's place cannot hand it a key, a manifest or a provider. The key is
    /// part of the evidence binding, so every relying party sees which broker it trusts.
    #[arg(long, env = "TB_KMS_KEY", value_name = "HEX")]
    kms_key: Option<BrokerKey>,
    /// Serve only models signed by this provider key (64 hex characters or PEM). Part of
    /// the evidence binding too. Default: whichever provider the broker names.
    #[arg(long, env = "TB_PROVIDER_KEY", value_name = "KEY")]
    provider_key: Option<ProviderPublicKey>,
    /// The asset to serve. Required.
    #[arg(long, env = "TB_ASSET_ID", value_name = "ID")]
    asset_id: Option<String>,
    /// The contract to release it under. Required.
    #[arg(long, env = "TB_CONTRACT_ID", value_name = "ID")]
    contract_id: Option<String>,
    /// The TEE.
    #[arg(long, env = "TB_TEE", value_enum, default_value = "auto")]
    tee: Tee,
    /// The TPM for --tee azure, as a TCTI string (swtpm:host=H,port=P for a software TPM).
    #[arg(
        long,
        env = "TB_TPM_TCTI",
        value_name = "TCTI",
        default_value = "device:/dev/tpmrm0"
    )]
    tpm_tcti: String,
    /// The VCEK for --tee azure: a file saved from the Azure IMDS endpoint
    /// /metadata/THIM/amd/certification, or PEM with the VCEK first. Default: asked from
    /// the IMDS through the relay's egress, whose allow-list must then hold
    /// 169.254.169.254:80.
    #[arg(long, env = "TB_AZURE_CERTS", value_name = "FILE")]
    azure_certs: Option<PathBuf>,
    /// The simulation CA (with --tee simulated).
    #[arg(long, env = "TB_SIM_CA", value_name = "DIR")]
    sim_ca: Option<PathBuf>,
    /// Evidence format of the simulated TEE.
    #[arg(long, env = "TB_SIM_PLATFORM", value_enum, default_value = "nitro")]
    sim_platform: SimPlatform,
    /// Parallel download requests.
    #[arg(long, env = "TB_DOWNLOAD_CONCURRENCY", default_value = "8")]
    download_concurrency: NonZeroUsize,
    /// Download chunk size in bytes, rounded down to whole sealed segments (at least one).
    /// Default 16 MiB.
    #[arg(long, env = "TB_DOWNLOAD_CHUNK_BYTES", default_value = "16777216")]
    download_chunk_bytes: NonZeroU64,
    /// First retry delay in milliseconds (doubling, at most 30 s).
    #[arg(long, env = "TB_RETRY_INITIAL_MS", default_value_t = 500)]
    retry_initial_ms: u64,
    /// Attempts before a transient failure becomes fatal.
    #[arg(long, env = "TB_RETRY_ATTEMPTS", default_value_t = 10)]
    retry_attempts: u32,
    /// Seconds between re-authorizations once Ready, at most half the broker's lease (0:
    /// half the lease). A denial (contract revoked or expired) suspends the sentinel and
    /// wipes the model; a later grant resumes it.
    #[arg(long, env = "TB_REAUTH_INTERVAL_SECS", default_value_t = 300)]
    reauth_interval_secs: u64,
    /// Seconds a Ready sentinel may go without a successful re-authorization before it
    /// suspends itself (the relay could otherwise hide a revocation by not delivering the
    /// broker's answer). Default: twice the interval; never more than the broker's lease.
    /// The interval in force is at most half the grace, so a failed attempt is retried
    /// before the grace runs out.
    #[arg(long, env = "TB_REAUTH_GRACE_SECS", value_name = "SECS")]
    reauth_grace_secs: Option<u64>,
    /// Where the decrypted model goes: memory, tmpfs:DIR (files mode 0600 on a tmpfs;
    /// disk-backed directories are refused) or fifo:DIR (one FIFO per file, refilled on
    /// every open), for an external runtime.
    #[arg(
        long,
        env = "TB_MODEL_OUTPUT",
        value_name = "OUTPUT",
        default_value = "memory"
    )]
    model_output: ModelOutput,
    /// A file written (JSON: asset, manifest digest, model output, files) when the sentinel
    /// is Ready and removed when it stops being Ready, for what starts and stops an
    /// external runtime (a systemd path unit, for example).
    #[arg(long, env = "TB_READY_SIGNAL", value_name = "PATH")]
    ready_signal: Option<PathBuf>,
    /// Accept tmpfs model output while swap is active. The kernel may write tmpfs pages,
    /// and so plaintext, to swap: only for swap encrypted with a key that never leaves the
    /// machine.
    #[arg(long, env = "TB_ALLOW_SWAP")]
    allow_swap: bool,
    /// What answers the API requests clients send through the Oblivious HTTP gateway.
    #[arg(long, env = "TB_ENGINE", value_enum, default_value = "builtin")]
    engine: EngineKind,
    /// Built-in engine: requests computed at once (each uses every core).
    #[arg(long, env = "TB_ENGINE_WORKERS", default_value = "1")]
    engine_workers: NonZeroUsize,
    /// Built-in engine: requests waiting for their turn; beyond it, 429 (inside the
    /// encryption).
    #[arg(long, env = "TB_ENGINE_QUEUE", default_value_t = 32)]
    engine_queue: usize,
    /// The runtime that answers with --engine runtime: http://IP:PORT on the TEE's own
    /// loopback, e.g. vLLM's OpenAI server bound to 127.0.0.1.
    #[arg(
        long,
        env = "TB_RUNTIME_URL",
        value_name = "URL",
        default_value = "http://127.0.0.1:8081"
    )]
    runtime_url: RuntimeUrl,
    /// Requests the gateway handles at once; beyond it, 503 with retry-after.
    #[arg(long, env = "TB_MAX_CONCURRENT_REQUESTS", default_value = "64")]
    max_concurrent_requests: NonZeroUsize,
    /// Seconds one request may take, the engine's work included (then 504 inside the
    /// encryption).
    #[arg(long, env = "TB_REQUEST_TIMEOUT_SECS", default_value = "290")]
    request_timeout_secs: NonZeroU64,
    /// At SIGINT or SIGTERM: seconds the requests in flight may take to finish before the
    /// sentinel stops anyway, with an error status (a second signal stops it at once). New
    /// requests are refused, and what the runtime was given is wiped, from the first signal.
    #[arg(long, env = "TB_DRAIN_SECS", default_value_t = DEFAULT_DRAIN_SECS)]
    drain_secs: NonZeroU64,
    /// Seconds before the published attestation bundle is made anew (fresh evidence).
    #[arg(long, env = "TB_ATTESTATION_MAX_AGE_SECS", default_value = "3600")]
    attestation_max_age_secs: NonZeroU64,
    /// Attestation bundles for a client's nonce, at most this many a minute (then 429).
    #[arg(long, env = "TB_ATTESTATION_NONCE_PER_MINUTE", default_value_t = 60)]
    attestation_nonce_per_minute: u32,
    /// Log format on stderr; RUST_LOG selects what is logged (default info).
    #[arg(long, env = "TB_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

fn provider(args: &Args) -> Result<Arc<dyn AttestationProvider>> {
    Ok(match args.tee {
        Tee::Simulated => simulated(args)?,
        Tee::Azure => azure(args)?,
        Tee::Auto | Tee::Nitro | Tee::Snp => {
            let probe = Probe::system();
            #[cfg(feature = "azure-vtpm")]
            if matches!(args.tee, Tee::Auto)
                && !probe.nsm_device.exists()
                && azure_vtpm::AzureVtpm::present(&args.tpm_tcti)
            {
                return azure(args);
            }
            let choice = match args.tee {
                Tee::Nitro => TeeChoice::Nitro,
                Tee::Snp => TeeChoice::Snp,
                _ => TeeChoice::Auto,
            };
            let tpm = std::path::Path::new("/dev/tpmrm0");
            Arc::from(detect(&choice, &probe).with_context(|| {
                if tpm.exists() && !cfg!(feature = "azure-vtpm") {
                    format!(
                        "{} exists: on an Azure confidential VM, use a tb-sentinel built with \
                         --features azure-vtpm",
                        tpm.display()
                    )
                } else {
                    "no TEE detected".to_owned()
                }
            })?)
        }
    })
}

/// The simulated TEE (a build with the `simulated-tee` feature).
#[cfg(feature = "simulated-tee")]
fn simulated(args: &Args) -> Result<Arc<dyn AttestationProvider>> {
    use trustbridge_enclave::attestation::{SimulatedPlatform, SimulatedProvider};
    use trustbridge_verifier::simulated::SimulatedTee;
    let dir = args
        .sim_ca
        .as_ref()
        .context("--tee simulated needs --sim-ca (TB_SIM_CA)")?;
    let tee = SimulatedTee::load(dir)
        .with_context(|| format!("cannot load the simulation CA {}", dir.display()))?;
    let platform = match args.sim_platform {
        SimPlatform::Nitro => SimulatedPlatform::Nitro,
        SimPlatform::Snp => SimulatedPlatform::Snp,
    };
    Ok(Arc::new(SimulatedProvider::new(tee, platform)))
}

/// A production build has no simulated TEE: `--tee simulated` says so.
#[cfg(not(feature = "simulated-tee"))]
fn simulated(_: &Args) -> Result<Arc<dyn AttestationProvider>> {
    Err(no_simulated_tee())
}

/// What a build without the simulated TEE answers to `--tee simulated`.
#[cfg_attr(feature = "simulated-tee", allow(dead_code))] // used by production builds
fn no_simulated_tee() -> anyhow::Error {
    anyhow::anyhow!(
        "--tee simulated: this tb-sentinel was built without the simulated TEE, as production \
         sentinels are; it exists for development and tests only (cargo build -p \
         trustbridge-enclave --features simulated-tee)"
    )
}

/// The Azure vTPM attester.
#[cfg(feature = "azure-vtpm")]
fn azure(args: &Args) -> Result<Arc<dyn AttestationProvider>> {
    use azure_vtpm::certs::CertificateSource;
    let certificates = match &args.azure_certs {
        Some(path) => CertificateSource::File(path.clone()),
        None => CertificateSource::Imds(args.relay_egress.clone()),
    };
    Ok(Arc::new(azure_vtpm::AzureVtpm::new(
        azure_vtpm::AzureVtpmConfig {
            tcti: args.tpm_tcti.clone(),
            refresh_timeout: Duration::from_secs(10),
            certificates,
        },
    )))
}

/// Without the feature, `--tee azure` says how to get it.
#[cfg(not(feature = "azure-vtpm"))]
fn azure(_: &Args) -> Result<Arc<dyn AttestationProvider>> {
    bail!(
        "--tee azure: this tb-sentinel was built without the Azure vTPM attester; rebuild \
         with `cargo build -p trustbridge-enclave --features azure-vtpm` (needs libtss2-dev)"
    )
}

/// mimalloc: the request path allocates and frees many small buffers, and glibc's malloc
/// and free were 9% of it (`cargo bench -p trustbridge-enclave --bench session`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = match config::load() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
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
    trustbridge_enclave::memory::forbid_core_dumps()
        .context("cannot forbid core dumps (they would write the decrypted model to disk)")?;
    if let Some(grace) = args.reauth_grace_secs
        && (grace == 0 || (args.reauth_interval_secs > 0 && grace < args.reauth_interval_secs))
    {
        bail!(
            "--reauth-grace-secs must be at least --reauth-interval-secs (it is how long a \
                 sentinel may serve without a re-authorization)"
        );
    }
    let required = |what: &str, var: &str, key: &str| {
        anyhow::anyhow!("--{what} is required (or {var}, or {key} in the --config file)")
    };
    // Before any TEE device is probed: without a pinned broker nothing it says can be
    // believed.
    let broker = args.kms_key.ok_or_else(|| {
        anyhow::anyhow!(
            "--kms-key is required (or TB_KMS_KEY, or kms_key in the --config file): the key \
             broker's identity key, as `tb-kms identity` prints it; without it the sentinel \
             cannot tell the broker from the relay"
        )
    })?;
    let pins = Pins {
        broker,
        provider: args.provider_key.as_ref().map(ProviderPublicKey::to_bytes),
    };
    let kms = args
        .kms_url
        .clone()
        .ok_or_else(|| required("kms-url", "TB_KMS_URL", "kms_url"))?;
    let asset = args
        .asset_id
        .clone()
        .ok_or_else(|| required("asset-id", "TB_ASSET_ID", "asset_id"))?;
    let contract = args
        .contract_id
        .clone()
        .ok_or_else(|| required("contract-id", "TB_CONTRACT_ID", "contract_id"))?;
    let engine = match args.engine {
        EngineKind::Builtin if args.model_output != ModelOutput::Memory => bail!(
            "--engine builtin serves the model from the sentinel's memory: --model-output {} \
             is for --engine runtime (an external runtime reading the files)",
            args.model_output
        ),
        EngineKind::Builtin => EngineChoice::BuiltIn(BuiltInLimits {
            workers: args.engine_workers.get(),
            max_queued: args.engine_queue,
        }),
        EngineKind::Runtime => EngineChoice::Runtime(args.runtime_url.clone()),
    };
    let provider = provider(&args)?;
    let backoff = Backoff {
        initial: Duration::from_millis(args.retry_initial_ms),
        max: Duration::from_secs(30),
        attempts: args.retry_attempts,
    };
    let config = SentinelConfig {
        asset: asset.clone(),
        contract,
        kms,
        pins,
        egress_limits: EgressLimits::default(),
        egress: args.relay_egress.clone(),
        bundles: args.relay_bundles.clone(),
        hydrate: HydrateConfig {
            concurrency: args.download_concurrency.get(),
            chunk_bytes: args.download_chunk_bytes.get(),
            backoff,
        },
        backoff,
        reauthorize: Reauthorization {
            every: (args.reauth_interval_secs > 0)
                .then(|| Duration::from_secs(args.reauth_interval_secs)),
            grace: args.reauth_grace_secs.map(Duration::from_secs),
        },
        output: args.model_output.clone(),
        ready_signal: args.ready_signal.clone(),
        swap: SwapPolicy {
            allow: args.allow_swap,
            ..SwapPolicy::default()
        },
        gateway: GatewayConfig {
            engine,
            attestation: AttestationConfig {
                max_age: Duration::from_secs(args.attestation_max_age_secs.get()),
                nonce_per_minute: args.attestation_nonce_per_minute,
            },
            max_concurrent: args.max_concurrent_requests.get(),
            request_timeout: Duration::from_secs(args.request_timeout_secs.get()),
            ..GatewayConfig::default()
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async move {
        // First: a signal from here on stops the sentinel cleanly (wiping what it wrote),
        // and a sentinel whose handlers cannot be installed never starts its boot.
        let stop = stop_signals().context("cannot catch SIGINT and SIGTERM")?;
        let listener = Listener::bind(&args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
        let sentinel = Sentinel::new(config);
        tracing::info!(listen = %args.listen, provider = provider.name(), asset = %asset, engine = ?args.engine, output = ?args.model_output, "tb-sentinel starting");
        tokio::spawn(sentinel.clone().boot(provider));
        let stopping = sentinel.clone();
        let served = serve_until_stopped(stop, Duration::from_secs(args.drain_secs.get()), |stop_taking| {
            axum::serve(listener, sentinel.clone().router())
                .with_graceful_shutdown(async move {
                    stop_taking.await;
                    // At the signal, not after open connections drain: wipes what the
                    // runtime was given (tmpfs files, FIFOs) and the model.
                    stopping.shut_down();
                })
                .into_future()
        })
        .await;
        sentinel.shut_down();
        // A drain cut short is an error exit, so a supervisor knows answers were cut.
        served?.context("serving the health API")?;
        tracing::info!("tb-sentinel stopped");
        Ok(())
    });
    // Blocking work still running after a stop (an attestation report, a log append)
    // does not hold the exit up for long.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_production_build_explains_why_there_is_no_simulated_tee() {
        let message = super::no_simulated_tee().to_string();
        assert!(
            message.contains("built without the simulated TEE"),
            "{message}"
        );
        assert!(message.contains("--features simulated-tee"), "{message}");
    }
}

//! `tb-kms`: the TrustBridge key broker.
//!
//! `tb-kms serve` runs the attestation-gated key release service; `tb-kms identity` prints
//! the broker's identity key (what sentinels and providers pin); `tb-kms audit verify`
//! checks the decision log; `tb-kms kek generate` creates a key-encryption key file.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use ed25519_dalek::VerifyingKey;
use trustbridge_kms::broker::decision_log::verify_log;
use trustbridge_kms::broker::kek::{KEK_ENV, Kek};
use trustbridge_kms::broker::store::{SqliteStore, Store};
use trustbridge_kms::broker::{Broker, service};
use trustbridge_logging::{DEFAULT_DRAIN, LogFormat, serve_until_stopped, stop_signals};

/// The TrustBridge key broker: releases model data keys only to attested sentinels.
#[derive(Debug, Parser)]
#[command(name = "tb-kms", version, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Serve(ServeArgs),
    Identity(IdentityArgs),
    Audit(AuditArgs),
    Kek(KekArgs),
}

/// Print the broker's identity key: what sentinels (--kms-key, TB_KMS_KEY) and providers
/// (trustbridge --kms-key) pin.
///
/// The identity key is derived from the KEK, so this needs the KEK (--kek-file or
/// TB_KMS_KEK) but no running broker. Every answer the broker gives is signed with it.
#[derive(Debug, clap::Args)]
struct IdentityArgs {
    /// KEK file (64 hex characters); TB_KMS_KEK is used when absent.
    #[arg(long, value_name = "FILE")]
    kek_file: Option<PathBuf>,
    /// Print JSON: {identity_key, registration_key, decision_log_key}.
    #[arg(long)]
    json: bool,
}

/// Run the key broker.
///
/// Data keys are stored in the database only wrapped under the key-encryption key (KEK),
/// read from --kek-file or the TB_KMS_KEK environment variable (64 hex characters). The
/// policy (--policy) is stored in the database; later starts may omit it.
#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// SQLite database (created if missing; WAL mode).
    #[arg(long, value_name = "PATH")]
    db: PathBuf,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7443")]
    listen: String,
    /// KEK file (64 hex characters); TB_KMS_KEK is used when absent.
    #[arg(long, value_name = "FILE")]
    kek_file: Option<PathBuf>,
    /// Policy TOML (see docs/POLICY.md); replaces the stored policy.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// A KDS cache (`trustbridge kds fetch --cache DIR`): AMD's revocation lists in it are
    /// applied to every SEV-SNP and Azure chain, so a revoked ASK, ASVK, VCEK or VLEK is
    /// refused. Read at start.
    #[arg(long, value_name = "DIR")]
    kds_cache: Option<PathBuf>,
    /// Log format on stderr; RUST_LOG selects what is logged (default info).
    #[arg(long, env = "TB_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

/// Check the decision log.
#[derive(Debug, clap::Args)]
struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    Verify(AuditVerifyArgs),
}

/// Verify every signature and hash link of the decision log. Exit 0 intact, 1 broken.
#[derive(Debug, clap::Args)]
struct AuditVerifyArgs {
    /// The broker's database.
    #[arg(long, value_name = "PATH")]
    db: PathBuf,
    /// The decision-log public key (hex, from GET /v1/broker); or give the KEK.
    #[arg(long, value_name = "HEX", conflicts_with = "kek_file")]
    pubkey: Option<String>,
    /// Derive the decision-log key from this KEK file.
    #[arg(long, value_name = "FILE")]
    kek_file: Option<PathBuf>,
}

/// Manage key-encryption keys.
#[derive(Debug, clap::Args)]
struct KekArgs {
    #[command(subcommand)]
    command: KekCommand,
}

#[derive(Debug, Subcommand)]
enum KekCommand {
    Generate(KekGenerateArgs),
}

/// Create a new random KEK file (mode 0600; refuses to overwrite).
#[derive(Debug, clap::Args)]
struct KekGenerateArgs {
    /// The file to create.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Identity(args) => identity(args).map(|()| true),
        Command::Audit(AuditArgs {
            command: AuditCommand::Verify(args),
        }) => audit_verify(args),
        Command::Kek(KekArgs {
            command: KekCommand::Generate(args),
        }) => kek_generate(args).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn read_kek(path: Option<&Path>) -> Result<Kek> {
    let text = match path {
        Some(p) => zeroize::Zeroizing::new(
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read KEK file {}", p.display()))?,
        ),
        None => zeroize::Zeroizing::new(
            std::env::var(KEK_ENV)
                .with_context(|| format!("no KEK: pass --kek-file or set {KEK_ENV}"))?,
        ),
    };
    Kek::from_hex(&text).context("invalid KEK")
}

fn serve(args: ServeArgs) -> Result<bool> {
    trustbridge_logging::init(args.log_format)?;
    let kek = read_kek(args.kek_file.as_deref())?;
    let policy = args
        .policy
        .as_deref()
        .map(|p| {
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read policy {}", p.display()))
        })
        .transpose()?;
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&args.db)
            .with_context(|| format!("cannot open database {}", args.db.display()))?,
    );
    let broker = Arc::new(Broker::open(store, kek, policy.as_deref())?);
    if let Some(cache) = &args.kds_cache {
        let lists = trustbridge_verifier::vcek_cache::revocation_lists(cache)
            .with_context(|| format!("reading revocation lists from {}", cache.display()))?;
        tracing::info!(cache = %cache.display(), lists = lists.len(), "AMD revocation lists loaded");
        broker.set_revocation_lists(lists)?;
    }
    let info = broker.info()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        tracing::info!(
            listen = %listener.local_addr()?,
            identity_key = %info.identity_key,
            registration_key = %info.registration_key,
            decision_log_key = %info.decision_log_key,
            simulation = info.simulation,
            "tb-kms serving"
        );
        let stop = stop_signals().context("cannot catch SIGINT and SIGTERM")?;
        // Requests in flight get DEFAULT_DRAIN to finish; a drain cut short is an error.
        serve_until_stopped(stop, DEFAULT_DRAIN, |stop_taking| {
            service::serve(listener, broker, stop_taking)
        })
        .await??;
        tracing::info!("tb-kms stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(true)
}

fn audit_verify(args: AuditVerifyArgs) -> Result<bool> {
    let key = match (&args.pubkey, &args.kek_file) {
        (Some(hex_key), _) => {
            let mut b = [0u8; 32];
            hex::decode_to_slice(hex_key.trim(), &mut b)
                .context("--pubkey must be 64 hex characters")?;
            VerifyingKey::from_bytes(&b).context("--pubkey is not an Ed25519 key")?
        }
        (None, kek) => read_kek(kek.as_deref())?.decision_log_key().verifying_key(),
    };
    if !args.db.exists() {
        bail!("database {} does not exist", args.db.display());
    }
    let store = SqliteStore::open(&args.db)?;
    let entries = store.decisions()?;
    let mut out = std::io::stdout().lock();
    match verify_log(&entries, &key) {
        Ok(n) => {
            writeln!(
                out,
                "decision log intact: {n} record(s), signed by {}",
                hex::encode(key.to_bytes())
            )?;
            Ok(true)
        }
        Err(e) => {
            writeln!(out, "decision log BROKEN: {e}")?;
            Ok(false)
        }
    }
}

fn identity(args: IdentityArgs) -> Result<()> {
    let kek = read_kek(args.kek_file.as_deref())?;
    let identity = kek.broker_identity().public();
    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = serde_json::json!({
            "identity_key": identity.to_string(),
            "registration_key": hex::encode(kek.registration_key().public_key()),
            "decision_log_key": hex::encode(kek.decision_log_key().verifying_key().to_bytes()),
        });
        writeln!(out, "{doc}")?;
    } else {
        writeln!(out, "{identity}")?;
    }
    Ok(())
}

fn kek_generate(args: KekGenerateArgs) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let kek = Kek::generate()?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&args.out)
        .with_context(|| format!("cannot create {} (it must not exist)", args.out.display()))?;
    f.write_all(kek.to_hex_line().as_bytes())?;
    f.sync_all()?;
    writeln!(
        std::io::stdout().lock(),
        "wrote {} (mode 0600)",
        args.out.display()
    )?;
    Ok(())
}

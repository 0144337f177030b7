//! `trustbridge`: the TrustBridge user tool.
//!
//! Provider commands (`keygen`, `seal`, `unseal`, `inspect`, `register`, `contract`,
//! `policy compile | add-measurement`, `eif build | measure`), `key-release`, `sim-ca`, `kds fetch`, the verifying client `proxy`,
//! and `demo`. Results go to
//! stdout, diagnostics to stderr; exit status 0 on success, 1 on failure, 2 on usage errors.
#![forbid(unsafe_code)]

mod bundle_dir;
mod commands;
mod kds;
mod key_files;
mod output_file;
mod progress;
mod sizes;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// TrustBridge: confidential AI inference. Model weights and prompts stay encrypted to
/// everyone but an attested TEE.
#[derive(Debug, Parser)]
#[command(
    name = "trustbridge",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Hide progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// More log output on stderr (-v info, -vv debug). RUST_LOG overrides it.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

/// Each variant takes its help text from its arguments struct.
#[derive(Debug, Subcommand)]
enum Command {
    Keygen(commands::keygen::KeygenArgs),
    Seal(commands::seal::SealArgs),
    Unseal(commands::unseal::UnsealArgs),
    Inspect(commands::inspect::InspectArgs),
    Demo(commands::demo::DemoArgs),
    Proxy(commands::proxy::ProxyArgs),
    Runtime(commands::runtime::RuntimeArgs),
    Kds(commands::kds::KdsArgs),
    Policy(commands::policy::PolicyArgs),
    Eif(commands::eif::EifArgs),
    Register(commands::kms_admin::RegisterArgs),
    Contract(commands::kms_admin::ContractArgs),
    KeyRelease(commands::key_release::KeyReleaseArgs),
    SimCa(commands::key_release::SimCaArgs),
}

/// mimalloc: the request path allocates and frees many small buffers, and glibc's malloc
/// and free were 9% of it (`cargo bench -p trustbridge-enclave --bench session`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();

    let result = match cli.command {
        Command::Keygen(args) => commands::keygen::run(args),
        Command::Seal(args) => commands::seal::run(args, cli.quiet),
        Command::Unseal(args) => commands::unseal::run(args, cli.quiet),
        Command::Inspect(args) => commands::inspect::run(args),
        Command::Demo(args) => commands::demo::run(args, cli.quiet),
        Command::Proxy(args) => commands::proxy::run(args),
        Command::Runtime(args) => commands::runtime::run(args),
        Command::Kds(args) => commands::kds::run(args),
        Command::Policy(args) => commands::policy::run(args),
        Command::Eif(args) => commands::eif::run(args),
        Command::Register(args) => commands::kms_admin::register(args),
        Command::Contract(args) => commands::kms_admin::contract(args),
        Command::KeyRelease(args) => match commands::key_release::run(args) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        Command::SimCa(args) => commands::key_release::sim_ca(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! `tb-verify`: offline verification of TrustBridge evidence and receipts.
//!
//! Exit status: 0 verified, 1 not verified (the reason is printed), 2 usage or I/O error.
#![forbid(unsafe_code)]

mod attestation;
mod input;
mod log;
mod receipt;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Verify TrustBridge evidence offline: TEE attestation (AWS Nitro, AMD SEV-SNP, Azure vTPM SNP)
/// and execution receipts.
///
/// Exit status: 0 verified, 1 not verified (reason printed), 2 usage or I/O error.
#[derive(Debug, Parser)]
#[command(name = "tb-verify", version, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Attestation(attestation::AttestationArgs),
    Receipt(Box<receipt::ReceiptArgs>),
    Log(log::LogArgs),
}

/// How a verification ended.
pub(crate) enum Outcome {
    Verified,
    NotVerified,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match cli.command {
        Command::Attestation(args) => attestation::run(args),
        Command::Receipt(args) => receipt::run(*args),
        Command::Log(args) => log::run(args),
    };
    match result {
        Ok(Outcome::Verified) => ExitCode::SUCCESS,
        Ok(Outcome::NotVerified) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

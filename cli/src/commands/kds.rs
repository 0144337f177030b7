//! `trustbridge kds fetch`: fill the local VCEK cache from AMD's KDS.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use trustbridge_verifier::snp_report::{REPORT_LEN, SnpReport};
use trustbridge_verifier::vcek_cache;

use crate::kds::{self, Backoff};

/// Talk to AMD's Key Distribution Service.
#[derive(Debug, clap::Args)]
pub(crate) struct KdsArgs {
    #[command(subcommand)]
    command: KdsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum KdsCommand {
    Fetch(FetchArgs),
}

/// Fetch the VCEK, the AMD chain (ASK, ARK) and AMD's revocation lists for an SNP report
/// into a local cache.
///
/// The key is found from the report's chip id and reported TCB. A cached key is used as is,
/// without any request; otherwise KDS is asked, with retries on HTTP 429 and 5xx (honouring
/// Retry-After, else exponential back-off with jitter). The ARK's revocation lists (of
/// ASKs and of ASVKs) are fetched when missing or past their next update, and cached only
/// if the product's pinned ARK signed them. Verifiers then read the cache offline, lists
/// included: `tb-verify attestation REPORT --vcek-cache DIR`.
#[derive(Debug, clap::Args)]
struct FetchArgs {
    /// The SNP report (1184 bytes raw, or hex).
    #[arg(long, value_name = "FILE")]
    report: PathBuf,
    /// The cache directory.
    #[arg(long, value_name = "DIR")]
    cache: PathBuf,
    /// The product: milan, genoa or turin. Required for version 2 reports, which do not
    /// name it.
    #[arg(long, value_parser = ["milan", "genoa", "turin"])]
    product: Option<String>,
    /// The KDS base URL.
    #[arg(long, value_name = "URL", default_value = kds::DEFAULT_KDS_URL)]
    kds_url: String,
    /// Attempts per request before giving up.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=20))]
    max_attempts: u32,
    /// Delay before the first retry, in milliseconds (doubled each time, at most 60 s).
    #[arg(long, default_value_t = 2000)]
    initial_backoff_ms: u64,
}

pub(crate) fn run(args: KdsArgs) -> Result<()> {
    let KdsCommand::Fetch(args) = args.command;
    let raw = std::fs::read(&args.report)
        .with_context(|| format!("cannot read {}", args.report.display()))?;
    let bytes = if raw.len() == REPORT_LEN {
        raw
    } else {
        hex::decode(String::from_utf8_lossy(&raw).trim()).with_context(|| {
            format!(
                "{} is neither a 1184-byte report nor hex",
                args.report.display()
            )
        })?
    };
    let report = SnpReport::parse(&bytes)?;
    let product: &'static str = match args.product.as_deref() {
        Some("milan") => "Milan",
        Some("genoa") => "Genoa",
        Some("turin") => "Turin",
        _ => vcek_cache::product_from_report(&report)
            .context("the report does not name its product (version 2): pass --product")?,
    };
    let backoff = Backoff {
        attempts: args.max_attempts,
        initial: Duration::from_millis(args.initial_backoff_ms),
        max: Duration::from_secs(60),
    };
    let fetched = kds::fetch(&args.kds_url, &args.cache, &report, product, backoff)?;
    let mut out = std::io::stdout().lock();
    let source = if fetched.requests == 0 {
        "cache (no request sent)".to_owned()
    } else {
        format!("KDS ({} request(s))", fetched.requests)
    };
    writeln!(out, "product     {}", fetched.product)?;
    writeln!(out, "vcek        {}", fetched.vcek.display())?;
    writeln!(out, "cert chain  {}", fetched.chain.display())?;
    writeln!(out, "ask crl     {}", fetched.crls[0].display())?;
    writeln!(out, "asvk crl    {}", fetched.crls[1].display())?;
    writeln!(out, "source      {source}")?;
    Ok(())
}

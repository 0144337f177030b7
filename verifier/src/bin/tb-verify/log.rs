//! `tb-verify log`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use base64::Engine;
use serde_json::json;
use trustbridge_protocol::KeyId;
use trustbridge_protocol::attestation_bundle::AttestationBundle;
use trustbridge_protocol::receipt::{UnverifiedReceipt, receipt_key_id};
use trustbridge_verifier::receipt::{check_bound, check_chains, receipt_key, verify_all};
use trustbridge_verifier::{Checks, VerifiedEvidence};

use crate::Outcome;
use crate::attestation::{EvidenceOptions, checks_json, print_checks, verify_bundle};

/// Largest log file read.
const MAX_LOG_FILE: u64 = 1 << 30;

/// Verify a receipt log: every receipt's signature, one hash chain per boot (no gaps, no
/// forks, no broken links), and every boot's receipt key bound by verified evidence.
///
/// The log is the relay's `--receipt-log` file (JSON lines `{"seq", "receipt"}`), or the
/// `receipts` of its `GET /receipts` answers saved one per line. Each boot needs the
/// attestation bundle its receipts name (`--attestation`, repeatable): a boot whose key no
/// verified bundle binds is refused, not trusted.
#[derive(Debug, clap::Args)]
pub(crate) struct LogArgs {
    /// The receipt log: a file, or the relay's URL (http(s)://HOST:PORT, whose
    /// /receipts pages are read to the end).
    #[arg(value_name = "FILE|URL")]
    file: PathBuf,
    /// An attestation bundle of a boot in the log (repeatable; one per evidence the
    /// receipts name).
    #[arg(long, value_name = "BUNDLE", required = true)]
    attestation: Vec<PathBuf>,
    #[command(flatten)]
    evidence: EvidenceOptions,
    /// The log was read from the middle (a relay's `after=SEQ` page): boots may start past
    /// sequence 0. Without it a boot whose first receipts are missing is refused (a relay
    /// could have dropped them).
    #[arg(long)]
    partial: bool,
    /// Print JSON: {verified, error, boots, checks}.
    #[arg(long)]
    json: bool,
}

/// One log entry: `{"seq": N, "receipt": "<base64url>"}`.
struct Line {
    seq: u64,
    receipt: String,
}

impl Line {
    fn parse(line: &str) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let o = v.as_object().filter(|o| o.len() == 2)?;
        Some(Self {
            seq: o.get("seq")?.as_u64()?,
            receipt: o.get("receipt")?.as_str()?.to_owned(),
        })
    }
}

pub(crate) fn run(args: LogArgs) -> Result<Outcome> {
    let text = match args
        .file
        .to_str()
        .filter(|f| f.starts_with("http://") || f.starts_with("https://"))
    {
        Some(url) => fetch_log(url)?,
        None => read_log(&args.file)?,
    };
    let mut checks = Checks::default();
    let mut error: Option<String> = None;
    let mut fail = |checks: &mut Checks, name, detail: String| {
        checks.fail(name, detail.clone());
        error.get_or_insert(detail);
    };

    // The bundles: each verified, its receipt key then trusted for the receipts that name
    // its evidence.
    let mut bound: BTreeMap<KeyId, Vec<(AttestationBundle, VerifiedEvidence)>> = BTreeMap::new();
    for path in &args.attestation {
        let (bundle, verdict) = verify_bundle(&args.evidence, path, None, None, None)?;
        let key = receipt_key_id(&bundle.receipt_key);
        match (verdict.error, verdict.verified) {
            (None, Ok(ev)) => {
                checks.pass(
                    "attestation",
                    format!("{}: verified; binds receipt key {key}", path.display()),
                );
                bound.entry(key).or_default().push((bundle, ev));
            }
            (e, _) => fail(
                &mut checks,
                "attestation",
                format!("{}: {}", path.display(), e.unwrap_or_default()),
            ),
        }
    }

    // The receipts: parsed, each with the verified bundle that binds its key and names
    // its evidence.
    let mut parsed = Vec::new();
    let mut expected_seq = None;
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let entry = Line::parse(line).with_context(|| {
            format!("line {} is not a log entry {{\"seq\", \"receipt\"}}", i + 1)
        })?;
        if let Some(next) = expected_seq
            && Some(entry.seq) != next
        {
            fail(
                &mut checks,
                "log",
                format!(
                    "log entry {} follows entry {}: entries are missing or reordered",
                    entry.seq,
                    next.map_or_else(|| "the last possible".to_owned(), |n| (n - 1).to_string())
                ),
            );
        }
        expected_seq = Some(entry.seq.checked_add(1));
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(entry.receipt.trim_end_matches('='))
            .with_context(|| format!("log entry {} is not base64url", entry.seq))?;
        match UnverifiedReceipt::parse(&bytes) {
            Ok(r) => parsed.push((entry.seq, r)),
            Err(e) => fail(
                &mut checks,
                "receipts",
                format!("log entry {}: {e}", entry.seq),
            ),
        }
    }
    let mut with_keys = Vec::new();
    let mut bundles_of = Vec::new();
    for (seq, r) in parsed {
        let c = r.claims();
        let Some(found) = bound.get(&c.issuer).and_then(|list| {
            list.iter()
                .find(|(b, _)| b.evidence_digest() == c.evidence_digest)
        }) else {
            fail(
                &mut checks,
                "key binding",
                format!(
                    "log entry {seq}: no verified attestation bundle binds receipt key {} with the evidence it names",
                    c.issuer
                ),
            );
            continue;
        };
        match receipt_key(&found.0) {
            Ok(key) => {
                with_keys.push((r, key));
                bundles_of.push((seq, found));
            }
            Err(e) => fail(&mut checks, "key binding", format!("log entry {seq}: {e}")),
        }
    }
    let n = with_keys.len();
    let mut boots = Vec::new();
    match verify_all(with_keys) {
        Err((i, e)) => fail(
            &mut checks,
            "signatures",
            format!("log entry {}: {e}", bundles_of[i].0),
        ),
        Ok(receipts) => {
            checks.pass(
                "signatures",
                format!("{n} receipts signed by keys that verified evidence binds"),
            );
            let mut claims_ok = true;
            for (r, (seq, (bundle, ev))) in receipts.iter().zip(&bundles_of) {
                if let Err(e) = check_bound(r.claims(), bundle, ev) {
                    fail(&mut checks, "claims", format!("log entry {seq}: {e}"));
                    claims_ok = false;
                    break;
                }
            }
            if claims_ok {
                checks.pass(
                    "claims",
                    "evidence digests, measurements and models agree with the evidence",
                );
            }
            match check_chains(&receipts) {
                Ok(b) => {
                    match b.iter().find(|boot| boot.first != 0) {
                        Some(boot) if !args.partial => fail(
                            &mut checks,
                            "chains",
                            format!(
                                "boot {} starts at sequence {}: its receipts 0..{} are missing (--partial for a log read from the middle)",
                                boot.issuer, boot.first, boot.first
                            ),
                        ),
                        _ => checks.pass(
                            "chains",
                            format!("{} boot(s), each one unbroken hash chain", b.len()),
                        ),
                    }
                    boots = b;
                }
                Err(e) => fail(&mut checks, "chains", e.to_string()),
            }
        }
    }
    let verified = error.is_none();
    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = json!({
            "verified": verified,
            "error": error,
            "boots": boots.iter().map(|b| json!({"issuer": b.issuer.to_string(), "first": b.first, "last": b.last, "count": b.count})).collect::<Vec<_>>(),
            "checks": checks_json(&checks),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        print_checks(&mut out, &checks)?;
        for b in &boots {
            writeln!(
                out,
                "  boot {}: sequences {}..={} ({} receipts)",
                b.issuer, b.first, b.last, b.count
            )?;
        }
        writeln!(
            out,
            "verdict: {} (receipt log)",
            if verified { "VERIFIED" } else { "NOT VERIFIED" }
        )?;
    }
    Ok(if verified {
        Outcome::Verified
    } else {
        Outcome::NotVerified
    })
}

fn read_log(path: &std::path::Path) -> Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .take(MAX_LOG_FILE + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if text.len() as u64 > MAX_LOG_FILE {
        bail!("{} is larger than {MAX_LOG_FILE} bytes", path.display());
    }
    Ok(text)
}

/// Reads every page of a relay's `GET /receipts?after=SEQ` into log lines.
fn fetch_log(url: &str) -> Result<String> {
    use std::io::Read;
    let base = url.trim_end_matches('/');
    let base = base.strip_suffix("/receipts").unwrap_or(base);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(60)))
        .build()
        .into();
    let mut text = String::new();
    let mut after: Option<u64> = None;
    loop {
        let page_url = match after {
            None => format!("{base}/receipts"),
            Some(a) => format!("{base}/receipts?after={a}"),
        };
        let mut body = Vec::new();
        agent
            .get(&page_url)
            .call()
            .with_context(|| format!("cannot read {page_url}"))?
            .into_body()
            .into_reader()
            .take(MAX_LOG_FILE + 1)
            .read_to_end(&mut body)
            .with_context(|| format!("cannot read {page_url}"))?;
        let page: serde_json::Value = serde_json::from_slice(&body)
            .with_context(|| format!("{page_url} is not a receipt log page"))?;
        let entries = page["receipts"]
            .as_array()
            .with_context(|| format!("{page_url} has no receipts array"))?;
        for e in entries {
            text.push_str(&e.to_string());
            text.push('\n');
        }
        if text.len() as u64 > MAX_LOG_FILE {
            bail!("the receipt log at {base} is larger than {MAX_LOG_FILE} bytes");
        }
        match page["next"].as_u64() {
            Some(next) if after.is_none_or(|a| next > a) => after = Some(next),
            Some(_) => bail!("{page_url}: the next page does not move forward"),
            None => return Ok(text),
        }
    }
}

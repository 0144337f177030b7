//! `tb-verify attestation`.

use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use serde_json::json;
use trustbridge_verifier::client_policy::{BundleRefused, ClientPolicy, verify_bundle_evidence};
use trustbridge_verifier::crl::RevocationList;
use trustbridge_verifier::x509::ParsedCertificate;
use trustbridge_verifier::{
    AzureEvidence, Checks, MinTcb, Platform, Policy, TrustRoots, VerifiedEvidence,
    verify_azure_logged, verify_nitro_logged, verify_snp_logged,
};

use crate::Outcome;
use trustbridge_protocol::binding::EvidenceBinding;

use crate::input::{
    Evidence, HexBytes, Key32, parse_expectation, parse_hex, parse_key32, parse_min_tcb,
    parse_platform, parse_time, read_binding, read_certificates, read_evidence,
};

/// Verify TEE attestation evidence at a given time against pinned roots and a policy.
///
/// Prints one line per check ([PASS] or [FAIL] with the reason) and a verdict. The
/// default roots are the AWS Nitro root G1 and AMD's Milan, Genoa and Turin ARKs, pinned by
/// SHA-256. Debug-mode and simulated evidence is rejected unless allowed.
#[derive(Debug, clap::Args)]
pub(crate) struct AttestationArgs {
    /// The evidence: a Nitro attestation document (CBOR or base64), an SNP report (1184
    /// bytes raw, or hex), or Azure vTPM SNP evidence (JSON, versions 0 to 2).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The platform; detected from the file when omitted.
    #[arg(long, value_parser = parse_platform)]
    platform: Option<Platform>,
    #[command(flatten)]
    evidence: EvidenceOptions,
    /// Require this nonce (Nitro nonce; SNP REPORT_DATA, zero-padded to 64 bytes; Azure
    /// TPM quote extraData).
    #[arg(long, value_name = "HEX", value_parser = parse_hex)]
    nonce: Option<HexBytes>,
    /// The evidence binding (deterministic CBOR: raw, hex or base64) the evidence must
    /// carry, as a sentinel publishes it; its fields (the sentinel's keys and what it
    /// trusts) are then reported.
    #[arg(long, value_name = "FILE")]
    binding: Option<PathBuf>,
    /// Require the sentinel to pin this key broker identity key (needs --binding).
    #[arg(long, value_name = "HEX", value_parser = parse_key32, requires = "binding")]
    expect_broker_key: Option<Key32>,
    /// Require the sentinel to pin this provider key (needs --binding).
    #[arg(long, value_name = "HEX", value_parser = parse_key32, requires = "binding")]
    expect_provider_key: Option<Key32>,
    /// Print JSON: {verified, platform, measurements, checks, ...}.
    #[arg(long)]
    json: bool,
}

/// How evidence is verified: time, roots, certificates, revocation and the policy. Shared
/// by `attestation` and `receipt`.
#[derive(Debug, clap::Args)]
pub(crate) struct EvidenceOptions {
    /// Verify as of this time (RFC 3339 or Unix seconds) instead of now.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    at: Option<SystemTime>,
    /// Trust the self-signed certificates in this PEM file instead of the built-in roots;
    /// other certificates in it are used as intermediates (e.g. an AMD ASK). Repeatable.
    #[arg(long, value_name = "PEM")]
    trust_root: Vec<PathBuf>,
    /// Trust this simulation root (evidence from TrustBridge's simulated TEE). Repeatable.
    /// Simulated evidence is still rejected unless --allow-simulated is given.
    #[arg(long, value_name = "PEM")]
    simulation_root: Vec<PathBuf>,
    /// SNP and Azure: the VCEK or VLEK (DER or PEM), optionally followed by the ASK/ASVK
    /// and ARK. Azure evidence usually carries its VCEK already.
    #[arg(long, value_name = "FILE")]
    vcek: Option<PathBuf>,
    /// SNP: look up the VCEK and AMD chain in this cache (filled by `trustbridge kds
    /// fetch`) when --vcek is not given, and apply the revocation lists it holds. Never
    /// uses the network.
    #[arg(long, value_name = "DIR")]
    vcek_cache: Option<PathBuf>,
    /// A certificate revocation list (DER) to apply, e.g. AMD's
    /// https://kdsintf.amd.com/vcek/v1/Milan/crl. A revoked certificate anywhere in the
    /// chain refuses the evidence. Repeatable.
    #[arg(long, value_name = "FILE")]
    crl: Vec<PathBuf>,
    /// Require a measurement to have this value, e.g. pcr0=HEX or measurement=HEX. Repeatable.
    #[arg(long = "expect", value_name = "NAME=HEX", value_parser = parse_expectation)]
    expect: Vec<(String, Vec<u8>)>,
    /// SEV-SNP and Azure: require the reported TCB to be at least this, e.g.
    /// bl=3,tee=0,snp=8,ucode=115 (fmc=N too on Turin; an omitted component is 0).
    #[arg(long, value_name = "TCB", value_parser = parse_min_tcb)]
    min_tcb: Option<MinTcb>,
    /// SEV-SNP and Azure: require the report's VMPL to be at most this.
    #[arg(long, value_name = "N")]
    max_vmpl: Option<u32>,
    /// Accept a debug-mode TEE.
    #[arg(long)]
    allow_debug: bool,
    /// SEV-SNP: accept a guest whose policy allows a migration agent (MIGRATE_MA), which
    /// could read the guest's memory.
    #[arg(long)]
    allow_migration_agent: bool,
    /// Accept simulated evidence (needs --simulation-root).
    #[arg(long)]
    allow_simulated: bool,
}

impl EvidenceOptions {
    /// `--at`, when given.
    pub(crate) fn at(&self) -> Option<SystemTime> {
        self.at
    }
}

/// What the evidence, the binding and the pins must be, beyond [`EvidenceOptions`].
pub(crate) struct Expected {
    pub(crate) nonce: Option<Vec<u8>>,
    pub(crate) binding: Option<EvidenceBinding>,
    pub(crate) broker_key: Option<[u8; 32]>,
    pub(crate) provider_key: Option<[u8; 32]>,
}

/// The outcome of [`verify_evidence`]: the verification, the policy verdict and the
/// checks that led there.
pub(crate) struct EvidenceVerdict {
    pub(crate) verified: Result<VerifiedEvidence, trustbridge_verifier::VerifyError>,
    pub(crate) checks: Checks,
    /// The first failure (verification or policy), if any.
    pub(crate) error: Option<String>,
}

impl EvidenceVerdict {
    pub(crate) fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// Verifies `evidence` (with `supplied` certificates that came with it) under `opts` and
/// checks the policy and `expected`.
pub(crate) fn verify_evidence(
    opts: &EvidenceOptions,
    evidence: &Evidence,
    supplied: Vec<ParsedCertificate>,
    expected: Expected,
) -> Result<EvidenceVerdict> {
    let now = opts.at.unwrap_or_else(SystemTime::now);
    let mut roots = if opts.trust_root.is_empty() {
        TrustRoots::production()
    } else {
        TrustRoots::empty()
    };
    let mut pool: Vec<ParsedCertificate> = Vec::new();
    for path in &opts.trust_root {
        for cert in read_certificates(path)? {
            if is_self_signed(&cert) {
                roots.add_root(evidence.platform, &cert);
            }
            // Roots complete chains too (SNP evidence rarely carries the ARK).
            pool.push(cert);
        }
    }
    for path in &opts.simulation_root {
        for cert in read_certificates(path)? {
            if is_self_signed(&cert) {
                roots.add_simulation_root(evidence.platform, &cert);
            }
            pool.push(cert);
        }
    }
    for path in &opts.crl {
        let der = crate::input::read_capped(path)?;
        roots.add_revocation_list(
            RevocationList::from_der(&der)
                .with_context(|| format!("{} is not a revocation list", path.display()))?,
        );
    }
    if let Some(cache) = &opts.vcek_cache {
        for list in trustbridge_verifier::vcek_cache::revocation_lists(cache)? {
            roots.add_revocation_list(list);
        }
    }
    let mut checks = Checks::default();
    let verified = match evidence.platform {
        Platform::Nitro => verify_nitro_logged(&evidence.bytes, &roots, now, &mut checks),
        Platform::Snp => {
            let mut certs = match (&opts.vcek, &opts.vcek_cache) {
                (Some(path), _) => read_certificates(path)?,
                (None, Some(cache)) => cached_vcek(&evidence.bytes, cache)?,
                (None, None) => Vec::new(),
            };
            certs.extend(supplied);
            certs.extend(pool);
            verify_snp_logged(
                &evidence.bytes,
                &certs,
                &roots,
                now,
                Platform::Snp,
                &mut checks,
            )
        }
        Platform::AzureSnpVtpm => match AzureEvidence::from_json(&evidence.bytes) {
            Ok(azure) => {
                if let Some(path) = &opts.vcek {
                    pool.extend(read_certificates(path)?);
                }
                pool.extend(supplied);
                verify_azure_logged(&azure, &pool, &roots, now, &mut checks)
            }
            Err(e) => Err(checks.failed(e)),
        },
    };
    let policy = Policy {
        allow_debug: opts.allow_debug,
        allow_simulated: opts.allow_simulated,
        allow_migration_agent: opts.allow_migration_agent,
        expected: opts.expect.iter().cloned().collect(),
        min_tcb: opts.min_tcb,
        max_vmpl: opts.max_vmpl,
        nonce: expected.nonce,
        binding: expected.binding,
        broker_key: expected.broker_key,
        provider_key: expected.provider_key,
    };
    let error = match &verified {
        Ok(ev) => policy.check(ev, &mut checks).err().map(|e| e.to_string()),
        Err(e) => Some(e.to_string()),
    };
    Ok(EvidenceVerdict {
        verified,
        checks,
        error,
    })
}

/// Reads an attestation bundle and verifies its evidence under `opts`: the evidence must
/// carry the bundle's binding (so the bundle's receipt key is one the evidence binds) and
/// pin the given keys.
///
/// With a client `policy` (`--policy`), the bundle is checked exactly as `trustbridge
/// proxy` checks it ([`ClientPolicy::verify_bundle`]): the policy's roots, measurement
/// sets, pins and models replace the command-line rules (`--at` still sets the time).
pub(crate) fn verify_bundle(
    opts: &EvidenceOptions,
    path: &std::path::Path,
    broker_key: Option<[u8; 32]>,
    provider_key: Option<[u8; 32]>,
    policy: Option<&ClientPolicy>,
) -> Result<(
    trustbridge_protocol::attestation_bundle::AttestationBundle,
    EvidenceVerdict,
)> {
    let bundle = trustbridge_protocol::attestation_bundle::AttestationBundle::from_json(
        &crate::input::read_capped(path)?,
    )
    .with_context(|| format!("{} is not an attestation bundle", path.display()))?;
    if let Some(policy) = policy {
        let now = opts.at.unwrap_or_else(SystemTime::now);
        let mut checks = Checks::default();
        let verified =
            match verify_bundle_evidence(&bundle, &policy.trust_roots(), now, &mut checks) {
                Ok(ev) => Ok(ev),
                Err(BundleRefused::Evidence(e) | BundleRefused::Certificate(e)) => Err(e),
                Err(other) => bail!("unexpected refusal: {other}"),
            };
        let error = match &verified {
            Ok(ev) => policy
                .accept(&bundle, ev, &mut checks)
                .err()
                .map(|e| e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        return Ok((
            bundle,
            EvidenceVerdict {
                verified,
                checks,
                error,
            },
        ));
    }
    let supplied = bundle
        .certificates
        .iter()
        .map(|der| ParsedCertificate::from_der(der, "bundle certificate"))
        .collect::<Result<Vec<_>, _>>()
        .context("the attestation bundle carries a certificate that does not parse")?;
    let evidence = Evidence {
        platform: bundle.platform,
        bytes: bundle.evidence.clone(),
    };
    let verdict = verify_evidence(
        opts,
        &evidence,
        supplied,
        Expected {
            nonce: None,
            binding: Some(bundle.binding.clone()),
            broker_key,
            provider_key,
        },
    )?;
    Ok((bundle, verdict))
}

/// The measurements of `ev` as JSON (hex values).
pub(crate) fn measurements_json(ev: &VerifiedEvidence) -> serde_json::Value {
    ev.measurements
        .iter()
        .map(|(k, v)| (k.clone(), json!(hex::encode(v))))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Prints the checks as `[PASS] name: detail` lines.
pub(crate) fn print_checks(out: &mut impl Write, checks: &Checks) -> Result<()> {
    for c in checks.as_slice() {
        writeln!(
            out,
            "[{}] {}: {}",
            if c.passed { "PASS" } else { "FAIL" },
            c.name,
            c.detail
        )?;
    }
    Ok(())
}

/// The checks as JSON.
pub(crate) fn checks_json(checks: &Checks) -> serde_json::Value {
    checks
        .as_slice()
        .iter()
        .map(|c| json!({"name": c.name, "passed": c.passed, "detail": c.detail}))
        .collect::<Vec<_>>()
        .into()
}

pub(crate) fn run(args: AttestationArgs) -> Result<Outcome> {
    let evidence = read_evidence(&args.file, args.platform)?;
    let binding = args.binding.as_deref().map(read_binding).transpose()?;
    let verdict = verify_evidence(
        &args.evidence,
        &evidence,
        Vec::new(),
        Expected {
            nonce: args.nonce.map(|h| h.0),
            binding: binding.clone(),
            broker_key: args.expect_broker_key.map(|k| k.0),
            provider_key: args.expect_provider_key.map(|k| k.0),
        },
    )?;
    let evidence_ok = verdict.ok();
    let EvidenceVerdict {
        verified,
        checks,
        error,
    } = verdict;
    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = json!({
            "verified": evidence_ok,
            "platform": evidence.platform.name(),
            "error": error,
            "simulated": verified.as_ref().ok().map(|e| e.simulated),
            "debug": verified.as_ref().ok().map(|e| e.debug),
            "measurements": verified.as_ref().ok().map(measurements_json),
            "facts": verified.as_ref().ok().map(|e| &e.facts),
            "binding": verified.as_ref().ok().map(binding_json),
            "evidence_binding": binding.as_ref().map(|b| json!({
                "nonce": hex::encode(&b.nonce),
                "ohttp_keys_sha256": hex::encode(b.ohttp_keys_sha256),
                "receipt_key": hex::encode(b.receipt_key),
                "release_key": hex::encode(b.release_key),
                "broker_key": hex::encode(b.broker_key),
                "provider_key": b.provider_key.map(hex::encode),
                "manifest_sha256": b.manifest_sha256.map(hex::encode),
            })),
            "chain": verified.as_ref().ok().map(|e| e.chain.iter().map(|c| json!({"subject": c.subject, "not_before": c.not_before, "not_after": c.not_after, "sha256": hex::encode(c.sha256)})).collect::<Vec<_>>()),
            "checks": checks_json(&checks),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        print_checks(&mut out, &checks)?;
        if let Ok(ev) = &verified {
            for (k, v) in &ev.facts {
                writeln!(out, "  {k} = {v}")?;
            }
            if let Some(b) = &binding {
                writeln!(out, "  binding broker_key = {}", hex::encode(b.broker_key))?;
                writeln!(
                    out,
                    "  binding provider_key = {}",
                    b.provider_key
                        .map_or_else(|| "(none pinned)".into(), hex::encode)
                )?;
                if let Some(m) = b.manifest_sha256 {
                    writeln!(out, "  binding manifest_sha256 = {}", hex::encode(m))?;
                }
            }
            print_measurements(&mut out, &ev.measurements)?;
        }
        let verdict = if evidence_ok {
            "VERIFIED"
        } else {
            "NOT VERIFIED"
        };
        writeln!(out, "verdict: {verdict} ({})", evidence.platform)?;
    }
    Ok(if evidence_ok {
        Outcome::Verified
    } else {
        Outcome::NotVerified
    })
}

/// The VCEK and AMD chain for the report from the cache; empty when not cached (the
/// verification then fails with a message that asks for --vcek).
fn cached_vcek(report: &[u8], cache: &std::path::Path) -> Result<Vec<ParsedCertificate>> {
    let Ok(parsed) = trustbridge_verifier::snp_report::SnpReport::parse(report) else {
        return Ok(Vec::new());
    };
    Ok(trustbridge_verifier::vcek_cache::load(cache, &parsed)?.unwrap_or_default())
}

/// Prints measurements as `  name = hex` lines, `pcr2` before `pcr10`.
pub(crate) fn print_measurements(
    out: &mut impl Write,
    measurements: &std::collections::BTreeMap<String, Vec<u8>>,
) -> Result<()> {
    let mut names: Vec<&String> = measurements.keys().collect();
    names.sort_by_key(|k| natural_key(k));
    for k in names {
        writeln!(out, "  {k} = {}", hex::encode(&measurements[k]))?;
    }
    Ok(())
}

/// Sorts `pcr2` before `pcr10`.
fn natural_key(name: &str) -> (String, u32) {
    let digits = name.trim_start_matches(|c: char| !c.is_ascii_digit());
    let prefix = &name[..name.len() - digits.len()];
    (prefix.to_owned(), digits.parse().unwrap_or(0))
}

fn is_self_signed(cert: &ParsedCertificate) -> bool {
    let tbs = &cert.certificate().tbs_certificate;
    tbs.issuer == tbs.subject
}

fn binding_json(ev: &VerifiedEvidence) -> serde_json::Value {
    let h = |v: &Option<Vec<u8>>| v.as_ref().map(hex::encode);
    let b = &ev.binding;
    json!({
        "nonce": h(&b.nonce),
        "user_data": h(&b.user_data),
        "public_key": h(&b.public_key),
        "report_data": h(&b.report_data),
        "hcl_user_data": h(&b.hcl_user_data),
        "quote_nonce": h(&b.quote_nonce),
    })
}

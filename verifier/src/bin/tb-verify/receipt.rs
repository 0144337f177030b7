//! `tb-verify receipt`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine;
use serde_json::json;
use trustbridge_protocol::receipt::{Claims, EAT_PROFILE, SALT_LEN, UnverifiedReceipt};
use trustbridge_verifier::client_policy::ClientPolicy;
use trustbridge_verifier::receipt::{check_bound, check_digests, receipt_key};

use crate::Outcome;
use crate::attestation::{
    EvidenceOptions, checks_json, measurements_json, print_checks, print_measurements,
    verify_bundle,
};
use crate::input::{HexBytes, Key32, parse_hex, parse_key32, read_capped};

/// Verify an execution receipt: a TrustBridge receipt against the attested sentinel that
/// signed it (--attestation), or an AIR v1 receipt (EphemeralML) with its issuer's key
/// (--public-key), told apart by their eat_profile.
///
/// Checks, in order: the sentinel's attestation bundle (its evidence against pinned roots
/// and the policy options below, and that the evidence binds the bundle's receipt key);
/// the receipt's format (tagged COSE_Sign1, EdDSA, deterministic CBOR, closed claims set)
/// and its signature by that key; the claims the evidence vouches for (evidence digest,
/// measurements, the model when the binding names one); and, given the plaintexts and the
/// salt the client received, the request and response digests.
///
/// AIR v1 receipts are checked with that format's layered rules; the failure code
/// (BAD_ALG, SIG_FAILED, ZERO_MODEL_HASH, NONCE_MISMATCH, ...) is printed and is `code` in
/// --json.
#[derive(Debug, clap::Args)]
pub(crate) struct ReceiptArgs {
    /// The receipt: COSE_Sign1 bytes, or the `trustbridge-receipt` header value (base64url,
    /// no padding; base64 and hex are accepted too).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The sentinel's attestation bundle, as served at
    /// `/.well-known/trustbridge-attestation` (JSON).
    #[arg(long, value_name = "BUNDLE", conflicts_with = "public_key")]
    attestation: Option<PathBuf>,
    /// AIR v1: the issuer's Ed25519 public key (hex), obtained out of band.
    #[arg(long, value_name = "HEX", value_parser = parse_key32)]
    public_key: Option<Key32>,
    /// Require the receipt to carry this client nonce (eat_nonce, hex): the one the client
    /// sent with its request (trustbridge-receipt-nonce), so the receipt is fresh.
    #[arg(long, value_name = "HEX", value_parser = parse_hex)]
    expect_nonce: Option<HexBytes>,
    /// AIR v1: require this model_hash (hex, 32 bytes).
    #[arg(long, value_name = "HEX", value_parser = parse_key32, requires = "public_key")]
    expect_model_hash: Option<Key32>,
    /// AIR v1: require this measurement type.
    #[arg(long, value_name = "PLATFORM", value_parser = ["nitro-pcr", "tdx-mrtd-rtmr"], requires = "public_key")]
    expect_platform: Option<String>,
    /// AIR v1: require the receipt to be at most this many seconds old (freshness is
    /// checked only when given; --at sets "now").
    #[arg(long, value_name = "SECS", requires = "public_key")]
    max_age: Option<u64>,
    /// AIR v1: accept security_mode "evaluation" (refused by default, as AIR says).
    #[arg(long, requires = "public_key")]
    allow_evaluation_mode: bool,
    #[command(flatten)]
    evidence: EvidenceOptions,
    /// Check the bundle against this client policy (client.toml, as `trustbridge proxy
    /// --policy` reads it): its roots, measurement sets, pinned keys and models replace
    /// the rules given as options, which cannot be combined with it (--at still sets the
    /// time).
    #[arg(long, value_name = "FILE", conflicts_with_all = [
        "expect_broker_key", "expect_provider_key", "trust_root", "simulation_root", "vcek",
        "vcek_cache", "crl", "expect", "min_tcb", "max_vmpl", "allow_debug",
        "allow_migration_agent", "allow_simulated",
    ])]
    policy: Option<PathBuf>,
    /// Require the sentinel to pin this key broker identity key.
    #[arg(long, value_name = "HEX", value_parser = parse_key32)]
    expect_broker_key: Option<Key32>,
    /// Require the sentinel to pin this provider key.
    #[arg(long, value_name = "HEX", value_parser = parse_key32)]
    expect_provider_key: Option<Key32>,
    /// Require the receipt to name this model (SHA-256 of its manifest.cose, hex).
    #[arg(long, value_name = "HEX", value_parser = parse_key32)]
    expect_model: Option<Key32>,
    /// The request as sent (the Binary HTTP message before encapsulation); checked
    /// against the salted request digest (needs --response and --salt).
    #[arg(long, value_name = "FILE", requires_all = ["response", "salt"])]
    request: Option<PathBuf>,
    /// The response content as received (every chunk, in order).
    #[arg(long, value_name = "FILE", requires_all = ["request", "salt"])]
    response: Option<PathBuf>,
    /// The salt from the response's `trustbridge-receipt-salt` header (hex, 32 bytes).
    #[arg(long, value_name = "HEX", value_parser = parse_key32, requires_all = ["request", "response"])]
    salt: Option<Key32>,
    /// Print JSON: {verified, error, claims, attestation, checks}.
    #[arg(long)]
    json: bool,
}

/// Reads a receipt in any of its encodings.
fn read_receipt(path: &Path) -> Result<Vec<u8>> {
    let raw = read_capped(path)?;
    // Binary (a COSE_Sign1, tagged or not, or anything else that is not text) is judged by
    // the verifier; text is the header form.
    let Ok(text) = std::str::from_utf8(&raw) else {
        return Ok(raw);
    };
    if raw.first() == Some(&0xd2) {
        return Ok(raw);
    }
    let text = text.trim();
    // Hex first: hex text is valid base64 too, and would decode to garbage (a receipt in
    // hex begins "d2"; in base64 it begins "0o", which is not hex).
    if let Ok(b) = hex::decode(text) {
        return Ok(b);
    }
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(text));
    match b64 {
        Ok(b) => Ok(b),
        _ => bail!(
            "{} is not a receipt: expected COSE_Sign1 bytes, base64url, base64 or hex",
            path.display()
        ),
    }
}

/// The claims by name, for `--json` and the text output.
fn claims_json(c: &Claims) -> serde_json::Value {
    json!({
        "iss": c.issuer.to_string(),
        "iat": c.issued_at,
        "cti": hex::encode(c.id),
        "eat_nonce": c.nonce.as_ref().map(hex::encode),
        "eat_profile": EAT_PROFILE,
        "sequence": c.sequence,
        "previous": hex::encode(c.previous),
        "model": hex::encode(c.model),
        "request_digest": hex::encode(c.request_digest),
        "response_digest": hex::encode(c.response_digest),
        "evidence_digest": hex::encode(c.evidence_digest),
        "measurements": c.measurements.iter().map(|(k, v)| (k.clone(), json!(hex::encode(v)))).collect::<serde_json::Map<_, _>>(),
        "policy_digest": hex::encode(c.policy_digest),
        "status": c.status,
        "usage": c.usage.map(|u| json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens})),
    })
}

pub(crate) fn run(args: ReceiptArgs) -> Result<Outcome> {
    let receipt_bytes = read_receipt(&args.file)?;
    if trustbridge_verifier::air::is_air(&receipt_bytes) {
        return run_air(&args, &receipt_bytes);
    }
    let Some(attestation) = &args.attestation else {
        bail!(
            "a TrustBridge receipt is verified against its sentinel's attestation bundle: pass --attestation BUNDLE (its key is the one verified evidence binds, never one given on the command line)"
        );
    };
    let plaintexts = match (&args.request, &args.response, &args.salt) {
        (Some(q), Some(r), Some(s)) => Some((read_capped(q)?, read_capped(r)?, s.0)),
        _ => None,
    };
    let policy = args
        .policy
        .as_deref()
        .map(|path| {
            let text = String::from_utf8(read_capped(path)?)
                .with_context(|| format!("{} is not UTF-8 text", path.display()))?;
            ClientPolicy::from_toml(&text).with_context(|| format!("{}", path.display()))
        })
        .transpose()?;
    let (bundle, mut verdict) = verify_bundle(
        &args.evidence,
        attestation,
        args.expect_broker_key.map(|k| k.0),
        args.expect_provider_key.map(|k| k.0),
        policy.as_ref(),
    )?;
    let checks = &mut verdict.checks;

    // The receipt: parsed whatever the evidence said, so its claims can be shown; trusted
    // only if the evidence verified and binds the key that signed it.
    let parsed = UnverifiedReceipt::parse(&receipt_bytes);
    let mut error = verdict.error.clone();
    let mut fail = |checks: &mut trustbridge_verifier::Checks, name, detail: String| {
        checks.fail(name, detail.clone());
        error.get_or_insert(detail);
    };
    let claims = parsed.as_ref().ok().map(|p| p.claims().clone());
    match (&parsed, &verdict.verified) {
        (Err(e), _) => fail(checks, "receipt format", e.to_string()),
        (Ok(_), _) if verdict.error.is_some() => {
            fail(
                checks,
                "receipt signature",
                "not checked: the sentinel's evidence did not verify, so nothing vouches for its receipt key".into(),
            );
        }
        (Ok(p), Ok(ev)) => {
            checks.pass(
                "receipt format",
                "tagged COSE_Sign1, EdDSA, deterministic CBOR, closed claims set",
            );
            let signed = receipt_key(&bundle)
                .map_err(|e| e.to_string())
                .and_then(|key| p.clone().verify(&key).map_err(|e| e.to_string()));
            match signed {
                Err(e) => fail(checks, "receipt signature", e),
                Ok(r) => {
                    checks.pass(
                        "receipt signature",
                        format!(
                            "signed by receipt key {} that the evidence binds",
                            r.claims().issuer
                        ),
                    );
                    match check_bound(r.claims(), &bundle, ev) {
                        Err(e) => fail(checks, "receipt claims", e.to_string()),
                        Ok(()) => checks.pass(
                            "receipt claims",
                            "evidence digest, measurements and model agree with the evidence",
                        ),
                    }
                    if let Some(nonce) = &args.expect_nonce {
                        if r.claims().nonce.as_ref() == Some(&nonce.0) {
                            checks.pass("nonce", "the receipt carries the client's nonce");
                        } else {
                            fail(
                                checks,
                                "nonce",
                                format!(
                                    "the receipt carries nonce {}, not {}",
                                    r.claims()
                                        .nonce
                                        .as_ref()
                                        .map_or_else(|| "none".into(), hex::encode),
                                    hex::encode(&nonce.0)
                                ),
                            );
                        }
                    }
                    if let Some(model) = args.expect_model {
                        if r.claims().model == model.0 {
                            checks.pass("model", "the receipt names the expected model");
                        } else {
                            fail(
                                checks,
                                "model",
                                format!(
                                    "the receipt names model {}, not {}",
                                    hex::encode(r.claims().model),
                                    hex::encode(model.0)
                                ),
                            );
                        }
                    }
                    if let Some((request, response, salt)) = &plaintexts {
                        let salt: &[u8; SALT_LEN] = salt;
                        match check_digests(r.claims(), salt, request, response) {
                            Err(e) => fail(checks, "digests", e.to_string()),
                            Ok(()) => checks.pass(
                                "digests",
                                "the request and response given are the ones the receipt covers",
                            ),
                        }
                    }
                }
            }
        }
        (Ok(_), Err(_)) => {}
    }
    let verified = error.is_none();

    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = json!({
            "verified": verified,
            "error": error,
            "claims": claims.as_ref().map(claims_json),
            "attestation": {
                "platform": bundle.platform.name(),
                "issued_at": bundle.issued_at,
                "receipt_key": hex::encode(bundle.receipt_key),
                "simulated": verdict.verified.as_ref().ok().map(|e| e.simulated),
                "measurements": verdict.verified.as_ref().ok().map(measurements_json),
            },
            "checks": checks_json(&verdict.checks),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        print_checks(&mut out, &verdict.checks)?;
        if let Some(c) = &claims {
            if let serde_json::Value::Object(m) = claims_json(c) {
                for (k, v) in m {
                    if k != "measurements" && !v.is_null() {
                        writeln!(
                            out,
                            "  {k} = {}",
                            v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                        )?;
                    }
                }
            }
            print_measurements(&mut out, &c.measurements)?;
        }
        writeln!(
            out,
            "verdict: {} (receipt, {})",
            if verified { "VERIFIED" } else { "NOT VERIFIED" },
            bundle.platform
        )?;
    }
    Ok(if verified {
        Outcome::Verified
    } else {
        Outcome::NotVerified
    })
}

/// `tb-verify receipt FILE --public-key HEX` for an AIR v1 receipt.
fn run_air(args: &ReceiptArgs, bytes: &[u8]) -> Result<Outcome> {
    use trustbridge_verifier::air::{AirPolicy, verify_air};
    let Some(key) = args.public_key else {
        bail!("an AIR v1 receipt is verified with its issuer's key: pass --public-key HEX");
    };
    let now = args
        .evidence
        .at()
        .unwrap_or_else(std::time::SystemTime::now)
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let policy = AirPolicy {
        expected_nonce: args.expect_nonce.as_ref().map(|h| h.0.clone()),
        expected_model_hash: args.expect_model_hash.map(|k| k.0),
        expected_platform: args.expect_platform.clone(),
        max_age: args.max_age.map(|m| (m, now, 0)),
        allow_evaluation_mode: args.allow_evaluation_mode,
    };
    let result = verify_air(bytes, &key.0, &policy);
    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = match &result {
            Ok(c) => json!({
                "verified": true,
                "format": "air-v1",
                "code": null,
                "claims": {
                    "iss": c.iss, "iat": c.iat, "cti": hex::encode(c.cti),
                    "eat_nonce": c.eat_nonce.as_ref().map(hex::encode),
                    "eat_profile": trustbridge_verifier::air::AIR_V1_PROFILE,
                    "model_id": c.model_id, "model_version": c.model_version,
                    "model_hash": hex::encode(c.model_hash),
                    "request_hash": hex::encode(c.request_hash),
                    "response_hash": hex::encode(c.response_hash),
                    "attestation_doc_hash": hex::encode(c.attestation_doc_hash),
                    "measurement_type": c.measurement_type,
                    "measurements": c.measurements.iter().map(|(k, v)| (k.clone(), json!(hex::encode(v)))).collect::<serde_json::Map<_, _>>(),
                    "policy_version": c.policy_version, "sequence_number": c.sequence_number,
                    "execution_time_ms": c.execution_time_ms, "memory_peak_mb": c.memory_peak_mb,
                    "security_mode": c.security_mode, "model_hash_scheme": c.model_hash_scheme,
                },
            }),
            Err(f) => json!({
                "verified": false,
                "format": "air-v1",
                "code": f.code,
                "layer": f.layer,
                "check": f.check,
                "error": f.to_string(),
            }),
        };
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        match &result {
            Ok(c) => {
                writeln!(out, "[PASS] AIR v1: envelope, signature, claims and policy")?;
                writeln!(out, "  model_id = {} ({})", c.model_id, c.model_version)?;
                writeln!(out, "  model_hash = {}", hex::encode(c.model_hash))?;
                writeln!(out, "  measurement_type = {}", c.measurement_type)?;
                writeln!(out, "  sequence_number = {}", c.sequence_number)?;
                print_measurements(&mut out, &c.measurements)?;
            }
            Err(f) => writeln!(out, "[FAIL] {} (layer {}): {}", f.check, f.layer, f.code)?,
        }
        writeln!(
            out,
            "verdict: {} (AIR v1 receipt)",
            if result.is_ok() {
                "VERIFIED"
            } else {
                "NOT VERIFIED"
            }
        )?;
    }
    Ok(if result.is_ok() {
        Outcome::Verified
    } else {
        Outcome::NotVerified
    })
}

//! Reading evidence files: platform detection and encodings.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use base64::Engine;
use trustbridge_verifier::snp_report::REPORT_LEN;
use trustbridge_verifier::x509::ParsedCertificate;
use trustbridge_verifier::{MinTcb, Platform};

/// Evidence bytes in their binary form, with the platform they belong to.
pub(crate) struct Evidence {
    pub(crate) platform: Platform,
    pub(crate) bytes: Vec<u8>,
}

/// Largest evidence or certificate file read (genuine ones are a few kilobytes).
const MAX_INPUT_FILE: u64 = 1 << 20;

/// Reads at most [`MAX_INPUT_FILE`] bytes of `path`; a larger file is an error, found
/// before it is read whole.
pub(crate) fn read_capped(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_INPUT_FILE + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 > MAX_INPUT_FILE {
        bail!(
            "{} is larger than {MAX_INPUT_FILE} bytes: no evidence, certificate or revocation-list file is",
            path.display()
        );
    }
    Ok(bytes)
}

/// Reads `path` and decides the platform (unless `forced`): a Nitro document may be raw
/// CBOR or base64; an SNP report raw (1184 bytes) or hex.
pub(crate) fn read_evidence(path: &Path, forced: Option<Platform>) -> Result<Evidence> {
    let raw = read_capped(path)?;
    let text = std::str::from_utf8(&raw).ok().map(str::trim);
    let decoded_hex = text.and_then(|t| hex::decode(t).ok());
    let decoded_b64 = text.and_then(|t| {
        let t: String = t.split_whitespace().collect();
        base64::engine::general_purpose::STANDARD
            .decode(&t)
            .or_else(|_| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t.trim_end_matches('='))
            })
            .ok()
    });
    let is_cose = |b: &[u8]| matches!(b.first(), Some(0x84 | 0xd2));
    let candidates = [Some(raw.clone()), decoded_hex, decoded_b64];
    let pick = |platform: Platform| -> Option<Vec<u8>> {
        candidates
            .iter()
            .flatten()
            .find(|b| match platform {
                Platform::Nitro => is_cose(b),
                Platform::Snp => b.len() == REPORT_LEN,
                Platform::AzureSnpVtpm => b.trim_ascii_start().starts_with(b"{"),
            })
            .cloned()
    };
    if let Some(platform) = forced {
        let bytes = pick(platform).with_context(|| {
            format!("{} does not look like {platform} evidence", path.display())
        })?;
        return Ok(Evidence { platform, bytes });
    }
    for platform in [Platform::Nitro, Platform::Snp, Platform::AzureSnpVtpm] {
        if let Some(bytes) = pick(platform) {
            return Ok(Evidence { platform, bytes });
        }
    }
    bail!(
        "cannot tell the platform of {}: expected a Nitro attestation document (CBOR or base64), a 1184-byte SNP report (raw or hex) or Azure vTPM evidence (JSON); use --platform",
        path.display()
    )
}

/// Reads certificates from a PEM file (any number) or a DER file (one).
pub(crate) fn read_certificates(path: &Path) -> Result<Vec<ParsedCertificate>> {
    let bytes = read_capped(path)?;
    let certs =
        if bytes.starts_with(b"-----BEGIN") || bytes.windows(11).any(|w| w == b"-----BEGIN ") {
            ParsedCertificate::from_pem_chain(&bytes, "certificate file")
        } else {
            ParsedCertificate::from_der(&bytes, "certificate file").map(|c| vec![c])
        };
    certs.with_context(|| format!("{} holds no usable certificate", path.display()))
}

/// Parses `--at`: strict RFC 3339 (`2021-03-17T22:01:55Z`, offsets honoured) or Unix
/// seconds.
pub(crate) fn parse_time(s: &str) -> Result<SystemTime, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(UNIX_EPOCH + Duration::from_secs(secs));
    }
    trustbridge_protocol::rfc3339::parse_system_time(s)
        .map_err(|e| format!("{e} (or give Unix seconds)"))
}

/// Parses `NAME=HEX`.
pub(crate) fn parse_expectation(s: &str) -> Result<(String, Vec<u8>), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=HEX"))?;
    let value = hex::decode(value.trim()).map_err(|e| format!("{name}: value is not hex: {e}"))?;
    Ok((name.trim().to_ascii_lowercase(), value))
}

/// Bytes given as hex on the command line (a newtype, so clap takes one value, not many).
#[derive(Clone, Debug)]
pub(crate) struct HexBytes(pub(crate) Vec<u8>);

/// Parses a hex argument.
pub(crate) fn parse_hex(s: &str) -> Result<HexBytes, String> {
    hex::decode(s.trim())
        .map(HexBytes)
        .map_err(|e| format!("{s:?} is not hex: {e}"))
}

/// Parses `--platform`.
pub(crate) fn parse_platform(s: &str) -> Result<Platform, String> {
    s.parse()
        .map_err(|e: trustbridge_protocol::platform::UnknownPlatform| e.to_string())
}

/// Parses `--min-tcb`: `bl=N,tee=N,snp=N,ucode=N[,fmc=N]` (omitted components are 0).
pub(crate) fn parse_min_tcb(s: &str) -> Result<MinTcb, String> {
    let mut tcb = MinTcb::default();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let (name, value) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not NAME=N"))?;
        let value: u8 = value
            .trim()
            .parse()
            .map_err(|_| format!("{name}: {value:?} is not 0 to 255"))?;
        match name.trim() {
            "bl" | "bootloader" => tcb.bootloader = value,
            "tee" => tcb.tee = value,
            "snp" => tcb.snp = value,
            "ucode" | "microcode" => tcb.microcode = value,
            "fmc" => tcb.fmc = Some(value),
            other => {
                return Err(format!(
                    "unknown TCB component {other:?}: bl, tee, snp, ucode or fmc"
                ));
            }
        }
    }
    Ok(tcb)
}

/// A 32-byte key given as hex on the command line.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Key32(pub(crate) [u8; 32]);

/// Parses a 32-byte hex key.
pub(crate) fn parse_key32(s: &str) -> Result<Key32, String> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s.trim(), &mut out)
        .map(|()| Key32(out))
        .map_err(|_| format!("{s:?} is not 64 hex characters"))
}

/// Reads an evidence binding: deterministic CBOR, raw, hex or base64.
pub(crate) fn read_binding(path: &Path) -> Result<trustbridge_protocol::binding::EvidenceBinding> {
    use trustbridge_protocol::binding::EvidenceBinding;
    let raw = read_capped(path)?;
    let text = std::str::from_utf8(&raw).ok().map(str::trim);
    let candidates = [
        Some(raw.clone()),
        text.and_then(|t| hex::decode(t).ok()),
        text.and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok()),
    ];
    let mut last = None;
    for bytes in candidates.into_iter().flatten() {
        match EvidenceBinding::decode(&bytes) {
            Ok(b) => return Ok(b),
            Err(e) => last = Some(e),
        }
    }
    bail!(
        "{} is not an evidence binding{}",
        path.display(),
        last.map(|e| format!(": {e}")).unwrap_or_default()
    )
}

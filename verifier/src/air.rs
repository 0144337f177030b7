//! Attested Inference Receipts, AIR v1 (the EphemeralML project's published format,
//! `spec/v1` of github.com/cyntrisec/EphemeralML), verified with that format's own layered
//! checks and failure codes, so users of that system can check their receipts with
//! `tb-verify`.
//!
//! Layers, first failure wins (the specification's "verify before parse" order):
//! 1. the envelope: size (`RECEIPT_TOO_LARGE`), a tagged COSE_Sign1 in strict CBOR
//!    (`COSE_DECODE_FAILED`), an empty unprotected header (`NON_EMPTY_UNPROTECTED`), alg
//!    EdDSA (`BAD_ALG`), content type 61 (`BAD_CONTENT_TYPE`), a payload
//!    (`MISSING_PAYLOAD`);
//! 2. the signature: 64 bytes (`BAD_SIG_LENGTH`), strict Ed25519 over the COSE
//!    `Sig_structure` with the issuer's key (`SIG_FAILED`);
//! 3. the claims: a deterministic CBOR map (`PAYLOAD_NOT_MAP`, which also covers unknown
//!    and duplicate keys), the profile (`WRONG_PROFILE`), every required claim
//!    (`MISSING_CLAIM:<name>`, `WRONG_TYPE:<name>`), `BAD_CTI_LENGTH`, `ZERO_MODEL_HASH`,
//!    `BAD_HASH_LENGTH:<claim>`, `BAD_MEASUREMENT_LENGTH`, `UNKNOWN_MTYPE:<v>`,
//!    `TDX_PCR8_FORBIDDEN`, `UNKNOWN_MODEL_HASH_SCHEME:<v>`, `UNKNOWN_SECURITY_MODE:<v>`;
//! 4. the relying party's policy, each check only when asked for: freshness
//!    (`TIMESTAMP_FUTURE`, `TIMESTAMP_STALE`), `MODEL_HASH_MISMATCH`,
//!    `EVALUATION_MODE_REJECTED` (unless allowed), `PLATFORM_MISMATCH`, `NONCE_MISSING`,
//!    `NONCE_MISMATCH`.
//!
//! Where the format's two reference verifiers differ in granularity, the finer codes of
//! its Python harness are used. Unlike them, the payload must be in deterministic
//! encoding (the specification's MUST): anything else is `PAYLOAD_NOT_MAP`.

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, VerifyingKey};
use trustbridge_protocol::cbor::strict::{Key, Reader, Writer};

/// The `eat_profile` of an AIR v1 receipt.
pub const AIR_V1_PROFILE: &str = "https://spec.cyntrisec.com/air/v1";

/// Largest receipt accepted.
pub const MAX_AIR_LEN: usize = 65_536;

/// A failed check: the layer, the check's name and AIR's failure code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code} ({check}, layer {layer})")]
pub struct AirFailure {
    /// 1 to 4.
    pub layer: u8,
    /// The check, as AIR names it (`SIG`, `MHASH`, ...).
    pub check: &'static str,
    /// The failure code (`SIG_FAILED`, `NONCE_MISMATCH:...`).
    pub code: String,
}

fn fail(layer: u8, check: &'static str, code: impl Into<String>) -> AirFailure {
    AirFailure {
        layer,
        check,
        code: code.into(),
    }
}

/// The relying party's policy; `None` skips a check.
#[derive(Clone, Debug, Default)]
pub struct AirPolicy {
    /// The nonce the receipt must carry.
    pub expected_nonce: Option<Vec<u8>>,
    /// The model hash it must name.
    pub expected_model_hash: Option<[u8; 32]>,
    /// `nitro-pcr` or `tdx-mrtd-rtmr`.
    pub expected_platform: Option<String>,
    /// Freshness: at most this old, at `now` (Unix seconds), with this clock skew.
    pub max_age: Option<(u64, u64, u64)>,
    /// Accept `security_mode = "evaluation"`.
    pub allow_evaluation_mode: bool,
}

/// An AIR v1 receipt's claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AirClaims {
    /// `iss`.
    pub iss: String,
    /// `iat`.
    pub iat: u64,
    /// `cti`.
    pub cti: [u8; 16],
    /// `eat_nonce`.
    pub eat_nonce: Option<Vec<u8>>,
    /// `model_id`.
    pub model_id: String,
    /// `model_version`.
    pub model_version: String,
    /// `model_hash`.
    pub model_hash: [u8; 32],
    /// `request_hash`.
    pub request_hash: [u8; 32],
    /// `response_hash`.
    pub response_hash: [u8; 32],
    /// `attestation_doc_hash`.
    pub attestation_doc_hash: [u8; 32],
    /// `enclave_measurements`: `pcrN` values.
    pub measurements: BTreeMap<String, Vec<u8>>,
    /// `measurement_type`.
    pub measurement_type: String,
    /// `policy_version`.
    pub policy_version: String,
    /// `sequence_number`.
    pub sequence_number: u64,
    /// `execution_time_ms`.
    pub execution_time_ms: u64,
    /// `memory_peak_mb`.
    pub memory_peak_mb: u64,
    /// `security_mode`.
    pub security_mode: String,
    /// `model_hash_scheme`.
    pub model_hash_scheme: Option<String>,
}

/// Whether `bytes` look like an AIR v1 receipt, for choosing a verifier (nothing is
/// verified): not a TrustBridge envelope (whose claims, a client nonce included, could
/// hold any bytes), and naming the AIR profile.
pub fn is_air(bytes: &[u8]) -> bool {
    let profile = AIR_V1_PROFILE.as_bytes();
    !trustbridge_protocol::receipt::has_our_envelope(bytes)
        && bytes.windows(profile.len()).any(|w| w == profile)
}

/// The envelope's parts.
struct Envelope<'a> {
    protected: &'a [u8],
    payload: &'a [u8],
    signature: &'a [u8],
}

fn envelope(bytes: &[u8]) -> Result<Envelope<'_>, AirFailure> {
    let cose = |_| fail(1, "COSE_DECODE", "COSE_DECODE_FAILED");
    let mut r = Reader::new(bytes);
    if bytes.first().map(|b| b >> 5) != Some(6) || r.tag().map_err(cose)? != 18 {
        return Err(fail(1, "COSE_DECODE", "COSE_DECODE_FAILED"));
    }
    if r.array().map_err(cose)? != 4 {
        return Err(fail(1, "COSE_DECODE", "COSE_DECODE_FAILED"));
    }
    let protected = r.bytes().map_err(cose)?;
    let unprotected = r.map().map_err(cose)?;
    // Skip the unprotected entries structurally (they are refused below, once the whole
    // envelope is known to be well-formed).
    if unprotected > 0 {
        return Err(fail(1, "UNPROTECTED", "NON_EMPTY_UNPROTECTED"));
    }
    let at = r.position();
    if bytes.get(at) == Some(&0xf6) {
        return Err(fail(1, "PAYLOAD", "MISSING_PAYLOAD"));
    }
    let payload = r.bytes().map_err(cose)?;
    let signature = r.bytes().map_err(cose)?;
    r.finish().map_err(cose)?;
    Ok(Envelope {
        protected,
        payload,
        signature,
    })
}

/// The protected header: `{1: -8, 3: 61}` exactly.
fn check_protected(protected: &[u8]) -> Result<(), AirFailure> {
    let cose = |_| fail(1, "COSE_DECODE", "COSE_DECODE_FAILED");
    let mut r = Reader::new(protected);
    let n = r.map().map_err(cose)?;
    let (mut alg, mut ct) = (None, None);
    let mut previous = None;
    for _ in 0..n {
        let (key, span) = r.key_after(previous).map_err(cose)?;
        previous = Some(span);
        let value = int(&mut r).map_err(cose)?;
        match key {
            Key::Int(1) => alg = Some(value),
            Key::Int(3) => ct = Some(value),
            _ => return Err(fail(1, "COSE_DECODE", "COSE_DECODE_FAILED")),
        }
    }
    r.finish().map_err(cose)?;
    if alg != Some(-8) {
        return Err(fail(1, "ALG", "BAD_ALG"));
    }
    if ct != Some(61) {
        return Err(fail(1, "CONTENT_TYPE", "BAD_CONTENT_TYPE"));
    }
    Ok(())
}

/// An integer (unsigned or negative) item.
fn int(r: &mut Reader<'_>) -> Result<i64, trustbridge_protocol::cbor::CborError> {
    // A map key reader reads exactly one integer or text item; reuse it for values.
    match r.key_after(None)?.0 {
        Key::Int(v) => Ok(v),
        Key::Text(_) => Err(trustbridge_protocol::cbor::CborError::FieldType {
            field: "value",
            expected: "an integer",
        }),
    }
}

/// Verifies an AIR v1 receipt under `public_key` and `policy`.
pub fn verify_air(
    bytes: &[u8],
    public_key: &[u8; 32],
    policy: &AirPolicy,
) -> Result<AirClaims, AirFailure> {
    if bytes.len() > MAX_AIR_LEN {
        return Err(fail(1, "SIZE", "RECEIPT_TOO_LARGE"));
    }
    let e = envelope(bytes)?;
    check_protected(e.protected)?;
    if e.payload.is_empty() {
        return Err(fail(1, "PAYLOAD", "MISSING_PAYLOAD"));
    }
    // Layer 2: nothing of the payload is read before the signature verifies.
    let signature =
        <[u8; 64]>::try_from(e.signature).map_err(|_| fail(2, "SIG", "BAD_SIG_LENGTH"))?;
    let key = VerifyingKey::from_bytes(public_key).map_err(|_| fail(2, "SIG", "SIG_FAILED"))?;
    let mut tbs = Writer::with_capacity(e.payload.len() + 32);
    tbs.array(4)
        .text("Signature1")
        .bytes(e.protected)
        .bytes(&[])
        .bytes(e.payload);
    key.verify_strict(&tbs.into_vec(), &Signature::from_bytes(&signature))
        .map_err(|_| fail(2, "SIG", "SIG_FAILED"))?;
    let claims = claims(e.payload)?;
    check_policy(&claims, policy)?;
    Ok(claims)
}

fn check_policy(c: &AirClaims, p: &AirPolicy) -> Result<(), AirFailure> {
    if let Some((max_age, now, skew)) = p.max_age
        && max_age > 0
    {
        if c.iat > now.saturating_add(skew) {
            return Err(fail(4, "FRESH", "TIMESTAMP_FUTURE"));
        }
        if now.saturating_sub(c.iat) > max_age {
            return Err(fail(4, "FRESH", "TIMESTAMP_STALE"));
        }
    }
    if let Some(expected) = p.expected_model_hash
        && c.model_hash != expected
    {
        return Err(fail(4, "MHASH", "MODEL_HASH_MISMATCH"));
    }
    if c.security_mode == "evaluation" && !p.allow_evaluation_mode {
        return Err(fail(4, "SECURITY_MODE_POLICY", "EVALUATION_MODE_REJECTED"));
    }
    if let Some(platform) = &p.expected_platform
        && platform != "any"
        && *platform != c.measurement_type
    {
        return Err(fail(4, "PLATFORM", "PLATFORM_MISMATCH"));
    }
    if let Some(nonce) = &p.expected_nonce {
        match &c.eat_nonce {
            None => return Err(fail(4, "NONCE", "NONCE_MISSING")),
            Some(n) if n != nonce => return Err(fail(4, "NONCE", "NONCE_MISMATCH")),
            Some(_) => {}
        }
    }
    Ok(())
}

/// A claim value as read, before its rules are checked.
enum Value<'a> {
    Uint(u64),
    Text(&'a str),
    Bytes(&'a [u8]),
    Measurements(BTreeMap<String, Value<'a>>),
}

fn read_value<'a>(r: &mut Reader<'a>, depth: u8) -> Result<Value<'a>, AirFailure> {
    let not_map = |_| fail(3, "CLAIMS_DECODE", "PAYLOAD_NOT_MAP");
    let mut probe = r.clone();
    if let Ok(v) = probe.uint() {
        *r = probe;
        return Ok(Value::Uint(v));
    }
    let mut probe = r.clone();
    if let Ok(t) = probe.text() {
        *r = probe;
        return Ok(Value::Text(t));
    }
    let mut probe = r.clone();
    if let Ok(b) = probe.bytes() {
        *r = probe;
        return Ok(Value::Bytes(b));
    }
    if depth == 0 {
        let n = r.map().map_err(not_map)?;
        let mut out = BTreeMap::new();
        let mut previous = None;
        for _ in 0..n {
            let (key, span) = r.key_after(previous).map_err(not_map)?;
            previous = Some(span);
            let Key::Text(name) = key else {
                return Err(fail(3, "CLAIMS_DECODE", "PAYLOAD_NOT_MAP"));
            };
            out.insert(name.to_owned(), read_value(r, 1)?);
        }
        return Ok(Value::Measurements(out));
    }
    Err(fail(3, "CLAIMS_DECODE", "PAYLOAD_NOT_MAP"))
}

const NAMES: [(i64, &str); 18] = [
    (1, "ISS"),
    (6, "IAT"),
    (7, "CTI"),
    (10, "EAT_NONCE"),
    (265, "EAT_PROFILE"),
    (-65537, "MODEL_ID"),
    (-65538, "MODEL_VERSION"),
    (-65539, "MHASH_PRESENT"),
    (-65540, "REQUEST_HASH"),
    (-65541, "RESPONSE_HASH"),
    (-65542, "ATTESTATION_DOC_HASH"),
    (-65543, "MEAS"),
    (-65544, "POLICY_VERSION"),
    (-65545, "SEQ"),
    (-65546, "EXEC_MS"),
    (-65547, "MEM_MB"),
    (-65548, "SECURITY_MODE"),
    (-65549, "MHASH_SCHEME"),
];

fn claims(payload: &[u8]) -> Result<AirClaims, AirFailure> {
    let not_map = |_| fail(3, "CLAIMS_DECODE", "PAYLOAD_NOT_MAP");
    let mut r = Reader::new(payload);
    let n = r.map().map_err(not_map)?;
    let mut raw: BTreeMap<i64, Value<'_>> = BTreeMap::new();
    let mut previous = None;
    for _ in 0..n {
        let (key, span) = r.key_after(previous).map_err(not_map)?;
        previous = Some(span);
        let Key::Int(k) = key else {
            return Err(fail(3, "CLAIMS_DECODE", "PAYLOAD_NOT_MAP"));
        };
        if !NAMES.iter().any(|(id, _)| *id == k) {
            return Err(fail(3, "CLAIMS_DECODE", "PAYLOAD_NOT_MAP"));
        }
        raw.insert(k, read_value(&mut r, if k == -65543 { 0 } else { 1 })?);
    }
    r.finish().map_err(not_map)?;

    match raw.get(&265) {
        Some(Value::Text(p)) if *p == AIR_V1_PROFILE => {}
        _ => return Err(fail(1, "EAT_PROFILE", "WRONG_PROFILE")),
    }
    let name = |k: i64| {
        NAMES
            .iter()
            .find(|(id, _)| *id == k)
            .map_or("?", |(_, n)| n)
    };
    let get = |k: i64| {
        raw.get(&k)
            .ok_or_else(|| fail(3, name(k), format!("MISSING_CLAIM:{}", name(k))))
    };
    let wrong = |k: i64| fail(3, name(k), format!("WRONG_TYPE:{}", name(k)));
    let text = |k: i64, max: usize| -> Result<String, AirFailure> {
        match get(k)? {
            Value::Text(t) if !t.is_empty() && t.len() <= max => Ok((*t).to_owned()),
            _ => Err(wrong(k)),
        }
    };
    let uint = |k: i64| -> Result<u64, AirFailure> {
        match get(k)? {
            Value::Uint(v) => Ok(*v),
            _ => Err(wrong(k)),
        }
    };
    let hash = |k: i64, claim: &str| -> Result<[u8; 32], AirFailure> {
        match get(k)? {
            Value::Bytes(b) => <[u8; 32]>::try_from(*b)
                .map_err(|_| fail(3, name(k), format!("BAD_HASH_LENGTH:{claim}"))),
            _ => Err(wrong(k)),
        }
    };
    let iss = text(1, 256)?;
    let iat = uint(6)?;
    if iat == 0 {
        return Err(wrong(6));
    }
    let cti = match get(7)? {
        Value::Bytes(b) => <[u8; 16]>::try_from(*b)
            .ok()
            .filter(|c| c.iter().any(|x| *x != 0))
            .ok_or_else(|| fail(3, "CTI", "BAD_CTI_LENGTH"))?,
        _ => return Err(wrong(7)),
    };
    let eat_nonce = match raw.get(&10) {
        None => None,
        Some(Value::Bytes(b)) if (8..=64).contains(&b.len()) => Some(b.to_vec()),
        Some(_) => return Err(wrong(10)),
    };
    let model_id = text(-65537, 256)?;
    let model_version = text(-65538, 128)?;
    let model_hash = hash(-65539, "model_hash")?;
    if model_hash == [0; 32] {
        return Err(fail(3, "MHASH_PRESENT", "ZERO_MODEL_HASH"));
    }
    let request_hash = hash(-65540, "request_hash")?;
    let response_hash = hash(-65541, "response_hash")?;
    let attestation_doc_hash = hash(-65542, "attestation_doc_hash")?;
    let Value::Measurements(meas) = get(-65543)? else {
        return Err(wrong(-65543));
    };
    let measurement_type = match meas.get("measurement_type") {
        Some(Value::Text(t)) if *t == "nitro-pcr" || *t == "tdx-mrtd-rtmr" => (*t).to_owned(),
        Some(Value::Text(t)) => return Err(fail(3, "MTYPE", format!("UNKNOWN_MTYPE:{t}"))),
        _ => return Err(fail(3, "MTYPE", "UNKNOWN_MTYPE:<non-string>")),
    };
    let mut measurements = BTreeMap::new();
    for (k, v) in meas.iter() {
        if k == "measurement_type" {
            continue;
        }
        if !["pcr0", "pcr1", "pcr2", "pcr3", "pcr4", "pcr8"].contains(&k.as_str()) {
            return Err(fail(3, "CLAIMS_DECODE", "PAYLOAD_NOT_MAP"));
        }
        match v {
            Value::Bytes(b) if b.len() == 48 => {
                measurements.insert(k.clone(), b.to_vec());
            }
            _ => return Err(fail(3, "MEAS", "BAD_MEASUREMENT_LENGTH")),
        }
    }
    if ["pcr0", "pcr1", "pcr2"]
        .iter()
        .any(|p| !measurements.contains_key(*p))
    {
        return Err(fail(3, "MEAS", "BAD_MEASUREMENT_LENGTH"));
    }
    if measurement_type == "tdx-mrtd-rtmr" && measurements.contains_key("pcr8") {
        return Err(fail(3, "MEAS", "TDX_PCR8_FORBIDDEN"));
    }
    let policy_version = text(-65544, 256)?;
    let sequence_number = uint(-65545)?;
    let execution_time_ms = uint(-65546)?;
    let memory_peak_mb = uint(-65547)?;
    let security_mode = match get(-65548)? {
        Value::Text(t) if *t == "production" || *t == "evaluation" => (*t).to_owned(),
        Value::Text(t) => {
            return Err(fail(
                3,
                "SECURITY_MODE",
                format!("UNKNOWN_SECURITY_MODE:{t}"),
            ));
        }
        _ => return Err(wrong(-65548)),
    };
    let model_hash_scheme = match raw.get(&-65549) {
        None => None,
        Some(Value::Text(t))
            if ["sha256-single", "sha256-concat", "sha256-manifest"].contains(t) =>
        {
            Some((*t).to_owned())
        }
        Some(Value::Text(t)) => {
            return Err(fail(
                3,
                "MHASH_SCHEME",
                format!("UNKNOWN_MODEL_HASH_SCHEME:{t}"),
            ));
        }
        Some(_) => return Err(wrong(-65549)),
    };
    Ok(AirClaims {
        iss,
        iat,
        cti,
        eat_nonce,
        model_id,
        model_version,
        model_hash,
        request_hash,
        response_hash,
        attestation_doc_hash,
        measurements,
        measurement_type,
        policy_version,
        sequence_number,
        execution_time_ms,
        memory_peak_mb,
        security_mode,
        model_hash_scheme,
    })
}

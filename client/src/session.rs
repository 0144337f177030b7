//! One verified sentinel, I/O-free: requests sealed to the key configuration its evidence
//! binds, answers opened, and every receipt checked before the answer is released.
//!
//! What vouches for what:
//! - the OHTTP key configuration and the receipt key come from a bundle that
//!   [`ClientPolicy::verify_bundle`](trustbridge_verifier::client_policy::ClientPolicy::verify_bundle)
//!   accepted: the evidence (signed by the TEE's hardware key, chained to a pinned root)
//!   binds their SHA-256 and the key itself. Never the key configuration the relay serves
//!   at `GET /.well-known/ohttp-gateway`;
//! - the answer is authentic because only the holder of the bound key could decapsulate
//!   the request, and the response is encrypted under a key derived from it;
//! - the receipt is checked against that bound receipt key, the evidence digest, the
//!   measurements and the model; its salted digests against the exact request this
//!   session sent and the content it received; its nonce against the fresh one this
//!   session put in the request; its place in the sentinel's hash chain against every
//!   receipt this client has seen ([`ChainTracker`]).

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex};

use base64::Engine;
use trustbridge_protocol::KeyId;
use trustbridge_protocol::ohttp::gateway::{ClientResponse, OhttpError, PreparedRequest, prepare};
use trustbridge_protocol::receipt::{
    Receipt, ReceiptError, SALT_LEN, UnverifiedReceipt, salted_digest,
};
use trustbridge_verifier::client_policy::VerifiedBundle;
use trustbridge_verifier::receipt::{ReceiptAnchor, ReceiptCheckError, check_digest_values};

/// Inner request header: the client's nonce, which the receipt must carry.
pub const NONCE_HEADER: &str = "trustbridge-receipt-nonce";
/// Inner response header (or trailer, for a streamed answer): the receipt, base64url.
pub const RECEIPT_HEADER: &str = "trustbridge-receipt";
/// Inner response header (or trailer): the salt of the receipt's digests, hex.
pub const SALT_HEADER: &str = "trustbridge-receipt-salt";

/// Length of the nonce a session sends with each request.
pub const NONCE_BYTES: usize = 16;

/// Receipts remembered per sentinel boot for the chain checks.
pub const CHAIN_MEMORY: usize = 4096;

/// An answer that cannot be released to the caller. Each names the check that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerificationError {
    /// The request could not be encapsulated to the bound key configuration.
    #[error("encapsulation: {0}")]
    Encapsulate(OhttpError),
    /// The response does not decrypt under this request's key: altered, truncated,
    /// replayed from another request, or not from the attested sentinel.
    #[error("the response is not the attested sentinel's answer to this request: {0}")]
    Decapsulate(OhttpError),
    /// The system random number generator failed (no request nonce).
    #[error("the system random number generator failed")]
    Random,
    /// The decrypted response is not a Binary HTTP response.
    #[error("the decrypted response is not a Binary HTTP response")]
    NotBhttp,
    /// The answer carries no receipt (or no salt): an answer without its receipt is
    /// never released.
    #[error("the answer carries no {0}")]
    MissingReceipt(&'static str),
    /// The receipt or salt field is not in its encoding.
    #[error("the {0} field is not well-formed")]
    Malformed(&'static str),
    /// The receipt does not hold against the verified bundle (signature, key, evidence,
    /// measurements, model) or against what was sent and received (digests).
    #[error("receipt: {0}")]
    Receipt(#[from] ReceiptCheckError),
    /// The receipt does not carry the nonce sent with the request.
    #[error("the receipt does not carry this request's nonce")]
    Nonce,
    /// The receipt's status is not the answer's.
    #[error("the receipt states status {claimed}, the answer has {actual}")]
    Status {
        /// In the receipt.
        claimed: u16,
        /// In the answer.
        actual: u16,
    },
    /// A receipt seen before (the same boot and sequence).
    #[error("receipt {issuer}/{sequence} was seen before (a replay)")]
    Replayed {
        /// The boot's receipt key id.
        issuer: KeyId,
        /// The sequence.
        sequence: u64,
    },
    /// The receipt does not chain to a neighbour this client has seen.
    #[error("receipt {issuer}/{sequence} does not chain to receipt {neighbour} (a fork)")]
    Fork {
        /// The boot's receipt key id.
        issuer: KeyId,
        /// The sequence.
        sequence: u64,
        /// The neighbour's sequence.
        neighbour: u64,
    },
    /// Older than every receipt remembered: a replay cannot be ruled out.
    #[error("receipt {issuer}/{sequence} is older than the receipts this client remembers")]
    TooOld {
        /// The boot's receipt key id.
        issuer: KeyId,
        /// The sequence.
        sequence: u64,
    },
    /// A streamed answer was cut, reordered or altered.
    #[error("the streamed answer is incomplete or altered: {0}")]
    Stream(String),
}

impl VerificationError {
    /// The short name of the failed check (for error messages that name it).
    pub fn check(&self) -> &'static str {
        match self {
            Self::Encapsulate(_) | Self::Random => "encapsulation",
            Self::Decapsulate(_) | Self::NotBhttp | Self::Stream(_) => "response integrity",
            Self::MissingReceipt(_) | Self::Malformed(_) => "receipt presence",
            Self::Receipt(ReceiptCheckError::Digest { .. }) => "receipt digests",
            Self::Receipt(ReceiptCheckError::OtherEvidence { .. }) => "receipt evidence",
            Self::Receipt(_) => "receipt signature and claims",
            Self::Nonce => "receipt nonce",
            Self::Status { .. } => "receipt status",
            Self::Replayed { .. } | Self::Fork { .. } | Self::TooOld { .. } => "receipt chain",
        }
    }
}

/// A request to the sentinel's API. Its `Debug` shows no content (prompts stay out of
/// logs).
#[derive(Clone, Default)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path and query, e.g. `/v1/chat/completions`.
    pub path: String,
    /// Header fields to send (hop-by-hop fields are the caller's to leave out).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The content.
    pub body: Vec<u8>,
}

/// An answer whose receipt verified. Its `Debug` shows no content.
#[derive(Clone)]
pub struct VerifiedAnswer {
    /// HTTP status.
    pub status: u16,
    /// Header fields (the receipt and salt fields removed).
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// The content.
    pub body: Vec<u8>,
    /// The verified receipt.
    pub receipt: Receipt,
    /// The salt of its digests.
    pub salt: [u8; SALT_LEN],
}

/// A sealed request: the `message/ohttp-req` body and what opens its answer.
pub struct Sealed {
    /// The encapsulated request, to POST to the gateway.
    pub encapsulated: Vec<u8>,
    /// What opens the answer.
    pub pending: Pending,
}

/// What a sealed request needs to open and check its answer.
pub struct Pending {
    plain: Vec<u8>,
    nonce: [u8; NONCE_BYTES],
    response: ClientResponse,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pending({} bytes)", self.plain.len())
    }
}

/// The opened answer before its receipt is checked. Its `Debug` shows no content.
pub struct Opened {
    status: u16,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
    /// Parsed once, when the answer is opened; a receipt that does not parse fails
    /// [`Session::check`].
    receipt: Result<UnverifiedReceipt, ReceiptError>,
    salt: [u8; SALT_LEN],
    plain: Vec<u8>,
    nonce: [u8; NONCE_BYTES],
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Request({} {}, {} bytes)",
            self.method,
            self.path,
            self.body.len()
        )
    }
}

impl std::fmt::Debug for VerifiedAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VerifiedAnswer({}, {} bytes, receipt {}/{})",
            self.status,
            self.body.len(),
            self.receipt.claims().issuer,
            self.receipt.claims().sequence
        )
    }
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Opened({}, {} bytes)", self.status, self.body.len())
    }
}

impl Opened {
    /// The evidence digest the receipt claims (without verifying it), so a caller whose
    /// bundle names other evidence knows to fetch the sentinel's current bundle.
    pub fn claimed_evidence(&self) -> Option<[u8; 32]> {
        self.receipt
            .as_ref()
            .ok()
            .map(|r| r.claims().evidence_digest)
    }
}

/// One request's HPKE context (a fresh ephemeral X25519 key and its Diffie-Hellman with
/// the gateway's key) set up before the request is known, for the key configuration it
/// names. Used for one request at most, and only by a session bound to that
/// configuration ([`Session::seal_prepared`]).
pub struct Prepared {
    pub(crate) keys: Arc<[u8]>,
    pub(crate) context: PreparedRequest,
}

impl Prepared {
    /// A context for the first usable key of the `application/ohttp-keys` list `keys`.
    pub fn new(keys: Arc<[u8]>) -> Result<Self, OhttpError> {
        let context = prepare(&keys)?;
        Ok(Self { keys, context })
    }
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Prepared({} byte key configuration)", self.keys.len())
    }
}

/// A verified sentinel and the receipts seen from it.
#[derive(Debug)]
pub struct Session {
    verified: Arc<VerifiedBundle>,
    anchor: ReceiptAnchor,
    chain: Arc<ChainTracker>,
}

impl Session {
    /// A session with the sentinel of `verified`, sharing `chain` with earlier sessions
    /// (a refreshed bundle of the same sentinel continues its chain).
    pub fn new(verified: VerifiedBundle, chain: Arc<ChainTracker>) -> Self {
        Self {
            anchor: ReceiptAnchor::new(&verified.bundle),
            verified: Arc::new(verified),
            chain,
        }
    }

    /// The verified bundle.
    pub fn verified(&self) -> &VerifiedBundle {
        &self.verified
    }

    /// SHA-256 of the verified bundle's evidence (what receipts must name).
    pub fn evidence_digest(&self) -> [u8; 32] {
        self.anchor.evidence_digest()
    }

    /// Encodes `request` as Binary HTTP with a fresh receipt nonce and encapsulates it to
    /// the bound key configuration.
    pub fn seal(&self, request: &Request) -> Result<Sealed, VerificationError> {
        self.seal_prepared(request, None)
    }

    /// [`Self::seal`], with the encapsulation's HPKE context set up ahead
    /// ([`Prepared`]) when there is one for this session's bound key configuration; any
    /// other is dropped unused and a context set up now.
    pub fn seal_prepared(
        &self,
        request: &Request,
        prepared: Option<Prepared>,
    ) -> Result<Sealed, VerificationError> {
        let (plain, nonce) = encode_request(request)?;
        let keys = &self.verified.bundle.ohttp_keys;
        let context = match prepared {
            Some(p) if p.keys[..] == keys[..] => p.context,
            _ => prepare(keys).map_err(VerificationError::Encapsulate)?,
        };
        let (encapsulated, response) = context
            .encapsulate(&plain)
            .map_err(|e| VerificationError::Encapsulate(e.into()))?;
        Ok(Sealed {
            encapsulated,
            pending: Pending {
                plain,
                nonce,
                response,
            },
        })
    }

    /// Opens and checks an answer in one step ([`Pending::open`], then [`Self::check`]).
    pub fn open(
        &self,
        pending: Pending,
        encapsulated: &[u8],
    ) -> Result<VerifiedAnswer, VerificationError> {
        self.check(pending.open(encapsulated)?)
    }

    /// Checks an opened answer's receipt against this session's bundle and chain.
    pub fn check(&self, opened: Opened) -> Result<VerifiedAnswer, VerificationError> {
        let response_digest = salted_digest(&opened.salt, &opened.body);
        let receipt = self.check_parsed(
            opened.receipt.map_err(ReceiptCheckError::from)?,
            &opened.salt,
            &opened.plain,
            &opened.nonce,
            opened.status,
            response_digest,
        )?;
        Ok(VerifiedAnswer {
            status: opened.status,
            headers: opened.headers,
            body: opened.body,
            receipt,
            salt: opened.salt,
        })
    }

    /// Checks a receipt against this session's bundle, the request sent (`plain`, with
    /// `nonce`), the answer's status and the salted digest of its content, and the chain.
    pub(crate) fn check_streamed(
        &self,
        receipt: &[u8],
        salt: &[u8; SALT_LEN],
        plain: &[u8],
        nonce: &[u8; NONCE_BYTES],
        status: u16,
        response_digest: [u8; 32],
    ) -> Result<Receipt, VerificationError> {
        let receipt = UnverifiedReceipt::parse(receipt).map_err(ReceiptCheckError::from)?;
        self.check_parsed(receipt, salt, plain, nonce, status, response_digest)
    }

    /// [`Self::check_streamed`] of a receipt already parsed.
    fn check_parsed(
        &self,
        receipt: UnverifiedReceipt,
        salt: &[u8; SALT_LEN],
        plain: &[u8],
        nonce: &[u8; NONCE_BYTES],
        status: u16,
        response_digest: [u8; 32],
    ) -> Result<Receipt, VerificationError> {
        let v = &self.verified;
        let receipt = self.anchor.verify_parsed(receipt, &v.bundle, &v.evidence)?;
        let claims = receipt.claims();
        if claims.nonce.as_deref() != Some(&nonce[..]) {
            return Err(VerificationError::Nonce);
        }
        check_digest_values(claims, &salted_digest(salt, plain), &response_digest)?;
        if claims.status != status {
            return Err(VerificationError::Status {
                claimed: claims.status,
                actual: status,
            });
        }
        self.chain.record(&receipt)?;
        Ok(receipt)
    }
}

/// `request` as a Binary HTTP message with a fresh receipt nonce: the bytes and the nonce.
pub(crate) fn encode_request(
    request: &Request,
) -> Result<(Vec<u8>, [u8; NONCE_BYTES]), VerificationError> {
    let mut nonce = [0u8; NONCE_BYTES];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| VerificationError::Random)?;
    let mut m = bhttp::Message::request(
        request.method.as_bytes().to_vec(),
        b"https".to_vec(),
        b"sentinel".to_vec(),
        request.path.as_bytes().to_vec(),
    );
    for (name, value) in &request.headers {
        m.put_header(name.as_bytes(), value.as_slice());
    }
    m.put_header(NONCE_HEADER, hex::encode(nonce));
    m.write_content(&request.body);
    let mut plain = Vec::with_capacity(request.body.len() + 256);
    m.write_bhttp(bhttp::Mode::KnownLength, &mut plain)
        .map_err(|_| VerificationError::NotBhttp)?;
    Ok((plain, nonce))
}

impl Pending {
    /// Decrypts the `message/ohttp-res` body and reads the Binary HTTP response, its
    /// receipt and salt (not yet checked: see [`Session::check`]).
    pub fn open(self, encapsulated: &[u8]) -> Result<Opened, VerificationError> {
        let plain = self
            .response
            .decapsulate(encapsulated)
            .map_err(|e| VerificationError::Decapsulate(e.into()))?;
        let m = bhttp::Message::read_bhttp(&mut Cursor::new(&plain[..]))
            .map_err(|_| VerificationError::NotBhttp)?;
        let status = m
            .control()
            .status()
            .map(|s| s.code())
            .ok_or(VerificationError::NotBhttp)?;
        let mut receipt = None;
        let mut salt = None;
        let mut headers = Vec::new();
        // The receipt comes in the header of a complete answer (a trailer of a streamed
        // one); exactly one of each.
        for f in m.header().iter().chain(m.trailer().iter()) {
            let name = f.name();
            if name.eq_ignore_ascii_case(RECEIPT_HEADER.as_bytes()) {
                if receipt.replace(f.value().to_vec()).is_some() {
                    return Err(VerificationError::Malformed("trustbridge-receipt"));
                }
            } else if name.eq_ignore_ascii_case(SALT_HEADER.as_bytes()) {
                if salt.replace(f.value().to_vec()).is_some() {
                    return Err(VerificationError::Malformed("trustbridge-receipt-salt"));
                }
            } else {
                headers.push((name.to_vec(), f.value().to_vec()));
            }
        }
        let receipt = UnverifiedReceipt::parse(&decode_receipt(
            &receipt.ok_or(VerificationError::MissingReceipt("receipt"))?,
        )?);
        let salt = decode_salt(&salt.ok_or(VerificationError::MissingReceipt("receipt salt"))?)?;
        Ok(Opened {
            status,
            headers,
            body: m.content().to_vec(),
            receipt,
            salt,
            plain: self.plain,
            nonce: self.nonce,
        })
    }
}

/// The receipt field's value (base64url without padding) as bytes.
pub fn decode_receipt(value: &[u8]) -> Result<Vec<u8>, VerificationError> {
    if value.len() > trustbridge_protocol::receipt::MAX_RECEIPT_LEN * 2 {
        return Err(VerificationError::Malformed("trustbridge-receipt"));
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| VerificationError::Malformed("trustbridge-receipt"))
}

/// The salt field's value (hex) as bytes.
pub fn decode_salt(value: &[u8]) -> Result<[u8; SALT_LEN], VerificationError> {
    let mut salt = [0u8; SALT_LEN];
    hex::decode_to_slice(value, &mut salt)
        .map_err(|_| VerificationError::Malformed("trustbridge-receipt-salt"))?;
    Ok(salt)
}

/// The receipts a client has seen, per sentinel boot: no receipt twice, and neighbours
/// (sequence n and n+1) must chain. Receipts of other clients fill the gaps between a
/// client's own, so a gap is normal; a duplicate or a broken link is not. Answers to
/// concurrent requests arrive in any order, so the check is by sequence, not arrival.
#[derive(Debug, Default)]
pub struct ChainTracker {
    boots: Mutex<BTreeMap<KeyId, BTreeMap<u64, Link>>>,
}

#[derive(Clone, Copy, Debug)]
struct Link {
    previous: [u8; 32],
    digest: [u8; 32],
}

impl ChainTracker {
    /// A tracker that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a verified receipt, refusing a replay or a fork.
    pub fn record(&self, receipt: &Receipt) -> Result<(), VerificationError> {
        let c = receipt.claims();
        let (issuer, sequence) = (c.issuer, c.sequence);
        let mut boots = self.boots.lock().unwrap_or_else(|p| p.into_inner());
        let seen = boots.entry(issuer).or_default();
        if seen.contains_key(&sequence) {
            return Err(VerificationError::Replayed { issuer, sequence });
        }
        if seen.len() >= CHAIN_MEMORY && seen.keys().next().is_some_and(|low| sequence < *low) {
            return Err(VerificationError::TooOld { issuer, sequence });
        }
        let fork = |neighbour| VerificationError::Fork {
            issuer,
            sequence,
            neighbour,
        };
        if let Some(before) = sequence.checked_sub(1).and_then(|s| seen.get(&s))
            && before.digest != c.previous
        {
            return Err(fork(sequence - 1));
        }
        if let Some(after) = sequence.checked_add(1).and_then(|s| seen.get(&s))
            && after.previous != receipt.digest()
        {
            return Err(fork(sequence + 1));
        }
        seen.insert(
            sequence,
            Link {
                previous: c.previous,
                digest: receipt.digest(),
            },
        );
        while seen.len() > CHAIN_MEMORY {
            seen.pop_first();
        }
        Ok(())
    }

    /// How many receipts are remembered.
    pub fn len(&self) -> usize {
        let boots = self.boots.lock().unwrap_or_else(|p| p.into_inner());
        boots.values().map(BTreeMap::len).sum()
    }

    /// Whether nothing was seen.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ed25519_dalek::SigningKey;
    use trustbridge_protocol::receipt::{Claims, GENESIS, receipt_key_id};

    /// A chain of `n` receipts of one boot.
    fn chain(key: &SigningKey, n: u64) -> Vec<Receipt> {
        let mut previous = GENESIS;
        (0..n)
            .map(|sequence| {
                let r = Receipt::sign(
                    Claims {
                        issuer: receipt_key_id(&key.verifying_key().to_bytes()),
                        issued_at: 1_700_000_000,
                        id: [sequence as u8; 16],
                        nonce: None,
                        sequence,
                        previous,
                        model: [1; 32],
                        request_digest: [2; 32],
                        response_digest: [3; 32],
                        evidence_digest: [4; 32],
                        measurements: BTreeMap::new(),
                        policy_digest: [5; 32],
                        status: 200,
                        usage: None,
                    },
                    key,
                )
                .unwrap();
                previous = r.digest();
                r
            })
            .collect()
    }

    #[test]
    fn receipts_in_any_order_with_gaps_are_accepted() {
        let r = chain(&SigningKey::from_bytes(&[7; 32]), 6);
        let t = ChainTracker::new();
        for i in [3, 1, 2, 5, 0] {
            t.record(&r[i]).unwrap();
        }
        assert_eq!(t.len(), 5);
    }

    #[test]
    fn a_replayed_receipt_is_refused() {
        let r = chain(&SigningKey::from_bytes(&[7; 32]), 2);
        let t = ChainTracker::new();
        t.record(&r[1]).unwrap();
        assert!(matches!(
            t.record(&r[1]),
            Err(VerificationError::Replayed { sequence: 1, .. })
        ));
    }

    #[test]
    fn a_fork_is_refused_from_either_side() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let honest = chain(&key, 3);
        // Another history of the same boot: sequence 1 and 2 signed over other content.
        let mut other = chain(&key, 1);
        let forked = {
            let mut c = honest[1].claims().clone();
            c.previous = [9; 32];
            Receipt::sign(c, &key).unwrap()
        };
        other.push(forked);
        let t = ChainTracker::new();
        t.record(&honest[0]).unwrap();
        assert!(matches!(
            t.record(&other[1]),
            Err(VerificationError::Fork { neighbour: 0, .. })
        ));
        let t = ChainTracker::new();
        t.record(&honest[2]).unwrap();
        let mut c = honest[1].claims().clone();
        c.id = [0xee; 16];
        let sibling = Receipt::sign(c, &key).unwrap();
        assert!(matches!(
            t.record(&sibling),
            Err(VerificationError::Fork { neighbour: 2, .. })
        ));
        t.record(&honest[1]).unwrap();
    }

    #[test]
    fn debug_output_shows_no_prompt() {
        let r = Request {
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            headers: vec![],
            body: b"the secret prompt".to_vec(),
        };
        let shown = format!("{r:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("17 bytes"), "{shown}");
    }

    #[test]
    fn receipt_fields_are_decoded_strictly() {
        assert!(decode_salt(b"00").is_err());
        assert_eq!(decode_salt("ab".repeat(32).as_bytes()).unwrap(), [0xab; 32]);
        assert!(decode_receipt(b"not base64url!").is_err());
        assert!(decode_receipt(&vec![b'A'; 20_000]).is_err());
    }
}

//! The receipt claims set: its fields, and its one deterministic encoding.

use std::collections::BTreeMap;

use crate::KeyId;
use crate::cbor::strict::{Key, MapWriter, Reader, Writer};

use super::{
    EAT_PROFILE, MAX_MEASUREMENT_NAME, MAX_MEASUREMENT_VALUE, MAX_MEASUREMENTS, ReceiptError,
};

// CWT and EAT claim keys (RFC 8392, RFC 9711).
const ISS: i64 = 1;
const IAT: i64 = 6;
const CTI: i64 = 7;
const EAT_NONCE: i64 = 10;
const EAT_PROFILE_KEY: i64 = 265;

/// Shortest and longest client nonce (EAT `eat_nonce`).
pub const NONCE_LEN: std::ops::RangeInclusive<usize> = 8..=64;

/// Token counts the handler reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Tokens of the prompt.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
}

/// What a receipt states (see the module documentation of [`super`] for the schema).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// `iss`: the id of the receipt key that signs.
    pub issuer: KeyId,
    /// `iat`: seconds since the Unix epoch.
    pub issued_at: u64,
    /// `cti`: a unique id.
    pub id: [u8; 16],
    /// `eat_nonce`: the client's nonce, when it sent one (8 to 64 bytes).
    pub nonce: Option<Vec<u8>>,
    /// Position in this boot's chain, from 0.
    pub sequence: u64,
    /// Digest of the previous receipt of this boot ([`super::GENESIS`] for the first).
    pub previous: [u8; 32],
    /// SHA-256 of the served model's `manifest.cose`.
    pub model: [u8; 32],
    /// Salted SHA-256 of the decapsulated request.
    pub request_digest: [u8; 32],
    /// Salted SHA-256 of the response content as delivered (every chunk).
    pub response_digest: [u8; 32],
    /// SHA-256 of the evidence the sentinel's attestation bundle carries.
    pub evidence_digest: [u8; 32],
    /// The measurements the evidence reports, by name.
    pub measurements: BTreeMap<String, Vec<u8>>,
    /// SHA-256 of the policy under which the model key was released.
    pub policy_digest: [u8; 32],
    /// HTTP status of the answer.
    pub status: u16,
    /// Token counts, when the handler reports them.
    pub usage: Option<Usage>,
}

impl Claims {
    /// Checks the claims' own rules (sizes, ranges) before they are signed.
    pub fn check(&self) -> Result<(), ReceiptError> {
        if let Some(n) = &self.nonce
            && !NONCE_LEN.contains(&n.len())
        {
            return Err(ReceiptError::ClaimType {
                claim: "eat_nonce",
                expected: "8 to 64 bytes",
            });
        }
        if !(100..=599).contains(&self.status) {
            return Err(ReceiptError::ClaimType {
                claim: "status",
                expected: "an HTTP status (100 to 599)",
            });
        }
        if self.measurements.len() > MAX_MEASUREMENTS
            || self.measurements.iter().any(|(k, v)| {
                k.is_empty() || k.len() > MAX_MEASUREMENT_NAME || v.len() > MAX_MEASUREMENT_VALUE
            })
        {
            return Err(ReceiptError::ClaimType {
                claim: "measurements",
                expected: "at most 64 names of 1 to 64 bytes, values of at most 64 bytes",
            });
        }
        Ok(())
    }

    /// The deterministic CBOR encoding of the claims set.
    pub fn encode(&self) -> Result<Vec<u8>, ReceiptError> {
        self.check()?;
        let measured: usize = self
            .measurements
            .iter()
            .map(|(name, value)| name.len() + value.len() + 4)
            .sum();
        // The rest of the claims, keys and heads included, take at most 470 bytes.
        let size = 480 + measured + self.nonce.as_ref().map_or(0, Vec::len);
        let mut map = MapWriter::with_capacity(15, size);
        map.entry(
            |k| {
                k.int(ISS);
            },
            |v| {
                v.text(&self.issuer.to_string());
            },
        )
        .entry(
            |k| {
                k.int(IAT);
            },
            |v| {
                v.uint(self.issued_at);
            },
        )
        .entry(
            |k| {
                k.int(CTI);
            },
            |v| {
                v.bytes(&self.id);
            },
        )
        .entry(
            |k| {
                k.int(EAT_PROFILE_KEY);
            },
            |v| {
                v.text(EAT_PROFILE);
            },
        );
        let digests = [
            ("evidence_digest", &self.evidence_digest),
            ("model", &self.model),
            ("policy_digest", &self.policy_digest),
            ("previous", &self.previous),
            ("request_digest", &self.request_digest),
            ("response_digest", &self.response_digest),
        ];
        for (name, digest) in digests {
            map.entry(
                |k| {
                    k.text(name);
                },
                |v| {
                    v.bytes(digest);
                },
            );
        }
        map.entry(
            |k| {
                k.text("measurements");
            },
            |v| {
                let mut m = MapWriter::with_capacity(self.measurements.len(), measured);
                for (name, value) in &self.measurements {
                    m.entry(
                        |k| {
                            k.text(name);
                        },
                        |v| {
                            v.bytes(value);
                        },
                    );
                }
                m.finish(v);
            },
        )
        .entry(
            |k| {
                k.text("sequence");
            },
            |v| {
                v.uint(self.sequence);
            },
        )
        .entry(
            |k| {
                k.text("status");
            },
            |v| {
                v.uint(u64::from(self.status));
            },
        );
        if let Some(n) = &self.nonce {
            map.entry(
                |k| {
                    k.int(EAT_NONCE);
                },
                |v| {
                    v.bytes(n);
                },
            );
        }
        if let Some(u) = &self.usage {
            map.entry(
                |k| {
                    k.text("usage");
                },
                |v| {
                    let mut m = MapWriter::with_capacity(2, 40);
                    m.entry(
                        |k| {
                            k.text("completion_tokens");
                        },
                        |v| {
                            v.uint(u.completion_tokens);
                        },
                    )
                    .entry(
                        |k| {
                            k.text("prompt_tokens");
                        },
                        |v| {
                            v.uint(u.prompt_tokens);
                        },
                    );
                    m.finish(v);
                },
            );
        }
        let mut w = Writer::with_capacity(size + 8);
        map.finish(&mut w);
        Ok(w.into_vec())
    }

    /// Decodes a claims set, which must be in its deterministic encoding, carry every
    /// required claim and no claim this profile does not define.
    pub fn decode(bytes: &[u8]) -> Result<Self, ReceiptError> {
        let mut r = Reader::new(bytes);
        let n = r.map()?;
        let mut b = Builder::default();
        let mut previous_key = None;
        for _ in 0..n {
            let (key, span) = r.key_after(previous_key)?;
            previous_key = Some(span);
            b.read(key, &mut r)?;
        }
        r.finish()?;
        let claims = b.build()?;
        claims.check()?;
        Ok(claims)
    }
}

fn array<const N: usize>(
    b: &[u8],
    claim: &'static str,
    expected: &'static str,
) -> Result<[u8; N], ReceiptError> {
    b.try_into()
        .map_err(|_| ReceiptError::ClaimType { claim, expected })
}

fn digest(r: &mut Reader<'_>, claim: &'static str) -> Result<[u8; 32], ReceiptError> {
    array(r.bytes()?, claim, "32 bytes")
}

/// The claims as they are read, before the required ones are known to be present.
#[derive(Default)]
struct Builder {
    issuer: Option<KeyId>,
    issued_at: Option<u64>,
    id: Option<[u8; 16]>,
    nonce: Option<Vec<u8>>,
    profile: bool,
    sequence: Option<u64>,
    previous: Option<[u8; 32]>,
    model: Option<[u8; 32]>,
    request_digest: Option<[u8; 32]>,
    response_digest: Option<[u8; 32]>,
    evidence_digest: Option<[u8; 32]>,
    measurements: Option<BTreeMap<String, Vec<u8>>>,
    policy_digest: Option<[u8; 32]>,
    status: Option<u16>,
    usage: Option<Usage>,
}

impl Builder {
    fn read(&mut self, key: Key<'_>, r: &mut Reader<'_>) -> Result<(), ReceiptError> {
        match key {
            Key::Int(ISS) => {
                let text = r.text()?;
                let id: KeyId = text.parse().map_err(|_| ReceiptError::ClaimType {
                    claim: "iss",
                    expected: "a key id (16 lowercase hex characters)",
                })?;
                if id.to_string() != text {
                    return Err(ReceiptError::ClaimType {
                        claim: "iss",
                        expected: "a key id (16 lowercase hex characters)",
                    });
                }
                self.issuer = Some(id);
            }
            Key::Int(IAT) => self.issued_at = Some(r.uint()?),
            Key::Int(CTI) => self.id = Some(array(r.bytes()?, "cti", "16 bytes")?),
            Key::Int(EAT_NONCE) => self.nonce = Some(r.bytes()?.to_vec()),
            Key::Int(EAT_PROFILE_KEY) => {
                let p = r.text()?;
                if p != EAT_PROFILE {
                    return Err(ReceiptError::Profile(p.to_owned()));
                }
                self.profile = true;
            }
            Key::Text("evidence_digest") => {
                self.evidence_digest = Some(digest(r, "evidence_digest")?)
            }
            Key::Text("measurements") => self.measurements = Some(read_measurements(r)?),
            Key::Text("model") => self.model = Some(digest(r, "model")?),
            Key::Text("policy_digest") => self.policy_digest = Some(digest(r, "policy_digest")?),
            Key::Text("previous") => self.previous = Some(digest(r, "previous")?),
            Key::Text("request_digest") => self.request_digest = Some(digest(r, "request_digest")?),
            Key::Text("response_digest") => {
                self.response_digest = Some(digest(r, "response_digest")?)
            }
            Key::Text("sequence") => self.sequence = Some(r.uint()?),
            Key::Text("status") => {
                self.status =
                    Some(
                        u16::try_from(r.uint()?).map_err(|_| ReceiptError::ClaimType {
                            claim: "status",
                            expected: "an HTTP status (100 to 599)",
                        })?,
                    );
            }
            Key::Text("usage") => self.usage = Some(read_usage(r)?),
            Key::Int(k) => return Err(ReceiptError::UnknownClaim(k.to_string())),
            Key::Text(k) => return Err(ReceiptError::UnknownClaim(format!("{k:?}"))),
        }
        Ok(())
    }

    fn build(self) -> Result<Claims, ReceiptError> {
        use ReceiptError::MissingClaim as M;
        if !self.profile {
            return Err(M("eat_profile"));
        }
        Ok(Claims {
            issuer: self.issuer.ok_or(M("iss"))?,
            issued_at: self.issued_at.ok_or(M("iat"))?,
            id: self.id.ok_or(M("cti"))?,
            nonce: self.nonce,
            sequence: self.sequence.ok_or(M("sequence"))?,
            previous: self.previous.ok_or(M("previous"))?,
            model: self.model.ok_or(M("model"))?,
            request_digest: self.request_digest.ok_or(M("request_digest"))?,
            response_digest: self.response_digest.ok_or(M("response_digest"))?,
            evidence_digest: self.evidence_digest.ok_or(M("evidence_digest"))?,
            measurements: self.measurements.ok_or(M("measurements"))?,
            policy_digest: self.policy_digest.ok_or(M("policy_digest"))?,
            status: self.status.ok_or(M("status"))?,
            usage: self.usage,
        })
    }
}

fn read_measurements(r: &mut Reader<'_>) -> Result<BTreeMap<String, Vec<u8>>, ReceiptError> {
    let n = r.map()?;
    if n > MAX_MEASUREMENTS {
        return Err(ReceiptError::ClaimType {
            claim: "measurements",
            expected: "at most 64 entries",
        });
    }
    let mut out = BTreeMap::new();
    let mut previous = None;
    for _ in 0..n {
        let (key, span) = r.key_after(previous)?;
        previous = Some(span);
        let Key::Text(name) = key else {
            return Err(ReceiptError::ClaimType {
                claim: "measurements",
                expected: "a map of text names to byte strings",
            });
        };
        out.insert(name.to_owned(), r.bytes()?.to_vec());
    }
    Ok(out)
}

fn read_usage(r: &mut Reader<'_>) -> Result<Usage, ReceiptError> {
    let bad = ReceiptError::ClaimType {
        claim: "usage",
        expected: "{prompt_tokens: uint, completion_tokens: uint}",
    };
    if r.map()? != 2 {
        return Err(bad);
    }
    let (mut prompt, mut completion) = (None, None);
    let mut previous = None;
    for _ in 0..2 {
        let (key, span) = r.key_after(previous)?;
        previous = Some(span);
        match key {
            Key::Text("prompt_tokens") => prompt = Some(r.uint()?),
            Key::Text("completion_tokens") => completion = Some(r.uint()?),
            _ => return Err(bad),
        }
    }
    // Two ascending keys are two different keys: both are present.
    match (prompt, completion) {
        (Some(prompt_tokens), Some(completion_tokens)) => Ok(Usage {
            prompt_tokens,
            completion_tokens,
        }),
        _ => Err(bad),
    }
}

//! The typed values of the key-release messages: nonces and the broker's identity key.
//! Both travel as hex in JSON and are checked when parsed (a broker key must be an
//! Ed25519 public key, so a mistyped pin fails when it is read, not at the first answer).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 32-byte value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadHex32 {
    /// Not 64 hex characters.
    #[error("{what} must be 64 hex characters (32 bytes)")]
    NotHex {
        /// What was being parsed.
        what: &'static str,
    },
    /// 32 bytes that are no Ed25519 public key.
    #[error("{what} is not an Ed25519 public key")]
    NotAKey {
        /// What was being parsed.
        what: &'static str,
    },
}

/// The system random number generator failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomFailed;

/// 32 bytes from 64 hex characters (surrounding whitespace, as from a file or an
/// environment variable, is ignored).
pub(crate) fn parse32(s: &str, what: &'static str) -> Result<[u8; 32], BadHex32> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s.trim(), &mut out).map_err(|_| BadHex32::NotHex { what })?;
    Ok(out)
}

/// Any 32 bytes.
fn any_bytes(bytes: [u8; 32], _: &'static str) -> Result<[u8; 32], BadHex32> {
    Ok(bytes)
}

/// 32 bytes that decompress to an Ed25519 point.
fn ed25519_key(bytes: [u8; 32], what: &'static str) -> Result<[u8; 32], BadHex32> {
    ed25519_dalek::VerifyingKey::from_bytes(&bytes)
        .map(|_| bytes)
        .map_err(|_| BadHex32::NotAKey { what })
}

macro_rules! hex32 {
    ($name:ident, $what:literal, $check:path) => {
        impl $name {
            /// The value from its bytes.
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// The bytes.
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }

        impl FromStr for $name {
            type Err = BadHex32;
            fn from_str(s: &str) -> Result<Self, BadHex32> {
                parse32(s, $what).and_then(|b| $check(b, $what)).map(Self)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A single-use 32-byte nonce: the broker's challenge, or the client's nonce that makes
/// the broker's signed challenge answer fresh.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nonce([u8; 32]);
hex32!(Nonce, "a nonce", any_bytes);

impl Nonce {
    /// A fresh nonce from the system CSPRNG.
    pub fn random() -> Result<Self, RandomFailed> {
        let mut n = [0u8; 32];
        aws_lc_rs::rand::fill(&mut n).map_err(|_| RandomFailed)?;
        Ok(Self(n))
    }
}

/// The key broker's Ed25519 identity public key: what sentinels and providers pin
/// (`--kms-key`, `TB_KMS_KEY`), and what signs every broker answer.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BrokerKey([u8; 32]);
hex32!(BrokerKey, "a broker identity key", ed25519_key);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_strict_parsing() {
        let k = BrokerKey::from_bytes(
            ed25519_dalek::SigningKey::from_bytes(&[7; 32])
                .verifying_key()
                .to_bytes(),
        );
        assert_eq!(k.to_string().parse::<BrokerKey>(), Ok(k));
        assert_eq!(
            serde_json::from_str::<BrokerKey>(&serde_json::to_string(&k).unwrap()).unwrap(),
            k
        );
        for bad in ["", "ab", &"zz".repeat(32), &"ab".repeat(33)] {
            assert!(bad.parse::<BrokerKey>().is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<Nonce>("\"00\"").is_err());
        // 32 bytes, but no point on the curve (y = 2 has no x).
        let mut not_a_point = [0u8; 32];
        not_a_point[0] = 2;
        assert_eq!(
            hex::encode(not_a_point).parse::<BrokerKey>(),
            Err(BadHex32::NotAKey {
                what: "a broker identity key"
            })
        );
        assert_ne!(Nonce::random().unwrap(), Nonce::random().unwrap());
    }
}

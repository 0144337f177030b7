//! Short public identifiers of keys.

use std::fmt;
use std::str::FromStr;

/// An 8-byte public identifier of a key, shown as 16 lowercase hex characters.
///
/// A key id is derived from a key by a one-way function and reveals nothing about it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A string that is not 16 hex characters.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a key id is 16 hex characters")]
pub struct KeyIdParseError;

impl FromStr for KeyId {
    type Err = KeyIdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut id = [0u8; 8];
        hex::decode_to_slice(s, &mut id).map_err(|_| KeyIdParseError)?;
        Ok(Self(id))
    }
}

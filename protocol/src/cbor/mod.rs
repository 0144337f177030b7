//! Deterministic CBOR (RFC 8949 §4.2.1 core deterministic encoding).
//!
//! Every signed TrustBridge structure (manifests, receipts, evidence bindings) is encoded
//! with [`to_canonical_vec`] and decoded with [`from_canonical_slice`], which re-encodes what
//! it parsed and rejects the input unless the bytes are identical. A signed object therefore
//! has exactly one valid encoding: no indefinite lengths, no non-minimal integers, map keys
//! sorted by their encoded bytes, no duplicate keys, no trailing bytes. Floats and tags are
//! not used by any TrustBridge format and are rejected.

pub mod strict;

use ciborium::Value;

/// Why a CBOR item was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CborError {
    /// The bytes are not well-formed CBOR.
    #[error("malformed CBOR: {0}")]
    Malformed(String),
    /// Bytes follow the single top-level item.
    #[error("{0} trailing bytes after the CBOR item")]
    TrailingBytes(usize),
    /// The item is valid CBOR but not in deterministic encoding.
    #[error("CBOR is not in deterministic encoding")]
    NotCanonical,
    /// A map has the same key twice.
    #[error("CBOR map has a duplicate key")]
    DuplicateKey,
    /// A float or tag was found; TrustBridge formats use neither.
    #[error("CBOR {0} is not allowed in TrustBridge formats")]
    Disallowed(&'static str),
    /// A map field is missing.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A map field has the wrong type or an out-of-range value.
    #[error("field `{field}` must be {expected}")]
    FieldType {
        /// The field name.
        field: &'static str,
        /// What the field must be.
        expected: &'static str,
    },
    /// A map has a field this format version does not define.
    #[error("unknown field `{0}`")]
    UnknownField(String),
}

/// Encodes `value` deterministically (maps sorted, shortest integer forms).
pub fn to_canonical_vec(value: &Value) -> Result<Vec<u8>, CborError> {
    let sorted = canonicalize(value)?;
    let mut out = Vec::new();
    ciborium::into_writer(&sorted, &mut out).map_err(|e| CborError::Malformed(e.to_string()))?;
    Ok(out)
}

/// Decodes one CBOR item and checks that `bytes` is its deterministic encoding.
pub fn from_canonical_slice(bytes: &[u8]) -> Result<Value, CborError> {
    let mut rest = bytes;
    let value: Value =
        ciborium::from_reader(&mut rest).map_err(|e| CborError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CborError::TrailingBytes(rest.len()));
    }
    if to_canonical_vec(&value)? != bytes {
        return Err(CborError::NotCanonical);
    }
    Ok(value)
}

fn canonicalize(value: &Value) -> Result<Value, CborError> {
    Ok(match value {
        Value::Float(_) => return Err(CborError::Disallowed("float")),
        Value::Tag(..) => return Err(CborError::Disallowed("tag")),
        Value::Array(items) => {
            Value::Array(items.iter().map(canonicalize).collect::<Result<_, _>>()?)
        }
        Value::Map(entries) => {
            let mut keyed = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                let k = canonicalize(k)?;
                let mut encoded_key = Vec::new();
                ciborium::into_writer(&k, &mut encoded_key)
                    .map_err(|e| CborError::Malformed(e.to_string()))?;
                keyed.push((encoded_key, k, canonicalize(v)?));
            }
            keyed.sort_by(|a, b| a.0.cmp(&b.0));
            if keyed.windows(2).any(|w| w[0].0 == w[1].0) {
                return Err(CborError::DuplicateKey);
            }
            Value::Map(keyed.into_iter().map(|(_, k, v)| (k, v)).collect())
        }
        other => other.clone(),
    })
}

/// Reads the fields of a CBOR map with text keys, strictly: every field must be taken
/// exactly once and [`MapReader::finish`] rejects fields that were not taken.
#[derive(Debug)]
pub struct MapReader {
    entries: Vec<(String, Value)>,
}

impl MapReader {
    /// Wraps a decoded value that must be a map with text keys.
    pub fn new(value: Value, what: &'static str) -> Result<Self, CborError> {
        let Value::Map(entries) = value else {
            return Err(CborError::FieldType {
                field: what,
                expected: "a map",
            });
        };
        let entries = entries
            .into_iter()
            .map(|(k, v)| match k {
                Value::Text(k) => Ok((k, v)),
                _ => Err(CborError::FieldType {
                    field: what,
                    expected: "a map with text keys",
                }),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { entries })
    }

    /// Removes and returns field `name`.
    pub fn take(&mut self, name: &'static str) -> Result<Value, CborError> {
        let pos = self
            .entries
            .iter()
            .position(|(k, _)| k == name)
            .ok_or(CborError::MissingField(name))?;
        Ok(self.entries.swap_remove(pos).1)
    }

    /// Takes a text field.
    pub fn text(&mut self, name: &'static str) -> Result<String, CborError> {
        match self.take(name)? {
            Value::Text(s) => Ok(s),
            _ => Err(CborError::FieldType {
                field: name,
                expected: "a text string",
            }),
        }
    }

    /// Takes a byte-string field.
    pub fn bytes(&mut self, name: &'static str) -> Result<Vec<u8>, CborError> {
        match self.take(name)? {
            Value::Bytes(b) => Ok(b),
            _ => Err(CborError::FieldType {
                field: name,
                expected: "a byte string",
            }),
        }
    }

    /// Takes a byte-string field of exactly `N` bytes.
    pub fn byte_array<const N: usize>(&mut self, name: &'static str) -> Result<[u8; N], CborError> {
        self.bytes(name)?
            .try_into()
            .map_err(|_| CborError::FieldType {
                field: name,
                expected: "a byte string of the fixed length",
            })
    }

    /// Takes an optional byte-string field of exactly `N` bytes (absent: `None`; a null
    /// value is not absence and is rejected, so each value has one encoding).
    pub fn optional_byte_array<const N: usize>(
        &mut self,
        name: &'static str,
    ) -> Result<Option<[u8; N]>, CborError> {
        if !self.entries.iter().any(|(k, _)| k == name) {
            return Ok(None);
        }
        self.byte_array(name).map(Some)
    }

    /// Takes an unsigned-integer field that fits in a `u64`.
    pub fn u64(&mut self, name: &'static str) -> Result<u64, CborError> {
        match self.take(name)? {
            Value::Integer(i) => u64::try_from(i128::from(i)).map_err(|_| CborError::FieldType {
                field: name,
                expected: "an unsigned 64-bit integer",
            }),
            _ => Err(CborError::FieldType {
                field: name,
                expected: "an unsigned integer",
            }),
        }
    }

    /// Takes an array field.
    pub fn array(&mut self, name: &'static str) -> Result<Vec<Value>, CborError> {
        match self.take(name)? {
            Value::Array(a) => Ok(a),
            _ => Err(CborError::FieldType {
                field: name,
                expected: "an array",
            }),
        }
    }

    /// Fails if any field was not taken.
    pub fn finish(self) -> Result<(), CborError> {
        match self.entries.into_iter().next() {
            Some((k, _)) => Err(CborError::UnknownField(k)),
            None => Ok(()),
        }
    }
}

/// Builds a text-keyed CBOR map from `(key, value)` pairs.
pub fn text_map<const N: usize>(fields: [(&str, Value); N]) -> Value {
    Value::Map(
        fields
            .into_iter()
            .map(|(k, v)| (Value::Text(k.to_owned()), v))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_map_keys_by_encoded_bytes() {
        let v = text_map([
            ("bb", Value::from(1)),
            ("a", Value::from(2)),
            ("c", Value::from(3)),
        ]);
        let bytes = to_canonical_vec(&v).unwrap();
        // {"a": 2, "c": 3, "bb": 1}: shorter keys first, then bytewise.
        assert_eq!(hex::encode(&bytes), "a361610261630362626201");
        assert_eq!(from_canonical_slice(&bytes).unwrap(), to_value_sorted(&v));
    }

    fn to_value_sorted(v: &Value) -> Value {
        canonicalize(v).unwrap()
    }

    #[test]
    fn rejects_non_canonical_encodings() {
        // Unsorted map {"b": 1, "a": 2}.
        assert_eq!(
            from_canonical_slice(&hex::decode("a2616201616102").unwrap()),
            Err(CborError::NotCanonical)
        );
        // Non-minimal integer 1 encoded on two bytes.
        assert_eq!(
            from_canonical_slice(&hex::decode("1801").unwrap()),
            Err(CborError::NotCanonical)
        );
        // Indefinite-length byte string.
        assert_eq!(
            from_canonical_slice(&hex::decode("5f4101ff").unwrap()),
            Err(CborError::NotCanonical)
        );
        // Duplicate key.
        assert_eq!(
            from_canonical_slice(&hex::decode("a2616101616102").unwrap()),
            Err(CborError::DuplicateKey)
        );
        // Trailing byte.
        assert_eq!(
            from_canonical_slice(&hex::decode("0100").unwrap()),
            Err(CborError::TrailingBytes(1))
        );
        // Float.
        assert_eq!(
            from_canonical_slice(&hex::decode("f93c00").unwrap()),
            Err(CborError::Disallowed("float"))
        );
    }

    #[test]
    fn map_reader_is_strict() {
        let v = text_map([("n", Value::from(7)), ("extra", Value::Null)]);
        let mut r = MapReader::new(v, "test").unwrap();
        assert_eq!(r.u64("n").unwrap(), 7);
        assert_eq!(r.finish(), Err(CborError::UnknownField("extra".into())));
        let mut r = MapReader::new(text_map([("n", Value::from(-1))]), "test").unwrap();
        assert!(matches!(r.u64("n"), Err(CborError::FieldType { .. })));
        assert_eq!(
            MapReader::new(text_map([]), "t").unwrap().text("x"),
            Err(CborError::MissingField("x"))
        );
    }
}

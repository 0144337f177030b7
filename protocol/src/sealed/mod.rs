//! Sealed weights: Tink's `AES256_GCM_HKDF` streaming AEAD, byte-compatible with Tink.
//!
//! Each model file is sealed as one stream under the model's [`DataKey`]. A stream starts
//! with a header carrying a random salt and nonce prefix; the per-stream segment key is
//! HKDF-SHA256(data key, salt, associated data), and every segment is AES-256-GCM with a
//! nonce made of the prefix, the segment number and a last-segment flag. Truncation,
//! extension, reordering, cross-file swaps and wrong associated data are all detected, and
//! one data key can seal any number of streams safely (each gets its own derived key).
//!
//! Three ways to use it:
//! - [`StreamEncryptor`] / [`encrypt_stream`]: seal from a reader or by `write`.
//! - [`decrypt_stream`]: reader in, writer out; segments are released only once verified.
//! - [`decrypt_in_memory`]: all cores, one output buffer, returned only when every segment
//!   verified.
//! - [`SegmentOpener`]: one segment at a time, in place, for receivers that place each
//!   segment where its plaintext belongs as it arrives.
//!
//! See `docs/SEALED-WEIGHTS.md` for the exact byte layout.

mod aead;
mod data_key;
mod decrypt;
mod encrypt;
mod error;
mod layout;
mod opener;
mod parallel;
mod segment_cipher;

pub use aead::{AeadError, Aes256Gcm, NONCE_LEN};
pub use data_key::{DataKey, DataKeyError};
pub use decrypt::decrypt_stream;
pub use encrypt::{StreamEncryptor, encrypt_stream, encrypt_to_vec};
pub use error::StreamError;
pub use layout::{
    DEFAULT_SEGMENT_SIZE, HEADER_LEN, KEY_LEN, MAX_SEGMENT_SIZE, MAX_SEGMENTS, MIN_SEGMENT_SIZE,
    NONCE_PREFIX_LEN, SALT_LEN, SegmentSize, SegmentSpan, StreamLayout, TAG_LEN,
};
pub use opener::SegmentOpener;
pub use parallel::{decrypt_in_memory, decrypt_into, decrypt_owned, default_threads};

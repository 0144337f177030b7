//! Verifying many receipts at once (an auditor reading a receipt log).

use ed25519_dalek::VerifyingKey;

use super::{Receipt, ReceiptError, UnverifiedReceipt};

/// Receipts verified together in one batch equation; larger inputs are split.
const BATCH: usize = 256;

/// Verifies each receipt under its key: every issuer must be its key's id, and the
/// signatures are checked together with Ed25519 batch verification (one multiscalar
/// multiplication per [`BATCH`] receipts, with random coefficients derived from every
/// input). When a batch fails, its receipts are verified one by one, so the error names
/// the first bad receipt and its index.
///
/// A weak (small-order) key is refused, as [`UnverifiedReceipt::verify`] refuses it.
pub fn verify_batch(
    receipts: Vec<(UnverifiedReceipt, VerifyingKey)>,
) -> Result<Vec<Receipt>, (usize, ReceiptError)> {
    for (i, (r, k)) in receipts.iter().enumerate() {
        r.check_issuer(k).map_err(|e| (i, e))?;
        if k.is_weak() {
            return Err((i, ReceiptError::BadSignature(r.claims().issuer.to_string())));
        }
    }
    let total = receipts.len();
    let mut out = Vec::with_capacity(total);
    let mut receipts = receipts.into_iter();
    let mut start = 0;
    while start < total {
        let chunk: Vec<(UnverifiedReceipt, VerifyingKey)> = receipts.by_ref().take(BATCH).collect();
        let messages: Vec<&[u8]> = chunk.iter().map(|(r, _)| r.signed_message()).collect();
        let signatures: Vec<_> = chunk.iter().map(|(r, _)| *r.signature()).collect();
        let keys: Vec<VerifyingKey> = chunk.iter().map(|(_, k)| *k).collect();
        let n = chunk.len();
        if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
            out.extend(chunk.into_iter().map(|(r, _)| r.verified()));
        } else {
            for (j, (r, k)) in chunk.into_iter().enumerate() {
                out.push(r.verify(&k).map_err(|e| (start + j, e))?);
            }
        }
        start += n;
    }
    Ok(out)
}

//! Replay refusal: each encapsulated request is answered once.
//!
//! The relay could otherwise send a captured request again and again: every copy would
//! cost the engine its work, yield a genuine receipt carrying the client's nonce (work
//! charged to the client), and, with sampling, another trace of the same prompt. An
//! Oblivious HTTP request starts with its key identifiers and the HPKE encapsulated key
//! (`enc`), fresh for every request (RFC 9458 §4.3); the gateway remembers the `enc` of
//! the requests it decapsulated and refuses one it has seen. It remembers the most recent
//! [`CAPACITY`] of them (8 MiB of `enc`s, about 41 MiB with their index, reserved at
//! start): a replay must wait for that many newer requests, far more than a request's
//! lifetime at the gateway's concurrency.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

/// Requests remembered.
pub const CAPACITY: usize = 1 << 18;

/// Bytes before `enc` in a request: key id (1), KEM (2), KDF (2), AEAD (2).
const HEADER: usize = 7;
/// X25519's `enc`.
const ENC: usize = 32;

/// The `enc` of the requests seen, oldest first.
#[derive(Debug)]
pub struct ReplayGuard {
    seen: Mutex<Seen>,
}

#[derive(Debug)]
struct Seen {
    set: HashSet<[u8; ENC]>,
    order: VecDeque<[u8; ENC]>,
}

impl Default for ReplayGuard {
    /// A guard with room for [`CAPACITY`] requests from the start (about 41 MiB of
    /// address space, its pages taken as they fill): a table that grew as requests came
    /// would stop every request, under its lock, each time it doubled (milliseconds, near
    /// the end). The index has room for twice that, so it stays at most half full and
    /// the slots that removals leave marked are reclaimed in place, never by growing.
    fn default() -> Self {
        Self {
            seen: Mutex::new(Seen {
                set: HashSet::with_capacity(2 * (CAPACITY + 1)),
                order: VecDeque::with_capacity(CAPACITY + 1),
            }),
        }
    }
}

impl ReplayGuard {
    /// The `enc` of an encapsulated request (its first bytes suffice), if it has one.
    pub fn enc_of(encapsulated: &[u8]) -> Option<[u8; ENC]> {
        encapsulated.get(HEADER..HEADER + ENC)?.try_into().ok()
    }

    /// Records `enc`; false when it was seen before (a replay).
    pub fn first_time(&self, enc: [u8; ENC]) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if !seen.set.insert(enc) {
            return false;
        }
        seen.order.push_back(enc);
        if seen.order.len() > CAPACITY
            && let Some(old) = seen.order.pop_front()
        {
            seen.set.remove(&old);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_request_is_answered_once() {
        let guard = ReplayGuard::default();
        let mut request = vec![1, 0, 0x20, 0, 1, 0, 1];
        request.extend([7u8; 32]);
        request.extend(b"ciphertext");
        let enc = ReplayGuard::enc_of(&request).unwrap();
        assert_eq!(enc, [7u8; 32]);
        assert!(guard.first_time(enc));
        assert!(!guard.first_time(enc));
        assert!(guard.first_time([8u8; 32]));
        assert!(ReplayGuard::enc_of(&request[..38]).is_none());
    }

    #[test]
    fn the_oldest_are_forgotten_beyond_the_capacity() {
        let guard = ReplayGuard::default();
        let enc = |i: usize| {
            let mut e = [0u8; 32];
            e[..8].copy_from_slice(&(i as u64).to_le_bytes());
            e
        };
        for i in 0..=CAPACITY {
            assert!(guard.first_time(enc(i)));
        }
        assert!(guard.first_time(enc(0)), "forgotten");
        assert!(!guard.first_time(enc(CAPACITY)), "remembered");
    }
}

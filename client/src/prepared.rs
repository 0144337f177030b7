//! Encapsulations set up ahead of requests.
//!
//! Most of what Oblivious HTTP costs a client per request is HPKE's setup: a fresh
//! ephemeral X25519 key and its Diffie-Hellman with the gateway's key (two scalar
//! multiplications, about 35 µs here). Neither depends on the request, only on the key
//! configuration, so a thread of the client's own ([`Ahead`]: it tops the pool up by
//! itself while requests come and sleeps when they stop) keeps a few [`Prepared`]
//! contexts ready for the current session's bound configuration, and a request pays only
//! for the AEAD. A request that finds none ready sets one up itself, as before.
//!
//! Each context is used once (the `ohttp` crate's type is consumed by the encapsulation)
//! and is for the configuration it was set up for: when the session's bound configuration
//! changes, the thread for the old one is stopped and its contexts dropped, and
//! [`Session::seal_prepared`](crate::session::Session::seal_prepared) refuses any
//! context for another configuration anyway.

use std::sync::{Arc, Mutex};

use trustbridge_protocol::ahead::Ahead;

use crate::session::Prepared;

/// Contexts ready for one key configuration, kept topped up by a thread.
struct Pool {
    keys: Arc<[u8]>,
    /// `None` when no thread could be started: every request sets up its own.
    ahead: Option<Ahead<Prepared>>,
}

/// Keeps up to `depth` contexts ready for the key configuration last asked for.
pub(crate) struct Preparer {
    depth: usize,
    pool: Mutex<Option<Pool>>,
}

impl std::fmt::Debug for Preparer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Preparer(depth {})", self.depth)
    }
}

impl Preparer {
    /// A preparer that keeps `depth` contexts ready (0: none, every request sets its own
    /// up).
    pub(crate) fn new(depth: usize) -> Self {
        Self {
            depth,
            pool: Mutex::new(None),
        }
    }

    /// A context set up ahead for `keys`, if one is ready. Starts keeping contexts ready
    /// for `keys` (stopping the thread for any other configuration) when it is not
    /// already doing so.
    pub(crate) fn take(&self, keys: &[u8]) -> Option<Prepared> {
        if self.depth == 0 {
            return None;
        }
        let mut pool = self.pool.lock().ok()?;
        if let Some(p) = pool.as_ref().filter(|p| p.keys[..] == *keys) {
            return p.ahead.as_ref()?.take();
        }
        // A new configuration (or the first): dropping the old pool stops its thread and
        // drops its contexts. For a configuration the `ohttp` crate refuses, the thread
        // tries again every second ([`trustbridge_protocol::ahead::RETRY`]); each request
        // sets up its own context meanwhile and reports the error.
        let keys: Arc<[u8]> = Arc::from(keys);
        let for_thread = keys.clone();
        let ahead = Ahead::start("tb-ohttp-prepare", self.depth, move || {
            Prepared::new(for_thread.clone()).ok()
        });
        *pool = Some(Pool { keys, ahead });
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code
    use super::*;
    use std::time::{Duration, Instant};
    use trustbridge_protocol::ohttp::gateway::GatewayKey;

    fn wait_for(preparer: &Preparer, keys: &[u8]) -> Prepared {
        let start = Instant::now();
        loop {
            if let Some(p) = preparer.take(keys) {
                return p;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "nothing prepared"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn contexts_are_prepared_for_the_configuration_asked_for_and_used_once() {
        let a = GatewayKey::derive(&[1; 32]).unwrap();
        let b = GatewayKey::derive(&[2; 32]).unwrap();
        let preparer = Preparer::new(2);
        // The first request finds none ready: it starts the thread.
        assert!(preparer.take(a.keys()).is_none());
        let p = wait_for(&preparer, a.keys());
        // A prepared context seals a request that the gateway of its configuration (and
        // no other) opens.
        let (req, _) = p.context.encapsulate(b"hello").unwrap();
        assert_eq!(a.decapsulate(&req).unwrap().0, b"hello");
        assert!(b.decapsulate(&req).is_err());
        // Every context has its own ephemeral key.
        let (x, _) = wait_for(&preparer, a.keys())
            .context
            .encapsulate(b"x")
            .unwrap();
        let (y, _) = wait_for(&preparer, a.keys())
            .context
            .encapsulate(b"x")
            .unwrap();
        assert_ne!(x[7..39], y[7..39]);
        // Another configuration: nothing of the first is handed out for it.
        assert!(preparer.take(b.keys()).is_none());
        let p = wait_for(&preparer, b.keys());
        assert_eq!(&p.keys[..], b.keys());
        let (req, _) = p.context.encapsulate(b"to b").unwrap();
        assert_eq!(b.decapsulate(&req).unwrap().0, b"to b");
    }

    #[test]
    fn depth_zero_prepares_nothing() {
        let a = GatewayKey::derive(&[1; 32]).unwrap();
        let preparer = Preparer::new(0);
        assert!(preparer.take(a.keys()).is_none());
        std::thread::sleep(Duration::from_millis(20));
        assert!(preparer.take(a.keys()).is_none());
    }
}

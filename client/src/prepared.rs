//! Encapsulations set up ahead of requests.
//!
//! Most of what Oblivious HTTP costs a client per request is HPKE's setup: a fresh
//! ephemeral X25519 key and its Diffie-Hellman with the gateway's key (two scalar
//! multiplications, about 35 µs here). Neither depends on the request, only on the key
//! configuration, so a thread of the client's own keeps a few [`Prepared`] contexts ready
//! for the current session's bound configuration, and a request pays only for the AEAD.
//! A request that finds none ready sets one up itself, as before.
//!
//! Each context is used once (the `ohttp` crate's type is consumed by the encapsulation)
//! and is for the configuration it was set up for: when the session's bound configuration
//! changes, the thread for the old one is stopped and its contexts dropped, and
//! [`Session::seal_prepared`](crate::session::Session::seal_prepared) refuses any
//! context for another configuration anyway.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::session::Prepared;

/// Contexts ready for one key configuration, kept topped up by a thread.
struct Pool {
    keys: Arc<[u8]>,
    shared: Arc<Shared>,
}

/// What the pool and its thread share.
struct Shared {
    state: Mutex<State>,
    /// Wakes the thread: the pool fell to its low mark, or was dropped.
    wake: Condvar,
}

struct State {
    ready: VecDeque<Prepared>,
    stopped: bool,
}

impl Shared {
    fn lock(&self) -> Option<MutexGuard<'_, State>> {
        self.state.lock().ok()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Some(mut state) = self.shared.lock() {
            state.stopped = true;
            state.ready.clear();
        }
        self.shared.wake.notify_one();
    }
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
    /// up). The thread sleeps until half of them are used, then tops them up in one go:
    /// one wake-up per `depth / 2` requests rather than one each.
    pub(crate) fn new(depth: usize) -> Self {
        Self {
            depth: depth.min(MAX_DEPTH),
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
            let mut state = p.shared.lock()?;
            let prepared = state.ready.pop_front();
            // Crossing the low mark wakes the thread (once, not on every request).
            if prepared.is_some() && state.ready.len() == low_mark(self.depth) {
                p.shared.wake.notify_one();
            }
            return prepared;
        }
        // A new configuration (or the first): dropping the old pool stops its thread and
        // drops its contexts.
        *pool = start(Arc::from(keys), self.depth);
        None
    }
}

/// Most contexts kept ready (a larger depth asked for is this one): a few hundred bytes
/// each, and more than a burst of requests needs.
pub(crate) const MAX_DEPTH: usize = 64;

/// The number of ready contexts at which the thread tops them up.
fn low_mark(depth: usize) -> usize {
    depth / 2
}

/// A thread that keeps `depth` contexts for `keys` ready until the pool is dropped, or
/// `None` when no thread can be started (every request then sets up its own).
fn start(keys: Arc<[u8]>, depth: usize) -> Option<Pool> {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            ready: VecDeque::with_capacity(depth),
            stopped: false,
        }),
        wake: Condvar::new(),
    });
    let (for_thread, shared_for_thread) = (keys.clone(), shared.clone());
    std::thread::Builder::new()
        .name("tb-ohttp-prepare".into())
        .spawn(move || fill(&for_thread, &shared_for_thread, depth))
        .ok()?;
    Some(Pool { keys, shared })
}

/// Tops the pool up to `depth` contexts for `keys` whenever it is at its low mark or
/// below, until the pool is dropped. A configuration the `ohttp` crate refuses ends the
/// thread: each request then sets up its own context and reports the error.
fn fill(keys: &Arc<[u8]>, shared: &Shared, depth: usize) {
    loop {
        let Some(mut state) = shared.lock() else {
            return;
        };
        while !state.stopped && state.ready.len() > low_mark(depth) {
            let Ok(woken) = shared.wake.wait(state) else {
                return;
            };
            state = woken;
        }
        if state.stopped {
            return;
        }
        let missing = depth - state.ready.len();
        drop(state);
        // Set up apart, handed over under one lock: the requests that take contexts
        // meanwhile (half the pool is still ready) never wait for this thread.
        let mut made = Vec::with_capacity(missing);
        for _ in 0..missing {
            let Ok(prepared) = Prepared::new(keys.clone()) else {
                return;
            };
            made.push(prepared);
        }
        let Some(mut state) = shared.lock() else {
            return;
        };
        if state.stopped {
            return;
        }
        state.ready.extend(made);
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

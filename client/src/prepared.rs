//! Encapsulations set up ahead of requests.
//!
//! Most of what Oblivious HTTP costs a client per request is HPKE's setup: a fresh
//! ephemeral X25519 key and its Diffie-Hellman with the gateway's key (two scalar
//! multiplications, about 35 µs here). Neither depends on the request, only on the key
//! configuration, so a thread of the client's own keeps a few [`Prepared`] contexts ready
//! for the current session's bound configuration, and a request pays only for the AEAD.
//! A request that finds none ready sets one up itself, as before.
//!
//! Waking a sleeping thread costs the waker a cross-CPU interrupt (about 25 µs on a
//! virtual machine), so a steady request path does not do it: while requests come, the
//! thread wakes by itself every [`TICK`] (a thousand times a second, on its own core) and
//! tops the pool up. Only after [`IDLE_TICKS`] ticks without a request does it sleep
//! until woken; then the request that leaves the pool at its low mark wakes it (once per
//! idle spell). A burst that takes the last context also wakes it, at once.
//!
//! Each context is used once (the `ohttp` crate's type is consumed by the encapsulation)
//! and is for the configuration it was set up for: when the session's bound configuration
//! changes, the thread for the old one is stopped and its contexts dropped, and
//! [`Session::seal_prepared`](crate::session::Session::seal_prepared) refuses any
//! context for another configuration anyway.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::session::Prepared;

/// How often the thread tops the pool up while requests come.
pub(crate) const TICK: Duration = Duration::from_millis(1);

/// Ticks without a request after which the thread sleeps until a request wakes it.
pub(crate) const IDLE_TICKS: u32 = 100;

/// Contexts ready for one key configuration, kept topped up by a thread.
struct Pool {
    keys: Arc<[u8]>,
    shared: Arc<Shared>,
}

/// What the pool and its thread share.
struct Shared {
    state: Mutex<State>,
    /// Wakes the thread: it sleeps and the pool fell to its low mark, or the pool ran
    /// dry, or was dropped.
    wake: Condvar,
}

struct State {
    ready: VecDeque<Prepared>,
    stopped: bool,
    /// The thread sleeps until woken (no request for [`IDLE_TICKS`] ticks); otherwise
    /// it wakes by itself every [`TICK`].
    asleep: bool,
    /// Wake-ups asked of the thread by requests (for the tests).
    wakes: u64,
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
    /// Ticks without a request before the thread sleeps ([`IDLE_TICKS`]).
    idle_ticks: u32,
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
            depth: depth.min(MAX_DEPTH),
            idle_ticks: IDLE_TICKS,
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
            // A thread that tops up by itself is left alone unless the pool ran dry (a
            // burst faster than its ticks); a sleeping one is woken at the low mark.
            let left = state.ready.len();
            if (state.asleep && left <= low_mark(self.depth)) || (prepared.is_some() && left == 0) {
                state.asleep = false;
                state.wakes += 1;
                p.shared.wake.notify_one();
            }
            return prepared;
        }
        // A new configuration (or the first): dropping the old pool stops its thread and
        // drops its contexts.
        *pool = start(Arc::from(keys), self.depth, self.idle_ticks);
        None
    }

    /// A preparer whose thread sleeps after `idle_ticks` ticks without a request (for the
    /// tests: timing on a loaded machine must not decide when it sleeps).
    #[cfg(test)]
    fn with_idle_ticks(depth: usize, idle_ticks: u32) -> Self {
        Self {
            idle_ticks,
            ..Self::new(depth)
        }
    }

    /// `f` of the current pool's state (for the tests): wake-ups asked, contexts ready.
    #[cfg(test)]
    fn inspect<T: Default>(&self, f: impl FnOnce(&State) -> T) -> T {
        let pool = self
            .pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pool.as_ref()
            .and_then(|p| p.shared.lock().map(|s| f(&s)))
            .unwrap_or_default()
    }
}

/// Most contexts kept ready (a larger depth asked for is this one): a few hundred bytes
/// each, and more than a burst of requests needs.
pub(crate) const MAX_DEPTH: usize = 64;

/// The number of ready contexts at which a request wakes a sleeping thread.
fn low_mark(depth: usize) -> usize {
    depth / 2
}

/// A thread that keeps `depth` contexts for `keys` ready until the pool is dropped, or
/// `None` when no thread can be started (every request then sets up its own).
fn start(keys: Arc<[u8]>, depth: usize, idle_ticks: u32) -> Option<Pool> {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            ready: VecDeque::with_capacity(depth),
            stopped: false,
            asleep: false,
            wakes: 0,
        }),
        wake: Condvar::new(),
    });
    let (for_thread, shared_for_thread) = (keys.clone(), shared.clone());
    std::thread::Builder::new()
        .name("tb-ohttp-prepare".into())
        .spawn(move || fill(&for_thread, &shared_for_thread, depth, idle_ticks))
        .ok()?;
    Some(Pool { keys, shared })
}

/// Tops the pool up to `depth` contexts for `keys` every [`TICK`] while requests take
/// them, and sleeps until woken after `idle_limit` ticks without one, until the pool is
/// dropped. A configuration the `ohttp` crate refuses ends the thread: each request then
/// sets up its own context and reports the error.
fn fill(keys: &Arc<[u8]>, shared: &Shared, depth: usize, idle_limit: u32) {
    let mut idle_ticks = 0;
    loop {
        let Some(mut state) = shared.lock() else {
            return;
        };
        while !state.stopped && state.ready.len() == depth {
            if idle_ticks >= idle_limit {
                state.asleep = true;
                while !state.stopped && state.asleep {
                    let Ok(woken) = shared.wake.wait(state) else {
                        return;
                    };
                    state = woken;
                }
                idle_ticks = 0;
                continue;
            }
            let Ok((woken, _)) = shared.wake.wait_timeout(state, TICK) else {
                return;
            };
            state = woken;
            idle_ticks = if state.ready.len() == depth {
                idle_ticks.saturating_add(1)
            } else {
                0
            };
        }
        if state.stopped {
            return;
        }
        let missing = depth - state.ready.len();
        drop(state);
        // Set up apart, handed over under one lock: the requests that take contexts
        // meanwhile never wait for this thread.
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

    /// Waits until `f` holds of the preparer's state.
    fn until(preparer: &Preparer, what: &str, f: impl Fn(&State) -> bool) {
        let start = Instant::now();
        while !preparer.inspect(|s| f(s)) {
            assert!(start.elapsed() < Duration::from_secs(10), "never {what}");
            std::thread::sleep(TICK);
        }
    }

    #[test]
    fn requests_never_wake_a_thread_that_tops_up_by_itself() {
        let a = GatewayKey::derive(&[3; 32]).unwrap();
        // A thread that never sleeps, however slowly this test runs.
        let preparer = Preparer::with_idle_ticks(8, u32::MAX);
        assert!(preparer.take(a.keys()).is_none());
        until(&preparer, "full", |s| s.ready.len() == 8);
        let before = preparer.inspect(|s| s.wakes);
        // Seven of eight taken, past the low mark: the thread, which wakes by itself every
        // tick, is not woken (waking it at the low mark cost a wake-up per four requests).
        for _ in 0..7 {
            assert!(preparer.take(a.keys()).is_some());
        }
        assert_eq!(preparer.inspect(|s| s.wakes), before);
        // And it tops the pool up by itself.
        until(&preparer, "topped up", |s| s.ready.len() == 8);
        assert_eq!(preparer.inspect(|s| s.wakes), before);
        // A burst that empties the pool wakes it at once.
        while preparer.take(a.keys()).is_some() {}
        assert!(preparer.inspect(|s| s.wakes) > before);
        until(&preparer, "topped up after the burst", |s| {
            s.ready.len() == 8
        });
    }

    #[test]
    fn an_idle_thread_sleeps_and_the_low_mark_wakes_it() {
        let a = GatewayKey::derive(&[4; 32]).unwrap();
        let preparer = Preparer::with_idle_ticks(4, 20);
        assert!(preparer.take(a.keys()).is_none());
        until(&preparer, "full", |s| s.ready.len() == 4);
        // No request for the idle spell: the thread sleeps until woken.
        until(&preparer, "asleep", |s| s.asleep);
        let before = preparer.inspect(|s| s.wakes);
        // Two taken of four: the low mark wakes it once, and it fills the pool again.
        assert!(preparer.take(a.keys()).is_some());
        assert_eq!(preparer.inspect(|s| s.wakes), before);
        assert!(preparer.take(a.keys()).is_some());
        assert_eq!(preparer.inspect(|s| s.wakes), before + 1);
        until(&preparer, "topped up", |s| s.ready.len() == 4);
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

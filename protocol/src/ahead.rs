//! Values made ahead of need, by a thread of their own.
//!
//! Some of a request's cryptography does not depend on the request: a client's HPKE
//! context for the gateway's key configuration (an ephemeral X25519 key and its
//! Diffie-Hellman), a sentinel's next receipt-signing nonce (`[r]B`). An [`Ahead`] keeps a
//! few such values ready, made by a thread of its own, so a request takes one and pays
//! only for what depends on it. A request that finds none ready makes its own.
//!
//! Waking a sleeping thread costs the waker a cross-CPU interrupt (about 25 µs on a
//! virtual machine), so a steady request path does not do it: while values are taken, the
//! thread wakes by itself every [`TICK`] (a thousand times a second, on its own core) and
//! tops the pool up. Only after [`IDLE_TICKS`] ticks without a take does it sleep until
//! woken; then the take that leaves the pool at its low mark wakes it (once per idle
//! spell). A burst that takes the last value also wakes it, at once.
//!
//! Each value is handed out once, and the values still ready when the [`Ahead`] is
//! dropped are dropped with it (their thread stops).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How often the thread tops the pool up while values are taken.
pub const TICK: Duration = Duration::from_millis(1);

/// Ticks without a take after which the thread sleeps until a take wakes it.
pub const IDLE_TICKS: u32 = 100;

/// How long the thread waits before trying again after `make` failed.
pub const RETRY: Duration = Duration::from_secs(1);

/// Most values kept ready (a larger depth asked for is this one): more than a burst of
/// requests needs.
pub const MAX_DEPTH: usize = 64;

/// What the pool and its thread share.
struct Shared<T> {
    state: Mutex<State<T>>,
    /// Wakes the thread: it sleeps and the pool fell to its low mark, or the pool ran
    /// dry, or was dropped.
    wake: Condvar,
}

/// The pool's state.
struct State<T> {
    ready: VecDeque<T>,
    stopped: bool,
    /// The thread sleeps until woken (no take for its idle ticks); otherwise it wakes by
    /// itself every [`TICK`].
    asleep: bool,
    /// Wake-ups asked of the thread by takes (for the tests).
    wakes: u64,
    /// Values handed out.
    taken: u64,
    /// Times `make` failed.
    failures: u64,
}

impl<T> Shared<T> {
    fn lock(&self) -> Option<MutexGuard<'_, State<T>>> {
        self.state.lock().ok()
    }
}

/// Up to `depth` values kept ready by a thread, until dropped.
pub struct Ahead<T> {
    depth: usize,
    shared: Arc<Shared<T>>,
}

impl<T> std::fmt::Debug for Ahead<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ahead(depth {})", self.depth)
    }
}

impl<T: Send + 'static> Ahead<T> {
    /// A thread named `name` that keeps `depth` values (at most [`MAX_DEPTH`]) made by
    /// `make` ready, sleeping after [`IDLE_TICKS`] ticks without a take. `None` when
    /// `depth` is 0 or no thread can be started: every request then makes its own. When
    /// `make` fails (returns `None`) the thread tries again after [`RETRY`]; meanwhile
    /// requests make their own and meet the failure themselves.
    pub fn start(
        name: &str,
        depth: usize,
        make: impl FnMut() -> Option<T> + Send + 'static,
    ) -> Option<Self> {
        Self::start_with_idle_ticks(name, depth, IDLE_TICKS, make)
    }

    /// [`Ahead::start`] with a thread that sleeps after `idle_ticks` ticks without a take
    /// (tests: timing on a loaded machine must not decide when it sleeps).
    pub fn start_with_idle_ticks(
        name: &str,
        depth: usize,
        idle_ticks: u32,
        make: impl FnMut() -> Option<T> + Send + 'static,
    ) -> Option<Self> {
        let depth = depth.min(MAX_DEPTH);
        if depth == 0 {
            return None;
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                ready: VecDeque::with_capacity(depth),
                stopped: false,
                asleep: false,
                wakes: 0,
                taken: 0,
                failures: 0,
            }),
            wake: Condvar::new(),
        });
        let for_thread = shared.clone();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || fill(&for_thread, depth, idle_ticks, make))
            .ok()?;
        Some(Self { depth, shared })
    }

    /// A value made ahead, if one is ready.
    pub fn take(&self) -> Option<T> {
        let mut state = self.shared.lock()?;
        let value = state.ready.pop_front();
        state.taken += u64::from(value.is_some());
        // A thread that tops up by itself is left alone unless the pool ran dry (a burst
        // faster than its ticks); a sleeping one is woken at the low mark.
        let left = state.ready.len();
        if (state.asleep && left <= low_mark(self.depth)) || (value.is_some() && left == 0) {
            state.asleep = false;
            state.wakes += 1;
            self.shared.wake.notify_one();
        }
        value
    }

    /// Values ready now.
    pub fn ready(&self) -> usize {
        self.shared.lock().map_or(0, |s| s.ready.len())
    }

    /// Whether the thread sleeps until a take wakes it.
    pub fn asleep(&self) -> bool {
        self.shared.lock().is_some_and(|s| s.asleep)
    }

    /// Values handed out so far.
    pub fn taken(&self) -> u64 {
        self.shared.lock().map_or(0, |s| s.taken)
    }

    /// Times `make` failed so far (the thread tries again after [`RETRY`]).
    pub fn failures(&self) -> u64 {
        self.shared.lock().map_or(0, |s| s.failures)
    }

    /// Wake-ups takes have asked of the thread so far.
    pub fn wakes(&self) -> u64 {
        self.shared.lock().map_or(0, |s| s.wakes)
    }
}

impl<T> Drop for Ahead<T> {
    fn drop(&mut self) {
        if let Some(mut state) = self.shared.lock() {
            state.stopped = true;
            state.ready.clear();
        }
        self.shared.wake.notify_one();
    }
}

/// The number of ready values at which a take wakes a sleeping thread.
fn low_mark(depth: usize) -> usize {
    depth / 2
}

/// Tops the pool up to `depth` values every [`TICK`] while they are taken, and sleeps
/// until woken after `idle_limit` ticks without a take, until the pool is dropped; waits
/// [`RETRY`] after `make` fails.
fn fill<T>(shared: &Shared<T>, depth: usize, idle_limit: u32, mut make: impl FnMut() -> Option<T>) {
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
        // Made apart, handed over under one lock: the takes meanwhile never wait for this
        // thread.
        let mut made = Vec::with_capacity(missing);
        let mut failed = false;
        for _ in 0..missing {
            match make() {
                Some(value) => made.push(value),
                None => {
                    failed = true;
                    break;
                }
            }
        }
        let Some(mut state) = shared.lock() else {
            return;
        };
        if state.stopped {
            return;
        }
        state.ready.extend(made);
        if failed {
            state.failures += 1;
            // Woken early only to stop.
            let Ok((state, _)) = shared.wake.wait_timeout_while(state, RETRY, |s| !s.stopped)
            else {
                return;
            };
            if state.stopped {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;

    /// A pool of distinct numbers, and how many were made.
    fn numbers(depth: usize, idle_ticks: u32) -> (Ahead<u64>, Arc<AtomicU64>) {
        let made = Arc::new(AtomicU64::new(0));
        let counter = made.clone();
        let ahead = Ahead::start_with_idle_ticks("test-ahead", depth, idle_ticks, move || {
            Some(counter.fetch_add(1, Ordering::SeqCst))
        })
        .unwrap();
        (ahead, made)
    }

    /// Waits until `f` holds of the pool.
    fn until<T: Send + 'static>(ahead: &Ahead<T>, what: &str, f: impl Fn(&Ahead<T>) -> bool) {
        let start = Instant::now();
        while !f(ahead) {
            assert!(start.elapsed() < Duration::from_secs(10), "never {what}");
            std::thread::sleep(TICK);
        }
    }

    #[test]
    fn every_value_is_handed_out_once() {
        let (ahead, _) = numbers(4, u32::MAX);
        let mut seen = std::collections::BTreeSet::new();
        let start = Instant::now();
        while seen.len() < 50 {
            if let Some(n) = ahead.take() {
                assert!(seen.insert(n), "{n} handed out twice");
                assert_eq!(ahead.taken(), seen.len() as u64);
            }
            assert!(start.elapsed() < Duration::from_secs(10), "too slow");
        }
    }

    #[test]
    fn takes_never_wake_a_thread_that_tops_up_by_itself() {
        // A thread that never sleeps, however slowly this test runs.
        let (ahead, _) = numbers(8, u32::MAX);
        until(&ahead, "full", |a| a.ready() == 8);
        let before = ahead.wakes();
        // Seven of eight taken, past the low mark: the thread, which wakes by itself every
        // tick, is not woken (waking it at the low mark cost a wake-up per four takes).
        for _ in 0..7 {
            assert!(ahead.take().is_some());
        }
        assert_eq!(ahead.wakes(), before);
        // And it tops the pool up by itself.
        until(&ahead, "topped up", |a| a.ready() == 8);
        assert_eq!(ahead.wakes(), before);
        // A burst that empties the pool wakes it at once.
        while ahead.take().is_some() {}
        assert!(ahead.wakes() > before);
        until(&ahead, "topped up after the burst", |a| a.ready() == 8);
    }

    #[test]
    fn an_idle_thread_sleeps_and_the_low_mark_wakes_it() {
        let (ahead, _) = numbers(4, 20);
        until(&ahead, "full", |a| a.ready() == 4);
        // No take for the idle spell: the thread sleeps until woken.
        until(&ahead, "asleep", Ahead::asleep);
        let before = ahead.wakes();
        // Two taken of four: the low mark wakes it once, and it fills the pool again.
        assert!(ahead.take().is_some());
        assert_eq!(ahead.wakes(), before);
        assert!(ahead.take().is_some());
        assert_eq!(ahead.wakes(), before + 1);
        until(&ahead, "topped up", |a| a.ready() == 4);
    }

    #[test]
    fn a_dropped_pool_stops_its_thread() {
        let (ahead, made) = numbers(2, u32::MAX);
        until(&ahead, "full", |a| a.ready() == 2);
        drop(ahead);
        let after_drop = made.load(Ordering::SeqCst);
        std::thread::sleep(TICK * 20);
        assert_eq!(made.load(Ordering::SeqCst), after_drop);
    }

    #[test]
    fn a_failing_maker_is_tried_again_and_depth_zero_starts_none() {
        // Fails once, then makes values.
        let calls = Arc::new(AtomicU64::new(0));
        let counter = calls.clone();
        let ahead = Ahead::start("test-ahead", 2, move || {
            (counter.fetch_add(1, Ordering::SeqCst) > 0).then_some(7u8)
        })
        .unwrap();
        until(&ahead, "failed once", |a| a.failures() == 1);
        until(&ahead, "full after the retry", |a| a.ready() == 2);
        assert_eq!(ahead.take(), Some(7));
        // A pool dropped while its thread waits to try again stops it: no more tries.
        let tries = Arc::new(AtomicU64::new(0));
        let counter = tries.clone();
        let always = Ahead::<u8>::start("test-ahead", 2, move || {
            counter.fetch_add(1, Ordering::SeqCst);
            None
        })
        .unwrap();
        until(&always, "failed", |a| a.failures() == 1);
        drop(always);
        std::thread::sleep(RETRY + TICK * 200);
        assert_eq!(tries.load(Ordering::SeqCst), 1);
        assert!(Ahead::start("test-ahead", 0, || Some(1u8)).is_none());
    }
}

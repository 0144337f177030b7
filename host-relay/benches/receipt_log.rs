//! Receipt log appends under concurrent load: group commit against one fsync per append.
//!
//! `cargo bench -p trustbridge-relay --bench receipt_log`
//!
//! 16 threads append small receipts to a log in a temporary directory (on the disk that
//! holds `TMPDIR`) for a fixed time each way, in alternating rounds:
//! - baseline: every append holds one lock through its write and its fsync, as the log
//!   did before group commit (one fsync per receipt);
//! - group commit: [`ReceiptLog::append`] as it is (appends at the same time share an
//!   fsync; none returns before its line is on disk).
//!
//! Prints `receipt_log: one_fsync_each_per_s=X group_commit_per_s=Y ratio=Z` with the
//! fsyncs per append of each. TB_BENCH_THREADS (16), TB_BENCH_SECS per round (1),
//! TB_BENCH_ROUNDS (3).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)] // bench binary

use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use trustbridge_relay::receipt_log::ReceiptLog;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Appends per second over `secs` with `threads` appending at once; `serialize` holds one
/// lock around each append (one fsync each). Returns (appends per second, fsyncs per append).
fn round(threads: usize, secs: u64, serialize: bool) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(ReceiptLog::open(&dir.path().join("receipts.log")).unwrap());
    let one_at_a_time = Arc::new(Mutex::new(()));
    let start = Arc::new(Barrier::new(threads + 1));
    let receipt = vec![0xa5u8; 300];
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (log, lock, start, receipt) = (
                log.clone(),
                one_at_a_time.clone(),
                start.clone(),
                receipt.clone(),
            );
            std::thread::spawn(move || {
                start.wait();
                let until = Instant::now() + Duration::from_secs(secs);
                let mut n = 0u64;
                while Instant::now() < until {
                    if serialize {
                        let _one = lock.lock().unwrap();
                        log.append(&receipt).unwrap();
                    } else {
                        log.append(&receipt).unwrap();
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    let t = Instant::now();
    start.wait();
    let appends: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let elapsed = t.elapsed().as_secs_f64();
    assert_eq!(log.len().unwrap(), appends);
    let syncs = log.syncs().unwrap();
    (
        appends as f64 / elapsed,
        syncs as f64 / appends.max(1) as f64,
    )
}

fn main() {
    let threads = env("TB_BENCH_THREADS", 16).max(1) as usize;
    let secs = env("TB_BENCH_SECS", 1).max(1);
    let rounds = env("TB_BENCH_ROUNDS", 3).max(1);
    println!("receipt_log bench: {threads} threads, {rounds} rounds of {secs} s each way");
    let (mut base, mut group) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        base.push(round(threads, secs, true));
        group.push(round(threads, secs, false));
    }
    let median = |v: &mut Vec<(f64, f64)>| {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v[v.len() / 2]
    };
    let ((b, b_syncs), (g, g_syncs)) = (median(&mut base), median(&mut group));
    println!(
        "receipt_log: one_fsync_each_per_s={b:.0} group_commit_per_s={g:.0} ratio={:.1} (fsyncs per append: {b_syncs:.2} and {g_syncs:.2})",
        g / b
    );
}

//! The public receipt log: every receipt the sentinel hands the relay, appended to a file,
//! fsync'd before the append returns, and served at `GET /receipts?after=SEQ`.
//!
//! Appends commit in groups: an append writes its line and then either syncs the file
//! itself, or, while another append's fsync is running, waits for it and then for one
//! more that covers its own line. Concurrent appends share fsyncs (one per group, not
//! one each), and none returns before its line is on disk. Only lines on disk are
//! served or counted. A failed fsync stops the log ([`LogError::Broken`]) until a
//! restart reads it back.
//!
//! One JSON object per line: `{"seq": N, "receipt": "<base64url>"}`, `seq` counting from 0
//! in the order the relay received them. Receipts are public by design (their digests are
//! salted with a salt only the client has), so the log is plain. It is evidence, not a
//! source of trust: `tb-verify log` checks the signatures and the chains, and a relay that
//! drops or reorders entries leaves a gap or a fork that it reports.
//!
//! On open, the file is read back; a torn last line (a crash in the middle of an append,
//! before its fsync returned) is cut off, so every acknowledged receipt survives and no
//! half-written one is served. Whole lines whose fsync had not returned at a crash (a
//! group in flight) may survive too: they are genuine receipts, in sequence, and are kept.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Largest receipt the log accepts (the receipt format's own cap).
pub const MAX_RECEIPT_LEN: usize = trustbridge_protocol::receipt::MAX_RECEIPT_LEN;

/// Most entries one `GET /receipts` answer carries.
pub const PAGE: usize = 1000;

/// The log could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// File I/O.
    #[error("receipt log {path}: {source}")]
    Io {
        /// The log file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A line that is not a log entry (other than a torn last line).
    #[error("receipt log {path}: line {line} is not a log entry")]
    Corrupt {
        /// The log file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// A receipt larger than [`MAX_RECEIPT_LEN`].
    #[error("a receipt of {0} bytes is larger than any receipt")]
    TooLarge(usize),
    /// The lock is poisoned.
    #[error("receipt log lock poisoned")]
    Poisoned,
    /// An fsync of the log failed (the append that ran it got the I/O error), or a
    /// failed write could not be cut off again: what the file holds is no longer known,
    /// so the log takes no more appends (those waiting for that fsync included) until the
    /// relay restarts and reads it back. After a failed fsync Linux may have dropped the
    /// unsynced lines while reporting later fsyncs as successful, so carrying on could
    /// acknowledge receipts that are not on disk.
    #[error("receipt log {0}: a write or fsync failed; no more appends until a restart")]
    Broken(PathBuf),
}

/// One entry.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Position in the log.
    pub seq: u64,
    /// The receipt, base64url without padding.
    pub receipt: String,
}

struct Inner {
    /// Byte offset of each entry's line, written or durable.
    offsets: Vec<u64>,
    /// Bytes written.
    end: u64,
    /// Entries on disk: those with `seq < durable`.
    durable: u64,
    /// Bytes on disk.
    durable_end: u64,
    /// An append is running an fsync (without the lock).
    syncing: bool,
    /// A write or fsync failed beyond repair ([`LogError::Broken`]).
    broken: bool,
    /// fsyncs run (for the tests and the benchmark).
    syncs: u64,
}

/// What an append does to the file, apart so that the tests can make each step fail.
trait Appendable: Send + Sync {
    /// Writes `bytes` at the end of the file.
    fn append(&self, bytes: &[u8]) -> std::io::Result<()>;
    /// Cuts the file to `len` bytes.
    fn truncate(&self, len: u64) -> std::io::Result<()>;
    /// Puts what was written on disk.
    fn sync(&self) -> std::io::Result<()>;
}

impl Appendable for File {
    fn append(&self, bytes: &[u8]) -> std::io::Result<()> {
        // Opened for appending: the write lands at the end.
        (&*self).write_all(bytes)
    }

    fn truncate(&self, len: u64) -> std::io::Result<()> {
        self.set_len(len)
    }

    fn sync(&self) -> std::io::Result<()> {
        self.sync_data()
    }
}

/// The append-only receipt log.
pub struct ReceiptLog {
    path: PathBuf,
    /// Opened for appending: every write lands at the end. Written under `inner`'s
    /// lock, synced without it.
    file: Box<dyn Appendable>,
    inner: Mutex<Inner>,
    /// Signalled when an fsync ends.
    synced: Condvar,
}

impl std::fmt::Debug for ReceiptLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReceiptLog({})", self.path.display())
    }
}

impl ReceiptLog {
    /// Opens (or creates) the log at `path`.
    pub fn open(path: &Path) -> Result<Self, LogError> {
        Self::open_with(path, |file| Box::new(file))
    }

    /// Opens the log at `path`, appending through `appender` of the opened file.
    fn open_with(
        path: &Path,
        appender: impl FnOnce(File) -> Box<dyn Appendable>,
    ) -> Result<Self, LogError> {
        let io = |source| LogError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        let mut offsets = Vec::new();
        let mut end = 0u64;
        let mut reader = BufReader::new(&file);
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader.read_line(&mut line).map_err(io)?;
            if n == 0 {
                break;
            }
            if !line.ends_with('\n') {
                // A torn last line: never acknowledged, cut off.
                tracing::warn!(path = %path.display(), bytes = n, "cutting a torn last line off the receipt log");
                break;
            }
            let entry: Entry =
                serde_json::from_str(line.trim_end()).map_err(|_| LogError::Corrupt {
                    path: path.to_owned(),
                    line: offsets.len() + 1,
                })?;
            if entry.seq != offsets.len() as u64 {
                return Err(LogError::Corrupt {
                    path: path.to_owned(),
                    line: offsets.len() + 1,
                });
            }
            offsets.push(end);
            end += n as u64;
        }
        drop(reader);
        file.set_len(end).map_err(io)?;
        file.seek(SeekFrom::End(0)).map_err(io)?;
        let durable = offsets.len() as u64;
        Ok(Self {
            path: path.to_owned(),
            file: appender(file),
            inner: Mutex::new(Inner {
                offsets,
                end,
                durable,
                durable_end: end,
                syncing: false,
                broken: false,
                syncs: 0,
            }),
            synced: Condvar::new(),
        })
    }

    /// Appends a receipt and returns its `seq` once it is on disk (fsync'd), sharing
    /// the fsync with the appends running at the same time.
    pub fn append(&self, receipt: &[u8]) -> Result<u64, LogError> {
        if receipt.len() > MAX_RECEIPT_LEN {
            return Err(LogError::TooLarge(receipt.len()));
        }
        let io = |source| LogError::Io {
            path: self.path.clone(),
            source,
        };
        let mut inner = self.inner.lock().map_err(|_| LogError::Poisoned)?;
        if inner.broken {
            return Err(LogError::Broken(self.path.clone()));
        }
        let seq = inner.offsets.len() as u64;
        let entry = Entry {
            seq,
            receipt: URL_SAFE_NO_PAD.encode(receipt),
        };
        let mut line = serde_json::to_string(&entry).map_err(|e| io(std::io::Error::other(e)))?;
        line.push('\n');
        if let Err(e) = self.file.append(line.as_bytes()) {
            // Cut whatever part of this line reached the file (the whole lines before it
            // stay, for their fsync), so the file stays what the index says; appends land
            // at its end. If even that fails, what the file holds is unknown: stop.
            if self.file.truncate(inner.end).is_err() {
                inner.broken = true;
                self.synced.notify_all();
            }
            return Err(io(e));
        }
        let at = inner.end;
        inner.offsets.push(at);
        inner.end += line.len() as u64;
        loop {
            if inner.durable > seq {
                return Ok(seq);
            }
            if inner.broken {
                return Err(LogError::Broken(self.path.clone()));
            }
            if inner.syncing {
                // Another append's fsync is running: it may not cover this line, so wait
                // for it to end and look again.
                inner = self.synced.wait(inner).map_err(|_| LogError::Poisoned)?;
                continue;
            }
            // Sync every line written so far, this one included, without the lock:
            // appends that come meanwhile write theirs and wait for the next fsync.
            inner.syncing = true;
            let (count, end) = (inner.offsets.len() as u64, inner.end);
            drop(inner);
            let synced = self.file.sync();
            // Nothing panics while holding the lock; should something, the appends
            // waiting for this fsync must still hear that it ended.
            inner = self
                .inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            inner.syncing = false;
            inner.syncs += 1;
            self.synced.notify_all();
            match synced {
                Ok(()) => {
                    inner.durable = inner.durable.max(count);
                    inner.durable_end = inner.durable_end.max(end);
                }
                Err(e) => {
                    inner.broken = true;
                    return Err(io(e));
                }
            }
        }
    }

    /// Entries after `after` (all from the start when `None`), at most [`PAGE`].
    pub fn after(&self, after: Option<u64>) -> Result<Vec<Entry>, LogError> {
        let (start, offset, end) = {
            let inner = self.inner.lock().map_err(|_| LogError::Poisoned)?;
            let start = after.map_or(0, |a| a.saturating_add(1));
            // Only what is on disk is served.
            let Some(offset) = usize::try_from(start)
                .ok()
                .filter(|&s| (s as u64) < inner.durable)
                .and_then(|s| inner.offsets.get(s))
            else {
                return Ok(Vec::new());
            };
            (start, *offset, inner.durable_end)
        };
        let io = |source| LogError::Io {
            path: self.path.clone(),
            source,
        };
        let mut file = File::open(&self.path).map_err(io)?;
        file.seek(SeekFrom::Start(offset)).map_err(io)?;
        let reader = BufReader::new(file.take(end - offset));
        let mut out = Vec::new();
        for (i, line) in reader.lines().take(PAGE).enumerate() {
            let line = line.map_err(io)?;
            let entry: Entry = serde_json::from_str(&line).map_err(|_| LogError::Corrupt {
                path: self.path.clone(),
                line: start as usize + i + 1,
            })?;
            out.push(entry);
        }
        Ok(out)
    }

    /// How many entries the log holds (on disk).
    pub fn len(&self) -> Result<u64, LogError> {
        Ok(self.inner.lock().map_err(|_| LogError::Poisoned)?.durable)
    }

    /// How many fsyncs the log has run since it was opened: fewer than its appends when
    /// appends came at the same time.
    pub fn syncs(&self) -> Result<u64, LogError> {
        Ok(self.inner.lock().map_err(|_| LogError::Poisoned)?.syncs)
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> Result<bool, LogError> {
        Ok(self.len()? == 0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn appends_survive_a_restart_and_a_torn_line_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipts.log");
        {
            let log = ReceiptLog::open(&path).unwrap();
            assert_eq!(log.append(b"first").unwrap(), 0);
            assert_eq!(log.append(b"second").unwrap(), 1);
        }
        // A crash in the middle of the third append.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":2,\"rec").unwrap();
        drop(f);
        let log = ReceiptLog::open(&path).unwrap();
        assert_eq!(log.len().unwrap(), 2);
        assert_eq!(log.append(b"third").unwrap(), 2);
        let all = log.after(None).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(URL_SAFE_NO_PAD.decode(&all[2].receipt).unwrap(), b"third");
        assert_eq!(log.after(Some(0)).unwrap()[0].seq, 1);
        assert!(log.after(Some(2)).unwrap().is_empty());
        assert!(log.after(Some(u64::MAX)).unwrap().is_empty());
        // A corrupt line in the middle is an error, not silently skipped.
        drop(log);
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replacen("\"seq\":1", "\"seq\":7", 1);
        std::fs::write(&path, text).unwrap();
        assert!(matches!(
            ReceiptLog::open(&path),
            Err(LogError::Corrupt { line: 2, .. })
        ));
    }

    /// Which of an append's steps fail.
    #[derive(Default)]
    struct Faults {
        write: AtomicBool,
        truncate: AtomicBool,
        sync: AtomicBool,
    }

    /// The log's file, failing the steps `faults` names: a failed write leaves half its
    /// bytes in the file, as a full disk can.
    struct Faulty {
        file: File,
        faults: Arc<Faults>,
    }

    impl Appendable for Faulty {
        fn append(&self, bytes: &[u8]) -> std::io::Result<()> {
            if self.faults.write.load(Ordering::SeqCst) {
                (&self.file).write_all(&bytes[..bytes.len() / 2])?;
                return Err(std::io::Error::other("injected: the disk is full"));
            }
            (&self.file).write_all(bytes)
        }

        fn truncate(&self, len: u64) -> std::io::Result<()> {
            if self.faults.truncate.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("injected: truncate failed"));
            }
            self.file.set_len(len)
        }

        fn sync(&self) -> std::io::Result<()> {
            if self.faults.sync.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("injected: fsync failed"));
            }
            self.file.sync_data()
        }
    }

    fn faulty(path: &Path) -> (ReceiptLog, Arc<Faults>) {
        let faults = Arc::new(Faults::default());
        let for_file = faults.clone();
        let log = ReceiptLog::open_with(path, move |file| {
            Box::new(Faulty {
                file,
                faults: for_file,
            })
        })
        .unwrap();
        (log, faults)
    }

    /// The receipts the log serves, in order.
    fn served(log: &ReceiptLog) -> Vec<Vec<u8>> {
        log.after(None)
            .unwrap()
            .iter()
            .map(|e| URL_SAFE_NO_PAD.decode(&e.receipt).unwrap())
            .collect()
    }

    #[test]
    fn a_failed_write_is_cut_off_and_the_log_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipts.log");
        let (log, faults) = faulty(&path);
        assert_eq!(log.append(b"first").unwrap(), 0);
        faults.write.store(true, Ordering::SeqCst);
        assert!(matches!(log.append(b"second"), Err(LogError::Io { .. })));
        faults.write.store(false, Ordering::SeqCst);
        // The half line was cut off: the next receipt takes its place, whole.
        assert_eq!(log.append(b"third").unwrap(), 1);
        assert_eq!(served(&log), [b"first".to_vec(), b"third".to_vec()]);
        drop(log);
        let log = ReceiptLog::open(&path).unwrap();
        assert_eq!(served(&log), [b"first".to_vec(), b"third".to_vec()]);
    }

    #[test]
    fn a_failed_write_that_cannot_be_cut_off_stops_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipts.log");
        let (log, faults) = faulty(&path);
        assert_eq!(log.append(b"first").unwrap(), 0);
        faults.write.store(true, Ordering::SeqCst);
        faults.truncate.store(true, Ordering::SeqCst);
        assert!(matches!(log.append(b"second"), Err(LogError::Io { .. })));
        faults.write.store(false, Ordering::SeqCst);
        faults.truncate.store(false, Ordering::SeqCst);
        // What the file holds is unknown: no more appends, the acknowledged one served.
        assert!(matches!(log.append(b"third"), Err(LogError::Broken(_))));
        assert_eq!(served(&log), [b"first".to_vec()]);
        drop(log);
        // A restart cuts the torn half line off and appends again.
        let log = ReceiptLog::open(&path).unwrap();
        assert_eq!(served(&log), [b"first".to_vec()]);
        assert_eq!(log.append(b"third").unwrap(), 1);
    }

    #[test]
    fn a_failed_fsync_stops_the_log_and_serves_nothing_unsynced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipts.log");
        let (log, faults) = faulty(&path);
        assert_eq!(log.append(b"first").unwrap(), 0);
        faults.sync.store(true, Ordering::SeqCst);
        assert!(matches!(log.append(b"second"), Err(LogError::Io { .. })));
        faults.sync.store(false, Ordering::SeqCst);
        // Linux may have dropped the unsynced line and still report later fsyncs as
        // successful: no more appends, and the line not known to be on disk not served.
        assert!(matches!(log.append(b"third"), Err(LogError::Broken(_))));
        assert_eq!(log.len().unwrap(), 1);
        assert_eq!(served(&log), [b"first".to_vec()]);
        drop(log);
        // A restart reads back what the file holds: here the line did reach it, a genuine
        // receipt in sequence, so it is kept.
        let log = ReceiptLog::open(&path).unwrap();
        assert_eq!(served(&log), [b"first".to_vec(), b"second".to_vec()]);
        assert_eq!(log.append(b"third").unwrap(), 2);
    }

    #[test]
    fn concurrent_appends_share_fsyncs_and_every_one_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipts.log");
        let log = std::sync::Arc::new(ReceiptLog::open(&path).unwrap());
        let (threads, each) = (8, 40);
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    (0..each)
                        .map(|i| {
                            let receipt = format!("receipt {t}-{i}");
                            let seq = log.append(receipt.as_bytes()).unwrap();
                            // Acknowledged means served.
                            assert!(log.len().unwrap() > seq);
                            (seq, receipt)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut acked: Vec<(u64, String)> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        acked.sort();
        let total = threads * each;
        // Every sequence number once, each for the receipt it was given for.
        assert_eq!(
            acked.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            (0..total as u64).collect::<Vec<_>>()
        );
        let syncs = log.syncs().unwrap();
        assert!(
            syncs < total as u64,
            "{syncs} fsyncs for {total} appends: none shared"
        );
        drop(log);
        let log = ReceiptLog::open(&path).unwrap();
        let mut served = Vec::new();
        let mut after = None;
        loop {
            let page = log.after(after).unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.seq);
            served.extend(page);
        }
        assert_eq!(served.len(), total);
        for (entry, (seq, receipt)) in served.iter().zip(&acked) {
            assert_eq!(entry.seq, *seq);
            assert_eq!(
                URL_SAFE_NO_PAD.decode(&entry.receipt).unwrap(),
                receipt.as_bytes()
            );
        }
    }
}

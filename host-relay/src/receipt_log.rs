//! The public receipt log: every receipt the sentinel hands the relay, appended to a file,
//! fsync'd before the append returns, and served at `GET /receipts?after=SEQ`.
//!
//! One JSON object per line: `{"seq": N, "receipt": "<base64url>"}`, `seq` counting from 0
//! in the order the relay received them. Receipts are public by design (their digests are
//! salted with a salt only the client has), so the log is plain. It is evidence, not a
//! source of trust: `tb-verify log` checks the signatures and the chains, and a relay that
//! drops or reorders entries leaves a gap or a fork that it reports.
//!
//! On open, the file is read back; a torn last line (a crash in the middle of an append,
//! before its fsync returned) is cut off, so every acknowledged receipt survives and no
//! half-written one is served.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
    file: File,
    /// Byte offset of each entry's line.
    offsets: Vec<u64>,
    end: u64,
}

/// The append-only receipt log.
pub struct ReceiptLog {
    path: PathBuf,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for ReceiptLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReceiptLog({})", self.path.display())
    }
}

impl ReceiptLog {
    /// Opens (or creates) the log at `path`.
    pub fn open(path: &Path) -> Result<Self, LogError> {
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
        Ok(Self {
            path: path.to_owned(),
            inner: Mutex::new(Inner { file, offsets, end }),
        })
    }

    /// Appends a receipt and returns its `seq` once it is on disk (fsync'd).
    pub fn append(&self, receipt: &[u8]) -> Result<u64, LogError> {
        if receipt.len() > MAX_RECEIPT_LEN {
            return Err(LogError::TooLarge(receipt.len()));
        }
        let mut inner = self.inner.lock().map_err(|_| LogError::Poisoned)?;
        let seq = inner.offsets.len() as u64;
        let entry = Entry {
            seq,
            receipt: URL_SAFE_NO_PAD.encode(receipt),
        };
        let mut line = serde_json::to_string(&entry).map_err(|e| LogError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        line.push('\n');
        let io = |source| LogError::Io {
            path: self.path.clone(),
            source,
        };
        let written = inner
            .file
            .write_all(line.as_bytes())
            .and_then(|()| inner.file.sync_data());
        if let Err(e) = written {
            // Cut whatever part of the line reached the file, so the log stays what its
            // index says it is; the next append starts where this one did.
            let end = inner.end;
            let _ = inner.file.set_len(end);
            let _ = inner.file.seek(SeekFrom::End(0));
            return Err(io(e));
        }
        let at = inner.end;
        inner.offsets.push(at);
        inner.end += line.len() as u64;
        Ok(seq)
    }

    /// Entries after `after` (all from the start when `None`), at most [`PAGE`].
    pub fn after(&self, after: Option<u64>) -> Result<Vec<Entry>, LogError> {
        let (start, offset, end) = {
            let inner = self.inner.lock().map_err(|_| LogError::Poisoned)?;
            let start = after.map_or(0, |a| a.saturating_add(1));
            let Some(offset) = usize::try_from(start)
                .ok()
                .and_then(|s| inner.offsets.get(s))
            else {
                return Ok(Vec::new());
            };
            (start, *offset, inner.end)
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

    /// How many entries the log holds.
    pub fn len(&self) -> Result<u64, LogError> {
        Ok(self
            .inner
            .lock()
            .map_err(|_| LogError::Poisoned)?
            .offsets
            .len() as u64)
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
}

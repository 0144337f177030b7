//! The ready signal (`TB_READY_SIGNAL`): a file that exists exactly while the sentinel is
//! Ready, for what starts an external runtime on a confidential GPU VM (a systemd path
//! unit, a launcher script): the runtime is started once the decrypted model is in place,
//! and stopped when the file goes.
//!
//! The file holds JSON: `{"state": "Ready", "asset", "manifest_sha256", "model_output",
//! "files"}` (the model's bundle paths, which are its file names under the output
//! directory). It is written whole (a temporary file renamed into place) and removed when
//! the sentinel leaves Ready (suspension, shutdown), before the model's files are wiped.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A raised ready signal: the file is removed when this is dropped.
#[derive(Debug)]
pub struct ReadySignal {
    path: PathBuf,
}

impl ReadySignal {
    /// Writes `contents` to `path` (mode 0644, atomically: a reader never sees a partial
    /// file).
    pub fn raise(path: &Path, contents: &serde_json::Value) -> io::Result<Self> {
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::other("the ready signal's path names no file"))?;
        let mut temporary = name.to_owned();
        temporary.push(".partial");
        let temporary = path.with_file_name(temporary);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&temporary)?;
        file.write_all(contents.to_string().as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temporary, path)?;
        Ok(Self {
            path: path.to_owned(),
        })
    }
}

impl Drop for ReadySignal {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.path) {
            Ok(()) => tracing::info!(path = %self.path.display(), "ready signal removed"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot remove the ready signal");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_signal_exists_while_it_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ready.json");
        let signal = ReadySignal::raise(&path, &serde_json::json!({"state": "Ready"})).unwrap();
        let read: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(read["state"], "Ready");
        assert!(!dir.path().join("ready.json.partial").exists());
        drop(signal);
        assert!(!path.exists());
        assert!(ReadySignal::raise(Path::new("/"), &serde_json::json!({})).is_err());
    }
}

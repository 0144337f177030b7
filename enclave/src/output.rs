//! Runtime-proxy mode: handing the decrypted model to an external runtime (vLLM, Triton)
//! on the same confidential VM, without plaintext ever reaching persistent disk.
//!
//! | `TB_MODEL_OUTPUT` | what the runtime gets |
//! |---|---|
//! | `memory` (default) | nothing: the sentinel serves from its own memory |
//! | `tmpfs:DIR` | each file written to `DIR/<path>`, mode 0600, directories 0700; `DIR` must be on tmpfs or ramfs (checked with `statfs`), and the in-memory copy is then dropped |
//! | `fifo:DIR` | a FIFO `DIR/<path>` (mode 0600) per file; every time a reader opens it, the whole file is written into it; the plaintext stays in sentinel memory |
//!
//! The directory is created with mode 0700 if missing; an existing one must be a real
//! directory owned by the sentinel's user with no group or other access, or publishing
//! fails before anything is written.
//!
//! When the model is withdrawn (suspension, shutdown) tmpfs files are overwritten with
//! zeros and removed, and FIFOs are removed.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::memory::PlainBuffer;

/// `statfs` magic numbers of the memory-backed file systems.
const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// Where the decrypted model goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ModelOutput {
    /// Kept in sentinel memory only.
    #[default]
    Memory,
    /// Written as files under a tmpfs directory.
    Tmpfs(PathBuf),
    /// Served through FIFOs under a directory.
    Fifo(PathBuf),
}

/// A `TB_MODEL_OUTPUT` value that is none of the forms.
#[derive(Debug, thiserror::Error)]
#[error("model output must be `memory`, `tmpfs:DIR` or `fifo:DIR`, not {0:?}")]
pub struct BadModelOutput(String);

impl std::fmt::Display for ModelOutput {
    /// The `TB_MODEL_OUTPUT` form.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Memory => f.write_str("memory"),
            Self::Tmpfs(dir) => write!(f, "tmpfs:{}", dir.display()),
            Self::Fifo(dir) => write!(f, "fifo:{}", dir.display()),
        }
    }
}

impl FromStr for ModelOutput {
    type Err = BadModelOutput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            _ if s == "memory" => Ok(Self::Memory),
            Some(("tmpfs", dir)) if !dir.is_empty() => Ok(Self::Tmpfs(dir.into())),
            Some(("fifo", dir)) if !dir.is_empty() => Ok(Self::Fifo(dir.into())),
            _ => Err(BadModelOutput(s.to_owned())),
        }
    }
}

/// Where swap is looked up, and whether it is acceptable for tmpfs output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwapPolicy {
    /// Accept plaintext on tmpfs while swap is active (`--allow-swap`).
    pub allow: bool,
    /// The kernel's list of active swap areas (`/proc/swaps`; tests point elsewhere).
    pub swaps: PathBuf,
}

impl Default for SwapPolicy {
    /// Swap refused, looked up in `/proc/swaps`.
    fn default() -> Self {
        Self {
            allow: false,
            swaps: PathBuf::from("/proc/swaps"),
        }
    }
}

impl SwapPolicy {
    /// The active swap areas: the lines of `/proc/swaps` after its header. A file that
    /// cannot be read means the check cannot run, which is an error (fail closed).
    pub fn active_swap(&self) -> Result<Vec<String>, OutputError> {
        let text = std::fs::read_to_string(&self.swaps).map_err(io_err(&self.swaps))?;
        Ok(text
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect())
    }

    /// Refuses (`refusal`, given the active swap areas) when swap is active and not
    /// allowed.
    fn refuse_if_active(
        &self,
        refusal: impl FnOnce(String) -> OutputError,
    ) -> Result<(), OutputError> {
        if self.allow {
            return Ok(());
        }
        let active = self.active_swap()?;
        if active.is_empty() {
            Ok(())
        } else {
            Err(refusal(active.join(", ")))
        }
    }

    /// Checks that plaintext which could not be locked in RAM cannot reach swap either:
    /// refused while swap is active, unless allowed.
    pub fn check_unlocked(&self) -> Result<(), OutputError> {
        self.refuse_if_active(OutputError::UnlockedWithSwap)
    }
}

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// Swap is active, so tmpfs pages holding plaintext could be written to a swap device.
    #[error(
        "swap is active ({0}): the kernel may write tmpfs pages, and so the model's plaintext, to it; turn swap off (swapoff -a) or pass --allow-swap if the swap device is encrypted with a key that never leaves this machine"
    )]
    SwapActive(String),
    /// The plaintext could not be locked in RAM and swap is active.
    #[error(
        "the model's plaintext cannot be locked in RAM (raise RLIMIT_MEMLOCK, e.g. ulimit -l unlimited) and swap is active ({0}): the kernel may write it to swap; turn swap off (swapoff -a), allow locking, or pass --allow-swap if the swap device is encrypted with a key that never leaves this machine"
    )]
    UnlockedWithSwap(String),
    /// The tmpfs directory is on a disk-backed file system.
    #[error("{0} is not on tmpfs or ramfs: plaintext would reach persistent storage")]
    NotMemoryBacked(PathBuf),
    /// The output directory is not a directory of this user's with mode 0700 (or
    /// stricter).
    #[error("{0} must be a directory owned by this user with no group or other access (mode 0700)")]
    NotPrivate(PathBuf),
    /// A file system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> OutputError + '_ {
    move |source| OutputError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What was handed to the runtime; withdrawn on drop.
#[derive(Debug, Default)]
pub struct Published {
    tmpfs_files: Vec<PathBuf>,
    fifos: Vec<(PathBuf, tokio::task::JoinHandle<()>)>,
}

/// Publishes `files` as `output` says. For tmpfs the caller may drop its copy after.
/// tmpfs output is refused while swap is active, unless `swap` allows it.
pub fn publish(
    output: &ModelOutput,
    files: &Arc<BTreeMap<String, PlainBuffer>>,
    swap: &SwapPolicy,
) -> Result<Published, OutputError> {
    let mut published = Published::default();
    match output {
        ModelOutput::Memory => {}
        ModelOutput::Tmpfs(dir) => {
            swap.refuse_if_active(OutputError::SwapActive)?;
            private_dir(dir)?;
            let stat = rustix::fs::statfs(dir).map_err(|e| io_err(dir)(e.into()))?;
            if !matches!(stat.f_type as i64, TMPFS_MAGIC | RAMFS_MAGIC) {
                return Err(OutputError::NotMemoryBacked(dir.clone()));
            }
            for (path, plain) in files.iter() {
                let target = dir.join(path);
                make_parents(dir, &target)?;
                remove_leftover(&target)?;
                // Recorded first, so a partial write is still wiped on withdrawal.
                published.tmpfs_files.push(target.clone());
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&target)
                    .map_err(io_err(&target))?;
                io::Write::write_all(&mut file, plain).map_err(io_err(&target))?;
            }
        }
        ModelOutput::Fifo(dir) => {
            private_dir(dir)?;
            for path in files.keys() {
                let target = dir.join(path);
                make_parents(dir, &target)?;
                remove_leftover(&target)?;
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &target,
                    rustix::fs::FileType::Fifo,
                    rustix::fs::Mode::from_raw_mode(0o600),
                    0,
                )
                .map_err(|e| io_err(&target)(e.into()))?;
                let task = tokio::spawn(feed_fifo(target.clone(), files.clone(), path.clone()));
                published.fifos.push((target, task));
            }
        }
    }
    Ok(published)
}

/// Creates `dir` (mode 0700) if missing, then insists it is a real directory owned by
/// this user that nobody else can enter or write: otherwise whoever controls it could
/// read the plaintext or redirect it with symlinks.
fn private_dir(dir: &Path) -> Result<(), OutputError> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err(dir)(e)),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(io_err(dir))?;
    let mine = meta.uid() == rustix::process::geteuid().as_raw();
    if !meta.is_dir() || !mine || meta.mode() & 0o077 != 0 {
        return Err(OutputError::NotPrivate(dir.to_owned()));
    }
    Ok(())
}

/// Creates the directories between `dir` and `target` with mode 0700.
fn make_parents(dir: &Path, target: &Path) -> Result<(), OutputError> {
    let parent = target.parent().unwrap_or(dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)
        .map_err(io_err(parent))
}

/// Writes the whole file into the FIFO each time a reader opens it, until aborted.
async fn feed_fifo(fifo: PathBuf, files: Arc<BTreeMap<String, PlainBuffer>>, path: String) {
    let Some(plain) = files.get(&path) else {
        return;
    };
    loop {
        // Opening for writing fails with ENXIO while no reader has the FIFO open.
        match tokio::net::unix::pipe::OpenOptions::new().open_sender(&fifo) {
            Ok(mut sender) => {
                match sender.write_all(plain).await {
                    Ok(()) => {
                        tracing::info!(fifo = %fifo.display(), bytes = plain.len(), "model file handed to the runtime")
                    }
                    Err(e) => {
                        tracing::warn!(fifo = %fifo.display(), error = %e, "runtime stopped reading")
                    }
                }
                // Let the reader see end-of-file before the next open.
                drop(sender);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NXIO.raw_os_error()) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                tracing::error!(fifo = %fifo.display(), error = %e, "cannot open the FIFO");
                return;
            }
        }
    }
}

impl Drop for Published {
    fn drop(&mut self) {
        for path in self.tmpfs_files.drain(..) {
            if let Err(e) = wipe(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not wipe a published file");
            }
        }
        for (path, task) in self.fifos.drain(..) {
            task.abort();
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Removes what a sentinel that did not stop cleanly (killed, out of memory) left at
/// `target` in its private directory: a file is wiped first, as it may hold plaintext.
fn remove_leftover(target: &Path) -> Result<(), OutputError> {
    let kind = match std::fs::symlink_metadata(target) {
        Ok(meta) => meta.file_type(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(target)(e)),
    };
    tracing::warn!(path = %target.display(), "removing what an earlier run left behind");
    if kind.is_file() {
        wipe(target).map_err(io_err(target))
    } else {
        std::fs::remove_file(target).map_err(io_err(target))
    }
}

/// Overwrites a file with zeros, then removes it.
fn wipe(path: &Path) -> io::Result<()> {
    let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
    let len = file.metadata()?.len();
    let zeros = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        io::Write::write_all(&mut file, &zeros[..n])?;
        left -= n as u64;
    }
    drop(file);
    std::fs::remove_file(path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    use super::*;

    /// A temporary directory with mode 0700 (tempfile follows the umask).
    fn private(dir: tempfile::TempDir) -> tempfile::TempDir {
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }

    /// Swap allowed: these tests are not about swap, and must not depend on the
    /// machine's.
    fn no_swap() -> SwapPolicy {
        SwapPolicy {
            allow: true,
            swaps: PathBuf::from("/nonexistent"),
        }
    }

    /// Plaintext on tmpfs could reach a swap device: refused while swap is active, with
    /// the reason, unless allowed; an unreadable swap list is a refusal too.
    #[test]
    fn tmpfs_output_is_refused_while_swap_is_active() {
        let shm = private(tempfile::tempdir_in("/dev/shm").unwrap());
        let output = ModelOutput::Tmpfs(shm.path().join("model"));
        let lists = tempfile::tempdir().unwrap();
        let swaps = |name: &str, text: &str| {
            let path = lists.path().join(name);
            std::fs::write(&path, text).unwrap();
            SwapPolicy {
                allow: false,
                swaps: path,
            }
        };
        let header = "Filename\tType\tSize\tUsed\tPriority\n";
        drop(publish(&output, &model(), &swaps("none", header)).unwrap());
        let active = swaps(
            "active",
            &format!("{header}/dev/vda3 partition 1048572 0 -2\n"),
        );
        let refused = ModelOutput::Tmpfs(shm.path().join("refused"));
        match publish(&refused, &model(), &active) {
            Err(e @ OutputError::SwapActive(_)) => {
                assert!(e.to_string().contains("/dev/vda3"), "{e}");
                assert!(e.to_string().contains("--allow-swap"), "{e}");
            }
            other => panic!("plaintext published with swap on: {other:?}"),
        }
        assert!(!shm.path().join("refused").exists(), "nothing written");
        let allowed = SwapPolicy {
            allow: true,
            ..active
        };
        drop(publish(&output, &model(), &allowed).unwrap());
        let unreadable = SwapPolicy {
            allow: false,
            swaps: shm.path().join("missing"),
        };
        assert!(matches!(
            publish(&output, &model(), &unreadable),
            Err(OutputError::Io { .. })
        ));
        // Memory and FIFO output keep the plaintext in the sentinel's locked memory.
        drop(publish(&ModelOutput::Memory, &model(), &unreadable).unwrap());
    }

    fn model() -> Arc<BTreeMap<String, PlainBuffer>> {
        let mut files = BTreeMap::new();
        for (path, fill) in [("weights/a.bin", 7u8), ("config.json", 1)] {
            let mut buf = PlainBuffer::zeroed(3000);
            buf.fill(fill);
            files.insert(path.to_owned(), buf);
        }
        Arc::new(files)
    }

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(
            "memory".parse::<ModelOutput>().unwrap(),
            ModelOutput::Memory
        );
        assert_eq!(
            "tmpfs:/dev/shm/m".parse::<ModelOutput>().unwrap(),
            ModelOutput::Tmpfs("/dev/shm/m".into())
        );
        assert_eq!(
            "fifo:/run/m".parse::<ModelOutput>().unwrap(),
            ModelOutput::Fifo("/run/m".into())
        );
        for bad in ["", "tmpfs:", "disk:/x", "/dev/shm"] {
            assert!(bad.parse::<ModelOutput>().is_err(), "{bad}");
        }
    }

    #[test]
    fn tmpfs_files_are_private_and_wiped_and_disks_are_refused() {
        let shm = private(tempfile::Builder::new().tempdir_in("/dev/shm").unwrap());
        let published =
            publish(&ModelOutput::Tmpfs(shm.path().into()), &model(), &no_swap()).unwrap();
        let file = shm.path().join("weights/a.bin");
        assert_eq!(std::fs::read(&file).unwrap(), vec![7u8; 3000]);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&shm.path().join("weights")), 0o700);
        drop(published);
        assert!(!file.exists());
        // A directory on a disk-backed file system is refused before anything is written.
        let disk = private(tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap());
        assert!(matches!(
            publish(
                &ModelOutput::Tmpfs(disk.path().into()),
                &model(),
                &no_swap()
            ),
            Err(OutputError::NotMemoryBacked(_))
        ));
        assert_eq!(std::fs::read_dir(disk.path()).unwrap().count(), 0);
    }

    #[test]
    fn directories_others_can_reach_are_refused() {
        let shm = tempfile::Builder::new().tempdir_in("/dev/shm").unwrap();
        let open = shm.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        // A symlink to a perfectly private directory is still refused.
        let target = shm.path().join("target");
        std::fs::create_dir(&target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = shm.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        for (dir, output) in [
            (&open, ModelOutput::Tmpfs(open.clone())),
            (&open, ModelOutput::Fifo(open.clone())),
            (&target, ModelOutput::Tmpfs(link.clone())),
        ] {
            assert!(
                matches!(
                    publish(&output, &model(), &no_swap()),
                    Err(OutputError::NotPrivate(_))
                ),
                "{output:?}"
            );
            assert_eq!(std::fs::read_dir(dir).unwrap().count(), 0, "{output:?}");
        }
    }

    #[tokio::test]
    async fn fifos_hand_over_the_whole_file_on_every_open() {
        let dir = private(tempfile::tempdir().unwrap());
        let published =
            publish(&ModelOutput::Fifo(dir.path().into()), &model(), &no_swap()).unwrap();
        let fifo = dir.path().join("weights/a.bin");
        let meta = std::fs::metadata(&fifo).unwrap();
        assert!(meta.file_type().is_fifo());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        for _ in 0..2 {
            let f = fifo.clone();
            let got = tokio::task::spawn_blocking(move || std::fs::read(f).unwrap())
                .await
                .unwrap();
            assert_eq!(got, vec![7u8; 3000]);
        }
        drop(published);
        assert!(!fifo.exists());
    }
}

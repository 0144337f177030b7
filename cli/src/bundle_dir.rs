//! Bundle directories on disk: collecting inputs, staging outputs, locating sealed files.
//!
//! Outputs (bundles and unsealed trees) are written into a hidden staging directory next to
//! the destination and renamed into place only when complete, so a failure or a crash never
//! leaves a half-written bundle under the final name, and nothing is replaced unless
//! `--force` was given.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use trustbridge_protocol::bundle::{
    BundlePath, MANIFEST_FILE, Manifest, ProviderPublicKey, SEALED_SUFFIX, SignedManifest,
};

use crate::output_file::parent_dir;

/// A model file to seal.
#[derive(Debug)]
pub(crate) struct Input {
    /// Where it is on disk.
    pub(crate) source: PathBuf,
    /// Its path inside the bundle.
    pub(crate) path: BundlePath,
    /// Its length.
    pub(crate) len: u64,
}

/// The files to seal from `input`: the file itself, or every regular file below the
/// directory (symbolic links followed, sorted by path).
pub(crate) fn collect_inputs(input: &Path, out: &Path) -> Result<Vec<Input>> {
    let meta =
        fs::metadata(input).with_context(|| format!("cannot read input {}", input.display()))?;
    if meta.is_file() {
        let name = input
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("input file name {} is not UTF-8", input.display()))?;
        let path = BundlePath::new(name)?;
        return Ok(vec![Input {
            source: input.to_path_buf(),
            path,
            len: meta.len(),
        }]);
    }
    if !meta.is_dir() {
        bail!(
            "input {} is neither a file nor a directory",
            input.display()
        );
    }
    let input_abs = fs::canonicalize(input)?;
    if let Ok(out_abs) = fs::canonicalize(parent_dir(out))
        && out_abs
            .join(out.file_name().unwrap_or_default())
            .starts_with(&input_abs)
    {
        bail!(
            "output {} is inside the input directory {}",
            out.display(),
            input.display()
        );
    }
    let mut inputs = Vec::new();
    for entry in walkdir::WalkDir::new(input)
        .follow_links(true)
        .sort_by_file_name()
    {
        let entry = entry.with_context(|| format!("cannot walk {}", input.display()))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(input)
            .context("walked outside the input directory")?;
        let rel = rel
            .components()
            .map(|c| c.as_os_str().to_str())
            .collect::<Option<Vec<_>>>()
            .with_context(|| format!("file name {} is not UTF-8", entry.path().display()))?
            .join("/");
        let len = entry
            .metadata()
            .with_context(|| format!("cannot read {}", entry.path().display()))?
            .len();
        inputs.push(Input {
            source: entry.path().to_path_buf(),
            path: BundlePath::new(&rel)?,
            len,
        });
    }
    if inputs.is_empty() {
        bail!("input directory {} holds no files", input.display());
    }
    inputs.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(inputs)
}

/// Where the sealed stream of `path` lives in a bundle directory.
pub(crate) fn sealed_file(bundle: &Path, path: &BundlePath) -> PathBuf {
    let mut p = bundle.to_path_buf();
    p.extend(path.components());
    let mut name = p.file_name().unwrap_or_default().to_os_string();
    name.push(SEALED_SUFFIX);
    p.set_file_name(name);
    p
}

/// Where a plaintext file lands below an output directory.
pub(crate) fn plain_file(root: &Path, path: &BundlePath) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(path.components());
    p
}

/// Reads and verifies `manifest.cose` of the bundle at `bundle`.
pub(crate) fn read_manifest(
    bundle: &Path,
    pinned: Option<&ProviderPublicKey>,
) -> Result<SignedManifest> {
    let path = bundle.join(MANIFEST_FILE);
    let bytes = fs::read(&path).with_context(|| {
        format!(
            "{} is not a bundle: cannot read {}",
            bundle.display(),
            path.display()
        )
    })?;
    SignedManifest::verify(&bytes, pinned)
        .with_context(|| format!("bundle {} failed verification", bundle.display()))
}

/// Files in the bundle directory that the manifest does not list.
pub(crate) fn unlisted_files(bundle: &Path, manifest: &Manifest) -> Vec<PathBuf> {
    let mut expected: Vec<PathBuf> = manifest
        .files
        .iter()
        .map(|f| sealed_file(bundle, &f.path))
        .collect();
    expected.push(bundle.join(MANIFEST_FILE));
    walkdir::WalkDir::new(bundle)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && !expected.iter().any(|x| x == e.path()))
        .map(|e| e.into_path())
        .collect()
}

/// A directory being built next to its final path.
pub(crate) struct StagedDir {
    staging: tempfile::TempDir,
    target: PathBuf,
    force: bool,
}

impl StagedDir {
    /// Starts staging `target`; fails at once if it exists and `force` is off.
    pub(crate) fn new(target: &Path, force: bool) -> Result<Self> {
        if target.exists() && !force {
            bail!(
                "{} already exists; pass --force to replace it",
                target.display()
            );
        }
        let parent = parent_dir(target);
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        let staging = tempfile::Builder::new()
            .prefix(".tb-staging-")
            .tempdir_in(parent)
            .with_context(|| {
                format!("cannot create a staging directory in {}", parent.display())
            })?;
        Ok(Self {
            staging,
            target: target.to_path_buf(),
            force,
        })
    }

    /// The staging directory to write into.
    pub(crate) fn path(&self) -> &Path {
        self.staging.path()
    }

    /// Creates the parent directories of `file` inside the staging directory.
    pub(crate) fn prepare(&self, file: &Path) -> Result<()> {
        let dir = parent_dir(file);
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
    }

    /// Moves the finished directory into place (replacing the old one only with `force`).
    pub(crate) fn commit(self) -> Result<()> {
        let staged = self.staging.keep();
        let old = if self.target.exists() {
            if !self.force {
                let _ = fs::remove_dir_all(&staged);
                bail!(
                    "{} appeared while writing; pass --force to replace it",
                    self.target.display()
                );
            }
            let old = staged.with_extension("old");
            fs::rename(&self.target, &old)
                .with_context(|| format!("cannot move the old {} aside", self.target.display()))?;
            Some(old)
        } else {
            None
        };
        if let Err(e) = fs::rename(&staged, &self.target) {
            if let Some(old) = &old {
                let _ = fs::rename(old, &self.target);
            }
            let _ = fs::remove_dir_all(&staged);
            return Err(e)
                .with_context(|| format!("cannot move the result to {}", self.target.display()));
        }
        if let Some(old) = old {
            let removed = if old.is_dir() {
                fs::remove_dir_all(&old)
            } else {
                fs::remove_file(&old)
            };
            removed.with_context(|| format!("cannot remove the replaced {}", old.display()))?;
        }
        if let Ok(dir) = fs::File::open(parent_dir(&self.target)) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

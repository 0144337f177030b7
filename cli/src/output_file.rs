//! Writing one output file safely: into a temporary file next to the destination (created
//! with mode 0600, so a secret is never briefly world-readable), fsynced, given its final
//! mode, then renamed into place. An existing file is replaced only with `force`.

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Writes `out` through `body`, atomically, with permission bits `mode`.
pub(crate) fn write_output<T>(
    out: &Path,
    force: bool,
    mode: u32,
    body: impl FnOnce(&mut File) -> Result<T>,
) -> Result<T> {
    if out.exists() && !force {
        bail!(
            "{} already exists; pass --force to replace it",
            out.display()
        );
    }
    let dir = parent_dir(out);
    let mut tmp = tempfile::Builder::new()
        .prefix(".tb-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    let value = body(tmp.as_file_mut())?;
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("cannot write {}", out.display()))?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(mode))?;
    let persisted = if force {
        tmp.persist(out)
    } else {
        tmp.persist_noclobber(out)
    };
    persisted
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(value)
}

/// The directory a relative or absolute file path lives in.
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

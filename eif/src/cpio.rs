//! Deterministic newc ("070701") cpio archives, the format of Nitro ramdisks.
//!
//! Nothing comes from the host's file system but the bytes the caller hands in: entries are
//! written in path order with every parent directory first (the kernel's unpacker does not
//! create missing parents), owned by root, with the caller's modes, time 0, one link,
//! sequential inode numbers, and the archive padded to 512 bytes (so the next ramdisk
//! starts 4-aligned, as the kernel requires).

use std::collections::BTreeMap;

/// An archive entry could not be added.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CpioError {
    /// Paths are relative, `/`-separated, without `.`/`..`/empty components or NUL.
    #[error("invalid path in a ramdisk: {0:?}")]
    InvalidPath(String),
    /// A path added twice, or a file where a directory is needed.
    #[error("{0:?} is in the ramdisk twice, or a file stands where a directory must be")]
    Conflict(String),
    /// newc sizes are 32-bit.
    #[error("{0:?} is too large for a cpio archive (4 GiB)")]
    TooLarge(String),
}

#[derive(Debug, Clone)]
enum Node {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
}

/// A ramdisk being assembled.
#[derive(Debug, Clone, Default)]
pub struct Archive {
    // Keyed by path components, so parents sort before their children.
    nodes: BTreeMap<Vec<String>, Node>,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;

fn components(path: &str) -> Result<Vec<String>, CpioError> {
    let parts: Vec<String> = path.split('/').map(str::to_owned).collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || p == "." || p == ".." || p.contains('\0'))
    {
        return Err(CpioError::InvalidPath(path.to_owned()));
    }
    Ok(parts)
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory (and its missing parents, mode 0755).
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<&mut Self, CpioError> {
        let parts = components(path)?;
        self.parents(&parts, path)?;
        match self.nodes.get(&parts) {
            Some(Node::File { .. }) => return Err(CpioError::Conflict(path.to_owned())),
            Some(Node::Dir { .. }) | None => {}
        }
        self.nodes.insert(
            parts,
            Node::Dir {
                mode: mode & 0o7777,
            },
        );
        Ok(self)
    }

    /// Adds a regular file (and its missing parent directories, mode 0755).
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<&mut Self, CpioError> {
        let parts = components(path)?;
        if u32::try_from(data.len()).is_err() {
            return Err(CpioError::TooLarge(path.to_owned()));
        }
        self.parents(&parts, path)?;
        if self.nodes.contains_key(&parts) {
            return Err(CpioError::Conflict(path.to_owned()));
        }
        self.nodes.insert(
            parts,
            Node::File {
                mode: mode & 0o7777,
                data: data.to_vec(),
            },
        );
        Ok(self)
    }

    fn parents(&mut self, parts: &[String], path: &str) -> Result<(), CpioError> {
        for i in 1..parts.len() {
            match self.nodes.get(&parts[..i]) {
                Some(Node::File { .. }) => return Err(CpioError::Conflict(path.to_owned())),
                Some(Node::Dir { .. }) => {}
                None => {
                    self.nodes
                        .insert(parts[..i].to_vec(), Node::Dir { mode: 0o755 });
                }
            }
        }
        Ok(())
    }

    /// The archive's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (parts, node)) in (1u32..).zip(&self.nodes) {
            let name = parts.join("/");
            match node {
                Node::Dir { mode } => header(&mut out, ino, S_IFDIR | mode, 2, &name, &[]),
                Node::File { mode, data } => header(&mut out, ino, S_IFREG | mode, 1, &name, data),
            }
        }
        header(&mut out, 0, 0, 1, "TRAILER!!!", &[]);
        out.resize(out.len().div_ceil(512) * 512, 0);
        out
    }
}

fn pad4(out: &mut Vec<u8>) {
    out.resize(out.len().div_ceil(4) * 4, 0);
}

fn header(out: &mut Vec<u8>, ino: u32, mode: u32, nlink: u32, name: &str, data: &[u8]) {
    // Sizes were checked when the entry was added; names are short.
    let size = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let namesize = u32::try_from(name.len() + 1).unwrap_or(u32::MAX);
    let fields: [u32; 13] = [
        ino, mode, 0, // uid
        0, // gid
        nlink, 0, // mtime
        size, 0, 0, // dev major, minor
        0, 0, // rdev major, minor
        namesize, 0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_come_first_and_paths_are_checked() {
        let mut a = Archive::new();
        a.file("rootfs/bin/x", 0o755, b"x").unwrap();
        a.dir("dev", 0o755).unwrap();
        let names: Vec<String> = a.nodes.keys().map(|k| k.join("/")).collect();
        assert_eq!(names, ["dev", "rootfs", "rootfs/bin", "rootfs/bin/x"]);
        assert!(a.file("../etc", 0o644, b"").is_err());
        assert!(a.file("/abs", 0o644, b"").is_err());
        assert!(a.file("rootfs/bin/x", 0o644, b"").is_err());
        assert!(a.file("rootfs/bin/x/y", 0o644, b"").is_err());
        let bytes = a.to_bytes();
        assert_eq!(bytes.len() % 512, 0);
        assert_eq!(a.to_bytes(), bytes);
    }
}

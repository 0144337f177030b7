//! Validated names inside a bundle: the asset id and relative file paths.

use std::fmt;

use super::BundleError;

/// Longest asset id, in bytes.
pub const MAX_ASSET_ID_LEN: usize = 128;
/// Longest relative path, in bytes.
pub const MAX_PATH_LEN: usize = 1024;

/// A model asset identifier: 1 to 128 characters from `A-Z a-z 0-9 . _ - : / @ +`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AssetId(String);

impl AssetId {
    /// Validates `id`.
    pub fn new(id: &str) -> Result<Self, BundleError> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || "._-:/@+".contains(c);
        if id.is_empty() || id.len() > MAX_ASSET_ID_LEN || !id.chars().all(ok_char) {
            return Err(BundleError::InvalidAssetId(
                id.chars().take(MAX_ASSET_ID_LEN).collect(),
            ));
        }
        Ok(Self(id.to_owned()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AssetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AssetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AssetId({:?})", self.0)
    }
}

/// A file's path relative to the bundle root, in normal form: `/`-separated, no empty,
/// `.` or `..` component, no leading `/`, no backslash, no control character, at most
/// 1024 bytes. A path that passes cannot escape the directory it is joined to.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BundlePath(String);

impl BundlePath {
    /// Validates `path`.
    pub fn new(path: &str) -> Result<Self, BundleError> {
        let bad_component = |c: &str| c.is_empty() || c == "." || c == "..";
        let valid = !path.is_empty()
            && path.len() <= MAX_PATH_LEN
            && !path.chars().any(|c| c.is_control() || c == '\\')
            && !path.split('/').any(bad_component);
        if !valid {
            return Err(BundlePath::invalid(path));
        }
        Ok(Self(path.to_owned()))
    }

    fn invalid(path: &str) -> BundleError {
        BundleError::InvalidPath(path.chars().take(MAX_PATH_LEN).collect())
    }

    /// The path as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path's components.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for BundlePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BundlePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BundlePath({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_could_escape_are_rejected() {
        for good in [
            "model.gguf",
            "a/b/c.bin",
            "tokenizer.json",
            "weird name (1).bin",
            "ü/ñ.txt",
        ] {
            assert!(BundlePath::new(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a/./b",
            "a//b",
            "a/",
            "./a",
            "a\\b",
            "a\0b",
            "a\nb",
            "..",
        ] {
            assert!(BundlePath::new(bad).is_err(), "{bad:?}");
        }
        assert!(BundlePath::new(&"a".repeat(MAX_PATH_LEN + 1)).is_err());
    }

    #[test]
    fn asset_ids() {
        for good in ["smollm2-135m", "acme/llama-3@v1.2", "a"] {
            assert!(AssetId::new(good).is_ok(), "{good}");
        }
        for bad in ["", "has space", "tab\t", "ü", &"a".repeat(129)] {
            assert!(AssetId::new(bad).is_err(), "{bad:?}");
        }
    }
}

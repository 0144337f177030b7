//! The associated data that binds each sealed stream to its asset and path.

use super::{AssetId, BundlePath};

/// Domain-separation label at the start of every stream's associated data.
pub const AD_LABEL: &[u8] = b"trustbridge/sealed-weights/v1";

/// The associated data of the stream holding `path` in asset `asset_id`:
///
/// ```text
/// "trustbridge/sealed-weights/v1" || 0x00 || u32be(len(asset id)) || asset id
///                                         || u32be(len(path))     || path
/// ```
///
/// Length prefixes make the encoding injective, so a stream opens only under the exact
/// asset id and path it was sealed for: files cannot be moved between paths or bundles.
pub fn associated_data(asset_id: &AssetId, path: &BundlePath) -> Vec<u8> {
    let (a, p) = (asset_id.as_str().as_bytes(), path.as_str().as_bytes());
    let mut ad = Vec::with_capacity(AD_LABEL.len() + 9 + a.len() + p.len());
    ad.extend_from_slice(AD_LABEL);
    ad.push(0);
    // Both lengths are bounded (128 and 1024 bytes) by the validated types.
    ad.extend_from_slice(&(a.len() as u32).to_be_bytes());
    ad.extend_from_slice(a);
    ad.extend_from_slice(&(p.len() as u32).to_be_bytes());
    ad.extend_from_slice(p);
    ad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_is_injective_on_boundaries() {
        let ad = |a: &str, p: &str| {
            associated_data(&AssetId::new(a).unwrap(), &BundlePath::new(p).unwrap())
        };
        assert_ne!(ad("ab", "c"), ad("a", "bc"));
        assert_eq!(
            hex::encode(ad("m", "w.bin")),
            format!("{}00000000016d00000005772e62696e", hex::encode(AD_LABEL))
        );
    }
}

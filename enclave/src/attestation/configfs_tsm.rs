//! AMD SEV-SNP through the kernel's configfs-tsm interface
//! (`/sys/kernel/config/tsm/report`, Linux 6.7+).
//!
//! A report request is a directory: write the 64-byte report data to `inblob`, read the
//! report from `outblob` (and the certificate table from `auxblob`, when the host provides
//! one), and check `generation` before and after, since another process may have used the
//! same directory in between.

use std::path::{Path, PathBuf};
use trustbridge_protocol::Platform;

use trustbridge_protocol::binding::EvidenceBinding;
use trustbridge_verifier::snp_report::REPORT_LEN;

use super::{AttestError, AttestationProvider, Evidence};

/// Where configfs-tsm lives.
pub const CONFIGFS_TSM_REPORT_DIR: &str = "/sys/kernel/config/tsm/report";

/// SNP evidence through configfs-tsm: `REPORT_DATA` = binding digest.
#[derive(Debug, Clone)]
pub struct ConfigfsTsm {
    root: PathBuf,
}

impl ConfigfsTsm {
    /// The provider for the configfs-tsm directory `root` (normally
    /// [`CONFIGFS_TSM_REPORT_DIR`]).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn err(&self, detail: String) -> AttestError {
        AttestError::Device {
            provider: "snp-configfs-tsm",
            detail,
        }
    }

    fn read(&self, path: &Path) -> Result<Vec<u8>, AttestError> {
        std::fs::read(path).map_err(|e| self.err(format!("{}: {e}", path.display())))
    }
}

impl AttestationProvider for ConfigfsTsm {
    fn name(&self) -> &'static str {
        "snp-configfs-tsm"
    }

    fn simulated(&self) -> bool {
        false
    }

    fn evidence(&self, binding: &EvidenceBinding) -> Result<Evidence, AttestError> {
        let digest = binding.digest()?;
        let entry = self
            .root
            .join(format!("trustbridge-{}", std::process::id()));
        if !entry.is_dir() {
            std::fs::create_dir(&entry)
                .map_err(|e| self.err(format!("{}: {e}", entry.display())))?;
        }
        let generation = |s: &Self| -> Result<String, AttestError> {
            Ok(String::from_utf8_lossy(&s.read(&entry.join("generation"))?)
                .trim()
                .to_owned())
        };
        let before = generation(self)?;
        std::fs::write(entry.join("inblob"), digest)
            .map_err(|e| self.err(format!("writing inblob: {e}")))?;
        let report = self.read(&entry.join("outblob"))?;
        let after = generation(self)?;
        let certificates = match std::fs::read(entry.join("auxblob")) {
            Ok(table) => parse_cert_table(&table),
            Err(_) => Vec::new(),
        };
        let _ = std::fs::remove_dir(&entry);
        if report.len() != REPORT_LEN {
            return Err(self.err(format!(
                "outblob is {} bytes, expected an SNP report of {REPORT_LEN}",
                report.len()
            )));
        }
        let expected = before.parse::<u64>().map(|g| g + 1).ok();
        if after.parse::<u64>().ok() != expected {
            return Err(self.err(
                "the report directory was used concurrently (generation changed); retry".into(),
            ));
        }
        if report[0x50..0x90] != digest {
            return Err(self.err("the report does not carry the requested report data".into()));
        }
        Ok(Evidence {
            platform: Platform::Snp,
            bytes: report,
            certificates,
        })
    }
}

/// The GHCB certificate table: entries of (16-byte GUID, u32 offset, u32 length), ended by a
/// zero entry; returns the VCEK, then the ASK and ARK, as DER.
pub fn parse_cert_table(table: &[u8]) -> Vec<Vec<u8>> {
    const VCEK: [u8; 16] = guid("63da758d-e664-4564-adc5-f4b93be8accd");
    const ASK: [u8; 16] = guid("4ab7b379-bbac-4fe4-a02f-05aef327c782");
    const ARK: [u8; 16] = guid("c0b406a4-a803-4952-9743-3fb6014cd0ae");
    let mut found: Vec<([u8; 16], Vec<u8>)> = Vec::new();
    for entry in table.chunks_exact(24) {
        let id: [u8; 16] = entry[..16].try_into().unwrap_or_default();
        if id == [0; 16] {
            break;
        }
        let off = u32::from_le_bytes(entry[16..20].try_into().unwrap_or_default()) as usize;
        let len = u32::from_le_bytes(entry[20..24].try_into().unwrap_or_default()) as usize;
        if let Some(der) = table.get(off..off.saturating_add(len)) {
            found.push((id, der.to_vec()));
        }
    }
    [VCEK, ASK, ARK]
        .iter()
        .filter_map(|want| {
            found
                .iter()
                .find(|(id, _)| id == want)
                .map(|(_, d)| d.clone())
        })
        .collect()
}

/// A GUID in its mixed-endian binary form.
pub(crate) const fn guid(s: &str) -> [u8; 16] {
    let h = s.as_bytes();
    let mut hex = [0u8; 32];
    let (mut i, mut j) = (0, 0);
    while i < h.len() {
        if h[i] != b'-' {
            hex[j] = match h[i] {
                b'0'..=b'9' => h[i] - b'0',
                b'a'..=b'f' => h[i] - b'a' + 10,
                _ => 0,
            };
            j += 1;
        }
        i += 1;
    }
    let mut b = [0u8; 16];
    let mut k = 0;
    while k < 16 {
        b[k] = hex[2 * k] << 4 | hex[2 * k + 1];
        k += 1;
    }
    // data1 (4 bytes), data2 and data3 (2 bytes each) are little-endian.
    [
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
        b[14], b[15],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_table_is_read_in_vcek_ask_ark_order() {
        let ark = guid("c0b406a4-a803-4952-9743-3fb6014cd0ae");
        let vcek = guid("63da758d-e664-4564-adc5-f4b93be8accd");
        let ask = guid("4ab7b379-bbac-4fe4-a02f-05aef327c782");
        // The GUID's first field is little-endian in the table.
        assert_eq!(&vcek[..4], &[0x8d, 0x75, 0xda, 0x63]);
        let mut table = Vec::new();
        let data_start = 24 * 4;
        for (i, id) in [ark, vcek, ask].iter().enumerate() {
            table.extend_from_slice(id);
            table.extend_from_slice(&((data_start + i * 3) as u32).to_le_bytes());
            table.extend_from_slice(&3u32.to_le_bytes());
        }
        table.extend_from_slice(&[0; 24]);
        table.extend_from_slice(b"ARKVCKASK");
        assert_eq!(
            parse_cert_table(&table),
            vec![b"VCK".to_vec(), b"ASK".to_vec(), b"ARK".to_vec()]
        );
        // An entry pointing past the table is skipped, not a panic.
        let mut bad = table.clone();
        bad[16..20].copy_from_slice(&10_000u32.to_le_bytes());
        assert_eq!(parse_cert_table(&bad).len(), 2);
        assert!(parse_cert_table(&[]).is_empty());
    }
}

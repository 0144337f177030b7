//! The VCEK (and AMD chain) that accompany Azure evidence.
//!
//! On Azure the host's certificates are served by the instance metadata service (IMDS) at
//! `http://169.254.169.254/metadata/THIM/amd/certification` as
//! `{"vcekCert": PEM, "certificateChain": PEM, ...}`. The sentinel has no network of its
//! own, so it asks through the relay's egress (whose allow-list must then name
//! `169.254.169.254:80`), or reads a file the operator saved from that endpoint. Either
//! way the certificates need no trust in who delivered them: the broker checks them
//! against AMD's root.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use trustbridge_transport::Endpoint;
use trustbridge_verifier::snp::EndorsementKeyInfo;
use trustbridge_verifier::snp_report::SnpReport;
use trustbridge_verifier::x509::ParsedCertificate;

use crate::authorize::{KmsTarget, egress_tunnel};

/// The IMDS address.
pub const IMDS_HOST: &str = "169.254.169.254";
/// The IMDS path of the host's AMD certificates.
pub const IMDS_CERTIFICATION_PATH: &str = "/metadata/THIM/amd/certification";
/// The largest answer accepted from the IMDS.
const MAX_ANSWER: usize = 64 * 1024;
/// IMDS attempts before giving up.
const IMDS_ATTEMPTS: u32 = 3;

/// The VCEK and the chain above it (ASK, ARK), DER.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AzureCertificates {
    /// The VCEK.
    pub vcek: Vec<u8>,
    /// ASK and ARK (may be empty: the broker has AMD's roots).
    pub chain: Vec<Vec<u8>>,
}

/// Where the certificates come from.
#[derive(Clone, Debug)]
pub enum CertificateSource {
    /// A file: the IMDS JSON answer, or PEM with the VCEK first.
    File(PathBuf),
    /// The IMDS, through the relay's egress at this endpoint.
    Imds(Endpoint),
}

impl std::fmt::Display for CertificateSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Imds(_) => write!(f, "the IMDS"),
        }
    }
}

/// The certificates from one source, kept between attestations and loaded again when they
/// no longer endorse the host's SNP report: after a host firmware update or a migration
/// the reported TCB changes and so does the VCEK, with no restart of the sentinel.
#[derive(Debug)]
pub struct CertificateCache {
    source: CertificateSource,
    cached: Mutex<Option<AzureCertificates>>,
}

impl CertificateCache {
    /// An empty cache over `source`; nothing is loaded until the first report.
    pub fn new(source: CertificateSource) -> Self {
        Self {
            source,
            cached: Mutex::new(None),
        }
    }

    /// The certificates whose VCEK endorses `snp_report` (its chip id and reported TCB):
    /// the kept ones while they do, otherwise a fresh load from the source, which must.
    pub fn for_report(&self, snp_report: &[u8]) -> Result<AzureCertificates, String> {
        let report =
            SnpReport::parse(snp_report).map_err(|e| format!("the host's SNP report: {e}"))?;
        let mut cached = self
            .cached
            .lock()
            .map_err(|_| "certificate cache poisoned".to_owned())?;
        if let Some(kept) = cached.as_ref() {
            match kept.check_endorses(&report) {
                Ok(()) => return Ok(kept.clone()),
                Err(reason) => tracing::info!(
                    %reason,
                    source = %self.source,
                    "the kept VCEK no longer endorses the host's report; loading it again"
                ),
            }
        }
        let loaded = AzureCertificates::load(&self.source)?;
        loaded.check_endorses(&report).map_err(|reason| {
            format!(
                "the VCEK from {} does not endorse the host's SNP report: {reason}",
                self.source
            )
        })?;
        *cached = Some(loaded.clone());
        Ok(loaded)
    }
}

impl AzureCertificates {
    /// Whether the VCEK endorses `report` (chip id and reported TCB; the signature is the
    /// broker's to check).
    pub fn check_endorses(&self, report: &SnpReport) -> Result<(), String> {
        let vcek = ParsedCertificate::from_der(&self.vcek, "VCEK").map_err(|e| e.to_string())?;
        EndorsementKeyInfo::from_certificate(&vcek)
            .and_then(|info| info.check_endorses(report))
            .map_err(|e| e.to_string())
    }

    /// Parses the IMDS answer (`vcekCert`, `certificateChain`) or a PEM bundle whose first
    /// certificate is the VCEK.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let pem_ders = |pem: &[u8], what: &'static str| -> Result<Vec<Vec<u8>>, String> {
            Ok(ParsedCertificate::from_pem_chain(pem, what)
                .map_err(|e| e.to_string())?
                .iter()
                .map(|c| c.der().to_vec())
                .collect())
        };
        let (vcek, chain) = match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(json) => {
                let field = |name: &str| {
                    json[name]
                        .as_str()
                        .map(str::as_bytes)
                        .ok_or_else(|| format!("the IMDS answer has no {name:?}"))
                };
                let vcek = pem_ders(field("vcekCert")?, "VCEK")?;
                let chain = match json.get("certificateChain").and_then(|v| v.as_str()) {
                    Some(pem) if !pem.trim().is_empty() => pem_ders(pem.as_bytes(), "AMD chain")?,
                    _ => Vec::new(),
                };
                (vcek, chain)
            }
            Err(_) => {
                let mut all = pem_ders(bytes, "VCEK")?;
                let chain = all.split_off(all.len().min(1));
                (all, chain)
            }
        };
        let vcek = vcek.into_iter().next().ok_or("no VCEK certificate found")?;
        Ok(Self { vcek, chain })
    }

    /// Loads the certificates from `source`. The IMDS is asked up to three times, a second
    /// apart; this blocks the calling thread (evidence gathering runs on a blocking thread).
    pub fn load(source: &CertificateSource) -> Result<Self, String> {
        match source {
            CertificateSource::File(path) => {
                let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                Self::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
            }
            CertificateSource::Imds(egress) => {
                // A thread of its own with a small runtime: blocking on the caller's runtime
                // would panic when called from async code, and this runs once per process.
                let egress = egress.clone();
                std::thread::scope(|scope| {
                    scope
                        .spawn(move || fetch_imds_with_retries(&egress))
                        .join()
                        .unwrap_or_else(|_| Err("the IMDS request thread failed".into()))
                })
                .and_then(|bytes| Self::parse(&bytes).map_err(|e| format!("IMDS: {e}")))
            }
        }
    }
}

/// The IMDS answer, asked up to three times a second apart, on a current-thread runtime.
fn fetch_imds_with_retries(egress: &Endpoint) -> Result<Vec<u8>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("IMDS request runtime: {e}"))?;
    let mut last = String::new();
    for attempt in 1..=IMDS_ATTEMPTS {
        match runtime.block_on(fetch_imds(egress)) {
            Ok(bytes) => return Ok(bytes),
            Err(e) => last = e,
        }
        if attempt < IMDS_ATTEMPTS {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    Err(format!(
        "IMDS {IMDS_HOST}{IMDS_CERTIFICATION_PATH}: {last} (after {IMDS_ATTEMPTS} attempts)"
    ))
}

/// `GET` the certification endpoint through the egress tunnel.
async fn fetch_imds(egress: &Endpoint) -> Result<Vec<u8>, String> {
    let target = KmsTarget {
        host: IMDS_HOST.to_owned(),
        port: 80,
    };
    let stream = egress_tunnel(egress, &target, Duration::from_secs(10))
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = hyper::Request::get(IMDS_CERTIFICATION_PATH)
        .header(hyper::header::HOST, IMDS_HOST)
        .header("Metadata", "true")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(Duration::from_secs(10), async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        Ok(body.to_vec())
    })
    .await
    .map_err(|_| "no answer within 10 s".to_owned())?
}

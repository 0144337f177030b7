//! A client for AMD's Key Distribution Service (KDS), with a local cache and back-off.
//!
//! KDS rate-limits hard (HTTP 429), so every fetch goes through the cache first, and a
//! rate-limited or failing request is retried after the server's `Retry-After` or a capped
//! exponential back-off with jitter. Only 429, 5xx and transport errors are retried; any
//! other status fails at once. A downloaded certificate is parsed before it is cached.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use trustbridge_verifier::crl::RevocationList;
use trustbridge_verifier::snp_report::SnpReport;
use trustbridge_verifier::vcek_cache;
use trustbridge_verifier::x509::ParsedCertificate;

use crate::output_file::write_output;

/// AMD's public KDS.
pub(crate) const DEFAULT_KDS_URL: &str = "https://kdsintf.amd.com";

/// Retry policy.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Backoff {
    /// Attempts per request, the first included.
    pub(crate) attempts: u32,
    /// Delay before the first retry; doubled each time.
    pub(crate) initial: Duration,
    /// Longest delay.
    pub(crate) max: Duration,
}

impl Backoff {
    fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(d) = retry_after {
            return d.min(self.max);
        }
        let base = self
            .initial
            .saturating_mul(1u32 << retry.min(16))
            .min(self.max);
        // Up to 25 % jitter so that many verifiers do not retry in lockstep.
        // Jitter protects no secret: should the generator fail, wait the base delay.
        let mut r = [0u8; 2];
        if aws_lc_rs::rand::fill(&mut r).is_err() {
            return base;
        }
        let jitter = base.mul_f64(f64::from(u16::from_le_bytes(r)) / f64::from(u16::MAX) * 0.25);
        (base + jitter).min(self.max)
    }
}

/// What a fetch produced.
pub(crate) struct Fetched {
    pub(crate) product: &'static str,
    pub(crate) vcek: PathBuf,
    pub(crate) chain: PathBuf,
    /// The ARK's revocation lists of ASKs and of ASVKs.
    pub(crate) crls: [PathBuf; 2],
    /// Requests actually sent (0 when everything was cached).
    pub(crate) requests: u32,
}

/// Makes sure the cache holds the VCEK and AMD chain for `report` on `product`.
pub(crate) fn fetch(
    kds_url: &str,
    cache: &Path,
    report: &SnpReport,
    product: &'static str,
    backoff: Backoff,
) -> Result<Fetched> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    if report.chip_id_masked() {
        bail!(trustbridge_verifier::VerifyError::ChipIdMasked);
    }
    let base = kds_url.trim_end_matches('/');
    let mut requests = 0;
    let vcek = vcek_cache::vcek_path(cache, product, report);
    if !vcek.is_file() {
        let t = vcek_cache::reported_tcb(product, report);
        let mut url = format!(
            "{base}/vcek/v1/{product}/{}?blSPL={}&teeSPL={}&snpSPL={}&ucodeSPL={}",
            hex::encode(vcek_cache::hw_id(product, report)),
            t.bootloader,
            t.tee,
            t.snp,
            t.microcode
        );
        if let Some(fmc) = t.fmc {
            url.push_str(&format!("&fmcSPL={fmc}"));
        }
        let der = get(&agent, &url, backoff, &mut requests)?;
        ParsedCertificate::from_der(&der, "VCEK from KDS")
            .with_context(|| format!("{url} did not return a certificate"))?;
        store(&vcek, &der)?;
    }
    let chain = vcek_cache::chain_path(cache, product);
    if !chain.is_file() {
        let url = format!("{base}/vcek/v1/{product}/cert_chain");
        let pem = get(&agent, &url, backoff, &mut requests)?;
        let certs = ParsedCertificate::from_pem_chain(&pem, "AMD chain from KDS")
            .with_context(|| format!("{url} did not return certificates"))?;
        if certs.len() != 2 {
            bail!(
                "{url} returned {} certificates, expected the ASK and the ARK",
                certs.len()
            );
        }
        store(&chain, &pem)?;
    }
    // AMD's revocation lists: fetched when missing or past their next update, and cached
    // only once they verify under the product's pinned ARK.
    let crls = [
        (
            vcek_cache::crl_path(cache, product),
            format!("{base}/vcek/v1/{product}/crl"),
        ),
        (
            vcek_cache::vlek_crl_path(cache, product),
            format!("{base}/vlek/v1/{product}/crl"),
        ),
    ];
    let ark = trustbridge_verifier::amd::certificates()
        .iter()
        .find(|c| c.subject().contains(&format!("CN=ARK-{product}")))
        .with_context(|| format!("no built-in ARK for {product}"))?;
    let now = std::time::SystemTime::now();
    for (path, url) in &crls {
        let cached = std::fs::read(path)
            .ok()
            .and_then(|der| RevocationList::from_der(&der).ok());
        if cached.as_ref().is_some_and(|list| !list.stale_at(now)) {
            continue;
        }
        let der = get(&agent, url, backoff, &mut requests)?;
        let fetched = RevocationList::from_der(&der)
            .and_then(|list| list.verify(ark).map(|()| list))
            .with_context(|| {
                format!("{url} did not return a revocation list signed by {product}'s ARK")
            })?;
        // Never replace a list with an older one: that would undo revocations.
        if let Some(cached) = cached
            && fetched.this_update() < cached.this_update()
        {
            bail!(
                "{url} returned a revocation list issued before the cached one ({}): \
                     refusing to roll revocations back",
                path.display()
            );
        }
        store(path, &der)?;
    }
    let [(ask_crl, _), (asvk_crl, _)] = crls;
    Ok(Fetched {
        product,
        vcek,
        chain,
        crls: [ask_crl, asvk_crl],
        requests,
    })
}

fn store(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("cache path has no directory")?;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create cache directory {}", dir.display()))?;
    write_output(path, true, 0o644, |f| {
        std::io::Write::write_all(f, bytes).context("cannot write the cache")
    })
}

/// GET with retries on 429, 5xx and transport errors.
fn get(agent: &ureq::Agent, url: &str, backoff: Backoff, requests: &mut u32) -> Result<Vec<u8>> {
    let attempts = backoff.attempts.max(1);
    for attempt in 1..=attempts {
        *requests += 1;
        let (retry_after, reason) = match agent.get(url).call() {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                if status == 200 {
                    return resp
                        .body_mut()
                        .with_config()
                        .limit(1 << 20)
                        .read_to_vec()
                        .with_context(|| format!("reading {url}"));
                }
                if status != 429 && !(500..600).contains(&status) {
                    let body = resp.body_mut().read_to_string().unwrap_or_default();
                    bail!(
                        "KDS answered HTTP {status} for {url}: {}",
                        body.chars().take(200).collect::<String>()
                    );
                }
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                (retry_after, format!("HTTP {status}"))
            }
            Err(e) => (None, e.to_string()),
        };
        if attempt == attempts {
            bail!(
                "KDS request {url} failed after {attempts} attempts (last: {reason}); KDS rate-limits hard: try again later"
            );
        }
        let wait = backoff.delay(attempt - 1, retry_after);
        tracing::warn!(
            url,
            attempt,
            wait_ms = wait.as_millis() as u64,
            "KDS request failed ({reason}); retrying"
        );
        std::thread::sleep(wait);
    }
    bail!("KDS request {url} was not attempted")
}

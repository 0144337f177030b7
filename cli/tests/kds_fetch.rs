//! `trustbridge kds fetch` against a mock KDS on loopback: rate limiting and retries, the
//! cache (a second fetch sends nothing), failures, and offline verification from the cache.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use common::{fails, ok, s, tb};
use trustbridge_testkit::vectors_dir;

/// A scripted HTTP/1.1 server: `respond(path, nth request for that path)` gives the status,
/// extra headers and body. Records every request path.
struct MockKds {
    url: String,
    log: Arc<Mutex<Vec<String>>>,
}

type Responder = dyn Fn(&str, usize) -> (u16, &'static str, Vec<u8>) + Send + Sync;

impl MockKds {
    fn start(respond: Box<Responder>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(64) {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok() && line.trim() != "" {
                    line.clear();
                }
                let path = request_line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("")
                    .to_owned();
                let nth = {
                    let mut log = log2.lock().unwrap();
                    log.push(path.clone());
                    log.iter().filter(|p| **p == path).count()
                };
                let (status, headers, body) = respond(&path, nth);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n",
                    body.len()
                );
                let _ = stream.write_all(&body);
            }
        });
        Self { url, log }
    }

    fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

fn fetch(
    kds: &MockKds,
    report: &str,
    cache: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "kds",
        "fetch",
        "--report",
        report,
        "--cache",
        s(cache),
        "--kds-url",
        &kds.url,
        "--initial-backoff-ms",
        "10",
    ];
    args.extend_from_slice(extra);
    tb(args)
}

#[test]
fn rate_limited_fetch_retries_caches_and_verifies_offline() {
    let Some(v) = vectors_dir("kds_fetch") else {
        return;
    };
    let vcek = std::fs::read(v.join("sev-snp/trustee/test-vcek.der")).unwrap();
    let mut chain = std::fs::read(v.join("sev-snp/amd-certs/milan_ask.pem")).unwrap();
    chain.extend(std::fs::read(v.join("sev-snp/amd-certs/milan_ark.pem")).unwrap());
    let crl = amd_crl("milan_crl.der");
    let kds = MockKds::start(Box::new(move |path, nth| {
        if path == "/vcek/v1/Milan/cert_chain" {
            (200, "", chain.clone())
        } else if path == "/vcek/v1/Milan/crl" || path == "/vlek/v1/Milan/crl" {
            (200, "", crl.clone())
        } else if path.starts_with("/vcek/v1/Milan/c38427a30d4c7af9")
            && path.ends_with("?blSPL=3&teeSPL=0&snpSPL=8&ucodeSPL=115")
        {
            // Rate-limited twice, then served.
            if nth <= 2 {
                (429, "Retry-After: 0\r\n", b"slow down".to_vec())
            } else {
                (200, "", vcek.clone())
            }
        } else {
            (404, "", b"unknown".to_vec())
        }
    }));
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let report = v.join("sev-snp/trustee/test-report.bin");

    // A version 2 report does not name its product.
    let err = fails(fetch(&kds, s(&report), &cache, &[]));
    assert!(err.contains("--product"), "{err}");

    let out = ok(fetch(&kds, s(&report), &cache, &["--product", "milan"]));
    assert!(out.contains("KDS (6 request(s))"), "{out}");
    assert!(out.contains("ask crl"), "{out}");
    let vcek_requests = kds
        .requests()
        .iter()
        .filter(|p| p.contains("ucodeSPL"))
        .count();
    assert_eq!(
        vcek_requests,
        3,
        "two 429s and one success: {:?}",
        kds.requests()
    );

    // Cached: no request for the key or the chain the second time. AMD's list served here
    // is a real one from 2022, past its next update, so the lists are asked for again.
    let before = kds.requests().len();
    let out = ok(fetch(&kds, s(&report), &cache, &["--product", "milan"]));
    assert!(out.contains("KDS (2 request(s))"), "{out}");
    let again: Vec<String> = kds.requests()[before..].to_vec();
    assert!(again.iter().all(|p| p.ends_with("/crl")), "{again:?}");

    // The cache is all the verifier needs.
    let bytes = std::fs::read(&report).unwrap();
    let parsed = trustbridge_verifier::snp_report::SnpReport::parse(&bytes).unwrap();
    let certs = trustbridge_verifier::vcek_cache::load(&cache, &parsed)
        .unwrap()
        .unwrap();
    let at = UNIX_EPOCH + Duration::from_secs(1_739_923_200);
    let mut roots = trustbridge_verifier::TrustRoots::production();
    let lists = trustbridge_verifier::vcek_cache::revocation_lists(&cache).unwrap();
    assert_eq!(lists.len(), 2, "the ASK and ASVK lists are cached");
    for list in lists {
        roots.add_revocation_list(list);
    }
    trustbridge_verifier::verify_snp(&bytes, &certs, &roots, at).unwrap();
}

/// One of AMD's real revocation lists (verifier/tests/data/amd).
fn amd_crl(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../verifier/tests/data/amd/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// A KDS that serves the Milan VCEK and chain of the trustee vectors, and `crl` for
/// every revocation list.
fn milan_kds_serving(v: &std::path::Path, crl: Vec<u8>) -> MockKds {
    let vcek = std::fs::read(v.join("sev-snp/trustee/test-vcek.der")).unwrap();
    let mut chain = std::fs::read(v.join("sev-snp/amd-certs/milan_ask.pem")).unwrap();
    chain.extend(std::fs::read(v.join("sev-snp/amd-certs/milan_ark.pem")).unwrap());
    MockKds::start(Box::new(move |path, _| {
        if path == "/vcek/v1/Milan/cert_chain" {
            (200, "", chain.clone())
        } else if path.ends_with("/crl") {
            (200, "", crl.clone())
        } else {
            (200, "", vcek.clone())
        }
    }))
}

/// A list issued before the cached one is refused and the cache keeps the later list: a
/// KDS mirror (or whoever sits on the path to it) cannot undo a revocation by serving an
/// old, genuinely signed list.
#[test]
fn an_older_revocation_list_never_replaces_a_later_one() {
    let Some(v) = vectors_dir("kds_fetch") else {
        return;
    };
    let kds = milan_kds_serving(&v, amd_crl("milan_crl.der"));
    let dir = tempfile::tempdir().unwrap();
    let report = v.join("sev-snp/trustee/test-report.bin");
    ok(fetch(&kds, s(&report), dir.path(), &["--product", "milan"]));

    // AMD publishes one list per product at a time, so a later Milan list is not to be
    // had: Genoa's real list (issued 2022-10-31, past its next update) stands in for it.
    // What the refusal compares is the issue date; the Milan list served is from
    // 2022-05-09.
    let cached = dir.path().join("Milan/crl.der");
    let later = amd_crl("genoa_crl.der");
    std::fs::write(&cached, &later).unwrap();
    let err = fails(fetch(&kds, s(&report), dir.path(), &["--product", "milan"]));
    assert!(err.contains("issued before the cached one"), "{err}");
    assert!(err.contains("refusing to roll revocations back"), "{err}");
    assert_eq!(
        std::fs::read(&cached).unwrap(),
        later,
        "the cache is untouched"
    );
}

/// A revocation list that the product's ARK did not sign is not cached.
#[test]
fn a_revocation_list_from_another_ark_is_refused() {
    let Some(v) = vectors_dir("kds_fetch") else {
        return;
    };
    let kds = milan_kds_serving(&v, amd_crl("genoa_crl.der"));
    let dir = tempfile::tempdir().unwrap();
    let report = v.join("sev-snp/trustee/test-report.bin");
    let err = fails(fetch(&kds, s(&report), dir.path(), &["--product", "milan"]));
    assert!(err.contains("signed by Milan's ARK"), "{err}");
    assert!(!dir.path().join("Milan/crl.der").exists());
}

#[test]
fn persistent_rate_limit_and_unknown_keys_fail_clearly() {
    let Some(v) = vectors_dir("kds_fetch") else {
        return;
    };
    let report = v.join("sev-snp/trustee/test-report.bin");
    let dir = tempfile::tempdir().unwrap();

    let limited = MockKds::start(Box::new(|_, _| (429, "", Vec::new())));
    let err = fails(fetch(
        &limited,
        s(&report),
        dir.path(),
        &["--product", "milan", "--max-attempts", "3"],
    ));
    assert!(
        err.contains("after 3 attempts") && err.contains("HTTP 429"),
        "{err}"
    );
    assert_eq!(limited.requests().len(), 3);

    let missing = MockKds::start(Box::new(|_, _| (404, "", b"no such chip".to_vec())));
    let err = fails(fetch(
        &missing,
        s(&report),
        dir.path(),
        &["--product", "milan"],
    ));
    assert!(err.contains("HTTP 404"), "{err}");
    assert_eq!(missing.requests().len(), 1, "a 404 is not retried");

    // A body that is not a certificate is never cached.
    let junk = MockKds::start(Box::new(|_, _| (200, "", b"<html>oops</html>".to_vec())));
    let err = fails(fetch(
        &junk,
        s(&report),
        dir.path(),
        &["--product", "milan"],
    ));
    assert!(err.contains("did not return a certificate"), "{err}");
    assert!(
        !dir.path().join("Milan").exists()
            || std::fs::read_dir(dir.path().join("Milan"))
                .unwrap()
                .next()
                .is_none()
    );
}

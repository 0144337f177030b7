//! `tb-kms`, `tb-relay` and `tb-sentinel` as three real processes on Unix sockets and
//! loopback, with the simulated TEE: boot to Ready, a denied contract, a tampered blob, the
//! relay killed during hydrate, egress refused, and no plaintext anywhere on the relay.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use trustbridge_protocol::bundle::ProviderPublicKey;
use trustbridge_tests::{Proc, binary, free_port, ok, run, s};

const ASSET: &str = "acme/llm@v1";
/// The model's marker: a relay that saw plaintext would see this.
const MARKER: &[u8] = b"TRUSTBRIDGE-PLAINTEXT-MARKER-";

fn spawn(bin: &str, args: &[String], log: &Path) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Proc(
        Command::new(binary(bin))
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// `GET path` over a Unix socket: (status, body).
fn get_unix(sock: &Path, path: &str) -> Option<(u16, String)> {
    let mut s = UnixStream::connect(sock).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: sentinel\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status = resp.split_whitespace().nth(1)?.parse().ok()?;
    Some((
        status,
        resp.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned(),
    ))
}

/// `GET path` through the relay's ingress on loopback.
fn get_tcp(port: u16, path: &str) -> Option<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut resp = agent
        .get(&format!("http://127.0.0.1:{port}{path}"))
        .call()
        .ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.body_mut().read_to_string().ok()?))
}

struct Deployment {
    dir: tempfile::TempDir,
    kms_port: u16,
    ingress_port: u16,
    _kms: Proc,
}

impl Deployment {
    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Provider, simulation CA, a model with a marker, a sealed bundle, a broker process
    /// with the bundle registered and contract `c-1`.
    fn new(model_bytes: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        ok(run("tb-kms", &["kek", "generate", "--out", &s(&p("kek"))]));
        ok(run(
            "trustbridge",
            &["keygen", "--out", &s(&p("provider.key"))],
        ));
        ok(run(
            "trustbridge",
            &["keygen", "--out", &s(&p("admin.key"))],
        ));
        let sim = ok(run(
            "trustbridge",
            &["sim-ca", "init", "--out", &s(&p("sim-ca"))],
        ));
        std::fs::create_dir(p("model")).unwrap();
        let weights: Vec<u8> = MARKER.iter().copied().cycle().take(model_bytes).collect();
        std::fs::write(p("model/weights.bin"), &weights).unwrap();
        std::fs::write(
            p("model/config.json"),
            b"{\"marker\": \"TRUSTBRIDGE-PLAINTEXT-MARKER-\"}",
        )
        .unwrap();
        ok(run(
            "trustbridge",
            &[
                "--quiet",
                "seal",
                "--in",
                &s(&p("model")),
                "--out",
                &s(&p("bundle")),
                "--asset-id",
                ASSET,
                "--signing-key",
                &s(&p("provider.key")),
                "--key-out",
                &s(&p("dek.key")),
                "--segment-size",
                "1MiB",
            ],
        ));
        let public = |f: &str| {
            ProviderPublicKey::parse(&std::fs::read_to_string(p(f)).unwrap())
                .unwrap()
                .to_hex()
        };
        let policy = format!(
            "[admin]\nkeys = [\"{}\"]\n{}\n[[asset]]\nid = \"{ASSET}\"\nprovider_key = \"{}\"\n  [[asset.nitro]]\n  pcr0 = \"{}\"\n",
            public("admin.key.pub"),
            &sim[sim.find("[simulation]").unwrap()..],
            public("provider.key.pub"),
            "10".repeat(48)
        );
        std::fs::write(p("policy.toml"), policy).unwrap();
        let kms_port = free_port();
        let kms = spawn(
            "tb-kms",
            &[
                "serve",
                "--db",
                &s(&p("kms.db")),
                "--listen",
                &format!("127.0.0.1:{kms_port}"),
                "--kek-file",
                &s(&p("kek")),
                "--policy",
                &s(&p("policy.toml")),
            ]
            .map(String::from),
            &p("tb-kms.log"),
        );
        let kms_url = format!("http://127.0.0.1:{kms_port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while get_tcp(kms_port, "/health").is_none() {
            assert!(Instant::now() < deadline, "tb-kms did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        ok(run(
            "trustbridge",
            &[
                "register",
                "--kms",
                &kms_url,
                "--bundle",
                &s(&p("bundle")),
                "--key",
                &s(&p("dek.key")),
                "--admin-key",
                &s(&p("admin.key")),
            ],
        ));
        ok(run(
            "trustbridge",
            &[
                "contract",
                "add",
                "--kms",
                &kms_url,
                "--admin-key",
                &s(&p("admin.key")),
                "--id",
                "c-1",
                "--asset",
                ASSET,
                "--not-before",
                "2026-01-01T00:00:00Z",
                "--not-after",
                "2030-01-01T00:00:00Z",
            ],
        ));
        Self {
            ingress_port: free_port(),
            kms_port,
            dir,
            _kms: kms,
        }
    }

    fn relay(&self, allow_kms: bool) -> Proc {
        let allow = if allow_kms {
            format!("127.0.0.1:{}", self.kms_port)
        } else {
            "127.0.0.1:1".to_owned()
        };
        spawn(
            "tb-relay",
            &[
                "--ingress".into(),
                format!("tcp://127.0.0.1:{}", self.ingress_port),
                "--sentinel".into(),
                format!("unix://{}", s(&self.p("sentinel.sock"))),
                "--egress-listen".into(),
                format!("unix://{}", s(&self.p("egress.sock"))),
                "--egress-allow".into(),
                allow,
                "--bundle-listen".into(),
                format!("unix://{}", s(&self.p("bundles.sock"))),
                "--bundle-dir".into(),
                s(&self.p("bundle")),
            ],
            &self.p("tb-relay.log"),
        )
    }

    fn sentinel(&self, contract: &str, chunk_bytes: u64, concurrency: usize) -> Proc {
        spawn(
            "tb-sentinel",
            &[
                "--listen".into(),
                format!("unix://{}", s(&self.p("sentinel.sock"))),
                "--relay-egress".into(),
                format!("unix://{}", s(&self.p("egress.sock"))),
                "--relay-bundles".into(),
                format!("unix://{}", s(&self.p("bundles.sock"))),
                "--kms-url".into(),
                format!("http://127.0.0.1:{}", self.kms_port),
                "--asset-id".into(),
                ASSET.into(),
                "--contract-id".into(),
                contract.into(),
                "--tee".into(),
                "simulated".into(),
                "--sim-ca".into(),
                s(&self.p("sim-ca")),
                "--download-chunk-bytes".into(),
                chunk_bytes.to_string(),
                "--download-concurrency".into(),
                concurrency.to_string(),
                "--retry-initial-ms".into(),
                "50".into(),
                "--retry-attempts".into(),
                "60".into(),
            ],
            &self.p("tb-sentinel.log"),
        )
    }

    /// The sentinel's /status, read on its own socket.
    fn status(&self) -> Option<serde_json::Value> {
        get_unix(&self.p("sentinel.sock"), "/status")
            .and_then(|(_, body)| serde_json::from_str(&body).ok())
    }

    /// Waits until the sentinel reports `state` (or Failed), and returns its status.
    fn wait_for(&self, states: &[&str]) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = self.status() {
                if states.contains(&st["state"].as_str().unwrap_or_default()) {
                    return st;
                }
            }
            assert!(
                Instant::now() < deadline,
                "sentinel never reached {states:?}: {:?}\n{}",
                self.status(),
                std::fs::read_to_string(self.p("tb-sentinel.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

#[test]
fn boots_to_ready_and_the_relay_never_sees_plaintext() {
    let d = Deployment::new(3 << 20);
    let _relay = d.relay(true);
    let _sentinel = d.sentinel("c-1", 1 << 20, 4);
    let st = d.wait_for(&["Ready", "Failed"]);
    assert_eq!(st["state"], "Ready", "{st}");
    assert_eq!(st["files"], 2);
    assert_eq!(st["simulated"], true);
    // Through the relay's ingress, as a client would see it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let health = loop {
        if let Some(h) = get_tcp(d.ingress_port, "/health") {
            break h;
        }
        assert!(Instant::now() < deadline, "relay ingress not answering");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(health, (200, "Ready".to_owned()));
    let (code, status) = get_tcp(d.ingress_port, "/status").unwrap();
    assert_eq!(code, 200);
    assert!(status.contains("\"state\":\"Ready\""), "{status}");
    assert_eq!(get_tcp(d.ingress_port, "/readiness").unwrap().0, 200);
    // Everything the relay stored (the bundle it served) and logged holds no plaintext.
    let mut scanned = 0;
    for path in walk(&d.p("bundle"))
        .into_iter()
        .chain([d.p("tb-relay.log")])
    {
        let bytes = std::fs::read(&path).unwrap();
        scanned += bytes.len();
        assert!(
            !bytes.windows(MARKER.len()).any(|w| w == MARKER),
            "plaintext marker in {}",
            path.display()
        );
    }
    assert!(scanned > 3 << 20, "scanned {scanned} bytes");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn a_denied_contract_never_reaches_ready() {
    let d = Deployment::new(64 << 10);
    let _relay = d.relay(true);
    let _sentinel = d.sentinel("c-unknown", 1 << 20, 2);
    let st = d.wait_for(&["Ready", "Failed"]);
    assert_eq!(st["state"], "Failed");
    assert_eq!(st["reason"], "unknown_contract", "{st}");
    assert_eq!(get_unix(&d.p("sentinel.sock"), "/health").unwrap().0, 503);
    assert_eq!(
        get_unix(&d.p("sentinel.sock"), "/readiness").unwrap().0,
        503
    );
}

#[test]
fn a_tampered_blob_fails_and_nothing_is_served() {
    let d = Deployment::new(2 << 20);
    let file = d.p("bundle/weights.bin.sealed");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[1_500_000] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    let _relay = d.relay(true);
    let _sentinel = d.sentinel("c-1", 1 << 20, 2);
    let st = d.wait_for(&["Ready", "Failed"]);
    assert_eq!(st["state"], "Failed");
    assert_eq!(st["reason"], "tampered_bundle", "{st}");
    assert!(st["files"].is_null(), "no model is held");
    assert_eq!(get_unix(&d.p("sentinel.sock"), "/health").unwrap().0, 503);
}

#[test]
fn egress_to_a_destination_off_the_allow_list_is_refused_and_logged() {
    let d = Deployment::new(64 << 10);
    let _relay = d.relay(false);
    let _sentinel = d.sentinel("c-1", 1 << 20, 2);
    let st = d.wait_for(&["Ready", "Failed"]);
    assert_eq!(st["state"], "Failed");
    assert_eq!(st["reason"], "egress_refused", "{st}");
    let log = std::fs::read_to_string(d.p("tb-relay.log")).unwrap();
    assert!(
        log.contains("egress refused: destination not on the allow-list")
            && log.contains(&format!("127.0.0.1:{}", d.kms_port)),
        "{log}"
    );
}

#[test]
fn the_relay_killed_during_hydrate_is_survived() {
    let d = Deployment::new(48 << 20);
    let mut relay = d.relay(true);
    // Small chunks, one at a time: hydration takes long enough to interrupt.
    let _sentinel = d.sentinel("c-1", 64 << 10, 1);
    d.wait_for(&["Hydrate", "Decrypt", "Ready", "Failed"]);
    let st = d.status().unwrap();
    assert_eq!(
        st["state"], "Hydrate",
        "the relay must be killed during hydrate: {st}"
    );
    relay.0.kill().unwrap();
    relay.0.wait().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        d.status().unwrap()["state"],
        "Hydrate",
        "still hydrating, waiting for the relay"
    );
    let _relay = d.relay(true);
    let st = d.wait_for(&["Ready", "Failed"]);
    assert_eq!(st["state"], "Ready", "{st}");
    let log = std::fs::read_to_string(d.p("tb-sentinel.log")).unwrap();
    assert!(
        log.contains("transient failure; retrying") && log.contains("/bundle/weights.bin.sealed"),
        "the sentinel retried the download"
    );
}

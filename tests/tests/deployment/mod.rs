//! A deployment for process-level tests: a broker process with a registered bundle and
//! contract `c-1`, and helpers to start the relay and sentinel on Unix sockets.
#![allow(dead_code, unreachable_pub)] // each test file uses a different part

pub mod tap;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use trustbridge_protocol::bundle::ProviderPublicKey;
use trustbridge_tests::{Proc, binary, free_port, ok, run, s};

pub const ASSET: &str = "acme/llm@v1";
/// The model's marker: a relay that saw plaintext would see this.
pub const MARKER: &[u8] = b"TRUSTBRIDGE-PLAINTEXT-MARKER-";

pub fn spawn(bin: &str, args: &[String], log: &Path) -> Proc {
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
pub fn get_unix(sock: &Path, path: &str) -> Option<(u16, String)> {
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
pub fn get_tcp(port: u16, path: &str) -> Option<(u16, String)> {
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

pub struct Deployment {
    pub dir: tempfile::TempDir,
    pub kms_port: u16,
    /// The broker's identity key (hex), as `tb-kms identity` prints it.
    pub kms_key: String,
    pub ingress_port: u16,
    /// The `[simulation]` section that accepts the deployment's simulated TEE.
    pub simulation: String,
    /// The sockets each side dials for the other (the peer's own, or a tap's).
    links: Links,
    _kms: Proc,
}

/// Which socket each side of a relay-sentinel link connects to.
struct Links {
    /// The relay's ingress forwards here.
    sentinel: PathBuf,
    /// The sentinel's egress and bundle requests go here.
    egress: PathBuf,
    bundles: PathBuf,
}

impl Deployment {
    pub fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Provider, simulation CA, a model with a marker, a sealed bundle, a broker process
    /// with the bundle registered and contract `c-1`.
    pub fn new(model_bytes: usize) -> Self {
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
        let kms_key = ok(run("tb-kms", &["identity", "--kek-file", &s(&p("kek"))]))
            .trim()
            .to_owned();
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
                "--kms-key",
                &kms_key,
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
                "--kms-key",
                &kms_key,
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
            simulation: sim[sim.find("[simulation]").unwrap()..].to_owned(),
            kms_port,
            kms_key,
            links: Links {
                sentinel: p("sentinel.sock"),
                egress: p("egress.sock"),
                bundles: p("bundles.sock"),
            },
            dir,
            _kms: kms,
        }
    }

    /// A client policy (`trustbridge proxy --policy`) that accepts this deployment's
    /// sentinel: its broker, its simulated TEE's PCR0, the sealed model.
    pub fn client_policy(&self) -> String {
        let manifest = std::fs::read(self.p("bundle/manifest.cose")).unwrap();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &manifest);
        format!(
            "broker_key = \"{}\"\nmodels = [\"{}\"]\n[[nitro]]\npcr0 = \"{}\"\n\n{}",
            self.kms_key,
            hex::encode(digest),
            "10".repeat(48),
            self.simulation
        )
    }

    /// Puts a recording tap on each of the three relay-sentinel links.
    pub fn tapped(mut self) -> (Self, Vec<tap::Recording>) {
        let mut recordings = Vec::new();
        for (name, real) in [
            ("sentinel", self.p("sentinel.sock")),
            ("egress", self.p("egress.sock")),
            ("bundles", self.p("bundles.sock")),
        ] {
            let via = self.p(&format!("tap-{name}.sock"));
            recordings.push(tap::tap(&via, real));
            match name {
                "sentinel" => self.links.sentinel = via,
                "egress" => self.links.egress = via,
                _ => self.links.bundles = via,
            }
        }
        (self, recordings)
    }

    /// Puts a tap on the sentinel's bundle link that lets the first `pass` connections
    /// through and holds the others until its gate opens: a download stopped at a known
    /// point.
    pub fn gated_bundles(mut self, pass: usize) -> (Self, tap::Gate) {
        let via = self.p("gate-bundles.sock");
        let (_, gate) = tap::gated_tap(&via, self.p("bundles.sock"), Some(pass));
        self.links.bundles = via;
        (self, gate)
    }

    pub fn relay(&self, allow_kms: bool) -> Proc {
        self.relay_with(allow_kms, &["--bundle-dir".into(), s(&self.p("bundle"))])
    }

    /// The relay with its bundle options (`--bundle-dir`, `--bundle-source`, ...) given.
    pub fn relay_with(&self, allow_kms: bool, bundle: &[String]) -> Proc {
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
                format!("unix://{}", s(&self.links.sentinel)),
                "--egress-listen".into(),
                format!("unix://{}", s(&self.p("egress.sock"))),
                "--egress-allow".into(),
                allow,
                "--bundle-listen".into(),
                format!("unix://{}", s(&self.p("bundles.sock"))),
            ]
            .into_iter()
            .chain(bundle.iter().cloned())
            .collect::<Vec<_>>(),
            &self.p("tb-relay.log"),
        )
    }

    pub fn sentinel(&self, contract: &str, chunk_bytes: u64, concurrency: usize) -> Proc {
        self.sentinel_with(contract, chunk_bytes, concurrency, &[])
    }

    /// [`Self::sentinel`] with more options; an empty `contract` is left out.
    pub fn sentinel_with(
        &self,
        contract: &str,
        chunk_bytes: u64,
        concurrency: usize,
        extra: &[String],
    ) -> Proc {
        spawn(
            "tb-sentinel",
            &[
                &[
                    "--listen".into(),
                    format!("unix://{}", s(&self.p("sentinel.sock"))),
                    "--relay-egress".into(),
                    format!("unix://{}", s(&self.links.egress)),
                    "--relay-bundles".into(),
                    format!("unix://{}", s(&self.links.bundles)),
                    "--kms-url".into(),
                    format!("http://127.0.0.1:{}", self.kms_port),
                    "--kms-key".into(),
                    // `extra` may pin another broker key (or none, with "").
                    extra
                        .iter()
                        .position(|a| a == "--kms-key")
                        .map_or_else(|| self.kms_key.clone(), |i| extra[i + 1].clone()),
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
                ][..],
                &without_kms_key(extra),
            ]
            .concat()
            .into_iter()
            // An empty contract leaves --contract-id out (for a --config file to give it).
            .filter(|a| !(contract.is_empty() && (a == "--contract-id" || a.is_empty())))
            .collect::<Vec<_>>(),
            &self.p("tb-sentinel.log"),
        )
    }

    /// The sentinel's /status, read on its own socket.
    pub fn status(&self) -> Option<serde_json::Value> {
        get_unix(&self.p("sentinel.sock"), "/status")
            .and_then(|(_, body)| serde_json::from_str(&body).ok())
    }

    /// Waits until the sentinel reports `state` (or Failed), and returns its status.
    pub fn wait_for(&self, states: &[&str]) -> serde_json::Value {
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

/// `extra` without its `--kms-key VALUE` pair (which replaces the deployment's own).
fn without_kms_key(extra: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip = false;
    for a in extra {
        if skip {
            skip = false;
        } else if a == "--kms-key" {
            skip = true;
        } else {
            out.push(a.clone());
        }
    }
    out
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
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

/// A stand-in for the runtime (vLLM's OpenAI server) on loopback: answers every request
/// with an OpenAI-shaped chat completion whose content is [`COMPLETION_MARKER`] followed by
/// the size of the request it read; streamed as server-sent events (two content chunks,
/// a final chunk, `[DONE]`) when the request asks `"stream": true`. Returns its URL.
pub fn runtime_stand_in() -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream);
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let model = request["model"].as_str().unwrap_or("stand-in").to_owned();
            let content = format!(
                "{}{}",
                String::from_utf8_lossy(COMPLETION_MARKER),
                body.len()
            );
            let mut stream = reader.into_inner();
            if request["stream"] == true {
                let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
                    let c = serde_json::json!({
                        "id": "chatcmpl-stand-in", "object": "chat.completion.chunk",
                        "created": 1_700_000_000, "model": model,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                    });
                    format!("data: {c}\n\n")
                };
                let (a, b) = content.split_at(content.len() / 2);
                let events = [
                    chunk(
                        serde_json::json!({"role": "assistant", "content": a}),
                        serde_json::Value::Null,
                    ),
                    chunk(serde_json::json!({"content": b}), serde_json::Value::Null),
                    chunk(serde_json::json!({}), serde_json::json!("stop")),
                    "data: [DONE]\n\n".to_owned(),
                ];
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
                );
                for e in events {
                    let _ = stream.write_all(e.as_bytes());
                    let _ = stream.flush();
                }
                continue;
            }
            let answer = serde_json::json!({
                "id": "chatcmpl-stand-in",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
            })
            .to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    url
}

/// What the stand-in runtime answers with.
pub const COMPLETION_MARKER: &[u8] = b"TRUSTBRIDGE-COMPLETION-MARKER-";

/// What a client asks.
pub const PROMPT_MARKER: &[u8] = b"TRUSTBRIDGE-PROMPT-MARKER-";

/// One chat request through the relay's Oblivious HTTP gateway on `ingress_port`: the
/// decapsulated Binary HTTP answer's status and content.
pub fn chat_through(ingress_port: u16, prompt: &str) -> (u16, Vec<u8>) {
    use std::io::Cursor;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let base = format!("http://127.0.0.1:{ingress_port}/.well-known/ohttp-gateway");
    let keys = agent
        .get(&base)
        .call()
        .unwrap()
        .body_mut()
        .read_to_vec()
        .unwrap();
    let mut m = bhttp::Message::request(
        b"POST".to_vec(),
        b"https".to_vec(),
        b"sentinel".to_vec(),
        b"/v1/chat/completions".to_vec(),
    );
    m.put_header("content-type", "application/json");
    m.write_content(
        serde_json::json!({"messages": [{"role": "user", "content": prompt}]}).to_string(),
    );
    let mut request = Vec::new();
    m.write_bhttp(bhttp::Mode::KnownLength, &mut request)
        .unwrap();
    let (encapsulated, pending) =
        trustbridge_protocol::ohttp::gateway::encapsulate(&keys, &request).unwrap();
    let mut resp = agent
        .post(&base)
        .header("content-type", "message/ohttp-req")
        .send(&encapsulated[..])
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body = resp.body_mut().read_to_vec().unwrap();
    let answer = pending.decapsulate(&body).unwrap();
    let m = bhttp::Message::read_bhttp(&mut Cursor::new(&answer[..])).unwrap();
    (m.control().status().unwrap().code(), m.content().to_vec())
}

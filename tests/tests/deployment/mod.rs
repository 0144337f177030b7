//! A deployment for process-level tests: the one test world (a key broker with a
//! registered bundle and contract `c-1`) and helpers to start the relay and sentinel as
//! processes on Unix sockets.
#![allow(dead_code, unreachable_pub)] // each test file uses a different part

pub mod tap;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use trustbridge_protocol::sealed::SegmentSize;
use trustbridge_testkit::world::{World, WorldSpec};
use trustbridge_tests::{Proc, binary, free_port, s};

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
    /// The sockets each side dials for the other (the peer's own, or a tap's).
    links: Links,
    /// The world (its broker serves until dropped).
    pub world: World,
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

    /// The one test world (`trustbridge_testkit::world`): provider, simulation CA, a model
    /// with a marker sealed in 1 MiB segments, and the key broker (embedded in the test
    /// process, SQLite in the folder) with the bundle registered and contract `c-1`; the
    /// provider's and admin's keys in `provider.key` and `admin.key` for the CLI.
    pub fn new(model_bytes: usize) -> Self {
        let weights: Vec<u8> = MARKER.iter().copied().cycle().take(model_bytes).collect();
        Self::with_files(vec![
            ("weights.bin".into(), weights),
            (
                "config.json".into(),
                b"{\"marker\": \"TRUSTBRIDGE-PLAINTEXT-MARKER-\"}".to_vec(),
            ),
        ])
    }

    /// [`Self::new`] with `files` (bundle path, contents) as the model.
    pub fn with_files(files: Vec<(String, Vec<u8>)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let spec = WorldSpec {
            asset: ASSET.into(),
            contract: "c-1".into(),
            files,
            segment_size: SegmentSize::new(1 << 20).unwrap(),
            sets: format!("[[asset.nitro]]\npcr0 = \"{}\"\n", "10".repeat(48)),
            ..WorldSpec::default()
        };
        let world = World::build(dir.path(), spec).unwrap();
        world.write_keys().unwrap();
        let p = |n: &str| dir.path().join(n);
        Self {
            ingress_port: free_port(),
            kms_port: world.broker_port(),
            kms_key: world.broker_key().to_string(),
            links: Links {
                sentinel: p("sentinel.sock"),
                egress: p("egress.sock"),
                bundles: p("bundles.sock"),
            },
            world,
            dir,
        }
    }

    /// A client policy (`trustbridge proxy --policy`) that accepts this deployment's
    /// sentinel: its broker and provider, its model, the simulated TEE's measurements.
    pub fn client_policy(&self) -> String {
        self.world.client_policy(false)
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
        // The model is synthetic: runtime-proxy mode, unless a test chooses.
        let engine: Vec<String> = if extra.iter().any(|a| a == "--engine") {
            vec![]
        } else {
            vec!["--engine".into(), "runtime".into()]
        };
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
                &engine,
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
            if let Some(st) = self.status()
                && states.contains(&st["state"].as_str().unwrap_or_default())
            {
                return st;
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

/// Starts `trustbridge proxy` with `policy`; its port once it answers.
pub fn proxy(d: &Deployment, policy: &str, extra: &[String]) -> (Proc, u16) {
    let path = d.p(&format!("client-{}.toml", free_port()));
    std::fs::write(&path, policy).unwrap();
    let port = free_port();
    let mut args = vec![
        "proxy".to_owned(),
        "--relay".into(),
        format!("http://127.0.0.1:{}", d.ingress_port),
        "--policy".into(),
        s(&path),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
    ];
    args.extend_from_slice(extra);
    let p = spawn("trustbridge", &args, &d.p("proxy.log"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while get_tcp(port, "/trustbridge/status").is_none() {
        assert!(
            Instant::now() < deadline,
            "proxy did not start: {}",
            std::fs::read_to_string(d.p("proxy.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (p, port)
}

//! The confidential GPU VM path, without a GPU: `tb-sentinel --engine runtime` decrypts
//! the real models to tmpfs (files mode 0600), raises its ready signal, and proxies the
//! API, over a Unix socket, to `trustbridge runtime` (the built-in engine as an external
//! runtime, standing where vLLM stands) reading those files; answers reach a client through `trustbridge
//! proxy` verified, their receipts covering the proxied exchange (token counts included);
//! on shutdown the signal and the plaintext files are gone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod deployment;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use base64::Engine;
use deployment::*;
use trustbridge_tests::s;

const GGUF: &str = "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

#[test]
fn a_runtime_beside_the_sentinel_answers_through_it_with_receipts() {
    let Some(models) = trustbridge_testkit::models_dir(
        "a_runtime_beside_the_sentinel_answers_through_it_with_receipts",
        GGUF,
    ) else {
        return;
    };
    let mut files = vec![(
        "SmolLM2-135M-Instruct.Q4_1.gguf".to_owned(),
        std::fs::read(models.join(GGUF)).unwrap(),
    )];
    for name in ["model.safetensors", "tokenizer.json", "config.json"] {
        files.push((
            format!("minilm/{name}"),
            std::fs::read(models.join("minilm").join(name)).unwrap(),
        ));
    }
    let d = Deployment::with_files(files.clone());
    let _relay = d.relay(true);
    let out = tempfile::Builder::new().tempdir_in("/dev/shm").unwrap();
    std::fs::set_permissions(out.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let signal = d.p("ready.json");
    let runtime_socket = d.p("runtime.sock");
    let mut args = vec![
        "--engine".to_owned(),
        "runtime".into(),
        "--runtime-url".into(),
        format!("unix://{}", s(&runtime_socket)),
        "--model-output".into(),
        format!("tmpfs:{}", s(out.path())),
        "--ready-signal".into(),
        s(&signal),
    ];
    // tmpfs output is refused while swap is active; a machine with swap accepts it here.
    if std::fs::read_to_string("/proc/swaps").map_or(true, |t| t.lines().count() > 1) {
        args.push("--allow-swap".into());
    }
    let mut sentinel = d.sentinel_with("c-1", 1 << 20, 2, &args);
    let st = d.wait_for(&["Ready", "Failed"]);
    assert_eq!(st["state"], "Ready", "{st}");

    // The ready signal says what is where.
    let raised: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&signal).unwrap()).unwrap();
    assert_eq!(raised["state"], "Ready");
    assert_eq!(raised["asset"], ASSET);
    assert_eq!(
        raised["model_output"],
        format!("tmpfs:{}", s(out.path())),
        "{raised}"
    );
    assert_eq!(
        raised["manifest_sha256"],
        hex::encode(d.world.manifest_sha256)
    );
    // The plaintext on tmpfs, private to the sentinel's user.
    for (name, contents) in &files {
        let path = out.path().join(name);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600,
            "{name}"
        );
        assert!(std::fs::read(&path).unwrap() == *contents, "{name}");
        assert!(
            raised["files"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == name.as_str()),
            "{raised}"
        );
    }

    // The runtime, from the files the sentinel wrote, on the loopback.
    let _runtime = spawn(
        "trustbridge",
        &[
            "runtime".into(),
            "--model-dir".into(),
            s(out.path()),
            "--listen".into(),
            format!("unix://{}", s(&runtime_socket)),
            "--model-id".into(),
            ASSET.into(),
        ],
        &d.p("runtime.log"),
    );
    let started = Instant::now();
    while !healthy(&runtime_socket) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the runtime did not start: {}",
            std::fs::read_to_string(d.p("runtime.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A client through trustbridge proxy: verified, and the receipt covers the exchange.
    let (_proxy, port) = proxy(&d, &d.client_policy(), &[]);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut resp = agent
        .post(&format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .header("content-type", "application/json")
        .send(
            serde_json::json!({
                "model": ASSET,
                "messages": [{"role": "user", "content": "What is two plus two?"}],
                "max_tokens": 16,
                "temperature": 0,
            })
            .to_string(),
        )
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["trustbridge-verified"], "true");
    let receipt = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(resp.headers()["trustbridge-receipt"].as_bytes())
        .unwrap();
    let body: serde_json::Value =
        serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    assert!(
        !body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .is_empty(),
        "{body}"
    );
    let claims = trustbridge_protocol::receipt::UnverifiedReceipt::parse(&receipt)
        .unwrap()
        .claims()
        .clone();
    let usage = claims.usage.expect("the runtime's usage in the receipt");
    assert_eq!(usage.prompt_tokens, body["usage"]["prompt_tokens"]);
    assert_eq!(usage.completion_tokens, body["usage"]["completion_tokens"]);
    assert_eq!(claims.model, d.world.manifest_sha256);
    // Embeddings through the same path.
    let mut resp = agent
        .post(&format!("http://127.0.0.1:{port}/v1/embeddings"))
        .header("content-type", "application/json")
        .send(serde_json::json!({"model": ASSET, "input": "four"}).to_string())
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["trustbridge-verified"], "true");
    let body: serde_json::Value =
        serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 384);

    // Shutdown: the signal goes, then the plaintext.
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &sentinel.0.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while sentinel.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "tb-sentinel did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!signal.exists(), "the ready signal outlived Ready");
    for (name, _) in &files {
        assert!(
            !out.path().join(name).exists(),
            "{name} outlived the sentinel"
        );
    }
}

/// Whether the runtime on the Unix socket `path` answers `GET /health` with 200.
fn healthy(path: &std::path::Path) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(path) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut answer = Vec::new();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: runtime\r\nconnection: close\r\n\r\n")
        .and_then(|()| stream.read_to_end(&mut answer))
        .is_ok()
        && answer.starts_with(b"HTTP/1.1 200")
}

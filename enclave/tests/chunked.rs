//! Chunked Oblivious HTTP through the relay: a streamed answer arrives in pieces, its
//! receipt (in the trailer) covers every piece and verifies with the client engine, the
//! relay logs it from the outer trailer; a cut, reordered, dropped or altered chunk is
//! detected by the client; a client that goes away mid-stream leaves no gap in the log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

#[path = "support/gateway.rs"]
mod support;
#[path = "support/world.rs"]
mod world;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use support::{STREAM_EVENTS, http, post_chunked, read, send_chunked, session, setup};
use trustbridge_client::session::Request;
use trustbridge_protocol::ohttp::{CHUNKED_REQUEST_MEDIA_TYPE, GATEWAY_PATH};
use trustbridge_verifier::receipt::{check_chains, verify_against};

fn stream_request(prompt: &str) -> Request {
    Request {
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        headers: vec![("content-type".into(), b"application/json".to_vec())],
        body: format!(r#"{{"messages":[{{"role":"user","content":"{prompt}"}}],"stream":true}}"#)
            .into_bytes(),
    }
}

/// The encapsulated chunks of a chunked response: the nonce, then (length, ciphertext)
/// pieces; the last is the final chunk (length 0 on the wire, running to the end).
fn split_chunks(body: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let (nonce, mut rest) = body.split_at(16);
    let mut chunks = Vec::new();
    loop {
        let first = rest[0];
        let n = 1usize << (first >> 6);
        let mut len = u64::from(first & 0x3f);
        for b in &rest[1..n] {
            len = (len << 8) | u64::from(*b);
        }
        if len == 0 {
            chunks.push(rest.to_vec());
            break;
        }
        let end = n + len as usize;
        chunks.push(rest[..end].to_vec());
        rest = &rest[end..];
    }
    (nonce.to_vec(), chunks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_arrives_in_pieces_with_a_receipt_over_all_of_them() {
    let s = setup().await;
    let session = session(&s).await;
    let sealed = session
        .seal_chunked(&stream_request("stream please"))
        .unwrap();
    let (status, media, frames) = post_chunked(&s.relay, sealed.encapsulated).await;
    assert_eq!(status, 200);
    assert_eq!(media, "message/ohttp-chunked-res");
    assert!(
        frames.len() > STREAM_EVENTS,
        "the answer crossed the relay in {} pieces",
        frames.len()
    );
    let body = frames.concat();
    let (content, receipt) = read(&session, sealed.pending, body).await.unwrap();
    let text = String::from_utf8(content).unwrap();
    assert_eq!(text.matches("data: {").count(), STREAM_EVENTS, "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert_eq!(receipt.claims().sequence, 0);
    assert_eq!(receipt.claims().status, 200);

    // The relay logged it from the outer trailer.
    let mut logged = Vec::new();
    for _ in 0..50 {
        let (_, _, log) = http(&s.relay, "GET", "/receipts", vec![]).await;
        let log: serde_json::Value = serde_json::from_slice(&log).unwrap();
        logged = log["receipts"].as_array().unwrap().clone();
        if !logged.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(receipt.as_bytes());
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0]["receipt"], b64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_reordered_dropped_or_altered_stream_is_detected() {
    let s = setup().await;
    let session = session(&s).await;
    // Each case: the same kind of answer, altered on the way.
    type Alter = fn(Vec<u8>, Vec<Vec<u8>>) -> Vec<u8>;
    let cases: [(&str, Alter); 6] = [
        ("honest", |n, c| [n, c.concat()].concat()),
        ("cut before the final chunk", |n, c| {
            [n, c[..c.len() - 1].concat()].concat()
        }),
        ("cut inside a chunk", |n, c| {
            let all = [n, c.concat()].concat();
            all[..all.len() - 30].to_vec()
        }),
        ("two chunks swapped", |n, mut c| {
            c.swap(0, 1);
            [n, c.concat()].concat()
        }),
        ("a chunk dropped", |n, mut c| {
            c.remove(1);
            [n, c.concat()].concat()
        }),
        ("a byte flipped", |n, mut c| {
            c[1][3] ^= 1;
            [n, c.concat()].concat()
        }),
    ];
    for (name, alter) in cases {
        let sealed = session.seal_chunked(&stream_request(name)).unwrap();
        let (status, _, frames) = post_chunked(&s.relay, sealed.encapsulated).await;
        assert_eq!(status, 200);
        let (nonce, chunks) = split_chunks(&frames.concat());
        assert!(chunks.len() > 3, "{name}: {} chunks", chunks.len());
        let result = read(&session, sealed.pending, alter(nonce, chunks)).await;
        if name == "honest" {
            assert!(result.is_ok(), "{name}: {result:?}");
        } else {
            assert!(result.is_err(), "{name} was not detected");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_stream_leaves_no_gap_in_the_log() {
    let s = setup().await;
    let session = session(&s).await;
    // Read the head of a streamed answer, then hang up.
    let sealed = session.seal_chunked(&stream_request("bye")).unwrap();
    {
        let (resp, conn) = send_chunked(&s.relay, sealed.encapsulated).await;
        assert_eq!(resp.status(), 200);
        drop(resp);
        conn.abort();
    }
    // Later answers carry the receipt the relay missed: the log ends up with no gap.
    let bundle = session.verified().bundle.clone();
    let evidence = session.verified().evidence.clone();
    let mut complete = false;
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sealed = session
            .seal_chunked(&stream_request(&format!("again {i}")))
            .unwrap();
        let (_, _, frames) = post_chunked(&s.relay, sealed.encapsulated).await;
        read(&session, sealed.pending, frames.concat())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (_, _, log) = http(&s.relay, "GET", "/receipts", vec![]).await;
        let log: serde_json::Value = serde_json::from_slice(&log).unwrap();
        let receipts: Vec<_> = log["receipts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                use base64::Engine;
                let b = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(e["receipt"].as_str().unwrap())
                    .unwrap();
                verify_against(&b, &bundle, &evidence).unwrap()
            })
            .collect();
        let boots = check_chains(&receipts);
        if let Ok([boot]) = boots.as_deref()
            && boot.first == 0
            && boot.count == boot.last + 1
            && boot.count >= 2
        {
            complete = true;
            break;
        }
    }
    assert!(complete, "the relay's log has a gap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_whose_trailer_cannot_go_out_goes_with_the_next_answer() {
    use base64::Engine;
    let s = setup().await;
    let session = session(&s).await;
    // Straight to the sentinel, without `TE: trailers`: the streamed answer's receipt
    // cannot travel in a trailer.
    let exchange = |media: &'static str, body: Vec<u8>| {
        let sock = s.world.path("sentinel.sock");
        async move {
            let stream = tokio::net::UnixStream::connect(sock).await.unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let req = hyper::Request::post(GATEWAY_PATH)
                .header("host", "sentinel")
                .header("content-type", media)
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            let resp = sender.send_request(req).await.unwrap();
            let headers = resp.headers().clone();
            let collected = resp.into_body().collect().await.unwrap();
            (headers, collected.to_bytes().to_vec())
        }
    };
    let sealed = session
        .seal_chunked(&stream_request("no trailers"))
        .unwrap();
    let (_, body) = exchange(CHUNKED_REQUEST_MEDIA_TYPE, sealed.encapsulated).await;
    let (_, first) = read(&session, sealed.pending, body).await.unwrap();
    // The next answer carries both receipts for the log.
    let sealed = session
        .seal(&Request {
            body: br#"{"messages":[]}"#.to_vec(),
            ..stream_request("x")
        })
        .unwrap();
    let (headers, _) = exchange(
        trustbridge_protocol::ohttp::REQUEST_MEDIA_TYPE,
        sealed.encapsulated,
    )
    .await;
    let value = headers[trustbridge_enclave::gateway::RECEIPT_LOG_HEADER]
        .to_str()
        .unwrap()
        .to_owned();
    let logged: Vec<Vec<u8>> = value
        .split(',')
        .map(|r| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(r)
                .unwrap()
        })
        .collect();
    assert_eq!(logged.len(), 2, "{value}");
    assert!(logged.contains(&first.as_bytes().to_vec()));
    let bundle = &session.verified().bundle;
    let evidence = &session.verified().evidence;
    let receipts: Vec<_> = logged
        .iter()
        .map(|r| verify_against(r, bundle, evidence).unwrap())
        .collect();
    assert_eq!(check_chains(&receipts).unwrap()[0].count, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_runtime_breaks_off_is_signed_as_such_and_refused() {
    let s = setup().await;
    let session = session(&s).await;
    let sealed = session.seal_chunked(&stream_request("break off")).unwrap();
    let (status, _, frames) = post_chunked(&s.relay, sealed.encapsulated).await;
    assert_eq!(status, 200);
    let e = read(&session, sealed.pending, frames.concat())
        .await
        .unwrap_err();
    // The head said 200; the receipt says the answer was cut (502).
    assert!(e.contains("status 502"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_never_arrives_whole_gives_its_permit_back() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = support::setup_gateway(
        Default::default(),
        trustbridge_enclave::gateway::GatewayConfig {
            max_concurrent: 1,
            request_timeout: Duration::from_secs(1),
            ..Default::default()
        },
    )
    .await;
    let session = session(&s).await;
    // The only permit, taken by a chunked request whose body never comes whole.
    let mut stalled = tokio::net::UnixStream::connect(s.world.path("sentinel.sock"))
        .await
        .unwrap();
    let sealed = session.seal_chunked(&stream_request("stalled")).unwrap();
    let head = format!(
        "POST {GATEWAY_PATH} HTTP/1.1\r\nhost: sentinel\r\ncontent-type: {CHUNKED_REQUEST_MEDIA_TYPE}\r\ncontent-length: {}\r\n\r\n",
        sealed.encapsulated.len()
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled.write_all(&sealed.encapsulated[..20]).await.unwrap();
    // Within the deadline it answers 408 and frees the permit.
    let mut answer = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), stalled.read(&mut answer))
        .await
        .expect("the stalled request was never answered")
        .unwrap();
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
    let sealed = session.seal_chunked(&stream_request("next")).unwrap();
    let (status, _, frames) = post_chunked(&s.relay, sealed.encapsulated).await;
    assert_eq!(status, 200);
    read(&session, sealed.pending, frames.concat())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_chunked_request_is_refused() {
    let s = setup().await;
    let session = session(&s).await;
    let sealed = session.seal_chunked(&stream_request("only once")).unwrap();
    let (status, _, frames) = post_chunked(&s.relay, sealed.encapsulated.clone()).await;
    assert_eq!(status, 200);
    read(&session, sealed.pending, frames.concat())
        .await
        .unwrap();
    let (status, _, body) = post_chunked(&s.relay, sealed.encapsulated).await;
    assert_eq!(status, 400);
    assert_eq!(body.concat(), b"the request was answered before");
}

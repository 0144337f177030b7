//! The verifying, OpenAI-compatible HTTP API in front of the client engine (feature
//! `proxy`): what `trustbridge proxy` and `trustbridge demo` serve, and what a program can
//! embed. Every answer is released only once its receipt verified ([`crate::session`]);
//! failures are OpenAI-shaped errors of type `trustbridge_verification_failed` naming the
//! check; streamed answers pass through event by event with their end held until the
//! receipt verified ([`crate::stream`]). `GET /trustbridge/status` reports what was checked.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request as HttpRequest, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use hyper::body::Frame;
use serde_json::json;
use trustbridge_protocol::ohttp::MAX_REQUEST_LEN;
use trustbridge_protocol::receipt::Receipt;

use crate::{Client, ClientError, Request, VerifiedAnswer};

/// Response header: the receipt of the answer (base64url, no padding).
pub const RECEIPT_HEADER: &str = "trustbridge-receipt";
/// Response header: `true` on every answer whose receipt verified (others are errors).
pub const VERIFIED_HEADER: &str = "trustbridge-verified";
/// The OpenAI error type of an answer that failed verification.
pub const VERIFICATION_FAILED: &str = "trustbridge_verification_failed";

/// Serves the proxy API on `listener` until `shutdown` completes.
///
/// `receipts`: keep every verified receipt as `DIR/<receipt key id>/<sequence>.cose` with
/// its salt (`.salt`, hex), and each attestation bundle they name in `DIR/bundles/`.
pub async fn serve(
    client: Arc<Client>,
    listener: tokio::net::TcpListener,
    receipts: Option<PathBuf>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Some(dir) = &receipts {
        std::fs::create_dir_all(dir.join("bundles"))?;
    }
    let state = Arc::new(Proxy { client, receipts });
    let app = Router::new()
        .route("/trustbridge/status", get(status))
        .fallback(forward)
        .with_state(state);
    // No Nagle: an answer of several segments would otherwise wait for the client's
    // delayed ACK (40 ms) before its last one.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY refused");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

struct Proxy {
    client: Arc<Client>,
    receipts: Option<PathBuf>,
}

async fn status(State(p): State<Arc<Proxy>>) -> Response {
    axum::Json(p.client.status()).into_response()
}

/// An OpenAI-shaped error.
fn error(status: StatusCode, kind: &str, code: Option<&str>, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "code": code, "param": null}});
    (status, axum::Json(body)).into_response()
}

async fn forward(State(p): State<Arc<Proxy>>, req: HttpRequest) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    if !path.starts_with("/v1/") {
        return error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            None,
            "no such endpoint: the API is under /v1 (and /trustbridge/status)",
        );
    }
    // The encapsulation adds a few hundred bytes to the Binary HTTP request.
    let Ok(body) = axum::body::to_bytes(body, MAX_REQUEST_LEN - 4096).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            None,
            "the request is larger than the gateway accepts",
        );
    };
    // Only what describes the content travels; the SDK's API key stays here.
    let headers = [header::CONTENT_TYPE, header::ACCEPT]
        .iter()
        .filter_map(|name| {
            parts
                .headers
                .get(name)
                .map(|v| (name.as_str().to_owned(), v.as_bytes().to_vec()))
        })
        .collect();
    let request = Request {
        method: parts.method.as_str().to_owned(),
        path,
        headers,
        body: body.to_vec(),
    };
    if wants_stream(&request.body) {
        return forward_streamed(p, request).await;
    }
    match p.client.send(&request).await {
        Ok(answer) => {
            p.keep(&answer.receipt, &answer.salt);
            answer_response(answer)
        }
        Err(e) => failure(&e),
    }
}

/// Whether the request asks for a streamed answer (`"stream": true`).
fn wants_stream(body: &[u8]) -> bool {
    trustbridge_protocol::json_member::top_level_member(body, "stream")
        == Some(serde_json::Value::Bool(true))
}

impl Proxy {
    /// Stores a verified receipt when `--receipts` asks for it.
    fn keep(&self, receipt: &Receipt, salt: &[u8; 32]) {
        if let Some(dir) = &self.receipts
            && let Err(e) = store_receipt(dir, &self.client, receipt, salt)
        {
            tracing::warn!(error = %e, "cannot store the receipt");
        }
    }
}

/// A streamed answer, passed on as it is decrypted. Server-sent events go through event
/// by event, except the final `data: [DONE]`, which is sent only once the receipt
/// verified; otherwise the stream ends with an error event (OpenAI SDKs raise it). Other
/// content is read whole and verified first, then answered as usual. The receipt follows
/// the events as an SSE comment and, with `trustbridge-verified: true`, as HTTP trailer
/// fields (for clients that ask for trailers). The whole answer must come within the
/// client's time limit.
async fn forward_streamed(p: Arc<Proxy>, request: Request) -> Response {
    let deadline = tokio::time::Instant::now() + p.client.config().timeout;
    let limit = p.client.config().max_response_len;
    let (session, mut answer) = match p.client.send_streamed(&request).await {
        Ok(x) => x,
        Err(e) => return failure(&e),
    };
    let (status, headers) = match answer.head().await {
        Ok(h) => h,
        Err(e) => return failure(&ClientError::Verification(e)),
    };
    let content_type = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(b"content-type"))
        .map(|(_, v)| v.clone());
    let sse = content_type
        .as_deref()
        .is_some_and(|v| v.starts_with(b"text/event-stream"));
    let timed_out = || {
        ClientError::Verification(crate::VerificationError::Stream(
            "the answer did not end in time".into(),
        ))
    };
    if !sse {
        // Nothing of it leaves before it verified.
        let mut body = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, answer.next()).await {
                Err(_) => return failure(&timed_out()),
                Ok(Err(e)) => return failure(&ClientError::Verification(e)),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(piece))) => {
                    body.extend(piece);
                    if body.len() > limit {
                        return failure(&ClientError::TooLarge("the streamed answer"));
                    }
                }
            }
        }
        return match p.client.finish_streamed(session, &mut answer).await {
            Ok((receipt, salt)) => {
                p.keep(&receipt, &salt);
                answer_response(VerifiedAnswer {
                    status,
                    headers,
                    body,
                    receipt,
                    salt,
                })
            }
            Err(e) => failure(&e),
        };
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Frame<Bytes>>(32);
    tokio::spawn(async move {
        let mut held = SseHold::new(limit);
        let send = |frame: Frame<Bytes>| tx.send(frame);
        let error_event = |e: &ClientError| {
            let check = e.failed_check().unwrap_or("response integrity");
            let event = json!({"error": {"message": format!("TrustBridge verification failed ({check}): {e}"), "type": VERIFICATION_FAILED, "code": check, "param": null}});
            Frame::data(Bytes::from(format!("data: {event}\n\n")))
        };
        let fail = |e: ClientError| {
            p.client.record_failure(&e);
            tracing::warn!(error = %e, "streamed answer failed");
            error_event(&e)
        };
        loop {
            let piece = match tokio::time::timeout_at(deadline, answer.next()).await {
                Err(_) => Err(timed_out()),
                Ok(r) => r.map_err(ClientError::Verification),
            };
            match piece.and_then(|piece| piece.map(|d| held.push(&d)).transpose()) {
                Ok(Some(events)) => {
                    for event in events {
                        if send(Frame::data(event)).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = send(fail(e)).await;
                    return;
                }
            }
        }
        match p.client.finish_streamed(session, &mut answer).await {
            Ok((receipt, salt)) => {
                tracing::info!(
                    sequence = receipt.claims().sequence,
                    "streamed answer verified"
                );
                p.keep(&receipt, &salt);
                let b64 =
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(receipt.as_bytes());
                let _ = send(Frame::data(Bytes::from(format!(
                    ": {RECEIPT_HEADER} {b64}\n\n"
                ))))
                .await;
                for piece in held.finish() {
                    let _ = send(Frame::data(piece)).await;
                }
                let mut trailers = axum::http::HeaderMap::new();
                if let Ok(v) = HeaderValue::from_str(&b64) {
                    trailers.insert(RECEIPT_HEADER, v);
                }
                trailers.insert(VERIFIED_HEADER, HeaderValue::from_static("true"));
                let _ = send(Frame::trailers(trailers)).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "streamed answer failed verification");
                let _ = send(error_event(&e)).await;
            }
        }
    });
    let frames = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|f| f.map(Ok::<_, std::convert::Infallible>))
    });
    let mut response = Response::new(Body::new(http_body_util::StreamBody::new(frames)));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let h = response.headers_mut();
    if let Some(v) = content_type.and_then(|v| HeaderValue::from_bytes(&v).ok()) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(
        header::TRAILER,
        HeaderValue::from_static("trustbridge-receipt, trustbridge-verified"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Server-sent events passed on as they complete, except the end-of-stream event (`data:
/// [DONE]`, in any of its spellings), held until the receipt verified. At most `limit`
/// bytes wait in it.
struct SseHold {
    pending: Vec<u8>,
    /// How far `pending` was searched for an event's end.
    scanned: usize,
    done: Vec<u8>,
    limit: usize,
}

impl SseHold {
    fn new(limit: usize) -> Self {
        Self {
            pending: Vec::new(),
            scanned: 0,
            done: Vec::new(),
            limit,
        }
    }

    /// The complete events `data` finishes.
    fn push(&mut self, data: &[u8]) -> Result<Vec<Bytes>, ClientError> {
        self.pending.extend_from_slice(data);
        if self.pending.len() + self.done.len() > self.limit {
            return Err(ClientError::TooLarge("a server-sent event"));
        }
        let mut out = Vec::new();
        while let Some(end) = find_event_end(&self.pending, self.scanned) {
            let event: Vec<u8> = self.pending.drain(..end).collect();
            self.scanned = 0;
            if is_done_event(&event) {
                self.done.extend(event);
            } else {
                out.push(Bytes::from(event));
            }
        }
        // An event's end straddles the next push by at most three bytes.
        self.scanned = self.pending.len().saturating_sub(3);
        Ok(out)
    }

    /// What was held, once the receipt verified.
    fn finish(self) -> Vec<Bytes> {
        [self.pending, self.done]
            .into_iter()
            .filter(|b| !b.is_empty())
            .map(Bytes::from)
            .collect()
    }
}

/// Whether an event carries the end-of-stream marker in a data field (`data: [DONE]`,
/// `data:[DONE]`).
fn is_done_event(event: &[u8]) -> bool {
    event.split(|b| *b == b'\n').any(|line| {
        line.strip_prefix(b"data:")
            .is_some_and(|v| v.trim_ascii().starts_with(b"[DONE]"))
    })
}

/// The end (exclusive) of the first complete server-sent event at or after `from`: after
/// a blank line (LF LF, CR LF CR LF, or CR CR).
fn find_event_end(buf: &[u8], from: usize) -> Option<usize> {
    let rest = buf.get(from..)?;
    for i in 0..rest.len() {
        let tail = &rest[i..];
        if tail.starts_with(b"\n\n") || tail.starts_with(b"\r\r") {
            return Some(from + i + 2);
        }
        if tail.starts_with(b"\r\n\r\n") {
            return Some(from + i + 4);
        }
    }
    None
}

fn failure(e: &ClientError) -> Response {
    tracing::warn!(error = %e, "request failed");
    if let Some(check) = e.failed_check() {
        return error(
            StatusCode::BAD_GATEWAY,
            VERIFICATION_FAILED,
            Some(check),
            &format!("TrustBridge verification failed ({check}): {e}"),
        );
    }
    let status = match e {
        ClientError::RelayStatus { status, .. } if matches!(status, 413 | 429 | 503 | 504) => {
            StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
        }
        ClientError::RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_GATEWAY,
    };
    error(status, "trustbridge_unavailable", None, &e.to_string())
}

fn answer_response(answer: VerifiedAnswer) -> Response {
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let h = response.headers_mut();
    for (name, value) in &answer.headers {
        // Only what describes the content; framing is this hop's.
        if name.eq_ignore_ascii_case(b"content-type")
            && let Ok(v) = HeaderValue::from_bytes(value)
        {
            h.insert(header::CONTENT_TYPE, v);
        }
    }
    let receipt =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(answer.receipt.as_bytes());
    if let Ok(v) = HeaderValue::from_str(&receipt) {
        h.insert(RECEIPT_HEADER, v);
    }
    h.insert(VERIFIED_HEADER, HeaderValue::from_static("true"));
    response
}

/// Stores a verified receipt, its salt and the bundle it refers to.
fn store_receipt(
    dir: &Path,
    client: &Client,
    receipt: &Receipt,
    salt: &[u8; 32],
) -> std::io::Result<()> {
    let claims = receipt.claims();
    let boot = dir.join(claims.issuer.to_string());
    std::fs::create_dir_all(&boot)?;
    let name = format!("{:020}", claims.sequence);
    write_new(&boot.join(format!("{name}.cose")), receipt.as_bytes())?;
    write_new(
        &boot.join(format!("{name}.salt")),
        hex::encode(salt).as_bytes(),
    )?;
    let bundle_path = dir
        .join("bundles")
        .join(format!("{}.json", hex::encode(claims.evidence_digest)));
    if !bundle_path.exists()
        && let Some(session) = client.current_session()
    {
        let b = &session.verified().bundle;
        if b.evidence_digest() == claims.evidence_digest {
            let json = b.to_json().map_err(std::io::Error::other)?;
            write_new(&bundle_path, &json)?;
        }
    }
    Ok(())
}

/// Writes a file whole or not at all (a temporary file renamed into place).
/// Mode 0600: a salt lets whoever holds it test guesses of the exchange against the public
/// receipt log, so only the client's user may read it.
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_spelling_of_done_is_held_until_the_end() {
        for done in [
            &b"data: [DONE]\n\n"[..],
            b"data:[DONE]\n\n",
            b"event: x\ndata:  [DONE]\r\n\r\n",
        ] {
            let mut h = SseHold::new(1 << 20);
            let mut out = h.push(b"data: {\"a\":1}\n\n").unwrap();
            // Split anywhere, the marker never passes before the end.
            for byte in done {
                out.extend(h.push(&[*byte]).unwrap());
            }
            assert_eq!(out, vec![Bytes::from_static(b"data: {\"a\":1}\n\n")]);
            assert_eq!(h.finish().concat(), done.to_vec());
        }
    }

    #[test]
    fn the_hold_is_bounded() {
        let mut h = SseHold::new(16);
        assert!(h.push(&[b'x'; 17]).is_err());
    }

    #[test]
    fn only_stream_true_asks_for_a_stream() {
        assert!(wants_stream(
            br#"{"model":"m","stream":true,"messages":[{"x":[1]}]}"#
        ));
        for body in [
            &br#"{"model":"m","stream":false}"#[..],
            br#"{"model":"m"}"#,
            br#"{"stream":"true"}"#,
            br#"{"stream":1}"#,
            br#"[{"stream":true}]"#,
            b"[true]",
            b"not json",
        ] {
            assert!(!wants_stream(body), "{}", String::from_utf8_lossy(body));
        }
    }
}

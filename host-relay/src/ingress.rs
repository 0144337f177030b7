//! Ingress: a reverse proxy that forwards every client request to the sentinel over its
//! transport (vsock, Unix socket or TCP). The relay does not look inside: client traffic is
//! Oblivious HTTP ciphertext, and the sentinel's health API is public. It logs no body.
//!
//! Limits, each a plain status that says which: a request body larger than
//! [`IngressConfig::max_request_bytes`] is 413; more than
//! [`IngressConfig::max_concurrent`] requests at once, 503 with `retry-after`; a sentinel
//! that has not begun to answer within [`IngressConfig::timeout`], 504.
//!
//! The sentinel hands each receipt to the relay in the clear, on the outer response
//! (`trustbridge-receipt-log`); the relay removes that header and appends the receipt to
//! its public log ([`crate::receipt_log`]), served at `GET /receipts?after=SEQ`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use tokio_util::task::TaskTracker;
use trustbridge_transport::Endpoint;
use trustbridge_transport::http1::{Http1Pool, PooledBody};

use crate::receipt_log::ReceiptLog;

pub use trustbridge_protocol::ohttp::RECEIPT_LOG_HEADER;

/// What the ingress forwards to, and its limits.
#[derive(Clone, Debug)]
pub struct IngressConfig {
    /// The sentinel.
    pub sentinel: Endpoint,
    /// The public receipt log, if the relay keeps one.
    pub log: Option<Arc<ReceiptLog>>,
    /// Largest request body (the OHTTP gateway takes at most 1 MiB).
    pub max_request_bytes: u64,
    /// Requests forwarded at once.
    pub max_concurrent: usize,
    /// Time for the sentinel to begin its answer.
    pub timeout: Duration,
}

impl IngressConfig {
    /// Defaults for `sentinel`: no log, 2 MiB, 256 at once, 300 s.
    pub fn new(sentinel: Endpoint) -> Self {
        Self {
            sentinel,
            log: None,
            max_request_bytes: 2 << 20,
            max_concurrent: 256,
            timeout: Duration::from_secs(300),
        }
    }
}

struct Ingress {
    config: IngressConfig,
    permits: tokio::sync::Semaphore,
    sentinel: Http1Pool<Body>,
    lingering: TaskTracker,
}

/// The tasks that carry an ingress's streamed answers to their clients and log the
/// receipts in their trailers. When a client leaves, its task still reads the rest for at
/// most a second to reach that receipt, after the connection is gone: a server that
/// drained its connections has not finished this, so a relay that stops waits for
/// [`Lingering::finished`] too, or those receipts are lost.
#[derive(Clone, Debug)]
pub struct Lingering(TaskTracker);

impl Lingering {
    /// Resolves once every such read has ended (each within a second of its client's
    /// departure). Reads the ingress starts later are waited for too.
    pub async fn finished(&self) {
        self.0.close();
        self.0.wait().await;
    }
}

/// The ingress router: everything goes to `sentinel`, with the default limits.
pub fn router(sentinel: Endpoint) -> Router {
    router_with(IngressConfig::new(sentinel))
}

/// The ingress router with `config`.
pub fn router_with(config: IngressConfig) -> Router {
    lingering_router(config).0
}

/// The ingress router with `config`, and its [`Lingering`] work, for a server that stops
/// without losing receipts.
pub fn lingering_router(config: IngressConfig) -> (Router, Lingering) {
    let lingering = TaskTracker::new();
    let state = Arc::new(Ingress {
        permits: tokio::sync::Semaphore::new(config.max_concurrent.max(1)),
        sentinel: crate::sentinel_link::client(config.sentinel.clone()),
        config,
        lingering: lingering.clone(),
    });
    let router = Router::new()
        .route("/receipts", get(receipts))
        .fallback(forward)
        .with_state(state);
    (router, Lingering(lingering))
}

/// Headers that describe one hop and must not be forwarded.
const HOP_BY_HOP: [header::HeaderName; 5] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

async fn forward(State(ingress): State<Arc<Ingress>>, mut req: Request) -> Response {
    let Ok(_permit) = ingress.permits.try_acquire() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "too many requests at once",
        )
            .into_response();
    };
    if req.method() == axum::http::Method::CONNECT {
        return (StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not forwarded").into_response();
    }
    let max = ingress.config.max_request_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response();
    }
    for h in &HOP_BY_HOP {
        req.headers_mut().remove(h);
    }
    // This hop accepts trailer fields: a streamed answer's receipt for the log comes in one.
    req.headers_mut()
        .insert(header::TE, header::HeaderValue::from_static("trailers"));
    // A body without a declared length is cut off at the limit too.
    let req = req.map(|b| Body::new(http_body_util::Limited::new(b, max as usize)));
    let sent = tokio::time::timeout(ingress.config.timeout, ingress.sentinel.send(req)).await;
    match sent {
        Ok(Ok(resp)) => {
            let (mut parts, body) = resp.into_parts();
            // A streamed answer announces its receipt for the log as a trailer.
            let streamed = parts.headers.get_all(header::TRAILER).iter().any(|v| {
                v.as_bytes()
                    .eq_ignore_ascii_case(RECEIPT_LOG_HEADER.as_bytes())
            });
            for h in &HOP_BY_HOP {
                parts.headers.remove(h);
            }
            if let Some(receipt) = parts.headers.remove(RECEIPT_LOG_HEADER) {
                log_receipts(&ingress, receipt.as_bytes()).await;
            }
            if streamed {
                return Response::from_parts(parts, pump(ingress.clone(), body));
            }
            Response::from_parts(parts, Body::new(body))
        }
        Ok(Err(e)) => {
            let sentinel = &ingress.config.sentinel;
            tracing::warn!(sentinel = %sentinel, error = %e, "forwarding to the sentinel failed");
            (
                StatusCode::BAD_GATEWAY,
                "sentinel unreachable or request failed",
            )
                .into_response()
        }
        Err(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            "the sentinel did not answer in time",
        )
            .into_response(),
    }
}

/// Most bytes of a streamed answer read after its client went away, to reach the trailer
/// that carries its receipt.
const DRAIN_LIMIT: usize = 16 << 20;

/// How long a streamed answer is still read after its client went away. Long enough for
/// an answer that was about to end to deliver its trailer; short, because the sentinel
/// stops working on an answer only once nobody reads it (a client that leaves a long
/// generation must not keep the engine busy).
const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Forwards a streamed answer frame by frame, and logs the receipt in its trailer. If the
/// client goes away, the rest is still read for a moment (at most [`DRAIN_GRACE`] and
/// [`DRAIN_LIMIT`] bytes) so that the receipt of an answer that was ending reaches the log;
/// then the sentinel's connection is dropped, which stops the work behind the answer (an
/// answer not delivered is not signed, and a receipt whose trailer could not be delivered
/// goes out with the sentinel's next answer, so the log has no gap either way).
fn pump(ingress: Arc<Ingress>, mut body: PooledBody<Body>) -> Body {
    use http_body_util::BodyExt;
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<Result<hyper::body::Frame<bytes::Bytes>, hyper::Error>>(16);
    let lingering = ingress.lingering.clone();
    lingering.spawn(async move {
        let mut gone: Option<(tokio::time::Instant, usize)> = None;
        loop {
            let frame = match gone {
                // The client's departure starts the grace at once, not at the next frame.
                None => tokio::select! {
                    frame = body.frame() => frame,
                    () = tx.closed() => {
                        let grace = DRAIN_GRACE.min(ingress.config.timeout);
                        gone = Some((tokio::time::Instant::now() + grace, 0));
                        continue;
                    }
                },
                Some((deadline, _)) => {
                    match tokio::time::timeout_at(deadline, body.frame()).await {
                        Ok(f) => f,
                        Err(_) => {
                            tracing::debug!(
                                "a streamed answer whose client left did not end within the grace: dropped"
                            );
                            return;
                        }
                    }
                }
            };
            let frame = match frame {
                None => return,
                Some(Err(e)) => {
                    if gone.is_none() {
                        let _ = tx.send(Err(e)).await;
                    }
                    return;
                }
                Some(Ok(frame)) => frame,
            };
            let frame = match frame.into_trailers() {
                Ok(mut trailers) => {
                    if let Some(receipt) = trailers.remove(RECEIPT_LOG_HEADER) {
                        log_receipts(&ingress, receipt.as_bytes()).await;
                    }
                    return;
                }
                Err(frame) => frame,
            };
            match &mut gone {
                Some((_, drained)) => {
                    *drained += frame.data_ref().map_or(0, bytes::Bytes::len);
                    if *drained > DRAIN_LIMIT {
                        tracing::warn!(
                            "a streamed answer is too long to drain: its receipt is not logged"
                        );
                        return;
                    }
                }
                None => {
                    if tx.send(Ok(frame)).await.is_err() {
                        let grace = DRAIN_GRACE.min(ingress.config.timeout);
                        gone = Some((tokio::time::Instant::now() + grace, 0));
                    }
                }
            }
        }
    });
    Body::new(http_body_util::StreamBody::new(
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)),
    ))
}

/// Appends receipts (base64url, comma-separated: a receipt whose streamed answer's trailer
/// never arrived comes with the next answer) to the log, if the relay keeps one. A receipt
/// that cannot be logged is still in the client's answer; the failure is logged loudly.
async fn log_receipts(ingress: &Ingress, value: &[u8]) {
    let Some(log) = ingress.config.log.clone() else {
        return;
    };
    for item in value.split(|b| *b == b',') {
        let Ok(receipt) =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(item.trim_ascii())
        else {
            tracing::error!("the sentinel sent a receipt that is not base64url: not logged");
            continue;
        };
        let log = log.clone();
        match tokio::task::spawn_blocking(move || log.append(&receipt)).await {
            Ok(Ok(seq)) => tracing::debug!(seq, "receipt logged"),
            Ok(Err(e)) => tracing::error!(error = %e, "receipt NOT logged"),
            Err(e) => tracing::error!(error = %e, "receipt NOT logged"),
        }
    }
}

/// `GET /receipts?after=SEQ`: at most a page of entries after SEQ (from the start without
/// it), `{"receipts": [...], "next": SEQ|null}`; `next` is the `after` of the next page.
async fn receipts(State(ingress): State<Arc<Ingress>>, uri: Uri) -> Response {
    let Some(log) = ingress.config.log.clone() else {
        return (StatusCode::NOT_FOUND, "this relay keeps no receipt log").into_response();
    };
    let after = match uri
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("after=")))
        .map(str::parse::<u64>)
    {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            return (StatusCode::BAD_REQUEST, "after must be a sequence number").into_response();
        }
    };
    match tokio::task::spawn_blocking(move || log.after(after)).await {
        Ok(Ok(entries)) => {
            let next = (entries.len() == crate::receipt_log::PAGE)
                .then(|| entries.last().map(|e| e.seq))
                .flatten();
            axum::Json(serde_json::json!({"receipts": entries, "next": next})).into_response()
        }
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the receipt log cannot be read",
        )
            .into_response(),
    }
}

//! `trustbridge proxy`: a local, verifying, OpenAI-compatible endpoint in front of a
//! remote sentinel.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request as HttpRequest, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use serde_json::json;
use trustbridge_client::{
    Client, ClientConfig, ClientError, ClientPolicy, Request, VerifiedAnswer,
};
use trustbridge_protocol::ohttp::MAX_REQUEST_LEN;

/// Response header: the receipt of the answer (base64url, no padding).
pub(crate) const RECEIPT_HEADER: &str = "trustbridge-receipt";
/// Response header: `true` on every answer whose receipt verified (others are errors).
pub(crate) const VERIFIED_HEADER: &str = "trustbridge-verified";
/// The OpenAI error type of an answer that failed verification.
pub(crate) const VERIFICATION_FAILED: &str = "trustbridge_verification_failed";

/// Serve an OpenAI-compatible API on this machine that talks to a remote sentinel only
/// through verified, end-to-end encrypted sessions.
///
/// Before the first request the proxy fetches the sentinel's attestation bundle from the
/// relay and verifies it against the client policy (platform, measurements, TCB, the
/// pinned key broker and provider, the model); again whenever the sentinel's evidence
/// changes. Every request is encrypted to the key that evidence binds (Oblivious HTTP,
/// RFC 9458), so the relay sees only ciphertext. An answer is returned only when its
/// receipt verifies: signed by the key the evidence binds, over exactly the request sent
/// and the response received, with this request's nonce, and chaining with every receipt
/// seen before. Otherwise the client gets HTTP 502 with an OpenAI-shaped error of type
/// `trustbridge_verification_failed` naming the check.
///
/// Point any OpenAI SDK at it (`base_url = http://127.0.0.1:8080/v1`); no API key is
/// needed, and the one an SDK sends is not forwarded. `GET /trustbridge/status` shows
/// what was verified and when.
#[derive(Debug, clap::Args)]
pub(crate) struct ProxyArgs {
    /// The relay's public address, http://HOST:PORT.
    #[arg(long, value_name = "URL")]
    relay: String,
    /// The client policy (TOML): the key broker the sentinel must pin, accepted
    /// measurement sets, models; see docs/CLIENT.md.
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// Where to serve the API (keep it on loopback: anything that reaches it can use the
    /// session).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Keep every verified receipt (DIR/<receipt key id>/<sequence>.cose, with its salt
    /// in .salt) and each attestation bundle they refer to (DIR/bundles/), for
    /// `tb-verify receipt` later.
    #[arg(long, value_name = "DIR")]
    receipts: Option<PathBuf>,
    /// Time for one answer, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    timeout_secs: u64,
}

/// Reads and validates a client policy file.
pub(crate) fn read_policy(path: &Path) -> Result<ClientPolicy> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the client policy {}", path.display()))?;
    ClientPolicy::from_toml(&text).with_context(|| format!("{}", path.display()))
}

pub(crate) fn run(args: ProxyArgs) -> Result<()> {
    let policy = read_policy(&args.policy)?;
    let mut config = ClientConfig::new(args.relay.clone(), policy);
    config.timeout = Duration::from_secs(args.timeout_secs.max(1));
    let client = Arc::new(Client::new(config)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        // Verify before serving: a policy that refuses the sentinel is reported now, not
        // at the first request (which would retry it).
        match client.session().await {
            Ok(s) => eprintln!(
                "sentinel verified: {} evidence, model {}",
                s.verified().bundle.platform,
                hex::encode(s.verified().model)
            ),
            Err(e) => eprintln!("warning: {e:#} (requests will retry the verification)"),
        }
        eprintln!(
            "trustbridge proxy on http://{} (OpenAI base URL http://{}/v1), relay {}",
            args.listen,
            args.listen,
            client.relay()
        );
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        serve(client, listener, args.receipts, shutdown).await
    })
}

/// Serves the proxy API on `listener` until `shutdown` completes.
pub(crate) async fn serve(
    client: Arc<Client>,
    listener: tokio::net::TcpListener,
    receipts: Option<PathBuf>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    if let Some(dir) = &receipts {
        std::fs::create_dir_all(dir.join("bundles"))
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let state = Arc::new(Proxy { client, receipts });
    let app = Router::new()
        .route("/trustbridge/status", get(status))
        .fallback(forward)
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("the proxy server failed")
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
    match p.client.send(&request).await {
        Ok(answer) => {
            if let Some(dir) = &p.receipts {
                if let Err(e) = store_receipt(dir, &p.client, &answer) {
                    tracing::warn!(error = %format!("{e:#}"), "cannot store the receipt");
                }
            }
            answer_response(answer)
        }
        Err(e) => failure(&e),
    }
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
        if name.eq_ignore_ascii_case(b"content-type") {
            if let Ok(v) = HeaderValue::from_bytes(value) {
                h.insert(header::CONTENT_TYPE, v);
            }
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
fn store_receipt(dir: &Path, client: &Client, answer: &VerifiedAnswer) -> Result<()> {
    let claims = answer.receipt.claims();
    let boot = dir.join(claims.issuer.to_string());
    std::fs::create_dir_all(&boot)?;
    let name = format!("{:020}", claims.sequence);
    write_new(
        &boot.join(format!("{name}.cose")),
        answer.receipt.as_bytes(),
    )?;
    write_new(
        &boot.join(format!("{name}.salt")),
        hex::encode(answer.salt).as_bytes(),
    )?;
    let bundle_path = dir
        .join("bundles")
        .join(format!("{}.json", hex::encode(claims.evidence_digest)));
    if !bundle_path.exists() {
        if let Some(session) = client.current_session() {
            let b = &session.verified().bundle;
            if b.evidence_digest() == claims.evidence_digest {
                write_new(&bundle_path, &b.to_json()?)?;
            }
        }
    }
    Ok(())
}

/// Writes a file whole or not at all (a temporary file renamed into place).
fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

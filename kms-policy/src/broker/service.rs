//! The broker's HTTP API (axum).
//!
//! | route | |
//! |---|---|
//! | `GET /health` | liveness |
//! | `GET /v1/broker` | identity key, registration key, decision-log key, simulation flag (signed) |
//! | `POST /v1/key-release/challenge` | single-use nonce for (asset, contract) |
//! | `POST /v1/key-release` | evidence in, HPKE-sealed data key out, or 403 with a reason code |
//! | `POST /v1/admin/assets` | register a manifest and its (sealed) data key (signed) |
//! | `POST /v1/admin/contracts` | add a contract (signed) |
//! | `POST /v1/admin/contracts/{id}/revoke` | revoke a contract (signed) |
//! | `PUT /v1/admin/policy` | replace the policy (signed) |
//!
//! Every answer a client acts on (broker information, challenges, releases and denials) is
//! signed by the broker's identity key over its fields and the SHA-256 of the request body
//! it answers. Request bodies are limited to [`MAX_REQUEST_BYTES`].

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Serialize;
use trustbridge_protocol::key_release::{
    ChallengeRequest, ErrorBody, ReleaseRequest, request_digest,
};

use super::core::{Broker, BrokerError, ReleaseError};
use super::messages::{ContractRequest, RegisterAssetRequest};

/// Largest request body accepted (evidence with its certificates is a few kilobytes).
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// The API router.
pub fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/v1/broker", get(info))
        .route("/v1/key-release/challenge", post(challenge))
        .route("/v1/key-release", post(release))
        .route("/v1/admin/assets", post(register_asset))
        .route("/v1/admin/contracts", post(add_contract))
        .route("/v1/admin/contracts/{id}/revoke", post(revoke_contract))
        .route("/v1/admin/policy", put(replace_policy))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(broker)
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    broker: Arc<Broker>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(broker))
        .with_graceful_shutdown(shutdown)
        .await
}

fn error(status: StatusCode, code: &str, detail: impl Into<String>) -> Response {
    (
        status,
        axum::Json(ErrorBody {
            error: code.to_owned(),
            detail: detail.into(),
            signature: None,
        }),
    )
        .into_response()
}

fn broker_error(e: BrokerError) -> Response {
    match e {
        BrokerError::BadRequest(d) => error(StatusCode::BAD_REQUEST, "bad_request", d),
        BrokerError::Unauthorized(d) => {
            error(StatusCode::UNAUTHORIZED, "unauthorized", d.to_string())
        }
        BrokerError::Conflict(d) => error(StatusCode::CONFLICT, "conflict", d),
        BrokerError::NotFound(d) => error(StatusCode::NOT_FOUND, "not_found", d),
        BrokerError::Policy(d) => error(StatusCode::BAD_REQUEST, "invalid_policy", d.to_string()),
        other => {
            tracing::error!(error = %other, "internal error");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; see the broker log",
            )
        }
    }
}

/// A denial is a 403 signed for the request it answers; a failure is unsigned.
fn release_error(b: &Broker, request_sha256: &[u8; 32], e: ReleaseError) -> Response {
    match e {
        ReleaseError::Denied(d) => match b.denial_body(&d, request_sha256) {
            Ok(body) => (StatusCode::FORBIDDEN, axum::Json(body)).into_response(),
            Err(e) => broker_error(e),
        },
        ReleaseError::Failed(e) => broker_error(e),
    }
}

fn ok_json<T: Serialize>(value: &T) -> Response {
    axum::Json(value).into_response()
}

/// Runs blocking broker work (SQLite, signature verification) off the async workers.
async fn blocking(f: impl FnOnce() -> Response + Send + 'static) -> Response {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|_| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "request handler panicked",
        )
    })
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))
}

async fn info(State(b): State<Arc<Broker>>) -> Response {
    b.info().map_or_else(broker_error, |info| ok_json(&info))
}

async fn challenge(State(b): State<Arc<Broker>>, body: Bytes) -> Response {
    let req: ChallengeRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e),
    };
    let digest = request_digest(&body);
    blocking(move || {
        b.challenge(&req, &digest)
            .map_or_else(|e| release_error(&b, &digest, e), |r| ok_json(&r))
    })
    .await
}

async fn release(State(b): State<Arc<Broker>>, body: Bytes) -> Response {
    let req: ReleaseRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e),
    };
    let digest = request_digest(&body);
    blocking(move || {
        b.release(&req, &digest)
            .map_or_else(|e| release_error(&b, &digest, e), |r| ok_json(&r))
    })
    .await
}

/// Runs an admin operation after checking the request's signature; the answer that it
/// was carried out is signed for the request.
async fn admin(
    b: Arc<Broker>,
    headers: HeaderMap,
    method: &'static str,
    path: String,
    body: Bytes,
    op: impl FnOnce(&Broker, &[u8]) -> Result<(), BrokerError> + Send + 'static,
) -> Response {
    blocking(move || {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let signed = match b.authorize_admin(header, method, &path, &body) {
            Ok(signed) => signed,
            Err(e) => {
                tracing::warn!(error = %e, path, "admin request refused");
                return broker_error(e);
            }
        };
        op(&b, &body)
            .and_then(|()| b.admin_answer(method, &path, &request_digest(&signed)))
            .map_or_else(broker_error, |answer| ok_json(&answer))
    })
    .await
}

async fn register_asset(State(b): State<Arc<Broker>>, headers: HeaderMap, body: Bytes) -> Response {
    admin(
        b,
        headers,
        "POST",
        "/v1/admin/assets".into(),
        body,
        |b, body| {
            let req: RegisterAssetRequest =
                serde_json::from_slice(body).map_err(|e| BrokerError::BadRequest(e.to_string()))?;
            b.register_asset(&req)
        },
    )
    .await
}

async fn add_contract(State(b): State<Arc<Broker>>, headers: HeaderMap, body: Bytes) -> Response {
    admin(
        b,
        headers,
        "POST",
        "/v1/admin/contracts".into(),
        body,
        |b, body| {
            let req: ContractRequest =
                serde_json::from_slice(body).map_err(|e| BrokerError::BadRequest(e.to_string()))?;
            b.add_contract(&req)
        },
    )
    .await
}

async fn revoke_contract(
    State(b): State<Arc<Broker>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/v1/admin/contracts/{id}/revoke");
    admin(b, headers, "POST", path, body, move |b, _| {
        b.revoke_contract(&id)
    })
    .await
}

async fn replace_policy(State(b): State<Arc<Broker>>, headers: HeaderMap, body: Bytes) -> Response {
    admin(
        b,
        headers,
        "PUT",
        "/v1/admin/policy".into(),
        body,
        |b, body| {
            let text = std::str::from_utf8(body)
                .map_err(|_| BrokerError::BadRequest("policy is not UTF-8".into()))?;
            b.replace_policy(text)
        },
    )
    .await
}

/// A broker served on an ephemeral loopback port from its own thread and runtime, for
/// `trustbridge demo`, tests and benchmarks. Stops gracefully when dropped.
pub struct LoopbackBroker {
    url: String,
    broker: Arc<Broker>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for LoopbackBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LoopbackBroker({})", self.url)
    }
}

impl LoopbackBroker {
    /// Binds 127.0.0.1 on an ephemeral port and serves `broker` until dropped.
    pub fn start(broker: Arc<Broker>) -> std::io::Result<Self> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let served = broker.clone();
        let thread = std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = addr_tx.send(Err(e));
                    return;
                }
            };
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = addr_tx.send(Err(e));
                        return;
                    }
                };
                let _ = addr_tx.send(listener.local_addr());
                let shutdown = async {
                    let _ = stopped.await;
                };
                if let Err(e) = serve(listener, served, shutdown).await {
                    tracing::error!(error = %e, "loopback broker stopped");
                }
            });
        });
        let addr = addr_rx
            .recv()
            .map_err(|_| std::io::Error::other("the broker thread ended before binding"))??;
        Ok(Self {
            url: format!("http://{addr}"),
            broker,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The broker's base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The broker being served.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }
}

impl Drop for LoopbackBroker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

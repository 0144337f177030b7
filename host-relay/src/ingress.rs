//! Ingress: a reverse proxy that forwards every client request to the sentinel over its
//! transport (vsock, Unix socket or TCP). The relay does not look inside: client traffic is
//! Oblivious HTTP ciphertext, and the sentinel's health API is public.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use trustbridge_transport::Endpoint;

/// The ingress router: everything goes to `sentinel`.
pub fn router(sentinel: Endpoint) -> Router {
    Router::new()
        .fallback(forward)
        .with_state(Arc::new(sentinel))
}

/// Headers that describe one hop and must not be forwarded.
const HOP_BY_HOP: [header::HeaderName; 5] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

async fn forward(State(sentinel): State<Arc<Endpoint>>, mut req: Request) -> Response {
    let stream = match trustbridge_transport::connect(&sentinel).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(sentinel = %sentinel, error = %e, "sentinel unreachable");
            return (StatusCode::BAD_GATEWAY, "sentinel unreachable").into_response();
        }
    };
    let (mut sender, conn) =
        match hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(stream)).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "sentinel handshake failed");
                return (StatusCode::BAD_GATEWAY, "sentinel unreachable").into_response();
            }
        };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    for h in &HOP_BY_HOP {
        req.headers_mut().remove(h);
    }
    match sender.send_request(req).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            for h in &HOP_BY_HOP {
                parts.headers.remove(h);
            }
            Response::from_parts(parts, Body::new(body))
        }
        Err(e) => {
            tracing::warn!(error = %e, "forwarding to the sentinel failed");
            (StatusCode::BAD_GATEWAY, "sentinel request failed").into_response()
        }
    }
}

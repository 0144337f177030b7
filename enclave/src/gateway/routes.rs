//! The gateway's HTTP routes on the sentinel's API.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use trustbridge_protocol::ohttp::{
    ATTESTATION_PATH, CHUNKED_REQUEST_MEDIA_TYPE, CHUNKED_RESPONSE_MEDIA_TYPE, GATEWAY_PATH,
    KEYS_MEDIA_TYPE, MAX_REQUEST_LEN, REQUEST_MEDIA_TYPE, RESPONSE_MEDIA_TYPE,
};

use super::attestation::PublishError;
use super::{OuterError, RECEIPT_LOG_HEADER};
use crate::sentinel::Sentinel;

/// `GET`/`POST /.well-known/ohttp-gateway`, `GET /.well-known/trustbridge-attestation`.
pub fn routes(sentinel: Arc<Sentinel>) -> Router {
    let (k, r, a) = (sentinel.clone(), sentinel.clone(), sentinel);
    Router::new()
        .route(
            GATEWAY_PATH,
            get(move || async move { keys(&k) })
                .post(move |req: axum::extract::Request| async move { post(&r, req).await }),
        )
        .route(
            ATTESTATION_PATH,
            get(move |uri: Uri| async move { attestation(&a, nonce_of(&uri)).await }),
        )
        .layer(DefaultBodyLimit::max(MAX_REQUEST_LEN))
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (status, text).into_response()
}

fn keys(sentinel: &Sentinel) -> Response {
    match sentinel.gateway() {
        None => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "the gateway key does not exist yet",
        ),
        Some(g) => (
            [
                (header::CONTENT_TYPE, KEYS_MEDIA_TYPE),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            g.ohttp_keys().to_vec(),
        )
            .into_response(),
    }
}

/// `POST` to the gateway: a complete (`message/ohttp-req`) or chunked
/// (`message/ohttp-chunked-req`) encapsulated request.
async fn post(sentinel: &Sentinel, req: axum::extract::Request) -> Response {
    let (parts, body) = req.into_parts();
    let media = parts
        .headers
        .get(header::CONTENT_TYPE)
        .map(HeaderValue::as_bytes);
    if media == Some(CHUNKED_REQUEST_MEDIA_TYPE.as_bytes()) {
        let trailers = parts
            .headers
            .get_all(header::TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
        return chunked(sentinel, body, trailers).await;
    }
    if media != Some(REQUEST_MEDIA_TYPE.as_bytes()) {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected content-type message/ohttp-req or message/ohttp-chunked-req",
        );
    }
    match axum::body::to_bytes(body, MAX_REQUEST_LEN).await {
        Ok(bytes) => request(sentinel, &parts.headers, &bytes).await,
        Err(_) => plain(StatusCode::PAYLOAD_TOO_LARGE, "the request is too large"),
    }
}

async fn chunked(sentinel: &Sentinel, body: axum::body::Body, trailers: bool) -> Response {
    use futures_util::TryStreamExt;
    use tokio_util::compat::TokioAsyncReadCompatExt;
    let (Some(gateway), Some(serving), Some(policy)) = (
        sentinel.gateway(),
        sentinel.serving(),
        sentinel.policy_digest(),
    ) else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "not ready");
    };
    let src =
        tokio_util::io::StreamReader::new(body.into_data_stream().map_err(std::io::Error::other))
            .compat();
    match gateway
        .answer_chunked(
            src,
            serving.engine.clone(),
            serving.model.manifest.digest(),
            policy,
            trailers,
        )
        .await
    {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, CHUNKED_RESPONSE_MEDIA_TYPE),
                (header::CACHE_CONTROL, "no-store"),
                (header::TRAILER, RECEIPT_LOG_HEADER),
            ],
            body,
        )
            .into_response(),
        Err(e) => outer_error(e),
    }
}

async fn request(sentinel: &Sentinel, _headers: &HeaderMap, body: &[u8]) -> Response {
    let (Some(gateway), Some(serving), Some(policy)) = (
        sentinel.gateway(),
        sentinel.serving(),
        sentinel.policy_digest(),
    ) else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "not ready");
    };
    match gateway
        .answer(body, &serving.model, serving.engine.as_ref(), policy)
        .await
    {
        Ok(exchange) => (
            [
                (header::CONTENT_TYPE, RESPONSE_MEDIA_TYPE.to_owned()),
                (header::CACHE_CONTROL, "no-store".to_owned()),
                (
                    header::HeaderName::from_static(RECEIPT_LOG_HEADER),
                    exchange.log,
                ),
            ],
            exchange.encapsulated,
        )
            .into_response(),
        Err(e) => outer_error(e),
    }
}

fn outer_error(e: OuterError) -> Response {
    match e {
        OuterError::Decapsulate => plain(
            StatusCode::BAD_REQUEST,
            "the request cannot be decapsulated",
        ),
        OuterError::Replayed => plain(StatusCode::BAD_REQUEST, "the request was answered before"),
        OuterError::RequestTimeout => plain(
            StatusCode::REQUEST_TIMEOUT,
            "the request did not arrive in time",
        ),
        OuterError::Busy => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "too many requests at once",
        )
            .into_response(),
        e @ OuterError::NoReceipt(_) => {
            tracing::error!(error = %e, "request refused: no receipt");
            plain(StatusCode::SERVICE_UNAVAILABLE, "no receipt can be signed")
        }
        e => {
            tracing::error!(error = %e, "request failed");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the answer cannot be encapsulated",
            )
        }
    }
}

/// The `nonce` of `?nonce=HEX` (hex needs no percent-decoding; anything else is refused
/// as a bad nonce).
fn nonce_of(uri: &Uri) -> Option<String> {
    uri.query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("nonce="))
        .map(str::to_owned)
}

async fn attestation(sentinel: &Sentinel, nonce: Option<String>) -> Response {
    let Some(gateway) = sentinel.gateway() else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "no attestation yet");
    };
    let model = sentinel.model().map(|m| m.manifest.digest());
    let made = match nonce {
        None => gateway
            .publisher()
            .published(model)
            .await
            .map(|p| p.json.clone()),
        Some(n) => gateway
            .publisher()
            .for_nonce(&n, model)
            .await
            .map(|p| p.json),
    };
    match made {
        Ok(json) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            json,
        )
            .into_response(),
        Err(PublishError::RateLimited) => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "60")],
            "too many attestation requests with a nonce",
        )
            .into_response(),
        Err(PublishError::BadNonce) => plain(
            StatusCode::BAD_REQUEST,
            "the nonce must be 1 to 64 bytes, hex",
        ),
        Err(e) => {
            tracing::error!(error = %e, "attestation bundle failed");
            plain(StatusCode::SERVICE_UNAVAILABLE, "attestation failed")
        }
    }
}

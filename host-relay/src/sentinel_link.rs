//! Kept-alive connections from the relay to the sentinel over its transport (vsock, Unix
//! socket or TCP): a connection (and, on vsock, its setup) is reused by the next request
//! instead of opened anew for each.

use axum::body::Body;
use trustbridge_transport::Endpoint;
use trustbridge_transport::http1::{Http1Pool, PoolConfig};

/// A client whose every connection goes to the sentinel's endpoint. Requests keep the
/// client's `Host`; one without gets `sentinel`.
pub(crate) fn client(sentinel: Endpoint) -> Http1Pool<Body> {
    Http1Pool::new(
        sentinel,
        hyper::header::HeaderValue::from_static("sentinel"),
        PoolConfig::default(),
    )
}

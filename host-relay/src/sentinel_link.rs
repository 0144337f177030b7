//! Kept-alive connections from the relay to the sentinel over its transport (vsock, Unix
//! socket or TCP), through hyper's pooling client: a connection (and, on vsock, its
//! setup) is reused by the next request instead of opened anew for each.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use hyper::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use trustbridge_transport::{Endpoint, Stream};

/// A client whose every connection goes to one endpoint, whatever the request URI says.
pub(crate) fn client(sentinel: Endpoint) -> Client<Connector, Body> {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(60))
        .build(Connector(sentinel))
}

/// Connects to the sentinel's endpoint.
#[derive(Clone, Debug)]
pub(crate) struct Connector(Endpoint);

impl tower_service::Service<Uri> for Connector {
    type Response = Link;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Link, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let endpoint = self.0.clone();
        Box::pin(async move {
            Ok(Link(TokioIo::new(
                trustbridge_transport::connect(&endpoint).await?,
            )))
        })
    }
}

/// One connection to the sentinel.
pub(crate) struct Link(TokioIo<Stream>);

impl Connection for Link {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for Link {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Link {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

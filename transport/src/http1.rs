//! Kept-alive HTTP/1.1 connections to one [`Endpoint`]: the client side of each hop of
//! TrustBridge's request path (the proxy to the relay, the relay to the sentinel, the
//! sentinel to its runtime).
//!
//! A request takes an idle connection when one is there and opens one otherwise; the
//! connection goes back to the pool once its answer has been read to the end (an answer
//! dropped half-read closes its connection instead). This is what hyper-util's pooling
//! client does, without what these hops do not need (several hosts per pool, proxies,
//! HTTP/2, a connect racing every checkout, a task spawned per request): on this path a
//! hop is a few microseconds cheaper, and a request pays for every hop.
//!
//! A request that could not be written on an idle connection because its peer had closed
//! it meanwhile is sent again on a new one; any other failure is the caller's.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HOST, HeaderValue};
use hyper::{Method, Request, Response, Uri};
use hyper_util::rt::TokioIo;

use crate::Endpoint;

/// How long an idle connection is kept, and how many.
#[derive(Clone, Copy, Debug)]
pub struct PoolConfig {
    /// An idle connection older than this is closed rather than reused.
    pub idle_timeout: Duration,
    /// Idle connections kept at most (more are closed as their answers end).
    pub max_idle: usize,
    /// For a Unix socket endpoint: the user id the process at the other end must run
    /// under (read from the socket, `SO_PEERCRED`); a connection to any other is closed
    /// before anything is written on it. `None`: any peer.
    pub unix_peer_uid: Option<u32>,
}

impl Default for PoolConfig {
    /// 60 s, 64 connections, any peer.
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(60),
            max_idle: 64,
            unix_peer_uid: None,
        }
    }
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// No connection could be opened to the endpoint.
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// Why.
        source: std::io::Error,
    },
    /// The process at the other end of the Unix socket runs under another user id than
    /// [`PoolConfig::unix_peer_uid`] (or its id could not be read): nothing was sent.
    #[error("{endpoint}: the peer runs as uid {peer:?}, not {expected}: refused")]
    WrongPeer {
        /// The endpoint.
        endpoint: String,
        /// The peer's user id, if it could be read.
        peer: Option<u32>,
        /// The user id required.
        expected: u32,
    },
    /// The request cannot be sent over a pooled connection (CONNECT, whose connection
    /// becomes a tunnel).
    #[error("{0} is not sent over a pooled connection")]
    Unsupported(&'static str),
    /// The request failed on its connection (the peer closed it, sent no valid answer,
    /// or the request could not be written).
    #[error("HTTP/1.1 exchange with {endpoint} failed: {source}")]
    Exchange {
        /// The endpoint.
        endpoint: String,
        /// Why.
        source: hyper::Error,
    },
}

/// Kept-alive HTTP/1.1 connections to one endpoint, for requests whose body is `B`.
pub struct Http1Pool<B> {
    shared: Arc<Shared<B>>,
}

impl<B> Clone for Http1Pool<B> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<B> std::fmt::Debug for Http1Pool<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Http1Pool({})", self.shared.endpoint)
    }
}

struct Shared<B> {
    endpoint: Endpoint,
    host: HeaderValue,
    config: PoolConfig,
    /// Most recently returned last: the warmest connection is taken first.
    idle: Mutex<VecDeque<Idle<B>>>,
    /// Whether the task that closes idle connections past their time runs.
    sweeping: std::sync::atomic::AtomicBool,
}

struct Idle<B> {
    sender: SendRequest<B>,
    since: Instant,
}

/// How long a connection whose answer has ended may take to be ready for its next request
/// (its connection task has yet to see the end of the answer, or is still writing a
/// request body that the peer answered early) before it is closed rather than pooled.
const READY_WAIT: Duration = Duration::from_secs(1);

impl<B> Http1Pool<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// A pool of connections to `endpoint`; requests carry `Host: host` unless they set
    /// their own.
    pub fn new(endpoint: Endpoint, host: HeaderValue, config: PoolConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                endpoint,
                host,
                config,
                idle: Mutex::new(VecDeque::new()),
                sweeping: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.shared.endpoint
    }

    /// Sends `req` (its URI's path and query are the request target; any scheme and
    /// authority in it are ignored) and returns the answer's head, its body still to read.
    pub async fn send(&self, mut req: Request<B>) -> Result<Response<PooledBody<B>>, SendError> {
        if req.method() == Method::CONNECT {
            return Err(SendError::Unsupported("CONNECT"));
        }
        let target = req.uri().path_and_query().cloned();
        *req.uri_mut() = target.map_or_else(|| Uri::from_static("/"), Uri::from);
        if !req.headers().contains_key(HOST) {
            req.headers_mut().insert(HOST, self.shared.host.clone());
        }
        loop {
            let (mut sender, reused) = match self.checkout() {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let (parts, incoming) = resp.into_parts();
                    let ended = incoming.is_end_stream();
                    let mut body = PooledBody {
                        inner: Some(incoming),
                        sender: Some(sender),
                        pool: Arc::downgrade(&self.shared),
                    };
                    // An answer without content has already ended.
                    if ended {
                        body.release();
                    }
                    return Ok(Response::from_parts(parts, body));
                }
                Err(mut e) => match e.take_message() {
                    // Not written: the idle connection was closed under us. Once more, on
                    // another.
                    Some(unsent) if reused => req = unsent,
                    _ => {
                        return Err(SendError::Exchange {
                            endpoint: self.shared.endpoint.to_string(),
                            source: e.into_error(),
                        });
                    }
                },
            }
        }
    }

    /// An idle connection ready for a request, if there is one (never waits: only ready
    /// connections are pooled).
    fn checkout(&self) -> Option<SendRequest<B>> {
        loop {
            let idle = self.shared.lock().pop_back()?;
            if !self.shared.expired(&idle) && idle.sender.is_ready() {
                return Some(idle.sender);
            }
        }
    }

    /// A new connection.
    async fn connect(&self) -> Result<SendRequest<B>, SendError> {
        let endpoint = &self.shared.endpoint;
        let stream = crate::connect(endpoint)
            .await
            .map_err(|source| SendError::Connect {
                endpoint: endpoint.to_string(),
                source,
            })?;
        if let (Some(expected), crate::Stream::Unix(unix)) =
            (self.shared.config.unix_peer_uid, &stream)
        {
            let peer = unix.peer_cred().ok().map(|c| c.uid());
            if peer != Some(expected) {
                return Err(SendError::WrongPeer {
                    endpoint: endpoint.to_string(),
                    peer,
                    expected,
                });
            }
        }
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| SendError::Exchange {
                endpoint: endpoint.to_string(),
                source,
            })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTP/1.1 connection ended with an error");
            }
        });
        Ok(sender)
    }
}

impl<B> Shared<B> {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Idle<B>>> {
        // The queue is consistent after any panic (a push or a pop either happened or not).
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether an idle connection is closed or past its time.
    fn expired(&self, idle: &Idle<B>) -> bool {
        idle.sender.is_closed() || idle.since.elapsed() > self.config.idle_timeout
    }

    /// Closes the idle connections past their time (the oldest are at the front).
    fn prune(&self, idle: &mut VecDeque<Idle<B>>) {
        while idle.front().is_some_and(|oldest| self.expired(oldest)) {
            idle.pop_front();
        }
    }

    /// Pools a connection ready for its next request.
    fn park(&self, sender: SendRequest<B>) {
        let mut idle = self.lock();
        self.prune(&mut idle);
        if idle.len() < self.config.max_idle {
            idle.push_back(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }
}

impl<B: Send + 'static> Shared<B> {
    /// Starts, once, a task that closes idle connections past their time even when no
    /// request comes (it ends with the pool).
    fn sweep(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.sweeping.load(Ordering::Relaxed) || self.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.sweeping.store(false, Ordering::Relaxed);
            return;
        };
        /// Lets another sweeper start if this one ends with its runtime.
        struct Stopped<B>(Weak<Shared<B>>);
        impl<B> Drop for Stopped<B> {
            fn drop(&mut self) {
                if let Some(pool) = self.0.upgrade() {
                    pool.sweeping.store(false, Ordering::Relaxed);
                }
            }
        }
        let pool = Arc::downgrade(self);
        let every = (self.config.idle_timeout / 2).max(Duration::from_millis(10));
        runtime.spawn(async move {
            let _stopped = Stopped(pool.clone());
            loop {
                tokio::time::sleep(every).await;
                let Some(pool) = pool.upgrade() else {
                    return;
                };
                let mut idle = pool.lock();
                pool.prune(&mut idle);
            }
        });
    }
}

/// An answer's body; its connection goes back to the pool once it has been read to the
/// end.
pub struct PooledBody<B> {
    inner: Option<Incoming>,
    sender: Option<SendRequest<B>>,
    pool: Weak<Shared<B>>,
}

impl<B> std::fmt::Debug for PooledBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PooledBody")
    }
}

impl<B: Send + 'static> PooledBody<B> {
    /// Hands the connection back: its answer has ended. A connection not yet ready for the
    /// next request is pooled once it is (within [`READY_WAIT`]), never before.
    fn release(&mut self) {
        let (Some(mut sender), Some(pool)) = (self.sender.take(), self.pool.upgrade()) else {
            return;
        };
        pool.sweep();
        if sender.is_ready() {
            pool.park(sender);
            return;
        }
        if sender.is_closed() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = Arc::downgrade(&pool);
        runtime.spawn(async move {
            if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, sender.ready()).await
                && let Some(pool) = pool.upgrade()
            {
                pool.park(sender);
            }
        });
    }
}

impl<B: Send + 'static> Body for PooledBody<B> {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                this.inner = None;
                this.release();
            }
            // Trailers end an answer; so does the last byte of a known length (a reader may
            // stop at `is_end_stream` without asking for more).
            Poll::Ready(Some(Ok(frame))) => {
                if frame.is_trailers() || this.inner.as_ref().is_some_and(Body::is_end_stream) {
                    this.release();
                }
            }
            // A broken answer: its connection is not reused.
            Poll::Ready(Some(Err(_))) => this.sender = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

//! Serving sealed bundles to the sentinel: `GET /bundle/<path>` from a local directory,
//! over HTTP/1.1 with single-range requests, so the sentinel can download in parallel
//! chunks and resume.
//!
//! This is the relay's bulk path, so it is a small purpose-built server rather than a
//! general one: the file bytes go from the page cache to the socket with `sendfile(2)`
//! (see [`send`]), never through the relay's memory. It answers GET and HEAD with 200,
//! 206 or 416 (RFC 9110 ranges; multi-range requests get the whole file), 404 for
//! anything outside the directory, 405 for other methods, 400 for requests with a body;
//! keep-alive and pipelining work as HTTP/1.1 says.
//!
//! The relay serves ciphertext only (`manifest.cose` and `*.sealed` files); it cannot read
//! them, and whatever it changes the sentinel detects (signed manifest, authenticated
//! segments).

mod request;
mod send;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trustbridge_transport::{Listener, Stream};

use request::{Rejection, Span};

/// How long a connection may sit without sending a complete request head.
const IDLE: Duration = Duration::from_secs(60);

/// A bundle directory being served, and what was served from it.
#[derive(Debug)]
pub struct BundleServer {
    root: PathBuf,
    requests: AtomicU64,
    bytes: AtomicU64,
    /// False while the bundle is still being mirrored: requests get 503 and a Retry-After.
    ready: std::sync::atomic::AtomicBool,
}

impl BundleServer {
    /// Serves `dir`, which must exist.
    pub fn new(dir: &Path) -> io::Result<Arc<Self>> {
        let root = std::fs::canonicalize(dir)?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", dir.display()),
            ));
        }
        Ok(Arc::new(Self {
            root,
            requests: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            ready: std::sync::atomic::AtomicBool::new(true),
        }))
    }

    /// Serves `dir` once [`Self::mark_ready`] is called; until then every request is
    /// answered 503 with `Retry-After` (the sentinel retries), for a bundle being mirrored.
    pub fn not_ready_yet(dir: &Path) -> io::Result<Arc<Self>> {
        let server = Self::new(dir)?;
        server.ready.store(false, Ordering::SeqCst);
        Ok(server)
    }

    /// Starts serving the files.
    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Requests answered so far (any status).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// File bytes sent so far.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Accepts connections on `listener` forever, one task per connection.
    pub async fn serve(self: Arc<Self>, listener: Listener) -> io::Result<()> {
        loop {
            let (stream, peer) = match listener.accept_stream().await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "bundle listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let server = self.clone();
            tokio::spawn(async move {
                if let Err(e) = server.connection(stream).await {
                    tracing::debug!(%peer, error = %e, "bundle connection ended");
                }
            });
        }
    }

    /// Answers the requests of one connection until it closes.
    async fn connection(&self, mut stream: Stream) -> io::Result<()> {
        let mut buf = Vec::with_capacity(4096);
        loop {
            let Some(head_len) = read_head(&mut stream, &mut buf).await? else {
                return Ok(());
            };
            let parsed = request::parse(&buf[..head_len]);
            buf.drain(..head_len);
            self.requests.fetch_add(1, Ordering::Relaxed);
            let Some(req) = parsed else {
                respond(&mut stream, 400, "Bad Request", &[], false).await?;
                return Ok(());
            };
            let keep_alive = self.answer(&mut stream, req).await?;
            if !keep_alive {
                return stream.shutdown().await;
            }
        }
    }

    /// Answers one request; returns whether the connection may stay open.
    async fn answer(&self, stream: &mut Stream, req: request::Request) -> io::Result<bool> {
        if !self.ready.load(Ordering::SeqCst) {
            let retry = [("Retry-After", "1".to_owned())];
            respond(stream, 503, "Service Unavailable", &retry, req.keep_alive).await?;
            return Ok(req.keep_alive);
        }
        let path = match req.path {
            Ok(p) => p,
            Err(Rejection::NotFound) => return not_found(stream, req.keep_alive).await,
            Err(Rejection::Method) => {
                let allow = [("Allow", "GET, HEAD".to_owned())];
                respond(stream, 405, "Method Not Allowed", &allow, req.keep_alive).await?;
                return Ok(req.keep_alive);
            }
            Err(Rejection::BadRequest) => {
                respond(stream, 400, "Bad Request", &[], false).await?;
                return Ok(false);
            }
        };
        let Some(full) = request::resolve(&self.root, &path) else {
            tracing::info!(path = %path.display(), "bundle file not found");
            return not_found(stream, req.keep_alive).await;
        };
        let Ok(file) = std::fs::File::open(&full) else {
            return not_found(stream, req.keep_alive).await;
        };
        let meta = file.metadata()?;
        let len = meta.len();
        let (status, reason, start, count, mut headers) =
            match request::span(req.range.as_deref(), len) {
                Span::Whole => (200, "OK", 0, len, vec![]),
                Span::Part { start, end } => (
                    206,
                    "Partial Content",
                    start,
                    end - start + 1,
                    vec![("Content-Range", format!("bytes {start}-{end}/{len}"))],
                ),
                Span::Unsatisfiable => {
                    let range = [("Content-Range", format!("bytes */{len}"))];
                    respond(stream, 416, "Range Not Satisfiable", &range, req.keep_alive).await?;
                    return Ok(req.keep_alive);
                }
            };
        headers.push(("Content-Type", "application/octet-stream".to_owned()));
        headers.push(("Accept-Ranges", "bytes".to_owned()));
        // Validators (some object-store clients require them): the modification time and a
        // strong tag from length and modification time.
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let nanos = modified
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        headers.push(("Last-Modified", httpdate::fmt_http_date(modified)));
        headers.push(("ETag", format!("\"{len:x}-{nanos:x}\"")));
        let head = head(status, reason, count, &headers, req.keep_alive);
        stream.write_all(head.as_bytes()).await?;
        if !req.head_only {
            send::send_file(stream, &file, start, count).await?;
            self.bytes.fetch_add(count, Ordering::Relaxed);
        }
        tracing::debug!(path = %path.display(), status, start, count, "bundle request served");
        Ok(req.keep_alive)
    }
}

/// Reads until `buf` holds a complete request head; returns its length, or `None` when the
/// peer closed cleanly between requests.
async fn read_head(stream: &mut Stream, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some(end + 4));
        }
        if buf.len() > request::MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(IDLE, stream.read(&mut chunk))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "idle connection"))??;
        if n == 0 {
            return if buf.iter().all(u8::is_ascii_whitespace) {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn head(
    status: u16,
    reason: &str,
    content_length: u64,
    headers: &[(&str, String)],
    keep_alive: bool,
) -> String {
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nDate: {}\r\nContent-Length: {content_length}\r\n",
        httpdate::fmt_http_date(SystemTime::now())
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    head
}

/// A response whose body is its reason phrase.
async fn respond(
    stream: &mut Stream,
    status: u16,
    reason: &str,
    headers: &[(&str, String)],
    keep_alive: bool,
) -> io::Result<()> {
    let mut headers = headers.to_vec();
    headers.push(("Content-Type", "text/plain".to_owned()));
    let body = format!("{reason}\n");
    let mut out = head(status, reason, body.len() as u64, &headers, keep_alive);
    out.push_str(&body);
    stream.write_all(out.as_bytes()).await
}

async fn not_found(stream: &mut Stream, keep_alive: bool) -> io::Result<bool> {
    respond(stream, 404, "Not Found", &[], keep_alive).await?;
    Ok(keep_alive)
}

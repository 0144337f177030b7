//! The sentinel's HTTP/1.1 client for the relay's bundle server: one GET per connection,
//! whose body the caller reads straight into its own buffers (no intermediate copy; see
//! `docs/SENTINEL.md` for why this path is hand-written).
//!
//! The relay is untrusted, so the response is checked strictly: the status, a
//! `Content-Length` equal to what was asked, and for ranges a `Content-Range` naming
//! exactly the requested bytes. Chunked or otherwise framed bodies are refused. A
//! misbehaving relay costs retries (bounded) and never more bytes than asked for.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trustbridge_transport::{Endpoint, Stream};

use crate::boot::StepError;
use crate::failure::FailureCode;

/// Longest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// Longest wait for the next bytes of a response.
const IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// A response body being read.
pub(crate) struct Body {
    stream: Stream,
    /// Body bytes that arrived with the head.
    pending: Vec<u8>,
    /// Bytes of the body not yet handed out.
    remaining: u64,
    /// The request path, for messages.
    path: String,
}

impl Body {
    /// The body's length still to read.
    pub(crate) fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Fills `dst` from the body; a body that ends early is a transient error.
    pub(crate) async fn read_exact(&mut self, dst: &mut [u8]) -> Result<(), StepError> {
        if dst.len() as u64 > self.remaining {
            return Err(transient(&self.path, "read past the announced body"));
        }
        let from_pending = dst.len().min(self.pending.len());
        dst[..from_pending].copy_from_slice(&self.pending[..from_pending]);
        self.pending.drain(..from_pending);
        let mut filled = from_pending;
        while filled < dst.len() {
            let n = read_some(&mut self.stream, &mut dst[filled..], &self.path).await?;
            if n == 0 {
                return Err(transient(&self.path, "body ended early"));
            }
            filled += n;
        }
        self.remaining -= dst.len() as u64;
        Ok(())
    }

    /// The rest of the body, for small whole-file responses.
    pub(crate) async fn into_vec(mut self) -> Result<Vec<u8>, StepError> {
        let mut out = vec![0u8; self.remaining as usize];
        self.read_exact(&mut out).await?;
        Ok(out)
    }
}

/// One read, which must make progress within [`IDLE`]: a stalled relay costs a retry, not
/// a hung boot.
async fn read_some(stream: &mut Stream, buf: &mut [u8], path: &str) -> Result<usize, StepError> {
    tokio::time::timeout(IDLE, stream.read(buf))
        .await
        .map_err(|_| transient(path, &format!("no data for {} s", IDLE.as_secs())))?
        .map_err(|e| transient(path, &e.to_string()))
}

fn transient(path: &str, detail: &str) -> StepError {
    StepError::Transient(format!("relay {path}: {detail}"))
}

/// `GET path` from `source`, for the inclusive byte `range` or (without one) the whole
/// file of at most `max_len` bytes. Returns the body, positioned at its first byte.
pub(crate) async fn get(
    source: &Endpoint,
    path: &str,
    range: Option<(u64, u64)>,
    max_len: u64,
) -> Result<Body, StepError> {
    let mut stream = trustbridge_transport::connect(source)
        .await
        .map_err(|e| transient(path, &e.to_string()))?;
    let range_header = range
        .map(|(start, end)| format!("Range: bytes={start}-{end}\r\n"))
        .unwrap_or_default();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: relay\r\n{range_header}Connection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| transient(path, &e.to_string()))?;
    let mut buf = Vec::with_capacity(4096);
    let head_len = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(transient(path, "response head too large"));
        }
        let mut chunk = [0u8; 4096];
        let n = read_some(&mut stream, &mut chunk, path).await?;
        if n == 0 {
            return Err(transient(path, "connection closed before a response"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let remaining = check_head(path, &buf[..head_len], range, max_len)?;
    let mut pending = buf.split_off(head_len);
    if pending.len() as u64 > remaining {
        pending.truncate(remaining as usize);
    }
    Ok(Body {
        stream,
        pending,
        remaining,
        path: path.to_owned(),
    })
}

/// Checks a response head against the request; returns the body length.
fn check_head(
    path: &str,
    head: &[u8],
    range: Option<(u64, u64)>,
    max_len: u64,
) -> Result<u64, StepError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let parsed = resp
        .parse(head)
        .map_err(|e| transient(path, &e.to_string()))?;
    let (httparse::Status::Complete(_), Some(status)) = (parsed, resp.code) else {
        return Err(transient(path, "incomplete response head"));
    };
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    };
    match (status, range) {
        (200, None) | (206, Some(_)) => {}
        (404, _) => {
            return Err(StepError::Fatal {
                code: FailureCode::BundleMissing,
                detail: format!("the relay has no {path}"),
            });
        }
        (s, _) if s >= 500 => return Err(transient(path, &format!("HTTP {s}"))),
        (s, _) => {
            return Err(StepError::Fatal {
                code: FailureCode::BundleMissing,
                detail: format!("{path}: HTTP {s}"),
            });
        }
    }
    if header("transfer-encoding").is_some() {
        return Err(transient(path, "framed (chunked) bodies are not accepted"));
    }
    let length: u64 = header("content-length")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| transient(path, "no valid Content-Length"))?;
    match range {
        Some((start, end)) => {
            let expected = format!("bytes {start}-{end}/");
            let content_range = header("content-range").unwrap_or("");
            if length != end - start + 1 || !content_range.starts_with(&expected) {
                return Err(transient(
                    path,
                    &format!("answered {content_range:?} ({length} bytes) for bytes {start}-{end}"),
                ));
            }
        }
        None if length > max_len => {
            return Err(StepError::Fatal {
                code: FailureCode::BundleInvalid,
                detail: format!("{path} is {length} bytes, over the {max_len}-byte limit"),
            });
        }
        None => {}
    }
    Ok(length)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: Result<u64, StepError>) -> String {
        match r {
            Ok(n) => format!("ok {n}"),
            Err(StepError::Transient(_)) => "transient".into(),
            Err(StepError::Fatal { code, .. }) => code.as_str().to_owned(),
        }
    }

    #[test]
    fn heads_are_checked_against_the_request() {
        let c = |head: &str, range| code(check_head("/p", head.as_bytes(), range, 100));
        let ok206 = "HTTP/1.1 206 Partial Content\r\nContent-Length: 10\r\nContent-Range: bytes 0-9/50\r\n\r\n";
        assert_eq!(c(ok206, Some((0, 9))), "ok 10");
        assert_eq!(c(ok206, Some((0, 10))), "transient");
        assert_eq!(c(ok206, Some((1, 10))), "transient");
        assert_eq!(c(ok206, None), "bundle_missing");
        let ok200 = "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n";
        assert_eq!(c(ok200, None), "ok 50");
        assert_eq!(c(ok200, Some((0, 49))), "bundle_missing");
        assert_eq!(
            c("HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n", None),
            "bundle_invalid"
        );
        assert_eq!(c("HTTP/1.1 200 OK\r\n\r\n", None), "transient");
        assert_eq!(
            c(
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                None
            ),
            "transient"
        );
        assert_eq!(c("HTTP/1.1 404 Not Found\r\n\r\n", None), "bundle_missing");
        assert_eq!(c("HTTP/1.1 503 Busy\r\n\r\n", None), "transient");
        assert_eq!(c("garbage\r\n\r\n", None), "transient");
    }

    #[tokio::test(start_paused = true)]
    async fn a_relay_that_stalls_mid_body_costs_a_retry_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = Endpoint::Unix(dir.path().join("r.sock"));
        let listener = trustbridge_transport::Listener::bind(&endpoint)
            .await
            .unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept_stream().await.unwrap();
            let mut req = [0u8; 1024];
            let _ = s.read(&mut req).await.unwrap();
            s.write_all(b"HTTP/1.1 206 Partial Content\r\nContent-Length: 10\r\nContent-Range: bytes 0-9/10\r\n\r\nabc")
                .await
                .unwrap();
            // ...and then nothing, with the connection held open.
            std::future::pending::<()>().await;
        });
        let mut body = get(&endpoint, "/bundle/x", Some((0, 9)), 0).await.unwrap();
        let mut dst = [0u8; 10];
        match body.read_exact(&mut dst).await {
            Err(StepError::Transient(e)) => assert!(e.contains("no data for 30 s"), "{e}"),
            other => panic!("expected a transient stall, got {:?}", other.err()),
        }
        assert_eq!(&dst[..3], b"abc");
        server.abort();
    }
}

//! One bundle request: its HTTP/1.1 head, the bundle path it names, and the byte range.

use std::path::{Path, PathBuf};

/// Longest request head accepted.
pub(crate) const MAX_HEAD: usize = 16 * 1024;

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Request {
    /// `HEAD` rather than `GET`.
    pub(crate) head_only: bool,
    /// The path below the bundle directory (`/bundle/` stripped, percent-decoded).
    pub(crate) path: Result<PathBuf, Rejection>,
    /// The `Range` header, if any.
    pub(crate) range: Option<String>,
    /// Whether the connection stays open after the response.
    pub(crate) keep_alive: bool,
}

/// Why a request is refused before touching the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// Not under `/bundle/`, or a path that could escape the directory.
    NotFound,
    /// A method other than GET and HEAD.
    Method,
    /// A request carrying a body, or malformed.
    BadRequest,
}

/// Parses a complete head (ending in CRLF CRLF). `None` when the head is malformed.
pub(crate) fn parse(head: &[u8]) -> Option<Request> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(_) = req.parse(head).ok()? else {
        return None;
    };
    let (method, target, version) = (req.method?, req.path?, req.version?);
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let connection = header("connection").unwrap_or("").to_ascii_lowercase();
    let keep_alive = if version == 0 {
        connection.contains("keep-alive")
    } else {
        !connection.contains("close")
    };
    let has_body = header("transfer-encoding").is_some()
        || header("content-length").is_some_and(|v| v.trim() != "0");
    let path = match method {
        _ if has_body => Err(Rejection::BadRequest),
        "GET" | "HEAD" => bundle_path(target),
        _ => Err(Rejection::Method),
    };
    Some(Request {
        head_only: method == "HEAD",
        path,
        range: header("range").map(str::to_owned),
        keep_alive,
    })
}

/// The relative file path a `/bundle/...` target names: percent-decoded components, none
/// empty, `.`, `..`, or containing `/`, `\` or NUL after decoding.
fn bundle_path(target: &str) -> Result<PathBuf, Rejection> {
    let target = target.split(['?', '#']).next().unwrap_or("");
    let rest = target.strip_prefix("/bundle/").ok_or(Rejection::NotFound)?;
    let mut path = PathBuf::new();
    for component in rest.split('/') {
        let decoded = percent_decode(component).ok_or(Rejection::NotFound)?;
        if decoded.is_empty()
            || decoded == "."
            || decoded == ".."
            || decoded.contains(['/', '\\', '\0'])
        {
            return Err(Rejection::NotFound);
        }
        path.push(decoded);
    }
    Ok(path)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The byte range to send from a file of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Span {
    /// The whole file (no `Range`, or one this server ignores as RFC 9110 allows:
    /// malformed or multi-range).
    Whole,
    /// `start..=end`, answered with 206.
    Part { start: u64, end: u64 },
    /// A syntactically valid range that the file cannot satisfy: 416.
    Unsatisfiable,
}

/// Interprets a `Range` header value against a file of `len` bytes.
pub(crate) fn span(range: Option<&str>, len: u64) -> Span {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return Span::Whole;
    };
    if spec.contains(',') {
        return Span::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Span::Whole;
    };
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (from, to) = (number(first), number(last));
    match (from, to) {
        (None, Some(n)) if first.is_empty() => {
            if n == 0 || len == 0 {
                Span::Unsatisfiable
            } else {
                Span::Part {
                    start: len.saturating_sub(n),
                    end: len - 1,
                }
            }
        }
        (Some(start), None) if last.is_empty() => {
            if start < len {
                Span::Part {
                    start,
                    end: len - 1,
                }
            } else {
                Span::Unsatisfiable
            }
        }
        (Some(start), Some(end)) if end >= start => {
            if start < len {
                Span::Part {
                    start,
                    end: end.min(len - 1),
                }
            } else {
                Span::Unsatisfiable
            }
        }
        _ => Span::Whole,
    }
}

/// `dir/path` when it resolves (symlinks included) to a regular file inside `root`, the
/// canonical bundle directory.
pub(crate) fn resolve(root: &Path, path: &Path) -> Option<PathBuf> {
    let full = std::fs::canonicalize(root.join(path)).ok()?;
    (full.starts_with(root) && full.is_file()).then_some(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        let s = |r: &str| span(Some(r), 100);
        assert_eq!(span(None, 100), Span::Whole);
        assert_eq!(s("bytes=0-9"), Span::Part { start: 0, end: 9 });
        assert_eq!(s("bytes=90-"), Span::Part { start: 90, end: 99 });
        assert_eq!(s("bytes=90-500"), Span::Part { start: 90, end: 99 });
        assert_eq!(s("bytes=-10"), Span::Part { start: 90, end: 99 });
        assert_eq!(s("bytes=-500"), Span::Part { start: 0, end: 99 });
        assert_eq!(s("bytes=100-"), Span::Unsatisfiable);
        assert_eq!(s("bytes=100-200"), Span::Unsatisfiable);
        assert_eq!(s("bytes=-0"), Span::Unsatisfiable);
        assert_eq!(span(Some("bytes=-5"), 0), Span::Unsatisfiable);
        for ignored in [
            "bytes=5-1",
            "bytes=0-1,5-6",
            "bytes=a-b",
            "items=0-1",
            "bytes=1",
            "bytes=+1-2",
            "bytes=1-x",
        ] {
            assert_eq!(s(ignored), Span::Whole, "{ignored}");
        }
    }

    #[test]
    fn paths_cannot_escape_the_bundle() {
        let p = |t: &str| bundle_path(t);
        assert_eq!(
            p("/bundle/a/b%20c.sealed"),
            Ok(PathBuf::from("a/b c.sealed"))
        );
        assert_eq!(
            p("/bundle/manifest.cose?x=1"),
            Ok(PathBuf::from("manifest.cose"))
        );
        for bad in [
            "/bundle/",
            "/bundle/../etc/passwd",
            "/bundle/a/%2e%2e/b",
            "/bundle/a%2fb",
            "/bundle/a//b",
            "/bundle/%00",
            "/bundle/%zz",
            "/other/x",
            "/bundle/a\\..",
        ] {
            assert_eq!(p(bad), Err(Rejection::NotFound), "{bad}");
        }
    }

    #[test]
    fn heads_parse_methods_bodies_and_connection() {
        let r = parse(b"GET /bundle/x HTTP/1.1\r\nHost: r\r\nRange: bytes=1-2\r\n\r\n").unwrap();
        assert_eq!(r.range.as_deref(), Some("bytes=1-2"));
        assert!(r.keep_alive && !r.head_only);
        let r = parse(b"HEAD /bundle/x HTTP/1.0\r\n\r\n").unwrap();
        assert!(r.head_only && !r.keep_alive);
        let r = parse(b"GET /bundle/x HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
        assert!(!r.keep_alive);
        let r = parse(b"POST /bundle/x HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(r.path, Err(Rejection::Method));
        let r = parse(b"GET /bundle/x HTTP/1.1\r\nContent-Length: 5\r\n\r\n").unwrap();
        assert_eq!(r.path, Err(Rejection::BadRequest));
        assert!(parse(b"GARBAGE\r\n\r\n").is_none());
    }
}

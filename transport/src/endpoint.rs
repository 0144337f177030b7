//! Parsing and printing endpoint URIs.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A place to listen on or connect to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `vsock://CID:PORT`.
    Vsock {
        /// Context id (3+ for guests, 2 for the host, `-1`/u32::MAX for any when listening).
        cid: u32,
        /// Port.
        port: u32,
    },
    /// `unix:///absolute/path` or `unix://relative/path`.
    Unix(PathBuf),
    /// `tcp://HOST:PORT`.
    Tcp {
        /// Host name or IP address (IPv6 in brackets).
        host: String,
        /// Port.
        port: u16,
    },
}

/// An endpoint URI that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndpointError {
    /// The scheme is not vsock, unix or tcp.
    #[error("{0:?}: use vsock://CID:PORT, unix:///path or tcp://HOST:PORT")]
    Scheme(String),
    /// The authority or path is malformed.
    #[error("{uri:?}: {reason}")]
    Malformed {
        /// The URI.
        uri: String,
        /// What is wrong.
        reason: &'static str,
    },
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(uri: &str) -> Result<Self, Self::Err> {
        let bad = |reason| EndpointError::Malformed {
            uri: uri.to_owned(),
            reason,
        };
        let (scheme, rest) = uri
            .split_once("://")
            .ok_or_else(|| EndpointError::Scheme(uri.to_owned()))?;
        match scheme {
            "vsock" => {
                let (cid, port) = rest
                    .split_once(':')
                    .ok_or_else(|| bad("expected CID:PORT"))?;
                let cid = if cid == "-1" {
                    u32::MAX
                } else {
                    cid.parse().map_err(|_| bad("CID is not a number"))?
                };
                let port = port.parse().map_err(|_| bad("port is not a number"))?;
                Ok(Self::Vsock { cid, port })
            }
            "unix" => {
                if rest.is_empty() {
                    return Err(bad("empty socket path"));
                }
                Ok(Self::Unix(PathBuf::from(rest)))
            }
            "tcp" => {
                let (host, port) = rest
                    .rsplit_once(':')
                    .ok_or_else(|| bad("expected HOST:PORT"))?;
                if host.is_empty() || rest.contains('/') {
                    return Err(bad("expected HOST:PORT"));
                }
                let port = port
                    .parse()
                    .map_err(|_| bad("port is not a number from 0 to 65535"))?;
                Ok(Self::Tcp {
                    host: host.to_owned(),
                    port,
                })
            }
            _ => Err(EndpointError::Scheme(uri.to_owned())),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Vsock { cid, port } if *cid == u32::MAX => write!(f, "vsock://-1:{port}"),
            Self::Vsock { cid, port } => write!(f, "vsock://{cid}:{port}"),
            Self::Unix(path) => write!(f, "unix://{}", path.display()),
            Self::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_scheme() {
        for uri in [
            "vsock://16:5000",
            "vsock://-1:8000",
            "unix:///run/tb/relay.sock",
            "tcp://127.0.0.1:8443",
            "tcp://[::1]:80",
            "tcp://relay.internal:443",
        ] {
            let e: Endpoint = uri.parse().unwrap();
            assert_eq!(e.to_string(), uri);
        }
        assert_eq!(
            "vsock://3:80".parse::<Endpoint>().unwrap(),
            Endpoint::Vsock { cid: 3, port: 80 }
        );
        assert_eq!(
            "tcp://[::1]:80".parse::<Endpoint>().unwrap(),
            Endpoint::Tcp {
                host: "[::1]".into(),
                port: 80
            }
        );
    }

    #[test]
    fn rejects_malformed_uris() {
        for bad in [
            "",
            "http://x:1",
            "tcp://x",
            "tcp://:80",
            "tcp://x:99999",
            "tcp://x:80/path",
            "vsock://x:1",
            "vsock://3",
            "unix://",
            "127.0.0.1:80",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad:?} accepted");
        }
    }
}

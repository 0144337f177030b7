//! Listening on any transport; usable directly with `axum::serve`.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio_vsock::{VsockAddr, VsockListener};

use crate::{Endpoint, Stream};

/// A listener on TCP, a Unix socket or vsock.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// Unix domain socket; the socket file is removed on drop.
    Unix(UnixListener, PathBuf),
    /// Virtio socket.
    Vsock(VsockListener),
}

impl Listener {
    /// Binds `endpoint`. A Unix socket gets mode 0600; a stale socket file is replaced, but
    /// any other file at that path is an error.
    pub async fn bind(endpoint: &Endpoint) -> io::Result<Self> {
        Ok(match endpoint {
            Endpoint::Tcp { host, port } => Self::Tcp(
                TcpListener::bind((host.trim_start_matches('[').trim_end_matches(']'), *port))
                    .await?,
            ),
            Endpoint::Unix(path) => {
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    if !meta.file_type().is_socket() {
                        return Err(io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            format!("{} exists and is not a socket", path.display()),
                        ));
                    }
                    std::fs::remove_file(path)?;
                }
                let listener = UnixListener::bind(path)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
                Self::Unix(listener, path.clone())
            }
            Endpoint::Vsock { cid, port } => {
                Self::Vsock(VsockListener::bind(VsockAddr::new(*cid, *port))?)
            }
        })
    }

    /// The endpoint actually bound (with the port chosen by the system for TCP port 0).
    pub fn local_endpoint(&self) -> io::Result<Endpoint> {
        Ok(match self {
            Self::Tcp(l) => {
                let a = l.local_addr()?;
                let host = if a.is_ipv6() {
                    format!("[{}]", a.ip())
                } else {
                    a.ip().to_string()
                };
                Endpoint::Tcp {
                    host,
                    port: a.port(),
                }
            }
            Self::Unix(_, path) => Endpoint::Unix(path.clone()),
            Self::Vsock(l) => {
                let a = l.local_addr()?;
                Endpoint::Vsock {
                    cid: a.cid(),
                    port: a.port(),
                }
            }
        })
    }

    /// Accepts one connection and describes the peer.
    pub async fn accept_stream(&self) -> io::Result<(Stream, String)> {
        Ok(match self {
            Self::Tcp(l) => {
                let (s, a) = l.accept().await?;
                s.set_nodelay(true)?;
                (Stream::Tcp(s), a.to_string())
            }
            Self::Unix(l, path) => {
                let (s, _) = l.accept().await?;
                (Stream::Unix(s), format!("unix:{}", path.display()))
            }
            Self::Vsock(l) => {
                let (s, a) = l.accept().await?;
                (Stream::Vsock(s), format!("vsock:{}:{}", a.cid(), a.port()))
            }
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Self::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl axum::serve::Listener for Listener {
    type Io = Stream;
    type Addr = String;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.accept_stream().await {
                Ok(conn) => return conn,
                // Out of file descriptors and the like: wait and retry, as axum's TCP listener does.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.local_endpoint().map(|e| e.to_string())
    }
}

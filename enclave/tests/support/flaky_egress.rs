//! A stand-in for a hostile relay's egress, in front of the real one: it tunnels, answers
//! every `CONNECT` with 502, takes the request and never answers, or opens a tunnel that
//! never answers, as the test says.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trustbridge_transport::{Endpoint, Listener};

/// What the stand-in does with the next connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Tunnel to the real egress.
    Pass = 0,
    /// Answer `502 Bad Gateway` and close.
    BadGateway = 1,
    /// Read the request and hold the connection, silent.
    Hang = 2,
    /// Answer the `CONNECT` as if tunnelling, then hold the connection, silent.
    HangAfterConnect = 3,
}

pub struct FlakyEgress {
    pub endpoint: Endpoint,
    mode: Arc<AtomicU8>,
}

impl FlakyEgress {
    /// Listens on `endpoint` and forwards to `real` while in [`Mode::Pass`].
    pub async fn start(endpoint: Endpoint, real: Endpoint) -> Self {
        let mode = Arc::new(AtomicU8::new(Mode::Pass as u8));
        let listener = Listener::bind(&endpoint).await.unwrap();
        let m = mode.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept_stream().await else {
                    return;
                };
                let mode = m.load(Ordering::SeqCst);
                let real = real.clone();
                tokio::spawn(async move {
                    if mode == Mode::Pass as u8 {
                        if let Ok(mut upstream) = trustbridge_transport::connect(&real).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                        }
                        return;
                    }
                    let mut head = [0u8; 1024];
                    let _ = client.read(&mut head).await;
                    if mode == Mode::BadGateway as u8 {
                        let _ = client
                            .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                            .await;
                        let _ = client.shutdown().await;
                    } else if mode == Mode::HangAfterConnect as u8 {
                        let _ = client
                            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                            .await;
                        std::future::pending::<()>().await;
                        drop(client);
                    } else {
                        std::future::pending::<()>().await;
                        drop(client);
                    }
                });
            }
        });
        Self { endpoint, mode }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }
}

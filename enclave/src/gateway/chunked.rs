//! Chunked Oblivious HTTP (draft-ietf-ohai-chunked-ohttp): a streamed answer.
//!
//! The request (`message/ohttp-chunked-req`) is read whole (at most
//! [`MAX_REQUEST_LEN`] bytes of plaintext); the answer (`message/ohttp-chunked-res`) is an
//! indeterminate-length Binary HTTP response ([`bhttp_stream`]) written piece by piece as
//! the engine produces it, each piece an encrypted chunk sent at once. The receipt comes
//! last, in the trailer field `trustbridge-receipt`, and covers every piece (its response
//! digest is over all the content, in order). The chunked encapsulation authenticates the
//! order and the end of the chunks, so a cut, reordered or extended stream fails at the
//! client. The relay gets the receipt for its log as an HTTP trailer of the outer
//! response; if that trailer cannot be delivered, the receipt goes out with the next
//! answer. A client that goes away stops the work behind its answer at once, and the
//! answer is signed with status 499 over what was sent (the log gets it with the next
//! answer).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine as _;
use futures_util::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures_util::{StreamExt, TryStreamExt};
use http_body_util::StreamBody;
use hyper::body::Frame;
use tokio_util::compat::TokioAsyncWriteCompatExt;
use trustbridge_protocol::ohttp::MAX_REQUEST_LEN;
use trustbridge_protocol::ohttp::bhttp_stream::{Field, encode_chunk, encode_end, encode_head};
use trustbridge_protocol::receipt::{SALT_LEN, SaltedDigest, salted_digest};

use super::attestation::Published;
use super::{
    Gateway, OuterError, RECEIPT_HEADER, RECEIPT_LOG_HEADER, SALT_HEADER, api_request, counted,
    parse_request,
};
use crate::engine::openai::ApiError;
use crate::engine::{ApiAnswer, Engine};
use crate::receipts::ReceiptFacts;

/// What a streamed answer is about, fixed before the first byte.
struct Context {
    plain: Vec<u8>,
    salt: [u8; SALT_LEN],
    published: Arc<Published>,
    model: [u8; 32],
    policy: [u8; 32],
    engine: Arc<dyn Engine>,
    deadline: tokio::time::Instant,
}

/// A streamed answer's receipt on its way to the relay: if the outer response is dropped
/// before its trailer went out, the receipt waits for the next answer.
struct Outstanding {
    receipt: Option<tokio::sync::oneshot::Receiver<Vec<u8>>>,
    gateway: Arc<Gateway>,
    /// Dropped with the outer response: tells the answer's task that nobody reads it.
    _alive: tokio::sync::oneshot::Sender<()>,
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        if let Some(mut rx) = self.receipt.take()
            && let Ok(receipt) = rx.try_recv()
        {
            self.gateway.postpone(receipt);
        }
    }
}

impl Gateway {
    /// Answers a chunked request read from `src`: the `message/ohttp-chunked-res` body,
    /// streamed. `engine` answers it; `model` is the served model's manifest digest;
    /// `policy` the digest of the policy its key was released under. `trailers`: the hop
    /// asked for trailer fields (`TE: trailers`); otherwise the receipt for the log goes
    /// with the next answer.
    pub async fn answer_chunked<S>(
        self: &Arc<Self>,
        src: S,
        engine: Arc<dyn Engine>,
        model: [u8; 32],
        policy: [u8; 32],
        trailers: bool,
    ) -> Result<Body, OuterError>
    where
        S: futures_util::io::AsyncRead + Unpin + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| OuterError::Busy)?;
        // One deadline for the whole exchange: reading the request, the runtime, and
        // writing the answer (a client that does not read its answer frees its permit).
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        let head = std::sync::Arc::new(std::sync::Mutex::new(Vec::with_capacity(64)));
        let src = FirstBytes {
            inner: src,
            seen: head.clone(),
        };
        let mut request = self.keys.gateway.server().clone().decapsulate_stream(src);
        let mut plain = Vec::new();
        tokio::time::timeout_at(
            deadline,
            (&mut request)
                .take(MAX_REQUEST_LEN as u64 + 1)
                .read_to_end(&mut plain),
        )
        .await
        .map_err(|_| OuterError::RequestTimeout)?
        .map_err(|_| OuterError::Decapsulate)?;
        if plain.len() > MAX_REQUEST_LEN {
            return Err(OuterError::Decapsulate);
        }
        // Decapsulated, so a real request of a client: once only.
        let enc = {
            let head = head.lock().unwrap_or_else(|p| p.into_inner());
            super::replay::ReplayGuard::enc_of(&head).ok_or(OuterError::Decapsulate)?
        };
        if !self.replays.first_time(enc) {
            return Err(OuterError::Replayed);
        }
        let published = self
            .publisher
            .published(Some(model))
            .await
            .map_err(|e| OuterError::NoReceipt(e.to_string()))?;
        let mut salt = [0u8; SALT_LEN];
        aws_lc_rs::rand::fill(&mut salt)
            .map_err(|_| OuterError::NoReceipt("no randomness".into()))?;
        let (writer, reader) = tokio::io::duplex(64 << 10);
        let response = request
            .response(writer.compat_write())
            .map_err(|_| OuterError::Encapsulate)?;
        let (receipt_tx, receipt_rx) = tokio::sync::oneshot::channel::<Vec<u8>>();
        let (alive, gone) = tokio::sync::oneshot::channel::<()>();
        let gateway = self.clone();
        let context = Context {
            plain,
            salt,
            published,
            model,
            policy,
            engine,
            deadline,
        };
        tokio::spawn(async move {
            let _permit = permit;
            if let Some(receipt) = gateway.stream(context, response, gone).await {
                if !trailers {
                    gateway.postpone(receipt);
                } else if let Err(receipt) = receipt_tx.send(receipt) {
                    // The outer response is gone before its trailer: next time.
                    gateway.postpone(receipt);
                }
            }
        });
        let data = tokio_util::io::ReaderStream::new(reader).map_ok(Frame::data);
        let mut outstanding = Outstanding {
            receipt: Some(receipt_rx),
            gateway: self.clone(),
            _alive: alive,
        };
        let trailer = futures_util::stream::once(async move {
            let mut fields = HeaderMap::new();
            if let Some(rx) = outstanding.receipt.as_mut()
                && let Ok(receipt) = rx.await
            {
                outstanding.receipt = None;
                // Only this answer's own receipt: postponed ones go with whole answers, whose
                // header the relay logs before it forwards anything (a trailer can be lost
                // if the relay drops the connection as it arrives).
                let value = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&receipt);
                match HeaderValue::from_str(&value) {
                    Ok(v) => {
                        fields.insert(HeaderName::from_static(RECEIPT_LOG_HEADER), v);
                    }
                    Err(_) => outstanding.gateway.postpone(receipt),
                }
            }
            Ok::<_, std::io::Error>(Frame::trailers(fields))
        });
        Ok(Body::new(StreamBody::new(data.chain(trailer))))
    }

    /// Writes the answer to `out`; the receipt, once its trailer is written. An answer the
    /// engine breaks off (an error, the deadline, the size limit) is signed with status 502
    /// or 504, not the head's: the receipt then disagrees with the head the client
    /// received, which the client refuses, and the log records the cut.
    ///
    /// When the client goes away (`gone` resolves: the outer response was dropped, or a
    /// write fails), the work stops at once and the answer is signed with status 499 over
    /// what was sent, with the tokens the engine spent; that receipt goes to the log with
    /// the next answer (`None`). Every decapsulated request thus has a receipt, and no
    /// work goes unrecorded.
    async fn stream<W: AsyncWrite + Unpin>(
        &self,
        cx: Context,
        mut out: W,
        gone: tokio::sync::oneshot::Receiver<()>,
    ) -> Option<Vec<u8>> {
        let deadline = cx.deadline;
        let mut gone = std::pin::pin!(async move {
            let _ = gone.await;
        });
        let salt_field: Field = (
            SALT_HEADER.as_bytes().to_vec(),
            hex::encode(cx.salt).into_bytes(),
        );
        let mut digest = SaltedDigest::new(&cx.salt);
        let (nonce, request) = match parse_request(&cx.plain) {
            Err(inner) => (None, Err(inner)),
            Ok((nonce, m)) => (nonce, api_request(&m, deadline)),
        };
        let answer = match request {
            Err(inner) => Some(ApiAnswer::json(inner.status, inner.body, None)),
            Ok(request) => tokio::select! {
                biased;
                () = &mut gone => None,
                answer = tokio::time::timeout_at(deadline, cx.engine.answer(request)) => {
                    Some(answer.unwrap_or_else(|_| ApiAnswer::error(&ApiError {
                        status: 504,
                        kind: "server_error",
                        code: Some("timeout"),
                        param: None,
                        message: "the answer did not start in time".into(),
                    })))
                }
            },
        };
        let (status, usage) = match answer {
            // Gone while the request waited for the engine.
            None => (CLIENT_GONE, None),
            Some(answer) => {
                let mut headers = answer.headers;
                headers.push(salt_field);
                let mut status = answer.status;
                let mut body = answer.body;
                let mut sent = 0usize;
                if deliver(
                    &mut out,
                    &encode_head(status, &headers),
                    deadline,
                    &mut gone,
                )
                .await
                {
                    loop {
                        let next = tokio::select! {
                            biased;
                            () = &mut gone => {
                                status = CLIENT_GONE;
                                break;
                            }
                            next = tokio::time::timeout_at(deadline, body.next()) => next,
                        };
                        let data = match next {
                            Ok(Some(Ok(data))) => data,
                            Ok(None) => break,
                            Ok(Some(Err(cut))) => {
                                tracing::warn!(status = cut.status, "the answer broke off");
                                status = cut.status;
                                break;
                            }
                            Err(_) => {
                                tracing::warn!("the answer ran past the time limit");
                                status = 504;
                                break;
                            }
                        };
                        if data.is_empty() {
                            continue;
                        }
                        sent += data.len();
                        if sent > self.config.max_response_len {
                            tracing::warn!("the answer is larger than the limit: cut");
                            status = 502;
                            break;
                        }
                        if !deliver(&mut out, &encode_chunk(&data), deadline, &mut gone).await {
                            status = CLIENT_GONE;
                            break;
                        }
                        digest.update(&data);
                    }
                } else {
                    status = CLIENT_GONE;
                }
                // Dropping the body stops the work behind it; the engine then reports what
                // it spent (at its next step).
                drop(body);
                let usage = counted(answer.usage).await;
                (status, usage)
            }
        };
        let receipt = self
            .receipts
            .sign(ReceiptFacts {
                nonce,
                model: cx.model,
                request_digest: salted_digest(&cx.salt, &cx.plain),
                response_digest: digest.finish(),
                evidence_digest: cx.published.evidence_digest,
                measurements: cx.published.measurements.clone(),
                policy_digest: cx.policy,
                status,
                usage,
            })
            .map_err(|e| tracing::error!(error = %e, "no receipt for a streamed answer"))
            .ok()?;
        let bytes = receipt.as_bytes().to_vec();
        if status == CLIENT_GONE {
            self.postpone(bytes);
            return None;
        }
        let field: Field = (
            RECEIPT_HEADER.as_bytes().to_vec(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(&bytes)
                .into_bytes(),
        );
        // Signed, so in the chain: a few more seconds to deliver it, then the log gets it
        // with a later answer.
        let grace = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        let ended = tokio::time::timeout_at(deadline.max(grace), async {
            out.write_all(&encode_end(&[field])).await?;
            out.close().await
        })
        .await;
        if !matches!(ended, Ok(Ok(()))) {
            // Signed, so in the chain: the relay must still log it.
            self.postpone(bytes);
            return None;
        }
        Some(bytes)
    }
}

/// A reader that keeps a copy of the first bytes read through it (the request's header
/// and `enc`, for replay refusal).
struct FirstBytes<S> {
    inner: S,
    seen: Arc<std::sync::Mutex<Vec<u8>>>,
}

impl<S: futures_util::io::AsyncRead + Unpin> futures_util::io::AsyncRead for FirstBytes<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = polled {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let wanted = 64usize.saturating_sub(seen.len()).min(n);
            seen.extend_from_slice(&buf[..wanted]);
        }
        polled
    }
}

/// The status a receipt records for an answer whose client went away before its end.
const CLIENT_GONE: u16 = 499;

/// Writes `bytes` and flushes them (one encrypted chunk, sent at once), by `deadline`;
/// false when the client stopped reading or went away.
async fn deliver<W: AsyncWrite + Unpin>(
    out: &mut W,
    bytes: &[u8],
    deadline: tokio::time::Instant,
    gone: &mut (impl std::future::Future<Output = ()> + Unpin),
) -> bool {
    let write = async {
        out.write_all(bytes).await?;
        out.flush().await
    };
    tokio::select! {
        biased;
        () = gone => false,
        written = tokio::time::timeout_at(deadline, write) => matches!(written, Ok(Ok(()))),
    }
}

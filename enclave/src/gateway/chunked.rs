//! Chunked Oblivious HTTP (draft-ietf-ohai-chunked-ohttp): a streamed answer.
//!
//! The request (`message/ohttp-chunked-req`) is read whole (at most
//! [`MAX_REQUEST_LEN`] bytes of plaintext); the answer (`message/ohttp-chunked-res`) is an
//! indeterminate-length Binary HTTP response ([`bhttp_stream`]) written piece by piece as
//! the runtime produces it, each piece an encrypted chunk sent at once. The receipt comes
//! last, in the trailer field `trustbridge-receipt`, and covers every piece (its response
//! digest is over all the content, in order). The chunked encapsulation authenticates the
//! order and the end of the chunks, so a cut, reordered or extended stream fails at the
//! client. The relay gets the receipt for its log as an HTTP trailer of the outer
//! response; if that trailer cannot be delivered (the client went away), the receipt goes
//! out with the next answer.

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
    Gateway, LOG_TRAILER_BUDGET, OuterError, RECEIPT_HEADER, RECEIPT_LOG_HEADER, SALT_HEADER,
    api_request, parse_request,
};
use crate::engine::Engine;
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
            if let Some(receipt) = gateway.stream(context, response).await {
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
        };
        let trailer = futures_util::stream::once(async move {
            let mut fields = HeaderMap::new();
            if let Some(rx) = outstanding.receipt.as_mut()
                && let Ok(receipt) = rx.await
            {
                outstanding.receipt = None;
                let value = outstanding.gateway.log_value(&receipt, LOG_TRAILER_BUDGET);
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

    /// Writes the answer to `out`; the receipt, once its trailer is written. `None` when the
    /// client went away or stopped reading before the end (nothing is signed for an answer
    /// not delivered). An answer the runtime breaks off (an error, the deadline, the size
    /// limit) is signed with status 502 or 504, not the runtime's: the receipt then
    /// disagrees with the head the client received, which the client refuses, and the log
    /// records the cut.
    async fn stream<W: AsyncWrite + Unpin>(&self, cx: Context, mut out: W) -> Option<Vec<u8>> {
        let deadline = cx.deadline;
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
            Err(inner) => crate::engine::ApiAnswer::json(inner.status, inner.body, None),
            Ok(request) => {
                match tokio::time::timeout_at(deadline, cx.engine.answer(request)).await {
                    Ok(answer) => answer,
                    Err(_) => crate::engine::ApiAnswer::error(&crate::engine::openai::ApiError {
                        status: 504,
                        kind: "server_error",
                        code: Some("timeout"),
                        param: None,
                        message: "the answer did not start in time".into(),
                    }),
                }
            }
        };
        let mut headers = answer.headers;
        headers.push(salt_field);
        send(&mut out, &encode_head(answer.status, &headers), deadline).await?;
        let mut body = answer.body;
        let mut sent = 0usize;
        let mut status = answer.status;
        loop {
            let data = match tokio::time::timeout_at(deadline, body.next()).await {
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
            digest.update(&data);
            send(&mut out, &encode_chunk(&data), deadline).await?;
        }
        // Dropping the body stops the work behind it.
        drop(body);
        let usage = answer.usage.and_then(|mut counted| counted.try_recv().ok());
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

/// Writes `bytes` and flushes them (one encrypted chunk, sent at once), by `deadline`;
/// `None` when the client stopped reading or went away.
async fn send<W: AsyncWrite + Unpin>(
    out: &mut W,
    bytes: &[u8],
    deadline: tokio::time::Instant,
) -> Option<()> {
    tokio::time::timeout_at(deadline, async {
        out.write_all(bytes).await?;
        out.flush().await
    })
    .await
    .ok()?
    .ok()
}

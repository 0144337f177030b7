//! Streamed answers: chunked Oblivious HTTP (draft-ietf-ohai-chunked-ohttp) with an
//! indeterminate-length Binary HTTP response inside.
//!
//! Content is handed out as it is decrypted, so a caller can pass it on at once; it is
//! *not yet verified* until [`StreamedAnswer::finish`] returns: the chunked encapsulation
//! authenticates each chunk, their order and the end of the stream (a cut, reordered or
//! extended stream fails), and the receipt in the trailer covers every piece of content.
//! A caller that passes content on before the end must be able to retract it (the proxy
//! ends a server-sent-event stream with an error event instead of its `[DONE]`).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::FutureExt;
use futures_util::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use trustbridge_protocol::ohttp::bhttp_stream::{Event, Field, ResponseReader};
use trustbridge_protocol::ohttp::gateway::{OhttpError, client_for};
use trustbridge_protocol::receipt::{Receipt, SALT_LEN, SaltedDigest};

use crate::session::{
    NONCE_BYTES, RECEIPT_HEADER, Request, SALT_HEADER, Session, VerificationError, decode_receipt,
    decode_salt, encode_request,
};

/// A source of bytes (the body of the gateway's answer).
pub type ByteReader = Box<dyn AsyncRead + Send + Unpin>;

/// Largest piece read at once (a chunk of the encapsulation carries at most 16 KiB).
const READ_SIZE: usize = 16 << 10;

/// A sealed chunked request: the `message/ohttp-chunked-req` body and what opens its
/// answer.
pub struct SealedChunked {
    /// The encapsulated request, to POST to the gateway.
    pub encapsulated: Vec<u8>,
    /// What opens the answer.
    pub pending: ChunkedPending,
}

type Opener = Box<dyn FnOnce(ByteReader) -> Result<ByteReader, OhttpError> + Send>;

/// What a chunked request needs to open its answer.
pub struct ChunkedPending {
    open: Opener,
    plain: Vec<u8>,
    nonce: [u8; NONCE_BYTES],
}

impl std::fmt::Debug for ChunkedPending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChunkedPending({} bytes)", self.plain.len())
    }
}

/// An in-memory sink for the encapsulated request.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl AsyncWrite for Sink {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Session {
    /// Encodes `request` with a fresh receipt nonce and encapsulates it as a chunked
    /// request to the bound key configuration.
    pub fn seal_chunked(&self, request: &Request) -> Result<SealedChunked, VerificationError> {
        let (plain, nonce) = encode_request(request)?;
        let client = client_for(&self.verified().bundle.ohttp_keys)
            .map_err(VerificationError::Encapsulate)?;
        let sink = Sink::default();
        let mut writer = client
            .encapsulate_stream(sink.clone())
            .map_err(|e| VerificationError::Encapsulate(e.into()))?;
        // The sink never waits, so the writes complete at once.
        let written = async {
            writer.write_all(&plain).await?;
            writer.close().await
        }
        .now_or_never();
        if !matches!(written, Some(Ok(()))) {
            return Err(VerificationError::Stream(
                "the request could not be encapsulated".into(),
            ));
        }
        let encapsulated = std::mem::take(&mut *sink.0.lock().unwrap_or_else(|p| p.into_inner()));
        let open: Opener = Box::new(move |src: ByteReader| {
            let reader = writer.response(src)?;
            Ok(Box::new(reader) as ByteReader)
        });
        Ok(SealedChunked {
            encapsulated,
            pending: ChunkedPending { open, plain, nonce },
        })
    }
}

impl ChunkedPending {
    /// Starts reading the answer from `src` (the `message/ohttp-chunked-res` body).
    pub fn open(self, src: ByteReader) -> Result<StreamedAnswer, VerificationError> {
        let reader = (self.open)(src).map_err(VerificationError::Decapsulate)?;
        Ok(StreamedAnswer {
            reader,
            parser: ResponseReader::new(),
            queue: std::collections::VecDeque::new(),
            head: None,
            trailers: None,
            digest: None,
            salt: None,
            eof: false,
            plain: self.plain,
            nonce: self.nonce,
        })
    }
}

/// A streamed answer being read.
pub struct StreamedAnswer {
    reader: ByteReader,
    parser: ResponseReader,
    queue: std::collections::VecDeque<Event>,
    head: Option<(u16, Vec<Field>)>,
    trailers: Option<Vec<Field>>,
    digest: Option<SaltedDigest>,
    salt: Option<[u8; SALT_LEN]>,
    eof: bool,
    plain: Vec<u8>,
    nonce: [u8; NONCE_BYTES],
}

impl std::fmt::Debug for StreamedAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "StreamedAnswer(head {:?})",
            self.head.as_ref().map(|h| h.0)
        )
    }
}

fn stream_error(e: impl std::fmt::Display) -> VerificationError {
    VerificationError::Stream(e.to_string())
}

impl StreamedAnswer {
    /// Reads more of the answer into the event queue; `false` at the end of the input.
    async fn fill(&mut self) -> Result<bool, VerificationError> {
        if self.eof {
            return Ok(false);
        }
        let mut buf = vec![0u8; READ_SIZE];
        let n = self.reader.read(&mut buf).await.map_err(stream_error)?;
        if n == 0 {
            self.eof = true;
            self.parser.finish().map_err(stream_error)?;
            return Ok(false);
        }
        let events = self.parser.push(&buf[..n]).map_err(stream_error)?;
        self.queue.extend(events);
        Ok(true)
    }

    /// The status and header fields (the receipt salt taken out).
    pub async fn head(&mut self) -> Result<(u16, Vec<Field>), VerificationError> {
        loop {
            if let Some(h) = &self.head {
                return Ok(h.clone());
            }
            if let Some(Event::Head { status, headers }) = self.queue.front().cloned() {
                self.queue.pop_front();
                let mut kept = Vec::with_capacity(headers.len());
                for (name, value) in headers {
                    if name.eq_ignore_ascii_case(SALT_HEADER.as_bytes()) {
                        if self.salt.replace(decode_salt(&value)?).is_some() {
                            return Err(VerificationError::Malformed("trustbridge-receipt-salt"));
                        }
                    } else if !name.eq_ignore_ascii_case(RECEIPT_HEADER.as_bytes()) {
                        kept.push((name, value));
                    }
                }
                let salt = self
                    .salt
                    .ok_or(VerificationError::MissingReceipt("receipt salt"))?;
                self.digest = Some(SaltedDigest::new(&salt));
                self.head = Some((status, kept));
                continue;
            }
            if !self.fill().await? {
                return Err(stream_error("the answer ends before its head"));
            }
        }
    }

    /// The next piece of content, unverified until [`Self::finish`]; `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, VerificationError> {
        self.head().await?;
        loop {
            match self.queue.pop_front() {
                Some(Event::Data(data)) => {
                    if let Some(d) = self.digest.as_mut() {
                        d.update(&data);
                    }
                    return Ok(Some(data));
                }
                Some(Event::Trailers(fields)) => self.trailers = Some(fields),
                Some(Event::Head { .. }) => return Err(stream_error("a second head")),
                None => {
                    if !self.fill().await? {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// After the last piece: checks the stream's end and the receipt in its trailer
    /// against `session` (signature, evidence, digests of all the content, nonce, status,
    /// chain). The evidence digest the receipt claims is [`Self::claimed_evidence`].
    pub fn finish(
        &mut self,
        session: &Session,
    ) -> Result<(Receipt, [u8; SALT_LEN]), VerificationError> {
        let (receipt, salt, status, digest) = self.ended()?;
        let receipt =
            session.check_streamed(&receipt, &salt, &self.plain, &self.nonce, status, digest)?;
        Ok((receipt, salt))
    }

    /// The evidence digest the trailer's receipt claims (unverified), once the stream ended.
    pub fn claimed_evidence(&self) -> Option<[u8; 32]> {
        let value = self
            .trailers
            .as_ref()?
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(RECEIPT_HEADER.as_bytes()))?;
        let bytes = decode_receipt(&value.1).ok()?;
        trustbridge_protocol::receipt::UnverifiedReceipt::parse(&bytes)
            .ok()
            .map(|r| r.claims().evidence_digest)
    }

    #[allow(clippy::type_complexity)]
    fn ended(&self) -> Result<(Vec<u8>, [u8; SALT_LEN], u16, [u8; 32]), VerificationError> {
        if !self.eof {
            return Err(stream_error("finish before the end of the stream"));
        }
        let trailers = self
            .trailers
            .as_ref()
            .ok_or_else(|| stream_error("no trailer"))?;
        let mut receipts = trailers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(RECEIPT_HEADER.as_bytes()));
        let receipt = receipts
            .next()
            .ok_or(VerificationError::MissingReceipt("receipt"))?;
        if receipts.next().is_some() {
            return Err(VerificationError::Malformed("trustbridge-receipt"));
        }
        let receipt = decode_receipt(&receipt.1)?;
        let salt = self
            .salt
            .ok_or(VerificationError::MissingReceipt("receipt salt"))?;
        let status = self
            .head
            .as_ref()
            .map(|h| h.0)
            .ok_or_else(|| stream_error("no head"))?;
        let digest = self
            .digest
            .clone()
            .ok_or_else(|| stream_error("no head"))?
            .finish();
        Ok((receipt, salt, status, digest))
    }
}

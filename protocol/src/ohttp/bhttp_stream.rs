//! Binary HTTP responses of indeterminate length (RFC 9292 §3.2), written and read piece
//! by piece: what a streamed answer is inside chunked Oblivious HTTP. The sentinel writes
//! the head, then each piece of content as it comes from the runtime, then the trailer
//! that carries the receipt; the client reads them as they arrive.
//!
//! I/O-free and incremental: [`ResponseReader::push`] takes bytes in any split and returns
//! what they complete. Every length is checked against a cap before anything is buffered:
//! field sections are at most [`MAX_FIELD_SECTION`] bytes and [`MAX_FIELDS`] lines,
//! content is passed on as it arrives and never buffered whole.

/// Largest header or trailer field section read (names and values together).
pub const MAX_FIELD_SECTION: usize = 64 << 10;
/// Most field lines in a section.
pub const MAX_FIELDS: usize = 256;
/// Most informational (1xx) responses before the final one.
pub const MAX_INFORMATIONAL: usize = 8;

/// The framing indicator of an indeterminate-length response.
const FRAMING_RESPONSE: u64 = 3;

/// A streamed Binary HTTP response that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BhttpStreamError {
    /// Not an indeterminate-length response (another framing indicator).
    #[error("not an indeterminate-length Binary HTTP response (framing {0})")]
    Framing(u64),
    /// A status code outside 100..=599.
    #[error("status code {0} is out of range")]
    Status(u64),
    /// A field section over [`MAX_FIELD_SECTION`] bytes or [`MAX_FIELDS`] lines.
    #[error("a field section is larger than the limit")]
    FieldSectionTooLarge,
    /// More than [`MAX_INFORMATIONAL`] informational responses.
    #[error("too many informational responses")]
    TooManyInformational,
    /// Bytes after the end that are not padding.
    #[error("data after the end of the message")]
    TrailingData,
    /// The message ended before its trailer was complete.
    #[error("the message ends before its end (truncated)")]
    Truncated,
}

/// A header or trailer field: name and value.
pub type Field = (Vec<u8>, Vec<u8>);

/// What a piece of input completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The final status and the header fields.
    Head {
        /// Status code (200..=599).
        status: u16,
        /// Header fields.
        headers: Vec<Field>,
    },
    /// A piece of content, in order.
    Data(Vec<u8>),
    /// The trailer fields; the message is complete.
    Trailers(Vec<Field>),
}

/// Writes a QUIC variable-length integer (RFC 9000 §16); `v` < 2^62.
pub fn write_varint(v: u64, out: &mut Vec<u8>) {
    match v {
        0..=63 => out.push(v as u8),
        64..=16_383 => out.extend_from_slice(&((v as u16) | 0x4000).to_be_bytes()),
        16_384..=1_073_741_823 => out.extend_from_slice(&((v as u32) | 0x8000_0000).to_be_bytes()),
        _ => out.extend_from_slice(
            &((v & 0x3fff_ffff_ffff_ffff) | 0xc000_0000_0000_0000).to_be_bytes(),
        ),
    }
}

fn write_fields(fields: &[Field], out: &mut Vec<u8>) {
    for (name, value) in fields {
        write_varint(name.len() as u64, out);
        out.extend_from_slice(name);
        write_varint(value.len() as u64, out);
        out.extend_from_slice(value);
    }
    write_varint(0, out);
}

/// The start of a streamed response: framing indicator, status, header fields.
pub fn encode_head(status: u16, headers: &[Field]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    write_varint(FRAMING_RESPONSE, &mut out);
    write_varint(u64::from(status), &mut out);
    write_fields(headers, &mut out);
    out
}

/// One piece of content (nothing for an empty piece: a zero length ends the content).
pub fn encode_chunk(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 8);
    if !data.is_empty() {
        write_varint(data.len() as u64, &mut out);
        out.extend_from_slice(data);
    }
    out
}

/// The end of the content and the trailer fields: the end of the message.
pub fn encode_end(trailers: &[Field]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_varint(0, &mut out);
    write_fields(trailers, &mut out);
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Section {
    Informational,
    Header(u16),
    Trailer,
}

#[derive(Debug)]
enum State {
    Framing,
    Status {
        informational: usize,
    },
    Fields {
        section: Section,
        fields: Vec<Field>,
        size: usize,
        informational: usize,
    },
    ChunkLength,
    Chunk {
        left: u64,
    },
    Done,
}

/// Reads a streamed response piece by piece.
#[derive(Debug)]
pub struct ResponseReader {
    buf: Vec<u8>,
    state: State,
}

impl Default for ResponseReader {
    fn default() -> Self {
        Self::new()
    }
}

/// Reads a varint at the start of `b`: value and length, or `None` if incomplete.
fn read_varint(b: &[u8]) -> Option<(u64, usize)> {
    let first = *b.first()?;
    let len = 1usize << (first >> 6);
    if b.len() < len {
        return None;
    }
    let mut v = u64::from(first & 0x3f);
    for byte in &b[1..len] {
        v = (v << 8) | u64::from(*byte);
    }
    Some((v, len))
}

impl ResponseReader {
    /// A reader at the start of a message.
    pub fn new() -> Self {
        Self {
            buf: Vec::new(),
            state: State::Framing,
        }
    }

    /// Whether the trailer has been read (the message is complete).
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Fails unless the message is complete: call at the end of the input.
    pub fn finish(&self) -> Result<(), BhttpStreamError> {
        if self.is_done() {
            Ok(())
        } else {
            Err(BhttpStreamError::Truncated)
        }
    }

    /// Takes the next bytes of the message; returns the events they complete.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<Event>, BhttpStreamError> {
        self.buf.extend_from_slice(data);
        let mut events = Vec::new();
        let mut at = 0;
        loop {
            let rest = &self.buf[at..];
            match &mut self.state {
                State::Done => {
                    // Padding is zeros; anything else is an error.
                    if rest.iter().any(|b| *b != 0) {
                        return Err(BhttpStreamError::TrailingData);
                    }
                    at = self.buf.len();
                    break;
                }
                State::Chunk { left } => {
                    if rest.is_empty() {
                        break;
                    }
                    let take = rest.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    events.push(Event::Data(rest[..take].to_vec()));
                    *left -= take as u64;
                    at += take;
                    if *left == 0 {
                        self.state = State::ChunkLength;
                    }
                }
                State::Framing => {
                    let Some((v, n)) = read_varint(rest) else {
                        break;
                    };
                    if v != FRAMING_RESPONSE {
                        return Err(BhttpStreamError::Framing(v));
                    }
                    at += n;
                    self.state = State::Status { informational: 0 };
                }
                State::Status { informational } => {
                    let Some((v, n)) = read_varint(rest) else {
                        break;
                    };
                    let informational = *informational;
                    let section = match v {
                        100..=199 => {
                            if informational >= MAX_INFORMATIONAL {
                                return Err(BhttpStreamError::TooManyInformational);
                            }
                            Section::Informational
                        }
                        200..=599 => Section::Header(v as u16),
                        _ => return Err(BhttpStreamError::Status(v)),
                    };
                    at += n;
                    self.state = State::Fields {
                        section,
                        fields: Vec::new(),
                        size: 0,
                        informational: informational + 1,
                    };
                }
                State::ChunkLength => {
                    let Some((v, n)) = read_varint(rest) else {
                        break;
                    };
                    at += n;
                    self.state = if v == 0 {
                        State::Fields {
                            section: Section::Trailer,
                            fields: Vec::new(),
                            size: 0,
                            informational: 0,
                        }
                    } else {
                        State::Chunk { left: v }
                    };
                }
                State::Fields {
                    section,
                    fields,
                    size,
                    informational,
                } => {
                    let Some((name_len, n1)) = read_varint(rest) else {
                        break;
                    };
                    if name_len == 0 {
                        at += n1;
                        let fields = std::mem::take(fields);
                        self.state = match *section {
                            Section::Informational => State::Status {
                                informational: *informational,
                            },
                            Section::Header(status) => {
                                events.push(Event::Head {
                                    status,
                                    headers: fields,
                                });
                                State::ChunkLength
                            }
                            Section::Trailer => {
                                events.push(Event::Trailers(fields));
                                State::Done
                            }
                        };
                        continue;
                    }
                    // Lengths checked against the cap before anything is buffered.
                    let cap = (MAX_FIELD_SECTION - *size) as u64;
                    if name_len > cap || fields.len() >= MAX_FIELDS {
                        return Err(BhttpStreamError::FieldSectionTooLarge);
                    }
                    let name_end = n1 + name_len as usize;
                    let Some((value_len, n2)) = rest.get(name_end..).and_then(read_varint) else {
                        if rest.len() > MAX_FIELD_SECTION + 16 {
                            return Err(BhttpStreamError::FieldSectionTooLarge);
                        }
                        break;
                    };
                    if name_len + value_len > cap {
                        return Err(BhttpStreamError::FieldSectionTooLarge);
                    }
                    let end = name_end + n2 + value_len as usize;
                    if rest.len() < end {
                        break;
                    }
                    fields.push((
                        rest[n1..name_end].to_vec(),
                        rest[name_end + n2..end].to_vec(),
                    ));
                    *size += (name_len + value_len) as usize;
                    at += end;
                }
            }
        }
        self.buf.drain(..at);
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn message() -> Vec<u8> {
        let mut m = encode_head(
            200,
            &[(b"content-type".to_vec(), b"text/event-stream".to_vec())],
        );
        m.extend(encode_chunk(b"data: one\n\n"));
        m.extend(encode_chunk(&[b'x'; 300]));
        m.extend(encode_chunk(b""));
        m.extend(encode_end(&[(
            b"trustbridge-receipt".to_vec(),
            b"abc".to_vec(),
        )]));
        m
    }

    fn read_all(bytes: &[u8], split: usize) -> Result<Vec<Event>, BhttpStreamError> {
        let mut r = ResponseReader::new();
        let mut events = Vec::new();
        for piece in bytes.chunks(split.max(1)) {
            events.extend(r.push(piece)?);
        }
        r.finish()?;
        Ok(events)
    }

    /// Data events merged, so splits compare equal.
    fn merged(events: Vec<Event>) -> Vec<Event> {
        let mut out: Vec<Event> = Vec::new();
        for e in events {
            match (out.last_mut(), e) {
                (Some(Event::Data(a)), Event::Data(b)) => a.extend(b),
                (_, e) => out.push(e),
            }
        }
        out
    }

    #[test]
    fn any_split_reads_the_same() {
        let m = message();
        let whole = merged(read_all(&m, m.len()).unwrap());
        assert_eq!(whole.len(), 3);
        assert!(matches!(&whole[0], Event::Head { status: 200, headers } if headers.len() == 1));
        assert_eq!(
            whole[1],
            Event::Data([&b"data: one\n\n"[..], &[b'x'; 300]].concat())
        );
        assert_eq!(
            whole[2],
            Event::Trailers(vec![(b"trustbridge-receipt".to_vec(), b"abc".to_vec())])
        );
        for split in [1, 2, 3, 7, 64] {
            assert_eq!(merged(read_all(&m, split).unwrap()), whole, "split {split}");
        }
    }

    #[cfg(feature = "ohttp")]
    #[test]
    fn the_bhttp_crate_reads_what_we_write() {
        let m = message();
        let parsed = bhttp::Message::read_bhttp(&mut std::io::Cursor::new(&m[..])).unwrap();
        assert_eq!(parsed.control().status().unwrap().code(), 200);
        assert_eq!(parsed.content().len(), 11 + 300);
        assert_eq!(
            parsed.trailer().get(b"trustbridge-receipt"),
            Some(&b"abc"[..])
        );
    }

    #[cfg(feature = "ohttp")]
    #[test]
    fn we_read_what_the_bhttp_crate_writes() {
        let mut m = bhttp::Message::response(bhttp::StatusCode::try_from(404u16).unwrap());
        m.put_header("a", "b");
        m.write_content(b"not here");
        m.put_trailer("t", "v");
        let mut bytes = Vec::new();
        m.write_bhttp(bhttp::Mode::IndeterminateLength, &mut bytes)
            .unwrap();
        let events = merged(read_all(&bytes, 5).unwrap());
        assert_eq!(
            events,
            vec![
                Event::Head {
                    status: 404,
                    headers: vec![(b"a".to_vec(), b"b".to_vec())]
                },
                Event::Data(b"not here".to_vec()),
                Event::Trailers(vec![(b"t".to_vec(), b"v".to_vec())]),
            ]
        );
    }

    #[test]
    fn a_cut_message_is_truncated() {
        let m = message();
        for cut in [0, 1, 5, m.len() - 4, m.len() - 1] {
            assert_eq!(
                read_all(&m[..cut], 3).err(),
                Some(BhttpStreamError::Truncated),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn oversized_and_malformed_input_is_refused() {
        let mut big = Vec::new();
        write_varint(3, &mut big);
        write_varint(200, &mut big);
        write_varint(1, &mut big);
        big.push(b'n');
        write_varint((MAX_FIELD_SECTION + 1) as u64, &mut big);
        assert_eq!(
            ResponseReader::new().push(&big).err(),
            Some(BhttpStreamError::FieldSectionTooLarge)
        );
        let mut framing = Vec::new();
        write_varint(1, &mut framing);
        assert_eq!(
            ResponseReader::new().push(&framing).err(),
            Some(BhttpStreamError::Framing(1))
        );
        let mut status = Vec::new();
        write_varint(3, &mut status);
        write_varint(999, &mut status);
        assert_eq!(
            ResponseReader::new().push(&status).err(),
            Some(BhttpStreamError::Status(999))
        );
        let mut trailing = message();
        trailing.extend([0, 0, 1]);
        assert_eq!(
            read_all(&trailing, 4).err(),
            Some(BhttpStreamError::TrailingData)
        );
        let mut padded = message();
        padded.extend([0, 0, 0]);
        assert!(read_all(&padded, 4).is_ok());
    }

    #[test]
    fn varints_round_trip() {
        for v in [
            0u64,
            63,
            64,
            16_383,
            16_384,
            1_073_741_823,
            1_073_741_824,
            (1 << 62) - 1,
        ] {
            let mut b = Vec::new();
            write_varint(v, &mut b);
            assert_eq!(read_varint(&b), Some((v, b.len())));
        }
    }
}

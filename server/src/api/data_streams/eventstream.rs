//! The AWS event stream framing (`application/vnd.amazon.eventstream`), which SubscribeToShard
//! answers with: a sequence of self-delimiting binary messages, each with typed headers and a
//! payload (`shared/reference/aws-protocol.md` E.4).
//!
//! ```text
//! message = total_len u32 | headers_len u32 | prelude_crc u32 | headers | payload | message_crc u32
//! header  = name_len u8 | name | type u8 | value
//! ```
//!
//! All integers are big-endian. `prelude_crc` is CRC-32 (IEEE, as in gzip) of the first 8 bytes;
//! `message_crc` covers everything before it, prelude CRC included. Value types: 0 true, 1 false
//! (no value bytes), 2 i8, 3 i16, 4 i32, 5 i64, 6 bytes and 7 UTF-8 string (u16 length first),
//! 8 timestamp (i64 epoch milliseconds), 9 UUID (16 bytes).
//!
//! The server only writes these messages; [`decode`] exists for tests and for a future client,
//! and is written as the style guide asks of parsers: no I/O, "incomplete, need N bytes" as a
//! distinct answer, and byte offsets on every error, so it can sit under a streaming reader. The
//! format is cross-checked in the tests against `aws-smithy-eventstream`, the codec the AWS SDK
//! for Rust uses.

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes of a message besides its headers and payload: the 12-byte prelude and the 4-byte CRC.
pub const OVERHEAD_BYTES: usize = 16;
/// The most header bytes one message may carry (128 KiB, the AWS limit).
pub const MAX_HEADERS_BYTES: usize = 128 * 1024;
/// The largest payload one message may carry (24 MiB, the AWS limit).
pub const MAX_PAYLOAD_BYTES: usize = 24 * 1024 * 1024;
/// The longest header name: its length is one byte.
pub const MAX_HEADER_NAME_BYTES: usize = u8::MAX as usize;
/// The longest bytes or string header value: its length is two bytes.
pub const MAX_HEADER_VALUE_BYTES: usize = u16::MAX as usize;

const TYPE_TRUE: u8 = 0;
const TYPE_FALSE: u8 = 1;
const TYPE_BYTE: u8 = 2;
const TYPE_SHORT: u8 = 3;
const TYPE_INT: u8 = 4;
const TYPE_LONG: u8 = 5;
const TYPE_BYTES: u8 = 6;
const TYPE_STRING: u8 = 7;
const TYPE_TIMESTAMP: u8 = 8;
const TYPE_UUID: u8 = 9;

/// A typed header value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HeaderValue {
    Bool(bool),
    Byte(i8),
    Short(i16),
    Int(i32),
    Long(i64),
    Bytes(Bytes),
    String(String),
    /// Epoch milliseconds.
    Timestamp(i64),
    Uuid([u8; 16]),
}

impl HeaderValue {
    /// The string, if this is a string header.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            HeaderValue::String(s) => Some(s),
            _ => None,
        }
    }
}

/// One event stream message. Header names may repeat; order is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub headers: Vec<(String, HeaderValue)>,
    pub payload: Bytes,
}

impl Message {
    pub fn new(headers: Vec<(String, HeaderValue)>, payload: impl Into<Bytes>) -> Self {
        Message {
            headers,
            payload: payload.into(),
        }
    }

    /// The first header called `name`.
    pub fn header(&self, name: &str) -> Option<&HeaderValue> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The first header called `name`, if it is a string.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(HeaderValue::as_str)
    }
}

fn string_header(name: &str, value: &str) -> (String, HeaderValue) {
    (name.to_owned(), HeaderValue::String(value.to_owned()))
}

/// An event: `:message-type` = `event`, `:event-type`, `:content-type`.
///
/// SubscribeToShard sends `initial-response` (payload `{}`) and then `SubscribeToShardEvent`s,
/// with the content type of the request's encoding.
pub fn event(event_type: &str, content_type: &str, payload: impl Into<Bytes>) -> Message {
    Message::new(
        vec![
            string_header(":message-type", "event"),
            string_header(":event-type", event_type),
            string_header(":content-type", content_type),
        ],
        payload,
    )
}

/// A modelled exception: `:message-type` = `exception`, `:exception-type` (e.g.
/// `ResourceNotFoundException`), `:content-type` = `application/json`; the payload is
/// `{"message": ...}` by convention.
pub fn exception(exception_type: &str, payload: impl Into<Bytes>) -> Message {
    Message::new(
        vec![
            string_header(":message-type", "exception"),
            string_header(":exception-type", exception_type),
            string_header(":content-type", "application/json"),
        ],
        payload,
    )
}

/// An unmodelled error: `:message-type` = `error`, `:error-code`, `:error-message`; no payload.
///
/// A message longer than a header value may be is cut at a character boundary, so that the
/// message can always be encoded.
pub fn error(code: &str, message: &str) -> Message {
    let mut end = message.len().min(MAX_HEADER_VALUE_BYTES);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    Message::new(
        vec![
            string_header(":message-type", "error"),
            string_header(":error-code", code),
            string_header(":error-message", &message[..end]),
        ],
        Bytes::new(),
    )
}

/// Why a message cannot be encoded: one of its parts exceeds what the format can express.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("header name {name:?} is {len} bytes; at most {MAX_HEADER_NAME_BYTES} fit")]
    HeaderNameTooLong { name: String, len: usize },
    #[error("header {name:?} has a {len}-byte value; at most {MAX_HEADER_VALUE_BYTES} fit")]
    HeaderValueTooLong { name: String, len: usize },
    #[error("headers take {len} bytes; at most {MAX_HEADERS_BYTES} are allowed")]
    HeadersTooLong { len: usize },
    #[error("payload is {len} bytes; at most {MAX_PAYLOAD_BYTES} are allowed")]
    PayloadTooLong { len: usize },
}

/// Encodes one message.
///
/// Fallible rather than silently truncating: a header or payload over the format's limits would
/// otherwise produce a frame every client rejects. The limits are far above what the server
/// sends, except the payload limit, which a SubscribeToShard event must respect by batching.
pub fn encode(message: &Message) -> Result<Bytes, EncodeError> {
    let mut headers = BytesMut::new();
    for (name, value) in &message.headers {
        let name_len = u8::try_from(name.len()).map_err(|_| EncodeError::HeaderNameTooLong {
            name: name.clone(),
            len: name.len(),
        })?;
        headers.put_u8(name_len);
        headers.put_slice(name.as_bytes());
        match value {
            HeaderValue::Bool(true) => headers.put_u8(TYPE_TRUE),
            HeaderValue::Bool(false) => headers.put_u8(TYPE_FALSE),
            HeaderValue::Byte(v) => {
                headers.put_u8(TYPE_BYTE);
                headers.put_i8(*v);
            }
            HeaderValue::Short(v) => {
                headers.put_u8(TYPE_SHORT);
                headers.put_i16(*v);
            }
            HeaderValue::Int(v) => {
                headers.put_u8(TYPE_INT);
                headers.put_i32(*v);
            }
            HeaderValue::Long(v) => {
                headers.put_u8(TYPE_LONG);
                headers.put_i64(*v);
            }
            HeaderValue::Bytes(v) => put_sized(&mut headers, TYPE_BYTES, name, v)?,
            HeaderValue::String(v) => put_sized(&mut headers, TYPE_STRING, name, v.as_bytes())?,
            HeaderValue::Timestamp(ms) => {
                headers.put_u8(TYPE_TIMESTAMP);
                headers.put_i64(*ms);
            }
            HeaderValue::Uuid(v) => {
                headers.put_u8(TYPE_UUID);
                headers.put_slice(v);
            }
        }
    }
    if headers.len() > MAX_HEADERS_BYTES {
        return Err(EncodeError::HeadersTooLong { len: headers.len() });
    }
    let payload = &message.payload;
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(EncodeError::PayloadTooLong { len: payload.len() });
    }
    let total = OVERHEAD_BYTES + headers.len() + payload.len();
    // Both fit in u32: the limits above keep `total` under 25 MiB.
    let (Ok(total_u32), Ok(headers_u32)) = (u32::try_from(total), u32::try_from(headers.len()))
    else {
        return Err(EncodeError::PayloadTooLong { len: payload.len() });
    };

    let mut out = BytesMut::with_capacity(total);
    out.put_u32(total_u32);
    out.put_u32(headers_u32);
    out.put_u32(crc32fast::hash(&out[..8]));
    out.put_slice(&headers);
    out.put_slice(payload);
    out.put_u32(crc32fast::hash(&out));
    Ok(out.freeze())
}

fn put_sized(out: &mut BytesMut, ty: u8, name: &str, value: &[u8]) -> Result<(), EncodeError> {
    let len = u16::try_from(value.len()).map_err(|_| EncodeError::HeaderValueTooLong {
        name: name.to_owned(),
        len: value.len(),
    })?;
    out.put_u8(ty);
    out.put_u16(len);
    out.put_slice(value);
    Ok(())
}

/// Why bytes are not (yet) a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not an error in the bytes so far: the message is `needed` bytes long in all (or, before
    /// the prelude is complete, at least that long). Feed more and try again.
    #[error("incomplete message: need {needed} bytes")]
    Incomplete { needed: usize },
    #[error(
        "prelude CRC mismatch: the message says {in_message:#010x}, the bytes give {computed:#010x}"
    )]
    PreludeCrc { in_message: u32, computed: u32 },
    #[error(
        "message CRC mismatch: the message says {in_message:#010x}, the bytes give {computed:#010x}"
    )]
    MessageCrc { in_message: u32, computed: u32 },
    /// The bytes break the format at `offset` (from the start of the message).
    #[error("invalid message at byte {offset}: {reason}")]
    Invalid { offset: usize, reason: String },
}

fn invalid(offset: usize, reason: impl Into<String>) -> DecodeError {
    DecodeError::Invalid {
        offset,
        reason: reason.into(),
    }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(b)
}

/// Decodes the message at the start of `bytes`, returning it and the number of bytes it took.
///
/// Both CRCs and every length are checked; the prelude CRC before the lengths are trusted, so
/// garbage is reported as such rather than as a huge incomplete message.
pub fn decode(bytes: &[u8]) -> Result<(Message, usize), DecodeError> {
    const PRELUDE: usize = 12;
    if bytes.len() < PRELUDE {
        return Err(DecodeError::Incomplete { needed: PRELUDE });
    }
    let total = be_u32(bytes, 0) as usize;
    let headers_len = be_u32(bytes, 4) as usize;
    let in_message = be_u32(bytes, 8);
    let computed = crc32fast::hash(&bytes[..8]);
    if in_message != computed {
        return Err(DecodeError::PreludeCrc {
            in_message,
            computed,
        });
    }
    if total < OVERHEAD_BYTES {
        return Err(invalid(
            0,
            format!("total length {total} is below the 16-byte minimum"),
        ));
    }
    if headers_len > MAX_HEADERS_BYTES {
        return Err(invalid(
            4,
            format!("headers length {headers_len} exceeds {MAX_HEADERS_BYTES}"),
        ));
    }
    let Some(payload_len) = total.checked_sub(OVERHEAD_BYTES + headers_len) else {
        return Err(invalid(
            4,
            format!("headers length {headers_len} does not fit in a {total}-byte message"),
        ));
    };
    if payload_len > MAX_PAYLOAD_BYTES {
        return Err(invalid(
            0,
            format!("payload length {payload_len} exceeds {MAX_PAYLOAD_BYTES}"),
        ));
    }
    if bytes.len() < total {
        return Err(DecodeError::Incomplete { needed: total });
    }
    let crc_at = total - 4;
    let in_message = be_u32(bytes, crc_at);
    let computed = crc32fast::hash(&bytes[..crc_at]);
    if in_message != computed {
        return Err(DecodeError::MessageCrc {
            in_message,
            computed,
        });
    }
    let headers = decode_headers(&bytes[PRELUDE..PRELUDE + headers_len], PRELUDE)?;
    let payload = Bytes::copy_from_slice(&bytes[PRELUDE + headers_len..crc_at]);
    Ok((Message { headers, payload }, total))
}

/// Decodes a header block; `base` is its offset in the message, for error positions.
fn decode_headers(block: &[u8], base: usize) -> Result<Vec<(String, HeaderValue)>, DecodeError> {
    let mut headers = Vec::new();
    let mut pos = 0;
    // Reads `n` bytes of the block, or says which header field ran past its end.
    let take = |pos: &mut usize, n: usize, what: &str| -> Result<&[u8], DecodeError> {
        let start = *pos;
        let end = start
            .checked_add(n)
            .filter(|&end| end <= block.len())
            .ok_or_else(|| {
                invalid(
                    base + start,
                    format!("{what} runs past the end of the headers"),
                )
            })?;
        *pos = end;
        Ok(&block[start..end])
    };
    while pos < block.len() {
        let header_at = base + pos;
        let name_len = take(&mut pos, 1, "header name length")?[0] as usize;
        let name = take(&mut pos, name_len, "header name")?;
        let name = std::str::from_utf8(name)
            .map_err(|_| invalid(header_at + 1, "header name is not UTF-8"))?
            .to_owned();
        let type_at = base + pos;
        let ty = take(&mut pos, 1, "header value type")?[0];
        let fixed = |pos: &mut usize, n: usize| take(pos, n, "header value");
        let value = match ty {
            TYPE_TRUE => HeaderValue::Bool(true),
            TYPE_FALSE => HeaderValue::Bool(false),
            TYPE_BYTE => HeaderValue::Byte(i8::from_be_bytes(array(fixed(&mut pos, 1)?))),
            TYPE_SHORT => HeaderValue::Short(i16::from_be_bytes(array(fixed(&mut pos, 2)?))),
            TYPE_INT => HeaderValue::Int(i32::from_be_bytes(array(fixed(&mut pos, 4)?))),
            TYPE_LONG => HeaderValue::Long(i64::from_be_bytes(array(fixed(&mut pos, 8)?))),
            TYPE_TIMESTAMP => {
                HeaderValue::Timestamp(i64::from_be_bytes(array(fixed(&mut pos, 8)?)))
            }
            TYPE_UUID => HeaderValue::Uuid(array(fixed(&mut pos, 16)?)),
            TYPE_BYTES | TYPE_STRING => {
                let len = u16::from_be_bytes(array(take(&mut pos, 2, "header value length")?));
                let value_at = base + pos;
                let value = take(&mut pos, usize::from(len), "header value")?;
                if ty == TYPE_BYTES {
                    HeaderValue::Bytes(Bytes::copy_from_slice(value))
                } else {
                    let s = std::str::from_utf8(value)
                        .map_err(|_| invalid(value_at, format!("header {name:?} is not UTF-8")))?;
                    HeaderValue::String(s.to_owned())
                }
            }
            other => {
                return Err(invalid(
                    type_at,
                    format!("header {name:?} has unknown value type {other}"),
                ));
            }
        };
        headers.push((name, value));
    }
    Ok(headers)
}

/// A slice of exactly `N` bytes as an array (callers take exactly `N`).
fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use aws_smithy_eventstream::frame::{read_message_from, write_message_to};
    use aws_smithy_types::DateTime;
    use aws_smithy_types::event_stream as smithy;

    /// The AWS event stream test suite's `valid_with_all_headers_and_payload` vector (from
    /// aws-c-event-stream, also in aws-smithy-eventstream's test data): every header type once,
    /// payload `some payload`.
    const ALL_HEADERS: &[u8] = &[
        0x00, 0x00, 0x00, 0x96, 0x00, 0x00, 0x00, 0x7a, 0x8b, 0xb4, 0x95, 0xfb, 0x04, 0x74, 0x72,
        0x75, 0x65, 0x00, 0x05, 0x66, 0x61, 0x6c, 0x73, 0x65, 0x01, 0x04, 0x62, 0x79, 0x74, 0x65,
        0x02, 0x32, 0x05, 0x73, 0x68, 0x6f, 0x72, 0x74, 0x03, 0x4e, 0x20, 0x03, 0x69, 0x6e, 0x74,
        0x04, 0x00, 0x07, 0xa1, 0x20, 0x04, 0x6c, 0x6f, 0x6e, 0x67, 0x05, 0x00, 0x00, 0x00, 0x0b,
        0xa4, 0x3b, 0x74, 0x00, 0x05, 0x62, 0x79, 0x74, 0x65, 0x73, 0x06, 0x00, 0x0a, 0x73, 0x6f,
        0x6d, 0x65, 0x20, 0x62, 0x79, 0x74, 0x65, 0x73, 0x03, 0x73, 0x74, 0x72, 0x07, 0x00, 0x08,
        0x73, 0x6f, 0x6d, 0x65, 0x20, 0x73, 0x74, 0x72, 0x04, 0x74, 0x69, 0x6d, 0x65, 0x08, 0x00,
        0x00, 0x00, 0x01, 0x2a, 0x05, 0xf2, 0x00, 0x04, 0x75, 0x75, 0x69, 0x64, 0x09, 0xb7, 0x9b,
        0xc9, 0x14, 0xde, 0x21, 0x4e, 0x13, 0xb8, 0xb2, 0xbc, 0x47, 0xe8, 0x5b, 0x7f, 0x0b, 0x73,
        0x6f, 0x6d, 0x65, 0x20, 0x70, 0x61, 0x79, 0x6c, 0x6f, 0x61, 0x64, 0x01, 0xa0, 0x58, 0x60,
    ];

    /// aws-c-event-stream's `message_deserializer_test.c` vectors: no headers, and one string
    /// header, both with payload `{'foo':'bar'}`.
    const NO_HEADERS: &[u8] = &[
        0x00, 0x00, 0x00, 0x1d, 0x00, 0x00, 0x00, 0x00, 0xfd, 0x52, 0x8c, 0x5a, 0x7b, 0x27, 0x66,
        0x6f, 0x6f, 0x27, 0x3a, 0x27, 0x62, 0x61, 0x72, 0x27, 0x7d, 0xc3, 0x65, 0x39, 0x36,
    ];
    const ONE_HEADER: &[u8] = &[
        0x00, 0x00, 0x00, 0x3d, 0x00, 0x00, 0x00, 0x20, 0x07, 0xfd, 0x83, 0x96, 0x0c, b'c', b'o',
        b'n', b't', b'e', b'n', b't', b'-', b't', b'y', b'p', b'e', 0x07, 0x00, 0x10, b'a', b'p',
        b'p', b'l', b'i', b'c', b'a', b't', b'i', b'o', b'n', b'/', b'j', b's', b'o', b'n', 0x7b,
        0x27, 0x66, 0x6f, 0x6f, 0x27, 0x3a, 0x27, 0x62, 0x61, 0x72, 0x27, 0x7d, 0x8d, 0x9c, 0x08,
        0xb1,
    ];

    const UUID: [u8; 16] = 0xb79bc914_de21_4e13_b8b2_bc47e85b7f0b_u128.to_be_bytes();

    fn all_headers() -> Message {
        let h = |name: &str, value| (name.to_owned(), value);
        Message::new(
            vec![
                h("true", HeaderValue::Bool(true)),
                h("false", HeaderValue::Bool(false)),
                h("byte", HeaderValue::Byte(50)),
                h("short", HeaderValue::Short(20_000)),
                h("int", HeaderValue::Int(500_000)),
                h("long", HeaderValue::Long(50_000_000_000)),
                h(
                    "bytes",
                    HeaderValue::Bytes(Bytes::from_static(b"some bytes")),
                ),
                h("str", HeaderValue::String("some str".to_owned())),
                h("time", HeaderValue::Timestamp(5_000_000_000)),
                h("uuid", HeaderValue::Uuid(UUID)),
            ],
            Bytes::from_static(b"some payload"),
        )
    }

    /// Our message as aws-smithy-eventstream's.
    fn to_smithy(message: &Message) -> smithy::Message {
        let headers = message
            .headers
            .iter()
            .map(|(name, value)| {
                let value = match value {
                    HeaderValue::Bool(v) => smithy::HeaderValue::Bool(*v),
                    HeaderValue::Byte(v) => smithy::HeaderValue::Byte(*v),
                    HeaderValue::Short(v) => smithy::HeaderValue::Int16(*v),
                    HeaderValue::Int(v) => smithy::HeaderValue::Int32(*v),
                    HeaderValue::Long(v) => smithy::HeaderValue::Int64(*v),
                    HeaderValue::Bytes(v) => smithy::HeaderValue::ByteArray(v.clone()),
                    HeaderValue::String(v) => smithy::HeaderValue::String(v.clone().into()),
                    HeaderValue::Timestamp(ms) => {
                        smithy::HeaderValue::Timestamp(DateTime::from_millis(*ms))
                    }
                    HeaderValue::Uuid(v) => smithy::HeaderValue::Uuid(u128::from_be_bytes(*v)),
                };
                smithy::Header::new(name.clone(), value)
            })
            .collect();
        smithy::Message::new_from_parts(headers, message.payload.clone())
    }

    fn smithy_encode(message: &smithy::Message) -> Vec<u8> {
        let mut out = Vec::new();
        write_message_to(message, &mut out).unwrap();
        out
    }

    #[test]
    fn known_answer_vectors() {
        assert_eq!(&encode(&all_headers()).unwrap()[..], ALL_HEADERS);
        let (decoded, used) = decode(ALL_HEADERS).unwrap();
        assert_eq!((decoded, used), (all_headers(), ALL_HEADERS.len()));

        let no_headers = Message::new(vec![], Bytes::from_static(b"{'foo':'bar'}"));
        assert_eq!(&encode(&no_headers).unwrap()[..], NO_HEADERS);
        assert_eq!(decode(NO_HEADERS).unwrap(), (no_headers, NO_HEADERS.len()));

        let one_header = Message::new(
            vec![(
                "content-type".to_owned(),
                HeaderValue::String("application/json".to_owned()),
            )],
            Bytes::from_static(b"{'foo':'bar'}"),
        );
        assert_eq!(&encode(&one_header).unwrap()[..], ONE_HEADER);
        assert_eq!(decode(ONE_HEADER).unwrap(), (one_header, ONE_HEADER.len()));
    }

    #[test]
    fn agrees_with_aws_smithy_eventstream() {
        let messages = [
            all_headers(),
            event(
                "SubscribeToShardEvent",
                "application/x-amz-json-1.1",
                &br#"{"Records":[],"ContinuationSequenceNumber":"1","MillisBehindLatest":0}"#[..],
            ),
            event("initial-response", "application/json", &b"{}"[..]),
            exception("ResourceInUseException", &br#"{"message":"busy"}"#[..]),
            error("InternalFailure", "something broke"),
            Message::default(),
            Message::new(
                vec![
                    ("neg".to_owned(), HeaderValue::Long(i64::MIN)),
                    ("t".to_owned(), HeaderValue::Timestamp(-1)),
                    ("empty".to_owned(), HeaderValue::String(String::new())),
                    ("dup".to_owned(), HeaderValue::Int(-7)),
                    ("dup".to_owned(), HeaderValue::Short(-1)),
                ],
                Bytes::from(vec![0xabu8; 70_000]),
            ),
        ];
        for message in messages {
            let ours = encode(&message).unwrap();
            let theirs = smithy_encode(&to_smithy(&message));
            assert_eq!(&ours[..], &theirs[..], "{message:?}");
            // Theirs reads ours...
            let read = read_message_from(&mut ours.clone()).unwrap();
            assert_eq!(read, to_smithy(&message));
            // ...and ours reads theirs.
            assert_eq!(decode(&theirs).unwrap(), (message, theirs.len()));
        }
    }

    #[test]
    fn helpers_set_the_event_stream_headers() {
        let m = event(
            "SubscribeToShardEvent",
            "application/x-amz-cbor-1.1",
            &b"\xa0"[..],
        );
        assert_eq!(m.header_str(":message-type"), Some("event"));
        assert_eq!(m.header_str(":event-type"), Some("SubscribeToShardEvent"));
        assert_eq!(
            m.header_str(":content-type"),
            Some("application/x-amz-cbor-1.1")
        );
        assert_eq!(&m.payload[..], b"\xa0");

        let m = exception("ResourceNotFoundException", &br#"{"message":"gone"}"#[..]);
        assert_eq!(m.header_str(":message-type"), Some("exception"));
        assert_eq!(
            m.header_str(":exception-type"),
            Some("ResourceNotFoundException")
        );
        assert_eq!(m.header_str(":content-type"), Some("application/json"));

        let m = error("InternalFailure", "oops");
        assert_eq!(m.header_str(":message-type"), Some("error"));
        assert_eq!(m.header_str(":error-code"), Some("InternalFailure"));
        assert_eq!(m.header_str(":error-message"), Some("oops"));
        assert!(m.payload.is_empty());

        // An overlong message is cut at a character boundary and still encodes.
        let long = "é".repeat(40_000);
        let m = error("InternalFailure", &long);
        let cut = m.header_str(":error-message").unwrap();
        assert_eq!(cut.len(), MAX_HEADER_VALUE_BYTES - 1);
        assert!(encode(&m).is_ok());
    }

    #[test]
    fn encode_refuses_what_the_format_cannot_express() {
        let with = |name: String, value| Message::new(vec![(name, value)], Bytes::new());
        assert!(matches!(
            encode(&with("n".repeat(256), HeaderValue::Bool(true))),
            Err(EncodeError::HeaderNameTooLong { len: 256, .. })
        ));
        assert!(encode(&with("n".repeat(255), HeaderValue::Bool(true))).is_ok());
        assert!(matches!(
            encode(&with(
                "b".into(),
                HeaderValue::Bytes(Bytes::from(vec![0; 65_536]))
            )),
            Err(EncodeError::HeaderValueTooLong { len: 65_536, .. })
        ));
        assert!(
            encode(&with(
                "b".into(),
                HeaderValue::Bytes(Bytes::from(vec![0; 65_535]))
            ))
            .is_ok()
        );
        let many = Message::new(
            (0..3)
                .map(|i| (format!("h{i}"), HeaderValue::String("x".repeat(60_000))))
                .collect(),
            Bytes::new(),
        );
        assert!(matches!(
            encode(&many),
            Err(EncodeError::HeadersTooLong { .. })
        ));
        let big = Message::new(vec![], Bytes::from(vec![0; MAX_PAYLOAD_BYTES + 1]));
        assert!(matches!(
            encode(&big),
            Err(EncodeError::PayloadTooLong { .. })
        ));
    }

    #[test]
    fn decode_reports_incomplete_input_at_every_split() {
        let bytes = encode(&all_headers()).unwrap();
        for cut in 0..bytes.len() {
            let expected = if cut < 12 { 12 } else { bytes.len() };
            assert_eq!(
                decode(&bytes[..cut]),
                Err(DecodeError::Incomplete { needed: expected }),
                "cut at {cut}"
            );
        }
        // Two messages back to back: the first is consumed exactly.
        let mut two = bytes.to_vec();
        let second = encode(&error("E", "m")).unwrap();
        two.extend_from_slice(&second);
        let (first, used) = decode(&two).unwrap();
        assert_eq!((first, used), (all_headers(), bytes.len()));
        assert_eq!(decode(&two[used..]).unwrap().0, error("E", "m"));
    }

    /// A message whose CRCs are recomputed after `edit`, so that only the edit is wrong.
    fn reframed(mut bytes: Vec<u8>, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        edit(&mut bytes);
        let crc = crc32fast::hash(&bytes[..8]);
        bytes[8..12].copy_from_slice(&crc.to_be_bytes());
        let end = bytes.len() - 4;
        let crc = crc32fast::hash(&bytes[..end]);
        bytes[end..].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    #[test]
    fn decode_checks_crcs_and_lengths() {
        let good = encode(&all_headers()).unwrap().to_vec();

        let mut bad = good.clone();
        bad[9] ^= 1;
        assert!(matches!(decode(&bad), Err(DecodeError::PreludeCrc { .. })));

        let mut bad = good.clone();
        bad[20] ^= 1;
        assert!(matches!(decode(&bad), Err(DecodeError::MessageCrc { .. })));
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(decode(&bad), Err(DecodeError::MessageCrc { .. })));

        // Total length below the minimum.
        let bad = reframed(good.clone(), |b| {
            b[..4].copy_from_slice(&15u32.to_be_bytes())
        });
        assert!(matches!(
            decode(&bad),
            Err(DecodeError::Invalid { offset: 0, .. })
        ));

        // Headers longer than the message.
        let bad = reframed(good.clone(), |b| {
            b[4..8].copy_from_slice(&0x90u32.to_be_bytes())
        });
        assert!(matches!(
            decode(&bad),
            Err(DecodeError::Invalid { offset: 4, .. })
        ));

        // Unknown value type (the first header's type byte is at 12 + 1 + 4).
        let bad = reframed(good.clone(), |b| b[17] = 0x60);
        assert_eq!(
            decode(&bad),
            Err(invalid(17, "header \"true\" has unknown value type 96"))
        );

        // A header name that runs past the header block.
        let bad = reframed(good.clone(), |b| b[12] = 0xff);
        assert!(matches!(
            decode(&bad),
            Err(DecodeError::Invalid { offset: 13, .. })
        ));

        // A string header that is not UTF-8 ("some str" starts at byte 0x5f).
        let at = good.windows(8).position(|w| w == b"some str").unwrap();
        let bad = reframed(good.clone(), |b| b[at] = 0xff);
        assert!(matches!(decode(&bad), Err(DecodeError::Invalid { offset, .. }) if offset == at));

        // The headers length cuts a header in half.
        let bad = reframed(encode(&error("Code", "message")).unwrap().to_vec(), |b| {
            let headers_len = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
            b[4..8].copy_from_slice(&(headers_len - 3).to_be_bytes());
        });
        assert!(matches!(decode(&bad), Err(DecodeError::Invalid { .. })));

        // Random garbage never panics.
        let mut state = 0x1234_5678_u32;
        for _ in 0..2000 {
            let len = (state % 64) as usize;
            let garbage: Vec<u8> = (0..len)
                .map(|_| {
                    state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (state >> 24) as u8
                })
                .collect();
            let _ = decode(&garbage);
            let _ = decode(&reframed_if_long(garbage));
        }
    }

    /// Garbage with valid CRCs, so that the header parser sees it.
    fn reframed_if_long(mut bytes: Vec<u8>) -> Vec<u8> {
        if bytes.len() < 16 {
            return bytes;
        }
        let len = bytes.len() as u32;
        bytes[..4].copy_from_slice(&len.to_be_bytes());
        let headers_len = u32::from(bytes[7]) % (len - 15);
        bytes[4..8].copy_from_slice(&headers_len.to_be_bytes());
        reframed(bytes, |_| {})
    }
}

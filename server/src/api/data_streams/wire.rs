//! The Kinesis Data Streams body encodings: JSON 1.1 and CBOR 1.1, chosen by the request's
//! `Content-Type` and answered in kind.
//!
//! Handlers declare one set of `serde` request/response types and call [`decode`] and
//! [`response`] with the request's [`Encoding`]; nothing else in a handler depends on the
//! encoding. The two encodings differ only in how a few scalar types look on the wire
//! (`shared/reference/aws-protocol.md` E.1), so those get newtypes whose `serde` impls ask the
//! (de)serializer which one it is (`is_human_readable`: `serde_json` says true, `ciborium` false):
//!
//! | type          | JSON 1.1                                  | CBOR 1.1                               |
//! |---------------|-------------------------------------------|----------------------------------------|
//! | [`Blob`]      | base64 string (standard, padded)          | byte string                            |
//! | [`Timestamp`] | epoch seconds, a number (`1441215410.867`) | tag 1 + integer epoch *milliseconds* |
//!
//! CBOR is not optional: the AWS SDKs for Java (v1 since 1.11.71, and v2) default to it for
//! Kinesis, and so do the KCL and KPL built on them. Their timestamp convention (tag 1 with
//! milliseconds, against RFC 8949's seconds) is the AWS Java SDK's `SdkCborGenerator`:
//! `writeTag(1); writeNumber(date.getTime())`.
//!
//! Inputs are read leniently, because clients we did not write send them:
//! - unknown fields are ignored (newer SDKs send fields this server does not know yet);
//! - an empty body is `{}` (the JSON 1.1 protocol allows it for operations without input);
//! - a blob may lack base64 padding; in CBOR it may also be a text string holding base64;
//! - a timestamp may be an integer or a float, and in JSON also an RFC 3339 string. See
//!   [`Timestamp`] for how CBOR numbers are told apart as seconds or milliseconds.
//!
//! Every malformed body is a [`ErrorKind::Serialization`] error whose message names the field
//! (`Records[2].Data`) and, for JSON, the line and column; for CBOR, the byte offset.
//!
//! A caveat for type authors: serde's buffering adapters (`#[serde(flatten)]`, untagged or
//! internally tagged enums) report `is_human_readable() == true` whatever the format, so a
//! [`Blob`] or [`Timestamp`] inside them would be decoded as JSON from a CBOR body. Keep these
//! newtypes in plain structs, `Option`s and `Vec`s.

use std::cell::RefCell;
use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::api::error::{ApiError, ErrorKind, Protocol};
use crate::http::{Body, full_body};

/// The JSON 1.1 content type, also what a data streams response defaults to.
pub const JSON_CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// The CBOR 1.1 content type of the AWS Java SDKs.
pub const CBOR_CONTENT_TYPE: &str = "application/x-amz-cbor-1.1";

/// The body encoding of one data streams request, and so of its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Json,
    Cbor,
}

impl Encoding {
    /// The encoding a request's `Content-Type` asks for: CBOR for
    /// `application/x-amz-cbor-1.1`, JSON for anything else (including no header, which some
    /// hand-written clients omit, and `application/json`, which kinesalite accepts too).
    /// Media type parameters (`; charset=utf-8`) and letter case are ignored.
    pub fn from_content_type(content_type: Option<&str>) -> Encoding {
        let essence = content_type
            .and_then(|value| value.split(';').next())
            .map(str::trim)
            .unwrap_or_default();
        if essence.eq_ignore_ascii_case(CBOR_CONTENT_TYPE) {
            Encoding::Cbor
        } else {
            Encoding::Json
        }
    }

    /// The content type of bodies in this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Json => JSON_CONTENT_TYPE,
            Encoding::Cbor => CBOR_CONTENT_TYPE,
        }
    }

    /// The error protocol for requests in this encoding (same table, body in the same encoding).
    pub fn protocol(self) -> Protocol {
        match self {
            Encoding::Json => Protocol::AwsJson11,
            Encoding::Cbor => Protocol::AwsCbor11,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

/// Decodes a request body. An empty body (or, in JSON, one of only whitespace) is `{}`.
///
/// The top-level value must be an object (JSON) or a map (CBOR): serde would otherwise accept an
/// array for a struct, which no AWS client sends. Unknown fields are ignored.
pub fn decode<T: DeserializeOwned>(encoding: Encoding, body: &[u8]) -> Result<T, ApiError> {
    match encoding {
        Encoding::Json => decode_json(body),
        Encoding::Cbor => decode_cbor(body),
    }
}

fn serialization(message: String) -> ApiError {
    ApiError::new(ErrorKind::Serialization, message)
}

/// ` at `Records[0].Data``, or nothing for the top level or an unknown place (`?`, which
/// `serde_path_to_error` reports for a syntax error between fields).
fn at_path(path: &str) -> String {
    if path.is_empty() || path == "." || path == "?" {
        String::new()
    } else {
        format!(" at `{path}`")
    }
}

fn decode_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = match body.iter().position(|b| !b.is_ascii_whitespace()) {
        None => &b"{}"[..],
        Some(first) if body[first] != b'{' => {
            return Err(serialization(
                "The request body must be a JSON object.".to_owned(),
            ));
        }
        Some(_) => body,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = at_path(&e.path().to_string());
        serialization(format!(
            "Invalid JSON request body{path}: {}",
            e.into_inner()
        ))
    })?;
    de.end()
        .map_err(|e| serialization(format!("Invalid JSON request body: {e}")))?;
    Ok(value)
}

thread_local! {
    /// Where the last failed CBOR decode on this thread went wrong, left by [`Tracked`].
    static CBOR_ERROR_PATH: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `T`'s deserialization under `serde_path_to_error` and, on failure, leaves the path in
/// [`CBOR_ERROR_PATH`]. `ciborium` offers no public deserializer to wrap directly (only
/// `from_reader`), and passing its error through unchanged keeps its byte offset.
struct Tracked<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Tracked<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde_path_to_error::deserialize(deserializer)
            .map(Tracked)
            .map_err(|e| {
                let path = e.path().to_string();
                CBOR_ERROR_PATH.with(|slot| *slot.borrow_mut() = Some(path));
                e.into_inner()
            })
    }
}

fn decode_cbor<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // 0xa0: the empty map.
    let body = if body.is_empty() { &[0xa0][..] } else { body };
    // Major type 5 (map) lives in the top three bits.
    if body[0] >> 5 != 5 {
        return Err(serialization(
            "The request body must be a CBOR map.".to_owned(),
        ));
    }
    CBOR_ERROR_PATH.with(|slot| slot.borrow_mut().take());
    let mut rest = body;
    let result = ciborium::de::from_reader::<Tracked<T>, _>(&mut rest);
    match result {
        Ok(Tracked(value)) if rest.is_empty() => Ok(value),
        Ok(_) => Err(serialization(format!(
            "Invalid CBOR request body: {} unexpected bytes after the top-level map at byte {}.",
            rest.len(),
            body.len() - rest.len()
        ))),
        Err(e) => {
            let path = CBOR_ERROR_PATH
                .with(|slot| slot.borrow_mut().take())
                .map(|p| at_path(&p))
                .unwrap_or_default();
            Err(serialization(format!(
                "Invalid CBOR request body{path}: {}",
                cbor_error_message(&e)
            )))
        }
    }
}

fn cbor_error_message(e: &ciborium::de::Error<std::io::Error>) -> String {
    use ciborium::de::Error as E;
    match e {
        E::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "unexpected end of input".to_owned()
        }
        E::Io(io) => io.to_string(),
        E::Syntax(offset) => format!("malformed CBOR at byte {offset}"),
        E::Semantic(Some(offset), message) => format!("{message} (at byte {offset})"),
        E::Semantic(None, message) => message.clone(),
        E::RecursionLimitExceeded => "nesting is too deep".to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/// Encodes a value, or says why it cannot be (a bug in a `Serialize` impl, never client input).
pub fn try_encode<T: Serialize + ?Sized>(encoding: Encoding, value: &T) -> Result<Bytes, ApiError> {
    match encoding {
        Encoding::Json => serde_json::to_vec(value)
            .map(Bytes::from)
            .map_err(|e| ApiError::internal(format!("encoding a JSON response: {e}"))),
        Encoding::Cbor => {
            let mut out = Vec::new();
            ciborium::ser::into_writer(value, &mut out)
                .map_err(|e| ApiError::internal(format!("encoding a CBOR response: {e:?}")))?;
            Ok(Bytes::from(out))
        }
    }
}

/// Encodes a value. The server's response types always serialize (string map keys, infallible
/// `Serialize` impls); should one not, the error is logged and the body is an empty map, so a
/// bug shows as a malformed reply rather than a panic.
pub fn encode<T: Serialize + ?Sized>(encoding: Encoding, value: &T) -> Bytes {
    try_encode(encoding, value).unwrap_or_else(|e| {
        tracing::error!("{}", e.message);
        match encoding {
            Encoding::Json => Bytes::from_static(b"{}"),
            Encoding::Cbor => Bytes::from_static(&[0xa0]),
        }
    })
}

/// A 200 response carrying `value` in `encoding`. If `value` cannot be encoded (a bug), a 500
/// `InternalFailureException` in the same encoding instead; the router adds the request id.
pub fn response<T: Serialize + ?Sized>(encoding: Encoding, value: &T) -> Response<Body> {
    match try_encode(encoding, value) {
        Ok(bytes) => {
            let mut response = Response::new(full_body(bytes));
            *response.status_mut() = StatusCode::OK;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(encoding.content_type()),
            );
            response
        }
        Err(err) => {
            tracing::error!("{}", err.message);
            encoding.protocol().error_response_without_id(&err)
        }
    }
}

/// A 200 response whose body was already encoded (by a hand-written encoder on a hot path).
pub fn encoded_response(encoding: Encoding, body: Bytes) -> Response<Body> {
    let mut response = Response::new(full_body(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(encoding.content_type()),
    );
    response
}

/// Appends `data` to a JSON body as a quoted base64 string, encoded in place. Base64 needs no
/// JSON escaping, so this is the whole cost of a [`Blob`] in JSON, without the intermediate
/// `String` and the escape scan `serde_json` would add.
pub fn push_json_base64(out: &mut Vec<u8>, data: &[u8]) {
    let engine = base64_simd::STANDARD;
    out.push(b'"');
    let start = out.len();
    out.resize(start + engine.encoded_length(data.len()), 0);
    let written = engine
        .encode(data, base64_simd::Out::from_slice(&mut out[start..]))
        .len();
    out.truncate(start + written);
    out.push(b'"');
}

/// Appends a [`Timestamp`] to a JSON body exactly as its `Serialize` impl writes it.
pub fn push_json_timestamp(out: &mut Vec<u8>, ts: Timestamp) {
    // The same call the `Serialize` impl makes, so the two cannot disagree. Writing an f64 to a
    // Vec cannot fail.
    let _ = serde_json::to_writer(out, &(ts.0 as f64 / 1000.0));
}

// ---------------------------------------------------------------------------------------------
// Blob
// ---------------------------------------------------------------------------------------------

/// Standard alphabet; padding written, but optional when read (some hand-rolled clients strip
/// it); non-zero trailing bits accepted, as Node's and Java's lenient decoders do.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// A `blob` shape (record `Data`): base64 in JSON, a byte string in CBOR.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Blob(pub Bytes);

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl From<Bytes> for Blob {
    fn from(bytes: Bytes) -> Self {
        Blob(bytes)
    }
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&BASE64.encode(&self.0))
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            deserializer.deserialize_str(BlobVisitor)
        } else {
            // `any`, not `byte_buf`: a text string holding base64 is accepted too.
            deserializer.deserialize_any(BlobVisitor)
        }
    }
}

struct BlobVisitor;

impl<'de> Visitor<'de> for BlobVisitor {
    type Value = Blob;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a blob (base64 string, or CBOR byte string)")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Blob, E> {
        BASE64
            .decode(v)
            .map(|bytes| Blob(Bytes::from(bytes)))
            .map_err(|e| E::custom(format_args!("invalid base64 in a blob: {e}")))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Blob, E> {
        Ok(Blob(Bytes::copy_from_slice(v)))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Blob, E> {
        Ok(Blob(Bytes::from(v)))
    }
}

// ---------------------------------------------------------------------------------------------
// Timestamp
// ---------------------------------------------------------------------------------------------

/// A `timestamp` shape, held as epoch **milliseconds** (the finest unit either encoding carries).
///
/// Written as epoch seconds with a millisecond fraction in JSON (`1441215410.867`; a whole
/// second is `1441215410.0`; botocore, the AWS SDK for Rust and the Java SDK all read any JSON
/// number) and as tag 1 + integer milliseconds in CBOR (the AWS Java SDK convention).
///
/// Read from JSON: an integer or float number of **seconds** (the JSON 1.1 protocol has no
/// other numeric unit), or a string holding such a number or an RFC 3339 date-time (a missing
/// offset means UTC).
///
/// Read from CBOR:
/// - **tag 1 + integer: milliseconds**, always. This is what the AWS Java SDKs send and what
///   this type writes, so every value round-trips exactly. (RFC 8949 would read it as seconds;
///   a generic CBOR client sending integer seconds under tag 1 is not supported.)
/// - a float (tagged 1 or not) or an untagged integer: the unit is unknown, so it is told by
///   magnitude: **below 10^11 in absolute value it is seconds, otherwise milliseconds.** 10^11 ms
///   is 1973-03-03 and 10^11 s is the year 5138, so the rule is exact for every real timestamp
///   in either unit; only a millisecond value before 1973 is misread, and all of those precede
///   any stream, meaning "from the start" either way. No known client sends these forms.
/// - a text string (tag 0 or untagged): as in JSON.
/// - any other tag is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

/// See [`Timestamp`]: CBOR floats and untagged integers at or above this magnitude are
/// milliseconds, below it seconds.
pub const CBOR_MILLIS_THRESHOLD: f64 = 1e11;

impl Timestamp {
    pub fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    pub fn millis(self) -> i64 {
        self.0
    }
}

/// Seconds as an `f64` to milliseconds, if finite and in range.
fn secs_f64_to_ms(secs: f64) -> Option<i64> {
    ms_f64_to_ms(secs * 1000.0)
}

fn ms_f64_to_ms(ms: f64) -> Option<i64> {
    let ms = ms.round();
    // i64::MAX as f64 rounds up to 2^63, which itself is out of range: compare strictly.
    if ms.is_finite() && ms >= i64::MIN as f64 && ms < i64::MAX as f64 {
        Some(ms as i64)
    } else {
        None
    }
}

/// A date-time string: a number of seconds, an RFC 3339 date-time, or one without an offset (UTC).
fn parse_time_str(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return secs_f64_to_ms(secs);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}

const OUT_OF_RANGE: &str = "timestamp out of range";

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            // Exact for |ms| < 2^53 (beyond year 285,000); the shortest round-trip form of
            // ms / 1000 is then the decimal with at most three fraction digits.
            serializer.serialize_f64(self.0 as f64 / 1000.0)
        } else {
            ciborium::tag::Required::<i64, 1>(self.0).serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            return deserializer.deserialize_any(JsonTimeVisitor);
        }
        let ciborium::tag::Captured(tag, raw) =
            ciborium::tag::Captured::<RawCborTime>::deserialize(deserializer)?;
        let ms = match (tag, raw) {
            (Some(1), RawCborTime::Int(n)) => i64::try_from(n).ok(),
            (None, RawCborTime::Int(n)) => {
                if (n.unsigned_abs() as f64) < CBOR_MILLIS_THRESHOLD {
                    i64::try_from(n).ok().and_then(|s| s.checked_mul(1000))
                } else {
                    i64::try_from(n).ok()
                }
            }
            (None | Some(1), RawCborTime::Float(v)) => {
                if v.abs() < CBOR_MILLIS_THRESHOLD {
                    secs_f64_to_ms(v)
                } else {
                    ms_f64_to_ms(v)
                }
            }
            (None | Some(0), RawCborTime::Text(s)) => {
                return parse_time_str(&s).map(Timestamp).ok_or_else(|| {
                    de::Error::custom(format_args!("invalid timestamp string {s:?}"))
                });
            }
            (Some(1), RawCborTime::Text(_)) => {
                return Err(de::Error::custom(
                    "CBOR tag 1 (epoch time) must wrap a number, not a text string",
                ));
            }
            (Some(tag), _) => {
                return Err(de::Error::custom(format_args!(
                    "unsupported CBOR tag {tag} on a timestamp (expected tag 1, epoch time)"
                )));
            }
        };
        ms.map(Timestamp)
            .ok_or_else(|| de::Error::custom(OUT_OF_RANGE))
    }
}

struct JsonTimeVisitor;

impl Visitor<'_> for JsonTimeVisitor {
    type Value = Timestamp;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a timestamp (epoch seconds as a number, or an RFC 3339 string)")
    }

    fn visit_i64<E: de::Error>(self, secs: i64) -> Result<Timestamp, E> {
        secs.checked_mul(1000)
            .map(Timestamp)
            .ok_or_else(|| E::custom(OUT_OF_RANGE))
    }

    fn visit_u64<E: de::Error>(self, secs: u64) -> Result<Timestamp, E> {
        i64::try_from(secs)
            .ok()
            .and_then(|s| s.checked_mul(1000))
            .map(Timestamp)
            .ok_or_else(|| E::custom(OUT_OF_RANGE))
    }

    fn visit_f64<E: de::Error>(self, secs: f64) -> Result<Timestamp, E> {
        secs_f64_to_ms(secs)
            .map(Timestamp)
            .ok_or_else(|| E::custom(OUT_OF_RANGE))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Timestamp, E> {
        parse_time_str(s)
            .map(Timestamp)
            .ok_or_else(|| E::custom(format_args!("invalid timestamp string {s:?}")))
    }
}

/// The untagged item under a CBOR timestamp's (optional) tag.
enum RawCborTime {
    Int(i128),
    Float(f64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawCborTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawCborTimeVisitor)
    }
}

struct RawCborTimeVisitor;

impl Visitor<'_> for RawCborTimeVisitor {
    type Value = RawCborTime;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a timestamp (epoch time as a number, optionally with tag 1)")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawCborTime, E> {
        Ok(RawCborTime::Int(i128::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawCborTime, E> {
        Ok(RawCborTime::Int(i128::from(v)))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<RawCborTime, E> {
        Ok(RawCborTime::Int(v))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<RawCborTime, E> {
        i128::try_from(v)
            .map(RawCborTime::Int)
            .map_err(|_| E::custom(OUT_OF_RANGE))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawCborTime, E> {
        Ok(RawCborTime::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawCborTime, E> {
        Ok(RawCborTime::Text(v.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn blobs_encode_as_the_blob_serializer_writes_them() {
        // Every tail length (padding of 0, 1 and 2), all byte values, past the SIMD block sizes.
        for len in (0..200).chain([1023, 1024, 1025, 4096 + 7]) {
            let data: Vec<u8> = (0..len).map(|i| (i * 151 + len) as u8).collect();
            let mut out = b"x".to_vec();
            push_json_base64(&mut out, &data);
            let serde = serde_json::to_vec(&Blob(bytes::Bytes::from(data))).unwrap();
            assert_eq!(&out[1..], &serde[..], "length {len}");
        }
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Inner {
        shard_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ending_sequence_number: Option<String>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Outer {
        data: Blob,
        arrival: Timestamp,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        partition_key: Option<String>,
        #[serde(default)]
        shards: Vec<Inner>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nested: Option<Inner>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        starting: Option<Timestamp>,
    }

    fn sample() -> Outer {
        Outer {
            data: Blob(Bytes::from_static(b"hello\x00\xff world")),
            arrival: Timestamp(1_441_215_410_867),
            partition_key: Some("pk-1".to_owned()),
            shards: vec![
                Inner {
                    shard_id: "shardId-000000000000".to_owned(),
                    ending_sequence_number: None,
                },
                Inner {
                    shard_id: "shardId-000000000001".to_owned(),
                    ending_sequence_number: Some(
                        "49590338271490256608559692538361571095921575989136588898".to_owned(),
                    ),
                },
            ],
            nested: Some(Inner {
                shard_id: "shardId-000000000002".to_owned(),
                ending_sequence_number: None,
            }),
            starting: None,
        }
    }

    fn cbor<T: Serialize>(value: &T) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::ser::into_writer(value, &mut out).unwrap();
        out
    }

    fn cbor_value(bytes: &[u8]) -> ciborium::Value {
        ciborium::de::from_reader(bytes).unwrap()
    }

    #[track_caller]
    fn decode_err<T: DeserializeOwned + fmt::Debug>(encoding: Encoding, body: &[u8]) -> String {
        let err = decode::<T>(encoding, body).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Serialization, "{err:?}");
        err.message
    }

    #[test]
    fn content_type_negotiation() {
        use Encoding::*;
        let cases = [
            (Some("application/x-amz-cbor-1.1"), Cbor),
            (Some("Application/X-Amz-CBOR-1.1; charset=utf-8"), Cbor),
            (Some(" application/x-amz-cbor-1.1 "), Cbor),
            (Some("application/x-amz-json-1.1"), Json),
            (Some("application/json"), Json),
            (Some("text/plain"), Json),
            (Some(""), Json),
            (None, Json),
        ];
        for (header, expected) in cases {
            assert_eq!(Encoding::from_content_type(header), expected, "{header:?}");
        }
        assert_eq!(Json.content_type(), "application/x-amz-json-1.1");
        assert_eq!(Cbor.content_type(), "application/x-amz-cbor-1.1");
        assert_eq!(Json.protocol(), Protocol::AwsJson11);
        assert_eq!(Cbor.protocol(), Protocol::AwsCbor11);
    }

    /// The whole design rests on these two answers.
    #[test]
    fn serializers_report_human_readability() {
        struct Probe;
        impl Serialize for Probe {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let human = s.is_human_readable();
                s.serialize_bool(human)
            }
        }
        assert_eq!(serde_json::to_string(&Probe).unwrap(), "true");
        // 0xf4 is CBOR `false`.
        assert_eq!(cbor(&Probe), [0xf4], "ciborium must not be human readable");
    }

    #[test]
    fn round_trip_json() {
        let value = sample();
        let bytes = encode(Encoding::Json, &value);
        let back: Outer = decode(Encoding::Json, &bytes).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn round_trip_cbor() {
        let value = sample();
        let bytes = encode(Encoding::Cbor, &value);
        let back: Outer = decode(Encoding::Cbor, &bytes).unwrap();
        assert_eq!(back, value);
        // Every value this type writes reads back exactly, small ones included.
        for ms in [-1, 0, 1, 999, 5_000, 99_999_999_999, i64::MIN, i64::MAX] {
            let with_start = Outer {
                starting: Some(Timestamp(ms)),
                ..value.clone()
            };
            let bytes = encode(Encoding::Cbor, &with_start);
            assert_eq!(decode::<Outer>(Encoding::Cbor, &bytes).unwrap(), with_start);
        }
    }

    #[test]
    fn json_exact_text() {
        let value = Outer {
            data: Blob(Bytes::from_static(b"hi")),
            arrival: Timestamp(1_441_215_410_867),
            partition_key: None,
            shards: vec![],
            nested: None,
            starting: Some(Timestamp(1_441_215_410_000)),
        };
        let text = String::from_utf8(encode(Encoding::Json, &value).to_vec()).unwrap();
        assert_eq!(
            text,
            r#"{"Data":"aGk=","Arrival":1441215410.867,"Shards":[],"Starting":1441215410.0}"#
        );
    }

    #[test]
    fn json_timestamps() {
        let cases: &[(i64, &str)] = &[
            (1_441_215_410_867, "1441215410.867"),
            (1_441_215_410_000, "1441215410.0"),
            (1_441_215_410_001, "1441215410.001"),
            (1_441_215_410_100, "1441215410.1"),
            (0, "0.0"),
            (-1_500, "-1.5"),
            (4_102_444_799_999, "4102444799.999"),
        ];
        for &(ms, text) in cases {
            assert_eq!(serde_json::to_string(&Timestamp(ms)).unwrap(), text, "{ms}");
            assert_eq!(
                serde_json::from_str::<Timestamp>(text).unwrap(),
                Timestamp(ms)
            );
        }
        // Every millisecond of a day-long span in the present era survives the float.
        for ms in (1_700_000_000_000..1_700_086_400_000).step_by(997) {
            let text = serde_json::to_string(&Timestamp(ms)).unwrap();
            assert_eq!(serde_json::from_str::<Timestamp>(&text).unwrap().0, ms);
            assert!(text.split('.').nth(1).unwrap().len() <= 3, "{text}");
        }
        let inputs: &[(&str, i64)] = &[
            ("1441215410", 1_441_215_410_000),
            ("1.441215410867E9", 1_441_215_410_867),
            ("1441215410.8675", 1_441_215_410_868),
            (r#""1441215410.867""#, 1_441_215_410_867),
            (r#""2015-09-02T17:36:50.867Z""#, 1_441_215_410_867),
            (r#""2015-09-02T19:36:50.867+02:00""#, 1_441_215_410_867),
            (r#""2015-09-02T17:36:50""#, 1_441_215_410_000),
        ];
        for &(text, ms) in inputs {
            assert_eq!(
                serde_json::from_str::<Timestamp>(text).unwrap(),
                Timestamp(ms),
                "{text}"
            );
        }
        for bad in [
            "1e300",
            "-1e300",
            r#""yesterday""#,
            "true",
            "18446744073709551615",
        ] {
            assert!(serde_json::from_str::<Timestamp>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cbor_timestamp_is_tag_1_integer_millis() {
        // Tag 1 (0xc1), then a 64-bit unsigned integer (0x1b) 1441215410867 = 0x14f_8f21_f2b3.
        assert_eq!(
            cbor(&Timestamp(1_441_215_410_867)),
            [0xc1, 0x1b, 0x00, 0x00, 0x01, 0x4f, 0x8f, 0x21, 0xf2, 0xb3]
        );
        // Small values use the short integer forms.
        assert_eq!(cbor(&Timestamp(0)), [0xc1, 0x00]);
        assert_eq!(cbor(&Timestamp(-1)), [0xc1, 0x20]);
        assert_eq!(cbor(&Timestamp(1000)), [0xc1, 0x19, 0x03, 0xe8]);
    }

    /// Decodes a single CBOR-encoded timestamp item.
    fn cbor_ts(item: &[u8]) -> Result<Timestamp, ciborium::de::Error<std::io::Error>> {
        ciborium::de::from_reader(item)
    }

    #[test]
    fn cbor_timestamp_inputs() {
        let ms: i64 = 1_441_215_410_867;
        let be = |v: u64| v.to_be_bytes();
        let mut tagged_ms = vec![0xc1, 0x1b];
        tagged_ms.extend_from_slice(&be(ms as u64));
        let mut untagged_ms = vec![0x1b];
        untagged_ms.extend_from_slice(&be(ms as u64));
        let mut tagged_secs_float = vec![0xc1, 0xfb];
        tagged_secs_float.extend_from_slice(&be(1_441_215_410.867f64.to_bits()));
        let mut untagged_secs_float = vec![0xfb];
        untagged_secs_float.extend_from_slice(&be(1_441_215_410.867f64.to_bits()));
        let mut tagged_ms_float = vec![0xc1, 0xfb];
        tagged_ms_float.extend_from_slice(&be(1_441_215_410_867f64.to_bits()));
        // Tag 1 + integer 1441215410 (0x55e7_33b2): RFC 8949 seconds, but AWS milliseconds, and
        // AWS wins.
        let tagged_small_int = vec![0xc1, 0x1a, 0x55, 0xe7, 0x33, 0xb2];
        // Untagged integer seconds.
        let untagged_secs_int = vec![0x1a, 0x55, 0xe7, 0x33, 0xb2];
        let mut tag0 = vec![0xc0, 0x78, 24];
        tag0.extend_from_slice(b"2015-09-02T17:36:50.867Z");

        let cases: Vec<(&str, Vec<u8>, i64)> = vec![
            ("tag 1 + int millis (AWS Java SDK)", tagged_ms, ms),
            ("untagged int millis", untagged_ms, ms),
            ("tag 1 + float seconds (RFC 8949)", tagged_secs_float, ms),
            ("untagged float seconds", untagged_secs_float, ms),
            ("tag 1 + float millis", tagged_ms_float, ms),
            (
                "tag 1 + small int is still millis",
                tagged_small_int,
                1_441_215_410,
            ),
            ("untagged int seconds", untagged_secs_int, 1_441_215_410_000),
            (
                "tag 1 + 1000 is one second",
                vec![0xc1, 0x19, 0x03, 0xe8],
                1000,
            ),
            ("tag 0 + RFC 3339", tag0, ms),
            ("tag 1 + 0", vec![0xc1, 0x00], 0),
        ];
        for (what, item, expected) in cases {
            assert_eq!(cbor_ts(&item).unwrap(), Timestamp(expected), "{what}");
        }
        // Tag 32 (URI) is not a timestamp, and tag 1 must hold a number.
        let message = cbor_ts(&[0xd8, 0x20, 0x61, b'x']).unwrap_err();
        assert!(format!("{message:?}").contains("unsupported CBOR tag 32"));
        let message = cbor_ts(&[0xc1, 0x61, b'x']).unwrap_err();
        assert!(format!("{message:?}").contains("must wrap a number"));
        // 2^64 - 1 milliseconds does not fit.
        let mut huge = vec![0xc1, 0x1b];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(cbor_ts(&huge).is_err());
    }

    #[test]
    fn blob_json_forms() {
        let b: Blob = serde_json::from_str(r#""aGVsbG8=""#).unwrap();
        assert_eq!(&b.0[..], b"hello");
        let b: Blob = serde_json::from_str(r#""aGVsbG8""#).unwrap();
        assert_eq!(&b.0[..], b"hello", "padding is optional");
        let b: Blob = serde_json::from_str(r#""""#).unwrap();
        assert!(b.0.is_empty());
        assert_eq!(
            serde_json::to_string(&Blob(Bytes::from_static(b"hello"))).unwrap(),
            r#""aGVsbG8=""#
        );
        assert_eq!(
            serde_json::to_string(&Blob(Bytes::from_static(&[0xfb, 0xff]))).unwrap(),
            r#""+/8=""#,
            "standard alphabet, not URL-safe"
        );
        assert!(serde_json::from_str::<Blob>(r#""a*b""#).is_err());
        assert!(serde_json::from_str::<Blob>(r#""-_8=""#).is_err());
        assert!(serde_json::from_str::<Blob>("[1,2]").is_err());
    }

    #[test]
    fn blob_cbor_forms() {
        assert_eq!(cbor(&Blob(Bytes::from_static(b"hi"))), [0x42, b'h', b'i']);
        let b: Blob = ciborium::de::from_reader(&[0x42, b'h', b'i'][..]).unwrap();
        assert_eq!(&b.0[..], b"hi");
        // A text string holding base64.
        let b: Blob = ciborium::de::from_reader(&[0x64, b'a', b'G', b'k', b'='][..]).unwrap();
        assert_eq!(&b.0[..], b"hi");
        // An indefinite-length byte string in two chunks.
        let b: Blob = ciborium::de::from_reader(&[0x5f, 0x41, b'h', 0x41, b'i', 0xff][..]).unwrap();
        assert_eq!(&b.0[..], b"hi");
        // Larger than ciborium's scratch buffer.
        let big = Blob(Bytes::from(vec![7u8; 100_000]));
        let back: Blob = ciborium::de::from_reader(&cbor(&big)[..]).unwrap();
        assert_eq!(back, big);
        assert!(ciborium::de::from_reader::<Blob, _>(&[0x01][..]).is_err());
    }

    #[test]
    fn cbor_body_shape() {
        let value = Outer {
            data: Blob(Bytes::from_static(b"hi")),
            arrival: Timestamp(1_441_215_410_867),
            partition_key: None,
            shards: vec![],
            nested: None,
            starting: None,
        };
        let bytes = encode(Encoding::Cbor, &value);
        let ciborium::Value::Map(entries) = cbor_value(&bytes) else {
            panic!("not a map");
        };
        let keys: Vec<_> = entries
            .iter()
            .map(|(k, _)| k.as_text().unwrap().to_owned())
            .collect();
        assert_eq!(keys, ["Data", "Arrival", "Shards"]);
        assert_eq!(entries[0].1, ciborium::Value::Bytes(b"hi".to_vec()));
        assert_eq!(
            entries[1].1,
            ciborium::Value::Tag(
                1,
                Box::new(ciborium::Value::Integer(1_441_215_410_867i64.into()))
            )
        );
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Optional {
        stream_name: Option<String>,
        limit: Option<u32>,
    }

    #[test]
    fn empty_body_is_an_empty_object() {
        for encoding in [Encoding::Json, Encoding::Cbor] {
            let v: Optional = decode(encoding, b"").unwrap();
            assert!(v.stream_name.is_none() && v.limit.is_none());
        }
        let v: Optional = decode(Encoding::Json, b" \r\n").unwrap();
        assert!(v.stream_name.is_none());
        // An empty body is still missing a required field.
        let message = decode_err::<Inner>(Encoding::Json, b"");
        assert!(message.contains("missing field `ShardId`"), "{message}");
        let message = decode_err::<Inner>(Encoding::Cbor, b"");
        assert!(message.contains("missing field `ShardId`"), "{message}");
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let v: Optional = decode(
            Encoding::Json,
            br#"{"StreamName":"s","NewField":{"x":[1,2]},"Limit":5}"#,
        )
        .unwrap();
        assert_eq!((v.stream_name.as_deref(), v.limit), (Some("s"), Some(5)));
        let body = cbor(&serde_json::json!({"NewField": [1, {"a": null}], "StreamName": "s"}));
        let v: Optional = decode(Encoding::Cbor, &body).unwrap();
        assert_eq!(v.stream_name.as_deref(), Some("s"));
    }

    #[test]
    fn json_errors_name_the_field_and_position() {
        let message = decode_err::<Outer>(
            Encoding::Json,
            br#"{"Data":"aGk=","Arrival":1,"Shards":[{"ShardId":"a"},{"ShardId":5}]}"#,
        );
        assert!(message.contains("at `Shards[1].ShardId`"), "{message}");
        assert!(message.contains("invalid type: integer `5`"), "{message}");
        assert!(message.contains("line 1 column"), "{message}");

        let message = decode_err::<Outer>(Encoding::Json, br#"{"Data":"a*==","Arrival":1}"#);
        assert!(message.contains("at `Data`"), "{message}");
        assert!(message.contains("invalid base64"), "{message}");

        let message = decode_err::<Outer>(Encoding::Json, b"{\"Data\":\n\"aGk=\",");
        assert!(message.contains("line 2 column"), "{message}");

        let message = decode_err::<Optional>(Encoding::Json, b"{} {}");
        assert!(message.contains("trailing characters"), "{message}");

        for not_object in [&b"[]"[..], b"null", b"\"x\"", b"5", b"\xff"] {
            let message = decode_err::<Optional>(Encoding::Json, not_object);
            assert!(message.contains("must be a JSON object"), "{message}");
        }

        let message = decode_err::<Optional>(Encoding::Json, br#"{"Limit":-1}"#);
        assert!(message.contains("at `Limit`"), "{message}");
    }

    #[test]
    fn cbor_errors_name_the_field_and_offset() {
        let body = cbor(&serde_json::json!({
            "Data": [1, 2],
            "Arrival": 1,
        }));
        let message = decode_err::<Outer>(Encoding::Cbor, &body);
        assert!(
            message.starts_with("Invalid CBOR request body at `Data`:"),
            "{message}"
        );

        let body = cbor(&serde_json::json!({
            "Data": "aGk=",
            "Arrival": 1,
            "Shards": [{"ShardId": "a"}, {"ShardId": true}],
        }));
        let message = decode_err::<Outer>(Encoding::Cbor, &body);
        assert!(message.contains("at `Shards[1].ShardId`"), "{message}");

        // Truncated: a map of one entry with nothing after the key.
        let message = decode_err::<Optional>(Encoding::Cbor, &[0xa1, 0x61, b'x']);
        assert!(message.contains("unexpected end of input"), "{message}");

        // 0x1c is a reserved additional-information value: a syntax error at byte 2.
        let message = decode_err::<Optional>(Encoding::Cbor, &[0xa1, 0x61, b'x', 0x1c]);
        assert!(message.contains("malformed CBOR at byte"), "{message}");

        let message = decode_err::<Optional>(Encoding::Cbor, &[0xa0, 0x00]);
        assert!(message.contains("1 unexpected bytes"), "{message}");

        for not_map in [&[0x80][..], &[0xf6], &[0x01], &[0x40]] {
            let message = decode_err::<Optional>(Encoding::Cbor, not_map);
            assert!(message.contains("must be a CBOR map"), "{message}");
        }

        // Deep nesting hits the recursion limit instead of the stack.
        let mut deep = vec![0xa1, 0x61, b'x'];
        deep.extend(std::iter::repeat_n(0x81, 10_000));
        deep.push(0x00);
        let message = decode_err::<Optional>(Encoding::Cbor, &deep);
        assert!(message.contains("too deep"), "{message}");

        // A declared length far beyond the body is refused without allocating it.
        let mut huge = vec![0xa1, 0x64, b'D', b'a', b't', b'a', 0x5b];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        let message = decode_err::<Outer>(Encoding::Cbor, &huge);
        assert!(message.contains("Invalid CBOR request body"), "{message}");
    }

    #[test]
    fn cbor_error_path_does_not_leak_between_calls() {
        let bad = cbor(&serde_json::json!({"Limit": "x"}));
        let message = decode_err::<Optional>(Encoding::Cbor, &bad);
        assert!(message.contains("at `Limit`"), "{message}");
        let message = decode_err::<Optional>(Encoding::Cbor, &[0xa0, 0x00]);
        assert!(!message.contains("Limit"), "{message}");
    }

    #[tokio::test]
    async fn responses_carry_the_encoding() {
        for encoding in [Encoding::Json, Encoding::Cbor] {
            let resp = response(encoding, &sample());
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(resp.headers()["content-type"], encoding.content_type());
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(decode::<Outer>(encoding, &body).unwrap(), sample());
        }
    }

    #[tokio::test]
    async fn unencodable_response_is_an_internal_failure() {
        struct Broken;
        impl Serialize for Broken {
            fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("broken"))
            }
        }
        for encoding in [Encoding::Json, Encoding::Cbor] {
            let resp = response(encoding, &Broken);
            assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(resp.headers()["content-type"], encoding.content_type());
            assert_eq!(
                resp.headers()["x-amzn-errortype"],
                "InternalFailureException"
            );
            assert_eq!(
                &encode(encoding, &Broken)[..],
                match encoding {
                    Encoding::Json => &b"{}"[..],
                    Encoding::Cbor => &[0xa0][..],
                }
            );
        }
    }
}

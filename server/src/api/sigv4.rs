//! AWS Signature Version 4 verification, server side.
//!
//! Shape: verification is split in two steps so the router can reject a bad or missing
//! signature *before* reading a (possibly 16 MiB) JSON body, yet still cover the body with the
//! signature afterwards:
//! 1. [`Verifier::begin`] parses the `Authorization` header (or the presigned `X-Amz-*` query
//!    parameters), checks the credential scope, the access key and the clock skew;
//! 2. [`PendingSignature::finish`] rebuilds the canonical request with the payload hash and
//!    compares signatures in constant time.
//!
//! The canonical request is rebuilt from the *raw* request as received: header values exactly
//! as they arrived (trimmed, whitespace runs collapsed, repeated headers joined with `,`), for
//! exactly the headers the client listed in `SignedHeaders`. That includes hop-by-hop headers
//! such as `connection` and `transfer-encoding`, which the C producer signs, so nothing in
//! front of this module may strip them.
//!
//! Payload hash rules (see `shared/reference/aws-protocol.md` A.2 and F):
//! - `x-amz-content-sha256` present: its value is the hash, `UNSIGNED-PAYLOAD` included (the
//!   Java producer adds that header after signing, unsigned). When the body is buffered and the
//!   header holds a real hash, the body must match it.
//! - absent, on a streamed body (PutMedia): the SHA-256 of the empty string, which is what the
//!   C producer signs for its chunked upload.
//! - absent otherwise: the hex SHA-256 of the buffered body.
//!
//! Presigned query-string requests (`X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=...`)
//! are accepted too: they differ only in where the parameters come from and in expiry rules.
//! The `Date` header fallback (instead of `X-Amz-Date`) is not supported: no KVS or Kinesis
//! client checked uses it. Session tokens (`x-amz-security-token`) are not validated: the server
//! has static credentials only; a token is covered by the signature only if the client signed it.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use hmac::{Hmac, Mac};
use http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::error::{ApiError, ErrorKind};
use crate::config::Credential;

/// SHA-256 of the empty string, the payload hash of a streamed PutMedia body.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// The payload hash a client uses when it does not sign the body.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const TERMINATOR: &str = "aws4_request";
/// The longest presigned validity AWS allows (7 days).
const MAX_PRESIGNED_EXPIRES_S: i64 = 604_800;

const MISMATCH: &str = "The request signature we calculated does not match the signature you provided. \
     Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";

/// The signing name a request must be scoped to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningService {
    /// Kinesis Data Streams (`X-Amz-Target: Kinesis_20131202.*`).
    Kinesis,
    /// Every Kinesis Video Streams API: control plane, PutMedia, media and archived media.
    KinesisVideo,
}

impl SigningService {
    pub fn as_str(self) -> &'static str {
        match self {
            SigningService::Kinesis => "kinesis",
            SigningService::KinesisVideo => "kinesisvideo",
        }
    }
}

/// What the signature covers of the body.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// The whole body, read before verification.
    Buffered(&'a [u8]),
    /// A body still streaming in (PutMedia); it is never buffered for verification.
    Streaming,
}

/// Who signed a verified request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub access_key_id: String,
}

/// Verifies SigV4 signatures against the configured key pairs.
pub struct Verifier {
    secrets: HashMap<String, String>,
    region: String,
    max_skew_ms: i64,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("access_key_ids", &self.secrets.keys().collect::<Vec<_>>())
            .field("region", &self.region)
            .field("max_skew_ms", &self.max_skew_ms)
            .finish()
    }
}

/// A request whose signature parameters passed every check that does not need the body.
#[derive(Debug)]
pub struct PendingSignature<'v> {
    secret: &'v str,
    access_key_id: String,
    /// `X-Amz-Date` as sent, `yyyymmddThhmmssZ`.
    amz_date: String,
    /// The credential scope's date, region and service, as sent (and checked).
    scope: String,
    signed_headers: String,
    signature: String,
    presigned: bool,
}

/// The signature parameters, from the header or the query string, before any check.
struct RawAuth {
    credential: String,
    signed_headers: String,
    signature: String,
    amz_date: String,
    /// `X-Amz-Expires` of a presigned request.
    expires: Option<String>,
}

fn err(kind: ErrorKind, message: impl Into<String>) -> ApiError {
    ApiError::new(kind, message)
}

impl Verifier {
    pub fn new(credentials: &[Credential], region: &str, max_clock_skew: Duration) -> Self {
        Verifier {
            secrets: credentials
                .iter()
                .map(|c| (c.access_key_id.clone(), c.secret_access_key.clone()))
                .collect(),
            region: region.to_owned(),
            max_skew_ms: i64::try_from(max_clock_skew.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// Both steps at once, for callers that already have the payload.
    pub fn verify(
        &self,
        parts: &Parts,
        service: SigningService,
        payload: Payload<'_>,
        now_ms: i64,
    ) -> Result<Principal, ApiError> {
        self.begin(parts, service, now_ms)?.finish(parts, payload)
    }

    /// Step 1: parse and check the signature parameters, the scope, the key and the clock.
    pub fn begin(
        &self,
        parts: &Parts,
        service: SigningService,
        now_ms: i64,
    ) -> Result<PendingSignature<'_>, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let presigned = query_params(query).any(|(k, _)| k == b"X-Amz-Algorithm");
        let header = parts.headers.get(http::header::AUTHORIZATION);
        let raw = match (header, presigned) {
            (Some(_), true) => {
                return Err(err(
                    ErrorKind::InvalidSignature,
                    "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as HTTP header.",
                ));
            }
            (Some(value), false) => {
                let value = value.to_str().map_err(|_| {
                    err(
                        ErrorKind::IncompleteSignature,
                        "The Authorization header is not valid ASCII.",
                    )
                })?;
                parse_authorization(value, parts)?
            }
            (None, true) => parse_presigned(query)?,
            (None, false) => {
                return Err(err(
                    ErrorKind::MissingAuthenticationToken,
                    "Missing Authentication Token",
                ));
            }
        };

        let fields: Vec<&str> = raw.credential.split('/').collect();
        let [access_key_id, date, region, scope_service, terminator] = fields[..] else {
            return Err(err(
                ErrorKind::IncompleteSignature,
                format!(
                    "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '{}'",
                    raw.credential
                ),
            ));
        };
        if terminator != TERMINATOR {
            return Err(err(
                ErrorKind::IncompleteSignature,
                format!(
                    "Credential should be scoped with a valid terminator: 'aws4_request', not '{terminator}'."
                ),
            ));
        }
        let signed: Vec<&str> = raw.signed_headers.split(';').collect();
        if !signed.contains(&"host") {
            return Err(err(
                ErrorKind::IncompleteSignature,
                "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
            ));
        }
        if signed
            .iter()
            .any(|h| h.is_empty() || h.bytes().any(|b| b.is_ascii_uppercase()))
        {
            return Err(err(
                ErrorKind::IncompleteSignature,
                format!(
                    "SignedHeaders must be lowercase header names separated by ';', got '{}'.",
                    raw.signed_headers
                ),
            ));
        }
        let signed_at_ms = parse_amz_date(&raw.amz_date).ok_or_else(|| {
            err(
                ErrorKind::IncompleteSignature,
                format!(
                    "X-Amz-Date must be in the ISO8601 basic format yyyyMMdd'T'HHmmss'Z', got '{}'.",
                    raw.amz_date
                ),
            )
        })?;
        if date != &raw.amz_date[..8] {
            return Err(err(
                ErrorKind::InvalidSignature,
                format!(
                    "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{date}' != '{}', from '{}'.",
                    &raw.amz_date[..8],
                    raw.amz_date
                ),
            ));
        }
        if region != self.region {
            return Err(err(
                ErrorKind::InvalidSignature,
                format!("Credential should be scoped to a valid region, not '{region}'."),
            ));
        }
        if scope_service != service.as_str() {
            return Err(err(
                ErrorKind::InvalidSignature,
                format!(
                    "Credential should be scoped to correct service: '{}'.",
                    service.as_str()
                ),
            ));
        }
        let secret = self.secrets.get(access_key_id).ok_or_else(|| {
            err(
                ErrorKind::UnrecognizedClient,
                "The security token included in the request is invalid.",
            )
        })?;

        let skew = self.max_skew_ms;
        let skew_text = format_skew(skew);
        if signed_at_ms > now_ms.saturating_add(skew) {
            return Err(err(
                ErrorKind::SignatureExpired,
                format!(
                    "Signature not yet current: {} is still later than {} ({} + {skew_text}.)",
                    raw.amz_date,
                    format_amz_date(now_ms.saturating_add(skew)),
                    format_amz_date(now_ms)
                ),
            ));
        }
        match &raw.expires {
            None => {
                if signed_at_ms < now_ms.saturating_sub(skew) {
                    return Err(err(
                        ErrorKind::SignatureExpired,
                        format!(
                            "Signature expired: {} is now earlier than {} ({} - {skew_text}.)",
                            raw.amz_date,
                            format_amz_date(now_ms.saturating_sub(skew)),
                            format_amz_date(now_ms)
                        ),
                    ));
                }
            }
            Some(expires) => {
                let expires_s: i64 = expires
                    .parse()
                    .ok()
                    .filter(|s| (1..=MAX_PRESIGNED_EXPIRES_S).contains(s))
                    .ok_or_else(|| {
                        err(
                            ErrorKind::IncompleteSignature,
                            format!("X-Amz-Expires must be between 1 and {MAX_PRESIGNED_EXPIRES_S} seconds, got '{expires}'."),
                        )
                    })?;
                if now_ms > signed_at_ms.saturating_add(expires_s * 1000) {
                    return Err(err(ErrorKind::SignatureExpired, "Request has expired."));
                }
            }
        }

        Ok(PendingSignature {
            secret,
            access_key_id: access_key_id.to_owned(),
            scope: format!("{date}/{region}/{scope_service}/{TERMINATOR}"),
            amz_date: raw.amz_date,
            signed_headers: raw.signed_headers,
            signature: raw.signature,
            presigned: raw.expires.is_some(),
        })
    }
}

impl PendingSignature<'_> {
    /// Step 2: rebuild the canonical request with the payload hash and compare signatures.
    pub fn finish(self, parts: &Parts, payload: Payload<'_>) -> Result<Principal, ApiError> {
        let payload_hash = payload_hash(parts, payload)?;
        let canonical =
            canonical_request(parts, &self.signed_headers, &payload_hash, self.presigned)?;
        let string_to_sign = format!(
            "{ALGORITHM}\n{}\n{}\n{}",
            self.amz_date,
            self.scope,
            hex::encode(Sha256::digest(&canonical))
        );
        let key = signing_key(self.secret, &self.scope);
        let expected = hmac_sha256(&key, string_to_sign.as_bytes());
        let provided = hex::decode(&self.signature).unwrap_or_default();
        if provided.len() == expected.len() && bool::from(expected.ct_eq(&provided[..])) {
            Ok(Principal {
                access_key_id: self.access_key_id,
            })
        } else {
            tracing::debug!(
                access_key_id = %self.access_key_id,
                canonical_request = %String::from_utf8_lossy(&canonical),
                string_to_sign = %string_to_sign,
                "SigV4 signature mismatch"
            );
            Err(err(ErrorKind::InvalidSignature, MISMATCH))
        }
    }
}

/// Splits `AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`.
fn parse_authorization(value: &str, parts: &Parts) -> Result<RawAuth, ApiError> {
    let value = value.trim();
    let (algorithm, rest) = value.split_once(' ').unwrap_or((value, ""));
    if algorithm != ALGORITHM {
        return Err(err(
            ErrorKind::IncompleteSignature,
            format!("Unsupported AWS 'algorithm': '{algorithm}'."),
        ));
    }
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for item in rest.split(',') {
        let Some((k, v)) = item.trim().split_once('=') else {
            continue;
        };
        let slot = match k.trim() {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => continue,
        };
        *slot = Some(v.trim().to_owned());
    }
    let amz_date = parts
        .headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut missing = Vec::new();
    if credential.is_none() {
        missing.push("Authorization header requires 'Credential' parameter.");
    }
    if signature.is_none() {
        missing.push("Authorization header requires 'Signature' parameter.");
    }
    if signed_headers.is_none() {
        missing.push("Authorization header requires 'SignedHeaders' parameter.");
    }
    if amz_date.is_none() {
        missing.push("Authorization header requires existence of a 'X-Amz-Date' header.");
    }
    match (credential, signed_headers, signature, amz_date) {
        (Some(credential), Some(signed_headers), Some(signature), Some(amz_date)) => Ok(RawAuth {
            credential,
            signed_headers,
            signature,
            amz_date,
            expires: None,
        }),
        _ => Err(err(
            ErrorKind::IncompleteSignature,
            format!("{} Authorization={value}", missing.join(" ")),
        )),
    }
}

/// Reads the `X-Amz-*` parameters of a presigned request.
fn parse_presigned(query: &str) -> Result<RawAuth, ApiError> {
    let mut params: HashMap<String, String> = HashMap::new();
    for (k, v) in query_params(query) {
        params.insert(
            String::from_utf8_lossy(&k).into_owned(),
            String::from_utf8_lossy(&v).into_owned(),
        );
    }
    let algorithm = params
        .get("X-Amz-Algorithm")
        .map(String::as_str)
        .unwrap_or_default();
    if algorithm != ALGORITHM {
        return Err(err(
            ErrorKind::IncompleteSignature,
            format!("Unsupported AWS 'algorithm': '{algorithm}'."),
        ));
    }
    let mut take = |name: &'static str, missing: &mut Vec<&'static str>| {
        let v = params.remove(name);
        if v.is_none() {
            missing.push(name);
        }
        v.unwrap_or_default()
    };
    let mut missing = Vec::new();
    let raw = RawAuth {
        credential: take("X-Amz-Credential", &mut missing),
        signed_headers: take("X-Amz-SignedHeaders", &mut missing),
        signature: take("X-Amz-Signature", &mut missing),
        amz_date: take("X-Amz-Date", &mut missing),
        expires: Some(take("X-Amz-Expires", &mut missing)),
    };
    if missing.is_empty() {
        Ok(raw)
    } else {
        Err(err(
            ErrorKind::IncompleteSignature,
            format!(
                "AWS query-string parameters are missing: {}.",
                missing.join(", ")
            ),
        ))
    }
}

fn payload_hash(parts: &Parts, payload: Payload<'_>) -> Result<String, ApiError> {
    let declared = match parts.headers.get("x-amz-content-sha256") {
        Some(v) => Some(v.to_str().map_err(|_| {
            err(
                ErrorKind::IncompleteSignature,
                "x-amz-content-sha256 is not valid ASCII.",
            )
        })?),
        None => None,
    };
    match (declared, payload) {
        (Some(v), _) if v.starts_with("STREAMING-") => Err(err(
            ErrorKind::IncompleteSignature,
            format!(
                "x-amz-content-sha256 '{v}' (aws-chunked payload signing) is not supported; sign with UNSIGNED-PAYLOAD or the body hash."
            ),
        )),
        (Some(v), Payload::Buffered(body)) if v != UNSIGNED_PAYLOAD => {
            let actual = hex::encode(Sha256::digest(body));
            if actual.eq_ignore_ascii_case(v) {
                Ok(v.to_owned())
            } else {
                Err(err(
                    ErrorKind::InvalidSignature,
                    "The provided 'x-amz-content-sha256' header does not match what was computed.",
                ))
            }
        }
        (Some(v), _) => Ok(v.to_owned()),
        (None, Payload::Streaming) => Ok(EMPTY_SHA256.to_owned()),
        (None, Payload::Buffered(body)) => Ok(hex::encode(Sha256::digest(body))),
    }
}

/// `METHOD\nURI\nQUERY\nHEADERS\n\nSIGNED_HEADERS\nPAYLOAD_HASH`, as bytes because header
/// values need not be UTF-8.
fn canonical_request(
    parts: &Parts,
    signed_headers: &str,
    payload_hash: &str,
    presigned: bool,
) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_uri(parts.uri.path()).as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_query(parts.uri.query().unwrap_or(""), presigned).as_bytes());
    out.push(b'\n');
    for name in signed_headers.split(';') {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        let mut values = parts.headers.get_all(name).iter().peekable();
        if values.peek().is_none() {
            // HTTP/2 carries the host in `:authority`, which hyper puts in the URI.
            match (name, parts.uri.authority()) {
                ("host", Some(authority)) => out.extend_from_slice(authority.as_str().as_bytes()),
                _ => {
                    return Err(err(
                        ErrorKind::InvalidSignature,
                        format!(
                            "{MISMATCH} The signed header '{name}' is missing from the request."
                        ),
                    ));
                }
            }
        }
        for (i, value) in values.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_trimmed(&mut out, value.as_bytes());
        }
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(signed_headers.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(payload_hash.as_bytes());
    Ok(out)
}

/// Appends `value` without leading/trailing blanks and with each run of blanks as one space.
fn push_trimmed(out: &mut Vec<u8>, value: &[u8]) {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let mut pending_space = false;
    let mut started = false;
    for b in value {
        if blank(b) {
            pending_space = started;
        } else {
            if pending_space {
                out.push(b' ');
                pending_space = false;
            }
            out.push(*b);
            started = true;
        }
    }
}

/// The canonical URI for non-S3 services: the path as sent, with dot segments and empty
/// segments removed (as the AWS SDKs normalise it), then percent-encoded again ("double
/// encoding": an `%20` on the wire becomes `%2520`).
pub(crate) fn canonical_uri(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let trailing = ["/", "/.", "/..", "/./", "/../"]
        .iter()
        .any(|s| path.ends_with(s));
    let mut normalized = String::with_capacity(path.len() + 1);
    for s in &segments {
        normalized.push('/');
        normalized.push_str(s);
    }
    if normalized.is_empty() || (trailing && !normalized.ends_with('/')) {
        normalized.push('/');
    }
    let mut out = String::with_capacity(normalized.len());
    for b in normalized.bytes() {
        if b == b'/' {
            out.push('/');
        } else {
            push_encoded(&mut out, b);
        }
    }
    out
}

/// The canonical query string: every parameter decoded, re-encoded with only the unreserved
/// characters left as they are, sorted by encoded key then value. A presigned request's own
/// signature is left out.
pub(crate) fn canonical_query(query: &str, presigned: bool) -> String {
    let mut pairs: Vec<(String, String)> = query_params(query)
        .filter(|(k, _)| !(presigned && k == b"X-Amz-Signature"))
        .map(|(k, v)| (encode_all(&k), encode_all(&v)))
        .collect();
    pairs.sort();
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Decoded `(key, value)` pairs of a query string, `application/x-www-form-urlencoded` style
/// (`+` is a space, as the AWS SDK for Rust reads it). Invalid escapes stay literal.
fn query_params(query: &str) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k), percent_decode(v))
    })
}

fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn encode_all(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        push_encoded(&mut out, b);
    }
    out
}

/// RFC 3986 unreserved characters stay; every other byte becomes `%XX` (uppercase).
fn push_encoded(out: &mut String, b: u8) {
    if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
        out.push(char::from(b));
    } else {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        out.push('%');
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length; this cannot fail.
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request"),
/// folding over the parts of the credential scope `date/region/service/aws4_request`.
fn signing_key(secret: &str, scope: &str) -> [u8; 32] {
    let mut parts = scope.split('/');
    let date = parts.next().unwrap_or_default();
    let mut key = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    for part in parts {
        key = hmac_sha256(&key, part.as_bytes());
    }
    key
}

/// Parses `yyyymmddThhmmssZ` to epoch milliseconds.
pub(crate) fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    // ASCII first, so the byte ranges below are char boundaries (a presigned X-Amz-Date is
    // percent-decoded and may hold anything).
    if !s.is_ascii() || b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let digits = &s[range];
        if digits.bytes().all(|c| c.is_ascii_digit()) {
            digits.parse().ok()
        } else {
            None
        }
    };
    let date =
        chrono::NaiveDate::from_ymd_opt(i32::try_from(num(0..4)?).ok()?, num(4..6)?, num(6..8)?)?;
    let time = date.and_hms_opt(num(9..11)?, num(11..13)?, num(13..15)?)?;
    Some(time.and_utc().timestamp_millis())
}

pub(crate) fn format_amz_date(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y%m%dT%H%M%SZ").to_string(),
        None => ms.to_string(),
    }
}

fn format_skew(ms: i64) -> String {
    if ms % 60_000 == 0 {
        format!("{} min", ms / 60_000)
    } else {
        format!("{} s", ms / 1000)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn canonical_uri_normalizes_and_double_encodes() {
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/"), "/");
        assert_eq!(canonical_uri("/putMedia"), "/putMedia");
        assert_eq!(canonical_uri("/a/./b/../c"), "/a/c");
        assert_eq!(canonical_uri("/a//b/"), "/a/b/");
        assert_eq!(canonical_uri("/a%20b"), "/a%2520b");
        assert_eq!(canonical_uri("/a b~c"), "/a%20b~c");
        assert_eq!(canonical_uri("/.."), "/");
    }

    #[test]
    fn canonical_query_sorts_and_encodes() {
        assert_eq!(canonical_query("", false), "");
        assert_eq!(canonical_query("b=2&a=1&a=0", false), "a=0&a=1&b=2");
        assert_eq!(
            canonical_query("k=a%2fb&x=a+b&flag", false),
            "flag=&k=a%2Fb&x=a%20b"
        );
        assert_eq!(
            canonical_query("k=%E2%82%AC&t=~-_.", false),
            "k=%E2%82%AC&t=~-_."
        );
        assert_eq!(canonical_query("X-Amz-Signature=abc&a=1", true), "a=1");
        assert_eq!(canonical_query("bad=%zz%4", false), "bad=%25zz%254");
    }

    #[test]
    fn header_values_are_trimmed_and_collapsed() {
        let mut out = Vec::new();
        push_trimmed(&mut out, b"  a   b \t c  ");
        assert_eq!(out, b"a b c");
        out.clear();
        push_trimmed(&mut out, b"\t");
        assert_eq!(out, b"");
    }

    #[test]
    fn amz_dates() {
        assert_eq!(parse_amz_date("19700101T000001Z"), Some(1000));
        assert_eq!(
            parse_amz_date("20240229T235959Z")
                .map(format_amz_date)
                .unwrap(),
            "20240229T235959Z"
        );
        for bad in [
            "2024-02-29T23:59:59Z",
            "20240230T000000Z",
            "20240101T250000Z",
            "20240101T000000",
            "+0240101T000000Z",
            "20\u{20ac}0101T00000Z",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn signing_key_matches_the_aws_documentation_example() {
        // From the AWS General Reference "Examples of how to derive a signing key for SigV4".
        let key = signing_key(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20120215/us-east-1/iam/aws4_request",
        );
        assert_eq!(
            hex::encode(key),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }
}

//! What the control-plane handlers share: the call context (with the `--limits aws` call
//! rates), JSON bodies in and out, the KVS model's constraints worded as AWS words them, and the
//! `StreamInfo` shape of DescribeStream and ListStreams.
//!
//! Bodies are decoded by the data streams' JSON decoder ([`wire::decode`]: unknown fields
//! ignored, an empty body is `{}`, errors name the field); here every malformed body, wrong type
//! or missing required member is an `InvalidArgumentException` (400), the one validation error
//! the KVS models declare.

use std::collections::BTreeMap;

use http::{HeaderValue, Response, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use timeshard_storage::{StoreError, StreamMeta, StreamStatus};

use crate::api::data_streams::common::validation;
use crate::api::data_streams::wire::{self, Encoding, Timestamp};
use crate::api::{ApiError, ErrorKind, Protocol};
use crate::http::{Body, full_body};
use crate::state::AppState;
use crate::video::VideoStream;
use crate::video::stream::{
    MAX_RETENTION_HOURS, MAX_STREAM_NAME_LEN, is_valid_stream_name, status_name,
};

/// Most tags on one stream (and in one request).
pub(crate) const MAX_TAGS: usize = 50;

/// One control-plane call: the server's state, the action (its request path), the time it
/// started.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call<'a> {
    pub state: &'a AppState,
    pub action: &'static str,
    pub now_ms: i64,
}

impl Call<'_> {
    /// The account-wide call rate of this action (`--limits aws` only).
    pub fn throttle_account(&self) -> Result<(), ApiError> {
        match self.state.video_quotas() {
            Some(q) if !q.try_account(self.action, self.now_ms) => Err(ApiError::new(
                ErrorKind::ClientLimitExceeded,
                format!(
                    "Rate exceeded: /{} is limited to its per-account calls per second.",
                    self.action
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The per-stream call rate of this action on `stream` (`--limits aws` only).
    pub fn throttle_stream(&self, stream: &VideoStream) -> Result<(), ApiError> {
        match self.state.video_quotas() {
            Some(q) if !q.try_stream(self.action, stream.id(), self.now_ms) => Err(ApiError::new(
                ErrorKind::ClientLimitExceeded,
                format!(
                    "Rate exceeded: /{} on stream {} is limited to 5 calls per second.",
                    self.action, stream.name
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The stream a request names by `StreamName` or `StreamARN` ([`VideoStream::find`]), with
    /// the per-stream call rate applied.
    pub fn stream(&self, name: Option<&str>, arn: Option<&str>) -> Result<VideoStream, ApiError> {
        let stream = VideoStream::find(self.state, name, arn)?;
        self.throttle_stream(&stream)?;
        Ok(stream)
    }
}

/// The empty output of operations that return nothing.
#[derive(Debug, Serialize)]
pub(crate) struct Empty {}

/// Decodes a JSON request body; anything malformed is an `InvalidArgumentException` naming the
/// field and position.
pub(crate) fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    wire::decode(Encoding::Json, body).map_err(|e| match e.kind {
        ErrorKind::Serialization => ApiError::invalid_argument(e.message),
        _ => e,
    })
}

/// A 200 response with `value` as its JSON body.
pub(crate) fn ok<T: Serialize + ?Sized>(value: &T) -> Response<Body> {
    match wire::try_encode(Encoding::Json, value) {
        Ok(bytes) => {
            let mut response = Response::new(full_body(bytes));
            *response.status_mut() = StatusCode::OK;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(Protocol::RestJson.content_type()),
            );
            response
        }
        Err(err) => {
            tracing::error!("{}", err.message);
            Protocol::RestJson.error_response_without_id(&err)
        }
    }
}

/// A required member that is absent.
pub(crate) fn missing(field: &str) -> ApiError {
    validation(field, "null", "Member must not be null")
}

fn length_between(field: &str, value: &str, min: usize, max: usize) -> Result<(), ApiError> {
    let len = value.chars().count();
    if len < min || len > max {
        return Err(validation(
            field,
            value,
            &format!("Member must have length between {min} and {max}"),
        ));
    }
    Ok(())
}

/// `StreamName` and `ComparisonValue`: 1 to 256 of `[a-zA-Z0-9_.-]`.
pub(crate) fn check_stream_name(field: &str, name: &str) -> Result<(), ApiError> {
    if is_valid_stream_name(name) {
        return Ok(());
    }
    Err(validation(
        field,
        name,
        &format!(
            "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+ and have length between 1 and {MAX_STREAM_NAME_LEN}"
        ),
    ))
}

/// `DeviceName`: 1 to 128 of `[a-zA-Z0-9_.-]`.
pub(crate) fn check_device_name(name: &str) -> Result<(), ApiError> {
    length_between("deviceName", name, 1, 128)?;
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(validation(
            "deviceName",
            name,
            "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+",
        ));
    }
    Ok(())
}

/// `MediaType`: 1 to 128 characters, comma-separated `type/subtype` pairs of `[\w.+-]`
/// (`video/h264,audio/aac`).
pub(crate) fn check_media_type(media_type: &str) -> Result<(), ApiError> {
    length_between("mediaType", media_type, 1, 128)?;
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'+'))
    };
    let valid = media_type.split(',').all(|pair| {
        pair.split_once('/')
            .is_some_and(|(kind, sub)| token(kind) && token(sub))
    });
    if !valid {
        return Err(validation(
            "mediaType",
            media_type,
            r"Member must satisfy regular expression pattern: [\w\-\.\+]+/[\w\-\.\+]+(,[\w\-\.\+]+/[\w\-\.\+]+)*",
        ));
    }
    Ok(())
}

/// `KmsKeyId`: 1 to 2048 characters.
pub(crate) fn check_kms_key_id(key: &str) -> Result<(), ApiError> {
    length_between("kmsKeyId", key, 1, 2048)
}

/// `CurrentVersion`: 1 to 64 of `[a-zA-Z0-9]`. Checked before the stream is looked up, like
/// every constraint of the model.
pub(crate) fn check_version(version: &str) -> Result<(), ApiError> {
    length_between("currentVersion", version, 1, 64)?;
    if !version.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(validation(
            "currentVersion",
            version,
            "Member must satisfy regular expression pattern: [a-zA-Z0-9]+",
        ));
    }
    Ok(())
}

/// The catalog version a (checked) `CurrentVersion` names. A well-formed version that is not a
/// number this server issued matches no stream: `VersionMismatchException`.
pub(crate) fn parse_version(stream: &VideoStream, version: &str) -> Result<u64, ApiError> {
    version
        .parse()
        .map_err(|_| version_mismatch(stream, version))
}

pub(crate) fn version_mismatch(stream: &VideoStream, given: &str) -> ApiError {
    ApiError::new(
        ErrorKind::VersionMismatch,
        format!(
            "The stream {} is at version {}, not the CurrentVersion {given}.",
            stream.name, stream.version
        ),
    )
}

/// `NextToken`: up to 1024 of `[a-zA-Z0-9+/=]`.
pub(crate) fn check_next_token(token: &str) -> Result<(), ApiError> {
    if token.len() > 1024
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    {
        return Err(validation(
            "nextToken",
            token,
            "Member must satisfy regular expression pattern: [a-zA-Z0-9+/=]* and have length less than or equal to 1024",
        ));
    }
    Ok(())
}

/// `DataRetentionInHours` as the catalog keeps it, within 0 to 87,600 hours (10 years).
pub(crate) fn retention_ms(field: &str, hours: i64) -> Result<u64, ApiError> {
    if hours < 0 {
        return Err(validation(
            field,
            hours,
            "Member must have value greater than or equal to 0",
        ));
    }
    let hours = hours.unsigned_abs();
    if hours > MAX_RETENTION_HOURS {
        return Err(ApiError::invalid_argument(format!(
            "The data retention of {hours} hours exceeds the maximum of {MAX_RETENTION_HOURS} hours (10 years)."
        )));
    }
    Ok(hours * crate::video::stream::HOUR_MS)
}

/// The characters of the tag patterns: `[\p{L}\p{Z}\p{N}_.:/=+\-@]`.
fn is_tag_char(c: char) -> bool {
    c.is_alphabetic()
        || c.is_numeric()
        || matches!(c, '_' | '.' | ':' | '/' | '=' | '+' | '-' | '@')
        // \p{Z}: space separators and the line and paragraph separators.
        || matches!(
            c,
            ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'..='\u{200a}' | '\u{2028}' | '\u{2029}'
                | '\u{202f}' | '\u{205f}' | '\u{3000}'
        )
}

/// A tag key: 1 to 128 tag characters.
pub(crate) fn check_tag_key(field: &str, key: &str) -> Result<(), ApiError> {
    length_between(field, key, 1, 128)?;
    if !key.chars().all(is_tag_char) {
        return Err(validation(
            field,
            key,
            r"Member must satisfy regular expression pattern: ^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$",
        ));
    }
    Ok(())
}

/// Tags to add: at most [`MAX_TAGS`] (`TagsPerResourceExceededLimitException`), keys of 1 to
/// 128 and values of 0 to 256 tag characters. `allow_empty` is false where the model requires
/// at least one tag.
pub(crate) fn check_tags(
    field: &str,
    tags: &BTreeMap<String, String>,
    allow_empty: bool,
) -> Result<(), ApiError> {
    if tags.is_empty() && !allow_empty {
        return Err(validation(
            field,
            "{}",
            "Member must have length greater than or equal to 1",
        ));
    }
    if tags.len() > MAX_TAGS {
        return Err(too_many_tags(tags.len()));
    }
    for (key, value) in tags {
        check_tag_key(field, key)?;
        length_between(field, value, 0, 256)?;
        if !value.chars().all(is_tag_char) {
            return Err(validation(
                field,
                value,
                r"Member must satisfy regular expression pattern: [\p{L}\p{Z}\p{N}_.:/=+\-@]*",
            ));
        }
    }
    Ok(())
}

pub(crate) fn too_many_tags(count: usize) -> ApiError {
    ApiError::new(
        ErrorKind::TagsLimitExceeded,
        format!(
            "A stream can have at most {MAX_TAGS} tags; this request would leave it with {count}."
        ),
    )
}

/// `TagKeyList`: 1 to 50 valid tag keys.
pub(crate) fn check_tag_key_list(keys: &[String]) -> Result<(), ApiError> {
    if keys.is_empty() || keys.len() > MAX_TAGS {
        return Err(validation(
            "tagKeyList",
            format!("<{} keys>", keys.len()),
            "Member must have length between 1 and 50",
        ));
    }
    keys.iter().try_for_each(|k| check_tag_key("tagKeyList", k))
}

/// Fails an update applied to a stream that was deleted and re-created since it was looked up
/// (the closure runs on the writer thread, against the current catalog entry).
pub(crate) fn same_stream(meta: &StreamMeta, id: u64) -> Result<(), StoreError> {
    if meta.id == id {
        Ok(())
    } else {
        Err(StoreError::StreamNotFound(meta.name.clone()))
    }
}

/// Changes of settings (UpdateStream, UpdateDataRetention) need an ACTIVE stream.
pub(crate) fn require_active(stream: &VideoStream) -> Result<(), ApiError> {
    if stream.status == StreamStatus::Active {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorKind::ResourceInUse,
        format!(
            "The stream {} is {}, not ACTIVE.",
            stream.name,
            status_name(stream.status)
        ),
    ))
}

/// The `StreamInfo` shape of DescribeStream and ListStreams.
#[derive(Debug, Serialize)]
pub(crate) struct StreamInfo {
    #[serde(rename = "DeviceName", skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    #[serde(rename = "StreamName")]
    pub stream_name: String,
    #[serde(rename = "StreamARN")]
    pub stream_arn: String,
    #[serde(rename = "MediaType", skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(rename = "KmsKeyId")]
    pub kms_key_id: String,
    #[serde(rename = "Version")]
    pub version: String,
    #[serde(rename = "Status")]
    pub status: &'static str,
    #[serde(rename = "CreationTime")]
    pub creation_time: Timestamp,
    #[serde(rename = "DataRetentionInHours")]
    pub data_retention_in_hours: u64,
}

impl StreamInfo {
    pub fn of(stream: VideoStream) -> Self {
        StreamInfo {
            status: status_name(stream.status),
            creation_time: Timestamp::from_millis(stream.created_ms),
            data_retention_in_hours: stream.data_retention_hours,
            device_name: stream.device_name,
            stream_name: stream.name,
            stream_arn: stream.arn,
            media_type: stream.media_type,
            kms_key_id: stream.kms_key_id,
            version: stream.version,
        }
    }
}

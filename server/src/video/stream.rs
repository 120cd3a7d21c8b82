//! Video streams as the Kinesis Video Streams APIs see them: catalog naming, ARNs, the
//! attributes a video stream keeps, and [`VideoStream`], the view every video handler works with.
//!
//! Storage knows a video stream as a [`StreamInfo`] named `video/<name>` with one shard. This
//! module turns that into the API's terms and back:
//!
//! | API                     | catalog                                              |
//! |-------------------------|------------------------------------------------------|
//! | `StreamName`            | `meta.name` = [`catalog_name`]`(name)` = `video/<name>` |
//! | `StreamARN`             | built from the name and `meta.created_ms` ([`stream_arn`]) |
//! | `DeviceName`, `MediaType`, `KmsKeyId`, storage tier | `meta.attributes` ([`ATTR_DEVICE_NAME`], ...) |
//! | `DataRetentionInHours`  | `meta.retention_ms` / 3,600,000 (0 = live only, nothing kept) |
//! | `Version`               | `meta.version` as a decimal string                  |
//! | `Status`                | `meta.status`                                        |
//! | `CreationTime`          | `meta.created_ms`                                    |
//! | tags                    | `meta.tags`                                          |
//!
//! The ARN ends with the stream's creation time in epoch milliseconds, as AWS's do, so an ARN
//! kept from a stream that was deleted and re-created under the same name no longer resolves.

use std::collections::BTreeMap;

use timeshard_storage::{ShardUid, StoreError, StreamInfo, StreamKind, StreamStatus};

use crate::api::{ApiError, ErrorKind};
use crate::data::names::Account;
use crate::state::AppState;

/// The catalog names of video streams start with this.
pub const CATALOG_PREFIX: &str = "video/";

/// Attribute keys a video stream keeps in the catalog's `attributes` map.
pub const ATTR_DEVICE_NAME: &str = "kvs.device_name";
pub const ATTR_MEDIA_TYPE: &str = "kvs.media_type";
pub const ATTR_KMS_KEY_ID: &str = "kvs.kms_key_id";
/// `HOT` or `WARM` (CreateStream's `StreamStorageConfiguration.DefaultStorageTier`).
pub const ATTR_STORAGE_TIER: &str = "kvs.storage_tier";

/// One hour in milliseconds: retention is whole hours on the wire.
pub const HOUR_MS: u64 = 3_600_000;
/// The longest retention AWS allows (10 years, 87,600 hours).
pub const MAX_RETENTION_HOURS: u64 = 87_600;
/// Stream names (and so device names' pattern): `[a-zA-Z0-9_.-]+`, at most this long.
pub const MAX_STREAM_NAME_LEN: usize = 256;

/// The catalog name of the video stream `api_name`: `video/<api_name>`.
pub fn catalog_name(api_name: &str) -> String {
    format!("{CATALOG_PREFIX}{api_name}")
}

/// The API name of a video stream's catalog name, or `None` if it is not one.
pub fn api_name(catalog_name: &str) -> Option<&str> {
    catalog_name.strip_prefix(CATALOG_PREFIX)
}

/// True for a valid stream name: 1 to 256 of `[a-zA-Z0-9_.-]`.
pub fn is_valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_STREAM_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// `arn:aws:kinesisvideo:<region>:<account>:stream/<name>/<creation epoch ms>`.
pub fn stream_arn(account: &Account, name: &str, created_ms: i64) -> String {
    format!(
        "arn:aws:kinesisvideo:{}:{}:stream/{name}/{created_ms}",
        account.region, account.account_id
    )
}

/// The KMS key AWS reports for a stream created without `KmsKeyId`.
pub fn default_kms_key_id(account: &Account) -> String {
    format!(
        "arn:aws:kms:{}:{}:alias/aws/kinesisvideo",
        account.region, account.account_id
    )
}

/// What a well-formed video stream ARN names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedArn<'a> {
    pub region: &'a str,
    pub account_id: &'a str,
    pub name: &'a str,
    /// The digits after the name: the stream's creation time in epoch milliseconds.
    pub created_ms: i64,
}

/// Parses a stream ARN of the form the KVS model's `ResourceARN` pattern allows, restricted to
/// the `stream` resource type. Says what is wrong with a malformed one.
pub fn parse_stream_arn(arn: &str) -> Result<ParsedArn<'_>, String> {
    let bad = |why: &str| {
        format!(
            "Invalid StreamARN {arn:?}: {why}; expected arn:aws:kinesisvideo:<region>:<account>:stream/<name>/<creation time>."
        )
    };
    if arn.is_empty() || arn.len() > 1024 {
        return Err(bad("its length must be between 1 and 1024"));
    }
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some(service), Some(region), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(bad("it does not have six ':'-separated parts"));
    };
    let lower_digit_dash = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
    };
    if !lower_digit_dash(partition) || service != "kinesisvideo" || !lower_digit_dash(region) {
        return Err(bad("it is not a Kinesis Video Streams ARN"));
    }
    if account.is_empty() || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("the account id must be digits"));
    }
    let Some(rest) = resource.strip_prefix("stream/") else {
        return Err(bad("only stream ARNs are supported"));
    };
    let Some((name, digits)) = rest.split_once('/') else {
        return Err(bad("the creation time is missing"));
    };
    if !is_valid_stream_name(name) {
        return Err(bad("the stream name must match [a-zA-Z0-9_.-]+"));
    }
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("the creation time must be digits"));
    }
    // Digits too long for an i64 are well formed but name no stream that can exist.
    let created_ms = digits.parse().unwrap_or(i64::MAX);
    Ok(ParsedArn {
        region,
        account_id: account,
        name,
        created_ms,
    })
}

/// One video stream as the KVS APIs describe it, built from its catalog entry.
///
/// A snapshot: it does not follow later changes. Media code takes [`VideoStream::shard_uid`] to
/// append and read fragments, [`VideoStream::catalog_name`] for store calls by name, and
/// [`VideoStream::id`] to notice a stream deleted and re-created under the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoStream {
    /// The API name (`StreamName`), without the catalog prefix.
    pub name: String,
    /// The `StreamARN`.
    pub arn: String,
    pub device_name: Option<String>,
    pub media_type: Option<String>,
    /// The given `KmsKeyId`, or AWS's default alias for Kinesis Video Streams.
    pub kms_key_id: String,
    /// `HOT` or `WARM`, if CreateStream named one.
    pub storage_tier: Option<String>,
    /// `Version`: the catalog version as a decimal string; every change makes a new one.
    pub version: String,
    pub status: StreamStatus,
    pub created_ms: i64,
    /// `DataRetentionInHours`; 0 means live only (nothing persisted).
    pub data_retention_hours: u64,
    pub tags: BTreeMap<String, String>,
    /// The stream's one shard, which holds its fragments (for appends, reads, `Store::watch`).
    pub shard_uid: ShardUid,
    /// The storage view the rest was derived from (`info.shards` is that one shard).
    pub info: StreamInfo,
}

impl VideoStream {
    /// The view of a catalog stream, or `None` if it is not a video stream (or, which the API
    /// never creates, one without a shard).
    pub fn from_info(account: &Account, info: StreamInfo) -> Option<VideoStream> {
        let meta = &info.meta;
        if meta.kind != StreamKind::Video {
            return None;
        }
        let shard_uid = info.shards.first()?.uid;
        let name = api_name(&meta.name)?.to_string();
        let attr = |key: &str| meta.attributes.get(key).cloned();
        Some(VideoStream {
            arn: stream_arn(account, &name, meta.created_ms),
            device_name: attr(ATTR_DEVICE_NAME),
            media_type: attr(ATTR_MEDIA_TYPE),
            kms_key_id: attr(ATTR_KMS_KEY_ID).unwrap_or_else(|| default_kms_key_id(account)),
            storage_tier: attr(ATTR_STORAGE_TIER),
            version: meta.version.to_string(),
            status: meta.status,
            created_ms: meta.created_ms,
            data_retention_hours: meta.retention_ms / HOUR_MS,
            tags: meta.tags.clone(),
            shard_uid,
            name,
            info,
        })
    }

    /// The stream a request names by `StreamName` or `StreamARN`: exactly one of them.
    ///
    /// Errors (in the KVS APIs' terms):
    /// - both or neither given, a name that breaks the name pattern, a malformed ARN:
    ///   `InvalidArgument`;
    /// - no video stream of that name, or an ARN whose region, account or creation time is not
    ///   the stream's (it was deleted and re-created): `NotFound` (HTTP 404).
    ///
    /// Streams in every status are found (DescribeStream shows CREATING and DELETING); callers
    /// that need an ACTIVE stream check [`VideoStream::status`].
    pub fn find(
        state: &AppState,
        name: Option<&str>,
        arn: Option<&str>,
    ) -> Result<VideoStream, ApiError> {
        let account = &state.kinesis().account;
        match (name, arn) {
            (Some(_), Some(_)) => Err(ApiError::invalid_argument(
                "Specify either StreamName or StreamARN, not both.",
            )),
            (None, None) => Err(ApiError::invalid_argument(
                "Either StreamName or StreamARN must be specified.",
            )),
            (Some(name), None) => {
                if !is_valid_stream_name(name) {
                    return Err(ApiError::invalid_argument(format!(
                        "1 validation error detected: Value '{name}' at 'streamName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+ and have length between 1 and {MAX_STREAM_NAME_LEN}"
                    )));
                }
                Self::by_name(state, name)
            }
            (None, Some(arn)) => {
                let parsed = parse_stream_arn(arn).map_err(ApiError::invalid_argument)?;
                if parsed.region != account.region || parsed.account_id != account.account_id {
                    return Err(not_found_arn(arn));
                }
                match Self::by_name(state, parsed.name) {
                    Ok(stream) if stream.created_ms == parsed.created_ms => Ok(stream),
                    _ => Err(not_found_arn(arn)),
                }
            }
        }
    }

    /// The video stream with this API name (not validated: an invalid name finds nothing).
    pub fn by_name(state: &AppState, name: &str) -> Result<VideoStream, ApiError> {
        state
            .store()
            .stream(&catalog_name(name))
            .and_then(|info| VideoStream::from_info(&state.kinesis().account, info))
            .ok_or_else(|| not_found(state, name))
    }

    /// The name the store knows this stream by (`video/<name>`).
    pub fn catalog_name(&self) -> &str {
        &self.info.meta.name
    }

    /// The store-unique, never reused stream id.
    pub fn id(&self) -> u64 {
        self.info.meta.id
    }

    /// The catalog version (`Version` as a number).
    pub fn version_number(&self) -> u64 {
        self.info.meta.version
    }

    /// The retention in milliseconds; 0 means nothing is persisted.
    pub fn retention_ms(&self) -> u64 {
        self.info.meta.retention_ms
    }

    /// True while the stream accepts media and reads: ACTIVE or UPDATING.
    pub fn is_usable(&self) -> bool {
        matches!(self.status, StreamStatus::Active | StreamStatus::Updating)
    }
}

/// `Status` on the wire.
pub fn status_name(status: StreamStatus) -> &'static str {
    match status {
        StreamStatus::Creating => "CREATING",
        StreamStatus::Active => "ACTIVE",
        StreamStatus::Updating => "UPDATING",
        StreamStatus::Deleting => "DELETING",
    }
}

/// The error for a missing stream (404 on the wire, which the C producer relies on).
pub fn not_found(state: &AppState, name: &str) -> ApiError {
    ApiError::not_found(format!(
        "The stream {name} under account {} is not found.",
        state.kinesis().account.account_id
    ))
}

fn not_found_arn(arn: &str) -> ApiError {
    ApiError::not_found(format!("The stream {arn} is not found."))
}

/// Storage failures of video stream operations in KVS terms (catalog names shown as API names).
pub fn store_error(e: StoreError) -> ApiError {
    let shown = |n: &str| api_name(n).unwrap_or(n).to_string();
    match e {
        StoreError::StreamNotFound(n) => {
            ApiError::not_found(format!("The stream {} is not found.", shown(&n)))
        }
        StoreError::StreamExists(n) => ApiError::new(
            ErrorKind::ResourceInUse,
            format!("The stream {} already exists.", shown(&n)),
        ),
        StoreError::VersionMismatch {
            stream,
            expected,
            actual,
        } => ApiError::new(
            ErrorKind::VersionMismatch,
            format!(
                "The stream {} is at version {actual}, not the CurrentVersion {expected}.",
                shown(&stream)
            ),
        ),
        StoreError::InvalidArgument(m) => ApiError::invalid_argument(m),
        e if e.is_internal() => ApiError::internal(e.to_string()),
        e => ApiError::invalid_argument(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> Account {
        Account {
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
        }
    }

    #[test]
    fn catalog_names_round_trip() {
        assert_eq!(catalog_name("cam1"), "video/cam1");
        assert_eq!(api_name("video/cam1"), Some("cam1"));
        assert_eq!(api_name("cam1"), None);
    }

    #[test]
    fn names() {
        assert!(is_valid_stream_name("cam_1.a-b"));
        assert!(is_valid_stream_name(&"x".repeat(256)));
        for bad in ["", "a/b", "a b", "é", &"x".repeat(257)] {
            assert!(!is_valid_stream_name(bad), "{bad}");
        }
    }

    #[test]
    fn arns_round_trip() {
        let arn = stream_arn(&account(), "cam1", 1_714_564_800_123);
        assert_eq!(
            arn,
            "arn:aws:kinesisvideo:us-east-1:000000000000:stream/cam1/1714564800123"
        );
        assert_eq!(
            parse_stream_arn(&arn),
            Ok(ParsedArn {
                region: "us-east-1",
                account_id: "000000000000",
                name: "cam1",
                created_ms: 1_714_564_800_123,
            })
        );
        for bad in [
            "",
            "cam1",
            "arn:aws:kinesis:us-east-1:000000000000:stream/cam1/1",
            "arn:aws:kinesisvideo:us-east-1:000000000000:stream/cam1",
            "arn:aws:kinesisvideo:us-east-1:000000000000:stream/cam1/",
            "arn:aws:kinesisvideo:us-east-1:000000000000:stream/cam1/12x",
            "arn:aws:kinesisvideo:us-east-1:000000000000:stream/ca m/1",
            "arn:aws:kinesisvideo:us-east-1:000000000000:channel/c/1",
            "arn:aws:kinesisvideo:us-east-1:acct:stream/cam1/1",
            "arn:aws:kinesisvideo:US-EAST-1:000000000000:stream/cam1/1",
        ] {
            assert!(parse_stream_arn(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_kms_key() {
        assert_eq!(
            default_kms_key_id(&account()),
            "arn:aws:kms:us-east-1:000000000000:alias/aws/kinesisvideo"
        );
    }
}

//! Stream tags, through both KVS tagging APIs:
//! - TagStream, UntagStream, ListTagsForStream: the stream by StreamName or StreamARN, tags as a
//!   map. A malformed StreamARN is `InvalidResourceFormatException`, as these operations' models
//!   declare.
//! - TagResource, UntagResource, ListTagsForResource (capitalised paths): the stream by
//!   `ResourceARN`, tags to add as a list of `{Key, Value}`; listed tags are a map.
//!
//! A stream holds at most 50 tags; a request that would leave more fails with
//! `TagsPerResourceExceededLimitException` and changes nothing. All of a stream's tags fit in one
//! page, so the list operations accept a `NextToken` but never return one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use timeshard_storage::StoreError;

use super::common::{
    Call, Empty, MAX_TAGS, check_next_token, check_tag_key_list, check_tags, decode, missing, ok,
    same_stream, too_many_tags,
};
use crate::api::{ApiError, ErrorKind, HandlerResult};
use crate::video::VideoStream;
use crate::video::stream::{parse_stream_arn, store_error};

#[derive(Debug, Deserialize)]
struct TagStreamRequest {
    #[serde(rename = "StreamName")]
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    #[serde(rename = "Tags")]
    tags: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
struct UntagStreamRequest {
    #[serde(rename = "StreamName")]
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    #[serde(rename = "TagKeyList")]
    tag_key_list: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct ListTagsForStreamRequest {
    #[serde(rename = "StreamName")]
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    #[serde(rename = "NextToken")]
    next_token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Tag {
    #[serde(rename = "Key")]
    key: Option<String>,
    #[serde(rename = "Value")]
    value: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TagResourceRequest {
    #[serde(rename = "ResourceARN")]
    resource_arn: Option<String>,
    #[serde(rename = "Tags")]
    tags: Option<Vec<Tag>>,
}

#[derive(Debug, Deserialize)]
struct UntagResourceRequest {
    #[serde(rename = "ResourceARN")]
    resource_arn: Option<String>,
    #[serde(rename = "TagKeyList")]
    tag_key_list: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct ListTagsForResourceRequest {
    #[serde(rename = "ResourceARN")]
    resource_arn: Option<String>,
    #[serde(rename = "NextToken")]
    next_token: Option<String>,
}

/// The output of both list operations.
#[derive(Debug, Serialize)]
struct ListResponse {
    #[serde(rename = "Tags")]
    tags: BTreeMap<String, String>,
}

/// The stream of the `*Stream` operations: a malformed ARN is InvalidResourceFormat there.
fn tagged_stream(
    call: &Call<'_>,
    name: Option<&str>,
    arn: Option<&str>,
) -> Result<VideoStream, ApiError> {
    if let (None, Some(arn)) = (name, arn) {
        parse_stream_arn(arn)
            .map_err(|message| ApiError::new(ErrorKind::InvalidResourceFormat, message))?;
    }
    call.stream(name, arn)
}

/// The stream of the `*Resource` operations.
fn resource_stream(call: &Call<'_>, arn: Option<&str>) -> Result<VideoStream, ApiError> {
    let arn = arn.ok_or_else(|| missing("resourceARN"))?;
    call.stream(None, Some(arn))
}

/// Merges `tags` into the stream's, unless that would leave more than [`MAX_TAGS`].
async fn add(
    call: &Call<'_>,
    stream: &VideoStream,
    tags: BTreeMap<String, String>,
) -> HandlerResult {
    let id = stream.id();
    call.state
        .store()
        .update_stream(stream.catalog_name(), None, move |meta| {
            same_stream(meta, id)?;
            let mut merged = meta.tags.clone();
            merged.extend(tags);
            if merged.len() > MAX_TAGS {
                // The only InvalidArgument this update fails with: the tag limit (see below).
                return Err(StoreError::InvalidArgument(
                    too_many_tags(merged.len()).message,
                ));
            }
            meta.tags = merged;
            Ok(())
        })
        .await
        .map_err(|e| match e {
            StoreError::InvalidArgument(message) => {
                ApiError::new(ErrorKind::TagsLimitExceeded, message)
            }
            e => store_error(e),
        })?;
    Ok(ok(&Empty {}))
}

async fn remove(call: &Call<'_>, stream: &VideoStream, keys: Vec<String>) -> HandlerResult {
    let id = stream.id();
    call.state
        .store()
        .update_stream(stream.catalog_name(), None, move |meta| {
            same_stream(meta, id)?;
            for key in &keys {
                meta.tags.remove(key);
            }
            Ok(())
        })
        .await
        .map_err(store_error)?;
    Ok(ok(&Empty {}))
}

pub(crate) async fn tag_stream(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: TagStreamRequest = decode(body)?;
    let tags = req.tags.ok_or_else(|| missing("tags"))?;
    check_tags("tags", &tags, false)?;
    let stream = tagged_stream(call, req.stream_name.as_deref(), req.stream_arn.as_deref())?;
    add(call, &stream, tags).await
}

pub(crate) async fn untag_stream(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: UntagStreamRequest = decode(body)?;
    let keys = req.tag_key_list.ok_or_else(|| missing("tagKeyList"))?;
    check_tag_key_list(&keys)?;
    let stream = tagged_stream(call, req.stream_name.as_deref(), req.stream_arn.as_deref())?;
    remove(call, &stream, keys).await
}

pub(crate) async fn list_tags_for_stream(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: ListTagsForStreamRequest = decode(body)?;
    if let Some(token) = &req.next_token {
        check_next_token(token)?;
    }
    let stream = tagged_stream(call, req.stream_name.as_deref(), req.stream_arn.as_deref())?;
    Ok(ok(&ListResponse { tags: stream.tags }))
}

pub(crate) async fn tag_resource(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: TagResourceRequest = decode(body)?;
    let arn = req.resource_arn.ok_or_else(|| missing("resourceARN"))?;
    let list = req.tags.ok_or_else(|| missing("tags"))?;
    if list.len() > MAX_TAGS {
        return Err(too_many_tags(list.len()));
    }
    let mut tags = BTreeMap::new();
    for (i, tag) in list.into_iter().enumerate() {
        let key = tag
            .key
            .ok_or_else(|| missing(&format!("tags.{}.member.key", i + 1)))?;
        let value = tag
            .value
            .ok_or_else(|| missing(&format!("tags.{}.member.value", i + 1)))?;
        tags.insert(key, value);
    }
    check_tags("tags", &tags, false)?;
    let stream = resource_stream(call, Some(&arn))?;
    add(call, &stream, tags).await
}

pub(crate) async fn untag_resource(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: UntagResourceRequest = decode(body)?;
    let arn = req.resource_arn.ok_or_else(|| missing("resourceARN"))?;
    let keys = req.tag_key_list.ok_or_else(|| missing("tagKeyList"))?;
    check_tag_key_list(&keys)?;
    let stream = resource_stream(call, Some(&arn))?;
    remove(call, &stream, keys).await
}

pub(crate) async fn list_tags_for_resource(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: ListTagsForResourceRequest = decode(body)?;
    if let Some(token) = &req.next_token {
        check_next_token(token)?;
    }
    let stream = resource_stream(call, req.resource_arn.as_deref())?;
    Ok(ok(&ListResponse { tags: stream.tags }))
}

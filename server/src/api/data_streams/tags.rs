//! Stream tags: AddTagsToStream, RemoveTagsFromStream, ListTagsForStream, and the ARN-based
//! TagResource, UntagResource, ListTagsForResource (for stream ARNs).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::common::{Call, Empty, in_range, missing, store_error, stream, stream_name, validation};
use super::create_stream::{MAX_TAGS, check_tags};
use super::wire;
use crate::api::{ApiError, HandlerResult};

#[derive(Debug, Deserialize)]
struct AddRequest {
    #[serde(rename = "StreamName")]
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    #[serde(rename = "Tags")]
    tags: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
struct RemoveRequest {
    #[serde(rename = "StreamName")]
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    #[serde(rename = "TagKeys")]
    tag_keys: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct ListRequest {
    #[serde(rename = "StreamName")]
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    #[serde(rename = "ExclusiveStartTagKey")]
    exclusive_start_tag_key: Option<String>,
    #[serde(rename = "Limit")]
    limit: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct TagResourceRequest {
    #[serde(rename = "ResourceARN")]
    resource_arn: Option<String>,
    #[serde(rename = "Tags")]
    tags: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
struct UntagResourceRequest {
    #[serde(rename = "ResourceARN")]
    resource_arn: Option<String>,
    #[serde(rename = "TagKeys")]
    tag_keys: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct ListForResourceRequest {
    #[serde(rename = "ResourceARN")]
    resource_arn: Option<String>,
}

#[derive(Debug, Serialize)]
struct Tag {
    #[serde(rename = "Key")]
    key: String,
    #[serde(rename = "Value")]
    value: String,
}

#[derive(Debug, Serialize)]
struct ListResponse {
    #[serde(rename = "Tags")]
    tags: Vec<Tag>,
    #[serde(rename = "HasMoreTags")]
    has_more_tags: bool,
}

#[derive(Debug, Serialize)]
struct ListForResourceResponse {
    #[serde(rename = "Tags")]
    tags: Vec<Tag>,
}

/// The stream a resource ARN names; only stream ARNs carry tags here.
fn resource_stream(call: &Call<'_>, arn: Option<String>) -> Result<String, ApiError> {
    let arn = arn.ok_or_else(|| missing("resourceARN"))?;
    if arn.contains("/consumer/") {
        return Err(ApiError::invalid_argument(
            "Tags on stream consumers are not supported by this server.",
        ));
    }
    stream_name(call, None, Some(&arn))
}

async fn add(call: &Call<'_>, name: &str, tags: Option<BTreeMap<String, String>>) -> HandlerResult {
    let tags = tags.ok_or_else(|| missing("tags"))?;
    if tags.is_empty() {
        return Err(validation(
            "tags",
            "{}",
            "Member must have length greater than or equal to 1",
        ));
    }
    check_tags(&tags)?;
    stream(call, name)?;
    call.state
        .store()
        .update_stream(name, None, move |meta| {
            let mut merged = meta.tags.clone();
            merged.extend(tags);
            if merged.len() > MAX_TAGS {
                return Err(timeshard_storage::StoreError::InvalidArgument(format!(
                    "Failed to add tags: the stream would have {} tags, over the limit of {MAX_TAGS}.",
                    merged.len()
                )));
            }
            meta.tags = merged;
            Ok(())
        })
        .await
        .map_err(|e| store_error(call, e))?;
    Ok(wire::response(call.enc, &Empty {}))
}

async fn remove(call: &Call<'_>, name: &str, keys: Option<Vec<String>>) -> HandlerResult {
    let keys = keys.ok_or_else(|| missing("tagKeys"))?;
    if keys.is_empty() || keys.len() > 50 {
        return Err(validation(
            "tagKeys",
            format!("<{} keys>", keys.len()),
            "Member must have length between 1 and 50",
        ));
    }
    stream(call, name)?;
    call.state
        .store()
        .update_stream(name, None, move |meta| {
            for k in &keys {
                meta.tags.remove(k);
            }
            Ok(())
        })
        .await
        .map_err(|e| store_error(call, e))?;
    Ok(wire::response(call.enc, &Empty {}))
}

fn all_tags(call: &Call<'_>, name: &str) -> Result<Vec<Tag>, ApiError> {
    Ok(stream(call, name)?
        .meta
        .tags
        .into_iter()
        .map(|(key, value)| Tag { key, value })
        .collect())
}

pub(crate) async fn add_to_stream(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: AddRequest = wire::decode(call.enc, body)?;
    let name = stream_name(call, req.stream_name.as_deref(), req.stream_arn.as_deref())?;
    add(call, &name, req.tags).await
}

pub(crate) async fn remove_from_stream(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: RemoveRequest = wire::decode(call.enc, body)?;
    let name = stream_name(call, req.stream_name.as_deref(), req.stream_arn.as_deref())?;
    remove(call, &name, req.tag_keys).await
}

pub(crate) async fn list_for_stream(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: ListRequest = wire::decode(call.enc, body)?;
    let name = stream_name(call, req.stream_name.as_deref(), req.stream_arn.as_deref())?;
    let limit = in_range("limit", req.limit, 1, 50)?.unwrap_or(50) as usize;
    let rest: Vec<Tag> = all_tags(call, &name)?
        .into_iter()
        .filter(|t| {
            req.exclusive_start_tag_key
                .as_ref()
                .is_none_or(|k| t.key.as_str() > k.as_str())
        })
        .collect();
    let has_more_tags = rest.len() > limit;
    let tags = rest.into_iter().take(limit).collect();
    Ok(wire::response(
        call.enc,
        &ListResponse {
            tags,
            has_more_tags,
        },
    ))
}

pub(crate) async fn tag_resource(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: TagResourceRequest = wire::decode(call.enc, body)?;
    let name = resource_stream(call, req.resource_arn)?;
    add(call, &name, req.tags).await
}

pub(crate) async fn untag_resource(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: UntagResourceRequest = wire::decode(call.enc, body)?;
    let name = resource_stream(call, req.resource_arn)?;
    remove(call, &name, req.tag_keys).await
}

pub(crate) async fn list_for_resource(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: ListForResourceRequest = wire::decode(call.enc, body)?;
    let name = resource_stream(call, req.resource_arn)?;
    Ok(wire::response(
        call.enc,
        &ListForResourceResponse {
            tags: all_tags(call, &name)?,
        },
    ))
}

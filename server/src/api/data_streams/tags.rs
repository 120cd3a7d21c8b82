//! Stream tags: AddTagsToStream, RemoveTagsFromStream, ListTagsForStream, and the ARN-based
//! TagResource, UntagResource, ListTagsForResource, which take a stream ARN or a consumer ARN.
//!
//! Stream tags live in the stream's catalog entry, consumer tags in the consumer's entry of the
//! stream's consumer list (`consumers.rs`). Both get the same checks and limits: keys of 1 to 128
//! characters, values of up to 256, at most 50 tags on a resource.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::common::{Call, Empty, in_range, missing, store_error, stream, stream_name, validation};
use super::consumers;
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

/// What a resource ARN names: a stream (by name) or a consumer (by its ARN).
enum Resource {
    Stream(String),
    Consumer(String),
}

fn resource(call: &Call<'_>, arn: Option<String>) -> Result<Resource, ApiError> {
    let arn = arn.ok_or_else(|| missing("resourceARN"))?;
    // Stream names cannot hold a `/`, so this part only appears in consumer ARNs.
    if arn.contains("/consumer/") {
        return Ok(Resource::Consumer(arn));
    }
    stream_name(call, None, Some(&arn)).map(Resource::Stream)
}

/// The tags to add, checked as the model and the limits want them; `resource` names the kind of
/// resource in messages.
fn tags_to_add(
    resource: &str,
    tags: Option<BTreeMap<String, String>>,
) -> Result<BTreeMap<String, String>, ApiError> {
    let tags = tags.ok_or_else(|| missing("tags"))?;
    if tags.is_empty() {
        return Err(validation(
            "tags",
            "{}",
            "Member must have length greater than or equal to 1",
        ));
    }
    check_tags(resource, &tags)?;
    Ok(tags)
}

/// The tag keys to remove: 1 to 50 of them.
fn keys_to_remove(keys: Option<Vec<String>>) -> Result<Vec<String>, ApiError> {
    let keys = keys.ok_or_else(|| missing("tagKeys"))?;
    if keys.is_empty() || keys.len() > 50 {
        return Err(validation(
            "tagKeys",
            format!("<{} keys>", keys.len()),
            "Member must have length between 1 and 50",
        ));
    }
    Ok(keys)
}

/// `current` with `tags` added, unless that makes more than [`MAX_TAGS`].
fn merged(
    resource: &str,
    current: &BTreeMap<String, String>,
    tags: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    let mut merged = current.clone();
    merged.extend(tags.iter().map(|(k, v)| (k.clone(), v.clone())));
    if merged.len() > MAX_TAGS {
        return Err(format!(
            "Failed to add tags: the {resource} would have {} tags, over the limit of {MAX_TAGS}.",
            merged.len()
        ));
    }
    Ok(merged)
}

async fn add(call: &Call<'_>, name: &str, tags: Option<BTreeMap<String, String>>) -> HandlerResult {
    let tags = tags_to_add("stream", tags)?;
    stream(call, name)?;
    call.state
        .store()
        .update_stream(name, None, move |meta| {
            meta.tags = merged("stream", &meta.tags, &tags)
                .map_err(timeshard_storage::StoreError::InvalidArgument)?;
            Ok(())
        })
        .await
        .map_err(|e| store_error(call, e))?;
    Ok(wire::response(call.enc, &Empty {}))
}

async fn remove(call: &Call<'_>, name: &str, keys: Option<Vec<String>>) -> HandlerResult {
    let keys = keys_to_remove(keys)?;
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
    Ok(tag_list(stream(call, name)?.meta.tags))
}

fn tag_list(tags: BTreeMap<String, String>) -> Vec<Tag> {
    tags.into_iter()
        .map(|(key, value)| Tag { key, value })
        .collect()
}

async fn add_to_consumer(
    call: &Call<'_>,
    arn: &str,
    tags: Option<BTreeMap<String, String>>,
) -> HandlerResult {
    let tags = tags_to_add("consumer", tags)?;
    consumers::change_tags(call, arn, |current| {
        *current = merged("consumer", current, &tags).map_err(ApiError::invalid_argument)?;
        Ok(())
    })
    .await?;
    Ok(wire::response(call.enc, &Empty {}))
}

async fn remove_from_consumer(
    call: &Call<'_>,
    arn: &str,
    keys: Option<Vec<String>>,
) -> HandlerResult {
    let keys = keys_to_remove(keys)?;
    consumers::change_tags(call, arn, |current| {
        for k in &keys {
            current.remove(k);
        }
        Ok(())
    })
    .await?;
    Ok(wire::response(call.enc, &Empty {}))
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
    match resource(call, req.resource_arn)? {
        Resource::Stream(name) => add(call, &name, req.tags).await,
        Resource::Consumer(arn) => add_to_consumer(call, &arn, req.tags).await,
    }
}

pub(crate) async fn untag_resource(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: UntagResourceRequest = wire::decode(call.enc, body)?;
    match resource(call, req.resource_arn)? {
        Resource::Stream(name) => remove(call, &name, req.tag_keys).await,
        Resource::Consumer(arn) => remove_from_consumer(call, &arn, req.tag_keys).await,
    }
}

pub(crate) async fn list_for_resource(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: ListForResourceRequest = wire::decode(call.enc, body)?;
    let tags = match resource(call, req.resource_arn)? {
        Resource::Stream(name) => all_tags(call, &name)?,
        Resource::Consumer(arn) => tag_list(consumers::tags_of(call, &arn)?),
    };
    Ok(wire::response(call.enc, &ListForResourceResponse { tags }))
}

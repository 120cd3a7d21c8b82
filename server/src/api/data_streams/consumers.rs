//! Enhanced fan-out consumers: RegisterStreamConsumer, DescribeStreamConsumer,
//! ListStreamConsumers and DeregisterStreamConsumer. SubscribeToShard
//! (`subscribe_to_shard.rs`) reads through them.
//!
//! A stream's consumers live in its catalog attributes ([`ATTR_CONSUMERS`], a compact JSON list
//! `[{"name":"app","created_ms":1700000000123,"tags":{"team":"a"}}]`, `tags` left out when there
//! are none), so they are durable, survive restarts and vanish with the stream without any table
//! of their own. A consumer's tags (TagResource on a consumer ARN, or RegisterStreamConsumer's
//! `Tags`) live in its entry, so deregistering it drops them in the same write. Changes are
//! optimistic (`common::update_stream_if_unchanged`): read the stream, check the list, write it
//! back with the version it was read at, and retry if another change got in between, so the
//! limit and duplicate checks hold under concurrent calls.
//!
//! There is nothing to provision, so a consumer is `ACTIVE` as soon as it is registered and gone
//! as soon as it is deregistered (Kinesis passes through `CREATING` and `DELETING`).
//!
//! Consumer ARNs are `<stream ARN>/consumer/<name>:<creation time in epoch seconds>`, as
//! Kinesis forms them. The creation second is part of the identity: the ARN of a deregistered
//! consumer does not find a later one registered under the same name.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use timeshard_storage::{StreamInfo, StreamMeta};

use super::common::{
    ATTR_CONSUMERS, Call, Empty, in_range, missing, stream, stream_name,
    update_stream_if_unchanged, usable_stream, validation,
};
use super::create_stream::check_tags;
use super::wire::{self, Timestamp};
use crate::api::{ApiError, ErrorKind, HandlerResult};
use crate::data::tokens::TokenError;

/// At most this many consumers per stream (the Kinesis quota).
pub(crate) const MAX_CONSUMERS_PER_STREAM: usize = 20;
/// ListStreamConsumers returns at most this many per call, whatever MaxResults says.
const MAX_LIST_RESULTS: i64 = 100;

/// A registered consumer, as kept in [`ATTR_CONSUMERS`]. It is not `PartialEq`: whether two
/// entries are the same consumer is [`StoredConsumer::is`], which tags do not change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredConsumer {
    pub name: String,
    pub created_ms: i64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

impl StoredConsumer {
    /// Whether `other` is the same registration: the same name registered at the same time.
    pub fn is(&self, other: &StoredConsumer) -> bool {
        self.name == other.name && self.created_ms == other.created_ms
    }

    /// `arn:aws:kinesis:<region>:<account>:stream/<stream>/consumer/<name>:<epoch seconds>`.
    pub fn arn(&self, call: &Call<'_>, stream: &str) -> String {
        format!(
            "{}/consumer/{}:{}",
            call.state.kinesis().account.stream_arn(stream),
            self.name,
            self.created_ms.div_euclid(1000)
        )
    }
}

/// The consumers registered on a stream, in registration order. An absent attribute is none.
pub(crate) fn registered(meta: &StreamMeta) -> Result<Vec<StoredConsumer>, serde_json::Error> {
    match meta.attributes.get(ATTR_CONSUMERS) {
        None => Ok(Vec::new()),
        Some(json) => serde_json::from_str(json),
    }
}

fn registered_or_internal(meta: &StreamMeta) -> Result<Vec<StoredConsumer>, ApiError> {
    registered(meta).map_err(|e| {
        ApiError::internal(format!(
            "stream {}: unreadable {ATTR_CONSUMERS} attribute: {e}",
            meta.name
        ))
    })
}

/// Consumer names: 1 to 128 of `[a-zA-Z0-9_.-]`, as stream names.
fn check_consumer_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty()
        || name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(validation(
            "consumerName",
            name,
            "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+ and have length between 1 and 128",
        ));
    }
    Ok(())
}

/// What a consumer ARN names.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ConsumerArn {
    stream: String,
    name: String,
    created_s: i64,
}

fn parse_consumer_arn(call: &Call<'_>, arn: &str) -> Result<ConsumerArn, ApiError> {
    let account = &call.state.kinesis().account;
    let bad = || {
        ApiError::invalid_argument(format!(
            "Invalid ConsumerARN {arn:?}: expected arn:aws:kinesis:{}:{}:stream/<stream>/consumer/<name>:<creation epoch seconds>",
            account.region, account.account_id
        ))
    };
    let stream = account.stream_name_from_arn(arn).map_err(|_| bad())?;
    let rest = arn
        .strip_prefix(&format!("{}/consumer/", account.stream_arn(stream)))
        .ok_or_else(bad)?;
    let (name, secs) = rest.rsplit_once(':').ok_or_else(bad)?;
    check_consumer_name(name).map_err(|_| bad())?;
    if secs.is_empty() || secs.len() > 18 || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let created_s = secs.parse().map_err(|_| bad())?;
    Ok(ConsumerArn {
        stream: stream.to_owned(),
        name: name.to_owned(),
        created_s,
    })
}

/// A consumer and the stream it is registered on, as found by a request.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub info: StreamInfo,
    pub consumer: StoredConsumer,
    /// The consumer's ARN, as this server writes it.
    pub arn: String,
}

fn consumer_not_found(call: &Call<'_>, what: &str, stream: &str) -> ApiError {
    ApiError::not_found(format!(
        "Consumer {what} under stream {stream} not found for account {}.",
        call.state.kinesis().account.account_id
    ))
}

/// The consumer a request names: by `ConsumerARN`, or by `StreamARN` and `ConsumerName`. When
/// both forms are given they must agree.
pub(crate) fn find(
    call: &Call<'_>,
    stream_arn: Option<&str>,
    consumer_name: Option<&str>,
    consumer_arn: Option<&str>,
) -> Result<Found, ApiError> {
    let by_arn = consumer_arn
        .map(|a| parse_consumer_arn(call, a))
        .transpose()?;
    if let Some(name) = consumer_name {
        check_consumer_name(name)?;
    }
    let from_stream_arn = stream_arn
        .map(|a| stream_name(call, None, Some(a)))
        .transpose()?;
    let (stream_name, name) = match (&by_arn, from_stream_arn, consumer_name) {
        (Some(parsed), stream, name) => {
            if stream.as_ref().is_some_and(|s| *s != parsed.stream)
                || name.is_some_and(|n| n != parsed.name)
            {
                return Err(ApiError::invalid_argument(
                    "ConsumerARN names another consumer than StreamARN and ConsumerName.",
                ));
            }
            (parsed.stream.clone(), parsed.name.clone())
        }
        (None, Some(stream), Some(name)) => (stream, name.to_owned()),
        (None, _, _) => {
            return Err(ApiError::invalid_argument(
                "Either ConsumerARN or both StreamARN and ConsumerName must be provided.",
            ));
        }
    };
    let info = stream(call, &stream_name)?;
    let consumer = registered_or_internal(&info.meta)?
        .into_iter()
        .find(|c| {
            c.name == name
                && by_arn
                    .as_ref()
                    .is_none_or(|p| p.created_s == c.created_ms.div_euclid(1000))
        })
        .ok_or_else(|| consumer_not_found(call, consumer_arn.unwrap_or(&name), &stream_name))?;
    let arn = consumer.arn(call, &stream_name);
    Ok(Found {
        info,
        consumer,
        arn,
    })
}

/// Writes `change`'s version of the consumer list, re-reading and retrying when another update
/// of the stream got in first. `change` sees the current list and the stream, and either edits
/// the list or refuses with the error to return.
async fn update_consumers<T>(
    call: &Call<'_>,
    stream_name: &str,
    mut change: impl FnMut(&StreamInfo, &mut Vec<StoredConsumer>) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let (outcome, _) = update_stream_if_unchanged(call, stream_name, || {
        let info = usable_stream(call, stream_name)?;
        let mut list = registered_or_internal(&info.meta)?;
        let outcome = change(&info, &mut list)?;
        let json = serde_json::to_string(&list)
            .map_err(|e| ApiError::internal(format!("encoding the consumer list: {e}")))?;
        let write = move |meta: &mut StreamMeta| {
            if list.is_empty() {
                meta.attributes.remove(ATTR_CONSUMERS);
            } else {
                meta.attributes.insert(ATTR_CONSUMERS.to_owned(), json);
            }
            Ok(())
        };
        Ok((info, outcome, Some(write)))
    })
    .await?;
    Ok(outcome)
}

/// The `Consumer` shape (also ListStreamConsumers' entries).
#[derive(Debug, Serialize)]
struct Consumer {
    #[serde(rename = "ConsumerName")]
    consumer_name: String,
    #[serde(rename = "ConsumerARN")]
    consumer_arn: String,
    #[serde(rename = "ConsumerStatus")]
    consumer_status: &'static str,
    #[serde(rename = "ConsumerCreationTimestamp")]
    consumer_creation_timestamp: Timestamp,
}

impl Consumer {
    fn of(call: &Call<'_>, stream: &str, c: &StoredConsumer) -> Self {
        Consumer {
            consumer_name: c.name.clone(),
            consumer_arn: c.arn(call, stream),
            consumer_status: "ACTIVE",
            consumer_creation_timestamp: Timestamp(c.created_ms),
        }
    }
}

// ---- RegisterStreamConsumer ----

#[derive(Debug, Deserialize)]
struct RegisterRequest {
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    #[serde(rename = "ConsumerName")]
    consumer_name: Option<String>,
    #[serde(rename = "Tags")]
    tags: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Serialize)]
struct RegisterResponse {
    #[serde(rename = "Consumer")]
    consumer: Consumer,
}

pub(crate) async fn register(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: RegisterRequest = wire::decode(call.enc, body)?;
    let arn = req.stream_arn.ok_or_else(|| missing("streamARN"))?;
    let name = req.consumer_name.ok_or_else(|| missing("consumerName"))?;
    check_consumer_name(&name)?;
    // Tags, when given, are a TagMap of at least one tag (the model's minimum).
    if req.tags.as_ref().is_some_and(BTreeMap::is_empty) {
        return Err(validation(
            "tags",
            "{}",
            "Member must have length greater than or equal to 1",
        ));
    }
    let tags = req.tags.unwrap_or_default();
    check_tags("consumer", &tags)?;
    let stream = stream_name(call, None, Some(&arn))?;
    let account_id = &call.state.kinesis().account.account_id;
    let consumer = update_consumers(call, &stream, |_, list| {
        if list.iter().any(|c| c.name == name) {
            return Err(ApiError::new(
                ErrorKind::ResourceInUse,
                format!(
                    "Consumer {name} under stream {stream} already exists for account {account_id}."
                ),
            ));
        }
        if list.len() >= MAX_CONSUMERS_PER_STREAM {
            return Err(ApiError::new(
                ErrorKind::LimitExceeded,
                format!(
                    "Stream {stream} under account {account_id} already has {MAX_CONSUMERS_PER_STREAM} consumers, the most a stream may have."
                ),
            ));
        }
        let consumer = StoredConsumer {
            name: name.clone(),
            created_ms: call.now_ms,
            tags: tags.clone(),
        };
        list.push(consumer.clone());
        Ok(consumer)
    })
    .await?;
    Ok(wire::response(
        call.enc,
        &RegisterResponse {
            consumer: Consumer::of(call, &stream, &consumer),
        },
    ))
}

// ---- DescribeStreamConsumer ----

#[derive(Debug, Deserialize)]
struct ByNameOrArn {
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    #[serde(rename = "ConsumerName")]
    consumer_name: Option<String>,
    #[serde(rename = "ConsumerARN")]
    consumer_arn: Option<String>,
}

impl ByNameOrArn {
    fn find(&self, call: &Call<'_>) -> Result<Found, ApiError> {
        find(
            call,
            self.stream_arn.as_deref(),
            self.consumer_name.as_deref(),
            self.consumer_arn.as_deref(),
        )
    }
}

#[derive(Debug, Serialize)]
struct Description {
    #[serde(rename = "ConsumerName")]
    consumer_name: String,
    #[serde(rename = "ConsumerARN")]
    consumer_arn: String,
    #[serde(rename = "ConsumerStatus")]
    consumer_status: &'static str,
    #[serde(rename = "ConsumerCreationTimestamp")]
    consumer_creation_timestamp: Timestamp,
    #[serde(rename = "StreamARN")]
    stream_arn: String,
}

#[derive(Debug, Serialize)]
struct DescribeResponse {
    #[serde(rename = "ConsumerDescription")]
    description: Description,
}

pub(crate) async fn describe(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: ByNameOrArn = wire::decode(call.enc, body)?;
    let found = req.find(call)?;
    let stream = &found.info.meta.name;
    Ok(wire::response(
        call.enc,
        &DescribeResponse {
            description: Description {
                consumer_name: found.consumer.name.clone(),
                consumer_arn: found.arn.clone(),
                consumer_status: "ACTIVE",
                consumer_creation_timestamp: Timestamp(found.consumer.created_ms),
                stream_arn: call.state.kinesis().account.stream_arn(stream),
            },
        },
    ))
}

// ---- ListStreamConsumers ----

#[derive(Debug, Deserialize)]
struct ListRequest {
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    #[serde(rename = "NextToken")]
    next_token: Option<String>,
    #[serde(rename = "MaxResults")]
    max_results: Option<i64>,
    #[serde(rename = "StreamCreationTimestamp")]
    stream_creation_timestamp: Option<Timestamp>,
}

#[derive(Debug, Serialize)]
struct ListResponse {
    #[serde(rename = "Consumers")]
    consumers: Vec<Consumer>,
    #[serde(rename = "NextToken", skip_serializing_if = "Option::is_none")]
    next_token: Option<String>,
}

pub(crate) async fn list(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: ListRequest = wire::decode(call.enc, body)?;
    let arn = req.stream_arn.ok_or_else(|| missing("streamARN"))?;
    let limit = in_range("maxResults", req.max_results, 1, 10_000)?
        .unwrap_or(MAX_LIST_RESULTS)
        .min(MAX_LIST_RESULTS) as usize;
    let name = stream_name(call, None, Some(&arn))?;
    let info = stream(call, &name)?;
    let meta = &info.meta;
    // StreamCreationTimestamp tells a stream from an earlier one of the same name; compared to
    // the second, as clients may have rounded it.
    if let Some(ts) = req.stream_creation_timestamp
        && ts.0.div_euclid(1000) != meta.created_ms.div_euclid(1000)
    {
        return Err(ApiError::not_found(format!(
            "Stream {name} created at {} ms under account {} not found.",
            ts.0,
            call.state.kinesis().account.account_id
        )));
    }
    let tokens = &call.state.kinesis().tokens;
    let after = match &req.next_token {
        None => None,
        Some(token) => {
            let (stream_id, after) =
                tokens
                    .parse_consumer_page(token, call.now_ms)
                    .map_err(|e| match e {
                        TokenError::Expired => {
                            ApiError::new(ErrorKind::ExpiredNextToken, "The NextToken has expired.")
                        }
                        TokenError::Invalid => ApiError::invalid_argument("Invalid NextToken."),
                    })?;
            if stream_id != meta.id {
                return Err(ApiError::invalid_argument(
                    "The NextToken belongs to another stream.",
                ));
            }
            Some(after)
        }
    };
    let mut consumers = registered_or_internal(meta)?;
    consumers.sort_by(|a, b| a.name.cmp(&b.name));
    consumers.retain(|c| after.as_ref().is_none_or(|a| c.name > *a));
    let has_more = consumers.len() > limit;
    consumers.truncate(limit);
    let next_token = match consumers.last() {
        Some(last) if has_more => Some(tokens.consumer_page(meta.id, &last.name, call.now_ms)),
        _ => None,
    };
    Ok(wire::response(
        call.enc,
        &ListResponse {
            consumers: consumers
                .iter()
                .map(|c| Consumer::of(call, &name, c))
                .collect(),
            next_token,
        },
    ))
}

// ---- DeregisterStreamConsumer ----

pub(crate) async fn deregister(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: ByNameOrArn = wire::decode(call.enc, body)?;
    let found = req.find(call)?;
    let stream = found.info.meta.name.clone();
    let target = found.consumer.clone();
    update_consumers(call, &stream, |_, list| {
        let before = list.len();
        list.retain(|c| !c.is(&target));
        if list.len() == before {
            return Err(consumer_not_found(call, &found.arn, &stream));
        }
        Ok(())
    })
    .await?;
    // Its subscriptions end now rather than at their next keep-alive.
    super::subscribe_to_shard::consumer_deregistered(call.state.store(), &found.arn);
    Ok(wire::response(call.enc, &Empty {}))
}

// ---- Consumer tags (TagResource, UntagResource, ListTagsForResource; see tags.rs) ----

/// The tags of the consumer a consumer ARN names.
pub(crate) fn tags_of(call: &Call<'_>, arn: &str) -> Result<BTreeMap<String, String>, ApiError> {
    Ok(find(call, None, None, Some(arn))?.consumer.tags)
}

/// Changes the tags of the consumer a consumer ARN names: `change` edits them or refuses with
/// the error to return. Goes through [`update_consumers`], so it neither loses nor is lost to a
/// concurrent registration, and a consumer deregistered meanwhile is not found.
pub(crate) async fn change_tags(
    call: &Call<'_>,
    arn: &str,
    mut change: impl FnMut(&mut BTreeMap<String, String>) -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    let found = find(call, None, None, Some(arn))?;
    let stream = found.info.meta.name.clone();
    update_consumers(call, &stream, |_, list| {
        let consumer = list
            .iter_mut()
            .find(|c| c.is(&found.consumer))
            .ok_or_else(|| consumer_not_found(call, arn, &stream))?;
        change(&mut consumer.tags)
    })
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn stored_entries_keep_tags_and_read_entries_without_them() {
        let plain = StoredConsumer {
            name: "app".into(),
            created_ms: 1_700_000_000_123,
            tags: BTreeMap::new(),
        };
        let tagged = StoredConsumer {
            tags: BTreeMap::from([("team".to_owned(), "a".to_owned())]),
            ..plain.clone()
        };
        // Untagged entries are written as before tags existed, so older servers read them.
        assert_eq!(
            serde_json::to_string(&[&plain, &tagged]).unwrap(),
            r#"[{"name":"app","created_ms":1700000000123},{"name":"app","created_ms":1700000000123,"tags":{"team":"a"}}]"#
        );
        let read: Vec<StoredConsumer> =
            serde_json::from_str(&serde_json::to_string(&[&plain, &tagged]).unwrap()).unwrap();
        assert!(read[0].tags.is_empty());
        assert_eq!(read[1].tags, tagged.tags);
        // Tags do not make another consumer; another creation time does.
        assert!(plain.is(&tagged));
        assert!(!plain.is(&StoredConsumer {
            created_ms: plain.created_ms + 1,
            ..plain.clone()
        }));
    }
}

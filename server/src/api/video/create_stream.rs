//! CreateStream: a video stream (`video/<name>` in the catalog, one shard), ACTIVE at once or,
//! with `--stream-status-delay`, CREATING for that long.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use timeshard_storage::{NewShard, NewStream, StreamKind, StreamStatus};

use super::common::{
    Call, check_device_name, check_kms_key_id, check_media_type, check_stream_name, check_tags,
    decode, missing, ok, retention_ms,
};
use crate::api::HandlerResult;
use crate::api::data_streams::common::validation;
use crate::data::lifecycle::{Transition, finish_later};
use crate::video::catalog_name;
use crate::video::stream::{
    ATTR_DEVICE_NAME, ATTR_KMS_KEY_ID, ATTR_MEDIA_TYPE, ATTR_STORAGE_TIER, default_kms_key_id,
    store_error, stream_arn,
};

#[derive(Debug, Deserialize)]
struct Request {
    #[serde(rename = "StreamName")]
    stream_name: Option<String>,
    #[serde(rename = "DeviceName")]
    device_name: Option<String>,
    #[serde(rename = "MediaType")]
    media_type: Option<String>,
    #[serde(rename = "KmsKeyId")]
    kms_key_id: Option<String>,
    #[serde(rename = "DataRetentionInHours")]
    data_retention_in_hours: Option<i64>,
    #[serde(rename = "Tags")]
    tags: Option<BTreeMap<String, String>>,
    #[serde(rename = "StreamStorageConfiguration")]
    stream_storage_configuration: Option<StorageConfiguration>,
}

#[derive(Debug, Deserialize)]
struct StorageConfiguration {
    #[serde(rename = "DefaultStorageTier")]
    default_storage_tier: Option<String>,
}

#[derive(Debug, Serialize)]
struct Response {
    #[serde(rename = "StreamARN")]
    stream_arn: String,
}

pub(crate) async fn handle(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: Request = decode(body)?;
    let name = req.stream_name.ok_or_else(|| missing("streamName"))?;
    check_stream_name("streamName", &name)?;
    let account = &call.state.kinesis().account;
    let mut attributes = BTreeMap::new();
    if let Some(device) = req.device_name {
        check_device_name(&device)?;
        attributes.insert(ATTR_DEVICE_NAME.to_string(), device);
    }
    if let Some(media_type) = req.media_type {
        check_media_type(&media_type)?;
        attributes.insert(ATTR_MEDIA_TYPE.to_string(), media_type);
    }
    let kms_key_id = match req.kms_key_id {
        Some(key) => {
            check_kms_key_id(&key)?;
            key
        }
        None => default_kms_key_id(account),
    };
    attributes.insert(ATTR_KMS_KEY_ID.to_string(), kms_key_id);
    if let Some(config) = req.stream_storage_configuration {
        let tier = config
            .default_storage_tier
            .ok_or_else(|| missing("streamStorageConfiguration.defaultStorageTier"))?;
        if tier != "HOT" && tier != "WARM" {
            return Err(validation(
                "streamStorageConfiguration.defaultStorageTier",
                &tier,
                "Member must satisfy enum value set: [HOT, WARM]",
            ));
        }
        attributes.insert(ATTR_STORAGE_TIER.to_string(), tier);
    }
    let retention_ms = retention_ms(
        "dataRetentionInHours",
        req.data_retention_in_hours.unwrap_or(0),
    )?;
    let tags = req.tags.unwrap_or_default();
    check_tags("tags", &tags, true)?;

    let delay = call.state.config().stream_status_delay;
    let new = NewStream {
        tags,
        attributes,
        status: if delay.is_zero() {
            StreamStatus::Active
        } else {
            StreamStatus::Creating
        },
        ..NewStream::new(
            catalog_name(&name),
            StreamKind::Video,
            retention_ms,
            vec![NewShard::whole_key_range()],
        )
    };
    let store = call.state.store();
    let created = store.create_stream(new).await.map_err(store_error)?;
    if !delay.is_zero() {
        finish_later(
            store.clone(),
            created.meta.name,
            created.meta.id,
            delay,
            Transition::Activate,
        );
    }
    Ok(ok(&Response {
        stream_arn: stream_arn(account, &name, created.meta.created_ms),
    }))
}

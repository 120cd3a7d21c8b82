//! The Kinesis Video Streams API family: rest-json, every operation a `POST /<action>` with a
//! JSON body (control plane, GetMedia, archived media), plus PutMedia, whose request body is one
//! long MKV upload that is streamed, never buffered.
//!
//! [`dispatch`] is one `match` on the action path. Each implemented action gets an arm calling
//! its own module (`api/video/<action>.rs`), placed before the catch-all arms. An unknown action
//! answers 404 `UnknownOperationException` (what AWS's rest-json services answer for a path they
//! do not route); a real KVS action not implemented here yet answers the same, with a message
//! saying so. 404 matters for the C producer, which reads only the status.
//!
//! The control plane (`kinesisvideo`): [`create_stream`], [`describe_stream`], [`list_streams`],
//! [`update_stream`], [`delete_stream`], [`retention`] (UpdateDataRetention), [`data_endpoint`]
//! (GetDataEndpoint) and [`tags`] (both tagging APIs). They share [`common`]: the call context,
//! body decoding (every malformed body is an `InvalidArgumentException`), the model's
//! constraints and the `StreamInfo` shape. What a video stream *is* (catalog naming, ARNs,
//! lookup by name or ARN) lives in [`crate::video`].
//!
//! In `--limits aws` mode the control-plane call rates of [`crate::video::limits`] apply: the
//! per-account rate here, before the handler runs; the per-stream rate once the handler has found
//! its stream ([`common::Call::stream`]).
//!
//! Errors use the rest-json table in [`crate::api::error::rest_json`].

use http::Request;
use http::request::Parts;

use crate::api::{ApiError, ErrorKind, HandlerResult, RequestContext};
use crate::http::Body;
use crate::state::AppState;

use self::common::Call;

mod archive;
mod common;
mod create_stream;
mod data_endpoint;
mod delete_stream;
mod describe_stream;
mod get_media;
mod list_streams;
mod put_media;
mod retention;
mod tags;
mod update_stream;

macro_rules! actions {
    ($($action:literal),* $(,)?) => {
        /// The KVS actions timeshard serves or plans to (control plane, media, archived
        /// media), with their metrics labels. Paths are case-sensitive: the resource-tagging
        /// actions really are capitalised.
        const ACTIONS: &[(&str, &str)] = &[$(($action, concat!("video:", $action))),*];
    };
}

actions!(
    // Control plane (`kinesisvideo`).
    "createStream",
    "describeStream",
    "listStreams",
    "updateStream",
    "deleteStream",
    "updateDataRetention",
    "getDataEndpoint",
    "tagStream",
    "untagStream",
    "listTagsForStream",
    "TagResource",
    "UntagResource",
    "ListTagsForResource",
    // Media (`kinesis-video-media`).
    "getMedia",
    // Archived media (`kinesis-video-archived-media`).
    "listFragments",
    "getMediaForFragmentList",
    "getClip",
    "getHLSStreamingSessionURL",
    "getDASHStreamingSessionURL",
    "getImages",
);

/// The metrics label for an action path: `video:<action>` for a KVS action, `video:unknown`
/// for anything else (so labels stay a closed set).
pub fn route_label(action: &str) -> &'static str {
    ACTIONS
        .iter()
        .find(|(name, _)| *name == action)
        .map_or("video:unknown", |(_, label)| label)
}

/// The action path as the `'static` name in [`ACTIONS`], if it is a KVS action.
fn known_action(action: &str) -> Option<&'static str> {
    ACTIONS
        .iter()
        .find(|(name, _)| *name == action)
        .map(|(name, _)| *name)
}

fn not_implemented(action: &str) -> ApiError {
    ApiError::new(
        ErrorKind::UnknownOperation,
        format!("/{action} is not implemented by this server yet."),
    )
}

fn unknown(action: &str) -> ApiError {
    ApiError::new(
        ErrorKind::UnknownOperation,
        format!("Unknown operation: POST /{action}."),
    )
}

/// Runs one authenticated video request whose (JSON) body has been read.
pub(crate) async fn dispatch(
    state: &AppState,
    _ctx: &RequestContext,
    action: &str,
    _parts: &Parts,
    body: &[u8],
) -> HandlerResult {
    let Some(action) = known_action(action) else {
        return Err(unknown(action));
    };
    let call = Call {
        state,
        action,
        now_ms: state.now_ms(),
    };
    call.throttle_account()?;
    match action {
        "createStream" => create_stream::handle(&call, body).await,
        "describeStream" => describe_stream::handle(&call, body).await,
        "listStreams" => list_streams::handle(&call, body).await,
        "updateStream" => update_stream::handle(&call, body).await,
        "deleteStream" => delete_stream::handle(&call, body).await,
        "updateDataRetention" => retention::handle(&call, body).await,
        "getDataEndpoint" => data_endpoint::handle(&call, body).await,
        "tagStream" => tags::tag_stream(&call, body).await,
        "untagStream" => tags::untag_stream(&call, body).await,
        "listTagsForStream" => tags::list_tags_for_stream(&call, body).await,
        "TagResource" => tags::tag_resource(&call, body).await,
        "UntagResource" => tags::untag_resource(&call, body).await,
        "ListTagsForResource" => tags::list_tags_for_resource(&call, body).await,
        "getMedia" => get_media::handle(&call, body).await,
        "listFragments" => archive::list_fragments(&call, body).await,
        "getMediaForFragmentList" => archive::get_media_for_fragment_list(&call, body).await,
        action => Err(not_implemented(action)),
    }
}

/// PutMedia: an authenticated request whose body is still streaming in. The handler will
/// answer 200 at once and stream acks while it reads the body (full duplex).
pub(crate) async fn put_media(
    state: &AppState,
    ctx: &RequestContext,
    req: Request<Body>,
) -> HandlerResult {
    put_media::handle(state, ctx, req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_a_closed_set() {
        assert_eq!(route_label("createStream"), "video:createStream");
        assert_eq!(route_label("TagResource"), "video:TagResource");
        assert_eq!(route_label("tagresource"), "video:unknown");
        assert_eq!(route_label("bogus"), "video:unknown");
    }

    #[test]
    fn every_action_label_names_its_action() {
        for (name, label) in ACTIONS {
            assert_eq!(label.strip_prefix("video:"), Some(*name));
        }
    }
}

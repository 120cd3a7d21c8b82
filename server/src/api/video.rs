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
//! Errors use the rest-json table in [`crate::api::error::rest_json`].

use http::Request;
use http::request::Parts;

use crate::api::{ApiError, ErrorKind, HandlerResult, RequestContext};
use crate::http::Body;
use crate::state::AppState;

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

fn is_video_action(action: &str) -> bool {
    ACTIONS.iter().any(|(name, _)| *name == action)
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
    _state: &AppState,
    _ctx: &RequestContext,
    action: &str,
    _parts: &Parts,
    _body: &[u8],
) -> HandlerResult {
    match action {
        // Implemented actions go here, one arm each, e.g.
        // "createStream" => create_stream::handle(state, ctx, parts, body).await,
        action if is_video_action(action) => Err(not_implemented(action)),
        action => Err(unknown(action)),
    }
}

/// PutMedia: an authenticated request whose body is still streaming in. The handler will
/// answer 200 at once and stream acks while it reads the body (full duplex).
pub(crate) async fn put_media(
    _state: &AppState,
    _ctx: &RequestContext,
    _req: Request<Body>,
) -> HandlerResult {
    Err(not_implemented("putMedia"))
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

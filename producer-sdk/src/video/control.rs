//! The Kinesis Video Streams control-plane and archived-media calls the producer and consumers
//! need: DescribeStream, CreateStream, GetDataEndpoint and ListFragments.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::client::{Api, Endpoint, HttpClient};
use crate::error::Error;

/// The parts of DescribeStream's `StreamInfo` the SDK uses.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct StreamInfo {
    pub stream_name: String,
    #[serde(rename = "StreamARN")]
    pub stream_arn: String,
    pub status: String,
    #[serde(default)]
    pub data_retention_in_hours: u64,
    #[serde(default)]
    pub media_type: Option<String>,
}

/// What a stream is created with when it does not exist.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub retention_hours: u64,
    pub media_type: Option<String>,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            retention_hours: 24,
            media_type: Some("video/h264".to_owned()),
        }
    }
}

/// Which API a data endpoint is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaApi {
    PutMedia,
    GetMedia,
    ListFragments,
    GetMediaForFragmentList,
}

impl MediaApi {
    fn name(self) -> &'static str {
        match self {
            MediaApi::PutMedia => "PUT_MEDIA",
            MediaApi::GetMedia => "GET_MEDIA",
            MediaApi::ListFragments => "LIST_FRAGMENTS",
            MediaApi::GetMediaForFragmentList => "GET_MEDIA_FOR_FRAGMENT_LIST",
        }
    }
}

/// A fragment as ListFragments lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedFragment {
    pub fragment_number: String,
    pub producer_timestamp_ms: i64,
    pub server_timestamp_ms: i64,
    pub size_bytes: u64,
    pub duration_ms: u64,
}

/// Which clock a ListFragments range is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    Producer,
    Server,
}

/// Calls against one control-plane endpoint.
#[derive(Debug, Clone)]
pub struct VideoControl {
    client: HttpClient,
    endpoint: Endpoint,
}

impl VideoControl {
    pub fn new(client: HttpClient, endpoint: Endpoint) -> VideoControl {
        VideoControl { client, endpoint }
    }

    pub fn client(&self) -> &HttpClient {
        &self.client
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// DescribeStream; `Ok(None)` when the stream does not exist (HTTP 404).
    pub async fn describe_stream(&self, stream: &str) -> Result<Option<StreamInfo>, Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Answer {
            stream_info: StreamInfo,
        }
        let result = self
            .client
            .call(
                Api::Video,
                &self.endpoint,
                "describeStream",
                &json!({ "StreamName": stream }),
            )
            .await;
        match result {
            Ok(body) => {
                let answer: Answer = serde_json::from_slice(&body)
                    .map_err(|e| Error::protocol("DescribeStream answer", &e))?;
                Ok(Some(answer.stream_info))
            }
            Err(Error::Service { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The KVS producers' start-up: DescribeStream, CreateStream on 404, then DescribeStream
    /// until the stream is ACTIVE. Returns the stream and whether this call created it.
    pub async fn ensure_stream(
        &self,
        stream: &str,
        create: Option<&CreateOptions>,
    ) -> Result<(StreamInfo, bool), Error> {
        let mut created = false;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match self.describe_stream(stream).await? {
                Some(info) if info.status == "ACTIVE" => return Ok((info, created)),
                Some(info) if info.status == "DELETING" => {
                    return Err(Error::Config(format!("stream '{stream}' is being deleted")));
                }
                Some(_) => {}
                None if created => {}
                None => {
                    let Some(options) = create else {
                        return Err(Error::Config(format!(
                            "stream '{stream}' does not exist (and creating it was not asked for)"
                        )));
                    };
                    let mut body = json!({
                        "StreamName": stream,
                        "DataRetentionInHours": options.retention_hours,
                    });
                    if let Some(media_type) = &options.media_type {
                        body["MediaType"] = json!(media_type);
                    }
                    match self
                        .client
                        .call(Api::Video, &self.endpoint, "createStream", &body)
                        .await
                    {
                        Ok(_) => {}
                        // Another producer created it between our two calls.
                        Err(e) if e.code() == Some("ResourceInUseException") => {}
                        Err(e) => return Err(e),
                    }
                    created = true;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout(
                    format!("waiting for stream '{stream}' to become ACTIVE"),
                    Duration::from_secs(60),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// GetDataEndpoint for `api`.
    pub async fn data_endpoint(&self, stream: &str, api: MediaApi) -> Result<Endpoint, Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Answer {
            data_endpoint: String,
        }
        let body = self
            .client
            .call(
                Api::Video,
                &self.endpoint,
                "getDataEndpoint",
                &json!({ "StreamName": stream, "APIName": api.name() }),
            )
            .await?;
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|e| Error::protocol("GetDataEndpoint answer", &e))?;
        Endpoint::parse(&answer.data_endpoint)
    }
}

/// ListFragments against an archived-media endpoint, every page, sorted by producer timestamp.
pub async fn list_fragments(
    client: &HttpClient,
    endpoint: &Endpoint,
    stream: &str,
    clock: TimestampType,
    start_ms: i64,
    end_ms: i64,
) -> Result<Vec<ListedFragment>, Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        #[serde(default)]
        fragments: Vec<Wire>,
        #[serde(default)]
        next_token: Option<String>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Wire {
        fragment_number: String,
        producer_timestamp: f64,
        server_timestamp: f64,
        fragment_size_in_bytes: u64,
        fragment_length_in_milliseconds: u64,
    }
    let selector_type = match clock {
        TimestampType::Producer => "PRODUCER_TIMESTAMP",
        TimestampType::Server => "SERVER_TIMESTAMP",
    };
    let mut out = Vec::new();
    let mut next_token: Option<String> = None;
    loop {
        let mut body = json!({ "StreamName": stream, "MaxResults": 1000 });
        match &next_token {
            Some(token) => body["NextToken"] = json!(token),
            None => {
                body["FragmentSelector"] = json!({
                    "FragmentSelectorType": selector_type,
                    "TimestampRange": {
                        "StartTimestamp": start_ms as f64 / 1000.0,
                        "EndTimestamp": end_ms as f64 / 1000.0,
                    }
                });
            }
        }
        let answer = client
            .call(Api::Video, endpoint, "listFragments", &body)
            .await?;
        let answer: Answer = serde_json::from_slice(&answer)
            .map_err(|e| Error::protocol("ListFragments answer", &e))?;
        out.extend(answer.fragments.into_iter().map(|f| ListedFragment {
            fragment_number: f.fragment_number,
            producer_timestamp_ms: (f.producer_timestamp * 1000.0).round() as i64,
            server_timestamp_ms: (f.server_timestamp * 1000.0).round() as i64,
            size_bytes: f.fragment_size_in_bytes,
            duration_ms: f.fragment_length_in_milliseconds,
        }));
        match answer.next_token {
            Some(token) if !token.is_empty() => next_token = Some(token),
            _ => break,
        }
    }
    out.sort_by(|a, b| {
        (a.producer_timestamp_ms, &a.fragment_number)
            .cmp(&(b.producer_timestamp_ms, &b.fragment_number))
    });
    Ok(out)
}

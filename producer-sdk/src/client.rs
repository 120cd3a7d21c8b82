//! One HTTP client for every call the SDK makes: JSON control-plane calls for Kinesis Video
//! Streams (`POST /<action>`) and Kinesis Data Streams (`X-Amz-Target`), and the streamed media
//! responses consumers read (GetMedia). PutMedia has its own connection ([`crate::video::upload`])
//! because it is full duplex.
//!
//! Plain `http://` only: the SDK is built for a timeshard server on the same host or network.
//! An `https://` endpoint is refused with a clear error rather than silently sent in clear text.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, USER_AGENT};
use http::{HeaderValue, Request, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest as _, Sha256};

use crate::auth::Signer;
use crate::error::Error;

/// The user agent on every request.
pub const USER_AGENT_VALUE: &str = concat!("timeshard-producer/", env!("CARGO_PKG_VERSION"));

/// How long a control-plane call may take, connection included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// An endpoint URL, checked: `http://host[:port]`, no path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port` (port 80 when the URL has none).
    pub authority: String,
    /// The URL as given, without a trailing slash.
    pub url: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, Error> {
        let trimmed = url.trim_end_matches('/');
        let uri: Uri = trimmed
            .parse()
            .map_err(|e| Error::Config(format!("endpoint '{url}' is not a URL: {e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(Error::Config(format!(
                    "endpoint '{url}': https is not supported by this producer; use http:// (a timeshard server on a trusted network, or a TLS-terminating proxy in front of it)"
                )));
            }
            _ => {
                return Err(Error::Config(format!(
                    "endpoint '{url}' must start with http://"
                )));
            }
        }
        let Some(authority) = uri.authority() else {
            return Err(Error::Config(format!("endpoint '{url}' has no host")));
        };
        if !matches!(uri.path(), "" | "/") {
            return Err(Error::Config(format!(
                "endpoint '{url}' must not have a path"
            )));
        }
        let authority = if authority.port().is_some() {
            authority.to_string()
        } else {
            format!("{}:80", authority.host())
        };
        Ok(Endpoint {
            authority,
            url: trimmed.to_owned(),
        })
    }
}

/// The JSON-over-HTTP client with signing. Cheap to clone; connections are pooled.
#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: HyperClient<HttpConnector, Full<Bytes>>,
    signer: Signer,
}

/// Which API family a call belongs to: decides the signing name and the request shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// Kinesis Video Streams (control plane, media, archived media): `POST /<action>`.
    Video,
    /// Kinesis Data Streams: `POST /` with `X-Amz-Target: Kinesis_20131202.<action>`.
    Data,
}

impl Api {
    fn signing_name(self) -> &'static str {
        match self {
            Api::Video => "kinesisvideo",
            Api::Data => "kinesis",
        }
    }
}

impl HttpClient {
    pub fn new(signer: Signer) -> HttpClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        let inner = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        HttpClient { inner, signer }
    }

    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    fn request(
        &self,
        api: Api,
        endpoint: &Endpoint,
        action: &str,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, Error> {
        let (path, content_type) = match api {
            Api::Video => (format!("/{action}"), "application/json"),
            Api::Data => ("/".to_owned(), "application/x-amz-json-1.1"),
        };
        let uri: Uri = format!("{}{path}", endpoint.url)
            .parse()
            .map_err(|e| Error::Config(format!("request URL for {action}: {e}")))?;
        let mut builder = Request::post(uri)
            .header(HOST, endpoint.authority.as_str())
            .header(CONTENT_TYPE, content_type)
            .header(USER_AGENT, USER_AGENT_VALUE);
        if api == Api::Data {
            builder = builder.header("x-amz-target", format!("Kinesis_20131202.{action}"));
        }
        let payload_hash = hex_sha256(&body);
        let mut request = builder
            .body(Full::new(body))
            .map_err(|e| Error::Config(format!("building {action}: {e}")))?;
        request.headers_mut().insert(
            "x-amz-content-sha256",
            HeaderValue::from_str(&payload_hash)
                .map_err(|e| Error::Config(format!("payload hash header: {e}")))?,
        );
        self.signer
            .sign(&mut request, api.signing_name(), &payload_hash)?;
        Ok(request)
    }

    /// Sends a JSON call and returns the response body of a 2xx answer; any other status becomes
    /// [`Error::Service`] with the AWS error code and message.
    pub async fn call(
        &self,
        api: Api,
        endpoint: &Endpoint,
        action: &str,
        body: &serde_json::Value,
    ) -> Result<Bytes, Error> {
        let body = Bytes::from(serde_json::to_vec(body).map_err(|e| Error::Config(e.to_string()))?);
        self.call_bytes(api, endpoint, action, body).await
    }

    /// [`HttpClient::call`] with a body already encoded.
    pub async fn call_bytes(
        &self,
        api: Api,
        endpoint: &Endpoint,
        action: &str,
        body: Bytes,
    ) -> Result<Bytes, Error> {
        let fut = async {
            let response = self.send(api, endpoint, action, body).await?;
            response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .map_err(|e| Error::connection(format!("{action} response"), &e))
        };
        tokio::time::timeout(CALL_TIMEOUT, fut)
            .await
            .map_err(|_| Error::Timeout(action.to_owned(), CALL_TIMEOUT))?
    }

    /// Sends a call and returns the response with its body unread, for streamed answers
    /// (GetMedia). Errors are read in full and returned as [`Error::Service`].
    pub async fn send(
        &self,
        api: Api,
        endpoint: &Endpoint,
        action: &str,
        body: Bytes,
    ) -> Result<http::Response<Incoming>, Error> {
        let request = self.request(api, endpoint, action, body)?;
        let response = self.inner.request(request).await.map_err(|e| {
            Error::connection(format!("{action} to {}", endpoint.url), &error_chain(&e))
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let header_code = response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = tokio::time::timeout(CALL_TIMEOUT, response.into_body().collect())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Err(service_error(action, status, header_code, &body))
    }
}

/// Builds [`Error::Service`] from an error answer: the code from `x-amzn-ErrorType` or the JSON
/// `__type` (after any `#`), the message from `message` or `Message`.
pub(crate) fn service_error(
    action: &str,
    status: u16,
    header_code: Option<String>,
    body: &[u8],
) -> Error {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        json.as_ref()
            .and_then(|j| j.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let code = header_code
        .map(|c| c.split(':').next().unwrap_or_default().to_owned())
        .filter(|c| !c.is_empty())
        .or_else(|| field("__type").map(|t| t.rsplit('#').next().unwrap_or(&t).to_owned()))
        .unwrap_or_else(|| format!("HTTP{status}"));
    let message = field("message")
        .or_else(|| field("Message"))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(500).collect());
    Error::Service {
        operation: action.to_owned(),
        status,
        code,
        message,
    }
}

/// An error and its sources on one line ("client error (Connect): tcp connect error: ...").
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

pub(crate) fn hex_sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:4567/").expect("ok");
        assert_eq!(e.authority, "127.0.0.1:4567");
        assert_eq!(e.url, "http://127.0.0.1:4567");
        assert_eq!(
            Endpoint::parse("http://cams.local").expect("ok").authority,
            "cams.local:80"
        );
        for bad in [
            "https://x",
            "ftp://x",
            "127.0.0.1:4567",
            "http://x/path",
            "nota url",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn service_errors_from_header_or_body() {
        let e = service_error(
            "DescribeStream",
            404,
            Some("ResourceNotFoundException:http://internal.amazon.com/coral/".to_owned()),
            br#"{"Message":"The requested stream is not found"}"#,
        );
        assert_eq!(e.code(), Some("ResourceNotFoundException"));
        assert!(e.to_string().contains("not found"), "{e}");
        let e = service_error(
            "PutRecords",
            400,
            None,
            br#"{"__type":"com.amazon#ProvisionedThroughputExceededException","message":"slow down"}"#,
        );
        assert_eq!(e.code(), Some("ProvisionedThroughputExceededException"));
        assert!(e.is_retriable());
        let e = service_error("X", 403, None, b"denied");
        assert!(e.is_auth());
        assert!(!e.is_retriable());
    }
}

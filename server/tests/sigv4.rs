//! The SigV4 verifier against requests signed by the real AWS signer (`aws-sigv4`, the crate
//! the AWS SDK for Rust uses), including the signing styles of the KVS producers:
//! the C producer (no x-amz-content-sha256, empty-string payload hash, hop-by-hop headers and
//! user-agent signed, session token unsigned) and the Java producer (UNSIGNED-PAYLOAD, header
//! added after signing).

#![allow(clippy::unwrap_used)]

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    SessionTokenMode, SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http::request::Parts;
use http::{HeaderName, HeaderValue};
use timeshard_server::api::sigv4::{EMPTY_SHA256, Payload, SigningService, Verifier};
use timeshard_server::api::{ApiError, ErrorKind};
use timeshard_server::config::Credential;

const AKID: &str = "AKIDTIMESHARDTEST";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const REGION: &str = "us-east-1";
const HOST: &str = "127.0.0.1:4567";

/// 2024-05-01T12:00:00Z.
fn signing_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_714_564_800)
}

fn ms(t: SystemTime) -> i64 {
    i64::try_from(t.duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

fn verifier() -> Verifier {
    Verifier::new(
        &[Credential::new(AKID, SECRET)],
        REGION,
        Duration::from_secs(300),
    )
}

/// A request as a client builds it before signing.
struct Unsigned {
    method: &'static str,
    path_and_query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Unsigned {
    fn new(
        method: &'static str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Self {
        let mut all = vec![("host".to_owned(), HOST.to_owned())];
        all.extend(
            headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        Unsigned {
            method,
            path_and_query: path_and_query.to_owned(),
            headers: all,
            body: body.to_vec(),
        }
    }

    fn kinesis(target: &str, body: &str) -> Self {
        Unsigned::new(
            "POST",
            "/",
            &[
                ("content-type", "application/x-amz-json-1.1"),
                ("x-amz-target", target),
                ("user-agent", "aws-sdk-rust/1.0"),
            ],
            body.as_bytes(),
        )
    }
}

/// How to sign.
struct Signing {
    service: &'static str,
    secret: &'static str,
    token: Option<&'static str>,
    time: SystemTime,
    body: Option<SignableBody<'static>>,
    settings: SigningSettings,
}

impl Signing {
    fn for_service(service: &'static str) -> Self {
        Signing {
            service,
            secret: SECRET,
            token: None,
            time: signing_time(),
            body: None,
            settings: SigningSettings::default(),
        }
    }
}

/// Signs `req` with aws-sigv4 and returns the request head as the server sees it (origin-form
/// URI, every header as sent).
fn sign_request(req: &Unsigned, how: Signing) -> Parts {
    let identity: Identity =
        Credentials::new(AKID, how.secret, how.token.map(str::to_owned), None, "test").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name(how.service)
        .time(how.time)
        .settings(how.settings)
        .build()
        .unwrap()
        .into();
    let uri = format!("http://{HOST}{}", req.path_and_query);
    let body = how.body.unwrap_or(SignableBody::Bytes(&req.body));
    let signable = SignableRequest::new(
        req.method,
        Cow::Owned(uri.clone()),
        req.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        body,
    )
    .unwrap();
    let (instructions, _signature) = sign(signable, &params).unwrap().into_parts();
    let mut builder = http::Request::builder().method(req.method).uri(uri);
    for (k, v) in &req.headers {
        builder = builder.header(k, v);
    }
    let mut request = builder.body(()).unwrap();
    instructions.apply_to_request_http1x(&mut request);
    let origin_form = request.uri().path_and_query().unwrap().as_str().to_owned();
    *request.uri_mut() = origin_form.parse().unwrap();
    request.into_parts().0
}

/// A ListStreams request as the SDK builds it, and its head signed for `kinesis` at the signing
/// time.
fn signed_list_streams() -> (Unsigned, Parts) {
    let req = Unsigned::kinesis("Kinesis_20131202.ListStreams", "{}");
    let parts = sign_request(&req, Signing::for_service("kinesis"));
    (req, parts)
}

fn set_header(parts: &mut Parts, name: &'static str, value: &str) {
    parts.headers.insert(
        HeaderName::from_static(name),
        HeaderValue::from_str(value).unwrap(),
    );
}

/// The `authorization` header of a signed request.
fn authorization(parts: &Parts) -> String {
    parts.headers["authorization"].to_str().unwrap().to_owned()
}

/// Verifies `parts` with the test verifier, its clock at `now`: the access key id the request was
/// signed with, or why it was refused.
fn verify_at(
    parts: &Parts,
    service: SigningService,
    payload: Payload<'_>,
    now: SystemTime,
) -> Result<String, ErrorKind> {
    verifier()
        .verify(parts, service, payload, ms(now))
        .map(|p| p.access_key_id)
        .map_err(|e| e.kind)
}

/// [`verify_at`] the signing time.
fn verify(
    parts: &Parts,
    service: SigningService,
    payload: Payload<'_>,
) -> Result<String, ErrorKind> {
    verify_at(parts, service, payload, signing_time())
}

/// Why `verifier` refuses the request at the signing time; panics if it accepts it.
fn refusal(
    verifier: &Verifier,
    parts: &Parts,
    service: SigningService,
    payload: Payload<'_>,
) -> ApiError {
    verifier
        .verify(parts, service, payload, ms(signing_time()))
        .unwrap_err()
}

/// Asserts that the test verifier, its clock at `now`, refuses the request with `kind` and a
/// message starting with `message_prefix`.
#[track_caller]
fn assert_rejected(
    parts: &Parts,
    service: SigningService,
    payload: Payload<'_>,
    now: SystemTime,
    kind: ErrorKind,
    message_prefix: &str,
) {
    let err = verifier()
        .verify(parts, service, payload, ms(now))
        .unwrap_err();
    assert_eq!(err.kind, kind, "{}", err.message);
    assert!(err.message.starts_with(message_prefix), "{}", err.message);
}

#[test]
fn valid_kinesis_request() {
    let (req, parts) = signed_list_streams();
    let body = Payload::Buffered(&req.body);
    let principal = verify(&parts, SigningService::Kinesis, body);
    assert_eq!(principal, Ok(AKID.to_owned()));
}

#[test]
fn valid_kinesisvideo_request() {
    let req = Unsigned::new(
        "POST",
        "/describeStream",
        &[("content-type", "application/json")],
        br#"{"StreamName":"cam-1"}"#,
    );
    let parts = sign_request(&req, Signing::for_service("kinesisvideo"));
    let body = Payload::Buffered(&req.body);
    assert_eq!(
        verify(&parts, SigningService::KinesisVideo, body),
        Ok(AKID.to_owned())
    );
}

#[test]
fn scope_must_name_the_right_service_and_region() {
    let (req, parts) = signed_list_streams();
    let body = Payload::Buffered(&req.body);
    let err = refusal(&verifier(), &parts, SigningService::KinesisVideo, body);
    assert_eq!(err.kind, ErrorKind::InvalidSignature);
    assert!(err.message.contains("'kinesisvideo'"), "{}", err.message);

    let other_region = Verifier::new(
        &[Credential::new(AKID, SECRET)],
        "eu-west-1",
        Duration::from_secs(300),
    );
    let err = refusal(&other_region, &parts, SigningService::Kinesis, body);
    assert_eq!(err.kind, ErrorKind::InvalidSignature);
    assert!(err.message.contains("region"), "{}", err.message);
}

#[test]
fn wrong_secret_is_an_invalid_signature() {
    let req = Unsigned::kinesis("Kinesis_20131202.ListStreams", "{}");
    let parts = sign_request(
        &req,
        Signing {
            secret: "not-the-secret",
            ..Signing::for_service("kinesis")
        },
    );
    assert_rejected(
        &parts,
        SigningService::Kinesis,
        Payload::Buffered(&req.body),
        signing_time(),
        ErrorKind::InvalidSignature,
        "The request signature we calculated does not match",
    );
}

#[test]
fn unknown_access_key_is_unrecognized() {
    let (req, parts) = signed_list_streams();
    let other = Verifier::new(
        &[Credential::new("AKIDOTHER", SECRET)],
        REGION,
        Duration::from_secs(300),
    );
    let body = Payload::Buffered(&req.body);
    let err = refusal(&other, &parts, SigningService::Kinesis, body);
    assert_eq!(err.kind, ErrorKind::UnrecognizedClient);
}

#[test]
fn clock_skew_beyond_the_limit_is_rejected_both_ways() {
    let (req, parts) = signed_list_streams();
    let body = Payload::Buffered(&req.body);
    let t = signing_time();
    // Within 5 minutes either way: fine.
    for now in [t + Duration::from_secs(299), t - Duration::from_secs(299)] {
        assert!(verify_at(&parts, SigningService::Kinesis, body, now).is_ok());
    }
    // Beyond: expired (server clock ahead) or not yet current (server clock behind).
    assert_rejected(
        &parts,
        SigningService::Kinesis,
        body,
        t + Duration::from_secs(301),
        ErrorKind::SignatureExpired,
        "Signature expired: 20240501T120000Z is now earlier than",
    );
    assert_rejected(
        &parts,
        SigningService::Kinesis,
        body,
        t - Duration::from_secs(301),
        ErrorKind::SignatureExpired,
        "Signature not yet current",
    );
}

#[test]
fn x_amz_date_must_match_the_signature() {
    let (req, mut parts) = signed_list_streams();
    let body = Payload::Buffered(&req.body);
    // Same day, other second: the string to sign changes.
    set_header(&mut parts, "x-amz-date", "20240501T120001Z");
    assert_eq!(
        verify(&parts, SigningService::Kinesis, body),
        Err(ErrorKind::InvalidSignature)
    );
    // Other day: the credential scope no longer matches the date.
    set_header(&mut parts, "x-amz-date", "20240502T120000Z");
    assert_rejected(
        &parts,
        SigningService::Kinesis,
        body,
        signing_time(),
        ErrorKind::InvalidSignature,
        "Date in Credential scope does not match",
    );
    set_header(&mut parts, "x-amz-date", "2024-05-01T12:00:00Z");
    assert_eq!(
        verify(&parts, SigningService::Kinesis, body),
        Err(ErrorKind::IncompleteSignature)
    );
}

#[test]
fn unsigned_header_may_change_signed_header_may_not() {
    let (req, parts) = signed_list_streams();
    let body = Payload::Buffered(&req.body);
    let auth = authorization(&parts);
    // aws-sigv4 leaves user-agent unsigned by default.
    assert!(!auth.contains("user-agent"), "{auth}");
    assert!(auth.contains("x-amz-target"), "{auth}");

    let mut tampered = parts.clone();
    set_header(&mut tampered, "user-agent", "something-else/2.0");
    set_header(&mut tampered, "x-forwarded-for", "192.0.2.1");
    assert!(verify(&tampered, SigningService::Kinesis, body).is_ok());

    let mut tampered = parts.clone();
    set_header(
        &mut tampered,
        "x-amz-target",
        "Kinesis_20131202.DeleteStream",
    );
    assert_eq!(
        verify(&tampered, SigningService::Kinesis, body),
        Err(ErrorKind::InvalidSignature)
    );

    let mut tampered = parts;
    tampered.headers.remove("x-amz-target");
    assert_eq!(
        verify(&tampered, SigningService::Kinesis, body),
        Err(ErrorKind::InvalidSignature)
    );
}

#[test]
fn tampered_body_is_an_invalid_signature() {
    let req = Unsigned::kinesis("Kinesis_20131202.DeleteStream", r#"{"StreamName":"a"}"#);
    let parts = sign_request(&req, Signing::for_service("kinesis"));
    let signed_body = Payload::Buffered(&req.body);
    let other_body = Payload::Buffered(br#"{"StreamName":"b"}"#);
    assert!(verify(&parts, SigningService::Kinesis, signed_body).is_ok());
    assert_eq!(
        verify(&parts, SigningService::Kinesis, other_body),
        Err(ErrorKind::InvalidSignature)
    );
}

#[test]
fn declared_content_hash_must_match_a_buffered_body() {
    let req = Unsigned::kinesis("Kinesis_20131202.DeleteStream", r#"{"StreamName":"a"}"#);
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = aws_sigv4::http_request::PayloadChecksumKind::XAmzSha256;
    let parts = sign_request(
        &req,
        Signing {
            settings,
            ..Signing::for_service("kinesis")
        },
    );
    assert!(parts.headers.contains_key("x-amz-content-sha256"));
    let signed_body = Payload::Buffered(&req.body);
    let other_body = Payload::Buffered(b"{}");
    assert!(verify(&parts, SigningService::Kinesis, signed_body).is_ok());
    let err = refusal(&verifier(), &parts, SigningService::Kinesis, other_body);
    assert_eq!(err.kind, ErrorKind::InvalidSignature);
    assert!(
        err.message.contains("x-amz-content-sha256"),
        "{}",
        err.message
    );
}

#[test]
fn header_whitespace_and_repeated_headers_are_canonicalized_like_the_sdk() {
    let req = Unsigned::new(
        "POST",
        "/describeStream",
        &[
            ("x-amz-meta-note", "  several   spaces  here "),
            ("x-amz-meta-multi", "a"),
            ("x-amz-meta-multi", "b  c"),
        ],
        b"{}",
    );
    let parts = sign_request(&req, Signing::for_service("kinesisvideo"));
    assert_eq!(parts.headers.get_all("x-amz-meta-multi").iter().count(), 2);
    let body = Payload::Buffered(b"{}");
    assert!(verify(&parts, SigningService::KinesisVideo, body).is_ok());
}

#[test]
fn encoded_paths_and_query_strings() {
    let req = Unsigned::new("POST", "/some%20action?b=2&a=x%2Fy&a=1&empty=", &[], b"{}");
    let parts = sign_request(&req, Signing::for_service("kinesisvideo"));
    let body = Payload::Buffered(b"{}");
    assert_eq!(parts.uri.path(), "/some%20action");
    assert!(verify(&parts, SigningService::KinesisVideo, body).is_ok());

    let mut tampered = parts;
    tampered.uri = "/some%20action?b=3&a=x%2Fy&a=1&empty=".parse().unwrap();
    assert_eq!(
        verify(&tampered, SigningService::KinesisVideo, body),
        Err(ErrorKind::InvalidSignature)
    );
}

fn put_media_request(extra: &[(&str, &str)]) -> Unsigned {
    let mut headers = vec![
        ("x-amzn-stream-name", "cam-1"),
        ("x-amzn-fragment-timecode-type", "ABSOLUTE"),
        ("x-amzn-producer-start-timestamp", "1714564800.5"),
        ("x-amzn-fragment-acknowledgment-required", "1"),
    ];
    headers.extend_from_slice(extra);
    Unsigned::new("POST", "/putMedia", &headers, b"")
}

/// Verifies a streaming kinesisvideo request (PutMedia) at the signing time.
fn verify_streaming(parts: &Parts) -> Result<String, ErrorKind> {
    verify(parts, SigningService::KinesisVideo, Payload::Streaming)
}

/// Java producer: UNSIGNED-PAYLOAD is signed, and `x-amz-content-sha256: UNSIGNED-PAYLOAD` is
/// added after signing, so the header itself is not in SignedHeaders.
#[test]
fn put_media_java_producer_style_unsigned_payload() {
    let req = put_media_request(&[("user-agent", "AWS-SDK-Java")]);
    let parts = sign_request(
        &req,
        Signing {
            body: Some(SignableBody::UnsignedPayload),
            ..Signing::for_service("kinesisvideo")
        },
    );
    let auth = authorization(&parts);
    assert!(!auth.contains("x-amz-content-sha256"), "{auth}");

    // Without the header, the server assumes the empty-string hash: no match.
    assert_eq!(verify_streaming(&parts), Err(ErrorKind::InvalidSignature));
    let mut with_header = parts;
    set_header(&mut with_header, "x-amz-content-sha256", "UNSIGNED-PAYLOAD");
    assert_eq!(verify_streaming(&with_header), Ok(AKID.to_owned()));
}

/// C producer: empty-string payload hash with no x-amz-content-sha256 header; user-agent,
/// connection and transfer-encoding are signed; the session token is added unsigned; the
/// content-type is added after signing.
#[test]
fn put_media_c_producer_style_empty_hash_with_hop_by_hop_headers() {
    let req = put_media_request(&[
        (
            "user-agent",
            "AWS-SDK-KVS-CPP-CLIENT/3.4.1 GCC/12.2.0 Linux/6.1.0 x86_64",
        ),
        ("transfer-encoding", "chunked"),
        ("connection", "keep-alive"),
    ]);
    let mut settings = SigningSettings::default();
    // Sign every header the producer set, hop-by-hop ones included.
    settings.excluded_headers = Some(vec![Cow::Borrowed("authorization")]);
    settings.session_token_mode = SessionTokenMode::Exclude;
    let parts = sign_request(
        &req,
        Signing {
            token: Some("FQoGZXIvYXdzEBYaDTEMPORARYTOKEN"),
            body: Some(SignableBody::Precomputed(EMPTY_SHA256.to_owned())),
            settings,
            ..Signing::for_service("kinesisvideo")
        },
    );
    let auth = authorization(&parts);
    assert!(
        auth.contains("SignedHeaders=connection;host;transfer-encoding;user-agent;"),
        "{auth}"
    );
    assert!(!auth.contains("x-amz-security-token"), "{auth}");
    assert!(parts.headers.contains_key("x-amz-security-token"));
    assert!(!parts.headers.contains_key("x-amz-content-sha256"));

    let mut parts = parts;
    set_header(&mut parts, "content-type", "application/json");
    assert_eq!(verify_streaming(&parts), Ok(AKID.to_owned()));

    // A proxy that strips the hop-by-hop headers breaks the signature, as it would on AWS.
    let mut stripped = parts.clone();
    stripped.headers.remove("connection");
    assert_eq!(
        verify_streaming(&stripped),
        Err(ErrorKind::InvalidSignature)
    );
    let mut changed = parts;
    set_header(&mut changed, "x-amzn-stream-name", "cam-2");
    assert_eq!(verify_streaming(&changed), Err(ErrorKind::InvalidSignature));
}

#[test]
fn session_token_added_after_signing_is_ignored_and_signed_token_is_covered() {
    let req = put_media_request(&[]);
    let mut parts = sign_request(
        &req,
        Signing {
            body: Some(SignableBody::Precomputed(EMPTY_SHA256.to_owned())),
            ..Signing::for_service("kinesisvideo")
        },
    );
    set_header(&mut parts, "x-amz-security-token", "added-after-signing");
    assert!(verify_streaming(&parts).is_ok());

    // The AWS SDKs sign the token (SessionTokenMode::Include is the default).
    let parts = sign_request(
        &req,
        Signing {
            token: Some("signed-token"),
            body: Some(SignableBody::Precomputed(EMPTY_SHA256.to_owned())),
            ..Signing::for_service("kinesisvideo")
        },
    );
    assert!(authorization(&parts).contains("x-amz-security-token"));
    assert!(verify_streaming(&parts).is_ok());
    let mut tampered = parts;
    set_header(&mut tampered, "x-amz-security-token", "other-token");
    assert_eq!(
        verify_streaming(&tampered),
        Err(ErrorKind::InvalidSignature)
    );
}

#[test]
fn presigned_query_string_requests() {
    let req = Unsigned::new("POST", "/listFragments?extra=1", &[], b"{}");
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(Duration::from_secs(600));
    let parts = sign_request(
        &req,
        Signing {
            settings,
            ..Signing::for_service("kinesisvideo")
        },
    );
    assert!(parts.headers.get("authorization").is_none());
    assert!(
        parts.uri.query().unwrap().contains("X-Amz-Signature="),
        "{}",
        parts.uri
    );
    let body = Payload::Buffered(b"{}");
    let t = signing_time();
    assert!(verify(&parts, SigningService::KinesisVideo, body).is_ok());
    // Valid for its whole X-Amz-Expires, even past the header clock-skew window...
    let later = t + Duration::from_secs(590);
    assert!(verify_at(&parts, SigningService::KinesisVideo, body, later).is_ok());
    // ...and not after.
    let expired = t + Duration::from_secs(601);
    assert_eq!(
        verify_at(&parts, SigningService::KinesisVideo, body, expired),
        Err(ErrorKind::SignatureExpired)
    );
    let mut tampered = parts;
    let query = tampered.uri.query().unwrap().replace("extra=1", "extra=2");
    tampered.uri = format!("/listFragments?{query}").parse().unwrap();
    assert_eq!(
        verify(&tampered, SigningService::KinesisVideo, body),
        Err(ErrorKind::InvalidSignature)
    );
}

#[test]
fn missing_and_malformed_authorization() {
    let (_, signed) = signed_list_streams();
    let check = |parts: &Parts| verify(parts, SigningService::Kinesis, Payload::Buffered(b"{}"));

    let mut none = signed.clone();
    none.headers.remove("authorization");
    assert_eq!(check(&none), Err(ErrorKind::MissingAuthenticationToken));

    let auth = authorization(&signed);
    let cases = [
        // Not SigV4.
        "Basic dXNlcjpwYXNz".to_owned(),
        // SigV4a is not supported.
        auth.replace("AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256"),
        // Parts missing.
        auth.split(", Signature=").next().unwrap().to_owned(),
        auth.replace("SignedHeaders=", "Signed="),
        // A credential with the wrong number of parts or terminator.
        auth.replace("/us-east-1/kinesis/aws4_request", "/us-east-1/aws4_request"),
        auth.replace("aws4_request", "aws5_request"),
        // host not signed.
        format!(
            "AWS4-HMAC-SHA256 Credential={AKID}/20240501/us-east-1/kinesis/aws4_request, SignedHeaders=x-amz-date, Signature={}",
            "0".repeat(64)
        ),
    ];
    for case in cases {
        let mut parts = signed.clone();
        set_header(&mut parts, "authorization", &case);
        assert_eq!(check(&parts), Err(ErrorKind::IncompleteSignature), "{case}");
    }

    let mut no_date = signed.clone();
    no_date.headers.remove("x-amz-date");
    assert_eq!(check(&no_date), Err(ErrorKind::IncompleteSignature));

    // A signed header name that cannot even exist in a request: no such header, no match.
    let mut odd = signed.clone();
    set_header(
        &mut odd,
        "authorization",
        &auth.replace("SignedHeaders=", "SignedHeaders=a(b;"),
    );
    assert_eq!(check(&odd), Err(ErrorKind::InvalidSignature));

    // A signature that is not hex, or of the wrong length, simply does not match.
    let mut bad_sig = signed;
    let short = auth.split(", Signature=").next().unwrap().to_owned() + ", Signature=abc";
    set_header(&mut bad_sig, "authorization", &short);
    assert_eq!(check(&bad_sig), Err(ErrorKind::InvalidSignature));
}

#[test]
fn two_step_verification_checks_headers_before_the_body() {
    let req = Unsigned::kinesis("Kinesis_20131202.ListStreams", "{}");
    let parts = sign_request(
        &req,
        Signing {
            secret: "wrong",
            ..Signing::for_service("kinesis")
        },
    );
    let v = verifier();
    // Step 1 passes: scope, key and clock are fine; only the signature is wrong...
    let pending = v
        .begin(&parts, SigningService::Kinesis, ms(signing_time()))
        .unwrap();
    // ...which step 2 finds.
    assert_eq!(
        pending
            .finish(&parts, Payload::Buffered(&req.body))
            .unwrap_err()
            .kind,
        ErrorKind::InvalidSignature
    );
    // A skewed clock is refused in step 1, before any body would be read.
    let err = v
        .begin(
            &parts,
            SigningService::Kinesis,
            ms(signing_time() + Duration::from_secs(3600)),
        )
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::SignatureExpired);
}

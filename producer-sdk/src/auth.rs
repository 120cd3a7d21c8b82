//! Where the producer's credentials and region come from, and SigV4 signing of its requests.
//!
//! Lookup order, as the AWS CLI and SDKs do it:
//! 1. explicit values (CLI flags, or [`Credentials::new`] in code);
//! 2. the environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`;
//! 3. the shared files: `AWS_SHARED_CREDENTIALS_FILE` (default `~/.aws/credentials`) and
//!    `AWS_CONFIG_FILE` (default `~/.aws/config`), profile `AWS_PROFILE` or `default`.
//!
//! With none found the producer sends unsigned requests, which a timeshard server started without
//! credentials accepts; [`resolve`] reports that so the caller can say it once.
//!
//! The region comes from the explicit value, `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's
//! `region`, else `us-east-1` (the server's default).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;

use crate::error::Error;

/// The region used when nothing names one.
pub const DEFAULT_REGION: &str = "us-east-1";

/// SHA-256 of the empty string: the payload hash signed for a streamed PutMedia body, as the KVS
/// C producer does.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// An access key pair, with a session token for temporary credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl Credentials {
    pub fn new(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token: None,
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Where the credentials in a [`Resolved`] came from, for the one log line about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    Explicit,
    Environment,
    Profile {
        file: PathBuf,
        profile: String,
    },
    /// Nothing found: requests go unsigned.
    None,
}

/// Credentials (if any) and region, resolved.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub credentials: Option<Credentials>,
    pub source: CredentialSource,
    pub region: String,
}

/// What the caller supplies explicitly; everything else comes from the environment and files.
#[derive(Debug, Clone, Default)]
pub struct AuthOptions {
    pub credentials: Option<Credentials>,
    pub profile: Option<String>,
    pub region: Option<String>,
}

/// Resolves credentials and region from `options`, the process environment and the shared files.
pub fn resolve(options: &AuthOptions) -> Result<Resolved, Error> {
    resolve_with(options, &|name| std::env::var(name).ok())
}

/// [`resolve`] with an injectable environment, for tests.
pub fn resolve_with(
    options: &AuthOptions,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Resolved, Error> {
    let env_nonempty = |name: &str| env(name).filter(|v| !v.is_empty());
    let explicit_profile = options
        .profile
        .clone()
        .or_else(|| env_nonempty("AWS_PROFILE"));
    let profile_name = explicit_profile
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let home = env_nonempty("HOME").map(PathBuf::from);
    let aws_file = |var: &str, name: &str| {
        env_nonempty(var)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws").join(name)))
    };
    let credentials_file = aws_file("AWS_SHARED_CREDENTIALS_FILE", "credentials");
    let config_file = aws_file("AWS_CONFIG_FILE", "config");
    // In the credentials file a section is `[name]`; in the config file `[profile name]`, except
    // `[default]`.
    let from_credentials = read_profile(credentials_file.as_deref(), &profile_name, false)?;
    let from_config = read_profile(config_file.as_deref(), &profile_name, true)?;
    if explicit_profile.is_some() && from_credentials.is_none() && from_config.is_none() {
        return Err(Error::Config(format!(
            "AWS profile '{profile_name}' is not in {} or {}",
            show_path(credentials_file.as_deref()),
            show_path(config_file.as_deref())
        )));
    }

    let region = options
        .region
        .clone()
        .or_else(|| env_nonempty("AWS_REGION"))
        .or_else(|| env_nonempty("AWS_DEFAULT_REGION"))
        .or_else(|| from_config.as_ref().and_then(|p| p.get("region").cloned()))
        .or_else(|| {
            from_credentials
                .as_ref()
                .and_then(|p| p.get("region").cloned())
        })
        .unwrap_or_else(|| DEFAULT_REGION.to_owned());

    if let Some(credentials) = &options.credentials {
        return Ok(Resolved {
            credentials: Some(credentials.clone()),
            source: CredentialSource::Explicit,
            region,
        });
    }
    // An explicitly chosen profile wins over the environment's keys, as in the AWS CLI.
    if explicit_profile.is_none() {
        match (
            env_nonempty("AWS_ACCESS_KEY_ID"),
            env_nonempty("AWS_SECRET_ACCESS_KEY"),
        ) {
            (Some(id), Some(secret)) => {
                return Ok(Resolved {
                    credentials: Some(Credentials {
                        access_key_id: id,
                        secret_access_key: secret,
                        session_token: env_nonempty("AWS_SESSION_TOKEN"),
                    }),
                    source: CredentialSource::Environment,
                    region,
                });
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(Error::Config(
                    "only one of AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY is set; set both or neither"
                        .to_owned(),
                ));
            }
            (None, None) => {}
        }
    }
    for (file, profile) in [
        (&credentials_file, &from_credentials),
        (&config_file, &from_config),
    ] {
        let Some(profile) = profile else { continue };
        match (
            profile.get("aws_access_key_id"),
            profile.get("aws_secret_access_key"),
        ) {
            (Some(id), Some(secret)) => {
                return Ok(Resolved {
                    credentials: Some(Credentials {
                        access_key_id: id.clone(),
                        secret_access_key: secret.clone(),
                        session_token: profile.get("aws_session_token").cloned(),
                    }),
                    source: CredentialSource::Profile {
                        file: file.clone().unwrap_or_default(),
                        profile: profile_name.clone(),
                    },
                    region,
                });
            }
            (None, None) => {}
            _ => {
                return Err(Error::Config(format!(
                    "profile '{profile_name}' in {} has only one of aws_access_key_id and aws_secret_access_key",
                    show_path(file.as_deref())
                )));
            }
        }
    }
    if explicit_profile.is_some() {
        return Err(Error::Config(format!(
            "AWS profile '{profile_name}' has no aws_access_key_id/aws_secret_access_key"
        )));
    }
    Ok(Resolved {
        credentials: None,
        source: CredentialSource::None,
        region,
    })
}

fn show_path(path: Option<&Path>) -> String {
    path.map_or_else(|| "(no HOME)".to_owned(), |p| p.display().to_string())
}

/// The keys of one profile in an AWS shared file, or `None` if the file or profile is missing.
fn read_profile(
    path: Option<&Path>,
    profile: &str,
    config_style: bool,
) -> Result<Option<HashMap<String, String>>, Error> {
    let Some(path) = path else { return Ok(None) };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Config(format!("reading {}: {e}", path.display())));
        }
    };
    Ok(parse_profile(&text, profile, config_style))
}

/// INI as the AWS CLI reads it: `[section]`, `key = value`, `#`/`;` comments. Indented lines
/// (nested `s3 =` blocks) are skipped.
fn parse_profile(text: &str, profile: &str, config_style: bool) -> Option<HashMap<String, String>> {
    let wanted = if config_style && profile != "default" {
        format!("profile {profile}")
    } else {
        profile.to_owned()
    };
    let mut found: Option<HashMap<String, String>> = None;
    let mut in_section = false;
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let line = line.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let section = section.split_whitespace().collect::<Vec<_>>().join(" ");
            in_section = section == wanted;
            if in_section {
                found.get_or_insert_with(HashMap::new);
            }
            continue;
        }
        if !in_section {
            continue;
        }
        if let Some((key, value)) = line.split_once('=')
            && let Some(map) = found.as_mut()
        {
            map.insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    found
}

/// Signs requests for one service and region (or leaves them unsigned without credentials).
#[derive(Debug, Clone)]
pub struct Signer {
    credentials: Option<Credentials>,
    region: String,
}

impl Signer {
    pub fn new(credentials: Option<Credentials>, region: impl Into<String>) -> Self {
        Signer {
            credentials,
            region: region.into(),
        }
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn is_signing(&self) -> bool {
        self.credentials.is_some()
    }

    /// Adds `x-amz-date`, the session token and `authorization` to `request`, signing
    /// `payload_hash` (hex SHA-256 of the body, or [`EMPTY_SHA256`] for a streamed PutMedia body)
    /// and every header already on the request. `service` is the signing name: `kinesisvideo`
    /// or `kinesis`.
    pub fn sign<B>(
        &self,
        request: &mut http::Request<B>,
        service: &str,
        payload_hash: &str,
    ) -> Result<(), Error> {
        let Some(credentials) = &self.credentials else {
            return Ok(());
        };
        let identity = aws_credential_types::Credentials::new(
            credentials.access_key_id.clone(),
            credentials.secret_access_key.clone(),
            credentials.session_token.clone(),
            None,
            "timeshard-producer",
        )
        .into();
        let mut settings = SigningSettings::default();
        settings.signature_location = SignatureLocation::Headers;
        settings.excluded_headers = Some(vec![
            Cow::Borrowed("authorization"),
            Cow::Borrowed("user-agent"),
        ]);
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(service)
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| Error::Config(format!("SigV4 parameters: {e}")))?
            .into();
        let uri = request.uri().to_string();
        let headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let signable = SignableRequest::new(
            request.method().as_str(),
            Cow::Owned(uri),
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Precomputed(payload_hash.to_owned()),
        )
        .map_err(|e| Error::Config(format!("SigV4: {e}")))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| Error::Config(format!("SigV4 signing: {e}")))?
            .into_parts();
        instructions.apply_to_request_http1x(request);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn environment_keys_and_region() {
        let env = env_of(&[
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "SECRET"),
            ("AWS_SESSION_TOKEN", "TOKEN"),
            ("AWS_DEFAULT_REGION", "eu-west-1"),
            ("HOME", "/nonexistent"),
        ]);
        let r = resolve_with(&AuthOptions::default(), &env).expect("resolves");
        assert_eq!(r.source, CredentialSource::Environment);
        assert_eq!(r.region, "eu-west-1");
        let c = r.credentials.expect("credentials");
        assert_eq!(
            (c.access_key_id.as_str(), c.session_token.as_deref()),
            ("AKID", Some("TOKEN"))
        );
    }

    #[test]
    fn half_set_environment_is_an_error() {
        let env = env_of(&[("AWS_ACCESS_KEY_ID", "AKID"), ("HOME", "/nonexistent")]);
        let err = resolve_with(&AuthOptions::default(), &env).expect_err("half set");
        assert!(err.to_string().contains("AWS_SECRET_ACCESS_KEY"), "{err}");
    }

    #[test]
    fn profiles_from_both_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let creds = dir.path().join("credentials");
        let config = dir.path().join("config");
        std::fs::write(
            &creds,
            "[default]\naws_access_key_id = D\naws_secret_access_key = DS\n\n# comment\n[cam]\naws_access_key_id=C\naws_secret_access_key=CS\n",
        )
        .expect("write");
        std::fs::write(
            &config,
            "[default]\nregion = ap-south-1\n[profile cam]\nregion = us-west-2\ns3 =\n  max_concurrent_requests = 2\n[profile only-config]\naws_access_key_id = O\naws_secret_access_key = OS\n",
        )
        .expect("write");
        let creds_s = creds.to_string_lossy().into_owned();
        let config_s = config.to_string_lossy().into_owned();
        let base = [
            ("AWS_SHARED_CREDENTIALS_FILE", creds_s.as_str()),
            ("AWS_CONFIG_FILE", config_s.as_str()),
        ];

        let r = resolve_with(&AuthOptions::default(), &env_of(&base)).expect("default");
        assert_eq!(r.credentials.expect("c").access_key_id, "D");
        assert_eq!(r.region, "ap-south-1");

        let mut with_profile = base.to_vec();
        with_profile.push(("AWS_PROFILE", "cam"));
        // The chosen profile wins over keys in the environment.
        with_profile.push(("AWS_ACCESS_KEY_ID", "ENV"));
        with_profile.push(("AWS_SECRET_ACCESS_KEY", "ENVS"));
        let r = resolve_with(&AuthOptions::default(), &env_of(&with_profile)).expect("cam");
        assert_eq!(r.credentials.expect("c").access_key_id, "C");
        assert_eq!(r.region, "us-west-2");

        let options = AuthOptions {
            profile: Some("only-config".to_owned()),
            ..AuthOptions::default()
        };
        let r = resolve_with(&options, &env_of(&base)).expect("only-config");
        assert_eq!(r.credentials.expect("c").access_key_id, "O");

        let options = AuthOptions {
            profile: Some("missing".to_owned()),
            ..AuthOptions::default()
        };
        let err = resolve_with(&options, &env_of(&base)).expect_err("missing profile");
        assert!(err.to_string().contains("'missing'"), "{err}");
    }

    #[test]
    fn nothing_found_means_unsigned() {
        let r = resolve_with(
            &AuthOptions::default(),
            &env_of(&[("HOME", "/nonexistent")]),
        )
        .expect("resolves");
        assert_eq!(r.source, CredentialSource::None);
        assert!(r.credentials.is_none());
        assert_eq!(r.region, DEFAULT_REGION);
    }

    #[test]
    fn explicit_credentials_win() {
        let options = AuthOptions {
            credentials: Some(Credentials::new("X", "XS")),
            region: Some("eu-central-1".to_owned()),
            profile: None,
        };
        let env = env_of(&[
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "SECRET"),
        ]);
        let r = resolve_with(&options, &env).expect("resolves");
        assert_eq!(r.source, CredentialSource::Explicit);
        assert_eq!(r.region, "eu-central-1");
    }
}

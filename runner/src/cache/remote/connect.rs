//! Building the `object_store` clients for a `RemoteUrl`: credentials from the environment (and
//! the AWS files), short timeouts and few retries for lookups, long ones for blob transfers.
//!
//! `object_store`'s defaults suit a long-running service (10 retries within 180 s, 30 s per
//! request): for a build tool a remote that does not answer must cost seconds once, not minutes
//! per stage, and a gigabyte blob must not be cut off at 30 s.

use super::aws_files;
use super::url::{Backend, RemoteUrl};
use object_store::aws::AmazonS3Builder;
use object_store::http::HttpBuilder;
use object_store::local::LocalFileSystem;
use object_store::{ClientOptions, ObjectStore, RetryConfig};
use std::sync::Arc;
use std::time::Duration;

/// Why a remote cannot be used at all (as opposed to failing during a run).
#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteError {
    /// The configuration is wrong: a bad URL, an unreadable config file.
    #[error("{0}")]
    Config(String),
    /// The remote needs credentials the environment does not have.
    #[error("{0}")]
    Credentials(String),
}

/// The clients for one remote.
pub(crate) struct Clients {
    /// Records, HEADs, listing: small requests with a short timeout.
    pub meta: Arc<dyn ObjectStore>,
    /// Blob transfers: no per-request timeout short enough to cut a large blob.
    pub bulk: Arc<dyn ObjectStore>,
    /// Large blobs go up in parts (S3); HTTP servers take one PUT.
    pub multipart: bool,
}

/// The environment variables that may hold HTTP credentials.
pub const AUTH_VAR: &str = "SLUICE_REMOTE_CACHE_AUTH";
pub const TOKEN_VAR: &str = "SLUICE_REMOTE_CACHE_TOKEN";

fn retry() -> RetryConfig {
    RetryConfig {
        max_retries: 2,
        retry_timeout: Duration::from_secs(15),
        ..RetryConfig::default()
    }
}

fn options(long: bool) -> ClientOptions {
    let o = ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_allow_http(true);
    if long {
        // An hour covers a 10 GiB blob at 3 MiB/s; a stalled transfer still ends.
        o.with_timeout(Duration::from_secs(3600))
    } else {
        o.with_timeout(Duration::from_secs(30))
    }
}

pub(crate) fn connect(
    url: &RemoteUrl,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Clients, RemoteError> {
    match &url.backend {
        Backend::File { dir } => {
            std::fs::create_dir_all(dir).map_err(|e| {
                RemoteError::Config(format!(
                    "cannot create the remote cache directory {}: {e}",
                    dir.display()
                ))
            })?;
            let store = LocalFileSystem::new_with_prefix(dir)
                .map_err(|e| RemoteError::Config(format!("cannot use {}: {e}", dir.display())))?;
            let store: Arc<dyn ObjectStore> = Arc::new(store);
            Ok(Clients {
                meta: store.clone(),
                bulk: store,
                multipart: false,
            })
        }
        Backend::Http { base } => {
            let header = http_auth(url, env)?;
            let build = |long: bool| -> Result<Arc<dyn ObjectStore>, RemoteError> {
                let mut o = options(long);
                if let Some(h) = &header {
                    let mut map = object_store::HeaderMap::new();
                    map.insert("authorization", h.clone());
                    o = o.with_default_headers(map);
                }
                let store = HttpBuilder::new()
                    .with_url(base.as_str())
                    .with_retry(retry())
                    .with_client_options(o)
                    .build()
                    .map_err(|e| {
                        RemoteError::Config(format!(
                            "cannot use {}: {}",
                            url.shown,
                            super::describe::error(&e)
                        ))
                    })?;
                Ok(Arc::new(store))
            };
            Ok(Clients {
                meta: build(false)?,
                bulk: build(true)?,
                multipart: false,
            })
        }
        Backend::S3 { bucket } => {
            let creds = aws_settings(env)?;
            let build = |long: bool| -> Result<Arc<dyn ObjectStore>, RemoteError> {
                let mut b = AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_retry(retry())
                    .with_client_options(options(long));
                for (k, v) in &creds {
                    b = b.with_config(k.parse().expect("known keys"), v);
                }
                let store = b.build().map_err(|e| {
                    RemoteError::Config(format!(
                        "cannot use {}: {}",
                        url.shown,
                        super::describe::error(&e)
                    ))
                })?;
                Ok(Arc::new(store))
            };
            Ok(Clients {
                meta: build(false)?,
                bulk: build(true)?,
                multipart: true,
            })
        }
    }
}

/// The Authorization header for an HTTP remote, marked sensitive so that no debug output of the
/// client shows it.
fn http_auth(
    url: &RemoteUrl,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<object_store::HeaderValue>, RemoteError> {
    use base64::Engine;
    let value = if let Some(token) = env(TOKEN_VAR).filter(|t| !t.is_empty()) {
        format!("Bearer {token}")
    } else if let Some(pair) = env(AUTH_VAR).filter(|t| !t.is_empty()) {
        if !pair.contains(':') {
            return Err(RemoteError::Config(format!(
                "{AUTH_VAR} must be USER:PASSWORD (for a token, set {TOKEN_VAR})"
            )));
        }
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    } else if let Some((user, pass)) = &url.userinfo {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
    } else {
        return Ok(None);
    };
    let mut h = object_store::HeaderValue::from_str(&value).map_err(|_| {
        RemoteError::Config(format!(
            "the remote cache credentials ({AUTH_VAR} or {TOKEN_VAR}) hold characters an HTTP header cannot carry"
        ))
    })?;
    h.set_sensitive(true);
    Ok(Some(h))
}

/// The S3 settings from the environment, then the AWS files; an error naming the variables
/// when no credentials are found anywhere. (Without this check the client would ask the EC2
/// metadata endpoint, which off EC2 fails slowly or, behind some proxies, hangs.)
fn aws_settings(
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(&'static str, String)>, RemoteError> {
    let get = |k: &str| env(k).filter(|v| !v.is_empty());
    let file = aws_files::profile(env);
    let from_file = |k: &str| file.get(k).cloned();
    let mut out: Vec<(&'static str, String)> = Vec::new();
    fn put(out: &mut Vec<(&'static str, String)>, key: &'static str, v: Option<String>) {
        if let Some(v) = v {
            out.push((key, v));
        }
    }
    let id = get("AWS_ACCESS_KEY_ID").or_else(|| from_file("aws_access_key_id"));
    let secret = get("AWS_SECRET_ACCESS_KEY").or_else(|| from_file("aws_secret_access_key"));
    let ambient = [
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ]
    .iter()
    .find_map(|k| get(k).map(|v| (*k, v)));
    let imds = get("SLUICE_REMOTE_CACHE_IMDS").is_some_and(|v| v == "1" || v == "true");
    match (&id, &secret) {
        (Some(_), Some(_)) => {
            put(&mut out, "aws_access_key_id", id.clone());
            put(&mut out, "aws_secret_access_key", secret.clone());
            put(
                &mut out,
                "aws_session_token",
                get("AWS_SESSION_TOKEN").or_else(|| from_file("aws_session_token")),
            );
        }
        _ if ambient.is_some() || imds => {
            // Web identity and container credentials are read by the client from the
            // environment itself.
            for k in [
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                "AWS_ROLE_ARN",
                "AWS_ROLE_SESSION_NAME",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "AWS_CONTAINER_AUTHORIZATION_TOKEN",
            ] {
                if let Some(v) = get(k) {
                    let key: &'static str = match k {
                        "AWS_WEB_IDENTITY_TOKEN_FILE" => "aws_web_identity_token_file",
                        "AWS_ROLE_ARN" => "aws_role_arn",
                        "AWS_ROLE_SESSION_NAME" => "aws_role_session_name",
                        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI" => {
                            "aws_container_credentials_relative_uri"
                        }
                        "AWS_CONTAINER_CREDENTIALS_FULL_URI" => {
                            "aws_container_credentials_full_uri"
                        }
                        _ => "aws_container_authorization_token_file",
                    };
                    if k != "AWS_CONTAINER_AUTHORIZATION_TOKEN" {
                        out.push((key, v));
                    }
                }
            }
        }
        (Some(_), None) | (None, Some(_)) => {
            let (has, lacks) = if id.is_some() {
                ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
            } else {
                ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID")
            };
            return Err(RemoteError::Credentials(format!(
                "the S3 remote cache has {has} but not {lacks}: set both (or aws_access_key_id and \
                 aws_secret_access_key in ~/.aws/credentials)"
            )));
        }
        (None, None) => {
            return Err(RemoteError::Credentials(
                "no AWS credentials for the S3 remote cache: set AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for a service other than AWS, \
                 AWS_REGION), or put them under the profile in ~/.aws/credentials (AWS_PROFILE picks \
                 it); on EC2 with an instance role, set SLUICE_REMOTE_CACHE_IMDS=1"
                    .into(),
            ));
        }
    }
    put(
        &mut out,
        "aws_region",
        get("AWS_REGION")
            .or_else(|| get("AWS_DEFAULT_REGION"))
            .or_else(|| from_file("region"))
            .or_else(|| Some("us-east-1".into())),
    );
    put(
        &mut out,
        "aws_endpoint",
        get("AWS_ENDPOINT_URL_S3")
            .or_else(|| get("AWS_ENDPOINT_URL"))
            .or_else(|| get("AWS_ENDPOINT"))
            .or_else(|| from_file("endpoint_url")),
    );
    if let Some(v) = get("AWS_VIRTUAL_HOSTED_STYLE_REQUEST") {
        put(&mut out, "aws_virtual_hosted_style_request", Some(v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::remote::env_of;

    #[test]
    fn absent_s3_credentials_name_the_variables() {
        let e = aws_settings(&env_of(&[("HOME", "/nonexistent")])).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, RemoteError::Credentials(_)));
        assert!(
            text.contains("AWS_ACCESS_KEY_ID") && text.contains("AWS_SECRET_ACCESS_KEY"),
            "{text}"
        );
        let half = aws_settings(&env_of(&[
            ("HOME", "/nonexistent"),
            ("AWS_ACCESS_KEY_ID", "AK"),
        ]))
        .unwrap_err();
        assert!(
            half.to_string().contains("not AWS_SECRET_ACCESS_KEY"),
            "{half}"
        );
    }

    #[test]
    fn environment_credentials_and_endpoint_are_passed_on() {
        let s = aws_settings(&env_of(&[
            ("HOME", "/nonexistent"),
            ("AWS_ACCESS_KEY_ID", "AK"),
            ("AWS_SECRET_ACCESS_KEY", "SK"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:18090"),
        ]))
        .unwrap();
        let get = |k: &str| s.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("aws_access_key_id"), Some("AK"));
        assert_eq!(get("aws_endpoint"), Some("http://127.0.0.1:18090"));
        assert_eq!(get("aws_region"), Some("us-east-1"));
    }

    #[test]
    fn an_auth_variable_without_a_colon_is_refused_without_echoing_it() {
        let url = RemoteUrl::parse("http://127.0.0.1:1/c").unwrap();
        let e = http_auth(&url, &env_of(&[(AUTH_VAR, "justasecret")])).unwrap_err();
        assert!(!e.to_string().contains("justasecret"), "{e}");
        let h = http_auth(&url, &env_of(&[(AUTH_VAR, "u:p")]))
            .unwrap()
            .unwrap();
        assert!(h.is_sensitive());
        assert_eq!(h.to_str().unwrap(), "Basic dTpw");
    }
}

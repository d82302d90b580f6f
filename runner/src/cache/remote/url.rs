//! `RemoteUrl`: where a remote cache lives, parsed once, with whatever secret the URL carried
//! taken out of it. Everything sluice prints names the remote by `shown`, which never holds a
//! password or token, because error messages, logs and `--json` lines end up in CI logs.

use std::path::PathBuf;

/// The accepted forms, for error messages.
pub const FORMS: &str =
    "s3://BUCKET[/PREFIX], http(s)://HOST[:PORT][/PATH] or file:///ABSOLUTE/PATH";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// Any S3-compatible service; endpoint and credentials come from the AWS environment.
    S3 { bucket: String },
    /// A WebDAV-style HTTP server that answers GET/HEAD and accepts PUT (nginx's dav module,
    /// Bazel's HTTP caches). `base` ends in `/` and has no user info.
    Http { base: url::Url },
    /// A directory, typically on a shared file system.
    File { dir: PathBuf },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteUrl {
    pub backend: Backend,
    /// Prepended to every object key (`PREFIX/stages/…`); empty for the root. For HTTP and
    /// files the path is in the base instead, so this is empty there.
    pub prefix: String,
    /// The URL as sluice shows it: user info removed.
    pub shown: String,
    /// `user:password` found in the URL (HTTP only), to be sent as a Basic Authorization header.
    pub userinfo: Option<(String, String)>,
}

impl RemoteUrl {
    /// Parses a remote URL. The error says what is wrong and never repeats a password.
    pub fn parse(text: &str) -> Result<RemoteUrl, String> {
        let text = text.trim();
        let Ok(mut url) = url::Url::parse(text) else {
            return Err(format!(
                "`{}` is not a URL; a remote cache is {FORMS}",
                redact_text(text)
            ));
        };
        let userinfo = if url.username().is_empty() && url.password().is_none() {
            None
        } else {
            let user = percent_decode(url.username());
            let pass = percent_decode(url.password().unwrap_or(""));
            let _ = url.set_username("");
            let _ = url.set_password(None);
            Some((user, pass))
        };
        url.set_query(None);
        url.set_fragment(None);
        match url.scheme() {
            "s3" => {
                let bucket = url.host_str().unwrap_or("").to_string();
                if bucket.is_empty() {
                    return Err(format!(
                        "`{url}` names no bucket; write s3://BUCKET[/PREFIX]"
                    ));
                }
                if userinfo.is_some() {
                    return Err(format!(
                        "`{url}` carries credentials in the URL; S3 credentials come from the \
                         AWS environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or ~/.aws"
                    ));
                }
                let prefix = url.path().trim_matches('/').to_string();
                Ok(RemoteUrl {
                    shown: url.to_string().trim_end_matches('/').to_string(),
                    backend: Backend::S3 { bucket },
                    prefix,
                    userinfo,
                })
            }
            "http" | "https" => {
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(format!("`{url}` names no host"));
                }
                if !url.path().ends_with('/') {
                    let p = format!("{}/", url.path());
                    url.set_path(&p);
                }
                Ok(RemoteUrl {
                    shown: url.to_string().trim_end_matches('/').to_string(),
                    backend: Backend::Http { base: url },
                    prefix: String::new(),
                    userinfo,
                })
            }
            "file" => {
                if userinfo.is_some() || url.host_str().is_some_and(|h| !h.is_empty()) {
                    return Err(format!(
                        "`{url}` is not a local path; write file:///ABSOLUTE/PATH (three slashes)"
                    ));
                }
                let Ok(dir) = url.to_file_path() else {
                    return Err(format!("`{url}` is not an absolute path"));
                };
                Ok(RemoteUrl {
                    shown: url.to_string().trim_end_matches('/').to_string(),
                    backend: Backend::File { dir },
                    prefix: String::new(),
                    userinfo,
                })
            }
            other => Err(format!(
                "remote caches over `{other}://` are not supported; a remote cache is {FORMS}"
            )),
        }
    }

    /// The object key of a stage record.
    pub fn record_key(&self, key_hex: &str) -> String {
        self.join(&format!("stages/{key_hex}.json"))
    }

    /// The object key of a blob (the local cache's layout: two hex digits, then the rest).
    pub fn blob_key(&self, hex: &str) -> String {
        self.join(&format!("objects/{}/{}", &hex[..2], &hex[2..]))
    }

    fn join(&self, rest: &str) -> String {
        if self.prefix.is_empty() {
            rest.to_string()
        } else {
            format!("{}/{rest}", self.prefix)
        }
    }
}

/// `text` with anything between `://` and `@` hidden, for URLs too broken to parse.
pub fn redact_text(text: &str) -> String {
    let Some(at) = text.rfind('@') else {
        return text.to_string();
    };
    match text.find("://") {
        Some(s) if s < at => format!("{}://***@{}", &text[..s], &text[at + 1..]),
        _ => format!("***@{}", &text[at + 1..]),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_form_parses_to_its_backend_and_key_layout() {
        let s3 = RemoteUrl::parse("s3://team-cache/ml/sluice/").unwrap();
        assert_eq!(
            s3.backend,
            Backend::S3 {
                bucket: "team-cache".into()
            }
        );
        assert_eq!(s3.record_key("ab12"), "ml/sluice/stages/ab12.json");
        assert_eq!(s3.blob_key("ab12cd"), "ml/sluice/objects/ab/12cd");
        let bare = RemoteUrl::parse("s3://b").unwrap();
        assert_eq!(bare.blob_key("ab12"), "objects/ab/12");
        let http = RemoteUrl::parse("http://127.0.0.1:18080/cache").unwrap();
        match &http.backend {
            Backend::Http { base } => assert_eq!(base.as_str(), "http://127.0.0.1:18080/cache/"),
            other => panic!("{other:?}"),
        }
        assert_eq!(http.shown, "http://127.0.0.1:18080/cache");
        let file = RemoteUrl::parse("file:///srv/cache").unwrap();
        assert_eq!(
            file.backend,
            Backend::File {
                dir: PathBuf::from("/srv/cache")
            }
        );
    }

    #[test]
    fn credentials_in_a_url_are_taken_out_and_never_shown() {
        let u = RemoteUrl::parse("https://ci:s%40cret@cache.example.com/x").unwrap();
        assert_eq!(u.userinfo, Some(("ci".into(), "s@cret".into())));
        assert_eq!(u.shown, "https://cache.example.com/x");
        let e = RemoteUrl::parse("s3://key:secret@bucket/p").unwrap_err();
        assert!(!e.contains("secret"), "{e}");
        let e = RemoteUrl::parse("ftp://u:hunter2@host/").unwrap_err();
        assert!(!e.contains("hunter2") && e.contains("ftp"), "{e}");
        assert!(!RemoteUrl::parse("not a url u:hunter2@x")
            .unwrap_err()
            .contains("hunter2"));
    }

    #[test]
    fn unusable_forms_say_what_to_write() {
        for bad in ["s3:///prefix", "file://host/x", "gs://b", "/just/a/path"] {
            let e = RemoteUrl::parse(bad).unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
    }
}

//! Which remote cache a command uses, from (highest first) `SLUICE_REMOTE_CACHE`, the
//! workspace's `.sluice/config.yaml`, and the pipeline's `cache:` section. The environment and
//! the workspace file are per machine (a laptop can go read-only, CI can point elsewhere); the
//! pipeline's section is what the team shares.

use super::connect::RemoteError;
use super::RemoteSettings;
use crate::spec::cache::CacheSection;
use std::path::Path;
use yaml_serde::Value;

pub const URL_VAR: &str = "SLUICE_REMOTE_CACHE";
pub const PUSH_VAR: &str = "SLUICE_REMOTE_CACHE_PUSH";
/// The workspace's own settings, beside its cache.
pub const WORKSPACE_FILE: &str = "config.yaml";

/// The remote to use, if any. `ws_dir` is the workspace's `.sluice` directory.
pub fn resolve(
    pipeline: &CacheSection,
    ws_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<RemoteSettings>, RemoteError> {
    let file = workspace_file(&ws_dir.join(WORKSPACE_FILE))?;
    let push_env = match env(PUSH_VAR).as_deref().map(str::trim) {
        None | Some("") => None,
        Some("1" | "true" | "yes") => Some(true),
        Some("0" | "false" | "no") => Some(false),
        Some(_) => {
            return Err(RemoteError::Config(format!(
                "{PUSH_VAR} must be true or false"
            )))
        }
    };
    let push = push_env.or(file.push).or(pipeline.push).unwrap_or(true);
    let (url, origin) = match env(URL_VAR).map(|u| u.trim().to_string()) {
        Some(u) if u == "off" || u == "none" => return Ok(None),
        Some(u) if !u.is_empty() => (u, URL_VAR.to_string()),
        _ => match (file.remote, &pipeline.remote) {
            (Some(u), _) => (u, format!(".sluice/{WORKSPACE_FILE}")),
            (None, Some(u)) => (u.clone(), "the pipeline's `cache.remote`".to_string()),
            (None, None) => return Ok(None),
        },
    };
    Ok(Some(RemoteSettings { url, push, origin }))
}

/// `.sluice/config.yaml`'s `cache:` section; a missing file is an empty one.
fn workspace_file(path: &Path) -> Result<CacheSection, RemoteError> {
    let bad = |why: String| RemoteError::Config(format!("{}: {why}", path.display()));
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(CacheSection::default()),
        Err(e) => return Err(bad(e.to_string())),
    };
    let (doc, _) = crate::spec::yaml::read_yaml(&text).map_err(|e| bad(e.message))?;
    let mut out = CacheSection::default();
    let Value::Mapping(top) = doc else {
        return if matches!(doc, Value::Null) {
            Ok(out)
        } else {
            Err(bad("expected a mapping with a `cache:` section".into()))
        };
    };
    for (k, v) in &top {
        match k.as_str() {
            Some("cache") => {}
            _ => {
                return Err(bad(format!(
                    "unknown key `{}` (the file holds `cache:` only)",
                    key_text(k)
                )))
            }
        }
        let Value::Mapping(cache) = v else {
            return Err(bad(
                "`cache` must be a mapping: `cache: {remote: URL, push: false}`".into(),
            ));
        };
        for (ck, cv) in cache {
            match (ck.as_str(), cv) {
                (Some("remote"), Value::String(u)) => out.remote = Some(u.clone()),
                (Some("push"), Value::Bool(b)) => out.push = Some(*b),
                (Some("remote"), _) => return Err(bad("`cache.remote` must be a URL".into())),
                (Some("push"), _) => return Err(bad("`cache.push` must be true or false".into())),
                _ => {
                    return Err(bad(format!(
                        "unknown key `cache.{}` (remote, push)",
                        key_text(ck)
                    )))
                }
            }
        }
    }
    Ok(out)
}

fn key_text(k: &Value) -> String {
    k.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{k:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::remote::env_of;

    #[test]
    fn the_environment_beats_the_workspace_file_which_beats_the_pipeline() {
        let dir = tempfile::tempdir().unwrap();
        let pipeline = CacheSection {
            remote: Some("s3://team/p".into()),
            push: None,
        };
        let got = resolve(&pipeline, dir.path(), &env_of(&[]))
            .unwrap()
            .unwrap();
        assert_eq!((got.url.as_str(), got.push), ("s3://team/p", true));
        std::fs::write(
            dir.path().join(WORKSPACE_FILE),
            "cache:\n  remote: http://127.0.0.1:1/c\n  push: false\n",
        )
        .unwrap();
        let got = resolve(&pipeline, dir.path(), &env_of(&[]))
            .unwrap()
            .unwrap();
        assert_eq!(
            (got.url.as_str(), got.push),
            ("http://127.0.0.1:1/c", false)
        );
        let got = resolve(
            &pipeline,
            dir.path(),
            &env_of(&[(URL_VAR, "file:///x"), (PUSH_VAR, "true")]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (got.url.as_str(), got.push, got.origin.as_str()),
            ("file:///x", true, URL_VAR)
        );
        assert_eq!(
            resolve(&pipeline, dir.path(), &env_of(&[(URL_VAR, "off")])).unwrap(),
            None
        );
    }

    #[test]
    fn a_bad_workspace_file_names_itself_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(WORKSPACE_FILE), "cache:\n  remtoe: x\n").unwrap();
        let e = resolve(&CacheSection::default(), dir.path(), &env_of(&[])).unwrap_err();
        assert!(
            e.to_string().contains("config.yaml") && e.to_string().contains("remtoe"),
            "{e}"
        );
        std::fs::remove_file(dir.path().join(WORKSPACE_FILE)).unwrap();
        let e = resolve(
            &CacheSection::default(),
            dir.path(),
            &env_of(&[(PUSH_VAR, "maybe")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains(PUSH_VAR));
    }
}

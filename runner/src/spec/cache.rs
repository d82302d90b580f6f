//! The pipeline's `cache:` section: the remote cache a team shares (`remote: URL`) and whether
//! this pipeline uploads to it (`push:`). It is not in any stage's key: where results are kept
//! does not change what they are.

use super::locate::YPath;
use super::raw::{as_map, check_keys, string, type_name, Problems};
use crate::cache::remote::url::RemoteUrl;
use yaml_serde::Value;

const CACHE_KEYS: &[&str] = &["remote", "push"];

/// `cache:` as written and checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CacheSection {
    pub remote: Option<String>,
    pub push: Option<bool>,
}

pub(super) fn read(v: &Value, path: &YPath, problems: &mut Problems) -> Option<CacheSection> {
    let m = as_map(v, path, "`cache`", problems)?;
    check_keys(m, path, CACHE_KEYS, "`cache`", problems);
    let mut out = CacheSection::default();
    if let Some(v) = m.get("remote") {
        let p = path.k("remote");
        if let Some(url) = string(v, &p, "`remote`", problems) {
            match RemoteUrl::parse(&url) {
                // Unlocated on purpose: a located problem quotes its source line, password and all.
                Ok(u) if u.userinfo.is_some() => problems.push_unlocated(
                    "`cache.remote` carries credentials in its URL, which a pipeline file must \
                     not hold",
                    Some(format!(
                        "write `{}` here and put the credentials in the environment: {} \
                         (USER:PASSWORD) or {}",
                        u.shown,
                        crate::cache::remote::AUTH_VAR,
                        crate::cache::remote::TOKEN_VAR
                    )),
                ),
                Ok(_) => out.remote = Some(url),
                Err(why) => problems.push(&p, why, None),
            }
        }
    }
    if let Some(v) = m.get("push") {
        match v {
            Value::Bool(b) => out.push = Some(*b),
            other => problems.push(
                &path.k("push"),
                format!("`push` must be true or false, found {}", type_name(other)),
                Some("`push: false` makes this pipeline read from the remote cache only".into()),
            ),
        }
    }
    Some(out)
}

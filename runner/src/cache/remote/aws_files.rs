//! The AWS shared config files (`~/.aws/credentials`, `~/.aws/config`), read for the one profile
//! in use. `object_store` reads only the environment, and users of the AWS CLI keep their keys
//! in these files, so sluice fills in from them what the environment leaves out.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A config file bigger than this is not one (they hold a few profiles of a few lines each).
const MAX_FILE: u64 = 1 << 20;

/// The settings of one profile, keys lower-cased.
pub(crate) type Profile = HashMap<String, String>;

/// What the files say for the profile `AWS_PROFILE` names (else `default`): the credentials
/// file's section first, then the config file's for keys the former does not set.
pub(crate) fn profile(env: &dyn Fn(&str) -> Option<String>) -> Profile {
    let name = env("AWS_PROFILE")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "default".into());
    let home = env("HOME").map(PathBuf::from);
    let file = |var: &str, default: &str| {
        env(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws").join(default)))
    };
    let mut out = Profile::new();
    if let Some(text) = file("AWS_SHARED_CREDENTIALS_FILE", "credentials").and_then(|p| read(&p)) {
        out.extend(section(&text, &name));
    }
    if let Some(text) = file("AWS_CONFIG_FILE", "config").and_then(|p| read(&p)) {
        // In `config`, profiles other than the default are written `[profile NAME]`.
        let header = if name == "default" {
            name.clone()
        } else {
            format!("profile {name}")
        };
        for (k, v) in section(&text, &header) {
            out.entry(k).or_insert(v);
        }
    }
    out
}

fn read(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > MAX_FILE {
        return None;
    }
    std::fs::read_to_string(path).ok()
}

/// The `key = value` lines of section `[name]` of an INI text. Nested settings (indented lines
/// under a key, as `s3 =` has) are skipped.
fn section(text: &str, name: &str) -> Profile {
    let mut out = Profile::new();
    let mut inside = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if let Some(header) = trimmed.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            inside = header.trim() == name;
            continue;
        }
        if !inside || line.starts_with([' ', '\t']) {
            continue;
        }
        if let Some((k, v)) = trimmed.split_once('=') {
            let v = v.trim();
            if !v.is_empty() {
                out.insert(k.trim().to_ascii_lowercase(), v.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_in_use_is_read_from_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let aws = dir.path().join(".aws");
        std::fs::create_dir(&aws).unwrap();
        std::fs::write(
            aws.join("credentials"),
            "[default]\naws_access_key_id = AKDEF\naws_secret_access_key = sdef\n\n\
             [ci]\naws_access_key_id=AKCI\naws_secret_access_key = sci\n",
        )
        .unwrap();
        std::fs::write(
            aws.join("config"),
            "[default]\nregion = eu-west-1\n[profile ci]\nregion = us-east-2\n\
             endpoint_url = http://127.0.0.1:9000\ns3 =\n  addressing_style = path\n",
        )
        .unwrap();
        let home = dir.path().to_str().unwrap().to_string();
        let with = |profile: Option<&'static str>| {
            let home = home.clone();
            move |k: &str| match k {
                "HOME" => Some(home.clone()),
                "AWS_PROFILE" => profile.map(String::from),
                _ => None,
            }
        };
        let d = profile(&with(None));
        assert_eq!(d["aws_access_key_id"], "AKDEF");
        assert_eq!(d["region"], "eu-west-1");
        let ci = profile(&with(Some("ci")));
        assert_eq!(ci["aws_access_key_id"], "AKCI");
        assert_eq!(ci["aws_secret_access_key"], "sci");
        assert_eq!(ci["region"], "us-east-2");
        assert_eq!(ci["endpoint_url"], "http://127.0.0.1:9000");
        assert!(!ci.contains_key("addressing_style"));
        let none = profile(&|_: &str| None);
        assert!(none.is_empty());
    }
}

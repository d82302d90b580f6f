//! The remote cache's test servers (`tests/remote/start.sh`: nginx on 18080-18082, moto on
//! 18090) and [`Remote`], one remote a test points sluice at: a `file://` directory, a prefix on
//! nginx, or a prefix in moto's bucket. Tests read and write the remote's objects behind sluice's
//! back with `curl` (HTTP, and S3 with `--aws-sigv4`) or plain file access, never through sluice.

use super::{Run, Ws};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// nginx, read-write without authentication.
pub const NGINX: &str = "http://127.0.0.1:18080";
/// nginx over the same data, GET and HEAD only: a PUT answers 405.
pub const NGINX_READ_ONLY: &str = "http://127.0.0.1:18081";
/// nginx over the same data, read-write behind basic authentication.
pub const NGINX_AUTH: &str = "http://127.0.0.1:18082";
pub const AUTH_USER: &str = "sluice";
pub const AUTH_PASSWORD: &str = "s3cret-token-xyz";
/// moto, the S3 emulator, and the bucket start.sh creates in it.
pub const MOTO: &str = "http://127.0.0.1:18090";
pub const BUCKET: &str = "sluice-cache";

/// Whether the test servers answer as the tests expect; `Err` says why not. `SLUICE_REMOTE=1`
/// (set by `.ci/run` once it started them) says yes without asking, `SLUICE_REMOTE=0` says no;
/// otherwise `tests/remote/start.sh --check` decides, once per test binary.
pub fn servers() -> Result<(), String> {
    static UP: OnceLock<Result<(), String>> = OnceLock::new();
    UP.get_or_init(|| match std::env::var("SLUICE_REMOTE").as_deref() {
        Ok("1") => Ok(()),
        Ok("0") => Err("SLUICE_REMOTE=0".into()),
        _ => {
            let script = super::repo().join("tests/remote/start.sh");
            let out = Command::new(&script)
                .arg("--check")
                .output()
                .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "tests/remote/start.sh --check: {}; start them with tests/remote/start.sh",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        }
    })
    .clone()
}

/// Where nginx keeps what it serves (start.sh's layout).
pub fn nginx_data_dir() -> PathBuf {
    let dir = std::env::var_os("SLUICE_REMOTE_DIR").unwrap_or_else(|| "/tmp/sluice-remote".into());
    PathBuf::from(dir).join("nginx/data")
}

/// A path segment no other test, test binary or earlier run uses: the servers outlive runs.
pub fn unique(name: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "t-{name}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    File,
    Nginx,
    S3,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::File => "file",
            Backend::Nginx => "nginx",
            Backend::S3 => "s3",
        }
    }
}

/// One remote cache, empty when made, under a prefix of its own.
pub struct Remote {
    pub backend: Backend,
    /// What sluice is given (`SLUICE_REMOTE_CACHE` or `cache: remote:`).
    pub url: String,
    /// The objects' path under the server's root: the URL path (nginx), the key prefix (S3) or
    /// the directory (file).
    prefix: String,
    /// Environment the sluice commands get on top of the cleared one (S3's keys and endpoint).
    pub env: Vec<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

/// The AWS settings for moto.
pub fn moto_env() -> Vec<(String, String)> {
    [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", MOTO),
        ("AWS_ALLOW_HTTP", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

impl Remote {
    /// A remote of `backend` for test `name`; `Err` (the reason) when its server is not up.
    pub fn open(backend: Backend, name: &str) -> Result<Remote, String> {
        let prefix = unique(name);
        match backend {
            Backend::File => {
                let dir = tempfile::tempdir().expect("temp dir");
                let root = dir.path().join("remote");
                // As a shared directory would be: made by whoever set it up, not by sluice.
                std::fs::create_dir(&root).unwrap();
                Ok(Remote {
                    backend,
                    url: format!("file://{}", root.display()),
                    prefix: root.display().to_string(),
                    env: Vec::new(),
                    _dir: Some(dir),
                })
            }
            Backend::Nginx => {
                servers()?;
                Ok(Remote {
                    backend,
                    url: format!("{NGINX}/{prefix}"),
                    prefix,
                    env: Vec::new(),
                    _dir: None,
                })
            }
            Backend::S3 => {
                servers()?;
                Ok(Remote {
                    backend,
                    url: format!("s3://{BUCKET}/{prefix}"),
                    prefix,
                    env: moto_env(),
                    _dir: None,
                })
            }
        }
    }

    /// The same objects through another nginx server (read-only 18081, authenticated 18082).
    pub fn nginx_url_via(&self, server: &str) -> String {
        assert_eq!(self.backend, Backend::Nginx);
        format!("{server}/{}", self.prefix)
    }

    /// `sluice ARGS...` in `ws` with this remote in `SLUICE_REMOTE_CACHE`.
    pub fn command(&self, ws: &Ws, args: &[&str]) -> Command {
        let mut c = isolated(ws, args);
        c.env("SLUICE_REMOTE_CACHE", &self.url);
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    pub fn sluice(&self, ws: &Ws, args: &[&str]) -> Run {
        output(self.command(ws, args))
    }

    /// `sluice run --json ARGS...` against this remote.
    pub fn run(&self, ws: &Ws, args: &[&str]) -> Run {
        let mut all = vec!["run", "--json"];
        all.extend_from_slice(args);
        self.sluice(ws, &all)
    }

    /// The object `rel` (`objects/ab/cdef…`, `stages/KEY.json`), read behind sluice's back.
    pub fn get(&self, rel: &str) -> Option<Vec<u8>> {
        match self.backend {
            Backend::File => std::fs::read(Path::new(&self.prefix).join(rel)).ok(),
            Backend::Nginx => curl_get(&[], &format!("{NGINX}/{}/{rel}", self.prefix)),
            Backend::S3 => curl_get(
                &s3_auth(),
                &format!("{MOTO}/{BUCKET}/{}/{rel}", self.prefix),
            ),
        }
    }

    /// Replaces the object `rel` behind sluice's back (to damage it).
    pub fn put(&self, rel: &str, bytes: &[u8]) {
        match self.backend {
            Backend::File => {
                let path = Path::new(&self.prefix).join(rel);
                // A blob may be read-only; replace it rather than write through.
                let _ = std::fs::remove_file(&path);
                std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
            Backend::Nginx => curl_put(&[], &format!("{NGINX}/{}/{rel}", self.prefix), bytes),
            Backend::S3 => curl_put(
                &s3_auth(),
                &format!("{MOTO}/{BUCKET}/{}/{rel}", self.prefix),
                bytes,
            ),
        }
    }

    /// Every object under this remote's prefix, relative to it, sorted.
    pub fn list(&self) -> Vec<String> {
        let mut keys = match self.backend {
            Backend::File => files_under(Path::new(&self.prefix)),
            Backend::Nginx => files_under(&nginx_data_dir().join(&self.prefix)),
            Backend::S3 => s3_list(&self.prefix),
        };
        keys.sort();
        keys
    }

    /// The `ETag` S3 reports for `rel`, quotes included (a multipart object's ends in `-PARTS"`).
    pub fn s3_etag(&self, rel: &str) -> Option<String> {
        assert_eq!(self.backend, Backend::S3);
        let url = format!("{MOTO}/{BUCKET}/{}/{rel}", self.prefix);
        let out = Command::new("curl")
            .args(["-s", "-I", "--max-time", "30"])
            .args(s3_auth())
            .arg(&url)
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout);
        if !text.starts_with("HTTP/1.1 200") && !text.starts_with("HTTP/1.0 200") {
            return None;
        }
        text.lines()
            .find_map(|l| {
                l.strip_prefix("ETag: ")
                    .or_else(|| l.strip_prefix("etag: "))
            })
            .map(|s| s.trim().to_string())
    }
}

/// `sluice ARGS...` in `ws` with no remote cache or AWS setting inherited from the caller's
/// environment: each test says which remote it means.
pub fn isolated(ws: &Ws, args: &[&str]) -> Command {
    let mut c = ws.command(args);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("AWS_") || k.starts_with("SLUICE_REMOTE_CACHE") {
            c.env_remove(k.as_ref());
        }
    }
    c
}

pub fn output(mut c: Command) -> Run {
    let out = c.output().expect("run sluice");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn s3_auth() -> Vec<String> {
    ["--aws-sigv4", "aws:amz:us-east-1:s3", "--user", "test:test"]
        .into_iter()
        .map(String::from)
        .collect()
}

/// GET `url`: its body on 200, `None` on 404; anything else fails the test.
fn curl_get(auth: &[String], url: &str) -> Option<Vec<u8>> {
    let body = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new("curl")
        .args(["-s", "--max-time", "120", "-o"])
        .arg(body.path())
        .args(["-w", "%{http_code}"])
        .args(auth)
        .arg(url)
        .output()
        .expect("run curl");
    match String::from_utf8_lossy(&out.stdout).as_ref() {
        "200" => Some(std::fs::read(body.path()).unwrap()),
        "404" => None,
        other => panic!("GET {url} answered {other}"),
    }
}

fn curl_put(auth: &[String], url: &str, bytes: &[u8]) {
    let body = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(body.path(), bytes).unwrap();
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "120",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-T",
        ])
        .arg(body.path())
        .args(auth)
        .arg(url)
        .output()
        .expect("run curl");
    let code = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        ["200", "201", "204"].contains(&code.as_str()),
        "PUT {url} answered {code}"
    );
}

/// Keys under `prefix/` in moto's bucket (ListObjectsV2; a test's prefix holds far fewer than
/// the 1000 keys of one page).
fn s3_list(prefix: &str) -> Vec<String> {
    let url = format!("{MOTO}/{BUCKET}?list-type=2&prefix={prefix}/");
    let out = Command::new("curl")
        .args(["-s", "--max-time", "30"])
        .args(s3_auth())
        .arg(&url)
        .output()
        .expect("run curl");
    let xml = String::from_utf8_lossy(&out.stdout);
    assert!(xml.contains("<ListBucketResult"), "LIST {url}: {xml}");
    xml.split("<Key>")
        .skip(1)
        .filter_map(|s| s.split("</Key>").next())
        .map(|k| k.trim_start_matches(&format!("{prefix}/")).to_string())
        .collect()
}

/// Files under `root`, as `/`-separated paths relative to it; none when it does not exist.
pub fn files_under(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}

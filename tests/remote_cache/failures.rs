//! A remote that lies, is down, refuses writes or has no credentials: a corrupt blob is caught,
//! named, rerun and repaired; every other failure is one warning and a run that goes on locally
//! (exit 0), unless `--remote-required` (exit 1, or 2 for missing configuration).

use super::*;

/// A remote blob with the right size and the wrong bytes is caught while downloading: the
/// warning names the blob and the stage, the stage runs (only it), and its upload afterwards
/// replaces the bad blob even though the remote already "has" one of that size. (A file in a
/// directory output always has a blob; a small single file travels inside its record.)
fn corrupt_blob_is_caught_rerun_and_repaired(backend: Backend) {
    let remote = remote_or_skip!(backend, "corrupt_blob_is_caught_rerun_and_repaired");
    let ws = sources(PIPELINE);
    remote.run(&ws, &[]).assert_ok();
    let good = std::fs::read(ws.path("out/tree/leaf.txt")).unwrap();
    let key = object_key(&good);
    assert_eq!(
        remote.get(&key).as_deref(),
        Some(&good[..]),
        "{key} was not pushed"
    );
    let bad: Vec<u8> = good.iter().map(|b| b ^ 0x01).collect();
    remote.put(&key, &bad);

    let clone = clone_of(&ws, &[]);
    let r = remote.run(&clone, &[]);
    r.assert_ok();
    assert_eq!(r.started(), ["tree"], "{}", r.stdout);
    let short = &key["objects/".len()..].replace('/', "")[..12];
    let warned = remote_warnings(&r);
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].contains("corrupt") && warned[0].contains(short) && warned[0].contains("tree"),
        "{}",
        warned[0]
    );
    assert_same_outputs(&ws, &clone);
    assert_eq!(
        remote.get(&key).as_deref(),
        Some(&good[..]),
        "the remote blob was not repaired"
    );

    let again = clone_of(&ws, &[]);
    let r = remote.run(&again, &[]);
    assert_restored_all(&r);
    assert!(warnings(&r).is_empty(), "{:?}", warnings(&r));
}

#[test]
fn corrupt_blob_is_caught_rerun_and_repaired_on_file() {
    corrupt_blob_is_caught_rerun_and_repaired(Backend::File);
}

#[test]
fn corrupt_blob_is_caught_rerun_and_repaired_on_nginx() {
    corrupt_blob_is_caught_rerun_and_repaired(Backend::Nginx);
}

#[test]
fn corrupt_blob_is_caught_rerun_and_repaired_on_s3() {
    corrupt_blob_is_caught_rerun_and_repaired(Backend::S3);
}

/// `sluice run --json ARGS` in `ws` against `url` (and `env`), nothing inherited.
fn run_against(ws: &Ws, url: &str, env: &[(String, String)], args: &[&str]) -> Run {
    let mut all = vec!["run", "--json"];
    all.extend_from_slice(args);
    let mut c = isolated(ws, &all);
    c.env("SLUICE_REMOTE_CACHE", url);
    c.envs(env.iter().map(|(k, v)| (k, v)));
    output(c)
}

/// The run went on without the remote: exit 0, every stage ran with the right outputs, and the
/// remote's trouble was said exactly once (however many lookups and uploads hit it).
fn assert_warned_once_and_ran(r: &Run, reference: &Ws, ws: &Ws) -> String {
    r.assert_ok();
    assert_ran_all(r);
    let warned = remote_warnings(r);
    assert_eq!(warned.len(), 1, "{warned:?}\n{}", r.stdout);
    assert_same_outputs(reference, ws);
    warned[0].clone()
}

/// Nothing listens on the remote's port (HTTP and S3): one warning, the run goes on; with
/// `--remote-required` the stages still finish and the run fails.
#[test]
fn a_remote_that_is_down_only_warns() {
    let reference = sources(PIPELINE);
    isolated(&reference, &["run", "--no-remote"])
        .output()
        .unwrap();
    let port = dead_port();
    let http = format!("http://127.0.0.1:{port}/cache");
    let mut s3_env = moto_env();
    s3_env.retain(|(k, _)| k != "AWS_ENDPOINT_URL");
    s3_env.push((
        "AWS_ENDPOINT_URL".into(),
        format!("http://127.0.0.1:{port}"),
    ));
    for (url, env) in [(http.as_str(), vec![]), ("s3://sluice-cache/down", s3_env)] {
        let ws = clone_of(&reference, &[]);
        let r = run_against(&ws, url, &env, &[]);
        let warning = assert_warned_once_and_ran(&r, &reference, &ws);
        assert!(warning.contains("remote cache"), "{warning}");

        let ws = clone_of(&reference, &[]);
        let r = run_against(&ws, url, &env, &["--remote-required"]);
        assert_eq!(
            r.code, 1,
            "{url}: --remote-required\n{}\n{}",
            r.stdout, r.stderr
        );
        assert_ran_all(&r);
        assert_same_outputs(&reference, &ws);

        // Nothing moved: `cache push` fails (exit 1), saying so.
        let mut c = isolated(&ws, &["cache", "push"]);
        c.env("SLUICE_REMOTE_CACHE", url)
            .envs(env.iter().map(|(k, v)| (k, v)));
        let r = output(c);
        assert_eq!(r.code, 1, "{url}: cache push\n{}\n{}", r.stdout, r.stderr);
    }
}

/// The read-only server (PUT answers 405) restores what is there and warns once about the
/// uploads it refuses; `--remote-required` turns the refusal into a failed run.
#[test]
fn a_read_only_remote_restores_and_only_warns() {
    let remote = remote_or_skip!(Backend::Nginx, "a_read_only_remote_restores_and_only_warns");
    let read_only = remote.nginx_url_via(NGINX_READ_ONLY);
    let reference = sources(PIPELINE);
    isolated(&reference, &["run", "--no-remote"])
        .output()
        .unwrap();
    let ws = clone_of(&reference, &[]);
    let r = run_against(&ws, &read_only, &[], &[]);
    let warning = assert_warned_once_and_ran(&r, &reference, &ws);
    assert!(warning.contains("remote cache"), "{warning}");
    assert!(remote.list().is_empty(), "{:?}", remote.list());

    let ws2 = clone_of(&ws, &[]);
    let r = run_against(&ws2, &read_only, &[], &["--remote-required"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert_ran_all(&r);

    // Filled through the read-write server, the same objects restore through the read-only one,
    // with nothing to push and so nothing to warn about.
    remote.run(&clone_of(&ws, &[]), &[]).assert_ok();
    let clone = clone_of(&ws, &[]);
    let r = run_against(&clone, &read_only, &[], &["--remote-required"]);
    assert_restored_all(&r);
    assert!(warnings(&r).is_empty(), "{:?}", warnings(&r));
    assert_same_outputs(&ws, &clone);
}

/// An S3 remote without credentials (no AWS_* variables, no ~/.aws files): `cache pull` and
/// `cache push` exit 2 naming the variables to set; `run` says the same once and goes on;
/// `run --remote-required` exits 2. No server needed: sluice must decide before any request.
#[test]
fn s3_without_credentials_names_the_variables() {
    let ws = sources(PIPELINE);
    isolated(&ws, &["run", "--no-remote"]).output().unwrap();
    let home = tempfile::tempdir().unwrap();
    let cmd_in = |ws: &Ws, args: &[&str]| {
        let mut c = isolated(ws, args);
        c.env("SLUICE_REMOTE_CACHE", "s3://sluice-cache/no-credentials")
            .env("HOME", home.path())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", MOTO)
            .env("AWS_ALLOW_HTTP", "true");
        output(c)
    };
    let names_both =
        |text: &str| text.contains("AWS_ACCESS_KEY_ID") && text.contains("AWS_SECRET_ACCESS_KEY");
    for sub in ["pull", "push"] {
        let r = cmd_in(&ws, &["cache", sub]);
        assert_eq!(r.code, 2, "cache {sub}\n{}\n{}", r.stdout, r.stderr);
        assert!(names_both(&r.stderr), "cache {sub}: {}", r.stderr);
    }

    let fresh = clone_of(&ws, &[]);
    let r = cmd_in(&fresh, &["run", "--json"]);
    let warning = assert_warned_once_and_ran(&r, &ws, &fresh);
    assert!(names_both(&warning), "{warning}");

    let fresh = clone_of(&ws, &[]);
    let r = cmd_in(&fresh, &["run", "--json", "--remote-required"]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(
        names_both(&format!("{}{}", r.stdout, r.stderr)),
        "{}",
        r.stderr
    );
}

/// A misspelt S3 bucket is not mistaken for an empty cache: the run says the bucket does not
/// exist (once) and goes on without the remote.
#[test]
fn a_missing_s3_bucket_is_said_not_taken_for_an_empty_cache() {
    let _remote = remote_or_skip!(Backend::S3, "a_missing_s3_bucket_is_said");
    let reference = sources(PIPELINE);
    isolated(&reference, &["run", "--no-remote"])
        .output()
        .unwrap();
    let ws = clone_of(&reference, &[]);
    let r = run_against(&ws, "s3://no-such-bucket-sluice/p", &moto_env(), &[]);
    let warning = assert_warned_once_and_ran(&r, &reference, &ws);
    assert!(warning.contains("the bucket does not exist"), "{warning}");
}

/// A small output's content inside a remote record is checked like a blob: a record whose
/// inline content does not match its hash is refused with one warning, and only its stage runs.
#[test]
fn a_remote_record_with_tampered_inline_content_is_refused() {
    let name = "a_remote_record_with_tampered_inline_content_is_refused";
    let remote = remote_or_skip!(Backend::File, name);
    let ws = sources(PIPELINE);
    remote.run(&ws, &[]).assert_ok();
    let count = ws.read("out/count.txt");
    let inline_of = |bytes: &[u8]| -> Option<serde_json::Value> {
        let rec: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        Some(rec["outputs"]["n"]["inline"].clone()).filter(|v| !v.is_null())
    };
    let key = remote
        .list()
        .into_iter()
        .find(|k| {
            k.starts_with("stages/")
                && remote
                    .get(k)
                    .and_then(|b| inline_of(&b))
                    .is_some_and(|i| i["text"] == count.as_str())
        })
        .expect("count's record keeps its small output inline");
    let mut rec: serde_json::Value = serde_json::from_slice(&remote.get(&key).unwrap()).unwrap();
    rec["outputs"]["n"]["inline"]["text"] = "999\n".into();
    remote.put(&key, &serde_json::to_vec(&rec).unwrap());

    let clone = clone_of(&ws, &[]);
    let r = remote.run(&clone, &[]);
    r.assert_ok();
    assert_eq!(r.started(), ["count"], "{}", r.stdout);
    let warned = remote_warnings(&r);
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].contains("does not match its hash"),
        "{}",
        warned[0]
    );
    assert_same_outputs(&ws, &clone);
}

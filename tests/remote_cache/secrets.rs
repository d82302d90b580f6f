//! Credentials for an HTTP remote come from the environment only, and never show: not in the
//! output, the logs, the lock file or anything under `.sluice/`.

use super::*;

/// Runs `sluice run --json` in `ws` against the authenticated server with `env` on top.
fn run_with(ws: &Ws, url: &str, env: &[(&str, &str)]) -> Run {
    let mut c = isolated(ws, &["run", "--json"]);
    c.env("SLUICE_REMOTE_CACHE", url);
    c.envs(env.iter().copied());
    output(c)
}

/// Asserts `secret` is nowhere: not in the run's output nor in any file of the workspace.
fn assert_nowhere(secret: &str, r: &Run, ws: &Ws) {
    assert!(
        !r.stdout.contains(secret),
        "stdout holds the secret:\n{}",
        r.stdout
    );
    assert!(
        !r.stderr.contains(secret),
        "stderr holds the secret:\n{}",
        r.stderr
    );
    let found = files_containing(ws, secret);
    assert!(found.is_empty(), "files holding the secret: {found:?}");
}

/// With `SLUICE_REMOTE_CACHE_AUTH` the authenticated server takes the uploads and serves the
/// restores; a `user:pass@` URL in `SLUICE_REMOTE_CACHE` works the same; a wrong password is one
/// warning saying 401 and a local run. No password appears anywhere.
#[test]
fn basic_auth_from_the_environment_works_and_never_shows() {
    let remote = remote_or_skip!(
        Backend::Nginx,
        "basic_auth_from_the_environment_works_and_never_shows"
    );
    let url = remote.nginx_url_via(NGINX_AUTH);
    let auth = format!("{AUTH_USER}:{AUTH_PASSWORD}");
    let ws = sources(PIPELINE);
    let r = run_with(&ws, &url, &[("SLUICE_REMOTE_CACHE_AUTH", &auth)]);
    r.assert_ok();
    assert_ran_all(&r);
    assert!(warnings(&r).is_empty(), "{:?}", warnings(&r));
    assert_eq!(records(&remote).len(), STAGES.len(), "{:?}", remote.list());
    assert_nowhere(AUTH_PASSWORD, &r, &ws);

    let clone = clone_of(&ws, &[]);
    let r = run_with(&clone, &url, &[("SLUICE_REMOTE_CACHE_AUTH", &auth)]);
    assert_restored_all(&r);
    assert_nowhere(AUTH_PASSWORD, &r, &clone);

    let in_url = url.replacen("http://", &format!("http://{auth}@"), 1);
    let clone = clone_of(&ws, &[]);
    let r = run_with(&clone, &in_url, &[]);
    assert_restored_all(&r);
    assert_nowhere(AUTH_PASSWORD, &r, &clone);

    let wrong = "wr0ng-Passw0rd-7781";
    let clone = clone_of(&ws, &[]);
    let r = run_with(
        &clone,
        &url,
        &[("SLUICE_REMOTE_CACHE_AUTH", &format!("{AUTH_USER}:{wrong}"))],
    );
    r.assert_ok();
    assert_ran_all(&r);
    let warned = remote_warnings(&r);
    assert_eq!(warned.len(), 1, "{warned:?}");
    let lower = warned[0].to_lowercase();
    assert!(
        lower.contains("401") || lower.contains("unauthorized"),
        "{}",
        warned[0]
    );
    assert_nowhere(wrong, &r, &clone);
    assert_same_outputs(&ws, &clone);

    // Nor is a password given in the URL shown when the server refuses it.
    let clone = clone_of(&ws, &[]);
    let r = run_with(
        &clone,
        &url.replacen("http://", &format!("http://{AUTH_USER}:{wrong}@"), 1),
        &[],
    );
    r.assert_ok();
    assert_eq!(remote_warnings(&r).len(), 1, "{:?}", remote_warnings(&r));
    assert_nowhere(wrong, &r, &clone);
}

/// A password in the pipeline file's `cache: remote:` URL is refused before anything runs,
/// pointing at the environment variable to use instead.
#[test]
fn a_password_in_the_pipeline_file_is_refused() {
    let ws = sources(&format!(
        "{PIPELINE}cache:\n  remote: http://ci:hunter2-secret@127.0.0.1:{}/cache\n",
        dead_port()
    ));
    let r = output(isolated(&ws, &["run"]));
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("SLUICE_REMOTE_CACHE_AUTH"),
        "{}",
        r.stderr
    );
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(
        !all.contains("hunter2-secret"),
        "the refusal shows the password: {all}"
    );
    assert!(!ws.exists("out"), "stages ran");
}

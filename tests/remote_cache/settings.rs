//! Where the remote comes from and whether sluice writes to it: `--no-remote` >
//! `SLUICE_REMOTE_CACHE` > `.sluice/config.yaml` > the pipeline's `cache:` section, and the
//! read-only settings (`push: false`, `SLUICE_REMOTE_CACHE_PUSH=false`) that upload nothing.

use super::*;

/// `cache: {remote: URL, push: false}` in the pipeline reads but never writes: a run uploads
/// nothing, and once another workspace filled the remote, a clone with that pipeline restores
/// from it. `SLUICE_REMOTE_CACHE_PUSH=false` does the same with the URL from the environment.
fn push_false_uploads_nothing(backend: Backend) {
    let remote = remote_or_skip!(backend, "push_false_uploads_nothing");
    let read_only = format!(
        "{PIPELINE}cache:\n  remote: {}\n  push: false\n",
        remote.url
    );
    let ws = sources(&read_only);
    let mut c = isolated(&ws, &["run", "--json"]);
    c.envs(remote.env.iter().map(|(k, v)| (k, v)));
    let r = output(c);
    r.assert_ok();
    assert_ran_all(&r);
    assert!(warnings(&r).is_empty(), "{:?}", warnings(&r));
    assert!(
        remote.list().is_empty(),
        "push: false uploaded {:?}",
        remote.list()
    );

    let clone = clone_of(&ws, &[]);
    let mut c = remote.command(&clone, &["run", "--json"]);
    c.env("SLUICE_REMOTE_CACHE_PUSH", "false");
    let r = output(c);
    r.assert_ok();
    assert_ran_all(&r);
    assert!(
        remote.list().is_empty(),
        "SLUICE_REMOTE_CACHE_PUSH=false uploaded {:?}",
        remote.list()
    );

    // The cache section is no part of any stage's key: a pushing run of the plain pipeline
    // fills the remote, and the read-only pipeline restores from it.
    remote.run(&sources(PIPELINE), &[]).assert_ok();
    let clone = clone_of(&ws, &[]);
    let mut c = isolated(&clone, &["run", "--json"]);
    c.envs(remote.env.iter().map(|(k, v)| (k, v)));
    let r = output(c);
    assert_restored_all(&r);
    assert_same_outputs(&ws, &clone);
}

#[test]
fn push_false_uploads_nothing_on_file() {
    push_false_uploads_nothing(Backend::File);
}

#[test]
fn push_false_uploads_nothing_on_nginx() {
    push_false_uploads_nothing(Backend::Nginx);
}

/// Which of several configured remotes a run writes to: the highest setting wins;
/// `SLUICE_REMOTE_CACHE=off` and `--no-remote` turn every one off.
#[test]
fn the_highest_setting_names_the_remote() {
    // Which of (pipeline, config file, environment) hold records after a run with `args` in a
    // workspace whose pipeline and `.sluice/config.yaml` (when `config`) name a remote each.
    let filled = |config: bool, env: Option<&str>, args: &[&str]| {
        let [in_pipeline, in_config, in_env] = ["pipeline", "config", "env"]
            .map(|name| Remote::open(Backend::File, &format!("setting_{name}")).unwrap());
        let ws = sources(&format!(
            "{PIPELINE}cache:\n  remote: {}\n",
            in_pipeline.url
        ));
        if config {
            let yaml = format!("cache:\n  remote: {}\n", in_config.url);
            ws.write(".sluice/config.yaml", &yaml);
        }
        let mut all = vec!["run", "--json"];
        all.extend_from_slice(args);
        let mut c = isolated(&ws, &all);
        if let Some(env) = env {
            c.env("SLUICE_REMOTE_CACHE", env.replace("ENV", &in_env.url));
        }
        let r = output(c);
        r.assert_ok();
        assert_ran_all(&r);
        [&in_pipeline, &in_config, &in_env].map(|r| records(r).len() == STAGES.len())
    };
    assert_eq!(
        filled(false, None, &[]),
        [true, false, false],
        "the pipeline's cache: remote:"
    );
    assert_eq!(
        filled(true, None, &[]),
        [false, true, false],
        ".sluice/config.yaml"
    );
    assert_eq!(
        filled(true, Some("ENV"), &[]),
        [false, false, true],
        "SLUICE_REMOTE_CACHE"
    );
    assert_eq!(
        filled(true, Some("off"), &[]),
        [false; 3],
        "SLUICE_REMOTE_CACHE=off"
    );
    assert_eq!(
        filled(true, Some("ENV"), &["--no-remote"]),
        [false; 3],
        "--no-remote"
    );
}

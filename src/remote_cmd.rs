//! The remote cache at the command line: which remote a command uses (`--no-remote`,
//! `--remote-required`, `status --remote`) and `sluice cache push|pull`.

use crate::cli::{CacheArgs, CacheCommand, RemoteArgs};
use crate::{open, Failure, DEFAULT_PIPELINE};
use sluice_runner::cache::remote::config::{resolve, URL_VAR};
use sluice_runner::cache::RemoteError;
use sluice_runner::engine::Engine;
use sluice_runner::pipeline::Pipeline;
use sluice_runner::sharing::{Direction, Transfer};
use std::path::PathBuf;
use std::process::ExitCode;

fn config_failure(e: RemoteError) -> Failure {
    Failure::Invalid(format!("error: {e}\n"))
}

/// Puts the configured remote behind `engine`'s cache, as `args` allow.
pub(crate) fn attach(
    engine: &mut Engine,
    pipeline: &Pipeline,
    args: &RemoteArgs,
) -> Result<(), Failure> {
    attach_as(engine, pipeline, args, "--remote-required")
}

/// `attach`, naming `flag` when the flag asks for a remote and none is configured.
pub(crate) fn attach_as(
    engine: &mut Engine,
    pipeline: &Pipeline,
    args: &RemoteArgs,
    flag: &str,
) -> Result<(), Failure> {
    if args.no_remote {
        return Ok(());
    }
    let env = |k: &str| std::env::var(k).ok();
    match resolve(&pipeline.cache, &engine.ws.dir, &env).map_err(config_failure)? {
        Some(settings) => engine
            .attach_remote(&settings, args.remote_required)
            .map_err(config_failure),
        None if args.remote_required => Err(Failure::Invalid(format!(
            "error: `{flag}`, but no remote cache is configured\n  help: set {URL_VAR} \
             or the pipeline's `cache: {{remote: URL}}` (docs/cache.md)\n"
        ))),
        None => Ok(()),
    }
}

/// `sluice cache push|pull [PIPELINE]`.
pub(crate) fn cache(args: &CacheArgs) -> Result<ExitCode, Failure> {
    let (direction, a) = match &args.command {
        CacheCommand::Push(a) => (Direction::Push, a),
        CacheCommand::Pull(a) => (Direction::Pull, a),
    };
    let file = a
        .pipeline
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PIPELINE));
    let (mut engine, pipeline) = open(&file, &[])?;
    let env = |k: &str| std::env::var(k).ok();
    let Some(settings) = resolve(&pipeline.cache, &engine.ws.dir, &env).map_err(config_failure)?
    else {
        return Err(Failure::Invalid(format!(
            "error: no remote cache is configured for `{}`\n  help: set {URL_VAR}=URL, or add \
             `cache: {{remote: URL}}` to the pipeline (s3://BUCKET/PREFIX, http(s)://HOST/PATH or \
             file:///PATH; docs/cache.md)\n",
            pipeline.display_file
        )));
    };
    engine
        .attach_remote(&settings, true)
        .map_err(config_failure)?;
    let remote = engine.remote.clone().expect("attached");
    if direction == Direction::Push && !settings.push {
        eprintln!(
            "note: `push: false` ({}) keeps runs from uploading; `sluice cache push` uploads anyway",
            settings.origin
        );
    }
    let results = engine
        .share(&pipeline, direction)
        .map_err(|e| Failure::Runtime(e.into()))?;
    let (verb, prep) = match direction {
        Direction::Push => ("pushed", "to"),
        Direction::Pull => ("pulled", "from"),
    };
    let moved = results
        .iter()
        .filter(|(_, t)| matches!(t, Transfer::Moved { .. }))
        .count();
    let failed = results
        .iter()
        .filter(|(_, t)| matches!(t, Transfer::Failed { .. }))
        .count();
    let bytes: u64 = results
        .iter()
        .map(|(_, t)| match t {
            Transfer::Moved { bytes, .. } => *bytes,
            _ => 0,
        })
        .sum();
    if a.json {
        let rows: Vec<serde_json::Value> = results
            .iter()
            .map(|(stage, t)| {
                let mut v = serde_json::to_value(t).expect("plain data");
                v["stage"] = serde_json::Value::from(stage.as_str());
                v
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "remote": remote.shown(),
                "direction": verb,
                "stages": rows,
                "moved": moved,
                "failed": failed,
                "bytes": bytes,
            })
        );
    } else {
        for (stage, t) in &results {
            match t {
                Transfer::Moved { blobs, bytes } => println!(
                    "{stage}: {verb} ({blobs} file{} {}, {})",
                    if *blobs == 1 { "" } else { "s" },
                    if direction == Direction::Push {
                        "sent"
                    } else {
                        "fetched"
                    },
                    indicatif::HumanBytes(*bytes)
                ),
                Transfer::Absent { why } => println!("{stage}: skipped: {why}"),
                Transfer::Failed { why } => println!("{stage}: failed: {why}"),
            }
        }
        println!(
            "{verb} {moved} of {} stage(s) {prep} {} ({}){}",
            results.len(),
            remote.shown(),
            indicatif::HumanBytes(bytes),
            if failed > 0 {
                format!("; {failed} failed")
            } else {
                String::new()
            }
        );
        if direction == Direction::Pull && moved > 0 {
            println!(
                "`sluice run {}` restores them from the local cache",
                pipeline.display_file
            );
        }
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

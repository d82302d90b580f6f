//! `sluice watch`: loads the pipeline, hands it to the engine's watch loop with the signals, and
//! renders what it reports (the live display per round, one line per change). Ctrl-C ends it
//! with exit code 130 after the running stages are stopped.

use crate::cli::{Cli, WatchArgs};
use crate::report::{self, Human};
use crate::{
    open, overrides, print_warnings, Failure, SignalChannel, DEFAULT_PIPELINE, EXIT_INTERRUPTED,
};
use crossbeam_channel::Receiver;
use sluice_runner::watch::{watch as watch_loop, Notice, WatchEnd, WatchEvent, WatchOptions};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

pub fn watch(cli: &Cli, args: &WatchArgs) -> Result<ExitCode, Failure> {
    let file = args
        .pipeline_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PIPELINE));
    let overrides = overrides(&args.pipeline)?;
    let (mut engine, pipeline) = open(&file, &overrides)?;
    print_warnings(&pipeline);
    let executor = crate::executor_cmd::chosen(args.executor)?;
    crate::executor_cmd::install(&mut engine, executor, &pipeline)?;
    crate::remote_cmd::attach(&mut engine, &pipeline, &args.remote)?;
    let jobs = crate::executor_cmd::jobs(args.jobs, executor);
    let kill_grace = args.kill_grace;
    let gpus = crate::executor_cmd::gpus(&pipeline, args.gpus, executor);
    let signals = SignalChannel::install()?;
    let (tx, rx) = crossbeam_channel::unbounded();
    let json = args.json;
    let style = report::Style::for_cli(cli, json);
    let reporter = std::thread::spawn(move || {
        if json {
            print_json(rx)
        } else {
            print_human(rx, Human::new(style))
        }
    });
    let result = watch_loop(
        Arc::new(engine),
        pipeline,
        WatchOptions {
            jobs,
            gpus,
            kill_grace,
            debounce: Duration::from_millis(args.debounce),
            display: file.display().to_string(),
            file,
            overrides,
            poll_only: std::env::var_os("SLUICE_WATCH_POLL").is_some_and(|v| v == "1"),
        },
        tx,
        signals.rx.clone(),
    );
    let _ = reporter.join();
    signals.close();
    match result {
        WatchEnd::Interrupted => Ok(ExitCode::from(EXIT_INTERRUPTED)),
    }
}

fn print_json(rx: Receiver<WatchEvent>) {
    let stdout = std::io::stdout();
    for ev in rx {
        if let Ok(line) = serde_json::to_string(&ev) {
            let _ = writeln!(stdout.lock(), "{line}");
        }
    }
}

fn print_human(rx: Receiver<WatchEvent>, mut h: Human) {
    for ev in rx {
        match ev {
            WatchEvent::Engine(e) => h.event(e),
            WatchEvent::Watch(n) => {
                if let Some(line) = notice_line(&h.style, n) {
                    h.say(line);
                }
            }
        }
    }
}

fn notice_line(style: &report::Style, n: Notice) -> Option<String> {
    let quiet = style.quiet;
    match n {
        Notice::Watching {
            sources,
            native,
            polled,
        } => (!quiet).then(|| {
            let polled = if polled > 0 {
                format!(", {polled} polled")
            } else {
                String::new()
            };
            format!(
                "watching {sources} source(s) through {native} director{}{polled}",
                if native == 1 { "y" } else { "ies" }
            )
        }),
        Notice::Changed { path, stages } => (!quiet).then(|| {
            let what = if stages.is_empty() {
                "no stage affected".to_string()
            } else {
                stages.join(", ")
            };
            format!("{path} changed {} {what}", style.paint("36", "→"))
        }),
        Notice::PipelineInvalid { errors } => Some(format!(
            "{}\n{} the edit is not valid; still watching with the last good pipeline",
            errors.trim_end(),
            style.paint("33", "warning:")
        )),
        Notice::Polling { path, reason } => Some(format!(
            "{} cannot watch `{path}` with file-system events ({reason}); polling it every second instead",
            style.paint("33", "warning:")
        )),
        Notice::Waiting => (!quiet).then(|| "waiting for changes (Ctrl-C to stop)".to_string()),
        Notice::WatchWarning { message } => {
            Some(format!("{} {message}", style.paint("33", "warning:")))
        }
    }
}

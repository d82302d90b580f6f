//! Reporters: consumers of the engine's events. `Json` prints one JSON object per line on stdout;
//! `Human` draws a live display on a terminal (a line per running stage with its elapsed time and
//! progress) or plain lines otherwise, then a summary table. Meaning is always in words, colour
//! only underlines it.

use crossbeam_channel::Receiver;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use sluice_runner::{Event, Outcome};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

pub struct Style {
    pub color: bool,
    pub live: bool,
    pub verbose: bool,
    pub quiet: bool,
}

impl Style {
    /// The style the global options ask for: live rows only for a terminal, never with `--json`
    /// (machine output on stdout) or `--quiet`.
    pub fn for_cli(cli: &crate::cli::Cli, json: bool) -> Style {
        Style {
            color: color_enabled(cli.color),
            live: !json && std::io::IsTerminal::is_terminal(&std::io::stderr()) && !cli.quiet,
            verbose: cli.verbose > 0,
            quiet: cli.quiet,
        }
    }

    pub fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
}

pub fn color_enabled(choice: crate::cli::ColorChoice) -> bool {
    match choice {
        crate::cli::ColorChoice::Always => true,
        crate::cli::ColorChoice::Never => false,
        crate::cli::ColorChoice::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::io::stderr().is_terminal()
        }
    }
}

/// An error's message with its hint under it, the hint shown as diagnostics show their `help`.
/// Every failure that carries a hint (a stage's, setup's, serve's) reaches the terminal through
/// this, so hints look the same everywhere and never repeat.
pub fn with_hint(message: &str, hint: Option<&str>) -> String {
    match hint {
        Some(h) => format!("{message}\n  = help: {h}"),
        None => message.to_string(),
    }
}

/// How long the reporter lets events gather before it shows them.
const BATCH: std::time::Duration = std::time::Duration::from_millis(20);

/// Hands `f` every event, a batch at a time, until the channel is closed and empty.
///
/// Why batches: a thread blocked in `recv` is woken by every `send`, and a stage sends two or
/// three events; in a cold run of small stages those wake-ups (a futex call on the sending
/// worker, a context switch and the channel's spinning on the reporter) cost more than showing
/// the events. This thread is no channel waiter: it looks every [`BATCH`] (parked, so whoever
/// ends the run can wake it at once: `Reporter::finish` in main.rs unparks it), and a person
/// does not see 20 ms.
fn batches(rx: Receiver<Event>, mut f: impl FnMut(Event)) {
    loop {
        loop {
            match rx.try_recv() {
                Ok(ev) => f(ev),
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => return,
            }
        }
        std::thread::park_timeout(BATCH);
    }
}

/// Prints events as JSON lines until the channel closes.
pub fn json(rx: Receiver<Event>) {
    let stdout = std::io::stdout();
    batches(rx, |ev| {
        let mut out = stdout.lock();
        if let Ok(line) = serde_json::to_string(&ev) {
            let _ = writeln!(out, "{line}");
        }
    });
}

struct Row {
    outcome: Outcome,
    duration_ms: u64,
}

/// Draws the human display until the channel closes.
pub fn human(rx: Receiver<Event>, style: Style) {
    let mut h = Human::new(style);
    batches(rx, |ev| h.event(ev));
}

/// The human display's state: live bars of running stages and the rows of the current run's
/// summary (reset when a run starts, so `sluice watch` gets one summary per round).
pub struct Human {
    pub style: Style,
    mp: MultiProgress,
    bar_style: ProgressStyle,
    spin_style: ProgressStyle,
    bars: BTreeMap<String, ProgressBar>,
    rows: Vec<(String, Row)>,
    /// Stages of the current run whose restore came from the remote cache.
    from_remote: std::collections::BTreeSet<String>,
}

impl Human {
    pub fn new(style: Style) -> Human {
        let mp = if style.live {
            MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10))
        } else {
            MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
        };
        let bar_style = ProgressStyle::with_template(
            "{spinner} {prefix:<20} {elapsed:>4} {wide_bar} {pos}/{len} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> ");
        let spin_style = ProgressStyle::with_template("{spinner} {prefix:<20} {elapsed:>4} {msg}")
            .expect("valid template");
        Human {
            style,
            mp,
            bar_style,
            spin_style,
            bars: BTreeMap::new(),
            rows: Vec::new(),
            from_remote: Default::default(),
        }
    }

    /// Prints a line above the live bars (or plainly, without them).
    pub fn say(&self, line: String) {
        if self.style.live {
            let _ = self.mp.println(line);
        } else {
            eprintln!("{line}");
        }
    }

    pub fn event(&mut self, ev: Event) {
        let style = &self.style;
        let (mp, bars, rows) = (&self.mp, &mut self.bars, &mut self.rows);
        let from_remote = &mut self.from_remote;
        let (bar_style, spin_style) = (&self.bar_style, &self.spin_style);
        let say = |line: String| {
            if style.live {
                let _ = mp.println(line);
            } else {
                eprintln!("{line}");
            }
        };
        match ev {
            Event::RunStarted {
                pipeline,
                stages,
                jobs,
                ..
            } => {
                if !style.quiet {
                    rows.clear();
                    say(format!(
                        "sluice: pipeline `{pipeline}`, {} stage(s), {jobs} job(s)",
                        stages.len()
                    ));
                }
            }
            Event::StageStarted {
                stage,
                reason,
                gpus,
                ..
            } => {
                if !style.quiet {
                    let g = if gpus.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " [gpu {}]",
                            gpus.iter()
                                .map(|g| g.to_string())
                                .collect::<Vec<_>>()
                                .join(",")
                        )
                    };
                    say(format!(
                        "{} {stage}{g} ({reason})",
                        style.paint("36", "start")
                    ));
                }
                if style.live {
                    let pb = mp.add(ProgressBar::new_spinner());
                    pb.set_style(spin_style.clone());
                    pb.set_prefix(stage.clone());
                    pb.enable_steady_tick(Duration::from_millis(120));
                    bars.insert(stage, pb);
                }
            }
            Event::StageProgress {
                stage,
                done,
                total,
                unit,
                message,
            } => {
                if let Some(pb) = bars.get(&stage) {
                    if let Some(t) = total {
                        if pb.length().is_none() {
                            pb.set_style(bar_style.clone());
                        }
                        pb.set_length(t as u64);
                    }
                    pb.set_position(done as u64);
                    let msg = [unit, message]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(" ");
                    pb.set_message(msg);
                } else if style.verbose {
                    let of = total.map(|t| format!("/{t}")).unwrap_or_default();
                    say(format!(
                        "      {stage}: {done}{of} {}",
                        unit.unwrap_or_default()
                    ));
                }
            }
            Event::StageLog {
                stage,
                level,
                message,
            } => {
                if message == sluice_runner::events::RESTORED_FROM_REMOTE {
                    from_remote.insert(stage);
                } else if level == "notice" {
                    // Worth a line even without -v: e.g. a training environment being installed.
                    if !style.quiet {
                        say(format!("      {stage}: {message}"));
                    }
                } else if style.verbose || matches!(level.as_str(), "warn" | "warning" | "error") {
                    say(format!("      {stage}: [{level}] {message}"));
                }
            }
            Event::StageMetric {
                stage,
                name,
                value,
                step,
            } => {
                if let Some(pb) = bars.get(&stage) {
                    pb.set_message(format!("{name}={value:.4}"));
                } else if style.verbose {
                    let at = step.map(|s| format!(" (step {s})")).unwrap_or_default();
                    say(format!("      {stage}: {name}={value}{at}"));
                }
            }
            Event::TrialFinished {
                trial,
                of,
                state,
                metric_name,
                metric,
                params,
                duration_ms,
            } => {
                if !style.quiet {
                    let width = of.to_string().len();
                    let shown = match metric {
                        Some(m) => format!("{metric_name} {m:.4}"),
                        None => format!("{metric_name} -"),
                    };
                    let params: Vec<String> = params
                        .iter()
                        .map(|(k, v)| match v {
                            serde_json::Value::String(s) => format!("{k}={s}"),
                            other => format!("{k}={other}"),
                        })
                        .collect();
                    let colour = match state.as_str() {
                        "done" => "32",
                        "pruned" => "33",
                        _ => "31",
                    };
                    say(format!(
                        "{} {trial:>width$}/{of} {:<7} {shown}  {}  ({:.1}s)",
                        style.paint("1", "trial"),
                        style.paint(colour, &state),
                        params.join(" "),
                        duration_ms as f64 / 1000.0
                    ));
                }
            }
            Event::StageFinished {
                stage,
                outcome,
                duration_ms,
                message,
                hint,
                log_tail,
            } => {
                if let Some(pb) = bars.remove(&stage) {
                    pb.finish_and_clear();
                    mp.remove(&pb);
                }
                let secs = format!("{:.2}s", duration_ms as f64 / 1000.0);
                let line = match outcome {
                    Outcome::Ran => {
                        Some(format!("{} {stage} ({secs})", style.paint("32", "done ")))
                    }
                    Outcome::Restored => Some(format!(
                        "{} {stage} (from {}cache)",
                        style.paint("34", "restored"),
                        if from_remote.remove(&stage) {
                            "the remote "
                        } else {
                            ""
                        }
                    )),
                    Outcome::UpToDate => style
                        .verbose
                        .then(|| format!("{} {stage}", style.paint("2", "up to date"))),
                    Outcome::Failed | Outcome::TimedOut => {
                        let mut s = format!(
                            "{} {stage}: {}",
                            style.paint(
                                "31;1",
                                if outcome == Outcome::Failed {
                                    "FAILED"
                                } else {
                                    "TIMED OUT"
                                }
                            ),
                            with_hint(&message.unwrap_or_default(), hint.as_deref())
                        );
                        if !log_tail.is_empty() {
                            s.push_str("\n  last lines of its log:");
                            for l in &log_tail {
                                s.push_str(&format!("\n  | {l}"));
                            }
                        }
                        Some(s)
                    }
                    Outcome::Cancelled => {
                        Some(format!("{} {stage}", style.paint("33", "cancelled")))
                    }
                    Outcome::Skipped => (!style.quiet).then(|| {
                        format!(
                            "{} {stage}: {}",
                            style.paint("33", "skipped"),
                            message.unwrap_or_default()
                        )
                    }),
                    Outcome::Pruned => {
                        // The message starts with the word itself (`pruned: val_loss 0.91 at
                        // epoch 5 is worse ...`), which the label already says.
                        let why = message.unwrap_or_default();
                        let why = why.strip_prefix("pruned: ").unwrap_or(&why);
                        Some(format!("{} {stage}: {why}", style.paint("35", "pruned")))
                    }
                };
                if let Some(line) = line {
                    if !style.quiet || outcome.is_failure() {
                        say(line);
                    }
                }
                rows.push((
                    stage,
                    Row {
                        outcome,
                        duration_ms,
                    },
                ));
            }
            Event::Warning { stage, message } => {
                let who = stage.map(|s| format!("{s}: ")).unwrap_or_default();
                say(format!("{} {who}{message}", style.paint("33", "warning:")));
            }
            Event::Notice { message } => say(format!("{} {message}", style.paint("36", "note:"))),
            Event::RunFinished {
                ok,
                interrupted,
                duration_ms,
                ran,
                up_to_date,
                restored,
                failed,
                skipped,
                pruned,
                remote,
            } => {
                let _ = mp.clear();
                if style.quiet && ok {
                    return;
                }
                let mut out = String::new();
                let listed: Vec<&(String, Row)> = if rows.len() <= 40 {
                    rows.iter().collect()
                } else {
                    rows.iter()
                        .filter(|(_, r)| r.outcome != Outcome::UpToDate)
                        .collect()
                };
                if !listed.is_empty() {
                    let width = listed
                        .iter()
                        .map(|(n, _)| n.len())
                        .max()
                        .unwrap_or(5)
                        .max(5);
                    out.push_str(&format!(
                        "\n{:<width$}  {:<10}  {:>8}\n",
                        "stage", "result", "time"
                    ));
                    for (name, r) in &listed {
                        let t = if matches!(r.outcome, Outcome::UpToDate | Outcome::Skipped) {
                            String::new()
                        } else {
                            format!("{:.2}s", r.duration_ms as f64 / 1000.0)
                        };
                        out.push_str(&format!(
                            "{name:<width$}  {:<10}  {t:>8}\n",
                            r.outcome.label()
                        ));
                    }
                    if listed.len() < rows.len() {
                        out.push_str(&format!(
                            "({} up-to-date stages not listed)\n",
                            rows.len() - listed.len()
                        ));
                    }
                }
                let verdict = if interrupted {
                    style.paint("33;1", "interrupted")
                } else if ok {
                    style.paint("32;1", "ok")
                } else {
                    style.paint("31;1", "failed")
                };
                // Only sweeps prune, so other runs keep their summary as it always was.
                let pruned = if pruned > 0 {
                    format!(", {pruned} pruned")
                } else {
                    String::new()
                };
                out.push_str(&format!(
                    "{verdict}: {ran} ran, {up_to_date} up to date, {restored} restored, {failed} failed, {skipped} skipped{pruned} in {:.2}s\n",
                    duration_ms as f64 / 1000.0
                ));
                if let Some(r) = remote {
                    out.push_str(&remote_line(&r));
                }
                eprint!("{out}");
            }
        }
    }
}

/// The run summary's remote line: what came down, what went up, and whether the remote failed.
fn remote_line(r: &sluice_runner::cache::RemoteSummary) -> String {
    let mut parts = Vec::new();
    if r.restored > 0 {
        parts.push(format!(
            "{} stage(s) restored ({} fetched)",
            r.restored,
            indicatif::HumanBytes(r.fetched_bytes)
        ));
    }
    if r.pushed_records > 0 {
        parts.push(format!(
            "{} stage(s) pushed ({} sent)",
            r.pushed_records,
            indicatif::HumanBytes(r.pushed_bytes)
        ));
    }
    if let Some(why) = &r.failed {
        parts.push(format!("not used after: {why}"));
    }
    if parts.is_empty() {
        parts.push("nothing moved".into());
    }
    format!("remote {}: {}\n", r.url, parts.join(", "))
}

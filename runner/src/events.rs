//! `Event`: everything the engine reports while it works. The engine only emits events; the
//! binary's reporters (live display, `--json` lines, logs) consume them.

use crossbeam_channel::Sender;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Outputs present and matching the key: nothing done.
    UpToDate,
    /// Outputs put back from the cache without running.
    Restored,
    /// The stage ran and succeeded.
    Ran,
    Failed,
    TimedOut,
    /// Stopped by a failure elsewhere or by an interrupt.
    Cancelled,
    /// Never started: an upstream stage failed or was pruned, or the run stopped first.
    Skipped,
    /// Stopped, or never started, because a sweep's pruning rule gave up on it
    /// (`scheduler::Control::Prune`). Not a success (nothing it would have produced exists), but
    /// not a failure either.
    Pruned,
}

impl Outcome {
    /// The stage's outputs exist and match its key.
    pub fn is_success(self) -> bool {
        matches!(self, Outcome::UpToDate | Outcome::Restored | Outcome::Ran)
    }
    /// The stage itself went wrong: what makes a run fail (exit code, `RunFinished::failed`).
    /// Cancelled and skipped stages are consequences of a failure or an interrupt, and pruned
    /// ones of a decision, so they are neither.
    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::TimedOut)
    }
    pub fn label(self) -> &'static str {
        match self {
            Outcome::UpToDate => "up to date",
            Outcome::Restored => "restored",
            Outcome::Ran => "ran",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed out",
            Outcome::Cancelled => "cancelled",
            Outcome::Skipped => "skipped",
            Outcome::Pruned => "pruned",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        run_id: String,
        pipeline: String,
        stages: Vec<String>,
        jobs: usize,
        gpus: usize,
    },
    /// A stage is about to execute (not emitted for up-to-date or restored stages).
    StageStarted {
        stage: String,
        reason: String,
        gpus: Vec<String>,
        log: String,
    },
    StageProgress {
        stage: String,
        done: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        total: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        unit: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    StageLog {
        stage: String,
        level: String,
        message: String,
    },
    StageMetric {
        stage: String,
        name: String,
        value: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        step: Option<u64>,
    },
    StageFinished {
        stage: String,
        outcome: Outcome,
        duration_ms: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        /// How to fix a failure, apart from its message (rendered like a diagnostic's help).
        #[serde(skip_serializing_if = "Option::is_none")]
        hint: Option<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        log_tail: Vec<String>,
    },
    /// Every stage of one sweep trial has finished (`sluice sweep`'s live table).
    TrialFinished {
        trial: usize,
        /// Trials in the sweep.
        of: usize,
        /// done, pruned, failed, cancelled or pending.
        state: String,
        metric_name: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        metric: Option<f64>,
        params: std::collections::BTreeMap<String, serde_json::Value>,
        duration_ms: u64,
    },
    Warning {
        #[serde(skip_serializing_if = "Option::is_none")]
        stage: Option<String>,
        message: String,
    },
    /// Worth knowing about the run, not a problem: the params come from a promoted file.
    Notice { message: String },
    RunFinished {
        ok: bool,
        interrupted: bool,
        duration_ms: u64,
        ran: usize,
        up_to_date: usize,
        restored: usize,
        failed: usize,
        skipped: usize,
        /// Stages stopped or not started by a sweep's pruning rule (their downstream counts
        /// as skipped).
        pruned: usize,
        /// What the remote cache did, when there is one.
        #[serde(skip_serializing_if = "Option::is_none")]
        remote: Option<crate::cache::RemoteSummary>,
    },
}

/// The `StageLog` message of a stage whose restore came from the remote cache.
pub const RESTORED_FROM_REMOTE: &str = "restored from the remote cache";

/// A stage's handle on the event stream.
#[derive(Clone)]
pub struct StageEventSink {
    stage: String,
    tx: Sender<Event>,
}

impl StageEventSink {
    pub fn new(stage: &str, tx: Sender<Event>) -> Self {
        StageEventSink {
            stage: stage.to_string(),
            tx,
        }
    }
    pub fn progress(
        &self,
        done: f64,
        total: Option<f64>,
        unit: Option<String>,
        message: Option<String>,
    ) {
        let _ = self.tx.send(Event::StageProgress {
            stage: self.stage.clone(),
            done,
            total,
            unit,
            message,
        });
    }
    pub fn log(&self, level: &str, message: impl Into<String>) {
        let _ = self.tx.send(Event::StageLog {
            stage: self.stage.clone(),
            level: level.to_string(),
            message: message.into(),
        });
    }
    pub fn metric(&self, name: &str, value: f64, step: Option<u64>) {
        let _ = self.tx.send(Event::StageMetric {
            stage: self.stage.clone(),
            name: name.to_string(),
            value,
            step,
        });
    }
    pub fn warn(&self, message: impl Into<String>) {
        let _ = self.tx.send(Event::Warning {
            stage: Some(self.stage.clone()),
            message: message.into(),
        });
    }
}

//! `WatchEvent`: what `sluice watch` reports, the engine's own events and the watcher's notices
//! in one ordered stream, so a reporter sees "x changed" before the cancellation it causes.

use crate::events::Event;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum WatchEvent {
    /// An event of the round that is running.
    Engine(Event),
    Watch(Notice),
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Notice {
    /// The set of watched paths was set up or changed.
    Watching {
        /// Sources (external inputs, plugin files, the pipeline file).
        sources: usize,
        /// Directories watched natively and by polling.
        native: usize,
        polled: usize,
    },
    /// A source's content changed; `stages` are the affected ones, in dependency order.
    Changed { path: String, stages: Vec<String> },
    /// The pipeline file changed but does not validate: the last good pipeline stays.
    PipelineInvalid { errors: String },
    /// A path could not be watched natively and is polled instead.
    Polling { path: String, reason: String },
    /// A round ended and nothing is pending.
    Waiting,
    /// Something went wrong that does not stop watching.
    WatchWarning { message: String },
}

//! `sluice watch`: run a pipeline, then keep it up to date as its sources change.
//!
//! `rounds::watch` is one loop that owns the watch state. It receives file-system events
//! (`fs::FsWatch`; `debounce::Debounce` says when to look at them), the running round's engine
//! events and completion, and signals, as messages. A change is confirmed by content (`sources::Sources` re-hashes the external inputs,
//! plugin files and the pipeline file it touches) and becomes a set of affected stages (the
//! readers and their downstream closure). One engine run (a *round*) goes on at a time, in its own
//! thread; affected stages of the running round are stopped and rerun inside it through the
//! dispatcher's `Control` channel, so unaffected stages carry on. Everything the loop reports
//! goes out as `WatchEvent`s; it never prints.

mod debounce;
mod fs;
mod notice;
mod reload;
mod rounds;
mod sources;

pub use notice::{Notice, WatchEvent};
pub use rounds::{watch, WatchEnd, WatchOptions, DEFAULT_DEBOUNCE};

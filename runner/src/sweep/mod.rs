//! Sweeps: a search over a pipeline's params (`sluice sweep`). `spec` reads the `sweep:` section
//! and the command line's overrides into a `SweepSpec`, `space` turns it into numbered trials,
//! `expand` lays the trials out as stages of one pipeline (shared upstream once, the rest per
//! trial, each in its own directory), `prune` is the median stopping rule, `promote` the promoted params file, `drive` runs it all
//! as one engine run, `results` holds, ranks, writes and reads back what the trials gave.

pub mod drive;
pub mod expand;
pub mod promote;
pub mod prune;
pub mod results;
pub mod space;
pub mod spec;

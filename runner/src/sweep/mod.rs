//! Sweeps: a search over a pipeline's params (`sluice sweep`). `spec` holds the `SweepSpec`,
//! read from the `sweep:` section by `section` and from the command line's flags by
//! `overrides`; `space` turns it into numbered trials; `expand` lays the trials out as stages of
//! one pipeline (shared upstream once, the rest per trial, each in its own directory); `drive`
//! runs that pipeline as one engine run, with `prune` (the median stopping rule) stopping bad
//! trials; `results` holds, ranks, writes and reads back what the trials gave; `promote` is the
//! promoted params file a chosen trial leaves beside the pipeline.

pub mod drive;
pub mod expand;
mod overrides;
pub mod promote;
pub mod prune;
pub mod results;
mod section;
pub mod space;
pub mod spec;

//! Sweeps: a search over a pipeline's params (`sluice sweep`). `spec` reads the `sweep:` section
//! and the command line's overrides into a `SweepSpec`, `space` turns it into numbered trials,
//! `results` holds, ranks, writes and reads back what the trials gave.

pub mod results;
pub mod space;
pub mod spec;

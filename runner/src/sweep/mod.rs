//! Sweeps: a search over a pipeline's params (`sluice sweep`). `spec` holds the `SweepSpec`,
//! read from the `sweep:` section by `section` and from the command line's flags by
//! `overrides`; `space` turns it into numbered trials; `results` holds, ranks, writes and reads
//! back what the trials gave.

mod overrides;
pub mod results;
mod section;
pub mod space;
pub mod spec;

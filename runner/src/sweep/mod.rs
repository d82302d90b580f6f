//! Sweeps: search over params (`sluice sweep`). `expand` lays a sweep's trials out as stages of
//! one pipeline (shared upstream once, the rest per trial, each in its own directory).

pub mod expand;

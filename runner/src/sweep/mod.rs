//! Sweeps: trials of a pipeline over a space of params. `promote` holds the promoted-params file
//! that a sweep's chosen trial leaves beside its pipeline.

pub mod promote;

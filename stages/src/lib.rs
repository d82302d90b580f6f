//! sluice's built-in stages. The binary registers them with the engine through [`registry`].
//! Each kind implements `sluice_runner::Stage`; `table` and `staged` hold what the data stages
//! share (reading and writing tables, moving finished outputs into place), `rng` the seeded
//! randomness they use, `npy` the NumPy arrays the trainer reads. [`preprocess`] is public: it is
//! the artifact `normalize` writes and the code that applies it to raw rows. `train` runs ONNX
//! Runtime training in a Python worker whose environment [`pyenv`] manages; `evaluate` runs the
//! model in Rust ([`infer`], ONNX Runtime through `ort`), `explain` ranks its inputs by
//! permutation importance through the same inference, and `deploy` publishes bundles that
//! `sluice serve` reads. [`sweep_plot`] draws a sweep's metric against its params.

mod arrays;
mod bundle_check;
mod clean;
pub mod deploy;
pub mod evaluate;
mod explain;
mod fence;
mod fields;
pub mod fuzzing;
mod image_folder;
pub mod infer;
mod modes;
mod normalize;
mod npy;
mod problems;
pub mod pyenv;
mod quantile;
mod rng;
#[cfg(test)]
mod schema_agreement;
mod split;
mod staged;
pub mod sweep_plot;
mod table;
mod train;

pub use normalize::preprocess;
use sluice_runner::StageRegistry;
use std::sync::Arc;
pub use table::keep_freed_memory_for_data_stages;

/// Every built-in stage kind of this build.
pub fn registry() -> StageRegistry {
    let mut registry = StageRegistry::default();
    registry.register(Arc::new(clean::Clean));
    registry.register(Arc::new(deploy::Deploy));
    registry.register(Arc::new(evaluate::Evaluate));
    registry.register(Arc::new(explain::Explain));
    registry.register(Arc::new(normalize::Normalize));
    registry.register(Arc::new(split::Split));
    registry.register(Arc::new(train::Train));
    registry
}

//! sluice's built-in stages. The binary registers them with the engine through [`registry`].
//! Each kind implements `sluice_runner::Stage`; `table` and `staged` hold what the data stages
//! share (reading and writing tables, moving finished outputs into place), `rng` the seeded
//! randomness they use, `npy` the NumPy arrays the trainer reads. [`preprocess`] is public: it is
//! the artifact `normalize` writes and the code that applies it to raw rows. Train, evaluate and
//! deploy arrive in later issues.

mod clean;
mod image_folder;
mod normalize;
mod npy;
mod problems;
mod rng;
mod split;
mod staged;
mod table;

pub use normalize::preprocess;
use sluice_runner::StageRegistry;
use std::sync::Arc;

/// Every built-in stage kind of this build.
pub fn registry() -> StageRegistry {
    let mut registry = StageRegistry::default();
    registry.register(Arc::new(clean::Clean));
    registry.register(Arc::new(normalize::Normalize));
    registry.register(Arc::new(split::Split));
    registry
}

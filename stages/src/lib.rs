//! sluice's built-in stages. The binary registers them with the engine through [`registry`].
//! The data stages (clean, split, normalize), train, evaluate and deploy arrive here in later
//! issues; each implements `sluice_runner::Stage`.

use sluice_runner::StageRegistry;

/// Every built-in stage kind of this build.
pub fn registry() -> StageRegistry {
    StageRegistry::default()
}

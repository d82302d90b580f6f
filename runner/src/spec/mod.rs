//! The raw pipeline file: YAML text to `RawPipeline`, keeping the path of every value so that
//! validation can point at it.

pub mod locate;
pub mod raw;
pub mod template;
pub mod yaml;

pub use locate::{Seg, YPath};
pub use raw::{parse_raw, RawPipeline, RawStage};

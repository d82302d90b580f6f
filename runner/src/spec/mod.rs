//! The raw pipeline file: YAML text to `RawPipeline`, keeping the path of every value so that
//! validation can point at it. `yaml` reads the text within bounds (depth, values, size),
//! `raw` checks its shape, `locate` turns paths back into lines and columns, `template` parses
//! `${{ }}` expressions.

pub mod cache;
pub mod executor;
pub mod locate;
pub mod matrix;
pub mod raw;
pub mod template;
pub mod yaml;

pub use locate::{Seg, YPath};
pub use raw::{parse_raw, RawPipeline, RawStage};

//! sluice's engine. Data flows one way: pipeline file → `spec` (raw shape) → `validate` →
//! `Pipeline` with a sealed `StageGraph` → `plan` (decisions) → `scheduler` + `job` (execution)
//! → `cache` and `lock`. The engine emits `events` and never prints.

#![recursion_limit = "256"]

pub mod atomic;
pub mod cache;
pub mod cancel;
mod canonical;
pub mod diag;
pub mod engine;
pub mod error;
pub mod events;
pub mod exec;
pub mod fingerprint;
pub mod graph;
pub mod hash;
mod job;
mod leftovers;
pub mod lock;
pub mod onestage;
mod panics;
pub mod paths;
pub mod pipeline;
pub mod plan;
pub mod render;
pub mod scheduler;
pub mod schema;
pub mod sharing;
pub mod small_map;
pub mod spec;
pub mod stage;
pub mod sweep;
pub mod validate;
pub mod watch;
pub mod workspace;

pub use engine::{Engine, EngineError, RunOptions, RunSummary, Selection};
pub use error::StageError;
pub use events::{Event, Outcome};
pub use job::ENV_ALLOWLIST;
pub use pipeline::{Pipeline, StageDef, StageId, StageKind};
pub use stage::{Prepared, Stage, StageContext, StageRegistry};
pub use validate::{
    load, load_cached, load_fresh, load_with, LoadError, LoadOptions, PromotedParams,
};
pub use workspace::Workspace;

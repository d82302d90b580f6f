//! The JSON Schema of the pipeline format, printed by `sluice schema` for editors' YAML language
//! servers. Kept beside the parser in spirit: when `spec/raw.rs` learns a key, so must this.
//! Inside `with:`, each built-in kind contributes its own schema ([`Stage::with_schema`], derived
//! by the kind from the same declarations its parser reads), chosen by `uses:`.
//!
//! [`Stage::with_schema`]: crate::stage::Stage::with_schema

use crate::stage::StageRegistry;
use serde_json::{json, Value};

/// The schema for a binary whose built-in kinds are `registry`'s: a stage's `with:` is checked
/// against its kind's own schema where the kind declares one.
pub fn pipeline_schema(registry: &StageRegistry) -> Value {
    let builtin_kinds: Vec<&str> = registry.names().collect();
    let path = json!({"type": "string", "description": "A path relative to the workspace, or `${{ stages.S.outputs.NAME }}`."});
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": "https://sluice.dev/schema/pipeline.json",
        "title": "sluice pipeline",
        "type": "object",
        "additionalProperties": false,
        "required": ["stages"],
        "properties": {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$", "description": "Pipeline name; default: the file name."},
            "description": {"type": "string"},
            "params": {
                "type": "object",
                "description": "Values referenced as `${{ params.NAME }}`; override with `sluice run --set NAME=VALUE`."
            },
            "sweep": sweep_schema(),
            "executor": executor_schema(),
            "cache": {
                "type": "object",
                "additionalProperties": false,
                "description": "The remote cache this pipeline shares (docs/cache.md); never part of a stage's key. SLUICE_REMOTE_CACHE and .sluice/config.yaml override it.",
                "properties": {
                    "remote": {"type": "string", "pattern": "^(s3|https?|file)://", "description": "s3://BUCKET[/PREFIX], http(s)://HOST[:PORT][/PATH] or file:///PATH; credentials come from the environment, never from this file."},
                    "push": {"type": "boolean", "description": "Upload results (default true); false reads only."}
                }
            },
            "plugins": {
                "type": "object",
                "description": "External stage kinds speaking the JSON stage protocol.",
                "additionalProperties": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["command"],
                    "properties": {
                        "command": {
                            "oneOf": [
                                {"type": "array", "items": {"type": "string"}, "minItems": 1},
                                {"type": "string"}
                            ]
                        },
                        "description": {"type": "string"}
                    }
                }
            },
            "stages": {
                "type": "object",
                "minProperties": 1,
                "propertyNames": {"pattern": "^[A-Za-z0-9_-]+$"},
                "additionalProperties": {
                    "type": "object",
                    "additionalProperties": false,
                    "oneOf": [{"required": ["uses"]}, {"required": ["run"]}],
                    "allOf": with_by_kind(registry),
                    "properties": {
                        "uses": {
                            "type": "string",
                            "description": "A built-in kind or a name declared under `plugins:`.",
                            "examples": builtin_kinds
                        },
                        "run": {"type": "string", "description": "A shell command (sh -c). `${{ }}` values are shell-quoted."},
                        "description": {"type": "string"},
                        "inputs": {"type": "object", "additionalProperties": path},
                        "outputs": {
                            "oneOf": [
                                {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
                                {"type": "array", "items": {"type": "string"}}
                            ],
                            "description": "Output names and paths; a null path or a bare name means out/<pipeline>/<stage>/<name>."
                        },
                        "with": {"type": ["object", "null"], "description": "The stage's configuration."},
                        "needs": {
                            "oneOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}],
                            "description": "Explicit ordering edges, rarely needed."
                        },
                        "resources": {
                            "type": "object",
                            "additionalProperties": false,
                            "properties": {
                                "cpus": {"type": "integer", "minimum": 1},
                                "gpus": {"type": "integer", "minimum": 0},
                                "memory": {"type": "string", "pattern": "^[0-9]+[KMGTkmgt]$", "description": "e.g. 512M, 4G (powers of 1024), 1M to 64T; Slurm's --mem. Not part of the key."}
                            }
                        },
                        "timeout": {"type": ["string", "number"], "description": "e.g. 90s, 10m, 1h30m"},
                        "env": {
                            "oneOf": [
                                {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean", "null"]}},
                                {"type": "array", "items": {"type": "string"}}
                            ],
                            "description": "Extra environment variables; null (or a bare name) passes sluice's own value through. Part of the cache key."
                        },
                        "version": {"type": ["string", "number"], "description": "Bump to force a rerun."},
                        "matrix": {
                            "type": "object",
                            "minProperties": 1,
                            "propertyNames": {"pattern": "^[A-Za-z0-9_-]+$", "not": {"const": "trial"}},
                            "additionalProperties": {
                                "type": "array",
                                "minItems": 1,
                                "uniqueItems": true,
                                "items": {"type": ["string", "number", "boolean"]}
                            },
                            "description": "One instance of the stage per combination of values, named STAGE@key=value,...; `${{ matrix.KEY }}` reads the instance's value (also in output paths). docs/sweeps.md"
                        }
                    }
                }
            }
        }
    })
}

/// One `if uses is KIND then with is KIND's schema` per kind with a schema: the form editors'
/// YAML language servers follow for completion and hover inside `with:`.
fn with_by_kind(registry: &StageRegistry) -> Vec<Value> {
    registry
        .names()
        .filter_map(|kind| {
            let mut schema = registry.get(kind)?.with_schema()?;
            allow_expressions(&mut schema);
            Some(json!({
                "if": {"properties": {"uses": {"const": kind}}, "required": ["uses"]},
                "then": {"properties": {"with": schema}}
            }))
        })
        .collect()
}

/// Widens every value inside a kind's `with:` schema to also take a `${{ }}` expression: the
/// engine resolves those before the kind sees `with:`, but an editor checks the text as written
/// (`seed: ${{ params.seed }}` is a string there). Descriptions and defaults stay on the outside
/// for hover text.
fn allow_expressions(schema: &mut Value) {
    if let Some(branches) = schema.get_mut("anyOf").and_then(Value::as_array_mut) {
        branches.iter_mut().for_each(allow_expressions);
    }
    if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        properties.values_mut().for_each(widen);
    }
    for key in ["additionalProperties", "items"] {
        if let Some(sub) = schema.get_mut(key).filter(|s| s.is_object()) {
            widen(sub);
        }
    }
}

fn widen(schema: &mut Value) {
    allow_expressions(schema);
    let mut inner = schema.take();
    let mut outer = serde_json::Map::new();
    for key in ["description", "default"] {
        if let Some(v) = inner.as_object_mut().and_then(|m| m.remove(key)) {
            outer.insert(key.into(), v);
        }
    }
    let expression = json!({"type": "string", "pattern": r"^\s*\$\{\{.*\}\}\s*$"});
    outer.insert("anyOf".into(), json!([inner, expression]));
    *schema = Value::Object(outer);
}

/// `executor:` (docs/cluster.md), as `spec::executor` reads it.
fn executor_schema() -> serde_json::Value {
    let slurm = |extra: serde_json::Value| {
        let mut props = json!({
            "partition": {"type": "string"},
            "account": {"type": "string"},
            "qos": {"type": "string"},
            "sbatch_args": {"type": "array", "items": {"type": ["string", "number"]}, "description": "Extra sbatch arguments, after sluice's own (a later flag wins); a stage's come after the defaults'."}
        });
        if let (Some(p), Some(e)) = (props.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        json!({"type": "object", "additionalProperties": false, "properties": props})
    };
    json!({
        "type": "object",
        "additionalProperties": false,
        "description": "Where stages run under `--executor slurm`; never part of a stage's key.",
        "properties": {
            "slurm": slurm(json!({"poll": {"type": ["string", "number"], "description": "How often squeue is asked about live jobs (200ms to 10m; default 2s)."}})),
            "stages": {
                "type": "object",
                "description": "Per-stage overrides, by the stage's name as written under `stages:`.",
                "additionalProperties": slurm(json!({"local": {"type": "boolean", "description": "Run this stage on the submitting machine."}}))
            }
        }
    })
}

/// `sweep:` (docs/sweeps.md), as `sweep::section` reads it.
fn sweep_schema() -> serde_json::Value {
    let pair = |min: serde_json::Value| json!({"type": "array", "minItems": 2, "maxItems": 2, "items": min});
    let direction = json!({"enum": ["max", "min"]});
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["params", "metric"],
        "description": "A search over params with `sluice sweep`: trials share every stage that does not use a varied param, run in parallel, and can be pruned.",
        "properties": {
            "method": {"enum": ["grid", "random"], "description": "Default: random when `trials` or a range is given, else grid."},
            "params": {
                "type": "object",
                "minProperties": 1,
                "description": "Each varied param (declared under `params:`): a list of values, or a distribution.",
                "additionalProperties": {
                    "oneOf": [
                        {"type": "array", "minItems": 1, "items": {"type": ["string", "number", "boolean"]}},
                        {
                            "type": "object",
                            "additionalProperties": false,
                            "minProperties": 1,
                            "maxProperties": 1,
                            "properties": {
                                "choice": {"type": "array", "minItems": 1, "items": {"type": ["string", "number", "boolean"]}},
                                "uniform": pair(json!({"type": "number"})),
                                "loguniform": pair(json!({"type": "number", "exclusiveMinimum": 0})),
                                "int": pair(json!({"type": "integer"}))
                            }
                        }
                    ]
                }
            },
            "trials": {"type": "integer", "minimum": 1, "maximum": crate::sweep::spec::MAX_TRIALS, "description": "How many trials a random sweep draws."},
            "seed": {"type": "integer", "minimum": 0},
            "metric": {"type": "string", "pattern": "^[^.]+\\..+$", "description": "STAGE.METRIC, e.g. evaluate.accuracy."},
            "direction": direction,
            "prune": {
                "oneOf": [
                    {"enum": ["median", "none", false, null]},
                    {
                        "type": "object",
                        "additionalProperties": false,
                        "properties": {
                            "rule": {"enum": ["median"]},
                            "metric": {"type": "string", "description": "A per-epoch metric the trials report, e.g. val_loss."},
                            "direction": direction,
                            "min_trials": {"type": "integer", "minimum": 1},
                            "warmup_epochs": {"type": "integer", "minimum": 0}
                        }
                    }
                ]
            },
            "skip": {
                "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
                "description": "Stages a sweep does not run, besides deploy stages and what depends on them."
            }
        }
    })
}

//! The `deploy` stage: publishes a self-contained, versioned model bundle into a registry
//! directory — `models/<name>/<version>/` with `model.onnx`, the `preprocess.json` serving
//! applies, `metrics.json` and `bundle.json` (lineage) — and moves `models/<name>/latest` to it.
//!
//! Versions are integers, as KServe and Triton number them. A version is identified by the
//! content of its model and preprocessing: deploying the same pair again reuses its version
//! instead of adding one. Bundles are assembled in a temporary directory and renamed into
//! place, and `latest` is replaced atomically, so a server watching the registry never sees half
//! a bundle. The stage's own output is a small JSON record of what it published; the registry
//! itself lives outside the cache.
//!
//! The registry is a directory inside the workspace, like every output, unless the stage opts out
//! with `allow_outside_workspace: true` (a shared registry elsewhere on the machine): a `registry`
//! that is absolute or climbs out with `..` is otherwise a config error when the pipeline loads.
//! Nothing is published before the bundle proves servable (`bundle_check`).

use crate::fields::{Field, Reader, Type};
use crate::problems::problem;
use serde_json::{json, Value};
use sluice_runner::paths::{resolves_inside, PathProblem, WorkPath};
use sluice_runner::stage::{ConfigProblem, Inputs, Restored};
use sluice_runner::{Prepared, Stage, StageContext, StageError};
use std::path::{Path, PathBuf};

/// Marks a directory as a sluice model registry (for `sluice serve`).
pub const REGISTRY_MARKER: &str = ".sluice-registry";
pub const LATEST: &str = "latest";
pub const BUNDLE: &str = "bundle.json";

pub(crate) struct Deploy;

/// The options of `deploy`: what the parser reads and the schema editors get.
const FIELDS: &[Field] = &[
    Field::new(
        "registry",
        TEXT,
        "The registry directory, inside the workspace unless `allow_outside_workspace` is set.",
    )
    .default("\"models\""),
    Field::new(
        "name",
        TEXT,
        "The model's name in the registry: letters, digits, `-`, `_` and `.` (a URL path segment).",
    )
    .required(),
    Field::new(
        "allow_outside_workspace",
        Type::Bool {
            expect: "`true` or `false`",
        },
        "Publish to a registry outside the workspace on purpose.",
    )
    .default("false"),
];

const TEXT: Type = Type::Text {
    non_empty: true,
    expect: "a non-empty string",
};

/// Full `with:` blocks that `deploy` accepts, for the schema's examples.
const EXAMPLES: &[&str] = &[
    r#"{"registry": "models", "name": "iris"}"#,
    r#"{"name": "iris-v2.onnx", "allow_outside_workspace": false}"#,
];

#[derive(Debug, Clone, PartialEq)]
struct DeployConfig {
    /// As written: shown in messages and the record.
    registry: String,
    name: String,
    /// Where the registry is, decided once from `registry` and `allow_outside_workspace`.
    place: Place,
}

/// Where `registry` points.
#[derive(Debug, Clone, PartialEq)]
enum Place {
    /// Inside the workspace (lexically; symbolic links are followed when the stage runs).
    Inside(WorkPath),
    /// Anywhere (absolute, or relative to the workspace): `allow_outside_workspace: true`.
    Anywhere(PathBuf),
}

impl Place {
    fn parse(raw: &str, allow_outside: bool) -> Result<Place, (String, Option<String>)> {
        let opt_in = "or add `allow_outside_workspace: true` to publish to a shared registry elsewhere (see docs/evaluate.md)";
        // Relative to an empty root, an absolute path fails to lie inside, as one climbing out
        // with `..` does: both are outside whatever the workspace is.
        match WorkPath::parse(raw, Path::new("")) {
            _ if allow_outside => Ok(Place::Anywhere(PathBuf::from(raw))),
            Ok(inside) => Ok(Place::Inside(inside)),
            Err(PathProblem::Escapes) => Err((
                format!("`registry` `{raw}` is outside the workspace"),
                Some(format!(
                    "keep the registry inside the workspace (e.g. `registry: models`), {opt_in}"
                )),
            )),
            Err(PathProblem::Empty) => Err((
                format!("`registry` `{raw}` is the workspace itself"),
                Some("name a directory for the registry, e.g. `registry: models`".into()),
            )),
        }
    }

    /// The registry's directory for a workspace at `ws` (canonical).
    fn dir(&self, ws: &Path, raw: &str, name: &str) -> Result<PathBuf, StageError> {
        match self {
            Place::Anywhere(p) => Ok(ws.join(p)),
            Place::Inside(p) => {
                // The model's `latest` file is the deepest thing written outside a version
                // directory; every directory above it must stay inside the workspace.
                let probe = WorkPath::parse(&format!("{p}/{name}/{LATEST}"), ws)
                    .map_err(|_| format!("`registry` `{raw}` is outside the workspace"))?;
                if !resolves_inside(ws, &probe) {
                    return Err(StageError::new(format!(
                        "the registry `{raw}` resolves outside the workspace through a symbolic link"
                    ))
                    .hint("point `registry` at a directory inside the workspace, or add `allow_outside_workspace: true` to publish there on purpose"));
                }
                Ok(p.to_abs(ws))
            }
        }
    }
}

impl DeployConfig {
    fn parse(with: &Value) -> Result<DeployConfig, Vec<ConfigProblem>> {
        let mut r = Reader::open(
            with,
            FIELDS,
            "`deploy`",
            "with: {registry: models, name: iris}",
        )?;
        let registry = r.text("registry").unwrap_or_default();
        let name = r.text("name").unwrap_or_default();
        let allow_outside = r.flag("allow_outside_workspace").unwrap_or_default();
        let mut problems = r.finish();
        let place = match Place::parse(&registry, allow_outside) {
            Ok(place) => Some(place),
            Err((message, help)) => {
                problems.push(problem(&["registry"], message, help));
                None
            }
        };
        if name.is_empty() {
            problems.push(problem(
                &["name"],
                "`deploy` needs the model's `name`".to_string(),
                Some("write e.g. `with: {registry: models, name: iris}`".into()),
            ));
        } else if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            || name.starts_with('.')
        {
            problems.push(problem(
                &["name"],
                format!("`name` `{name}` must be letters, digits, `-`, `_` and `.` (it is a URL path segment)"),
                None,
            ));
        }
        match place {
            Some(place) if problems.is_empty() => Ok(DeployConfig {
                registry,
                name,
                place,
            }),
            _ => Err(problems),
        }
    }
}

impl Stage for Deploy {
    fn kind(&self) -> &'static str {
        "deploy"
    }
    fn version(&self) -> u32 {
        1
    }
    fn outputs(&self) -> &'static [&'static str] {
        &["record"]
    }
    fn output_extension(&self, _output: &str, _inputs: &[&str]) -> Option<&'static str> {
        Some("json")
    }
    fn inputs(&self) -> Option<Inputs> {
        Some(Inputs {
            required: &[&["model"], &["preprocess"]],
            optional: &["metrics"],
        })
    }
    fn prepare(&self, with: &Value) -> Result<Prepared, Vec<ConfigProblem>> {
        DeployConfig::parse(with).map(Prepared::new)
    }
    fn with_schema(&self) -> Option<Value> {
        Some(crate::fields::schema(FIELDS, EXAMPLES))
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<(), StageError> {
        run(ctx, ctx.config::<DeployConfig>()?)
    }
    /// A deploy restored from the cache (say, after going back to an earlier config) points
    /// `latest` at the version its record names, as deploying that model again would; if the
    /// registry no longer holds that version as recorded, the stage runs instead.
    fn after_restore(&self, restored: &Restored<'_>) -> Result<Option<String>, String> {
        let record_path = restored.outputs.get("record").ok_or("no `record` output")?;
        let record: Value = std::fs::read_to_string(record_path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .ok_or("its record is unreadable")?;
        let (Some(registry), Some(name), Some(version), Some(content)) = (
            record["registry"].as_str(),
            record["name"].as_str(),
            record["version"].as_u64(),
            record["content"].as_str(),
        ) else {
            return Err("its record is incomplete".into());
        };
        let dir = restored.workspace.join(registry).join(name);
        let shown = format!("{registry}/{name}/{version}");
        let holds = std::fs::read_to_string(dir.join(version.to_string()).join(BUNDLE))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .is_some_and(|b| b["content"] == content);
        if !holds {
            return Err(format!("the registry no longer holds {shown} as recorded"));
        }
        let current = std::fs::read_to_string(dir.join(LATEST)).ok();
        if current.as_deref().map(str::trim) == Some(version.to_string().as_str()) {
            return Ok(None);
        }
        point_latest(&dir, version)?;
        Ok(Some(format!(
            "restored the deploy of {shown}; `latest` points to it again"
        )))
    }
}

/// Points `dir/latest` at `version`, replaced in one rename so that readers (a running
/// `sluice serve`) see the old or the new version.
fn point_latest(dir: &Path, version: u64) -> Result<(), String> {
    let latest = dir.join(LATEST);
    let tmp = dir.join(format!(".latest-{}", std::process::id()));
    std::fs::write(&tmp, format!("{version}\n")).map_err(io_err("write", &tmp))?;
    std::fs::rename(&tmp, &latest).map_err(io_err("update", &latest))
}

fn io_err<'a>(what: &str, p: &'a Path) -> impl FnOnce(std::io::Error) -> String + 'a {
    let what = what.to_string();
    move |e| format!("cannot {what} `{}`: {e}", p.display())
}

fn run(ctx: &StageContext<'_>, config: &DeployConfig) -> Result<(), StageError> {
    let ws = &ctx.workspace;
    let input = |name: &str| {
        ctx.inputs.get(name).ok_or_else(|| {
            StageError::new(format!("`deploy` needs an input named `{name}`")).hint(
                "write `inputs: {model: ${{ stages.train.outputs.model }}, preprocess: ${{ stages.normalize.outputs.preprocess }}, metrics: ${{ stages.evaluate.outputs.metrics }}}`",
            )
        })
    };
    let model = std::fs::read(input("model")?).map_err(io_err("read", input("model")?))?;
    let preprocess =
        std::fs::read(input("preprocess")?).map_err(io_err("read", input("preprocess")?))?;
    let metrics = match ctx.inputs.get("metrics") {
        Some(p) => Some(std::fs::read(p).map_err(io_err("read", p))?),
        None => None,
    };
    let mut h = blake3::Hasher::new();
    h.update(&(model.len() as u64).to_le_bytes());
    h.update(&model);
    h.update(&preprocess);
    let content = h.finalize().to_hex().to_string();

    let registry = config.place.dir(ws, &config.registry, &config.name)?;
    // Nothing is published that `sluice serve` would refuse to load.
    let shown = |p: &Path| p.strip_prefix(ws).unwrap_or(p).display().to_string();
    let model_path = input("model")?;
    let preprocess_path = input("preprocess")?;
    crate::bundle_check::check(
        model_path,
        &shown(model_path),
        &preprocess,
        &shown(preprocess_path),
        || {
            crate::bundle_check::runtime_library(|| {
                crate::pyenv::ensure_runtime(&ctx.cancel, &mut |step| match step {
                    crate::pyenv::Step::Phase(text) => ctx.events.log("notice", text.to_string()),
                    crate::pyenv::Step::Packages { line, .. } => ctx.events.progress(
                        0.0,
                        None,
                        Some("download".into()),
                        Some(format!("pip: {line}")),
                    ),
                })
                .map_err(StageError::from)
            })
        },
    )?;
    std::fs::create_dir_all(&registry).map_err(io_err("create", &registry))?;
    let marker = registry.join(REGISTRY_MARKER);
    if !marker.exists() {
        std::fs::write(&marker, "a sluice model registry: <name>/<version>/{model.onnx, preprocess.json, bundle.json}\n")
            .map_err(io_err("write", &marker))?;
    }
    let dir = registry.join(&config.name);
    std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
    let versions = versions(&dir);
    let existing = versions.iter().find(|(_, v)| {
        std::fs::read_to_string(v.join(BUNDLE))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .is_some_and(|b| b["content"] == content.as_str())
    });
    let (version, created) = match existing {
        Some((n, _)) => (*n, false),
        None => {
            let n = versions.last().map_or(1, |(n, _)| n + 1);
            let tmp = dir.join(format!(".tmp-{}-{}", std::process::id(), n));
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::create_dir_all(&tmp).map_err(io_err("create", &tmp))?;
            let write = |name: &str, bytes: &[u8]| {
                std::fs::write(tmp.join(name), bytes).map_err(io_err("write", &tmp))
            };
            write("model.onnx", &model)?;
            write("preprocess.json", &preprocess)?;
            if let Some(m) = &metrics {
                write("metrics.json", m)?;
            }
            let lineage = json!({
                "format": 1,
                "name": config.name,
                "version": n,
                "content": content,
                "created": now_rfc3339(),
                "sluice": env!("CARGO_PKG_VERSION"),
                "pipeline": ctx.pipeline,
                "stage": ctx.stage,
                "stage_key": ctx.key,
                "inputs": ctx.inputs.iter().map(|(k, p)| (k.clone(), json!({
                    "path": p.strip_prefix(ws).unwrap_or(p).display().to_string(),
                    "blake3": hash_file(p),
                }))).collect::<serde_json::Map<_, _>>(),
                "git_commit": git_commit(ws),
            });
            write(
                BUNDLE,
                (serde_json::to_string_pretty(&lineage).expect("json") + "\n").as_bytes(),
            )?;
            let dest = dir.join(n.to_string());
            std::fs::rename(&tmp, &dest).map_err(|e| {
                let _ = std::fs::remove_dir_all(&tmp);
                format!("cannot publish `{}`: {e}", dest.display())
            })?;
            (n, true)
        }
    };
    point_latest(&dir, version)?;
    let shown = format!("{}/{}/{version}", config.registry, config.name);
    ctx.events.log(
        "notice",
        if created {
            format!("published {shown}")
        } else {
            format!("{shown} already holds this model and preprocessing; `latest` points to it")
        },
    );
    let record = json!({"registry": config.registry, "name": config.name, "version": version, "content": content, "new": created});
    let out = ctx
        .outputs
        .get("record")
        .ok_or("the pipeline gave no path for output `record`")?;
    let mut staged = crate::staged::Staged::new(&ctx.scratch);
    staged
        .write(
            "record",
            out,
            (serde_json::to_string_pretty(&record).expect("json") + "\n").as_bytes(),
        )
        .map_err(|e| e.to_string())?;
    Ok(staged.commit().map_err(|e| e.to_string())?)
}

/// The numbered version directories of a model, ascending.
pub fn versions(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.parse::<u64>().ok()?;
            e.path().is_dir().then(|| (n, e.path()))
        })
        .collect();
    v.sort();
    v
}

fn hash_file(p: &Path) -> Option<String> {
    std::fs::read(p)
        .ok()
        .map(|b| blake3::hash(&b).to_hex().to_string())
}

fn git_commit(ws: &Path) -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(ws)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

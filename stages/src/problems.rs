//! Shared pieces of config checking and messages: building a `ConfigProblem`, reading `with:` as
//! a mapping, naming files workspace-relative, and turning problems found at run time (`with:`
//! read for the mode a stage's inputs select, where the load reported the other mode's problems)
//! into one line of its failure message.

use serde_json::{Map, Value};
use sluice_runner::stage::ConfigProblem;
use std::path::Path;
use std::sync::OnceLock;

/// What `clean` and `split` say when their input is missing.
pub(crate) const TABLE_OR_IMAGES_HINT: &str =
    "write `inputs: {table: data/rows.csv}`, or `inputs: {images: data/pictures}` for an image folder";

/// A problem at `path` inside `with:`.
pub(crate) fn problem(
    path: &[&str],
    message: impl Into<String>,
    help: Option<String>,
) -> ConfigProblem {
    ConfigProblem {
        path: path.iter().map(|s| s.to_string()).collect(),
        message: message.into(),
        help,
        at_key: false,
    }
}

/// An option at `path` inside `with:` that the kind does not take: the caret points at the key.
pub(crate) fn unknown_option(
    path: &[&str],
    message: impl Into<String>,
    help: Option<String>,
) -> ConfigProblem {
    ConfigProblem {
        at_key: true,
        ..problem(path, message, help)
    }
}

/// `with:` as a mapping; an absent `with:` is an empty one. `example` shows a valid `with:`.
pub(crate) fn with_map<'a>(
    with: &'a Value,
    example: &str,
) -> Result<&'a Map<String, Value>, Vec<ConfigProblem>> {
    static EMPTY: OnceLock<Map<String, Value>> = OnceLock::new();
    match with {
        Value::Object(m) => Ok(m),
        Value::Null => Ok(EMPTY.get_or_init(Map::new)),
        _ => Err(vec![problem(
            &[],
            "`with` must be a mapping",
            Some(format!("write e.g. `{example}`")),
        )]),
    }
}

/// The problems' messages, joined into one line.
pub(crate) fn one_line(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(|p| p.message.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

/// `path` relative to the workspace when it lies inside it: how messages and reports name files
/// (as the user wrote them in the pipeline).
pub(crate) fn relative(workspace: &Path, path: &Path) -> String {
    path.strip_prefix(workspace)
        .unwrap_or(path)
        .display()
        .to_string()
}

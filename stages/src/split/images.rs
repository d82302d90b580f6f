//! `split` on an ImageFolder: the class is the folder, so the split is stratified by class
//! unless `method: random` is asked for (`method` is left out for a stratified split: `check`
//! cannot tell images from tables and demands a `label` for `method: stratified`); rows are the files in sorted order (class, then name),
//! dealt by the same [`assign`](super::assign) functions and seed as tables. Each split is an
//! ImageFolder listing every class, and the summary counts images per class and split.

use super::config::{Method, SplitConfig};
use super::{assign, relative, Part, SplitError};
use crate::image_folder::{self, Folder};
use crate::staged::Staged;
use serde_json::{json, Map, Value};
use sluice_runner::stage::ConfigProblem;
use sluice_runner::StageContext;
use std::collections::BTreeMap;
use std::path::Path;

/// What `assign` calls the label column in its messages.
const CLASS: &str = "class folder";
const STEPS: f64 = 5.0;

fn problem(key: &str, message: String, help: &str) -> ConfigProblem {
    ConfigProblem {
        path: vec![key.to_string()],
        message,
        help: Some(help.into()),
        at_key: false,
    }
}

/// Parses `with` for images: `ratios`, `seed` and `method` (`stratified`, the default, or
/// `random`); the class folders take the place of `label`.
pub(super) fn parse(with: &Value) -> Result<SplitConfig, Vec<ConfigProblem>> {
    let mut map = match with {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let mut problems = Vec::new();
    for key in ["label", "group"] {
        if map.remove(key).is_some() {
            problems.push(ConfigProblem {
                at_key: true,
                ..problem(
                    key,
                    format!("`{key}` does not apply to images: each file's class is its folder"),
                    "remove it; images are split by class folder",
                )
            });
        }
    }
    match map.get("method").and_then(Value::as_str) {
        None if !map.contains_key("method") => {
            map.insert("method".into(), json!("stratified"));
        }
        Some("grouped") => problems.push(problem(
            "method",
            "`method: grouped` does not apply to images".into(),
            "use `stratified` (the default for images) or `random`",
        )),
        _ => {}
    }
    if map.get("method").and_then(Value::as_str) == Some("stratified") {
        map.insert("label".into(), json!(CLASS));
    }
    let with = if with.is_object() || with.is_null() {
        Value::Object(map)
    } else {
        with.clone()
    };
    match SplitConfig::parse(&with) {
        Ok(mut config) if problems.is_empty() => {
            config.label = None;
            Ok(config)
        }
        Ok(_) => Err(problems),
        Err(more) => {
            problems.extend(more);
            Err(problems)
        }
    }
}

fn summary(config: &SplitConfig, source: &str, folder: &Folder, parts: &[Vec<usize>; 3]) -> Value {
    let total = folder.files.len();
    let mut splits = Map::new();
    for part in Part::ALL {
        let rows = &parts[part as usize];
        let mut classes: BTreeMap<&str, usize> =
            folder.classes.iter().map(|c| (c.as_str(), 0)).collect();
        for &row in rows {
            *classes
                .entry(folder.classes[folder.files[row].class].as_str())
                .or_default() += 1;
        }
        let fraction = ((rows.len() as f64 / total.max(1) as f64) * 1e6).round() / 1e6;
        splits.insert(
            part.name().into(),
            json!({"images": rows.len(), "fraction": fraction, "classes": classes}),
        );
    }
    json!({
        "input": source,
        "images": total,
        "method": config.method.name(),
        "seed": config.seed,
        "ratios": Part::ALL
            .iter()
            .map(|&p| (p.name(), config.ratios.get(p)))
            .collect::<BTreeMap<_, _>>(),
        "classes": folder.classes,
        "splits": splits,
    })
}

pub(super) fn run(
    ctx: &StageContext<'_>,
    input: &Path,
    config: &Result<SplitConfig, Vec<ConfigProblem>>,
) -> Result<(), SplitError> {
    let config = config
        .as_ref()
        .map_err(|problems| SplitError::Config(crate::problems::one_line(problems)))?;
    let source = relative(&ctx.workspace, input);
    let step = |done: f64, message: String| {
        ctx.events
            .progress(done, Some(STEPS), Some("steps".into()), Some(message));
        if ctx.cancel.is_cancelled() {
            Err(SplitError::Cancelled)
        } else {
            Ok(())
        }
    };
    let folder = image_folder::read(input, &source, false)?;
    step(
        1.0,
        format!(
            "found {} images in {} classes in {source}",
            folder.files.len(),
            folder.classes.len()
        ),
    )?;
    let assigned = match config.method {
        Method::Stratified => {
            let labels = crate::table::Coded::of(
                folder
                    .files
                    .iter()
                    .map(|e| folder.classes[e.class].as_str()),
            );
            assign::stratified(&labels, CLASS, &config.ratios, config.seed)
        }
        _ => assign::random(folder.files.len(), &config.ratios, config.seed),
    }
    .map_err(|e| SplitError::Assign {
        path: source.clone(),
        source: e,
    })?;
    let parts = Part::ALL.map(|p| assigned.rows(p).to_vec());
    step(2.0, "assigned images to splits".into())?;

    let mut staged = Staged::new(&ctx.scratch);
    for (i, part) in Part::ALL.into_iter().enumerate() {
        let dest = ctx
            .outputs
            .get(part.name())
            .ok_or(SplitError::NoOutput(part.name()))?;
        let dir = staged.dir_for(part.name(), dest)?;
        let rows = &parts[part as usize];
        image_folder::write(
            &dir,
            &folder.classes,
            rows.iter().map(|&r| &folder.files[r]),
        )?;
        step(
            2.0 + i as f64,
            format!("wrote {} images to the {} split", rows.len(), part.name()),
        )?;
    }
    let dest = ctx
        .outputs
        .get(super::SUMMARY)
        .ok_or(SplitError::NoOutput(super::SUMMARY))?;
    let mut text = serde_json::to_string_pretty(&summary(config, &source, &folder, &parts))
        .expect("JSON values always serialize");
    text.push('\n');
    staged.write(super::SUMMARY, dest, text.as_bytes())?;
    step(STEPS, "wrote the summary".into())?;
    staged.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_default_to_stratified_and_reject_label_and_grouped() {
        let ratios = json!({"train": 0.5, "test": 0.5});
        let config = parse(&json!({"ratios": ratios, "seed": 3})).unwrap();
        assert_eq!(config.method, Method::Stratified);
        assert_eq!(config.seed, 3);
        let config = parse(&json!({"ratios": ratios, "method": "random"})).unwrap();
        assert_eq!(config.method, Method::Random);
        let problems =
            parse(&json!({"ratios": ratios, "method": "grouped", "label": "y"})).unwrap_err();
        let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        assert!(
            messages[0].starts_with("`label` does not apply to images"),
            "{messages:?}"
        );
        assert!(
            messages.iter().any(|m| m.starts_with("`method: grouped`")),
            "{messages:?}"
        );
    }
}

//! Fitting: from the train table and the config to a [`Preprocess`]. Only the train split is
//! ever passed here, which is what keeps val and test statistics out of the model's inputs.

use super::config::NormalizeConfig;
use super::encode::{piece_numbers, piece_texts};
use super::preprocess::{
    self, CategoricalColumn, Encoding, InputColumn, Label, NumericColumn, Preprocess, Task,
};
use super::NormalizeError;
use crate::table::hash::TextHash;
use crate::table::Pieces;
use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::DataType;
use rayon::prelude::*;
use std::collections::HashSet;

/// Text-like columns, encoded as categories unless the config says otherwise.
fn is_text(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Boolean
    )
}

/// The distinct values of `Utf8` arrays without nulls (the pieces of one column), sorted.
fn distinct(pieces: &[ArrayRef]) -> Vec<String> {
    let mut seen: HashSet<&str, TextHash> = HashSet::default();
    for text in pieces {
        let text = text.as_string::<i32>();
        // Runs of one value are common (sorted or grouped tables): skip the lookup for them.
        let mut last = None;
        for i in 0..text.len() {
            let value = text.value(i);
            if last != Some(value) {
                seen.insert(value);
                last = Some(value);
            }
        }
    }
    let mut sorted: Vec<&str> = seen.into_iter().collect();
    sorted.sort_unstable();
    sorted.into_iter().map(String::from).collect()
}

/// More distinct values than this in a float label read as a measurement, not class ids: such
/// a label with the default `task: classification` would otherwise fail later, on the first
/// val or test value the train split lacks, with a hint about stratified splits.
const CONTINUOUS_LABEL_VALUES: usize = 20;

pub(super) fn fit(config: &NormalizeConfig, train: &Pieces) -> Result<Preprocess, NormalizeError> {
    if train.rows() == 0 {
        return Err(NormalizeError::EmptyTrain {
            path: train.source.clone(),
        });
    }
    // Every column the config names must exist, whatever role it has.
    train.column_index(&config.label)?;
    let named = config.numeric.columns.iter().map(|(c, _)| c);
    let named = named.chain(config.categorical.columns.iter().map(|(c, _)| c));
    for column in named.chain(&config.drop) {
        train.column_index(column)?;
    }

    let schema = train.schema.clone();
    // Each column is fitted on its own, all on every core; results (and the first error) are
    // taken in column order. The source row id is no feature: it goes beside them as `rows.npy`.
    let fitted = schema
        .fields()
        .par_iter()
        .filter(|field| field.name() != crate::table::row_id::ROW_ID)
        .map(|field| fit_column(config, train, field))
        .collect::<Vec<_>>();
    let mut inputs = Vec::new();
    let mut numeric = Vec::new();
    let mut categorical = Vec::new();
    for column in fitted {
        let (input, n, c) = column?;
        inputs.push(input);
        numeric.extend(n);
        categorical.extend(c);
    }

    let mut features: Vec<String> = numeric.iter().map(|c| c.name.clone()).collect();
    for c in &categorical {
        match c.method {
            Encoding::Onehot => features.extend(
                c.categories
                    .iter()
                    .map(|value| format!("{}={value}", c.name)),
            ),
            Encoding::Ordinal => features.push(c.name.clone()),
        }
    }
    let classes = match config.task {
        Task::Classification => {
            let classes = distinct(&train.keys(&config.label, "label")?);
            let data_type = schema.field(train.column_index(&config.label)?).data_type();
            if data_type.is_floating() && classes.len() > CONTINUOUS_LABEL_VALUES {
                return Err(NormalizeError::ContinuousLabel {
                    path: train.source.clone(),
                    column: config.label.clone(),
                    data_type: data_type.clone(),
                    distinct: classes.len(),
                });
            }
            Some(classes)
        }
        Task::Regression => None,
    };
    Ok(Preprocess {
        format: preprocess::FORMAT,
        inputs,
        numeric,
        categorical,
        features,
        label: Label {
            column: config.label.clone(),
            task: config.task,
            classes,
        },
        unknown_category: config.unknown_category,
    })
}

/// One column's role, and its statistics or categories when it is a feature.
fn fit_column(
    config: &NormalizeConfig,
    train: &Pieces,
    field: &arrow::datatypes::FieldRef,
) -> Result<
    (
        InputColumn,
        Option<NumericColumn>,
        Option<CategoricalColumn>,
    ),
    NormalizeError,
> {
    let (mut numeric, mut categorical) = (None, None);
    let (name, data_type) = (field.name(), field.data_type());
    let scaling = config.numeric.get(name);
    let encoding = config.categorical.get(name);
    let role = if *name == config.label {
        "label"
    } else if config.drop.contains(name) {
        "dropped"
    } else if let Some(method) =
        scaling.or((data_type.is_numeric() && encoding.is_none()).then_some(config.numeric.default))
    {
        let values = piece_numbers(train, name, method.name())?;
        let slices: Vec<&[f64]> = values.iter().map(|v| &v[..]).collect();
        let (center, scale, stats) = preprocess::fit_pieces(method, &slices);
        numeric = Some(NumericColumn {
            name: name.clone(),
            method,
            center,
            scale,
            stats: stats.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        });
        "numeric"
    } else if let Some(method) =
        encoding.or(is_text(data_type).then_some(config.categorical.default))
    {
        let text = piece_texts(train, name)?;
        categorical = Some(CategoricalColumn {
            name: name.clone(),
            method,
            categories: distinct(&text),
        });
        "categorical"
    } else {
        return Err(NormalizeError::Unsupported {
            path: train.source.clone(),
            column: name.clone(),
            data_type: data_type.clone(),
        });
    };
    Ok((
        InputColumn {
            name: name.clone(),
            data_type: data_type.to_string(),
            role: role.to_string(),
        },
        numeric,
        categorical,
    ))
}

//! Fitting: from the train table and the config to a [`Preprocess`]. Only the train split is
//! ever passed here, which is what keeps val and test statistics out of the model's inputs.

use super::config::NormalizeConfig;
use super::encode::{numbers, texts};
use super::preprocess::{
    self, CategoricalColumn, Encoding, InputColumn, Label, NumericColumn, Preprocess, Task,
};
use super::NormalizeError;
use crate::table::Table;
use arrow::datatypes::DataType;
use std::collections::BTreeSet;

/// Text-like columns, encoded as categories unless the config says otherwise.
fn is_text(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Boolean
    )
}

pub(super) fn fit(config: &NormalizeConfig, train: &Table) -> Result<Preprocess, NormalizeError> {
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

    let schema = train.batch.schema();
    let mut inputs = Vec::new();
    let mut numeric = Vec::new();
    let mut categorical = Vec::new();
    for field in schema.fields() {
        let (name, data_type) = (field.name(), field.data_type());
        let scaling = config.numeric.get(name);
        let encoding = config.categorical.get(name);
        let role = if *name == config.label {
            "label"
        } else if config.drop.contains(name) {
            "dropped"
        } else if let Some(method) = scaling
            .or((data_type.is_numeric() && encoding.is_none()).then_some(config.numeric.default))
        {
            let values = numbers(train, name, method.name())?;
            let (center, scale, stats) = preprocess::fit(method, &values);
            numeric.push(NumericColumn {
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
            let categories: BTreeSet<String> = texts(train, name)?.into_iter().collect();
            categorical.push(CategoricalColumn {
                name: name.clone(),
                method,
                categories: categories.into_iter().collect(),
            });
            "categorical"
        } else {
            return Err(NormalizeError::Unsupported {
                path: train.source.clone(),
                column: name.clone(),
                data_type: data_type.clone(),
            });
        };
        inputs.push(InputColumn {
            name: name.clone(),
            data_type: data_type.to_string(),
            role: role.to_string(),
        });
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
            let classes: BTreeSet<String> =
                train.keys(&config.label, "label")?.into_iter().collect();
            Some(classes.into_iter().collect())
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

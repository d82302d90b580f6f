//! Fitting: from the train table and the config to a [`Preprocess`]. Only the train split is
//! ever passed here, which is what keeps val and test statistics out of the model's inputs.

use super::config::NormalizeConfig;
use super::encode::{piece_numbers, piece_texts, OnMissing};
use super::preprocess::{
    self, CategoricalColumn, Clip, Encoding, Fence, Fill, Impute, InputColumn, Label,
    NumericColumn, Preprocess, Task,
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
    let named = named.chain(config.impute.columns.iter().map(|(c, _)| c));
    let named = named.chain(config.clip.iter().flat_map(|(columns, _)| columns));
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
        let fill = match config.impute.get(name).unwrap_or(config.impute.default) {
            Impute::None => None,
            impute => {
                let present = piece_numbers(train, name, method.name(), OnMissing::Skip)?;
                let slices: Vec<&[f64]> = present.iter().map(|v| &v[..]).collect();
                Some(Fill {
                    method: impute,
                    value: number_fill(impute, &slices).ok_or_else(|| {
                        NormalizeError::NothingToImpute {
                            path: train.source.clone(),
                            column: name.clone(),
                        }
                    })?,
                })
            }
        };
        // Scaled as the model will see the column: with its missing values filled.
        let on_missing = fill
            .as_ref()
            .map_or(OnMissing::Fail, |f| OnMissing::Fill(f.value));
        let values = piece_numbers(train, name, method.name(), on_missing)?;
        let slices: Vec<&[f64]> = values.iter().map(|v| &v[..]).collect();
        let (clip, clipped) = match &config.clip {
            Some((columns, fence)) if columns.contains(name) => {
                let clip = fences(*fence, &slices);
                // Scaled as the model will see the column: clipped (a copy, for these only).
                let clipped: Vec<Vec<f64>> = slices
                    .iter()
                    .map(|p| p.iter().map(|x| x.clamp(clip.low, clip.high)).collect())
                    .collect();
                (Some(clip), clipped)
            }
            _ => (None, Vec::new()),
        };
        let slices = if clip.is_some() {
            clipped.iter().map(|v| &v[..]).collect()
        } else {
            slices
        };
        let (center, scale, stats) = preprocess::fit_pieces(method, &slices);
        numeric = Some(NumericColumn {
            name: name.clone(),
            method,
            center,
            scale,
            stats: stats.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            fill,
            clip,
        });
        "numeric"
    } else if let Some(method) =
        encoding.or(is_text(data_type).then_some(config.categorical.default))
    {
        if config.clip.as_ref().is_some_and(|(c, _)| c.contains(name)) {
            return Err(NormalizeError::NotNumeric {
                path: train.source.clone(),
                column: name.clone(),
                data_type: data_type.clone(),
                method: "clip",
            });
        }
        // `median` and `mean` as a default mean "the usual fill" for text columns too: `mode`.
        let fill = match config.impute.get(name).unwrap_or(config.impute.default) {
            Impute::None => None,
            Impute::Median | Impute::Mean if config.impute.get(name).is_some() => {
                return Err(NormalizeError::FillType {
                    path: train.source.clone(),
                    column: name.clone(),
                    data_type: data_type.clone(),
                    method: config.impute.get(name).expect("checked").name(),
                })
            }
            _ => {
                let present = text_values(train, name)?;
                Some(Fill {
                    method: Impute::Mode,
                    value: text_mode(&present).ok_or_else(|| NormalizeError::NothingToImpute {
                        path: train.source.clone(),
                        column: name.clone(),
                    })?,
                })
            }
        };
        let text = piece_texts(train, name, fill.as_ref().map(|f| f.value.as_str()))?;
        categorical = Some(CategoricalColumn {
            name: name.clone(),
            method,
            categories: distinct(&text),
            fill,
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

/// The fences of `fence` over a (filled) train column; `pieces` is not empty.
fn fences(fence: Fence, pieces: &[&[f64]]) -> Clip {
    let parts: Vec<_> = pieces
        .iter()
        .map(|p| crate::quantile::Part::new(p, None))
        .collect();
    let (low, high) = fence
        .bounds(&parts)
        .expect("the train split has rows and no NaN");
    Clip { fence, low, high }
}

/// The fill `impute` gives for the present values of a numeric column; `None` without any.
fn number_fill(impute: Impute, pieces: &[&[f64]]) -> Option<f64> {
    let values = || pieces.iter().flat_map(|p| p.iter().copied());
    let n = pieces.iter().map(|p| p.len()).sum::<usize>();
    if n == 0 {
        return None;
    }
    match impute {
        Impute::None => None,
        Impute::Mean => Some(values().sum::<f64>() / n as f64),
        Impute::Median => {
            let parts: Vec<_> = pieces
                .iter()
                .map(|p| crate::quantile::Part::new(p, None))
                .collect();
            crate::quantile::quantiles(&parts, &[0.5]).map(|q| q[0])
        }
        Impute::Mode => {
            let mut sorted: Vec<f64> = values().collect();
            sorted.sort_unstable_by(f64::total_cmp);
            // The longest run of equal values; the first (smallest) among equally long ones.
            let mut best = (0, sorted[0]);
            let mut start = 0;
            for i in 1..=sorted.len() {
                if i == sorted.len() || sorted[i] != sorted[start] {
                    if i - start > best.0 {
                        best = (i - start, sorted[start]);
                    }
                    start = i;
                }
            }
            Some(best.1)
        }
    }
}

/// The present values of a text column of the train split, in row order.
fn text_values(train: &Pieces, name: &str) -> Result<Vec<String>, NormalizeError> {
    let index = train.column_index(name)?;
    let mut out = Vec::new();
    for batch in &train.batches {
        let column = batch.column(index);
        let cast = arrow::compute::cast(column, &DataType::Utf8).map_err(|_| {
            NormalizeError::Unsupported {
                path: train.source.clone(),
                column: name.to_string(),
                data_type: column.data_type().clone(),
            }
        })?;
        out.extend(cast.as_string::<i32>().iter().flatten().map(String::from));
    }
    Ok(out)
}

/// The most frequent value, ties to the smallest; `None` without any.
fn text_mode(values: &[String]) -> Option<String> {
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    // `max_by_key` keeps the last maximum; iterate from the largest key so that it is the
    // smallest among equals.
    counts
        .into_iter()
        .rev()
        .max_by_key(|&(_, n)| n)
        .map(|(v, _)| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_are_the_statistics_of_the_present_values() {
        let (a, b) = ([3.0, 1.0, 2.0][..].to_vec(), [10.0, 2.0][..].to_vec());
        let pieces: [&[f64]; 2] = [&a, &b];
        assert_eq!(number_fill(Impute::Median, &pieces), Some(2.0));
        assert_eq!(number_fill(Impute::Mean, &pieces), Some(3.6));
        assert_eq!(number_fill(Impute::Mode, &pieces), Some(2.0));
        assert_eq!(number_fill(Impute::Median, &[&[][..]]), None);
        let texts = ["b", "a", "b", "a", "c"].map(String::from);
        assert_eq!(text_mode(&texts).as_deref(), Some("a"));
    }
}

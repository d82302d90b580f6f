//! `filter`: the rows for which the `filter:` expression is false leave, piece by piece.

use super::RuleError;
use crate::clean::expr::Expr;
use crate::table::Pieces;
use rayon::prelude::*;
use serde_json::{json, Value};

pub(crate) fn filter(
    pieces: &Pieces,
    expression: &str,
    expr: &Expr,
) -> Result<(Pieces, Value), RuleError> {
    let batches = pieces
        .batches
        .par_iter()
        .map(|batch| {
            Ok(arrow::compute::filter_record_batch(
                batch,
                &expr.eval(batch)?,
            )?)
        })
        .collect::<Result<Vec<_>, RuleError>>()?;
    let out = Pieces {
        schema: pieces.schema.clone(),
        batches,
        source: pieces.source.clone(),
    };
    let dropped = pieces.rows() - out.rows();
    Ok((out, json!({"expression": expression, "dropped": dropped})))
}

//! `drop_columns`: the named columns leave every piece.

use crate::table::Pieces;
use serde_json::{json, Value};
use std::sync::Arc;

pub(crate) fn drop_columns(pieces: &Pieces, names: &[String]) -> (Pieces, Value) {
    let schema = &pieces.schema;
    let keep: Vec<usize> = (0..schema.fields().len())
        .filter(|&i| !names.contains(schema.field(i).name()))
        .collect();
    let project = "indices come from the schema";
    let pieces = Pieces {
        schema: Arc::new(schema.project(&keep).expect(project)),
        batches: pieces
            .batches
            .iter()
            .map(|b| b.project(&keep).expect(project))
            .collect(),
        source: pieces.source.clone(),
    };
    (pieces, json!({"dropped": names}))
}

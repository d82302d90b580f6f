//! [`Modes`]: the prepared `with:` of a kind that reads either a table or an image folder
//! (`clean`, `split`, `normalize`). Which one a stage reads is only known when it runs, from its
//! inputs, so `with:` is parsed for both modes when the pipeline loads. The load reports the
//! problems of the mode `with:` itself points to; a run takes its own mode's parse, and fails
//! with that mode's problems where `with:` does not fit it.

use sluice_runner::stage::ConfigProblem;
use sluice_runner::Prepared;

/// `with:` as each mode reads it.
pub(crate) struct Modes<T, I> {
    pub(crate) table: Result<T, Vec<ConfigProblem>>,
    pub(crate) images: Result<I, Vec<ConfigProblem>>,
}

impl<T: Send + Sync + 'static, I: Send + Sync + 'static> Modes<T, I> {
    /// Both parses prepared, or the problems of the image mode's parse where `for_images`, the
    /// table mode's otherwise.
    pub(crate) fn prepare(
        table: Result<T, Vec<ConfigProblem>>,
        images: Result<I, Vec<ConfigProblem>>,
        for_images: bool,
    ) -> Result<Prepared, Vec<ConfigProblem>> {
        let refused = if for_images {
            images.as_ref().err()
        } else {
            table.as_ref().err()
        };
        if let Some(problems) = refused {
            return Err(problems.clone());
        }
        Ok(Prepared::new(Modes { table, images }))
    }
}

//! Config problems found again at run time (a stage re-parses `with:` when it runs, in case the
//! engine was driven without validation) become one line of its failure message.

use sluice_runner::stage::ConfigProblem;

/// The problems' messages, joined into one line.
pub(crate) fn one_line(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(|p| p.message.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

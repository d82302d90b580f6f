//! `StageError`, the one error type of a failed stage: a message and, apart from it, an optional
//! hint saying how to fix it. The engine carries both to the events untouched; the binary renders
//! them (the hint the way diagnostics render their `help`), so no stage bakes a `hint:` line or an
//! `error:` prefix into its text. Also `chain`, the text of an error with its sources, for the
//! places where an error becomes a message.

use std::fmt;

/// Why a stage failed. `Display` is the message alone: the hint is for the renderer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageError {
    pub message: String,
    pub hint: Option<String>,
}

impl StageError {
    pub fn new(message: impl Into<String>) -> Self {
        StageError {
            message: message.into(),
            hint: None,
        }
    }

    /// The error with `hint` as what to do about it.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The error with `hint`, if one.
    pub fn hint_opt(mut self, hint: Option<String>) -> Self {
        if hint.is_some() {
            self.hint = hint;
        }
        self
    }
}

impl fmt::Display for StageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StageError {}

/// Helpers that have no hint to give keep returning plain strings; `?` turns them into this.
impl From<String> for StageError {
    fn from(message: String) -> Self {
        StageError::new(message)
    }
}

impl From<&str> for StageError {
    fn from(message: &str) -> Self {
        StageError::new(message)
    }
}

/// `error` and its sources, joined by `: ` (as anyhow's `{:#}` prints them). Errors keep an OS
/// error out of their own message and name it as their source, so it is printed exactly once.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read `{path}`")]
    struct ReadError {
        path: String,
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn chain_prints_each_source_once() {
        let e = ReadError {
            path: "a.csv".into(),
            source: std::io::Error::from_raw_os_error(2),
        };
        let text = chain(&e);
        assert_eq!(
            text,
            format!(
                "cannot read `a.csv`: {}",
                std::io::Error::from_raw_os_error(2)
            )
        );
        assert_eq!(text.matches("No such file").count(), 1, "{text}");
    }

    #[test]
    fn display_is_the_message_alone() {
        let e = StageError::new("it broke").hint("fix it");
        assert_eq!(e.to_string(), "it broke");
        assert_eq!(e.hint.as_deref(), Some("fix it"));
        assert_eq!(StageError::from("plain".to_string()).hint, None);
    }
}

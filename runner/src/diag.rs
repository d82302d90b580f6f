//! `Diagnostic`: one problem found in a user's pipeline, with where it is and how to fix it, and
//! the compiler-style rendering (`file:line:col`, the source line, a caret, `help:`).

use std::fmt::Write as _;

/// A position in a pipeline file (1-based line and column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Diagnostic {
    pub message: String,
    pub location: Option<Location>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>) -> Self {
        Diagnostic {
            message: message.into(),
            location: None,
            help: None,
        }
    }

    pub fn at(mut self, location: Option<Location>) -> Self {
        self.location = location;
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn help_opt(mut self, help: Option<String>) -> Self {
        if help.is_some() {
            self.help = help;
        }
        self
    }
}

/// All the problems found in one pipeline file, in file order.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    pub file: String,
    pub source: String,
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Renders every diagnostic the way a compiler would.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let lines: Vec<&str> = self.source.lines().collect();
        for d in &self.items {
            let _ = writeln!(out, "error: {}", d.message);
            match d.location {
                Some(loc) => {
                    let _ = writeln!(out, "  --> {}:{}:{}", self.file, loc.line, loc.column);
                    if let Some(text) = lines.get(loc.line.saturating_sub(1)) {
                        let num = loc.line.to_string();
                        let pad = " ".repeat(num.len());
                        let _ = writeln!(out, "{pad} |");
                        let _ = writeln!(out, "{num} | {text}");
                        let caret_pad: String = text
                            .chars()
                            .take(loc.column.saturating_sub(1))
                            .map(|c| if c == '\t' { '\t' } else { ' ' })
                            .collect();
                        let _ = writeln!(out, "{pad} | {caret_pad}^");
                    }
                }
                None => {
                    let _ = writeln!(out, "  --> {}", self.file);
                }
            }
            if let Some(h) = &d.help {
                let _ = writeln!(out, "  = help: {h}");
            }
            out.push('\n');
        }
        let n = self.items.len();
        let _ = writeln!(
            out,
            "error: {} has {n} problem{}; nothing was run",
            self.file,
            if n == 1 { "" } else { "s" }
        );
        out
    }
}

/// "did you mean `x`?" for the closest candidate, when one is close enough to be a typo.
pub fn did_you_mean<'a, I: IntoIterator<Item = &'a str>>(
    word: &str,
    candidates: I,
) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(word, c);
        if score > 0.8 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names() {
        assert_eq!(
            did_you_mean("inptus", ["inputs", "outputs", "with"]).as_deref(),
            Some("did you mean `inputs`?")
        );
        assert_eq!(did_you_mean("zzz", ["inputs", "outputs"]), None);
    }
}

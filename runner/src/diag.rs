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

/// How many diagnostics are printed in full; the rest are counted. A generated pipeline with a
/// systematic mistake can have thousands, and the first hundred show the pattern.
pub const SHOWN: usize = 100;

impl Diagnostics {
    /// Renders the first [`SHOWN`] diagnostics the way a compiler would, then counts the rest.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let lines: Vec<&str> = self.source.lines().collect();
        for d in self.items.iter().take(SHOWN) {
            let _ = write!(out, "error: {}", self.render_one(d, &lines));
            out.push('\n');
        }
        let n = self.items.len();
        if n > SHOWN {
            let rest = n - SHOWN;
            let _ = writeln!(
                out,
                "... and {rest} more error{} (the first {SHOWN} are shown above)\n",
                if rest == 1 { "" } else { "s" }
            );
        }
        let _ = writeln!(
            out,
            "error: {} has {n} problem{}; nothing was run",
            self.file,
            if n == 1 { "" } else { "s" }
        );
        out
    }

    /// Each diagnostic rendered on its own, without a label: for warnings, which a consumer
    /// labels (`warning:` in a terminal, an event in `--json`).
    pub fn render_each(&self) -> Vec<String> {
        let lines: Vec<&str> = self.source.lines().collect();
        self.items
            .iter()
            .map(|d| self.render_one(d, &lines))
            .collect()
    }

    /// One diagnostic: its message, place, source line with a caret, and `help:`, each line
    /// ending in a newline.
    fn render_one(&self, d: &Diagnostic, lines: &[&str]) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}", d.message);
        match d.location {
            Some(loc) => {
                let _ = writeln!(out, "  --> {}:{}:{}", self.file, loc.line, loc.column);
                if let Some(text) = lines.get(loc.line.saturating_sub(1)) {
                    let num = loc.line.to_string();
                    let pad = " ".repeat(num.len());
                    let (text, column) = excerpt(text, loc.column);
                    let _ = writeln!(out, "{pad} |");
                    let _ = writeln!(out, "{num} | {text}");
                    let caret_pad: String = text
                        .chars()
                        .take(column.saturating_sub(1))
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
        out
    }
}

/// The most characters of a source line shown; a longer line is cut around the column.
const LINE_CHARS: usize = 120;

/// The part of `line` shown for `column` (1-based, in characters), and the column within it.
/// Only the characters up to the window's end are looked at: a one-line file can be megabytes.
/// Control characters are shown as their pictures (`␀`, `␛`), one for one, so that a NUL or an
/// escape sequence in a broken file cannot reach the terminal.
fn excerpt(line: &str, column: usize) -> (String, usize) {
    let (text, column) = window(line, column);
    if !text.contains(|c: char| c.is_control() && c != '\t') {
        return (text, column);
    }
    let shown = text
        .chars()
        .map(|c| match c {
            '\t' => c,
            '\x7f' => '\u{2421}',
            c if (c as u32) < 0x20 => char::from_u32(0x2400 + c as u32).unwrap_or('\u{fffd}'),
            c if c.is_control() => '\u{fffd}',
            c => c,
        })
        .collect();
    (shown, column)
}

fn window(line: &str, column: usize) -> (String, usize) {
    if line.len() <= LINE_CHARS {
        return (line.to_string(), column);
    }
    let mut start = column.saturating_sub(LINE_CHARS / 2);
    let mut window: Vec<char> = line.chars().skip(start).take(LINE_CHARS + 1).collect();
    if window.len() < LINE_CHARS && start > 0 {
        // Near the end of the line: show a full window that ends there.
        start = start.saturating_sub(LINE_CHARS - window.len());
        window = line.chars().skip(start).take(LINE_CHARS + 1).collect();
    }
    let more = window.len() > LINE_CHARS;
    window.truncate(LINE_CHARS);
    let mut text: String = window.into_iter().collect();
    let mut column = column - start;
    if start > 0 {
        text.insert(0, '…');
        column += 1;
    }
    if more {
        text.push('…');
    }
    (text, column)
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
    fn long_lines_are_cut_around_the_column() {
        let line = format!("k: {}", "x".repeat(10_000));
        let (text, column) = excerpt(&line, 4);
        assert_eq!((text.chars().count(), column), (LINE_CHARS + 1, 4));
        assert!(text.starts_with("k: x") && text.ends_with('…'));
        let (text, column) = excerpt(&line, 5_000);
        assert_eq!(text.chars().nth(column - 1), Some('x'));
        assert!(text.starts_with('…') && text.ends_with('…'));
        assert_eq!(excerpt("short", 3), ("short".to_string(), 3));
        let (text, column) = excerpt(&line, 10_003);
        assert_eq!(text.chars().count(), LINE_CHARS + 1);
        assert_eq!(text.chars().nth(column - 1), Some('x'));
        assert!(text.starts_with('…') && !text.ends_with('…'));
        assert_eq!(
            excerpt("a: \"x\0y\x1b[31m\"\t", 6),
            ("a: \"x\u{2400}y\u{241b}[31m\"\t".to_string(), 6)
        );
    }

    #[test]
    fn each_rendered_alone_is_what_render_labels_error() {
        let d = Diagnostics {
            file: "p.yaml".into(),
            source: "a: 1\nb: 2\n".into(),
            items: vec![
                Diagnostic::new("first").at(Some(Location { line: 2, column: 4 })),
                Diagnostic::new("second").help("do this"),
            ],
        };
        let each = d.render_each();
        assert_eq!(
            each,
            [
                "first\n  --> p.yaml:2:4\n  |\n2 | b: 2\n  |    ^\n",
                "second\n  --> p.yaml\n  = help: do this\n",
            ]
        );
        let labelled: String = each.iter().map(|e| format!("error: {e}\n")).collect();
        assert_eq!(
            d.render(),
            format!("{labelled}error: p.yaml has 2 problems; nothing was run\n")
        );
    }

    #[test]
    fn suggests_close_names() {
        assert_eq!(
            did_you_mean("inptus", ["inputs", "outputs", "with"]).as_deref(),
            Some("did you mean `inputs`?")
        );
        assert_eq!(did_you_mean("zzz", ["inputs", "outputs"]), None);
    }
}

//! `Probes`: every question validation asks the filesystem or the environment, with the answer
//! it got. Validation asks them only through the functions here, which record each one; the
//! load cache (`loads`) stores the probes of a successful load beside its result and reuses the
//! result only while every probe still gets the same answer.
//!
//! A validation change that reads anything else from outside the pipeline file (a file, a
//! directory, a variable, the clock) must ask it through a new [`Question`] here, or the load
//! cache would serve a pipeline validated against a world that is gone.

use crate::paths::{Containment, Escape, WorkPath};
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// One thing validation asked of the world outside the pipeline file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub(crate) enum Question {
    /// Whether a plugin's command word names a regular file (its content is then keyed).
    IsFile(PathBuf),
    /// What is at an input path that no stage produces.
    Input(WorkPath),
    /// Whether an output path leaves the workspace through a symbolic link.
    OutputEscape(WorkPath),
    /// An environment variable a stage passes through (`env: {NAME: }`).
    Env(String),
}

/// What a [`Question`] got.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Answer {
    Bool(bool),
    Input(InputState),
    Escape(Option<EscapeKind>),
    /// BLAKE3 of the value as validation read it (unset and non-UTF-8 read as empty): the
    /// stored probe need not hold a secret's text.
    Env([u8; 32]),
}

/// What is at an input path, as far as validation cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum InputState {
    /// A file or directory, not a link.
    Plain,
    /// A symbolic link that leads to something.
    Link,
    /// A symbolic link that leads nowhere (dangling or in a loop).
    BrokenLink,
    Missing,
}

/// [`Escape`] without its target: only whether an output escapes decides a load (an escape
/// is an error, and only successful loads are cached).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum EscapeKind {
    Parent,
    Leaf,
    State,
    Loop,
}

/// The questions one load asked, with their answers, in the order asked.
#[derive(Debug, Default)]
pub(crate) struct Probes(pub(crate) Vec<(Question, Answer)>);

impl Probes {
    /// An empty list for one stage's questions on a worker, appended to this one in stage order.
    pub(crate) fn sibling(&self) -> Probes {
        Probes::default()
    }

    pub(crate) fn append(&mut self, other: Probes) {
        self.0.extend(other.0);
    }

    pub(crate) fn push(&mut self, q: Question, a: Answer) {
        self.0.push((q, a));
    }

    /// Whether `path` is a regular file (following links), recorded.
    pub(crate) fn is_file(&mut self, path: &Path) -> bool {
        let yes = path.is_file();
        self.push(Question::IsFile(path.to_path_buf()), Answer::Bool(yes));
        yes
    }

    /// An environment variable's value as a stage passes it through, recorded.
    pub(crate) fn env(&mut self, name: &str) -> String {
        let value = std::env::var(name).unwrap_or_default();
        self.push(Question::Env(name.to_string()), env_answer(&value));
        value
    }

    /// `containment.check(path)`, recorded.
    pub(crate) fn output_escape(
        &mut self,
        containment: &mut Containment<'_>,
        path: &WorkPath,
    ) -> Option<Escape> {
        let escape = containment.check(path);
        self.push(
            Question::OutputEscape(path.clone()),
            Answer::Escape(escape.as_ref().map(escape_kind)),
        );
        escape
    }

    /// Each question once, with its answer; `None` when one got two answers (the world
    /// changed while the pipeline loaded, and the load is not one to keep).
    pub(crate) fn unique(&self) -> Option<Vec<(Question, Answer)>> {
        let mut seen: HashMap<&Question, &Answer> = HashMap::new();
        let mut out = Vec::new();
        for (q, a) in &self.0 {
            match seen.insert(q, a) {
                None => out.push((q.clone(), a.clone())),
                Some(earlier) if earlier == a => {}
                Some(_) => return None,
            }
        }
        Some(out)
    }

    /// Whether every question, asked again now, gets the answer it got (each asked once).
    pub(crate) fn still_hold(probes: &[(Question, Answer)], root: &Path) -> bool {
        let mut seen = HashSet::new();
        let unique: Vec<&(Question, Answer)> =
            probes.iter().filter(|(q, _)| seen.insert(q)).collect();
        // One `Containment` per chunk: it remembers directories already found real, as the
        // load's own did, so that outputs sharing a directory cost one `lstat` of it.
        unique.par_chunks(512).all(|chunk| {
            let mut containment = Containment::new(root);
            chunk
                .iter()
                .all(|(q, a)| ask(q, root, &mut containment) == *a)
        })
    }
}

/// `question`, asked now.
fn ask(question: &Question, root: &Path, containment: &mut Containment<'_>) -> Answer {
    match question {
        Question::IsFile(p) => Answer::Bool(p.is_file()),
        Question::Input(p) => Answer::Input(input_state(p, root)),
        Question::OutputEscape(p) => Answer::Escape(containment.check(p).as_ref().map(escape_kind)),
        Question::Env(name) => env_answer(&std::env::var(name).unwrap_or_default()),
    }
}

/// What is at input `path`: one `lstat` for the common case, a `stat` more for a link.
pub(crate) fn input_state(path: &WorkPath, root: &Path) -> InputState {
    let abs = path.to_abs(root);
    match std::fs::symlink_metadata(&abs) {
        Err(_) => InputState::Missing,
        Ok(m) if !m.file_type().is_symlink() => InputState::Plain,
        Ok(_) if std::fs::metadata(&abs).is_ok() => InputState::Link,
        Ok(_) => InputState::BrokenLink,
    }
}

fn env_answer(value: &str) -> Answer {
    Answer::Env(*blake3::hash(value.as_bytes()).as_bytes())
}

fn escape_kind(e: &Escape) -> EscapeKind {
    match e {
        Escape::Parent => EscapeKind::Parent,
        Escape::Leaf(_) => EscapeKind::Leaf,
        Escape::State => EscapeKind::State,
        Escape::Loop => EscapeKind::Loop,
    }
}

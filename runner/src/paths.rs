//! `WorkPath`: a path relative to the workspace root, normalised once when the pipeline is
//! validated, and the containment checks that keep every output inside the workspace.
//!
//! Containment is checked twice: lexically at validation time, and against the resolved file
//! system (symlinks followed) both at validation and right before anything is written, because a
//! symlink can appear between the two. An output that is itself a symbolic link pointing outside
//! the workspace is refused as well: sluice would replace the link rather than write through it,
//! but a link there says the user expects the data to land outside, which it never will.

use std::fmt;
use std::path::{Component, Path, PathBuf};

/// A normalised, workspace-relative path using `/` separators. Never empty, never `..`-leading.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct WorkPath(String);

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathProblem {
    Empty,
    Escapes,
}

impl WorkPath {
    /// Lexically normalises `raw` (relative to `root`, or absolute inside it).
    pub fn parse(raw: &str, root: &Path) -> Result<WorkPath, PathProblem> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(PathProblem::Empty);
        }
        let p = Path::new(raw);
        let rel: PathBuf = if p.is_absolute() {
            match p.strip_prefix(root) {
                Ok(r) => r.to_path_buf(),
                Err(_) => return Err(PathProblem::Escapes),
            }
        } else {
            p.to_path_buf()
        };
        let mut parts: Vec<String> = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
                Component::CurDir => {}
                Component::ParentDir => {
                    if parts.pop().is_none() {
                        return Err(PathProblem::Escapes);
                    }
                }
                Component::RootDir | Component::Prefix(_) => return Err(PathProblem::Escapes),
            }
        }
        if parts.is_empty() {
            return Err(PathProblem::Empty);
        }
        Ok(WorkPath(parts.join("/")))
    }

    /// This path inside `dir` (a normalised workspace-relative directory): where a sweep
    /// puts a stage's outputs.
    pub fn under(&self, dir: &str) -> WorkPath {
        WorkPath(format!("{}/{}", dir.trim_end_matches('/'), self.0))
    }

    /// The path a sweep's key hashes: a path inside the sweep's directory `dir` without `dir`
    /// and its slot (`shared/` or `trials/<n>/`); any other path as it is.
    pub fn keyed(&self, dir: &str) -> WorkPath {
        let Some(rest) = self.0.strip_prefix(dir).and_then(|r| r.strip_prefix('/')) else {
            return self.clone();
        };
        match rest.strip_prefix("shared/").or_else(|| {
            rest.strip_prefix("trials/")
                .and_then(|r| r.split_once('/'))
                .map(|(_, r)| r)
        }) {
            Some(r) => WorkPath(r.to_string()),
            None => self.clone(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn to_abs(&self, root: &Path) -> PathBuf {
        root.join(&self.0)
    }

    /// True when `self` is `other` or lies inside it.
    pub fn is_within(&self, other: &WorkPath) -> bool {
        self.0 == other.0
            || (self.0.len() > other.0.len()
                && self.0.starts_with(&other.0)
                && self.0.as_bytes()[other.0.len()] == b'/')
    }
}

impl fmt::Display for WorkPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks that the directory `path` will be written into, with every symlink on its existing
/// prefix resolved, stays inside `root` (which must already be canonical), and that `path` is
/// not itself a symbolic link pointing outside `root`.
pub fn resolves_inside(root: &Path, path: &WorkPath) -> bool {
    parent_resolves_inside(root, path) && leaf_link_outside(root, path).is_none()
}

/// Where the output `path` points when it is a symbolic link whose target lies outside `root`.
pub fn leaf_link_outside(root: &Path, path: &WorkPath) -> Option<PathBuf> {
    let abs = path.to_abs(root);
    let target = std::fs::read_link(&abs).ok()?;
    let joined = match abs.parent() {
        Some(parent) if target.is_relative() => parent.join(&target),
        _ => target.clone(),
    };
    let inside = match std::fs::canonicalize(&joined) {
        Ok(real) => real.starts_with(root),
        // A dangling link still names a place: judge its text.
        Err(_) => lexically_inside(root, &joined),
    };
    (!inside).then_some(target)
}

/// What `output_site` found at an output's place, when the output stays inside the workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Site {
    /// The directory the output goes in exists (the check went through it), so it needs no
    /// `mkdir`.
    pub dir_exists: bool,
    /// Something is at the output's path already (a previous run's output) that must go.
    pub occupied: bool,
}

/// `resolves_inside` for a stage about to write `path`, with what the check learnt on the way:
/// `None` when the output would escape the workspace. The leaf is looked at once, with the
/// `lstat` that also tells whether anything is there to remove, rather than a `readlink` first
/// and a `stat` for the removal after.
pub(crate) fn output_site(root: &Path, path: &WorkPath) -> Option<Site> {
    let dir_exists = parent_proven_inside(root, path);
    if !dir_exists && !parent_canonically_inside(root, path) {
        return None;
    }
    let occupied = match std::fs::symlink_metadata(path.to_abs(root)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Ok(m) if m.file_type().is_symlink() => {
            if leaf_link_outside(root, path).is_some() {
                return None;
            }
            true
        }
        // Anything else, an error included, is for the removal to deal with (or report).
        _ => true,
    };
    Some(Site {
        dir_exists,
        occupied,
    })
}

/// Whether the directory `path` goes in is, physically, a descendant of the directory at
/// `root`: true when walking up from it by `..` as many times as `path` has directories reaches
/// `root`'s own inode.
///
/// This is `parent_resolves_inside`'s question answered in two `stat`s instead of a `readlink`
/// per component of the absolute path (`canonicalize`), which a cold run asked for every output
/// of every stage. It needs no memo, so nothing it proved can go stale: every call looks at
/// the file system as it is, like `canonicalize` did. Why it is sound: the kernel resolves
/// `..` physically, after following any link on the way (`out/..` with `out -> /tmp/x` is
/// `/tmp`), and a directory has exactly one parent, so the `..` chain of the directory the
/// output lands in is its real ancestry; if `root`'s inode is on it, at the depth the path
/// says, the output lands inside `root`, through links or not. A directory renamed out of the
/// workspace and replaced by a link to it is caught: it keeps its inode, but its `..` is now
/// the directory it was moved into. What it does not share with `canonicalize`: it compares
/// inodes, not names, so a link to the workspace through another path (a bind mount of it, or
/// the whole workspace moved with a link left at its old path) counts as inside, which it
/// physically is. A `false` proves nothing: the caller falls back to
/// `parent_canonically_inside`, which decides exactly as before (a missing directory, a
/// dangling link, a link elsewhere inside the workspace, an output directly in `root`).
fn parent_proven_inside(root: &Path, path: &WorkPath) -> bool {
    use std::os::unix::fs::MetadataExt;
    let depth = path.as_str().matches('/').count();
    if depth == 0 {
        return false;
    }
    let mut up = path.to_abs(root);
    up.pop();
    for _ in 0..depth {
        up.push("..");
    }
    let (Ok(top), Ok(root)) = (std::fs::metadata(&up), std::fs::metadata(root)) else {
        return false;
    };
    top.is_dir() && (top.dev(), top.ino()) == (root.dev(), root.ino())
}

fn parent_resolves_inside(root: &Path, path: &WorkPath) -> bool {
    parent_proven_inside(root, path) || parent_canonically_inside(root, path)
}

/// `parent_resolves_inside` by the directory's canonical path, every link on it followed.
fn parent_canonically_inside(root: &Path, path: &WorkPath) -> bool {
    let abs = path.to_abs(root);
    let Some(parent) = abs.parent() else {
        return false;
    };
    let mut probe = parent.to_path_buf();
    let mut tail: Vec<std::ffi::OsString> = Vec::new();
    loop {
        match std::fs::canonicalize(&probe) {
            Ok(real) => {
                let mut full = real;
                for t in tail.iter().rev() {
                    full.push(t);
                }
                return full.starts_with(root);
            }
            Err(_) => {
                // A dangling symlink as the leaf still points somewhere: follow its text.
                if let Ok(target) = std::fs::read_link(&probe) {
                    let base = probe.parent().unwrap_or(root).to_path_buf();
                    let joined = if target.is_absolute() {
                        target
                    } else {
                        base.join(target)
                    };
                    return lexically_inside(root, &joined);
                }
                match (probe.file_name(), probe.parent()) {
                    (Some(name), Some(parent)) => {
                        tail.push(name.to_os_string());
                        probe = parent.to_path_buf();
                    }
                    _ => return false,
                }
            }
        }
    }
}

/// How an output path leaves the workspace through a symbolic link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Escape {
    /// A directory above the output is a link that resolves outside.
    Parent,
    /// The output itself is a link to this target, outside.
    Leaf(PathBuf),
    /// A directory above the output is a link into `.sluice/`, which sluice owns.
    State,
    /// A directory above the output is a link in a loop: nothing can be written there.
    Loop,
}

impl Escape {
    /// The validation problem for output `name` at `path`, and its hint.
    pub fn problem(&self, name: &str, path: &impl std::fmt::Display) -> (String, String) {
        match self {
            Escape::Parent => (
                format!("output `{name}` (`{path}`) resolves outside the workspace through a symbolic link"),
                "outputs must stay inside the workspace; write somewhere else or remove the link".into(),
            ),
            Escape::State => (
                format!("output `{name}` (`{path}`) leads into `.sluice/`, which sluice owns, through a symbolic link"),
                "write somewhere else or remove the link".into(),
            ),
            Escape::Loop => (
                format!("output `{name}` (`{path}`) goes through a symbolic link that loops back to itself"),
                "fix or remove the link".into(),
            ),
            Escape::Leaf(target) => (
                format!(
                    "output `{name}` (`{path}`) is a symbolic link to `{}`, outside the workspace",
                    target.display()
                ),
                format!("outputs must stay inside the workspace; remove the link `{path}` (sluice would replace it, not write through it)"),
            ),
        }
    }
}

/// `resolves_inside` for many paths at once, remembering directories already known to be real
/// (not symlinks) and inside the root, so that a thousand outputs under `out/` cost a couple of
/// `lstat`s each rather than a full `realpath`.
pub struct Containment<'a> {
    root: &'a Path,
    known_dirs: std::collections::HashSet<PathBuf>,
}

impl<'a> Containment<'a> {
    pub fn new(root: &'a Path) -> Self {
        Containment {
            root,
            known_dirs: Default::default(),
        }
    }

    /// `None` when `path` stays inside the workspace.
    pub fn check(&mut self, path: &WorkPath) -> Option<Escape> {
        let mut prefix = self.root.to_path_buf();
        let all: Vec<&str> = path.as_str().split('/').collect();
        let parts = &all[..all.len() - 1];
        for part in parts {
            prefix.push(part);
            if self.known_dirs.contains(&prefix) {
                continue;
            }
            match std::fs::symlink_metadata(&prefix) {
                // Nothing below a missing component can be a link yet.
                Err(_) => return None,
                Ok(m) if m.file_type().is_symlink() => {
                    match std::fs::canonicalize(&prefix) {
                        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                            return Some(Escape::Loop)
                        }
                        Ok(real) if real.starts_with(self.root.join(".sluice")) => {
                            return Some(Escape::State)
                        }
                        _ => {}
                    }
                    if !parent_resolves_inside(self.root, path) {
                        return Some(Escape::Parent);
                    }
                    break;
                }
                Ok(m) if m.is_dir() => {
                    self.known_dirs.insert(prefix.clone());
                }
                // A file where a directory should be: writing will fail with a clear error.
                Ok(_) => return None,
            }
        }
        leaf_link_outside(self.root, path).map(Escape::Leaf)
    }
}

fn lexically_inside(root: &Path, p: &Path) -> bool {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out.starts_with(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_refuses_escapes() {
        let root = Path::new("/ws");
        assert_eq!(
            WorkPath::parse("./a//b/../c", root).unwrap().as_str(),
            "a/c"
        );
        assert_eq!(WorkPath::parse("/ws/x/y", root).unwrap().as_str(), "x/y");
        assert_eq!(WorkPath::parse("../x", root), Err(PathProblem::Escapes));
        assert_eq!(
            WorkPath::parse("/etc/passwd", root),
            Err(PathProblem::Escapes)
        );
        assert_eq!(WorkPath::parse(".", root), Err(PathProblem::Empty));
    }

    fn site(root: &Path, rel: &str) -> Option<Site> {
        output_site(root, &WorkPath::parse(rel, root).unwrap())
    }

    #[test]
    fn an_output_site_in_a_real_directory_is_proven_and_says_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(root.join("out/deep/er")).unwrap();
        std::fs::write(root.join("out/old.txt"), b"x").unwrap();
        let proven = |rel| parent_proven_inside(&root, &WorkPath::parse(rel, &root).unwrap());
        assert!(proven("out/new.txt") && proven("out/deep/er/x"));
        let fresh = Site {
            dir_exists: true,
            occupied: false,
        };
        assert_eq!(site(&root, "out/new.txt"), Some(fresh));
        assert_eq!(site(&root, "out/deep/er/x"), Some(fresh));
        let old = site(&root, "out/old.txt").unwrap();
        assert!(old.dir_exists && old.occupied);
        // Not proven, so decided the old way: a directory still to be made, or the root itself.
        assert!(!proven("out/missing/x") && !proven("top.txt"));
        let missing = site(&root, "out/missing/x").unwrap();
        assert!(!missing.dir_exists && !missing.occupied);
        assert!(site(&root, "top.txt").is_some());
    }

    #[test]
    fn links_on_the_way_to_an_output_site_are_judged_by_where_they_land() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        let root = base.join("ws");
        let outside = base.join("outside");
        std::fs::create_dir_all(root.join("real/sub")).unwrap();
        std::fs::create_dir_all(outside.join("sub")).unwrap();
        let link = |target: &Path, at: &str| std::os::unix::fs::symlink(target, root.join(at));
        link(&outside, "away").unwrap();
        link(&root.join("real/sub"), "inside").unwrap();
        link(&base.join("nowhere"), "dangling").unwrap();
        // Through a link out: refused at every depth, by the proof and by the fallback alike.
        assert!(site(&root, "away/x").is_none());
        assert!(site(&root, "away/sub/x").is_none());
        assert!(site(&root, "dangling/x").is_none());
        // Through a link to elsewhere inside: the `..` chain does not reach the root at the
        // written depth, and the canonical path decides, as before.
        assert!(!parent_proven_inside(
            &root,
            &WorkPath::parse("inside/x", &root).unwrap()
        ));
        assert!(site(&root, "inside/x").is_some());
        // A directory moved out keeps its inode; the link back to it is still refused.
        std::fs::create_dir_all(root.join("out")).unwrap();
        assert!(site(&root, "out/x").is_some());
        std::fs::rename(root.join("out"), outside.join("out")).unwrap();
        link(&outside.join("out"), "out").unwrap();
        assert!(site(&root, "out/x").is_none());
        // The output itself a link: refused when it points out, removed when it points in.
        std::fs::create_dir_all(root.join("d")).unwrap();
        link(&outside.join("f"), "d/leaf_out").unwrap();
        link(&root.join("real"), "d/leaf_in").unwrap();
        assert!(site(&root, "d/leaf_out").is_none());
        assert!(site(&root, "d/leaf_in").unwrap().occupied);
    }

    #[test]
    fn within() {
        let root = Path::new("/ws");
        let a = WorkPath::parse("out/a", root).unwrap();
        let ab = WorkPath::parse("out/a/b", root).unwrap();
        let abc = WorkPath::parse("out/abc", root).unwrap();
        assert!(ab.is_within(&a));
        assert!(a.is_within(&a));
        assert!(!abc.is_within(&a));
    }
}

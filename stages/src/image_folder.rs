//! The ImageFolder layout the image modes of `clean`, `split` and `normalize` share: one
//! subfolder per class (as in torchvision), the class names sorted, the files in each sorted by
//! name. Reading a folder only lists it; decoding is the stages' business.
//!
//! Files are copied into outputs rather than hard-linked: a hard link would make an output and a
//! user's source image one file, so writing either would change both.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub(crate) enum FolderError {
    #[error("`{path}` is not a directory")]
    NotADirectory { path: String },
    #[error("`{path}` has no class subfolders")]
    NoClasses { path: String },
    #[error("`{path}/{class}` holds no images")]
    EmptyClass { path: String, class: String },
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write `{path}`: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl FolderError {
    /// How to fix it, for the renderer to show apart from the message.
    pub(crate) fn hint(&self) -> Option<String> {
        match self {
            FolderError::NotADirectory { path } => Some(format!(
                "an image input is a folder with one subfolder per class, e.g. `{path}/cat/1.png`"
            )),
            FolderError::NoClasses { path } => Some(format!(
                "an image folder holds one subfolder per class, e.g. `{path}/cat/1.png`"
            )),
            FolderError::EmptyClass { .. } => Some(
                "every class folder needs at least one file; remove the folder to drop the class"
                    .into(),
            ),
            _ => None,
        }
    }
}

/// One file of a folder.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Index into [`Folder::classes`].
    pub(crate) class: usize,
    pub(crate) name: String,
    pub(crate) path: PathBuf,
}

impl Entry {
    /// `class/name`, as reports show it.
    pub(crate) fn shown(&self, classes: &[String]) -> String {
        format!("{}/{}", classes[self.class], self.name)
    }
}

/// A listed ImageFolder: classes sorted, files sorted by class then name.
#[derive(Debug, Clone)]
pub(crate) struct Folder {
    pub(crate) classes: Vec<String>,
    pub(crate) files: Vec<Entry>,
}

fn hidden(name: &str) -> bool {
    name.starts_with('.')
}

fn sorted_entries(dir: &Path, shown: &str) -> Result<Vec<(String, PathBuf, bool)>, FolderError> {
    let read = |source| FolderError::Read {
        path: shown.to_string(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read)? {
        let entry = entry.map_err(read)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if hidden(&name) {
            continue;
        }
        let is_dir = entry.path().is_dir();
        out.push((name, entry.path(), is_dir));
    }
    out.sort();
    Ok(out)
}

/// Lists the folder at `root` (`shown` in messages). Files directly in `root`, hidden files and
/// folders nested inside class folders are not part of the layout and are skipped. With
/// `allow_empty`, a class folder without files is kept (a split may leave one empty).
pub(crate) fn read(root: &Path, shown: &str, allow_empty: bool) -> Result<Folder, FolderError> {
    if !root.is_dir() {
        return Err(FolderError::NotADirectory {
            path: shown.to_string(),
        });
    }
    let mut classes = Vec::new();
    let mut files = Vec::new();
    for (class, dir, is_dir) in sorted_entries(root, shown)? {
        if !is_dir {
            continue;
        }
        let index = classes.len();
        let before = files.len();
        for (name, path, is_dir) in sorted_entries(&dir, &format!("{shown}/{class}"))? {
            if !is_dir {
                files.push(Entry {
                    class: index,
                    name,
                    path,
                });
            }
        }
        if files.len() == before && !allow_empty {
            return Err(FolderError::EmptyClass {
                path: shown.to_string(),
                class,
            });
        }
        classes.push(class);
    }
    if classes.is_empty() {
        return Err(FolderError::NoClasses {
            path: shown.to_string(),
        });
    }
    Ok(Folder { classes, files })
}

/// Writes `entries` as an ImageFolder under `dir` (which exists): every class of `classes` gets
/// its folder, even when no file of it is kept, so that every split lists the same classes.
pub(crate) fn write<'a>(
    dir: &Path,
    classes: &[String],
    entries: impl IntoIterator<Item = &'a Entry>,
) -> Result<(), FolderError> {
    for class in classes {
        let path = dir.join(class);
        std::fs::create_dir(&path).map_err(|source| FolderError::Write {
            path: path.display().to_string(),
            source,
        })?;
    }
    for entry in entries {
        let to = dir.join(&classes[entry.class]).join(&entry.name);
        std::fs::copy(&entry.path, &to).map_err(|source| FolderError::Write {
            path: to.display().to_string(),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_classes_and_files_sorted_and_rejects_a_folder_without_classes() {
        let dir = tempfile::tempdir().unwrap();
        for (class, name) in [("b", "2.png"), ("a", "9.png"), ("a", "10.png"), ("b", ".x")] {
            std::fs::create_dir_all(dir.path().join(class)).unwrap();
            std::fs::write(dir.path().join(class).join(name), b"x").unwrap();
        }
        std::fs::write(dir.path().join("stray.png"), b"x").unwrap();
        let folder = read(dir.path(), "imgs", false).unwrap();
        assert_eq!(folder.classes, ["a", "b"]);
        let shown: Vec<String> = folder
            .files
            .iter()
            .map(|e| e.shown(&folder.classes))
            .collect();
        assert_eq!(shown, ["a/10.png", "a/9.png", "b/2.png"]);

        let flat = tempfile::tempdir().unwrap();
        std::fs::write(flat.path().join("1.png"), b"x").unwrap();
        let err = read(flat.path(), "flat", false).unwrap_err().to_string();
        assert!(err.starts_with("`flat` has no class subfolders"), "{err}");

        std::fs::create_dir(dir.path().join("c")).unwrap();
        let err = read(dir.path(), "imgs", false).unwrap_err().to_string();
        assert!(err.starts_with("`imgs/c` holds no images"), "{err}");
        assert_eq!(read(dir.path(), "imgs", true).unwrap().classes.len(), 3);
    }
}

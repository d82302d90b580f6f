//! `clone_file`: a new, independent copy of a file, by reflink where the file system can share
//! extents and by an in-kernel copy otherwise.
//!
//! The cache copies in both directions (output → blob when storing, blob → output when
//! restoring) so that no workspace file ever shares an inode with a blob. On btrfs and XFS a
//! reflink (`FICLONE`) makes that copy cost no data and no time; on ext4 it fails with
//! `EOPNOTSUPP` and `std::io::copy` between two files uses `copy_file_range`, which copies in the
//! kernel without passing the bytes through user space.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// Creates `dest` (which must not exist) with `src`'s content and permission bits `mode` (less
/// the umask). On an error `dest` may exist, partly written; the caller removes it.
pub(crate) fn clone_file(src: &Path, dest: &Path, mode: u32) -> io::Result<()> {
    let mut from = File::open(src)?;
    let mut to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(dest)?;
    // SAFETY: FICLONE takes the source descriptor as its argument; both descriptors are open
    // files we own for the duration of the call. On failure nothing was written.
    let cloned = unsafe { libc::ioctl(to.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) } == 0;
    if !cloned {
        io::copy(&mut from, &mut to)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn the_copy_is_a_separate_file_with_the_same_content() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&a, &content).unwrap();
        clone_file(&a, &b, 0o444).unwrap();
        let (ma, mb) = (
            std::fs::metadata(&a).unwrap(),
            std::fs::metadata(&b).unwrap(),
        );
        assert_ne!(ma.ino(), mb.ino());
        assert_eq!(mb.permissions().mode() & 0o222, 0, "the copy is read-only");
        assert_eq!(std::fs::read(&b).unwrap(), content);
        std::fs::write(&a, b"changed").unwrap();
        assert_eq!(
            std::fs::read(&b).unwrap(),
            content,
            "the copy does not follow"
        );
    }

    #[test]
    fn an_existing_destination_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"new").unwrap();
        std::fs::write(&b, b"old").unwrap();
        let err = clone_file(&a, &b, 0o644).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&b).unwrap(), b"old");
    }
}

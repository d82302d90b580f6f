//! `clone_file`: a new, independent copy of a file, by reflink where the file system can share
//! extents and by an in-kernel copy otherwise.
//!
//! The cache copies in both directions (output → blob when storing, blob → output when
//! restoring) so that no workspace file ever shares an inode with a blob. On btrfs and XFS a
//! reflink (`FICLONE`) makes that copy cost no data and no time. On ext4 it fails with
//! `EOPNOTSUPP` and the bytes are copied with `copy_file_range`, in the kernel, without passing
//! through user space. A large file is copied in pieces on every core: the copy is bound by the
//! CPU's work on the page cache, not by the disk.

use rayon::prelude::*;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// Files at least this large are copied in pieces, in parallel.
const PARALLEL_COPY_BYTES: u64 = 64 << 20;
const PIECE_BYTES: u64 = 16 << 20;

/// Creates `dest` (which must not exist) with the content of `from`, a file just opened (at
/// offset 0), and permission bits `mode` (less the umask). On an error `dest` may exist,
/// partly written; the caller removes it.
pub(crate) fn clone_file(from: &File, dest: &Path, mode: u32) -> io::Result<()> {
    let to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(dest)?;
    // SAFETY: FICLONE takes the source descriptor as its argument; both descriptors are open
    // files we own for the duration of the call. On failure nothing was written.
    if unsafe { libc::ioctl(to.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) } == 0 {
        return Ok(());
    }
    let len = from.metadata()?.len();
    if len >= PARALLEL_COPY_BYTES {
        to.set_len(len)?;
        let starts: Vec<u64> = (0..len).step_by(PIECE_BYTES as usize).collect();
        match starts
            .par_iter()
            .try_for_each(|&start| copy_range(from, &to, start, PIECE_BYTES.min(len - start)))
        {
            Ok(()) => return Ok(()),
            Err(e) if !unsupported(&e) => return Err(e),
            Err(_) => to.set_len(0)?,
        }
    }
    // `std::io::copy` between two files uses `copy_file_range` too, with its own fallbacks
    // (`sendfile`, then reads and writes) where the kernel or the file systems refuse it.
    io::copy(&mut &*from, &mut &to)?;
    Ok(())
}

/// Copies bytes `start..start + len` of `from` to the same offsets of `to`.
fn copy_range(from: &File, to: &File, start: u64, len: u64) -> io::Result<()> {
    let end = start + len;
    let (mut off_in, mut off_out) = (start as libc::loff_t, start as libc::loff_t);
    while (off_in as u64) < end {
        let want = (end - off_in as u64) as usize;
        // SAFETY: both descriptors are open for the call; the offsets are ours and the kernel
        // advances them by the bytes copied.
        let n = unsafe {
            libc::copy_file_range(
                from.as_raw_fd(),
                &mut off_in,
                to.as_raw_fd(),
                &mut off_out,
                want,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was being copied",
            ));
        }
    }
    Ok(())
}

/// Errors for which `copy_file_range` is not available between these two files.
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL)
    )
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
        clone_file(&File::open(&a).unwrap(), &b, 0o444).unwrap();
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
    fn a_large_file_is_copied_whole_in_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        // Not a multiple of the piece size, so the last piece is short.
        let len = PARALLEL_COPY_BYTES as usize + 12_345;
        let content: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
        std::fs::write(&a, &content).unwrap();
        let from = File::open(&a).unwrap();
        clone_file(&from, &b, 0o644).unwrap();
        assert!(std::fs::read(&b).unwrap() == content);
    }

    #[test]
    fn an_existing_destination_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"new").unwrap();
        std::fs::write(&b, b"old").unwrap();
        let err = clone_file(&File::open(&a).unwrap(), &b, 0o644).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&b).unwrap(), b"old");
    }
}

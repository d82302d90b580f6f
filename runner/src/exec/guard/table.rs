//! The guardian's table of live process groups: a page of shared memory (a memfd) that sluice
//! writes as it starts and reaps groups, and that the guardian reads once, after sluice has
//! ended.
//!
//! Why not a line on the pipe for each: a line when a group starts and one when it ends woke the
//! guardian, another process, twice for every stage; in a cold run of small stages that was ~5 %
//! of a worker thread's CPU (two pipe writes and their wake-ups) and the guardian's own ~6 µs a
//! stage. The guardian needs the live groups only once sluice is gone, and what sluice stored in
//! shared memory is still there when it is gone, SIGKILL included: the pages belong to the file,
//! not to the process. The pipe stays for what the table does not hold (Slurm jobs, a group
//! beyond the last free slot) and for its end of file, the notice that sluice has ended.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// Slots in the table (4 bytes each: one page). More groups than this alive at once (a run's
/// jobs plus the helpers its built-in stages start) go to the pipe instead.
pub(super) const SLOTS: usize = 1024;

/// Sluice's side: the mapped slots, each a live group's number or 0.
pub(super) struct Table {
    /// Mapped for the life of the process (never unmapped: the guardian outlives every use).
    slots: &'static [AtomicI32],
}

impl Table {
    /// A fresh, zeroed table and the memfd behind it, for the guardian to read.
    pub(super) fn create() -> io::Result<(Table, OwnedFd)> {
        // SAFETY: memfd_create(2) takes a NUL-terminated name and flags; it returns a new
        // descriptor or -1.
        let fd = unsafe { libc::memfd_create(c"sluice-guard".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let len = SLOTS * std::mem::size_of::<i32>();
        // SAFETY: ftruncate(2) on our own descriptor; the new bytes read as zero.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: mapping `len` bytes of a file of that size; the result is checked.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if at == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the mapping is `SLOTS` aligned i32s (page-aligned), zero-filled, valid for the
        // rest of the process (never unmapped) and only ever accessed atomically from here.
        let slots = unsafe { std::slice::from_raw_parts(at as *const AtomicI32, SLOTS) };
        Ok((Table { slots }, fd))
    }

    /// Puts `pgid` in a free slot and returns the slot, or `None` when every slot is taken.
    /// The search starts where the group's number points, so two threads rarely contend.
    pub(super) fn claim(&self, pgid: i32) -> Option<usize> {
        let start = pgid.unsigned_abs() as usize % SLOTS;
        (0..SLOTS).map(|i| (start + i) % SLOTS).find(|&k| {
            self.slots[k]
                .compare_exchange(0, pgid, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })
    }

    /// Frees a slot [`claim`](Self::claim) returned.
    pub(super) fn release(&self, slot: usize) {
        self.slots[slot].store(0, Ordering::Release);
    }
}

/// The guardian's side: the groups in the table behind `fd`, read (not mapped: it is read once,
/// when sluice has ended). A descriptor that is no table (`/dev/null` when sluice could not make
/// one) reads as empty.
pub(super) fn read_groups(fd: RawFd) -> Vec<i32> {
    let mut buf = vec![0u8; SLOTS * std::mem::size_of::<i32>()];
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: pread(2) writes at most `buf.len() - filled` bytes into the rest of `buf`.
        let n = unsafe {
            libc::pread(
                fd,
                buf[filled..].as_mut_ptr().cast(),
                buf.len() - filled,
                filled as libc::off_t,
            )
        };
        if n > 0 {
            filled += n as usize;
        } else if n == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
    }
    buf[..filled - filled % 4]
        .chunks_exact(4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .filter(|&g| g > 1)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claimed_groups_are_read_back_through_the_descriptor_until_released() {
        let (table, fd) = Table::create().unwrap();
        let a = table.claim(4242).unwrap();
        // The same number twice (the search starts at the same slot) takes two slots.
        let b = table.claim(4242).unwrap();
        let c = table.claim(77).unwrap();
        assert_ne!(a, b);
        let mut seen = read_groups(fd.as_raw_fd());
        seen.sort();
        assert_eq!(seen, [77, 4242, 4242]);
        table.release(a);
        table.release(c);
        assert_eq!(read_groups(fd.as_raw_fd()), [4242]);
    }

    #[test]
    fn a_full_table_says_so_and_a_freed_slot_is_taken_again() {
        let (table, _fd) = Table::create().unwrap();
        let taken: Vec<usize> = (0..SLOTS as i32)
            .map(|i| table.claim(i + 2).unwrap())
            .collect();
        assert_eq!(table.claim(99999), None);
        table.release(taken[10]);
        assert_eq!(table.claim(99999), Some(taken[10]));
    }

    #[test]
    fn what_is_no_table_reads_as_no_groups() {
        let null = std::fs::File::open("/dev/null").unwrap();
        assert!(read_groups(null.as_raw_fd()).is_empty());
    }
}

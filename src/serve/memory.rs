//! Giving memory back to the system after large requests. glibc's malloc keeps what a request
//! freed in its per-thread arenas, and raises its mmap threshold after each large free, so
//! without this a server that answered a few 50 MB requests keeps a gigabyte resident while
//! idle. [`tune`] pins the threshold (large buffers are mapped, and unmapped when freed) and
//! [`give_back`] trims the arenas after a large request. Other C libraries: no-ops.

/// A request body this large is followed by [`give_back`].
pub(crate) const LARGE_BODY: usize = 1 << 20;

/// Allocations from this size on get their own mapping, returned to the system when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 256 * 1024;

/// Pins malloc's mmap threshold; called once by `main`, before any thread exists, for every
/// command: besides `serve`'s request bodies, a run reads large buffers once and frees them (the
/// stored pipeline, the lock file's mirror, the hash memo), and with glibc's moving threshold
/// all but the first stayed in its heap (a no-op of 10,000 stages: 64 → 54 MiB peak RSS, no
/// slower). Data stages set their own tuning when they start (`keep_freed_memory_for_data_stages`).
pub(crate) fn tune() {
    // SAFETY: mallopt only changes malloc's parameters; no memory is touched.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Returns the free memory of every malloc arena to the system.
pub(crate) fn give_back() {
    // SAFETY: malloc_trim only releases free pages; it takes each arena's lock itself.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
}

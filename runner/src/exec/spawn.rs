//! `spawn_in_group`: starts a stage's process (no stdin, stdout and stderr piped) in a process
//! group of its own with `clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)`, instead of std's
//! `Command::spawn`. `child::run_spec_in_group` uses it for every process without stdin; the
//! rest (stdin piped, pip, the guardian, helpers) keeps std's spawn.
//!
//! Why: on a cold run of 10,000 trivial `run:` stages, `Command::spawn` was ~17 % of a worker
//! thread's CPU. glibc's `posix_spawn` maps and unmaps a fresh child stack on every call (the
//! unmap is a TLB-shootdown interrupt to the other CPU running a sibling worker: ~5.6 %, the map
//! ~3.2 %); std opens `/dev/null` for stdin on every spawn (~3.4 %) and closes it, builds a map
//! of the environment and checks `RLIMIT_NOFILE` six times; a `pidfd_open` followed (~2.3 %).
//! Here the child stack is one per thread, kept for the thread's life; `/dev/null` is opened
//! once per process; the pidfd comes from the clone itself; argv and envp are built straight
//! from the [`ProcessSpec`].
//!
//! The child shares our memory (`CLONE_VM`) and our thread's TLS, and this thread is suspended
//! until it calls `execve` or exits (`CLONE_VFORK`), as in glibc's `__spawni_child`. So the
//! child may only make raw, async-signal-safe libc calls on data prepared before the clone: no
//! allocation (the allocator's locks may be held by a thread that does not exist in the child),
//! no locks, no Rust I/O, nothing that can panic. It reports a failure by storing `errno` in
//! memory we share and exiting with 127; we read it once we resume.
//!
//! Signals: all are blocked in this thread around the clone, so the child starts with them
//! blocked; before unblocking them it resets every signal that has a handler to the default
//! action, exactly as glibc's `posix_spawn` does. Otherwise a signal arriving between the clone
//! and `execve` (a terminal's Ctrl-C reaches the child while it is still in sluice's process
//! group) would run one of sluice's handlers in the child, on memory it shares with sluice. The
//! program then starts as std's spawn starts it: with this thread's signal mask from before the
//! clone, and SIGPIPE at its default (Rust's runtime ignores it in sluice; a stage's
//! `yes | head -1` must end `yes` by SIGPIPE, not by a "Broken pipe" error in its log). Other
//! ignored signals stay ignored, as through `posix_spawn`.
//!
//! Where it cannot work, [`spawn_in_group`] says so (`None`) and the caller uses std's spawn: a
//! kernel without pollable pidfds (before 5.3: a probe with `pidfd_open` at the first spawn,
//! because older kernels silently ignore `CLONE_PIDFD`), a program that was not found on the
//! stage's `PATH` (std searches it and reports it missing), a thread being torn down.
//!
//! Descriptors: the child gets `/dev/null` and the write ends of two fresh pipes as 0, 1 and 2.
//! Everything else sluice opens is close-on-exec (std opens all descriptors so), except the
//! run lock's descriptor, which children must inherit (`Workspace::lock_run`): nothing here
//! closes descriptors.

use super::ProcessSpec;
use std::ffi::{c_char, c_int, c_void, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::OnceLock;

/// A child started by [`spawn_in_group`]: its pid (which is also its process group's id), a
/// pidfd that becomes readable when it exits, and the read ends of its stdout and stderr.
pub(crate) struct Spawned {
    pub(crate) pid: i32,
    pub(crate) pidfd: OwnedFd,
    pub(crate) stdout: File,
    pub(crate) stderr: File,
}

/// Set once a clone with `CLONE_PIDFD` was refused (a seccomp filter, say) or gave no pidfd:
/// std's spawn is used from then on.
static REFUSED: AtomicBool = AtomicBool::new(false);

/// Whether [`spawn_in_group`] may work here: the kernel has pollable pidfds (Linux 5.3, the
/// same release as `pidfd_open`; a kernel before 5.2 ignores `CLONE_PIDFD` without an error,
/// and 5.2's pidfds cannot be polled), and no clone was refused since.
fn available() -> bool {
    static PIDFDS: OnceLock<bool> = OnceLock::new();
    !REFUSED.load(Ordering::Relaxed)
        && *PIDFDS.get_or_init(|| {
            // SAFETY: pidfd_open(2) on our own pid returns a new descriptor or -1.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
            // SAFETY: a new descriptor that nothing else owns, closed at once.
            (fd >= 0)
                .then(|| drop(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }))
                .is_some()
        })
}

/// Starts `program` (already resolved, see `process::resolve_program`) with `spec`'s arguments,
/// environment (exactly `spec.env`) and working directory, in a new process group, stdin
/// `/dev/null`, stdout and stderr piped. `argv[0]` is `spec.program` as written.
///
/// A failure before `execve` succeeded is the child's `errno` (`NotFound` for a missing program
/// or directory, `PermissionDenied` for a file that is not executable), the child already
/// reaped. `Ok(None)`: it cannot be done here (see the module doc); use std's spawn.
pub(crate) fn spawn_in_group(spec: &ProcessSpec, program: &Path) -> io::Result<Option<Spawned>> {
    use std::os::unix::ffi::OsStrExt as _;
    if !available() || !program.as_os_str().as_bytes().contains(&b'/') {
        return Ok(None);
    }
    let image = Image::new(spec, program)?;
    let stdin = dev_null()?;
    let (stdout, stdout_w) = pipe()?;
    let (stderr, stderr_w) = pipe()?;
    let mut args = ChildArgs {
        path: image.path.as_ptr(),
        argv: image.argv.as_ptr(),
        envp: image.envp.as_ptr(),
        cwd: image.cwd.as_ptr(),
        fds: [stdin, stdout_w.as_raw_fd(), stderr_w.as_raw_fd()],
        nsig: libc::SIGRTMAX() + 1,
        // SAFETY: sigset_t is plain data; it is filled by pthread_sigmask below.
        mask: unsafe { std::mem::zeroed() },
        errno: AtomicI32::new(0),
    };
    let mut pidfd: c_int = -1;
    let cloned = STACK.try_with(|stack| {
        // SAFETY: sigfillset and pthread_sigmask write only the sets we pass. The clone: the
        // child runs `child_main` on `stack`, which belongs to this thread and which nothing
        // else uses while this thread is suspended (CLONE_VFORK: until the child has called
        // execve or exited, after which it no longer touches it); `args` and everything it
        // points to (`image`, the descriptors) outlive the clone for the same reason. The
        // kernel writes the pidfd through the parent_tid pointer (CLONE_PIDFD); the tls and
        // child_tid arguments are unused without their flags.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut args.mask);
            let pid = libc::clone(
                child_main,
                stack.top(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
                (&mut args as *mut ChildArgs).cast::<c_void>(),
                &mut pidfd as *mut c_int,
                std::ptr::null_mut::<c_void>(),
                std::ptr::null_mut::<c_int>(),
            );
            let clone_errno = *libc::__errno_location();
            libc::pthread_sigmask(libc::SIG_SETMASK, &args.mask, std::ptr::null_mut());
            (pid, clone_errno)
        }
    });
    // Only while this thread's locals are being destroyed (a spawn from a destructor).
    let Ok((pid, clone_errno)) = cloned else {
        return Ok(None);
    };
    // The child has its own copies of the write ends (or is gone): ours must close, or the
    // pipes would never reach end of file.
    drop((stdout_w, stderr_w));
    if pid < 0 {
        return match clone_errno {
            libc::EINVAL | libc::ENOSYS | libc::EPERM => {
                REFUSED.store(true, Ordering::Relaxed);
                Ok(None)
            }
            e => Err(io::Error::from_raw_os_error(e)),
        };
    }
    if pidfd < 0 {
        // A kernel that passed the probe always gives one; should one not, the child (unreaped,
        // so its pid is still its own) is asked for one, and without it stopped, not run twice.
        // SAFETY: pidfd_open(2) on our child's pid returns a new descriptor or -1.
        pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as c_int;
        if pidfd < 0 {
            REFUSED.store(true, Ordering::Relaxed);
            super::signal_group(pid, libc::SIGKILL);
            let _ = reap(pid);
            return Err(io::Error::other(
                "the kernel gave no pidfd for a started process; it was stopped",
            ));
        }
    }
    // SAFETY: a descriptor (>= 0) the kernel made for us and that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let failed = args.errno.load(Ordering::Acquire);
    if failed != 0 {
        // The child has exited (CLONE_VFORK resumed us): reap it, so no zombie is left. Its
        // errno is the error to report even if it was reaped already (SIGCHLD ignored).
        let _ = reap(pid);
        return Err(io::Error::from_raw_os_error(failed));
    }
    Ok(Some(Spawned {
        pid,
        pidfd,
        stdout,
        stderr,
    }))
}

/// Waits for child `pid` to exit and reaps it.
pub(crate) fn reap(pid: i32) -> io::Result<ExitStatus> {
    loop {
        let mut status: c_int = 0;
        // SAFETY: waitpid(2) writes only the status we pass.
        if unsafe { libc::waitpid(pid, &mut status, 0) } == pid {
            return Ok(ExitStatus::from_raw(status));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// What `execve` needs, as C strings and NULL-ended pointer arrays. The pointers point into the
/// `CString`s held here, whose heap buffers do not move when the struct does.
struct Image {
    path: CString,
    cwd: CString,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
    _strings: Vec<CString>,
}

impl Image {
    fn new(spec: &ProcessSpec, program: &Path) -> io::Result<Image> {
        let path = c_string(program.as_os_str().as_bytes().to_vec())?;
        let cwd = c_string(spec.cwd.as_os_str().as_bytes().to_vec())?;
        let mut strings = Vec::with_capacity(1 + spec.args.len() + spec.env.len());
        strings.push(c_string(spec.program.clone().into_bytes())?);
        for a in &spec.args {
            strings.push(c_string(a.clone().into_bytes())?);
        }
        for (k, v) in &spec.env {
            let mut kv = Vec::with_capacity(k.len() + 1 + v.len());
            kv.extend_from_slice(k.as_bytes());
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            strings.push(c_string(kv)?);
        }
        let argc = 1 + spec.args.len();
        let pointers = |s: &[CString]| {
            s.iter()
                .map(|c| c.as_ptr())
                .chain([std::ptr::null()])
                .collect::<Vec<_>>()
        };
        Ok(Image {
            path,
            cwd,
            argv: pointers(&strings[..argc]),
            envp: pointers(&strings[argc..]),
            _strings: strings,
        })
    }
}

/// A C string of `bytes`, or the error std gives for an argument holding a NUL byte.
fn c_string(bytes: Vec<u8>) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "nul byte found in provided data",
        )
    })
}

/// The child's view of the spawn; lives on the parent's stack, shared through `CLONE_VM`.
struct ChildArgs {
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    cwd: *const c_char,
    /// Become the child's 0, 1 and 2, in that order; all are above 2 (see [`above_stdio`]), so
    /// no `dup2` overwrites a descriptor a later one copies from.
    fds: [RawFd; 3],
    /// One more than the highest signal number.
    nsig: c_int,
    /// The parent thread's signal mask before the clone, restored in the child before execve
    /// (std's spawn leaves a child the mask of the thread that started it).
    mask: libc::sigset_t,
    /// The child's `errno` when a step before execve failed; 0 while all is well.
    errno: AtomicI32,
}

/// The child, between clone and execve: only raw, async-signal-safe libc calls on what
/// [`ChildArgs`] points to (see the module doc). Never returns.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the parent's `ChildArgs`, alive and unchanged while the parent is
    // suspended by CLONE_VFORK. Each call below is async-signal-safe and touches only that
    // struct, the strings it points to, and this process's own signal and descriptor tables.
    unsafe {
        let args = &*(arg as *const ChildArgs);
        for sig in 1..args.nsig {
            reset_handler(sig);
        }
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(libc::SIGPIPE, &default, std::ptr::null_mut());
        if libc::setpgid(0, 0) != 0 {
            fail(args);
        }
        for (target, &fd) in (0..).zip(args.fds.iter()) {
            // A dup2 onto itself would leave close-on-exec set.
            let rc = if fd == target {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, target)
            };
            if rc < 0 {
                fail(args);
            }
        }
        if libc::chdir(args.cwd) != 0 {
            fail(args);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &args.mask, std::ptr::null_mut());
        libc::execve(args.path, args.argv, args.envp);
        fail(args)
    }
}

/// Sets `sig` back to the default action if a handler is installed for it; an ignored or
/// default signal is left alone, and signals that cannot be queried (glibc's own, SIGKILL's
/// kind) are skipped.
///
/// # Safety
/// Changes the process's disposition of `sig`: call it only in the child, or in a test on a
/// signal nothing else handles.
unsafe fn reset_handler(sig: c_int) {
    let mut action: libc::sigaction = std::mem::zeroed();
    if libc::sigaction(sig, std::ptr::null(), &mut action) != 0 {
        return;
    }
    if action.sa_sigaction == libc::SIG_DFL || action.sa_sigaction == libc::SIG_IGN {
        return;
    }
    let mut default: libc::sigaction = std::mem::zeroed();
    default.sa_sigaction = libc::SIG_DFL;
    libc::sigaction(sig, &default, std::ptr::null_mut());
}

/// Reports the child's `errno` to the parent and exits.
///
/// # Safety
/// Only in the child (it exits the process).
unsafe fn fail(args: &ChildArgs) -> ! {
    args.errno
        .store(*libc::__errno_location(), Ordering::Release);
    libc::_exit(127)
}

/// The child's stack: one per thread, allocated on its first spawn and kept for the thread's
/// life, so no spawn maps or unmaps one.
struct ChildStack(*mut u8);

const STACK_SIZE: usize = 64 * 1024;
/// x86-64 and aarch64 both want a 16-byte aligned stack.
const STACK_ALIGN: usize = 16;

impl ChildStack {
    fn layout() -> std::alloc::Layout {
        std::alloc::Layout::from_size_align(STACK_SIZE, STACK_ALIGN).expect("a valid layout")
    }

    fn new() -> ChildStack {
        // SAFETY: the layout has a non-zero size.
        let base = unsafe { std::alloc::alloc(Self::layout()) };
        if base.is_null() {
            std::alloc::handle_alloc_error(Self::layout());
        }
        ChildStack(base)
    }

    /// The highest address, where a downward-growing stack starts.
    fn top(&self) -> *mut c_void {
        // SAFETY: one past the end of the allocation.
        unsafe { self.0.add(STACK_SIZE).cast() }
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; no child runs on it any more (every
        // spawn on this thread has returned).
        unsafe { std::alloc::dealloc(self.0, Self::layout()) }
    }
}

thread_local! {
    static STACK: ChildStack = ChildStack::new();
}

/// `/dev/null`, opened once per process (close-on-exec; each child gets its own copy as 0).
fn dev_null() -> io::Result<RawFd> {
    static DEV_NULL: OnceLock<OwnedFd> = OnceLock::new();
    if let Some(fd) = DEV_NULL.get() {
        return Ok(fd.as_raw_fd());
    }
    let fd = above_stdio(File::open("/dev/null")?.into())?;
    // A thread that lost the race drops its own descriptor.
    Ok(DEV_NULL.get_or_init(|| fd).as_raw_fd())
}

/// A close-on-exec pipe: (read end, write end), both above 2.
fn pipe() -> io::Result<(File, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: pipe2(2) writes two descriptors into the array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are new descriptors that nothing else owns.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((File::from(above_stdio(r)?), above_stdio(w)?))
}

/// `fd`, or a close-on-exec copy of it numbered 3 or more when it is 0, 1 or 2 (a process
/// started with those closed), so that the child's `dup2`s onto 0, 1 and 2 never overwrite a
/// descriptor still to be copied.
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: fcntl(2) F_DUPFD_CLOEXEC returns a new descriptor or -1.
    let copy = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if copy < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

#[cfg(test)]
#[path = "spawn_tests.rs"]
mod tests;

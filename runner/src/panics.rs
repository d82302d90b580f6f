//! Panics in stage code, caught and turned into a failed stage: [`catch`].
//!
//! A worker thread that unwound out of its loop never reported its stage as done, so the
//! dispatcher waited for it forever (even through Ctrl-C, whose cancellation waits for running
//! stages too). Every job now runs inside [`catch`], and a panic becomes the stage's failure
//! message, `panicked: <message> (at <file>:<line>:<col>)`, with exit code 1 like any failure.
//!
//! The default panic hook would also print `thread '<unnamed>' panicked at ...` and a note about
//! backtraces to the user's terminal, in the middle of the live display, for a panic that is
//! already reported as the stage's failure. So a hook installed once per process stays quiet
//! for panics that a [`catch`] on the same thread will report: it keeps the location for the
//! message and sends the rest to `tracing` at debug level (`-v` or `RUST_LOG=debug` shows it,
//! with a backtrace when `RUST_BACKTRACE` asks for one). Panics on rayon's worker threads while
//! a stage is caught are quiet too, since rayon hands them on to the thread that called into the
//! pool, which is the caught one; their location is only in the debug log. Any other panic goes
//! to the hook that was installed before, unchanged.

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;

thread_local! {
    /// Whether a [`catch`] is active on this thread.
    static CATCHING: Cell<bool> = const { Cell::new(false) };
    /// Where this thread last panicked inside a [`catch`].
    static LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// How many [`catch`]es are active in the process, for panics on rayon's threads.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
static HOOK: Once = Once::new();

/// Runs `f`, turning a panic into `Err("panicked: <message> (at <location>)")`.
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_hook();
    let outer = CATCHING.with(|c| c.replace(true));
    ACTIVE.fetch_add(1, Ordering::SeqCst);
    LOCATION.with(|l| l.borrow_mut().take());
    // The closure's state is dropped or reported as failed after a panic, never observed
    // half-updated: a panicked stage's outputs are removed and its result is not used.
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    ACTIVE.fetch_sub(1, Ordering::SeqCst);
    CATCHING.with(|c| c.set(outer));
    result.map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_string());
        match LOCATION.with(|l| l.borrow_mut().take()) {
            Some(at) => format!("panicked: {message} (at {at})"),
            None => format!("panicked: {message}"),
        }
    })
}

fn install_hook() {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let caught = CATCHING.with(Cell::get);
            let on_pool =
                ACTIVE.load(Ordering::SeqCst) > 0 && rayon::current_thread_index().is_some();
            if !caught && !on_pool {
                return previous(info);
            }
            let at = info.location().map(|l| l.to_string());
            if caught {
                LOCATION.with(|l| *l.borrow_mut() = at.clone());
            }
            tracing::debug!(
                location = at.as_deref().unwrap_or("unknown"),
                thread = std::thread::current().name().unwrap_or("unnamed"),
                backtrace = %std::backtrace::Backtrace::capture(),
                "a stage panicked: {}",
                info.payload_as_str().unwrap_or("a panic without a message"),
            );
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message_and_location() {
        let e = catch(|| -> u32 { panic!("the artifact reads back: {}", 7) }).unwrap_err();
        assert!(
            e.starts_with("panicked: the artifact reads back: 7 (at runner/src/panics.rs:"),
            "{e}"
        );
        assert_eq!(catch(|| 5), Ok(5));
    }

    #[test]
    fn a_panic_on_the_rayon_pool_reaches_the_caught_thread() {
        use rayon::prelude::*;
        let e = catch(|| {
            (0..64).into_par_iter().for_each(|i| {
                if i == 33 {
                    panic!("row {i}");
                }
            })
        })
        .unwrap_err();
        assert!(e.starts_with("panicked: row 33"), "{e}");
    }

    #[test]
    fn nested_catches_restore_the_outer_state() {
        let outer = catch(|| {
            let inner = catch(|| panic!("inner"));
            assert!(inner.unwrap_err().starts_with("panicked: inner"));
            assert!(CATCHING.with(Cell::get));
            panic!("outer")
        });
        assert!(outer.unwrap_err().starts_with("panicked: outer"));
        assert!(!CATCHING.with(Cell::get));
    }
}

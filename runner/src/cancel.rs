//! `CancelToken`: how a running stage learns that it is being stopped, and why. The dispatcher
//! cancels a stage's token with a `CancelReason`; in-process stages poll it between items, the
//! executor checks it right after a spawn, and the job reads the reason back to say in the
//! stage's log what stopped it. Both `exec` and `stage` depend on this module and not on each
//! other.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Why running stages are being stopped, in increasing severity.
///
/// The two stops a caller asks for come first, because neither says anything went wrong:
/// `Superseded` (the stage runs again with new inputs, no verdict) ranks below `Pruned` (a
/// final verdict, though not a failure). Both rank below `TimedOut`, the stage's own failure,
/// and below the run-wide stops. The first reason given is kept whatever its rank, so the order
/// only matters where the dispatcher compares run-wide stops (`>= Interrupt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum CancelReason {
    /// `sluice watch`: the stage's inputs or definition changed while it ran (see
    /// `scheduler::Control`).
    Superseded = 1,
    /// A sweep's pruning rule gave up on the trial (`scheduler::Control::Prune`): stopped, not
    /// failed.
    Pruned = 2,
    /// The stage ran past its own `timeout:`.
    TimedOut = 3,
    /// Another stage failed and `--keep-going` is off.
    StageFailed = 4,
    /// First SIGINT/SIGTERM: SIGTERM to every stage, SIGKILL after the grace period.
    Interrupt = 5,
    /// Second signal: SIGKILL now.
    ForceKill = 6,
}

impl CancelReason {
    const ALL: [CancelReason; 6] = [
        CancelReason::Superseded,
        CancelReason::Pruned,
        CancelReason::TimedOut,
        CancelReason::StageFailed,
        CancelReason::Interrupt,
        CancelReason::ForceKill,
    ];

    fn from_u8(v: u8) -> Option<CancelReason> {
        Self::ALL.into_iter().find(|r| *r as u8 == v)
    }

    /// How a stage stopped for this reason is described, `timeout` being the stage's own.
    pub fn describe(self, timeout: Option<Duration>) -> String {
        match self {
            CancelReason::Superseded => "superseded (its inputs or definition changed)".into(),
            CancelReason::Pruned => "pruned".into(),
            CancelReason::TimedOut => {
                format!("timed out after {}", humane(timeout.unwrap_or_default()))
            }
            CancelReason::StageFailed => "cancelled (another stage failed)".into(),
            CancelReason::Interrupt | CancelReason::ForceKill => "interrupted".into(),
        }
    }
}

/// Cooperative cancellation for a running stage: long loops should check it between items.
/// The first reason given is kept: it is why the stage stopped, whatever comes after (a Ctrl-C
/// during a timed-out stage's grace period still reports the timeout).
#[derive(Clone, Default, Debug)]
pub struct CancelToken(Arc<AtomicU8>);

impl CancelToken {
    /// Cancels the token; a token already cancelled keeps its first reason.
    pub fn cancel(&self, reason: CancelReason) {
        let _ = self
            .0
            .compare_exchange(0, reason as u8, Ordering::SeqCst, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst) != 0
    }

    /// Why the token was cancelled, or `None` while it is not.
    pub fn reason(&self) -> Option<CancelReason> {
        CancelReason::from_u8(self.0.load(Ordering::SeqCst))
    }
}

/// A duration as people write it in a pipeline: `500ms`, `1s`, `1.5s`, `3m`.
pub(crate) fn humane(d: Duration) -> String {
    let s = d.as_secs_f64();
    let trim = |x: f64, unit: &str| {
        let t = format!("{x:.1}");
        format!("{}{unit}", t.strip_suffix(".0").unwrap_or(&t))
    };
    if s < 1.0 {
        format!("{}ms", d.as_millis())
    } else if s < 120.0 {
        trim(s, "s")
    } else {
        trim(s / 60.0, "m")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_token_is_not_cancelled() {
        let t = CancelToken::default();
        assert!(!t.is_cancelled());
        assert_eq!(t.reason(), None);
    }

    #[test]
    fn the_first_reason_wins_and_clones_share_it() {
        let t = CancelToken::default();
        let seen_by_stage = t.clone();
        t.cancel(CancelReason::TimedOut);
        t.cancel(CancelReason::Interrupt);
        t.cancel(CancelReason::ForceKill);
        assert!(seen_by_stage.is_cancelled());
        assert_eq!(seen_by_stage.reason(), Some(CancelReason::TimedOut));
    }

    #[test]
    fn reasons_escalate_in_order_and_round_trip() {
        let mut sorted = CancelReason::ALL;
        sorted.sort();
        assert_eq!(sorted, CancelReason::ALL);
        assert!(CancelReason::Superseded < CancelReason::Pruned);
        assert!(CancelReason::Pruned < CancelReason::TimedOut);
        assert!(CancelReason::StageFailed < CancelReason::Interrupt);
        assert!(CancelReason::Interrupt < CancelReason::ForceKill);
        for r in CancelReason::ALL {
            let t = CancelToken::default();
            t.cancel(r);
            assert_eq!(t.reason(), Some(r));
        }
    }

    #[test]
    fn descriptions_name_the_cause() {
        assert_eq!(
            CancelReason::TimedOut.describe(Some(Duration::from_secs(1))),
            "timed out after 1s"
        );
        assert_eq!(
            CancelReason::TimedOut.describe(Some(Duration::from_millis(500))),
            "timed out after 500ms"
        );
        assert_eq!(CancelReason::Interrupt.describe(None), "interrupted");
        assert_eq!(CancelReason::ForceKill.describe(None), "interrupted");
    }
}

//! `Debounce`: when the paths that raw file events name are handed to the watch loop.
//!
//! A write the kernel reports finished (the file closed after writing, or renamed into place) is
//! handed over at once: waiting longer cannot give different content, and it is what an editor's
//! save, a `cp` or a script's `open(..., "w")` ends with. Everything else (a file still open for
//! writing, a create, a delete, a rename away) waits until events pause for the quiet period, and
//! so does every event that follows a hand-over which changed something by less than that period:
//! a burst (a folder of images copied in, a file rewritten in a loop) reruns its stages once more
//! at its end rather than once per file. A burst that never pauses is handed over after
//! `MAX_GATHER` quiet periods, so a file written continuously still gets its stages run.
//!
//! Nothing here wakes up on its own: the loop sleeps until an event or `deadline`, so an idle
//! watch costs no CPU.

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A burst is handed over after at most this many quiet periods even if it goes on.
const MAX_GATHER: u32 = 20;

/// What an event says about its paths' content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The writer is done: closed after writing, or renamed into place.
    Finished,
    /// Possibly still changing.
    Unsettled,
}

/// What an event kind says about its paths: `None` when it cannot mean different content
/// (opening or reading; the loop's own hashing opens sources, so counting those would feed back
/// into itself).
fn state_of(kind: &EventKind) -> Option<State> {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Some(State::Finished),
        EventKind::Access(_) => None,
        EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both)) => {
            Some(State::Finished)
        }
        _ => Some(State::Unsettled),
    }
}

/// Paths to look at now, and whether the kernel lost events (anything may have changed).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Ready {
    pub paths: BTreeSet<PathBuf>,
    pub rescan: bool,
}

pub(crate) struct Debounce {
    quiet: Duration,
    held: BTreeMap<PathBuf, State>,
    rescan: bool,
    /// When the oldest held event came, and the newest.
    first: Option<Instant>,
    last: Option<Instant>,
    /// Until when finished writes are held too: a hand-over changed something this recently.
    burst_until: Option<Instant>,
}

impl Debounce {
    pub fn new(quiet: Duration) -> Debounce {
        Debounce {
            quiet,
            held: BTreeMap::new(),
            rescan: false,
            first: None,
            last: None,
            burst_until: None,
        }
    }

    /// Holds what `event` names, seen at `now`.
    pub fn add(&mut self, event: &notify::Event, now: Instant) {
        let rescan = event.need_rescan();
        let state = state_of(&event.kind);
        if state.is_none() && !rescan {
            return;
        }
        self.rescan |= rescan;
        if let Some(state) = state {
            for p in &event.paths {
                // A change of times or permissions after the close (`cp -p`, `touch`) does not
                // reopen the write; the content is what the close left.
                if matches!(event.kind, EventKind::Modify(ModifyKind::Metadata(_))) {
                    self.held.entry(p.clone()).or_insert(State::Unsettled);
                } else {
                    self.held.insert(p.clone(), state);
                }
            }
        }
        self.first.get_or_insert(now);
        self.last = Some(now);
        // A burst lasts as long as its events keep coming.
        if self.burst_until.is_some_and(|t| now < t) {
            self.burst_until = Some(now + self.quiet);
        }
    }

    /// A hand-over at `now` changed something: what follows within the quiet period is a burst.
    pub fn acted(&mut self, now: Instant) {
        self.burst_until = Some(now + self.quiet);
    }

    /// When held paths are due even if nothing else happens.
    pub fn deadline(&self) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        Some((last + self.quiet).min(first + self.quiet * MAX_GATHER))
    }

    /// The paths due at `now`: everything once events have paused (or the burst is too long),
    /// else the finished writes, unless they are part of a burst.
    pub fn take(&mut self, now: Instant) -> Option<Ready> {
        let deadline = self.deadline()?;
        if now >= deadline {
            self.first = None;
            self.last = None;
            let ready = Ready {
                paths: std::mem::take(&mut self.held).into_keys().collect(),
                rescan: std::mem::take(&mut self.rescan),
            };
            return Some(ready);
        }
        let burst = self.burst_until.is_some_and(|t| now < t);
        if burst || self.rescan {
            return None;
        }
        let finished: BTreeSet<PathBuf> = self
            .held
            .iter()
            .filter(|(_, s)| **s == State::Finished)
            .map(|(p, _)| p.clone())
            .collect();
        if finished.is_empty() {
            return None;
        }
        self.held.retain(|_, s| *s != State::Finished);
        if self.held.is_empty() {
            self.first = None;
            self.last = None;
        }
        Some(Ready {
            paths: finished,
            rescan: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, Flag, MetadataKind, RemoveKind};
    use notify::Event;

    const QUIET: Duration = Duration::from_millis(50);

    fn ev(kind: EventKind, path: &str) -> Event {
        Event::new(kind).add_path(PathBuf::from(path))
    }
    fn modify(path: &str) -> Event {
        ev(EventKind::Modify(ModifyKind::Data(DataChange::Any)), path)
    }
    fn closed(path: &str) -> Event {
        ev(
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            path,
        )
    }
    fn paths(r: Option<Ready>) -> Vec<String> {
        r.expect("something due")
            .paths
            .iter()
            .map(|p| p.display().to_string())
            .collect()
    }
    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_closed_write_is_due_at_once_and_an_open_one_after_the_quiet_period() {
        let t = Instant::now();
        let mut d = Debounce::new(QUIET);
        d.add(&modify("a"), t);
        d.add(&modify("b"), t);
        assert_eq!(d.take(t), None, "still open for writing");
        d.add(&closed("a"), t + ms(1));
        assert_eq!(paths(d.take(t + ms(1))), ["a"]);
        assert_eq!(d.deadline(), Some(t + ms(51)));
        assert_eq!(d.take(t + ms(50)), None);
        assert_eq!(paths(d.take(t + ms(51))), ["b"]);
        assert_eq!(d.deadline(), None, "nothing held: no wake-up");
    }

    #[test]
    fn opening_and_reading_are_ignored_and_a_rename_into_place_is_finished() {
        let t = Instant::now();
        let mut d = Debounce::new(QUIET);
        d.add(
            &ev(EventKind::Access(AccessKind::Open(AccessMode::Read)), "a"),
            t,
        );
        d.add(
            &ev(EventKind::Access(AccessKind::Close(AccessMode::Read)), "a"),
            t,
        );
        assert_eq!(d.deadline(), None);
        let renamed = Event::new(EventKind::Modify(ModifyKind::Name(RenameMode::Both)))
            .add_path(PathBuf::from("a.swp"))
            .add_path(PathBuf::from("a"));
        d.add(&renamed, t);
        assert_eq!(paths(d.take(t)), ["a", "a.swp"]);
    }

    #[test]
    fn creates_deletes_and_a_touch_after_the_close_wait_for_quiet() {
        let t = Instant::now();
        let mut d = Debounce::new(QUIET);
        d.add(&ev(EventKind::Create(CreateKind::File), "new"), t);
        d.add(&ev(EventKind::Remove(RemoveKind::File), "gone"), t);
        d.add(&closed("c"), t);
        d.add(
            &ev(
                EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
                "c",
            ),
            t,
        );
        assert_eq!(paths(d.take(t)), ["c"], "the touch keeps the close");
        assert_eq!(d.take(t + ms(49)), None);
        assert_eq!(paths(d.take(t + ms(50))), ["gone", "new"]);
    }

    #[test]
    fn after_a_hand_over_that_changed_something_a_burst_waits_for_its_end() {
        let t = Instant::now();
        let mut d = Debounce::new(QUIET);
        d.add(&closed("img/1.png"), t);
        assert_eq!(paths(d.take(t)), ["img/1.png"]);
        d.acted(t);
        for i in 2..=5u64 {
            let at = t + ms(10 * i);
            d.add(&closed(&format!("img/{i}.png")), at);
            assert_eq!(d.take(at), None, "file {i} is part of the burst");
        }
        assert_eq!(d.take(t + ms(99)), None);
        assert_eq!(
            paths(d.take(t + ms(100))),
            ["img/2.png", "img/3.png", "img/4.png", "img/5.png"]
        );
        // Long after the burst, a single write is due at once again.
        d.add(&closed("img/6.png"), t + ms(500));
        assert_eq!(paths(d.take(t + ms(500))), ["img/6.png"]);
    }

    #[test]
    fn a_burst_that_never_pauses_is_handed_over_after_max_gather_periods() {
        let t = Instant::now();
        let mut d = Debounce::new(QUIET);
        let mut handed = Vec::new();
        for i in 0..200u64 {
            let at = t + ms(10 * i);
            d.add(&modify("log"), at);
            if d.take(at).is_some() {
                handed.push(i);
            }
        }
        // Every 10 ms for 2 s: one hand-over after 20 periods (1 s), the rest still held.
        assert_eq!(handed, [100]);
        assert!(d.deadline().is_some());
    }

    #[test]
    fn lost_events_rescan_after_the_quiet_period() {
        let t = Instant::now();
        let mut d = Debounce::new(QUIET);
        d.add(&Event::new(EventKind::Other).set_flag(Flag::Rescan), t);
        d.add(&closed("a"), t);
        assert_eq!(d.take(t), None, "a rescan settles everything at once");
        let r = d.take(t + QUIET).unwrap();
        assert!(r.rescan);
        assert_eq!(r.paths.len(), 1);
    }
}
